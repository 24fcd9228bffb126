// fusekit fold / heal / prune: redundancy folding by a parameter budget (fold.md), healing by
// distillation from the model before folding, and the baselines at the same budget.
#include "cli.h"
#include "fusekit/cluster.h"
#include "fusekit/fold.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct {
    fk_model m;
    fk_tokenizer *tok;
    fk_token_data d;
} loaded;

static void loaded_free(loaded *x) {
    fk_model_free(&x->m);
    fk_tok_free(x->tok);
    fk_data_free(&x->d);
}

static fk_status load_all(const char *model, const char *tokenizer, const char *data, loaded *x) {
    memset(x, 0, sizeof *x);
    fk_status st = cli_load_model(model, tokenizer, 0, &x->m, &x->tok);
    if (st == FK_OK) st = fk_data_load_tok(data, x->tok, &x->d);
    if (st != FK_OK) loaded_free(x);
    return st;
}

static fk_status save_model(const fk_model *m, const fk_tokenizer *tok, const char *dir) {
    FK_TRY(fk_mkdir_p(dir));
    FK_TRY(fk_hf_save(m, dir, FK_DT_F32));
    return tok ? fk_tok_save_hf(tok, dir) : FK_OK;
}

static fk_status write_text(const char *dir, const char *name, const char *text) {
    FK_TRY(fk_mkdir_p(dir));
    char *path = fk_path_join(dir, name);
    fk_status st = fk_write_file_atomic(path, text, strlen(text));
    free(path);
    return st;
}

static bool parse_scope(const char *s, fk_fold_scope *out) {
    if (!s || strcmp(s, "ffn") == 0) *out = FK_SCOPE_FFN;
    else if (strcmp(s, "blocks") == 0) *out = FK_SCOPE_BLOCKS;
    else if (strcmp(s, "all") == 0) *out = FK_SCOPE_ALL;
    else return false;
    return true;
}

typedef struct {
    const char *tokenizer, *method, *select;
    fk_fold_opts o;
    int64_t seq, batch, max_tokens, probe_windows;
    bool plan_only;
    const char *out_name;  // the output's final name in messages (written under a temporary one)
} fold_args;

// Folding to the plan's FFN widths by clusters (average linkage on 1 - |rho|, medoids as the
// representatives): Model Folding's mean-sum, or the least-squares refit with the medoids kept.
static fk_status fold_clusters(const fk_model *m, const fk_fold_plan *p, const fk_analysis *a, fk_fold_method method, double ridge, fk_model *out) {
    fk_model cur = *m;
    bool owned = false;
    fk_status st = FK_OK;
    for (int l = 0; l < m->cfg.n_layer && st == FK_OK; l++) {
        int64_t F = p->ffn_before[l];
        int k = (int)p->ffn_after[l];
        if (k == F) continue;
        double *dist = malloc((size_t)(F * F) * sizeof *dist);
        int *lab = malloc((size_t)F * sizeof *lab), *med = malloc((size_t)k * sizeof *med);
        int32_t *l32 = malloc((size_t)F * sizeof *l32), *r32 = malloc((size_t)k * sizeof *r32);
        fk_dendrogram dg = {0};
        st = dist && lab && med && l32 && r32 ? FK_OK : fk_error(FK_ERR_NOMEM, "fold: out of memory");
        if (st == FK_OK) st = fk_corr_distance(a->ffn_gram[l], a->ffn_mean[l], a->tokens, (int)F, dist);
        if (st == FK_OK) st = fk_agglomerative(dist, (int)F, &dg);
        if (st == FK_OK) st = fk_dendrogram_cut(&dg, k, lab);
        if (st == FK_OK) st = fk_cluster_medoids(dist, (int)F, lab, k, med);
        if (st == FK_OK) {
            for (int64_t f = 0; f < F; f++) l32[f] = lab[f];
            for (int j = 0; j < k; j++) r32[j] = med[j];
            fk_model next;
            st = fk_fold_ffn(&cur, l, l32, r32, k, a->ffn_gram[l], ridge, method, &next);
            if (owned) fk_model_free(&cur);
            owned = st == FK_OK;
            if (st == FK_OK) cur = next;
        }
        fk_dendrogram_free(&dg);
        free(dist); free(lab); free(med); free(l32); free(r32);
    }
    if (st != FK_OK) { if (owned) fk_model_free(&cur); return st; }
    if (owned) { *out = cur; return FK_OK; }
    return fk_model_clone(out, m);
}

