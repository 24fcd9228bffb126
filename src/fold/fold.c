// Folding FFN units (fusekit/fold.h, fold.md §4).
#include "fusekit/fold.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

// LAPACK from OpenBLAS: Cholesky factorisation and solve of a symmetric positive definite system.
extern void dposv_(const char *uplo, const int *n, const int *nrhs, double *a, const int *lda, double *b, const int *ldb, int *info);

// lambda = ridge * mean(diag G), or a tiny multiple of it with ridge 0 (keeps Cholesky defined).
static double ridge_lambda(const double *G, int64_t F, double ridge) {
    double diag = 0;
    for (int64_t i = 0; i < F; i++) diag += G[i * F + i];
    diag /= (double)(F > 0 ? F : 1);
    double lambda = ridge * diag;
    return lambda > 0 ? lambda : 1e-12 * (diag > 0 ? diag : 1);
}

// D' (C x k) = D G_:K (G_KK + lambda I)^-1, all row-major; D is (C x F).
static fk_status lsq_down(const float *D, int64_t C, int64_t F, const double *G, const int32_t *K, int k, double ridge, float *out) {
    double *A = malloc((size_t)(k * k) * sizeof *A), *B = malloc((size_t)(k * C) * sizeof *B), *GK = malloc((size_t)(F * k) * sizeof *GK);
    double *Dd = malloc((size_t)(C * F) * sizeof *Dd);
    fk_status st = A && B && GK && Dd ? FK_OK : fk_error(FK_ERR_NOMEM, "fold: out of memory");
    if (st == FK_OK) {
        double lambda = ridge_lambda(G, F, ridge);
        for (int i = 0; i < k; i++)
            for (int j = 0; j < k; j++) A[i * k + j] = G[(int64_t)K[i] * F + K[j]] + (i == j ? lambda : 0);
        for (int64_t f = 0; f < F; f++)
            for (int j = 0; j < k; j++) GK[f * k + j] = G[f * F + K[j]];
        for (int64_t i = 0; i < C * F; i++) Dd[i] = D[i];
        // B^T (k x C) = (D GK)^T = GK^T D^T: column-major k x C is row-major C x k, so
        // solving A X = (D GK)^T with LAPACK (column-major) takes B = D GK row-major (C x k).
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)C, k, (int)F, 1.0, Dd, (int)F, GK, k, 0.0, B, k);
        int n = k, nrhs = (int)C, info = 0;
        dposv_("U", &n, &nrhs, A, &n, B, &n, &info);
        if (info != 0) st = fk_error(FK_ERR_NUMERIC, "fold: the kept units' Gram matrix is not positive definite (LAPACK dposv info %d)", info);
        // B (column-major k x C) now holds X = A^-1 (D GK)^T; D' = X^T, i.e. D'[c][j] = B[c * k + j]
        for (int64_t i = 0; st == FK_OK && i < C * k; i++) {
            if (!isfinite(B[i])) st = fk_error(FK_ERR_NUMERIC, "fold: refitted down projection is not finite");
            out[i] = (float)B[i];
        }
    }
    free(A); free(B); free(GK); free(Dd);
    return st;
}

// The parameter-table index of (layer, kind, expert), -1 when absent (expert -1: not an expert's).
static int param_index(const fk_model *m, int layer, fk_param_kind kind, int expert) {
    for (int i = 0; i < m->n_params; i++)
        if (m->params[i].layer == layer && m->params[i].kind == kind && m->params[i].expert == expert) return i;
    return -1;
}

#define KIND(k) (1u << (k))

// Whether parameter p is one of layer `layer`'s of the kinds in `mask`: one a fold rewrites.
static bool rewritten(const fk_param *p, int layer, unsigned mask) { return p->layer == layer && (KIND(p->kind) & mask); }

// m's values of out's parameter i (same layer and kind), NULL when m has none.
static const float *source_of(const fk_model *m, const fk_model *out, int i) {
    const fk_param *q = &out->params[i];
    int pi = i < m->n_params && m->params[i].layer == q->layer && m->params[i].kind == q->kind && m->params[i].expert == q->expert
                 ? i
                 : param_index(m, q->layer, q->kind, q->expert);
    return pi < 0 ? NULL : m->w + m->params[pi].offset;
}

