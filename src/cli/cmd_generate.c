// fusekit generate: sampling with a KV cache (fk_generate), printing each token as it comes;
// generate --chat and fusekit chat: the model's chat template around the conversation.
#include "cli.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct {
    const fk_tokenizer *tok;  // NULL: ids are printed
    int64_t printed;
    // --stop strings: the generated text is held back while its end could begin one of them; when
    // one appears the text before it is printed and generation stops (the stop string itself is
    // not printed, as llama.cpp's server does)
    const cli_list *stops;
    size_t longest;           // the longest stop string
    char *text;               // the generated text so far
    size_t len, cap, out;     // its bytes, capacity, bytes printed
    bool stopped;
    bool end_on_control;      // chat: a control token (end of turn, EOS) ends the reply
} print_state;

// Prints what can no longer be part of a stop string; true when a stop string has appeared.
static bool flush_text(print_state *p, bool final) {
    size_t cut = p->len;  // the earliest stop match, if any, in what is not printed yet
    size_t from = p->out;
    for (int i = 0; p->stops && i < p->stops->n; i++) {
        const char *s = p->stops->v[i];
        size_t k = strlen(s);
        for (size_t at = from; k && at + k <= p->len; at++)
            if (memcmp(p->text + at, s, k) == 0) { if (at < cut) cut = at; break; }
    }
    bool hit = cut < p->len;
    size_t safe = hit || final ? cut : (p->len >= p->longest ? p->len - (p->longest ? p->longest - 1 : 0) : 0);
    if (safe > p->out) { fwrite(p->text + p->out, 1, safe - p->out, stdout); p->out = safe; }
    return hit;
}

static bool print_token(int32_t id, void *user) {
    print_state *p = user;
    if (p->tok && p->end_on_control && fk_tok_type(p->tok, id) == FK_TT_CONTROL) { p->stopped = true; return false; }
    if (p->tok) {
        if (fk_tok_type(p->tok, id) != FK_TT_CONTROL) {  // EOS and the like are not text
            char piece[256];
            size_t k = fk_tok_token_bytes(p->tok, id, piece, sizeof piece);
            if (k > sizeof piece) k = sizeof piece;
            if (p->len + k + 1 > p->cap) {
                size_t cap = (p->cap ? 2 * p->cap : 4096) + k;
                char *t = realloc(p->text, cap);
                if (!t) { fwrite(piece, 1, k, stdout); return false; }  // out of memory: stop here
                p->text = t, p->cap = cap;
            }
            memcpy(p->text + p->len, piece, k);
            p->len += k;
            if (flush_text(p, false)) p->stopped = true;
        }
    } else printf("%s%d", p->printed ? " " : "", id);
    p->printed++;
    fflush(stdout);
    return !p->stopped;
}

