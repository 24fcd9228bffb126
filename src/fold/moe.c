// Mixture-of-experts statistics for folding (fusekit/analyze.h, fold.md §1): per MoE layer, the
// routing (which experts the tokens choose and with what weight) and the similarity of every
// expert's output on the same tokens, accumulated batch by batch through the forward hook.
#include "fold/moe.h"
#include "fusekit/fold.h"
#include "nn/moe.h"
#include "nn/ops.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

bool fk_moe_stats_alloc(fk_analysis *a, const fk_config *c) {
    int L = a->n_layer;
    if (c->n_expert == 0) return true;
    bool ok = (a->experts = calloc((size_t)L, sizeof *a->experts)) && (a->expert_load = calloc((size_t)L, sizeof(double *))) &&
              (a->expert_usage = calloc((size_t)L, sizeof(double *))) && (a->expert_gram = calloc((size_t)L, sizeof(double *))) &&
              (a->expert_sim = calloc((size_t)L, sizeof(double *)));
    for (int l = 0; ok && l < L; l++) {
        int64_t E = fk_config_experts(c, l);
        a->experts[l] = E;
        if (E == 0) continue;
        ok = (a->expert_load[l] = calloc((size_t)E, sizeof(double))) && (a->expert_usage[l] = calloc((size_t)E, sizeof(double))) &&
             (a->expert_gram[l] = calloc((size_t)(E * E), sizeof(double))) && (a->expert_sim[l] = calloc((size_t)(E * E), sizeof(double)));
    }
    return ok;
}

void fk_moe_stats_free(fk_analysis *a) {
    for (int l = 0; a->experts && l < a->n_layer; l++) {  // (each array may be missing after a failed allocation)
        if (a->expert_load) free(a->expert_load[l]);
        if (a->expert_usage) free(a->expert_usage[l]);
        if (a->expert_gram) free(a->expert_gram[l]);
        if (a->expert_sim) free(a->expert_sim[l]);
    }
    free(a->experts); free(a->expert_load); free(a->expert_usage); free(a->expert_gram); free(a->expert_sim);
    a->experts = NULL;
    a->expert_load = a->expert_usage = a->expert_gram = a->expert_sim = NULL;
}

// The f32 values of the table entry at arena offset off: the arena itself, or for a frozen model
// its rows decoded into *own (the caller frees it).
static fk_status entry_f32(const fk_model *m, int64_t off, const float **w, float **own) {
    *own = NULL;
    *w = m->w + off;
    if (!fk_model_is_frozen(m)) return FK_OK;
    const fk_param *p = fk_model_param_of(m, off);
    if (!p) return fk_error(FK_ERR_ARG, "analyze: no table entry at offset %lld", (long long)off);
    if (!(*own = malloc((size_t)p->numel * sizeof(float)))) return fk_error(FK_ERR_NOMEM, "analyze: out of memory");
    fk_status st = fk_model_read_rows(m, (int)(p - m->params), 0, p->shape[0], *own);
    if (st != FK_OK) { free(*own); *own = NULL; return st; }
    *w = *own;
    return FK_OK;
}

// out (n, rows) = x (n, cols) W^T for the entry at offset off (rows x cols).
static fk_status entry_matmul(const fk_model *m, int64_t off, const float *x, int64_t n, int64_t cols, int64_t rows, float *out) {
    const float *w;
    float *own;
    FK_TRY(entry_f32(m, off, &w, &own));
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)n, (int)rows, (int)cols, 1.0f, x, (int)cols, w, (int)cols, 0.0f, out, (int)rows);
    free(own);
    return FK_OK;
}

