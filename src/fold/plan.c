// The fold plan: where the budget goes, calibrated by KL probes (fusekit/fold.h, fold.md §3-4).
#include "fusekit/fold.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

// KL probes (fk_kl_probe_*) are evaluation: fusekit/eval.h.

// ---- plan ----

void fk_fold_opts_default(fk_fold_opts *o) {
    memset(o, 0, sizeof *o);
    o->budget = 0.3;
    o->scope = FK_SCOPE_FFN;
    o->round = 8;
    o->min_width = 0.3;
    o->ffn_ops = true;
    o->layer_ops = true;
    o->head_ops = true;
    o->expert_ops = true;
    o->ridge = 1e-2;
}

const char *fk_layer_op_name(fk_layer_op_kind k) {
    return k == FK_LAYER_DROP ? "drop" : k == FK_LAYER_AVERAGE ? "average" : "laco";
}

// A layer's parameters (all of them: what dropping it saves) and its FFN units' (what folding shrinks).
static int64_t layer_params(const fk_model *m, int l) { return fk_model_count_params(m, FK_PARAMS_BLOCKS, l); }
static int64_t ffn_params(const fk_model *m, int l) { return fk_model_count_params(m, FK_PARAMS_FFN_UNITS, l); }

// Coefficients (fk_fold_layers) of layer operations, sorted by layer and not overlapping, on
// an L-layer model; returns the new layer count.
static int ops_coef(int L, const fk_layer_op *ops, int n_ops, double *coef) {
    int n = 0, k = 0;
    memset(coef, 0, (size_t)L * L * sizeof *coef);
    for (int j = 0; j < L; j++) {
        if (k < n_ops && ops[k].layer == j) {
            const fk_layer_op *op = &ops[k++];
            if (op->kind != FK_LAYER_DROP) {
                for (int s = 0; s < op->span; s++)
                    coef[n * L + j + s] = op->kind == FK_LAYER_AVERAGE ? 1.0 / op->span : (s == 0 ? 1.0 - (op->span - 1) : 1.0);
                n++;
            }
            j += op->span - 1;
            continue;
        }
        coef[n++ * L + j] = 1;
    }
    return n;
}

static fk_status probe_layer_op(const fk_model *m, const fk_kl_probe *probe, fk_layer_op *op) {
    int L = (int)m->cfg.n_layer;
    double *coef = malloc((size_t)L * L * sizeof *coef);
    if (!coef) return fk_error(FK_ERR_NOMEM, "fold: out of memory");
    int n = ops_coef(L, op, 1, coef);
    fk_model t;
    fk_status st = fk_fold_layers(m, n, coef, &t);
    free(coef);
    if (st != FK_OK) return st;
    st = fk_kl_probe_eval(&t, probe, &op->kl);
    fk_model_free(&t);
    return st;
}

static int64_t round_up(int64_t x, int64_t r) { return (x + r - 1) / r * r; }
static int64_t round_down(int64_t x, int64_t r) { return x / r * r; }

// The next (smaller) width of a layer: the next multiple of round below w, at least lo; -1: none.
static int64_t next_width(int64_t w, int64_t lo, int64_t round) {
    int64_t n = w % round ? round_down(w, round) : w - round;
    return n >= lo ? n : -1;
}

typedef struct {
    const fk_fold_plan *p;
    const double *const *resid;
    const int64_t *lo;
    const bool *excluded;
    int64_t round;
    bool uniform;
    int L;
    const double *const *hres;  // per layer: relative residual with g heads per group (g = 0..G), NULL: no head steps
    const int64_t *hlo;         // fewest heads per group allowed
    const double *const *eres;  // per MoE layer: relative residual with k experts (k = 0..E), NULL: no expert steps
    const int64_t *elo;         // fewest experts allowed
} ffn_ctx;

// The cheapest expert step (one expert fewer in an MoE layer) by estimated KL per parameter, if
// it beats *best: its layer, else -1.
static int expert_step(const ffn_ctx *c, const int64_t *experts, double *best) {
    const fk_fold_plan *p = c->p;
    int el = -1;
    for (int l = 0; l < c->L; l++) {
        if (!c->eres || !c->eres[l] || c->excluded[l] || experts[l] - 1 < c->elo[l]) continue;
        double cost = p->expert_sensitivity[l] * (c->eres[l][experts[l] - 1] - c->eres[l][experts[l]]) / (double)p->expert_step_params[l];
        if (cost < *best) { *best = cost; el = l; }
    }
    return el;
}

