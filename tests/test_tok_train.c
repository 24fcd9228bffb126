// BPE training: a case worked by hand, merge-for-merge agreement with a brute-force
// reference on random corpora, determinism, exact round trips through the trained
// tokenizer, bad options, and (with ../shared/data) compression on Shakespeare.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "fusekit/tokenizer.h"
#include "tok/tok_internal.h"
#include "test_util.h"

// The merges of a trained tokenizer, in rank order.
static const int32_t (*merges_of(const fk_tokenizer *t))[2] {
    fk_tok_settings s;
    fk_tok_settings_of(t, &s);
    return s.merges;
}

// Internal accessor in src/tok/tokenizer.c: the merges a tokenizer was built with.

static void train_ok(const fk_tok_train_opts *o, const char *const *texts, const size_t *lens, int n, fk_tokenizer **t,
                     fk_tok_train_stats *stats) {
    CHECK(fk_tok_train(o, texts, lens, n, t, stats));
    assert_non_null(*t);
}

// The id of each byte as GPT-2 orders its byte tokens: by mapped code point, i.e. the 188
// printable bytes ('!'..'~', '¡'..'¬', '®'..'ÿ') in byte order, then the other 68 in byte order.
static bool printable(int b) { return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE; }
static void byte_ids(int n_spec, int32_t id[256]) {
    int k = n_spec;
    for (int b = 0; b < 256; b++) if (printable(b)) id[b] = k++;
    for (int b = 0; b < 256; b++) if (!printable(b)) id[b] = k++;
}

// ------------------------------------------------------------------ worked by hand
// Words (each text is one word, so no spaces): hug x10, pug x5, pun x12, bun x4, hugs x5.
// One special "<s>" (id 0); byte tokens from id 1; merges from id 257.
//   pairs: u g 20, p u 17, u n 16, h u 15, g s 5, b u 4     -> merge 1: (u, g)   = 257 "ug"
//   h ug 15, u n 16, p u 12, p ug 5, ug s 5, b u 4          -> merge 2: (u, n)   = 258 "un"
//   h ug 15, p un 12, p ug 5, ug s 5, b un 4                -> merge 3: (h, ug)  = 259 "hug"
//   p un 12, p ug 5, hug s 5, b un 4                        -> merge 4: (p, un)  = 260 "pun"
//   p ug 5, hug s 5 (tie: left id p=80 < hug=259), b un 4   -> merge 5: (p, ug)  = 261 "pug"
//   hug s 5, b un 4                                         -> merge 6: (hug, s) = 262 "hugs"
//   b un 4                                                  -> merge 7: (b, un)  = 263 "bun"
// min_frequency 5 stops before merge 7; vocab_size 260 after merge 3.
static int hand_texts(const char **texts) {
    int n = 0;
    for (int i = 0; i < 10; i++) texts[n++] = "hug";
    for (int i = 0; i < 5; i++) texts[n++] = "pug";
    for (int i = 0; i < 12; i++) texts[n++] = "pun";
    for (int i = 0; i < 4; i++) texts[n++] = "bun";
    for (int i = 0; i < 5; i++) texts[n++] = "hugs";
    return n;
}

