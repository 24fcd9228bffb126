// Token, vocabulary and distribution alignment (fusekit/align.h): hand-made tokenizations of
// one text (1:1, merges, splits, word markers, byte fallback, empty tokens), the DTW against
// a brute-force search over every warping path, the offsets mode against an independent
// region-by-region reference, MinED maps against a brute-force search, cache files, and the
// distributions' next-token semantics, collisions and cross-entropy sums.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include "base/par.h"
#include <string.h>

#include "fusekit/align.h"
#include "test_util.h"

#define TOKDIR FK_SHARED_DATA "/tokenizers"
#define CORPORA FK_SHARED_DATA "/corpora"

static fk_tokenizer *load_vocab(const char *name) {
    char path[512];
    snprintf(path, sizeof path, "%s/ggml-vocab-%s.gguf", TOKDIR, name);
    fk_tokenizer *t = NULL;
    if (fk_tok_load(path, &t) != FK_OK) fail_msg("%s: %s", path, fk_last_error());
    return t;
}

static bool have_shared(void) {
    if (fk_path_exists(TOKDIR) && fk_path_exists(CORPORA)) return true;
    print_message("../shared/data is absent: alignment tests on real vocabularies skipped\n");
    return false;
}

// Plain dynamic programming, independent of the library's bit-parallel code.
static int naive_ed(const uint8_t *a, size_t na, const uint8_t *b, size_t nb) {
    int *row = malloc(sizeof(int) * (nb + 1));
    for (size_t j = 0; j <= nb; j++) row[j] = (int)j;
    for (size_t i = 1; i <= na; i++) {
        int diag = row[0];
        row[0] = (int)i;
        for (size_t j = 1; j <= nb; j++) {
            int up = row[j], v = diag + (a[i - 1] != b[j - 1]);
            if (up + 1 < v) v = up + 1;
            if (row[j - 1] + 1 < v) v = row[j - 1] + 1;
            row[j] = v;
            diag = up;
        }
    }
    int d = row[nb];
    free(row);
    return d;
}

// ---------------------------------------------------------------- tiny tokenizers
// Vocabularies of every string of 1..3 symbols over {a, b, c, space}, after one control token
// (an empty-span token in the tests): SentencePiece style ("▁" for a space) and byte-level
// style ("Ġ"). Id of a text string: 1 + (4 + 16 + ... up to its length - 1) + its base-4 value.
static const char SYM[4] = {'a', 'b', 'c', ' '};

static int sym_index(char c) { return c == 'a' ? 0 : c == 'b' ? 1 : c == 'c' ? 2 : 3; }

static int32_t tiny_id(const char *s, int len) {
    int32_t off = 1, p = 1;
    for (int l = 1; l < len; l++) { p *= 4; off += p; }
    int32_t v = 0;
    for (int i = 0; i < len; i++) v = v * 4 + sym_index(s[i]);
    return off + v;
}

static fk_tokenizer *tiny_tok(bool spm) {
    enum { N = 1 + 4 + 16 + 64 };
    static char store[2][N][16];
    const char *pieces[N];
    uint32_t lens[N];
    uint8_t types[N];
    char (*st)[16] = store[spm];
    strcpy(st[0], spm ? "<e>" : "<f>");
    types[0] = FK_TT_CONTROL;
    int k = 1;
    for (int len = 1; len <= 3; len++) {
        int total = 1;
        for (int l = 0; l < len; l++) total *= 4;
        for (int v = 0; v < total; v++, k++) {
            char *p = st[k];
            int o = 0;
            for (int l = len - 1; l >= 0; l--) {
                int d = v;
                for (int q = 0; q < l; q++) d /= 4;
                char c = SYM[d % 4];
                if (c == ' ') {
                    const char *m = spm ? "\xE2\x96\x81" : "\xC4\xA0";
                    memcpy(p + o, m, strlen(m));
                    o += (int)strlen(m);
                } else {
                    p[o++] = c;
                }
            }
            p[o] = 0;
            types[k] = FK_TT_NORMAL;
        }
    }
    assert_int_equal(k, N);
    for (int i = 0; i < N; i++) {
        pieces[i] = st[i];
        lens[i] = (uint32_t)strlen(st[i]);
    }
    fk_tok_spec s = {.kind = spm ? FK_TOK_SPM : FK_TOK_BPE, .n_vocab = N, .pieces = pieces, .piece_lens = lens, .types = types,
                     .bos = 0, .eos = -1, .unk = -1, .pad = -1};
    fk_tokenizer *t = NULL;
    CHECK(fk_tok_build(&s, &t));
    return t;
}

// A tokenizer from explicit pieces (NULL types: all normal).
static fk_tokenizer *make_tok(fk_tok_kind kind, const char *const *pieces, int n, const uint8_t *types, int32_t bos, int32_t eos,
                              int32_t unk) {
    uint32_t *lens = malloc(sizeof *lens * (size_t)n);
    for (int i = 0; i < n; i++) lens[i] = (uint32_t)strlen(pieces[i]);
    fk_tok_spec s = {.kind = kind, .n_vocab = n, .pieces = pieces, .piece_lens = lens, .types = types,
                     .bos = bos, .eos = eos, .unk = unk, .pad = -1};
    fk_tokenizer *t = NULL;
    CHECK(fk_tok_build(&s, &t));
    free(lens);
    return t;
}

typedef struct {
    int64_t n;
    int32_t ids[64];
    int64_t begin[65];
} seq_t;

static fk_tokseq as_seq(const seq_t *s) { return (fk_tokseq){s->n, s->ids, s->begin}; }

// A random tokenization of text over the tiny vocabulary: pieces of 1..3 symbols, and now
// and then the empty control token at a boundary.
static void random_seg(fk_rng *r, const char *text, int len, int empty_pct, seq_t *s) {
    s->n = 0;
    int at = 0;
    for (;;) {
        while ((int)fk_rng_below(r, 100) < empty_pct && s->n < 60) {
            s->ids[s->n] = 0;
            s->begin[s->n++] = at;
        }
        if (at == len) break;
        int l = 1 + (int)fk_rng_below(r, 3);
        if (l > len - at) l = len - at;
        s->ids[s->n] = tiny_id(text + at, l);
        s->begin[s->n++] = at;
        at += l;
    }
    s->begin[s->n] = len;
}

// ---------------------------------------------------------------- brute-force DTW
// Every monotone warping path from (0, 0) to (ns - 1, nt - 1), walked backwards with moves in
// the order diagonal, source step, target step: the first path of minimum cost found is the
// one whose backward moves are smallest in that order, which is the reference's tie rule.
typedef struct {
    int ns, nt;
    const int *cost;  // ns x nt
    int best;
    int path[128][2], n_path;
    int cur[128][2], n_cur;
} brute;

static void brute_walk(brute *b, int i, int j, int acc) {
    acc += b->cost[i * b->nt + j];
    if (acc >= b->best) return;  // (costs are >= 0; a tie never replaces the first path)
    b->cur[b->n_cur][0] = i;
    b->cur[b->n_cur][1] = j;
    b->n_cur++;
    if (i == 0 && j == 0) {
        b->best = acc;
        memcpy(b->path, b->cur, sizeof(int) * 2 * (size_t)b->n_cur);
        b->n_path = b->n_cur;
    } else {
        if (i > 0 && j > 0) brute_walk(b, i - 1, j - 1, acc);
        if (i > 0) brute_walk(b, i - 1, j, acc);
        if (j > 0) brute_walk(b, i, j - 1, acc);
    }
    b->n_cur--;
}

