// Baselines at a parameter budget (fusekit/fold.h, fold.md §6): magnitude pruning of FFN
// channels, FLAP's fluctuation pruning with bias compensation, ShortGPT's layer drop.
#include "fold/chain.h"
#include "fusekit/fold.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

int64_t fk_fold_scope_params(const fk_model *m, fk_fold_scope scope) {
    unsigned mask = scope == FK_SCOPE_FFN ? FK_PARAMS_FFN_UNITS | FK_PARAMS_EXPERTS : scope == FK_SCOPE_BLOCKS ? FK_PARAMS_BLOCKS : FK_PARAMS_ALL;
    return fk_model_count_params(m, mask, FK_PARAMS_ANY_LAYER);
}

void fk_prune_defaults(fk_prune_opts *o) {
    *o = (fk_prune_opts){FK_PRUNE_NONE, 0.3, FK_SCOPE_FFN, 0, 4, 65536, 0};
}

typedef struct { double s; int32_t j; } scored;
static int by_score(const void *a, const void *b) {
    const scored *x = a, *y = b;
    return x->s < y->s ? -1 : x->s > y->s ? 1 : x->j - y->j;
}

// Folds every layer to the units with keep flag set (in index order), FLAP compensation with means.
static fk_status prune_layers(const fk_model *m, const fk_analysis *a, char **keep, bool compensate, fk_model *out) {
    fk_model cur = *m;
    bool owned = false;
    fk_status st = FK_OK;
    for (int l = 0; l < m->cfg.n_layer && st == FK_OK; l++) {
        int64_t F = m->cfg.ffn[l];
        int32_t *idx = malloc((size_t)F * sizeof *idx);
        if (!idx) { st = fk_error(FK_ERR_NOMEM, "prune: out of memory"); break; }
        int k = 0;
        for (int64_t f = 0; f < F; f++)
            if (keep[l][f]) idx[k++] = (int32_t)f;
        if (k < F) {
            fk_model next;
            st = fk_prune_ffn(&cur, l, idx, k, compensate ? a->ffn_mean[l] : NULL, &next);
            if (owned) fk_model_free(&cur);
            if (st == FK_OK) { cur = next; owned = true; } else owned = false;
        }
        free(idx);
    }
    if (st != FK_OK) { if (owned) fk_model_free(&cur); return st; }
    if (owned) { *out = cur; return FK_OK; }
    return fk_model_clone(out, m);
}

// Parameters removed when every layer loses ceil(frac * F_l) channels.
static int64_t magnitude_removed(const fk_config *c, const int64_t *unit, double frac) {
    int64_t r = 0;
    for (int l = 0; l < c->n_layer; l++) r += (int64_t)ceil(frac * (double)c->ffn[l] - 1e-9) * unit[l];
    return r;
}

// Scores layer l's F channels into s (s[f].j = f): magnitude, the norm of the channel's
// weights in and out; else its activation variance times its output weights' squared norm,
// z-scored within the layer (FLAP) so one global threshold compares layers.
static void score_channels(const fk_model *m, const fk_analysis *a, fk_prune_method method, int l, scored *s) {
    const fk_config *c = &m->cfg;
    int64_t C = c->d_model, F = c->ffn[l];
    const float *U = m->w + m->layer[l].up_w, *D = m->w + m->layer[l].down_w;
    int blocks = fk_config_gated(c) ? 2 : 1;
    double mean = 0, sq = 0;
    for (int64_t f = 0; f < F; f++) {
        double dn = 0, v;
        for (int64_t r = 0; r < C; r++) dn += (double)D[r * F + f] * D[r * F + f];
        if (method == FK_PRUNE_MAGNITUDE) {
            double un = 0;
            for (int b = 0; b < blocks; b++)
                for (int64_t i = 0; i < C; i++) { double w = U[((int64_t)b * F + f) * C + i]; un += w * w; }
            v = sqrt(un + dn);
        } else {
            double mu = a->ffn_mean[l][f], var = a->ffn_gram[l][f * F + f] / (double)a->tokens - mu * mu;
            v = (var > 0 ? var : 0) * dn;
        }
        s[f] = (scored){v, (int32_t)f};
        mean += v;
        sq += v * v;
    }
    if (method == FK_PRUNE_FLAP) {
        mean /= (double)F;
        double sd = sqrt(fmax(sq / (double)F - mean * mean, 0));
        for (int64_t f = 0; f < F; f++) s[f].s = sd > 0 ? (s[f].s - mean) / sd : 0;
    }
}