static void test_hand(void **s) {
    (void)s;
    const char *texts[64];
    int n = hand_texts(texts);
    const char *specials[] = {"<s>"};
    fk_tok_train_opts o = {.vocab_size = 300, .specials = specials, .n_specials = 1};
    fk_tokenizer *t;
    fk_tok_train_stats st;
    train_ok(&o, texts, NULL, n, &t, &st);
    int32_t B[256];
    byte_ids(1, B);
    assert_int_equal(B['!'], 1);
    assert_int_equal(B['p'], 1 + 'p' - '!');
    const int32_t want[7][2] = {{B['u'], B['g']}, {B['u'], B['n']}, {B['h'], 257}, {B['p'], 258},
                                {B['p'], 257},    {259, B['s']},    {B['b'], 258}};
    const char *want_piece[7] = {"ug", "un", "hug", "pun", "pug", "hugs", "bun"};
    assert_int_equal(fk_tok_n_merges(t), 7);
    assert_int_equal(fk_tok_vocab_size(t), 264);
    const int32_t (*m)[2] = merges_of(t);
    for (int i = 0; i < 7; i++) {
        assert_int_equal(m[i][0], want[i][0]);
        assert_int_equal(m[i][1], want[i][1]);
        uint32_t len;
        const char *p = fk_tok_piece(t, 257 + i, &len);
        assert_int_equal(len, strlen(want_piece[i]));
        assert_memory_equal(p, want_piece[i], len);
    }
    assert_int_equal(st.bytes, 10 * 3 + 5 * 3 + 12 * 3 + 4 * 3 + 5 * 4);
    assert_int_equal(st.words, 36);
    assert_int_equal(st.unique_words, 5);
    assert_int_equal(st.merges, 7);
    assert_int_equal(fk_tok_type(t, 0), FK_TT_CONTROL);
    assert_int_equal(fk_tok_type(t, 1), FK_TT_NORMAL);
    assert_int_equal(fk_tok_bos(t), 0);
    assert_int_equal(fk_tok_eos(t), 0);
    assert_int_equal(fk_tok_kind_of(t), FK_TOK_BPE);
    assert_string_equal(fk_tok_pre(t), "gpt-2");
    fk_tok_free(t);

    o.min_frequency = 5;
    train_ok(&o, texts, NULL, n, &t, NULL);
    assert_int_equal(fk_tok_n_merges(t), 6);
    fk_tok_free(t);
    o.min_frequency = 0;
    o.vocab_size = 260;
    train_ok(&o, texts, NULL, n, &t, NULL);
    assert_int_equal(fk_tok_n_merges(t), 3);
    assert_int_equal(fk_tok_vocab_size(t), 260);
    fk_tok_free(t);

    // Overlaps merge left to right: "aaa" -> "aa a", "aaaa" -> "aa aa". No specials: merges from 256.
    //   (a, a) 2 + 3 = 5 -> 256; then (256, a) 1 and (256, 256) 1 tie: right id a < 256 first.
    const char *aa[] = {"aaa", "aaaa"};
    fk_tok_train_opts o2 = {.vocab_size = 300, .min_frequency = 1};
    train_ok(&o2, aa, NULL, 2, &t, NULL);
    byte_ids(0, B);
    const int32_t want2[3][2] = {{B['a'], B['a']}, {256, B['a']}, {256, 256}};
    assert_int_equal(fk_tok_n_merges(t), 3);
    m = merges_of(t);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(m[i][0], want2[i][0]);
        assert_int_equal(m[i][1], want2[i][1]);
    }
    assert_int_equal(fk_tok_bos(t), -1);
    fk_tok_free(t);

    // Pieces are stored in GPT-2's printable form: " a" is "Ġa".
    const char *sp[] = {"a a a a"};
    train_ok(&o2, sp, NULL, 1, &t, NULL);
    assert_int_equal(fk_tok_n_merges(t), 1);
    uint32_t len;
    const char *p = fk_tok_piece(t, 256, &len);
    assert_int_equal(len, 3);
    assert_memory_equal(p, "\xC4\xA0" "a", 3);
    p = fk_tok_piece(t, 0, &len);
    assert_int_equal(len, 1);
    assert_memory_equal(p, "!", 1);
    fk_tok_free(t);
}

// ------------------------------------------------------------------ brute-force reference
typedef struct {
    int32_t *s;
    int n;
    int64_t f;
} rword;

typedef struct {
    rword *w;
    int nw;
    char **tok;  // raw bytes of each token
    int *toklen;
    int nv, n_spec;
    int32_t (*merges)[2];
    int nm;
} ref_bpe;

static void ref_add_tok(ref_bpe *r, const char *s, int n) {
    r->tok = realloc(r->tok, sizeof *r->tok * (size_t)(r->nv + 1));
    r->toklen = realloc(r->toklen, sizeof *r->toklen * (size_t)(r->nv + 1));
    r->tok[r->nv] = malloc((size_t)n + 1);
    memcpy(r->tok[r->nv], s, (size_t)n);
    r->toklen[r->nv++] = n;
}

static void ref_add_word(ref_bpe *r, const char *s, int n, const int32_t *B) {
    for (int i = 0; i < r->nw; i++) {
        rword *w = &r->w[i];
        bool eq = w->n == n;
        for (int k = 0; eq && k < n; k++) eq = w->s[k] == B[(unsigned char)s[k]];
        if (eq) { w->f++; return; }
    }
    r->w = realloc(r->w, sizeof *r->w * (size_t)(r->nw + 1));
    rword *w = &r->w[r->nw++];
    w->s = malloc(sizeof(int32_t) * (size_t)n);
    for (int k = 0; k < n; k++) w->s[k] = B[(unsigned char)s[k]];
    w->n = n;
    w->f = 1;
}