// lo/hi per target token (offset by i0) of the best path over the cost matrix.
static void brute_dtw(int ns, int nt, const int *cost, int64_t i0, int64_t *lo, int64_t *hi) {
    brute *b = calloc(1, sizeof *b);
    b->ns = ns;
    b->nt = nt;
    b->cost = cost;
    b->best = INT32_MAX;
    brute_walk(b, ns - 1, nt - 1, 0);
    for (int j = 0; j < nt; j++) { lo[j] = INT64_MAX; hi[j] = -1; }
    for (int p = 0; p < b->n_path; p++) {
        int i = b->path[p][0], j = b->path[p][1];
        if (i0 + i < lo[j]) lo[j] = i0 + i;
        if (i0 + i + 1 > hi[j]) hi[j] = i0 + i + 1;
    }
    free(b);
}

// The DTW cost of two tiny-vocabulary tokens: edit distance of their texts without spaces.
static int tiny_text(const fk_tokenizer *t, int32_t id, uint8_t *buf, bool strip) {
    char tmp[32];
    size_t k = fk_tok_token_bytes(t, id, tmp, sizeof tmp);
    int o = 0;
    for (size_t i = 0; i < k; i++)
        if (!strip || tmp[i] != ' ') buf[o++] = (uint8_t)tmp[i];
    return o;
}

static void cost_matrix(const fk_tokenizer *ts, const seq_t *s, int64_t i0, int64_t i1, const fk_tokenizer *tt, const seq_t *t,
                        int64_t j0, int64_t j1, int *cost) {
    int64_t nt = j1 - j0;
    for (int64_t i = i0; i < i1; i++)
        for (int64_t j = j0; j < j1; j++) {
            uint8_t a[32], b[32];
            int na = tiny_text(ts, s->ids[i], a, true), nb = tiny_text(tt, t->ids[j], b, true);
            cost[(i - i0) * nt + (j - j0)] = naive_ed(a, (size_t)na, b, (size_t)nb);
        }
}

static void assert_alignment(const fk_alignment *a, const int64_t *lo, const int64_t *hi, const uint8_t *one, const char *what,
                             int iter) {
    for (int64_t j = 0; j < a->n; j++)
        if (a->lo[j] != lo[j] || a->hi[j] != hi[j] || a->one_to_one[j] != one[j])
            fail_msg("%s case %d: target token %lld aligned to [%lld, %lld) one_to_one %d, expected [%lld, %lld) %d", what, iter,
                     (long long)j, (long long)a->lo[j], (long long)a->hi[j], a->one_to_one[j], (long long)lo[j], (long long)hi[j],
                     one[j]);
}

static void check_invariants(const fk_alignment *a, const fk_tokseq *s, const fk_tokseq *t, const char *what);

// ---------------------------------------------------------------- tests
static void test_edit_distance(void **state) {
    (void)state;
    fk_rng r;
    fk_rng_seed(&r, 7);
    uint8_t a[200], b[200];
    for (int it = 0; it < 3000; it++) {
        size_t na = fk_rng_below(&r, it < 2500 ? 20 : 150), nb = fk_rng_below(&r, it < 2500 ? 20 : 150);
        int sigma = 1 + (int)fk_rng_below(&r, 6);
        for (size_t i = 0; i < na; i++) a[i] = (uint8_t)(fk_rng_below(&r, (uint64_t)sigma) * 37);
        for (size_t i = 0; i < nb; i++) b[i] = (uint8_t)(fk_rng_below(&r, (uint64_t)sigma) * 37);
        int want = naive_ed(a, na, b, nb);
        int64_t got = fk_edit_distance(a, na, b, nb);
        if (got != want) fail_msg("edit distance of %zu and %zu bytes: %lld, expected %d", na, nb, (long long)got, want);
    }
    assert_int_equal(fk_edit_distance("kitten", 6, "sitting", 7), 3);
    assert_int_equal(fk_edit_distance("", 0, "abc", 3), 3);
}

