// fusekit fold / heal / prune: redundancy folding by a parameter budget (fold.md), healing by
// distillation from the model before folding, and the baselines at the same budget.
#include "cli.h"
#include "base/dist.h"
#include "fusekit/fold.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct {
    fk_model m;
    fk_tokenizer *tok;
    fk_token_data d;
} loaded;

// The rows fold and prune share: the calibration data, and the tokenizer for it when a text.
#define CALIB_ROW(p) {"--data", OPT_STR, p, "calibration text or token shard (required)", false, NULL}
#define TEXT_TOK_ROW(p) \
    {"--tokenizer", OPT_STR, p, "tokenizer for text (default: the model's own: tokenizer.json or the GGUF's metadata)", false, NULL}

static void loaded_free(loaded *x) {
    fk_model_free(&x->m);
    fk_tok_free(x->tok);
    fk_data_free(&x->d);
}

static fk_status load_all(const char *model, const char *tokenizer, const char *data, loaded *x) {
    memset(x, 0, sizeof *x);
    fk_status st = fk_model_load_tok(model, tokenizer, 0, &x->m, &x->tok);
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
    return fk_write_file_in(dir, name, text, strlen(text));
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
    struct fold_tally *tally;  // --rounds: what each fold did, for the run's summary (NULL: not kept)
} fold_args;

// The folds of a --rounds run, as fold_once made them (rounds already folded by an earlier,
// interrupted run are not in it).
typedef struct fold_tally {
    int folds;
    int64_t params_before, scope_before, params_after, removed;
    double probe_kl[64], est_kl[64];
} fold_tally;

static fk_status analyze_model(fk_model *m, const fk_token_data *d, const fold_args *fa, fk_analysis *a) {
    int seq = (int)(fa->seq > 0 ? fa->seq : m->cfg.max_seq);
    return fk_analyze(m, d, seq, (int)fa->batch, fa->max_tokens, 1, a);
}

// The library's options for one fold by `budget` from the parsed flags.
static void run_opts(const fold_args *fa, double budget, fk_fold_run_opts *ro) {
    fk_fold_run_defaults(ro);
    ro->plan = fa->o;
    ro->plan.budget = budget;
    ro->method = strcmp(fa->method, "mean-sum") == 0 ? FK_FOLD_MEAN_SUM : FK_FOLD_LSQ;
    ro->select = strcmp(fa->select, "medoid") == 0 ? FK_FOLD_SELECT_MEDOID : FK_FOLD_SELECT_GREEDY;
    ro->seq = (int)fa->seq;
    ro->batch = (int)fa->batch;
    ro->max_tokens = fa->max_tokens;
    ro->probe_windows = (int)fa->probe_windows;
    ro->plan_only = fa->plan_only;
}

// What fold_once's plan callback needs: where plan.json goes, and the report's wording.
typedef struct {
    const char *out_dir, *out_name;
    fk_fold_scope scope;
    double t0;
} plan_ui;

// Each plan as it is made: plan.json (or plan-widths.json, the second plan) and the summary line.
static fk_status on_plan(const fk_fold_plan *p, bool widths, void *user) {
    const plan_ui *ui = user;
    if (!ui->out_dir) return FK_OK;  // a rank other than 0 of an MPI run: rank 0 writes and prints
    cli_progress_clear();
    char *json = fk_fold_plan_json(p);
    fk_status st = json ? write_text(ui->out_dir, widths ? "plan-widths.json" : "plan.json", json) : fk_error(FK_ERR_NOMEM, "out of memory");
    free(json);
    const char *scope = ui->scope == FK_SCOPE_FFN ? "FFN" : ui->scope == FK_SCOPE_BLOCKS ? "layer" : "model";
    double ops_kl = 0;
    for (int i = 0; i < p->n_ops; i++) ops_kl += p->ops[i].kl;
    if (st == FK_OK && !widths && p->n_ops == 0)
        fprintf(stderr, "plan: remove %lld of %lld %s parameters (%.1f%%), no layer operation; estimated KL to the original %.4g nats "
                "(%.1f s); wrote %s/plan.json\n", (long long)p->removed_params, (long long)p->scope_params, scope,
                100.0 * (double)p->removed_params / (double)p->scope_params, p->est_kl_total, fk_time_s() - ui->t0, ui->out_name);
    else if (st == FK_OK && !widths)
        fprintf(stderr, "plan: %d layer operation(s) (KL measured on the probe %.4g nats), then the widths planned again after them; "
                "wrote %s/plan.json\n", p->n_ops, ops_kl, ui->out_name);
    else if (st == FK_OK)
        fprintf(stderr, "plan after the layer operations: widths remove %lld more %s parameters, estimated KL %.4g nats (%.1f s); "
                "wrote %s/plan-widths.json\n", (long long)p->removed_params, scope, p->est_kl_total, fk_time_s() - ui->t0, ui->out_name);
    return st;
}

