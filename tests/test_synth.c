// The synthetic corpus (fusekit/synth.h) and the probe evaluator (fusekit/probes.h):
// determinism, the files and their sizes, every domain's invariants read back from the files,
// held-out splits, and probe scores against a direct forward pass per choice.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fusekit/hf.h"
#include "fusekit/model.h"
#include "fusekit/probes.h"
#include "fusekit/synth.h"
#include "fusekit/tokenizer.h"
#include "test_util.h"

static const char *const splits[] = {"train.txt", "valid.txt", "test.txt", "probes.jsonl"};

// The corpus most tests read: small, written once.
static const char *corpus(void) {
    static char dir[300];
    if (!dir[0]) {
        snprintf(dir, sizeof dir, "%s/corpus", tmpdir);
        fk_synth_opts o;
        fk_synth_opts_default(&o);
        o.seed = 7;
        o.bytes_per_domain = 40000;
        o.probes_per_domain = 200;
        CHECK(fk_synth_write(dir, &o, NULL));
    }
    return dir;
}

static char *read_rel(const char *dir, const char *a, const char *b, size_t *n) {
    char path[600];
    snprintf(path, sizeof path, "%s/%s/%s", dir, a, b);
    return slurp(path, n);
}

// Calls fn(line, user) for every line (without its '\n') of a text.
typedef void (*line_fn)(const char *line, void *user);
static int64_t each_line(char *text, line_fn fn, void *user) {
    int64_t n = 0;
    for (char *s = text; *s;) {
        char *nl = strchr(s, '\n');
        assert_non_null(nl);  // every line ends with '\n'
        *nl = '\0';
        fn(s, user);
        *nl = '\n';
        s = nl + 1;
        n++;
    }
    return n;
}

// A probe line parsed.
typedef struct {
    cJSON *j;
    const char *domain, *context, *choice[4];
    int n, answer;
} probe;

static void parse_probe(const char *line, probe *p) {
    p->j = cJSON_Parse(line);
    assert_non_null(p->j);
    cJSON *dom = cJSON_GetObjectItem(p->j, "domain");
    p->domain = dom ? dom->valuestring : "";
    p->context = cJSON_GetObjectItem(p->j, "context")->valuestring;
    cJSON *ch = cJSON_GetObjectItem(p->j, "choices");
    p->n = cJSON_GetArraySize(ch);
    assert_true(p->n >= 2 && p->n <= 4);
    for (int k = 0; k < p->n; k++) p->choice[k] = cJSON_GetArrayItem(ch, k)->valuestring;
    p->answer = cJSON_GetObjectItem(p->j, "answer")->valueint;
    assert_true(p->answer >= 0 && p->answer < p->n);
    for (int a = 0; a < p->n; a++)
        for (int b = a + 1; b < p->n; b++) assert_string_not_equal(p->choice[a], p->choice[b]);
}

// ------------------------------------------------------------------ files and determinism

static void test_determinism(void **s) {
    (void)s;
    fk_synth_opts o;
    fk_synth_opts_default(&o);
    o.seed = 11;
    o.bytes_per_domain = 25000;
    o.probes_per_domain = 200;
    fk_synth_stats st1, st2, st3;
    CHECK(fk_synth_write(tpath("det1"), &o, &st1));
    CHECK(fk_synth_write(tpath("det2"), &o, &st2));
    o.seed = 12;
    CHECK(fk_synth_write(tpath("det3"), &o, &st3));
    assert_int_equal(st1.files, 4 * 4 + 3 + 1);
    assert_int_equal(st1.bytes, st2.bytes);
    assert_int_equal(st1.probes, 4 * 200);
    const char *subs[] = {"arith", "facts", "grammar", "records", "mix"};
    for (int d = 0; d < 5; d++)
        for (int k = 0; k < (d < 4 ? 4 : 3); k++) {
            size_t n1, n2, n3;
            char *a = read_rel(tpath("det1"), subs[d], splits[k], &n1);
            char *b = read_rel(tpath("det2"), subs[d], splits[k], &n2);
            char *c = read_rel(tpath("det3"), subs[d], splits[k], &n3);
            assert_int_equal(n1, n2);
            assert_memory_equal(a, b, n1);
            assert_true(n1 != n3 || memcmp(a, c, n1) != 0);
            free(a); free(b); free(c);
        }
    size_t n1, n2;
    char *a = read_rel(tpath("det1"), ".", "manifest.json", &n1);
    char *b = read_rel(tpath("det2"), ".", "manifest.json", &n2);
    assert_int_equal(n1, n2);
    assert_memory_equal(a, b, n1);
    free(a); free(b);
}

