// The fold pipeline (fusekit/fold.h, fold.md): statistics and KL probes from a calibration text,
// the dynamic-threshold plan, layer operations first and then the widths planned again for what
// is left, and the FFN folded by the plan (greedy elimination) or by clusters (medoids). This is
// what `fusekit fold` runs for each round; the CLI loads, saves and prints.
#include "fold/chain.h"
#include "fusekit/cluster.h"
#include "fusekit/fold.h"
#include "fusekit/model_load.h"
#include "fusekit/train.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void fk_fold_run_defaults(fk_fold_run_opts *o) {
    memset(o, 0, sizeof *o);
    fk_fold_opts_default(&o->plan);
    o->plan.budget = 0.3;
    o->method = FK_FOLD_LSQ;
    o->select = FK_FOLD_SELECT_GREEDY;
    o->seq = 0;
    o->batch = 4;
    o->max_tokens = 65536;
    o->probe_windows = 8;
}

void fk_fold_result_free(fk_fold_result *r) {
    fk_fold_plan_free(&r->plan);
    fk_fold_plan_free(&r->widths);
    fk_model_free(&r->folded);
    memset(r, 0, sizeof *r);
}

// Folds one layer's FFN to k units by clusters of 1 - |rho| (average linkage, medoids kept).
static fk_status fold_layer_clusters(const fk_model *cur, int l, int64_t F, int k, const fk_analysis *a, fk_fold_method method, double ridge,
                                     fk_model *next) {
    double *dist = malloc((size_t)(F * F) * sizeof *dist);
    int *lab = malloc((size_t)F * sizeof *lab), *med = malloc((size_t)k * sizeof *med);
    int32_t *l32 = malloc((size_t)F * sizeof *l32), *r32 = malloc((size_t)k * sizeof *r32);
    fk_dendrogram dg = {0};
    fk_status st = dist && lab && med && l32 && r32 ? FK_OK : fk_error(FK_ERR_NOMEM, "fold: out of memory");
    if (st == FK_OK) st = fk_corr_distance(a->ffn_gram[l], a->ffn_mean[l], a->tokens, (int)F, dist);
    if (st == FK_OK) st = fk_agglomerative(dist, (int)F, &dg);
    if (st == FK_OK) st = fk_dendrogram_cut(&dg, k, lab);
    if (st == FK_OK) st = fk_cluster_medoids(dist, (int)F, lab, k, med);
    if (st == FK_OK) {
        for (int64_t f = 0; f < F; f++) l32[f] = lab[f];
        for (int j = 0; j < k; j++) r32[j] = med[j];
        st = fk_fold_ffn(cur, l, l32, r32, k, a->ffn_gram[l], ridge, method, next);
    }
    fk_dendrogram_free(&dg);
    free(dist); free(lab); free(med); free(l32); free(r32);
    return st;
}

// Folding to the plan's FFN widths by clusters: Model Folding's mean-sum, or the least-squares
// refit with the medoids kept. m's layers keep their widths where the plan keeps them.
static fk_status fold_clusters(const fk_model *m, const fk_fold_plan *p, const fk_analysis *a, fk_fold_method method, double ridge, fk_model *out) {
    fk_model cur = *m;
    bool owned = false;
    fk_status st = FK_OK;
    for (int l = 0; l < m->cfg.n_layer && st == FK_OK; l++) {
        if (p->ffn_after[l] == p->ffn_before[l]) continue;
        fk_model next;
        st = fk_chain_step(&cur, &owned, fold_layer_clusters(&cur, l, p->ffn_before[l], (int)p->ffn_after[l], a, method, ridge, &next), &next);
    }
    return fk_chain_end(m, &cur, owned, st, out);
}

static fk_status analyze(fk_model *m, const fk_token_data *d, const fk_fold_run_opts *o, fk_analysis *a) {
    int seq = o->seq > 0 ? o->seq : (int)m->cfg.max_seq;
    return fk_analyze(m, d, seq, o->batch, o->max_tokens, 1, a);
}

// The FFN widths of plan p applied to src: heads (if planned) by the plan, then FFN units by the
// plan's elimination order (lsq + greedy) or by clusters (mean-sum, or medoids).
static fk_status apply_widths(const fk_model *src, const fk_fold_plan *p, const fk_analysis *a, const fk_fold_run_opts *o, fk_model *out) {
    double ridge = o->plan.ridge;
    if (o->method == FK_FOLD_LSQ && o->select == FK_FOLD_SELECT_GREEDY) return fk_fold_plan_apply_ffn(src, p, a, ridge, out);
    fk_fold_plan heads_only = *p;
    for (int l = 0; l < FK_MAX_LAYERS; l++) heads_only.ffn_after[l] = heads_only.ffn_before[l];
    fk_model tmp;
    FK_TRY(fk_fold_plan_apply_ffn(src, &heads_only, a, ridge, &tmp));
    fk_status st = fold_clusters(&tmp, p, a, o->method, ridge, out);
    fk_model_free(&tmp);
    return st;
}

