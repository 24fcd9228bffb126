// The synthetic multi-domain corpus (see fusekit/synth.h): generators for arith, facts, grammar
// and records, their held-out splits and probes, the mixed corpus and the manifest.
#include "fusekit/synth.h"

#include <cjson/cJSON.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

const char *const fk_synth_domains[FK_SYNTH_N_DOMAINS] = {"arith", "facts", "grammar", "records"};

enum { D_ARITH, D_FACTS, D_GRAMMAR, D_RECORDS };
enum { SPLIT_TRAIN, SPLIT_VALID, SPLIT_TEST, N_SPLITS };
static const char *const split_names[N_SPLITS] = {"train", "valid", "test"};

#define MAX_CHOICES 4

// ------------------------------------------------------------------ growable text

typedef struct {
    char *p;
    size_t n, cap;
    bool oom;
} sbuf;

static void sb_put(sbuf *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (b->n + n + 1 > cap) cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) { b->oom = true; return; }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = '\0';
}

static void sb_str(sbuf *b, const char *s) { sb_put(b, s, strlen(s)); }

// Integers only: %d and %s never depend on the locale.
__attribute__((format(printf, 2, 3))) static void sb_printf(sbuf *b, const char *fmt, ...) {
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0 || n >= (int)sizeof tmp) { b->oom = true; return; }
    sb_put(b, tmp, (size_t)n);
}

static void sb_free(sbuf *b) { free(b->p); memset(b, 0, sizeof *b); }

// ------------------------------------------------------------------ randomness and splits

// An independent stream per (purpose, domain, split): changing one domain's size leaves the
// others' files unchanged.
static void rng_for(fk_rng *r, uint64_t seed, uint64_t purpose, uint64_t domain, uint64_t split) {
    fk_rng_seed(r, fk_hash64(seed ^ fk_hash64(purpose * 1000003u + domain * 101u + split + 1)));
}

static int pick(fk_rng *r, int n) { return (int)fk_rng_below(r, (uint64_t)n); }

// The split an item belongs to, by a seeded hash of its text: 1/20 valid, 1/20 test.
static int split_of(uint64_t seed, const char *s, size_t n) {
    uint64_t h = fk_hash64(fk_fnv1a64(s, n, 0) ^ fk_hash64(seed ^ 0x73706c6974ull));
    uint64_t b = h % 20;
    return b == 0 ? SPLIT_VALID : b == 1 ? SPLIT_TEST : SPLIT_TRAIN;
}

static void shuffle_ints(int *a, int n, fk_rng *r) {
    for (int i = n - 1; i > 0; i--) {
        int j = pick(r, i + 1), t = a[i];
        a[i] = a[j];
        a[j] = t;
    }
}

// ------------------------------------------------------------------ word lists

#define COUNT(a) ((int)(sizeof(a) / sizeof((a)[0])))

static const char *const cities[] = {"Quessa", "Brindmoor", "Talvik", "Osterra", "Merrowgate", "Vashti",
                                     "Colmbrae", "Dunhelm", "Pellinor", "Zarrow", "Ithen", "Karsk"};
static const char *const professions[] = {"tanner", "baker", "weaver", "potter", "smith", "miller",
                                          "cooper", "fletcher", "mason", "sailor", "carter", "barber"};
static const char *const pets[] = {"ferret", "parrot", "tortoise", "goat", "hound",
                                   "rabbit", "lizard", "canary", "pony", "beetle"};
static const char *const colours[] = {"crimson", "teal", "amber", "violet", "ochre",
                                      "indigo", "silver", "green", "saffron", "mauve"};

static const char *const onsets[] = {"b", "d", "f", "g", "k", "l", "m", "n", "p", "r",
                                     "s", "t", "v", "z", "br", "dr", "gr", "kr", "th", "sh"};
static const char *const vowels[] = {"a", "e", "i", "o", "u", "ae", "ei", "ou"};
static const char *const codas[] = {"", "", "n", "r", "l", "s", "th", "m", "k"};

// A capitalised invented name of `syl` syllables.
static void make_name(fk_rng *r, int syl, char *out, size_t cap) {
    out[0] = '\0';
    for (int s = 0; s < syl; s++) {
        strncat(out, onsets[pick(r, COUNT(onsets))], cap - strlen(out) - 1);
        strncat(out, vowels[pick(r, COUNT(vowels))], cap - strlen(out) - 1);
        strncat(out, codas[pick(r, COUNT(codas))], cap - strlen(out) - 1);
    }
    out[0] = (char)(out[0] - 'a' + 'A');
}