// Hand-made tokenizations of one text in both modes.
static void test_hand_cases(void **state) {
    (void)state;
    // SentencePiece-style source and byte-level target vocabularies
    const char *sp[] = {"<s>", "</s>", "\xE2\x96\x81", "\xE2\x96\x81hello", "\xE2\x96\x81world", "\xE2\x96\x81hel", "lo", "hel",
                        "\xE2\x96\x81\x61", "<0xE2>", "<0x82>", "<0xAC>", "3", "hello", "a"};
    const uint8_t spt[] = {FK_TT_CONTROL, FK_TT_CONTROL, 1, 1, 1, 1, 1, 1, 1, FK_TT_BYTE, FK_TT_BYTE, FK_TT_BYTE, 1, 1, 1};
    const char *bp[] = {"<|endoftext|>", "hello", "\xC4\xA0world", "hel", "lo", "a", "\xC3\xA2\xC4\xA4\xC2\xAC", "3",
                        "\xC4\xA0hello", "\xC4\xA0\x61"};
    fk_tokenizer *S = make_tok(FK_TOK_SPM, sp, 15, spt, 0, 1, -1);
    fk_tokenizer *T = make_tok(FK_TOK_BPE, bp, 10, (const uint8_t[]){FK_TT_CONTROL, 1, 1, 1, 1, 1, 1, 1, 1, 1}, 0, 0, -1);
    struct {
        const char *name;
        int ns, nt;
        int32_t sid[6];
        int64_t sb[7];
        int32_t tid[6];
        int64_t tb[7];
        int64_t lo[2][6], hi[2][6];  // [offsets, dtw]
        uint8_t one[2][6];
    } cases[] = {
        // "hello world": the dummy prefix "▁hello" vs "hello", then "▁world" vs "Ġworld"; BOS only in the source
        {"markers", 3, 2, {0, 3, 4}, {0, 0, 5, 11}, {1, 2}, {0, 5, 11},
         {{1, 2}, {0, 2}}, {{2, 3}, {2, 3}}, {{1, 1}, {0, 1}}},
        // merge: "▁hel" + "lo" -> "hello"
        {"merge", 2, 1, {5, 6}, {0, 3, 5}, {1}, {0, 5}, {{0}, {0}}, {{2}, {2}}, {{0}, {0}}},
        // split: "▁hello" -> "hel" + "lo"
        {"split", 1, 2, {3}, {0, 5}, {3, 4}, {0, 3, 5}, {{0, 0}, {0, 0}}, {{1, 1}, {1, 1}}, {{0, 0}, {0, 0}}},
        // byte fallback: "▁a" <0xE2> <0x82> <0xAC> vs "a" "€"
        // (the DTW, as the reference, puts "a" with "▁a" <0xE2> <0x82> and "€" with <0xAC>)
        {"bytes", 4, 2, {8, 9, 10, 11}, {0, 1, 2, 3, 4}, {5, 6}, {0, 1, 4},
         {{0, 1}, {0, 3}}, {{1, 4}, {3, 4}}, {{1, 0}, {0, 0}}},
        // empty tokens: <s> and a lone dummy "▁" before "3", "</s>" at the end; target with BOS/EOS
        {"empties", 4, 3, {0, 2, 12, 1}, {0, 0, 0, 1, 1}, {0, 7, 0}, {0, 0, 1, 1},
         {{0, 2, 3}, {0, 1, 3}}, {{1, 3, 4}, {1, 3, 4}}, {{1, 1, 1}, {0, 0, 0}}},
        // the same without BOS in the target: the source's empty tokens align to nothing
        {"empties2", 3, 1, {0, 2, 12}, {0, 0, 0, 1}, {7}, {0, 1}, {{2}, {0}}, {{3}, {3}}, {{1}, {0}}},
        // mid-text word markers "a hello": "▁a" "▁hello" vs "a" "Ġhello", plus a split in the middle
        {"mid", 2, 2, {8, 3}, {0, 1, 7}, {5, 8}, {0, 1, 7}, {{0, 1}, {0, 1}}, {{1, 2}, {1, 2}}, {{1, 1}, {1, 1}}},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        fk_tokseq s = {cases[c].ns, cases[c].sid, cases[c].sb}, t = {cases[c].nt, cases[c].tid, cases[c].tb};
        for (int m = 0; m < 2; m++) {
            fk_alignment a;
            CHECK(fk_align_tokens(S, &s, T, &t, m ? FK_ALIGN_DTW : FK_ALIGN_OFFSETS, NULL, &a));
            assert_int_equal(a.n, cases[c].nt);
            char what[64];
            snprintf(what, sizeof what, "%s (%s)", cases[c].name, m ? "dtw" : "offsets");
            assert_alignment(&a, cases[c].lo[m], cases[c].hi[m], cases[c].one[m], what, 0);
            fk_alignment_free(&a);
        }
    }
    // a vocabulary map makes tokens agree in the DTW mode: "▁hel" mapped to "hello"
    {
        int32_t vmap[15];
        for (int i = 0; i < 15; i++) vmap[i] = -1;
        fk_tokseq s = {2, (int32_t[]){5, 6}, (int64_t[]){0, 3, 5}}, t = {2, (int32_t[]){1, 4}, (int64_t[]){0, 3, 5}};
        fk_alignment a;
        CHECK(fk_align_tokens(S, &s, T, &t, FK_ALIGN_DTW, NULL, &a));
        assert_int_equal(a.one_to_one[0], 0);  // "hel" (dummy prefix dropped) vs "hello"
        assert_int_equal(a.one_to_one[1], 1);  // "lo" vs "lo"
        fk_alignment_free(&a);
        vmap[5] = 1;
        CHECK(fk_align_tokens(S, &s, T, &t, FK_ALIGN_DTW, vmap, &a));
        assert_int_equal(a.one_to_one[0], 1);
        fk_alignment_free(&a);
    }
    // sequences that cover different bytes, ids outside the vocabulary
    {
        fk_tokseq s = {1, (int32_t[]){3}, (int64_t[]){0, 5}}, t = {1, (int32_t[]){1}, (int64_t[]){0, 6}};
        fk_alignment a;
        assert_int_equal(fk_align_tokens(S, &s, T, &t, FK_ALIGN_OFFSETS, NULL, &a), FK_ERR_ARG);
        assert_non_null(strstr(fk_last_error(), "cover bytes"));
        fk_tokseq u = {1, (int32_t[]){99}, (int64_t[]){0, 5}};
        assert_int_equal(fk_align_tokens(S, &u, T, &t, FK_ALIGN_DTW, NULL, &a), FK_ERR_ARG);
        fk_tokseq e = {0, NULL, (int64_t[]){0}};
        CHECK(fk_align_tokens(S, &e, T, &e, FK_ALIGN_OFFSETS, NULL, &a));
        assert_int_equal(a.n, 0);
        fk_alignment_free(&a);
    }
    fk_tok_free(S);
    fk_tok_free(T);
}

// The DTW mode against every warping path, on random tokenizations of random texts.
static void test_dtw_brute_force(void **state) {
    (void)state;
    fk_tokenizer *S = tiny_tok(true), *T = tiny_tok(false);
    fk_rng r;
    fk_rng_seed(&r, 11);
    int done = 0;
    for (int it = 0; done < 600; it++) {
        char text[16];
        int len = 1 + (int)fk_rng_below(&r, 7);
        for (int i = 0; i < len; i++) text[i] = SYM[fk_rng_below(&r, 4)];
        seq_t s, t;
        random_seg(&r, text, len, it % 3 == 0 ? 12 : 0, &s);
        random_seg(&r, text, len, it % 3 == 0 ? 12 : 0, &t);
        if (s.n * t.n > 64) continue;
        int cost[64 * 64];
        cost_matrix(S, &s, 0, s.n, T, &t, 0, t.n, cost);
        int64_t lo[64], hi[64];
        uint8_t one[64];
        brute_dtw((int)s.n, (int)t.n, cost, 0, lo, hi);
        for (int64_t j = 0; j < t.n; j++) {
            int64_t i = lo[j];
            uint8_t a[32], b[32];
            int na = tiny_text(S, s.ids[i], a, false), nb = tiny_text(T, t.ids[j], b, false);
            one[j] = hi[j] - lo[j] == 1 && na == nb && memcmp(a, b, (size_t)na) == 0;
        }
        fk_tokseq fs = as_seq(&s), ft = as_seq(&t);
        fk_alignment al;
        CHECK(fk_align_tokens(S, &fs, T, &ft, FK_ALIGN_DTW, NULL, &al));
        assert_alignment(&al, lo, hi, one, "dtw vs brute force", it);
        fk_alignment_free(&al);
        done++;
    }
    fk_tok_free(S);
    fk_tok_free(T);
}

