// report.html for every verb that writes a model: train, fuse, heal, fold, prune and merge each
// leave one beside the model, self-contained (no script, no external resource), well-formed
// (xmllint parses it as XML: every tag closed), naming the command, the inputs with their
// SHA-256 (checked against sha256sum), and with its charts; and each renders in a real headless
// browser (Debian's chromium) to a PNG that is not blank (a blank page's screenshot compresses to
// a small fraction of a page with text and charts).
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fusekit/fusekit.h"
#include "test_util.h"

static char text[300];

static int setup(void **s) {
    if (tmpdir_setup(s) != 0) return -1;
    snprintf(text, sizeof text, "%s/text.txt", tmpdir);
    FILE *f = fopen(text, "w");
    if (!f) return -1;
    for (int i = 0; i < 500; i++) fprintf(f, "line %d: the cat sat on the mat, the dog ran to the %s.\n", i % 23, i % 2 ? "door" : "tree");
    fclose(f);
    return 0;
}

static long file_size(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 ? (long)st.st_size : -1;
}

// The checks every report gets; charts: how many <svg> it must hold at least.
static void check_report(const char *dir, const char *verb, int charts, long blank_png) {
    char p[600], *out;
    snprintf(p, sizeof p, "%s/report.html", dir);
    if (!fk_path_exists(p)) fail_msg("%s: no report.html", dir);
    size_t n;
    char *html = slurp(p, &n);
    char want[64];
    snprintf(want, sizeof want, "<h1>fusekit %s</h1>", verb);
    assert_non_null(strstr(html, want));
    assert_non_null(strstr(html, "<h2>Command</h2>"));
    assert_null(strstr(html, "<script"));
    // no external resource: the only URL is SVG's namespace
    size_t ext = 0;
    bool external = false;
    for (const char *q = html; (q = strstr(q, "http")) != NULL; q++)
        if (strncmp(q, "http://www.w3.org/2000/svg", 26) != 0 && (strncmp(q, "http://", 7) == 0 || strncmp(q, "https://", 8) == 0)) {
            external = true;
            ext = (size_t)(q - html);
            break;
        }
    if (external) fail_msg("%s: an external URL: %.60s", p, html + ext);
    assert_null(strstr(html, " src="));
    int svgs = 0;
    for (const char *q = html; (q = strstr(q, "<svg")) != NULL; q++) svgs++;
    if (svgs < charts) fail_msg("%s: %d charts, expected at least %d", p, svgs, charts);
    // the training text's SHA-256 as sha256sum computes it
    assert_int_equal(run(&out, "sha256sum %s | cut -c1-64", text), 0);
    out[strcspn(out, "\n")] = 0;
    if (!strstr(html, out)) fail_msg("%s: the input's SHA-256 %s is not in the report", p, out);
    free(out);
    free(html);
    if (system("command -v xmllint > /dev/null 2>&1") == 0) RUN_OK("xmllint --noout %s", p);
    else print_message("  (no xmllint: well-formedness not checked)\n");
    if (blank_png > 0) {
        char png[600];
        snprintf(png, sizeof png, "%s/report.png", tmpdir);
        unlink(png);
        RUN_OK("timeout 120 chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --screenshot=%s --window-size=1200,1600 file://%s",
               png, p);
        long size = file_size(png);
        print_message("  %s: report.png %ld bytes (blank page %ld)\n", verb, size, blank_png);
        if (!(size > 4 * blank_png)) fail_msg("%s: the rendered report (%ld bytes) looks blank next to an empty page's %ld", p, size, blank_png);
    }
}

static void test_reports(void **s) {
    (void)s;
    const char *F = FK_CLI;
    long blank = 0;
    if (system("command -v chromium > /dev/null 2>&1") == 0) {
        char bl[400], png[400], *out;
        snprintf(bl, sizeof bl, "%s/blank.html", tmpdir);
        spit(bl, "<!DOCTYPE html><html><head><title>x</title></head><body></body></html>", 69);
        snprintf(png, sizeof png, "%s/blank.png", tmpdir);
        int rc = run(&out, "timeout 120 chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --screenshot=%s --window-size=1200,1600 file://%s",
                     png, bl);
        if (rc != 0) fail_msg("chromium could not render a blank page:\n%s", out);
        free(out);
        blank = file_size(png);
        assert_true(blank > 0);
    } else print_message("  skipped the browser rendering: no chromium (Debian package chromium)\n");
    const char *tr = "--steps 40 --batch 8 --ctx 32 --eval-every 20 --log-every 5";
    RUN_OK("%s train --data %s -o %s/base --arch llama --d-model 32 --layers 4 --heads 2 --ffn 96 %s", F, text, tmpdir, tr);
    check_report(tpath("base"), "train", 3, blank);
    RUN_OK("%s fuse --target %s/base --source %s/base --data %s -o %s/fused --steps 20 --eval-every 10 --log-every 5", F, tmpdir, tmpdir, text, tmpdir);
    check_report(tpath("fused"), "fuse", 4, blank);
    RUN_OK("%s fold --model %s/base --data %s --budget 0.3 -o %s/folded", F, tmpdir, text, tmpdir);
    check_report(tpath("folded"), "fold", 1, blank);
    RUN_OK("%s prune --model %s/base --data %s --method flap --budget 0.3 -o %s/pruned", F, tmpdir, text, tmpdir);
    check_report(tpath("pruned"), "prune", 1, blank);
    RUN_OK("%s heal --teacher %s/base --model %s/folded --data %s -o %s/healed --steps 20 --eval-every 10 --log-every 5", F, tmpdir, tmpdir, text,
           tmpdir);
    check_report(tpath("healed"), "heal", 4, blank);
    // analyze's page: well-formed, names its model and text, renders
    RUN_OK("%s analyze --model %s/base --data %s -o %s/an", F, tmpdir, text, tmpdir);
    {
        char ap[400];
        snprintf(ap, sizeof ap, "%s/an/analysis.html", tmpdir);
        size_t an;
        char *ah = slurp(ap, &an);
        assert_non_null(strstr(ah, text));
        free(ah);
        if (system("command -v xmllint > /dev/null 2>&1") == 0) RUN_OK("xmllint --noout %s", ap);
    }
    // merge's inputs are models: its report gives their hashes (the text is not among them)
    RUN_OK("%s merge --method linear --model %s/base --model %s/fused -o %s/merged", F, tmpdir, tmpdir, tmpdir);
    char p[400], *out;
    snprintf(p, sizeof p, "%s/merged/report.html", tmpdir);
    assert_true(fk_path_exists(p));
    size_t n;
    char *html = slurp(p, &n);
    assert_non_null(strstr(html, "<h1>fusekit merge</h1>"));
    assert_non_null(strstr(html, "linear"));
    // the distance chart: a bar per input and layer (the average lies between them: neither is 0)
    assert_non_null(strstr(html, "Distance to each input per layer"));
    assert_non_null(strstr(html, "<title>base, 0: "));
    assert_non_null(strstr(html, "<title>fused, emb+head: "));
    assert_null(strstr(html, "<title>base, 0: 0.000<"));
    free(html);
    if (system("command -v xmllint > /dev/null 2>&1") == 0) RUN_OK("xmllint --noout %s", p);
    (void)out;
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_reports)};
    return cmocka_run_group_tests(tests, setup, tmpdir_teardown);
}
