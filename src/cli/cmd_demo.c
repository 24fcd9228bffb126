// fusekit demo: the whole system on the embedded synthetic corpus, end to end, in minutes.
//
//   1. data      fusekit data synth: four domains (arith, facts, grammar, records) with splits and probes
//   2. sources   three specialists with their own tokenizers and architectures:
//                  A  Llama style, byte-level BPE (digits split), mostly arithmetic
//                  B  Llama style with grouped-query attention, SentencePiece-style BPE, mostly facts
//                  C  GPT-2 style, byte-level BPE (GPT-2 pre-tokenizer), mostly grammar and records
//   3. fusion    the target, initialised from B, trained on a small mixed corpus with
//                lambda * CLM + (1 - lambda) * fused teacher distributions (A, B and C: fusekit fuse)
//   4. baseline  the same initialisation, corpus, steps and schedule with the CLM loss only
//   5. fold      the fused model folded by an FFN budget and healed by distillation (fusekit fold)
//   6. eval      every model on every domain's held-out test split and probes; report.html
//
// Each step fills a verb's options struct and calls its entry point (cli_X_exec) in this process,
// with its output in DIR/logs; DIR/commands.sh holds each step as the fusekit command those
// options render to (cli_render), so every number can be reproduced one command at a time.
#include "cli.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define N_DOM FK_SYNTH_N_DOMAINS
#define N_SRC 3
#define N_MODELS 6  // A, B, C, baseline, fused, folded

typedef struct {
    const char *name, *desc, *arch, *kind, *pre;
    int vocab;
    const char *domains[2];  // mostly trained on these (and a slice of the mixed corpus)
    double lr;
} demo_source;

static const demo_source sources[N_SRC] = {
    {"A", "Llama style, byte-level BPE 384 (digits split), arithmetic", "llama", "bpe", "qwen2", 384, {"arith", NULL}, 3e-3},
    {"B", "Llama style + GQA, SentencePiece-style BPE 512, facts", "llama", "spm", NULL, 512, {"facts", NULL}, 3e-3},
    {"C", "GPT-2 style, byte-level BPE 768, grammar and records", "gpt2", "bpe", "gpt-2", 768, {"grammar", "records"}, 5e-3},
};

typedef struct {
    int64_t synth_bytes, heldout_bytes, probes;
    int64_t d_model, layers, heads, ctx, batch, src_steps;
    int64_t mix_slice;       // bytes of the mixed corpus each source also sees
    int64_t fuse_bytes;      // the fusion corpus: the first bytes of mix/train.txt
    int64_t fuse_steps, eval_every, heal_steps;
    double fuse_lr, lambda, budget;
} demo_cfg;

static const demo_cfg cfg_quick = {60000, 8000, 100, 64, 2, 4, 64, 16, 600, 20000, 40000, 150, 25, 80, 2e-3, 0.5, 0.25};
static const demo_cfg cfg_full = {120000, 12000, 250, 96, 3, 4, 128, 16, 600, 30000, 80000, 300, 25, 150, 2e-3, 0.7, 0.25};

typedef struct {
    const char *dir;
    double t0;
    FILE *commands;
    int step;
} demo;

static void say(demo *d, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "[%5.1fs] ", fk_time_s() - d->t0);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fflush(stderr);
}

// One step's command: its option rows, written into commands.sh as those differing from defs
// (the same rows over a default-initialised struct), and rest (NULL: none) after "--" (fold's
// healing options) against rest_defs: a line a user can rerun.
typedef struct {
    const char *verb;
    const cli_opt *rows, *defs, *rest, *rest_defs;
} step_cmd;

// A step's stdout and stderr sent to DIR/logs/NN-<log>.log while it runs in this process.
typedef struct {
    const char *log;
    char *path;
    int so, se;  // the demo's own stdout and stderr
} step_io;

// Writes the step's command line and sends stdout and stderr to its log. Returns 0, or the exit
// code after the error.
static int step_begin(demo *d, const char *log, const step_cmd *cmd, step_io *io) {
    cli_render(d->commands, cmd->verb, cmd->rows, cmd->defs);
    if (cmd->rest) {
        fputs(" '--'", d->commands);
        cli_render_rows(d->commands, cmd->rest, cmd->rest_defs);
    }
    fprintf(d->commands, "  # %s\n", log);
    fflush(d->commands);
    char name[128];
    snprintf(name, sizeof name, "logs/%02d-%s.log", ++d->step, log);
    *io = (step_io){.log = log, .path = fk_path_join(d->dir, name)};
    fflush(stdout);
    fflush(stderr);
    int fd = io->path ? open(io->path, O_WRONLY | O_CREAT | O_TRUNC, 0644) : -1;
    if (fd < 0) {
        fprintf(stderr, "fusekit demo: error: cannot create %s\n", io->path ? io->path : name);
        free(io->path);
        return 1;
    }
    io->so = dup(1);
    io->se = dup(2);
    dup2(fd, 1);
    dup2(fd, 2);
    close(fd);
    return 0;
}