static int char_class(char c) { return c >= 'a' && c <= 'z' ? 0 : c >= '0' && c <= '9' ? 1 : 2; }

// GPT-2's regex on text of lowercase letters, digits, other ASCII punctuation (no
// apostrophes) and spaces: " ?" + a run of one class; a run of k spaces before a
// non-space gives k - 1 spaces as a piece; trailing spaces are one piece.
static void ref_split(ref_bpe *r, const char *s, int n, const int32_t *B) {
    for (int i = 0; i < n;) {
        int j = i;
        if (s[i] == ' ') {
            while (j < n && s[j] == ' ') j++;
            if (j == n) { ref_add_word(r, s + i, n - i, B); break; }
            if (j - i > 1) { ref_add_word(r, s + i, j - 1 - i, B); i = j - 1; }
            j = i + 1;
        }
        int c = char_class(s[j]);
        while (j < n && s[j] != ' ' && char_class(s[j]) == c) j++;
        ref_add_word(r, s + i, j - i, B);
        i = j;
    }
}

static bool ref_is_special(const ref_bpe *r, const char *s, int n) {
    for (int i = 0; i < r->n_spec; i++)
        if (r->toklen[i] == n && memcmp(r->tok[i], s, (size_t)n) == 0) return true;
    return false;
}

// After every merge: recount every pair over every word, take the highest count (ties: the
// smallest (left, right)), skip pairs that spell a special token, merge left to right.
static void ref_train(ref_bpe *r, const char *const *texts, int n_texts, const char *const *specials, int n_spec,
                      int vocab_size, int64_t min_freq) {
    memset(r, 0, sizeof *r);
    int32_t B[256];
    byte_ids(n_spec, B);
    r->n_spec = n_spec;
    for (int i = 0; i < n_spec; i++) ref_add_tok(r, specials[i], (int)strlen(specials[i]));
    for (int k = n_spec; k < n_spec + 256; k++)
        for (int b = 0; b < 256; b++)
            if (B[b] == k) { char c = (char)b; ref_add_tok(r, &c, 1); }
    for (int i = 0; i < n_texts; i++) ref_split(r, texts[i], (int)strlen(texts[i]), B);
    if (min_freq <= 0) min_freq = 2;
    r->merges = malloc(sizeof *r->merges * (size_t)(vocab_size + 1));
    char buf[4096];
    while (r->nv < vocab_size) {
        int V = r->nv;
        int64_t *cnt = calloc((size_t)V * V, sizeof *cnt);
        for (int i = 0; i < r->nw; i++)
            for (int k = 0; k + 1 < r->w[i].n; k++) cnt[(size_t)r->w[i].s[k] * V + r->w[i].s[k + 1]] += r->w[i].f;
        int64_t best = 0;
        int ba = -1, bb = -1;
        for (int a = 0; a < V; a++)
            for (int b = 0; b < V; b++) {
                if (cnt[(size_t)a * V + b] <= best) continue;
                int l = r->toklen[a] + r->toklen[b];
                memcpy(buf, r->tok[a], (size_t)r->toklen[a]);
                memcpy(buf + r->toklen[a], r->tok[b], (size_t)r->toklen[b]);
                if (ref_is_special(r, buf, l)) continue;
                best = cnt[(size_t)a * V + b];
                ba = a;
                bb = b;
            }
        free(cnt);
        if (ba < 0 || best < min_freq) break;
        int l = r->toklen[ba] + r->toklen[bb];
        memcpy(buf, r->tok[ba], (size_t)r->toklen[ba]);
        memcpy(buf + r->toklen[ba], r->tok[bb], (size_t)r->toklen[bb]);
        int c = -1;
        for (int k = n_spec; k < r->nv && c < 0; k++)
            if (r->toklen[k] == l && memcmp(r->tok[k], buf, (size_t)l) == 0) c = k;
        if (c < 0) { ref_add_tok(r, buf, l); c = r->nv - 1; }
        r->merges[r->nm][0] = ba;
        r->merges[r->nm][1] = bb;
        r->nm++;
        for (int i = 0; i < r->nw; i++) {
            rword *w = &r->w[i];
            int o = 0;
            for (int k = 0; k < w->n;) {
                if (k + 1 < w->n && w->s[k] == ba && w->s[k + 1] == bb) { w->s[o++] = c; k += 2; }
                else w->s[o++] = w->s[k++];
            }
            w->n = o;
        }
    }
}