// Magnitude: one fraction for every layer, the smallest that meets the budget (bisection;
// removed(frac) is monotone); each layer drops its lowest-scored channels (all: the scores,
// layer l's from base[l]; unit[l]: parameters per channel).
static fk_status drop_by_fraction(const fk_config *c, scored *all, const int64_t *base, const int64_t *unit, int64_t budget, char **keep,
                                  int64_t *removed) {
    double lo = 0, hi = 1;
    for (int it = 0; it < 60; it++) {
        double mid = 0.5 * (lo + hi);
        if (magnitude_removed(c, unit, mid) >= budget) hi = mid; else lo = mid;
    }
    for (int l = 0; l < c->n_layer; l++) {
        int64_t F = c->ffn[l], d = (int64_t)ceil(hi * (double)F - 1e-9);
        if (d >= F) return fk_error(FK_ERR_ARG, "prune: the budget (%lld parameters) needs every FFN channel of layer %d", (long long)budget, l);
        qsort(all + base[l], (size_t)F, sizeof *all, by_score);
        for (int64_t i = 0; i < d; i++) keep[l][all[base[l] + i].j] = 0;
        *removed += d * unit[l];
    }
    return FK_OK;
}

// FLAP: one global order of the standardised scores; channels go lowest first until the
// budget is met, every layer keeping one.
static fk_status drop_by_global_order(const fk_config *c, const scored *all, const int64_t *base, const int64_t *unit, int64_t total_units,
                                      int64_t budget, char **keep, int64_t *removed) {
    int L = (int)c->n_layer;
    int32_t *layer_of = malloc((size_t)total_units * sizeof *layer_of);
    scored *g = malloc((size_t)total_units * sizeof *g);  // indices of `all`, sorted by score
    int64_t *left = malloc((size_t)L * sizeof *left);
    fk_status st = layer_of && g && left ? FK_OK : fk_error(FK_ERR_NOMEM, "prune: out of memory");
    if (st == FK_OK) {
        for (int l = 0; l < L; l++)
            for (int64_t f = 0; f < c->ffn[l]; f++) layer_of[base[l] + f] = l;
        for (int64_t i = 0; i < total_units; i++) g[i] = (scored){all[i].s, (int32_t)i};
        qsort(g, (size_t)total_units, sizeof *g, by_score);
        for (int l = 0; l < L; l++) left[l] = c->ffn[l];
        for (int64_t i = 0; i < total_units && *removed < budget; i++) {
            int l = layer_of[g[i].j];
            if (left[l] <= 1) continue;
            keep[l][all[g[i].j].j] = 0;
            left[l]--;
            *removed += unit[l];
        }
        if (*removed < budget) st = fk_error(FK_ERR_ARG, "prune: the budget (%lld parameters) needs more than every FFN channel but one per layer", (long long)budget);
    }
    free(left);
    free(g);
    free(layer_of);
    return st;
}

