// fusekit demo's outputs (demo.h): each model on each domain's split, and what the protocol
// measured as the table on stdout, results.json and report.html — mean +- sd over seeds,
// per-seed points, paired differences with 95% t intervals (fusekit/stats.h) and the tuning
// trials.
#include "demo.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static char *pj(const char *a, const char *b) { return fk_path_join(a, b); }

// ---------------------------------------------------------------- evaluation
fk_status demo_evaluate(const char *data_dir, const char *split, bool probes, model_row *r, int64_t ctx) {
    fk_model m;
    FK_TRY(fk_hf_load(&m, r->dir));
    fk_tokenizer *tok = NULL;
    fk_status st = cli_model_tokenizer(r->dir, NULL, m.cfg.vocab_size, &tok);
    if (st == FK_OK && !tok) st = fk_error(FK_ERR_ARG, "%s has no tokenizer", r->dir);
    r->params = fk_model_num_params(&m);
    r->ffn_params = fk_model_count_params(&m, FK_PARAMS_FFN, FK_PARAMS_ANY_LAYER);
    snprintf(r->arch, sizeof r->arch, "%s d%lld L%lld", m.cfg.norm == FK_NORM_RMSNORM ? "llama" : "gpt2", (long long)m.cfg.d_model,
             (long long)m.cfg.n_layer);
    if (st == FK_OK)
        snprintf(r->tok, sizeof r->tok, "%s %d", fk_tok_kind_of(tok) == FK_TOK_SPM ? "spm" : "bpe", (int)fk_tok_vocab_size(tok));
    double tokens = 0, secs = 0;
    r->avg_bpb = r->avg_acc = 0;
    char file[32];
    snprintf(file, sizeof file, "%s.txt", split);
    for (int k = 0; k < N_DOM && st == FK_OK; k++) {
        char *dd = pj(data_dir, fk_synth_domains[k]);
        char *text = dd ? pj(dd, file) : NULL, *pfile = dd ? pj(dd, "probes.jsonl") : NULL;
        fk_token_data d;
        st = text && pfile ? fk_data_load_tok(text, tok, &d) : fk_error(FK_ERR_NOMEM, "out of memory");
        if (st == FK_OK) {
            fk_eval_result er;
            double t0 = fk_time_s();
            st = fk_eval_data(&m, &d, (int)ctx, 8, 0, &er);
            secs += fk_time_s() - t0;
            tokens += (double)er.tokens;
            r->bpb[k] = er.bpb;
            fk_data_free(&d);
        }
        r->acc[k] = NAN;
        if (st == FK_OK && probes) {
            fk_probe_result pr;
            st = fk_probes_eval(&m, tok, pfile, 0, &pr);
            if (st == FK_OK) r->acc[k] = pr.accuracy;
            fk_probe_result_free(&pr);
        }
        free(text);
        free(pfile);
        free(dd);
        r->avg_bpb += r->bpb[k] / N_DOM;
        r->avg_acc += r->acc[k] / N_DOM;
    }
    r->tokens_per_s = secs > 0 ? tokens / secs : 0;
    fk_tok_free(tok);
    fk_model_free(&m);
    if (st != FK_OK) fk_error_context(st, "evaluating %s on its %s split", r->dir, split);
    return st;
}

// ---------------------------------------------------------------- training curves
typedef struct { double *step, *val, *loss, *lstep; int n_val, n_loss; double shares[8]; int n_shares; } curve;

static void curve_free(curve *c) {
    free(c->step); free(c->val); free(c->loss); free(c->lstep);
    memset(c, 0, sizeof *c);
}

static void curve_load(const char *metrics, curve *c) {
    memset(c, 0, sizeof *c);
    char *t = NULL;
    size_t n = 0;
    if (fk_read_file(metrics, &t, &n) != FK_OK) return;
    int lines = 1;
    for (size_t i = 0; i < n; i++) lines += t[i] == '\n';
    c->step = calloc((size_t)lines, sizeof(double));
    c->val = calloc((size_t)lines, sizeof(double));
    c->loss = calloc((size_t)lines, sizeof(double));
    c->lstep = calloc((size_t)lines, sizeof(double));
    for (char *line = strtok(t, "\n"); line && c->step && c->val && c->loss && c->lstep; line = strtok(NULL, "\n")) {
        cJSON *j = cJSON_Parse(line);
        if (!j) continue;
        // the CLM part where a run has teachers, so that fused and baseline plot the same objective
        cJSON *s = cJSON_GetObjectItem(j, "step"), *v = cJSON_GetObjectItem(j, "val_bpb"), *l = cJSON_GetObjectItem(j, "clm_loss");
        if (!cJSON_IsNumber(l)) l = cJSON_GetObjectItem(j, "loss");
        cJSON *sh = cJSON_GetObjectItem(j, "teacher_shares");
        if (cJSON_IsNumber(s) && cJSON_IsNumber(v)) { c->step[c->n_val] = s->valuedouble; c->val[c->n_val++] = v->valuedouble; }
        if (cJSON_IsNumber(s) && cJSON_IsNumber(l)) { c->lstep[c->n_loss] = s->valuedouble; c->loss[c->n_loss++] = l->valuedouble; }
        if (cJSON_IsArray(sh)) {
            c->n_shares = 0;
            cJSON *e;
            cJSON_ArrayForEach(e, sh) if (c->n_shares < 8) c->shares[c->n_shares++] = e->valuedouble;
        }
        cJSON_Delete(j);
    }
    free(t);
}