static fk_status analyze_model(fk_model *m, const fk_token_data *d, const fold_args *fa, fk_analysis *a) {
    int seq = (int)(fa->seq > 0 ? fa->seq : m->cfg.max_seq);
    return fk_analyze(m, d, seq, (int)fa->batch, fa->max_tokens, 1, a);
}

// One fold of model_dir by `budget` (a fraction of its own scope) into out_dir; prints a
// summary line; *removed gets the parameters removed.
static fk_status fold_once(const char *model_dir, const char *data, const char *out_dir, const fold_args *fa, double budget, int64_t *removed) {
    loaded x;
    FK_TRY(load_all(model_dir, fa->tokenizer, data, &x));
    fk_fold_opts o = fa->o;
    o.budget = budget;
    fk_analysis a = {0};
    fk_kl_probe probe = {0};
    fk_fold_plan plan = {0}, plan2 = {0};
    fk_model mid = {0}, fin = {0};
    bool have_a = false, have_mid = false;
    int seq = (int)(fa->seq > 0 ? fa->seq : x.m.cfg.max_seq);
    int64_t before = fk_model_num_params(&x.m), scope0 = fk_fold_scope_params(&x.m, o.scope);
    double t0 = fk_time_s();
    // held-out probes: the last 10% of the calibration text calibrates and judges (layer
    // operations), the first 90% gives the statistics
    fk_token_data stats = x.d, held = x.d;
    int64_t cut = x.d.n - x.d.n / 10;
    if (x.d.n / 10 >= seq) {
        stats.n = cut;
        held.ids = x.d.ids + cut;
        held.n = x.d.n - cut;
    }
    fk_status st = analyze_model(&x.m, &stats, fa, &a);
    have_a = st == FK_OK;
    if (st == FK_OK) st = fk_kl_probe_init(&x.m, &held, (int)fa->probe_windows, seq, &probe);
    if (st == FK_OK) st = fk_fold_plan_make(&x.m, &a, &probe, &o, &plan);
    char *json = st == FK_OK ? fk_fold_plan_json(&plan) : NULL;
    if (st == FK_OK) st = write_text(out_dir, "plan.json", json);
    free(json);
    if (st == FK_OK)
        fprintf(stderr, "plan: remove %lld of %lld %s parameters (%.1f%%): %d layer operation(s), estimated KL %.4g nats (%.1f s); wrote %s/plan.json\n",
                (long long)plan.removed_params, (long long)plan.scope_params, o.scope == FK_SCOPE_FFN ? "FFN" : o.scope == FK_SCOPE_BLOCKS ? "layer" : "model",
                100.0 * (double)plan.removed_params / (double)plan.scope_params, plan.n_ops, plan.est_kl_total, fk_time_s() - t0,
                fa->out_name ? fa->out_name : out_dir);
    if (st == FK_OK && fa->plan_only) {
        for (int i = 0; i < plan.n_ops; i++)
            printf("{\"op\":\"%s\",\"layer\":%d,\"span\":%d,\"kl\":%.6g,\"params\":%lld}\n", fk_layer_op_name(plan.ops[i].kind), plan.ops[i].layer, plan.ops[i].span,
                   plan.ops[i].kl, (long long)plan.ops[i].params);
        for (int l = 0; l < plan.n_layer; l++)
            printf("{\"layer\":%d,\"ffn_before\":%lld,\"ffn_after\":%lld,\"estimated_kl\":%.6g}\n", l, (long long)plan.ffn_before[l], (long long)plan.ffn_after[l],
                   plan.est_kl[l]);
        goto done;
    }
    const fk_fold_plan *wplan = &plan;
    fk_model *src = &x.m;
    if (st == FK_OK && plan.n_ops > 0) {
        // layer operations first, then fresh statistics and the widths planned again for what is left
        st = fk_fold_plan_apply_layers(&x.m, &plan, &mid);
        have_mid = st == FK_OK;
        int64_t left = plan.budget_params - (scope0 - fk_fold_scope_params(&mid, o.scope));
        if (st == FK_OK && left > 0) {
            fk_analysis_free(&a);
            have_a = false;
            st = analyze_model(&mid, &stats, fa, &a);
            have_a = st == FK_OK;
            fk_fold_opts o2 = o;
            o2.layer_ops = false;
            o2.budget = (double)left / (double)fk_fold_scope_params(&mid, o.scope);
            if (st == FK_OK) st = fk_fold_plan_make(&mid, &a, &probe, &o2, &plan2);
            if (st == FK_OK) {
                char *j2 = fk_fold_plan_json(&plan2);
                st = write_text(out_dir, "plan-widths.json", j2);
                free(j2);
                wplan = &plan2;
            }
        } else if (st == FK_OK) {
            wplan = NULL;  // the layer operations met the budget
        }
        src = &mid;
    }
    if (st == FK_OK) {
        if (!wplan) {
            st = fk_model_clone(&fin, src);
        } else if (strcmp(fa->method, "mean-sum") == 0 || strcmp(fa->select, "medoid") == 0) {
            fk_fold_method fm = strcmp(fa->method, "mean-sum") == 0 ? FK_FOLD_MEAN_SUM : FK_FOLD_LSQ;
            // heads (if planned) by the plan, FFN units by clusters
            fk_fold_plan heads_only = *wplan;
            for (int l = 0; l < FK_MAX_LAYERS; l++) heads_only.ffn_after[l] = heads_only.ffn_before[l];
            fk_model tmp;
            st = fk_fold_plan_apply_ffn(src, &heads_only, &a, o.ridge, &tmp);
            if (st == FK_OK) {
                st = fold_clusters(&tmp, wplan, &a, fm, o.ridge, &fin);
                fk_model_free(&tmp);
            }
        } else st = fk_fold_plan_apply_ffn(src, wplan, &a, o.ridge, &fin);
    }
    double kl = NAN;
    if (st == FK_OK) st = fk_kl_probe_eval(&fin, &probe, &kl);
    if (st == FK_OK) st = save_model(&fin, x.tok, out_dir);
    if (st == FK_OK) {
        int64_t after = fk_model_num_params(&fin), removed_scope = scope0 - fk_fold_scope_params(&fin, o.scope);
        *removed = removed_scope;
        char desc[256];
        fk_config_describe(&fin.cfg, desc, sizeof desc);
        printf("{\"model\":\"%s\",\"method\":\"%s\",\"params_before\":%lld,\"params_after\":%lld,\"scope_removed\":%lld,\"scope_removed_fraction\":%.4f,"
               "\"layer_ops\":%d,\"estimated_kl\":%.6g,\"probe_kl\":%.6g,\"seconds\":%.1f}\n",
               fa->out_name ? fa->out_name : out_dir, fa->method, (long long)before, (long long)after, (long long)removed_scope, (double)removed_scope / (double)scope0, plan.n_ops,
               plan.est_kl_total + (wplan == &plan2 ? plan2.est_kl_total : 0), kl, fk_time_s() - t0);
        fprintf(stderr, "folded model: %s\n", desc);
    }
done:
    fk_model_free(&fin);
    if (have_mid) fk_model_free(&mid);
    fk_fold_plan_free(&plan);
    fk_fold_plan_free(&plan2);
    fk_kl_probe_free(&probe);
    if (have_a) fk_analysis_free(&a);
    loaded_free(&x);
    return st;
}

