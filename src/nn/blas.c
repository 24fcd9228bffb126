// Which OpenBLAS kernels run: a check the CLI makes before any work.
#include "fusekit/model.h"

#include <cblas.h>
#include <strings.h>

const char *fk_blas_better_core(void) {
#if defined(__x86_64__) || defined(__i386__)
    // OpenBLAS's dynamic dispatch picks kernels by CPU family and model. A release older than the
    // CPU (Debian 12's 0.3.21 on Intel family 6 model 207, say) falls back to a generic core
    // whose SSE3 kernels run sgemm several times slower than the AVX-512 or AVX2 ones the CPU has.
    static const char *const generic[] = {"prescott", "katmai", "coppermine", "northwood", "banias", "core2", "penryn",
                                          "dunnington", "nehalem", "atom", "unknown"};
    const char *core = openblas_get_corename();
    bool is_generic = !core;
    for (size_t i = 0; core && i < sizeof generic / sizeof generic[0]; i++)
        if (strcasecmp(core, generic[i]) == 0) is_generic = true;
    if (!is_generic) return NULL;
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
        __builtin_cpu_supports("avx512dq"))
        return "SkylakeX";
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return "Haswell";
#endif
    return NULL;
}