// The report's layer charts: similarity between residual streams, and block influence.
static void report_layers(fk_sbuf *b, const fk_analysis *an) {
    // cos-angle similarity 1 - d(i, j) between the residual streams x_i, x_j
    if (an && an->n_layer > 0) {
        int L = an->n_layer, n = L + 1;
        double *sim = malloc(sizeof(double) * (size_t)(n * n));
        if (sim) {
            for (int i = 0; i < n; i++)
                for (int j = 0; j < n; j++) {
                    int lo = i < j ? i : j, dist = abs(i - j);
                    sim[i * n + j] = dist == 0 ? 1.0 : dist <= an->max_n ? 1.0 - an->angular[lo * an->max_n + dist - 1] : NAN;
                }
            double mn = 1;
            for (int i = 0; i < n * n; i++) if (isfinite(sim[i])) mn = fmin(mn, sim[i]);
            char t[256];
            snprintf(t, sizeof t, "Layer similarity of the fused model: 1 − angular distance between residual streams x<sub>i</sub> and "
                                  "x<sub>j</sub> (x<sub>0</sub> the embeddings; white = %.3f, darkest = 1)", mn);
            fk_svg_heatmap(b, t, sim, n, n, 28, mn, 1.0, "x", 0, "x", 0);
            free(sim);
        }
        fk_svg_bars(b, "Block influence of each layer of the fused model (1 − cos(x<sub>l</sub>, x<sub>l+1</sub>))", an->bi, L, 0, NULL);
    }
}

// The report's fold charts: FFN width and query heads per layer, before and after folding.
static void report_fold(fk_sbuf *b, const fk_config *before, const fk_config *after) {
    if (before && after) {
        int L = (int)before->n_layer;
        const char *lg[FK_MAX_LAYERS];
        char lbl[FK_MAX_LAYERS][24];  // "layer " and any int
        double w[FK_MAX_LAYERS * 2], h[FK_MAX_LAYERS * 2];
        for (int l = 0; l < L; l++) {
            snprintf(lbl[l], sizeof lbl[l], "layer %d", l);
            lg[l] = lbl[l];
            w[2 * l] = (double)before->ffn[l];
            w[2 * l + 1] = l < after->n_layer ? (double)after->ffn[l] : NAN;
            h[2 * l] = (double)fk_config_heads(before, l);
            h[2 * l + 1] = l < after->n_layer ? (double)fk_config_heads(after, l) : NAN;
        }
        const char *ba[2] = {"fused", "folded"};
        fk_svg_grouped_bars(b, "Fold plan: FFN width per layer before and after folding", lg, L, ba, 2, w, "%.0f");
        fk_svg_grouped_bars(b, "Fold plan: query heads per layer before and after folding", lg, L, ba, 2, h, "%.0f");
    }
}

// ---------------------------------------------------------------- over seeds
// A paired comparison a - b of the mean test bits per byte over the seeds (absolute, and
// relative: a/b - 1 against 0); interval only with two seeds or more.
typedef struct {
    int a, b;  // rows
    int n;
    double d[DEMO_MAX_SEEDS];
    double diff, lo, hi, rel, rel_lo, rel_hi;
    bool interval;
} pair_row;

#define DEMO_MAX_PAIRS 8
typedef struct {
    model_row mean[DEMO_MAX_ROWS];  // per-domain figures averaged over the seeds (names, shapes: the first seed's)
    double sd[DEMO_MAX_ROWS], lo[DEMO_MAX_ROWS], hi[DEMO_MAX_ROWS];  // of the mean bpb: sd, 95% t interval of its mean
    double pts[DEMO_MAX_ROWS][DEMO_MAX_SEEDS];                         // the mean bpb of each seed
    int n_pairs;
    pair_row pairs[DEMO_MAX_PAIRS];
} summary;

static const double ci_level = 0.95;

