// fusekit align: the alignment report (fk_align_report_compute) of sources against a target on
// a text, before any model runs: a table on stdout, and align_report.json / .html under -o.
#include "cli.h"

#include <stdlib.h>
#include <string.h>

static const char *align_usage =
    "usage: fusekit align --target T --source A [--source B ...] --data FILE [--align MODE] [--vmap MODE] [-o REPORT_DIR]\n\n"
    "How well each source's tokens and vocabulary fit the target's on TEXT, with the alignment fuse uses\n"
    "(no model runs; T and A may be model folders, .gguf files or tokenizer.json files):\n"
    "  - the target's tokens aligned one to one with a source token (fused training uses the source there),\n"
    "    one to many, many to one, unaligned;\n"
    "  - the vocabulary map: source ids mapped to a token with the same bytes (exact), BOS/EOS/unknown to the\n"
    "    target's (special), to a token with other bytes (fallback: the map's nearest) or to none (unmapped),\n"
    "    per id and per token of TEXT, and the most frequent mismatched tokens;\n"
    "  - bytes per token of each tokenizer.\n"
    "Prints a table; -o writes REPORT_DIR/align_report.json and align_report.html (docs/fusion.md explains each figure).";

typedef struct {
    const char *target, *data;
    cli_list sources;
    fk_align_opts ao;
    cli_out_opts out;
    int64_t top, threads;
} align_args;

// A tokenizer named by an option: a tokenizer.json file, else a model folder's or GGUF file's own.
static fk_status load_tokenizer(const char *opt, const char *path, fk_tokenizer **t) {
    size_t n = strlen(path);
    bool json = n > 5 && strcmp(path + n - 5, ".json") == 0;
    fk_status st = json ? cli_model_tokenizer(NULL, path, -1, t) : cli_model_tokenizer(path, NULL, -1, t);
    if (st == FK_OK && !*t)
        st = fk_error(FK_ERR_ARG, "%s has no tokenizer (a folder's tokenizer.json, or a GGUF file's tokenizer.ggml.* keys)", path);
    return st == FK_OK ? st : fk_error_context(st, "%s %s", opt, path);
}

static fk_status read_text(const char *path, char **text, size_t *len) {
    *text = NULL;
    if (fk_data_is_shard(path)) return fk_error(FK_ERR_ARG, "--data %s is a token shard: the report tokenizes the text itself, pass the text file", path);
    FK_TRY(fk_read_file(path, text, len));
    if (*len == 0) return fk_error(FK_ERR_ARG, "--data %s is empty: the report needs text to tokenize", path);
    return FK_OK;
}

static void pct(double a, double b) { printf(" %6.1f%%", b > 0 ? 100 * a / b : 0.0); }

static void print_table(const align_args *a, const fk_align_report *r, fk_tokenizer *const *src, const fk_tokenizer *tgt) {
    const fk_align_report *r0 = &r[0];
    printf("target %s: %lld tokens on %s (%lld bytes, %.3f bytes per token), vocabulary %d; --align %s --vmap %s\n\n", a->target,
           (long long)r0->tgt_tokens, a->data, (long long)r0->bytes, (double)r0->bytes / (double)(r0->tgt_tokens ? r0->tgt_tokens : 1),
           r0->tgt_vocab, fk_align_mode_name(a->ao.mode),
           fk_vmap_mode_name(a->ao.vmap));
    printf("%-28s %8s %7s | %-31s | %-31s | %-31s\n", "", "", "", "target tokens aligned", "vocabulary map, share of ids",
           "map, share of the text's tokens");
    printf("%-28s %8s %7s | %7s %7s %7s %7s | %7s %7s %7s %7s | %7s %7s %7s %7s\n", "source", "vocab", "B/token", "1:1", "1:n", "n:1", "none",
           "exact", "special", "fallbk", "unmapd", "exact", "special", "fallbk", "unmapd");
    for (int i = 0; i < a->sources.n; i++) {
        const fk_align_report *q = &r[i];
        char name[64];
        cli_model_name(a->sources.v[i], name, sizeof name);
        printf("%-28.28s %8d %7.3f |", name, q->src_vocab, (double)q->bytes / (double)(q->src_tokens ? q->src_tokens : 1));
        const int64_t al[] = {q->one_to_one, q->one_to_many, q->many_to_one, q->unaligned};
        for (int k = 0; k < 4; k++) pct((double)al[k], (double)q->tgt_tokens);
        printf(" |");
        for (int k = 0; k < FK_MAP_CLASSES; k++) pct((double)q->vocab[k], (double)q->src_vocab);
        printf(" |");
        for (int k = 0; k < FK_MAP_CLASSES; k++) pct((double)q->text[k], (double)q->src_tokens);
        printf("\n");
    }
    char s[160], t[160];
    for (int i = 0; i < a->sources.n; i++) {
        const fk_align_report *q = &r[i];
        printf("\ntop mismatches of %s (source token -> the target token it is mapped to; count, share of the source's tokens):\n",
               a->sources.v[i]);
        if (q->n_mismatch == 0) printf("  none: every source token on the text maps to a target token with the same bytes\n");
        for (int k = 0; k < q->n_mismatch; k++) {
            const fk_align_mismatch *m = &q->mismatch[k];
            printf("  %10lld %7.3f%%  \"%s\" (%d) -> ", (long long)m->count, 100.0 * (double)m->count / (double)q->src_tokens,
                   fk_align_token_text(src[i], m->src, s, sizeof s), m->src);
            if (m->tgt >= 0) printf("\"%s\" (%d)\n", fk_align_token_text(tgt, m->tgt, t, sizeof t), m->tgt);
            else printf("(unmapped)\n");
        }
    }
}