// The offsets mode against an independent reference: shared boundaries found by set
// intersection, empty tokens on them paired front to front, identical spans 1:1, every other
// region by the brute-force DTW.
static void expect_offsets(const fk_tokenizer *S, const seq_t *s, const fk_tokenizer *T, const seq_t *t, int64_t *lo, int64_t *hi,
                           uint8_t *one) {
    int64_t shared[70];
    int nsh = 0;
    for (int64_t x = 0; x <= s->begin[s->n]; x++) {
        bool in_s = false, in_t = false;
        for (int64_t i = 0; i <= s->n; i++) in_s |= s->begin[i] == x;
        for (int64_t j = 0; j <= t->n; j++) in_t |= t->begin[j] == x;
        if (in_s && in_t) shared[nsh++] = x;
    }
    for (int k = 0; k < nsh; k++) {
        int64_t b = shared[k];
        int64_t se[64], te[64];
        int nse = 0, nte = 0;
        for (int64_t i = 0; i < s->n; i++)
            if (s->begin[i] == b && s->begin[i + 1] == b) se[nse++] = i;
        for (int64_t j = 0; j < t->n; j++)
            if (t->begin[j] == b && t->begin[j + 1] == b) te[nte++] = j;
        int64_t after = s->n;  // the first source token after the empty ones at b
        for (int64_t i = s->n - 1; i >= 0; i--)
            if (s->begin[i] > b || (s->begin[i] == b && s->begin[i + 1] > b)) after = i;
        for (int q = 0; q < nte; q++) {
            if (q < nse) { lo[te[q]] = se[q]; hi[te[q]] = se[q] + 1; one[te[q]] = 1; }
            else { lo[te[q]] = hi[te[q]] = after; one[te[q]] = 0; }
        }
        if (k + 1 == nsh) break;
        int64_t e = shared[k + 1];
        // region (b, e): nonempty tokens inside [b, e], empty ones strictly inside
        int64_t ri[64] = {0}, rj[64] = {0};
        int nri = 0, nrj = 0;
        for (int64_t i = 0; i < s->n; i++) {
            int64_t x = s->begin[i], y = s->begin[i + 1];
            if ((y > x && x >= b && y <= e) || (y == x && x > b && x < e)) ri[nri++] = i;
        }
        for (int64_t j = 0; j < t->n; j++) {
            int64_t x = t->begin[j], y = t->begin[j + 1];
            if ((y > x && x >= b && y <= e) || (y == x && x > b && x < e)) rj[nrj++] = j;
        }
        assert_true(nri > 0 && nrj > 0);
        if (nri == 1 && nrj == 1) {
            lo[rj[0]] = ri[0]; hi[rj[0]] = ri[0] + 1; one[rj[0]] = 1;
            continue;
        }
        for (int q = 1; q < nri; q++) assert_int_equal(ri[q], ri[q - 1] + 1);
        for (int q = 1; q < nrj; q++) assert_int_equal(rj[q], rj[q - 1] + 1);
        int cost[64 * 64];
        cost_matrix(S, s, ri[0], ri[0] + nri, T, t, rj[0], rj[0] + nrj, cost);
        brute_dtw(nri, nrj, cost, ri[0], lo + rj[0], hi + rj[0]);
        for (int q = 0; q < nrj; q++) one[rj[q]] = 0;
    }
}

static void test_offsets_random(void **state) {
    (void)state;
    fk_tokenizer *S = tiny_tok(true), *T = tiny_tok(false);
    fk_rng r;
    fk_rng_seed(&r, 12);
    for (int it = 0; it < 1500; it++) {
        char text[40];
        int len = 1 + (int)fk_rng_below(&r, 30);
        for (int i = 0; i < len; i++) text[i] = SYM[fk_rng_below(&r, 4)];
        seq_t s, t;
        random_seg(&r, text, len, it % 2 ? 10 : 0, &s);
        random_seg(&r, text, len, it % 2 ? 10 : 0, &t);
        int64_t lo[64], hi[64];
        uint8_t one[64];
        expect_offsets(S, &s, T, &t, lo, hi, one);
        fk_tokseq fs = as_seq(&s), ft = as_seq(&t);
        fk_alignment al;
        CHECK(fk_align_tokens(S, &fs, T, &ft, FK_ALIGN_OFFSETS, NULL, &al));
        assert_alignment(&al, lo, hi, one, "offsets vs reference", it);
        fk_alignment_free(&al);
    }
    fk_tok_free(S);
    fk_tok_free(T);
}

// ---------------------------------------------------------------- vocabulary maps
static int type_rank(int type) { return type == FK_TT_NORMAL ? 0 : type == FK_TT_BYTE ? 1 : type == FK_TT_USER_DEFINED ? 2 : 3; }

static int tok_bytes(const fk_tokenizer *t, int32_t id, uint8_t *buf, size_t cap) {
    size_t k = fk_tok_token_bytes(t, id, (char *)buf, cap);
    assert_true(k <= cap);
    return (int)k;
}

// The map a brute-force search gives for source token v (check_all: MinED over every target).
static int32_t brute_map(const fk_tokenizer *src, const fk_tokenizer *tgt, fk_vmap_mode mode, int32_t v) {
    int32_t sunk = -1, tunk = -1;
    for (int32_t i = fk_tok_vocab_size(src) - 1; i >= 0; i--)
        if (fk_tok_type(src, i) == FK_TT_UNKNOWN) sunk = i;
    for (int32_t i = fk_tok_vocab_size(tgt) - 1; i >= 0; i--)
        if (fk_tok_type(tgt, i) == FK_TT_UNKNOWN) tunk = i;
    if (v == fk_tok_bos(src) && fk_tok_bos(tgt) >= 0) return fk_tok_bos(tgt);
    if (v == fk_tok_eos(src) && fk_tok_eos(tgt) >= 0) return fk_tok_eos(tgt);
    if (v == sunk && tunk >= 0) return tunk;
    uint8_t a[1024], b[1024];
    int na = tok_bytes(src, v, a, sizeof a);
    int32_t exact = -1, near = -1;
    int near_d = INT32_MAX;
    for (int32_t u = 0; u < fk_tok_vocab_size(tgt); u++) {
        int nb = tok_bytes(tgt, u, b, sizeof b);
        int rank = type_rank(fk_tok_type(tgt, u));
        if (nb == na && memcmp(a, b, (size_t)na) == 0 && (exact < 0 || rank < type_rank(fk_tok_type(tgt, exact)))) exact = u;
        if (rank < 3 && abs(nb - na) < near_d) {
            int d = (int)fk_edit_distance(a, (size_t)na, b, (size_t)nb);
            if (d < near_d) { near_d = d; near = u; }
        }
    }
    if (exact >= 0) return exact;
    return mode == FK_VMAP_EXACT ? -1 : near;
}

static void random_piece(fk_rng *r, char *out, bool spm) {
    static const char *syms[] = {"a", "b", "c", "d", "\xC3\xA9"};  // é: two bytes
    int len = 1 + (int)fk_rng_below(r, 5), o = 0;
    for (int i = 0; i < len; i++) {
        int k = (int)fk_rng_below(r, 6);
        const char *s = k == 5 ? (spm ? "\xE2\x96\x81" : "\xC4\xA0") : syms[k];
        if (k == 4 && !spm) s = "\xC3\x83\xC2\xA9";  // é in byte-level form: Ã ©
        strcpy(out + o, s);
        o += (int)strlen(s);
    }
    out[o] = 0;
}

static bool has_piece(char (*p)[32], int n, const char *s) {
    for (int i = 0; i < n; i++)
        if (strcmp(p[i], s) == 0) return true;
    return false;
}

