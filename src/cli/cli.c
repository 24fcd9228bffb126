// Option parsing and error printing for the CLI.
#include "cli.h"

#include <cblas.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include "base/par.h"
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

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

// The command's name from its usage line: "usage: fusekit tokenizer train --data ..." gives
// "tokenizer train" (the words before the first option or placeholder).
static void usage_cmd(const char *usage, char *out, size_t n) {
    const char *p = strstr(usage, "fusekit ");
    size_t len = 0;
    if (p) {
        p += 8;
        const char *e = p;
        while (*e && *e != '\n') {
            const char *w = e;
            while (*w == ' ') w++;
            if (!*w || *w == '-' || *w == '[' || *w == '<' || *w == '(' || *w == '\n' || (*w >= 'A' && *w <= 'Z')) break;
            while (*w && *w != ' ' && *w != '\n') w++;
            e = w;
        }
        len = (size_t)(e - p);
    }
    if (len == 0) snprintf(out, n, "%s", "?");
    else snprintf(out, n, "%.*s", (int)len, p);
}

// A range "[lo,hi]": '(' / ')' for an open end, an empty bound for none.
typedef struct {
    bool has_lo, has_hi, lo_open, hi_open;
    double lo, hi;
    const char *lo_s, *hi_s;  // the bounds as written
    int lo_n, hi_n;
} range_t;

// One bound of a range, the n characters at s: none when n is 0, else a number into *v.
static bool parse_bound(const char *s, int n, double *v, bool *has) {
    if (n <= 0) return true;
    char buf[64], *end;
    if (n >= (int)sizeof buf) return false;
    snprintf(buf, sizeof buf, "%.*s", n, s);
    *v = strtod(buf, &end);
    if (*end) return false;
    *has = true;
    return true;
}

static bool parse_range(const char *r, range_t *g) {
    memset(g, 0, sizeof *g);
    size_t n = r ? strlen(r) : 0;
    if (n < 3 || (r[0] != '[' && r[0] != '(') || (r[n - 1] != ']' && r[n - 1] != ')')) return false;
    const char *comma = strchr(r, ',');
    if (!comma || comma > r + n - 1) return false;
    g->lo_open = r[0] == '(';
    g->hi_open = r[n - 1] == ')';
    g->lo_s = r + 1;
    g->lo_n = (int)(comma - r - 1);
    g->hi_s = comma + 1;
    g->hi_n = (int)(r + n - 1 - comma - 1);
    return parse_bound(g->lo_s, g->lo_n, &g->lo, &g->has_lo) && parse_bound(g->hi_s, g->hi_n, &g->hi, &g->has_hi);
}

static bool in_range(const range_t *g, double v) {
    if (isnan(v)) return false;
    if (g->has_lo && !(g->lo_open ? v > g->lo : v >= g->lo)) return false;
    if (g->has_hi && !(g->hi_open ? v < g->hi : v <= g->hi)) return false;
    return true;
}

// "> 0 and <= 1"
static void range_words(const range_t *g, char *out, size_t n) {
    char lo[96] = "", hi[96] = "";
    if (g->has_lo) snprintf(lo, sizeof lo, "%s %.*s", g->lo_open ? ">" : ">=", g->lo_n, g->lo_s);
    if (g->has_hi) snprintf(hi, sizeof hi, "%s %.*s", g->hi_open ? "<" : "<=", g->hi_n, g->hi_s);
    snprintf(out, n, "%s%s%s", lo, *lo && *hi ? " and " : "", *lo || *hi ? hi : "any number");
}

static int range_error(const char *cmd, const char *opt, int opt_len, const range_t *g, const char *v) {
    char w[200];
    range_words(g, w, sizeof w);
    fprintf(stderr, "fusekit %s: error: %.*s must be %s (got %s)\n", cmd, opt_len, opt, w, v);
    return 2;
}

// The option's range parsed into g; false (after saying so) when the table's text is not one.
static bool option_range(const char *cmd, const char *opt, int opt_len, const char *range, range_t *g) {
    if (parse_range(range, g)) return true;
    fprintf(stderr, "fusekit %s: internal error: option %.*s has no valid range ('%s')\n", cmd, opt_len, opt, range ? range : "");
    return false;
}

static int parse_int_value(const char *cmd, const char *opt, int opt_len, const char *v, const char *range, int64_t *out) {
    range_t g;
    if (!option_range(cmd, opt, opt_len, range, &g)) return 2;
    char *end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (*end || !*v || end == v) {
        fprintf(stderr, "fusekit %s: error: option %.*s expects an integer, got '%s'\n", cmd, opt_len, opt, v);
        return 2;
    }
    if (errno == ERANGE || !in_range(&g, (double)x)) return range_error(cmd, opt, opt_len, &g, v);
    *out = (int64_t)x;
    return 0;
}

