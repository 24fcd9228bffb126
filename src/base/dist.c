// The ranks of an MPI run (see dist.h).
#include "base/dist.h"

#ifdef FK_WITH_MPI
#include <mpi.h>
#endif

static void query(int *rank, int *size) {
    *rank = 0;
    *size = 1;
#ifdef FK_WITH_MPI
    int init = 0, fin = 0;
    MPI_Initialized(&init);
    MPI_Finalized(&fin);
    if (init && !fin) {
        MPI_Comm_rank(MPI_COMM_WORLD, rank);
        MPI_Comm_size(MPI_COMM_WORLD, size);
    }
#endif
}

int fk_dist_rank(void) { int r, n; query(&r, &n); return r; }
int fk_dist_size(void) { int r, n; query(&r, &n); return n; }

void fk_dist_range_of(int64_t n, int r, int64_t *lo, int64_t *hi) {
    int R = fk_dist_size();
    *lo = n / R * r + (r < n % R ? r : n % R);
    *hi = *lo + n / R + (r < n % R);
}

void fk_dist_range(int64_t n, int64_t *lo, int64_t *hi) { fk_dist_range_of(n, fk_dist_rank(), lo, hi); }

#define PIECE ((size_t)1 << 30)  // MPI counts are int: bytes go in pieces of 1 GiB

void fk_dist_bcast_bytes(void *buf, size_t n, int root) {
#ifdef FK_WITH_MPI
    if (fk_dist_size() > 1)
        for (size_t o = 0; o < n; o += PIECE) MPI_Bcast((char *)buf + o, (int)(n - o < PIECE ? n - o : PIECE), MPI_BYTE, root, MPI_COMM_WORLD);
#else
    (void)buf, (void)n, (void)root;
#endif
}

void fk_dist_sum_f64(double *x, int n) {
#ifdef FK_WITH_MPI
    if (fk_dist_size() > 1) MPI_Allreduce(MPI_IN_PLACE, x, n, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
#else
    (void)x, (void)n;
#endif
}

void fk_dist_sum_i64(int64_t *x, int n) {
#ifdef FK_WITH_MPI
    if (fk_dist_size() > 1) MPI_Allreduce(MPI_IN_PLACE, x, n, MPI_INT64_T, MPI_SUM, MPI_COMM_WORLD);
#else
    (void)x, (void)n;
#endif
}

void fk_dist_bcast_i64(int64_t *x, int n) {
#ifdef FK_WITH_MPI
    if (fk_dist_size() > 1) MPI_Bcast(x, n, MPI_INT64_T, 0, MPI_COMM_WORLD);
#else
    (void)x, (void)n;
#endif
}

bool fk_dist_any(bool x) {
#ifdef FK_WITH_MPI
    if (fk_dist_size() > 1) {
        int v = x, any = 0;
        MPI_Allreduce(&v, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
        return any != 0;
    }
#endif
    return x;
}

void fk_dist_send(int to, const void *buf, size_t n) {
#ifdef FK_WITH_MPI
    for (size_t o = 0; o < n; o += PIECE) MPI_Send((const char *)buf + o, (int)(n - o < PIECE ? n - o : PIECE), MPI_BYTE, to, 0, MPI_COMM_WORLD);
#else
    (void)to, (void)buf, (void)n;
#endif
}

void fk_dist_recv(int from, void *buf, size_t n) {
#ifdef FK_WITH_MPI
    for (size_t o = 0; o < n; o += PIECE)
        MPI_Recv((char *)buf + o, (int)(n - o < PIECE ? n - o : PIECE), MPI_BYTE, from, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
#else
    (void)from, (void)buf, (void)n;
#endif
}

fk_status fk_dist_agree(fk_status st) {
#ifdef FK_WITH_MPI
    if (fk_dist_size() > 1) {
        int bad = st != FK_OK, any = 0;
        MPI_Allreduce(&bad, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
        if (any && st == FK_OK) st = fk_error(FK_ERR_IO, "another MPI rank failed (its error is printed above)");
    }
#endif
    return st;
}