// The model copy of every fold and prune: `out` becomes a model of config nc holding m's
// parameters, all but the rewritten ones (layer `layer`, kinds in `mask`), which the caller
// writes; a parameter m lacks (a bias nc adds) is zero.
static fk_status init_copy_except(const fk_model *m, const fk_config *nc, int layer, unsigned mask, fk_model *out) {
    FK_TRY(fk_model_init(out, nc));
    out->vocab_real = m->vocab_real;  // the same vocabulary rows: the same padding
    for (int i = 0; i < out->n_params; i++) {
        const fk_param *q = &out->params[i];
        const float *src = source_of(m, out, i);
        float *dst = out->w + q->offset;
        if (!src) memset(dst, 0, (size_t)q->numel * sizeof(float));
        else if (!rewritten(q, layer, mask)) memcpy(dst, src, (size_t)q->numel * sizeof(float));
    }
    return FK_OK;
}

fk_status fk_fold_ffn(const fk_model *m, int layer, const int32_t *labels, const int32_t *rep, int k, const double *gram, double ridge,
                      fk_fold_method method, fk_model *out) {
    memset(out, 0, sizeof *out);
    const fk_config *c = &m->cfg;
    if (layer < 0 || layer >= c->n_layer) return fk_error(FK_ERR_ARG, "fold: layer %d does not exist (the model has %lld)", layer, (long long)c->n_layer);
    int64_t F = c->ffn[layer], C = c->d_model;
    if (k < 1 || k > F) return fk_error(FK_ERR_ARG, "fold: layer %d: %d units to keep, expected 1..%lld", layer, k, (long long)F);
    if (method == FK_FOLD_LSQ && !gram) return fk_error(FK_ERR_ARG, "fold: least-squares folding needs the activations' Gram matrix");
    int64_t *size = calloc((size_t)k, sizeof *size);
    if (!size) return fk_error(FK_ERR_NOMEM, "fold: out of memory");
    for (int64_t f = 0; f < F; f++) {
        if (labels[f] < 0 || labels[f] >= k) { free(size); return fk_error(FK_ERR_ARG, "fold: unit %lld has cluster %d, expected 0..%d", (long long)f, labels[f], k - 1); }
        size[labels[f]]++;
    }
    for (int j = 0; j < k; j++)
        if (size[j] == 0 || rep[j] < 0 || rep[j] >= F || labels[rep[j]] != j) {
            free(size);
            return fk_error(FK_ERR_ARG, "fold: cluster %d is empty or its representative %d is not one of its units", j, rep[j]);
        }
    fk_config nc = *c;
    nc.ffn[layer] = k;
    const unsigned mask = KIND(FK_P_UP_W) | KIND(FK_P_UP_B) | KIND(FK_P_DOWN_W);
    fk_status st = init_copy_except(m, &nc, layer, mask, out);
    if (st != FK_OK) { free(size); return st; }
    bool swiglu = fk_config_gated(c);
    int blocks = swiglu ? 2 : 1;  // gate rows then up rows
    for (int i = 0; i < out->n_params && st == FK_OK; i++) {
        const fk_param *p = &out->params[i];
        if (!rewritten(p, layer, mask)) continue;
        const float *src = source_of(m, out, i);
        float *dst = out->w + p->offset;
        int64_t row = p->kind == FK_P_UP_W ? C : 1;  // floats per producing unit
        if (p->kind == FK_P_UP_W || p->kind == FK_P_UP_B) {
            for (int b = 0; b < blocks; b++)
                for (int j = 0; j < k; j++) {
                    float *d = dst + ((int64_t)b * k + j) * row;
                    if (method == FK_FOLD_LSQ) { memcpy(d, src + ((int64_t)b * F + rep[j]) * row, (size_t)row * sizeof(float)); continue; }
                    memset(d, 0, (size_t)row * sizeof(float));
                    for (int64_t f = 0; f < F; f++)
                        if (labels[f] == j)
                            for (int64_t r = 0; r < row; r++) d[r] += src[((int64_t)b * F + f) * row + r] / (float)size[j];
                }
        } else if (method == FK_FOLD_LSQ) {
            st = lsq_down(src, C, F, gram, rep, k, ridge, dst);
        } else {
            memset(dst, 0, (size_t)(C * k) * sizeof(float));
            for (int64_t r = 0; r < C; r++)
                for (int64_t f = 0; f < F; f++) dst[r * k + labels[f]] += src[r * F + f];
        }
    }
    free(size);
    if (st != FK_OK) fk_model_free(out);
    return st;
}

