// fusekit eval: loss, perplexity and bits per byte of a model on a text or token shard.
#include "cli.h"
#include "fusekit/fold.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

// --ensemble: the aligned average of several models' next-token distributions.
static int eval_ensemble(const char *first, const cli_list *ens, const char *data, int64_t seq, int64_t batch, const fk_align_opts *ao) {
    const char *dirs[CLI_LIST_MAX + 1];
    int n = 0;
    if (first) dirs[n++] = first;
    for (int i = 0; i < ens->n && n <= CLI_LIST_MAX; i++) dirs[n++] = ens->v[i];
    fk_model *models[CLI_LIST_MAX + 1] = {0};
    fk_tokenizer *toks[CLI_LIST_MAX + 1] = {0};
    char *text = NULL;
    size_t len = 0;
    fk_status st = FK_OK;
    for (int i = 0; i < n && st == FK_OK; i++) {
        models[i] = calloc(1, sizeof(fk_model));
        st = models[i] ? cli_load_model(dirs[i], NULL, FK_LOAD_FROZEN, models[i], &toks[i]) : fk_error(FK_ERR_NOMEM, "out of memory");
        if (st != FK_OK) { free(models[i]); models[i] = NULL; break; }
        if (!toks[i]) st = fk_error(FK_ERR_ARG, "%s has no tokenizer (tokenizer.json, or the GGUF's tokenizer.ggml.* keys): an ensemble needs every model's tokenizer", dirs[i]);
    }
    if (st == FK_OK) st = fk_read_file(data, &text, &len);
    fk_ensemble_result r;
    double t0 = fk_time_s();
    if (st == FK_OK)
        st = fk_eval_ensemble(models, toks, n, text, len, (int)(seq > 0 ? seq : models[0]->cfg.max_seq), (int)batch, ao, &r);
    if (st == FK_OK) {
        cJSON *j = cJSON_CreateObject(), *arr = cJSON_AddArrayToObject(j, "ensemble");
        for (int i = 0; i < n; i++) {
            cJSON *e = cJSON_CreateObject();
            cJSON_AddStringToObject(e, "model", dirs[i]);
            cli_json_num(e, "bpb", "%.6f", r.member_bpb[i]);
            cli_json_num(e, "coverage", "%.4f", r.coverage[i]);
            cJSON_AddItemToArray(arr, e);
        }
        cJSON_AddStringToObject(j, "data", data);
        cli_json_int(j, "positions", r.positions);
        cli_json_int(j, "bytes", r.bytes);
        cli_json_num(j, "bpb", "%.6f", r.bpb);
        cli_json_num(j, "seconds", "%.2f", fk_time_s() - t0);
        cli_json_print(j, stdout, NULL);
    }
    for (int i = 0; i < n; i++) {
        if (models[i]) fk_model_free(models[i]);
        free(models[i]);
        fk_tok_free(toks[i]);
    }
    free(text);
    return st == FK_OK ? 0 : cli_fail("eval", st);
}

