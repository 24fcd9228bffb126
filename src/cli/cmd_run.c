// fusekit run RECIPE: a pipeline of verbs from a YAML or JSON file. Each step's options go
// through the verb's own option table (its parse run with cli_parse_hook set: nothing runs), so
// names, values, defaults and errors are the command line's; every step is checked before the
// first runs; then each runs as its own fusekit process. The resolved recipe (paths, defaults,
// input hashes, version) goes into every step's output folder and reruns the same commands.
#include "cli.h"
#include "recipe.h"

#include <errno.h>
#include <limits.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef FK_COMMIT
#define FK_COMMIT "unknown"
#endif
#ifndef FK_VERSION  // (the CLI's sources built into a test program)
#define FK_VERSION "unknown"
#endif

extern char **environ;

// The verbs a step may name: "tokenizer train" runs cmd_tokenizer with argv "tokenizer train ...".
typedef struct {
    const char *name;
    int (*fn)(int argc, char **argv);
} run_verb;
static const run_verb run_verbs[] = {
    {"train", cmd_train},     {"eval", cmd_eval},       {"generate", cmd_generate}, {"info", cmd_info},
    {"tokenize", cmd_tokenize}, {"extract", cmd_extract}, {"align", cmd_align},     {"fuse", cmd_fuse},
    {"analyze", cmd_analyze}, {"fold", cmd_fold},       {"heal", cmd_heal},         {"prune", cmd_prune},
    {"merge", cmd_merge},     {"export", cmd_export},   {"import", cmd_import},     {"tokenizer train", cmd_tokenizer},
    {"tokenizer convert", cmd_tokenizer}, {"data synth", cmd_data},
};
#define N_VERBS ((int)(sizeof run_verbs / sizeof run_verbs[0]))

// A row of a verb's table as the parse hook saw it: spellings, kind, whether given, its value.
typedef struct {
    const char *name, *help;   // the table's literals
    opt_type type;
    bool set;
    cJSON *value;              // the row's value (raw number/choice text, string, list, flag)
} run_row;
typedef struct {
    run_row rows[128];
    int n;
    bool called;
} run_capture;
static run_capture *capture;

// The long spelling of a row without its dashes: "out" of "-o|--out".
static const char *row_key(const char *name, char *out, size_t n) {
    const char *s = strrchr(name, '|') ? strrchr(name, '|') + 1 : name;
    snprintf(out, n, "%s", s + strspn(s, "-"));
    return out;
}

static cJSON *row_value(const cli_opt *o) {
    char t[64];
    switch (o->type) {
    case OPT_STR: {
        const char *v = *(const char *const *)o->ptr;
        return v ? cJSON_CreateString(v) : cJSON_CreateNull();
    }
    case OPT_FLAG: return cJSON_CreateBool(*(const bool *)o->ptr);
    case OPT_LIST: {
        const cli_list *l = o->ptr;
        cJSON *a = cJSON_CreateArray();
        for (int i = 0; i < l->n; i++) cJSON_AddItemToArray(a, cJSON_CreateString(l->v[i]));
        return a;
    }
    case OPT_CHOICE:
        if (*(const int *)o->ptr < 0) return cJSON_CreateNull();
        cli_row_value_text(o, t, sizeof t);
        return cJSON_CreateRaw(t);
    default:
        cli_row_value_text(o, t, sizeof t);
        return cJSON_CreateRaw(t);
    }
}

// cli_parse_hook: the parsed rows into *capture; 1 stops the verb before any work.
static int capture_rows(const cli_opt *opts, const char *cmd) {
    (void)cmd;
    capture->called = true;
    for (const cli_opt *o = opts; o->name && capture->n < 128; o++) {
        if (o->type == OPT_GROUP) continue;
        run_row *r = &capture->rows[capture->n++];
        *r = (run_row){o->name, o->help, o->type, o->set, row_value(o)};
    }
    return 1;
}

static void capture_free(run_capture *c) {
    for (int i = 0; i < c->n; i++) cJSON_Delete(c->rows[i].value);
    c->n = 0;
    c->called = false;
}

// Runs the verb's parse over argv (argc words) with the hook set; its exit code (0 after the hook).
static int capture_parse(const run_verb *v, int argc, char **argv, run_capture *c) {
    capture_free(c);
    capture = c;
    cli_parse_hook = capture_rows;
    int rc = v->fn(argc, argv);
    cli_parse_hook = NULL;
    capture = NULL;
    return rc != 0 ? rc : c->called ? 0 : 2;
}