// Puts stdout and stderr back after the step ran with exit code rc; a failed step's last output
// is shown. Returns rc.
static int step_end(step_io *io, int rc) {
    fflush(stdout);
    fflush(stderr);
    dup2(io->so, 1);
    dup2(io->se, 2);
    close(io->so);
    close(io->se);
    if (rc != 0) {
        fprintf(stderr, "fusekit demo: error: step '%s' failed (exit %d); its output:\n", io->log, rc);
        char *text = NULL;
        size_t n = 0;
        if (fk_read_file(io->path, &text, &n) == FK_OK) {
            size_t from = n > 3000 ? n - 3000 : 0;
            fwrite(text + from, 1, n - from, stderr);
        }
        free(text);
    }
    free(io->path);
    return rc;
}

// Trains with t's options (fusekit train), its line in commands.sh and its output in the log.
static int run_train(demo *d, const char *log, cli_train_args *t) {
    cli_train_args t0;
    cli_train_args_init(&t0);
    cli_opt rows[CLI_TRAIN_ROWS], defs[CLI_TRAIN_ROWS];
    cli_train_rows(t, rows);
    cli_train_rows(&t0, defs);
    cli_rows_mark_set(rows, defs);
    cli_train_given(rows, &t->job);
    step_io io;
    int rc = step_begin(d, log, &(step_cmd){"train", rows, defs, NULL, NULL}, &io);
    return rc != 0 ? rc : step_end(&io, cli_train_exec(t));
}

static char *pj(const char *a, const char *b) { return fk_path_join(a, b); }
static char *pj3(const char *a, const char *b, const char *c) {
    char *t = fk_path_join(a, b), *r = t ? fk_path_join(t, c) : NULL;
    free(t);
    return r;
}

// Appends whole lines of src (up to max bytes, 0 = all) to the growing buffer.
static fk_status append_file(const char *src, int64_t max, char **buf, size_t *n) {
    char *t;
    size_t len;
    FK_TRY(fk_read_file(src, &t, &len));
    if (max > 0 && (size_t)max < len) {
        len = (size_t)max;
        while (len > 0 && t[len - 1] != '\n') len--;
    }
    char *g = realloc(*buf, *n + len + 1);
    if (!g) { free(t); return fk_error(FK_ERR_NOMEM, "out of memory"); }
    memcpy(g + *n, t, len);
    *n += len;
    g[*n] = 0;
    *buf = g;
    free(t);
    return FK_OK;
}

// A rerun starts afresh: the folders an earlier demo wrote are removed, but only in a folder
// that an earlier demo made (commands.sh is there) or an empty one.
static fk_status demo_clean(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return FK_OK;  // created below
    int entries = 0;
    for (struct dirent *e; (e = readdir(d));) entries += strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0;
    closedir(d);
    char *marker = fk_path_join(dir, "commands.sh");
    bool ours = marker && fk_path_exists(marker);
    free(marker);
    if (entries == 0) return FK_OK;
    if (!ours) return fk_error(FK_ERR_ARG, "%s exists and is not a fusekit demo folder (no commands.sh): choose another -o", dir);
    const char *sub[] = {"logs", "models", "tokenizers", "corpus", "data", "report.html", "results.json", "commands.sh"};
    for (size_t i = 0; i < sizeof sub / sizeof *sub; i++) {
        char *p = fk_path_join(dir, sub[i]);
        if (p && fk_remove_tree(p) != FK_OK) {
            fk_status st = fk_error(FK_ERR_IO, "cannot remove %s from an earlier demo", p);
            free(p);
            return st;
        }
        free(p);
    }
    return FK_OK;
}

// ---------------------------------------------------------------- evaluation
typedef struct {
    const char *name, *role;
    char *dir;
    char arch[64], tok[64];
    int64_t params, ffn_params;
    double bpb[N_DOM], avg_bpb;
    double acc[N_DOM], avg_acc;
    double tokens_per_s;
} model_row;