static fk_status prune_channels(const fk_model *m, const fk_analysis *a, fk_prune_method method, int64_t budget, fk_model *out, int64_t *removed) {
    const fk_config *c = &m->cfg;
    int L = (int)c->n_layer;
    int64_t total_units = 0;
    for (int l = 0; l < L; l++) total_units += c->ffn[l];
    char *keep[FK_MAX_LAYERS] = {0};
    scored *all = malloc((size_t)total_units * sizeof *all);
    int64_t *unit = malloc((size_t)L * sizeof *unit), *base = malloc((size_t)L * sizeof *base);
    fk_status st = all && unit && base ? FK_OK : fk_error(FK_ERR_NOMEM, "prune: out of memory");
    int64_t n = 0;
    *removed = 0;
    for (int l = 0; l < L && st == FK_OK; l++) {
        int64_t F = c->ffn[l];
        unit[l] = fk_model_count_params(m, FK_PARAMS_FFN_UNITS, l) / F;
        base[l] = n;
        keep[l] = malloc((size_t)F);
        if (!keep[l]) { st = fk_error(FK_ERR_NOMEM, "prune: out of memory"); break; }
        memset(keep[l], 1, (size_t)F);
        score_channels(m, a, method, l, all + n);
        n += F;
    }
    if (st == FK_OK && method == FK_PRUNE_MAGNITUDE) st = drop_by_fraction(c, all, base, unit, budget, keep, removed);
    else if (st == FK_OK) st = drop_by_global_order(c, all, base, unit, total_units, budget, keep, removed);
    if (st == FK_OK) st = prune_layers(m, a, keep, method == FK_PRUNE_FLAP, out);
    for (int l = 0; l < L; l++) free(keep[l]);
    free(all); free(unit); free(base);
    return st;
}

// Keeps in every MoE layer the experts flagged in keep[l] (in index order).
static fk_status keep_experts(const fk_model *m, char **keep, fk_model *out) {
    fk_model cur = *m;
    bool owned = false;
    fk_status st = FK_OK;
    for (int l = 0; l < m->cfg.n_layer && st == FK_OK; l++) {
        int64_t E = fk_config_experts(&m->cfg, l);
        int32_t idx[FK_LIM_EXPERTS];
        int k = 0;
        for (int64_t e = 0; e < E; e++)
            if (keep[l][e]) idx[k++] = (int32_t)e;
        if (k == E) continue;
        fk_model next;
        st = fk_chain_step(&cur, &owned, fk_prune_experts(&cur, l, idx, k, &next), &next);
    }
    return fk_chain_end(m, &cur, owned, st, out);
}

// Expert pruning: the least used experts (a->expert_load, one global order: each layer's loads
// sum to 1) go first until the budget is met, every MoE layer keeping n_expert_used.
static fk_status prune_experts(const fk_model *m, const fk_analysis *a, int64_t budget, fk_model *out, int64_t *removed) {
    const fk_config *c = &m->cfg;
    int L = (int)c->n_layer;
    if (c->n_expert == 0 || !a->experts) return fk_error(FK_ERR_ARG, "prune: expert pruning needs a mixture-of-experts model");
    int64_t n = 0, step = fk_expert_params(c), left[FK_MAX_LAYERS];
    for (int l = 0; l < L; l++) n += a->experts[l];
    scored *s = malloc((size_t)n * sizeof *s);
    int32_t *layer_of = malloc((size_t)n * sizeof *layer_of);
    char *keep[FK_MAX_LAYERS] = {0};
    fk_status st = s && layer_of ? FK_OK : fk_error(FK_ERR_NOMEM, "prune: out of memory");
    int64_t i = 0;
    for (int l = 0; l < L && st == FK_OK; l++) {
        left[l] = a->experts[l];
        if (!(keep[l] = malloc((size_t)(left[l] + 1)))) st = fk_error(FK_ERR_NOMEM, "prune: out of memory");
        for (int64_t e = 0; st == FK_OK && e < left[l]; e++, i++) {
            keep[l][e] = 1;
            s[i] = (scored){a->expert_load[l][e], (int32_t)e};
            layer_of[i] = l;
        }
    }
    // one order: by load, then layer, then expert (qsort over indices into s)
    scored *g = st == FK_OK ? malloc((size_t)n * sizeof *g) : NULL;
    if (st == FK_OK && !g) st = fk_error(FK_ERR_NOMEM, "prune: out of memory");
    for (int64_t j = 0; st == FK_OK && j < n; j++) g[j] = (scored){s[j].s, (int32_t)j};
    if (st == FK_OK) qsort(g, (size_t)n, sizeof *g, by_score);
    for (int64_t j = 0; st == FK_OK && j < n && *removed < budget; j++) {
        int l = layer_of[g[j].j];
        if (left[l] <= c->n_expert_used) continue;
        keep[l][s[g[j].j].j] = 0;
        left[l]--;
        *removed += step;
    }
    if (st == FK_OK && *removed < budget)
        st = fk_error(FK_ERR_ARG, "prune: the budget (%lld parameters) needs more experts than the %lld each token is routed to can spare "
                      "(at most %lld parameters)", (long long)budget, (long long)c->n_expert_used, (long long)*removed);
    if (st == FK_OK) st = keep_experts(m, keep, out);
    for (int l = 0; l < L; l++) free(keep[l]);
    free(s); free(g); free(layer_of);
    return st;
}