static run_row *find_row(run_capture *c, const char *key) {
    for (int i = 0; i < c->n; i++)
        for (const char *s = c->rows[i].name; s; s = strchr(s, '|') ? strchr(s, '|') + 1 : NULL) {
            s += strspn(s, "-");
            size_t n = strcspn(s, "|");
            if (n == strlen(key) && strncmp(s, key, n) == 0) return &c->rows[i];
        }
    return NULL;
}

// ---- The run's state

typedef struct {
    const char *recipe;        // as given
    char *dir;                 // its folder, absolute
    char *out;                 // the output root (-o, absolute; default the current folder)
    bool force, dry_run;
    cJSON *vars;               // the recipe's vars: after the --set values
    const char *origin;        // a resolved recipe's recipe: (the file it came from), else NULL
    cJSON *inputs;             // absolute path -> sha256 of every input that exists before the run
    cJSON *outputs;            // the step outputs as written (relative paths resolve under out)
    cJSON *steps;              // the resolved steps
    int step;                  // 1-based, for messages
    const char *verb;
} run_ctx;

static int fail(const run_ctx *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(const run_ctx *c, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "fusekit run: error: %s: ", c->recipe);
    if (c->step > 0) fprintf(stderr, "step %d (%s): ", c->step, c->verb ? c->verb : "?");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return 2;
}

// The nearest of n names to word within cli_near_limit, or NULL.
static const char *nearest(const char *const *names, int n, const char *word) {
    const char *best = NULL;
    int bd = cli_near_limit(word) + 1;
    for (int i = 0; i < n; i++) {
        int d = cli_name_distance(word, names[i]);
        if (d < bd) { bd = d; best = names[i]; }
    }
    return best;
}

// "${name}" replaced by the recipe's vars (a scalar each) or else the environment variable; NULL
// after the error when neither has it.
static char *substitute(run_ctx *c, const char *s) {
    size_t cap = strlen(s) + 1, len = 0;
    char *out = malloc(cap);
    while (out && *s) {
        const char *open = strstr(s, "${"), *close = open ? strchr(open, '}') : NULL;
        const char *piece = s, *val = NULL;
        size_t n = close ? (size_t)(open - s) : strlen(s);
        char name[128], buf[64];
        if (close) {
            snprintf(name, sizeof name, "%.*s", (int)(close - open - 2), open + 2);
            const cJSON *v = cJSON_GetObjectItemCaseSensitive(c->vars, name);
            val = v ? recipe_scalar_text(v, buf, sizeof buf) : getenv(name);  // vars:, else the environment
            if (!val) {
                fail(c, "unknown variable ${%s} (define it under vars:, or in the environment)", name);
                free(out);
                return NULL;
            }
        }
        size_t need = len + n + (val ? strlen(val) : 0) + 1;
        if (need > cap) {
            char *o = realloc(out, cap = 2 * need);
            if (!o) { free(out); return NULL; }
            out = o;
        }
        memcpy(out + len, piece, n);
        len += n;
        if (val) { memcpy(out + len, val, strlen(val)); len += strlen(val); }
        out[len] = 0;
        s = close ? close + 1 : s + n;
    }
    if (out) out[len] = 0;
    return out;
}

static bool path_exists(const char *p) {
    struct stat st;
    return stat(p, &st) == 0;
}

// Whether rel is an earlier step's output (or inside one).
static bool under_output(const run_ctx *c, const char *rel) {
    const cJSON *o;
    cJSON_ArrayForEach(o, c->outputs) {
        size_t n = strlen(o->valuestring);
        if (strcmp(o->valuestring, ".") == 0 || (strncmp(rel, o->valuestring, n) == 0 && (rel[n] == 0 || rel[n] == '/'))) return true;
    }
    return false;
}

// A relative path under the output root ("." is the root itself).
static char *in_out(const run_ctx *c, const char *rel) { return strcmp(rel, ".") == 0 ? strdup(c->out) : fk_path_join(c->out, rel); }

// A path value of a step: *record gets what the resolved recipe keeps (an input as an absolute
// path, hashed; an output or an earlier output as written), *arg what the verb is given (outputs
// under the output root). A value that names nothing on disk stays as written (not every string
// option is a path: --scope ffn).
static int resolve_path(run_ctx *c, const char *v, bool output, char **record, char **arg) {
    *record = strdup(v);
    *arg = NULL;
    if (v[0] != '/' && (output || under_output(c, v))) {
        *arg = in_out(c, v);
        if (output) cJSON_AddItemToArray(c->outputs, cJSON_CreateString(v));
        return 0;
    }
    char *full = v[0] == '/' ? strdup(v) : fk_path_join(c->dir, v);
    if (full && path_exists(full)) {
        char real[PATH_MAX];
        free(*record);
        *record = strdup(realpath(full, real) ? real : full);
        if (!cJSON_GetObjectItemCaseSensitive(c->inputs, *record)) {
            char hex[65];
            if (!recipe_sha256(*record, hex)) { free(full); return fail(c, "cannot read %s to hash it", *record); }
            cJSON_AddStringToObject(c->inputs, *record, hex);
        }
    }
    free(full);
    *arg = strdup(*record);
    return 0;
}