static fk_status evaluate(const char *data_dir, model_row *r, int64_t ctx) {
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
    for (int k = 0; k < N_DOM && st == FK_OK; k++) {
        char *dd = pj(data_dir, fk_synth_domains[k]);
        char *test = dd ? pj(dd, "test.txt") : NULL, *probes = dd ? pj(dd, "probes.jsonl") : NULL;
        fk_token_data d;
        st = test && probes ? fk_data_load_tok(test, tok, &d) : fk_error(FK_ERR_NOMEM, "out of memory");
        if (st == FK_OK) {
            fk_eval_result er;
            double t0 = fk_time_s();
            st = fk_eval_data(&m, &d, (int)ctx, 8, 0, &er);
            secs += fk_time_s() - t0;
            tokens += (double)er.tokens;
            r->bpb[k] = er.bpb;
            fk_data_free(&d);
        }
        if (st == FK_OK) {
            fk_probe_result pr;
            st = fk_probes_eval(&m, tok, probes, 0, &pr);
            if (st == FK_OK) r->acc[k] = pr.accuracy;
            fk_probe_result_free(&pr);
        }
        free(test);
        free(probes);
        free(dd);
        r->avg_bpb += r->bpb[k] / N_DOM;
        r->avg_acc += r->acc[k] / N_DOM;
    }
    r->tokens_per_s = secs > 0 ? tokens / secs : 0;
    fk_tok_free(tok);
    fk_model_free(&m);
    if (st != FK_OK) fk_error_context(st, "evaluating %s", r->dir);
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
        cJSON *s = cJSON_GetObjectItem(j, "step"), *v = cJSON_GetObjectItem(j, "val_bpb"), *l = cJSON_GetObjectItem(j, "loss");
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

// ---------------------------------------------------------------- the report
static void table_html(fk_sbuf *b, const model_row *rows, int n) {
    fk_sb(b, "<table><tr><th>model</th><th>role</th><th>architecture</th><th>tokenizer</th><th>parameters</th>");
    for (int k = 0; k < N_DOM; k++) fk_sb(b, "<th>%s bpb</th>", fk_synth_domains[k]);
    fk_sb(b, "<th>mean bpb</th><th>probe accuracy</th><th>tokens/s</th></tr>");
    for (int i = 0; i < n; i++) {
        const model_row *r = &rows[i];
        fk_sb(b, "<tr><td><b>%s</b></td><td>%s</td><td>%s</td><td>%s</td><td>%lld</td>", r->name, r->role, r->arch, r->tok,
              (long long)r->params);
        for (int k = 0; k < N_DOM; k++) fk_sb(b, "<td>%.3f</td>", r->bpb[k]);
        fk_sb(b, "<td><b>%.3f</b></td><td>%.1f%%</td><td>%.0f</td></tr>", r->avg_bpb, 100 * r->avg_acc, r->tokens_per_s);
    }
    fk_sb(b, "</table>");
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

static fk_status write_report(const demo *d, const model_row *rows, const curve *fused, const curve *base, const fk_analysis *an,
                              const fk_config *before, const fk_config *after, const char *teachers[], int n_teachers, double secs,
                              bool quick) {
    fk_sbuf b = {0};
    fk_sb(&b, "<!DOCTYPE html><html><head><meta charset='utf-8'><title>fusekit demo</title><style>"
              "body{font-family:sans-serif;margin:24px;max-width:1100px;color:#222}h3{margin:22px 0 4px}"
              "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 7px;text-align:right}"
              "td:first-child,th:first-child,td:nth-child(2),td:nth-child(3),td:nth-child(4){text-align:left}"
              "p.note{color:#555;font-size:13px}</style></head><body>");
    fk_sb(&b, "<h1>fusekit demo%s</h1><p>Three small source models, each trained mostly on its own domain of a synthetic corpus, "
              "with different tokenizers and architectures, are fused into one target (initialised from B) by continual training "
              "on a small mixed corpus. The CLM-only baseline has the same initialisation, corpus, steps and schedule. The fused model "
              "is then folded by a parameter budget and healed. Everything below is measured on held-out test splits "
              "(bits per byte, lower is better) and multiple-choice probes (accuracy; chance is 50%% for grammar, 25%% for the rest). The arithmetic test problems are sums "
              "no model saw; models this small do not learn to add in minutes, so arith stays near chance for every model "
              "and differences there are small. Total time %.0f s.</p>",
          quick ? " (quick)" : "", secs);
    table_html(&b, rows, N_MODELS);
    const char *groups[N_DOM + 1], *series[N_MODELS];
    double v[(N_DOM + 1) * N_MODELS], acc[(N_DOM + 1) * N_MODELS];
    for (int k = 0; k <= N_DOM; k++) groups[k] = k < N_DOM ? fk_synth_domains[k] : "mean";
    for (int i = 0; i < N_MODELS; i++) {
        series[i] = rows[i].name;
        for (int k = 0; k <= N_DOM; k++) {
            v[k * N_MODELS + i] = k < N_DOM ? rows[i].bpb[k] : rows[i].avg_bpb;
            acc[k * N_MODELS + i] = 100 * (k < N_DOM ? rows[i].acc[k] : rows[i].avg_acc);
        }
    }
    fk_svg_grouped_bars(&b, "Held-out bits per byte per domain (lower is better)", groups, N_DOM + 1, series, N_MODELS, v, "%.3f");
    fk_svg_grouped_bars(&b, "Probe accuracy per domain, % (higher is better; chance 50% for grammar, 25% for the rest)", groups, N_DOM + 1, series, N_MODELS, acc, "%.0f");
    // training curves
    const char *names[2] = {"fused", "baseline (CLM only)"};
    const double *xs[2] = {fused->step, base->step}, *ys[2] = {fused->val, base->val};
    int ns[2] = {fused->n_val, base->n_val};
    fk_svg_lines(&b, "Training: held-out bits per byte on the mixed validation text", names, 2, xs, ys, ns, "step", "bpb");
    const double *lx[2] = {fused->lstep, base->lstep}, *ly[2] = {fused->loss, base->loss};
    int ln[2] = {fused->n_loss, base->n_loss};
    fk_svg_lines(&b, "Training loss (fused: lambda * CLM + (1 - lambda) * fusion; baseline: CLM)", names, 2, lx, ly, ln, "step", "nats");
    if (fused->n_shares == n_teachers)
        fk_svg_bars(&b, "Fusion weights: the share of positions each teacher supplied (MinCE picks the teacher with the lowest "
                        "cross-entropy on each sequence)", fused->shares, n_teachers, 1.0, teachers);
    report_layers(&b, an);
    report_fold(&b, before, after);
    fk_sb(&b, "<p class='note'>Files: results.json (these numbers), commands.sh (every step as a fusekit command), logs/ (each "
              "step's output), models/ (Hugging Face-style folders), data/ (the corpus and probes). Directory: ");
    fk_sb_text(&b, d->dir);
    fk_sb(&b, "</p></body></html>\n");
    return fk_sb_write_in(&b, d->dir, "report.html");
}

static fk_status write_results(const demo *d, const model_row *rows, const curve *fused, double secs, bool quick) {
    cJSON *j = cJSON_CreateObject(), *arr = cJSON_AddArrayToObject(j, "models");
    cJSON_AddBoolToObject(j, "quick", quick);
    cJSON_AddNumberToObject(j, "seconds", round(secs * 10) / 10);
    cJSON_AddItemToObject(j, "domains", cJSON_CreateStringArray(fk_synth_domains, N_DOM));
    for (int i = 0; i < N_MODELS; i++) {
        const model_row *r = &rows[i];
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "name", r->name);
        cJSON_AddStringToObject(o, "role", r->role);
        cJSON_AddStringToObject(o, "dir", r->dir);
        cJSON_AddStringToObject(o, "arch", r->arch);
        cJSON_AddStringToObject(o, "tokenizer", r->tok);
        cJSON_AddNumberToObject(o, "params", (double)r->params);
        cJSON_AddNumberToObject(o, "ffn_params", (double)r->ffn_params);
        cJSON *bpb = cJSON_AddObjectToObject(o, "bpb"), *acc = cJSON_AddObjectToObject(o, "accuracy");
        for (int k = 0; k < N_DOM; k++) {
            cJSON_AddNumberToObject(bpb, fk_synth_domains[k], r->bpb[k]);
            cJSON_AddNumberToObject(acc, fk_synth_domains[k], r->acc[k]);
        }
        cJSON_AddNumberToObject(o, "mean_bpb", r->avg_bpb);
        cJSON_AddNumberToObject(o, "mean_accuracy", r->avg_acc);
        cJSON_AddNumberToObject(o, "tokens_per_s", round(r->tokens_per_s));
        cJSON_AddItemToArray(arr, o);
    }
    if (fused->n_shares > 0) cJSON_AddItemToObject(j, "teacher_shares", cJSON_CreateDoubleArray(fused->shares, fused->n_shares));
    return fk_json_write_in(d->dir, "results.json", j);
}

// ---------------------------------------------------------------- the pipeline
static int demo_fail(const char *what, fk_status st) {
    if (st != FK_OK) fk_error_context(st, "%s", what);
    return cli_fail("demo", st);
}

// One demo run: its settings and every path it writes (all under d.dir).
typedef struct {
    demo d;
    const demo_cfg *c;
    bool quick;
    int64_t seed, threads;
    char *logs, *models, *data, *corpus, *toks;
    char *mix_train, *mix_valid, *fusion_text, *src_text[N_SRC], *src_dir[N_SRC];
    char *fused_dir, *base_dir, *folded_dir;
} demo_run;

static void demo_run_free(demo_run *r) {
    if (r->d.commands) fclose(r->d.commands);
    char **all[] = {&r->logs, &r->models, &r->data, &r->corpus, &r->toks, &r->mix_train, &r->mix_valid, &r->fusion_text,
                    &r->fused_dir, &r->base_dir, &r->folded_dir};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) free(*all[i]);
    for (int s = 0; s < N_SRC; s++) { free(r->src_text[s]); free(r->src_dir[s]); }
}

