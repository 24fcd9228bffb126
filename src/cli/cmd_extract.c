// fusekit extract: a source model's top-k next-token distributions over a text, into a
// distribution store (.fkd); or, with --info, a store's header.
#include "cli.h"
#include "fusekit/fusion.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fusekit/store.h"

typedef struct { bool tty; double last, rate; } progress_state;

static bool on_progress(const fk_extract_progress *p, void *user) {
    progress_state *ps = user;
    double now = fk_time_s();
    ps->rate = p->positions_per_s;
    if (ps->tty && (now - ps->last > 0.25 || p->seqs_done == p->seqs_total)) {
        ps->last = now;
        double left = (double)(p->seqs_total - p->seqs_done) * (p->seqs_done > 0 ? (double)p->positions_done / (double)p->seqs_done : 0);
        double eta = p->positions_per_s > 0 ? left / p->positions_per_s : 0;
        fprintf(stderr, "\rextract: sequence %lld/%lld  %.0f positions/s  ETA %dm%02ds   ", (long long)p->seqs_done,
                (long long)p->seqs_total, p->positions_per_s, (int)(eta / 60), (int)eta % 60);
        fflush(stderr);
    }
    return !cli_stop_signal;  // Ctrl-C / SIGTERM (cli_stop_begin)
}

static int print_info(const char *path) {
    fk_store *s;
    fk_status st = fk_store_open(path, &s);
    if (st != FK_OK) return cli_fail("extract", st);
    const fk_store_header *h = fk_store_header_of(s);
    int64_t pos = fk_store_header_positions(h), bytes = fk_store_file_bytes(s);
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "path", path);
    cli_json_int(j, "version", FK_STORE_VERSION);
    cJSON_AddBoolToObject(j, "aligned", (h->flags & FK_STORE_ALIGNED) != 0);
    cJSON_AddBoolToObject(j, "bos", (h->flags & FK_STORE_BOS) != 0);
    cJSON_AddStringToObject(j, "precision", (h->flags & FK_STORE_BF16) ? "bf16" : "fp32");
    if (h->flags & FK_STORE_INT8) cJSON_AddStringToObject(j, "quantized_products", "8-bit activations");
    const char *grids[] = {"fine", "compact", "other"};
    cJSON_AddStringToObject(j, "grid", grids[h->grid <= FK_STORE_GRID_OTHER ? h->grid : FK_STORE_GRID_OTHER]);
    cli_json_int(j, "k", h->k);
    cli_json_int(j, "seq", h->seq);
    cli_json_int(j, "vocab", h->vocab_size);
    cli_json_int(j, "tokens", h->n_tokens);
    cli_json_int(j, "positions", pos);
    cli_json_int(j, "sequences", fk_store_n_seqs(s));
    cli_json_int(j, "corpus_bytes", h->corpus_bytes);
    const struct { const char *key; uint64_t fp; } fps[] = {{"model_fp", h->model_fp}, {"tokenizer_fp", h->tokenizer_fp}, {"corpus_fp", h->corpus_fp}};
    for (int i = 0; i < 3; i++) {
        char hex[20];
        snprintf(hex, sizeof hex, "%016llx", (unsigned long long)fps[i].fp);
        cJSON_AddStringToObject(j, fps[i].key, hex);
    }
    cli_json_int(j, "bytes", bytes);
    cli_json_num(j, "bytes_per_position", "%.4f", pos > 0 ? (double)bytes / (double)pos : 0.0);
    cli_json_print(j, stdout, NULL);
    fk_store_close(s);
    return 0;
}

// The JSON line of a finished extraction (the store s, now complete at path).
static void print_result(const fk_model *m, fk_store *s, const char *path, const fk_extract_opts *o, bool cached, double dt, double rate) {
    // memory: the weights as the forward reads them, and the activations of one forward pass of
    // the sequence length the store was made with (BOS, when the source saw it, in front)
    const fk_store_header *hd = fk_store_header_of(s);
    double weights_mb = (double)fk_model_weight_bytes(m) / 1048576.0;
    double acts_mb = (double)fk_model_activation_bytes(m, o->batch, hd->seq + (hd->flags & FK_STORE_BOS ? 1 : 0), false) / 1048576.0;
    int64_t pos = fk_store_header_positions(hd), bytes = fk_store_file_bytes(s);
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "store", path);
    cJSON_AddBoolToObject(j, "cached", cached);
    cli_json_int(j, "positions", pos);
    cli_json_int(j, "bytes", bytes);
    cli_json_num(j, "bytes_per_position", "%.4f", pos > 0 ? (double)bytes / (double)pos : 0.0);
    cli_json_num(j, "seconds", "%.3f", dt);
    cli_json_num(j, "positions_per_s", "%.1f", rate);
    cli_json_num(j, "weights_mb", "%.1f", weights_mb);
    cli_json_num(j, "activations_mb", "%.1f", acts_mb);
    cli_json_print(j, stdout, NULL);
}

