// The approx vocabulary map (fk_vmap_build with FK_VMAP_APPROX, align.h): every source token
// to the first token of the target tokenizer's context-free encoding of its bytes. Exact maps
// worked out by hand on two tiny tokenizers, a byte-level BPE one (Ġ forms, GPT-2
// pre-tokenizer) and a SentencePiece-style one (▁ forms, byte fallback <0xNN>, a dummy prefix
// the map must not add), in both directions: tokens that re-tokenize to several pieces, a
// target token with the source token's bytes that the target's merges never produce, special
// and unused tokens left out, bytes the target only knows as its unknown token; the
// FK_ENC_NO_PREFIX encoding it relies on; the cache file; parsing and bad input.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "fusekit/fusekit.h"
#include "test_util.h"

#define G "\xC4\xA0"  // Ġ: a space in byte-level BPE
#define M "\xE2\x96\x81"  // ▁: a space in SentencePiece

// T, byte-level BPE (GPT-2 pre-tokenizer), merges in rank order a+b, Ġ+a, Ġa+b, ab+c:
//   0 a  1 b  2 c  3 Ġ  4 ab  5 Ġa  6 Ġab  7 abc  8 <|endoftext|> (control; BOS and EOS)
//   9 ,  10 Ċ (newline)  11 â (the byte 0xE2)
// Its encodings: " ab" -> Ġ a b -> (a+b first) Ġ ab, and Ġ+ab is no merge: [Ġ, ab], so Ġab
// (id 6) is never produced from " ab"; " abc" -> [Ġ, abc]; "abc," -> pre-tokens "abc" ",".
static fk_tokenizer *tok_T(void) {
    static const char *const p[] = {"a", "b", "c", G, "ab", G "a", G "ab", "abc", "<|endoftext|>", ",", "\xC4\x8A", "\xC3\xA2"};
    static const int32_t m[][2] = {{0, 1}, {3, 0}, {5, 1}, {4, 2}};
    uint32_t lens[12];
    uint8_t types[12];
    for (int i = 0; i < 12; i++) {
        lens[i] = (uint32_t)strlen(p[i]);
        types[i] = i == 8 ? FK_TT_CONTROL : FK_TT_NORMAL;
    }
    fk_tok_spec s = {.kind = FK_TOK_BPE, .n_vocab = 12, .pieces = p, .piece_lens = lens, .types = types, .n_merges = 4,
                     .merges = m, .pre = "gpt-2", .bos = 8, .eos = 8, .unk = -1, .pad = -1};
    fk_tokenizer *t = NULL;
    CHECK(fk_tok_build(&s, &t));
    return t;
}

// S, SentencePiece-style BPE with a dummy prefix, merges a+b, ab+c, ▁+ab, ▁ab+c, abc+",", c+a:
//   0 <unk>  1 <s> (control, BOS)  2 </s> (control, EOS)  3 <0xE2>  4 ▁  5 ▁ab  6 ▁abc  7 abc
//   8 ab  9 a  10 b  11 c  12 ,  13 <pad> (unused)  14 abc,  15 ca  16 <|im_end|> (control)
//   17 <0x0A>
// byte_fallback: the byte fallback tokens; without it, characters it lacks become <unk>.
static fk_tokenizer *tok_S(bool byte_fallback) {
    static const char *const p[] = {"<unk>", "<s>", "</s>", "<0xE2>", M, M "ab", M "abc", "abc", "ab",
                                    "a", "b", "c", ",", "<pad>", "abc,", "ca", "<|im_end|>", "<0x0A>"};
    static const int32_t m[][2] = {{9, 10}, {8, 11}, {4, 8}, {5, 11}, {7, 12}, {11, 9}};
    uint32_t lens[18];
    uint8_t types[18];
    for (int i = 0; i < 18; i++) {
        lens[i] = (uint32_t)strlen(p[i]);
        types[i] = i == 0 ? FK_TT_UNKNOWN : i == 1 || i == 2 || i == 16 ? FK_TT_CONTROL : i == 3 || i == 17 ? FK_TT_BYTE
                   : i == 13 ? FK_TT_UNUSED : FK_TT_NORMAL;
    }
    fk_tok_spec s = {.kind = FK_TOK_SPM, .n_vocab = 18, .pieces = p, .piece_lens = lens, .types = types, .n_merges = 6,
                     .merges = m, .bos = 1, .eos = 2, .unk = 0, .pad = -1, .add_space_prefix = true, .byte_fallback = byte_fallback};
    fk_tokenizer *t = NULL;
    CHECK(fk_tok_build(&s, &t));
    return t;
}

