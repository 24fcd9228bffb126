// Shared by the test programs: a temporary folder per program, removed at the end.
#ifndef FK_TEST_UTIL_H
#define FK_TEST_UTIL_H
#include <stdio.h>
#include <stdlib.h>

static char tmpdir[256];

static int tmpdir_setup(void **s) {
    (void)s;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/fk_test_XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int tmpdir_teardown(void **s) {
    (void)s;
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}
#endif
