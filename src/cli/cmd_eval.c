// fusekit eval: loss, perplexity and bits per byte of a model on a text or token shard.
#include "cli.h"
#include "fusekit/fold.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

// --ensemble: the aligned average of several models' next-token distributions.
static int eval_ensemble(const char *first, const cli_list *ens, const char *data, int64_t seq, int64_t batch, const char *align,
                         const char *vmap, const char *cache) {
    const char *dirs[CLI_LIST_MAX + 1];
    int n = 0;
    if (first) dirs[n++] = first;
    for (int i = 0; i < ens->n && n <= CLI_LIST_MAX; i++) dirs[n++] = ens->v[i];
    fk_model *models[CLI_LIST_MAX + 1] = {0};
    fk_tokenizer *toks[CLI_LIST_MAX + 1] = {0};
    fk_align_opts ao;
    fk_align_opts_default(&ao);
    ao.cache_dir = cache;
    char *text = NULL;
    size_t len = 0;
    fk_status st = fk_align_parse(align, vmap, &ao);
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
        st = fk_eval_ensemble(models, toks, n, text, len, (int)(seq > 0 ? seq : models[0]->cfg.max_seq), (int)batch, &ao, &r);
    if (st == FK_OK) {
        printf("{\"ensemble\":[");
        for (int i = 0; i < n; i++)
            printf("%s{\"model\":\"%s\",\"bpb\":%.6f,\"coverage\":%.4f}", i ? "," : "", dirs[i], r.member_bpb[i], r.coverage[i]);
        printf("],\"data\":\"%s\",\"positions\":%lld,\"bytes\":%lld,\"bpb\":%.6f,\"seconds\":%.2f}\n", data, (long long)r.positions,
               (long long)r.bytes, r.bpb, fk_time_s() - t0);
    }
    for (int i = 0; i < n; i++) {
        if (models[i]) fk_model_free(models[i]);
        free(models[i]);
        fk_tok_free(toks[i]);
    }
    free(text);
    return st == FK_OK ? 0 : cli_fail("eval", st);
}

// llama.cpp's llama-perplexity protocol: the text encoded once with the tokenizer's specials,
// chunks of --seq tokens (BOS replacing each chunk's first token when the tokenizer adds
// one), the second half of each chunk scored.
static int eval_llama_ppl(const char *model, const char *data, const char *tokenizer, int64_t seq, int64_t batch) {
    fk_model m;
    fk_tokenizer *tok = NULL;
    fk_status st = cli_load_model(model, tokenizer, FK_LOAD_FROZEN, &m, &tok);
    if (st != FK_OK) return cli_fail("eval", st);
    char *text = NULL;
    size_t n = 0;
    fk_tok_out o = {0};
    if (!tok) st = fk_error(FK_ERR_ARG, "--protocol llama-perplexity needs the model's tokenizer (give --tokenizer)");
    if (st == FK_OK) st = fk_read_file(data, &text, &n);
    if (st == FK_OK) st = fk_tok_encode(tok, text, n, FK_ENC_ADD_SPECIAL, &o);
    fk_eval_result r;
    int n_ctx = (int)(seq > 0 ? seq : m.cfg.max_seq);
    int32_t bos = tok && fk_tok_adds_bos(tok) ? fk_tok_bos(tok) : -1;
    double t0 = fk_time_s();
    if (st == FK_OK) st = fk_eval_llama_ppl(&m, o.ids, o.n, n_ctx, bos, (int)batch, (int64_t)n, &r);
    double dt = fk_time_s() - t0;
    if (st == FK_OK)
        printf("{\"model\":\"%s\",\"data\":\"%s\",\"protocol\":\"llama-perplexity\",\"n_ctx\":%d,\"chunks\":%lld,\"bos\":%s,"
               "\"tokens\":%lld,\"loss\":%.6f,\"ppl\":%.4f,\"bpb\":%.6f,\"tokens_per_s\":%.1f}\n",
               model, data, n_ctx, (long long)(o.n / n_ctx), bos >= 0 ? "true" : "false", (long long)r.tokens, r.loss, r.ppl, r.bpb,
               (double)(o.n / n_ctx * n_ctx) / dt);
    fk_tok_out_free(&o);
    free(text);
    fk_tok_free(tok);
    fk_model_free(&m);
    return st == FK_OK ? 0 : cli_fail("eval", st);
}