// --prompt-file: the prompt from a file, or standard input for '-' (at most 64 MiB).
static fk_status read_prompt_file(const char *path, char **out) {
    if (strcmp(path, "-") != 0) {
        struct stat sb;
        if (stat(path, &sb) == 0 && sb.st_size > ((off_t)64 << 20))
            return fk_error(FK_ERR_ARG, "--prompt-file %s: %lld bytes, more than the 64 MiB a prompt may have", path, (long long)sb.st_size);
        return fk_read_file(path, out, NULL);  // refuses what is not a regular file, naming it
    }
    size_t n = 0, cap = 1 << 16;
    char *b = malloc(cap);
    for (size_t r; b && (r = fread(b + n, 1, cap - n - 1, stdin)) > 0;) {
        n += r;
        if (n + 1 == cap) {
            if (cap >= (size_t)64 << 20) { free(b); return fk_error(FK_ERR_ARG, "--prompt-file -: standard input holds more than 64 MiB"); }
            char *t = realloc(b, 2 * cap);
            if (!t) break;
            b = t, cap *= 2;
        }
    }
    if (!b) return fk_error(FK_ERR_NOMEM, "out of memory reading standard input");
    b[n] = 0;
    *out = b;
    return FK_OK;
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

// ------------------------------------------------------------------ chat templates

// A special token's text ("" when the tokenizer has none), for the template's bos_token / eos_token.
static void special_text(const fk_tokenizer *tok, int32_t id, char *buf, size_t cap) {
    buf[0] = 0;
    if (id < 0) return;
    size_t k = fk_tok_token_bytes(tok, id, buf, cap - 1);
    buf[k < cap - 1 ? k : cap - 1] = 0;
}

typedef struct {
    char *tmpl;                 // the chat template
    char *where;                // where it was found
    char bos[128], eos[128];
} chat_setup;

// The template: --chat-template FILE, else the one the tokenizer's files carry (the model's GGUF
// or folder, or --tokenizer's); an error saying how to give one when there is none.
static fk_status chat_open(const cli_model_opts *mo, const char *tmpl_file, const fk_tokenizer *tok, chat_setup *c) {
    memset(c, 0, sizeof *c);
    if (!tok) return fk_error(FK_ERR_ARG, "%s has no tokenizer: a chat needs one (give --tokenizer)", mo->path);
    if (tmpl_file) FK_TRY(fk_chat_template_find(NULL, tmpl_file, &c->tmpl, &c->where));
    else if (fk_tok_chat_template(tok)) {
        c->tmpl = strdup(fk_tok_chat_template(tok));
        c->where = strdup(mo->tokenizer ? mo->tokenizer : mo->path);
        if (!c->tmpl || !c->where) return fk_error(FK_ERR_NOMEM, "out of memory");
    } else
        return fk_error(FK_ERR_ARG, "%s has no chat template (tokenizer_config.json's chat_template, chat_template.jinja, or the GGUF's "
                        "tokenizer.chat_template): give one with --chat-template FILE", mo->tokenizer ? mo->tokenizer : mo->path);
    special_text(tok, fk_tok_bos(tok), c->bos, sizeof c->bos);
    special_text(tok, fk_tok_eos(tok), c->eos, sizeof c->eos);
    return FK_OK;
}

static void chat_close(chat_setup *c) {
    free(c->tmpl);
    free(c->where);
}

// The conversation rendered with the generation prompt and encoded as transformers' chat does:
// special tokens written in the text become their ids, nothing added (the template writes BOS
// where the model wants it). *text may be NULL.
static fk_status chat_tokens(const chat_setup *c, const fk_tokenizer *tok, const fk_chat_msg *msgs, int n, char **text, int32_t **ids,
                             int64_t *nids) {
    fk_chat_opts o = {true, c->bos, c->eos, NULL, 0};
    char *t = NULL;
    FK_TRY(fk_chat_render(c->tmpl, msgs, n, &o, &t));
    fk_tok_out enc = {0};
    fk_status st = fk_tok_encode(tok, t, strlen(t), FK_ENC_PARSE_SPECIAL, &enc);
    if (st == FK_OK && !(*ids = malloc(((size_t)enc.n + 1) * sizeof(int32_t)))) st = fk_error(FK_ERR_NOMEM, "out of memory");
    if (st == FK_OK) {
        memcpy(*ids, enc.ids, (size_t)enc.n * sizeof(int32_t));
        *nids = enc.n;
    }
    fk_tok_out_free(&enc);
    if (text && st == FK_OK) *text = t;
    else free(t);
    return st;
}

typedef struct {
    cli_model_opts model;
    const char *prompt, *prompt_ids, *prompt_file;
    cli_list stops;
    bool greedy, ids_out;
    int64_t threads;
    fk_precision precision;  // --precision
    fk_generate_opts g;
    bool chat, show_prompt;  // --chat, --show-prompt
    const char *system, *chat_template;
} generate_args;

// The sampling rows generate and chat share, over a generate_args a (its sampler, seed, penalty).
#define SAMPLING_ROWS(a)                                                                                                             \
    {"--temperature", OPT_F32, &(a).g.sampler.temperature, "sampling temperature, 0 = greedy", false, "[0,100]"},                  \
    {"--greedy", OPT_FLAG, &(a).greedy, "always take the most likely token", false, NULL},                                        \
    {"--top-k", OPT_I32, &(a).g.sampler.top_k, "sample among the k most likely tokens, 0 = off", false, "[0,)"},                  \
    {"--top-p", OPT_F32, &(a).g.sampler.top_p, "nucleus sampling mass, 1 = off", false, "(0,1]"},                                 \
    {"--seed", OPT_INT, (int64_t *)&(a).g.seed, "sampling seed", false, "[0,)"},                                                  \
    {"--repeat-penalty", OPT_F32, &(a).g.repeat_penalty, "llama.cpp's repetition penalty on the last --repeat-last-n tokens, "     \
     "1 = off", false, "(0,100]"},                                                                                               \
    {"--repeat-last-n", OPT_I32, &(a).g.repeat_last_n, "tokens the repetition penalty looks back on, -1 = the whole context",     \
     false, "[-1,1048576]"}

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
        {"--prompt-file", OPT_STR, &a.prompt_file, "prompt text from a file, - for standard input", false, NULL},
        {"--stop", OPT_LIST, &a.stops, "stop when the text reaches this string (not printed); repeatable", false, NULL},
        {"-n|--max-new", OPT_INT, &a.g.max_new, "tokens to generate", false, "[0,1048576]"},
        SAMPLING_ROWS(a),
        {"--ids", OPT_FLAG, &a.ids_out, "print token ids instead of text", false, NULL},
        {"--chat", OPT_FLAG, &a.chat, "the prompt is a user message: the model's chat template around it, the reply ends at its end-of-turn token", false, NULL},
        {"--system", OPT_STR, &a.system, "with --chat: a system message before the prompt", false, NULL},
        {"--chat-template", OPT_STR, &a.chat_template, "with --chat: a Jinja chat template FILE instead of the model's own", false, NULL},
        {"--show-prompt", OPT_FLAG, &a.show_prompt, "with --chat: print the rendered prompt on standard error", false, NULL},
        CLI_ROW_THREADS(&a.threads),
        CLI_ROW_PRECISION_FROZEN(&a.precision),
        CLI_ROWS_END,
    };
    int rc = cli_parse_verb(argc, argv, opts, "usage: fusekit generate --model DIR|FILE.gguf [--prompt TEXT | --prompt-file FILE | --prompt-ids IDS] [--chat] [options]");
    if (rc >= 0) return rc;
    if ((rc = cli_require("generate", "--model", 1, a.model.path)) != 0) return rc;
    if (a.greedy) s->temperature = 0;
    if (!a.chat && (a.system || a.chat_template || a.show_prompt)) {
        fprintf(stderr, "fusekit generate: error: --system, --chat-template and --show-prompt go with --chat\n");
        return 2;
    }
    if (a.chat && (a.prompt_ids || a.ids_out)) {
        fprintf(stderr, "fusekit generate: error: --chat takes the prompt as text (--prompt or --prompt-file), not --prompt-ids or --ids\n");
        return 2;
    }
    if ((a.prompt_file != NULL) + (a.prompt_ids != NULL) + (cli_was_set(opts, "--prompt")) > 1) {
        fprintf(stderr, "fusekit generate: error: give one of --prompt, --prompt-file and --prompt-ids\n");
        return 2;
    }
    char *file_prompt = NULL;
    if (a.prompt_file) {
        fk_status fs = read_prompt_file(a.prompt_file, &file_prompt);
        if (fs != FK_OK) return cli_fail("generate", fs);
        a.prompt = file_prompt;
    }
    cli_set_threads(a.threads);
    cli_set_precision("generate", a.precision);
    fk_model m;
    fk_tokenizer *tok = NULL;
    fk_status st = cli_model_open(&a.model, &m, &tok);
    if (st != FK_OK) return cli_fail("generate", st);
    int32_t *ids = NULL;
    int64_t n = 0;
    chat_setup cs = {0};
    if (a.chat) {
        st = chat_open(&a.model, a.chat_template, tok, &cs);
        fk_chat_msg msgs[2] = {{"system", a.system}, {"user", a.prompt}};
        char *text = NULL;
        if (st == FK_OK) st = chat_tokens(&cs, tok, a.system ? msgs : msgs + 1, a.system ? 2 : 1, &text, &ids, &n);
        if (st == FK_OK && a.show_prompt) fprintf(stderr, "prompt (template from %s, %lld tokens):\n%s\n", cs.where, (long long)n, text);
        free(text);
    } else st = prompt_tokens(&a, tok, m.cfg.vocab_size, &ids, &n);
    print_state ps = {tok && !a.ids_out ? tok : NULL, 0, &a.stops, 0, NULL, 0, 0, 0, false, a.chat};
    for (int i = 0; i < a.stops.n; i++) if (strlen(a.stops.v[i]) > ps.longest) ps.longest = strlen(a.stops.v[i]);
    if (a.stops.n && !ps.tok && st == FK_OK)
        st = fk_error(FK_ERR_ARG, "--stop needs text output (a tokenizer, and no --ids)");
    if (tok) a.g.stop[0] = fk_tok_eos(tok);
    if (ps.tok && st == FK_OK && !a.prompt_ids && !a.chat) fwrite(a.prompt, 1, strlen(a.prompt), stdout);
    fk_generate_stats gs = {0};
    if (st == FK_OK) st = fk_generate(&m, ids, n, &a.g, print_token, &ps, &gs);
    if (ps.tok) flush_text(&ps, true);  // what was held back for a stop string that never came
    printf("\n");
    fflush(stdout);
    if (st == FK_OK)
        fprintf(stderr, "generated %lld tokens: prompt %.1f ms, %.1f tokens/s after it\n", (long long)gs.generated, 1e3 * gs.prompt_s,
                gs.generated > 1 ? (double)(gs.generated - 1) / (gs.total_s - gs.prompt_s) : 0.0);
    if (st == FK_OK && ps.stopped) fprintf(stderr, a.chat ? "stopped at the end of the turn\n" : "stopped at a --stop string\n");
    chat_close(&cs);
    free(ids);
    free(ps.text);
    free(file_prompt);
    fk_tok_free(tok);
    fk_model_free(&m);
    return st == FK_OK ? 0 : cli_fail("generate", st);
}

