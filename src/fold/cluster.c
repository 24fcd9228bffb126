// Clustering for folding (fusekit/cluster.h, fold.md §2).
#include "fusekit/cluster.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

// ---------------------------------------------------------------- k-means

// Uniform double in [0, 1) with 53 random bits (fk_rng_uniform has only 24).
static double rng_unit(fk_rng *r) { return (double)(fk_rng_u64(r) >> 11) * (1.0 / 9007199254740992.0); }

static double sqdist(const double *a, const double *b, int d) {
    double s = 0;
    for (int j = 0; j < d; j++) { double t = a[j] - b[j]; s += t * t; }
    return s;
}

// k-means++: centers (k, d) from points x (n, d). mind (n) is scratch.
static void kmeans_seed(const double *x, int n, int d, int k, uint64_t seed, double *centers, double *mind, char *chosen) {
    fk_rng rng;
    fk_rng_seed(&rng, seed);
    int first = (int)fk_rng_below(&rng, (uint64_t)n);
    memcpy(centers, x + (size_t)first * d, (size_t)d * sizeof(double));
    chosen[first] = 1;
    for (int i = 0; i < n; i++) mind[i] = sqdist(x + (size_t)i * d, centers, d);
    for (int c = 1; c < k; c++) {
        double total = 0;
        for (int i = 0; i < n; i++) total += mind[i];
        int pick = -1;
        if (total > 0) {
            double r = rng_unit(&rng) * total, cum = 0;
            for (int i = 0; i < n; i++) {
                if (mind[i] <= 0) continue;
                cum += mind[i];
                pick = i;           // the last positive one absorbs rounding at the top end
                if (cum > r) break;
            }
        } else {
            for (int i = 0; i < n && pick < 0; i++) if (!chosen[i]) pick = i;
        }
        chosen[pick] = 1;
        double *cc = centers + (size_t)c * d;
        memcpy(cc, x + (size_t)pick * d, (size_t)d * sizeof(double));
        for (int i = 0; i < n; i++) {
            double t = sqdist(x + (size_t)i * d, cc, d);
            if (t < mind[i]) mind[i] = t;
        }
    }
}

fk_status fk_kmeans(const double *x, int n, int d, int k, uint64_t seed, int max_iter, fk_kmeans_result *out) {
    if (!out) return fk_error(FK_ERR_ARG, "k-means: the result pointer is missing");
    memset(out, 0, sizeof *out);
    if (!x) return fk_error(FK_ERR_ARG, "k-means: the points are missing");
    if (n < 1 || d < 1) return fk_error(FK_ERR_ARG, "k-means: n = %d points of d = %d coordinates, expected both >= 1", n, d);
    if (k < 1 || k > n) return fk_error(FK_ERR_ARG, "k-means: k = %d clusters, expected 1 <= k <= n = %d", k, n);
    if (max_iter < 1) return fk_error(FK_ERR_ARG, "k-means: max_iter = %d, expected >= 1", max_iter);
    for (size_t i = 0; i < (size_t)n * d; i++)
        if (!isfinite(x[i])) return fk_error(FK_ERR_NUMERIC, "k-means: point %zu coordinate %zu is not finite", i / (size_t)d, i % (size_t)d);

    int *assign = malloc((size_t)n * sizeof(int)), *count = malloc((size_t)k * sizeof(int));
    double *centers = malloc((size_t)k * d * sizeof(double)), *mind = malloc((size_t)n * sizeof(double));
    char *chosen = calloc((size_t)n, 1);
    if (!assign || !count || !centers || !mind || !chosen) {
        free(assign); free(count); free(centers); free(mind); free(chosen);
        return fk_error(FK_ERR_NOMEM, "k-means: out of memory for %d points and %d clusters", n, k);
    }
    kmeans_seed(x, n, d, k, seed, centers, mind, chosen);
    free(chosen);
    for (int i = 0; i < n; i++) assign[i] = -1;

    int it = 0;
    while (it < max_iter) {
        // Assignment step; mind[i] = squared distance to the chosen center.
        int changed = 0;
        for (int i = 0; i < n; i++) {
            const double *xi = x + (size_t)i * d;
            int best = 0;
            double bd = sqdist(xi, centers, d);
            for (int c = 1; c < k; c++) {
                double t = sqdist(xi, centers + (size_t)c * d, d);
                if (t < bd) { bd = t; best = c; }
            }
            mind[i] = bd;
            if (assign[i] != best) { assign[i] = best; changed++; }
        }
        it++;
        if (!changed) break;
        // Refill empty clusters, then move every center to its members' mean.
        memset(count, 0, (size_t)k * sizeof(int));
        for (int i = 0; i < n; i++) count[assign[i]]++;
        for (int c = 0; c < k; c++) {
            if (count[c]) continue;
            int far = -1;
            for (int i = 0; i < n; i++)
                if (count[assign[i]] >= 2 && (far < 0 || mind[i] > mind[far])) far = i;
            // k <= n guarantees a cluster with two or more members while one is empty.
            count[assign[far]]--;
            assign[far] = c;
            count[c] = 1;
            mind[far] = 0;
        }
        memset(centers, 0, (size_t)k * d * sizeof(double));
        for (int i = 0; i < n; i++) {
            double *cc = centers + (size_t)assign[i] * d;
            const double *xi = x + (size_t)i * d;
            for (int j = 0; j < d; j++) cc[j] += xi[j];
        }
        for (int c = 0; c < k; c++)
            for (int j = 0; j < d; j++) centers[(size_t)c * d + j] /= count[c];
    }
    free(count);
    double inertia = 0;
    for (int i = 0; i < n; i++) inertia += sqdist(x + (size_t)i * d, centers + (size_t)assign[i] * d, d);
    free(mind);
    out->k = k;
    out->n = n;
    out->assign = assign;
    out->centers = centers;
    out->inertia = inertia;
    out->iters = it;
    return FK_OK;
}