// Random small vocabularies, the map checked token by token against the brute force.
static void test_vmap_small(void **state) {
    (void)state;
    fk_rng r;
    fk_rng_seed(&r, 5);
    for (int round = 0; round < 20; round++) {
        enum { NS = 80, NT = 120 };
        char sp[NS][32], tp[NT][32];
        uint8_t st[NS], tt[NT];
        int ns = 0, nt = 0;
        strcpy(sp[ns], "<s>"); st[ns++] = FK_TT_CONTROL;
        strcpy(sp[ns], "</s>"); st[ns++] = FK_TT_CONTROL;
        strcpy(sp[ns], "<unk>"); st[ns++] = FK_TT_UNKNOWN;
        strcpy(sp[ns], "<0x61>"); st[ns++] = FK_TT_BYTE;  // the byte 'a'
        strcpy(sp[ns], "zz"); st[ns++] = FK_TT_NORMAL;
        strcpy(sp[ns], "zzq"); st[ns++] = FK_TT_NORMAL;
        strcpy(tp[nt], "<|endoftext|>"); tt[nt++] = FK_TT_CONTROL;
        strcpy(tp[nt], "zz"); tt[nt++] = FK_TT_CONTROL;   // same bytes as a normal token below: the normal one wins
        strcpy(tp[nt], "zzq"); tt[nt++] = FK_TT_CONTROL;  // exact match only as a control token: still taken
        strcpy(tp[nt], "<pad>"); tt[nt++] = FK_TT_UNUSED;
        strcpy(tp[nt], "a"); tt[nt++] = FK_TT_NORMAL;
        strcpy(tp[nt], "zz"); tt[nt++] = FK_TT_NORMAL;
        if (round % 2) { strcpy(tp[nt], "<unk>"); tt[nt++] = FK_TT_UNKNOWN; }
        while (ns < NS) {
            random_piece(&r, sp[ns], true);
            if (!has_piece(sp, ns, sp[ns])) st[ns++] = FK_TT_NORMAL;
        }
        while (nt < NT) {
            if (fk_rng_below(&r, 3) == 0) {  // a source piece in byte-level form: an exact match
                const char *s = sp[6 + fk_rng_below(&r, NS - 6)];
                char *o = tp[nt];
                for (; *s; s++) {
                    if ((unsigned char)s[0] == 0xE2) { strcpy(o, "\xC4\xA0"); o += 2; s += 2; }
                    else if ((unsigned char)s[0] == 0xC3) { strcpy(o, "\xC3\x83\xC2\xA9"); o += 4; s += 1; }
                    else *o++ = *s;
                }
                *o = 0;
            } else {
                random_piece(&r, tp[nt], false);
            }
            if (!has_piece(tp, nt, tp[nt])) tt[nt++] = FK_TT_NORMAL;
        }
        const char *spp[NS], *tpp[NT];
        for (int i = 0; i < NS; i++) spp[i] = sp[i];
        for (int i = 0; i < NT; i++) tpp[i] = tp[i];
        fk_tokenizer *S = make_tok(FK_TOK_SPM, spp, NS, st, 0, 1, 2);
        fk_tokenizer *T = make_tok(FK_TOK_BPE, tpp, NT, tt, 0, 0, -1);
        for (int mode = 0; mode < 2; mode++) {
            int32_t *m;
            CHECK(fk_vmap_build(S, T, (fk_vmap_mode)mode, &m));
            int exact = 0;
            for (int32_t v = 0; v < NS; v++) {
                int32_t want = brute_map(S, T, (fk_vmap_mode)mode, v);
                if (m[v] != want) fail_msg("round %d mode %d: source %d '%s' maps to %d, expected %d", round, mode, v, sp[v], m[v], want);
                if (m[v] >= 0 && v > 2) {
                    uint8_t a[64], b[64];
                    int na = tok_bytes(S, v, a, sizeof a), nb = tok_bytes(T, m[v], b, sizeof b);
                    exact += na == nb && memcmp(a, b, (size_t)na) == 0;
                }
            }
            assert_true(exact > NS / 4);
            assert_int_equal(m[0], 0);              // BOS
            assert_int_equal(m[1], 0);              // EOS
            assert_int_equal(m[2], round % 2 ? 6 : (mode ? -1 : m[2]));  // unknown: the target's when it has one
            assert_int_equal(m[3], 4);              // <0x61> is "a"
            assert_int_equal(m[4], 5);              // "zz": the normal token, not the control one
            assert_int_equal(m[5], 2);              // "zzq": only a control token has these bytes
            free(m);
        }
        fk_tok_free(S);
        fk_tok_free(T);
    }
}

// Cache files: written when missing, read back, rejected when corrupted, truncated, or made
// for other tokenizers.
static void test_vmap_cache(void **state) {
    (void)state;
    fk_tokenizer *S = tiny_tok(true), *T = tiny_tok(false);
    const char *other[] = {"<|endoftext|>", "a", "b", "ab", "\xC4\xA0\x61", "cc"};
    fk_tokenizer *U = make_tok(FK_TOK_BPE, other, 6, NULL, -1, -1, -1);
    char *dir = tpath("vmap-cache/sub");
    int32_t *fresh, *m;
    CHECK(fk_vmap_build(S, T, FK_VMAP_MINED, &fresh));
    int32_t ns = fk_tok_vocab_size(S);
    CHECK(fk_vmap_load_or_build(S, T, FK_VMAP_MINED, dir, &m));
    assert_memory_equal(m, fresh, sizeof(int32_t) * (size_t)ns);
    free(m);
    char *path = fk_vmap_cache_path(S, T, FK_VMAP_MINED, dir);
    assert_true(fk_path_exists(path));
    char *data;
    size_t n;
    CHECK(fk_read_file(path, &data, &n));
    assert_int_equal(n, 48 + 4 * (size_t)ns);
    assert_memory_equal(data, "FKVOCMAP", 8);

    // a valid file is read, not rebuilt: change one entry and fix the checksum
    int32_t v;
    memcpy(&v, data + 48 + 4 * 7, 4);
    int32_t nv = v == 3 ? 4 : 3;
    memcpy(data + 48 + 4 * 7, &nv, 4);
    uint64_t h = fk_fnv1a64(data + 48, 4 * (size_t)ns, 0);
    memcpy(data + 40, &h, 8);
    CHECK(fk_write_file_atomic(path, data, n));
    CHECK(fk_vmap_load_or_build(S, T, FK_VMAP_MINED, dir, &m));
    assert_int_equal(m[7], nv);
    free(m);

    // a corrupted entry (checksum off) is rebuilt and the file repaired
    memcpy(data + 48 + 4 * 9, &nv, 4);
    CHECK(fk_write_file_atomic(path, data, n));
    CHECK(fk_vmap_load_or_build(S, T, FK_VMAP_MINED, dir, &m));
    assert_memory_equal(m, fresh, sizeof(int32_t) * (size_t)ns);
    free(m);
    char *again;
    size_t n2;
    CHECK(fk_read_file(path, &again, &n2));
    assert_int_equal(n2, n);
    assert_memory_equal(again + 48, fresh, 4 * (size_t)ns);  // (little-endian host)
    free(again);

    // truncated
    CHECK(fk_write_file_atomic(path, data, 30));
    CHECK(fk_vmap_load_or_build(S, T, FK_VMAP_MINED, dir, &m));
    assert_memory_equal(m, fresh, sizeof(int32_t) * (size_t)ns);
    free(m);

    // the (S, T) file under the name of (S, U): its fingerprints do not match, so it is rebuilt
    CHECK(fk_read_file(path, &again, &n2));
    char *upath = fk_vmap_cache_path(S, U, FK_VMAP_MINED, dir);
    CHECK(fk_write_file_atomic(upath, again, n2));
    int32_t *fu;
    CHECK(fk_vmap_build(S, U, FK_VMAP_MINED, &fu));
    assert_true(memcmp(fu, fresh, sizeof(int32_t) * (size_t)ns) != 0);
    CHECK(fk_vmap_load_or_build(S, U, FK_VMAP_MINED, dir, &m));
    assert_memory_equal(m, fu, sizeof(int32_t) * (size_t)ns);
    free(m);
    // and under the exact mode's name
    char *epath = fk_vmap_cache_path(S, T, FK_VMAP_EXACT, dir);
    CHECK(fk_write_file_atomic(epath, again, n2));
    int32_t *fe;
    CHECK(fk_vmap_build(S, T, FK_VMAP_EXACT, &fe));
    CHECK(fk_vmap_load_or_build(S, T, FK_VMAP_EXACT, dir, &m));
    assert_memory_equal(m, fe, sizeof(int32_t) * (size_t)ns);
    free(m);

    fk_vmap_mode mode;
    CHECK(fk_vmap_parse_mode("exact", &mode));
    assert_int_equal(mode, FK_VMAP_EXACT);
    assert_int_equal(fk_vmap_parse_mode("fuzzy", &mode), FK_ERR_ARG);
    free(fe); free(fu); free(again); free(upath); free(epath); free(data); free(path); free(fresh);
    fk_tok_free(S);
    fk_tok_free(T);
    fk_tok_free(U);
}

