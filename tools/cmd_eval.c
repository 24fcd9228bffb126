// fusekit eval: loss, perplexity and bits per byte of a model on a text or token shard.
#include "cli.h"

int cmd_eval(int argc, char **argv) {
    const char *model = NULL, *data = NULL, *tokenizer = NULL;
    int64_t seq = 0, batch = 4, max_tokens = 0, threads = 0;
    cli_opt opts[] = {
        {"--model", OPT_STR, &model, "model folder (required)", false},
        {"--data", OPT_STR, &data, "text file or token shard (required)", false},
        {"--tokenizer", OPT_STR, &tokenizer, "tokenizer for text (default: the model folder's tokenizer.json; bytes for vocab 256)", false},
        {"--seq", OPT_INT, &seq, "window length (default: the model's context)", false},
        {"--batch", OPT_INT, &batch, "windows per forward pass (default 4)", false},
        {"--max-tokens", OPT_INT, &max_tokens, "score at most this many tokens, 0 = all (default 0)", false},
        {"--threads", OPT_INT, &threads, "threads (default: all cores)", false},
        {NULL, 0, NULL, NULL, false},
    };
    int rc = cli_parse(argc, argv, opts,
                       "usage: fusekit eval --model DIR --data FILE [options]\n\n"
                       "Protocol: the data is cut into consecutive windows of --seq tokens; every token but the\n"
                       "first is predicted once, from the tokens before it in its window. Prints one JSON line.");
    if (rc) return rc == 1 ? 0 : 2;
    if (!model || !data) { fprintf(stderr, "fusekit eval: error: --model and --data are required\n"); return 2; }
    cli_set_threads(threads);
    fk_model m;
    fk_token_data d;
    fk_status st = fk_hf_load(&m, model);
    if (st != FK_OK) return cli_fail("eval", st);
    fk_tokenizer *tok = NULL;
    st = cli_model_tokenizer(model, tokenizer, m.cfg.vocab_size, &tok);
    if (st == FK_OK) st = fk_data_load_tok(data, tok, &d);
    fk_tok_free(tok);
    if (st != FK_OK) { fk_model_free(&m); return cli_fail("eval", st); }
    fk_eval_result r;
    double t0 = fk_time_s();
    st = fk_eval_data(&m, &d, (int)(seq > 0 ? seq : m.cfg.max_seq), (int)batch, max_tokens, &r);
    double dt = fk_time_s() - t0;
    if (st == FK_OK)
        printf("{\"model\":\"%s\",\"data\":\"%s\",\"tokens\":%lld,\"bytes\":%lld,\"loss\":%.6f,\"ppl\":%.4f,\"bpb\":%.6f,\"tokens_per_s\":%.1f}\n",
               model, data, (long long)r.tokens, (long long)r.bytes, r.loss, r.ppl, r.bpb, (double)r.tokens / dt);
    fk_data_free(&d);
    fk_model_free(&m);
    return st == FK_OK ? 0 : cli_fail("eval", st);
}
