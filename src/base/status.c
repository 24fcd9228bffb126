// Status codes and the per-thread error message.
#include "fusekit/base.h"

#include <stdarg.h>
#include <sys/mman.h>
#include <unistd.h>
#include <stdlib.h>
#include <string.h>

static _Thread_local char fk_err_buf[2048];

fk_status fk_error(fk_status st, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(fk_err_buf, sizeof fk_err_buf, fmt, ap);
    va_end(ap);
    return st;
}

fk_status fk_error_context(fk_status st, const char *fmt, ...) {
    char prefix[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(prefix, sizeof prefix - 2, fmt, ap);
    va_end(ap);
    if (n < 0) return st;
    size_t pl = strlen(prefix);
    memcpy(prefix + pl, ": ", 3);
    pl += 2;
    size_t ol = strnlen(fk_err_buf, sizeof fk_err_buf - 1);
    if (pl + ol >= sizeof fk_err_buf) ol = sizeof fk_err_buf - 1 - pl;
    memmove(fk_err_buf + pl, fk_err_buf, ol);
    memcpy(fk_err_buf, prefix, pl);
    fk_err_buf[pl + ol] = 0;
    return st;
}

const char *fk_last_error(void) { return fk_err_buf; }

const char *fk_status_name(fk_status st) {
    switch (st) {
    case FK_OK: return "ok";
    case FK_ERR_IO: return "I/O error";
    case FK_ERR_FORMAT: return "format error";
    case FK_ERR_ARG: return "invalid argument";
    case FK_ERR_NOMEM: return "out of memory";
    case FK_ERR_NUMERIC: return "numeric error";
    case FK_ERR_UNSUPPORTED: return "unsupported";
    }
    return "unknown error";
}

void fk_assert_fail(const char *cond, const char *file, int line) {
    fprintf(stderr, "fusekit: internal error: assertion '%s' failed at %s:%d\n", cond, file, line);
    abort();
}

void *fk_calloc_aligned(size_t bytes) {
    size_t n = (bytes + 63) & ~(size_t)63;
    if (n == 0) n = 64;
    void *p = aligned_alloc(64, n);
    if (p) memset(p, 0, n);
    return p;
}

// Under AddressSanitizer the pages come from calloc, so that ASan watches the weight arena,
// the KV cache and the RoPE tables (an overrun of an mmap'ed block goes unseen); its calloc
// also takes large blocks straight from mmap, so they stay lazily zeroed. A block larger than
// the machine's memory still comes from mmap, which refuses it where ASan's calloc would abort.
#if defined(__SANITIZE_ADDRESS__)
#define FK_PAGES_FROM_CALLOC 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define FK_PAGES_FROM_CALLOC 1
#endif
#endif

static bool pages_from_calloc(size_t bytes) {
#ifdef FK_PAGES_FROM_CALLOC
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    return pages > 0 && page > 0 && bytes <= (size_t)pages * (size_t)page;
#else
    (void)bytes;
    return false;
#endif
}

// Anonymous zeroed pages; extra: more mmap flags (MAP_NORESERVE).
static void *map_pages(size_t bytes, int extra) {
    if (bytes == 0) bytes = 1;
    if (pages_from_calloc(bytes)) return calloc(1, bytes);
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | extra, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

void *fk_alloc_pages(size_t bytes) { return map_pages(bytes, 0); }
void *fk_alloc_pages_sparse(size_t bytes) { return map_pages(bytes, MAP_NORESERVE); }

void fk_free_pages(void *p, size_t bytes) {
    if (!p) return;
    if (bytes == 0) bytes = 1;
    if (pages_from_calloc(bytes)) free(p);
    else munmap(p, bytes);
}