// Llama's SentencePiece vocabulary onto GPT-2's: every exact match has identical bytes, a
// sample checked against the brute force over the whole target vocabulary, the same map for
// one and two threads.
static void test_vmap_real(void **state) {
    (void)state;
    if (!have_shared()) skip();
    fk_tokenizer *S = load_vocab("llama-spm"), *T = load_vocab("gpt-2");
    int32_t *m1, *m2;
    omp_set_num_threads(2);
    double t0 = fk_time_s();
    CHECK(fk_vmap_build(S, T, FK_VMAP_MINED, &m2));
    double dt = fk_time_s() - t0;
    omp_set_num_threads(1);
    CHECK(fk_vmap_build(S, T, FK_VMAP_MINED, &m1));
    int32_t ns = fk_tok_vocab_size(S);
    assert_memory_equal(m1, m2, sizeof(int32_t) * (size_t)ns);
    int exact = 0;
    for (int32_t v = 0; v < ns; v++) {
        assert_true(m1[v] >= 0 && m1[v] < fk_tok_vocab_size(T));
        uint8_t a[256], b[256];
        int na = tok_bytes(S, v, a, sizeof a), nb = tok_bytes(T, m1[v], b, sizeof b);
        exact += na == nb && memcmp(a, b, (size_t)na) == 0;
    }
    fk_rng r;
    fk_rng_seed(&r, 3);
    for (int k = 0; k < 150; k++) {
        int32_t v = k < 3 ? k : (int32_t)fk_rng_below(&r, (uint64_t)ns);
        int32_t want = brute_map(S, T, FK_VMAP_MINED, v);
        if (m1[v] != want) fail_msg("llama-spm token %d maps to %d, brute force gives %d", v, m1[v], want);
    }
    print_message("llama-spm -> gpt-2 MinED map: %.2f s on 2 threads, %d of %d exact\n", dt, exact, ns);
    assert_int_equal(m1[1], fk_tok_bos(T));
    assert_true(exact > ns / 2);
    free(m1);
    free(m2);
    fk_tok_free(S);
    fk_tok_free(T);
}

// ---------------------------------------------------------------- distributions
// "ab cd ab": source "ab" "▁c" "d" "▁ab", target "ab" "Ġcd" "Ġab".
static void test_dists_hand(void **state) {
    (void)state;
    fk_tokenizer *S = tiny_tok(true), *T = tiny_tok(false);
    const char *text = "ab cd ab";
    seq_t s = {4, {tiny_id("ab", 2), tiny_id(" c", 2), tiny_id("d", 1), tiny_id(" ab", 3)}, {0, 2, 4, 5, 8}};
    seq_t t = {3, {tiny_id("ab", 2), tiny_id(" cd", 3), tiny_id(" ab", 3)}, {0, 2, 5, 8}};
    (void)text;
    fk_tokseq fs = as_seq(&s), ft = as_seq(&t);
    fk_alignment al;
    CHECK(fk_align_tokens(S, &fs, T, &ft, FK_ALIGN_OFFSETS, NULL, &al));
    assert_int_equal(al.one_to_one[0], 1);
    assert_int_equal(al.one_to_one[1], 0);
    assert_int_equal(al.one_to_one[2], 1);
    enum { K = 4 };
    uint8_t cnt[3] = {4, 2, 3};
    int32_t ids[3 * K] = {10, 11, 12, 13, /**/ 20, 21, 0, 0, /**/ 30, 31, 32, 0};
    float logp[3 * K] = {-0.5f, -1.5f, -2.0f, -3.0f, -0.1f, -2.5f, 0, 0, -1, -2, -3, 0};
    float ce[3] = {1.0f, 2.0f, 3.0f};
    int32_t vmap[100];
    for (int i = 0; i < 100; i++) vmap[i] = i + 1000;
    vmap[10] = 5;
    vmap[11] = 7;
    vmap[12] = 5;   // collides with 10: probabilities add
    vmap[13] = -1;  // unmapped: dropped
    fk_aligned_dist d;
    CHECK(fk_align_dists(&al, &fs, &ft, vmap, K, cnt, ids, logp, ce, &d));
    assert_int_equal(d.n, 2);
    assert_int_equal(d.k, K);
    assert_int_equal(d.count[0], 2);
    assert_int_equal(d.ids[0], 5);
    assert_int_equal(d.ids[1], 7);
    assert_float_equal(d.logp[0], logf(expf(-0.5f) + expf(-2.0f)), 1e-6);
    assert_float_equal(d.logp[1], -1.5f, 1e-7);
    assert_int_equal(d.count[1], 0);  // "Ġcd" is made of two source tokens: one-hot on "Ġab"
    assert_float_equal(d.ce[0], 3.0f, 1e-6);  // "▁c" + "d" = "Ġcd"
    assert_float_equal(d.ce[1], 3.0f, 1e-6);  // "▁ab"
    fk_aligned_dist_free(&d);
    // too many entries
    cnt[0] = K + 1;
    assert_int_equal(fk_align_dists(&al, &fs, &ft, vmap, K, cnt, ids, logp, ce, &d), FK_ERR_ARG);
    fk_alignment_free(&al);
    fk_tok_free(S);
    fk_tok_free(T);
}