// After the layer operations of r->plan (mid is the model with them applied): fresh statistics
// and the widths planned again for what is left of the budget, then applied. When the layer
// operations met the budget, the result is mid itself.
static fk_status fold_rest(fk_model *mid, const fk_token_data *stats, const fk_kl_probe *probe, int64_t scope0, const fk_fold_run_opts *o,
                           fk_fold_plan_fn on_plan, void *user, fk_fold_result *r) {
    int64_t left = r->plan.budget_params - (scope0 - fk_fold_scope_params(mid, o->plan.scope));
    if (left <= 0) return fk_model_clone(&r->folded, mid);
    fk_analysis a;
    FK_TRY(analyze(mid, stats, o, &a));
    fk_fold_opts o2 = o->plan;
    o2.layer_ops = false;
    o2.budget = (double)left / (double)fk_fold_scope_params(mid, o->plan.scope);
    fk_status st = fk_fold_plan_make(mid, &a, probe, &o2, &r->widths);
    r->has_widths = st == FK_OK;
    if (st == FK_OK && on_plan) st = on_plan(&r->widths, true, user);
    if (st == FK_OK) st = apply_widths(mid, &r->widths, &a, o, &r->folded);
    fk_analysis_free(&a);
    return st;
}

// Plans from m's statistics and folds m by the plan into r->folded (two phases when the plan
// takes layer operations); the held-out probe judges the result.
static fk_status fold_planned(fk_model *m, const fk_token_data *stats, const fk_kl_probe *probe, fk_analysis *a, const fk_fold_run_opts *o,
                              fk_fold_plan_fn on_plan, void *user, fk_fold_result *r) {
    FK_TRY(fk_fold_plan_make(m, a, probe, &o->plan, &r->plan));
    if (on_plan) FK_TRY(on_plan(&r->plan, false, user));
    if (o->plan_only) return FK_OK;
    if (r->plan.n_ops == 0) return apply_widths(m, &r->plan, a, o, &r->folded);
    // layer operations first, then fresh statistics and the widths planned again for what is left
    fk_model mid;
    FK_TRY(fk_fold_plan_apply_layers(m, &r->plan, &mid));
    fk_analysis_free(a);
    memset(a, 0, sizeof *a);
    fk_status st = fold_rest(&mid, stats, probe, r->scope_before, o, on_plan, user, r);
    fk_model_free(&mid);
    return st;
}

fk_status fk_fold_run(fk_model *m, const fk_token_data *d, const fk_fold_run_opts *o, fk_fold_plan_fn on_plan, void *user, fk_fold_result *r) {
    memset(r, 0, sizeof *r);
    int seq = o->seq > 0 ? o->seq : (int)m->cfg.max_seq;
    r->params_before = fk_model_num_params(m);
    r->scope_before = fk_fold_scope_params(m, o->plan.scope);
    // held-out probes: the last 10% of the calibration text calibrates and judges (layer
    // operations), the first 90% gives the statistics
    fk_token_data stats = *d, held = *d;
    int64_t cut = d->n - d->n / 10;
    if (d->n / 10 >= seq) {
        stats.n = cut;
        held.ids = d->ids + cut;
        held.n = d->n - cut;
    }
    fk_analysis a = {0};
    fk_kl_probe probe = {0};
    fk_status st = analyze(m, &stats, o, &a);
    if (st == FK_OK) st = fk_kl_probe_init(m, &held, o->probe_windows, seq, &probe);
    if (st == FK_OK) st = fold_planned(m, &stats, &probe, &a, o, on_plan, user, r);
    // what was done: the first plan alone, or its layer operations and the widths planned again
    // after them (the first plan's widths were never applied, so their estimate does not count)
    r->est_kl = r->plan.est_kl_total;
    if (r->has_widths) {
        r->est_kl = r->widths.est_kl_total;
        for (int i = 0; i < r->plan.n_ops; i++) r->est_kl += r->plan.ops[i].kl;
    }
    r->probe_kl = NAN;
    if (st == FK_OK && !o->plan_only) {
        st = fk_kl_probe_eval(&r->folded, &probe, &r->probe_kl);
        r->params_after = fk_model_num_params(&r->folded);
        r->scope_removed = r->scope_before - fk_fold_scope_params(&r->folded, o->plan.scope);
    }
    fk_kl_probe_free(&probe);
    fk_analysis_free(&a);
    if (st != FK_OK) fk_fold_result_free(r);
    return st;
}

