// Clustering (fusekit/cluster.h): hand-worked k-means, UPGMA, cuts, silhouette, medoids and
// correlation distances, and UPGMA against a brute-force reference on random matrices.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fusekit/cluster.h"
#include "test_util.h"

// ---------------------------------------------------------------- k-means

// Two well separated triangles:
//   A = (0,0) (2,0) (1,3): mean (1,1); squared distances 1+1, 1+1, 0+4 -> 8
//   B = (10,10) (12,10) (11,13): mean (11,11); the same shape -> 8
// so the optimum has centers (1,1) and (11,11) and inertia 16.
static const double six[12] = {0, 0, 2, 0, 1, 3, 10, 10, 12, 10, 11, 13};

static void test_kmeans_two(void **s) {
    (void)s;
    for (uint64_t seed = 0; seed < 20; seed++) {
        fk_kmeans_result r;
        CHECK(fk_kmeans(six, 6, 2, 2, seed, 100, &r));
        assert_int_equal(r.k, 2);
        assert_int_equal(r.n, 6);
        int a = r.assign[0], b = r.assign[3];
        assert_int_not_equal(a, b);
        for (int i = 0; i < 3; i++) { assert_int_equal(r.assign[i], a); assert_int_equal(r.assign[3 + i], b); }
        assert_true(fabs(r.centers[a * 2 + 0] - 1) < 1e-12 && fabs(r.centers[a * 2 + 1] - 1) < 1e-12);
        assert_true(fabs(r.centers[b * 2 + 0] - 11) < 1e-12 && fabs(r.centers[b * 2 + 1] - 11) < 1e-12);
        assert_true(fabs(r.inertia - 16) < 1e-12);
        assert_true(r.iters >= 1 && r.iters <= 100);
        fk_kmeans_free(&r);
    }
}

static void random_points(double *x, int n, int d, uint64_t seed) {
    fk_rng rng;
    fk_rng_seed(&rng, seed);
    for (int i = 0; i < n * d; i++) x[i] = fk_rng_normal(&rng) + (i / d % 4) * 3.0;
}

static void test_kmeans_determinism(void **s) {
    (void)s;
    enum { N = 300, D = 5, K = 7 };
    double *x = malloc(N * D * sizeof(double));
    random_points(x, N, D, 42);
    fk_kmeans_result r1, r2;
    CHECK(fk_kmeans(x, N, D, K, 1234, 50, &r1));
    CHECK(fk_kmeans(x, N, D, K, 1234, 50, &r2));
    assert_memory_equal(r1.assign, r2.assign, N * sizeof(int));
    assert_memory_equal(r1.centers, r2.centers, K * D * sizeof(double));
    assert_true(r1.inertia == r2.inertia && r1.iters == r2.iters);
    // Consistency: every point is at its nearest center, centers are the members' means, the
    // inertia is the sum of squared distances, and no cluster is empty.
    double inertia = 0;
    for (int i = 0; i < N; i++) {
        double dmin = INFINITY, mine = 0;
        for (int c = 0; c < K; c++) {
            double t = 0;
            for (int j = 0; j < D; j++) t += (x[i * D + j] - r1.centers[c * D + j]) * (x[i * D + j] - r1.centers[c * D + j]);
            if (t < dmin) dmin = t;
            if (c == r1.assign[i]) mine = t;
        }
        if (r1.iters < 50) assert_true(mine <= dmin + 1e-12);
        inertia += mine;
    }
    assert_true(fabs(inertia - r1.inertia) < 1e-9 * inertia);
    for (int c = 0; c < K; c++) {
        int cnt = 0;
        double m[D] = {0};
        for (int i = 0; i < N; i++)
            if (r1.assign[i] == c) { cnt++; for (int j = 0; j < D; j++) m[j] += x[i * D + j]; }
        assert_true(cnt > 0);
        for (int j = 0; j < D; j++) assert_true(fabs(m[j] / cnt - r1.centers[c * D + j]) < 1e-12);
    }
    fk_kmeans_free(&r1);
    fk_kmeans_free(&r2);
    free(x);
}