// ---- greedy least-squares elimination ----

extern void dpotrf_(const char *uplo, const int *n, double *a, const int *lda, int *info);
extern void dpotri_(const char *uplo, const int *n, double *a, const int *lda, int *info);

fk_status fk_ffn_elimination(const fk_model *m, int layer, const double *G, double ridge, int32_t *order, double *resid) {
    if (layer < 0 || layer >= m->cfg.n_layer) return fk_error(FK_ERR_ARG, "fold: layer %d does not exist", layer);
    int64_t F = m->cfg.ffn[layer], C = m->cfg.d_model;
    const float *D = m->w + m->layer[layer].down_w;
    double *Ai = malloc((size_t)(F * F) * sizeof *Ai), *W = malloc((size_t)(C * F) * sizeof *W), *Dd = malloc((size_t)(C * F) * sizeof *Dd);
    double *cn = malloc((size_t)F * sizeof *cn);
    char *alive = malloc((size_t)F);
    fk_status st = Ai && W && Dd && cn && alive ? FK_OK : fk_error(FK_ERR_NOMEM, "fold: out of memory (%lld units)", (long long)F);
    if (st != FK_OK) goto done;
    double lambda = ridge_lambda(G, F, ridge);
    for (int64_t i = 0; i < F * F; i++) Ai[i] = G[i];
    for (int64_t i = 0; i < F; i++) Ai[i * F + i] += lambda;
    int n = (int)F, info = 0;
    dpotrf_("U", &n, Ai, &n, &info);
    if (info == 0) dpotri_("U", &n, Ai, &n, &info);
    if (info != 0) { st = fk_error(FK_ERR_NUMERIC, "fold: layer %d: the FFN Gram matrix is not positive definite (LAPACK info %d)", layer, info); goto done; }
    for (int64_t i = 0; i < F; i++)  // symmetric: LAPACK filled one triangle (column-major "U" = row-major lower)
        for (int64_t j = 0; j < i; j++) Ai[j * F + i] = Ai[i * F + j];
    for (int64_t i = 0; i < C * F; i++) Dd[i] = D[i];
    // total energy tr(D G D^T) and the optimum with every unit: W = D G A^-1
    double *DG = malloc((size_t)(C * F) * sizeof *DG);
    if (!DG) { st = fk_error(FK_ERR_NOMEM, "fold: out of memory"); goto done; }
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)C, (int)F, (int)F, 1.0, Dd, (int)F, G, (int)F, 0.0, DG, (int)F);
    double total = 0, explained = 0;
    for (int64_t i = 0; i < C * F; i++) total += DG[i] * Dd[i];
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)C, (int)F, (int)F, 1.0, DG, (int)F, Ai, (int)F, 0.0, W, (int)F);
    // tr(W A W^T) = tr(W (G + lambda I) W^T) = sum (W G) o W + lambda |W|^2, G-part through DG^T: W A W^T = DG A^-1 DG^T
    for (int64_t i = 0; i < C * F; i++) explained += W[i] * DG[i];
    free(DG);
    if (!(total > 0)) total = 1;  // a dead layer: every fold is free
    memset(alive, 1, (size_t)F);
    double cur = explained;
    if (resid) resid[F] = fmax(0.0, 1 - cur / total);
    for (int64_t step = 0; step < F; step++) {
        for (int64_t j = 0; j < F; j++) cn[j] = 0;
        for (int64_t r = 0; r < C; r++)
            for (int64_t j = 0; j < F; j++) cn[j] += W[r * F + j] * W[r * F + j];
        int64_t best = -1;
        double bcost = INFINITY;
        for (int64_t j = 0; j < F; j++) {
            if (!alive[j]) continue;
            double a = Ai[j * F + j], cost = a > 0 ? cn[j] / a : 0;
            if (best < 0 || cost < bcost) { best = j; bcost = cost; }
        }
        order[step] = (int32_t)best;
        cur -= bcost;
        if (resid) resid[F - step - 1] = fmin(1.0, fmax(0.0, 1 - cur / total));
        // downdate: W -= W_:,j Ai_j,: / Ai_jj; Ai -= Ai_:,j Ai_j,: / Ai_jj
        double a = Ai[best * F + best];
        if (a > 0) {
            for (int64_t r = 0; r < C; r++) {
                double w = W[r * F + best] / a;
                if (w != 0) cblas_daxpy((int)F, -w, Ai + best * F, 1, W + r * F, 1);
            }
            double *row = cn;  // reuse as a copy of Ai_j,:
            for (int64_t j = 0; j < F; j++) row[j] = Ai[best * F + j];
            cblas_dger(CblasRowMajor, (int)F, (int)F, -1.0 / a, row, 1, row, 1, Ai, (int)F);
        }
        for (int64_t r = 0; r < C; r++) W[r * F + best] = 0;
        for (int64_t j = 0; j < F; j++) Ai[best * F + j] = Ai[j * F + best] = 0;
        alive[best] = 0;
    }
    if (resid) resid[0] = 1;