// The width part of a plan: greedy by estimated KL per parameter over FFN steps of `round`
// units, head steps (one query head fewer per KV group) and expert steps (one expert fewer),
// until `budget` parameters are removed. widths, groups and experts get every layer's FFN width,
// heads per group and experts, *removed and *kl the parameters removed and the estimated KL;
// false when the guards stop it short of the budget.
static bool ffn_greedy(const ffn_ctx *c, int64_t budget, int64_t *widths, int64_t *groups, int64_t *experts, int64_t *removed, double *kl) {
    const fk_fold_plan *p = c->p;
    *removed = 0;
    *kl = 0;
    for (int l = 0; l < c->L; l++) { widths[l] = p->ffn_before[l]; groups[l] = p->group_before[l]; experts[l] = p->experts_before[l]; }
    while (*removed < budget) {
        if (c->uniform) {  // one width for every layer: step all foldable layers together
            bool can = true;
            for (int l = 0; l < c->L; l++) can = can && (!p->foldable[l] || next_width(widths[l], c->lo[l], c->round) >= 0);
            if (!can) return false;
            for (int l = 0; l < c->L; l++) {
                if (!p->foldable[l]) continue;
                int64_t n = next_width(widths[l], c->lo[l], c->round);
                *removed += (widths[l] - n) * p->unit_params[l];
                *kl += p->sensitivity[l] * (c->resid[l][n] - c->resid[l][widths[l]]);
                widths[l] = n;
            }
            continue;
        }
        double best = INFINITY;
        int bl = -1;
        for (int l = 0; l < c->L; l++) {
            if (!p->foldable[l] || c->excluded[l]) continue;
            int64_t w = widths[l], n = next_width(w, c->lo[l], c->round);
            if (n < 0) continue;
            double cost = p->sensitivity[l] * (c->resid[l][n] - c->resid[l][w]) / (double)((w - n) * p->unit_params[l]);
            if (cost < best) { best = cost; bl = l; }
        }
        int hl = -1;  // a head step: one query head fewer in every KV group
        for (int l = 0; l < c->L; l++) {
            if (!c->hres || !c->hres[l] || c->excluded[l] || groups[l] - 1 < c->hlo[l]) continue;
            double cost = p->head_sensitivity[l] * (c->hres[l][groups[l] - 1] - c->hres[l][groups[l]]) / (double)p->head_step_params[l];
            if (cost < best) { best = cost; hl = l; }
        }
        int el = expert_step(c, experts, &best);
        if (el >= 0) {
            *removed += p->expert_step_params[el];
            *kl += p->expert_sensitivity[el] * (c->eres[el][experts[el] - 1] - c->eres[el][experts[el]]);
            experts[el]--;
            continue;
        }
        if (hl >= 0) {
            *removed += p->head_step_params[hl];
            *kl += p->head_sensitivity[hl] * (c->hres[hl][groups[hl] - 1] - c->hres[hl][groups[hl]]);
            groups[hl]--;
            continue;
        }
        if (bl < 0) return false;
        int64_t n = next_width(widths[bl], c->lo[bl], c->round);
        *removed += (widths[bl] - n) * p->unit_params[bl];
        *kl += p->sensitivity[bl] * (c->resid[bl][n] - c->resid[bl][widths[bl]]);
        widths[bl] = n;
    }
    return true;
}