// k = n: every point is its own center, inertia 0. With duplicates (k > distinct points)
// an empty cluster is refilled and the result still has k non-empty clusters.
static void test_kmeans_k_equals_n(void **s) {
    (void)s;
    fk_kmeans_result r;
    CHECK(fk_kmeans(six, 6, 2, 6, 7, 100, &r));
    assert_true(r.inertia == 0);
    int seen[6] = {0};
    for (int i = 0; i < 6; i++) {
        seen[r.assign[i]]++;
        assert_true(r.centers[r.assign[i] * 2] == six[i * 2] && r.centers[r.assign[i] * 2 + 1] == six[i * 2 + 1]);
    }
    for (int c = 0; c < 6; c++) assert_int_equal(seen[c], 1);
    fk_kmeans_free(&r);

    // Points (0), (0), (0), (5): k = 3 has only two distinct values; inertia stays 0.
    const double dup[4] = {0, 0, 0, 5};
    CHECK(fk_kmeans(dup, 4, 1, 3, 3, 20, &r));
    assert_true(r.inertia == 0);
    int cnt[3] = {0};
    for (int i = 0; i < 4; i++) cnt[r.assign[i]]++;
    for (int c = 0; c < 3; c++) assert_true(cnt[c] > 0);
    fk_kmeans_free(&r);
}

// k = 1 on the triangle A: center (1,1) (the mean), inertia 8, one assignment step plus one
// to see nothing changed.
static void test_kmeans_k1(void **s) {
    (void)s;
    fk_kmeans_result r;
    CHECK(fk_kmeans(six, 3, 2, 1, 99, 100, &r));
    assert_true(fabs(r.centers[0] - 1) < 1e-15 && fabs(r.centers[1] - 1) < 1e-15);
    assert_true(fabs(r.inertia - 8) < 1e-12);
    for (int i = 0; i < 3; i++) assert_int_equal(r.assign[i], 0);
    assert_int_equal(r.iters, 2);
    fk_kmeans_free(&r);
}

static void test_kmeans_bad_args(void **s) {
    (void)s;
    fk_kmeans_result r;
    assert_int_equal(fk_kmeans(six, 6, 2, 7, 0, 10, &r), FK_ERR_ARG);
    assert_non_null(strstr(fk_last_error(), "k = 7 clusters, expected 1 <= k <= n = 6"));
    assert_null(r.assign);
    assert_int_equal(fk_kmeans(six, 6, 2, 0, 0, 10, &r), FK_ERR_ARG);
    assert_non_null(strstr(fk_last_error(), "k = 0 clusters"));
    assert_int_equal(fk_kmeans(six, 6, 2, 2, 0, 0, &r), FK_ERR_ARG);
    assert_non_null(strstr(fk_last_error(), "max_iter"));
    assert_int_equal(fk_kmeans(NULL, 6, 2, 2, 0, 10, &r), FK_ERR_ARG);
    double bad[4] = {0, 1, NAN, 2};
    assert_int_equal(fk_kmeans(bad, 2, 2, 1, 0, 10, &r), FK_ERR_NUMERIC);
    fk_kmeans_free(&r);   // zeroed on error: a no-op
}

// ---------------------------------------------------------------- agglomerative

// Five points:
//        0   1   2   3   4
//   0    0   2   6  10   9
//   1    2   0   5   9   8
//   2    6   5   0   4   5
//   3   10   9   4   0   3
//   4    9   8   5   3   0
// merge 0: (0,1) at 2 -> cluster 5 = {0,1}; d(5,2) = (6+5)/2 = 5.5, d(5,3) = 9.5, d(5,4) = 8.5
// merge 1: (3,4) at 3 -> cluster 6 = {3,4}; d(6,2) = (4+5)/2 = 4.5, d(6,5) = (10+9+9+8)/4 = 9
// merge 2: (2,6) at 4.5 -> cluster 7 = {2,3,4}; d(7,5) = (6+10+9+5+9+8)/6 = 47/6
// merge 3: (5,7) at 47/6 -> cluster 8, all five points.
static const double five[25] = {0, 2, 6, 10, 9, 2, 0, 5, 9, 8, 6, 5, 0, 4, 5, 10, 9, 4, 0, 3, 9, 8, 5, 3, 0};

