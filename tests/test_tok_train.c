// BPE training: a case worked by hand, merge-for-merge agreement with a brute-force
// reference on random corpora, determinism, exact round trips through the trained
// tokenizer, bad options, and (with ../shared/data) compression on Shakespeare.
// SentencePiece-style training: a case worked by hand, round trips with byte fallback,
// piece shapes (no inner "▁", split digits, character coverage), determinism, a save/load
// round trip through tokenizer.json, bad options and compression.
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
// a and b are the same tokenizer: pieces, scores, merges, fingerprint.
static void assert_same_tokenizer(const fk_tokenizer *a, const fk_tokenizer *b) {
    assert_same_pieces(a, b);
    assert_int_equal(fk_tok_n_merges(a), fk_tok_n_merges(b));
    for (int32_t i = 0; i < fk_tok_vocab_size(a); i++) assert_true(fk_tok_score(a, i) == fk_tok_score(b, i));
    assert_memory_equal(merges_of(a), merges_of(b), sizeof(int32_t) * 2 * (size_t)fk_tok_n_merges(a));
    assert_true(fk_tok_fingerprint(a) == fk_tok_fingerprint(b));
}

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
    assert_true(fk_tok_n_merges(a) > 300);
    assert_same_tokenizer(a, b);
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
        // SPM: a lone dummy-prefix "▁" first covers no input
        bool prefix = i == 0 && fk_tok_kind_of(t) == FK_TOK_SPM && out.ids[i] == fk_tok_find(t, "\xE2\x96\x81", 3);
        assert_true(out.end[i] > out.begin[i] || prefix);
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

// ------------------------------------------------------------------ SentencePiece-style
#define SP "\xE2\x96\x81"  // "▁"

// Ids of text's tokens (malloc'd, *n of them).
static int32_t *encode_ids(const fk_tokenizer *t, const char *text, int64_t *n) {
    fk_tok_out out = {0};
    CHECK(fk_tok_encode(t, text, strlen(text), 0, &out));
    *n = out.n;
    int32_t *ids = malloc(sizeof *ids * (size_t)(out.n + 1));
    if (out.n) memcpy(ids, out.ids, sizeof *ids * (size_t)out.n);
    fk_tok_out_free(&out);
    return ids;
}

static void expect_ids(const fk_tokenizer *t, const char *text, const int32_t *want, int64_t n_want) {
    int64_t n;
    int32_t *ids = encode_ids(t, text, &n);
    if (n != n_want) fail_msg("'%s': %lld tokens, expected %lld", text, (long long)n, (long long)n_want);
    for (int64_t i = 0; i < n; i++)
        if (ids[i] != want[i]) fail_msg("'%s' token %lld: %d, expected %d", text, (long long)i, ids[i], want[i]);
    free(ids);
}

static void expect_piece(const fk_tokenizer *t, int32_t id, const char *want) {
    uint32_t len;
    const char *p = fk_tok_piece(t, id, &len);
    if (len != strlen(want) || memcmp(p, want, len) != 0) fail_msg("token %d is '%.*s', expected '%s'", id, (int)len, p, want);
}