// --plan-only: the plan's layer operations and widths as JSON lines.
static void print_plan(const fk_fold_plan *plan) {
    for (int i = 0; i < plan->n_ops; i++) {
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "op", fk_layer_op_name(plan->ops[i].kind));
        cli_json_int(j, "layer", plan->ops[i].layer);
        cli_json_int(j, "span", plan->ops[i].span);
        cli_json_num(j, "kl", "%.6g", plan->ops[i].kl);
        cli_json_int(j, "params", plan->ops[i].params);
        cli_json_print(j, stdout, NULL);
    }
    for (int l = 0; l < plan->n_layer; l++) {
        cJSON *j = cJSON_CreateObject();
        cli_json_int(j, "layer", l);
        cli_json_int(j, "ffn_before", plan->ffn_before[l]);
        cli_json_int(j, "ffn_after", plan->ffn_after[l]);
        if (plan->experts_before[l] > 0) {
            cli_json_int(j, "experts_before", plan->experts_before[l]);
            cli_json_int(j, "experts_after", plan->experts_after[l]);
        }
        cli_json_num(j, "estimated_kl", "%.6g", plan->est_kl[l] + plan->expert_est_kl[l]);
        cli_json_print(j, stdout, NULL);
    }
}

// The summary line fold and prune print: the model written, the method, the parameters before
// and after, those removed from the scope and their fraction of it.
static cJSON *summary_json(const char *model, const char *method, int64_t before, int64_t after, int64_t removed, double fraction) {
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "model", model);
    cJSON_AddStringToObject(j, "method", method);
    cli_json_int(j, "params_before", before);
    cli_json_int(j, "params_after", after);
    cli_json_int(j, "scope_removed", removed);
    cli_json_num(j, "scope_removed_fraction", "%.4f", fraction);
    return j;
}

// One fold of model_dir by `budget` (a fraction of its own scope) into out_dir (fk_fold_run);
// prints a summary line; *removed gets the parameters removed.
static fk_status fold_once(const char *model_dir, const char *data, const char *out_dir, const fold_args *fa, double budget, int64_t *removed) {
    loaded x;
    FK_TRY(load_all(model_dir, fa->tokenizer, data, &x));
    fk_fold_run_opts ro;
    run_opts(fa, budget, &ro);
    const char *name = fa->out_name ? fa->out_name : out_dir;
    plan_ui ui = {out_dir, name, fa->o.scope, fk_time_s()};
    fk_fold_result r;
    cli_progress_begin("fold", false, "windows");  // the statistics' and probes' windows, on a terminal
    fk_status st = fk_fold_run(&x.m, &x.d, &ro, on_plan, &ui, &r);
    cli_progress_end();
    bool lead = out_dir != NULL;  // NULL: a rank other than 0 of an MPI run, which writes nothing
    if (st == FK_OK && fa->plan_only && lead) print_plan(&r.plan);
    if (st == FK_OK && !fa->plan_only && lead) st = save_model(&r.folded, x.tok, out_dir);
    if (st == FK_OK && !fa->plan_only) {
        *removed = r.scope_removed;
        char desc[256];
        fk_config_describe(&r.folded.cfg, desc, sizeof desc);
        cJSON *j = summary_json(name, fa->method, r.params_before, r.params_after, r.scope_removed,
                                (double)r.scope_removed / (double)r.scope_before);
        cli_json_int(j, "layer_ops", r.plan.n_ops);
        cli_json_num(j, "estimated_kl", "%.6g", r.est_kl);
        cli_json_num(j, "probe_kl", "%.6g", r.probe_kl);
        cli_json_num(j, "seconds", "%.1f", fk_time_s() - ui.t0);
        const char *ins[] = {model_dir, data, fa->tokenizer};
        if (lead) st = cli_report_write(out_dir, "fold", ins, 3, j, &x.m, &r.folded);
        cli_json_print(j, stdout, NULL);
        if (lead)
            fprintf(stderr, "folded model: %s\nKL(original || folded) on the held-out probe text: %.4g nats measured, %.4g estimated by the plan\n",
                    desc, r.probe_kl, r.est_kl);
        fold_tally *t = fa->tally;
        if (t && t->folds < 64) {
            if (t->folds == 0) t->params_before = r.params_before, t->scope_before = r.scope_before;
            t->params_after = r.params_after;
            t->removed += r.scope_removed;
            t->probe_kl[t->folds] = r.probe_kl;
            t->est_kl[t->folds] = r.est_kl;
            t->folds++;
        }
    }
    if (st == FK_OK) fk_fold_result_free(&r);
    loaded_free(&x);
    return st;
}