static int parse_float_value(const char *cmd, const char *opt, int opt_len, const char *v, const char *range, double *out) {
    range_t g;
    if (!option_range(cmd, opt, opt_len, range, &g)) return 2;
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (*end || !*v || end == v) {
        fprintf(stderr, "fusekit %s: error: option %.*s expects a number, got '%s'\n", cmd, opt_len, opt, v);
        return 2;
    }
    if (!isfinite(x) || errno == ERANGE) {
        fprintf(stderr, "fusekit %s: error: option %.*s expects a finite number, got '%s'\n", cmd, opt_len, opt, v);
        return 2;
    }
    if (!in_range(&g, x)) return range_error(cmd, opt, opt_len, &g, v);
    *out = x;
    return 0;
}

int cli_parse_int(const char *cmd, const char *opt, const char *v, const char *range, int64_t *out) {
    return parse_int_value(cmd, opt, (int)strlen(opt), v, range, out);
}

int cli_parse_float(const char *cmd, const char *opt, const char *v, const char *range, double *out) {
    return parse_float_value(cmd, opt, (int)strlen(opt), v, range, out);
}

static bool is_numeric(opt_type t) { return t == OPT_INT || t == OPT_FLOAT || t == OPT_I32 || t == OPT_F32; }

// The default a row shows: the value its pointer holds before parsing ("" for none: a flag, a
// list, an unset string, or help that says the default in words).
static void row_default(const cli_opt *o, char *out, size_t n) {
    out[0] = 0;
    if (strstr(o->help, "default")) return;
    switch (o->type) {
    case OPT_INT: snprintf(out, n, "%lld", (long long)*(const int64_t *)o->ptr); break;
    case OPT_I32: snprintf(out, n, "%d", *(const int *)o->ptr); break;
    case OPT_FLOAT: snprintf(out, n, "%g", *(const double *)o->ptr); break;
    case OPT_F32: snprintf(out, n, "%g", (double)*(const float *)o->ptr); break;
    case OPT_STR:
        if (*(const char *const *)o->ptr) snprintf(out, n, "%s", *(const char *const *)o->ptr);
        break;
    case OPT_CHOICE: {
        int k = *(const int *)o->ptr;
        if (k < 0) break;  // none chosen yet (a required choice)
        const char *c = o->range;
        for (; k > 0 && c; k--) c = strchr(c, '|') ? strchr(c, '|') + 1 : NULL;
        if (c) snprintf(out, n, "%.*s", (int)strcspn(c, "|"), c);
        break;
    }
    case OPT_FLAG:
    case OPT_LIST:
    case OPT_GROUP: break;
    }
}

// The metavariable help shows after a string option: what kind of value it takes, by the
// option's name (the last spelling): a model (a folder or a .gguf file), a file, a folder, a
// tokenizer; an -o is a folder unless its help says it writes a file. TEXT for the rest.
static const char *string_meta(const cli_opt *o) {
    static const struct { const char *name, *meta; } names[] = {
        {"--model", "MODEL"}, {"--target", "MODEL"}, {"--source", "MODEL"}, {"--init", "MODEL"}, {"--base", "MODEL"},
        {"--kl-to", "MODEL"}, {"--ensemble", "MODEL"}, {"--data", "FILE"}, {"--val", "FILE"}, {"--heal-data", "FILE"},
        {"--file", "FILE"}, {"--config", "FILE"}, {"--gguf", "FILE"}, {"--info", "FILE"}, {"--probes", "FILE"},
        {"--prompt-file", "FILE"}, {"--store-dir", "DIR"}, {"--align-cache", "DIR"}, {"--resume-from", "DIR"},
        {"--tokenizer", "TOKENIZER"}, {"--ids", "IDS"}, {"--prompt-ids", "IDS"}, {"--set", "NAME=VALUE"},
        {"--weight", "FLOAT"}, {"--special", "TOKEN"}, {"--method", "NAME"}, {"--scope", "NAME"}, {"--select", "NAME"},
        {"--pre", "NAME"}, {"--ops", "LIST"}};
    const char *bar = strrchr(o->name, '|'), *name = bar ? bar + 1 : o->name;
    if (strcmp(name, "--teacher") == 0) return o->type == OPT_LIST ? "FILE" : "MODEL";  // stores, or a model
    if (strcmp(name, "--out") == 0)
        return strstr(o->help, "folder") || strstr(o->help, "root") || strstr(o->help, "DIR") ? "DIR" : "FILE";
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcmp(name, names[i].name) == 0) return names[i].meta;
    return "TEXT";
}