// ------------------------------------------------------------------ fusekit chat

typedef struct {
    fk_chat_msg *v;
    int n, cap;
} conversation;

static fk_status conv_add(conversation *c, const char *role, const char *content, size_t len) {
    if (c->n == c->cap) {
        int cap = c->cap ? 2 * c->cap : 16;
        fk_chat_msg *v = realloc(c->v, (size_t)cap * sizeof *v);
        if (!v) return fk_error(FK_ERR_NOMEM, "out of memory");
        c->v = v, c->cap = cap;
    }
    char *r = strdup(role), *t = malloc(len + 1);
    if (!r || !t) { free(r); free(t); return fk_error(FK_ERR_NOMEM, "out of memory"); }
    memcpy(t, content, len);
    t[len] = 0;
    c->v[c->n++] = (fk_chat_msg){r, t};
    return FK_OK;
}

static void conv_drop(conversation *c, int from, int k) {  // removes messages [from, from + k)
    for (int i = from; i < from + k; i++) { free((char *)c->v[i].role); free((char *)c->v[i].content); }
    if (k > 0) memmove(c->v + from, c->v + from + k, (size_t)(c->n - from - k) * sizeof *c->v);
    c->n -= k;
}

int cmd_chat(int argc, char **argv) {
    generate_args a = {.model = {.flags = FK_LOAD_FROZEN}};
    fk_generate_defaults(&a.g);
    a.g.max_new = 512;
    fk_sampler *s = &a.g.sampler;
    cli_opt opts[] = {
        CLI_ROW_MODEL(&a.model, "model folder or .gguf file (required)"),
        CLI_ROW_TOKENIZER(&a.model),
        {"--system", OPT_STR, &a.system, "a system message that starts the conversation", false, NULL},
        {"--chat-template", OPT_STR, &a.chat_template, "a Jinja chat template FILE instead of the model's own", false, NULL},
        {"--show-prompt", OPT_FLAG, &a.show_prompt, "print each rendered prompt on standard error", false, NULL},
        {"-n|--max-new", OPT_INT, &a.g.max_new, "tokens per reply at most", false, "[1,1048576]"},
        SAMPLING_ROWS(a),
        CLI_ROW_THREADS(&a.threads),
        CLI_ROW_PRECISION_FROZEN(&a.precision),
        CLI_ROWS_END,
    };
    int rc = cli_parse_verb(argc, argv, opts,
                            "usage: fusekit chat --model DIR|FILE.gguf [--system TEXT] [options]\n\n"
                            "Talks with an instruct model through its chat template (tokenizer_config.json's chat_template,\n"
                            "chat_template.jinja or the GGUF's tokenizer.chat_template; --chat-template to give one). Each line\n"
                            "read is a user message; the reply is printed as it is generated and ends at the model's end-of-turn\n"
                            "token or after --max-new tokens. /reset forgets the conversation (the system message stays), /exit\n"
                            "or end of input ends the chat. Without a terminal, the lines of standard input are the messages and\n"
                            "each reply is one block followed by an empty line. When the conversation outgrows the context, its\n"
                            "oldest turns are left out (the system message stays).");
    if (rc >= 0) return rc;
    if ((rc = cli_require("chat", "--model", 1, a.model.path)) != 0) return rc;
    if (a.greedy) s->temperature = 0;
    cli_set_threads(a.threads);
    cli_set_precision("chat", a.precision);
    fk_model m;
    fk_tokenizer *tok = NULL;
    fk_status st = cli_model_open(&a.model, &m, &tok);
    if (st != FK_OK) return cli_fail("chat", st);
    chat_setup cs;
    conversation conv = {0};
    st = chat_open(&a.model, a.chat_template, tok, &cs);
    if (st == FK_OK && a.system) st = conv_add(&conv, "system", a.system, strlen(a.system));
    int keep = conv.n;  // messages /reset and trimming never drop
    bool tty = isatty(0) && isatty(1);
    if (st == FK_OK)
        fprintf(stderr, "fusekit chat: %s, chat template from %s; %s\n", a.model.path, cs.where,
                tty ? "type a message, /reset to start over, /exit or Ctrl-D to end" : "one message per input line");
    char *line = NULL;
    size_t line_cap = 0;
    int64_t ctx = m.cfg.max_seq, n_cached = 0;
    // the tokens in the model's KV cache after the last reply: a turn runs only what follows the
    // prefix its prompt shares with them (the conversation so far, as llama.cpp's prompt cache)
    int32_t *cached = malloc((size_t)ctx * sizeof(int32_t));
    if (!cached && st == FK_OK) st = fk_error(FK_ERR_NOMEM, "out of memory");
    a.g.context = cached;
    while (st == FK_OK) {
        if (tty) { printf("> "); fflush(stdout); }
        ssize_t got = getline(&line, &line_cap, stdin);
        if (got < 0) break;
        while (got > 0 && (line[got - 1] == '\n' || line[got - 1] == '\r')) line[--got] = 0;
        if (got == 0) continue;
        if (strcmp(line, "/exit") == 0 || strcmp(line, "/quit") == 0) break;
        if (strcmp(line, "/reset") == 0) { conv_drop(&conv, keep, conv.n - keep); fprintf(stderr, "(conversation reset)\n"); continue; }
        if ((st = conv_add(&conv, "user", line, (size_t)got)) != FK_OK) break;
        int32_t *ids = NULL;
        int64_t n = 0;
        char *text = NULL;
        // the oldest turns go first when the prompt and a whole reply would not fit the context
        for (;;) {
            free(ids); free(text);
            ids = NULL, text = NULL;
            if ((st = chat_tokens(&cs, tok, conv.v, conv.n, &text, &ids, &n)) != FK_OK) break;
            if (n + a.g.max_new <= ctx || conv.n - keep <= 1) break;
            conv_drop(&conv, keep, conv.n - keep >= 3 ? 2 : 1);
        }
        if (st == FK_OK && n + 1 > ctx) st = fk_error(FK_ERR_ARG, "the message alone is %lld tokens with its template, more than the context of %lld", (long long)n, (long long)ctx);
        if (st == FK_OK && a.show_prompt) fprintf(stderr, "prompt (%lld tokens):\n%s\n", (long long)n, text);
        print_state ps = {tok, 0, NULL, 0, NULL, 0, 0, 0, false, true};
        fk_generate_stats gs = {0};
        a.g.reuse = 0;
        while (a.g.reuse < n && a.g.reuse < n_cached && ids[a.g.reuse] == cached[a.g.reuse]) a.g.reuse++;
        n_cached = 0;  // until this turn's context is known
        if (st == FK_OK) st = fk_generate(&m, ids, n, &a.g, print_token, &ps, &gs);
        if (st == FK_OK) n_cached = gs.n_context;
        if (st == FK_OK && a.show_prompt)
            fprintf(stderr, "(%lld prompt tokens run, %lld reused from the previous turn)\n", (long long)(n - gs.reused), (long long)gs.reused);
        flush_text(&ps, true);
        printf("\n%s", tty ? "" : "\n");
        fflush(stdout);
        if (st == FK_OK) st = conv_add(&conv, "assistant", ps.text ? ps.text : "", ps.len);
        if (st == FK_OK && !ps.stopped) fprintf(stderr, "(the reply reached --max-new %lld tokens)\n", (long long)a.g.max_new);
        free(ps.text);
        free(ids);
        free(text);
    }
    free(line);
    free(cached);
    conv_drop(&conv, 0, conv.n);
    free(conv.v);
    chat_close(&cs);
    fk_tok_free(tok);
    fk_model_free(&m);
    return st == FK_OK ? 0 : cli_fail("chat", st);
}