static void check_ascii_line(const char *line, void *user) {
    (void)user;
    assert_true(*line);
    for (const char *p = line; *p; p++) assert_true(*p >= 32 && *p < 127);
}

static void test_files(void **s) {
    (void)s;
    const char *dir = corpus();
    size_t train_sum = 0;
    for (int d = 0; d < FK_SYNTH_N_DOMAINS; d++) {
        size_t n[4];
        for (int k = 0; k < 4; k++) {
            char *t = read_rel(dir, fk_synth_domains[d], splits[k], &n[k]);
            assert_true(n[k] > 0);
            assert_true(strlen(t) == n[k]);
            int64_t lines = each_line(t, check_ascii_line, NULL);
            if (k == 3) assert_int_equal(lines, 200);
            free(t);
        }
        assert_true(n[0] >= 40000 && n[0] < 40200);
        assert_true(n[1] >= 4000 && n[1] < 4200);  // held-out: a tenth
        assert_true(n[2] >= 4000 && n[2] < 4200);
        train_sum += n[0];
    }
    // The mix holds every domain's train split once, in blocks of whole lines.
    size_t nm;
    char *mix = read_rel(dir, "mix", "train.txt", &nm);
    assert_int_equal(nm, train_sum);
    assert_int_equal(mix[nm - 1], '\n');
    int64_t arith = 0, records = 0, lines = 0;
    for (char *p = mix; *p; p = strchr(p, '\n') + 1) {
        lines++;
        if (strncmp(p, "id=", 3) == 0) records++;
        else if (*p >= '0' && *p <= '9') arith++;
    }
    assert_true(arith > 0 && records > 0);
    // interleaved: the first quarter of the file already holds every domain
    char *q = strndup(mix, nm / 4);
    assert_non_null(strstr(q, "=") && strstr(q, "id="));
    assert_true(strstr(q, "\nthe ") != NULL || strncmp(q, "the ", 4) == 0);
    free(q);
    free(mix);
    // The manifest lists every file with its size.
    size_t n;
    char *m = read_rel(dir, ".", "manifest.json", &n);
    cJSON *j = cJSON_Parse(m);
    assert_non_null(j);
    assert_string_equal(cJSON_GetObjectItem(j, "seed")->valuestring, "7");
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(j, "domains")), 4);
    cJSON *files = cJSON_GetObjectItem(j, "files");
    assert_int_equal(cJSON_GetArraySize(files), 19);
    cJSON *f;
    cJSON_ArrayForEach(f, files) {
        char path[600];
        snprintf(path, sizeof path, "%s/%s", dir, cJSON_GetObjectItem(f, "path")->valuestring);
        size_t fn;
        char *t = slurp(path, &fn);
        assert_int_equal((double)fn, cJSON_GetObjectItem(f, "bytes")->valuedouble);
        free(t);
    }
    cJSON_Delete(j);
    free(m);
}

// ------------------------------------------------------------------ arith

typedef struct {
    char **q;  // problems "a+b=" seen in train
    int n, cap;
} qset;

static bool arith_eval(const char *q, int *res) {
    int a, b;
    char op;
    if (sscanf(q, "%d%c%d=", &a, &op, &b) != 3) return false;
    *res = op == '+' ? a + b : op == '-' ? a - b : op == '*' ? a * b : -1;
    if (op == '-' && a < b) return false;
    if (op == '*' && (a > 12 || b > 12)) return false;
    return (op == '+' || op == '-' || op == '*') && a >= 0 && a <= 99 && b >= 0 && b <= 99;
}

static void arith_train_line(const char *line, void *user) {
    int res, got;
    assert_true(arith_eval(line, &res));
    const char *eq = strchr(line, '=');
    assert_int_equal(sscanf(eq + 1, "%d", &got), 1);
    assert_int_equal(got, res);
    qset *s = user;
    if (s) {
        if (s->n == s->cap) { s->cap = s->cap ? 2 * s->cap : 1024; s->q = realloc(s->q, (size_t)s->cap * sizeof(char *)); }
        s->q[s->n++] = strndup(line, (size_t)(eq - line + 1));
    }
}

static bool qset_has(const qset *s, const char *q) {
    for (int i = 0; i < s->n; i++) if (strcmp(s->q[i], q) == 0) return true;
    return false;
}

static void arith_heldout_line(const char *line, void *user) {
    arith_train_line(line, NULL);
    char *q = strndup(line, (size_t)(strchr(line, '=') - line + 1));
    assert_false(qset_has(user, q));
    free(q);
}