// fold_once into out through a temporary folder renamed when complete.
static fk_status fold_to(const char *model_dir, const char *data, const char *out, fold_args *fa, double budget, int64_t *removed) {
    cli_outdir od;
    FK_TRY(cli_outdir_begin(out, &od));
    fa->out_name = out;
    fk_status st = fold_once(model_dir, data, od.tmp, fa, budget, removed);
    fa->out_name = NULL;
    return cli_outdir_end(&od, st);
}

static const char *heal_usage =
    "usage: fusekit heal --teacher ORIGINAL --model FOLDED --data TEXT -o OUT [fusekit train options]\n\n"
    "Heals a folded (or pruned) model by distillation from the model before folding, through the\n"
    "fusion code path: ORIGINAL's top-k next-token distributions on TEXT go into a store\n"
    "(OUT/stores, cached, resumable); FOLDED is trained on lambda * CLM + (1 - lambda) * soft\n"
    "cross-entropy to them: the teacher's top-k probabilities under its full softmax, and the rest of\n"
    "its mass as a tail class (exact KL between the distributions coarsened to the top k plus the rest).\n"
    "Every fusekit train option is accepted (--steps, --lr, --batch, --val, ...).\n\n"
    "options:\n"
    "  --teacher DIR        the model before folding, a folder or .gguf (its tokenizer must be the folded model's)\n"
    "  --model DIR          the folded model (a folder or .gguf)\n"
    "  --data TEXT          healing text\n"
    "  -o, --out DIR        the healed model\n"
    "  -k N                 entries per position in the store (default 10)\n"
    "  --store-dir DIR      where the store is kept (default OUT/stores)\n"
    "  --lambda X           weight of the CLM loss (default 0.5; 0: pure distillation)\n"
    "  --lr X               peak learning rate (default 1e-4: a gentle fine-tune; heal on the original's\n"
    "                       own training text, a small text is soon overfitted)\n";