// fold_once into out through a temporary folder renamed when complete.
static fk_status fold_to(const char *model_dir, const char *data, const char *out, fold_args *fa, double budget, int64_t *removed) {
    if (fk_dp_rank() != 0) {  // under mpirun every rank computes (the statistics are shared out), rank 0 writes
        fa->out_name = out;
        fk_status st = fold_once(model_dir, data, NULL, fa, budget, removed);
        fa->out_name = NULL;
        return st;
    }
    cli_outdir od;
    FK_TRY(cli_outdir_begin(out, &od));
    fa->out_name = out;
    fk_status st = fold_once(model_dir, data, od.tmp, fa, budget, removed);
    fa->out_name = NULL;
    return cli_outdir_end(&od, st);
}

static const char *heal_usage =
    "usage: fusekit heal --teacher ORIGINAL --model FOLDED --data FILE -o OUT [fusekit train options]\n\n"
    "Heals a folded (or pruned) model by distillation from the model before folding, through the\n"
    "fusion code path: ORIGINAL's top-k next-token distributions on TEXT go into a store\n"
    "(OUT/stores, cached, resumable); FOLDED is trained on lambda * CLM + (1 - lambda) * soft\n"
    "cross-entropy to them: the teacher's top-k probabilities under its full softmax, and the rest of\n"
    "its mass as a tail class (exact KL between the distributions coarsened to the top k plus the rest).\n"
    "Every fusekit train option is accepted (--steps, --lr, --batch, --val, ...); --lr defaults to 1e-4\n"
    "(a gentle fine-tune: heal on the original's own training text, a small text is soon overfitted).";

void cli_heal_args_init(cli_heal_args *a) {
    memset(a, 0, sizeof *a);
    fk_heal_job_defaults(&a->job);
}

const char *const cli_heal_sets[] = {"--init", "--teacher", "--tokenizer", "--align-cache", "--resume", "--resume-from", NULL};

int cli_heal_rows(cli_heal_args *a, cli_opt *rows) {
    fk_heal_job *j = &a->job;
    const cli_opt own[] = {
        {"--teacher", OPT_STR, &j->teacher, "the model before folding, a folder or .gguf (its tokenizer must be the folded model's; required)", false, NULL},
        {"--model", OPT_STR, &j->model, "the folded model, a folder or .gguf (required)", false, NULL},
        {"-k", OPT_I32, &j->k, "entries per position in the store", false, "[1,64]"},
        {"--store-dir", OPT_STR, &j->store_dir, "where the store is kept (default OUT/stores)", false, NULL},
    };
    _Static_assert(sizeof own / sizeof own[0] + 1 + CLI_TRAIN_ROWS <= CLI_HEAL_ROWS, "CLI_HEAL_ROWS holds the own rows, the heading and train's");
    return cli_rows_then_train(own, (int)(sizeof own / sizeof own[0]), &j->train, &a->threads, cli_heal_sets, rows);
}

static fk_status run_heal(const void *job, const fk_job_hooks *h, fk_train_job_result *r) { return fk_heal_run(job, h, r); }

int cli_heal_exec(cli_heal_args *a) {
    const fk_heal_job *j = &a->job;
    const char *ins[] = {j->teacher, j->model, j->train.data, j->train.val, j->train.config, j->store_dir};
    // an existing -o resumes
    return cli_job_exec(&(cli_job_spec){"heal", run_heal, j, &a->job.train, ins, 6, a->threads, true});
}

int cmd_heal(int argc, char **argv) {
    cli_heal_args a;
    cli_opt rows[CLI_HEAL_ROWS];
    cli_heal_args_init(&a);
    cli_heal_rows(&a, rows);
    // (--teacher is heal's own: the model before folding)
    static const char *const refused[] = {"--init", "--resume", "--resume-from", "--tokenizer", "--align-cache", NULL};
    int rc = cli_parse_job("heal", argc, argv, rows, heal_usage, refused, "use --model", &a.job.train);
    if (rc >= 0) return rc;
    if (!a.job.teacher || !a.job.model || !a.job.train.data || !a.job.train.out) {
        fprintf(stderr, "fusekit heal: error: --teacher, --model, --data and --out are required (see --help)\n");
        return 2;
    }
    return cli_heal_exec(&a);
}

// ---------------------------------------------------------------- fold