done:
    free(Ai); free(W); free(Dd); free(cn); free(alive);
    return st;
}

fk_status fk_fold_ffn_keep(const fk_model *m, int layer, const int32_t *keep, int k, const double *gram, double ridge, fk_model *out) {
    memset(out, 0, sizeof *out);
    if (layer < 0 || layer >= m->cfg.n_layer) return fk_error(FK_ERR_ARG, "fold: layer %d does not exist", layer);
    int64_t F = m->cfg.ffn[layer];
    if (k < 1 || k > F) return fk_error(FK_ERR_ARG, "fold: layer %d: %d units to keep, expected 1..%lld", layer, k, (long long)F);
    int32_t *labels = malloc((size_t)F * sizeof *labels);
    if (!labels) return fk_error(FK_ERR_NOMEM, "fold: out of memory");
    for (int64_t f = 0; f < F; f++) labels[f] = -1;
    for (int j = 0; j < k; j++) {
        if (keep[j] < 0 || keep[j] >= F || labels[keep[j]] >= 0) {
            free(labels);
            return fk_error(FK_ERR_ARG, "fold: layer %d: kept unit %d is out of range or repeated", layer, keep[j]);
        }
        labels[keep[j]] = j;
    }
    for (int64_t f = 0; f < F; f++) {
        if (labels[f] >= 0) continue;
        double best = -1;
        for (int j = 0; j < k; j++) {
            int64_t g = keep[j];
            double den = gram[f * F + f] * gram[g * F + g], r = den > 0 ? fabs(gram[f * F + g]) / sqrt(den) : 0;
            if (r > best) { best = r; labels[f] = j; }
        }
    }
    fk_status st = fk_fold_ffn(m, layer, labels, keep, k, gram, ridge, FK_FOLD_LSQ, out);
    free(labels);
    return st;
}

// ---- pruning (baselines) ----

fk_status fk_prune_ffn(const fk_model *m, int layer, const int32_t *keep, int k, const double *mean, fk_model *out) {
    memset(out, 0, sizeof *out);
    const fk_config *c = &m->cfg;
    if (layer < 0 || layer >= c->n_layer) return fk_error(FK_ERR_ARG, "prune: layer %d does not exist", layer);
    int64_t F = c->ffn[layer], C = c->d_model;
    if (k < 1 || k > F) return fk_error(FK_ERR_ARG, "prune: layer %d: %d units to keep, expected 1..%lld", layer, k, (long long)F);
    char *kept = calloc((size_t)F, 1);
    if (!kept) return fk_error(FK_ERR_NOMEM, "prune: out of memory");
    for (int j = 0; j < k; j++) {
        if (keep[j] < 0 || keep[j] >= F || kept[keep[j]]) { free(kept); return fk_error(FK_ERR_ARG, "prune: layer %d: kept unit %d is out of range or repeated", layer, keep[j]); }
        kept[keep[j]] = 1;
    }
    fk_config nc = *c;
    nc.ffn[layer] = k;
    if (mean) nc.bias_mlp = true;
    const unsigned mask = KIND(FK_P_UP_W) | KIND(FK_P_UP_B) | KIND(FK_P_DOWN_W) | KIND(FK_P_DOWN_B);
    fk_status st = init_copy_except(m, &nc, layer, mask, out);
    if (st != FK_OK) { free(kept); return st; }
    int blocks = fk_config_gated(c) ? 2 : 1;
    for (int i = 0; i < out->n_params; i++) {
        const fk_param *q = &out->params[i];
        const float *src = source_of(m, out, i);
        float *dst = out->w + q->offset;
        if (!src || !rewritten(q, layer, mask)) continue;  // copied, or a bias the original lacks (zero)
        if (q->kind == FK_P_UP_W || q->kind == FK_P_UP_B) {
            int64_t row = q->kind == FK_P_UP_W ? C : 1;
            for (int b = 0; b < blocks; b++)
                for (int j = 0; j < k; j++) memcpy(dst + ((int64_t)b * k + j) * row, src + ((int64_t)b * F + keep[j]) * row, (size_t)row * sizeof(float));
        } else if (q->kind == FK_P_DOWN_W) {
            for (int64_t r = 0; r < C; r++)
                for (int j = 0; j < k; j++) dst[r * k + j] = src[r * F + keep[j]];
        } else {
            memcpy(dst, src, (size_t)C * sizeof(float));
        }
    }
    if (mean) {  // bias compensation: the dropped units' mean output
        const float *D = m->w + m->layer[layer].down_w;
        float *b = out->w + out->layer[layer].down_b;
        for (int64_t r = 0; r < C; r++) {
            double s = 0;
            for (int64_t f = 0; f < F; f++)
                if (!kept[f]) s += (double)D[r * F + f] * mean[f];
            b[r] += (float)s;
        }
    }
    free(kept);
    return FK_OK;
}

