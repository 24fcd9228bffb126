// Folding FFN units (fusekit/fold.h, fold.md §4).
#include "fusekit/fold.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

// LAPACK from OpenBLAS: Cholesky factorisation and solve of a symmetric positive definite system.
extern void dposv_(const char *uplo, const int *n, const int *nrhs, double *a, const int *lda, double *b, const int *ldb, int *info);

// D' (C x k) = D G_:K (G_KK + lambda I)^-1, all row-major; D is (C x F).
static fk_status lsq_down(const float *D, int64_t C, int64_t F, const double *G, const int32_t *K, int k, double ridge, float *out) {
    double *A = malloc((size_t)(k * k) * sizeof *A), *B = malloc((size_t)(k * C) * sizeof *B), *GK = malloc((size_t)(F * k) * sizeof *GK);
    double *Dd = malloc((size_t)(C * F) * sizeof *Dd);
    fk_status st = A && B && GK && Dd ? FK_OK : fk_error(FK_ERR_NOMEM, "fold: out of memory");
    if (st == FK_OK) {
        double diag = 0;
        for (int i = 0; i < k; i++) diag += G[(int64_t)K[i] * F + K[i]];
        double lambda = ridge * diag / k;
        if (!(lambda > 0)) lambda = 1e-12 * (diag / k > 0 ? diag / k : 1);
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
    fk_status st = fk_model_init(out, &nc);
    if (st != FK_OK) { free(size); return st; }
    bool swiglu = c->mlp == FK_MLP_SWIGLU;
    int blocks = swiglu ? 2 : 1;  // gate rows then up rows
    for (int i = 0; i < m->n_params && st == FK_OK; i++) {
        const fk_param *p = &m->params[i], *q = &out->params[i];
        const float *src = m->w + p->offset;
        float *dst = out->w + q->offset;
        if (p->layer != layer || (p->kind != FK_P_UP_W && p->kind != FK_P_UP_B && p->kind != FK_P_DOWN_W)) {
            memcpy(dst, src, (size_t)p->numel * sizeof(float));
            continue;
        }
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
