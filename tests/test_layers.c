// The library's rules that a reader of src/ can check.
//
// 1. Layers, downward only. Every #include "..." in src/ and include/fusekit/ is read; each file
//    belongs to a module (its folder under src/, or for a public header the module named in the
//    table below), each module to a layer:
//        base -> format -> tok, nn -> model, data -> eval -> train -> fuse, fold -> cli
//    A file may include headers of its own module and of lower layers only: an arrow sideways
//    (tok -> nn, fuse -> fold) or upward fails the test with the file and line. A public header
//    missing from the table fails too, so a new header is placed on purpose.
// 2. The library never prints and never exits (it returns a status with a message; the CLI,
//    src/cli/, prints). Every .c and .h under src/ but src/cli/ is read with its comments and
//    string literals blanked out, and a call of printf, fprintf, vprintf, vfprintf, puts, fputs,
//    putchar, perror, exit, _exit, quick_exit or abort fails the test with the file and line.
//    The one exception: fk_assert_fail in src/base/status.c (an internal assertion).
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <ctype.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fusekit/base.h"

#define SRC_DIR FK_TEST_DATA "/../../src"
#define INCLUDE_DIR FK_TEST_DATA "/../../include/fusekit"

// Comments, string and character literals replaced by spaces (newlines kept, so lines still count).
static void blank(char *s, size_t n) {
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '/' && i + 1 < n && s[i + 1] == '/') {
            while (i < n && s[i] != '\n') s[i++] = ' ';
        } else if (s[i] == '/' && i + 1 < n && s[i + 1] == '*') {
            s[i] = s[i + 1] = ' ';
            for (i += 2; i < n && !(s[i] == '*' && i + 1 < n && s[i + 1] == '/'); i++)
                if (s[i] != '\n') s[i] = ' ';
            if (i < n) s[i] = s[i + 1] = ' ', i++;
        } else if (s[i] == '"' || s[i] == '\'') {
            char q = s[i];
            for (i++; i < n && s[i] != q; i++) {
                if (s[i] == '\\' && i + 1 < n) s[i++] = ' ';
                if (s[i] != '\n') s[i] = ' ';
            }
        }
    }
}

static const char *const banned[] = {"printf", "fprintf", "vprintf", "vfprintf", "puts", "fputs", "putchar",
                                     "perror", "exit", "_exit", "quick_exit", "abort"};

// Calls of a banned function in the blanked text: appended to report, counted.
static int scan(const char *rel, char *s, size_t n, char *report, size_t cap) {
    int found = 0;
    for (size_t k = 0; k < sizeof banned / sizeof banned[0]; k++) {
        size_t len = strlen(banned[k]);
        for (char *p = s; (p = strstr(p, banned[k])) != NULL; p += len) {
            char before = p > s ? p[-1] : ' ', *q = p + len;
            if (isalnum((unsigned char)before) || before == '_' || before == '.' || before == '>') continue;
            while (*q == ' ' || *q == '\t') q++;
            if (*q != '(') continue;
            if (strcmp(rel, "base/status.c") == 0 && (strcmp(banned[k], "fprintf") == 0 || strcmp(banned[k], "abort") == 0))
                continue;  // fk_assert_fail
            int line = 1;
            for (char *c = s; c < p; c++) line += *c == '\n';
            size_t used = strlen(report);
            snprintf(report + used, cap - used, "  src/%s:%d calls %s\n", rel, line, banned[k]);
            found++;
        }
    }
    (void)n;
    return found;
}

// The layers, lowest first. Modules on one layer may not include each other.
static const struct { const char *module; int layer; } layers[] = {
    {"base", 0}, {"format", 1}, {"tok", 2}, {"nn", 2}, {"model", 3}, {"data", 3}, {"gpu", 3}, {"eval", 4},
    {"train", 5}, {"fuse", 6}, {"fold", 6}, {"cli", 7},
};

// Public headers (include/fusekit/) and the module that owns each.
static const struct { const char *header, *module; } owners[] = {
    {"base.h", "base"},        {"html.h", "base"},          {"safetensors.h", "format"}, {"gguf.h", "format"},
    {"quants.h", "format"},    {"store.h", "format"},       {"tokenizer.h", "tok"},      {"model.h", "nn"},
    {"hf.h", "model"},         {"gguf_model.h", "model"},   {"model_load.h", "model"},   {"data.h", "data"},
    {"synth.h", "data"},       {"eval.h", "eval"},          {"probes.h", "eval"},        {"sample.h", "eval"},
    {"train.h", "train"},      {"align.h", "fuse"},         {"fusion.h", "fuse"},        {"merge.h", "fuse"},
    {"extract.h", "fuse"},     {"analyze.h", "fold"},       {"cluster.h", "fold"},       {"fold.h", "fold"},
    {"job.h", "fuse"},         {"stats.h", "eval"},         {"chat.h", "tok"},       {"gpu.h", "gpu"},
    {"fusekit.h", "cli"},
};