static void arith_probe(const char *line, void *user) {
    probe p;
    parse_probe(line, &p);
    assert_string_equal(p.domain, "arith");
    assert_int_equal(p.n, 4);
    int res;
    assert_true(arith_eval(p.context, &res));
    assert_false(qset_has(user, p.context));  // drawn from held-out problems
    char want[32];
    snprintf(want, sizeof want, "%d\n", res);
    for (int k = 0; k < p.n; k++) {
        int v;
        assert_int_equal(sscanf(p.choice[k], "%d", &v), 1);
        assert_true(v >= 0);
        if (k == p.answer) assert_string_equal(p.choice[k], want);
        else assert_int_not_equal(v, res);
    }
    cJSON_Delete(p.j);
}

static void test_arith(void **s) {
    (void)s;
    size_t n;
    qset train = {0};
    char *t = read_rel(corpus(), "arith", "train.txt", &n);
    each_line(t, arith_train_line, &train);
    free(t);
    assert_true(train.n > 3000);
    const char *held[] = {"valid.txt", "test.txt"};
    for (int k = 0; k < 2; k++) {
        t = read_rel(corpus(), "arith", held[k], &n);
        each_line(t, arith_heldout_line, &train);
        free(t);
    }
    t = read_rel(corpus(), "arith", "probes.jsonl", &n);
    each_line(t, arith_probe, &train);
    free(t);
    for (int i = 0; i < train.n; i++) free(train.q[i]);
    free(train.q);
}

// ------------------------------------------------------------------ records

static void record_line(const char *line, void *user) {
    int id, age, born;
    char first[64], last[64], city[64];
    assert_int_equal(sscanf(line, "id=%d; name=%63[A-Za-z] %63[A-Za-z]; age=%d; born=%d; city=%63[A-Za-z];", &id, first, last,
                            &age, &born, city), 6);
    assert_int_equal(born, 2024 - age);
    assert_true(age >= 18 && age < 90 && id >= 1000 && id <= 9999);
    (void)user;
}

static void record_probe(const char *line, void *user) {
    (void)user;
    probe p;
    parse_probe(line, &p);
    assert_string_equal(p.domain, "records");
    const char *a = strstr(p.context, "age=");
    assert_non_null(a);
    int age = atoi(a + 4);
    assert_non_null(strstr(p.context, "; born="));
    assert_string_equal(p.context + strlen(p.context) - 5, "born=");
    char want[16];
    snprintf(want, sizeof want, "%d;", 2024 - age);
    for (int k = 0; k < p.n; k++) {
        assert_int_equal(strlen(p.choice[k]), 5);
        if (k == p.answer) assert_string_equal(p.choice[k], want);
        else assert_string_not_equal(p.choice[k], want);
    }
    cJSON_Delete(p.j);
}

static void test_records(void **s) {
    (void)s;
    for (int k = 0; k < 3; k++) {
        size_t n;
        char *t = read_rel(corpus(), "records", splits[k], &n);
        assert_true(each_line(t, record_line, NULL) > 30);
        free(t);
    }
    size_t n;
    char *t = read_rel(corpus(), "records", "probes.jsonl", &n);
    each_line(t, record_probe, NULL);
    free(t);
}

// ------------------------------------------------------------------ grammar

// The generator's structure: "the [adj] noun (prep the [adj] noun)* verb [tail]." where
// plural nouns end in 's' and singular ones do not, singular verbs end in 's' and plural
// ones do not.
static const char *const preps[] = {"near", "behind", "beside", "under", "with", "of", "to", "from"};

static bool is_prep(const char *w) {
    for (size_t i = 0; i < sizeof preps / sizeof preps[0]; i++) if (strcmp(w, preps[i]) == 0) return true;
    return false;
}

static bool ends_s(const char *w) { return w[strlen(w) - 1] == 's'; }

// The head noun's number: the word before the first preposition (or the last word).
static bool subject_plural(const char *subject) {
    char buf[256], *words[32], *save;
    int n = 0;
    snprintf(buf, sizeof buf, "%s", subject);
    for (char *w = strtok_r(buf, " ", &save); w && n < 32; w = strtok_r(NULL, " ", &save)) words[n++] = w;
    assert_true(n >= 2);
    assert_string_equal(words[0], "the");
    int i = 1;
    while (i + 1 < n && !is_prep(words[i + 1])) i++;
    return ends_s(words[i]);
}