static void ref_free(ref_bpe *r) {
    for (int i = 0; i < r->nw; i++) free(r->w[i].s);
    for (int i = 0; i < r->nv; i++) free(r->tok[i]);
    free(r->w); free(r->tok); free(r->toklen); free(r->merges);
}

// Words of 1-3 runs (letters from a small alphabet, digits, punctuation), mostly single spaces.
static char *random_text(fk_rng *g, int n_words) {
    char *s = malloc((size_t)n_words * 20 + 8);
    size_t o = 0;
    for (int w = 0; w < n_words; w++) {
        if (w > 0) {
            s[o++] = ' ';
            if (fk_rng_below(g, 12) == 0) s[o++] = ' ';
        }
        int runs = 1 + (int)fk_rng_below(g, 3) / 2 + (fk_rng_below(g, 8) == 0);
        for (int r = 0; r < runs; r++) {
            int cls = r == 0 ? (fk_rng_below(g, 6) == 0 ? 1 : 0) : (int)fk_rng_below(g, 3);
            int len = 1 + (int)fk_rng_below(g, 4);
            for (int k = 0; k < len; k++) {
                if (cls == 0) s[o++] = "aaabbc"[fk_rng_below(g, 6)];
                else if (cls == 1) s[o++] = "112"[fk_rng_below(g, 3)];
                else s[o++] = ".,!"[fk_rng_below(g, 3)];
            }
        }
    }
    if (fk_rng_below(g, 3) == 0) { s[o++] = ' '; s[o++] = ' '; }
    s[o] = 0;
    return s;
}

static void test_reference(void **st) {
    (void)st;
    for (uint64_t seed = 1; seed <= 12; seed++) {
        fk_rng g;
        fk_rng_seed(&g, seed);
        int n_texts = 1 + (int)fk_rng_below(&g, 4);
        char *texts[4];
        for (int i = 0; i < n_texts; i++) texts[i] = random_text(&g, 20 + (int)fk_rng_below(&g, 300));
        // "ab" is spelled by the pair (a, b) of common words: it must never be merged.
        const char *specials[] = {"<|endoftext|>", "ab"};
        int n_spec = (int)(seed % 3);
        int64_t min_freq = (int64_t)(seed % 4);  // 0 means 2
        int vocab_size = 256 + n_spec + 10 + (int)fk_rng_below(&g, 200);
        ref_bpe r;
        ref_train(&r, (const char *const *)texts, n_texts, specials, n_spec, vocab_size, min_freq);
        fk_tok_train_opts o = {.vocab_size = vocab_size, .specials = specials, .n_specials = n_spec, .min_frequency = min_freq};
        fk_tokenizer *t;
        fk_tok_train_stats stats;
        train_ok(&o, (const char *const *)texts, NULL, n_texts, &t, &stats);
        assert_int_equal(stats.unique_words, r.nw);
        assert_int_equal(fk_tok_n_merges(t), r.nm);
        assert_int_equal(stats.merges, r.nm);
        assert_int_equal(fk_tok_vocab_size(t), r.nv);
        const int32_t (*m)[2] = merges_of(t);
        for (int i = 0; i < r.nm; i++)
            if (m[i][0] != r.merges[i][0] || m[i][1] != r.merges[i][1])
                fail_msg("seed %llu merge %d: (%d, %d), reference (%d, %d)", (unsigned long long)seed, i, m[i][0], m[i][1],
                         r.merges[i][0], r.merges[i][1]);
        char buf[4096];
        for (int i = 0; i < r.nv; i++) {
            size_t k = fk_tok_token_bytes(t, i, buf, sizeof buf);
            if (k != (size_t)r.toklen[i] || memcmp(buf, r.tok[i], k) != 0)
                fail_msg("seed %llu token %d: '%.*s', reference '%.*s'", (unsigned long long)seed, i, (int)k, buf, r.toklen[i], r.tok[i]);
            assert_int_equal(fk_tok_type(t, i), i < n_spec ? FK_TT_CONTROL : FK_TT_NORMAL);
        }
        if (n_spec == 2) {  // the special, and no merge spells it (a, b would be among the first merges)
            assert_int_equal(fk_tok_find(t, "ab", 2), 1);
            int32_t B[256];
            byte_ids(n_spec, B);
            for (int i = 0; i < r.nm; i++) assert_false(m[i][0] == B['a'] && m[i][1] == B['b']);
        }
        assert_true(r.nm > 5);
        fk_tok_free(t);
        ref_free(&r);
        for (int i = 0; i < n_texts; i++) free(texts[i]);
    }
}