// The pair a - b of rows, its interval from fk_stats_paired_ci over the seeds.
static void pair_compute(const demo_results *R, int a, int b, pair_row *p) {
    *p = (pair_row){.a = a, .b = b, .n = R->n_seeds};
    double x[DEMO_MAX_SEEDS], y[DEMO_MAX_SEEDS], rel[DEMO_MAX_SEEDS], zero[DEMO_MAX_SEEDS] = {0};
    for (int i = 0; i < p->n; i++) {
        x[i] = R->rows[i][a].avg_bpb;
        y[i] = R->rows[i][b].avg_bpb;
        p->d[i] = x[i] - y[i];
        rel[i] = x[i] / y[i] - 1;
    }
    double sd;
    fk_stats_mean_sd(p->d, p->n, &p->diff, &sd);
    fk_stats_mean_sd(rel, p->n, &p->rel, &sd);
    p->lo = p->hi = p->rel_lo = p->rel_hi = NAN;
    p->interval = p->n >= 2 && fk_stats_paired_ci(x, y, p->n, ci_level, &p->diff, &p->lo, &p->hi) == FK_OK &&
                  fk_stats_paired_ci(rel, zero, p->n, ci_level, &p->rel, &p->rel_lo, &p->rel_hi) == FK_OK;
}

// Means over seeds, sds, intervals and the paired comparisons: fused - each other fuse/CLM arm,
// folded - healed.
static void summarise(const demo_results *R, summary *S) {
    memset(S, 0, sizeof *S);
    int n = R->n_seeds;
    double t = n >= 2 ? fk_stats_t_quantile(0.5 + ci_level / 2, n - 1) : NAN;
    for (int r = 0; r < R->n_rows; r++) {
        model_row *m = &S->mean[r];
        *m = R->rows[0][r];
        double x[DEMO_MAX_SEEDS], sd;
        for (int k = 0; k < N_DOM; k++) {
            for (int i = 0; i < n; i++) x[i] = R->rows[i][r].bpb[k];
            fk_stats_mean_sd(x, n, &m->bpb[k], &sd);
            for (int i = 0; i < n; i++) x[i] = R->rows[i][r].acc[k];
            fk_stats_mean_sd(x, n, &m->acc[k], &sd);
        }
        for (int i = 0; i < n; i++) x[i] = R->rows[i][r].avg_acc;
        fk_stats_mean_sd(x, n, &m->avg_acc, &sd);
        for (int i = 0; i < n; i++) S->pts[r][i] = x[i] = R->rows[i][r].avg_bpb;
        fk_stats_mean_sd(x, n, &m->avg_bpb, &S->sd[r]);
        S->lo[r] = m->avg_bpb - t * S->sd[r] / sqrt(n);
        S->hi[r] = m->avg_bpb + t * S->sd[r] / sqrt(n);
    }
    int fused = N_SRC + demo_arm_index(R, "fused"), folded = N_SRC + demo_arm_index(R, "folded");
    for (int a = 0; a < R->n_arms; a++) {
        const demo_arm *A = R->arms[a];
        if (A->kind != ARM_HEAL && N_SRC + a != fused) pair_compute(R, fused, N_SRC + a, &S->pairs[S->n_pairs++]);
        else if (A->kind == ARM_HEAL && !A->fold) pair_compute(R, folded, N_SRC + a, &S->pairs[S->n_pairs++]);
    }
}

// "fused - baseline" for a pair.
static void pair_name(const demo_results *R, const pair_row *p, char *buf, size_t cap) {
    snprintf(buf, cap, "%s - %s", R->rows[0][p->a].name, R->rows[0][p->b].name);
}

static const char *vmap_name(int v) { return v < 0 ? "-" : fk_vmap_mode_name((fk_vmap_mode)v); }

// ---------------------------------------------------------------- the report
static void table_html(fk_sbuf *b, const summary *S, int n_rows, int n_seeds) {
    fk_sb(b, "<table><tr><th>model</th><th>role</th><th>architecture</th><th>tokenizer</th><th>parameters</th>");
    for (int k = 0; k < N_DOM; k++) fk_sb(b, "<th>%s bpb</th>", fk_synth_domains[k]);
    int base = -1;  // the CLM-only baseline: each row's mean against it
    for (int i = 0; i < n_rows; i++)
        if (strncmp(S->mean[i].name, "baseline", 8) == 0) { base = i; break; }
    fk_sb(b, "<th>mean bpb</th>%s%s<th>probe accuracy</th><th>tokens/s</th></tr>", n_seeds > 1 ? "<th>sd</th><th>95% interval</th>" : "",
          base >= 0 ? "<th>Δ mean bpb vs baseline</th>" : "");
    for (int i = 0; i < n_rows; i++) {
        const model_row *r = &S->mean[i];
        fk_sb(b, "<tr><td><b>%s</b></td><td>%s</td><td>%s</td><td>%s</td><td>%lld</td>", r->name, r->role, r->arch, r->tok,
              (long long)r->params);
        for (int k = 0; k < N_DOM; k++) fk_sb(b, "<td>%.3f</td>", r->bpb[k]);
        fk_sb(b, "<td><b>%.4f</b></td>", r->avg_bpb);
        if (n_seeds > 1) fk_sb(b, "<td>%.4f</td><td>%.4f … %.4f</td>", S->sd[i], S->lo[i], S->hi[i]);
        if (base >= 0) {
            double d = r->avg_bpb - S->mean[base].avg_bpb;
            if (i == base) fk_sb(b, "<td>—</td>");
            else fk_sb(b, "<td>%+.4f (%+.2f%%)</td>", d, 100 * d / S->mean[base].avg_bpb);
        }
        fk_sb(b, "<td>%.1f%%</td><td>%.0f</td></tr>", 100 * r->avg_acc, r->tokens_per_s);
    }
    fk_sb(b, "</table>");
}