// ---- layer surgery ----

fk_status fk_fold_layers(const fk_model *m, int n_new, const double *coef, fk_model *out) {
    memset(out, 0, sizeof *out);
    const fk_config *c = &m->cfg;
    int L = (int)c->n_layer;
    if (n_new < 1 || n_new > L) return fk_error(FK_ERR_ARG, "fold: %d layers requested from %d", n_new, L);
    fk_config nc = *c;
    nc.n_layer = n_new;
    for (int i = 0; i < n_new; i++) {
        int first = -1;
        for (int j = 0; j < L; j++) {
            if (coef[i * L + j] == 0) continue;
            if (first < 0) first = j;
            else if (c->ffn[j] != c->ffn[first])
                return fk_error(FK_ERR_ARG, "fold: new layer %d combines layers %d and %d, whose FFN widths differ (%lld, %lld)", i, first, j,
                                (long long)c->ffn[first], (long long)c->ffn[j]);
            else if (fk_config_experts(c, j) != fk_config_experts(c, first))
                return fk_error(FK_ERR_ARG, "fold: new layer %d combines layers %d and %d, whose experts differ (%lld, %lld; 0: dense)", i, first, j,
                                (long long)fk_config_experts(c, first), (long long)fk_config_experts(c, j));
        }
        if (first < 0) return fk_error(FK_ERR_ARG, "fold: new layer %d has no source layer", i);
        nc.ffn[i] = c->ffn[first];
        nc.moe[i] = c->moe[first];  // MoE layers stay MoE layers, with their experts
        nc.experts[i] = c->experts[first];
        nc.sliding[i] = c->sliding[first];  // the attention kind (sliding window or global) of its first source
    }
    for (int i = n_new; i < FK_MAX_LAYERS; i++) { nc.ffn[i] = 0; nc.moe[i] = 0; nc.experts[i] = 0; }
    FK_TRY(fk_model_init(out, &nc));
    out->vocab_real = m->vocab_real;
    for (int i = 0; i < out->n_params; i++) {
        const fk_param *q = &out->params[i];
        float *dst = out->w + q->offset;
        if (q->layer < 0) {
            int pi = param_index(m, -1, q->kind, -1);
            memcpy(dst, m->w + m->params[pi].offset, (size_t)q->numel * sizeof(float));
            continue;
        }
        memset(dst, 0, (size_t)q->numel * sizeof(float));
        for (int j = 0; j < L; j++) {
            double a = coef[q->layer * L + j];
            if (a == 0) continue;
            const float *src = m->w + m->params[param_index(m, j, q->kind, q->expert)].offset;
            for (int64_t e = 0; e < q->numel; e++) dst[e] += (float)(a * src[e]);
        }
    }
    return FK_OK;
}

// ---- attention heads (within KV groups) ----