static void test_agglo_hand(void **s) {
    (void)s;
    fk_dendrogram dg;
    CHECK(fk_agglomerative(five, 5, &dg));
    const int merge[4][2] = {{0, 1}, {3, 4}, {2, 6}, {5, 7}};
    const double height[4] = {2, 3, 4.5, 47.0 / 6};
    const int size[4] = {2, 2, 3, 5};
    assert_int_equal(dg.n, 5);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(dg.merge[i][0], merge[i][0]);
        assert_int_equal(dg.merge[i][1], merge[i][1]);
        assert_true(fabs(dg.height[i] - height[i]) < 1e-14);
        assert_int_equal(dg.size[i], size[i]);
    }
    // Cuts. k = 2: {0,1} {2,3,4}; k = 3: {0,1} {2} {3,4}; k = 5: each alone; k = 1: one.
    int lab[5];
    const int k2[5] = {0, 0, 1, 1, 1}, k3[5] = {0, 0, 1, 2, 2}, k5[5] = {0, 1, 2, 3, 4}, k1[5] = {0};
    CHECK(fk_dendrogram_cut(&dg, 2, lab)); assert_memory_equal(lab, k2, sizeof lab);
    CHECK(fk_dendrogram_cut(&dg, 3, lab)); assert_memory_equal(lab, k3, sizeof lab);
    CHECK(fk_dendrogram_cut(&dg, 5, lab)); assert_memory_equal(lab, k5, sizeof lab);
    CHECK(fk_dendrogram_cut(&dg, 1, lab)); assert_memory_equal(lab, k1, sizeof lab);
    assert_int_equal(fk_dendrogram_cut(&dg, 6, lab), FK_ERR_ARG);
    assert_non_null(strstr(fk_last_error(), "k = 6 clusters, expected 1 <= k <= n = 5"));
    assert_int_equal(fk_dendrogram_cut(&dg, 0, lab), FK_ERR_ARG);
    fk_dendrogram_free(&dg);

    // Labels are numbered by first appearance: swap points 0 and 4 so that point 0 falls in
    // the three-point group.
    double sw[25];
    const int perm[5] = {4, 1, 2, 3, 0};
    for (int i = 0; i < 5; i++) for (int j = 0; j < 5; j++) sw[i * 5 + j] = five[perm[i] * 5 + perm[j]];
    CHECK(fk_agglomerative(sw, 5, &dg));
    // Now {1,4} merge first at 2 (cluster 5), then {0,3} at 3 (cluster 6), then (2,6), (5,7).
    assert_int_equal(dg.merge[0][0], 1); assert_int_equal(dg.merge[0][1], 4);
    assert_int_equal(dg.merge[1][0], 0); assert_int_equal(dg.merge[1][1], 3);
    CHECK(fk_dendrogram_cut(&dg, 2, lab));
    const int sk2[5] = {0, 1, 0, 0, 1};
    assert_memory_equal(lab, sk2, sizeof lab);
    fk_dendrogram_free(&dg);
}

// Ties: four points all at distance 1. Pairs compare by (smaller id, larger id):
// (0,1) -> 4; then (2,3) before (2,4), (3,4) -> 5; then (4,5) -> 6. Heights all 1.
static void test_agglo_ties(void **s) {
    (void)s;
    double d[16];
    for (int i = 0; i < 16; i++) d[i] = i / 4 == i % 4 ? 0 : 1;
    fk_dendrogram dg;
    CHECK(fk_agglomerative(d, 4, &dg));
    const int merge[3][2] = {{0, 1}, {2, 3}, {4, 5}};
    const int size[3] = {2, 2, 4};
    for (int i = 0; i < 3; i++) {
        assert_int_equal(dg.merge[i][0], merge[i][0]);
        assert_int_equal(dg.merge[i][1], merge[i][1]);
        assert_true(dg.height[i] == 1);
        assert_int_equal(dg.size[i], size[i]);
    }
    fk_dendrogram_free(&dg);
    // One point: no merges; its only cut is itself.
    double z = 0;
    int lab = -1;
    CHECK(fk_agglomerative(&z, 1, &dg));
    CHECK(fk_dendrogram_cut(&dg, 1, &lab));
    assert_int_equal(lab, 0);
    fk_dendrogram_free(&dg);
}