void fk_kmeans_free(fk_kmeans_result *r) {
    if (!r) return;
    free(r->assign);
    free(r->centers);
    memset(r, 0, sizeof *r);
}

// ---------------------------------------------------------------- agglomerative

// Checks a distance matrix: finite, non-negative, symmetric and zero diagonal within 1e-9.
static fk_status check_dist(const char *who, const double *dist, int n) {
    if (!dist) return fk_error(FK_ERR_ARG, "%s: the distance matrix is missing", who);
    for (int i = 0; i < n; i++) {
        double dii = dist[(size_t)i * n + i];
        if (!isfinite(dii)) return fk_error(FK_ERR_NUMERIC, "%s: distance (%d, %d) is not finite", who, i, i);
        if (fabs(dii) > 1e-9) return fk_error(FK_ERR_ARG, "%s: distance (%d, %d) = %g, the diagonal must be 0", who, i, i, dii);
        for (int j = i + 1; j < n; j++) {
            double a = dist[(size_t)i * n + j], b = dist[(size_t)j * n + i];
            if (!isfinite(a) || !isfinite(b)) return fk_error(FK_ERR_NUMERIC, "%s: distance (%d, %d) is not finite", who, i, j);
            if (a < 0) return fk_error(FK_ERR_ARG, "%s: distance (%d, %d) = %g is negative", who, i, j, a);
            if (fabs(a - b) > 1e-9 * (1 + fabs(a)))
                return fk_error(FK_ERR_ARG, "%s: the matrix is not symmetric: (%d, %d) = %g but (%d, %d) = %g", who, i, j, a, j, i, b);
        }
    }
    return FK_OK;
}

// Working state: slot s holds cluster id[s] (size sz[s]); S[s][t] is the sum of the point
// distances between the two clusters, so their average distance is S / (sz[s] sz[t]).
typedef struct {
    int n;
    double *S;
    int *id, *sz, *nn;
    char *alive;
} agg;

static double agg_avg(const agg *g, int s, int t) { return g->S[(size_t)s * g->n + t] / ((double)g->sz[s] * g->sz[t]); }