// tr(O G_:K (G_KK + lambda I)^-1 G_K: O^T): the output energy the units K explain (O is C x F).
static fk_status lsq_explained(const float *O, int64_t C, int64_t F, const double *G, const int32_t *K, int k, double lambda, double *out) {
    *out = 0;
    if (k == 0) return FK_OK;
    double *A = malloc((size_t)k * k * sizeof *A), *B = malloc((size_t)C * k * sizeof *B), *B0 = malloc((size_t)C * k * sizeof *B0);
    if (!A || !B || !B0) { free(A); free(B); free(B0); return fk_error(FK_ERR_NOMEM, "fold: out of memory"); }
    for (int i = 0; i < k; i++)
        for (int j = 0; j < k; j++) A[i * k + j] = G[(int64_t)K[i] * F + K[j]] + (i == j ? lambda : 0);
    for (int64_t r = 0; r < C; r++)  // B = O G_:K (C x k)
        for (int j = 0; j < k; j++) {
            double s = 0;
            for (int64_t f = 0; f < F; f++) s += (double)O[r * F + f] * G[f * F + K[j]];
            B[r * k + j] = B0[r * k + j] = s;
        }
    int n = k, nrhs = (int)C, info = 0;
    dposv_("U", &n, &nrhs, A, &n, B, &n, &info);
    fk_status st = info == 0 ? FK_OK : fk_error(FK_ERR_NUMERIC, "fold: the kept heads' Gram matrix is not positive definite (LAPACK info %d)", info);
    for (int64_t i = 0; st == FK_OK && i < C * k; i++) *out += B[i] * B0[i];
    free(A); free(B); free(B0);
    return st;
}

// The dimensions (in the layer's attention output) of the heads flagged in `kept`.
static int head_dims(const char *kept, int64_t H, int64_t hd, int32_t *dims) {
    int k = 0;
    for (int64_t h = 0; h < H; h++)
        if (kept[h])
            for (int64_t e = 0; e < hd; e++) dims[k++] = (int32_t)(h * hd + e);
    return k;
}

fk_status fk_head_elimination(const fk_model *m, int layer, const double *Z, double ridge, int32_t *order, double *resid) {
    const fk_config *c = &m->cfg;
    if (layer < 0 || layer >= c->n_layer) return fk_error(FK_ERR_ARG, "fold: layer %d does not exist", layer);
    int64_t H = fk_config_heads(c, layer), KV = c->n_kv_head, G = H / KV, hd = c->head_dim, D = H * hd, C = c->d_model;
    const float *O = m->w + m->layer[layer].o_w;
    char *kept = malloc((size_t)H);
    int32_t *dims = malloc((size_t)D * sizeof *dims);
    if (!kept || !dims) { free(kept); free(dims); return fk_error(FK_ERR_NOMEM, "fold: out of memory"); }
    memset(kept, 1, (size_t)H);
    double lambda = ridge_lambda(Z, D, ridge), total = 0, expl;
    for (int64_t i = 0; i < D; i++) dims[i] = (int32_t)i;
    fk_status st = FK_OK;
    // total output energy tr(O Z O^T)
    for (int64_t r = 0; r < C; r++)
        for (int64_t i = 0; i < D; i++) {
            double s = 0;
            for (int64_t j = 0; j < D; j++) s += Z[i * D + j] * O[r * D + j];
            total += s * O[r * D + i];
        }
    if (!(total > 0)) total = 1;
    st = lsq_explained(O, C, D, Z, dims, (int)D, lambda, &expl);
    if (resid && st == FK_OK) resid[G] = fmax(0.0, 1 - expl / total);
    int64_t n = 0;
    for (int64_t g = G; g > 1 && st == FK_OK; g--) {
        // one head out of each group, the one whose removal costs least with the others kept
        for (int64_t grp = 0; grp < KV && st == FK_OK; grp++) {
            double best = -INFINITY;
            int64_t bh = -1;
            for (int64_t h = grp * G; h < (grp + 1) * G && st == FK_OK; h++) {
                if (!kept[h]) continue;
                kept[h] = 0;
                int k = head_dims(kept, H, hd, dims);
                double e;
                st = lsq_explained(O, C, D, Z, dims, k, lambda, &e);
                kept[h] = 1;
                if (st == FK_OK && e > best) { best = e; bh = h; }
            }
            if (st != FK_OK) break;
            kept[bh] = 0;
            order[n++] = (int32_t)bh;
            expl = best;
        }
        if (resid && st == FK_OK) resid[g - 1] = fmin(1.0, fmax(0.0, 1 - expl / total));
    }
    for (int64_t h = 0; h < H && st == FK_OK; h++)  // the last head of each group, in group order
        if (kept[h]) order[n++] = (int32_t)h;
    if (resid) resid[0] = 1;
    free(kept);
    free(dims);
    return st;
}