static const char fold_usage[] =
    "usage: fusekit fold --model DIR|FILE.gguf --data FILE --budget FRACTION -o OUT [options] [-- fusekit train options for healing]\n\n"
    "Folds a model's redundancy away (fold.md): collects statistics on TEXT, plans with the dynamic\n"
    "threshold (every candidate ranked by estimated KL per parameter saved, guards on width and edges;\n"
    "statistics from the first 90% of TEXT, KL probes on the last 10%),\n"
    "writes OUT/plan.json, then applies layer operations (drop / average / LaCo merge, whichever has the\n"
    "lowest KL), collects statistics again, and folds FFN units (least-squares refit of the down projection).\n"
    "The result is an ordinary model folder. With --rounds N and --heal-steps S: N rounds of fold -> heal.";

void cli_fold_args_init(cli_fold_args *a) {
    memset(a, 0, sizeof *a);
    // the rows' defaults are the library's (fk_fold_run_defaults, fk_fold_opts_default)
    fk_fold_run_opts rd;
    fk_fold_run_defaults(&rd);
    a->budget = rd.plan.budget;
    a->round = rd.plan.round;
    a->min_width = rd.plan.min_width;
    a->ridge = rd.plan.ridge;
    a->seq = rd.seq;
    a->batch = rd.batch;
    a->max_tokens = rd.max_tokens;
    a->probe_windows = rd.probe_windows;
    a->scope = "ffn";
    a->method = "lsq";
    a->select = "greedy";
    a->ops = "ffn,heads,layers,experts";
    a->rounds = 1;
    // healing: heal's defaults (lambda 0.5, lr 1e-4)
    cli_train_args_init(&a->heal);
    fk_heal_job hd;
    fk_heal_job_defaults(&hd);
    a->heal.job = hd.train;
}

int cli_fold_rows(cli_fold_args *a, cli_opt *rows) {
    const cli_opt t[] = {
        {"--model", OPT_STR, &a->model, "model to fold: a folder or a .gguf file (required)", false, NULL},
        CALIB_ROW(&a->data),
        {"-o|--out", OPT_STR, &a->out, "output folder: the folded model and plan.json (required)", false, NULL},
        {"--budget", OPT_FLOAT, &a->budget, "fraction of the scope's parameters to remove", false, "(0,1)"},
        {"--scope", OPT_STR, &a->scope, "ffn | blocks | all: what --budget is a fraction of (default ffn)", false, NULL},
        {"--method", OPT_STR, &a->method, "lsq | mean-sum: least-squares refit of kept units, or Model Folding's cluster mean/sum (default lsq)", false, NULL},
        {"--select", OPT_STR, &a->select, "greedy | medoid: with lsq, the kept units by greedy least-squares elimination, or the medoids of average-linkage clusters of 1 - |rho| (default greedy)", false, NULL},
        {"--ops", OPT_STR, &a->ops, "operations allowed, comma separated: ffn, heads (not with --scope ffn), layers, experts (MoE layers' experts merged; default all four)", false, NULL},
        {"--plan-only", OPT_FLAG, &a->plan_only, "write plan.json and print the plan; change nothing", false, NULL},
        {"--uniform", OPT_FLAG, &a->uniform, "one FFN width for every layer (tools that need uniform widths load the result)", false, NULL},
        {"--round", OPT_INT, &a->round, "FFN widths become multiples of this", false, "[1,65536]"},
        {"--min-width", OPT_FLOAT, &a->min_width, "keep at least this fraction of each layer's FFN width", false, "[0,1]"},
        {"--fold-edges", OPT_FLAG, &a->edges, "allow folding the first and last layer", false, NULL},
        {"--ridge", OPT_FLOAT, &a->ridge, "least-squares ridge: lambda = ridge * mean(diag G)", false, "[0,)"},
        TEXT_TOK_ROW(&a->tokenizer),
        CLI_ROW_SEQ(a, "window length for statistics and probes (default: the model's context)"),
        CLI_ROW_BATCH(a, "windows per forward pass while collecting statistics"),
        CLI_ROW_MAX_TOKENS(a, "calibration positions at most, 0 = all"),
        {"--probe-windows", OPT_INT, &a->probe_windows, "windows in the KL probe that calibrates the estimates", false, "[1,65536]"},
        {"--rounds", OPT_INT, &a->rounds, "progressive folding: N rounds of fold -> heal, each with 1/N of the budget", false, "[1,64]"},
        {"--heal-steps", OPT_INT, &a->heal_steps, "healing steps in all, split over the rounds, 0: no healing", false, "[0,)"},
        {"--heal-data", OPT_STR, &a->heal_data, "healing text (default --data); options after -- go to fusekit train", false, NULL},
        {"--heal-lambda", OPT_F32, &a->heal.job.lambda, "CLM weight while healing, 0: pure distillation", false, "[0,1]"},
        {"--heal-only", OPT_FLAG, &a->heal_only, "the healed-original control: fold nothing, heal the model as this fold would heal "
         "its folded model (the same teacher, steps and options; needs --heal-steps, one round)", false, NULL},
        CLI_ROW_THREADS(&a->threads),
        {"--force", OPT_FLAG, &a->force, "replace an existing -o when the new one is complete (with healing, an existing -o resumes)", false, NULL},
    };
    _Static_assert(sizeof t / sizeof t[0] < CLI_FOLD_ROWS, "CLI_FOLD_ROWS holds fold's rows and the end");
    int n = (int)(sizeof t / sizeof t[0]);
    memcpy(rows, t, sizeof t);
    rows[n] = (cli_opt)CLI_ROWS_END;
    return n;
}