#define NAME_CAP 24

// n distinct names not in `avoid` (n_avoid of them) nor equal to a city.
static void make_names(fk_rng *r, int n, int min_syl, char (*names)[NAME_CAP], char (*avoid)[NAME_CAP], int n_avoid) {
    for (int i = 0; i < n;) {
        make_name(r, min_syl + (fk_rng_uniform(r) < 0.3f ? 1 : 0), names[i], NAME_CAP);
        bool dup = strlen(names[i]) < 4;
        for (int j = 0; j < i && !dup; j++) dup = strcmp(names[i], names[j]) == 0;
        for (int j = 0; j < n_avoid && !dup; j++) dup = strcmp(names[i], avoid[j]) == 0;
        for (int j = 0; j < COUNT(cities) && !dup; j++) dup = strcmp(names[i], cities[j]) == 0;
        if (!dup) i++;
    }
}

// ------------------------------------------------------------------ the generator's state

#define N_PEOPLE 150
#define N_REL 4
#define N_SINGLE 5
#define N_FIRST 40
#define N_LAST 40

typedef struct {
    uint64_t seed;
    char people[N_PEOPLE][NAME_CAP];
    int attr[N_PEOPLE][N_REL];             // index into the relation's word list
    int held[N_PEOPLE][N_REL][2];          // single template kept for valid [0] and test [1]
    char first[N_FIRST][NAME_CAP], last[N_LAST][NAME_CAP];
} synth;

// ------------------------------------------------------------------ arith

// One problem: "a+b=", "a-b=" (a >= b) or "a*b=" into q, its result into *res.
static void arith_problem(fk_rng *r, char *q, size_t cap, int *res) {
    float u = fk_rng_uniform(r);
    int a, b;
    if (u < 0.4f) {
        a = pick(r, 100); b = pick(r, 100);
        snprintf(q, cap, "%d+%d=", a, b);
        *res = a + b;
    } else if (u < 0.8f) {
        a = pick(r, 100); b = pick(r, 100);
        if (a < b) { int t = a; a = b; b = t; }
        snprintf(q, cap, "%d-%d=", a, b);
        *res = a - b;
    } else {
        a = pick(r, 13); b = pick(r, 13);
        snprintf(q, cap, "%d*%d=", a, b);
        *res = a * b;
    }
}

static void arith_line(const synth *s, int split, fk_rng *r, sbuf *out) {
    char q[32];
    int res;
    do arith_problem(r, q, sizeof q, &res);
    while (split_of(s->seed, q, strlen(q)) != split);
    sb_printf(out, "%s%d\n", q, res);
}

static bool in_list(const int *a, int n, int v) {
    for (int i = 0; i < n; i++) if (a[i] == v) return true;
    return false;
}

// Three wrong results near res: off by one, off by ten, digits swapped, then other small offsets.
static void arith_distractors(int res, fk_rng *r, int *out) {
    int n = 0, sign = pick(r, 2) ? 1 : -1;
    int cand[16], nc = 0;
    cand[nc++] = res + sign;
    cand[nc++] = res - sign;
    sign = pick(r, 2) ? 1 : -1;
    cand[nc++] = res + 10 * sign;
    cand[nc++] = res - 10 * sign;
    int swapped = -1;
    if (res >= 10 && res < 100 && res % 10 != 0) swapped = (res % 10) * 10 + res / 10;
    const int extra[] = {2, -2, 11, -11, 9, -9, 20, -20, 3, -3};
    // preference: +-1, +-10, swap, then the rest
    int order[16], no = 0;
    order[no++] = cand[0];
    order[no++] = cand[2];
    order[no++] = swapped;
    order[no++] = cand[1];
    order[no++] = cand[3];
    for (int i = 0; i < COUNT(extra); i++) order[no++] = res + extra[i];
    for (int i = 0; i < no && n < 3; i++)
        if (order[i] >= 0 && order[i] != res && !in_list(out, n, order[i])) out[n++] = order[i];
}

// ------------------------------------------------------------------ facts

static const char *const *rel_words[N_REL] = {cities, professions, pets, colours};
static const int rel_counts[N_REL] = {COUNT(cities), COUNT(professions), COUNT(pets), COUNT(colours)};