// The paired differences as a table and a dot plot (each seed's difference, the mean, its interval).
static void report_pairs(fk_sbuf *b, const demo_results *R, const summary *S) {
    fk_sb(b, "<h3>Paired differences of mean test bits per byte over %d seed%s (negative: the first is better)</h3><table>"
             "<tr><th>comparison</th><th>n</th><th>mean difference</th><th>95%% t interval</th><th>relative</th>"
             "<th>95%% t interval</th></tr>",
          R->n_seeds, R->n_seeds > 1 ? "s" : "");
    const char *cats[DEMO_MAX_PAIRS];
    char names[DEMO_MAX_PAIRS][48];
    const double *pts[DEMO_MAX_PAIRS];
    int n[DEMO_MAX_PAIRS];
    double mean[DEMO_MAX_PAIRS], lo[DEMO_MAX_PAIRS], hi[DEMO_MAX_PAIRS];
    for (int i = 0; i < S->n_pairs; i++) {
        const pair_row *p = &S->pairs[i];
        pair_name(R, p, names[i], sizeof names[i]);
        cats[i] = names[i];
        pts[i] = p->d;
        n[i] = p->n;
        mean[i] = p->diff;
        lo[i] = p->lo;
        hi[i] = p->hi;
        fk_sb(b, "<tr><td>%s</td><td>%d</td><td>%+.4f</td>", names[i], p->n, p->diff);
        if (p->interval) fk_sb(b, "<td>%+.4f … %+.4f</td><td>%+.2f%%</td><td>%+.2f%% … %+.2f%%</td></tr>", p->lo, p->hi, 100 * p->rel,
                               100 * p->rel_lo, 100 * p->rel_hi);
        else fk_sb(b, "<td>(one seed)</td><td>%+.2f%%</td><td>(one seed)</td></tr>", 100 * p->rel);
    }
    fk_sb(b, "</table>");
    fk_svg_dots(b, "Paired differences per seed (dots), their mean (bar) and 95% t interval (whisker)", cats, S->n_pairs, pts, n, mean, lo,
                hi,
                "difference of mean test bits per byte");
}

// Each arm's mean test bits per byte per seed beside the mean and its interval (the sources,
// far above, are in the table).
static void report_seeds(fk_sbuf *b, const demo_results *R, const summary *S) {
    const char *cats[DEMO_MAX_ARMS];
    const double *pts[DEMO_MAX_ARMS];
    int n[DEMO_MAX_ARMS];
    double mean[DEMO_MAX_ARMS];
    for (int a = 0; a < R->n_arms; a++) {
        int r = N_SRC + a;
        cats[a] = S->mean[r].name;
        pts[a] = S->pts[r];
        n[a] = R->n_seeds;
        mean[a] = S->mean[r].avg_bpb;
    }
    bool ci = R->n_seeds > 1;
    fk_svg_dots(b, "Mean test bits per byte of every arm: one dot per seed, the mean (bar) and its 95% t interval (whisker)", cats,
                R->n_arms, pts, n, mean, ci ? S->lo + N_SRC : NULL, ci ? S->hi + N_SRC : NULL, "bits per byte (lower is better)");
}

// The tuning: each arm's trials (settings and validation score) and the one chosen.
static void report_tuning(fk_sbuf *b, const demo_results *R) {
    fk_sb(b, "<h3>Tuning on the validation splits (seed %lld): %d trials per arm, scored by mean bits per byte over the domains' "
             "valid.txt</h3><table><tr><th>arm</th><th>trial</th><th>lambda</th><th>learning rate</th><th>vocabulary map</th>"
             "<th>validation bpb</th></tr>", (long long)R->seeds[0], R->c->trials);
    const char *cats[DEMO_MAX_ARMS];
    const double *pts[DEMO_MAX_ARMS];
    int n[DEMO_MAX_ARMS];
    double best[DEMO_MAX_ARMS];
    for (int a = 0; a < R->n_arms; a++) {
        const arm_tuning *tu = &R->tune[a];
        for (int i = 0; i < tu->n_trials; i++) {
            const trial_set *t = &tu->set[i];
            bool ch = i == tu->chosen;
            char lam[16] = "-";
            if (R->arms[a]->kind != ARM_CLM) snprintf(lam, sizeof lam, "%.2g", t->lambda);
            fk_sb(b, "<tr><td>%s</td><td>%d%s</td><td>%s</td><td>%.2g</td><td>%s</td><td>%s%.4f%s</td></tr>", R->arms[a]->name, i + 1,
                  ch ? " (chosen)" : "", lam, t->lr, vmap_name(t->vmap), ch ? "<b>" : "", tu->valid[i], ch ? "</b>" : "");
        }
        cats[a] = R->arms[a]->name;
        pts[a] = tu->valid;
        n[a] = tu->n_trials;
        best[a] = tu->valid[tu->chosen];
    }
    fk_sb(b, "</table>");
    fk_svg_dots(b, "Tuning trials: validation bits per byte of each trial (dots); the bar marks the chosen trial", cats, R->n_arms, pts, n,
                best, NULL, NULL, "validation bits per byte");
}