// ------------------------------------------------------------------ determinism
static void test_determinism(void **st) {
    (void)st;
    fk_rng g;
    fk_rng_seed(&g, 99);
    char *texts[3];
    for (int i = 0; i < 3; i++) texts[i] = random_text(&g, 3000);
    const char *specials[] = {"<|endoftext|>"};
    fk_tok_train_opts o = {.vocab_size = 700, .specials = specials, .n_specials = 1};
    fk_tokenizer *a, *b;
    train_ok(&o, (const char *const *)texts, NULL, 3, &a, NULL);
    train_ok(&o, (const char *const *)texts, NULL, 3, &b, NULL);
    assert_int_equal(fk_tok_vocab_size(a), fk_tok_vocab_size(b));
    assert_int_equal(fk_tok_n_merges(a), fk_tok_n_merges(b));
    assert_true(fk_tok_n_merges(a) > 300);
    for (int32_t i = 0; i < fk_tok_vocab_size(a); i++) {
        uint32_t la, lb;
        const char *pa = fk_tok_piece(a, i, &la), *pb = fk_tok_piece(b, i, &lb);
        assert_int_equal(la, lb);
        assert_memory_equal(pa, pb, la);
    }
    assert_memory_equal(merges_of(a), merges_of(b), sizeof(int32_t) * 2 * (size_t)fk_tok_n_merges(a));
    assert_true(fk_tok_fingerprint(a) == fk_tok_fingerprint(b));
    fk_tok_free(a);
    fk_tok_free(b);
    for (int i = 0; i < 3; i++) free(texts[i]);
}

// ------------------------------------------------------------------ round trips
static void roundtrip(const fk_tokenizer *t, const char *text, size_t n, unsigned flags) {
    fk_tok_out out = {0};
    CHECK(fk_tok_encode(t, text, n, flags, &out));
    int64_t pos = 0;
    for (int64_t i = 0; i < out.n; i++) {  // the spans tile the input
        assert_int_equal(out.begin[i], pos);
        assert_true(out.end[i] > out.begin[i]);
        pos = out.end[i];
        if (!(flags & FK_ENC_PARSE_SPECIAL)) assert_int_not_equal(fk_tok_type(t, out.ids[i]), FK_TT_CONTROL);
    }
    assert_int_equal(pos, (int64_t)n);
    char *dec;
    size_t dn;
    CHECK(fk_tok_decode(t, out.ids, out.n, 0, &dec, &dn));
    assert_int_equal(dn, n);
    assert_memory_equal(dec, text, n);
    free(dec);
    fk_tok_out_free(&out);
}

