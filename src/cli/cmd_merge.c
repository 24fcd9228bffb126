// fusekit merge: weight-space merges (linear, task arithmetic, TIES, SCE) of models that share
// one architecture and tokenizer; the baseline knowledge fusion is compared against.
#include "cli.h"

#include "fusekit/merge.h"
#include "fusekit/html.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

// A .gguf input is merged through a folder: imported (F32, with its tokenizer) into
// <tmp>/<i>; *dir gets the folder to merge (the path itself when it is a folder already).
static fk_status gguf_as_folder(const char *path, const char *tmp, int i, char **dir) {
    *dir = NULL;
    if (!fk_model_path_is_gguf(path)) { *dir = strdup(path); return FK_OK; }
    char name[32];
    snprintf(name, sizeof name, "%d", i);
    *dir = fk_path_join(tmp, name);
    fk_model m;
    fk_tokenizer *tok = NULL;
    fk_status st = fk_model_load(path, 0, &m, &tok);  // saved as a folder: decoded weights
    if (st != FK_OK) return st;
    st = fk_mkdir_p(*dir);
    if (st == FK_OK) st = fk_hf_save(&m, *dir, FK_DT_F32);
    if (st == FK_OK && tok) st = fk_tok_save_hf(tok, *dir);
    fk_tok_free(tok);
    fk_model_free(&m);
    return st;
}

// Pairs each --weight with the --model given just before it (cli_parse keeps the two lists
// apart). Returns 0, or 2 after printing what is wrong.
static int pair_weights(int argc, char **argv, float *w, int max_models, int *n_models) {
    int n = 0;
    bool weighted[CLI_LIST_MAX] = {false};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        bool is_model = strcmp(a, "--model") == 0 || strncmp(a, "--model=", 8) == 0;
        bool is_weight = strcmp(a, "--weight") == 0 || strncmp(a, "--weight=", 9) == 0;
        if (!is_model && !is_weight) continue;
        if (is_model) {
            // "--model A" or "--model=A", possibly followed by more folders ("--model A B")
            if (a[7] == '=') n++;
            else if (i + 1 < argc) { n++; i++; }
            while (a[7] != '=' && i + 1 < argc && argv[i + 1][0] != '-') { n++; i++; }
            if (n > max_models) n = max_models;
            continue;
        }
        const char *v = a[8] == '=' ? a + 9 : (i + 1 < argc ? argv[++i] : NULL);
        if (!v) return 0;  // cli_parse reports the missing value
        if (n == 0) { fprintf(stderr, "fusekit merge: error: --weight %s comes before any --model; give it after the model it weights\n", v); return 2; }
        if (weighted[n - 1]) { fprintf(stderr, "fusekit merge: error: model %d has two --weight values; give one after each --model\n", n); return 2; }
        double x;
        if (cli_parse_float("merge", "--weight", v, "[-1000,1000]", &x)) return 2;
        w[n - 1] = (float)x;
        weighted[n - 1] = true;
        if (a[8] != '=' && i + 1 < argc && argv[i + 1][0] != '-') {
            fprintf(stderr, "fusekit merge: error: --weight takes one value (got '%s' after it); give one --weight after each --model\n", argv[i + 1]);
            return 2;
        }
    }
    *n_models = n;
    return 0;
}

typedef struct {
    const char *method_s, *base;
    const char *config;   // --config: a mergekit YAML merge config (run through fusekit run)
    cli_out_opts out;
    cli_list models, weights;
    bool normalize, no_normalize;
    fk_merge_opts o;      // fk_merge_opts_default for the method given (normalize: its default unless a flag says)
    float w[CLI_LIST_MAX];
} merge_args;

static const char merge_usage[] =
    "usage: fusekit merge --method linear|task-arithmetic|ties|sce -o OUT --model A [--weight w] --model B [--weight w] ...\n"
    "                     [--base BASE] [--density d] [--select-topk f] [--lambda s] [--normalize|--no-normalize] [--dtype f32|f16|bf16]\n"
    "       fusekit merge --config MERGEKIT.yml -o OUT [--force]   (a mergekit merge config: docs/recipes.md)\n\n"
    "Weight-space merges of models with one architecture and tokenizer (mergekit's methods).\n"
    "  linear           sum_i w_i theta_i / sum_i w_i\n"
    "  task-arithmetic  base + lambda sum_i w_i (theta_i - base)\n"
    "  ties             trim each task vector to its top --density by magnitude, elect each entry's\n"
    "                   sign by weighted mass, average the agreeing entries: base + lambda * that\n"
    "  sce              keep the --select-topk entries of highest variance across the task vectors,\n"
    "                   weight each model by its energy, erase minority signs: base + lambda * mean";

