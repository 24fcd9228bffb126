// Shared by the test programs: a temporary folder per program, removed at the end.
#ifndef FK_TEST_UTIL_H
#define FK_TEST_UTIL_H
#include <stdio.h>
#include <stdlib.h>

static char tmpdir[256];

// Fails the running cmocka test with the library's message when a call does not return FK_OK.
#define CHECK(st) do { fk_status st_ = (st); if (st_ != FK_OK) fail_msg("%s", fk_last_error()); } while (0)

// "<tmpdir>/<name>"; the last eight results stay valid.
static inline char *tpath(const char *name) {
    static char buf[8][512];
    static int k;
    char *p = buf[k++ % 8];
    snprintf(p, 512, "%s/%s", tmpdir, name);
    return p;
}

static inline int tmpdir_setup(void **s) {
    (void)s;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/fk_test_XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static inline int tmpdir_teardown(void **s) {
    (void)s;
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}
#endif