static void test_roundtrip(void **st) {
    (void)st;
    const char *train[] = {
        "the cat sat on the mat. the dog sat on the log! 123 456 the cat and the dog",
        "then the cat saw the dog, and the dog saw the cat; they sat there together.",
        "the theme of the thesis: the theory that the thermometer is there.",
    };
    const char *specials[] = {"<|endoftext|>", "<pad>"};
    fk_tok_train_opts o = {.vocab_size = 330, .specials = specials, .n_specials = 2};
    fk_tokenizer *t;
    train_ok(&o, train, NULL, 3, &t, NULL);
    assert_int_equal(fk_tok_type(t, 0), FK_TT_CONTROL);
    assert_int_equal(fk_tok_type(t, 1), FK_TT_CONTROL);
    assert_int_equal(fk_tok_bos(t), 0);
    assert_int_equal(fk_tok_eos(t), 0);
    for (int i = 0; i < 3; i++) {
        roundtrip(t, train[i], strlen(train[i]), 0);
        fk_tok_out out = {0};
        CHECK(fk_tok_encode(t, train[i], strlen(train[i]), 0, &out));
        assert_true(out.n < (int64_t)strlen(train[i]) * 2 / 3);  // trained text compresses
        fk_tok_out_free(&out);
    }
    static const char bin[] = "bytes \x00\x01\x7f\xff\xfe and\ttabs\r\n";
    roundtrip(t, bin, sizeof bin - 1, 0);
    const char *unicode = "caf\xC3\xA9 \xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E \xF0\x9F\x99\x82 na\xC3\xAFve";
    roundtrip(t, unicode, strlen(unicode), 0);
    const char *invalid = "bad \xC3\x28 \x80\xBF lone \xF0\x9F end \xED\xA0\x80 \xC0\xAF";
    roundtrip(t, invalid, strlen(invalid), 0);
    roundtrip(t, "", 0, 0);
    char all[256];
    for (int b = 0; b < 256; b++) all[b] = (char)(255 - b);
    roundtrip(t, all, sizeof all, 0);

    // Specials: control tokens, matched only when parsing specials, skipped on request.
    const char *sp = "the cat<|endoftext|>the dog<pad>";
    roundtrip(t, sp, strlen(sp), 0);
    roundtrip(t, sp, strlen(sp), FK_ENC_PARSE_SPECIAL);
    fk_tok_out out = {0};
    CHECK(fk_tok_encode(t, sp, strlen(sp), FK_ENC_PARSE_SPECIAL | FK_ENC_ADD_SPECIAL, &out));
    int n0 = 0, n1 = 0;
    for (int64_t i = 0; i < out.n; i++) { n0 += out.ids[i] == 0; n1 += out.ids[i] == 1; }
    assert_int_equal(n0, 1);  // add_bos / add_eos are off
    assert_int_equal(n1, 1);
    char *dec;
    size_t dn;
    CHECK(fk_tok_decode(t, out.ids, out.n, FK_DEC_SKIP_SPECIAL, &dec, &dn));
    assert_int_equal(dn, strlen("the catthe dog"));
    assert_memory_equal(dec, "the catthe dog", dn);
    free(dec);
    fk_tok_out_free(&out);
    fk_tok_free(t);
}

// ------------------------------------------------------------------ progress
typedef struct { int calls; int32_t last, target; bool monotonic; } progress_log;
static void on_progress(void *ctx, int32_t done, int32_t target) {
    progress_log *p = ctx;
    if (done < p->last) p->monotonic = false;
    p->calls++;
    p->last = done;
    p->target = target;
}

static void test_progress(void **st) {
    (void)st;
    fk_rng g;
    fk_rng_seed(&g, 7);
    char *text = random_text(&g, 6000);
    progress_log log = {.monotonic = true};
    fk_tok_train_opts o = {.vocab_size = 256 + 350, .progress = on_progress, .progress_ctx = &log};
    fk_tokenizer *t;
    fk_tok_train_stats stats;
    train_ok(&o, (const char *const *)&text, NULL, 1, &t, &stats);
    assert_true(stats.merges > 250);
    assert_true(log.monotonic);
    assert_int_equal(log.last, stats.merges);
    assert_int_equal(log.target, 350);
    assert_true(log.calls >= stats.merges / 100 && log.calls <= stats.merges / 100 + 1);
    assert_int_equal(stats.bytes, (int64_t)strlen(text));
    assert_true(stats.seconds_pretokenize >= 0 && stats.seconds_merge >= 0);
    fk_tok_free(t);
    free(text);
}

// ------------------------------------------------------------------ bad options
static void expect_arg(const fk_tok_train_opts *o, const char *const *texts, const size_t *lens, int n, const char *needle) {
    fk_tokenizer *t = (fk_tokenizer *)&t;  // must be reset to NULL
    fk_status st = fk_tok_train(o, texts, lens, n, &t, NULL);
    assert_int_equal(st, FK_ERR_ARG);
    assert_null(t);
    if (!strstr(fk_last_error(), needle)) fail_msg("message '%s' does not mention '%s'", fk_last_error(), needle);
}