static void report_intro(fk_sbuf *b, const demo_results *R) {
    fk_sb(b, "<h1>fusekit demo%s</h1><p>Three small source models, each trained mostly on its own domain of a synthetic corpus, "
              "with different tokenizers and architectures, are fused into one target (initialised from B, which is also one of the "
              "teachers) by continual training on a small mixed corpus. The CLM-only baseline has the same initialisation, corpus, "
              "steps and schedule. The fused model is then folded by a parameter budget and healed.%s Every arm's settings were "
              "chosen by %d trials on the validation splits of the first seed; the test splits (bits per byte, lower is better) and "
              "probes (accuracy; chance is 50%% for grammar, 25%% for the rest) were read once, after all training, for %d seed%s. "
              "The arithmetic test problems are sums no model saw; models this small do not learn to add in minutes, so arith "
              "stays near chance for every model. Total time %.0f s.</p>",
          R->quick ? (strcmp(R->c->mode, "tiny") == 0 ? " (tiny)" : " (quick)") : "",
          R->controls ? " Controls: self-distillation (B's initial model the only teacher), B with one source, shuffled teachers "
                        "(each teacher's rows read at permuted positions), replay (the baseline given the fused run's extraction "
                        "FLOPs as extra steps) and the healed original (the fused model healed with the same steps, not folded)." : "",
          R->c->trials, R->n_seeds, R->n_seeds > 1 ? "s" : "", R->secs);
}

// The per-domain bars and probe accuracies (means over the seeds).
static void report_domains(fk_sbuf *b, const demo_results *R, const summary *S) {
    int nr = R->n_rows;
    const char *groups[N_DOM + 1], *series[DEMO_MAX_ROWS];
    double v[(N_DOM + 1) * DEMO_MAX_ROWS], acc[(N_DOM + 1) * DEMO_MAX_ROWS];
    for (int k = 0; k <= N_DOM; k++) groups[k] = k < N_DOM ? fk_synth_domains[k] : "mean";
    for (int i = 0; i < nr; i++) {
        series[i] = S->mean[i].name;
        for (int k = 0; k <= N_DOM; k++) {
            v[k * nr + i] = k < N_DOM ? S->mean[i].bpb[k] : S->mean[i].avg_bpb;
            acc[k * nr + i] = 100 * (k < N_DOM ? S->mean[i].acc[k] : S->mean[i].avg_acc);
        }
    }
    fk_svg_grouped_bars(b, "Held-out bits per byte per domain (lower is better; mean over seeds)", groups, N_DOM + 1, series, nr, v,
                        "%.3f");
    // chance per domain: 25% for the four-way probes, 50% for grammar's two-way, their mean for "mean"
    double chance[N_DOM + 1], cm = 0;
    for (int k = 0; k < N_DOM; k++) cm += chance[k] = strcmp(fk_synth_domains[k], "grammar") == 0 ? 50 : 25;
    chance[N_DOM] = cm / N_DOM;
    fk_svg_grouped_bars_ref(b, "Probe accuracy per domain, % (higher is better; dashed: chance)", groups, N_DOM + 1, series, nr, acc, "%.0f",
                            chance, "chance");
}

// The training curves of the first seed's fused model and baseline, and the fusion weights.
static void report_curves(fk_sbuf *b, const curve *fused, const curve *base) {
    const char *names[2] = {"fused", "baseline (CLM only)"};
    const double *xs[2] = {fused->step, base->step}, *ys[2] = {fused->val, base->val};
    int ns[2] = {fused->n_val, base->n_val};
    fk_svg_lines(b, "Training: held-out bits per byte on the mixed validation text (first seed)", names, 2, xs, ys, ns, "step", "bpb");
    const double *lx[2] = {fused->lstep, base->lstep}, *ly[2] = {fused->loss, base->loss};
    int ln[2] = {fused->n_loss, base->n_loss};
    fk_svg_lines(b, "Training CLM loss, next-token cross-entropy on the training batches (the fused run's CLM part of its objective)",
                 names, 2, lx, ly, ln, "step", "nats");
    const char *teachers[] = {"B (target)", "A", "C"};
    if (fused->n_shares == 3)
        fk_svg_bars(b, "Fusion weights: the share of positions each teacher supplied (MinCE picks the teacher with the lowest "
                       "cross-entropy on each sequence)", fused->shares, 3, 1.0, teachers);
}