// An argument list that owns its words.
typedef struct {
    char *v[512];
    int n;
} run_argv;
static void argv_add(run_argv *a, char *w) {
    if (a->n < 510) a->v[a->n++] = w;
    else free(w);
    a->v[a->n] = NULL;
}
static void argv_free(run_argv *a) {
    for (int i = 0; i < a->n; i++) free(a->v[i]);
    a->n = 0;
}
static char *joined(const char *key, const char *v) {
    size_t n = strlen(key) + strlen(v) + 4;
    char *w = malloc(n);
    if (w) snprintf(w, n, "%s%s=%s", strlen(key) > 1 ? "--" : "-", key, v);
    return w;
}

// A step's output option: -o/--out, and --gguf of export and tokenizer convert.
static bool is_output_row(const char *verb, const char *name) {
    return strcmp(name, "-o|--out") == 0 || strcmp(name, "--out") == 0 ||
           (strcmp(name, "--gguf") == 0 && (strcmp(verb, "export") == 0 || strcmp(verb, "tokenizer convert") == 0));
}
// Folders a step writes besides its output (stores, alignment caches): also under -o.
static bool is_written_row(const char *verb, const char *name) {
    return is_output_row(verb, name) || strcmp(name, "--store-dir") == 0 || strcmp(name, "--align-cache") == 0;
}

// One value of option key (row r) into argv and into rec (the resolved step). 0 or the exit code.
static int add_value(run_ctx *c, const run_row *r, const char *key, const cJSON *v, run_argv *a, cJSON *rec) {
    char buf[64];
    const char *s = recipe_scalar_text(v, buf, sizeof buf);
    if (!s) return fail(c, "option '%s' takes %s, not a %s", key, r->type == OPT_LIST ? "a value or a list of values" : "one value",
                        cJSON_IsArray(v) ? "list" : cJSON_IsObject(v) ? "mapping" : "null");
    char *sub = substitute(c, s);
    if (!sub) return 2;
    int rc = 0;
    if (r->type == OPT_STR || r->type == OPT_LIST) {
        char *record, *arg;
        rc = resolve_path(c, sub, is_written_row(c->verb, r->name), &record, &arg);
        if (rc == 0) {
            cJSON_AddItemToArray(rec, cJSON_CreateString(record));
            argv_add(a, joined(key, arg));
        }
        free(record);
        free(arg);
    } else {
        cJSON_AddItemToArray(rec, cJSON_IsString(v) ? cJSON_CreateString(sub) : cJSON_CreateRaw(sub));
        argv_add(a, joined(key, sub));
    }
    free(sub);
    return rc;
}

// A step's options (a mapping) into argv words after the verb, checked against the verb's table
// (table: its rows with nothing given); the resolved options into rec. 0 or the exit code.
static int step_args(run_ctx *c, run_capture *table, const cJSON *opts, run_argv *a, cJSON *rec) {
    const char *names[128];
    char keys[128][48];
    for (int i = 0; i < table->n; i++) names[i] = row_key(table->rows[i].name, keys[i], sizeof keys[i]);
    const cJSON *o;
    cJSON_ArrayForEach(o, opts) {
        const char *key = o->string;
        if (strcmp(key, "--") == 0 && strcmp(c->verb, "fold") == 0) continue;  // fold's healing options: step_prepare
        run_row *r = find_row(table, key);
        if (!r) {
            const char *near = nearest(names, table->n, key);
            char hint[96] = "";
            if (near) snprintf(hint, sizeof hint, " (did you mean '%s'?)", near);
            return fail(c, "unknown option '%s'%s (see fusekit %s --help)", key, hint, c->verb);
        }
        if (cJSON_IsNull(o)) continue;  // left unset
        char rk[48];
        row_key(r->name, rk, sizeof rk);
        if (r->type == OPT_FLAG) {
            if (!cJSON_IsBool(o)) return fail(c, "option '%s' is a flag: give true or false", key);
            if (cJSON_IsTrue(o)) {
                char *w = joined(rk, "");
                if (w) w[strlen(w) - 1] = 0;  // "--force=" -> "--force"
                argv_add(a, w);
            }
            cJSON_AddItemToObject(rec, rk, cJSON_CreateBool(cJSON_IsTrue(o)));
            continue;
        }
        if (r->type != OPT_LIST && cJSON_IsArray(o)) return fail(c, "option '%s' takes one value, not a list", key);
        cJSON *vals = cJSON_CreateArray();
        int rc = 0;
        if (cJSON_IsArray(o)) {
            const cJSON *e;
            cJSON_ArrayForEach(e, o) if (rc == 0) rc = add_value(c, r, key, e, a, vals);
        } else rc = add_value(c, r, key, o, a, vals);
        if (rc != 0) { cJSON_Delete(vals); return rc; }
        if (r->type == OPT_LIST) cJSON_AddItemToObject(rec, rk, vals);
        else {
            cJSON_AddItemToObject(rec, rk, cJSON_DetachItemFromArray(vals, 0));
            cJSON_Delete(vals);
        }
    }
    return 0;
}