// Brute-force UPGMA: every step recomputes every active pair's average distance from the
// points (sum over member pairs / product of sizes) and takes the lowest
// (average, smaller id, larger id).
static void upgma_ref(const double *d, int n, int (*merge)[2], double *height, int *size) {
    enum { MAXN = 32 };
    int cl[MAXN];                 // cluster id of each point
    int sz[2 * MAXN] = {0};       // 0 for ids not (or no longer) alive
    static double sum[2 * MAXN * 2 * MAXN];
    for (int i = 0; i < n; i++) { cl[i] = i; sz[i] = 1; }
    for (int step = 0; step < n - 1; step++) {
        int m = n + step;
        memset(sum, 0, (size_t)m * m * sizeof(double));
        for (int i = 0; i < n; i++)
            for (int j = i + 1; j < n; j++)
                if (cl[i] != cl[j]) {
                    int a = cl[i] < cl[j] ? cl[i] : cl[j], b = cl[i] ^ cl[j] ^ a;
                    sum[a * m + b] += d[i * n + j];
                }
        int ba = -1, bb = -1;
        double bd = 0;
        for (int a = 0; a < m; a++)
            for (int b = a + 1; b < m; b++) {
                if (!sz[a] || !sz[b]) continue;
                double avg = sum[a * m + b] / ((double)sz[a] * sz[b]);
                if (ba < 0 || avg < bd) { ba = a; bb = b; bd = avg; }   // scan order breaks ties by id
            }
        merge[step][0] = ba; merge[step][1] = bb; height[step] = bd;
        sz[m] = sz[ba] + sz[bb]; size[step] = sz[m];
        sz[ba] = sz[bb] = 0;
        for (int i = 0; i < n; i++) if (cl[i] == ba || cl[i] == bb) cl[i] = m;
    }
}

static void test_agglo_random(void **s) {
    (void)s;
    fk_rng rng;
    fk_rng_seed(&rng, 2024);
    for (int trial = 0; trial < 50; trial++) {
        int n = 2 + (int)fk_rng_below(&rng, 30);
        double *d = malloc((size_t)n * n * sizeof(double));
        for (int i = 0; i < n; i++) {
            d[i * n + i] = 0;
            for (int j = i + 1; j < n; j++) {
                // Odd trials: small integers, so ties are common and exact.
                double v = trial % 2 ? (double)(1 + fk_rng_below(&rng, 4)) : (double)fk_rng_uniform(&rng) + 0.01;
                d[i * n + j] = d[j * n + i] = v;
            }
        }
        int merge[31][2], size[31];
        double height[31];
        upgma_ref(d, n, merge, height, size);
        fk_dendrogram dg;
        CHECK(fk_agglomerative(d, n, &dg));
        for (int i = 0; i < n - 1; i++) {
            if (dg.merge[i][0] != merge[i][0] || dg.merge[i][1] != merge[i][1])
                fail_msg("trial %d n %d merge %d: (%d, %d), reference (%d, %d)", trial, n, i, dg.merge[i][0], dg.merge[i][1], merge[i][0], merge[i][1]);
            assert_true(fabs(dg.height[i] - height[i]) <= 1e-12 * (1 + height[i]));
            assert_int_equal(dg.size[i], size[i]);
            if (i) assert_true(dg.height[i] >= dg.height[i - 1] - 1e-12);   // UPGMA is monotone
        }
        fk_dendrogram_free(&dg);
        free(d);
    }
}

// A larger case for speed and sanity: 1024 points on a line in 8 groups.
static void test_agglo_large(void **s) {
    (void)s;
    enum { N = 1024 };
    fk_rng rng;
    fk_rng_seed(&rng, 5);
    double *p = malloc(N * sizeof(double)), *d = malloc((size_t)N * N * sizeof(double));
    for (int i = 0; i < N; i++) p[i] = (i % 8) * 100.0 + fk_rng_uniform(&rng);
    for (int i = 0; i < N; i++) for (int j = 0; j < N; j++) d[i * N + j] = fabs(p[i] - p[j]);
    fk_dendrogram dg;
    CHECK(fk_agglomerative(d, N, &dg));
    int *lab = malloc(N * sizeof(int));
    CHECK(fk_dendrogram_cut(&dg, 8, lab));
    for (int i = 0; i < N; i++) assert_int_equal(lab[i], i % 8);
    assert_int_equal(dg.size[N - 2], N);
    fk_dendrogram_free(&dg);
    free(p); free(d); free(lab);
}