static fk_status write_report(const demo *d, const demo_results *R, const summary *S, const curve *fused, const curve *base,
                              const fk_analysis *an, const fk_config *before, const fk_config *after) {
    fk_sbuf b = {0};
    fk_sb(&b, "<!DOCTYPE html><html><head><meta charset='utf-8'/><title>fusekit demo</title><style>"
              "body{font-family:sans-serif;margin:24px;max-width:1100px;color:#222}h3{margin:22px 0 4px}"
              "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 7px;text-align:right}"
              "td:first-child,th:first-child,td:nth-child(2),td:nth-child(3),td:nth-child(4){text-align:left}"
              "p.note{color:#555;font-size:13px}</style></head><body>");
    report_intro(&b, R);
    table_html(&b, S, R->n_rows, R->n_seeds);
    report_pairs(&b, R, S);
    report_seeds(&b, R, S);
    report_domains(&b, R, S);
    report_curves(&b, fused, base);
    report_layers(&b, an);
    report_fold(&b, before, after);
    report_tuning(&b, R);
    fk_sb(&b, "<p class='note'>Files: results.json (these numbers, per seed), commands.sh (every step as a fusekit command), logs/ "
              "(each step's output; tune/logs the trials'), models/ (Hugging Face-style folders), data/ (the corpus and probes), "
              "seeds/N/ (the other seeds). Directory: ");
    fk_sb_text(&b, d->dir);
    fk_sb(&b, "</p></body></html>\n");
    return fk_sb_write_in(&b, d->dir, "report.html");
}

// ---------------------------------------------------------------- results.json
static cJSON *domains_json(const double *v) {
    cJSON *o = cJSON_CreateObject();
    for (int k = 0; k < N_DOM; k++) cJSON_AddNumberToObject(o, fk_synth_domains[k], v[k]);
    return o;
}

static cJSON *model_json(const demo_results *R, const summary *S, int r) {
    const model_row *m = &S->mean[r];
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "name", m->name);
    cJSON_AddStringToObject(o, "role", m->role);
    cJSON_AddStringToObject(o, "dir", m->dir);
    cJSON_AddStringToObject(o, "arch", m->arch);
    cJSON_AddStringToObject(o, "tokenizer", m->tok);
    cJSON_AddNumberToObject(o, "params", (double)m->params);
    cJSON_AddNumberToObject(o, "ffn_params", (double)m->ffn_params);
    cJSON_AddItemToObject(o, "bpb", domains_json(m->bpb));
    cJSON_AddItemToObject(o, "accuracy", domains_json(m->acc));
    cJSON_AddNumberToObject(o, "mean_bpb", m->avg_bpb);
    cJSON_AddNumberToObject(o, "mean_bpb_sd", S->sd[r]);
    if (R->n_seeds > 1) {
        cJSON_AddNumberToObject(o, "mean_bpb_lo", S->lo[r]);
        cJSON_AddNumberToObject(o, "mean_bpb_hi", S->hi[r]);
    }
    cJSON_AddNumberToObject(o, "mean_accuracy", m->avg_acc);
    cJSON_AddNumberToObject(o, "tokens_per_s", round(m->tokens_per_s));
    cJSON *seeds = cJSON_AddArrayToObject(o, "seeds");
    for (int i = 0; i < R->n_seeds; i++) {
        const model_row *p = &R->rows[i][r];
        cJSON *e = cJSON_CreateObject();
        cJSON_AddNumberToObject(e, "seed", (double)R->seeds[i]);
        cJSON_AddStringToObject(e, "dir", p->dir);
        cJSON_AddItemToObject(e, "bpb", domains_json(p->bpb));
        cJSON_AddNumberToObject(e, "mean_bpb", p->avg_bpb);
        cJSON_AddNumberToObject(e, "mean_accuracy", p->avg_acc);
        cJSON_AddItemToArray(seeds, e);
    }
    return o;
}