// Single-fact templates: %N the person, %V the value, always last before the full stop.
static const char *const single_tmpl[N_REL][N_SINGLE] = {
    {"%N lives in %V.", "The home town of %N is %V.", "%N comes from %V.", "%N has a house in %V.",
     "The town where %N lives is %V."},
    {"%N is a %V.", "%N works as a %V.", "By trade, %N is a %V.", "%N earns a living as a %V.",
     "The work %N does is that of a %V."},
    {"%N keeps a %V.", "%N owns a %V.", "The pet of %N is a %V.", "At home, %N has a %V.", "%N takes care of a %V."},
    {"The favourite colour of %N is %V.", "%N loves the colour %V.", "The colour %N likes best is %V.",
     "%N always wears %V.", "%N paints everything %V."},
};

// Multi-fact templates (train only): %C city, %P profession, %A pet, %K colour.
static const char *const multi_tmpl[] = {
    "The %P %N keeps a %A.",
    "%N, the %P, lives in %C.",
    "%N from %C loves the colour %K.",
    "In %C, the %P %N keeps a %A.",
    "%N keeps a %A and loves the colour %K.",
    "%N the %P has a %A and lives in %C.",
    "The %P from %C is called %N.",
    "%N, who keeps a %A, comes from %C.",
    "The %P %N always wears %K.",
};

static const char rel_codes[N_REL] = {'C', 'P', 'A', 'K'};

static bool tmpl_has(const char *t, char code) {
    for (const char *p = t; (p = strchr(p, '%')) != NULL; p++)
        if (p[1] == code) return true;
    return false;
}

// Expands a template for person i; %V is the value of relation rel (or `value` when given).
static void facts_expand(const synth *s, const char *t, int i, int rel, const char *value, sbuf *out) {
    for (const char *p = t; *p; p++) {
        if (*p != '%') { sb_put(out, p, 1); continue; }
        char c = *++p;
        if (c == 'N') sb_str(out, s->people[i]);
        else if (c == 'V') sb_str(out, value ? value : rel_words[rel][s->attr[i][rel]]);
        else
            for (int k = 0; k < N_REL; k++)
                if (c == rel_codes[k]) sb_str(out, rel_words[k][s->attr[i][k]]);
    }
}

// Facts are emitted in rounds: every (person, relation) once per round, in a shuffled order.
typedef struct {
    int order[N_PEOPLE * N_REL];
    int pos;
} facts_cursor;

static int facts_next(facts_cursor *c, fk_rng *r) {
    if (c->pos == 0 || c->pos == N_PEOPLE * N_REL) {
        for (int k = 0; k < N_PEOPLE * N_REL; k++) c->order[k] = k;
        shuffle_ints(c->order, N_PEOPLE * N_REL, r);
        c->pos = 0;
    }
    return c->order[c->pos++];
}

static void facts_line(const synth *s, int split, fk_rng *r, facts_cursor *c, sbuf *out) {
    int f = facts_next(c, r), i = f / N_REL, rel = f % N_REL;
    if (split != SPLIT_TRAIN) {
        facts_expand(s, single_tmpl[rel][s->held[i][rel][split == SPLIT_TEST]], i, rel, NULL, out);
    } else if (pick(r, 2) == 0) {
        int t;
        do t = pick(r, N_SINGLE);
        while (t == s->held[i][rel][0] || t == s->held[i][rel][1]);
        facts_expand(s, single_tmpl[rel][t], i, rel, NULL, out);
    } else {
        int cand[COUNT(multi_tmpl)], n = 0;
        for (int t = 0; t < COUNT(multi_tmpl); t++)
            if (tmpl_has(multi_tmpl[t], rel_codes[rel])) cand[n++] = t;
        facts_expand(s, multi_tmpl[cand[pick(r, n)]], i, rel, NULL, out);
    }
    sb_str(out, "\n");
}

// ------------------------------------------------------------------ grammar

static const char *const nouns[][2] = {
    {"dog", "dogs"}, {"key", "keys"}, {"farmer", "farmers"}, {"cabinet", "cabinets"}, {"teacher", "teachers"},
    {"bird", "birds"}, {"letter", "letters"}, {"lamp", "lamps"}, {"sailor", "sailors"}, {"painting", "paintings"},
    {"boat", "boats"}, {"king", "kings"}, {"door", "doors"}, {"book", "books"}, {"horse", "horses"},
    {"window", "windows"}, {"singer", "singers"}, {"bottle", "bottles"},
};
static const char *const adjectives[] = {"old", "small", "red", "quiet", "tall", "young", "dusty", "bright"};
static const char *const prepositions[] = {"near", "behind", "beside", "under", "with", "of", "to", "from"};

typedef struct {
    const char *form[2];  // singular, plural
    const char *tails[6]; // NULL-terminated; "" for none
} verb;