// The paths, a clean output folder and commands.sh's first line.
static fk_status demo_open(demo_run *r, const char *out) {
    r->logs = pj(out, "logs");
    r->models = pj(out, "models");
    r->data = pj(out, "data");
    r->corpus = pj(out, "corpus");
    r->toks = pj(out, "tokenizers");
    r->mix_train = pj3(r->data, "mix", "train.txt");
    r->mix_valid = pj3(r->data, "mix", "valid.txt");
    r->fusion_text = pj(r->corpus, "fusion.txt");
    r->fused_dir = pj(r->models, "fused");
    r->base_dir = pj(r->models, "baseline");
    r->folded_dir = pj(r->models, "folded");
    for (int s = 0; s < N_SRC; s++) {
        char name[32];
        snprintf(name, sizeof name, "source-%s.txt", sources[s].name);
        r->src_text[s] = pj(r->corpus, name);
        r->src_dir[s] = pj(r->models, sources[s].name);
    }
    fk_status st = demo_clean(out);
    if (st == FK_OK) st = fk_mkdir_p(r->logs);
    if (st == FK_OK) st = fk_mkdir_p(r->models);
    if (st == FK_OK) st = fk_mkdir_p(r->corpus);
    if (st == FK_OK) st = fk_mkdir_p(r->toks);
    char *cmdp = pj(out, "commands.sh");
    if (st == FK_OK && !(r->d.commands = fopen(cmdp, "w"))) st = fk_error(FK_ERR_IO, "cannot create %s", cmdp);
    free(cmdp);
    if (st == FK_OK)
        fprintf(r->d.commands, "# The steps of `fusekit demo%s -o %s`, as fusekit commands (run from the same folder).\n", r->quick ? " --quick" : "", out);
    return st;
}