static void grammar_probe(const char *line, void *user) {
    int *mismatch = user;
    probe p;
    parse_probe(line, &p);
    assert_string_equal(p.domain, "grammar");
    assert_int_equal(p.n, 2);
    bool plural = subject_plural(p.context);
    for (int k = 0; k < 2; k++) {
        char verb[32];
        assert_int_equal(sscanf(p.choice[k], " %31[a-z]", verb), 1);
        assert_int_equal(p.choice[k][0], ' ');
        assert_int_equal(p.choice[k][strlen(p.choice[k]) - 1], '.');
        bool verb_plural = !ends_s(verb);
        assert_true((k == p.answer) == (verb_plural == plural));
    }
    // the rest of the sentence is the same in both choices
    assert_string_equal(strchr(p.choice[0] + 1, ' ') ? strchr(p.choice[0] + 1, ' ') : ".",
                        strchr(p.choice[1] + 1, ' ') ? strchr(p.choice[1] + 1, ' ') : ".");
    // an attractor of the other number follows the head noun in some items
    const char *last = strrchr(p.context, ' ') + 1;
    assert_true(strstr(p.context, " the ") != NULL);  // every probe has a prepositional phrase
    if (ends_s(last) != plural) (*mismatch)++;
    cJSON_Delete(p.j);
}

static const char *const adjs[] = {"old", "small", "red", "quiet", "tall", "young", "dusty", "bright"};

static bool is_adj(const char *w) {
    for (size_t i = 0; i < sizeof adjs / sizeof adjs[0]; i++) if (strcmp(w, adjs[i]) == 0) return true;
    return false;
}

// A whole sentence: the verb after the subject noun phrase agrees with the head noun.
static void grammar_line(const char *line, void *user) {
    int *attracted = user;
    size_t n = strlen(line);
    assert_int_equal(line[n - 1], '.');
    char buf[256], *w[40], *save;
    int k = 0;
    snprintf(buf, sizeof buf, "%.*s", (int)n - 1, line);
    for (char *t = strtok_r(buf, " ", &save); t && k < 40; t = strtok_r(NULL, " ", &save)) w[k++] = t;
    assert_true(k >= 3);
    assert_string_equal(w[0], "the");
    int i = 1;
    if (is_adj(w[i])) i++;
    bool plural = ends_s(w[i++]), other = false;
    while (i < k && is_prep(w[i])) {
        assert_true(i + 2 < k);
        assert_string_equal(w[i + 1], "the");
        i += 2;
        if (is_adj(w[i])) i++;
        other |= ends_s(w[i++]) != plural;
    }
    assert_true(i < k);
    if ((!ends_s(w[i])) != plural) fail_msg("\"%s\": the verb %s does not agree with the subject", line, w[i]);
    *attracted += other;
}

static void test_grammar(void **s) {
    (void)s;
    size_t n;
    char *t = read_rel(corpus(), "grammar", "probes.jsonl", &n);
    int mismatch = 0;
    each_line(t, grammar_probe, &mismatch);
    free(t);
    assert_true(mismatch > 20);  // attractors of the other number are common
    for (int k = 0; k < 3; k++) {
        int attracted = 0;
        t = read_rel(corpus(), "grammar", splits[k], &n);
        int64_t lines = each_line(t, grammar_line, &attracted);
        free(t);
        assert_true(attracted > lines / 10);
    }
}

// ------------------------------------------------------------------ facts

// Template words that start with a capital and are not names.
static bool template_word(const char *w) {
    return strcmp(w, "The") == 0 || strcmp(w, "By") == 0 || strcmp(w, "At") == 0 || strcmp(w, "In") == 0;
}