static const verb verbs[] = {
    {{"is", "are"}, {"on the table", "in the garden", "near the river", "ready", "broken", NULL}},
    {{"was", "were"}, {"lost", "late", "in the hall", "under the bridge", NULL}},
    {{"sleeps", "sleep"}, {"", "all day", "by the fire", NULL}},
    {{"waits", "wait"}, {"", "outside", "by the gate", NULL}},
    {{"sings", "sing"}, {"", "at night", "softly", NULL}},
    {{"has", "have"}, {"a long history", "two handles", "no name", NULL}},
    {{"seems", "seem"}, {"tired", "happy", "new", NULL}},
    {{"likes", "like"}, {"the rain", "the old songs", "warm bread", NULL}},
};

typedef struct {
    char subject[160];  // "the keys to the old cabinet"
    int plural;         // the head noun's number
    int n_pp;
    int verb, tail;
} sentence;

static void grammar_sentence(fk_rng *r, sentence *st) {
    sbuf b = {0};
    st->plural = pick(r, 2);
    sb_str(&b, "the ");
    if (fk_rng_uniform(r) < 0.4f) sb_printf(&b, "%s ", adjectives[pick(r, COUNT(adjectives))]);
    sb_str(&b, nouns[pick(r, COUNT(nouns))][st->plural]);
    st->n_pp = fk_rng_uniform(r) < 0.75f ? (fk_rng_uniform(r) < 0.3f ? 2 : 1) : 0;
    for (int k = 0; k < st->n_pp; k++) {
        sb_printf(&b, " %s the ", prepositions[pick(r, COUNT(prepositions))]);
        if (fk_rng_uniform(r) < 0.3f) sb_printf(&b, "%s ", adjectives[pick(r, COUNT(adjectives))]);
        sb_str(&b, nouns[pick(r, COUNT(nouns))][pick(r, 2)]);
    }
    snprintf(st->subject, sizeof st->subject, "%s", b.p ? b.p : "");
    sb_free(&b);
    st->verb = pick(r, COUNT(verbs));
    int nt = 0;
    while (verbs[st->verb].tails[nt]) nt++;
    st->tail = pick(r, nt);
}

// " are on the table." for the given number.
static void grammar_predicate(const sentence *st, int plural, sbuf *out) {
    const verb *v = &verbs[st->verb];
    const char *tail = v->tails[st->tail];
    sb_printf(out, " %s%s%s.", v->form[plural], *tail ? " " : "", tail);
}

// Draws sentences until one falls in `split` (and has a prepositional phrase when need_pp);
// b gets its text.
static void grammar_draw(const synth *s, int split, bool need_pp, fk_rng *r, sentence *st, sbuf *b) {
    do {
        b->n = 0;
        grammar_sentence(r, st);
        sb_str(b, st->subject);
        grammar_predicate(st, st->plural, b);
    } while (!b->oom && ((need_pp && st->n_pp == 0) || split_of(s->seed, b->p, b->n) != split));
}

static void grammar_line(const synth *s, int split, fk_rng *r, sbuf *out) {
    sentence st;
    sbuf b = {0};
    grammar_draw(s, split, false, r, &st, &b);
    if (b.oom) out->oom = true;
    else { sb_put(out, b.p, b.n); sb_str(out, "\n"); }
    sb_free(&b);
}

// ------------------------------------------------------------------ records

typedef struct {
    int id, first, last, age, city;
} record;

static void record_prefix(const synth *s, const record *rec, sbuf *out) {
    sb_printf(out, "id=%d; name=%s %s; age=%d; born=", rec->id, s->first[rec->first], s->last[rec->last], rec->age);
}

static void record_draw(const synth *s, int split, fk_rng *r, record *rec, sbuf *line) {
    do {
        line->n = 0;
        rec->id = 1000 + pick(r, 9000);
        rec->first = pick(r, N_FIRST);
        rec->last = pick(r, N_LAST);
        rec->age = 18 + pick(r, 72);
        rec->city = pick(r, COUNT(cities));
        record_prefix(s, rec, line);
        sb_printf(line, "%d; city=%s;", 2024 - rec->age, cities[rec->city]);
    } while (!line->oom && split_of(s->seed, line->p, line->n) != split);
}

static void records_line(const synth *s, int split, fk_rng *r, sbuf *out) {
    record rec;
    sbuf b = {0};
    record_draw(s, split, r, &rec, &b);
    if (b.oom) out->oom = true;
    else { sb_put(out, b.p, b.n); sb_str(out, "\n"); }
    sb_free(&b);
}