// Texts (each gets the dummy prefix; no split_digits):
//   "hug hug hug"   -> ▁hug ▁hug ▁hug
//   "pug hug"       -> ▁pug ▁hug
//   "pun pun\n\nhug" -> ▁pun ▁pun \n\n hug   (a run of newlines is a word; "hug" has no ▁)
//   "bun 12"        -> ▁bun ▁12
// Words: ▁hug 4, ▁pun 2, ▁pug 1, \n\n 1, hug 1, ▁bun 1, ▁12 1 (11 words, 7 distinct).
// Characters: u 9, ▁ 9, g 6, h 5, n 3, p 3, \n 2, 1 1, 2 1, b 1; ties by code point (u <
// U+2581, n < p, '1' < '2' < 'b') give ids 259.. : u 259, ▁ 260, g 261, h 262, n 263, p 264,
// \n 265, 1 266, 2 267, b 268. Merges from 269 (min_frequency 2):
//   u g 6, h u 5, ▁ h 4, ▁ p 3, p u 3, u n 3           -> 1: (u, g)    = 269 "ug"
//   h ug 5 (4 + 1 from "hug"), ▁ h 4, ▁ p 3, u n 3      -> 2: (h, ug)   = 270 "hug"
//   ▁ hug 4, ▁ p 3, u n 3                              -> 3: (▁, hug)  = 271 "▁hug"
//   ▁ p 3, u n 3 (tie: left u 259 < ▁ 260)             -> 4: (u, n)    = 272 "un"
//   ▁ p 3, p un 2                                      -> 5: (▁, p)    = 273 "▁p"
//   ▁p un 2, then every pair is seen once              -> 6: (▁p, un)  = 274 "▁pun"
// Scores: merge r (0-based) -r; characters -(6 + index): u -6 ... b -15.
static const char *const spm_hand[] = {"hug hug hug", "pug hug", "pun pun\n\nhug", "bun 12"};