static void test_bad_options(void **st) {
    (void)st;
    const char *texts[] = {"some text", "more text"};
    const char *specials[] = {"<s>", "</s>", "<s>", "", "!", "\xC4\xA0"};
    fk_tok_train_opts o = {.vocab_size = 257, .specials = specials, .n_specials = 2};
    expect_arg(&o, texts, NULL, 2, "vocab_size 257");
    o.vocab_size = 300;
    o.n_specials = 3;
    expect_arg(&o, texts, NULL, 2, "'<s>' given twice");
    fk_tok_train_opts e = {.vocab_size = 300, .specials = specials + 3, .n_specials = 1};
    expect_arg(&e, texts, NULL, 2, "empty");
    e.specials = specials + 4;  // "!" is the byte token of '!'
    expect_arg(&e, texts, NULL, 2, "'!'");
    e.specials = specials + 5;  // "Ġ" is the byte token of ' '
    expect_arg(&e, texts, NULL, 2, "byte token");
    e.specials = NULL;
    expect_arg(&e, texts, NULL, 2, "no special token array");
    fk_tok_train_opts p = {.vocab_size = 300, .pre = "no-such-preset"};
    expect_arg(&p, texts, NULL, 2, "no-such-preset");
    p.pre = NULL;
    p.min_frequency = -1;
    expect_arg(&p, texts, NULL, 2, "min_frequency");
    p.min_frequency = 0;
    p.n_specials = -1;
    expect_arg(&p, texts, NULL, 2, "negative");
    p.n_specials = 0;
    p.vocab_size = 0;
    expect_arg(&p, texts, NULL, 2, "vocab_size 0");
    p.vocab_size = 300;
    expect_arg(&p, texts, NULL, -1, "negative text count");
    expect_arg(&p, NULL, NULL, 2, "no text array");
    const char *holes[] = {"text", NULL};
    expect_arg(&p, holes, NULL, 2, "text 1 is NULL");
    expect_arg(NULL, texts, NULL, 2, "no options");
    assert_int_equal(fk_tok_train(&p, texts, NULL, 2, NULL, NULL), FK_ERR_ARG);

    // Not errors: no texts at all (the bytes only), explicit lengths, a NULL text of length 0.
    fk_tokenizer *t;
    train_ok(&p, NULL, NULL, 0, &t, NULL);
    assert_int_equal(fk_tok_vocab_size(t), 256);
    assert_int_equal(fk_tok_n_merges(t), 0);
    fk_tok_free(t);
    const size_t lens[] = {4, 0};
    train_ok(&p, holes, lens, 2, &t, NULL);
    fk_tok_free(t);
}

// ------------------------------------------------------------------ real text
static void test_shakespeare(void **st) {
    (void)st;
    const char *path = FK_SHARED_DATA "/corpora/shakespeare/input.txt";
    if (!fk_path_exists(path)) {
        print_message("skipping: %s is absent (../shared/data not present)\n", path);
        skip();
    }
    char *data;
    size_t n;
    CHECK(fk_read_file(path, &data, &n));
    assert_true(n > 300000);
    const size_t n_train = 200000, n_eval = 100000;
    const char *texts[] = {data};
    const size_t lens[] = {n_train};
    const char *specials[] = {"<|endoftext|>"};
    fk_tok_train_opts o = {.vocab_size = 1000, .specials = specials, .n_specials = 1};
    fk_tokenizer *t;
    fk_tok_train_stats stats;
    train_ok(&o, texts, lens, 1, &t, &stats);
    assert_int_equal(fk_tok_vocab_size(t), 1000);
    assert_int_equal(stats.bytes, (int64_t)n_train);
    fk_tok_out out = {0};
    CHECK(fk_tok_encode(t, data, n_train, 0, &out));
    double train_ratio = (double)out.n / (double)n_train;
    fk_tok_out_clear(&out);
    CHECK(fk_tok_encode(t, data + n_train, n_eval, 0, &out));  // held-out text
    double eval_ratio = (double)out.n / (double)n_eval;
    print_message("shakespeare 200 KB, 1000 tokens: %.3f tokens/byte on the training text, %.3f held out "
                  "(%.3f s pretokenize, %.3f s merge)\n", train_ratio, eval_ratio, stats.seconds_pretokenize,
                  stats.seconds_merge);
    assert_true(train_ratio < 0.5);
    assert_true(eval_ratio < 0.5);
    fk_tok_out_free(&out);
    roundtrip(t, data + n_train, n_eval, 0);
    fk_tok_free(t);
    free(data);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hand),        cmocka_unit_test(test_reference), cmocka_unit_test(test_determinism),
        cmocka_unit_test(test_roundtrip),   cmocka_unit_test(test_progress),  cmocka_unit_test(test_bad_options),
        cmocka_unit_test(test_shakespeare),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