static void test_agglo_bad(void **s) {
    (void)s;
    fk_dendrogram dg;
    double d[4] = {0, 1, 2, 0};
    assert_int_equal(fk_agglomerative(d, 2, &dg), FK_ERR_ARG);
    assert_non_null(strstr(fk_last_error(), "not symmetric"));
    double e[4] = {0, -1, -1, 0};
    assert_int_equal(fk_agglomerative(e, 2, &dg), FK_ERR_ARG);
    assert_non_null(strstr(fk_last_error(), "negative"));
    double f[4] = {1, 1, 1, 0};
    assert_int_equal(fk_agglomerative(f, 2, &dg), FK_ERR_ARG);
    assert_non_null(strstr(fk_last_error(), "diagonal"));
    assert_int_equal(fk_agglomerative(d, 0, &dg), FK_ERR_ARG);
    fk_dendrogram_free(&dg);
}

// ---------------------------------------------------------------- silhouette, medoids

// On the five-point matrix with labels {0,0,1,1,1}:
//   point 0: a = 2,   b = (6+10+9)/3 = 25/3, s = 1 - 6/25  = 19/25
//   point 1: a = 2,   b = (5+9+8)/3  = 22/3, s = 1 - 6/22  = 8/11
//   point 2: a = 4.5, b = (6+5)/2    = 5.5,  s = 1/5.5     = 2/11
//   point 3: a = 3.5, b = (10+9)/2   = 9.5,  s = 6/9.5     = 12/19
//   point 4: a = 4,   b = (9+8)/2    = 8.5,  s = 4.5/8.5   = 9/17
// With {0,0,1,2,2}, point 2 is alone (0); point 0: a = 2, b = min(6, 9.5) = 6 -> 2/3;
// point 1: a = 2, b = min(5, 8.5) = 5 -> 3/5; point 3: a = 3, b = min(4, 9.5) = 4 -> 1/4;
// point 4: a = 3, b = min(5, 8.5) = 5 -> 2/5.
static void test_silhouette(void **s) {
    (void)s;
    const int l2[5] = {0, 0, 1, 1, 1}, l3[5] = {0, 0, 1, 2, 2}, l1[5] = {0};
    double want2 = (19.0 / 25 + 8.0 / 11 + 2.0 / 11 + 12.0 / 19 + 9.0 / 17) / 5;
    double want3 = (2.0 / 3 + 3.0 / 5 + 0 + 1.0 / 4 + 2.0 / 5) / 5;
    assert_true(fabs(fk_silhouette(five, 5, l2, 2) - want2) < 1e-14);
    assert_true(fabs(fk_silhouette(five, 5, l3, 3) - want3) < 1e-14);
    assert_true(fk_silhouette(five, 5, l1, 1) == 0);
    const int bad[5] = {0, 0, 2, 1, 1};
    assert_true(isnan(fk_silhouette(five, 5, bad, 2)));
    assert_non_null(strstr(fk_last_error(), "point 2 has label 2, outside [0, 2)"));
}

// Medoids with {0,0,1,1,1}: cluster 0: points 0 and 1 both sum 2 -> 0 (lowest index);
// cluster 1: point 2: 4+5 = 9, point 3: 4+3 = 7, point 4: 5+3 = 8 -> 3.
static void test_medoids(void **s) {
    (void)s;
    const int l2[5] = {0, 0, 1, 1, 1};
    int m[3];
    CHECK(fk_cluster_medoids(five, 5, l2, 2, m));
    assert_int_equal(m[0], 0);
    assert_int_equal(m[1], 3);
    assert_int_equal(fk_cluster_medoids(five, 5, l2, 3, m), FK_ERR_ARG);
    assert_non_null(strstr(fk_last_error(), "cluster 2 of 3 has no members"));
    assert_int_equal(fk_cluster_medoids(five, 5, l2, 6, m), FK_ERR_ARG);
}