// merge --config FILE -o OUT [--force]: the config as `fusekit run FILE -o OUT`, which maps it
// onto these options (src/cli/recipe_mergekit.c); the merge's own options are then refused.
static int merge_config(const cli_opt *opts, const merge_args *a) {
    for (const cli_opt *o = opts; o->name; o++)
        if (o->set && strcmp(o->name, "--config") != 0 && strcmp(o->name, "-o|--out") != 0 && strcmp(o->name, "--force") != 0) {
            fprintf(stderr, "fusekit merge: error: %s and --config: the config says the merge (give -o and --force only)\n", o->name);
            return 2;
        }
    if (!a->out.path) { fprintf(stderr, "fusekit merge: error: --config needs -o DIR\n"); return 2; }
    char *run_argv[] = {"run", (char *)a->config, "-o", (char *)a->out.path, a->out.force ? "--force" : NULL, NULL};
    return cmd_run(a->out.force ? 5 : 4, run_argv);
}

// What the flags say together: the method and its base, the options that apply to it, the
// weights paired with the models. Returns -1 to go on, else the exit code (message printed).
static int merge_check(int argc, char **argv, const cli_opt *opts, merge_args *a) {
    if (a->models.n < 1) { fprintf(stderr, "fusekit merge: error: give at least one --model\n"); return 2; }
    if (a->normalize && a->no_normalize) { fprintf(stderr, "fusekit merge: error: --normalize and --no-normalize contradict each other\n"); return 2; }
    fk_merge_method method;
    if (fk_merge_method_parse(a->method_s, &method) != FK_OK) { fprintf(stderr, "fusekit merge: error: %s\n", fk_last_error()); return 2; }
    if (fk_merge_needs_base(method) && !a->base) {
        fprintf(stderr, "fusekit merge: error: --method %s needs --base DIR (task vectors are differences from the base model)\n", a->method_s);
        return 2;
    }
    if (!fk_merge_needs_base(method) && a->base) {
        fprintf(stderr, "fusekit merge: error: --method linear does not use --base (did you mean task-arithmetic?)\n");
        return 2;
    }
    fk_merge_opts d;
    fk_merge_opts_default(&d, method);
    a->o.method = method;
    a->o.normalize = a->normalize || (d.normalize && !a->no_normalize);
    if (cli_was_set(opts, "--density") && method != FK_MERGE_TIES)
        fprintf(stderr, "fusekit merge: warning: --density applies to ties only; ignored for %s\n", a->method_s);
    if (cli_was_set(opts, "--select-topk") && method != FK_MERGE_SCE)
        fprintf(stderr, "fusekit merge: warning: --select-topk applies to sce only; ignored for %s\n", a->method_s);
    if (cli_was_set(opts, "--lambda") && method == FK_MERGE_LINEAR)
        fprintf(stderr, "fusekit merge: warning: --lambda scales task vectors; ignored for linear\n");
    for (int i = 0; i < CLI_LIST_MAX; i++) a->w[i] = 1.0f;
    int n_paired = 0, rc = pair_weights(argc, argv, a->w, CLI_LIST_MAX, &n_paired);
    if (rc != 0) return rc;
    if (n_paired != a->models.n) {  // a spelling the pairing did not follow: refuse rather than guess
        fprintf(stderr, "fusekit merge: error: could not pair the --weight values with the %d models; give --model DIR [--weight w] for each\n", a->models.n);
        return 2;
    }
    const char *ins[CLI_LIST_MAX + 1];
    for (int i = 0; i < a->models.n; i++) ins[i] = a->models.v[i];
    ins[a->models.n] = a->base;
    cli_out_spec os = {"-o", a->out.path, a->out.force, false};
    rc = cli_check_output("merge", &os, ins, a->models.n + 1);
    return rc != 0 ? rc : -1;
}

