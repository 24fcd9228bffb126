// Internal: the ranks of an MPI run (mpirun; a build with -DFK_MPI=ON) as the library's loops
// see them. Without MPI, or before MPI_Init, there is one rank and every call here is a no-op.
// Collectives must be reached by every rank in the same order: a loop that may fail on one rank
// calls fk_dist_agree before its next collective, so no rank waits for one that gave up.
#ifndef FK_BASE_DIST_H
#define FK_BASE_DIST_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fusekit/base.h"

int fk_dist_rank(void);
int fk_dist_size(void);
// This rank's share [*lo, *hi) of n items: contiguous, in rank order, sizes differing by at most one.
void fk_dist_range(int64_t n, int64_t *lo, int64_t *hi);
// x (n values) summed over the ranks, in place, on every rank.
void fk_dist_sum_f64(double *x, int n);
void fk_dist_sum_i64(int64_t *x, int n);
// x (n values) from rank 0 to every rank.
void fk_dist_bcast_i64(int64_t *x, int n);
// True on every rank when x is true on any.
bool fk_dist_any(bool x);
// Rank r's share [*lo, *hi) of n items (fk_dist_range on rank r).
void fk_dist_range_of(int64_t n, int r, int64_t *lo, int64_t *hi);
// n bytes from rank root to every rank (any size: sent in pieces).
void fk_dist_bcast_bytes(void *buf, size_t n, int root);
// n bytes from this rank to rank `to` / into buf from rank `from` (blocking, in order; any size:
// sent in pieces).
void fk_dist_send(int to, const void *buf, size_t n);
void fk_dist_recv(int from, void *buf, size_t n);
// st on a rank that failed; on the others, an error saying that another rank failed when any did.
fk_status fk_dist_agree(fk_status st);
#endif