// The options healing hands to fusekit train, checked before any work (train's ranges).
static int heal_check(const char *model, const char *data, const char *out, const char *lambda, int extra_n, char **extra) {
    char **argv = calloc((size_t)extra_n + 12, sizeof *argv);
    if (!argv) return 1;
    int n = 0;
    argv[n++] = "train";
    argv[n++] = "--init"; argv[n++] = (char *)model;
    argv[n++] = "--data"; argv[n++] = (char *)data;
    argv[n++] = "-o"; argv[n++] = (char *)out;
    argv[n++] = "--lambda"; argv[n++] = (char *)lambda;
    for (int i = 0; i < extra_n; i++) argv[n++] = extra[i];
    int rc = cli_check_train_args(n, argv);
    free(argv);
    return rc;
}

static int heal_run(const char *teacher, const char *model, const char *data, const char *out, const char *store_dir, int k, const char *lambda,
                    int extra_n, char **extra) {
    char *sdir = store_dir ? strdup(store_dir) : fk_path_join(out, "stores");
    fk_status st = fk_mkdir_p(sdir);
    char *store = NULL;
    if (st == FK_OK) st = cli_extract_store(teacher, data, sdir, k, isatty(2) != 0, &store);
    int rc;
    if (st != FK_OK && cli_stop_signal) { fprintf(stderr, "fusekit heal: %s\n", fk_last_error()); rc = cli_stop_code(); }
    else if (st != FK_OK) rc = cli_fail("heal", st);
    else {
        char **argv = calloc((size_t)extra_n + 24, sizeof *argv);
        int n = 0;
        argv[n++] = "train";
        argv[n++] = "--init"; argv[n++] = (char *)model;
        argv[n++] = "--data"; argv[n++] = (char *)data;
        argv[n++] = "-o"; argv[n++] = (char *)out;
        argv[n++] = "--teacher"; argv[n++] = store;
        argv[n++] = "--lambda"; argv[n++] = (char *)lambda;
        argv[n++] = "--align-cache"; argv[n++] = sdir;
        argv[n++] = "--teacher-tail";
        // run again after an interrupt, healing resumes from the newest checkpoint in out
        char *ck = NULL;
        bool again = fk_checkpoint_latest(out, &ck) == FK_OK;
        free(ck);
        for (int i = 0; i < extra_n; i++) again = again && strcmp(extra[i], "--resume") != 0;
        if (again) argv[n++] = "--resume";
        bool lr = false;
        for (int i = 0; i < extra_n; i++) lr = lr || strcmp(extra[i], "--lr") == 0;
        if (!lr) { argv[n++] = "--lr"; argv[n++] = "1e-4"; }  // fine-tuning, not training from scratch
        for (int i = 0; i < extra_n; i++) argv[n++] = extra[i];
        cli_train_resumes_itself = true;
        rc = cmd_train(n, argv);
        cli_train_resumes_itself = false;
        free(argv);
    }
    free(store);
    free(sdir);
    return rc;
}

int cmd_heal(int argc, char **argv) {
    const char *teacher = NULL, *model = NULL, *data = NULL, *out = NULL, *store_dir = NULL, *lambda = "0.5";
    int k = 10;
    char **pass = calloc((size_t)argc + 1, sizeof *pass);
    int np = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        bool nx = i + 1 < argc;
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) { fputs(heal_usage, stdout); free(pass); return 0; }
        if (strcmp(a, "--teacher") == 0 && nx) teacher = argv[++i];
        else if (strcmp(a, "--model") == 0 && nx) model = argv[++i];
        else if (strcmp(a, "--data") == 0 && nx) data = argv[++i];
        else if ((strcmp(a, "-o") == 0 || strcmp(a, "--out") == 0) && nx) out = argv[++i];
        else if (strcmp(a, "--store-dir") == 0 && nx) store_dir = argv[++i];
        else if (strcmp(a, "--lambda") == 0 && nx) lambda = argv[++i];
        else if (strcmp(a, "-k") == 0 && nx) {
            int64_t kk;
            if (cli_parse_int("heal", "-k", argv[++i], "[1,64]", &kk)) { free(pass); return 2; }
            k = (int)kk;
        }
        else if (strcmp(a, "--init") == 0 || strcmp(a, "--resume") == 0 || strcmp(a, "--resume-from") == 0) {
            fprintf(stderr, "fusekit heal: error: %s is set by heal itself (use --model)\n", a);
            free(pass);
            return 2;
        } else pass[np++] = argv[i];
    }
    if (!teacher || !model || !data || !out) {
        fprintf(stderr, "fusekit heal: error: --teacher, --model, --data and --out are required (see --help)\n");
        free(pass);
        return 2;
    }
    {
        const char *ins[] = {teacher, model, data, store_dir};
        cli_out_spec os = {"-o", out, false, true};  // an existing OUT resumes
        int crc = cli_check_output("heal", &os, ins, 4);
        if (crc == 0) crc = heal_check(model, data, out, lambda, np, pass);
        if (crc != 0) { free(pass); return crc; }
    }
    int rc = heal_run(teacher, model, data, out, store_dir, k, lambda, np, pass);
    free(pass);
    return rc;
}