// The inputs fk_fold_plan_make refuses, with the reason.
static fk_status plan_check(const fk_model *m, const fk_analysis *a, const fk_fold_opts *o) {
    const fk_config *c = &m->cfg;
    int L = (int)c->n_layer;
    if (a->n_layer != L) return fk_error(FK_ERR_ARG, "fold: the analysis has %d layers, the model %d (analyse this model)", a->n_layer, L);
    for (int l = 0; l < L; l++)
        if (a->ffn[l] != c->ffn[l]) return fk_error(FK_ERR_ARG, "fold: the analysis has FFN width %lld in layer %d, the model %lld", (long long)a->ffn[l], l, (long long)c->ffn[l]);
    if (!(o->budget > 0 && o->budget < 1)) return fk_error(FK_ERR_ARG, "fold: budget %g, expected a fraction in (0, 1)", o->budget);
    if (o->round < 1 || !(o->min_width >= 0 && o->min_width <= 1)) return fk_error(FK_ERR_ARG, "fold: round %d / min width %g", o->round, o->min_width);
    if (!o->ffn_ops && !o->layer_ops && !o->head_ops && !o->expert_ops)
        return fk_error(FK_ERR_ARG, "fold: no operation allowed (FFN, head, expert and layer operations all off)");
    if (c->n_expert > 0) {
        if (o->uniform)
            return fk_error(FK_ERR_ARG, "fold: --uniform is not implemented for mixture-of-experts models (their MoE layers have no one FFN width)");
        for (int l = 0; l < L; l++)
            if ((a->experts ? a->experts[l] : 0) != fk_config_experts(c, l))
                return fk_error(FK_ERR_ARG, "fold: the analysis has %lld experts in layer %d, the model %lld (analyse this model)",
                                (long long)(a->experts ? a->experts[l] : 0), l, (long long)fk_config_experts(c, l));
    }
    return FK_OK;
}

// The plan before anything is chosen: every layer as it is, the scope and the budget.
static void plan_init(const fk_model *m, const fk_fold_opts *o, fk_fold_plan *p) {
    const fk_config *c = &m->cfg;
    int L = (int)c->n_layer;
    int64_t KV = c->n_kv_head, hd = c->head_dim;
    p->n_layer = L;
    p->scope_params = fk_fold_scope_params(m, o->scope);
    for (int l = 0; l < L; l++) {
        p->ffn_before[l] = p->ffn_after[l] = c->ffn[l];
        p->unit_params[l] = c->ffn[l] > 0 ? ffn_params(m, l) / c->ffn[l] : 0;  // (an MoE layer may have no dense FFN)
        p->foldable[l] = o->ffn_ops && c->ffn[l] > 0 && (o->fold_edges || o->uniform || (l > 0 && l < L - 1));
        int64_t E = fk_config_experts(c, l);
        p->experts_before[l] = p->experts_after[l] = E;
        p->expert_step_params[l] = fk_expert_params(c);
        p->expert_foldable[l] = o->expert_ops && E > c->n_expert_used && (o->fold_edges || (l > 0 && l < L - 1));
        p->group_before[l] = p->group_after[l] = fk_config_heads(c, l) / KV;
        p->head_step_params[l] = KV * (2 * hd * c->d_model + (c->bias_qkv ? hd : 0));
    }
    p->budget_params = (int64_t)ceil(o->budget * (double)p->scope_params);
}

// Per layer, what the choice works from: the relative residual of the FFN at each width and of
// the attention at each number of heads per group (NULL: not folded), and the guards' floors.
typedef struct {
    double *resid[FK_MAX_LAYERS], *hres[FK_MAX_LAYERS], *eres[FK_MAX_LAYERS];
    int64_t lo[FK_MAX_LAYERS], hlo[FK_MAX_LAYERS], elo[FK_MAX_LAYERS];  // fewest FFN units / heads per group / experts allowed
} plan_curves;