// The values the rows do not check; fold_args filled from them. 0 or 2.
static int fold_validate(const cli_fold_args *c, fold_args *fa) {
    fk_fold_run_opts rd;
    fk_fold_run_defaults(&rd);
    *fa = (fold_args){c->tokenizer, c->method, c->select, rd.plan, c->seq, c->batch, c->max_tokens, c->probe_windows, c->plan_only, NULL, NULL};
    const char *err = NULL;
    char msg[512];
    fa->o.ffn_ops = strstr(c->ops, "ffn") != NULL;
    fa->o.layer_ops = strstr(c->ops, "layers") != NULL;
    fa->o.head_ops = strstr(c->ops, "heads") != NULL;
    fa->o.expert_ops = strstr(c->ops, "experts") != NULL;
    if (!c->model || !c->data || !c->out) err = "--model, --data and --out are required";
    else if (!parse_scope(c->scope, &fa->o.scope)) snprintf(msg, sizeof msg, "--scope must be ffn, blocks or all (got '%s')", c->scope), err = msg;
    else if (strcmp(fa->method, "lsq") != 0 && strcmp(fa->method, "mean-sum") != 0)
        snprintf(msg, sizeof msg, "--method must be lsq or mean-sum (got '%s')", fa->method), err = msg;
    else if (strcmp(fa->select, "greedy") != 0 && strcmp(fa->select, "medoid") != 0)
        snprintf(msg, sizeof msg, "--select must be greedy or medoid (got '%s')", fa->select), err = msg;
    else if (!fa->o.ffn_ops && !fa->o.layer_ops && !fa->o.head_ops && !fa->o.expert_ops)
        snprintf(msg, sizeof msg, "--ops must name ffn, heads, layers or experts (got '%s')", c->ops), err = msg;
    else if (!(c->budget > 0 && c->budget < 1)) snprintf(msg, sizeof msg, "--budget must be a fraction in (0, 1) (got %g)", c->budget), err = msg;
    else if (c->heal_only && (c->heal_steps <= 0 || c->rounds > 1 || c->plan_only))
        err = "--heal-only is the healed-original control: it needs --heal-steps, one round and no --plan-only";
    else if (c->rounds < 1 || c->rounds > 64) snprintf(msg, sizeof msg, "--rounds must be 1 to 64 (got %lld)", (long long)c->rounds), err = msg;
    else if (c->rounds > 1 && c->heal_steps <= 0) err = "--rounds needs --heal-steps (progressive folding heals between rounds)";
    else if (fa->probe_windows < 1 || fa->batch < 1) err = "--probe-windows and --batch must be positive";
    if (err) { fprintf(stderr, "fusekit fold: error: %s\n", err); return 2; }
    fa->o.budget = c->budget;
    fa->o.round = (int)c->round;
    fa->o.min_width = c->min_width;
    fa->o.ridge = c->ridge;
    fa->o.uniform = c->uniform;
    fa->o.fold_edges = c->edges;
    return 0;
}

// fk_fold_rounds' callbacks: each fold by fold_once, each healing by cli_heal_exec, a line per round.
typedef struct { const cli_fold_args *c; fold_args *fa; int rc; } rounds_ui;

// Under mpirun every rank computes the fold and rank 0 writes it; the ranks then agree on the outcome,
// so that none reads the folded model (healing) before rank 0 has written it.
static fk_status round_fold(const char *model, const char *dir, double fraction, bool in_place, int64_t *removed, void *user) {
    rounds_ui *ui = user;
    const char *data = ui->c->data;
    fk_status st;
    if (in_place && fk_dp_rank() != 0) {
        ui->fa->out_name = dir;
        st = fold_once(model, data, NULL, ui->fa, fraction, removed);
        ui->fa->out_name = NULL;
    } else {
        st = in_place ? fold_once(model, data, dir, ui->fa, fraction, removed) : fold_to(model, data, dir, ui->fa, fraction, removed);
    }
    return fk_dist_agree(st);
}