// Each source's own domains plus a slice of the mix, and the fusion corpus: the first bytes of the mix.
static fk_status write_corpora(const demo_run *r) {
    fk_status st = FK_OK;
    for (int s = 0; s < N_SRC && st == FK_OK; s++) {
        char *buf = NULL;
        size_t n = 0;
        for (int k = 0; k < 2 && sources[s].domains[k] && st == FK_OK; k++) {
            char *f = pj3(r->data, sources[s].domains[k], "train.txt");
            st = append_file(f, 0, &buf, &n);
            free(f);
        }
        if (st == FK_OK) st = append_file(r->mix_train, r->c->mix_slice, &buf, &n);
        if (st == FK_OK) st = fk_write_file_atomic(r->src_text[s], buf, n);
        free(buf);
    }
    if (st == FK_OK) {
        char *buf = NULL;
        size_t n = 0;
        st = append_file(r->mix_train, r->c->fuse_bytes, &buf, &n);
        if (st == FK_OK) st = fk_write_file_atomic(r->fusion_text, buf, n);
        free(buf);
    }
    return st;
}

// 1. the synthetic corpus, and the training corpora cut from it. Returns the exit code.
static int step_corpus(demo_run *r) {
    const demo_cfg *c = r->c;
    say(&r->d, "synthetic corpus: 4 domains, %lld bytes of training text each -> %s\n", (long long)c->synth_bytes, r->data);
    cli_synth_args a, a0;
    cli_synth_args_init(&a);
    cli_synth_args_init(&a0);
    a.out.path = r->data;
    a.o.seed = (uint64_t)r->seed;
    a.o.bytes_per_domain = c->synth_bytes;
    a.o.heldout_bytes = c->heldout_bytes;
    a.o.probes_per_domain = c->probes;
    cli_opt rows[CLI_SYNTH_ROWS], defs[CLI_SYNTH_ROWS];
    cli_synth_rows(&a, rows);
    cli_synth_rows(&a0, defs);
    step_io io;
    int rc = step_begin(&r->d, "synth", &(step_cmd){"data synth", rows, defs, NULL, NULL}, &io);
    if (rc == 0) rc = step_end(&io, cli_synth_exec(&a));
    if (rc != 0) return rc;
    fprintf(r->d.commands, "# corpus/ is cut from data/ by the demo itself: source-X.txt is X's domains' train.txt and the first %lld bytes of "
            "mix/train.txt, fusion.txt the first %lld bytes of mix/train.txt (whole lines)\n", (long long)c->mix_slice, (long long)c->fuse_bytes);
    fk_status st = write_corpora(r);
    return st == FK_OK ? 0 : demo_fail("writing the training corpora", st);
}