// The FFN input of layer l: x = norm2(x_l + att W_O^T + b_O) (MoE layers are sequential
// pre-norm blocks: check_moe refuses the others). mid, mean, rstd: scratch.
static fk_status ffn_input(const fk_model *m, int l, const float *xl, const float *att, int64_t N, float *x, float *mid, float *mean,
                           float *rstd) {
    const fk_config *c = &m->cfg;
    const fk_layer_offsets *o = &m->layer[l];
    int64_t C = c->d_model, D = fk_config_heads(c, l) * c->head_dim;
    FK_TRY(entry_matmul(m, o->o_w, att, N, D, C, mid));
    for (int64_t t = 0; t < N; t++)
        for (int64_t i = 0; i < C; i++) mid[t * C + i] += xl[t * C + i] + (o->o_b >= 0 ? m->w[o->o_b + i] : 0);
    if (o->ln2_w < 0) memcpy(x, mid, (size_t)(N * C) * sizeof(float));
    else if (c->norm == FK_NORM_LAYERNORM)
        fk_layernorm_forward(x, mean, rstd, mid, m->w + o->ln2_w, o->ln2_b >= 0 ? m->w + o->ln2_b : NULL, N, C, c->norm_eps);
    else
        fk_rmsnorm_forward(x, rstd, mid, m->w + o->ln2_w, N, C, c->norm_eps, c->norm_offset);
    return FK_OK;
}

// The routing of N tokens from their router logits (N, E), by the engine's own op (model.h:
// softmax, the K largest, ties to the lower index, renormalised when expert_norm). Each choice
// adds 1 to load[e] and its weight to usage[e]. probs (N, E), idx and wts (N, K): scratch.
static void route(const fk_config *c, const float *logits, int64_t N, int64_t E, float *probs, int32_t *idx, float *wts, double *load,
                  double *usage) {
    int64_t K = c->n_expert_used;
    fk_moe_route_forward(probs, idx, wts, logits, N, E, K, c->expert_norm);
    for (int64_t i = 0; i < N * K; i++) {
        load[idx[i]] += 1;
        usage[idx[i]] += wts[i];
    }
}

// Every expert of layer l on the n rows of x into Y (E blocks of n x C, expert e's at e n C);
// pre and act: scratch (n x UP, n x F).
static fk_status expert_outputs(const fk_model *m, int l, const float *x, int64_t n, float *Y, float *pre, float *act) {
    const fk_config *c = &m->cfg;
    const fk_layer_offsets *o = &m->layer[l];
    int64_t E = fk_config_experts(c, l), C = c->d_model, F = c->expert_ffn, UP = fk_config_gated(c) ? 2 * F : F;
    for (int64_t e = 0; e < E; e++) {
        FK_TRY(entry_matmul(m, o->exp_up_w + e * o->exp_up_stride, x, n, C, UP, pre));
        fk_nn_act_forward(c, act, pre, n, F);  // the engine's own FFN activation dispatch
        FK_TRY(entry_matmul(m, o->exp_down_w + e * o->exp_down_stride, act, n, F, C, Y + e * n * C));
    }
    return FK_OK;
}

// Every expert on every token of x (N rows), in chunks of nb rows: expert_gram += the Gram
// matrix of the outputs (upper triangle; summed over tokens and dimensions).
static fk_status output_gram(const fk_model *m, int l, const float *x, int64_t N, int64_t nb, fk_analysis *a) {
    const fk_config *c = &m->cfg;
    int64_t E = a->experts[l], C = c->d_model, F = c->expert_ffn, UP = fk_config_gated(c) ? 2 * F : F;
    float *Y = malloc((size_t)(E * nb * C) * sizeof(float)), *pre = malloc((size_t)(nb * UP) * sizeof(float));
    float *act = malloc((size_t)(nb * F) * sizeof(float)), *S = malloc((size_t)(E * E) * sizeof(float));
    fk_status st = Y && pre && act && S ? FK_OK : fk_error(FK_ERR_NOMEM, "analyze: out of memory (layer %d's experts)", l);
    for (int64_t t0 = 0; t0 < N && st == FK_OK; t0 += nb) {
        int64_t n = N - t0 < nb ? N - t0 : nb;
        st = expert_outputs(m, l, x + t0 * C, n, Y, pre, act);
        if (st != FK_OK) break;
        cblas_ssyrk(CblasRowMajor, CblasUpper, CblasNoTrans, (int)E, (int)(n * C), 1.0f, Y, (int)(n * C), 0.0f, S, (int)E);
        for (int64_t i = 0; i < E; i++)
            for (int64_t j = i; j < E; j++) a->expert_gram[l][i * E + j] += S[i * E + j];
    }
    free(Y); free(pre); free(act); free(S);
    return st;
}