// merge pairs each --weight with the --model just before it: the words reordered so.
static int pair_merge_weights(run_ctx *c, run_argv *a) {
    char *models[256], *weights[256], *rest[512];
    int nm = 0, nw = 0, nr = 0;
    for (int i = 0; i < a->n; i++) {
        if (strncmp(a->v[i], "--model=", 8) == 0 && nm < 256) models[nm++] = a->v[i];
        else if (strncmp(a->v[i], "--weight=", 9) == 0 && nw < 256) weights[nw++] = a->v[i];
        else rest[nr++] = a->v[i];
    }
    if (nw > 0 && nw != nm) {
        for (int i = 0; i < a->n; i++) a->v[i] = NULL;
        for (int i = 0; i < nm; i++) free(models[i]);
        for (int i = 0; i < nw; i++) free(weights[i]);
        a->n = 0;
        for (int i = 0; i < nr; i++) free(rest[i]);
        return fail(c, "give one weight per model (%d models, %d weights)", nm, nw);
    }
    a->n = 0;
    for (int i = 0; i < nr; i++) a->v[a->n++] = rest[i];
    for (int i = 0; i < nm; i++) {
        a->v[a->n++] = models[i];
        if (i < nw) a->v[a->n++] = weights[i];
    }
    a->v[a->n] = NULL;
    return 0;
}

// The rows left at their defaults (not in the step's options rec) as an object: the resolved
// recipe's record.
static cJSON *defaults_of(const run_capture *full, const cJSON *rec) {
    cJSON *d = cJSON_CreateObject();
    for (int i = 0; i < full->n; i++) {
        const run_row *r = &full->rows[i];
        char k[48];
        row_key(r->name, k, sizeof k);
        if (r->set || cJSON_IsNull(r->value) || cJSON_GetObjectItemCaseSensitive(d, k) || cJSON_GetObjectItemCaseSensitive(rec, k)) continue;
        cJSON_AddItemToObject(d, k, cJSON_Duplicate(r->value, true));
    }
    return d;
}

// A rerun of a resolved recipe: each recorded default must still be this fusekit's.
static int check_defaults(run_ctx *c, const cJSON *recorded, const cJSON *now) {
    const cJSON *r;
    cJSON_ArrayForEach(r, recorded) {
        const cJSON *n = cJSON_GetObjectItemCaseSensitive(now, r->string);
        char *a = cJSON_PrintUnformatted(r), *b = n ? cJSON_PrintUnformatted(n) : NULL;
        bool same = a && b && strcmp(a, b) == 0;
        int rc = same ? 0 : n ? fail(c, "the default of '%s' is %s in this fusekit, the recipe recorded %s: give it in the step to rerun as recorded", r->string, b, a)
                              : fail(c, "the recipe records a default of '%s', an option this fusekit does not have (or was given)", r->string);
        free(a);
        free(b);
        if (rc) return rc;
    }
    return 0;
}

// A step as it will run.
typedef struct {
    run_argv argv;             // the verb's words and options (argv[0] the verb's first word)
    const char *verb;
    char *output;              // the step's output (absolute) or NULL
    bool replace;              // --force on a verb without --force: removed before the step
} run_step;

// Options (rows of table) into the step's words, checked by the verb's own parse (full: the
// rows it parsed) and, when required, for the rows whose help says "(required)"; the resolved
// options into rec. 0 or the exit code.
static int parse_checked(run_ctx *c, const run_verb *v, bool required, run_capture *table, const cJSON *opts, run_argv *a, cJSON *rec, run_capture *full) {
    int rc = step_args(c, table, opts, a, rec);
    if (rc == 0 && strcmp(c->verb, "merge") == 0) rc = pair_merge_weights(c, a);
    for (int i = 0; rc == 0 && required && i < table->n; i++) {
        char k[48];
        if (strstr(table->rows[i].help, "(required)") && !cJSON_GetObjectItemCaseSensitive(rec, row_key(table->rows[i].name, k, sizeof k)))
            rc = fail(c, "option '%s' is required", k);
    }
    if (rc == 0 && capture_parse(v, a->n, a->v, full) != 0) rc = fail(c, "invalid options (the message above is fusekit %s's)", c->verb);
    return rc;
}

