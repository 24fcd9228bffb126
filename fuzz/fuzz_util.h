// Shared by the harnesses: the input as a file (most parsers take a path), reused across runs.
#ifndef FK_FUZZ_UTIL_H
#define FK_FUZZ_UTIL_H
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

// A memfd holding exactly the n bytes at data; returns its /proc path (static buffer). A
// parser opening the path gets its own descriptor, so nothing of one run leaks into the next.
static inline const char *fz_file(const uint8_t *data, size_t n) {
    static int fd = -1;
    static char path[64];
    if (fd < 0) {
        fd = memfd_create("fkfuzz", 0);
        if (fd < 0) { perror("memfd_create"); abort(); }
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    }
    if (ftruncate(fd, 0) != 0 || (n && pwrite(fd, data, n, 0) != (ssize_t)n)) { perror("memfd write"); abort(); }
    return path;
}

// The input as a NUL-terminated string (malloc'd).
static inline char *fz_str(const uint8_t *data, size_t n) {
    char *s = malloc(n + 1);
    if (!s) abort();
    memcpy(s, data, n);
    s[n] = 0;
    return s;
}

// Reads every byte of a region so that ASan sees any out-of-bounds pointer the parser handed out.
static volatile uint8_t fz_sink;
static inline void fz_touch(const void *p, size_t n) {
    const uint8_t *b = p;
    uint8_t x = 0;
    for (size_t i = 0; i < n; i++) x ^= b[i];
    fz_sink ^= x;
}
#endif