static int32_t *build(const fk_tokenizer *src, const fk_tokenizer *tgt, fk_vmap_mode mode) {
    int32_t *m = NULL;
    CHECK(fk_vmap_build(src, tgt, mode, &m));
    return m;
}

// The ids of the first n tokens of tgt's encoding of text under flags, and their count.
static int64_t encode(const fk_tokenizer *t, const char *text, unsigned flags, int32_t *ids, int n) {
    fk_tok_out o = {0};
    CHECK(fk_tok_encode(t, text, strlen(text), flags, &o));
    for (int64_t k = 0; k < o.n && k < n; k++) ids[k] = o.ids[k];
    int64_t c = o.n;
    fk_tok_out_free(&o);
    return c;
}

// FK_ENC_NO_PREFIX: SentencePiece without its dummy "▁"; byte-level BPE unchanged.
static void test_no_prefix_flag(void **s) {
    (void)s;
    fk_tokenizer *S = tok_S(true), *T = tok_T();
    int32_t ids[4];
    assert_int_equal(encode(S, "ab", 0, ids, 4), 1);
    assert_int_equal(ids[0], 5);  // ▁ab: the dummy prefix
    assert_int_equal(encode(S, "ab", FK_ENC_NO_PREFIX, ids, 4), 1);
    assert_int_equal(ids[0], 8);  // ab
    assert_int_equal(encode(S, " ab", FK_ENC_NO_PREFIX, ids, 4), 1);
    assert_int_equal(ids[0], 5);  // ▁ab
    assert_int_equal(encode(T, " abc", FK_ENC_NO_PREFIX, ids, 4), 2);
    assert_int_equal(ids[0], 3);
    assert_int_equal(ids[1], 7);
    fk_tok_free(S);
    fk_tok_free(T);
}

// SentencePiece source -> byte-level target.
static void test_spm_to_bpe(void **s) {
    (void)s;
    fk_tokenizer *S = tok_S(true), *T = tok_T();
    int32_t *m = build(S, T, FK_VMAP_APPROX);
    static const int32_t want[18] = {
        -1,  // <unk>: T has no unknown token, and an unknown token is not re-tokenized
        8,   // <s> -> T's BOS
        8,   // </s> -> T's EOS
        11,  // <0xE2>: the byte 0xE2 alone -> â
        3,   // ▁ = " " -> Ġ
        3,   // ▁ab = " ab" -> [Ġ, ab] (T's Ġab, same bytes, is never produced)
        3,   // ▁abc = " abc" -> [Ġ, abc]
        7, 4, 0, 1, 2, 9,  // abc ab a b c , : one token each
        -1,  // <pad>: unused
        7,   // abc, -> [abc, ,]
        2,   // ca -> [c, a]
        -1,  // <|im_end|>: control, not re-tokenized as text
        10,  // <0x0A> = "\n" -> Ċ
    };
    for (int v = 0; v < 18; v++) assert_int_equal(m[v], want[v]);
    // where the other maps differ: prefix and mined send ▁ab to T's Ġab (same bytes), mined
    // sends ▁abc to Ġab (distance 1, the lowest id of the tie with abc)
    int32_t *p = build(S, T, FK_VMAP_PREFIX), *n = build(S, T, FK_VMAP_MINED);
    assert_int_equal(p[5], 6);
    assert_int_equal(n[5], 6);
    assert_int_equal(n[6], 6);
    free(p);
    free(n);
    free(m);
    fk_tok_free(S);
    fk_tok_free(T);
}