// ------------------------------------------------------------------ probes

typedef struct {
    sbuf context;
    sbuf choice[MAX_CHOICES];
    int n_choices, answer;
} probe;

static void probe_reset(probe *p) {
    p->context.n = 0;
    for (int k = 0; k < MAX_CHOICES; k++) p->choice[k].n = 0;
    p->n_choices = p->answer = 0;
}

static void probe_free(probe *p) {
    sb_free(&p->context);
    for (int k = 0; k < MAX_CHOICES; k++) sb_free(&p->choice[k]);
}

// Places the right choice (already in choice[0]) at a random index, the others in order.
static void probe_place_answer(probe *p, fk_rng *r) {
    int k = pick(r, p->n_choices);
    sbuf t = p->choice[0];
    for (int j = 0; j < k; j++) p->choice[j] = p->choice[j + 1];
    p->choice[k] = t;
    p->answer = k;
}

// Draws a wrong value of relation rel, distinct from the right one and from those chosen.
static int other_value(fk_rng *r, int n_values, const int *taken, int n_taken) {
    int v;
    do v = pick(r, n_values);
    while (in_list(taken, n_taken, v));
    return v;
}

static void make_probe(const synth *s, int domain, int index, const int *fact_order, fk_rng *r, probe *p) {
    probe_reset(p);
    if (domain == D_ARITH) {
        char q[32];
        int res, wrong[3];
        do arith_problem(r, q, sizeof q, &res);
        while (split_of(s->seed, q, strlen(q)) != SPLIT_TEST);
        arith_distractors(res, r, wrong);
        sb_str(&p->context, q);
        sb_printf(&p->choice[0], "%d\n", res);
        for (int k = 0; k < 3; k++) sb_printf(&p->choice[k + 1], "%d\n", wrong[k]);
        p->n_choices = 4;
    } else if (domain == D_FACTS) {
        int f = fact_order[index], i = f / N_REL, rel = f % N_REL;
        const char *t = single_tmpl[rel][s->held[i][rel][1]];
        const char *v = strstr(t, " %V");
        char prefix[128];
        snprintf(prefix, sizeof prefix, "%.*s", (int)(v - t), t);
        facts_expand(s, prefix, i, rel, NULL, &p->context);
        int taken[MAX_CHOICES] = {s->attr[i][rel]};
        for (int k = 1; k < MAX_CHOICES; k++) taken[k] = other_value(r, rel_counts[rel], taken, k);
        for (int k = 0; k < MAX_CHOICES; k++) sb_printf(&p->choice[k], " %s.", rel_words[rel][taken[k]]);
        p->n_choices = 4;
    } else if (domain == D_GRAMMAR) {
        sentence st;
        sbuf b = {0};
        grammar_draw(s, SPLIT_TEST, true, r, &st, &b);
        sb_free(&b);
        sb_str(&p->context, st.subject);
        grammar_predicate(&st, st.plural, &p->choice[0]);
        grammar_predicate(&st, !st.plural, &p->choice[1]);
        p->n_choices = 2;
    } else {
        record rec;
        sbuf b = {0};
        record_draw(s, SPLIT_TEST, r, &rec, &b);
        sb_free(&b);
        record_prefix(s, &rec, &p->context);
        int born = 2024 - rec.age, years[MAX_CHOICES] = {born}, n = 1;
        int sign = pick(r, 2) ? 1 : -1;
        const int deltas[] = {sign, 10 * (pick(r, 2) ? 1 : -1), 2 * sign, -sign, 11, -11, -10, 10};
        for (int k = 0; k < COUNT(deltas) && n < MAX_CHOICES; k++)
            if (!in_list(years, n, born + deltas[k])) years[n++] = born + deltas[k];
        for (int k = 0; k < MAX_CHOICES; k++) sb_printf(&p->choice[k], "%d;", years[k]);
        p->n_choices = 4;
    }
    probe_place_answer(p, r);
}