static const run_verb *find_verb(run_ctx *c, const cJSON *item, const cJSON **opts) {
    const cJSON *k;
    const run_verb *v = NULL;
    int n = 0;
    cJSON_ArrayForEach(k, item) {
        if (strcmp(k->string, "defaults") == 0) continue;
        n++;
        *opts = k;
        for (int i = 0; i < N_VERBS; i++)
            if (strcmp(k->string, run_verbs[i].name) == 0) v = &run_verbs[i];
    }
    if (n != 1) { fail(c, "a step is a mapping with one verb (train, fuse, fold, ...): its options under it"); return NULL; }
    c->verb = (*opts)->string;
    if (!v) {
        const char *names[N_VERBS];
        for (int i = 0; i < N_VERBS; i++) names[i] = run_verbs[i].name;
        const char *near = nearest(names, N_VERBS, (*opts)->string);
        char hint[96] = "";
        if (near) snprintf(hint, sizeof hint, " (did you mean '%s'?)", near);
        fail(c, "unknown verb '%s'%s", (*opts)->string, hint);
        return NULL;
    }
    if (!cJSON_IsObject(*opts) && !cJSON_IsNull(*opts)) { fail(c, "the options of '%s' must be a mapping of option: value", v->name); return NULL; }
    return v;
}

// The verb's words ("tokenizer", "train") into a; their count.
static int verb_words(const char *name, run_argv *a) {
    for (const char *w = name; *w;) {
        size_t n = strcspn(w, " ");
        argv_add(a, strndup(w, n));
        w += n + strspn(w + n, " ");
    }
    return a->n;
}

// A step checked and resolved: its argv, its output, and {verb: options, defaults: {...}} in
// c->steps. 0 or the exit code (the message printed).
static int step_prepare(run_ctx *c, const cJSON *item, run_step *s) {
    static run_capture table, full, heal_table, heal_full;  // large: static (one step at a time)
    if (!cJSON_IsObject(item)) return fail(c, "a step is a mapping with one verb (train, fuse, fold, ...): its options under it");
    const cJSON *opts = NULL;
    const run_verb *v = find_verb(c, item, &opts);
    if (!v) return 2;
    s->verb = v->name;
    int words = verb_words(v->name, &s->argv);  // "tokenizer train": two
    if (capture_parse(v, words, s->argv.v, &table) != 0) return fail(c, "internal error: the verb's options could not be read");
    cJSON *rec = cJSON_CreateObject(), *step = cJSON_CreateObject();
    cJSON_AddItemToObject(step, v->name, rec);
    cJSON_AddItemToArray(c->steps, step);
    int rc = parse_checked(c, v, true, &table, opts, &s->argv, rec, &full);
    cJSON *defs = rc == 0 ? defaults_of(&full, rec) : NULL;
    const cJSON *heal = cJSON_GetObjectItemCaseSensitive(opts, "--");
    if (rc == 0 && heal && strcmp(v->name, "fold") == 0) {  // fold's healing options: train's, after "--"
        if (!cJSON_IsObject(heal)) rc = fail(c, "'--' takes a mapping of train options (fold's healing)");
        run_argv h = {0};
        const run_verb *train = &run_verbs[0];
        cJSON *hrec = cJSON_CreateObject();
        cJSON_AddItemToObject(rec, "--", hrec);
        if (rc == 0) rc = capture_parse(train, verb_words("train", &h), h.v, &heal_table) ? fail(c, "internal error: train's options could not be read") : 0;
        if (rc == 0) rc = parse_checked(c, train, false, &heal_table, heal, &h, hrec, &heal_full);  // fold gives data and out
        if (rc == 0) {
            argv_add(&s->argv, strdup("--"));
            for (int i = 1; i < h.n; i++) { argv_add(&s->argv, h.v[i]); h.v[i] = NULL; }
            cJSON_AddItemToObject(defs, "--", defaults_of(&heal_full, hrec));
        }
        argv_free(&h);
    }
    const cJSON *recorded = cJSON_GetObjectItemCaseSensitive(item, "defaults");
    if (rc == 0 && recorded) rc = check_defaults(c, recorded, defs);
    if (defs) cJSON_AddItemToObject(step, "defaults", defs);
    for (int i = 0; rc == 0 && i < full.n; i++) {  // the output: exists only with --force
        if (!is_output_row(v->name, full.rows[i].name) || !cJSON_IsString(full.rows[i].value)) continue;
        s->output = strdup(full.rows[i].value->valuestring);
        if (!path_exists(s->output)) break;
        if (!c->force) rc = fail(c, "%s exists (fusekit run --force replaces it)", s->output);
        // a verb whose --force replaces the output when the new one is complete gets it; one
        // whose --force (or none) would resume into it (train, fuse, heal) starts afresh
        else if (find_row(&full, "force") && strstr(find_row(&full, "force")->help, "replace")) argv_add(&s->argv, strdup("--force"));
        else s->replace = true;
    }
    capture_free(&table);
    capture_free(&full);
    capture_free(&heal_table);
    capture_free(&heal_full);
    return rc;
}

