// fusekit generate: sampling with a KV cache, one token at a time.
#include "cli.h"

#include <stdlib.h>
#include <string.h>

int cmd_generate(int argc, char **argv) {
    const char *model = NULL, *prompt = "", *prompt_ids = NULL, *tokenizer = NULL;
    int64_t max_new = 128, top_k = 0, seed = 1337, threads = 0;
    double temperature = 0.8, top_p = 1.0;
    bool greedy = false, ids_out = false;
    cli_opt opts[] = {
        {"--model", OPT_STR, &model, "model folder or .gguf file (required)", false, NULL},
        {"--prompt", OPT_STR, &prompt, "prompt text", false, NULL},
        {"--tokenizer", OPT_STR, &tokenizer, "tokenizer (default: the model's: tokenizer.json, or the GGUF's metadata; bytes for vocab 256)", false, NULL},
        {"--prompt-ids", OPT_STR, &prompt_ids, "prompt as space-separated token ids", false, NULL},
        {"-n|--max-new", OPT_INT, &max_new, "tokens to generate (default 128)", false, "[0,1048576]"},
        {"--temperature", OPT_FLOAT, &temperature, "sampling temperature, 0 = greedy (default 0.8)", false, "[0,100]"},
        {"--greedy", OPT_FLAG, &greedy, "always take the most likely token", false, NULL},
        {"--top-k", OPT_INT, &top_k, "sample among the k most likely tokens, 0 = off (default 0)", false, "[0,)"},
        {"--top-p", OPT_FLOAT, &top_p, "nucleus sampling mass, 1 = off (default 1)", false, "(0,1]"},
        {"--seed", OPT_INT, &seed, "sampling seed (default 1337)", false, "[0,)"},
        {"--ids", OPT_FLAG, &ids_out, "print token ids instead of text", false, NULL},
        {"--threads", OPT_INT, &threads, "threads (default: all cores)", false, "[0,4096]"},
        {NULL, 0, NULL, NULL, false, NULL},
    };
    int rc = cli_parse(argc, argv, opts, "usage: fusekit generate --model DIR|FILE.gguf [--prompt TEXT | --prompt-ids IDS] [options]");
    if (rc) return rc == 1 ? 0 : 2;
    if (!model) { fprintf(stderr, "fusekit generate: error: --model is required\n"); return 2; }
    cli_set_threads(threads);
    fk_model m;
    fk_tokenizer *tok = NULL;
    fk_status st = cli_load_model(model, tokenizer, FK_LOAD_FROZEN, &m, &tok);
    if (st != FK_OK) return cli_fail("generate", st);
    int64_t V = m.cfg.vocab_size, cap = m.cfg.max_seq;
    fk_tok_out enc = {0};
    if (tok && !prompt_ids) st = fk_tok_encode(tok, prompt, strlen(prompt), FK_ENC_ADD_SPECIAL, &enc);
    // the whole prompt is read; when it is longer than the context its newest tokens are kept
    size_t plen = (size_t)enc.n + 1;
    int32_t *all = malloc(plen * sizeof(int32_t) + (prompt_ids ? strlen(prompt_ids) * sizeof(int32_t) : 0));
    int32_t *toks = malloc((size_t)cap * sizeof(int32_t));
    float *logits = malloc((size_t)V * sizeof(float));
    int64_t n_all = 0;
    int n = 0;
    bool text_out = tok && !ids_out;
    if (prompt_ids) {
        const char *p = prompt_ids;
        while (st == FK_OK) {
            while (*p == ' ' || *p == ',' || *p == '\t' || *p == '\n') p++;
            if (!*p) break;
            char *end;
            long long v = strtoll(p, &end, 10);
            if (end == p || v < 0 || v >= V)
                st = fk_error(FK_ERR_ARG, "--prompt-ids: '%.20s' is not a token id in [0, %lld)", p, (long long)V);
            else all[n_all++] = (int32_t)v;
            p = end;
        }
    } else {
        if (!tok && *prompt) st = fk_error(FK_ERR_ARG, "%s has no tokenizer (tokenizer.json, or the GGUF's tokenizer.ggml.* keys): give --tokenizer, or the prompt as --prompt-ids", model);
        for (int64_t i = 0; i < enc.n; i++) all[n_all++] = enc.ids[i];
    }
    fk_tok_out_free(&enc);
    int64_t from = n_all > cap ? n_all - cap : 0;
    for (int64_t i = from; i < n_all; i++) toks[n++] = all[i];
    free(all);
    if (st == FK_OK && n == 0) toks[n++] = m.cfg.bos_id >= 0 && m.cfg.bos_id < V ? m.cfg.bos_id : (V == 256 ? '\n' : 0);
    fk_sampler s = {greedy ? 0.0f : (float)temperature, (int)top_k, (float)top_p};
    fk_rng rng;
    fk_rng_seed(&rng, (uint64_t)seed);
    if (text_out && st == FK_OK && !prompt_ids) fwrite(prompt, 1, strlen(prompt), stdout);
    char piece[256];
    double t0 = fk_time_s(), t_first = 0;
    int generated = 0;
    if (st == FK_OK) st = fk_model_step(&m, toks, n, 0, logits);
    t_first = fk_time_s() - t0;
    while (st == FK_OK && generated < max_new) {
        int32_t next = fk_sample(&s, logits, V, &rng);
        generated++;
        if (text_out) {
            if (fk_tok_type(tok, next) != FK_TT_CONTROL) {  // EOS and the like are not text
                size_t k = fk_tok_token_bytes(tok, next, piece, sizeof piece);
                fwrite(piece, 1, k < sizeof piece ? k : sizeof piece, stdout);
            }
        } else printf("%s%d", generated > 1 ? " " : "", next);
        fflush(stdout);
        if (next == m.cfg.eos_id || (tok && next == fk_tok_eos(tok))) break;
        if (n == cap) {
            // context full: keep the newest half and rebuild the cache from it
            int keep = (int)(cap / 2);
            if (keep == 0) {  // a context of one token: start over from the new one
                toks[0] = next;
                st = fk_model_step(&m, toks, 1, 0, logits);
                n = 1;
                continue;
            }
            memmove(toks, toks + n - keep, (size_t)keep * sizeof(int32_t));
            n = keep;
            st = fk_model_step(&m, toks, n, 0, logits);
            if (st != FK_OK) break;
        }
        toks[n] = next;
        st = fk_model_step(&m, &toks[n], 1, n, logits);
        n++;
    }
    double dt = fk_time_s() - t0;
    printf("\n");
    fflush(stdout);
    if (st == FK_OK)
        fprintf(stderr, "generated %d tokens: prompt %.1f ms, %.1f tokens/s after it\n", generated, 1e3 * t_first,
                generated > 1 ? (generated - 1) / (dt - t_first) : 0.0);
    free(toks); free(logits);
    fk_tok_free(tok);
    fk_model_free(&m);
    return st == FK_OK ? 0 : cli_fail("generate", st);
}