static fk_status probes_text(const synth *s, int domain, int64_t n, sbuf *out) {
    fk_rng r;
    rng_for(&r, s->seed, 2, (uint64_t)domain, 0);
    int order[N_PEOPLE * N_REL];
    for (int k = 0; k < N_PEOPLE * N_REL; k++) order[k] = k;
    shuffle_ints(order, N_PEOPLE * N_REL, &r);
    if (domain == D_FACTS && n > N_PEOPLE * N_REL) n = N_PEOPLE * N_REL;
    probe p = {0};
    fk_status st = FK_OK;
    for (int64_t i = 0; i < n && st == FK_OK; i++) {
        make_probe(s, domain, (int)i, order, &r, &p);
        cJSON *j = cJSON_CreateObject();
        cJSON *ch = cJSON_CreateArray();
        bool ok = j && ch && !p.context.oom;
        if (ok) {
            cJSON_AddStringToObject(j, "domain", fk_synth_domains[domain]);
            cJSON_AddStringToObject(j, "context", p.context.p);
            for (int k = 0; k < p.n_choices; k++) {
                ok = ok && !p.choice[k].oom;
                if (ok) cJSON_AddItemToArray(ch, cJSON_CreateString(p.choice[k].p));
            }
            cJSON_AddItemToObject(j, "choices", ch);
            ch = NULL;
            cJSON_AddNumberToObject(j, "answer", p.answer);
        }
        char *line = ok ? cJSON_PrintUnformatted(j) : NULL;
        if (line) { sb_str(out, line); sb_str(out, "\n"); }
        else st = fk_error(FK_ERR_NOMEM, "out of memory writing probes");
        free(line);
        cJSON_Delete(j);
        cJSON_Delete(ch);
    }
    probe_free(&p);
    if (st == FK_OK && out->oom) st = fk_error(FK_ERR_NOMEM, "out of memory writing probes");
    return st;
}

// ------------------------------------------------------------------ building

static void synth_init(synth *s, uint64_t seed) {
    memset(s, 0, sizeof *s);
    s->seed = seed;
    fk_rng r;
    rng_for(&r, seed, 1, 0, 0);
    make_names(&r, N_PEOPLE, 2, s->people, NULL, 0);
    for (int i = 0; i < N_PEOPLE; i++)
        for (int k = 0; k < N_REL; k++) {
            s->attr[i][k] = pick(&r, rel_counts[k]);
            s->held[i][k][0] = pick(&r, N_SINGLE);
            do s->held[i][k][1] = pick(&r, N_SINGLE);
            while (s->held[i][k][1] == s->held[i][k][0]);
        }
    make_names(&r, N_FIRST, 2, s->first, s->people, N_PEOPLE);
    make_names(&r, N_LAST, 2, s->last, s->people, N_PEOPLE);
}

// One domain's split: lines until at least `bytes` bytes.
static void split_text(const synth *s, int domain, int split, int64_t bytes, sbuf *out) {
    fk_rng r;
    rng_for(&r, s->seed, 3, (uint64_t)domain, (uint64_t)split);
    facts_cursor *fc = domain == D_FACTS ? calloc(1, sizeof *fc) : NULL;
    if (domain == D_FACTS && !fc) { out->oom = true; return; }
    while ((int64_t)out->n < bytes && !out->oom) {
        switch (domain) {
        case D_ARITH: arith_line(s, split, &r, out); break;
        case D_FACTS: facts_line(s, split, &r, fc, out); break;
        case D_GRAMMAR: grammar_line(s, split, &r, out); break;
        default: records_line(s, split, &r, out); break;
        }
    }
    free(fc);
}

// The domains' texts interleaved in blocks of whole lines of at least `block` bytes, the
// domains in a shuffled order each round, until every text is used up.
static void mix_text(const sbuf *texts, int64_t block, fk_rng *r, sbuf *out) {
    size_t pos[FK_SYNTH_N_DOMAINS] = {0};
    for (;;) {
        int order[FK_SYNTH_N_DOMAINS], live = 0;
        for (int d = 0; d < FK_SYNTH_N_DOMAINS; d++) {
            order[d] = d;
            if (pos[d] < texts[d].n) live++;
        }
        if (!live) break;
        shuffle_ints(order, FK_SYNTH_N_DOMAINS, r);
        for (int k = 0; k < FK_SYNTH_N_DOMAINS; k++) {
            const sbuf *t = &texts[order[k]];
            size_t from = pos[order[k]], to = from;
            while (to < t->n && (int64_t)(to - from) < block) {
                const char *nl = memchr(t->p + to, '\n', t->n - to);
                to = nl ? (size_t)(nl - t->p) + 1 : t->n;
            }
            sb_put(out, t->p + from, to - from);
            pos[order[k]] = to;
        }
    }
}

static int64_t count_lines(const sbuf *b) {
    int64_t n = 0;
    for (size_t i = 0; i < b->n; i++) n += b->p[i] == '\n';
    return n;
}