static int layer_of(const char *module) {
    for (size_t i = 0; i < sizeof layers / sizeof layers[0]; i++)
        if (strcmp(layers[i].module, module) == 0) return layers[i].layer;
    return -1;
}

// The module of an included name: "fusekit/x.h" from the table, "nn/ops.h" from its folder, a bare
// "x.h" is the including file's own module. NULL when a public header is not in the table.
static const char *module_of_include(const char *inc, const char *own) {
    if (strncmp(inc, "fusekit/", 8) == 0) {
        for (size_t i = 0; i < sizeof owners / sizeof owners[0]; i++)
            if (strcmp(owners[i].header, inc + 8) == 0) return owners[i].module;
        return NULL;
    }
    static char mod[64];
    const char *slash = strchr(inc, '/');
    if (!slash) return own;
    snprintf(mod, sizeof mod, "%.*s", (int)(slash - inc), inc);
    return mod;
}

// Arrows of one file (module own, text s) that do not point downward: appended to report, counted.
static int scan_includes(const char *rel, const char *own, const char *s, char *report, size_t cap) {
    int found = 0, line = 1;
    for (const char *p = s; *p; p++) {
        if (*p == '\n') line++;
        if (*p != '#' || (p > s && p[-1] != '\n')) continue;
        const char *q = p + 1;
        while (*q == ' ' || *q == '\t') q++;
        if (strncmp(q, "include", 7) != 0) continue;
        q += 7;
        while (*q == ' ' || *q == '\t') q++;
        if (*q != '"') continue;
        const char *end = strchr(q + 1, '"');
        if (!end) continue;
        char inc[256];
        snprintf(inc, sizeof inc, "%.*s", (int)(end - q - 1), q + 1);
        const char *to = module_of_include(inc, own);
        size_t used = strlen(report);
        if (!to) {
            snprintf(report + used, cap - used, "  %s:%d includes %s, which has no module in test_layers.c's table\n", rel,
                     line, inc);
            found++;
        } else if (strcmp(to, own) != 0 && (layer_of(to) < 0 || layer_of(to) >= layer_of(own))) {
            snprintf(report + used, cap - used, "  %s:%d: %s (layer %d) includes %s of %s (layer %d)\n", rel, line, own,
                     layer_of(own), inc, to, layer_of(to));
            found++;
        }
    }
    return found;
}

// Each .c and .h file in folder dir: fn(rel, module, text) with text's comments and strings blanked
// or not. Returns the number of files.
typedef int (*file_fn)(const char *rel, const char *module, char *text, size_t n, char *report, size_t cap);

static int each_file(const char *dir, const char *prefix, const char *module, file_fn fn, int *found, char *report,
                     size_t cap) {
    DIR *d = opendir(dir);
    if (!d) return 0;
    int files = 0;
    for (struct dirent *e; (e = readdir(d)) != NULL;) {
        size_t l = strlen(e->d_name);
        if (l < 3 || (strcmp(e->d_name + l - 2, ".c") != 0 && strcmp(e->d_name + l - 2, ".h") != 0 &&
                       strcmp(e->d_name + l - 3, ".cu") != 0)) continue;
        char path[2048], rel[600];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        snprintf(rel, sizeof rel, "%s%s", prefix, e->d_name);
        char *text;
        size_t n;
        if (fk_read_file(path, &text, &n) != FK_OK) fail_msg("cannot read %s", path);
        *found += fn(rel, module, text, n, report, cap);
        free(text);
        files++;
    }
    closedir(d);
    return files;
}

static int prints_or_exits(const char *rel, const char *module, char *text, size_t n, char *report, size_t cap) {
    if (strcmp(module, "cli") == 0) return 0;
    blank(text, n);
    return scan(rel + 4, text, n, report, cap);  // rel is "src/...": scan names it again
}