// a must describe m's layers and FFN widths.
static fk_status check_analysis(const fk_model *m, const fk_analysis *a) {
    int L = (int)m->cfg.n_layer;
    if (a->n_layer != L) return fk_error(FK_ERR_ARG, "prune: the analysis has %d layers, the model %d (analyse this model)", a->n_layer, L);
    for (int l = 0; l < L; l++)
        if (a->ffn[l] != m->cfg.ffn[l]) return fk_error(FK_ERR_ARG, "prune: the analysis has FFN width %lld in layer %d, the model %lld", (long long)a->ffn[l], l, (long long)m->cfg.ffn[l]);
    return FK_OK;
}

fk_status fk_prune(const fk_model *m, const fk_analysis *a, fk_prune_method method, double budget, fk_fold_scope scope, fk_model *out, int64_t *removed) {
    memset(out, 0, sizeof *out);
    *removed = 0;
    int L = (int)m->cfg.n_layer;
    if (!(budget > 0 && budget < 1)) return fk_error(FK_ERR_ARG, "prune: budget %g, expected a fraction in (0, 1)", budget);
    FK_TRY(check_analysis(m, a));
    int64_t target = (int64_t)ceil(budget * (double)fk_fold_scope_params(m, scope));
    if (method == FK_PRUNE_EXPERTS) return prune_experts(m, a, target, out, removed);
    if (method != FK_PRUNE_SHORTGPT && m->cfg.n_expert > 0)
        return fk_error(FK_ERR_ARG, "prune: %s pruning of FFN channels is not implemented for mixture-of-experts models (prune experts: method experts)",
                        method == FK_PRUNE_MAGNITUDE ? "magnitude" : "FLAP");
    if (method != FK_PRUNE_SHORTGPT) {
        if (scope != FK_SCOPE_FFN) {
            int64_t ffn = fk_fold_scope_params(m, FK_SCOPE_FFN);
            if (target >= ffn) return fk_error(FK_ERR_ARG, "prune: the budget (%lld parameters) is more than the FFN channels hold (%lld)", (long long)target, (long long)ffn);
        }
        return prune_channels(m, a, method, target, out, removed);
    }
    // ShortGPT: lowest Block Influence first
    scored *s = malloc((size_t)L * sizeof *s);
    double *coef = calloc((size_t)L * L, sizeof *coef);
    if (!s || !coef) { free(s); free(coef); return fk_error(FK_ERR_NOMEM, "prune: out of memory"); }
    for (int l = 0; l < L; l++) s[l] = (scored){a->bi[l], l};
    qsort(s, (size_t)L, sizeof *s, by_score);
    char drop[FK_MAX_LAYERS] = {0};
    int dropped = 0;
    for (int i = 0; i < L && *removed < target; i++) {
        if (dropped == L - 1) break;
        drop[s[i].j] = 1;
        dropped++;
        *removed += fk_model_count_params(m, FK_PARAMS_BLOCKS, s[i].j);
    }
    fk_status st = FK_OK;
    if (*removed < target) st = fk_error(FK_ERR_ARG, "prune: the budget (%lld parameters) needs every layer", (long long)target);
    int n = 0;
    for (int l = 0; l < L && st == FK_OK; l++)
        if (!drop[l]) coef[n++ * L + l] = 1;
    if (st == FK_OK) st = fk_fold_layers(m, n, coef, out);
    free(s);
    free(coef);
    return st;
}