// Is the pair (s, t) at average distance dst before the pair (u, v) at duv? Ties: lowest
// (smaller id, larger id).
static int pair_before(const agg *g, double dst, int s, int t, double duv, int u, int v) {
    if (dst != duv) return dst < duv;
    int a0 = g->id[s] < g->id[t] ? g->id[s] : g->id[t], a1 = g->id[s] ^ g->id[t] ^ a0;
    int b0 = g->id[u] < g->id[v] ? g->id[u] : g->id[v], b1 = g->id[u] ^ g->id[v] ^ b0;
    return a0 != b0 ? a0 < b0 : a1 < b1;
}

// Nearest alive neighbour of slot s under pair_before, or -1 when s is alone.
static int agg_scan(const agg *g, int s) {
    int best = -1;
    double bd = 0;
    for (int t = 0; t < g->n; t++) {
        if (t == s || !g->alive[t]) continue;
        double dt = agg_avg(g, s, t);
        if (best < 0 || pair_before(g, dt, s, t, bd, s, best)) { best = t; bd = dt; }
    }
    return best;
}

fk_status fk_agglomerative(const double *dist, int n, fk_dendrogram *out) {
    if (!out) return fk_error(FK_ERR_ARG, "agglomerative clustering: the result pointer is missing");
    memset(out, 0, sizeof *out);
    if (n < 1) return fk_error(FK_ERR_ARG, "agglomerative clustering: n = %d points, expected >= 1", n);
    FK_TRY(check_dist("agglomerative clustering", dist, n));

    agg g = {.n = n};
    g.S = malloc((size_t)n * n * sizeof(double));
    g.id = malloc((size_t)n * sizeof(int));
    g.sz = malloc((size_t)n * sizeof(int));
    g.nn = malloc((size_t)n * sizeof(int));
    g.alive = malloc((size_t)n);
    int m = n - 1;
    out->n = n;
    out->merge = malloc((size_t)(m ? m : 1) * sizeof *out->merge);
    out->height = malloc((size_t)(m ? m : 1) * sizeof(double));
    out->size = malloc((size_t)(m ? m : 1) * sizeof(int));
    if (!g.S || !g.id || !g.sz || !g.nn || !g.alive || !out->merge || !out->height || !out->size) {
        free(g.S); free(g.id); free(g.sz); free(g.nn); free(g.alive);
        fk_dendrogram_free(out);
        return fk_error(FK_ERR_NOMEM, "agglomerative clustering: out of memory for %d points", n);
    }
    for (int i = 0; i < n; i++) {
        for (int j = 0; j < n; j++) g.S[(size_t)i * n + j] = i == j ? 0 : dist[(size_t)(i < j ? i : j) * n + (i < j ? j : i)];
        g.id[i] = i; g.sz[i] = 1; g.alive[i] = 1;
    }
    for (int i = 0; i < n; i++) g.nn[i] = agg_scan(&g, i);

    for (int step = 0; step < m; step++) {
        // The globally first pair is the first of the per-row firsts.
        int a = -1;
        double ad = 0;
        for (int s = 0; s < n; s++) {
            if (!g.alive[s]) continue;
            double ds = agg_avg(&g, s, g.nn[s]);
            if (a < 0 || pair_before(&g, ds, s, g.nn[s], ad, a, g.nn[a])) { a = s; ad = ds; }
        }
        int b = g.nn[a];
        if (b < a) { int t = a; a = b; b = t; }   // the new cluster lives in the lower slot
        int lo = g.id[a] < g.id[b] ? g.id[a] : g.id[b];
        out->merge[step][0] = lo;
        out->merge[step][1] = g.id[a] ^ g.id[b] ^ lo;
        out->height[step] = ad;
        out->size[step] = g.sz[a] + g.sz[b];

        // Average-linkage update (Lance-Williams with sizes): sums simply add.
        double *Sa = g.S + (size_t)a * n, *Sb = g.S + (size_t)b * n;
        for (int t = 0; t < n; t++) {
            if (!g.alive[t] || t == a || t == b) continue;
            Sa[t] += Sb[t];
            g.S[(size_t)t * n + a] = Sa[t];
        }
        g.alive[b] = 0;
        g.id[a] = n + step;
        g.sz[a] += g.sz[b];
        if (step == m - 1) break;
        g.nn[a] = agg_scan(&g, a);
        for (int t = 0; t < n; t++) {
            if (!g.alive[t] || t == a) continue;
            if (g.nn[t] == a || g.nn[t] == b) g.nn[t] = agg_scan(&g, t);
            else if (pair_before(&g, agg_avg(&g, t, a), t, a, agg_avg(&g, t, g.nn[t]), t, g.nn[t])) g.nn[t] = a;
        }
    }
    free(g.S); free(g.id); free(g.sz); free(g.nn); free(g.alive);
    return FK_OK;
}