static void test_spm_hand(void **s) {
    (void)s;
    fk_tok_train_opts o = {.kind = FK_TOK_SPM, .vocab_size = 400};
    fk_tokenizer *t;
    fk_tok_train_stats st;
    train_ok(&o, spm_hand, NULL, 4, &t, &st);
    assert_int_equal(fk_tok_kind_of(t), FK_TOK_SPM);
    assert_int_equal(fk_tok_vocab_size(t), 275);
    assert_int_equal(fk_tok_n_merges(t), 6);
    assert_int_equal(st.merges, 6);
    assert_int_equal(st.words, 11);
    assert_int_equal(st.unique_words, 7);
    assert_int_equal(st.bytes, 11 + 7 + 12 + 6);
    // specials and byte tokens
    expect_piece(t, 0, "<unk>");
    expect_piece(t, 1, "<s>");
    expect_piece(t, 2, "</s>");
    assert_int_equal(fk_tok_type(t, 0), FK_TT_UNKNOWN);
    assert_int_equal(fk_tok_type(t, 1), FK_TT_CONTROL);
    assert_int_equal(fk_tok_type(t, 2), FK_TT_CONTROL);
    assert_int_equal(fk_tok_bos(t), 1);
    assert_int_equal(fk_tok_eos(t), 2);
    expect_piece(t, 3, "<0x00>");
    expect_piece(t, 3 + 0x0A, "<0x0A>");
    expect_piece(t, 258, "<0xFF>");
    for (int32_t i = 3; i < 259; i++) {
        assert_int_equal(fk_tok_type(t, i), FK_TT_BYTE);
        assert_true(fk_tok_score(t, i) == 0.0f);
    }
    for (int32_t i = 0; i < 3; i++) assert_true(fk_tok_score(t, i) == 0.0f);
    // characters, then merges
    const char *chars[] = {"u", SP, "g", "h", "n", "p", "\n", "1", "2", "b"};
    for (int i = 0; i < 10; i++) {
        expect_piece(t, 259 + i, chars[i]);
        assert_int_equal(fk_tok_type(t, 259 + i), FK_TT_NORMAL);
        assert_true(fk_tok_score(t, 259 + i) == (float)-(6 + i));
    }
    const char *pieces[] = {"ug", "hug", SP "hug", "un", SP "p", SP "pun"};
    const int32_t want[6][2] = {{259, 261}, {262, 269}, {260, 270}, {259, 263}, {260, 264}, {273, 272}};
    const int32_t (*m)[2] = merges_of(t);
    for (int i = 0; i < 6; i++) {
        expect_piece(t, 269 + i, pieces[i]);
        assert_true(fk_tok_score(t, 269 + i) == (float)-i);
        assert_int_equal(m[i][0], want[i][0]);
        assert_int_equal(m[i][1], want[i][1]);
    }
    // encoding: "▁" first, spaces as "▁", unseen characters as bytes (é = C3 A9)
    expect_ids(t, "hug pun", (const int32_t[]){271, 274}, 2);
    expect_ids(t, "bug", (const int32_t[]){260, 268, 269}, 3);
    expect_ids(t, "hug\n\npug", (const int32_t[]){271, 265, 265, 264, 269}, 5);  // no "▁" before "pug"
    expect_ids(t, "\xC3\xA9 hug", (const int32_t[]){260, 3 + 0xC3, 3 + 0xA9, 271}, 4);
    expect_ids(t, "", NULL, 0);
    char *dec;
    size_t dn;
    CHECK(fk_tok_decode(t, (const int32_t[]){271, 274}, 2, 0, &dec, &dn));
    assert_string_equal(dec, "hug pun");  // the dummy prefix's space is dropped...
    free(dec);
    CHECK(fk_tok_decode(t, (const int32_t[]){271, 274}, 2, FK_DEC_KEEP_PREFIX, &dec, &dn));
    assert_string_equal(dec, " hug pun");  // ...unless kept
    free(dec);
    fk_tok_free(t);

    // vocab_size stops after 3 merges; min_frequency 4 after 3 too; 3 after 4 ((▁, p) has 3)
    o.vocab_size = 272;
    train_ok(&o, spm_hand, NULL, 4, &t, NULL);
    assert_int_equal(fk_tok_n_merges(t), 3);
    assert_int_equal(fk_tok_vocab_size(t), 272);
    fk_tok_free(t);
    o.vocab_size = 400;
    o.min_frequency = 4;
    train_ok(&o, spm_hand, NULL, 4, &t, NULL);
    assert_int_equal(fk_tok_n_merges(t), 3);
    fk_tok_free(t);
    o.min_frequency = 3;
    train_ok(&o, spm_hand, NULL, 4, &t, NULL);
    assert_int_equal(fk_tok_n_merges(t), 5);
    fk_tok_free(t);

    // split_digits: "1" and "2" are words of their own, "▁" before them one too; the
    // characters and merges stay the same
    o.min_frequency = 0;
    o.split_digits = true;
    train_ok(&o, spm_hand, NULL, 4, &t, &st);
    assert_int_equal(st.words, 13);
    assert_int_equal(st.unique_words, 9);
    assert_int_equal(fk_tok_n_merges(t), 6);
    expect_piece(t, 266, "1");
    expect_ids(t, "12", (const int32_t[]){260, 266, 267}, 3);
    fk_tok_free(t);

    // Extra specials follow </s>; the bytes and characters move up by one.
    const char *extra[] = {"<pad>"};
    fk_tok_train_opts e = {.kind = FK_TOK_SPM, .vocab_size = 400, .specials = extra, .n_specials = 1};
    train_ok(&e, spm_hand, NULL, 4, &t, NULL);
    expect_piece(t, 3, "<pad>");
    assert_int_equal(fk_tok_type(t, 3), FK_TT_CONTROL);
    expect_piece(t, 4, "<0x00>");
    expect_piece(t, 260, "u");
    assert_int_equal(fk_tok_vocab_size(t), 276);
    fk_tok_free(t);
}

// Mixed text: words, digits, punctuation, newlines, runs of spaces.
static char *spm_corpus(uint64_t seed, int n_words) {
    static const char *const words[] = {"the", "cat", "sat", "on", "mat", "and", "dog", "then", "there", "1999", "42",
                                        "3.14", "won't", "(x)", "caf\xC3\xA9", "\xE6\x97\xA5\xE6\x9C\xAC"};
    fk_rng g;
    fk_rng_seed(&g, seed);
    char *s = malloc((size_t)n_words * 16 + 8);
    size_t o = 0;
    for (int w = 0; w < n_words; w++) {
        if (w > 0) {
            int r = (int)fk_rng_below(&g, 20);
            const char *sep = r == 0 ? "\n" : r == 1 ? "\n\n" : r == 2 ? "  " : r == 3 ? ", " : " ";
            memcpy(s + o, sep, strlen(sep));
            o += strlen(sep);
        }
        const char *wd = words[fk_rng_below(&g, sizeof words / sizeof words[0])];
        memcpy(s + o, wd, strlen(wd));
        o += strlen(wd);
    }
    s[o] = 0;
    return s;
}