// Splits a line into words without punctuation.
static int words_of(const char *line, char words[][32], int max) {
    int n = 0;
    for (const char *p = line; *p && n < max;) {
        while (*p && !(*p >= 'A' && *p <= 'Z') && !(*p >= 'a' && *p <= 'z')) p++;
        int k = 0;
        while (((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z')) && k < 31) words[n][k++] = *p++;
        words[n][k] = '\0';
        if (k) n++;
    }
    return n;
}

typedef struct {
    char (*pair)[64];  // "name attribute" for every pair of words in a train line with a name
    int n, cap;
    char (*lines)[160];
    int n_lines;
} facts_seen;

static void facts_train_line(const char *line, void *user) {
    facts_seen *f = user;
    char w[24][32];
    int n = words_of(line, w, 24);
    if (f->n_lines < 20000) snprintf(f->lines[f->n_lines++], 160, "%s", line);
    for (int a = 0; a < n; a++) {
        if (!(w[a][0] >= 'A' && w[a][0] <= 'Z') || template_word(w[a])) continue;
        for (int b = 0; b < n; b++) {
            if (b == a) continue;
            if (f->n == f->cap) { f->cap = f->cap ? 2 * f->cap : 4096; f->pair = realloc(f->pair, (size_t)f->cap * 64); }
            snprintf(f->pair[f->n++], 64, "%.31s %.31s", w[a], w[b]);
        }
    }
}

static int cmp_pair(const void *a, const void *b) { return strcmp(a, b); }

static bool facts_has(const facts_seen *f, const char *name, const char *attr) {
    char key[64];
    snprintf(key, sizeof key, "%s %s", name, attr);
    return bsearch(key, f->pair, (size_t)f->n, 64, cmp_pair) != NULL;
}

// The person of a single-fact line: its first capitalised word that is no template word and
// not the last word (the value).
static void fact_of(const char *line, char *name, char *attr) {
    char w[24][32];
    int n = words_of(line, w, 24);
    assert_true(n >= 3);
    name[0] = '\0';
    for (int a = 0; a < n - 1 && !name[0]; a++)
        if (w[a][0] >= 'A' && w[a][0] <= 'Z' && !template_word(w[a])) strcpy(name, w[a]);
    assert_true(name[0]);
    strcpy(attr, w[n - 1]);
}

static void facts_heldout_line(const char *line, void *user) {
    facts_seen *f = user;
    char name[32], attr[32];
    fact_of(line, name, attr);
    if (!facts_has(f, name, attr)) fail_msg("held-out fact \"%s\" (%s, %s) is not stated in train", line, name, attr);
    // ...but never in the same words
    for (int i = 0; i < f->n_lines; i++) assert_string_not_equal(f->lines[i], line);
}

static void facts_probe(const char *line, void *user) {
    facts_seen *f = user;
    probe p;
    parse_probe(line, &p);
    assert_string_equal(p.domain, "facts");
    assert_int_equal(p.n, 4);
    char full[256], name[32], attr[32];
    snprintf(full, sizeof full, "%s%s", p.context, p.choice[p.answer]);
    fact_of(full, name, attr);
    assert_true(facts_has(f, name, attr));
    for (int k = 0; k < p.n; k++) {
        assert_int_equal(p.choice[k][0], ' ');
        if (k == p.answer) continue;
        snprintf(full, sizeof full, "%s%s", p.context, p.choice[k]);
        char n2[32], a2[32];
        fact_of(full, n2, a2);
        assert_string_equal(n2, name);
        assert_false(facts_has(f, n2, a2));  // a wrong value is never stated for this person
    }
    cJSON_Delete(p.j);
}

static void test_facts(void **s) {
    (void)s;
    size_t n;
    facts_seen f = {0};
    f.lines = malloc(20000 * sizeof *f.lines);
    char *t = read_rel(corpus(), "facts", "train.txt", &n);
    each_line(t, facts_train_line, &f);
    free(t);
    qsort(f.pair, (size_t)f.n, 64, cmp_pair);
    const char *held[] = {"valid.txt", "test.txt"};
    for (int k = 0; k < 2; k++) {
        t = read_rel(corpus(), "facts", held[k], &n);
        each_line(t, facts_heldout_line, &f);
        free(t);
    }
    t = read_rel(corpus(), "facts", "probes.jsonl", &n);
    each_line(t, facts_probe, &f);
    free(t);
    free(f.pair);
    free(f.lines);
}

// ------------------------------------------------------------------ probe evaluation

static void tiny_model(fk_model *m, int64_t vocab, int64_t max_seq, uint64_t seed) {
    fk_config c;
    fk_config_llama(&c, vocab, 16, 2, 2, 1, 32, max_seq);
    CHECK(fk_model_init(m, &c));
    fk_model_init_weights(m, seed);
    // larger weights than GPT-2's init, so the choices' scores differ clearly
    for (int64_t i = 0; i < m->n_floats; i++) m->w[i] *= 4;
}

// The direct score of a choice: one forward over the exact tokens of context+choice (the
// last max_seq inputs), the log-softmax of each token from the first that ends after the
// context.
static double direct_score(fk_model *m, const fk_tokenizer *tok, const char *ctx, const char *choice) {
    char full[4096];
    snprintf(full, sizeof full, "%s%s", ctx, choice);
    fk_tok_out o = {0};
    CHECK(fk_tok_encode(tok, full, strlen(full), 0, &o));
    int64_t j = 0;
    while (o.end[j] <= (int64_t)strlen(ctx)) j++;
    int64_t s = o.n - 1 > m->cfg.max_seq ? o.n - 1 - m->cfg.max_seq : 0, T = o.n - 1 - s;
    float loss;
    CHECK(fk_model_forward(m, o.ids + s, NULL, 1, (int)T, false, &loss));
    const float *z = fk_model_logits(m);
    int64_t V = m->cfg.vocab_size;
    double sum = 0;
    for (int64_t t = j; t < o.n; t++) {
        const float *row = z + (t - 1 - s) * V;
        double se = 0;
        for (int64_t v = 0; v < V; v++) se += exp((double)row[v]);
        sum += row[o.ids[t]] - log(se);
    }
    fk_tok_out_free(&o);
    return sum;
}

// Checks fk_probes_eval on a file against direct scores: every score, prediction and count.
static void check_against_direct(fk_model *m, const fk_tokenizer *tok, const char *path, int64_t max_items) {
    fk_probe_result r;
    CHECK(fk_probes_eval(m, tok, path, max_items, &r));
    size_t n;
    char *text = slurp(path, &n);
    int64_t i = 0, correct = 0;
    for (char *line = strtok(text, "\n"); line && (max_items <= 0 || i < max_items); line = strtok(NULL, "\n"), i++) {
        probe p;
        parse_probe(line, &p);
        assert_true(i < r.items);
        assert_int_equal(r.score_off[i + 1] - r.score_off[i], p.n);
        int best = 0;
        double sc[4] = {0};
        for (int k = 0; k < p.n; k++) {
            sc[k] = direct_score(m, tok, p.context, p.choice[k]);
            double got = r.score[r.score_off[i] + k];
            if (fabs(got - sc[k]) > 1e-4 * (1 + fabs(sc[k]))) fail_msg("item %lld choice %d: %.6f, direct %.6f", (long long)i, k, got, sc[k]);
            if (sc[k] > sc[best]) best = k;
        }
        // a near tie may break either way; otherwise the argmax must agree
        double second = -INFINITY;
        for (int k = 0; k < p.n; k++) if (k != best && sc[k] > second) second = sc[k];
        if (sc[best] - second > 1e-3) assert_int_equal(r.pred[i], best);
        assert_int_equal(r.answer[i], p.answer);
        correct += r.pred[i] == p.answer;
        cJSON_Delete(p.j);
    }
    assert_int_equal(i, r.items);
    assert_int_equal(correct, r.correct);
    assert_true(fabs(r.accuracy - (double)correct / (double)i) < 1e-12);
    int64_t sum = 0, sum_ok = 0;
    for (int d = 0; d < r.n_domains; d++) { sum += r.domain[d].items; sum_ok += r.domain[d].correct; }
    assert_int_equal(sum, r.items);
    assert_int_equal(sum_ok, r.correct);
    fk_probe_result_free(&r);
    free(text);
}

static void test_eval_direct(void **s) {
    (void)s;
    fk_model m;
    tiny_model(&m, 256, 48, 3);
    fk_tokenizer *bytes;
    CHECK(fk_tok_new_bytes(&bytes));
    // Synthetic probes of every domain; records' contexts are longer than the context (48),
    // so they are cut from the left.
    for (int d = 0; d < FK_SYNTH_N_DOMAINS; d++) {
        char path[600];
        snprintf(path, sizeof path, "%s/%s/probes.jsonl", corpus(), fk_synth_domains[d]);
        check_against_direct(&m, bytes, path, 25);
    }
    // tok NULL is the byte tokenizer; domains are counted in order of appearance
    const char *mixed = "{\"domain\":\"x\",\"context\":\"ab\",\"choices\":[\"c\",\"d\",\"ee\"],\"answer\":2}\n"
                        "\n"
                        "{\"context\":\"hello wor\",\"choices\":[\"ld\",\"m\"],\"answer\":0}\n"
                        "{\"domain\":\"y\",\"context\":\"12+3=\",\"choices\":[\"15\\n\",\"16\\n\"],\"answer\":1}\n"
                        "{\"domain\":\"x\",\"context\":\"q\",\"choices\":[\"r\",\"s\"],\"answer\":0}\n";
    spit(tpath("mixed.jsonl"), mixed, strlen(mixed));
    check_against_direct(&m, bytes, tpath("mixed.jsonl"), 0);
    fk_probe_result r;
    CHECK(fk_probes_eval(&m, NULL, tpath("mixed.jsonl"), 0, &r));
    assert_int_equal(r.items, 4);
    assert_int_equal(r.n_domains, 3);
    assert_string_equal(r.domain[0].name, "x");
    assert_int_equal(r.domain[0].items, 2);
    assert_string_equal(r.domain[1].name, "");
    assert_string_equal(r.domain[2].name, "y");
    fk_probe_result_free(&r);
    CHECK(fk_probes_eval(&m, NULL, tpath("mixed.jsonl"), 2, &r));
    assert_int_equal(r.items, 2);
    fk_probe_result_free(&r);
    fk_tok_free(bytes);
    fk_model_free(&m);
}

// A BPE tokenizer that merges across the boundary: "xab" + "c" encodes as "x" "abc", so the
// scored token starts inside the context; its score is log p("abc" | "x").
static void test_eval_boundary(void **s) {
    (void)s;
    fk_tok_train_opts o = {0};
    o.vocab_size = 262;
    o.min_frequency = 1;
    const char *texts[] = {"abc abc abc abc abc abc abc abc abd abd"};
    fk_tokenizer *tok;
    CHECK(fk_tok_train(&o, texts, NULL, 1, &tok, NULL));
    fk_tok_out e = {0};
    CHECK(fk_tok_encode(tok, "xabc", 4, 0, &e));
    int64_t straddle = -1;
    for (int64_t t = 0; t < e.n; t++) if (e.begin[t] < 3 && e.end[t] > 3) straddle = t;
    fk_tok_out_free(&e);
    assert_true(straddle >= 1);  // the test needs a merge across the boundary
    fk_model m;
    tiny_model(&m, fk_tok_vocab_size(tok), 32, 5);
    const char *items = "{\"context\":\"xab\",\"choices\":[\"c\",\"d\"],\"answer\":0}\n"
                        "{\"context\":\"abc ab\",\"choices\":[\"c abc\",\"d abd\"],\"answer\":1}\n";
    spit(tpath("boundary.jsonl"), items, strlen(items));
    check_against_direct(&m, tok, tpath("boundary.jsonl"), 0);
    // nothing before the choice: refused
    const char *first = "{\"context\":\"ab\",\"choices\":[\"c\",\"d\"],\"answer\":0}\n";
    spit(tpath("first.jsonl"), first, strlen(first));
    fk_probe_result r;
    assert_int_equal(fk_probes_eval(&m, tok, tpath("first.jsonl"), 0, &r), FK_ERR_FORMAT);
    assert_non_null(strstr(fk_last_error(), "first.jsonl:1:"));
    fk_model_free(&m);
    fk_tok_free(tok);
}

static void expect_bad(fk_model *m, const char *name, const char *text, fk_status want, const char *frag1, const char *frag2) {
    spit(tpath(name), text, strlen(text));
    fk_probe_result r;
    fk_status st = fk_probes_eval(m, NULL, tpath(name), 0, &r);
    if (st != want) fail_msg("%s: expected %s, got %s: %s", name, fk_status_name(want), fk_status_name(st), fk_last_error());
    if (!strstr(fk_last_error(), frag1) || (frag2 && !strstr(fk_last_error(), frag2)))
        fail_msg("%s: message \"%s\" lacks \"%s\" / \"%s\"", name, fk_last_error(), frag1, frag2 ? frag2 : "");
}

static void test_bad_probes(void **s) {
    (void)s;
    fk_model m;
    tiny_model(&m, 256, 16, 1);
    const char *ok = "{\"context\":\"ab\",\"choices\":[\"c\",\"d\"],\"answer\":0}\n";
    char buf[512];
    snprintf(buf, sizeof buf, "%s{\"context\":\"ab\",\"choices\":[\"c\",\"d\"],\"answer\":0\n", ok);
    expect_bad(&m, "malformed.jsonl", buf, FK_ERR_FORMAT, "malformed.jsonl:2:", "malformed JSON");
    snprintf(buf, sizeof buf, "%s%s{\"context\":\"ab\",\"choices\":[\"c\",\"d\"],\"answer\":2}\n", ok, ok);
    expect_bad(&m, "range.jsonl", buf, FK_ERR_FORMAT, "range.jsonl:3:", "out of range");
    snprintf(buf, sizeof buf, "{\"context\":\"ab\",\"choices\":[\"c\",\"d\"],\"answer\":-1}\n");
    expect_bad(&m, "neg.jsonl", buf, FK_ERR_FORMAT, "neg.jsonl:1:", "out of range");
    snprintf(buf, sizeof buf, "{\"context\":\"ab\",\"choices\":[\"c\"],\"answer\":0}\n");
    expect_bad(&m, "one.jsonl", buf, FK_ERR_FORMAT, "one.jsonl:1:", "choices");
    snprintf(buf, sizeof buf, "{\"choices\":[\"c\",\"d\"],\"answer\":0}\n");
    expect_bad(&m, "noctx.jsonl", buf, FK_ERR_FORMAT, "noctx.jsonl:1:", "context");
    snprintf(buf, sizeof buf, "{\"context\":\"ab\",\"choices\":[\"c\",\"d\"],\"answer\":\"0\"}\n");
    expect_bad(&m, "strans.jsonl", buf, FK_ERR_FORMAT, "strans.jsonl:1:", "answer");
    snprintf(buf, sizeof buf, "[1,2]\n");
    expect_bad(&m, "array.jsonl", buf, FK_ERR_FORMAT, "array.jsonl:1:", "object");
    expect_bad(&m, "empty.jsonl", "\n\n", FK_ERR_FORMAT, "empty.jsonl", "no probe items");
    // a choice longer than the model's context (16)
    snprintf(buf, sizeof buf, "{\"context\":\"ab\",\"choices\":[\"cccccccccccccccccccccc\",\"d\"],\"answer\":0}\n");
    expect_bad(&m, "long.jsonl", buf, FK_ERR_ARG, "long.jsonl:1:", "context");
    fk_probe_result r;
    assert_int_equal(fk_probes_eval(&m, NULL, tpath("missing.jsonl"), 0, &r), FK_ERR_IO);
    assert_non_null(strstr(fk_last_error(), "missing.jsonl"));
    fk_model_free(&m);
}

// ------------------------------------------------------------------ the CLI

static void test_cli(void **s) {
    (void)s;
    char *out;
    int rc = run(&out, "%s data synth -o %s/cli --seed 7 --bytes 40000 --probes 200", FK_CLI, tmpdir);
    if (rc != 0) fail_msg("%s", out);
    assert_non_null(strstr(out, "\"probes\":800"));
    assert_non_null(strstr(out, "\"files\":20"));
    free(out);
    // the same files as the library wrote with the same options
    size_t n1, n2;
    char *a = read_rel(corpus(), "facts", "train.txt", &n1);
    char *b = read_rel(tpath("cli"), "facts", "train.txt", &n2);
    assert_int_equal(n1, n2);
    assert_memory_equal(a, b, n1);
    free(a); free(b);
    assert_int_equal(run(&out, "%s data synth --seed 3", FK_CLI), 2);
    free(out);
    assert_int_equal(run(&out, "%s data nothing", FK_CLI), 2);
    free(out);

    // eval --probes: the same accuracy as the library, one line with per-domain entries
    fk_model m;
    tiny_model(&m, 256, 48, 9);
    CHECK(fk_hf_save(&m, tpath("model"), FK_DT_F32));
    fk_probe_result r1, r2;
    char p1[600], p2[600];
    snprintf(p1, sizeof p1, "%s/arith/probes.jsonl", corpus());
    snprintf(p2, sizeof p2, "%s/grammar/probes.jsonl", corpus());
    CHECK(fk_probes_eval(&m, NULL, p1, 0, &r1));
    CHECK(fk_probes_eval(&m, NULL, p2, 0, &r2));
    rc = run(&out, "%s eval --model %s --data %s/arith/test.txt --probes %s %s", FK_CLI, tpath("model"), corpus(), p1, p2);
    if (rc != 0) fail_msg("%s", out);
    char want[200];
    snprintf(want, sizeof want, "\"probes\":400,\"accuracy\":%.4f", (double)(r1.correct + r2.correct) / 400.0);
    if (!strstr(out, want)) fail_msg("%s lacks %s", out, want);
    snprintf(want, sizeof want, "\"arith\":{\"items\":200,\"accuracy\":%.4f}", r1.accuracy);
    if (!strstr(out, want)) fail_msg("%s lacks %s", out, want);
    assert_non_null(strstr(out, "\"probe_files\":["));
    assert_non_null(strstr(out, "\"bpb\":"));
    free(out);
    rc = run(&out, "%s eval --model %s --data %s/arith/test.txt --probes %s/nothing.jsonl", FK_CLI, tpath("model"), corpus(), tmpdir);
    assert_int_equal(rc, 1);
    assert_non_null(strstr(out, "nothing.jsonl"));
    free(out);
    fk_probe_result_free(&r1);
    fk_probe_result_free(&r2);
    fk_model_free(&m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_determinism),
        cmocka_unit_test(test_files),
        cmocka_unit_test(test_arith),
        cmocka_unit_test(test_records),
        cmocka_unit_test(test_grammar),
        cmocka_unit_test(test_facts),
        cmocka_unit_test(test_eval_direct),
        cmocka_unit_test(test_eval_boundary),
        cmocka_unit_test(test_bad_probes),
        cmocka_unit_test(test_cli),
    };
    return cmocka_run_group_tests(tests, tmpdir_setup, tmpdir_teardown);
}