// Loads the tokenizers and the text, computes every source's report; prints and writes them.
static int run_align(align_args *a) {
    fk_tokenizer *tgt = NULL, *src[CLI_LIST_MAX] = {0};
    fk_align_report rep[CLI_LIST_MAX];
    memset(rep, 0, sizeof rep);
    char *text = NULL;
    size_t len = 0;
    fk_status st = read_text(a->data, &text, &len);
    if (st == FK_OK) st = load_tokenizer("--target", a->target, &tgt);
    for (int i = 0; i < a->sources.n && st == FK_OK; i++) st = load_tokenizer("--source", a->sources.v[i], &src[i]);
    for (int i = 0; i < a->sources.n && st == FK_OK; i++) {
        st = fk_align_report_compute(src[i], tgt, text, len, &a->ao, (int)a->top, &rep[i]);
        if (st != FK_OK) fk_error_context(st, "source %s", a->sources.v[i]);
    }
    if (st == FK_OK) { print_table(a, rep, src, tgt); fflush(stdout); }
    if (st == FK_OK && a->out.path) {
        fk_align_report_set set = {a->target, a->data, tgt, a->ao, a->sources.n, a->sources.v, (const fk_tokenizer *const *)src, rep};
        cli_outdir od;  // written under a temporary name, renamed when complete
        st = cli_outdir_begin(a->out.path, &od);
        if (st == FK_OK) st = cli_outdir_end(&od, fk_align_report_write(&set, od.tmp));
        if (st == FK_OK) fprintf(stderr, "wrote %s/align_report.json and align_report.html\n", a->out.path);
    }
    for (int i = 0; i < a->sources.n; i++) { fk_align_report_free(&rep[i]); fk_tok_free(src[i]); }
    fk_tok_free(tgt);
    free(text);
    return st == FK_OK ? 0 : cli_fail("align", st);
}

int cmd_align(int argc, char **argv) {
    align_args a = {.top = 10};
    fk_align_opts_default(&a.ao);
    cli_opt opts[] = {
        {"--target", OPT_STR, &a.target, "the target: a model folder, a .gguf file or a tokenizer.json (required)", false, NULL},
        {"--source", OPT_LIST, &a.sources, "a source, as --target (required; repeat for several)", false, NULL},
        {"--data", OPT_STR, &a.data, "the text both tokenizers encode (required; fuse's --data)", false, NULL},
        CLI_ROWS_ALIGN(&a.ao, "the report, as fuse's --align / --vmap"),
        {"--top", OPT_INT, &a.top, "mismatched source tokens listed per source", false, "[0,10000]"},
        CLI_ROW_OUT(&a.out, "REPORT_DIR: align_report.json and align_report.html (default: none, the table only)"),
        CLI_ROW_FORCE(&a.out),
        CLI_ROW_THREADS(&a.threads),
        CLI_ROWS_END,
    };
    int rc = cli_parse_verb(argc, argv, opts, align_usage);
    if (rc >= 0) return rc;
    if ((rc = cli_require("align", "--target, --source and --data", 3, a.target, a.sources.n > 0 ? a.sources.v[0] : NULL, a.data)) != 0) return rc;
    if (a.out.path) {
        const char *ins[CLI_LIST_MAX + 2] = {a.target, a.data};
        for (int i = 0; i < a.sources.n; i++) ins[2 + i] = a.sources.v[i];
        cli_out_spec os = {"-o", a.out.path, a.out.force, false};
        if ((rc = cli_check_output("align", &os, ins, 2 + a.sources.n)) != 0) return rc;
    }
    cli_set_threads(a.threads);
    return run_align(&a);
}