int cmd_fold(int argc, char **argv) {
    const char *model = NULL, *data = NULL, *out = NULL, *scope = "ffn", *ops = "ffn,heads,layers", *heal_data = NULL, *heal_lambda = "0.5";
    fold_args fa = {.method = "lsq", .select = "greedy", .seq = 0, .batch = 4, .max_tokens = 65536, .probe_windows = 8};
    fk_fold_opts_default(&fa.o);
    double budget = 0.3, min_width = fa.o.min_width, ridge = fa.o.ridge;
    int64_t round = 8, rounds = 1, heal_steps = 0, threads = 0;
    bool uniform = false, edges = false, force = false;
    // options after "--" go to fusekit train for healing
    int own = argc;
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--") == 0) { own = i; break; }
    cli_opt opts[] = {
        {"--model", OPT_STR, &model, "model to fold: a folder or a .gguf file (required)", false, NULL},
        {"--data", OPT_STR, &data, "calibration text or token shard (required)", false, NULL},
        {"-o|--out", OPT_STR, &out, "output folder: the folded model and plan.json (required)", false, NULL},
        {"--budget", OPT_FLOAT, &budget, "fraction of the scope's parameters to remove (default 0.3)", false, "(0,1)"},
        {"--scope", OPT_STR, &scope, "ffn | blocks | all: what --budget is a fraction of (default ffn)", false, NULL},
        {"--method", OPT_STR, &fa.method, "lsq | mean-sum: least-squares refit of kept units, or Model Folding's cluster mean/sum (default lsq)", false, NULL},
        {"--select", OPT_STR, &fa.select, "greedy | medoid: with lsq, the kept units by greedy least-squares elimination, or the medoids of average-linkage clusters of 1 - |rho| (default greedy)", false, NULL},
        {"--ops", OPT_STR, &ops, "operations allowed, comma separated: ffn, heads (not with --scope ffn), layers (default ffn,heads,layers)", false, NULL},
        {"--plan-only", OPT_FLAG, &fa.plan_only, "write plan.json and print the plan; change nothing", false, NULL},
        {"--uniform", OPT_FLAG, &uniform, "one FFN width for every layer (tools that need uniform widths load the result)", false, NULL},
        {"--round", OPT_INT, &round, "FFN widths become multiples of this (default 8)", false, "[1,65536]"},
        {"--min-width", OPT_FLOAT, &min_width, "keep at least this fraction of each layer's FFN width (default 0.3)", false, "[0,1]"},
        {"--fold-edges", OPT_FLAG, &edges, "allow folding the first and last layer", false, NULL},
        {"--ridge", OPT_FLOAT, &ridge, "least-squares ridge: lambda = ridge * mean(diag G) (default 0.01)", false, "[0,)"},
        {"--tokenizer", OPT_STR, &fa.tokenizer, "tokenizer for text (default: the model's own: tokenizer.json or the GGUF's metadata)", false, NULL},
        {"--seq", OPT_INT, &fa.seq, "window length for statistics and probes (default: the model's context)", false, "[0,1048576]"},
        {"--batch", OPT_INT, &fa.batch, "windows per forward pass while collecting statistics (default 4)", false, "[1,65536]"},
        {"--max-tokens", OPT_INT, &fa.max_tokens, "calibration positions at most, 0 = all (default 65536)", false, "[0,)"},
        {"--probe-windows", OPT_INT, &fa.probe_windows, "windows in the KL probe that calibrates the estimates (default 8)", false, "[1,65536]"},
        {"--rounds", OPT_INT, &rounds, "progressive folding: N rounds of fold -> heal, each with 1/N of the budget (default 1)", false, "[1,64]"},
        {"--heal-steps", OPT_INT, &heal_steps, "healing steps in all, split over the rounds (0: no healing; default 0)", false, "[0,)"},
        {"--heal-data", OPT_STR, &heal_data, "healing text (default --data); options after -- go to fusekit train", false, NULL},
        {"--heal-lambda", OPT_STR, &heal_lambda, "CLM weight while healing (default 0.5; 0: pure distillation)", false, NULL},
        {"--threads", OPT_INT, &threads, "threads (default: all cores)", false, "[0,4096]"},
        {"--force", OPT_FLAG, &force, "replace an existing -o when the new one is complete (with healing, an existing -o resumes)", false, NULL},
        {NULL, 0, NULL, NULL, false, NULL},
    };
    int rc = cli_parse(own, argv, opts,
                       "usage: fusekit fold --model DIR|FILE.gguf --data TEXT --budget FRACTION -o OUT [options] [-- fusekit train options for healing]\n\n"
                       "Folds a model's redundancy away (fold.md): collects statistics on TEXT, plans with the dynamic\n"
                       "threshold (every candidate ranked by estimated KL per parameter saved, guards on width and edges;\n"
                       "statistics from the first 90% of TEXT, KL probes on the last 10%),\n"
                       "writes OUT/plan.json, then applies layer operations (drop / average / LaCo merge, whichever has the\n"
                       "lowest KL), collects statistics again, and folds FFN units (least-squares refit of the down projection).\n"
                       "The result is an ordinary model folder. With --rounds N and --heal-steps S: N rounds of fold -> heal.");
    if (rc) return rc == 1 ? 0 : 2;
    if (!model || !data || !out) { fprintf(stderr, "fusekit fold: error: --model, --data and --out are required\n"); return 2; }
    if (!parse_scope(scope, &fa.o.scope)) { fprintf(stderr, "fusekit fold: error: --scope must be ffn, blocks or all (got '%s')\n", scope); return 2; }
    if (strcmp(fa.method, "lsq") != 0 && strcmp(fa.method, "mean-sum") != 0) {
        fprintf(stderr, "fusekit fold: error: --method must be lsq or mean-sum (got '%s')\n", fa.method);
        return 2;
    }
    if (strcmp(fa.select, "greedy") != 0 && strcmp(fa.select, "medoid") != 0) {
        fprintf(stderr, "fusekit fold: error: --select must be greedy or medoid (got '%s')\n", fa.select);
        return 2;
    }
    fa.o.ffn_ops = strstr(ops, "ffn") != NULL;
    fa.o.layer_ops = strstr(ops, "layers") != NULL;
    fa.o.head_ops = strstr(ops, "heads") != NULL;
    if (!fa.o.ffn_ops && !fa.o.layer_ops && !fa.o.head_ops) { fprintf(stderr, "fusekit fold: error: --ops must name ffn, heads or layers (got '%s')\n", ops); return 2; }
    if (!(budget > 0 && budget < 1)) { fprintf(stderr, "fusekit fold: error: --budget must be a fraction in (0, 1) (got %g)\n", budget); return 2; }
    if (rounds < 1 || rounds > 64) { fprintf(stderr, "fusekit fold: error: --rounds must be 1 to 64 (got %lld)\n", (long long)rounds); return 2; }
    if (rounds > 1 && heal_steps <= 0) { fprintf(stderr, "fusekit fold: error: --rounds needs --heal-steps (progressive folding heals between rounds)\n"); return 2; }
    if (fa.probe_windows < 1 || fa.batch < 1) { fprintf(stderr, "fusekit fold: error: --probe-windows and --batch must be positive\n"); return 2; }
    double hl;
    if (cli_parse_float("fold", "--heal-lambda", heal_lambda, "[0,1]", &hl)) return 2;
    bool healing = rounds > 1 || heal_steps > 0;
    {
        const char *ins[] = {model, data, heal_data, fa.tokenizer};
        // healing trains into OUT, and the same command run again resumes there
        cli_out_spec os = {"-o", out, force, healing};
        if ((rc = cli_check_output("fold", &os, ins, 4)) != 0) return rc;
        if (healing) {  // train's options for healing, checked before folding
            char **extra = calloc((size_t)argc + 3, sizeof *extra);
            if (!extra) return 1;
            int ne = 0;
            extra[ne++] = "--steps";
            extra[ne++] = "1";
            for (int i = own + 1; i < argc; i++) extra[ne++] = argv[i];
            rc = heal_check(model, heal_data ? heal_data : data, out, heal_lambda, ne, extra);
            free(extra);
            if (rc != 0) return rc;
        }
    }
    fa.o.round = (int)round;
    fa.o.min_width = min_width;
    fa.o.ridge = ridge;
    fa.o.uniform = uniform;
    fa.o.fold_edges = edges;
    cli_set_threads(threads);
    if (fa.plan_only) {
        int64_t removed = 0;
        fk_status st = fold_to(model, data, out, &fa, budget, &removed);
        return st == FK_OK ? 0 : cli_fail("fold", st);
    }
    // the original's scope size fixes the budget in parameters for every round
    fk_model m0;
    fk_status st = fk_model_load(model, FK_LOAD_FROZEN, &m0, NULL);
    if (st != FK_OK) return cli_fail("fold", st);
    int64_t scope0 = fk_fold_scope_params(&m0, fa.o.scope), target = (int64_t)ceil(budget * (double)scope0), done = 0;
    fk_model_free(&m0);
    char *cur = strdup(model);
    const char *hdata = heal_data ? heal_data : data;
    rc = 0;
    for (int r = 1; r <= rounds && rc == 0; r++) {
        bool last = r == rounds;
        char name[64];
        snprintf(name, sizeof name, "round-%d", r);
        char *rdir = rounds > 1 || heal_steps > 0 ? fk_path_join(out, name) : strdup(out);
        char *fdir = rounds > 1 || heal_steps > 0 ? fk_path_join(rdir, "folded") : strdup(out);
        // this round's share of the budget, as a fraction of the current model's scope
        fk_model mc;
        st = fk_model_load(cur, FK_LOAD_FROZEN, &mc, NULL);
        int64_t want = target * r / rounds - done;
        double frac = st == FK_OK ? (double)want / (double)fk_fold_scope_params(&mc, fa.o.scope) : 0;
        if (st == FK_OK) fk_model_free(&mc);
        int64_t removed = 0;
        // a round whose healing was interrupted (Ctrl-C, SIGTERM, a kill) keeps its folded model
        // and resumes healing from its newest checkpoint
        char *hdir0 = heal_steps > 0 ? (last ? strdup(out) : fk_path_join(rdir, "healed")) : NULL, *ck = NULL, *fcfg = fk_path_join(fdir, "config.json");
        bool resume = hdir0 && fk_checkpoint_latest(hdir0, &ck) == FK_OK && fk_path_exists(fcfg);
        free(hdir0); free(ck); free(fcfg);
        if (st == FK_OK && resume) {
            fk_model mf;
            st = fk_model_load(fdir, FK_LOAD_FROZEN, &mf, NULL);
            if (st == FK_OK) {
                st = fk_model_load(cur, FK_LOAD_FROZEN, &mc, NULL);
                if (st == FK_OK) {
                    removed = fk_fold_scope_params(&mc, fa.o.scope) - fk_fold_scope_params(&mf, fa.o.scope);
                    fk_model_free(&mc);
                }
                fk_model_free(&mf);
            }
            if (st == FK_OK) fprintf(stderr, "round %d/%d: %s is folded already; healing resumes\n", r, (int)rounds, fdir);
        } else if (st == FK_OK) {
            fprintf(stderr, "round %d/%d: fold %s by %lld parameters\n", r, (int)rounds, cur, (long long)want);
            st = healing ? fold_once(cur, data, fdir, &fa, frac, &removed) : fold_to(cur, data, fdir, &fa, frac, &removed);
        }
        if (st != FK_OK) rc = cli_fail("fold", st);
        done += removed;
        free(cur);
        cur = strdup(fdir);
        if (rc == 0 && heal_steps > 0) {
            char *hdir = last ? strdup(out) : fk_path_join(rdir, "healed");
            char *sdir = fk_path_join(out, "stores");
            char steps[32];
            snprintf(steps, sizeof steps, "%lld", (long long)(heal_steps / rounds > 0 ? heal_steps / rounds : 1));
            int n_extra = argc - own - (own < argc ? 1 : 0);
            char **extra = calloc((size_t)n_extra + 4, sizeof *extra);
            int ne = 0;
            extra[ne++] = "--steps";
            extra[ne++] = steps;
            if (resume) extra[ne++] = "--resume";
            for (int i = own + 1; i < argc; i++) extra[ne++] = argv[i];
            rc = heal_run(model, cur, hdata, hdir, sdir, 10, heal_lambda, ne, extra);
            free(extra);
            if (rc == 130 || rc == 143)
                fprintf(stderr, "fusekit fold: interrupted in round %d/%d; run the same fold command again to resume\n", r, (int)rounds);
            free(cur);
            cur = hdir;
            free(sdir);
        }
        free(rdir);
        free(fdir);
    }
    free(cur);
    return rc;
}