// Experts: the relative residual of merging each MoE layer's experts to every count down to the
// guard, and one KL probe per layer (merged to the probe count) for its sensitivity.
static fk_status probe_experts(fk_model *m, const fk_analysis *a, const fk_kl_probe *probe, const fk_fold_opts *o, fk_fold_plan *p,
                               plan_curves *cv) {
    for (int l = 0; l < p->n_layer; l++) {
        int64_t E = p->experts_before[l], K = m->cfg.n_expert_used;
        if (!p->expert_foldable[l]) continue;
        cv->elo[l] = (int64_t)ceil(o->min_width * (double)E);
        if (cv->elo[l] < K) cv->elo[l] = K;
        if (cv->elo[l] >= E) { p->expert_foldable[l] = false; continue; }
        int32_t *labels = malloc((size_t)E * sizeof *labels);
        if (!labels || !(cv->eres[l] = calloc((size_t)(E + 1), sizeof(double)))) { free(labels); return fk_error(FK_ERR_NOMEM, "fold: out of memory"); }
        fk_status st = FK_OK;
        for (int64_t k = E - 1; k >= cv->elo[l] && st == FK_OK; k--) {
            st = fk_expert_groups(a, l, (int)k, labels);
            if (st == FK_OK) cv->eres[l][k] = fmax(fk_expert_merge_residual(a, l, labels, (int)k), cv->eres[l][k + 1]);  // (kept monotone)
        }
        int64_t k = (int64_t)llround((1 - fmin(o->budget, 0.9)) * (double)E);
        if (k >= E) k = E - 1;
        if (k < cv->elo[l]) k = cv->elo[l];
        while (k > cv->elo[l] && !(cv->eres[l][k] > 1e-12)) k--;  // a free merge (duplicates) measures no sensitivity: probe past it
        fk_model t;
        if (st == FK_OK) st = fk_expert_groups(a, l, (int)k, labels);
        if (st == FK_OK) st = fk_fold_experts(m, l, labels, (int)k, a->expert_load[l], &t);
        free(labels);
        FK_TRY(st);
        st = fk_kl_probe_eval(&t, probe, &p->expert_probe_kl[l]);
        fk_model_free(&t);
        FK_TRY(st);
        p->expert_probe[l] = k;
        double r = cv->eres[l][k] - cv->eres[l][E];
        if (r > 1e-12) {
            p->expert_sensitivity[l] = p->expert_probe_kl[l] / r;
        } else if (p->expert_probe_kl[l] > 1e-9) {  // the residual saw no cost the probe measured: count steps instead
            for (int64_t j = cv->elo[l]; j <= E; j++) cv->eres[l][j] = (double)(E - j) / (double)(E - k);
            p->expert_sensitivity[l] = p->expert_probe_kl[l];
        }
    }
    return FK_OK;
}

// Heads: elimination within KV groups and one KL probe (one head fewer per group) per layer.
static fk_status probe_heads(fk_model *m, const fk_analysis *a, const fk_kl_probe *probe, const fk_fold_opts *o, fk_fold_plan *p,
                             plan_curves *cv) {
    int L = p->n_layer;
    int64_t KV = m->cfg.n_kv_head;
    for (int l = 0; l < L; l++) {
        int64_t G = p->group_before[l];
        if (G < 2 || (!o->fold_edges && (l == 0 || l == L - 1))) continue;
        cv->hlo[l] = (int64_t)ceil(o->min_width * (double)G);
        if (cv->hlo[l] < 1) cv->hlo[l] = 1;
        if (cv->hlo[l] >= G) continue;
        p->head_order[l] = malloc((size_t)(G * KV) * sizeof(int32_t));
        cv->hres[l] = malloc((size_t)(G + 1) * sizeof(double));
        if (!p->head_order[l] || !cv->hres[l]) return fk_error(FK_ERR_NOMEM, "fold: out of memory");
        FK_TRY(fk_head_elimination(m, l, a->att_gram[l], o->ridge, p->head_order[l], cv->hres[l]));
        fk_model t;
        FK_TRY(fk_fold_heads(m, l, p->head_order[l] + KV, (int)((G - 1) * KV), a->att_gram[l], o->ridge, &t));
        fk_status st = fk_kl_probe_eval(&t, probe, &p->head_probe_kl[l]);
        fk_model_free(&t);
        FK_TRY(st);
        double r = cv->hres[l][G - 1] - cv->hres[l][G];
        p->head_sensitivity[l] = r > 1e-12 ? p->head_probe_kl[l] / r : 0;
    }
    return FK_OK;
}