int cmd_extract(int argc, char **argv) {
    cli_model_opts mo = {.flags = FK_LOAD_FROZEN};
    const char *data = NULL, *info = NULL;
    cli_out_opts out = {0};
    int64_t threads = 0;
    bool restart = false;
    fk_extract_opts o;
    fk_extract_defaults(&o);
    cli_opt opts[] = {
        CLI_ROW_MODEL(&mo, "source model: a folder or a .gguf file (required)"),
        {"--data", OPT_STR, &data, "text file (required)", false, NULL},
        CLI_ROW_OUT(&out, "output store, e.g. SRC.fkd (required)"),
        {"-k", OPT_I32, &o.k, "entries kept per position", false, "[1,64]"},
        CLI_ROW_TOKENIZER(&mo),
        {"--seq", OPT_I32, &o.seq, "positions per sequence (default: min(model context, 512); one less when the tokenizer adds BOS, which goes first)", false, "[0,1048576]"},
        {"--batch", OPT_I32, &o.batch, "sequences per forward pass", false, "[1,65536]"},
        {"--store-grid", OPT_CHOICE, CLI_ENUM(&o.grid), "quantisation of the stored log-probabilities: fine (offsets below the top-1 on a 3/32-nat grid, top-1 1/16, ce 1/32) or compact (1/4 nat, 1/2 beyond 2 nats, top-1 and ce 1/8; about 13% smaller); include/fusekit/store.h states each one's error bounds", false, "fine|compact"},
        {"--restart", OPT_FLAG, &restart, "discard an unfinished .partial (or a different store at --out) and start over", false, NULL},
        CLI_ROW_PRECISION_FROZEN(&o.precision),
        {"--device", OPT_CHOICE, CLI_ENUM(&o.device), "where the forwards and top-k run: cpu, or cuda (the CUDA engine: bf16 "
         "products, the store marked bf16; one process)", false, "cpu|cuda"},
        CLI_ROW_THREADS(&threads),
        {"--info", OPT_STR, &info, "print the header of a store FILE.fkd as JSON and exit", false, NULL},
        CLI_ROWS_END,
    };
    int rc = cli_parse_verb(argc, argv, opts,
                            "usage: fusekit extract --model SRC --data FILE -k 10 -o SRC.fkd [options]\n"
                            "       fusekit extract --info FILE.fkd\n\n"
                            "Runs the model over the text in sequences of --seq tokens and stores, per position, the top-k\n"
                            "next-token log-probabilities and the cross-entropy of the true next token. An unfinished run\n"
                            "(killed, or Ctrl-C) leaves OUT.partial and resumes from it; a complete store with the same\n"
                            "header is left as it is. Prints one JSON line.");
    if (rc >= 0) return rc;
    if (info) return print_info(info);
    if ((rc = cli_require("extract", "--model, --data and -o", 3, mo.path, data, out.path)) != 0) return rc;
    const char *model = mo.path, *tokenizer = mo.tokenizer;
    {
        const char *ins[] = {model, data, tokenizer};
        cli_out_spec os = {"-o", out.path, false, true};  // an existing store resumes (or is found complete)
        if ((rc = cli_check_output("extract", &os, ins, 3)) != 0) return rc;
    }
    cli_set_threads(threads);
    fk_model m;
    fk_tokenizer *tok = NULL;
    fk_status st = cli_model_open(&mo, &m, &tok);
    if (st != FK_OK) return cli_fail("extract", st);
    if (!tok) {
        st = fk_error(FK_ERR_ARG, "%s has no tokenizer (tokenizer.json, or the GGUF's tokenizer.ggml.* keys) and its vocabulary is not 256 bytes: pass --tokenizer", model);
        fk_model_free(&m);
        return cli_fail("extract", st);
    }
    // the tokenizer as it reads back from beside the store (a GGUF's may change fingerprint)
    if ((st = cli_store_tokenizer(out.path, &tok)) != FK_OK) { fk_tok_free(tok); fk_model_free(&m); return cli_fail("extract", st); }
    progress_state ps = {isatty(2) != 0, 0, 0};
    cli_stop_begin();
    bool stopped = false, cached = false;
    double t0 = fk_time_s();
    st = fk_extract_ex(&m, tok, data, &o, out.path, restart, on_progress, &ps, &stopped, &cached);
    double dt = fk_time_s() - t0;
    cli_stop_end();
    if (ps.tty && ps.last > 0) fprintf(stderr, "\n");
    fk_tok_free(tok);  // (saved beside the store before extraction: cli_store_tokenizer)
    fk_store *s = NULL;
    if (st == FK_OK && !stopped) st = fk_store_open(out.path, &s);
    if (st != FK_OK || stopped) {
        fk_model_free(&m);
        if (st != FK_OK) return cli_fail("extract", st);
        fprintf(stderr, "fusekit extract: interrupted; %s.partial is kept, run the same command again to resume\n", out.path);
        return cli_stop_code();
    }
    print_result(&m, s, out.path, &o, cached, dt, ps.rate);
    fk_model_free(&m);
    fk_store_close(s);
    return 0;
}