static bool is_digit_piece(const char *p, uint32_t n, int *digits) {
    *digits = 0;
    for (uint32_t i = 0; i < n; i++) *digits += p[i] >= '0' && p[i] <= '9';
    return *digits > 0;
}

static void test_spm_roundtrip(void **s) {
    (void)s;
    char *texts[2] = {spm_corpus(1, 3000), spm_corpus(2, 3000)};
    fk_tok_train_opts o = {.kind = FK_TOK_SPM, .vocab_size = 400};
    fk_tokenizer *t;
    train_ok(&o, (const char *const *)texts, NULL, 2, &t, NULL);
    assert_true(fk_tok_vocab_size(t) > 330 && fk_tok_vocab_size(t) <= 400);  // stops when no pair is seen twice
    for (int i = 0; i < 2; i++) {
        roundtrip(t, texts[i], strlen(texts[i]), 0);
        fk_tok_out out = {0};
        CHECK(fk_tok_encode(t, texts[i], strlen(texts[i]), 0, &out));
        assert_true(out.n < (int64_t)strlen(texts[i]) / 2);  // trained text compresses
        fk_tok_out_free(&out);
    }
    // unseen text: characters never seen (byte fallback), control bytes, invalid UTF-8,
    // spaces at either end and in runs, newlines first, specials written out
    const char *unseen[] = {
        "na\xC3\xAFve \xC3\xA9t\xC3\xA9 \xF0\x9F\x99\x82 \xF0\x9F\x9A\x80!",
        "\ttabs\tand\r\nCRLF\r\n",
        "  two spaces first, two last  ",
        " ",
        "\n\nnewlines first",
        "x",
        "bad \xC3\x28 \x80\xBF lone \xF0\x9F end \xED\xA0\x80 \xC0\xAF",
        "<s> and </s> and <unk> stay text",
        "digits 0123456789 9876543210",
    };
    for (size_t i = 0; i < sizeof unseen / sizeof unseen[0]; i++) roundtrip(t, unseen[i], strlen(unseen[i]), 0);
    static const char bin[] = "bytes \x00\x01\x7f\xff\xfe end";
    roundtrip(t, bin, sizeof bin - 1, 0);
    char all[256];
    for (int b = 0; b < 256; b++) all[b] = (char)(255 - b);
    roundtrip(t, all, sizeof all, 0);
    roundtrip(t, "", 0, 0);
    // the emoji was never seen: its four bytes are byte tokens
    int64_t n;
    int32_t *ids = encode_ids(t, "\xF0\x9F\x99\x82", &n);
    assert_int_equal(n, 5);
    expect_piece(t, ids[0], SP);
    for (int k = 1; k < 5; k++) assert_int_equal(fk_tok_type(t, ids[k]), FK_TT_BYTE);
    assert_int_equal(ids[1], 3 + 0xF0);
    free(ids);
    // FK_DEC_KEEP_PREFIX keeps the space the dummy prefix became
    const char *x = "the cat";
    fk_tok_out out = {0};
    CHECK(fk_tok_encode(t, x, strlen(x), 0, &out));
    char *dec;
    size_t dn;
    CHECK(fk_tok_decode(t, out.ids, out.n, FK_DEC_KEEP_PREFIX, &dec, &dn));
    assert_string_equal(dec, " the cat");
    free(dec);
    fk_tok_out_free(&out);
    // ADD_SPECIAL adds nothing (add_bos is off)
    CHECK(fk_tok_encode(t, x, strlen(x), FK_ENC_ADD_SPECIAL, &out));
    for (int64_t i = 0; i < out.n; i++) assert_int_not_equal(fk_tok_type(t, out.ids[i]), FK_TT_CONTROL);
    fk_tok_out_free(&out);
    fk_tok_free(t);
    free(texts[0]);
    free(texts[1]);
}