// Writes dir/rel atomically and records it in the manifest's file list.
static fk_status put_file(const char *dir, const char *rel, const sbuf *b, cJSON *files, fk_synth_stats *stats) {
    if (b->oom) return fk_error(FK_ERR_NOMEM, "out of memory generating %s", rel);
    char *path = fk_path_join(dir, rel);
    if (!path) return fk_error(FK_ERR_NOMEM, "out of memory");
    fk_status st = fk_write_file_atomic(path, b->p ? b->p : "", b->n);
    free(path);
    FK_TRY(st);
    cJSON *f = cJSON_CreateObject();
    if (!f) return fk_error(FK_ERR_NOMEM, "out of memory");
    cJSON_AddStringToObject(f, "path", rel);
    cJSON_AddNumberToObject(f, "bytes", (double)b->n);
    cJSON_AddNumberToObject(f, "lines", (double)count_lines(b));
    cJSON_AddItemToArray(files, f);
    stats->files++;
    stats->bytes += (int64_t)b->n;
    return FK_OK;
}

void fk_synth_opts_default(fk_synth_opts *o) {
    memset(o, 0, sizeof *o);
    o->seed = 1;
    o->bytes_per_domain = 120000;
    o->heldout_bytes = 0;  // a tenth of bytes_per_domain
    o->probes_per_domain = 250;
    o->mix_block_bytes = 1024;
}

// Fills in the defaults (zero: the default) and checks the sizes.
static fk_status synth_opts_resolve(fk_synth_opts *o) {
    if (o->bytes_per_domain == 0) o->bytes_per_domain = 120000;
    if (o->heldout_bytes == 0) o->heldout_bytes = o->bytes_per_domain / 10 > 0 ? o->bytes_per_domain / 10 : 1;
    if (o->probes_per_domain == 0) o->probes_per_domain = 250;
    if (o->mix_block_bytes == 0) o->mix_block_bytes = 1024;
    if (o->bytes_per_domain < 0 || o->heldout_bytes < 0 || o->probes_per_domain < 0 || o->mix_block_bytes < 0)
        return fk_error(FK_ERR_ARG, "synth: sizes must be positive (bytes %lld, held-out %lld, probes %lld, block %lld)",
                        (long long)o->bytes_per_domain, (long long)o->heldout_bytes, (long long)o->probes_per_domain,
                        (long long)o->mix_block_bytes);
    if (o->bytes_per_domain > ((int64_t)1 << 32) || o->heldout_bytes > ((int64_t)1 << 32))
        return fk_error(FK_ERR_ARG, "synth: at most 4 GiB per split (asked %lld bytes)", (long long)o->bytes_per_domain);
    return FK_OK;
}

// Creates the folder dir/name.
static fk_status mkdir_in(const char *dir, const char *name) {
    char *sub = fk_path_join(dir, name);
    fk_status st = sub ? fk_mkdir_p(sub) : fk_error(FK_ERR_NOMEM, "out of memory");
    free(sub);
    return st;
}

// Writes domain d's splits (kept in text[..][d] for the mix) and probes, and adds its entry
// to the manifest's domain list.
static fk_status write_domain(synth *s, const char *dir, const fk_synth_opts *o, int d, sbuf text[N_SPLITS][FK_SYNTH_N_DOMAINS],
                              cJSON *files, cJSON *doms, fk_synth_stats *stats) {
    fk_status st = mkdir_in(dir, fk_synth_domains[d]);
    int64_t want[N_SPLITS] = {o->bytes_per_domain, o->heldout_bytes, o->heldout_bytes};
    for (int sp = 0; sp < N_SPLITS && st == FK_OK; sp++) {
        split_text(s, d, sp, want[sp], &text[sp][d]);
        char rel[64];
        snprintf(rel, sizeof rel, "%s/%s.txt", fk_synth_domains[d], split_names[sp]);
        st = put_file(dir, rel, &text[sp][d], files, stats);
    }
    stats->train_bytes += (int64_t)text[SPLIT_TRAIN][d].n;
    sbuf pb = {0};
    if (st == FK_OK) st = probes_text(s, d, o->probes_per_domain, &pb);
    if (st == FK_OK) {
        char rel[64];
        snprintf(rel, sizeof rel, "%s/probes.jsonl", fk_synth_domains[d]);
        st = put_file(dir, rel, &pb, files, stats);
        stats->probes += count_lines(&pb);
    }
    sb_free(&pb);
    cJSON *dj = cJSON_CreateObject();
    if (!dj) return fk_error(FK_ERR_NOMEM, "out of memory");
    cJSON_AddStringToObject(dj, "name", fk_synth_domains[d]);
    for (int sp = 0; sp < N_SPLITS; sp++) {
        char key[32];
        snprintf(key, sizeof key, "%s_bytes", split_names[sp]);
        cJSON_AddNumberToObject(dj, key, (double)text[sp][d].n);
    }
    cJSON_AddItemToArray(doms, dj);
    return st;
}