fk_status fk_moe_stats_add(const fk_model *m, int l, const float *xl, const float *att, int64_t N, fk_analysis *a) {
    const fk_config *c = &m->cfg;
    int64_t E = a->experts[l], C = c->d_model;
    // expert outputs in chunks of at most 16M floats
    int64_t nb = ((int64_t)1 << 24) / (E * C);
    if (nb < 1) nb = 1;
    if (nb > N) nb = N;
    float *x = malloc((size_t)(N * C) * sizeof(float)), *mid = malloc((size_t)(N * C) * sizeof(float));
    float *mean = malloc((size_t)N * sizeof(float)), *rstd = malloc((size_t)N * sizeof(float));
    int64_t K = c->n_expert_used;
    float *logits = malloc((size_t)(N * E) * sizeof(float)), *p = malloc((size_t)(N * E) * sizeof(float));
    float *wts = malloc((size_t)(N * K) * sizeof(float));
    int32_t *idx = malloc((size_t)(N * K) * sizeof(int32_t));
    fk_status st = x && mid && mean && rstd && logits && p && wts && idx ? FK_OK
                                                                         : fk_error(FK_ERR_NOMEM, "analyze: out of memory (layer %d's routing)", l);
    if (st == FK_OK) st = ffn_input(m, l, xl, att, N, x, mid, mean, rstd);
    if (st == FK_OK) st = entry_matmul(m, m->layer[l].router_w, x, N, C, E, logits);
    if (st == FK_OK) route(c, logits, N, E, p, idx, wts, a->expert_load[l], a->expert_usage[l]);
    free(mid); free(mean); free(rstd); free(logits); free(p); free(wts); free(idx);
    if (st == FK_OK) st = output_gram(m, l, x, N, nb, a);
    free(x);
    return st;
}

void fk_moe_stats_finish(fk_analysis *a, int l, int64_t n_expert_used) {
    if (!a->experts || a->experts[l] == 0) return;
    int64_t E = a->experts[l];
    double T = (double)a->tokens, *G = a->expert_gram[l];
    for (int64_t i = 0; i < E; i++) {
        a->expert_load[l][i] /= T * (double)n_expert_used;
        a->expert_usage[l][i] /= T;
        for (int64_t j = 0; j < i; j++) G[i * E + j] = G[j * E + i];
    }
    for (int64_t i = 0; i < E; i++)
        for (int64_t j = 0; j < E; j++) {
            double d = G[i * E + i] * G[j * E + j];
            a->expert_sim[l][i * E + j] = d > 0 ? G[i * E + j] / sqrt(d) : 0;
        }
}

// ---- grouping for merges ----

int64_t fk_expert_params(const fk_config *c) { return ((fk_config_gated(c) ? 3 : 2) * c->expert_ffn + 1) * c->d_model; }

// The cost of merging groups i and j (usages ui, uj; M the inner products of the groups' mean
// outputs): Ward's criterion ui uj / (ui + uj) |ybar_i - ybar_j|^2, the residual the merge adds.
static double ward(const double *M, int64_t E, const double *u, int64_t i, int64_t j) {
    return u[i] * u[j] / (u[i] + u[j]) * fmax(0, M[i * E + i] + M[j * E + j] - 2 * M[i * E + j]);
}