int cmd_eval(int argc, char **argv) {
    const char *model = NULL, *data = NULL, *tokenizer = NULL;
    int64_t seq = 0, batch = 4, max_tokens = 0, threads = 0;
    cli_list ens = {0}, probes = {0};
    const char *align = "offsets", *vmap = "mined", *cache = NULL, *kl_to = NULL, *protocol = "fusekit";
    cli_opt opts[] = {
        {"--model", OPT_STR, &model, "model folder or .gguf file (required)", false, NULL},
        {"--data", OPT_STR, &data, "text file or token shard (required)", false, NULL},
        {"--tokenizer", OPT_STR, &tokenizer, "tokenizer for text (default: the model's: tokenizer.json, or the GGUF's metadata; bytes for vocab 256)", false, NULL},
        {"--seq", OPT_INT, &seq, "window length (default: the model's context)", false, "[0,1048576]"},
        {"--batch", OPT_INT, &batch, "windows per forward pass (default 4)", false, "[1,65536]"},
        {"--max-tokens", OPT_INT, &max_tokens, "score at most this many tokens, 0 = all (default 0)", false, "[0,)"},
        {"--threads", OPT_INT, &threads, "threads (default: all cores)", false, "[0,4096]"},
        {"--ensemble", OPT_LIST, &ens, "score the aligned average of these models' next-token distributions (with --model first)", false, NULL},
        {"--align", OPT_STR, &align, "offsets | dtw: token alignment for the ensemble (default offsets)", false, NULL},
        {"--vmap", OPT_STR, &vmap, "mined | exact: vocabulary map for the ensemble (default mined)", false, NULL},
        {"--align-cache", OPT_STR, &cache, "folder for vocabulary maps (default: none, built each time)", false, NULL},
        {"--probes", OPT_LIST, &probes, "also score these multiple-choice probe files (JSON lines, e.g. from data synth)", false, NULL},
        {"--protocol", OPT_STR, &protocol, "fusekit | llama-perplexity: windows (above), or llama.cpp's llama-perplexity chunks (see README) (default fusekit)", false, NULL},
        {"--kl-to", OPT_STR, &kl_to, "also the mean KL(REF || model) per scored position to this model, a folder or .gguf (same vocabulary; e.g. before folding)", false, NULL},
        {NULL, 0, NULL, NULL, false, NULL},
    };
    int rc = cli_parse(argc, argv, opts,
                       "usage: fusekit eval --model DIR|FILE.gguf --data FILE [options]\n\n"
                       "Protocol: the data is cut into consecutive windows of --seq tokens; every token but the\n"
                       "first is predicted once, from the tokens before it in its window. When the tokenizer adds\n"
                       "BOS (Llama 2, Gemma), each window is BOS and --seq - 1 tokens, and every token is predicted\n"
                       "once, the first after BOS alone. Prints one JSON line.\n"
                       "With --ensemble: the first model's tokens are scored by the average of the members'\n"
                       "distributions aligned to them (a member joins where a token of its own has the same span).");
    if (rc) return rc == 1 ? 0 : 2;
    if (ens.n > 0) {
        if (!data) { fprintf(stderr, "fusekit eval: error: --data is required\n"); return 2; }
        cli_set_threads(threads);
        return eval_ensemble(model, &ens, data, seq, batch, align, vmap, cache);
    }
    if (!model || !data) { fprintf(stderr, "fusekit eval: error: --model and --data are required\n"); return 2; }
    cli_set_threads(threads);
    if (strcmp(protocol, "llama-perplexity") == 0) {
        if (probes.n || kl_to || max_tokens) {
            fprintf(stderr, "fusekit eval: error: --protocol llama-perplexity takes no --probes, --kl-to or --max-tokens\n");
            return 2;
        }
        return eval_llama_ppl(model, data, tokenizer, seq, batch);
    }
    if (strcmp(protocol, "fusekit") != 0) {
        fprintf(stderr, "fusekit eval: error: --protocol must be fusekit or llama-perplexity (got '%s')\n", protocol);
        return 2;
    }
    fk_model m;
    fk_token_data d;
    fk_tokenizer *tok = NULL;
    fk_status st = cli_load_model(model, tokenizer, FK_LOAD_FROZEN, &m, &tok);
    if (st != FK_OK) return cli_fail("eval", st);
    st = fk_data_load_tok(data, tok, &d);
    if (st != FK_OK) { fk_tok_free(tok); fk_model_free(&m); return cli_fail("eval", st); }
    fk_eval_result r;
    double t0 = fk_time_s();
    st = fk_eval_data(&m, &d, (int)(seq > 0 ? seq : m.cfg.max_seq), (int)batch, max_tokens, &r);
    double dt = fk_time_s() - t0, kl = NAN;
    if (st == FK_OK && kl_to) {
        fk_model ref;
        st = fk_model_load(kl_to, FK_LOAD_FROZEN, &ref, NULL);
        if (st == FK_OK) {
            st = fk_eval_kl(&ref, &m, &d, (int)(seq > 0 ? seq : m.cfg.max_seq), (int)batch, max_tokens, &kl);
            fk_model_free(&ref);
        }
    }
    // --probes: log-likelihood multiple choice, per file and per domain over all files
    int64_t p_items[CLI_LIST_MAX] = {0}, p_correct[CLI_LIST_MAX] = {0}, p_all = 0, p_ok = 0;
    fk_probe_domain p_dom[FK_PROBES_MAX_DOMAINS];
    int n_dom = 0;
    if (st == FK_OK && probes.n > 0 && !tok) st = fk_error(FK_ERR_ARG, "--probes needs the model's tokenizer (give --tokenizer)");
    for (int i = 0; i < probes.n && st == FK_OK; i++) {
        fk_probe_result pr;
        st = fk_probes_eval(&m, tok, probes.v[i], 0, &pr);
        if (st != FK_OK) break;
        p_items[i] = pr.items;
        p_correct[i] = pr.correct;
        p_all += pr.items;
        p_ok += pr.correct;
        for (int d = 0; d < pr.n_domains; d++) {
            int k = 0;
            while (k < n_dom && strcmp(p_dom[k].name, pr.domain[d].name) != 0) k++;
            if (k == n_dom && n_dom == FK_PROBES_MAX_DOMAINS) k--;
            if (k == n_dom) { p_dom[n_dom++] = pr.domain[d]; continue; }
            p_dom[k].items += pr.domain[d].items;
            p_dom[k].correct += pr.domain[d].correct;
        }
        fk_probe_result_free(&pr);
    }
    if (st == FK_OK) {
        printf("{\"model\":\"%s\",\"data\":\"%s\",\"bos\":%s,\"tokens\":%lld,\"bytes\":%lld,\"loss\":%.6f,\"ppl\":%.4f,\"bpb\":%.6f,\"tokens_per_s\":%.1f",
               model, data, d.bos_first ? "true" : "false", (long long)r.tokens, (long long)r.bytes, r.loss, r.ppl, r.bpb, (double)r.tokens / dt);
        if (kl_to) printf(",\"kl_to\":\"%s\",\"kl\":%.6g", kl_to, kl);
        if (probes.n > 0) {
            printf(",\"probes\":%lld,\"accuracy\":%.4f,\"probe_domains\":{", (long long)p_all, (double)p_ok / (double)p_all);
            for (int k = 0; k < n_dom; k++)
                printf("%s\"%s\":{\"items\":%lld,\"accuracy\":%.4f}", k ? "," : "", p_dom[k].name, (long long)p_dom[k].items,
                       (double)p_dom[k].correct / (double)p_dom[k].items);
            printf("}");
        }
        if (probes.n > 1) {
            printf(",\"probe_files\":[");
            for (int i = 0; i < probes.n; i++)
                printf("%s{\"file\":\"%s\",\"items\":%lld,\"accuracy\":%.4f}", i ? "," : "", probes.v[i], (long long)p_items[i],
                       (double)p_correct[i] / (double)p_items[i]);
            printf("]");
        }
        printf("}\n");
    }
    fk_tok_free(tok);
    fk_data_free(&d);
    fk_model_free(&m);
    return st == FK_OK ? 0 : cli_fail("eval", st);
}