// The healing job of a round: the options after "--" over heal's defaults, into out.
static void heal_job(const cli_fold_args *c, const char *teacher, const char *model, const char *out, int64_t steps, bool resume,
                     const char *store_dir, cli_heal_args *h) {
    cli_heal_args_init(h);
    h->job.teacher = teacher;
    h->job.model = model;
    h->job.store_dir = store_dir;
    h->job.train = c->heal.job;  // the options after "--"
    h->job.train.data = c->heal_data ? c->heal_data : c->data;
    h->job.train.out = out;
    h->job.train.force = h->job.train.force || c->force;
    if (!(h->job.train.given & FK_GIVEN_STEPS)) h->job.train.o.steps = steps;  // (--steps after "--" wins, as it always did)
    h->job.train.given |= FK_GIVEN_STEPS;
    h->job.train.resume = h->job.train.resume || resume;
    h->threads = c->heal.threads;
}

// Healing's checks before any folding (as the healing job makes them once it starts).
static int heal_precheck(const cli_fold_args *c) {
    cli_heal_args h;
    heal_job(c, c->model, c->model, c->out, 1, false, NULL, &h);
    fk_train_job tj = h.job.train;
    tj.init = c->model;
    tj.teachers.v[tj.teachers.n++] = c->model;  // standing in for its store: a teacher needs text data
    fk_status st = fk_train_job_check(&tj);
    if (st == FK_OK) return 0;
    fprintf(stderr, "fusekit fold: error: healing: %s\n", fk_last_error());
    return 2;
}

static fk_status round_heal(const char *teacher, const char *model, const char *out, int64_t steps, bool resume, const fk_fold_round_event *ev,
                            void *user) {
    rounds_ui *ui = user;
    const cli_fold_args *c = ui->c;
    char *sdir = fk_path_join(c->out, "stores");
    if (!sdir) return fk_error(FK_ERR_NOMEM, "out of memory");
    cli_heal_args h;
    heal_job(c, teacher, model, out, steps, resume, sdir, &h);
    ui->rc = cli_heal_exec(&h);
    free(sdir);
    if (ui->rc == 130 || ui->rc == 143)
        fprintf(stderr, "fusekit fold: interrupted in round %d/%d; run the same fold command again to resume\n", ev->round, ev->rounds);
    // (under mpirun rank 0 writes the healed model: the next round reads it once every rank is here)
    return fk_dist_agree(ui->rc == 0 ? FK_OK : fk_error(FK_ERR_IO, "healing failed (reported above)"));
}

static void round_report(const fk_fold_round_event *ev, void *user) {
    (void)user;
    if (fk_dp_rank() != 0) return;  // under mpirun rank 0 speaks for all
    if (ev->resumed) fprintf(stderr, "round %d/%d: %s is folded already; healing resumes\n", ev->round, ev->rounds, ev->folded);
    else fprintf(stderr, "round %d/%d: fold %s by %lld parameters\n", ev->round, ev->rounds, ev->model, (long long)ev->params);
}