// Two examples per command, printed at the end of its help; tests/test_help_examples.sh checks
// that every one parses (FUSEKIT_PARSE_ONLY=1: the options are read and checked, nothing runs).
static const struct { const char *cmd, *lines; } examples[] = {
    {"train", "fusekit train --data shakespeare.txt -o out/shk --arch llama --d-model 256 --layers 6 --heads 8 --steps 2000 --lr 1e-3\n"
              "fusekit train --data more.txt --init out/shk -o out/shk2 --steps 500 --lr 3e-4 --precision bf16"},
    {"eval", "fusekit eval --model out/shk --data test.txt\n"
             "fusekit eval --model SmolLM2-135M-Instruct.Q4_1.gguf --data wiki.test.raw --protocol llama-perplexity --seq 512"},
    {"generate", "fusekit generate --model out/shk --prompt \"ROMEO:\" -n 200 --temperature 0.8 --top-k 40\n"
                 "fusekit generate --model SmolLM2-135M-Instruct.Q4_1.gguf --chat --prompt \"What is the capital of France?\" --greedy"},
    {"chat", "fusekit chat --model SmolLM2-135M-Instruct.Q4_1.gguf --system \"Answer in one sentence.\"\n"
             "fusekit chat --model out/fused --chat-template chat_template.jinja --temperature 0.7 --top-p 0.9"},
    {"info", "fusekit info --model out/shk\n"
             "fusekit info --model model.gguf --json"},
    {"tokenize", "fusekit tokenize --tokenizer out/tok --data train.txt -o train.fktok\n"
                 "fusekit tokenize --tokenizer model.gguf --data a.txt --data b.txt -o ab.fktok"},
    {"extract", "fusekit extract --model gemma-3-270m-q4_k_m.gguf --data mix.txt -k 10 -o gemma.fkd\n"
                "fusekit extract --info gemma.fkd"},
    {"align", "fusekit align --target smollm2.gguf --source gemma3.gguf --data mix.txt\n"
              "fusekit align --target out/B --source out/A --source out/C --data mix.txt --vmap approx -o out/align"},
    {"fuse", "fusekit fuse --target smollm2.gguf --source smollm2.gguf gemma3.gguf --data mix.txt -o out/fused --steps 100 --lr 3e-5\n"
             "fusekit fuse --target out/B --source out/A out/C --data mix.txt -o out/fused --lambda 0.5 --teacher-tail --vmap approx"},
    {"analyze", "fusekit analyze --model out/fused --data calib.txt -o out/analysis\n"
                "fusekit analyze --model model.gguf --data calib.txt -o out/analysis --max-tokens 16384"},
    {"fold", "fusekit fold --model out/fused --data calib.txt --budget 0.25 -o out/folded --heal-steps 200\n"
             "fusekit fold --model out/fused --data calib.txt --budget 0.25 -o out/plan --plan-only"},
    {"heal", "fusekit heal --teacher out/fused --model out/folded --data calib.txt -o out/healed --steps 200\n"
             "fusekit heal --teacher out/fused --model out/folded --data calib.txt -o out/healed --steps 200 --lr 3e-5 --lambda 0.5"},
    {"prune", "fusekit prune --model out/fused --data calib.txt --method flap --budget 0.25 -o out/flap\n"
              "fusekit prune --model out/fused --data calib.txt --method magnitude --params 1099904 -o out/magnitude"},
    {"merge", "fusekit merge --method ties --base base/ --model a/ --weight 0.5 --model b/ --weight 0.5 -o out/merged\n"
              "fusekit merge --config ties.yml -o out/merged"},
    {"demo", "fusekit demo\n"
             "fusekit demo --quick --seeds 3 --controls -o out/study"},
    {"export", "fusekit export --model out/fused --gguf fused.gguf --type f16\n"
               "fusekit export --model out/neox --gguf neox.gguf --gelu-approx"},
    {"import", "fusekit import --gguf model.gguf -o out/model\n"
               "fusekit import --gguf model.gguf -o out/model --dtype bf16"},
    {"run", "fusekit run examples/fold_heal.yaml -o out/run\n"
            "fusekit run out/run/folded/recipe.resolved.yaml -o out/rerun --set steps=20"},
    {"tokenizer train", "fusekit tokenizer train --data input.txt --vocab 2048 -o out/tok\n"
                        "fusekit tokenizer train --data input.txt --vocab 4096 --kind spm --split-digits -o out/spm"},
    {"tokenizer encode", "fusekit tokenizer encode --tokenizer out/tok --text \"Hello world\"\n"
                         "fusekit tokenizer encode --tokenizer model.gguf --file input.txt"},
    {"tokenizer decode", "fusekit tokenizer decode --tokenizer out/tok --ids \"15496 995\"\n"
                         "fusekit tokenizer decode --tokenizer model.gguf --file ids.txt --skip-special"},
    {"tokenizer info", "fusekit tokenizer info --tokenizer out/tok\n"
                       "fusekit tokenizer info --tokenizer model.gguf"},
    {"tokenizer convert", "fusekit tokenizer convert --tokenizer model.gguf -o out/tok\n"
                          "fusekit tokenizer convert --tokenizer out/tok --gguf tok.gguf"},
    {"data synth", "fusekit data synth -o out/corpus\n"
                   "fusekit data synth -o out/corpus --seed 2 --bytes 200000"},
};