fk_status fk_dendrogram_cut(const fk_dendrogram *dg, int k, int *labels) {
    if (!dg || !labels || (dg->n > 1 && (!dg->merge))) return fk_error(FK_ERR_ARG, "dendrogram cut: an argument is missing");
    int n = dg->n;
    if (n < 1) return fk_error(FK_ERR_ARG, "dendrogram cut: the dendrogram has n = %d points", n);
    if (k < 1 || k > n) return fk_error(FK_ERR_ARG, "dendrogram cut: k = %d clusters, expected 1 <= k <= n = %d", k, n);
    // parent over the 2n-1 cluster ids; the first n-k merges point their children at n+i.
    int *parent = malloc((size_t)(2 * n - 1) * sizeof(int));
    if (!parent) return fk_error(FK_ERR_NOMEM, "dendrogram cut: out of memory for %d points", n);
    for (int i = 0; i < 2 * n - 1; i++) parent[i] = i;
    for (int i = 0; i < n - k; i++) {
        for (int e = 0; e < 2; e++) {
            int c = dg->merge[i][e];
            if (c < 0 || c >= n + i || parent[c] != c) {
                free(parent);
                return fk_error(FK_ERR_ARG, "dendrogram cut: merge %d joins cluster %d, which does not exist or is already merged", i, c);
            }
            parent[c] = n + i;
        }
    }
    // Roots: follow parents (ids only grow along the way); number roots by first appearance.
    int *root_label = malloc((size_t)(2 * n - 1) * sizeof(int));
    if (!root_label) { free(parent); return fk_error(FK_ERR_NOMEM, "dendrogram cut: out of memory for %d points", n); }
    for (int i = 0; i < 2 * n - 1; i++) root_label[i] = -1;
    int next = 0;
    for (int p = 0; p < n; p++) {
        int r = p;
        while (parent[r] != r) r = parent[r];
        if (root_label[r] < 0) root_label[r] = next++;
        labels[p] = root_label[r];
    }
    free(parent);
    free(root_label);
    return FK_OK;
}

void fk_dendrogram_free(fk_dendrogram *dg) {
    if (!dg) return;
    free(dg->merge);
    free(dg->height);
    free(dg->size);
    memset(dg, 0, sizeof *dg);
}

// ---------------------------------------------------------------- quality and representatives

static fk_status check_labels(const char *who, const double *dist, int n, const int *labels, int k) {
    if (!dist || !labels) return fk_error(FK_ERR_ARG, "%s: an argument is missing", who);
    if (n < 1) return fk_error(FK_ERR_ARG, "%s: n = %d points, expected >= 1", who, n);
    if (k < 1 || k > n) return fk_error(FK_ERR_ARG, "%s: k = %d clusters, expected 1 <= k <= n = %d", who, k, n);
    for (int i = 0; i < n; i++)
        if (labels[i] < 0 || labels[i] >= k) return fk_error(FK_ERR_ARG, "%s: point %d has label %d, outside [0, %d)", who, i, labels[i], k);
    return FK_OK;
}

