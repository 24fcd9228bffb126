// The fusekit program's options and outputs, as a careless or unlucky user meets them: numeric
// options out of range or not numbers, outputs that exist, outputs that are inputs, outputs
// that cannot be written, an empty -o, temporaries left behind. Each is refused before any
// work, with exit code 2 (a bad argument) or 1 (a place that cannot be written) and a message
// naming the option or path; existing files stay byte for byte as they were.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <dirent.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fusekit/fusekit.h"
#include "test_util.h"

#define GPT2 FK_TEST_DATA "/golden/gpt2"
#define LLAMA FK_TEST_DATA "/golden/llama"

// Runs the command, expects exit code rc and every one of the NULL-terminated substrings in
// its output.
static void expect(int rc, const char *cmd, ...) {
    char *out;
    int got = run(&out, "%s", cmd);
    if (got != rc) fail_msg("%s: exit %d, expected %d; output:\n%s", cmd, got, rc, out);
    va_list ap;
    va_start(ap, cmd);
    for (const char *s; (s = va_arg(ap, const char *));)
        if (!strstr(out, s)) fail_msg("%s: output lacks '%s':\n%s", cmd, s, out);
    va_end(ap);
    free(out);
}

// No "*.tmp-*" or "*.old-*" entries are left in dir.
static void no_temporaries(const char *dir) {
    DIR *d = opendir(dir);
    assert_non_null(d);
    for (struct dirent *e; (e = readdir(d));)
        if (strstr(e->d_name, ".tmp-") || strstr(e->d_name, ".old-") || strstr(e->d_name, ".fusekit-probe") || strstr(e->d_name, ".gguf-inputs"))
            fail_msg("temporary %s left in %s", e->d_name, dir);
    closedir(d);
}