static void print_help(const cli_opt *opts, const char *usage) {
    printf("%s\n\noptions:\n", usage);
    for (const cli_opt *o = opts; o->name; o++) {
        if (o->type == OPT_GROUP) { printf("\n%s:\n", o->help); continue; }
        const char *meta = o->type == OPT_STR || o->type == OPT_LIST ? string_meta(o) : o->type == OPT_CHOICE ? "NAME"
                         : o->type == OPT_INT || o->type == OPT_I32 ? "N" : o->type == OPT_FLAG ? "" : "FLOAT";
        char left[64], w[200] = "", def[96], d[128] = "";
        snprintf(left, sizeof left, "%s%s%s%s", o->name, *meta ? " " : "", meta, o->type == OPT_LIST ? "..." : "");
        range_t g;
        if (is_numeric(o->type) && parse_range(o->range, &g)) {
            char r[160];
            range_words(&g, r, sizeof r);
            snprintf(w, sizeof w, " [%s]", r);
        } else if (o->type == OPT_CHOICE) snprintf(w, sizeof w, " [%s]", o->range);
        row_default(o, def, sizeof def);
        if (*def) snprintf(d, sizeof d, " (default %s)", def);
        printf("  %-28s %s%s%s\n", left, o->help, d, w);
    }
    printf("  %-28s %s\n", "-h|--help", "show this help");
    char cmd[64];
    usage_cmd(usage, cmd, sizeof cmd);
    for (size_t i = 0; i < sizeof examples / sizeof examples[0]; i++)
        if (strcmp(examples[i].cmd, cmd) == 0) {
            printf("\nexamples:\n");
            for (const char *l = examples[i].lines; *l;) {
                size_t n = strcspn(l, "\n");
                printf("  %.*s\n", (int)n, l);
                l += n + (l[n] == '\n');
            }
        }
}

// One value of a row that takes one (not a flag, not a list) into its pointer; 0, or 2 after
// printing the error. a/len: the option as given.
static int set_value(const char *cmd, cli_opt *o, const char *a, size_t len, const char *v) {
    int64_t i;
    double x;
    switch (o->type) {
    case OPT_STR: *(const char **)o->ptr = v; return 0;
    case OPT_CHOICE: {
        int k = 0;
        for (const char *c = o->range; c; c = strchr(c, '|') ? strchr(c, '|') + 1 : NULL, k++) {
            size_t n = strcspn(c, "|");
            if (n == strlen(v) && strncasecmp(c, v, n) == 0) { *(int *)o->ptr = k; return 0; }
        }
        fprintf(stderr, "fusekit %s: error: %.*s must be one of %s (got '%s')\n", cmd, (int)len, a, o->range, v);
        return 2;
    }
    case OPT_INT: return parse_int_value(cmd, a, (int)len, v, o->range, (int64_t *)o->ptr);
    case OPT_I32:
        if (parse_int_value(cmd, a, (int)len, v, o->range, &i)) return 2;
        if (i < INT_MIN || i > INT_MAX) { fprintf(stderr, "fusekit %s: error: %.*s is too large (got %s)\n", cmd, (int)len, a, v); return 2; }
        *(int *)o->ptr = (int)i;
        return 0;
    case OPT_FLOAT: return parse_float_value(cmd, a, (int)len, v, o->range, (double *)o->ptr);
    case OPT_F32:
        if (parse_float_value(cmd, a, (int)len, v, o->range, &x)) return 2;
        *(float *)o->ptr = (float)x;
        return 0;
    case OPT_FLAG:
    case OPT_LIST:
    case OPT_GROUP: return 0;
    }
    return 0;
}

// A repeatable option's values: "--opt a b c" as well as "--opt a --opt b" (values run to the
// next option). *i is advanced past those taken. Returns 0, or 2 after printing the error.
static int add_list(const char *cmd, cli_list *l, const char *a, size_t len, bool inline_value, const char *v, int argc, char **argv, int *i) {
    if (l->n == CLI_LIST_MAX) { fprintf(stderr, "fusekit %s: error: option %.*s given more than %d times\n", cmd, (int)len, a, CLI_LIST_MAX); return 2; }
    l->v[l->n++] = v;
    while (!inline_value && *i + 1 < argc && argv[*i + 1][0] != '-') {
        if (l->n == CLI_LIST_MAX) { fprintf(stderr, "fusekit %s: error: option %.*s given more than %d values\n", cmd, (int)len, a, CLI_LIST_MAX); return 2; }
        l->v[l->n++] = argv[++*i];
    }
    return 0;
}

int (*cli_parse_hook)(const cli_opt *opts, const char *cmd);

int cli_name_distance(const char *a, const char *b) {
    a += strspn(a, "-");
    b += strspn(b, "-");
    return (int)fk_edit_distance(a, strcspn(a, "=|"), b, strcspn(b, "=|"));
}

