// fusekit generate: sampling with a KV cache (fk_generate), printing each token as it comes.
#include "cli.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    const fk_tokenizer *tok;  // NULL: ids are printed
    int64_t printed;
} print_state;

static bool print_token(int32_t id, void *user) {
    print_state *p = user;
    if (p->tok) {
        if (fk_tok_type(p->tok, id) != FK_TT_CONTROL) {  // EOS and the like are not text
            char piece[256];
            size_t k = fk_tok_token_bytes(p->tok, id, piece, sizeof piece);
            fwrite(piece, 1, k < sizeof piece ? k : sizeof piece, stdout);
        }
    } else printf("%s%d", p->printed ? " " : "", id);
    p->printed++;
    fflush(stdout);
    return true;
}

// --prompt-ids: space- (or comma-) separated ids below V into ids (room for strlen(s) values).
static fk_status parse_ids(const char *s, int64_t V, int32_t *ids, int64_t *n) {
    *n = 0;
    for (const char *p = s;;) {
        while (*p == ' ' || *p == ',' || *p == '\t' || *p == '\n') p++;
        if (!*p) return FK_OK;
        char *end;
        long long v = strtoll(p, &end, 10);
        if (end == p || v < 0 || v >= V) return fk_error(FK_ERR_ARG, "--prompt-ids: '%.20s' is not a token id in [0, %lld)", p, (long long)V);
        ids[(*n)++] = (int32_t)v;
        p = end;
    }
}

typedef struct {
    cli_model_opts model;
    const char *prompt, *prompt_ids;
    bool greedy, ids_out;
    int64_t threads;
    fk_precision precision;  // --precision
    fk_generate_opts g;
} generate_args;

// The prompt's ids (malloc'd into *ids): --prompt-ids, or --prompt encoded with the tokenizer.
static fk_status prompt_tokens(const generate_args *a, const fk_tokenizer *tok, int64_t V, int32_t **ids, int64_t *n) {
    *n = 0;
    if (a->prompt_ids) {
        *ids = malloc((strlen(a->prompt_ids) + 1) * sizeof(int32_t));
        return *ids ? parse_ids(a->prompt_ids, V, *ids, n) : fk_error(FK_ERR_NOMEM, "out of memory");
    }
    fk_tok_out enc = {0};
    fk_status st = FK_OK;
    if (tok) st = fk_tok_encode(tok, a->prompt, strlen(a->prompt), FK_ENC_ADD_SPECIAL, &enc);
    else if (*a->prompt)
        st = fk_error(FK_ERR_ARG, "%s has no tokenizer (tokenizer.json, or the GGUF's tokenizer.ggml.* keys): give --tokenizer, or the prompt as --prompt-ids",
                      a->model.path);
    *ids = malloc(((size_t)enc.n + 1) * sizeof(int32_t));
    if (!*ids && st == FK_OK) st = fk_error(FK_ERR_NOMEM, "out of memory");
    for (int64_t i = 0; st == FK_OK && i < enc.n; i++) (*ids)[(*n)++] = enc.ids[i];
    fk_tok_out_free(&enc);
    return st;
}

int cmd_generate(int argc, char **argv) {
    generate_args a = {.model = {.flags = FK_LOAD_FROZEN}, .prompt = ""};
    fk_generate_defaults(&a.g);
    fk_sampler *s = &a.g.sampler;
    cli_opt opts[] = {
        CLI_ROW_MODEL(&a.model, "model folder or .gguf file (required)"),
        {"--prompt", OPT_STR, &a.prompt, "prompt text", false, NULL},
        CLI_ROW_TOKENIZER(&a.model),
        {"--prompt-ids", OPT_STR, &a.prompt_ids, "prompt as space-separated token ids", false, NULL},
        {"-n|--max-new", OPT_INT, &a.g.max_new, "tokens to generate", false, "[0,1048576]"},
        {"--temperature", OPT_F32, &s->temperature, "sampling temperature, 0 = greedy", false, "[0,100]"},
        {"--greedy", OPT_FLAG, &a.greedy, "always take the most likely token", false, NULL},
        {"--top-k", OPT_I32, &s->top_k, "sample among the k most likely tokens, 0 = off", false, "[0,)"},
        {"--top-p", OPT_F32, &s->top_p, "nucleus sampling mass, 1 = off", false, "(0,1]"},
        {"--seed", OPT_INT, (int64_t *)&a.g.seed, "sampling seed", false, "[0,)"},
        {"--ids", OPT_FLAG, &a.ids_out, "print token ids instead of text", false, NULL},
        CLI_ROW_THREADS(&a.threads),
        CLI_ROW_PRECISION(&a.precision),
        CLI_ROWS_END,
    };
    int rc = cli_parse_verb(argc, argv, opts, "usage: fusekit generate --model DIR|FILE.gguf [--prompt TEXT | --prompt-ids IDS] [options]");
    if (rc >= 0) return rc;
    if ((rc = cli_require("generate", "--model", 1, a.model.path)) != 0) return rc;
    if (a.greedy) s->temperature = 0;
    cli_set_threads(a.threads);
    cli_set_precision("generate", a.precision);
    fk_model m;
    fk_tokenizer *tok = NULL;
    fk_status st = cli_model_open(&a.model, &m, &tok);
    if (st != FK_OK) return cli_fail("generate", st);
    int32_t *ids = NULL;
    int64_t n = 0;
    st = prompt_tokens(&a, tok, m.cfg.vocab_size, &ids, &n);
    print_state ps = {tok && !a.ids_out ? tok : NULL, 0};
    if (tok) a.g.stop[0] = fk_tok_eos(tok);
    if (ps.tok && st == FK_OK && !a.prompt_ids) fwrite(a.prompt, 1, strlen(a.prompt), stdout);
    fk_generate_stats gs = {0};
    if (st == FK_OK) st = fk_generate(&m, ids, n, &a.g, print_token, &ps, &gs);
    printf("\n");
    fflush(stdout);
    if (st == FK_OK)
        fprintf(stderr, "generated %lld tokens: prompt %.1f ms, %.1f tokens/s after it\n", (long long)gs.generated, 1e3 * gs.prompt_s,
                gs.generated > 1 ? (double)(gs.generated - 1) / (gs.total_s - gs.prompt_s) : 0.0);
    free(ids);
    fk_tok_free(tok);
    fk_model_free(&m);
    return st == FK_OK ? 0 : cli_fail("generate", st);
}