fk_status fk_fold_heads(const fk_model *m, int layer, const int32_t *keep, int k, const double *Z, double ridge, fk_model *out) {
    memset(out, 0, sizeof *out);
    const fk_config *c = &m->cfg;
    if (layer < 0 || layer >= c->n_layer) return fk_error(FK_ERR_ARG, "fold: layer %d does not exist", layer);
    int64_t H = fk_config_heads(c, layer), KV = c->n_kv_head, G = H / KV, hd = c->head_dim, D = H * hd, C = c->d_model;
    if (k < KV || k % KV != 0 || k > H)
        return fk_error(FK_ERR_ARG, "fold: layer %d: %d heads to keep, expected a multiple of the %lld KV heads up to %lld", layer, k, (long long)KV, (long long)H);
    int64_t g2 = k / KV;
    char *kept = calloc((size_t)H, 1);
    int64_t *per = calloc((size_t)KV, sizeof *per);
    int32_t *dims = malloc((size_t)D * sizeof *dims);
    fk_status st = kept && per && dims ? FK_OK : fk_error(FK_ERR_NOMEM, "fold: out of memory");
    for (int i = 0; i < k && st == FK_OK; i++) {
        if (keep[i] < 0 || keep[i] >= H || kept[keep[i]]) st = fk_error(FK_ERR_ARG, "fold: layer %d: kept head %d is out of range or repeated", layer, keep[i]);
        else { kept[keep[i]] = 1; per[keep[i] / G]++; }
    }
    for (int64_t grp = 0; grp < KV && st == FK_OK; grp++)
        if (per[grp] != g2)
            st = fk_error(FK_ERR_ARG, "fold: layer %d: KV group %lld keeps %lld heads, every group must keep %lld (grouped-query attention)", layer,
                          (long long)grp, (long long)per[grp], (long long)g2);
    fk_config nc = *c;
    nc.heads[layer] = k;
    // (StableLM 2 12B's QK-norm has weights per query head: the kept heads' go with them)
    const unsigned mask = KIND(FK_P_QKV_W) | KIND(FK_P_QKV_B) | KIND(FK_P_O_W) | (c->qk_norm_ln ? KIND(FK_P_Q_NORM_W) : 0);
    if (st == FK_OK) st = init_copy_except(m, &nc, layer, mask, out);
    int nd = st == FK_OK ? head_dims(kept, H, hd, dims) : 0;
    for (int i = 0; st == FK_OK && i < out->n_params; i++) {
        const fk_param *p = &out->params[i];
        if (!rewritten(p, layer, mask)) continue;
        const float *src = source_of(m, out, i);
        float *dst = out->w + p->offset;
        if (p->kind == FK_P_O_W) { st = lsq_down(src, C, D, Z, dims, nd, ridge, dst); continue; }
        int64_t row = p->kind == FK_P_QKV_W ? C : 1, r = 0;
        for (int64_t h = 0; h < H; h++)  // kept query heads in order (groups stay contiguous)
            if (kept[h]) { memcpy(dst + r * row, src + h * hd * row, (size_t)(hd * row) * sizeof(float)); r += hd; }
        if (p->kind != FK_P_Q_NORM_W)
            memcpy(dst + r * row, src + D * row, (size_t)(2 * KV * hd * row) * sizeof(float));  // keys and values unchanged
    }
    free(kept); free(per); free(dims);
    if (st != FK_OK) fk_model_free(out);
    return st;
}

// ---- mixture of experts ----