// ---- Parameter counts (fk_prune_to_params)

// The order a channel method removes channels in: order[i] is a channel's layer-major index
// (base[l] + f; layer_of gives l), n entries. FLAP: its one order of standardised scores, one
// channel kept per layer. Magnitude: each layer's channels lowest first, layer l's i-th taken at
// fraction i / F_l (ties: the lower layer), so every uniform fraction of drop_by_fraction is a
// prefix and between two of them the layers differ by one channel at most.
typedef struct {
    int64_t *order, *base, n;
    int32_t *layer_of;
} chan_order;

static void chan_order_free(chan_order *o) {
    free(o->order); free(o->base); free(o->layer_of);
}

static fk_status chan_order_build(const fk_model *m, const fk_analysis *a, fk_prune_method method, chan_order *o) {
    const fk_config *c = &m->cfg;
    int L = (int)c->n_layer;
    int64_t total = 0, left[FK_MAX_LAYERS];
    for (int l = 0; l < L; l++) total += c->ffn[l];
    *o = (chan_order){malloc((size_t)total * sizeof *o->order), malloc((size_t)L * sizeof *o->base), 0, malloc((size_t)total * sizeof *o->layer_of)};
    scored *all = malloc((size_t)total * sizeof *all), *g = malloc((size_t)total * sizeof *g);
    fk_status st = all && g && o->order && o->base && o->layer_of ? FK_OK : fk_error(FK_ERR_NOMEM, "prune: out of memory");
    for (int l = 0, n = 0; l < L && st == FK_OK; n += (int)c->ffn[l], l++) {
        o->base[l] = n;
        left[l] = c->ffn[l];
        score_channels(m, a, method, l, all + n);
        if (method == FK_PRUNE_MAGNITUDE) qsort(all + n, (size_t)c->ffn[l], sizeof *all, by_score);
        for (int64_t i = 0; i < c->ffn[l]; i++) {
            o->layer_of[n + i] = l;
            g[n + i] = (scored){method == FK_PRUNE_MAGNITUDE ? (double)i / (double)c->ffn[l] : all[n + i].s, (int32_t)(n + i)};
        }
    }
    if (st == FK_OK) qsort(g, (size_t)total, sizeof *g, by_score);
    for (int64_t i = 0; st == FK_OK && i < total; i++) {
        int l = o->layer_of[g[i].j];
        if (left[l] <= 1) continue;
        left[l]--;
        o->order[o->n++] = o->base[l] + all[g[i].j].j;
    }
    free(all); free(g);
    if (st != FK_OK) chan_order_free(o);
    return st;
}

// m without the first n channels of o (FLAP: with its bias compensation).
static fk_status prune_prefix(const fk_model *m, const fk_analysis *a, const chan_order *o, int64_t n, bool compensate, fk_model *out) {
    int L = (int)m->cfg.n_layer;
    char *keep[FK_MAX_LAYERS] = {0};
    fk_status st = FK_OK;
    for (int l = 0; l < L && st == FK_OK; l++)
        if ((keep[l] = malloc((size_t)m->cfg.ffn[l]))) memset(keep[l], 1, (size_t)m->cfg.ffn[l]);
        else st = fk_error(FK_ERR_NOMEM, "prune: out of memory");
    for (int64_t i = 0; i < n && st == FK_OK; i++) {
        int l = o->layer_of[o->order[i]];
        keep[l][o->order[i] - o->base[l]] = 0;
    }
    if (st == FK_OK) st = prune_layers(m, a, keep, compensate, out);
    for (int l = 0; l < L; l++) free(keep[l]);
    return st;
}

