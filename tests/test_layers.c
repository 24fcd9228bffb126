// The library's rules that a reader of src/ can check: it never prints and never exits (it
// returns a status with a message; the CLI prints). Every .c and .h under src/ is read with its
// comments and string literals blanked out, and a call of printf, fprintf, vprintf, vfprintf,
// puts, fputs, putchar, perror, exit, _exit, quick_exit or abort fails the test with the file and
// line. The one exception: fk_assert_fail in src/base/status.c (an internal assertion).
// (Issue 17 adds the include-layer check here.)
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

static void test_library_never_prints_or_exits(void **state) {
    (void)state;
    static char report[1 << 16];
    report[0] = 0;
    int files = 0, found = 0;
    DIR *top = opendir(SRC_DIR);
    assert_non_null(top);
    for (struct dirent *m; (m = readdir(top)) != NULL;) {
        if (m->d_name[0] == '.') continue;
        char dir[1024];
        snprintf(dir, sizeof dir, "%s/%s", SRC_DIR, m->d_name);
        DIR *d = opendir(dir);
        if (!d) continue;
        for (struct dirent *e; (e = readdir(d)) != NULL;) {
            size_t l = strlen(e->d_name);
            if (l < 3 || (strcmp(e->d_name + l - 2, ".c") != 0 && strcmp(e->d_name + l - 2, ".h") != 0)) continue;
            char path[2048], rel[600];
            snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
            snprintf(rel, sizeof rel, "%s/%s", m->d_name, e->d_name);
            char *text;
            size_t n;
            if (fk_read_file(path, &text, &n) != FK_OK) fail_msg("cannot read %s", path);
            blank(text, n);
            found += scan(rel, text, n, report, sizeof report);
            free(text);
            files++;
        }
        closedir(d);
    }
    closedir(top);
    print_message("  %d library files read\n", files);
    assert_true(files > 30);
    if (found) fail_msg("the library prints or exits (%d calls; return a status with fk_error instead):\n%s", found, report);
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
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_scanner), cmocka_unit_test(test_library_never_prints_or_exits)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