static int includes_upward(const char *rel, const char *module, char *text, size_t n, char *report, size_t cap) {
    (void)n;
    if (strncmp(rel, "include/fusekit/", 16) == 0) {
        module = NULL;
        for (size_t i = 0; i < sizeof owners / sizeof owners[0]; i++)
            if (strcmp(owners[i].header, rel + 16) == 0) module = owners[i].module;
        if (!module) {
            size_t used = strlen(report);
            snprintf(report + used, cap - used, "  %s: a public header with no module in test_layers.c's table\n", rel);
            return 1;
        }
    } else if (layer_of(module) < 0) {
        size_t used = strlen(report);
        snprintf(report + used, cap - used, "  %s: src/%s/ is no module in test_layers.c's table\n", rel, module);
        return 1;
    }
    return scan_includes(rel, module, text, report, cap);
}

// Every folder under src/ through fn; then, for the include check, include/fusekit/.
static int each_library_file(file_fn fn, int with_headers, int *found, char *report, size_t cap) {
    int files = 0;
    DIR *top = opendir(SRC_DIR);
    assert_non_null(top);
    for (struct dirent *m; (m = readdir(top)) != NULL;) {
        if (m->d_name[0] == '.') continue;
        char dir[1024], prefix[300];
        snprintf(dir, sizeof dir, "%s/%s", SRC_DIR, m->d_name);
        snprintf(prefix, sizeof prefix, "src/%s/", m->d_name);
        files += each_file(dir, prefix, m->d_name, fn, found, report, cap);
    }
    closedir(top);
    if (with_headers) files += each_file(INCLUDE_DIR, "include/fusekit/", "", fn, found, report, cap);
    return files;
}

// Runs fn over the library's files (and the public headers when with_headers); fails with what
// and the report when it finds anything, or when fewer than min_files were read.
static void check_library(file_fn fn, int with_headers, int min_files, const char *what) {
    static char report[1 << 16];
    report[0] = 0;
    int found = 0, files = each_library_file(fn, with_headers, &found, report, sizeof report);
    print_message("  %d files read\n", files);
    assert_true(files > min_files);
    if (found) fail_msg("%s (%d):\n%s", what, found, report);
}

static void test_library_never_prints_or_exits(void **state) {
    (void)state;
    check_library(prints_or_exits, 0, 30, "the library prints or exits (return a status with fk_error instead)");
}

static void test_includes_point_downward(void **state) {
    (void)state;
    check_library(includes_upward, 1, 60, "includes that do not point downward (layers: base -> format -> tok, nn -> model, "
                                          "data -> eval -> train -> fuse, fold -> cli)");
}

// The include checker itself: downward and own-module includes pass, sideways and upward ones
// fail, and so does a public header nobody placed.
static void test_include_checker(void **state) {
    (void)state;
    char report[1024] = "";
    const char *ok = "#include \"fusekit/base.h\"\n#include \"nn/ops.h\"\n#include \"fusekit/model.h\"\n#include <stdio.h>\n";
    assert_int_equal(scan_includes("src/nn/x.c", "nn", ok, report, sizeof report), 0);
    const char *bad = "#include \"fusekit/base.h\"\n// x\n#include \"fusekit/tokenizer.h\"\n#  include \"fusekit/train.h\"\n"
                      "#include \"fusekit/nothing.h\"\n";
    assert_int_equal(scan_includes("src/nn/x.c", "nn", bad, report, sizeof report), 3);
    assert_non_null(strstr(report, "src/nn/x.c:3: nn (layer 2) includes fusekit/tokenizer.h of tok (layer 2)"));
    assert_non_null(strstr(report, "src/nn/x.c:4: nn (layer 2) includes fusekit/train.h of train (layer 5)"));
    assert_non_null(strstr(report, "src/nn/x.c:5 includes fusekit/nothing.h, which has no module"));
}

// The scanner itself: it finds a call in code, and none in comments, strings or longer names.
static void test_scanner(void **state) {
    (void)state;
    char report[512] = "";
    char code[] = "int f(void) {\n  // printf(\"x\");\n  const char *s = \"exit(1)\"; /* abort() */\n  snprintf(b, 1, \"\");\n"
                  "  fk_afile_abort(&f); o.exit(2);\n  exit (3);\n}\n";
    blank(code, strlen(code));
    assert_int_equal(scan("x/y.c", code, strlen(code), report, sizeof report), 1);
    assert_non_null(strstr(report, "src/x/y.c:6 calls exit"));
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_scanner), cmocka_unit_test(test_include_checker),
                                       cmocka_unit_test(test_library_never_prints_or_exits),
                                       cmocka_unit_test(test_includes_point_downward)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