// 2. source s: its tokenizer, then the model trained on its corpus. Returns the exit code.
static int step_source(demo_run *r, int s) {
    const demo_source *S = &sources[s];
    const demo_cfg *c = r->c;
    char *tdir = pj(r->toks, S->name), log[32];
    cli_tok_train_args a, a0;
    cli_tok_train_args_init(&a);
    cli_tok_train_args_init(&a0);
    a.data.v[a.data.n++] = r->src_text[s];
    a.o.vocab_size = S->vocab;
    a.kind = strcmp(S->kind, "spm") == 0;
    if (S->pre) a.o.pre = S->pre;
    else a.o.split_digits = true;
    a.pre_given = S->pre != NULL;
    a.out.path = tdir;
    cli_opt rows[CLI_TOK_TRAIN_ROWS], defs[CLI_TOK_TRAIN_ROWS];
    cli_tok_train_rows(&a, rows);
    cli_tok_train_rows(&a0, defs);
    snprintf(log, sizeof log, "tokenizer-%s", S->name);
    step_io io;
    int rc = step_begin(&r->d, log, &(step_cmd){"tokenizer train", rows, defs, NULL, NULL}, &io);
    if (rc == 0) rc = step_end(&io, cli_tok_train_exec(&a));
    if (rc == 0) {
        say(&r->d, "source %s: %s, %lld steps\n", S->name, S->desc, (long long)c->src_steps);
        cli_train_args t;
        cli_train_args_init(&t);
        fk_train_job *j = &t.job;
        j->data = r->src_text[s];
        j->tokenizer = tdir;
        j->shape.arch = strcmp(S->arch, "llama") == 0 ? FK_SHAPE_LLAMA : FK_SHAPE_GPT2;
        j->shape.d_model = c->d_model;
        j->shape.layers = c->layers;
        j->shape.heads = c->heads;
        if (j->shape.arch == FK_SHAPE_LLAMA && s == 1) j->shape.kv_heads = c->heads / 2;
        j->shape.ctx = c->ctx;
        j->o.batch = (int)c->batch;
        j->o.steps = c->src_steps;
        j->o.optim.lr = (float)S->lr;
        j->o.seed = (uint64_t)r->seed;
        t.threads = r->threads;
        j->o.eval_every = c->src_steps;
        j->o.log_every = 50;
        j->out = r->src_dir[s];
        snprintf(log, sizeof log, "source-%s", S->name);
        rc = run_train(&r->d, log, &t);
    }
    free(tdir);
    return rc;
}

// Fusion's and the baseline's schedule: the same steps, batch, learning rate, evaluation and seed.
static void fuse_schedule(const demo_run *r, fk_train_job *j) {
    const demo_cfg *c = r->c;
    j->o.steps = c->fuse_steps;
    j->o.batch = (int)c->batch;
    j->o.optim.lr = (float)c->fuse_lr;
    j->val = r->mix_valid;
    j->o.eval_every = c->eval_every;
    j->o.log_every = 5;
    j->o.seed = (uint64_t)r->seed;
}

// 3. fusion and 4. the baseline: the same initialisation, corpus and schedule. Returns the exit code.
static int step_fuse(demo_run *r) {
    const demo_cfg *c = r->c;
    say(&r->d, "fusion: target initialised from B, teachers A, B, C (MinCE, lambda %.2f), %lld steps on %lld bytes of mixed text\n",
        c->lambda, (long long)c->fuse_steps, (long long)c->fuse_bytes);
    cli_fuse_args a, a0;
    cli_fuse_args_init(&a);
    cli_fuse_args_init(&a0);
    a.job.target = r->src_dir[1];
    a.job.sources = (fk_path_list){{r->src_dir[0], r->src_dir[2]}, 2};
    fk_train_job *j = &a.job.train;
    j->data = r->fusion_text;
    j->lambda = (float)c->lambda;
    j->fo.tail = true;
    j->ao.vmap = FK_VMAP_EXACT;
    fuse_schedule(r, j);
    a.threads = r->threads;
    j->out = r->fused_dir;
    cli_opt rows[CLI_FUSE_ROWS], defs[CLI_FUSE_ROWS];
    cli_fuse_rows(&a, rows);
    cli_fuse_rows(&a0, defs);
    cli_rows_mark_set(rows, defs);
    cli_train_given(rows, j);
    step_io io;
    int rc = step_begin(&r->d, "fuse", &(step_cmd){"fuse", rows, defs, NULL, NULL}, &io);
    if (rc == 0) rc = step_end(&io, cli_fuse_exec(&a));
    if (rc != 0) return rc;
    say(&r->d, "baseline: the same initialisation, corpus, steps and schedule, CLM loss only\n");
    cli_train_args b;
    cli_train_args_init(&b);
    b.job.init = r->src_dir[1];
    b.job.data = r->fusion_text;
    fuse_schedule(r, &b.job);
    b.threads = r->threads;
    b.job.out = r->base_dir;
    return run_train(&r->d, "baseline", &b);
}