// ---- The whole recipe

static const char run_usage[] =
    "usage: fusekit run RECIPE [-o DIR] [--force] [--dry-run] [--set NAME=VALUE ...]\n\n"
    "Runs the steps of a recipe file (YAML, or JSON for a .json file): a list of verbs, each with\n"
    "its options under the names the command line uses (without --):\n\n"
    "  vars: {steps: 200}\n"
    "  steps:\n"
    "    - data synth: {out: corpus}\n"
    "    - train:\n"
    "        data: corpus/mix/train.txt\n"
    "        steps: ${steps}\n"
    "        out: base\n"
    "    - eval: {model: base, data: corpus/mix/valid.txt}\n\n"
    "${NAME}: vars: (or --set, or the environment; quote a value holding it inside {...}).\n"
    "Steps run in the recipe's folder: relative inputs are read from there (recorded as absolute\n"
    "paths), outputs (out, store-dir) written under -o, and a path an earlier step wrote refers to\n"
    "that output. Every step is checked before the first runs.\n"
    "Each output folder gets recipe.resolved.yaml (every default, input SHA-256s, the version),\n"
    "which `fusekit run` reruns. A mergekit merge config (merge_method: ...) runs as a merge into -o.\n\n"
    "examples:\n"
    "  fusekit run examples/fold_heal.yaml -o runs/fold --dry-run\n"
    "  fusekit run runs/fold/folded/recipe.resolved.yaml -o runs/again";

// Recorded input hashes (a resolved recipe's inputs:) against the files now.
static int check_inputs(run_ctx *c, const cJSON *recorded) {
    const cJSON *r;
    cJSON_ArrayForEach(r, recorded) {
        char hex[65];
        if (!cJSON_IsString(r)) return fail(c, "inputs: the hash of %s must be a string", r->string);
        if (!recipe_sha256(r->string, hex)) return fail(c, "input %s (recorded in the recipe) cannot be read", r->string);
        if (strcmp(hex, r->valuestring) != 0)
            return fail(c, "input %s changed since the recipe was resolved (sha256 %s recorded, %s now)", r->string, r->valuestring, hex);
    }
    return 0;
}

static cJSON *resolved_doc(const run_ctx *c) {
    cJSON *doc = cJSON_CreateObject(), *fk = cJSON_AddObjectToObject(doc, "fusekit");
    cJSON_AddStringToObject(fk, "version", FK_VERSION);
    cJSON_AddStringToObject(fk, "commit", FK_COMMIT);
    char real[PATH_MAX];
    // the recipe first written (a resolved recipe rerun keeps naming it)
    cJSON_AddStringToObject(doc, "recipe", c->origin ? c->origin : realpath(c->recipe, real) ? real : c->recipe);
    cJSON_AddItemReferenceToObject(doc, "inputs", c->inputs);
    cJSON_AddItemReferenceToObject(doc, "steps", c->steps);
    return doc;
}

static void write_resolved(FILE *f, const cJSON *doc) {
    fputs("# fusekit run's resolved recipe: every option with its default, the inputs' SHA-256.\n"
          "# `fusekit run THIS_FILE -o DIR` reruns it (inputs checked, outputs under DIR).\n", f);
    recipe_write_yaml(f, doc, 0);
}

// recipe.resolved.yaml into a step's output folder (written whole, then renamed into place).
static int save_resolved(const run_ctx *c, const cJSON *doc, const char *dir) {
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) return 0;  // a file output: nowhere to put it
    char *buf = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&buf, &n);
    if (!f) return fail(c, "out of memory");
    write_resolved(f, doc);
    fclose(f);
    fk_status s = fk_write_file_in(dir, "recipe.resolved.yaml", buf, n);
    free(buf);
    return s == FK_OK ? 0 : fail(c, "cannot write %s/recipe.resolved.yaml: %s", dir, fk_last_error());
}

