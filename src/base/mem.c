// Memory this process may still use, and the check every large allocation of a declared size
// makes first (model weights, gradients, optimizer state, stores, token data).
#include "fusekit/base.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

// Bytes of memory this process can still use: FK_MEM_LIMIT_MB when set (tests, or an explicit
// budget), else the kernel's MemAvailable, else the free physical pages; 0 when unknown.
uint64_t fk_mem_available_bytes(void) {
    const char *env = getenv("FK_MEM_LIMIT_MB");
    if (env && *env) {
        char *end;
        double mb = strtod(env, &end);
        if (end != env && mb >= 0 && mb < 1e12) return (uint64_t)(mb * 1048576.0);
    }
    FILE *f = fopen("/proc/meminfo", "r");
    if (f) {
        char line[256];
        unsigned long long kb;
        while (fgets(line, sizeof line, f))
            if (sscanf(line, "MemAvailable: %llu kB", &kb) == 1) { fclose(f); return (uint64_t)kb * 1024; }
        fclose(f);
    }
    long pages = sysconf(_SC_AVPHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    return pages > 0 && page > 0 ? (uint64_t)pages * (uint64_t)page : 0;
}

// "31.2 GB" or "512.0 MB"
static void fmt_bytes(char *buf, size_t n, double b) {
    if (b >= 1e9) snprintf(buf, n, "%.1f GB", b / 1e9);
    else snprintf(buf, n, "%.1f MB", b / 1e6);
}

fk_status fk_mem_check_hint(const char *what, double bytes, const char *hint, double alt_bytes) {
    uint64_t avail = fk_mem_available_bytes();
    if (avail == 0 || bytes <= (double)avail) return FK_OK;
    char need[32], have[32], alt[32], tail[256] = "";
    fmt_bytes(need, sizeof need, bytes);
    fmt_bytes(have, sizeof have, (double)avail);
    if (hint) {  // the one "%s" replaced by hand: hint is the library's own text, not a format
        fmt_bytes(alt, sizeof alt, alt_bytes);
        const char *p = strstr(hint, "%s");
        if (p) snprintf(tail, sizeof tail, "; %.*s%s%s", (int)(p - hint), hint, alt, p + 2);
        else snprintf(tail, sizeof tail, "; %s", hint);
    }
    return fk_error(FK_ERR_NOMEM, "%s needs %s, %s available%s%s", what, need, have,
                    getenv("FK_MEM_LIMIT_MB") ? " (FK_MEM_LIMIT_MB)" : "", tail);
}

fk_status fk_mem_check(const char *what, double bytes) { return fk_mem_check_hint(what, bytes, NULL, 0); }