int cli_near_limit(const char *word) {
    size_t n = strcspn(word + strspn(word, "-"), "=");
    return n < 3 ? 1 : n < 9 ? 2 : 3;  // a swap of two letters is two edits
}

// "fusekit <cmd>: error: unknown option --lamda (did you mean --lambda?) (see --help)": the
// nearest spelling in the table within cli_near_limit edits.
static int unknown_option(const cli_opt *opts, const char *cmd, const char *a) {
    const char *near = NULL;
    int best = cli_near_limit(a) + 1;
    size_t near_n = 0;
    for (const cli_opt *o = opts; o->name; o++) {
        if (o->type == OPT_GROUP) continue;
        for (const char *s = o->name; s; s = strchr(s, '|') ? strchr(s, '|') + 1 : NULL) {
            int d = cli_name_distance(a, s);
            if (d < best) { best = d; near = s; near_n = strcspn(s, "|"); }
        }
    }
    char hint[96] = "";
    if (near) snprintf(hint, sizeof hint, " (did you mean %.*s?)", (int)near_n, near);
    fprintf(stderr, "fusekit %s: error: unknown option %s%s (see --help)\n", cmd, a, hint);
    return 2;
}

int cli_parse(int argc, char **argv, cli_opt *opts, const char *usage) {
    char cmd[64];
    usage_cmd(usage, cmd, sizeof cmd);
    // every numeric option says which values it takes (checked on every run, --help included)
    for (const cli_opt *o = opts; o->name; o++) {
        range_t g;
        if (o->type == OPT_GROUP) continue;
        if ((is_numeric(o->type) && !parse_range(o->range, &g)) || (o->type == OPT_CHOICE && !o->range)) {
            fprintf(stderr, "fusekit %s: internal error: option %s has no valid range ('%s')\n", cmd, o->name, o->range ? o->range : "");
            return 2;
        }
    }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) { print_help(opts, usage); return 1; }
        const char *eq = strchr(a, '=');
        bool inline_value = eq && a[0] == '-';
        size_t len = inline_value ? (size_t)(eq - a) : strlen(a);
        cli_opt *o = NULL;
        const char *verb = cmd;  // errors name the verb whose row it is (CLI_ROW_GROUP)
        for (cli_opt *p = opts; p->name && !o; p++) {
            if (p->type == OPT_GROUP) verb = p->name;
            else if (name_matches(p->name, a, len)) o = p;
        }
        if (!o) return unknown_option(opts, cmd, a);
        o->set = true;
        if (o->type == OPT_FLAG) {
            if (inline_value) { fprintf(stderr, "fusekit %s: error: option %.*s takes no value\n", verb, (int)len, a); return 2; }
            *(bool *)o->ptr = true;
            continue;
        }
        const char *v = inline_value ? eq + 1 : (i + 1 < argc ? argv[++i] : NULL);
        if (!v) { fprintf(stderr, "fusekit %s: error: option %.*s needs a value\n", verb, (int)len, a); return 2; }
        int rc = o->type == OPT_LIST ? add_list(verb, o->ptr, a, len, inline_value, v, argc, argv, &i) : set_value(verb, o, a, len, v);
        if (rc) return rc;
    }
    if (cli_parse_hook) return cli_parse_hook(opts, cmd);
    // FUSEKIT_PARSE_ONLY=1: the command line is read and checked, then the verb stops as after
    // --help (exit 0), nothing run (for scripts checking a command, and the help examples' test)
    const char *po = getenv("FUSEKIT_PARSE_ONLY");
    if (!po || !*po || strcmp(po, "0") == 0) return 0;
    for (const cli_opt *o = opts; o->name; o++)  // a mode that does its one thing and exits needs nothing else
        if (o->set && strstr(o->help, "and exit")) return 1;
    for (const cli_opt *o = opts; o->name; o++)  // and the rows whose help says required are given
        if (o->type != OPT_GROUP && !o->set && strstr(o->help, "(required") && !strstr(o->help, "(required unless")) {
            fprintf(stderr, "fusekit %s: error: %s is required\n", cmd, o->name);
            return 2;
        }
    return 1;
}

int cli_parse_verb(int argc, char **argv, cli_opt *opts, const char *usage) {
    int rc = cli_parse(argc, argv, opts, usage);
    return rc == 0 ? -1 : rc == 1 ? 0 : 2;
}

const cli_sub *cli_find_sub(const cli_sub *subs, int n, const char *name) {
    for (int i = 0; i < n; i++)
        if (strcmp(name, subs[i].name) == 0) return &subs[i];
    return NULL;
}