// Runs one step as its own fusekit process in dir (the recipe's folder: a relative path that
// named nothing when the recipe was checked is read from there); its exit code.
static int spawn_step(const run_step *s, const char *dir) {
    char *args[514];
    args[0] = "fusekit";
    for (int i = 0; i < s->argv.n; i++) args[i + 1] = s->argv.v[i];
    args[s->argv.n + 1] = NULL;
    pid_t pid;
    posix_spawn_file_actions_t fa;
    if (posix_spawn_file_actions_init(&fa) != 0) return 127;
    int bad = posix_spawn_file_actions_addchdir_np(&fa, dir) || posix_spawn(&pid, "/proc/self/exe", &fa, NULL, args, environ);
    posix_spawn_file_actions_destroy(&fa);
    if (bad) return 127;
    int ws;
    while (waitpid(pid, &ws, 0) < 0)
        if (errno != EINTR) return 127;
    return WIFEXITED(ws) ? WEXITSTATUS(ws) : 128 + (WIFSIGNALED(ws) ? WTERMSIG(ws) : 0);
}

// Every step checked and resolved into steps (n_steps of them). 0 or the exit code.
static int prepare_all(run_ctx *c, const cJSON *recipe, run_step *steps, int *n_steps) {
    if (!cJSON_IsObject(recipe)) return fail(c, "a recipe is a mapping with steps: (and vars:)");
    const cJSON *k;
    static const char *const top[] = {"steps", "vars", "fusekit", "recipe", "inputs"};
    cJSON_ArrayForEach(k, recipe) {
        bool known = false;
        for (int i = 0; i < 5; i++) known = known || strcmp(k->string, top[i]) == 0;
        const char *near = known ? NULL : nearest(top, 5, k->string);
        if (!known) return fail(c, "unknown key '%s'%s%s%s (a recipe has steps, vars)", k->string, near ? " (did you mean '" : "", near ? near : "", near ? "'?)" : "");
    }
    const cJSON *vars = cJSON_GetObjectItemCaseSensitive(recipe, "vars");
    if (vars && !cJSON_IsObject(vars)) return fail(c, "vars must be a mapping of name: value");
    cJSON_ArrayForEach(k, vars) {  // --set NAME=VALUE wins over the recipe's value
        if (!cJSON_GetObjectItemCaseSensitive(c->vars, k->string)) cJSON_AddItemToObject(c->vars, k->string, cJSON_Duplicate(k, true));
    }
    const cJSON *origin = cJSON_GetObjectItemCaseSensitive(recipe, "recipe");
    c->origin = cJSON_IsString(origin) ? origin->valuestring : NULL;
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(recipe, "steps"), *item;
    if (!cJSON_IsArray(list) || !list->child) return fail(c, "steps must be a list of steps, each {verb: {option: value}}");
    if (cJSON_GetArraySize(list) > 64) return fail(c, "more than 64 steps");
    int rc = 0;
    cJSON_ArrayForEach(item, list) {
        c->step = *n_steps + 1;
        c->verb = NULL;
        run_step *s = &steps[(*n_steps)++];
        if ((rc = step_prepare(c, item, s)) != 0) return rc;
        for (int j = 0; j < *n_steps - 1; j++)
            if (s->output && steps[j].output && strcmp(s->output, steps[j].output) == 0) return fail(c, "writes %s, as step %d does", s->output, j + 1);
    }
    c->step = 0;
    const cJSON *recorded = cJSON_GetObjectItemCaseSensitive(recipe, "inputs");
    return recorded ? check_inputs(c, recorded) : 0;
}

static int run_steps(run_ctx *c, run_step *steps, int n, const cJSON *doc) {
    for (int i = 0; i < n; i++) {
        run_step *s = &steps[i];
        c->step = i + 1;
        c->verb = s->verb;
        fprintf(stderr, "fusekit run: step %d/%d:", i + 1, n);
        for (int j = 0; j < s->argv.n; j++) { fputc(' ', stderr); cli_render_word(stderr, s->argv.v[j]); }
        fputc('\n', stderr);
        if (s->replace && fk_remove_tree(s->output) != FK_OK) return fail(c, "cannot remove %s to replace it: %s", s->output, fk_last_error());
        int rc = spawn_step(s, c->dir);
        if (rc != 0) {
            fail(c, "failed (exit %d)%s", rc, i + 1 < n ? "; the steps after it were not run" : "");
            return rc;
        }
        if (s->output && (rc = save_resolved(c, doc, s->output)) != 0) return rc;
    }
    return 0;
}

// RECIPE is the first word that is not an option or the value of -o or --set; the rest go to cli_parse.
static const char *take_recipe(int argc, char **argv, char **rest, int *n_rest) {
    const char *recipe = NULL;
    *n_rest = 0;
    for (int i = 0; i < argc; i++) {
        bool value = i > 0 && (strcmp(argv[i - 1], "-o") == 0 || strcmp(argv[i - 1], "--out") == 0 || strcmp(argv[i - 1], "--set") == 0);
        if (i > 0 && !recipe && !value && argv[i][0] != '-') recipe = argv[i];
        else rest[(*n_rest)++] = argv[i];
    }
    return recipe;
}

