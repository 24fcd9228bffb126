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
    printf("{\"path\":\"%s\",\"version\":%d,\"aligned\":%s,\"bos\":%s,\"k\":%d,\"seq\":%d,\"vocab\":%lld,\"tokens\":%lld,\"positions\":%lld,"
           "\"sequences\":%lld,\"corpus_bytes\":%lld,\"model_fp\":\"%016llx\",\"tokenizer_fp\":\"%016llx\",\"corpus_fp\":\"%016llx\","
           "\"bytes\":%lld,\"bytes_per_position\":%.4f}\n",
           path, FK_STORE_VERSION, h->flags & FK_STORE_ALIGNED ? "true" : "false",
           h->flags & FK_STORE_BOS ? "true" : "false", h->k, h->seq, (long long)h->vocab_size,
           (long long)h->n_tokens, (long long)pos, (long long)fk_store_n_seqs(s), (long long)h->corpus_bytes,
           (unsigned long long)h->model_fp, (unsigned long long)h->tokenizer_fp, (unsigned long long)h->corpus_fp, (long long)bytes,
           pos > 0 ? (double)bytes / (double)pos : 0.0);
    fk_store_close(s);
    return 0;
}

int cmd_extract(int argc, char **argv) {
    const char *model = NULL, *data = NULL, *out = NULL, *tokenizer = NULL, *info = NULL;
    int64_t k = 10, seq = 0, batch = 4, threads = 0;
    bool restart = false;
    cli_opt opts[] = {
        {"--model", OPT_STR, &model, "source model: a folder or a .gguf file (required)", false, NULL},
        {"--data", OPT_STR, &data, "text file (required)", false, NULL},
        {"-o|--out", OPT_STR, &out, "output store, e.g. SRC.fkd (required)", false, NULL},
        {"-k", OPT_INT, &k, "entries kept per position, 1..64 (default 10)", false, "[1,64]"},
        {"--tokenizer", OPT_STR, &tokenizer, "tokenizer (default: the model's: tokenizer.json, or the GGUF's metadata; bytes for vocab 256)", false, NULL},
        {"--seq", OPT_INT, &seq, "positions per sequence (default: min(model context, 512); one less when the tokenizer adds BOS, which goes first)", false, "[0,1048576]"},
        {"--batch", OPT_INT, &batch, "sequences per forward pass (default 4)", false, "[1,65536]"},
        {"--restart", OPT_FLAG, &restart, "discard an unfinished .partial (or a different store at --out) and start over", false, NULL},
        {"--threads", OPT_INT, &threads, "threads (default: all cores)", false, "[0,4096]"},
        {"--info", OPT_STR, &info, "print the header of a store FILE.fkd as JSON and exit", false, NULL},
        {NULL, 0, NULL, NULL, false, NULL},
    };
    int rc = cli_parse(argc, argv, opts,
                       "usage: fusekit extract --model SRC --data TEXT -k 10 -o SRC.fkd [options]\n"
                       "       fusekit extract --info FILE.fkd\n\n"
                       "Runs the model over the text in sequences of --seq tokens and stores, per position, the top-k\n"
                       "next-token log-probabilities and the cross-entropy of the true next token. An unfinished run\n"
                       "(killed, or Ctrl-C) leaves OUT.partial and resumes from it; a complete store with the same\n"
                       "header is left as it is. Prints one JSON line.");
    if (rc) return rc == 1 ? 0 : 2;
    if (info) return print_info(info);
    if (!model || !data || !out) { fprintf(stderr, "fusekit extract: error: --model, --data and -o are required\n"); return 2; }
    if (k < 1 || k > FK_STORE_MAX_K || seq < 0 || batch < 1) {
        fprintf(stderr, "fusekit extract: error: -k must be 1..%d, --seq >= 0, --batch >= 1\n", FK_STORE_MAX_K);
        return 2;
    }
    {
        const char *ins[] = {model, data, tokenizer};
        cli_out_spec os = {"-o", out, false, true};  // an existing store resumes (or is found complete)
        if ((rc = cli_check_output("extract", &os, ins, 3)) != 0) return rc;
    }
    cli_set_threads(threads);
    fk_model m;
    fk_tokenizer *tok = NULL;
    fk_status st = cli_load_model(model, tokenizer, FK_LOAD_FROZEN, &m, &tok);
    if (st != FK_OK) return cli_fail("extract", st);
    if (!tok) {
        st = fk_error(FK_ERR_ARG, "%s has no tokenizer (tokenizer.json, or the GGUF's tokenizer.ggml.* keys) and its vocabulary is not 256 bytes: pass --tokenizer", model);
        fk_model_free(&m);
        return cli_fail("extract", st);
    }
    // the tokenizer as it reads back from beside the store (a GGUF's may change fingerprint)
    if ((st = cli_store_tokenizer(out, &tok)) != FK_OK) { fk_tok_free(tok); fk_model_free(&m); return cli_fail("extract", st); }
    fk_extract_opts o = {(int)k, (int)seq, (int)batch};
    progress_state ps = {isatty(2) != 0, 0, 0};
    cli_stop_begin();
    bool stopped = false, cached = false;
    double t0 = fk_time_s();
    st = fk_extract_ex(&m, tok, data, &o, out, restart, on_progress, &ps, &stopped, &cached);
    double dt = fk_time_s() - t0;
    cli_stop_end();
    if (ps.tty && ps.last > 0) fprintf(stderr, "\n");
    fk_tok_free(tok);  // (saved beside the store before extraction: cli_store_tokenizer)
    fk_store *s = NULL;
    if (st == FK_OK && !stopped) st = fk_store_open(out, &s);
    if (st != FK_OK || stopped) {
        fk_model_free(&m);
        if (st != FK_OK) return cli_fail("extract", st);
        fprintf(stderr, "fusekit extract: interrupted; %s.partial is kept, run the same command again to resume\n", out);
        return cli_stop_code();
    }
    // memory: the weights as the forward reads them, and the activations of one forward pass of
    // the sequence length the store was made with (BOS, when the source saw it, in front)
    const fk_store_header *hd = fk_store_header_of(s);
    double weights_mb = (double)fk_model_weight_bytes(&m) / 1048576.0;
    double acts_mb = (double)fk_model_activation_bytes(&m, o.batch, hd->seq + (hd->flags & FK_STORE_BOS ? 1 : 0), false) / 1048576.0;
    fk_model_free(&m);
    int64_t pos = fk_store_header_positions(hd), bytes = fk_store_file_bytes(s);
    fk_store_close(s);
    printf("{\"store\":\"%s\",\"cached\":%s,\"positions\":%lld,\"bytes\":%lld,\"bytes_per_position\":%.4f,\"seconds\":%.3f,"
           "\"positions_per_s\":%.1f,\"weights_mb\":%.1f,\"activations_mb\":%.1f}\n",
           out, cached ? "true" : "false", (long long)pos, (long long)bytes, pos > 0 ? (double)bytes / (double)pos : 0.0, dt,
           ps.rate, weights_mb, acts_mb);
    return 0;
}