// llama.cpp's llama-perplexity protocol: the text (less one final newline, as llama.cpp reads
// -f) encoded once with the tokenizer's specials,
// chunks of --seq tokens (BOS replacing each chunk's first token when the tokenizer adds
// one), the second half of each chunk scored.
static int eval_llama_ppl(const cli_model_opts *mo, const char *data, int64_t seq, int64_t batch, bool quiet) {
    fk_model m;
    fk_tokenizer *tok = NULL;
    fk_status st = cli_model_open(mo, &m, &tok);
    if (st != FK_OK) return cli_fail("eval", st);
    char *text = NULL;
    size_t n = 0;
    fk_tok_out o = {0};
    if (!tok) st = fk_error(FK_ERR_ARG, "--protocol llama-perplexity needs the model's tokenizer (give --tokenizer)");
    if (st == FK_OK) st = fk_read_file(data, &text, &n);
    if (st == FK_OK && n > 0 && text[n - 1] == '\n') n--;  // llama.cpp's -f drops the file's last newline
    if (st == FK_OK) st = fk_tok_encode(tok, text, n, FK_ENC_ADD_SPECIAL, &o);
    fk_eval_result r;
    int n_ctx = (int)(seq > 0 ? seq : m.cfg.max_seq);
    int32_t bos = tok && fk_tok_adds_bos(tok) ? fk_tok_bos(tok) : -1;
    double t0 = fk_time_s();
    cli_progress_begin("eval", quiet, "chunks");
    if (st == FK_OK) st = fk_eval_llama_ppl(&m, o.ids, o.n, n_ctx, bos, (int)batch, (int64_t)n, &r);
    cli_progress_end();
    double dt = fk_time_s() - t0;
    if (st == FK_OK) {
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "model", mo->path);
        cJSON_AddStringToObject(j, "data", data);
        cJSON_AddStringToObject(j, "protocol", "llama-perplexity");
        cli_json_int(j, "n_ctx", n_ctx);
        cli_json_int(j, "chunks", o.n / n_ctx);
        cJSON_AddBoolToObject(j, "bos", bos >= 0);
        cli_json_int(j, "tokens", r.tokens);
        cli_json_num(j, "loss", "%.6f", r.loss);
        cli_json_num(j, "ppl", "%.4f", r.ppl);
        cli_json_num(j, "bpb", "%.6f", r.bpb);
        cli_json_num(j, "tokens_per_s", "%.1f", (double)(o.n / n_ctx * n_ctx) / dt);
        cli_json_print(j, stdout, NULL);
    }
    fk_tok_out_free(&o);
    free(text);
    fk_tok_free(tok);
    fk_model_free(&m);
    return st == FK_OK ? 0 : cli_fail("eval", st);
}

// --probes: log-likelihood multiple choice, per file (items[i], correct[i]) and per domain over
// all files.
typedef struct {
    int64_t items[CLI_LIST_MAX], correct[CLI_LIST_MAX];
    fk_probe_result all;  // the counts of every file (fk_probe_result_add)
} probe_totals;

static fk_status eval_probes(fk_model *m, const fk_tokenizer *tok, const cli_list *probes, probe_totals *p) {
    memset(p, 0, sizeof *p);
    fk_status st = probes->n > 0 && !tok ? fk_error(FK_ERR_ARG, "--probes needs the model's tokenizer (give --tokenizer)") : FK_OK;
    for (int i = 0; i < probes->n && st == FK_OK; i++) {
        fk_probe_result pr;
        st = fk_probes_eval(m, tok, probes->v[i], 0, &pr);
        if (st != FK_OK) break;
        p->items[i] = pr.items;
        p->correct[i] = pr.correct;
        fk_probe_result_add(&p->all, &pr);
        fk_probe_result_free(&pr);
    }
    return st;
}

static void add_probes_json(cJSON *j, const cli_list *probes, const probe_totals *p) {
    if (probes->n > 0) {
        cli_json_int(j, "probes", p->all.items);
        cli_json_num(j, "accuracy", "%.4f", p->all.accuracy);
        cJSON *dom = cJSON_AddObjectToObject(j, "probe_domains");
        for (int k = 0; k < p->all.n_domains; k++) {
            const fk_probe_domain *pd = &p->all.domain[k];
            cJSON *d = cJSON_AddObjectToObject(dom, pd->name);
            cli_json_int(d, "items", pd->items);
            cli_json_num(d, "accuracy", "%.4f", (double)pd->correct / (double)pd->items);
        }
    }
    if (probes->n > 1) {
        cJSON *files = cJSON_AddArrayToObject(j, "probe_files");
        for (int i = 0; i < probes->n; i++) {
            cJSON *f = cJSON_CreateObject();
            cJSON_AddStringToObject(f, "file", probes->v[i]);
            cli_json_int(f, "items", p->items[i]);
            cli_json_num(f, "accuracy", "%.4f", (double)p->correct[i] / (double)p->items[i]);
            cJSON_AddItemToArray(files, f);
        }
    }
}