// FFN: elimination order and residual curve per foldable layer, one KL probe for its sensitivity.
static fk_status probe_ffn(fk_model *m, const fk_analysis *a, const fk_kl_probe *probe, const fk_fold_opts *o, fk_fold_plan *p,
                           plan_curves *cv) {
    int64_t round = o->round;
    for (int l = 0; l < p->n_layer; l++) {
        if (!p->foldable[l]) continue;
        int64_t F = m->cfg.ffn[l];
        cv->lo[l] = round_up((int64_t)ceil(o->min_width * (double)F), round);
        if (cv->lo[l] < round) cv->lo[l] = round;
        p->order[l] = malloc((size_t)F * sizeof(int32_t));
        cv->resid[l] = malloc((size_t)(F + 1) * sizeof(double));
        if (!p->order[l] || !cv->resid[l]) return fk_error(FK_ERR_NOMEM, "fold: out of memory");
        FK_TRY(fk_ffn_elimination(m, l, a->ffn_gram[l], o->ridge, p->order[l], cv->resid[l]));
        int64_t w = round_up((int64_t)llround((1 - fmin(o->budget, 0.9)) * (double)F), round);
        if (w >= F) w = next_width(F, cv->lo[l], round);
        if (w < cv->lo[l]) w = cv->lo[l];
        if (w < 1 || w >= F) { p->foldable[l] = false; continue; }
        fk_model t;
        FK_TRY(fk_fold_ffn_keep(m, l, p->order[l] + (F - w), (int)w, a->ffn_gram[l], o->ridge, &t));
        fk_status st = fk_kl_probe_eval(&t, probe, &p->probe_kl[l]);
        fk_model_free(&t);
        FK_TRY(st);
        p->probe_width[l] = w;
        double r = cv->resid[l][w] - cv->resid[l][F];
        p->sensitivity[l] = r > 1e-12 ? p->probe_kl[l] / r : 0;
    }
    return FK_OK;
}

// Layer operations: the best of drop / average / LaCo at each place (by measured KL per
// parameter), into cand[0 .. *n_cand).
static fk_status layer_candidates(const fk_model *m, const fk_kl_probe *probe, const fk_fold_opts *o, fk_layer_op *cand, int *n_cand) {
    const fk_config *c = &m->cfg;
    int L = (int)c->n_layer, first = o->fold_edges ? 0 : 1, last = o->fold_edges ? L - 1 : L - 2;
    *n_cand = 0;
    for (int l = first; l <= last; l++) {
        fk_layer_op best = {.kl = INFINITY};
        fk_layer_op tries[3] = {{FK_LAYER_DROP, l, 1, 0, layer_params(m, l)}, {FK_LAYER_AVERAGE, l, 2, 0, 0}, {FK_LAYER_LACO, l, 3, 0, 0}};
        for (int k = 0; k < 3; k++) {
            fk_layer_op *t = &tries[k];
            if (l + t->span - 1 > last || L - (t->kind == FK_LAYER_DROP ? 1 : t->span - 1) < 1) continue;
            bool same = true;
            for (int j = 1; j < t->span; j++) same = same && c->ffn[l + j] == c->ffn[l] && fk_config_experts(c, l + j) == fk_config_experts(c, l);
            if (!same) continue;
            if (t->kind != FK_LAYER_DROP) {
                t->params = 0;
                for (int j = 1; j < t->span; j++) t->params += layer_params(m, l + j);
            }
            FK_TRY(probe_layer_op(m, probe, t));
            // per parameter, so that a LaCo merge of three competes fairly with a drop
            if (t->kl / (double)t->params < best.kl / (double)(best.params ? best.params : 1)) best = *t;
        }
        if (isfinite(best.kl)) cand[(*n_cand)++] = best;
    }
    return FK_OK;
}