double fk_silhouette(const double *dist, int n, const int *labels, int k) {
    if (check_labels("silhouette", dist, n, labels, k) != FK_OK) return NAN;
    int *size = calloc((size_t)k, sizeof(int));
    double *sum = malloc((size_t)k * sizeof(double));
    if (!size || !sum) {
        free(size); free(sum);
        fk_error(FK_ERR_NOMEM, "silhouette: out of memory for %d clusters", k);
        return NAN;
    }
    for (int i = 0; i < n; i++) size[labels[i]]++;
    double total = 0;
    for (int i = 0; i < n; i++) {
        int li = labels[i];
        if (size[li] < 2) continue;
        memset(sum, 0, (size_t)k * sizeof(double));
        const double *row = dist + (size_t)i * n;
        for (int j = 0; j < n; j++) if (j != i) sum[labels[j]] += row[j];
        double a = sum[li] / (size[li] - 1), b = INFINITY;
        for (int c = 0; c < k; c++)
            if (c != li && size[c] > 0 && sum[c] / size[c] < b) b = sum[c] / size[c];
        if (isinf(b)) continue;   // one non-empty cluster: nothing to compare against
        double mx = a > b ? a : b;
        if (mx > 0) total += (b - a) / mx;
    }
    free(size);
    free(sum);
    return total / n;
}

fk_status fk_cluster_medoids(const double *dist, int n, const int *labels, int k, int *medoids) {
    if (!medoids) return fk_error(FK_ERR_ARG, "medoids: the output is missing");
    FK_TRY(check_labels("medoids", dist, n, labels, k));
    double *best = malloc((size_t)k * sizeof(double));
    if (!best) return fk_error(FK_ERR_NOMEM, "medoids: out of memory for %d clusters", k);
    for (int c = 0; c < k; c++) medoids[c] = -1;
    for (int i = 0; i < n; i++) {
        int c = labels[i];
        double s = 0;
        const double *row = dist + (size_t)i * n;
        for (int j = 0; j < n; j++) if (j != i && labels[j] == c) s += row[j];
        if (medoids[c] < 0 || s < best[c]) { medoids[c] = i; best[c] = s; }
    }
    free(best);
    for (int c = 0; c < k; c++)
        if (medoids[c] < 0) return fk_error(FK_ERR_ARG, "medoids: cluster %d of %d has no members", c, k);
    return FK_OK;
}

// ---------------------------------------------------------------- correlation distance

fk_status fk_corr_distance(const double *gram, const double *mean, int64_t count, int n, double *dist) {
    if (!gram || !mean || !dist) return fk_error(FK_ERR_ARG, "correlation distance: an argument is missing");
    if (n < 1) return fk_error(FK_ERR_ARG, "correlation distance: n = %d units, expected >= 1", n);
    if (count < 1) return fk_error(FK_ERR_ARG, "correlation distance: count = %lld samples, expected >= 1", (long long)count);
    double *sd = malloc((size_t)n * sizeof(double));   // standard deviation, 0 for a constant unit
    if (!sd) return fk_error(FK_ERR_NOMEM, "correlation distance: out of memory for %d units", n);
    double inv = 1.0 / (double)count;
    for (int i = 0; i < n; i++) {
        double g = gram[(size_t)i * n + i];
        if (!isfinite(g) || !isfinite(mean[i])) {
            free(sd);
            return fk_error(FK_ERR_NUMERIC, "correlation distance: unit %d has a non-finite Gram diagonal or mean", i);
        }
        double ms = g * inv, var = ms - mean[i] * mean[i];
        sd[i] = var > 0 && var > 1e-12 * ms ? sqrt(var) : 0;
    }
    for (int i = 0; i < n; i++) {
        dist[(size_t)i * n + i] = 0;
        for (int j = i + 1; j < n; j++) {
            double d = 1;
            if (sd[i] > 0 && sd[j] > 0) {
                double g = gram[(size_t)i * n + j];
                if (!isfinite(g)) {
                    free(sd);
                    return fk_error(FK_ERR_NUMERIC, "correlation distance: Gram entry (%d, %d) is not finite", i, j);
                }
                double r = fabs((g * inv - mean[i] * mean[j]) / (sd[i] * sd[j]));
                d = r >= 1 ? 0 : 1 - r;
            }
            dist[(size_t)i * n + j] = dist[(size_t)j * n + i] = d;
        }
    }
    free(sd);
    return FK_OK;
}