typedef enum { PROTOCOL_FUSEKIT = 0, PROTOCOL_LLAMA_PPL = 1 } eval_protocol;
typedef struct {
    cli_model_opts model;
    cli_data_opts data;
    int64_t threads;
    fk_precision precision;  // --precision
    cli_list ens, probes;
    fk_align_opts ao;
    const char *kl_to;
    eval_protocol protocol;
    bool quiet;  // --quiet: no progress line
    fk_device device;  // --device
} eval_args;



// The fusekit protocol: windows of --seq tokens, with --kl-to and --probes.
static int eval_windows(const eval_args *a) {
    fk_model m;
    fk_token_data d;
    fk_tokenizer *tok = NULL;
    fk_status st = cli_model_open(&a->model, &m, &tok);
    if (st != FK_OK) return cli_fail("eval", st);
    st = fk_data_load_tok(a->data.path, tok, &d);
    if (st != FK_OK) { fk_tok_free(tok); fk_model_free(&m); return cli_fail("eval", st); }
    fk_eval_result r;
    int seq = (int)(a->data.seq > 0 ? a->data.seq : m.cfg.max_seq), batch = (int)a->data.batch;
    double t0 = fk_time_s();
    fk_gpu *g = NULL;
    if (a->device == FK_DEVICE_CUDA) {  // the windows on the GPU; --kl-to and --probes stay on the CPU
        st = fk_gpu_open(&g, &m, batch, seq, false);
        fk_eval_set_gpu(g);
    }
    cli_progress_begin("eval", a->quiet, "windows");
    if (st == FK_OK) st = fk_eval_data(&m, &d, seq, batch, a->data.max_tokens, &r);
    cli_progress_end();
    fk_eval_set_gpu(NULL);
    fk_gpu_close(g);
    double dt = fk_time_s() - t0, kl = NAN;
    if (st == FK_OK && a->kl_to) {
        fk_model ref;
        st = fk_model_load(a->kl_to, FK_LOAD_FROZEN, &ref, NULL);
        if (st == FK_OK) {
            cli_progress_begin("eval", a->quiet, "windows (KL)");
            st = fk_eval_kl(&ref, &m, &d, seq, batch, a->data.max_tokens, &kl);
            cli_progress_end();
            fk_model_free(&ref);
        }
    }
    probe_totals p;
    if (st == FK_OK) st = eval_probes(&m, tok, &a->probes, &p);
    if (st == FK_OK) {
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "model", a->model.path);
        cJSON_AddStringToObject(j, "data", a->data.path);
        cJSON_AddBoolToObject(j, "bos", d.bos_first);
        cli_json_int(j, "tokens", r.tokens);
        cli_json_int(j, "bytes", r.bytes);
        cli_json_num(j, "loss", "%.6f", r.loss);
        cli_json_num(j, "ppl", "%.4f", r.ppl);
        cli_json_num(j, "bpb", "%.6f", r.bpb);
        cli_json_num(j, "tokens_per_s", "%.1f", (double)r.tokens / dt);
        if (a->kl_to) {
            cJSON_AddStringToObject(j, "kl_to", a->kl_to);
            cli_json_num(j, "kl", "%.6g", kl);
        }
        add_probes_json(j, &a->probes, &p);
        cli_json_print(j, stdout, NULL);
    }
    fk_tok_free(tok);
    fk_data_free(&d);
    fk_model_free(&m);
    return st == FK_OK ? 0 : cli_fail("eval", st);
}