static void test_ranges(void **s) {
    (void)s;
    char c[1024];
    char t[400];  // the output in a writable place: the checks after the output's come second
    snprintf(t, sizeof t, "--data /nonexistent.txt -o %s/never", tmpdir);
    struct { const char *args, *msg; } cases[] = {
        {"train %s --lr -1", "fusekit train: error: --lr must be > 0 and <= 1 (got -1)"},
        {"train %s --lr 0", "--lr must be > 0 and <= 1 (got 0)"},
        {"train %s --lr nan", "option --lr expects a finite number, got 'nan'"},
        {"train %s --lr inf", "option --lr expects a finite number, got 'inf'"},
        {"train %s --steps 12abc", "option --steps expects an integer, got '12abc'"},
        {"train %s --steps 0", "--steps must be >= 1 (got 0)"},
        {"train %s --steps 99999999999999999999", "--steps must be >= 1 (got 99999999999999999999)"},
        {"train %s --batch 0", "--batch must be >= 1 and <= 65536 (got 0)"},
        {"train %s --seq -5", "--seq must be >= 0 and <= 1048576 (got -5)"},
        {"train %s --threads -1", "--threads must be >= 0 and <= 4096 (got -1)"},
        {"train %s --lambda 1.5", "--lambda must be >= 0 and <= 1 (got 1.5)"},
        {"train %s --beta2 1", "--beta2 must be >= 0 and < 1 (got 1)"},
        {"train %s --val-frac=1", "--val-frac must be >= 0 and < 1 (got 1)"},
        {"train %s --layers 300", "--layers must be >= 1 and <= 256 (got 300)"},
        {"train %s --keep 0", "--keep must be >= 1 and <= 1000000 (got 0)"},
        {"train %s --tau 0", "--tau must be > 0 (got 0)"},
        {"train %s --d-model 30 --heads 4", "fusekit train: error: --d-model 30 is not a multiple of --heads 4"},
        {"extract --model /nonexistent %s -k 65", "fusekit extract: error: -k must be >= 1 and <= 64 (got 65)"},
        {"fold --model /nonexistent %s --budget 1", "fusekit fold: error: --budget must be > 0 and < 1 (got 1)"},
        {"fold --model /nonexistent %s --heal-lambda 2", "fusekit fold: error: --heal-lambda must be >= 0 and <= 1 (got 2)"},
        {"fold --model /nonexistent %s --heal-steps 4 -- --lr -1", "fusekit train: error: --lr must be > 0 and <= 1 (got -1)"},
        {"prune --model /nonexistent %s --method flap --budget 0", "fusekit prune: error: --budget must be > 0 and < 1 (got 0)"},
        {"analyze --model /nonexistent %s --max-n 0", "fusekit analyze: error: --max-n must be >= 1 and <= 256 (got 0)"},
        {"eval --model /nonexistent --data /nonexistent --batch -2 %s", "fusekit eval: error: --batch must be >= 1 and <= 65536 (got -2)"},
        {"generate --model /nonexistent --temperature -1 %s", "fusekit generate: error: --temperature must be >= 0 and <= 100 (got -1)"},
        {"generate --model /nonexistent --top-p 1.5 %s", "--top-p must be > 0 and <= 1 (got 1.5)"},
        {"merge --method ties --model /a --base /b -o /nonexistent-out --density 2 %s", "fusekit merge: error: --density must be > 0 and <= 1 (got 2)"},
        {"merge --method linear -o /nonexistent-out --model /a --weight nan --model /b", "fusekit merge: error: option --weight expects a finite number, got 'nan'"},
        {"merge --method linear -o /nonexistent-out --model /a --weight 1e9 --model /b", "--weight must be >= -1000 and <= 1000 (got 1e9)"},
        {"info --model /nonexistent --batch 0", "fusekit info: error: --batch must be >= 1 and <= 65536 (got 0)"},
        {"generate --model /nonexistent --top-k -1", "fusekit generate: error: --top-k must be >= 0 (got -1)"},
        {"tokenizer train %s --character-coverage 0", "--character-coverage must be > 0 and <= 1 (got 0)"},
        {"tokenizer train %s --vocab 3", "fusekit tokenizer train: error: --vocab must be >= 256 and <= 16777216 (got 3)"},
        {"data synth -o /nonexistent-out --bytes 0 %s", "fusekit data synth: error: --bytes must be >= 1"},
        // fuse and heal check the options they hand to train before extracting anything
        {"fuse --target /nonexistent --source /nonexistent2 %s -k 0", "fusekit fuse: error: -k must be >= 1 and <= 64 (got 0)"},
        {"fuse --target /nonexistent --source /nonexistent2 %s -k 4x", "option -k expects an integer, got '4x'"},
        {"fuse --target /nonexistent --source /nonexistent2 %s --steps -3", "fusekit train: error: --steps must be >= 1 (got -3)"},
        {"heal --teacher /nonexistent --model /nonexistent2 %s -k 99", "fusekit heal: error: -k must be >= 1 and <= 64 (got 99)"},
        {"heal --teacher /nonexistent --model /nonexistent2 %s --lambda -0.5", "--lambda must be >= 0 and <= 1 (got -0.5)"},
        {"heal --teacher /nonexistent --model /nonexistent2 %s --lr 2", "--lr must be > 0 and <= 1 (got 2)"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char args[512];
        snprintf(args, sizeof args, cases[i].args, strncmp(cases[i].args, "eval", 4) == 0 ? "" : t);
        snprintf(c, sizeof c, "%s %s", FK_CLI, args);
        expect(2, c, cases[i].msg, NULL);
    }
    // every verb's table gives each numeric option a range (checked on every run): --help runs
    const char *verbs[] = {"train", "eval", "generate", "info", "tokenizer train", "tokenizer encode", "tokenizer decode", "tokenizer info",
                           "tokenizer convert", "tokenize", "extract", "fuse", "analyze", "fold", "heal", "prune", "merge", "demo", "export",
                           "import", "data synth", "align"};
    for (size_t i = 0; i < sizeof verbs / sizeof verbs[0]; i++) {
        snprintf(c, sizeof c, "%s %s --help", FK_CLI, verbs[i]);
        expect(0, c, "usage: fusekit", NULL);
    }
    snprintf(c, sizeof c, "%s train --help", FK_CLI);
    expect(0, c, "--lr FLOAT", "[> 0 and <= 1]", NULL);
}

static void test_existing_outputs(void **s) {
    (void)s;
    char c[1024];
    const char *m1 = tpath("m1"), *g = tpath("m1.gguf"), *imp = tpath("imp");
    snprintf(c, sizeof c, "%s merge --method linear --model %s --model %s -o %s", FK_CLI, GPT2, GPT2, m1);
    expect(0, c, "\"method\":\"linear\"", NULL);
    char *p = fk_path_join(m1, "model.safetensors");
    size_t n0, n1;
    char *before = slurp(p, &n0);
    // again: refused, the folder untouched
    expect(2, c, "fusekit merge: error: -o ", "m1 already exists: pass --force", NULL);
    char *after = slurp(p, &n1);
    assert_int_equal(n0, n1);
    assert_memory_equal(before, after, n0);
    free(after);
    // a different merge with --force replaces it, through a temporary renamed when complete
    snprintf(c, sizeof c, "%s merge --method task-arithmetic --base %s --model %s --lambda 0.5 -o %s --force", FK_CLI, GPT2, GPT2, m1);
    expect(0, c, "\"method\":\"task-arithmetic\"", NULL);
    assert_true(fk_path_exists(p));
    no_temporaries(tmpdir);
    free(before);
    free(p);

    // export: a file output
    snprintf(c, sizeof c, "%s export --model %s --gguf %s --no-tokenizer", FK_CLI, m1, g);
    expect(0, c, "\"tensors\":", NULL);
    before = slurp(g, &n0);
    expect(2, c, "fusekit export: error: --gguf ", "m1.gguf already exists: pass --force", NULL);
    after = slurp(g, &n1);
    assert_int_equal(n0, n1);
    assert_memory_equal(before, after, n0);
    free(after);
    free(before);
    snprintf(c, sizeof c, "%s export --model %s --gguf %s --no-tokenizer --type f16 --force", FK_CLI, m1, g);
    expect(0, c, "\"type\":\"F16\"", NULL);

    // import: a folder output
    snprintf(c, sizeof c, "%s import --gguf %s -o %s", FK_CLI, g, imp);
    expect(0, c, "\"model_type\":\"gpt2\"", NULL);
    expect(2, c, "fusekit import: error: -o ", "imp already exists", NULL);
    snprintf(c, sizeof c, "%s import --gguf %s -o %s --force", FK_CLI, g, imp);
    expect(0, c, "\"model_type\":\"gpt2\"", NULL);
    no_temporaries(tmpdir);

    // verbs refuse an existing output before any work: their inputs need not even exist
    const char *verbs[] = {"fold --model /nonexistent --data /nonexistent -o %s", "prune --model /nonexistent --data /nonexistent --method flap -o %s",
                           "analyze --model /nonexistent --data /nonexistent -o %s", "data synth -o %s",
                           "tokenize --tokenizer /nonexistent --data /nonexistent -o %s"};
    for (size_t i = 0; i < sizeof verbs / sizeof verbs[0]; i++) {
        char args[512];
        snprintf(args, sizeof args, verbs[i], m1);
        snprintf(c, sizeof c, "%s %s", FK_CLI, args);
        expect(2, c, "already exists: pass --force", NULL);
    }
    // a tokenizer goes into an existing (model) folder, but replaces its tokenizer.json only with --force
    char *tj = fk_path_join(imp, "tokenizer.json");
    assert_int_equal(fk_write_file_atomic(tj, "{}", 2), FK_OK);
    snprintf(c, sizeof c, "%s tokenizer train --data /nonexistent --vocab 300 -o %s", FK_CLI, imp);
    expect(2, c, "imp/tokenizer.json already exists: pass --force", NULL);
    free(tj);

    // train into a model folder that holds no training run: refused, overwritten with --force
    char *text = fk_path_join(tmpdir, "text.txt");
    FILE *f = fopen(text, "w");
    assert_non_null(f);
    for (int i = 0; i < 200; i++) fprintf(f, "line %d: the cat sat on the mat.\n", i);
    fclose(f);
    p = fk_path_join(imp, "model.safetensors");
    before = slurp(p, &n0);
    snprintf(c, sizeof c, "%s train --data %s -o %s --steps 1 --ctx 16 --d-model 16 --layers 1 --heads 2 --batch 2", FK_CLI, text, imp);
    expect(2, c, "fusekit train: error: -o ", "imp holds a model but no training run: pass --force", NULL);
    after = slurp(p, &n1);
    assert_int_equal(n0, n1);
    assert_memory_equal(before, after, n0);
    free(after);
    free(before);
    snprintf(c, sizeof c, "%s train --data %s -o %s --steps 1 --ctx 16 --d-model 16 --layers 1 --heads 2 --batch 2 --force", FK_CLI, text, imp);
    expect(0, c, "\"step\":1", NULL);
    free(p);
    free(text);

    // a failed merge leaves no temporary folder behind
    snprintf(c, sizeof c, "%s merge --method linear --model %s --model %s -o %s", FK_CLI, GPT2, LLAMA, tpath("bad"));
    expect(1, c, "share one architecture", NULL);
    assert_false(fk_path_exists(tpath("bad")));
    no_temporaries(tmpdir);
}

// What a killed run left beside an output (kill -9 between or during the renames): the
// temporaries of dead processes are removed, an output moved aside that nothing replaced is put
// back (and then needs --force like any existing output), a running process's are kept.
static void test_stale_temporaries(void **s) {
    (void)s;
    char dir[600], c[1400], p[700];
    snprintf(dir, sizeof dir, "%s", tpath("stale"));
    CHECK(fk_mkdir_p(dir));
    pid_t dead = fork();  // a process that has ended: its pid names nothing running
    if (dead == 0) _exit(0);
    waitpid(dead, NULL, 0);
    long live = (long)getpid();
    const char *made[] = {"%s/m.tmp-%ld-abc123", "%s/m.old-%ld", "%s/m.tmp-%ld-zzz999", "%s/m.old-%ld-backup"};
    long pids[] = {dead, dead, live, dead};
    for (int i = 0; i < 4; i++) {
        snprintf(p, sizeof p, made[i], dir, pids[i]);
        CHECK(fk_mkdir_p(p));
        snprintf(p + strlen(p), sizeof p - strlen(p), "/marker");
        FILE *f = fopen(p, "w");
        assert_non_null(f);
        fclose(f);
    }
    snprintf(p, sizeof p, "%s/m.tmp.%ld", dir, (long)dead);  // a file's temporary (fk_afile)
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    fclose(f);
    snprintf(c, sizeof c, "%s merge --method linear --model %s --model %s -o %s/m", FK_CLI, GPT2, GPT2, dir);
    expect(2, c, "m already exists: pass --force", NULL);  // the output moved aside is back
    snprintf(p, sizeof p, "%s/m/marker", dir);
    assert_true(fk_path_exists(p));
    const char *gone[] = {"%s/m.tmp-%ld-abc123", "%s/m.old-%ld", "%s/m.tmp.%ld"};
    for (int i = 0; i < 3; i++) {
        snprintf(p, sizeof p, gone[i], dir, (long)dead);
        if (fk_path_exists(p)) fail_msg("%s was left", p);
    }
    snprintf(p, sizeof p, "%s/m.tmp-%ld-zzz999/marker", dir, live);
    assert_true(fk_path_exists(p));  // a running process's temporary is not touched
    snprintf(p, sizeof p, "%s/m.old-%ld-backup/marker", dir, (long)dead);
    assert_true(fk_path_exists(p));  // nor a name fusekit does not write
    snprintf(c + strlen(c), sizeof c - strlen(c), " --force");
    expect(0, c, "\"method\":\"linear\"", NULL);
    snprintf(p, sizeof p, "%s/m/model.safetensors", dir);
    assert_true(fk_path_exists(p));
}

static void test_same_input_output(void **s) {
    (void)s;
    char c[1024];
    const char *m2 = tpath("m2");
    snprintf(c, sizeof c, "%s merge --method linear --model %s --model %s -o %s", FK_CLI, GPT2, GPT2, m2);
    expect(0, c, NULL);
    char *p = fk_path_join(m2, "model.safetensors");
    size_t n0, n1;
    char *before = slurp(p, &n0);
    snprintf(c, sizeof c, "%s train --init %s -o %s/ --data /nonexistent --steps 1", FK_CLI, m2, m2);
    expect(2, c, "fusekit train: error: -o ", "would overwrite the input", NULL);
    // --force does not make an input an output
    snprintf(c, sizeof c, "%s merge --method linear --model %s --model %s -o %s --force", FK_CLI, GPT2, m2, m2);
    expect(2, c, "fusekit merge: error: -o ", "would overwrite the input", NULL);
    // nor may the replaced folder hold an input
    snprintf(c, sizeof c, "%s fold --model %s/model.safetensors --data /nonexistent -o %s --force", FK_CLI, m2, m2);
    expect(2, c, "would overwrite the input", NULL);
    snprintf(c, sizeof c, "%s import --gguf %s -o %s --force", FK_CLI, tpath("same.gguf"), tpath("same.gguf"));
    expect(2, c, "fusekit import: error: -o ", "would overwrite the input", NULL);
    snprintf(c, sizeof c, "%s export --model %s --gguf %s/../m2 --force", FK_CLI, m2, m2);
    expect(2, c, "fusekit export: error: --gguf ", "would overwrite the input", NULL);
    snprintf(c, sizeof c, "%s extract --model %s --data %s/config.json -o %s/config.json", FK_CLI, m2, m2, m2);
    expect(2, c, "fusekit extract: error: -o ", "would overwrite the input", NULL);
    char *after = slurp(p, &n1);
    assert_int_equal(n0, n1);
    assert_memory_equal(before, after, n0);
    free(after);
    free(before);
    free(p);
}

static void test_unwritable_and_empty_outputs(void **s) {
    (void)s;
    char c[1024], bad[600];
    // a folder that takes no new files: read-only (a path under a file where chmod does not bind root)
    if (geteuid() == 0) {
        assert_int_equal(fk_write_file_atomic(tpath("afile"), "x", 1), FK_OK);
        snprintf(bad, sizeof bad, "%s/sub/out", tpath("afile"));
    } else {
        assert_int_equal(fk_mkdir_p(tpath("ro")), FK_OK);
        assert_int_equal(chmod(tpath("ro"), 0555), 0);
        snprintf(bad, sizeof bad, "%s/out", tpath("ro"));
    }
    // each is found before the work (the inputs do not exist, and that error would come first otherwise)
    const char *verbs[] = {"merge --method linear --model /nonexistent -o %s", "fold --model /nonexistent --data /nonexistent -o %s",
                           "prune --model /nonexistent --data /nonexistent --method flap -o %s",
                           "analyze --model /nonexistent --data /nonexistent -o %s", "export --model /nonexistent --gguf %s",
                           "import --gguf /nonexistent -o %s", "train --data /nonexistent -o %s",
                           "extract --model /nonexistent --data /nonexistent -o %s", "data synth -o %s"};
    for (size_t i = 0; i < sizeof verbs / sizeof verbs[0]; i++) {
        char args[900];
        snprintf(args, sizeof args, verbs[i], bad);
        snprintf(c, sizeof c, "%s %s", FK_CLI, args);
        expect(1, c, "error: cannot write ", bad, NULL);
    }
    if (geteuid() != 0) chmod(tpath("ro"), 0755);
    // -o "" (read past the end of the string before)
    const char *empty[] = {"train --data /nonexistent -o ''", "merge --method linear --model /x -o ''", "import --gguf /x -o ''",
                           "export --model /x --gguf ''", "extract --model /x --data /x -o ''", "fold --model /x --data /x -o ''",
                           "demo -o ''", "tokenizer train --data /x -o ''"};
    for (size_t i = 0; i < sizeof empty / sizeof empty[0]; i++) {
        snprintf(c, sizeof c, "%s %s", FK_CLI, empty[i]);
        expect(2, c, "is empty: give the path to write", NULL);
    }
    // the library's directory maker on an empty name
    assert_int_equal(fk_mkdir_p(""), FK_ERR_ARG);
    assert_non_null(strstr(fk_last_error(), "empty name"));
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_ranges), cmocka_unit_test(test_existing_outputs),
                                       cmocka_unit_test(test_stale_temporaries), cmocka_unit_test(test_same_input_output), cmocka_unit_test(test_unwritable_and_empty_outputs)};
    return cmocka_run_group_tests(tests, tmpdir_setup, tmpdir_teardown);
}