// Layer operations first (fold.md §4): an operation is taken when it, plus the FFN plan for
// what is left of the budget, costs less estimated KL than the FFN plan without it; then the
// widths and heads for the rest. FK_ERR_ARG when the guards stop short of the budget.
static fk_status plan_choose(fk_fold_plan *p, const fk_fold_opts *o, const plan_curves *cv, bool head_ops, const fk_layer_op *cand,
                             int n_cand) {
    int L = p->n_layer;
    bool taken[FK_MAX_LAYERS] = {0}, touched[FK_MAX_LAYERS] = {0};
    int64_t removed = 0, ops_removed = 0;
    int64_t widths[FK_MAX_LAYERS], groups[FK_MAX_LAYERS], g2[FK_MAX_LAYERS], experts[FK_MAX_LAYERS], e2[FK_MAX_LAYERS];
    ffn_ctx fc = {p, (const double *const *)cv->resid, cv->lo, touched, o->round, o->uniform, L,
                  head_ops ? (const double *const *)cv->hres : NULL, cv->hlo, (const double *const *)cv->eres, cv->elo};
    double kl_now = 0;
    bool ok_now = ffn_greedy(&fc, p->budget_params, widths, groups, experts, &removed, &kl_now);
    for (;;) {
        int best = -1;
        double best_kl = ok_now ? kl_now : INFINITY;
        for (int k = 0; k < n_cand; k++) {
            const fk_layer_op *op = &cand[k];
            if (taken[k] || ops_removed + op->params > p->budget_params) continue;
            bool free_ = true;
            for (int j = 0; j < op->span; j++) free_ = free_ && !touched[op->layer + j];
            if (!free_) continue;
            for (int j = 0; j < op->span; j++) touched[op->layer + j] = true;
            int64_t w2[FK_MAX_LAYERS], r2;
            double kl2;
            bool ok2 = ffn_greedy(&fc, p->budget_params - ops_removed - op->params, w2, g2, e2, &r2, &kl2);
            for (int j = 0; j < op->span; j++) touched[op->layer + j] = false;
            if (ok2 && kl2 + op->kl < best_kl) { best_kl = kl2 + op->kl; best = k; }
        }
        if (best < 0) break;
        taken[best] = true;
        for (int j = 0; j < cand[best].span; j++) touched[cand[best].layer + j] = true;
        ops_removed += cand[best].params;
        p->ops[p->n_ops++] = cand[best];
        ok_now = ffn_greedy(&fc, p->budget_params - ops_removed, widths, groups, experts, &removed, &kl_now);
    }
    for (int l = 0; l < L; l++) { p->ffn_after[l] = widths[l]; p->group_after[l] = groups[l]; p->experts_after[l] = experts[l]; }
    removed += ops_removed;
    if (removed < p->budget_params)
        return fk_error(FK_ERR_ARG,
                        "fold: the budget (%lld parameters, %.1f%% of %lld) is more than the guards allow: at most %lld can go (each layer keeps >= %.0f%% of its "
                        "FFN width and experts%s; widths are multiples of %d)",
                        (long long)p->budget_params, 100 * o->budget, (long long)p->scope_params, (long long)removed, 100 * o->min_width,
                        o->fold_edges || o->uniform ? "" : ", the first and last layers are left alone", o->round);
    p->removed_params = removed;
    return FK_OK;
}

// The chosen plan's estimates (per layer and in all), its layer operations in ascending order.
static void plan_estimates(fk_fold_plan *p, const plan_curves *cv) {
    for (int i = 1; i < p->n_ops; i++)
        for (int j = i; j > 0 && p->ops[j].layer < p->ops[j - 1].layer; j--) { fk_layer_op t = p->ops[j]; p->ops[j] = p->ops[j - 1]; p->ops[j - 1] = t; }
    for (int l = 0; l < p->n_layer; l++) {
        if (!p->order[l]) continue;
        p->resid[l] = cv->resid[l][p->ffn_after[l]];
        p->est_kl[l] = p->sensitivity[l] * (cv->resid[l][p->ffn_after[l]] - cv->resid[l][p->ffn_before[l]]);
        p->est_kl_total += p->est_kl[l];
    }
    for (int l = 0; l < p->n_layer; l++) {
        if (!cv->eres[l]) continue;
        p->expert_est_kl[l] = p->expert_sensitivity[l] * (cv->eres[l][p->experts_after[l]] - cv->eres[l][p->experts_before[l]]);
        p->est_kl_total += p->expert_est_kl[l];
    }
    for (int l = 0; l < p->n_layer; l++) {
        if (!cv->hres[l]) continue;
        p->head_est_kl[l] = p->head_sensitivity[l] * (cv->hres[l][p->group_after[l]] - cv->hres[l][p->group_before[l]]);
        p->est_kl_total += p->head_est_kl[l];
    }
    for (int i = 0; i < p->n_ops; i++) p->est_kl_total += p->ops[i].kl;
}