int cli_fold_exec(cli_fold_args *a) {
    fold_args fa;
    int rc = fold_validate(a, &fa);
    if (rc != 0) return rc;
    bool healing = a->rounds > 1 || a->heal_steps > 0;
    const char *ins[] = {a->model, a->data, a->heal_data, a->tokenizer};
    // healing trains into OUT, and the same command run again resumes there
    cli_out_spec os = {"-o", a->out, a->force, healing};
    if ((rc = cli_check_output("fold", &os, ins, 4)) != 0) return rc;
    if (healing && !fa.plan_only && (rc = heal_precheck(a)) != 0) return rc;
    cli_set_threads(a->threads);
    if (a->heal_only) {  // the healed-original control: round 1's healing with the unfolded model in the folded one's place
        char *sdir = fk_path_join(a->out, "stores");
        cli_heal_args h;
        heal_job(a, a->model, a->model, a->out, a->heal_steps, false, sdir, &h);
        rc = sdir ? cli_heal_exec(&h) : cli_fail("fold", fk_error(FK_ERR_NOMEM, "out of memory"));
        free(sdir);
        return rc;
    }
    fk_status st;
    if (fa.plan_only) {
        int64_t removed = 0;
        st = fold_to(a->model, a->data, a->out, &fa, a->budget, &removed);
        return st == FK_OK ? 0 : cli_fail("fold", st);
    }
    fk_fold_rounds_opts ro = {a->budget, fa.o.scope, (int)a->rounds, a->heal_steps};
    rounds_ui ui = {a, &fa, 0};
    fk_fold_rounds_ops ops = {round_fold, round_heal, round_report, &ui};
    fold_tally tally = {0};
    fa.tally = &tally;
    st = fk_fold_rounds(a->model, a->out, &ro, &ops);
    if (ui.rc != 0) return ui.rc;  // healing reported its own failure
    if (st == FK_OK && a->rounds > 1 && tally.folds > 0) {
        // the run as a whole: each round's line above describes that round's fold only
        cJSON *j = summary_json(a->out, fa.method, tally.params_before, tally.params_after, tally.removed,
                                (double)tally.removed / (double)tally.scope_before);
        cli_json_int(j, "rounds", a->rounds);
        if (tally.folds < a->rounds) cli_json_int(j, "rounds_folded_in_this_run", tally.folds);
        cli_json_int(j, "heal_steps", a->heal_steps);
        cJSON *pk = cJSON_AddArrayToObject(j, "round_probe_kl"), *ek = cJSON_AddArrayToObject(j, "round_estimated_kl");
        for (int i = 0; i < tally.folds; i++) {
            cJSON_AddItemToArray(pk, cJSON_CreateNumber(tally.probe_kl[i]));
            cJSON_AddItemToArray(ek, cJSON_CreateNumber(tally.est_kl[i]));
        }
        cli_json_print(j, stdout, NULL);
        fprintf(stderr, "fold: %lld rounds removed %lld of %lld %s parameters (%.1f%%), %lld -> %lld parameters, %lld healing steps in all "
                "(each round's KL is to that round's input model)\n", (long long)a->rounds, (long long)tally.removed, (long long)tally.scope_before,
                fa.o.scope == FK_SCOPE_FFN ? "FFN" : fa.o.scope == FK_SCOPE_BLOCKS ? "layer" : "model",
                100.0 * (double)tally.removed / (double)tally.scope_before, (long long)tally.params_before, (long long)tally.params_after,
                (long long)a->heal_steps);
    }
    return st == FK_OK ? 0 : cli_fail("fold", st);
}

int cmd_fold(int argc, char **argv) {
    cli_fold_args a;
    cli_opt rows[CLI_FOLD_ROWS], heal_rows[CLI_TRAIN_ROWS + 1];
    cli_fold_args_init(&a);
    cli_fold_rows(&a, rows);
    // the options after "--" are train's, for healing (errors named "fusekit train")
    cli_rows_then_train(NULL, 0, &a.heal.job, &a.heal.threads, cli_heal_sets, heal_rows);
    int own = argc;
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--") == 0) { own = i; break; }
    int rc = cli_parse_verb(own, argv, rows, fold_usage);
    if (rc < 0 && own < argc && cli_refuse_set("fold", argc - own, argv + own, cli_heal_sets, "use --model") != 0) rc = 2;
    if (rc < 0 && own < argc) rc = cli_parse_verb(argc - own, argv + own, heal_rows, fold_usage);
    if (rc >= 0) return rc;
    cli_train_given(heal_rows, &a.heal.job);
    return cli_fold_exec(&a);
}

// ---------------------------------------------------------------- prune

static const char prune_usage[] =
    "usage: fusekit prune --model DIR|FILE.gguf --data FILE --method magnitude|flap|shortgpt|experts --budget FRACTION -o OUT\n\n"
    "The baselines folding is compared against, at a parameter budget:\n"
    "  magnitude  FFN channels with the smallest L2 norm of their weights, the same fraction in every layer;\n"
    "  flap       FLAP: fluctuation Var(h_j) * |W_down[:, j]|^2, z-scored per layer, one global threshold,\n"
    "             the removed channels' mean output added to the down projection's bias;\n"
    "  shortgpt   ShortGPT: whole layers, lowest Block Influence first;\n"
    "  experts    mixture-of-experts models: the least used experts (share of the routing choices on TEXT),\n"
    "             one order over all MoE layers, each keeping the experts a token is routed to; the router's\n"
    "             softmax then runs over the kept experts.\n"
    "With --params N the pruned model has the most parameters up to N that the method reaches: exactly N when\n"
    "N is the model's count less whole FFN channels (e.g. a folded model's); FLAP's compensation adds biases\n"
    "(2 per kept channel and d_model per layer where the model has none), so its count may fall short by less\n"
    "than a channel. scope_removed is then of all parameters.";