int cli_subcommand(const char *verb, const char *intro, const cli_sub *subs, int n, int argc, char **argv) {
    const cli_sub *s = argc >= 2 ? cli_find_sub(subs, n, argv[1]) : NULL;
    if (s) return s->fn(argc - 1, argv + 1);
    bool help = argc >= 2 && (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0);
    if (argc >= 2 && !help) fprintf(stderr, "fusekit %s: unknown subcommand '%s'\n", verb, argv[1]);
    FILE *f = help ? stdout : stderr;
    fprintf(f, "usage: fusekit %s <subcommand> [options]\n\n%ssubcommands:\n", verb, intro);
    for (int i = 0; i < n; i++) fprintf(f, "  %-8s %s\n", subs[i].name, subs[i].help);
    return help ? 0 : 2;
}

int cli_require(const char *cmd, const char *what, int n, ...) {
    va_list ap;
    va_start(ap, n);
    bool ok = true;
    for (int i = 0; i < n; i++) ok = va_arg(ap, const char *) != NULL && ok;
    va_end(ap);
    if (ok) return 0;
    fprintf(stderr, "fusekit %s: error: %s %s required\n", cmd, what, strstr(what, " and ") ? "are" : "is");
    return 2;
}

bool cli_was_set(const cli_opt *opts, const char *name) {
    for (const cli_opt *o = opts; o->name; o++)
        if (o->type != OPT_GROUP && name_matches(o->name, name, strlen(name))) return o->set;
    return false;
}

int cli_fail(const char *cmd, fk_status st) {
    fprintf(stderr, "fusekit %s: error: %s (%s)\n", cmd, fk_last_error(), fk_status_name(st));
    return 1;
}

void cli_set_threads(int64_t threads) {
    if (threads <= 0) {  // the default: OMP_NUM_THREADS when set, else one thread per physical core
        const char *env = getenv("OMP_NUM_THREADS");
        if (env && *env) return;
        threads = fk_physical_cores();
    }
    omp_set_num_threads((int)threads);
    openblas_set_num_threads((int)threads);
}

typedef struct { const char *cmd, *what; double t0, last; bool shown; } progress_line;
static progress_line g_progress;

static void on_progress(int64_t done, int64_t total, int64_t tokens, void *user) {
    progress_line *p = user;
    double now = fk_time_s(), el = now - p->t0;
    if (now - p->last < 0.25 && done < total) return;
    p->last = now;
    double rate = el > 0 ? (double)tokens / el : 0, eta = done > 0 ? el * (double)(total - done) / (double)done : 0;
    fprintf(stderr, "\r\033[Kfusekit %s: %lld/%lld %s (%.0f%%), %.0f tok/s, ETA %d:%02d", p->cmd, (long long)done, (long long)total, p->what,
            total > 0 ? 100.0 * (double)done / (double)total : 100.0, rate, (int)eta / 60, (int)eta % 60);
    p->shown = true;
}

void cli_progress_begin(const char *cmd, bool quiet, const char *what) {
    g_progress = (progress_line){cmd, what, fk_time_s(), 0, false};
    if (!quiet && isatty(2) && fk_dp_rank() == 0) fk_eval_set_progress(on_progress, &g_progress);
}

void cli_progress_clear(void) {
    if (g_progress.shown) fprintf(stderr, "\r\033[K");
    g_progress.shown = false;
    g_progress.last = 0;
}

void cli_progress_end(void) {
    fk_eval_set_progress(NULL, NULL);
    if (g_progress.shown) fprintf(stderr, "\r\033[K");
    g_progress.shown = false;
}

void cli_set_precision(const char *cmd, fk_precision p) {
    fk_matmul_set_precision(p);
    if (p != FK_PRECISION_FP32)
        fprintf(stderr, "fusekit %s: matrix products in %s%s%s\n", cmd, fk_matmul_backend(),
                p == FK_PRECISION_AUTO ? " (--precision auto)" : "",
                fk_cpu_has_bf16() || fk_matmul_precision() == FK_PRECISION_FP32
                    ? "" : " (this CPU has no AVX512-BF16: slower than fp32, same results within fp32 rounding)");
    if (p == FK_PRECISION_INT8)
        fprintf(stderr, "fusekit %s: quantized weights multiply 8-bit activations (%s)\n", cmd, fk_qmatmul_q8_unit());
}

// The loading helpers the verbs share are the library's (fusekit/job.h).
fk_status cli_model_tokenizer(const char *model_dir, const char *path, int64_t vocab, fk_tokenizer **t) {
    return fk_model_tokenizer(model_dir, path, vocab, t);
}

void cli_trim_heap(void) { fk_heap_trim(); }

fk_status cli_load_model(const char *path, const char *tok_path, unsigned flags, fk_model *m, fk_tokenizer **tok) {
    return fk_model_load_tok(path, tok_path, flags, m, tok);
}

fk_status cli_model_open(const cli_model_opts *mo, fk_model *m, fk_tokenizer **tok) {
    return fk_model_load_tok(mo->path, mo->tokenizer, mo->flags, m, tok);
}