fk_status fk_fold_plan_make(fk_model *m, const fk_analysis *a, const fk_kl_probe *probe, const fk_fold_opts *o, fk_fold_plan *p) {
    memset(p, 0, sizeof *p);
    FK_TRY(plan_check(m, a, o));
    plan_init(m, o, p);
    plan_curves cv;
    memset(&cv, 0, sizeof cv);
    bool head_ops = o->head_ops && !o->uniform && o->scope != FK_SCOPE_FFN;
    fk_layer_op cand[FK_MAX_LAYERS];
    int n_cand = 0;
    fk_status st = head_ops ? probe_heads(m, a, probe, o, p, &cv) : FK_OK;
    if (st == FK_OK) st = probe_ffn(m, a, probe, o, p, &cv);
    if (st == FK_OK) st = probe_experts(m, a, probe, o, p, &cv);
    if (st == FK_OK && o->layer_ops && !o->uniform) st = layer_candidates(m, probe, o, cand, &n_cand);
    if (st == FK_OK) st = plan_choose(p, o, &cv, head_ops, cand, n_cand);
    if (st == FK_OK) plan_estimates(p, &cv);
    for (int l = 0; l < FK_MAX_LAYERS; l++) { free(cv.resid[l]); free(cv.hres[l]); free(cv.eres[l]); }
    if (st != FK_OK) fk_fold_plan_free(p);
    return st;
}

fk_status fk_fold_plan_apply_layers(const fk_model *m, const fk_fold_plan *p, fk_model *out) {
    int L = (int)m->cfg.n_layer;
    if (L != p->n_layer) return fk_error(FK_ERR_ARG, "fold: the plan is for %d layers, the model has %d", p->n_layer, L);
    double *coef = malloc((size_t)L * L * sizeof *coef);
    if (!coef) return fk_error(FK_ERR_NOMEM, "fold: out of memory");
    int n = ops_coef(L, p->ops, p->n_ops, coef);
    fk_status st = fk_fold_layers(m, n, coef, out);
    free(coef);
    return st;
}

// Merges MoE layer l's experts into k groups (fk_expert_groups), weighted by their load.
static fk_status fold_layer_experts(const fk_model *m, int l, int k, const fk_analysis *a, fk_model *out) {
    int32_t *labels = malloc((size_t)a->experts[l] * sizeof *labels);
    if (!labels) return fk_error(FK_ERR_NOMEM, "fold: out of memory");
    fk_status st = fk_expert_groups(a, l, k, labels);
    if (st == FK_OK) st = fk_fold_experts(m, l, labels, k, a->expert_load[l], out);
    free(labels);
    return st;
}

fk_status fk_fold_plan_apply_ffn(const fk_model *m, const fk_fold_plan *p, const fk_analysis *a, double ridge, fk_model *out) {
    memset(out, 0, sizeof *out);
    int L = (int)m->cfg.n_layer;
    if (L != p->n_layer) return fk_error(FK_ERR_ARG, "fold: the plan is for %d layers, the model has %d", p->n_layer, L);
    fk_model cur = *m;  // borrowed until the first fold
    bool owned = false;
    int64_t KV = m->cfg.n_kv_head;
    for (int l = 0; l < L; l++) {
        for (int kind = 0; kind < 3; kind++) {  // FFN units, heads, experts
            fk_model next;
            fk_status st;
            if (kind == 2) {
                if (p->experts_after[l] == p->experts_before[l]) continue;
                if (p->experts_before[l] != fk_config_experts(&m->cfg, l) || !a->experts || a->experts[l] != p->experts_before[l])
                    return fk_error(FK_ERR_ARG, "fold: the plan's layer %d does not match the model's experts", l);
                st = fold_layer_experts(&cur, l, (int)p->experts_after[l], a, &next);
            } else if (kind == 0) {
                if (p->ffn_after[l] == p->ffn_before[l]) continue;
                if (!p->order[l] || p->ffn_before[l] != m->cfg.ffn[l]) return fk_error(FK_ERR_ARG, "fold: the plan's layer %d does not match the model", l);
                int64_t F = p->ffn_before[l], w = p->ffn_after[l];
                st = fk_fold_ffn_keep(&cur, l, p->order[l] + (F - w), (int)w, a->ffn_gram[l], ridge, &next);
            } else {
                if (p->group_after[l] == p->group_before[l]) continue;
                if (!p->head_order[l] || p->group_before[l] * KV != fk_config_heads(&m->cfg, l))
                    return fk_error(FK_ERR_ARG, "fold: the plan's layer %d does not match the model's heads", l);
                int64_t H = p->group_before[l] * KV, k = p->group_after[l] * KV;
                st = fk_fold_heads(&cur, l, p->head_order[l] + (H - k), (int)k, a->att_gram[l], ridge, &next);
            }
            if (owned) fk_model_free(&cur);
            if (st != FK_OK) return fk_error_context(st, "fold: layer %d", l);
            cur = next;
            owned = true;
        }
    }
    if (owned) { *out = cur; return FK_OK; }
    // nothing to fold: a copy
    return fk_model_clone(out, m);
}