// Byte-level source -> SentencePiece target (no dummy prefix added to a word's inside).
static void test_bpe_to_spm(void **s) {
    (void)s;
    fk_tokenizer *S = tok_S(true), *T = tok_T();
    int32_t *m = build(T, S, FK_VMAP_APPROX);
    static const int32_t want[12] = {
        9, 10, 11,  // a b c
        4,          // Ġ -> ▁
        8,          // ab -> ab (not ▁ab: no dummy prefix)
        4,          // Ġa = " a" -> [▁, a]
        5,          // Ġab -> ▁ab
        7,          // abc
        1,          // <|endoftext|>: T's BOS -> S's BOS
        12,         // ,
        17,         // Ċ -> <0x0A> (byte fallback)
        3,          // â = the byte 0xE2 -> <0xE2>
    };
    for (int v = 0; v < 12; v++) assert_int_equal(m[v], want[v]);
    free(m);
    // without byte fallback, "\n" and 0xE2 encode to <unk>: unmapped
    fk_tokenizer *U = tok_S(false);
    m = build(T, U, FK_VMAP_APPROX);
    assert_int_equal(m[10], -1);
    assert_int_equal(m[11], -1);
    assert_int_equal(m[4], 8);
    free(m);
    fk_tok_free(U);
    fk_tok_free(S);
    fk_tok_free(T);
}

// A tokenizer onto itself: each token it produces is its own first token; ▁abc is one it never
// produces (▁ a b c -> ▁ ab c -> ab+c ranks before ▁+ab: [▁, abc]).
static void test_identity(void **s) {
    (void)s;
    fk_tokenizer *S = tok_S(true);
    int32_t *m = build(S, S, FK_VMAP_APPROX);
    for (int v = 0; v < 18; v++) assert_int_equal(m[v], v == 6 ? 4 : v == 13 || v == 16 ? -1 : v);
    free(m);
    fk_tok_free(S);
}

// The cache file holds the same map under the mode's name; names and bad input.
static void test_cache_and_parse(void **s) {
    (void)s;
    fk_tokenizer *S = tok_S(true), *T = tok_T();
    fk_vmap_mode mode;
    CHECK(fk_vmap_parse_mode("approx", &mode));
    assert_int_equal(mode, FK_VMAP_APPROX);
    assert_string_equal(fk_vmap_mode_name(mode), "approx");
    assert_int_equal(fk_vmap_parse_mode("aprox", &mode), FK_ERR_ARG);
    assert_non_null(strstr(fk_last_error(), "approx"));
    assert_non_null(strstr(fk_last_error(), "\"aprox\""));
    int32_t *m = NULL;
    assert_int_equal(fk_vmap_build(S, T, (fk_vmap_mode)(FK_VMAP_APPROX + 1), &m), FK_ERR_ARG);
    assert_null(m);
    int32_t *a = build(S, T, FK_VMAP_APPROX), *b = NULL, *c = NULL;
    CHECK(fk_vmap_load_or_build(S, T, FK_VMAP_APPROX, tmpdir, &b));
    char *path = fk_vmap_cache_path(S, T, FK_VMAP_APPROX, tmpdir);
    assert_true(fk_path_exists(path));
    assert_non_null(strstr(path, "-approx.bin"));
    CHECK(fk_vmap_load_or_build(S, T, FK_VMAP_APPROX, tmpdir, &c));  // read back
    assert_memory_equal(a, b, 18 * sizeof *a);
    assert_memory_equal(a, c, 18 * sizeof *a);
    free(path);
    free(a);
    free(b);
    free(c);
    fk_tok_free(S);
    fk_tok_free(T);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_no_prefix_flag), cmocka_unit_test(test_spm_to_bpe), cmocka_unit_test(test_bpe_to_spm),
        cmocka_unit_test(test_identity),       cmocka_unit_test(test_cache_and_parse),
    };
    return cmocka_run_group_tests(tests, tmpdir_setup, tmpdir_teardown);
}