// Random tokenizations: a distribution at target position j comes from the source position
// predicting the token that starts where target token j + 1 does, mapped; ce per target
// token equals a byte-by-byte reference, and the sums are preserved.
static void test_dists_random(void **state) {
    (void)state;
    fk_tokenizer *S = tiny_tok(true), *T = tiny_tok(false);
    int32_t nv = fk_tok_vocab_size(S);
    int32_t vmap[128];
    fk_rng r;
    fk_rng_seed(&r, 21);
    int used = 0;
    for (int it = 0; it < 800; it++) {
        for (int32_t i = 0; i < nv; i++) vmap[i] = fk_rng_below(&r, 8) == 0 ? -1 : (int32_t)fk_rng_below(&r, 40);
        char text[40];
        int len = 1 + (int)fk_rng_below(&r, 30);
        for (int i = 0; i < len; i++) text[i] = SYM[fk_rng_below(&r, 4)];
        seq_t s, t;
        random_seg(&r, text, len, it % 2 ? 10 : 0, &s);
        random_seg(&r, text, len, it % 2 ? 10 : 0, &t);
        fk_tokseq fs = as_seq(&s), ft = as_seq(&t);
        fk_alignment al;
        CHECK(fk_align_tokens(S, &fs, T, &ft, it % 3 == 0 ? FK_ALIGN_DTW : FK_ALIGN_OFFSETS, NULL, &al));
        enum { K = 5 };
        int64_t np = s.n > 0 ? s.n - 1 : 0;
        uint8_t cnt[64];
        int32_t ids[64 * K];
        float logp[64 * K], ce[64];
        double ce_in = 0;
        for (int64_t i = 0; i < np; i++) {
            cnt[i] = (uint8_t)fk_rng_below(&r, K + 1);
            float lp = 0;
            for (int e = 0; e < cnt[i]; e++) {
                ids[i * K + e] = (int32_t)fk_rng_below(&r, (uint64_t)nv);
                lp -= 0.1f + fk_rng_uniform(&r);
                logp[i * K + e] = lp;
            }
            ce[i] = 0.1f + 3 * fk_rng_uniform(&r);
        }
        fk_aligned_dist d;
        CHECK(fk_align_dists(&al, &fs, &ft, vmap, K, cnt, ids, logp, ce, &d));
        assert_int_equal(d.n, t.n > 0 ? t.n - 1 : 0);
        for (int64_t j = 0; j < d.n; j++) {
            if (!al.one_to_one[j] || al.lo[j] >= np) {
                assert_int_equal(d.count[j], 0);
                continue;
            }
            int64_t i = al.lo[j];
            if (it % 3 != 0) assert_int_equal(s.begin[i + 1], t.begin[j + 1]);  // the same next byte
            // expected entries: mapped, summed, sorted
            double p[64] = {0};
            for (int e = 0; e < cnt[i]; e++)
                if (vmap[ids[i * K + e]] >= 0) p[vmap[ids[i * K + e]]] += exp(logp[i * K + e]);
            int want = 0;
            for (int u = 0; u < 64; u++) want += p[u] > 0;
            assert_int_equal(d.count[j], want);
            for (int e = 0; e < d.count[j]; e++) {
                int32_t u = d.ids[j * K + e];
                assert_true(u >= 0 && u < 64 && p[u] > 0);
                assert_float_equal(d.logp[j * K + e], log(p[u]), 1e-5);
                if (e > 0) assert_true(d.logp[j * K + e] <= d.logp[j * K + e - 1]);
                p[u] = 0;  // distinct
            }
            used++;
        }
        // ce: spread each source position over its predicted token's bytes, then sum per target token
        double byte_ce[40] = {0}, tok_ce[64] = {0};
        for (int64_t i = 0; i < np; i++) {
            int64_t b0 = s.begin[i + 1], b1 = s.begin[i + 2];
            ce_in += ce[i];
            if (b1 > b0) {
                for (int64_t b = b0; b < b1; b++) byte_ce[b] += ce[i] / (double)(b1 - b0);
            } else {
                int64_t q = t.n - 1;
                for (int64_t j = 0; j < t.n; j++)
                    if (t.begin[j] <= b0 && b0 < t.begin[j + 1]) { q = j; break; }
                tok_ce[q] += ce[i];
            }
        }
        double ce_out = 0, dropped = tok_ce[0];
        for (int64_t b = t.begin[0]; b < (t.n ? t.begin[1] : 0); b++) dropped += byte_ce[b];
        for (int64_t j = 0; j < d.n; j++) {
            double want = tok_ce[j + 1];
            for (int64_t b = t.begin[j + 1]; b < t.begin[j + 2]; b++) want += byte_ce[b];
            assert_float_equal(d.ce[j], want, 1e-4);
            ce_out += d.ce[j];
        }
        assert_float_equal(ce_out + dropped, ce_in, 1e-3);
        fk_aligned_dist_free(&d);
        fk_alignment_free(&al);
    }
    assert_true(used > 1000);
    fk_tok_free(S);
    fk_tok_free(T);
}

// ---------------------------------------------------------------- real text
static void check_invariants(const fk_alignment *a, const fk_tokseq *s, const fk_tokseq *t, const char *what) {
    for (int64_t j = 0; j < t->n; j++) {
        bool empty = t->begin[j + 1] == t->begin[j];
        if (a->lo[j] < 0 || a->hi[j] > s->n || a->lo[j] > a->hi[j] || (!empty && a->hi[j] == a->lo[j]))
            fail_msg("%s: target token %lld aligned to [%lld, %lld)", what, (long long)j, (long long)a->lo[j], (long long)a->hi[j]);
        if (j > 0 && (a->lo[j] < a->lo[j - 1] || a->hi[j] < a->hi[j - 1]))
            fail_msg("%s: not monotone at target token %lld", what, (long long)j);
    }
}

// Llama (SentencePiece) and GPT-2 (byte-level) on WikiText: the offsets mode marks 1:1
// exactly the target tokens whose span is also a source token's; both modes keep their
// invariants; the two modes agree on most 1:1 positions.
static void test_real_text(void **state) {
    (void)state;
    if (!have_shared()) skip();
    const char *pairs[][2] = {{"llama-spm", "gpt-2"}, {"mpt", "phi-3"}};
    const char *files[] = {CORPORA "/wikitext2/test.txt", CORPORA "/linux/test.txt"};
    for (int p = 0; p < 2; p++) {
        fk_tokenizer *S = load_vocab(pairs[p][0]), *T = load_vocab(pairs[p][1]);
        char *text;
        size_t n;
        CHECK(fk_read_file(files[p], &text, &n));
        if (n > 120000) n = 120000;
        fk_tok_out so = {0}, to = {0};
        CHECK(fk_tok_encode(S, text, n, FK_ENC_ADD_SPECIAL, &so));
        CHECK(fk_tok_encode(T, text, n, FK_ENC_ADD_SPECIAL, &to));
        fk_tokseq s, t;
        int64_t *sb, *tb;
        CHECK(fk_tokseq_from_out(&so, &s, &sb));
        CHECK(fk_tokseq_from_out(&to, &t, &tb));
        fk_alignment ao, ad;
        CHECK(fk_align_tokens(S, &s, T, &t, FK_ALIGN_OFFSETS, NULL, &ao));
        CHECK(fk_align_tokens(S, &s, T, &t, FK_ALIGN_DTW, NULL, &ad));
        check_invariants(&ao, &s, &t, "offsets");
        check_invariants(&ad, &s, &t, "dtw");
        int64_t i = 0, one = 0, both = 0, dtw_one = 0;
        for (int64_t j = 0; j < t.n; j++) {
            if (tb[j + 1] == tb[j]) continue;
            while (i < s.n && (sb[i] < tb[j] || sb[i + 1] == sb[i])) i++;
            bool same = i < s.n && sb[i] == tb[j] && sb[i + 1] == tb[j + 1];
            if (ao.one_to_one[j] != same) fail_msg("%s/%s: target token %lld one_to_one %d, identical span %d", pairs[p][0], pairs[p][1],
                                                   (long long)j, ao.one_to_one[j], same);
            if (same) assert_int_equal(ao.lo[j], i);
            one += same;
            both += same && ad.one_to_one[j] && ad.lo[j] == ao.lo[j];
            dtw_one += ad.one_to_one[j];
        }
        print_message("%s -> %s: %lld target tokens, 1:1 offsets %.3f, dtw %.3f, both %.3f\n", pairs[p][0], pairs[p][1],
                      (long long)t.n, (double)one / (double)t.n, (double)dtw_one / (double)t.n, (double)both / (double)t.n);
        assert_true(one > t.n / 2);
        assert_true(both > one * 9 / 10);
        fk_alignment_free(&ao);
        fk_alignment_free(&ad);
        free(sb);
        free(tb);
        fk_tok_out_free(&so);
        fk_tok_out_free(&to);
        free(text);
        fk_tok_free(S);
        fk_tok_free(T);
    }
}