char *fk_fold_plan_json(const fk_fold_plan *p) {
    cJSON *j = cJSON_CreateObject();
    cJSON_AddNumberToObject(j, "scope_params", (double)p->scope_params);
    cJSON_AddNumberToObject(j, "budget_params", (double)p->budget_params);
    cJSON_AddNumberToObject(j, "removed_params", (double)p->removed_params);
    cJSON_AddNumberToObject(j, "removed_fraction", p->scope_params ? (double)p->removed_params / (double)p->scope_params : 0);
    cJSON_AddNumberToObject(j, "estimated_kl", p->est_kl_total);
    cJSON *ops = cJSON_AddArrayToObject(j, "layer_ops");
    for (int i = 0; i < p->n_ops; i++) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "op", fk_layer_op_name(p->ops[i].kind));
        cJSON_AddNumberToObject(o, "layer", p->ops[i].layer);
        cJSON_AddNumberToObject(o, "span", p->ops[i].span);
        cJSON_AddNumberToObject(o, "kl", p->ops[i].kl);
        cJSON_AddNumberToObject(o, "params", (double)p->ops[i].params);
        cJSON_AddItemToArray(ops, o);
    }
    cJSON *ls = cJSON_AddArrayToObject(j, "layers");
    for (int l = 0; l < p->n_layer; l++) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "layer", l);
        cJSON_AddNumberToObject(o, "ffn_before", (double)p->ffn_before[l]);
        cJSON_AddNumberToObject(o, "ffn_after", (double)p->ffn_after[l]);
        cJSON_AddBoolToObject(o, "foldable", p->foldable[l]);
        cJSON_AddNumberToObject(o, "heads_per_group_before", (double)p->group_before[l]);
        cJSON_AddNumberToObject(o, "heads_per_group_after", (double)p->group_after[l]);
        if (p->experts_before[l] > 0) {
            cJSON_AddNumberToObject(o, "experts_before", (double)p->experts_before[l]);
            cJSON_AddNumberToObject(o, "experts_after", (double)p->experts_after[l]);
        }
        if (p->expert_probe[l] > 0) {
            cJSON_AddNumberToObject(o, "expert_probe", (double)p->expert_probe[l]);
            cJSON_AddNumberToObject(o, "expert_probe_kl", p->expert_probe_kl[l]);
            cJSON_AddNumberToObject(o, "expert_sensitivity", p->expert_sensitivity[l]);
            cJSON_AddNumberToObject(o, "expert_estimated_kl", p->expert_est_kl[l]);
        }
        if (p->head_order[l]) {
            cJSON_AddNumberToObject(o, "head_probe_kl", p->head_probe_kl[l]);
            cJSON_AddNumberToObject(o, "head_sensitivity", p->head_sensitivity[l]);
            cJSON_AddNumberToObject(o, "head_estimated_kl", p->head_est_kl[l]);
        }
        if (p->order[l]) {
            cJSON_AddNumberToObject(o, "relative_residual", p->resid[l]);
            cJSON_AddNumberToObject(o, "probe_width", (double)p->probe_width[l]);
            cJSON_AddNumberToObject(o, "probe_kl", p->probe_kl[l]);
            cJSON_AddNumberToObject(o, "sensitivity", p->sensitivity[l]);
            cJSON_AddNumberToObject(o, "estimated_kl", p->est_kl[l]);
            int64_t F = p->ffn_before[l], w = p->ffn_after[l];
            cJSON *keep = cJSON_AddArrayToObject(o, "keep");
            for (int64_t i = F - w; i < F; i++) cJSON_AddItemToArray(keep, cJSON_CreateNumber(p->order[l][i]));
        }
        cJSON_AddItemToArray(ls, o);
    }
    char *s = cJSON_Print(j);
    cJSON_Delete(j);
    return s;
}

void fk_fold_plan_free(fk_fold_plan *p) {
    for (int l = 0; l < FK_MAX_LAYERS; l++) { free(p->order[l]); free(p->head_order[l]); }
    memset(p, 0, sizeof *p);
}