int cmd_eval(int argc, char **argv) {
    eval_args a = {.model = {.flags = FK_LOAD_FROZEN}, .data = {.batch = 4}};
    fk_align_opts_default(&a.ao);
    cli_opt opts[] = {
        CLI_ROW_MODEL(&a.model, "model folder or .gguf file (required)"),
        CLI_ROW_DATA(&a.data, "text file or token shard (required)"),
        CLI_ROW_TOKENIZER(&a.model),
        CLI_ROW_SEQ(&a.data, "window length (default: the model's context)"),
        CLI_ROW_BATCH(&a.data, "windows per forward pass"),
        CLI_ROW_MAX_TOKENS(&a.data, "score at most this many tokens, 0 = all"),
        CLI_ROW_THREADS(&a.threads),
        CLI_ROW_PRECISION_FROZEN(&a.precision),
        {"--ensemble", OPT_LIST, &a.ens, "score the aligned average of these models' next-token distributions (with --model first)", false, NULL},
        CLI_ROWS_ALIGN(&a.ao, "the ensemble"),
        {"--align-cache", OPT_STR, &a.ao.cache_dir, "folder for vocabulary maps (default: none, built each time)", false, NULL},
        {"--probes", OPT_LIST, &a.probes, "also score these multiple-choice probe files (JSON lines, e.g. from data synth)", false, NULL},
        {"--protocol", OPT_CHOICE, CLI_ENUM(&a.protocol), "windows (above), or llama.cpp's llama-perplexity chunks (see README)", false, "fusekit|llama-perplexity"},
        {"--kl-to", OPT_STR, &a.kl_to, "also the mean KL(REF || model) per scored position to this model, a folder or .gguf (same vocabulary; e.g. before folding)", false, NULL},
        {"--device", OPT_CHOICE, CLI_ENUM(&a.device), "where the windows' forwards run: cpu, or cuda (the CUDA engine: bf16 "
         "products; --kl-to and --probes stay on the CPU; not with --ensemble or --protocol llama-perplexity)", false, "cpu|cuda"},
        {"--quiet", OPT_FLAG, &a.quiet, "no progress line on stderr (there is none when stderr is not a terminal)", false, NULL},
        CLI_ROWS_END,
    };
    int rc = cli_parse_verb(argc, argv, opts,
                            "usage: fusekit eval --model DIR|FILE.gguf --data FILE [options]\n\n"
                            "Protocol: the data is cut into consecutive windows of --seq tokens; every token but the\n"
                            "first is predicted once, from the tokens before it in its window. When the tokenizer adds\n"
                            "BOS (Llama 2, Gemma), each window is BOS and --seq - 1 tokens, and every token is predicted\n"
                            "once, the first after BOS alone. Prints one JSON line.\n"
                            "With --ensemble: the first model's tokens are scored by the average of the members'\n"
                            "distributions aligned to them (a member joins where a token of its own has the same span).");
    if (rc >= 0) return rc;
    if (a.device == FK_DEVICE_CUDA && a.precision == FK_PRECISION_INT8) {
        fprintf(stderr, "fusekit eval: error: --precision int8 runs on the CPU (the CUDA engine multiplies in bf16): drop --device cuda or --precision int8\n");
        return 2;
    }
    if (a.device == FK_DEVICE_CUDA && (a.ens.n > 0 || a.protocol != PROTOCOL_FUSEKIT)) {
        fprintf(stderr, "fusekit eval: error: --device cuda runs the fusekit protocol's windows only (not --ensemble or --protocol llama-perplexity yet)\n");
        return 2;
    }
    if (a.ens.n > 0) {
        if ((rc = cli_require("eval", "--data", 1, a.data.path)) != 0) return rc;
        cli_set_threads(a.threads);
        cli_set_precision("eval", a.precision);
        return eval_ensemble(a.model.path, &a.ens, a.data.path, a.data.seq, a.data.batch, &a.ao);
    }
    if ((rc = cli_require("eval", "--model and --data", 2, a.model.path, a.data.path)) != 0) return rc;
    cli_set_threads(a.threads);
    cli_set_precision("eval", a.precision);
    if (a.protocol == PROTOCOL_FUSEKIT) return eval_windows(&a);
    if (a.probes.n || a.kl_to || a.data.max_tokens) {
        fprintf(stderr, "fusekit eval: error: --protocol llama-perplexity takes no --probes, --kl-to or --max-tokens\n");
        return 2;
    }
    return eval_llama_ppl(&a.model, a.data.path, a.data.seq, a.data.batch, a.quiet);
}