fk_status cli_store_tokenizer(const char *store_path, fk_tokenizer **tok) { return fk_store_keep_tokenizer(store_path, tok); }

void cli_model_name(const char *path, char *out, size_t n) { fk_model_name(path, out, n); }

// ---------------------------------------------------------------- outputs

// path without trailing '/' (a malloc'd copy; "/" stays "/").
static char *strip_slashes(const char *path) {
    char *p = strdup(path);
    if (!p) return NULL;
    size_t n = strlen(p);
    while (n > 1 && p[n - 1] == '/') p[--n] = 0;
    return p;
}

// The folder a path lies in ("." for a bare name); malloc'd.
static char *parent_dir(const char *path) {
    char *p = strip_slashes(path);
    if (!p) return NULL;
    char *slash = strrchr(p, '/');
    if (!slash) { free(p); return strdup("."); }
    if (slash == p) slash[1] = 0;  // "/x" -> "/"
    else *slash = 0;
    return p;
}

// An absolute, symlink-free spelling of path, which need not exist when its folder does; NULL
// when neither does.
static char *canonical(const char *path) {
    char buf[PATH_MAX];
    if (realpath(path, buf)) return strdup(buf);
    char *dir = parent_dir(path), *p = strip_slashes(path);
    char *out = NULL;
    if (dir && p && realpath(dir, buf)) {
        const char *base = strrchr(p, '/');
        base = base ? base + 1 : p;
        size_t n = strlen(buf) + strlen(base) + 2;
        out = malloc(n);
        if (out) snprintf(out, n, "%s%s%s", buf, strcmp(buf, "/") == 0 ? "" : "/", base);
    }
    free(dir);
    free(p);
    return out;
}

// a is b, or lies inside the folder b
static bool same_or_inside(const char *a, const char *b) {
    size_t nb = strlen(b);
    return strncmp(a, b, nb) == 0 && (a[nb] == 0 || a[nb] == '/' || strcmp(b, "/") == 0);
}

// What a killed run (kill -9, power loss) left beside an output: the temporaries of a folder
// (OUT.tmp-PID-XXXXXX) or file (OUT.tmp.PID) being written, and an output moved aside to be
// replaced (OUT.old-PID). Those of processes that no longer run are dealt with: temporaries
// removed, an output moved aside put back when nothing took its place (a kill between the two
// renames of cli_outdir_commit). Those of running processes are left alone.
static void recover_stale(const char *path) {
    char *p = strip_slashes(path), *dir = p ? parent_dir(p) : NULL;
    const char *base = p ? strrchr(p, '/') : NULL;
    base = base ? base + 1 : p;
    DIR *d = dir ? opendir(dir) : NULL;
    size_t bl = base ? strlen(base) : 0;
    struct dirent *e;
    while (d && (e = readdir(d)) != NULL) {
        const char *n = e->d_name;
        if (strncmp(n, base, bl) != 0) continue;
        // only the exact forms fusekit writes: OUT.old-PID, OUT.tmp.PID, OUT.tmp-PID-XXXXXX
        bool old = strncmp(n + bl, ".old-", 5) == 0, dir_tmp = strncmp(n + bl, ".tmp-", 5) == 0;
        if (!old && !dir_tmp && strncmp(n + bl, ".tmp.", 5) != 0) continue;
        const char *digits = n + bl + 5;
        size_t nd = strspn(digits, "0123456789");
        if (nd == 0 || nd > 9 || digits[0] == '0') continue;
        const char *rest = digits + nd;
        if (dir_tmp ? !(rest[0] == '-' && strlen(rest + 1) == 6) : rest[0] != 0) continue;
        long pid = strtol(digits, NULL, 10);
        errno = 0;
        if (kill((pid_t)pid, 0) == 0 || errno != ESRCH) continue;  // running (or not ours to ask): left alone
        char *full = fk_path_join(dir, n);
        if (!full) continue;
        struct stat sb;
        if (old && stat(p, &sb) != 0) rename(full, p);  // nothing replaced it: the output back in place
        else fk_remove_tree(full);
        free(full);
    }
    if (d) closedir(d);
    free(dir);
    free(p);
}