static cJSON *tuning_json(const demo_results *R) {
    cJSON *t = cJSON_CreateObject();
    cJSON_AddNumberToObject(t, "trials_per_arm", R->c->trials);
    cJSON_AddNumberToObject(t, "seed", (double)R->seeds[0]);
    cJSON_AddStringToObject(t, "score", "mean bits per byte over data/<domain>/valid.txt (lower is better)");
    cJSON *arr = cJSON_AddArrayToObject(t, "arms");
    for (int a = 0; a < R->n_arms; a++) {
        const arm_tuning *tu = &R->tune[a];
        const demo_arm *A = R->arms[a];
        cJSON *o = cJSON_CreateObject(), *tr = NULL;
        cJSON_AddStringToObject(o, "name", A->name);
        cJSON_AddStringToObject(o, "varies", A->kind == ARM_FUSE ? (A->sources ? "lambda, lr, vmap" : "lambda, lr") : A->kind == ARM_CLM ? "lr" : "healing lr");
        cJSON_AddNumberToObject(o, "chosen", tu->chosen);
        tr = cJSON_AddArrayToObject(o, "trials");
        for (int i = 0; i < tu->n_trials; i++) {
            cJSON *e = cJSON_CreateObject();
            if (A->kind != ARM_CLM) cJSON_AddNumberToObject(e, "lambda", tu->set[i].lambda);
            cJSON_AddNumberToObject(e, "lr", tu->set[i].lr);
            if (tu->set[i].vmap >= 0) cJSON_AddStringToObject(e, "vmap", vmap_name(tu->set[i].vmap));
            cJSON_AddNumberToObject(e, "valid_bpb", tu->valid[i]);
            cJSON_AddItemToArray(tr, e);
        }
        cJSON_AddItemToArray(arr, o);
    }
    return t;
}

static cJSON *pairs_json(const demo_results *R, const summary *S) {
    cJSON *arr = cJSON_CreateArray();
    for (int i = 0; i < S->n_pairs; i++) {
        const pair_row *p = &S->pairs[i];
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "a", R->rows[0][p->a].name);
        cJSON_AddStringToObject(o, "b", R->rows[0][p->b].name);
        cJSON_AddNumberToObject(o, "n", p->n);
        cJSON_AddNumberToObject(o, "level", ci_level);
        cJSON_AddNumberToObject(o, "mean_diff", p->diff);
        cJSON_AddNumberToObject(o, "relative", p->rel);
        if (p->interval) {
            cJSON_AddNumberToObject(o, "lo", p->lo);
            cJSON_AddNumberToObject(o, "hi", p->hi);
            cJSON_AddNumberToObject(o, "relative_lo", p->rel_lo);
            cJSON_AddNumberToObject(o, "relative_hi", p->rel_hi);
        }
        cJSON_AddItemToArray(arr, o);
    }
    return arr;
}

static fk_status write_results(const demo *d, const demo_results *R, const summary *S, const curve *fused) {
    cJSON *j = cJSON_CreateObject();
    cJSON_AddBoolToObject(j, "quick", R->quick);
    cJSON_AddStringToObject(j, "mode", R->c->mode);
    cJSON_AddBoolToObject(j, "controls", R->controls);
    cJSON_AddNumberToObject(j, "seconds", round(R->secs * 10) / 10);
    cJSON_AddItemToObject(j, "domains", cJSON_CreateStringArray(fk_synth_domains, N_DOM));
    double seeds[DEMO_MAX_SEEDS];
    for (int i = 0; i < R->n_seeds; i++) seeds[i] = (double)R->seeds[i];
    cJSON_AddItemToObject(j, "seeds", cJSON_CreateDoubleArray(seeds, R->n_seeds));
    cJSON *arr = cJSON_AddArrayToObject(j, "models");
    for (int r = 0; r < R->n_rows; r++) cJSON_AddItemToArray(arr, model_json(R, S, r));
    cJSON_AddItemToObject(j, "paired", pairs_json(R, S));
    cJSON_AddItemToObject(j, "tuning", tuning_json(R));
    if (R->replay_steps > 0) {
        cJSON *rp = cJSON_AddObjectToObject(j, "replay");
        cJSON_AddNumberToObject(rp, "steps", (double)R->replay_steps);
        cJSON_AddNumberToObject(rp, "fused_steps", (double)R->c->fuse_steps);
        cJSON_AddNumberToObject(rp, "extraction_flops", R->extract_flops);
        cJSON_AddNumberToObject(rp, "fused_training_flops", R->train_flops);
    }
    if (fused->n_shares > 0) cJSON_AddItemToObject(j, "teacher_shares", cJSON_CreateDoubleArray(fused->shares, fused->n_shares));
    return fk_json_write_in(d->dir, "results.json", j);
}

// ---------------------------------------------------------------- outputs
// Layer similarity of the fused model on the mixed validation text, and both models' configs
// for the report's fold charts (*loaded: fm and fo are, for the caller to free).
static fk_status fold_figures(const demo_results *R, fk_model *fm, fk_model *fo, fk_analysis *an, bool *loaded) {
    fk_tokenizer *tok = NULL;
    fk_token_data td = {0};
    FK_TRY(fk_hf_load(fm, R->fused_dir));
    fk_status st = fk_hf_load(fo, R->folded_dir);
    if (st != FK_OK) { fk_model_free(fm); return st; }
    *loaded = true;
    st = cli_model_tokenizer(R->fused_dir, NULL, fm->cfg.vocab_size, &tok);
    if (st == FK_OK) st = fk_data_load_tok(R->mix_valid, tok, &td);
    if (st == FK_OK) st = fk_analyze(fm, &td, (int)R->c->ctx, 4, 32768, (int)fm->cfg.n_layer, an);
    fk_data_free(&td);
    fk_tok_free(tok);
    return st;
}