static void test_spm_pieces(void **s) {
    (void)s;
    char *text = spm_corpus(3, 6000);
    for (int split = 0; split < 2; split++) {
        fk_tok_train_opts o = {.kind = FK_TOK_SPM, .vocab_size = 600, .split_digits = split};
        fk_tokenizer *t;
        train_ok(&o, (const char *const *)&text, NULL, 1, &t, NULL);
        int multi_digit = 0;
        for (int32_t i = 0; i < fk_tok_vocab_size(t); i++) {
            uint32_t n;
            const char *p = fk_tok_piece(t, i, &n);
            for (uint32_t k = 1; k + 2 < n; k++)  // "▁" only at a piece's start
                if (memcmp(p + k, SP, 3) == 0) fail_msg("piece %d '%.*s' holds an inner " SP, i, (int)n, p);
            bool nl = memchr(p, '\n', n) != NULL;  // newline pieces are newlines only
            for (uint32_t k = 0; nl && k < n; k++) assert_int_equal(p[k], '\n');
            int digits;
            if (fk_tok_type(t, i) == FK_TT_NORMAL && is_digit_piece(p, n, &digits)) {
                if (split) assert_int_equal(n, 1);  // a digit alone, not even "▁1"
                multi_digit += digits > 1;
            }
        }
        if (split) assert_int_equal(multi_digit, 0);
        else assert_true(multi_digit > 0);  // "1999", "42" are frequent enough to merge
        roundtrip(t, text, strlen(text), 0);
        int64_t n;
        int32_t *ids = encode_ids(t, "1999", &n);
        assert_int_equal(n, split ? 5 : 1);
        free(ids);
        fk_tok_free(t);
    }
    // character_coverage: "ж", seen once among ~30000 characters, stays out at 0.999 and
    // falls back to bytes; every other character (each over 1%) stays in.
    const char *texts[2] = {text, "\xD0\xB6"};
    fk_tok_train_opts o = {.kind = FK_TOK_SPM, .vocab_size = 600};
    fk_tokenizer *all, *some;
    train_ok(&o, texts, NULL, 2, &all, NULL);
    o.character_coverage = 0.999;
    train_ok(&o, texts, NULL, 2, &some, NULL);
    assert_true(fk_tok_find(all, "\xD0\xB6", 2) >= 0);
    assert_true(fk_tok_find(some, "\xD0\xB6", 2) < 0);
    assert_true(fk_tok_find(some, "\xE6\x97\xA5", 3) >= 0);
    int64_t n;
    int32_t *ids = encode_ids(some, "\xD0\xB6", &n);
    assert_int_equal(n, 3);
    assert_int_equal(ids[1], 3 + 0xD0);
    assert_int_equal(ids[2], 3 + 0xB6);
    free(ids);
    roundtrip(some, text, strlen(text), 0);
    roundtrip(some, texts[1], strlen(texts[1]), 0);
    fk_tok_free(all);
    fk_tok_free(some);
    free(text);
}