// Writes mix/<split>.txt: the domains' texts of each split interleaved.
static fk_status write_mix(const char *dir, const fk_synth_opts *o, sbuf text[N_SPLITS][FK_SYNTH_N_DOMAINS], cJSON *files,
                           fk_synth_stats *stats) {
    FK_TRY(mkdir_in(dir, "mix"));
    fk_status st = FK_OK;
    for (int sp = 0; sp < N_SPLITS && st == FK_OK; sp++) {
        fk_rng r;
        rng_for(&r, o->seed, 4, 0, (uint64_t)sp);
        sbuf mix = {0};
        mix_text(text[sp], o->mix_block_bytes, &r, &mix);
        char rel[64];
        snprintf(rel, sizeof rel, "mix/%s.txt", split_names[sp]);
        st = put_file(dir, rel, &mix, files, stats);
        sb_free(&mix);
    }
    return st;
}

// Writes manifest.json: the options, the domains and the files; man takes doms and files.
static fk_status write_manifest(const char *dir, const fk_synth_opts *o, cJSON *man, cJSON *doms, cJSON *files, fk_synth_stats *stats) {
    char seed[32];  // a string: a JSON number (double) cannot hold every 64-bit seed
    snprintf(seed, sizeof seed, "%llu", (unsigned long long)o->seed);
    cJSON_AddStringToObject(man, "format", "fusekit-synth");
    cJSON_AddNumberToObject(man, "version", 1);
    cJSON_AddStringToObject(man, "seed", seed);
    cJSON_AddNumberToObject(man, "bytes_per_domain", (double)o->bytes_per_domain);
    cJSON_AddNumberToObject(man, "heldout_bytes", (double)o->heldout_bytes);
    cJSON_AddNumberToObject(man, "probes_per_domain", (double)o->probes_per_domain);
    cJSON_AddNumberToObject(man, "mix_block_bytes", (double)o->mix_block_bytes);
    cJSON_AddItemToObject(man, "domains", doms);
    cJSON_AddItemToObject(man, "files", files);
    char *json = cJSON_Print(man);
    char *path = fk_path_join(dir, "manifest.json");
    sbuf b = {0};
    if (json) { sb_str(&b, json); sb_str(&b, "\n"); }
    fk_status st;
    if (!json || !path || b.oom) st = fk_error(FK_ERR_NOMEM, "out of memory");
    else st = fk_write_file_atomic(path, b.p, b.n);
    if (st == FK_OK) { stats->files++; stats->bytes += (int64_t)b.n; }
    sb_free(&b);
    free(json);
    free(path);
    return st;
}

fk_status fk_synth_write(const char *dir, const fk_synth_opts *opts, fk_synth_stats *stats_out) {
    fk_synth_opts o = *opts;
    FK_TRY(synth_opts_resolve(&o));
    if (!dir || !*dir) return fk_error(FK_ERR_ARG, "synth: no output folder");

    fk_synth_stats stats = {0};
    synth *s = malloc(sizeof *s);
    cJSON *man = cJSON_CreateObject(), *files = cJSON_CreateArray(), *doms = cJSON_CreateArray();
    sbuf text[N_SPLITS][FK_SYNTH_N_DOMAINS];
    memset(text, 0, sizeof text);
    fk_status st = s && man && files && doms ? FK_OK : fk_error(FK_ERR_NOMEM, "out of memory");
    if (st == FK_OK) {
        synth_init(s, o.seed);
        st = fk_mkdir_p(dir);
    }
    for (int d = 0; d < FK_SYNTH_N_DOMAINS && st == FK_OK; d++) st = write_domain(s, dir, &o, d, text, files, doms, &stats);
    if (st == FK_OK) st = write_mix(dir, &o, text, files, &stats);
    if (st == FK_OK) {
        st = write_manifest(dir, &o, man, doms, files, &stats);
        doms = files = NULL;  // man holds them
    }
    for (int sp = 0; sp < N_SPLITS; sp++)
        for (int d = 0; d < FK_SYNTH_N_DOMAINS; d++) sb_free(&text[sp][d]);
    cJSON_Delete(man);
    cJSON_Delete(files);
    cJSON_Delete(doms);
    free(s);
    if (st == FK_OK && stats_out) *stats_out = stats;
    return st;
}
