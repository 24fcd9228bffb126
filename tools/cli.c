// Option parsing and error printing for the CLI.
#include "cli.h"

#include <cblas.h>
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

fk_status cli_model_tokenizer(const char *model_dir, const char *path, int64_t vocab, fk_tokenizer **t) {
    *t = NULL;
    if (path) return fk_tok_load(path, t);
    char *json = model_dir ? fk_path_join(model_dir, "tokenizer.json") : NULL;
    fk_status st = FK_OK;
    if (json && fk_path_exists(json)) st = fk_tok_load_json(json, t);
    else if (vocab == 256) st = fk_tok_new_bytes(t);
    free(json);
    if (st == FK_OK && *t && vocab > 0 && fk_tok_vocab_size(*t) > vocab) {
        st = fk_error(FK_ERR_ARG, "the tokenizer has %d tokens but the model's vocabulary only %lld", fk_tok_vocab_size(*t), (long long)vocab);
        fk_tok_free(*t);
        *t = NULL;
    }
    return st;
}