// 5. fold and heal the fused model. Returns the exit code.
static int step_fold(demo_run *r) {
    const demo_cfg *c = r->c;
    say(&r->d, "fold: %.0f%% of the fused model's FFN parameters, then %lld healing steps\n", 100 * c->budget, (long long)c->heal_steps);
    cli_fold_args a, a0;
    cli_fold_args_init(&a);
    cli_fold_args_init(&a0);
    a.model = r->fused_dir;
    a.data = r->fusion_text;
    a.budget = c->budget;
    a.heal_steps = c->heal_steps;
    a.edges = true;
    a.threads = r->threads;
    a.out = r->folded_dir;
    a.heal.job.o.batch = (int)c->batch;
    a.heal.job.val = r->mix_valid;
    a.heal.job.o.eval_every = c->heal_steps;
    a.heal.job.o.seed = (uint64_t)r->seed;
    cli_opt rows[CLI_FOLD_ROWS], defs[CLI_FOLD_ROWS], heal[CLI_TRAIN_ROWS], heal0[CLI_TRAIN_ROWS];
    cli_fold_rows(&a, rows);
    cli_fold_rows(&a0, defs);
    // the healing options after "--": train's rows without those heal sets itself, as fold parses them
    cli_train_job_rows(&a.heal.job, &a.heal.threads, cli_heal_sets, heal);
    cli_train_job_rows(&a0.heal.job, &a0.heal.threads, cli_heal_sets, heal0);
    cli_rows_mark_set(heal, heal0);
    cli_train_given(heal, &a.heal.job);
    step_io io;
    int rc = step_begin(&r->d, "fold", &(step_cmd){"fold", rows, defs, heal, heal0}, &io);
    return rc != 0 ? rc : step_end(&io, cli_fold_exec(&a));
}

// The table on stdout: every model on every domain, the fusion weights and the headline comparison.
static void print_table(const model_row *rows, const curve *cf, const char *out, double secs) {
    printf("\n%-9s %-26s %-13s %-8s %9s", "model", "role", "arch", "tokens", "params");
    for (int k = 0; k < N_DOM; k++) printf(" %8s", fk_synth_domains[k]);
    printf(" %8s %7s %8s\n", "mean bpb", "probes", "tok/s");
    for (int i = 0; i < N_MODELS; i++) {
        const model_row *r = &rows[i];
        printf("%-9s %-26s %-13s %-8s %9lld", r->name, r->role, r->arch, r->tok, (long long)r->params);
        for (int k = 0; k < N_DOM; k++) printf(" %8.3f", r->bpb[k]);
        printf(" %8.3f %6.1f%% %8.0f\n", r->avg_bpb, 100 * r->avg_acc, r->tokens_per_s);
    }
    if (cf->n_shares == 3) printf("\nfusion weights (share of positions per teacher): B %.2f, A %.2f, C %.2f\n", cf->shares[0], cf->shares[1], cf->shares[2]);
    const model_row *f = &rows[4], *bl = &rows[3];
    printf("fused vs baseline, mean held-out bits per byte: %.4f vs %.4f (%+.2f%%); folded: %.4f with %.0f%% fewer FFN parameters\n",
           f->avg_bpb, bl->avg_bpb, 100 * (f->avg_bpb / bl->avg_bpb - 1), rows[5].avg_bpb,
           100 * (1 - (double)rows[5].ffn_params / (double)f->ffn_params));
    printf("report: %s/report.html  (%.0f s)\n", out, secs);
}

// Layer similarity of the fused model on the mixed validation text, and both models' configs
// for the report's fold charts (*loaded: fm and fo are, for the caller to free).
static fk_status fold_figures(const demo_run *r, fk_model *fm, fk_model *fo, fk_analysis *an, bool *loaded) {
    fk_tokenizer *tok = NULL;
    fk_token_data td = {0};
    FK_TRY(fk_hf_load(fm, r->fused_dir));
    fk_status st = fk_hf_load(fo, r->folded_dir);
    if (st != FK_OK) { fk_model_free(fm); return st; }
    *loaded = true;
    st = cli_model_tokenizer(r->fused_dir, NULL, fm->cfg.vocab_size, &tok);
    if (st == FK_OK) st = fk_data_load_tok(r->mix_valid, tok, &td);
    if (st == FK_OK) st = fk_analyze(fm, &td, (int)r->c->ctx, 4, 32768, (int)fm->cfg.n_layer, an);
    fk_data_free(&td);
    fk_tok_free(tok);
    return st;
}

