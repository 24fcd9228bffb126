// Internal: OpenMP's thread queries, or one-thread stand-ins when the build has no OpenMP
// (cmake -DFK_OPENMP=OFF: the `omp` pragmas are then ignored and every loop runs serially).
// Include this instead of <omp.h>.
#ifndef FK_BASE_PAR_H
#define FK_BASE_PAR_H
#ifdef _OPENMP
#include <omp.h>
#else
static inline int omp_get_thread_num(void) { return 0; }
static inline int omp_get_num_threads(void) { return 1; }
static inline int omp_get_max_threads(void) { return 1; }
static inline void omp_set_num_threads(int n) { (void)n; }
#endif
#endif