int cmd_prune(int argc, char **argv) {
    const char *model = NULL, *data = NULL, *out = NULL, *method = NULL, *scope = "ffn", *tokenizer = NULL;
    double budget = 0.3;
    int64_t seq = 0, batch = 4, max_tokens = 65536, threads = 0;
    bool force = false;
    cli_opt opts[] = {
        {"--model", OPT_STR, &model, "model folder or .gguf file (required)", false, NULL},
        {"--data", OPT_STR, &data, "calibration text or token shard (required)", false, NULL},
        {"-o|--out", OPT_STR, &out, "output folder for the pruned model (required)", false, NULL},
        {"--method", OPT_STR, &method, "magnitude | flap | shortgpt (required)", false, NULL},
        {"--budget", OPT_FLOAT, &budget, "fraction of the scope's parameters to remove (default 0.3)", false, "(0,1)"},
        {"--scope", OPT_STR, &scope, "ffn | blocks | all: what --budget is a fraction of (default ffn)", false, NULL},
        {"--tokenizer", OPT_STR, &tokenizer, "tokenizer for text (default: the model's own: tokenizer.json or the GGUF's metadata)", false, NULL},
        {"--seq", OPT_INT, &seq, "window length for statistics (default: the model's context)", false, "[0,1048576]"},
        {"--batch", OPT_INT, &batch, "windows per forward pass (default 4)", false, "[1,65536]"},
        {"--max-tokens", OPT_INT, &max_tokens, "calibration positions at most, 0 = all (default 65536)", false, "[0,)"},
        {"--threads", OPT_INT, &threads, "threads (default: all cores)", false, "[0,4096]"},
        {"--force", OPT_FLAG, &force, "replace an existing -o (when the new one is complete)", false, NULL},
        {NULL, 0, NULL, NULL, false, NULL},
    };
    int rc = cli_parse(argc, argv, opts,
                       "usage: fusekit prune --model DIR|FILE.gguf --data TEXT --method magnitude|flap|shortgpt --budget FRACTION -o OUT\n\n"
                       "The baselines folding is compared against, at a parameter budget:\n"
                       "  magnitude  FFN channels with the smallest L2 norm of their weights, the same fraction in every layer;\n"
                       "  flap       FLAP: fluctuation Var(h_j) * |W_down[:, j]|^2, z-scored per layer, one global threshold,\n"
                       "             the removed channels' mean output added to the down projection's bias;\n"
                       "  shortgpt   ShortGPT: whole layers, lowest Block Influence first.");
    if (rc) return rc == 1 ? 0 : 2;
    if (!model || !data || !out || !method) { fprintf(stderr, "fusekit prune: error: --model, --data, --method and --out are required\n"); return 2; }
    fk_prune_method pm;
    if (strcmp(method, "magnitude") == 0) pm = FK_PRUNE_MAGNITUDE;
    else if (strcmp(method, "flap") == 0) pm = FK_PRUNE_FLAP;
    else if (strcmp(method, "shortgpt") == 0) pm = FK_PRUNE_SHORTGPT;
    else { fprintf(stderr, "fusekit prune: error: --method must be magnitude, flap or shortgpt (got '%s')\n", method); return 2; }
    fk_fold_scope sc;
    if (!parse_scope(scope, &sc)) { fprintf(stderr, "fusekit prune: error: --scope must be ffn, blocks or all (got '%s')\n", scope); return 2; }
    const char *ins[] = {model, data, tokenizer};
    cli_out_spec os = {"-o", out, force, false};
    if ((rc = cli_check_output("prune", &os, ins, 3)) != 0) return rc;
    cli_set_threads(threads);
    loaded x;
    fk_status st = load_all(model, tokenizer, data, &x);
    if (st != FK_OK) return cli_fail("prune", st);
    fold_args fa = {.seq = seq, .batch = batch, .max_tokens = max_tokens};
    fk_analysis a;
    fk_model pr = {0};
    int64_t removed = 0, scope0 = fk_fold_scope_params(&x.m, sc);
    st = analyze_model(&x.m, &x.d, &fa, &a);
    if (st == FK_OK) {
        st = fk_prune(&x.m, &a, pm, budget, sc, &pr, &removed);
        fk_analysis_free(&a);
    }
    if (st == FK_OK) {
        cli_outdir od;
        st = cli_outdir_begin(out, &od);
        if (st == FK_OK) st = cli_outdir_end(&od, save_model(&pr, x.tok, od.tmp));
    }
    if (st == FK_OK)
        printf("{\"model\":\"%s\",\"method\":\"%s\",\"params_before\":%lld,\"params_after\":%lld,\"scope_removed\":%lld,\"scope_removed_fraction\":%.4f}\n", out,
               method, (long long)fk_model_num_params(&x.m), (long long)fk_model_num_params(&pr), (long long)removed, (double)removed / (double)scope0);
    fk_model_free(&pr);
    loaded_free(&x);
    return st == FK_OK ? 0 : cli_fail("prune", st);
}