// ---- progressive folding: rounds of fold -> heal ----

// The scope parameters of the model at path.
static fk_status scope_of(const char *path, fk_fold_scope scope, int64_t *n) {
    fk_model m;
    FK_TRY(fk_model_load(path, FK_LOAD_FROZEN, &m, NULL));
    *n = fk_fold_scope_params(&m, scope);
    fk_model_free(&m);
    return FK_OK;
}

// One round's folders: where it folds to and heals into (the last round heals into out itself).
typedef struct { char *dir, *folded, *healed; } round_dirs;

static fk_status round_dirs_make(const char *out, int r, const fk_fold_rounds_opts *o, round_dirs *d) {
    bool staged = o->rounds > 1 || o->heal_steps > 0;
    char name[64];
    snprintf(name, sizeof name, "round-%d", r);
    d->dir = staged ? fk_path_join(out, name) : strdup(out);
    d->folded = staged && d->dir ? fk_path_join(d->dir, "folded") : strdup(out);
    d->healed = o->heal_steps <= 0 ? NULL : r == o->rounds ? strdup(out) : d->dir ? fk_path_join(d->dir, "healed") : NULL;
    bool ok = d->dir && d->folded && (o->heal_steps <= 0 || d->healed);
    return ok ? FK_OK : fk_error(FK_ERR_NOMEM, "out of memory");
}

static void round_dirs_free(round_dirs *d) {
    free(d->dir); free(d->folded); free(d->healed);
}

// A round whose healing was interrupted (Ctrl-C, SIGTERM, a kill) keeps its folded model and
// resumes healing from its newest checkpoint.
static bool round_resumes(const round_dirs *d) {
    if (!d->healed) return false;
    char *ck = NULL, *cfg = fk_path_join(d->folded, "config.json");
    bool resume = fk_checkpoint_latest(d->healed, &ck) == FK_OK && cfg && fk_path_exists(cfg);
    free(ck);
    free(cfg);
    return resume;
}

// Round r of o->rounds: fold *cur by this round's share of the budget (or find it folded), then
// heal; *cur becomes the round's result, *done counts the scope parameters removed so far.
static fk_status fold_round(const char *model, const char *out, int r, int64_t target, const fk_fold_rounds_opts *o,
                            const fk_fold_rounds_ops *ops, char **cur, int64_t *done) {
    round_dirs d = {0};
    fk_fold_round_event ev = {.round = r, .rounds = o->rounds, .model = *cur};
    fk_status st = round_dirs_make(out, r, o, &d);
    int64_t scope = 0, removed = 0;
    if (st == FK_OK) st = scope_of(*cur, o->scope, &scope);
    ev.folded = d.folded;
    ev.params = target * r / o->rounds - *done;  // this round's share, as a fraction of the current scope below
    ev.resumed = st == FK_OK && round_resumes(&d);
    if (st == FK_OK && ev.resumed) {
        int64_t left = 0;
        st = scope_of(d.folded, o->scope, &left);
        removed = scope - left;
    }
    if (st == FK_OK && ops->report) ops->report(&ev, ops->user);
    if (st == FK_OK && !ev.resumed)
        st = ops->fold(*cur, d.folded, (double)ev.params / (double)scope, o->heal_steps > 0, &removed, ops->user);
    if (st == FK_OK) {
        *done += removed;
        char *next = strdup(d.folded);
        free(*cur);
        *cur = next;
    }
    ev.model = NULL;  // (*cur was replaced)
    if (st == FK_OK && d.healed) {
        int64_t steps = o->heal_steps / o->rounds > 0 ? o->heal_steps / o->rounds : 1;
        st = ops->heal(model, *cur, d.healed, steps, ev.resumed, &ev, ops->user);
        if (st == FK_OK) {
            free(*cur);
            *cur = d.healed;
            d.healed = NULL;
        }
    }
    round_dirs_free(&d);
    return st;
}

fk_status fk_fold_rounds(const char *model, const char *out, const fk_fold_rounds_opts *o, const fk_fold_rounds_ops *ops) {
    // the original's scope size fixes the budget in parameters for every round
    int64_t scope0 = 0, done = 0;
    FK_TRY(scope_of(model, o->scope, &scope0));
    int64_t target = (int64_t)ceil(o->budget * (double)scope0);
    char *cur = strdup(model);
    fk_status st = cur ? FK_OK : fk_error(FK_ERR_NOMEM, "out of memory");
    for (int r = 1; r <= o->rounds && st == FK_OK; r++) st = fold_round(model, out, r, target, o, ops, &cur, &done);
    free(cur);
    return st;
}
