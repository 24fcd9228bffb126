// Clustering for redundancy folding (fold.md §2): k-means++ over points, average-linkage
// (UPGMA) agglomerative clustering over a distance matrix, dendrogram cuts, silhouette,
// medoids, and the correlation distance 1 - |ρ| between units from a Gram matrix.
//
// Every function is deterministic: the same inputs (and seed) give bit-identical results.
// Ties are always broken towards the lowest index, as stated per function.
#ifndef FUSEKIT_CLUSTER_H
#define FUSEKIT_CLUSTER_H

#include "fusekit/base.h"

// ---------------------------------------------------------------- k-means
// Result of fk_kmeans. assign is (n), centers is (k, d) row-major, inertia the sum over
// points of the squared Euclidean distance to their center, iters the number of assignment
// steps run. Free with fk_kmeans_free.
typedef struct {
    int k;
    int n;
    int *assign;
    double *centers;
    double inertia;
    int iters;
} fk_kmeans_result;

// x is (n, d) row-major; 1 <= k <= n, d >= 1, max_iter >= 1.
// Seeding: k-means++ (first center uniform, then D^2 sampling with fk_rng seeded by `seed`;
// when every point already coincides with a center, the lowest-index point not yet chosen).
// Then Lloyd iterations: assign each point to its nearest center (ties to the lowest cluster
// index), stop when no assignment changed or after max_iter steps, else move each center to
// its members' mean. A cluster left empty takes the point farthest from its own center (ties
// to the lowest point index) among clusters with two or more members; empty clusters are
// refilled in increasing index order. On return the centers are the means of `assign`.
// Errors: FK_ERR_ARG for bad sizes or missing pointers, FK_ERR_NUMERIC for a NaN/Inf
// coordinate, FK_ERR_NOMEM. On error *out is zeroed (nothing to free).
fk_status fk_kmeans(const double *x, int n, int d, int k, uint64_t seed, int max_iter, fk_kmeans_result *out);
void fk_kmeans_free(fk_kmeans_result *r);

// ---------------------------------------------------------------- agglomerative
// A dendrogram in SciPy's linkage convention: clusters 0..n-1 are the points and merge i
// (0 <= i < n-1) joins merge[i][0] < merge[i][1] into cluster n+i, of size[i] points, at
// height[i] = the average distance between the two merged clusters' points.
typedef struct {
    int n;
    int (*merge)[2];
    double *height;
    int *size;
} fk_dendrogram;

// Average-linkage (UPGMA) agglomerative clustering of n >= 1 points from dist (n, n):
// symmetric, zero diagonal, non-negative, finite (the upper triangle is used; the lower one
// and the diagonal are checked to agree within 1e-9 relative). Each step merges the pair of
// clusters at the least average distance; ties go to the pair with the lowest
// (smaller id, larger id). Memory O(n^2) (one n x n copy); time O(n^2) per merge at worst,
// usually far less (a cached nearest neighbour per row, rescanned only when it is merged).
// Distances are kept as sums over member pairs (Lance-Williams for average linkage with the
// sizes folded in), so averages are formed by one division each.
fk_status fk_agglomerative(const double *dist, int n, fk_dendrogram *out);

// Cuts a dendrogram into 1 <= k <= n clusters by applying its first n-k merges; labels (n)
// get 0..k-1 numbered by first appearance in point order.
fk_status fk_dendrogram_cut(const fk_dendrogram *dg, int k, int *labels);
void fk_dendrogram_free(fk_dendrogram *dg);

// ---------------------------------------------------------------- quality and representatives
// Mean silhouette over the n points from dist (n, n) and labels in [0, k). For point i in a
// cluster A with |A| >= 2: a = mean distance to the rest of A, b = the least mean distance
// to another non-empty cluster, s = (b - a) / max(a, b) (0 when both are 0). Points in
// singleton clusters count 0, as do all points when only one cluster is non-empty.
// Returns NaN (and sets the error message) for invalid arguments.
double fk_silhouette(const double *dist, int n, const int *labels, int k);

// medoids (k): per cluster, the member with the least summed distance to the other members
// (ties to the lowest point index). FK_ERR_ARG when a label is outside [0, k) or a cluster
// has no members.
fk_status fk_cluster_medoids(const double *dist, int n, const int *labels, int k, int *medoids);

// ---------------------------------------------------------------- correlation distance
// dist (n, n) = 1 - |corr| between n units from their uncentred Gram matrix gram (n, n),
// gram[i][j] = Σ h_i h_j over `count` >= 1 samples (only the upper triangle i <= j is read,
// so a dsyrk result works as is) and their means mean (n). corr_ij = cov_ij / sqrt(var_i var_j)
// with cov = gram / count - mean mean^T. A unit whose variance is <= 1e-12 of its mean square
// (or <= 0) is at distance 1 from every other unit; the diagonal is 0. The result is exactly
// symmetric and lies in [0, 1].
fk_status fk_corr_distance(const double *gram, const double *mean, int64_t count, int n, double *dist);

#endif