int cmd_run(int argc, char **argv) {
    run_ctx c = {0};
    const char *out = NULL;
    cli_list sets = {0};
    cli_opt opts[] = {
        {"-o|--out", OPT_STR, &out, "output root: the steps' outputs (out) are written under it (default: the current folder)", false, NULL},
        {"--force", OPT_FLAG, &c.force, "replace the steps' outputs that exist", false, NULL},
        {"--dry-run", OPT_FLAG, &c.dry_run, "check and resolve every step, print the resolved recipe, run nothing", false, NULL},
        {"--set", OPT_LIST, &sets, "NAME=VALUE: a variable's value (over the recipe's vars:; repeat)", false, NULL},
        CLI_ROWS_END,
    };
    char **rest = calloc((size_t)argc + 1, sizeof *rest);
    int n_rest = 0;
    c.recipe = rest ? take_recipe(argc, argv, rest, &n_rest) : NULL;
    int rc = rest ? cli_parse_verb(n_rest, rest, opts, run_usage) : 1;
    free(rest);
    if (rc >= 0) return rc;
    if (!c.recipe) { fprintf(stderr, "fusekit run: error: RECIPE (a .yaml or .json file) is required\n"); return 2; }
    c.vars = cJSON_CreateObject();
    for (int i = 0; i < sets.n; i++) {
        const char *eq = strchr(sets.v[i], '=');
        if (!eq || eq == sets.v[i]) { fprintf(stderr, "fusekit run: error: --set takes NAME=VALUE (got '%s')\n", sets.v[i]); cJSON_Delete(c.vars); return 2; }
        char name[128];
        snprintf(name, sizeof name, "%.*s", (int)(eq - sets.v[i]), sets.v[i]);
        cJSON_DeleteItemFromObjectCaseSensitive(c.vars, name);
        cJSON_AddItemToObject(c.vars, name, cJSON_CreateRaw(eq + 1));
    }
    char err[512];
    cJSON *recipe = recipe_read(c.recipe, err, sizeof err);
    if (!recipe) { fprintf(stderr, "fusekit run: error: %s\n", err); cJSON_Delete(c.vars); return 2; }
    if (cJSON_GetObjectItemCaseSensitive(recipe, "merge_method")) {  // a mergekit config: one merge into -o
        cJSON *r = recipe_from_mergekit(recipe, err, sizeof err);
        cJSON_Delete(recipe);
        if (!r || !out) {
            if (!r) fprintf(stderr, "fusekit run: error: %s: %s\n", c.recipe, err);
            else fprintf(stderr, "fusekit run: error: a mergekit config needs -o DIR (the merged model's folder)\n");
            cJSON_Delete(r);
            cJSON_Delete(c.vars);
            return 2;
        }
        recipe = r;
    }
    char real[PATH_MAX], cwd[PATH_MAX];
    char *slash = strrchr(c.recipe, '/');
    char *dir = slash ? strndup(c.recipe, (size_t)(slash - c.recipe) + (slash == c.recipe)) : strdup(".");
    c.dir = dir && realpath(dir, real) ? strdup(real) : NULL;
    free(dir);
    c.out = !out ? (getcwd(cwd, sizeof cwd) ? strdup(cwd) : NULL) : out[0] == '/' ? strdup(out) : getcwd(cwd, sizeof cwd) ? fk_path_join(cwd, out) : NULL;
    c.inputs = cJSON_CreateObject();
    c.outputs = cJSON_CreateArray();
    c.steps = cJSON_CreateArray();
    run_step *steps = calloc(64, sizeof *steps);
    int n = 0;
    rc = !c.dir || !c.out || !steps ? fail(&c, "cannot resolve the recipe's folder or -o") : prepare_all(&c, recipe, steps, &n);
    cJSON *doc = resolved_doc(&c);
    if (rc == 0 && c.dry_run) write_resolved(stdout, doc);
    else if (rc == 0) rc = run_steps(&c, steps, n, doc);
    for (int i = 0; steps && i < n; i++) { argv_free(&steps[i].argv); free(steps[i].output); }
    free(steps);
    cJSON_Delete(doc);
    cJSON_Delete(recipe);
    cJSON_Delete(c.inputs);
    cJSON_Delete(c.outputs);
    cJSON_Delete(c.steps);
    cJSON_Delete(c.vars);
    free(c.dir);
    free(c.out);
    return rc;
}