// Layer `layer` of m with its experts regrouped into k: expert j of out is the average of the
// experts e with labels[e] == j (-1: dropped), weighted by usage (NULL or a group without usage:
// equally), and takes the router row of its most used member (ties: the lower index).
static fk_status rebuild_experts(const fk_model *m, int layer, const int32_t *labels, int k, const double *usage, fk_model *out) {
    memset(out, 0, sizeof *out);
    const fk_config *c = &m->cfg;
    if (layer < 0 || layer >= c->n_layer) return fk_error(FK_ERR_ARG, "fold: layer %d does not exist (the model has %lld)", layer, (long long)c->n_layer);
    int64_t E = fk_config_experts(c, layer), C = c->d_model;
    if (E == 0) return fk_error(FK_ERR_ARG, "fold: layer %d is not a mixture-of-experts layer", layer);
    if (k < c->n_expert_used || k > E)
        return fk_error(FK_ERR_ARG, "fold: layer %d: %d experts to keep, expected %lld (num_experts_per_tok, the experts each token uses) to %lld",
                        layer, k, (long long)c->n_expert_used, (long long)E);
    int64_t *size = calloc((size_t)k, sizeof *size);
    if (!size) return fk_error(FK_ERR_NOMEM, "fold: out of memory");
    fk_status st = FK_OK;
    for (int64_t e = 0; e < E && st == FK_OK; e++)
        if (labels[e] < -1 || labels[e] >= k) st = fk_error(FK_ERR_ARG, "fold: layer %d: expert %lld has group %d, expected -1..%d", layer, (long long)e, labels[e], k - 1);
        else if (labels[e] >= 0) size[labels[e]]++;
    for (int j = 0; j < k && st == FK_OK; j++)
        if (size[j] == 0) st = fk_error(FK_ERR_ARG, "fold: layer %d: expert group %d has no member", layer, j);
    free(size);
    fk_config nc = *c;
    nc.experts[layer] = k;
    const unsigned mask = KIND(FK_P_ROUTER_W) | KIND(FK_P_EXP_UP_W) | KIND(FK_P_EXP_DOWN_W);
    if (st == FK_OK) st = init_copy_except(m, &nc, layer, mask, out);
    if (st != FK_OK) return st;
    const fk_layer_offsets *si = &m->layer[layer], *so = &out->layer[layer];
    int64_t nup = (fk_config_gated(c) ? 2 : 1) * c->expert_ffn * C, ndown = C * c->expert_ffn;
    for (int j = 0; j < k; j++) {
        double total = 0;
        int64_t dom = -1, n = 0;
        for (int64_t e = 0; e < E; e++) {
            if (labels[e] != j) continue;
            double u = usage ? fmax(usage[e], 0) : 0;
            total += u;
            n++;
            if (dom < 0 || (usage && u > fmax(usage[dom], 0))) dom = e;
        }
        memcpy(out->w + so->router_w + j * C, m->w + si->router_w + dom * C, (size_t)C * sizeof(float));
        float *up = out->w + so->exp_up_w + j * so->exp_up_stride, *down = out->w + so->exp_down_w + j * so->exp_down_stride;
        memset(up, 0, (size_t)nup * sizeof(float));
        memset(down, 0, (size_t)ndown * sizeof(float));
        for (int64_t e = 0; e < E; e++) {
            if (labels[e] != j) continue;
            float a = (float)(total > 0 ? fmax(usage[e], 0) / total : 1.0 / (double)n);
            const float *su = m->w + si->exp_up_w + e * si->exp_up_stride, *sd = m->w + si->exp_down_w + e * si->exp_down_stride;
            for (int64_t i = 0; i < nup; i++) up[i] += a * su[i];
            for (int64_t i = 0; i < ndown; i++) down[i] += a * sd[i];
        }
    }
    return FK_OK;
}

fk_status fk_fold_experts(const fk_model *m, int layer, const int32_t *labels, int k, const double *usage, fk_model *out) {
    if (layer >= 0 && layer < m->cfg.n_layer)
        for (int64_t e = 0; e < fk_config_experts(&m->cfg, layer); e++)
            if (labels[e] < 0) { memset(out, 0, sizeof *out); return fk_error(FK_ERR_ARG, "fold: layer %d: expert %lld has no group", layer, (long long)e); }
    return rebuild_experts(m, layer, labels, k, usage, out);
}

fk_status fk_prune_experts(const fk_model *m, int layer, const int32_t *keep, int k, fk_model *out) {
    memset(out, 0, sizeof *out);
    int64_t E = layer >= 0 && layer < m->cfg.n_layer ? fk_config_experts(&m->cfg, layer) : 0;
    int32_t *labels = malloc((size_t)(E > 0 ? E : 1) * sizeof *labels);
    if (!labels) return fk_error(FK_ERR_NOMEM, "prune: out of memory");
    for (int64_t e = 0; e < E; e++) labels[e] = -1;
    fk_status st = FK_OK;
    for (int j = 0; j < k && st == FK_OK && E > 0; j++)
        if (keep[j] < 0 || keep[j] >= E || labels[keep[j]] >= 0) st = fk_error(FK_ERR_ARG, "prune: layer %d: kept expert %d is out of range or repeated", layer, keep[j]);
        else labels[keep[j]] = j;
    if (st == FK_OK) st = rebuild_experts(m, layer, labels, k, NULL, out);
    free(labels);
    return st;
}