// 6. every model evaluated; results.json, report.html and the table. Returns the exit code.
static int step_report(demo_run *r, const char *out) {
    say(&r->d, "evaluation: held-out test splits and probes of every domain\n");
    model_row rows[N_MODELS] = {
        {.name = "A", .role = "source: arith", .dir = r->src_dir[0]},
        {.name = "B", .role = "source: facts", .dir = r->src_dir[1]},
        {.name = "C", .role = "source: grammar+records", .dir = r->src_dir[2]},
        {.name = "baseline", .role = "CLM only, from B", .dir = r->base_dir},
        {.name = "fused", .role = "fusion of A, B, C, from B", .dir = r->fused_dir},
        {.name = "folded", .role = "fused, folded + healed", .dir = r->folded_dir},
    };
    fk_status st = FK_OK;
    for (int i = 0; i < N_MODELS && st == FK_OK; i++) st = evaluate(r->data, &rows[i], r->c->ctx);
    fk_analysis an = {0};
    fk_model fm = {0}, fo = {0};
    bool have_models = false;
    if (st == FK_OK) st = fold_figures(r, &fm, &fo, &an, &have_models);
    double secs = fk_time_s() - r->d.t0;
    curve cf, cb;
    char *mf = pj(r->fused_dir, "metrics.jsonl"), *mb = pj(r->base_dir, "metrics.jsonl");
    curve_load(mf, &cf);
    curve_load(mb, &cb);
    free(mf);
    free(mb);
    const char *teachers[] = {"B (target)", "A", "C"};
    if (st == FK_OK) st = write_results(&r->d, rows, &cf, secs, r->quick);
    if (st == FK_OK)
        st = write_report(&r->d, rows, &cf, &cb, &an, have_models ? &fm.cfg : NULL, have_models ? &fo.cfg : NULL, teachers, 3, secs, r->quick);
    if (st == FK_OK) print_table(rows, &cf, out, secs);
    curve_free(&cf);
    curve_free(&cb);
    fk_analysis_free(&an);
    if (have_models) { fk_model_free(&fm); fk_model_free(&fo); }
    return st == FK_OK ? 0 : demo_fail("evaluating", st);
}

int cmd_demo(int argc, char **argv) {
    const char *out = "demo";
    bool quick = false;
    int64_t seed = 1, threads = 0;
    cli_opt opts[] = {
        {"-o|--out", OPT_STR, &out, "output folder: report.html, results.json, commands.sh, logs/, models/, data/", false, NULL},
        {"--quick", OPT_FLAG, &quick, "smaller corpus, models and schedules: about a minute on 2 cores (the test suite runs it)", false, NULL},
        {"--seed", OPT_INT, &seed, "seed of the corpus and of every training run", false, "[0,)"},
        {"--threads", OPT_INT, &threads, "threads (default: all cores; 1 with --quick, which runs beside other tests)", false, "[0,4096]"},
        CLI_ROWS_END,
    };
    int rc = cli_parse_verb(argc, argv, opts,
                       "usage: fusekit demo [-o DIR] [--quick]\n\n"
                       "Knowledge fusion and folding end to end on the embedded synthetic corpus (about 5 minutes on 2 cores;\n"
                       "--quick about one): three sources with different tokenizers (byte-level BPE, SentencePiece-style BPE)\n"
                       "and architectures (GPT-2, Llama) each learn mostly one domain; they are fused into a target initialised\n"
                       "from one of them, against a CLM-only baseline with the same data and steps; the fused model is folded\n"
                       "by an FFN budget and healed. Prints a table and writes DIR/report.html (open it in a browser).");
    if (rc >= 0) return rc;
    cli_out_spec os = {"-o", out, false, true};  // an earlier demo's folder is cleaned below, any other refused
    if ((rc = cli_check_output("demo", &os, NULL, 0)) != 0) return rc;
    if (quick && !cli_was_set(opts, "--threads")) threads = 1;
    cli_set_threads(threads);
    demo_run r = {.d = {.dir = out, .t0 = fk_time_s()}, .c = quick ? &cfg_quick : &cfg_full, .quick = quick, .seed = seed, .threads = threads};
    fk_status st = demo_open(&r, out);
    if (st != FK_OK) rc = demo_fail("creating the output folder", st);
    if (rc == 0) rc = step_corpus(&r);
    for (int s = 0; s < N_SRC && rc == 0; s++) rc = step_source(&r, s);
    if (rc == 0) rc = step_fuse(&r);
    if (rc == 0) rc = step_fold(&r);
    if (rc == 0) rc = step_report(&r, out);
    demo_run_free(&r);
    return rc;
}
