// Option parsing and error printing for the CLI.
#include "cli.h"
#include "fusekit/fusion.h"

#include <cblas.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <omp.h>
#include <stdlib.h>
#include <string.h>

static bool name_matches(const char *spec, const char *arg, size_t arg_len) {
    while (*spec) {
        const char *bar = strchr(spec, '|');
        size_t n = bar ? (size_t)(bar - spec) : strlen(spec);
        if (n == arg_len && strncmp(spec, arg, n) == 0) return true;
        if (!bar) break;
        spec = bar + 1;
    }
    return false;
}

static void print_help(const cli_opt *opts, const char *usage) {
    printf("%s\n\noptions:\n", usage);
    for (const cli_opt *o = opts; o->name; o++) {
        const char *meta = o->type == OPT_STR ? " TEXT" : o->type == OPT_LIST ? " TEXT..." : o->type == OPT_INT ? " N" : o->type == OPT_FLOAT ? " X" : "";
        char left[64];
        snprintf(left, sizeof left, "%s%s", o->name, meta);
        printf("  %-28s %s\n", left, o->help);
    }
    printf("  %-28s %s\n", "-h|--help", "show this help");
}

int cli_parse(int argc, char **argv, cli_opt *opts, const char *usage) {
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) { print_help(opts, usage); return 1; }
        const char *eq = strchr(a, '=');
        size_t len = eq && a[0] == '-' ? (size_t)(eq - a) : strlen(a);
        cli_opt *o = NULL;
        for (cli_opt *p = opts; p->name; p++) if (name_matches(p->name, a, len)) { o = p; break; }
        if (!o) { fprintf(stderr, "error: unknown option %s (see --help)\n", a); return 2; }
        o->set = true;
        if (o->type == OPT_FLAG) {
            if (eq && a[0] == '-') { fprintf(stderr, "error: option %.*s takes no value\n", (int)len, a); return 2; }
            *(bool *)o->ptr = true;
            continue;
        }
        const char *v = eq && a[0] == '-' ? eq + 1 : (i + 1 < argc ? argv[++i] : NULL);
        if (!v) { fprintf(stderr, "error: option %.*s needs a value\n", (int)len, a); return 2; }
        char *end;
        switch (o->type) {
        case OPT_STR: *(const char **)o->ptr = v; break;
        case OPT_LIST: {
            cli_list *l = o->ptr;
            if (l->n == CLI_LIST_MAX) { fprintf(stderr, "error: option %.*s given more than %d times\n", (int)len, a, CLI_LIST_MAX); return 2; }
            l->v[l->n++] = v;
            // "--opt a b c" as well as "--opt a --opt b": values run to the next option
            while (!(eq && a[0] == '-') && i + 1 < argc && argv[i + 1][0] != '-') {
                if (l->n == CLI_LIST_MAX) { fprintf(stderr, "error: option %.*s given more than %d values\n", (int)len, a, CLI_LIST_MAX); return 2; }
                l->v[l->n++] = argv[++i];
            }
            break;
        }
        case OPT_INT:
            *(int64_t *)o->ptr = strtoll(v, &end, 10);
            if (*end || !*v) { fprintf(stderr, "error: option %.*s expects an integer, got '%s'\n", (int)len, a, v); return 2; }
            break;
        case OPT_FLOAT:
            *(double *)o->ptr = strtod(v, &end);
            if (*end || !*v) { fprintf(stderr, "error: option %.*s expects a number, got '%s'\n", (int)len, a, v); return 2; }
            break;
        case OPT_FLAG: break;
        }
    }
    return 0;
}

bool cli_was_set(const cli_opt *opts, const char *name) {
    for (const cli_opt *o = opts; o->name; o++)
        if (name_matches(o->name, name, strlen(name))) return o->set;
    return false;
}

int cli_fail(const char *cmd, fk_status st) {
    fprintf(stderr, "fusekit %s: error: %s (%s)\n", cmd, fk_last_error(), fk_status_name(st));
    return 1;
}

void cli_set_threads(int64_t threads) {
    if (threads <= 0) return;
    omp_set_num_threads((int)threads);
    openblas_set_num_threads((int)threads);
}

// A tokenizer with more tokens than the model has embeddings cannot be used with it.
static fk_status check_vocab(fk_tokenizer **t, int64_t vocab) {
    if (!*t || vocab <= 0 || fk_tok_vocab_size(*t) <= vocab) return FK_OK;
    fk_status st = fk_error(FK_ERR_ARG, "the tokenizer has %d tokens but the model's vocabulary only %lld", fk_tok_vocab_size(*t), (long long)vocab);
    fk_tok_free(*t);
    *t = NULL;
    return st;
}

fk_status cli_model_tokenizer(const char *model_dir, const char *path, int64_t vocab, fk_tokenizer **t) {
    *t = NULL;
    if (path) return fk_tok_load(path, t);
    fk_status st = model_dir ? fk_model_load_tokenizer(model_dir, t) : FK_OK;
    if (st == FK_OK && !*t && vocab == 256) st = fk_tok_new_bytes(t);
    return st == FK_OK ? check_vocab(t, vocab) : st;
}

// Loading a tokenizer parses (and saving one builds) JSON trees of tens of MB, freed at once
// but left in the heap under smaller blocks allocated after them: their pages go back to the
// system before the model's activations take their own (Gemma-3-270M extraction: -67 MB RSS).
void cli_trim_heap(void) {
#ifdef __GLIBC__
    malloc_trim(0);
#endif
}

fk_status cli_load_model(const char *path, const char *tok_path, unsigned flags, fk_model *m, fk_tokenizer **tok) {
    if (!tok) {
        FK_TRY(fk_model_load(path, flags, m, NULL));
        cli_trim_heap();
        return FK_OK;
    }
    *tok = NULL;
    FK_TRY(fk_model_load(path, flags, m, tok_path ? NULL : tok));
    fk_status st = FK_OK;
    if (tok_path) st = fk_tok_load(tok_path, tok);
    else if (!*tok && m->cfg.vocab_size == 256) st = fk_tok_new_bytes(tok);
    if (st == FK_OK) st = check_vocab(tok, m->cfg.vocab_size);
    if (st != FK_OK) { fk_tok_free(*tok); *tok = NULL; fk_model_free(m); }
    cli_trim_heap();
    return st;
}

fk_status cli_store_tokenizer(const char *store_path, fk_tokenizer **tok) {
    FK_TRY(fk_store_save_tokenizer(store_path, *tok));
    char *dir = fk_store_tokenizer_dir(store_path);
    if (!dir) return fk_error(FK_ERR_NOMEM, "out of memory");
    fk_tokenizer *back = NULL;
    fk_status st = fk_tok_load(dir, &back);
    free(dir);
    if (st != FK_OK) return st;
    if (fk_tok_fingerprint(back) == fk_tok_fingerprint(*tok)) fk_tok_free(back);
    else { fk_tok_free(*tok); *tok = back; }
    cli_trim_heap();
    return FK_OK;
}

void cli_model_name(const char *path, char *out, size_t n) {
    size_t len = strlen(path);
    while (len > 1 && path[len - 1] == '/') len--;
    size_t b = len;
    while (b > 0 && path[b - 1] != '/') b--;
    if (len - b > 5 && strncmp(path + len - 5, ".gguf", 5) == 0) len -= 5;
    snprintf(out, n, "%.*s", (int)(len - b), path + b);
}