// The merge goes to OUT.tmp-XXXXXX, renamed to OUT when complete; GGUF inputs become folders
// inside it for the time of the merge.
static fk_status merge_run(const merge_args *a) {
    cli_outdir od;
    fk_status st = cli_outdir_begin(a->out.path, &od);
    if (st != FK_OK) return st;
    int n = a->models.n;
    char *tmp = fk_path_join(od.tmp, "gguf-inputs"), *mdir = fk_path_join(od.tmp, "model");
    char *dirs[CLI_LIST_MAX + 1] = {0};
    if (!tmp || !mdir) st = fk_error(FK_ERR_NOMEM, "out of memory");
    for (int i = 0; i < n && st == FK_OK; i++) st = gguf_as_folder(a->models.v[i], tmp, i, &dirs[i]);
    if (st == FK_OK && a->base) st = gguf_as_folder(a->base, tmp, n, &dirs[n]);
    if (st == FK_OK) st = fk_merge(&a->o, (const char *const *)dirs, a->w, n, a->base ? dirs[n] : NULL, mdir);
    if (tmp) fk_remove_tree(tmp);
    // the merged folder takes the temporary's place: OUT.tmp-XXXXXX/model -> OUT
    if (st == FK_OK) {
        char *stage = od.tmp;
        od.tmp = mdir;
        mdir = NULL;
        st = cli_outdir_commit(&od);
        fk_remove_tree(stage);
        free(stage);
    } else cli_outdir_abort(&od);
    free(mdir);
    for (int i = 0; i <= n; i++) free(dirs[i]);
    free(tmp);
    return st;
}

// The report's chart: per layer, how far the merged weights lie from each input's, ||merged - input|| /
// ||input|| over the layer's tensors (the embeddings, final norm and head as one more group). The
// models are read frozen (matrices mapped where their files allow), a table entry at a time.
static fk_status merge_distances(const char *merged, const cli_list *models, fk_sbuf *html) {
    fk_model mm;
    FK_TRY(fk_model_load(merged, FK_LOAD_FROZEN, &mm, NULL));
    int L = (int)mm.cfg.n_layer, n = models->n, G = L + 1;
    double *num = calloc((size_t)G * n, sizeof *num), *den = calloc((size_t)G * n, sizeof *den), *v = malloc((size_t)G * n * sizeof *v);
    int64_t maxn = 0;
    for (int i = 0; i < mm.n_params; i++) maxn = mm.params[i].numel > maxn ? mm.params[i].numel : maxn;
    float *a = malloc((size_t)maxn * sizeof *a), *b = malloc((size_t)maxn * sizeof *b);
    fk_status st = num && den && v && a && b ? FK_OK : fk_error(FK_ERR_NOMEM, "out of memory");
    for (int k = 0; k < n && st == FK_OK; k++) {
        fk_model mi;
        if ((st = fk_model_load(models->v[k], FK_LOAD_FROZEN, &mi, NULL)) != FK_OK) break;
        if (mi.n_params != mm.n_params) st = fk_error(FK_ERR_ARG, "%s: another parameter table than the merged model's", models->v[k]);
        for (int i = 0; i < mm.n_params && st == FK_OK; i++) {
            const fk_param *p = &mm.params[i];
            if (mi.params[i].numel != p->numel) { st = fk_error(FK_ERR_ARG, "%s: %s has another shape", models->v[k], p->name); break; }
            int64_t rows = p->ndim == 2 ? p->shape[0] : 1;
            if ((st = fk_model_read_rows(&mm, i, 0, rows, a)) != FK_OK || (st = fk_model_read_rows(&mi, i, 0, rows, b)) != FK_OK) break;
            int g = p->layer >= 0 && p->layer < L ? p->layer : L;
            double s = 0, t = 0;
            for (int64_t j = 0; j < p->numel; j++) { double d = (double)a[j] - b[j]; s += d * d; t += (double)b[j] * b[j]; }
            num[g * n + k] += s;
            den[g * n + k] += t;
        }
        fk_model_free(&mi);
    }
    if (st == FK_OK) {
        char (*lab)[16] = malloc((size_t)G * sizeof *lab);
        const char **lg = malloc((size_t)G * sizeof *lg), **names = malloc((size_t)n * sizeof *names);
        if (lab && lg && names) {
            for (int g = 0; g < G; g++) {
                snprintf(lab[g], sizeof lab[g], g < L ? "%d" : "emb+head", g);
                lg[g] = lab[g];
                for (int k = 0; k < n; k++) v[g * n + k] = den[g * n + k] > 0 ? sqrt(num[g * n + k] / den[g * n + k]) : NAN;
            }
            for (int k = 0; k < n; k++) {
                const char *sl = strrchr(models->v[k], '/');
                names[k] = sl && sl[1] ? sl + 1 : models->v[k];
            }
            fk_sb(html, "<h2>Distance to each input per layer</h2><p>||merged - input|| / ||input|| over each layer's tensors "
                        "(the embeddings, final norm and LM head as the last group): 0 where the merge kept that input's weights.</p>");
            fk_svg_grouped_bars(html, "Relative distance of the merged weights to each input, per layer", lg, G, names, n, v, "%.3f");
        }
        free(lab);
        free(lg);
        free(names);
    }
    free(num); free(den); free(v); free(a); free(b);
    fk_model_free(&mm);
    return st;
}