static void test_spm_determinism_save(void **s) {
    (void)s;
    char *texts[2] = {spm_corpus(4, 4000), spm_corpus(5, 2000)};
    fk_tok_train_opts o = {.kind = FK_TOK_SPM, .vocab_size = 500, .split_digits = true};
    fk_tokenizer *a, *b, *c;
    train_ok(&o, (const char *const *)texts, NULL, 2, &a, NULL);
    train_ok(&o, (const char *const *)texts, NULL, 2, &b, NULL);
    assert_true(fk_tok_n_merges(a) > 20);
    assert_same_tokenizer(a, b);

    // tokenizer.json and back: the same kind, vocabulary and encodings
    CHECK(fk_tok_save_hf(a, tpath("spm")));
    CHECK(fk_tok_load(tpath("spm"), &c));
    assert_int_equal(fk_tok_kind_of(c), FK_TOK_SPM);
    assert_int_equal(fk_tok_vocab_size(c), fk_tok_vocab_size(a));
    assert_int_equal(fk_tok_n_merges(c), fk_tok_n_merges(a));
    assert_int_equal(fk_tok_bos(c), 1);
    assert_int_equal(fk_tok_eos(c), 2);
    // <unk> comes back as the unknown token, with its type: everything, the fingerprint included, survives
    fk_tok_settings cs;
    fk_tok_settings_of(c, &cs);
    assert_int_equal(cs.unk, 0);
    assert_true(cs.add_space_prefix && cs.byte_fallback && !cs.add_bos && !cs.prefix_first_only);
    for (int32_t i = 0; i < fk_tok_vocab_size(a); i++) assert_int_equal(fk_tok_type(c, i), fk_tok_type(a, i));
    assert_true(fk_tok_fingerprint(c) == fk_tok_fingerprint(a));
    const char *probe[] = {texts[1], "unseen: \xC3\xA9\t\xF0\x9F\x99\x82  end ", "\n\n1999 42\n"};
    for (int i = 0; i < 3; i++) {
        int64_t na, nc;
        int32_t *ia = encode_ids(a, probe[i], &na), *ic = encode_ids(c, probe[i], &nc);
        assert_int_equal(na, nc);
        assert_memory_equal(ia, ic, sizeof *ia * (size_t)na);
        free(ia);
        free(ic);
        roundtrip(c, probe[i], strlen(probe[i]), 0);
    }
    fk_tok_free(a);
    fk_tok_free(b);
    fk_tok_free(c);
    free(texts[0]);
    free(texts[1]);
}

static void test_spm_bad_options(void **s) {
    (void)s;
    // 3 specials + 256 bytes + 10 characters = 269
    fk_tok_train_opts o = {.kind = FK_TOK_SPM, .vocab_size = 268};
    expect_arg(&o, spm_hand, NULL, 4, "vocab_size 268 is too small: the 3 special tokens, 256 byte tokens and 10 characters of the text need 269");
    o.vocab_size = 269;  // exactly the characters: no merges
    fk_tokenizer *t;
    train_ok(&o, spm_hand, NULL, 4, &t, NULL);
    assert_int_equal(fk_tok_n_merges(t), 0);
    roundtrip(t, spm_hand[2], strlen(spm_hand[2]), 0);
    fk_tok_free(t);
    o.vocab_size = 258;
    expect_arg(&o, spm_hand, NULL, 4, "vocab_size 258 is smaller than the 256 byte tokens plus 3 special tokens");
    o.vocab_size = 400;
    o.pre = "gpt-2";
    expect_arg(&o, spm_hand, NULL, 4, "byte-level BPE only");
    o.pre = NULL;
    o.character_coverage = 1.5;
    expect_arg(&o, spm_hand, NULL, 4, "character_coverage 1.5");
    o.character_coverage = -0.1;
    expect_arg(&o, spm_hand, NULL, 4, "character_coverage -0.1");
    o.character_coverage = 0;
    const char *specials[] = {"<s>", "<x>", "<x>", "u"};
    o.specials = specials;
    o.n_specials = 1;
    expect_arg(&o, spm_hand, NULL, 4, "<unk>, <s> and </s> already");
    o.specials = specials + 1;
    o.n_specials = 2;
    expect_arg(&o, spm_hand, NULL, 4, "'<x>' given twice (0 and 1)");
    o.specials = specials + 3;  // a special spelled like a character
    o.n_specials = 1;
    expect_arg(&o, spm_hand, NULL, 4, "'u' is spelled like a character");
    o.n_specials = 0;
    o.kind = (fk_tok_kind)7;
    expect_arg(&o, spm_hand, NULL, 4, "kind 7");
    fk_tok_train_opts b = {.vocab_size = 400, .split_digits = true};
    expect_arg(&b, spm_hand, NULL, 4, "split_digits applies to SPM");
    b.split_digits = false;
    b.character_coverage = 0.9;
    expect_arg(&b, spm_hand, NULL, 4, "character_coverage applies to SPM");
    // no texts: the specials, the bytes and "▁" (always there, so that spaces decode as spaces)
    fk_tok_train_opts e = {.kind = FK_TOK_SPM, .vocab_size = 300};
    train_ok(&e, NULL, NULL, 0, &t, NULL);
    assert_int_equal(fk_tok_vocab_size(t), 260);
    expect_piece(t, 259, SP);
    roundtrip(t, "any text \xC3\xA9", strlen("any text \xC3\xA9"), 0);
    fk_tok_free(t);
}