// Prunes x's model by p into out (a temporary folder renamed when complete); prints the summary line.
static fk_status prune_to(loaded *x, const fk_prune_opts *p, const char *out, const char *const *ins, int n_ins) {
    fold_args fa = {.seq = p->seq, .batch = p->batch, .max_tokens = p->max_tokens};
    fk_analysis a;
    fk_model pr = {0};
    int64_t removed = 0, scope0 = fk_fold_scope_params(&x->m, p->scope);
    fk_status st = analyze_model(&x->m, &x->d, &fa, &a);
    if (st == FK_OK) {
        st = p->params > 0 ? fk_prune_to_params(&x->m, &a, p->method, p->params, &pr, &removed)
                           : fk_prune(&x->m, &a, p->method, p->budget, p->scope, &pr, &removed);
        fk_analysis_free(&a);
    }
    static const char *const names[] = {"magnitude", "flap", "shortgpt", "experts"};
    cJSON *summary = NULL;
    if (st == FK_OK) {
        summary = summary_json(out, names[p->method], fk_model_num_params(&x->m), fk_model_num_params(&pr), removed,
                               (double)removed / (double)(p->params > 0 ? fk_model_num_params(&x->m) : scope0));
        cli_outdir od;
        st = cli_outdir_begin(out, &od);
        fk_status ss = st == FK_OK ? save_model(&pr, x->tok, od.tmp) : st;
        if (ss == FK_OK) ss = cli_report_write(od.tmp, "prune", ins, n_ins, summary, &x->m, &pr);
        if (st == FK_OK) st = cli_outdir_end(&od, ss);
    }
    double frac = p->params > 0 || scope0 <= 0 ? 0 : (double)removed / (double)scope0;
    if (st == FK_OK && frac > 1.1 * p->budget)  // whole units overshoot: say so rather than hide it in the JSON
        fprintf(stderr, "fusekit prune: warning: %s removed %.1f%% of the %s scope against --budget %g: it removes whole %s; "
                "for an exact parameter count give --params N\n", names[p->method], 100 * frac,
                p->scope == FK_SCOPE_FFN ? "ffn" : p->scope == FK_SCOPE_BLOCKS ? "blocks" : "all", p->budget,
                p->method == FK_PRUNE_SHORTGPT ? "layers" : "units");
    if (st == FK_OK) cli_json_print(summary, stdout, NULL);
    else cJSON_Delete(summary);
    fk_model_free(&pr);
    return st;
}

int cmd_prune(int argc, char **argv) {
    cli_model_opts mo = {0};
    const char *data = NULL;
    cli_out_opts out = {0};
    fk_prune_opts p;
    fk_prune_defaults(&p);
    int64_t threads = 0;
    cli_opt opts[] = {
        CLI_ROW_MODEL(&mo, "model folder or .gguf file (required)"),
        CALIB_ROW(&data),
        CLI_ROW_OUT(&out, "output folder for the pruned model (required)"),
        {"--method", OPT_CHOICE, CLI_ENUM(&p.method), "the baseline (required)", false, "magnitude|flap|shortgpt|experts"},
        {"--budget", OPT_FLOAT, &p.budget, "fraction of the scope's parameters to remove", false, "(0,1)"},
        {"--scope", OPT_CHOICE, CLI_ENUM(&p.scope), "what --budget is a fraction of", false, "ffn|blocks|all"},
        {"--params", OPT_INT, &p.params, "the pruned model's parameter count, at most and exactly where whole channels allow, instead of --budget (e.g. a folded model's; "
                                         "shortgpt: the whole layers that fit, then FFN channels by magnitude), 0 = use --budget", false, "[0,)"},
        TEXT_TOK_ROW(&mo.tokenizer),
        CLI_ROW_SEQ(&p, "window length for statistics (default: the model's context)"),
        CLI_ROW_BATCH(&p, "windows per forward pass"),
        CLI_ROW_MAX_TOKENS(&p, "calibration positions at most, 0 = all"),
        CLI_ROW_THREADS(&threads),
        CLI_ROW_FORCE(&out),
        CLI_ROWS_END,
    };
    int rc = cli_parse_verb(argc, argv, opts, prune_usage);
    if (rc >= 0) return rc;
    if (!mo.path || !data || !out.path || p.method == FK_PRUNE_NONE) {
        fprintf(stderr, "fusekit prune: error: --model, --data, --method and --out are required\n");
        return 2;
    }
    const char *ins[] = {mo.path, data, mo.tokenizer};
    cli_out_spec os = {"-o", out.path, out.force, false};
    if ((rc = cli_check_output("prune", &os, ins, 3)) != 0) return rc;
    cli_set_threads(threads);
    loaded x;
    fk_status st = load_all(mo.path, mo.tokenizer, data, &x);
    if (st == FK_OK) {
        st = prune_to(&x, &p, out.path, ins, 3);
        loaded_free(&x);
    }
    return st == FK_OK ? 0 : cli_fail("prune", st);
}