// ---------------------------------------------------------------- correlation distance

// Units over 4 samples:
//   u0 = 1 2 3 4        u1 = u0 (duplicate)      u2 = -2 u0 + 5 = 3 1 -1 -3
//   u3 = 7 7 7 7 (zero variance)                  u4 = 1 -1 -1 1 (uncorrelated with u0)
// corr(u0,u1) = 1, corr(u0,u2) = -1 -> distance 0; u3 at distance 1 from all; u4:
// centred u0 = -1.5 -.5 .5 1.5, centred u4 = u4, dot = -1.5 + .5 - .5 + 1.5 = 0 -> distance 1.
// u4 vs u3: 1. Gram and means computed here in doubles (all exact).
static void test_corr_distance(void **s) {
    (void)s;
    enum { U = 5, T = 4 };
    const double h[U][T] = {{1, 2, 3, 4}, {1, 2, 3, 4}, {3, 1, -1, -3}, {7, 7, 7, 7}, {1, -1, -1, 1}};
    double G[U * U], mean[U], dist[U * U];
    for (int i = 0; i < U; i++) {
        mean[i] = 0;
        for (int t = 0; t < T; t++) mean[i] += h[i][t] / T;
        for (int j = 0; j < U; j++) {
            double g = 0;
            for (int t = 0; t < T; t++) g += h[i][t] * h[j][t];
            // Only the upper triangle is read: poison the lower one.
            G[i * U + j] = j >= i ? g : NAN;
        }
    }
    CHECK(fk_corr_distance(G, mean, T, U, dist));
    const double want[U][U] = {
        {0, 0, 0, 1, 1},
        {0, 0, 0, 1, 1},
        {0, 0, 0, 1, 1},
        {1, 1, 1, 0, 1},
        {1, 1, 1, 1, 0},
    };
    for (int i = 0; i < U; i++)
        for (int j = 0; j < U; j++) {
            assert_true(fabs(dist[i * U + j] - want[i][j]) < 1e-12);
            assert_true(dist[i * U + j] == dist[j * U + i]);
        }
    // A partial correlation: u5 = 1 2 3 5 against u0. Centred u0 = -1.5 -.5 .5 1.5,
    // centred u5 = -1.75 -.75 .25 2.25; cov sum = 2.625 + .375 + .125 + 3.375 = 6.5,
    // var sums 5 and 3.0625+.5625+.0625+5.0625 = 8.75: corr = 6.5 / sqrt(43.75).
    const double u5[T] = {1, 2, 3, 5};
    double G2[4] = {0}, m2[2] = {0}, d2[4];
    for (int t = 0; t < T; t++) {
        G2[0] += h[0][t] * h[0][t]; G2[1] += h[0][t] * u5[t]; G2[3] += u5[t] * u5[t];
        m2[0] += h[0][t] / T; m2[1] += u5[t] / T;
    }
    G2[2] = G2[1];
    CHECK(fk_corr_distance(G2, m2, T, 2, d2));
    assert_true(fabs(d2[1] - (1 - 6.5 / sqrt(43.75))) < 1e-12);
    assert_int_equal(fk_corr_distance(G2, m2, 0, 2, d2), FK_ERR_ARG);
    assert_non_null(strstr(fk_last_error(), "count = 0"));
    assert_int_equal(fk_corr_distance(NULL, m2, T, 2, d2), FK_ERR_ARG);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kmeans_two),
        cmocka_unit_test(test_kmeans_determinism),
        cmocka_unit_test(test_kmeans_k_equals_n),
        cmocka_unit_test(test_kmeans_k1),
        cmocka_unit_test(test_kmeans_bad_args),
        cmocka_unit_test(test_agglo_hand),
        cmocka_unit_test(test_agglo_ties),
        cmocka_unit_test(test_agglo_random),
        cmocka_unit_test(test_agglo_large),
        cmocka_unit_test(test_agglo_bad),
        cmocka_unit_test(test_silhouette),
        cmocka_unit_test(test_medoids),
        cmocka_unit_test(test_corr_distance),
    };
    return cmocka_run_group_tests(tests, tmpdir_setup, tmpdir_teardown);
}