// The shortest prefix of the method's channel order whose pruned model has at most `params`
// parameters, found by bisection on the count (it falls as the prefix grows; FLAP's compensation
// biases, added once, are counted).
static fk_status prune_channels_exact(const fk_model *m, const fk_analysis *a, fk_prune_method method, int64_t params, fk_model *out) {
    static const char *const names[] = {"magnitude", "FLAP"};
    chan_order o;
    FK_TRY(chan_order_build(m, a, method, &o));
    bool comp = method == FK_PRUNE_FLAP;
    int64_t lo = 0, hi = o.n, n_hi = 0;
    fk_model at_hi;
    fk_status st = prune_prefix(m, a, &o, hi, comp, &at_hi);
    if (st == FK_OK && (n_hi = fk_model_num_params(&at_hi)) > params) {
        st = fk_error(FK_ERR_ARG, "prune: %s pruning leaves at least %lld parameters (one FFN channel per layer), %lld asked", names[method], (long long)n_hi,
                      (long long)params);
        fk_model_free(&at_hi);
    }
    while (st == FK_OK && hi - lo > 1) {
        int64_t mid = lo + (hi - lo) / 2, n_mid;
        fk_model t;
        if ((st = prune_prefix(m, a, &o, mid, comp, &t)) != FK_OK) { fk_model_free(&at_hi); break; }
        if ((n_mid = fk_model_num_params(&t)) > params) { lo = mid; fk_model_free(&t); continue; }
        fk_model_free(&at_hi);
        at_hi = t; hi = mid; n_hi = n_mid;
    }
    if (st == FK_OK) *out = at_hi;
    chan_order_free(&o);
    return st;
}

// ShortGPT at a parameter count: whole layers in order of Block Influence, lowest first, while they
// fit within the parameters to remove (the last layer always stays), then the rest by magnitude
// pruning of the remaining layers' FFN channels.
static fk_status shortgpt_exact(const fk_model *m, const fk_analysis *a, int64_t params, fk_model *out) {
    int L = (int)m->cfg.n_layer, dropped = 0, n = 0;
    int64_t cut = fk_model_num_params(m) - params, removed = 0;
    scored s[FK_MAX_LAYERS];
    char drop[FK_MAX_LAYERS] = {0};
    for (int l = 0; l < L; l++) s[l] = (scored){a->bi[l], l};
    qsort(s, (size_t)L, sizeof *s, by_score);
    for (int i = 0; i < L - 1; i++) {
        int64_t b = fk_model_count_params(m, FK_PARAMS_BLOCKS, s[i].j);
        if (removed + b > cut) break;
        drop[s[i].j] = 1;
        removed += b;
        dropped++;
    }
    double *coef = calloc((size_t)L * L, sizeof *coef);
    if (!coef) return fk_error(FK_ERR_NOMEM, "prune: out of memory");
    for (int l = 0; l < L; l++)
        if (!drop[l]) coef[n++ * L + l] = 1;
    fk_model kept;
    fk_status st = fk_fold_layers(m, L - dropped, coef, &kept);
    free(coef);
    if (st != FK_OK) return st;
    if (fk_model_num_params(&kept) == params) { *out = kept; return FK_OK; }
    st = prune_channels_exact(&kept, NULL, FK_PRUNE_MAGNITUDE, params, out);
    fk_model_free(&kept);
    return st;
}

fk_status fk_prune_to_params(const fk_model *m, const fk_analysis *a, fk_prune_method method, int64_t params, fk_model *out, int64_t *removed) {
    memset(out, 0, sizeof *out);
    *removed = 0;
    int64_t total = fk_model_num_params(m);
    if (!(params > 0 && params < total)) return fk_error(FK_ERR_ARG, "prune: %lld parameters asked, expected from 1 to fewer than the model's %lld", (long long)params, (long long)total);
    if (m->cfg.n_expert > 0 || method == FK_PRUNE_EXPERTS || method == FK_PRUNE_NONE)
        return fk_error(FK_ERR_ARG, "prune: a parameter count (--params) is implemented for magnitude, FLAP and ShortGPT pruning of dense models");
    FK_TRY(check_analysis(m, a));
    fk_status st = method == FK_PRUNE_SHORTGPT ? shortgpt_exact(m, a, params, out) : prune_channels_exact(m, a, method, params, out);
    if (st == FK_OK) *removed = total - fk_model_num_params(out);
    return st;
}