// A region too big for the DTW (no shared boundary inside 4401 bytes: the source cuts at odd
// bytes, the target at even ones) aligns each target token to the source tokens overlapping it
// in the offsets mode; the DTW mode cuts its windows at boundaries that are not shared.
static void test_overlap_fallback(void **state) {
    (void)state;
    fk_tokenizer *S = tiny_tok(true), *T = tiny_tok(false);
    enum { L = 4401, N = L / 2 + 1 };
    int32_t *sid = malloc(sizeof(int32_t) * N), *tid = malloc(sizeof(int32_t) * N);
    int64_t *sb = malloc(sizeof(int64_t) * (N + 1)), *tb = malloc(sizeof(int64_t) * (N + 1));
    for (int k = 0; k < N; k++) {
        sid[k] = tiny_id(k == 0 ? "a" : "aa", k == 0 ? 1 : 2);
        sb[k] = k == 0 ? 0 : 2 * k - 1;
        tid[k] = tiny_id(k == N - 1 ? "a" : "aa", k == N - 1 ? 1 : 2);
        tb[k] = 2 * k;
    }
    sb[N] = tb[N] = L;
    assert_true((int64_t)N * N > FK_ALIGN_MAX_CELLS);
    fk_tokseq s = {N, sid, sb}, t = {N, tid, tb};
    for (int m = 0; m < 2; m++) {
        fk_alignment a;
        CHECK(fk_align_tokens(S, &s, T, &t, m ? FK_ALIGN_DTW : FK_ALIGN_OFFSETS, NULL, &a));
        if (m) {
            check_invariants(&a, &s, &t, "dtw without shared boundaries");
            fk_alignment_free(&a);
            continue;
        }
        for (int64_t j = 0; j < N; j++) {
            int64_t lo = -1, hi = -1;
            for (int64_t i = 0; i < N; i++)
                if (sb[i] < tb[j + 1] && sb[i + 1] > tb[j]) {
                    if (lo < 0) lo = i;
                    hi = i + 1;
                }
            if (a.lo[j] != lo || a.hi[j] != hi || a.one_to_one[j])
                fail_msg("mode %d: target token %lld aligned to [%lld, %lld), expected [%lld, %lld)", m, (long long)j, (long long)a.lo[j],
                         (long long)a.hi[j], (long long)lo, (long long)hi);
        }
        fk_alignment_free(&a);
    }
    free(sid); free(tid); free(sb); free(tb);
    fk_tok_free(S);
    fk_tok_free(T);
}

// The DTW mode over a long text: windows of FK_ALIGN_DTW_WINDOW target tokens cut at the next
// boundary both tokenizations share; each window aligned on its own gives the same result.
static void test_dtw_windows(void **state) {
    (void)state;
    if (!have_shared()) skip();
    fk_tokenizer *S = load_vocab("llama-spm"), *T = load_vocab("gpt-2");
    char *text;
    size_t n;
    CHECK(fk_read_file(CORPORA "/shakespeare/input.txt", &text, &n));
    n = 40000;
    fk_tok_out so = {0}, to = {0};
    CHECK(fk_tok_encode(S, text, n, FK_ENC_ADD_SPECIAL, &so));
    CHECK(fk_tok_encode(T, text, n, FK_ENC_ADD_SPECIAL, &to));
    fk_tokseq s, t;
    int64_t *sb, *tb;
    CHECK(fk_tokseq_from_out(&so, &s, &sb));
    CHECK(fk_tokseq_from_out(&to, &t, &tb));
    fk_alignment all;
    CHECK(fk_align_tokens(S, &s, T, &t, FK_ALIGN_DTW, NULL, &all));
    int64_t i0 = 0, j0 = 0, windows = 0;
    while (j0 < t.n) {
        int64_t j1 = t.n, i1 = s.n;
        for (int64_t jc = j0 + FK_ALIGN_DTW_WINDOW; jc < t.n; jc++) {
            int64_t i = 0;
            while (i <= s.n && sb[i] < tb[jc]) i++;
            if (i <= s.n && sb[i] == tb[jc] && tb[jc] > tb[j0] && i > i0) {
                j1 = jc;
                while (tb[j1 - 1] == tb[jc]) j1--;
                i1 = i;
                break;
            }
        }
        assert_true(j1 - j0 < 2 * FK_ALIGN_DTW_WINDOW);  // shared boundaries come often in English
        fk_tokseq ws = {i1 - i0, s.ids + i0, sb + i0}, wt = {j1 - j0, t.ids + j0, tb + j0};
        fk_alignment w;
        CHECK(fk_align_tokens(S, &ws, T, &wt, FK_ALIGN_DTW, NULL, &w));
        for (int64_t j = 0; j < w.n; j++)
            if (w.lo[j] + i0 != all.lo[j0 + j] || w.hi[j] + i0 != all.hi[j0 + j] || w.one_to_one[j] != all.one_to_one[j0 + j])
                fail_msg("window %lld: target token %lld aligned to [%lld, %lld) alone, [%lld, %lld) in the whole text", (long long)windows,
                         (long long)(j0 + j), (long long)(w.lo[j] + i0), (long long)(w.hi[j] + i0), (long long)all.lo[j0 + j],
                         (long long)all.hi[j0 + j]);
        fk_alignment_free(&w);
        i0 = i1;
        j0 = j1;
        windows++;
    }
    assert_true(windows > 10);
    fk_alignment_free(&all);
    free(sb);
    free(tb);
    fk_tok_out_free(&so);
    fk_tok_out_free(&to);
    free(text);
    fk_tok_free(S);
    fk_tok_free(T);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_edit_distance),
        cmocka_unit_test(test_hand_cases),
        cmocka_unit_test(test_dtw_brute_force),
        cmocka_unit_test(test_offsets_random),
        cmocka_unit_test(test_overlap_fallback),
        cmocka_unit_test(test_dtw_windows),
        cmocka_unit_test(test_vmap_small),
        cmocka_unit_test(test_vmap_cache),
        cmocka_unit_test(test_vmap_real),
        cmocka_unit_test(test_dists_hand),
        cmocka_unit_test(test_dists_random),
        cmocka_unit_test(test_real_text),
    };
    return cmocka_run_group_tests(tests, tmpdir_setup, tmpdir_teardown);
}