// Greedy merges: each step joins the two groups whose merge adds least to the usage-weighted
// residual (ward; ties: the lowest pair), until k groups are left. M and u are updated in place
// (group i's mean output and usage after j joins it); lab[e] gets each expert's group (an expert index).
static void ward_merges(double *M, double *u, int64_t E, int64_t k, int32_t *lab) {
    for (int64_t e = 0; e < E; e++) lab[e] = (int32_t)e;
    char *alive = malloc((size_t)E);
    if (!alive) return;  // (no merges: every expert alone)
    memset(alive, 1, (size_t)E);
    for (int64_t n = E; n > k; n--) {
        int64_t bi = -1, bj = -1;
        double best = INFINITY;
        for (int64_t i = 0; i < E; i++)
            for (int64_t j = i + 1; alive[i] && j < E; j++)
                if (alive[j] && ward(M, E, u, i, j) < best) { best = ward(M, E, u, i, j); bi = i; bj = j; }
        double ui = u[bi], uj = u[bj], w = ui + uj;
        double mii = (ui * ui * M[bi * E + bi] + 2 * ui * uj * M[bi * E + bj] + uj * uj * M[bj * E + bj]) / (w * w);
        for (int64_t x = 0; x < E; x++)
            if (alive[x] && x != bi && x != bj) M[bi * E + x] = M[x * E + bi] = (ui * M[bi * E + x] + uj * M[bj * E + x]) / w;
        M[bi * E + bi] = mii;
        u[bi] = w;
        alive[bj] = 0;
        for (int64_t e = 0; e < E; e++)
            if (lab[e] == bj) lab[e] = (int32_t)bi;
    }
    free(alive);
}

fk_status fk_expert_groups(const fk_analysis *a, int layer, int k, int32_t *labels) {
    int64_t E = layer >= 0 && layer < a->n_layer && a->experts ? a->experts[layer] : 0;
    if (E == 0) return fk_error(FK_ERR_ARG, "fold: layer %d has no experts in the analysis", layer);
    if (k < 1 || k > E) return fk_error(FK_ERR_ARG, "fold: layer %d: %d expert groups, expected 1..%lld", layer, k, (long long)E);
    double *M = malloc((size_t)(E * E) * sizeof *M), *u = malloc((size_t)E * sizeof *u);
    int32_t *lab = malloc((size_t)E * sizeof *lab), *id = malloc((size_t)E * sizeof *id);
    if (!M || !u || !lab || !id) { free(M); free(u); free(lab); free(id); return fk_error(FK_ERR_NOMEM, "fold: out of memory"); }
    double total = 0;
    for (int64_t e = 0; e < E; e++) total += fmax(0, a->expert_usage[layer][e]);
    // an unused expert weighs a little, so that it still joins the expert it is most like
    for (int64_t e = 0; e < E; e++) u[e] = total > 0 ? fmax(a->expert_usage[layer][e], 1e-6 * total / (double)E) : 1;
    memcpy(M, a->expert_gram[layer], (size_t)(E * E) * sizeof *M);
    ward_merges(M, u, E, k, lab);
    // groups numbered by first appearance
    int32_t n = 0;
    for (int64_t e = 0; e < E; e++) id[e] = -1;
    for (int64_t e = 0; e < E; e++) {
        if (id[lab[e]] < 0) id[lab[e]] = n++;
        labels[e] = id[lab[e]];
    }
    free(M); free(u); free(lab); free(id);
    return FK_OK;
}

double fk_expert_merge_residual(const fk_analysis *a, int layer, const int32_t *labels, int k) {
    int64_t E = a->experts[layer];
    const double *G = a->expert_gram[layer], *u = a->expert_usage[layer];
    double num = 0, den = 0;
    for (int64_t e = 0; e < E; e++) den += u[e] * G[e * E + e];
    for (int g = 0; g < k; g++) {
        double tot = 0, self = 0;  // self = |ybar|^2 (sum_f,h a_f a_h G_fh)
        for (int64_t f = 0; f < E; f++) tot += labels[f] == g ? u[f] : 0;
        if (!(tot > 0)) continue;  // an unused group adds nothing
        for (int64_t f = 0; f < E; f++)
            for (int64_t h = 0; h < E; h++)
                if (labels[f] == g && labels[h] == g) self += u[f] * u[h] * G[f * E + h] / (tot * tot);
        for (int64_t e = 0; e < E; e++) {
            if (labels[e] != g) continue;
            double cross = 0;  // y_e . ybar
            for (int64_t f = 0; f < E; f++) cross += labels[f] == g ? u[f] * G[e * E + f] / tot : 0;
            num += u[e] * (G[e * E + e] - 2 * cross + self);
        }
    }
    return den > 0 ? fmax(0, num / den) : 0;
}