static void print_table(const demo_results *R, const summary *S, const curve *cf, const char *out);

fk_status demo_outputs(demo *d, const demo_results *R) {
    summary *S = malloc(sizeof *S);
    if (!S) return fk_error(FK_ERR_NOMEM, "out of memory");
    summarise(R, S);
    fk_analysis an = {0};
    fk_model fm = {0}, fo = {0};
    bool have_models = false;
    fk_status st = fold_figures(R, &fm, &fo, &an, &have_models);
    curve cf, cb;
    char *mf = pj(R->fused_dir, "metrics.jsonl"), *mb = pj(R->base_dir, "metrics.jsonl");
    curve_load(mf, &cf);
    curve_load(mb, &cb);
    free(mf);
    free(mb);
    if (st == FK_OK) st = write_results(d, R, S, &cf);
    if (st == FK_OK) st = write_report(d, R, S, &cf, &cb, &an, have_models ? &fm.cfg : NULL, have_models ? &fo.cfg : NULL);
    if (st == FK_OK) print_table(R, S, &cf, d->dir);
    free(S);
    curve_free(&cf);
    curve_free(&cb);
    fk_analysis_free(&an);
    if (have_models) { fk_model_free(&fm); fk_model_free(&fo); }
    return st;
}

// The table on stdout: every model on every domain (means over seeds, with sd), the paired
// comparisons and the tuned settings.
static void print_table(const demo_results *R, const summary *S, const curve *cf, const char *out) {
    printf("\n%-9s %-27s %-13s %-8s %9s", "model", "role", "arch", "tokens", "params");
    for (int k = 0; k < N_DOM; k++) printf(" %8s", fk_synth_domains[k]);
    printf(" %8s %7s %7s %8s\n", "mean bpb", "sd", "probes", "tok/s");
    for (int i = 0; i < R->n_rows; i++) {
        const model_row *r = &S->mean[i];
        printf("%-9s %-27s %-13s %-8s %9lld", r->name, r->role, r->arch, r->tok, (long long)r->params);
        for (int k = 0; k < N_DOM; k++) printf(" %8.3f", r->bpb[k]);
        if (R->n_seeds > 1) printf(" %8.4f %7.4f", r->avg_bpb, S->sd[i]);
        else printf(" %8.4f %7s", r->avg_bpb, "-");
        printf(" %6.1f%% %8.0f\n", 100 * r->avg_acc, r->tokens_per_s);
    }
    if (cf->n_shares == 3)
        printf("\nfusion weights (share of positions per teacher, first seed): B %.2f, A %.2f, C %.2f\n", cf->shares[0], cf->shares[1],
               cf->shares[2]);
    printf("\ntuned on the validation splits (%d trials per arm, seed %lld):", R->c->trials, (long long)R->seeds[0]);
    for (int a = 0; a < R->n_arms; a++) {
        const trial_set *t = &R->tune[a].set[R->tune[a].chosen];
        if (R->arms[a]->kind == ARM_FUSE)
            printf(" %s lambda %.2g lr %.2g vmap %s;", R->arms[a]->name, t->lambda, t->lr, vmap_name(t->vmap));
        else printf(" %s lr %.2g;", R->arms[a]->name, t->lr);
    }
    printf("\npaired differences of mean test bits per byte over %d seed%s (95%% t interval):\n", R->n_seeds, R->n_seeds > 1 ? "s" : "");
    for (int i = 0; i < S->n_pairs; i++) {
        const pair_row *p = &S->pairs[i];
        char name[48];
        pair_name(R, p, name, sizeof name);
        if (p->interval)
            printf("  %-20s %+.4f [%+.4f, %+.4f]  %+.2f%% [%+.2f%%, %+.2f%%]  n=%d\n", name, p->diff, p->lo, p->hi, 100 * p->rel,
                   100 * p->rel_lo, 100 * p->rel_hi, p->n);
        else printf("  %-20s %+.4f (%+.2f%%)  n=1: no interval\n", name, p->diff, 100 * p->rel);
    }
    int fu = N_SRC + demo_arm_index(R, "fused"), bl = N_SRC + demo_arm_index(R, "baseline"), fo = N_SRC + demo_arm_index(R, "folded");
    printf("fused vs baseline, mean held-out bits per byte: %.4f vs %.4f (%+.2f%%); folded: %.4f with %.0f%% fewer FFN parameters\n",
           S->mean[fu].avg_bpb, S->mean[bl].avg_bpb, 100 * (S->mean[fu].avg_bpb / S->mean[bl].avg_bpb - 1), S->mean[fo].avg_bpb,
           100 * (1 - (double)S->mean[fo].ffn_params / (double)S->mean[fu].ffn_params));
    printf("report: %s/report.html  (%.0f s)\n", out, R->secs);
}