int cli_check_output(const char *cmd, const cli_out_spec *o, const char *const *inputs, int n_inputs) {
    if (!o->path || !*o->path) {
        fprintf(stderr, "fusekit %s: error: %s is empty: give the path to write\n", cmd, o->opt);
        return 2;
    }
    recover_stale(o->path);
    struct stat sb;
    bool exists = stat(o->path, &sb) == 0;
    bool replaced = exists && !o->exists_ok;  // with --force: removed when the new output is complete
    char *co = canonical(o->path);
    for (int i = 0; co && i < n_inputs; i++) {
        if (!inputs[i] || !*inputs[i]) continue;
        char *ci = canonical(inputs[i]);
        bool clash = ci && (strcmp(ci, co) == 0 || (replaced && same_or_inside(ci, co)));
        free(ci);
        if (clash) {
            fprintf(stderr, "fusekit %s: error: %s %s would overwrite the input %s: write the output elsewhere\n", cmd, o->opt, o->path, inputs[i]);
            free(co);
            return 2;
        }
    }
    free(co);
    if (replaced && !o->force) {
        fprintf(stderr, "fusekit %s: error: %s %s already exists: pass --force to replace it, or choose another path\n", cmd, o->opt, o->path);
        return 2;
    }
    // the folder the output goes into exists (created now) and takes a new file
    char *dir = exists && o->exists_ok && S_ISDIR(sb.st_mode) ? strip_slashes(o->path) : parent_dir(o->path);
    if (!dir) { fprintf(stderr, "fusekit %s: error: out of memory\n", cmd); return 1; }
    fk_status st = fk_mkdir_p(dir);
    if (st != FK_OK) {
        fprintf(stderr, "fusekit %s: error: cannot write %s %s: %s\n", cmd, o->opt, o->path, fk_last_error());
        free(dir);
        return 1;
    }
    char *probe = fk_path_join(dir, ".fusekit-probe-XXXXXX");
    int fd = probe ? mkstemp(probe) : -1;
    if (fd < 0) {
        fprintf(stderr, "fusekit %s: error: cannot write %s %s: the folder %s does not take new files (%s)\n", cmd, o->opt, o->path, dir,
                strerror(errno));
        free(probe);
        free(dir);
        return 1;
    }
    close(fd);
    unlink(probe);
    free(probe);
    free(dir);
    return 0;
}

fk_status cli_outdir_begin(const char *path, cli_outdir *d) {
    d->path = strip_slashes(path);
    size_t n = d->path ? strlen(d->path) + 40 : 0;
    d->tmp = d->path ? malloc(n) : NULL;
    if (!d->tmp) { free(d->path); d->path = NULL; return fk_error(FK_ERR_NOMEM, "out of memory"); }
    snprintf(d->tmp, n, "%s.tmp-%ld-XXXXXX", d->path, (long)getpid());  // the pid: recover_stale
    if (!mkdtemp(d->tmp)) {
        fk_status st = fk_error(FK_ERR_IO, "cannot create the folder %s: %s", d->tmp, strerror(errno));
        free(d->tmp); free(d->path);
        d->tmp = d->path = NULL;
        return st;
    }
    mode_t um = umask(0);  // mkdtemp makes 0700: the folder gets the mode mkdir would give it
    umask(um);
    chmod(d->tmp, 0777 & ~um);
    return FK_OK;
}

static void outdir_free(cli_outdir *d) {
    free(d->tmp);
    free(d->path);
    d->tmp = d->path = NULL;
}

fk_status cli_outdir_commit(cli_outdir *d) {
    // --force: the old output is moved aside (OUT.old-PID: recover_stale), then removed
    size_t n = strlen(d->path) + 32;
    char *old = malloc(n);
    fk_status st = old ? FK_OK : fk_error(FK_ERR_NOMEM, "out of memory");
    if (old) snprintf(old, n, "%s.old-%ld", d->path, (long)getpid());
    if (st == FK_OK) st = fk_dir_replace(d->tmp, d->path, old, NULL);
    if (st != FK_OK) fk_remove_tree(d->tmp);
    free(old);
    outdir_free(d);
    return st;
}

void cli_outdir_abort(cli_outdir *d) {
    if (d->tmp) fk_remove_tree(d->tmp);
    outdir_free(d);
}

fk_status cli_outdir_end(cli_outdir *d, fk_status st) {
    if (!d->tmp) return st;
    if (st != FK_OK) { cli_outdir_abort(d); return st; }
    return cli_outdir_commit(d);
}

// ---------------------------------------------------------------- JSON output

void cli_json_num(cJSON *o, const char *key, const char *fmt, double v) {
    if (!isfinite(v)) { cJSON_AddNullToObject(o, key); return; }
    char buf[64];
    snprintf(buf, sizeof buf, fmt, v);
    cJSON_AddRawToObject(o, key, buf);
}

void cli_json_int(cJSON *o, const char *key, int64_t v) {
    char buf[32];
    snprintf(buf, sizeof buf, "%lld", (long long)v);
    cJSON_AddRawToObject(o, key, buf);
}

void cli_json_print(cJSON *o, FILE *f, FILE *f2) {
    if (fk_dp_rank() != 0) {  // under mpirun rank 0 alone prints and writes results
        cJSON_Delete(o);
        return;
    }
    char *s = o ? cJSON_PrintUnformatted(o) : NULL;
    cJSON_Delete(o);
    if (!s) return;
    fprintf(f, "%s\n", s);
    fflush(f);
    if (f2) { fprintf(f2, "%s\n", s); fflush(f2); }
    free(s);
}