// English, repeated: far fewer tokens than bytes.
static void test_spm_compression(void **s) {
    (void)s;
    static const char para[] =
        "It was the best of times, it was the worst of times, it was the age of wisdom, it was the age of "
        "foolishness, it was the epoch of belief, it was the epoch of incredulity, it was the season of Light, "
        "it was the season of Darkness, it was the spring of hope, it was the winter of despair.\n";
    size_t n = (sizeof para - 1) * 50;
    char *text = malloc(n + 1);
    for (int i = 0; i < 50; i++) memcpy(text + i * (sizeof para - 1), para, sizeof para - 1);
    text[n] = 0;
    fk_tok_train_opts o = {.kind = FK_TOK_SPM, .vocab_size = 400};
    fk_tokenizer *t;
    train_ok(&o, (const char *const *)&text, NULL, 1, &t, NULL);
    fk_tok_out out = {0};
    CHECK(fk_tok_encode(t, text, n, 0, &out));
    assert_true(out.n < (int64_t)n / 4);
    fk_tok_out_free(&out);
    roundtrip(t, text, n, 0);
    fk_tok_free(t);
    free(text);

    const char *path = FK_SHARED_DATA "/corpora/shakespeare/input.txt";
    if (!fk_path_exists(path)) return;
    char *data;
    CHECK(fk_read_file(path, &data, &n));
    const size_t n_train = 200000, n_eval = 100000;
    const char *texts[] = {data};
    const size_t lens[] = {n_train};
    o.vocab_size = 1000;
    fk_tok_train_stats stats;
    train_ok(&o, texts, lens, 1, &t, &stats);
    assert_int_equal(fk_tok_vocab_size(t), 1000);
    CHECK(fk_tok_encode(t, data + n_train, n_eval, 0, &out));
    double ratio = (double)out.n / (double)n_eval;
    print_message("spm shakespeare 200 KB, 1000 tokens: %.3f tokens/byte held out (%.3f s words, %.3f s merge)\n", ratio,
                  stats.seconds_pretokenize, stats.seconds_merge);
    assert_true(ratio < 0.5);
    fk_tok_out_free(&out);
    roundtrip(t, data + n_train, n_eval, 0);
    fk_tok_free(t);
    free(data);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hand),          cmocka_unit_test(test_reference),      cmocka_unit_test(test_determinism),
        cmocka_unit_test(test_roundtrip),     cmocka_unit_test(test_progress),       cmocka_unit_test(test_bad_options),
        cmocka_unit_test(test_shakespeare),   cmocka_unit_test(test_spm_hand),       cmocka_unit_test(test_spm_roundtrip),
        cmocka_unit_test(test_spm_pieces),    cmocka_unit_test(test_spm_determinism_save),
        cmocka_unit_test(test_spm_bad_options), cmocka_unit_test(test_spm_compression),
    };
    return cmocka_run_group_tests(tests, tmpdir_setup, tmpdir_teardown);
}