int cmd_merge(int argc, char **argv) {
    merge_args a = {0};
    fk_merge_opts_default(&a.o, FK_MERGE_LINEAR);
    cli_opt opts[] = {
        {"--method", OPT_STR, &a.method_s, "linear | task-arithmetic | ties | sce (required unless --config)", false, NULL},
        CLI_ROW_OUT(&a.out, "output model folder (required)"),
        {"--model", OPT_LIST, &a.models, "a model to merge, a folder or a .gguf file (repeat for each model)", false, NULL},
        {"--weight", OPT_LIST, &a.weights, "weight of the --model just before it (1)", false, NULL},
        {"--base", OPT_STR, &a.base, "base model (folder or .gguf): task vectors are differences from it (all but linear)", false, NULL},
        {"--density", OPT_FLOAT, &a.o.density, "ties: fraction of each task vector kept by magnitude, per tensor", false, "(0,1]"},
        {"--select-topk", OPT_FLOAT, &a.o.select_topk, "sce: fraction of entries kept by variance across models, per tensor", false, "(0,1]"},
        {"--lambda", OPT_FLOAT, &a.o.lambda, "scale of the merged task vector", false, "[-10,10]"},
        {"--normalize", OPT_FLAG, &a.normalize, "divide by the weight sum (default for linear, ties, sce)", false, NULL},
        {"--no-normalize", OPT_FLAG, &a.no_normalize, "do not (default for task-arithmetic)", false, NULL},
        {"--dtype", OPT_CHOICE, CLI_ENUM(&a.o.out_dtype), "output weights", false, CLI_DTYPES},
        CLI_ROW_FORCE(&a.out),
        {"--config", OPT_STR, &a.config, "a mergekit merge config (YAML: merge_method, models, base_model, parameters, dtype) instead of the options above", false, NULL},
        CLI_ROWS_END,
    };
    int rc = cli_parse_verb(argc, argv, opts, merge_usage);
    if (rc >= 0) return rc;
    if (a.config) return merge_config(opts, &a);
    if ((rc = cli_require("merge", "--method and -o/--out", 2, a.method_s, a.out.path)) != 0) return rc;
    if ((rc = merge_check(argc, argv, opts, &a)) >= 0) return rc;
    double t0 = fk_time_s();
    fk_status st = merge_run(&a);
    if (st != FK_OK) return cli_fail("merge", st);
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "method", fk_merge_method_name(a.o.method));
    cli_json_int(j, "models", a.models.n);
    cJSON_AddStringToObject(j, "out", a.out.path);
    cli_json_num(j, "seconds", "%.3f", fk_time_s() - t0);
    cli_json_num(j, "peak_rss_mb", "%.1f", fk_peak_rss_mb());
    cJSON *w = cJSON_AddArrayToObject(j, "weights");
    for (int i = 0; i < a.weights.n; i++) cJSON_AddItemToArray(w, cJSON_CreateString(a.weights.v[i]));
    const char *ins[CLI_LIST_MAX + 1];
    int n = 0;
    for (int i = 0; i < a.models.n && n < CLI_LIST_MAX; i++) ins[n++] = a.models.v[i];
    if (a.base) ins[n++] = a.base;
    fk_sbuf chart = {0};
    if (merge_distances(a.out.path, &a.models, &chart) != FK_OK) {  // the merge stands; its report goes without the chart
        fprintf(stderr, "fusekit merge: note: report.html has no distance chart: %s\n", fk_last_error());
        free(chart.buf);
        chart = (fk_sbuf){0};
    }
    st = cli_report_write_ex(a.out.path, "merge", ins, n, j, NULL, NULL, chart.oom ? NULL : chart.buf);
    free(chart.buf);
    cli_json_print(j, stdout, NULL);
    return st == FK_OK ? 0 : cli_fail("merge", st);
}
