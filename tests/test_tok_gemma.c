// Gemma's tokenizer (SentencePiece BPE, byte fallback, no dummy prefix, user-defined tokens
// matched before BPE, control tokens only when parsing specials), exact ids against the
// references in tests/data/gguf/gemma/tok/ (tools/ref/make_gemma_gguf.py):
// - a tiny Gemma-style vocabulary (trained by sentencepiece with Gemma's settings, converted
//   by llama.cpp's convert_hf_to_gguf.py): llama.cpp's llama-tokenize ids from its GGUF
//   metadata, Hugging Face tokenizers' ids from its tokenizer.json;
// - the real Gemma 3 vocabulary (262,144 pieces) in gemma-3-270m-q4_k_m.gguf: llama-tokenize's
//   ids. The file is not in the repository: the test looks in $FK_REAL_MODELS (default
//   /work/cache/real/models) and is skipped, saying so, when it is absent.
// Strings: llama.cpp's 46 ggml-vocab-llama-spm test strings, English, code, Unicode, runs of
// spaces/newlines/tabs, emoji, HTML tags, special-token text and ~20 KB of the shared corpora.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "fusekit/fusekit.h"
#include "test_util.h"

#define TOK FK_TEST_DATA "/gguf/gemma/tok"
#define TINY_GGUF FK_TEST_DATA "/gguf/gemma/gemma3/model.gguf"
#define REAL_NAME "gemma-3-270m-q4_k_m.gguf"

typedef struct {
    char *inp, *out;         // file contents (strings are cut in place)
    int n;
    const char *s[128];
    size_t len[128];
    char *ids[128];          // space-separated expected ids, NUL-terminated
} vectors;

// Reads strings.inp and one .out file of ids; fails the test when they do not pair up.
static void load_vectors(vectors *v, const char *out_name) {
    size_t ni, no;
    char path[512];
    memset(v, 0, sizeof *v);
    v->inp = slurp(TOK "/strings.inp", &ni);
    snprintf(path, sizeof path, "%s/%s", TOK, out_name);
    v->out = slurp(path, &no);
    const char *sep = "\n__ggml_vocab_test__\n";
    char *s = v->inp, *line = v->out;
    for (;;) {
        char *e = strstr(s, sep);
        if (!e) break;
        assert_true(v->n < 128);
        char *eol = strchr(line, '\n');
        assert_non_null(eol);
        *eol = 0;
        v->s[v->n] = s;
        v->len[v->n] = (size_t)(e - s);
        v->ids[v->n] = line;
        v->n++;
        s = e + strlen(sep);
        line = eol + 1;
    }
    assert_true(v->n >= 46 + 20);
}

static void free_vectors(vectors *v) {
    free(v->inp);
    free(v->out);
}

// Encodes every string and compares with the expected ids; prints each difference and fails
// when any. Also checks that the spans tile the input.
static void check_vectors(const fk_tokenizer *t, const vectors *v, unsigned flags, const char *what) {
    fk_tok_out o = {0};
    int bad = 0;
    int64_t total = 0;
    for (int c = 0; c < v->n; c++) {
        fk_tok_out_clear(&o);
        CHECK(fk_tok_encode(t, v->s[c], v->len[c], flags, &o));
        int64_t at = 0;
        for (int64_t i = 0; i < o.n; i++) {
            if (o.begin[i] != at || o.end[i] < o.begin[i]) fail_msg("%s case %d: token %lld does not continue the tiling", what, c, (long long)i);
            at = o.end[i];
        }
        assert_int_equal(at, (int64_t)v->len[c]);
        int64_t k = 0;
        bool ok = true;
        for (char *p = v->ids[c]; *p;) {
            while (*p == ' ') p++;
            if (!*p) break;
            long id = strtol(p, &p, 10);
            if (k >= o.n || o.ids[k] != id) ok = false;
            k++;
        }
        ok &= k == o.n;
        total += o.n;
        if (!ok) {
            bad++;
            char got[2048];
            size_t g = 0;
            for (int64_t i = 0; i < o.n && g + 16 < sizeof got; i++) g += (size_t)snprintf(got + g, sizeof got - g, " %d", o.ids[i]);
            got[g] = 0;
            print_message("%s case %d '%.*s'\n  expected %.*s\n  got     %s\n", what, c, (int)(v->len[c] > 200 ? 200 : v->len[c]), v->s[c],
                          (int)(strlen(v->ids[c]) > 600 ? 600 : strlen(v->ids[c])), v->ids[c], g > 600 ? "(long)" : got);
        }
    }
    fk_tok_out_free(&o);
    if (bad) fail_msg("%s: %d of %d strings differ", what, bad, v->n);
    print_message("%s: %d strings, %lld tokens, all equal\n", what, v->n, (long long)total);
}

// decode(encode(x)) == x, except that SentencePiece reads a literal "▁" as a space.
static void check_roundtrip(const fk_tokenizer *t, const vectors *v) {
    fk_tok_out o = {0};
    for (int c = 0; c < v->n; c++) {
        if (memmem(v->s[c], v->len[c], "\xe2\x96\x81", 3)) continue;
        fk_tok_out_clear(&o);
        CHECK(fk_tok_encode(t, v->s[c], v->len[c], 0, &o));
        char *text;
        size_t n;
        CHECK(fk_tok_decode(t, o.ids, o.n, 0, &text, &n));
        if (n != v->len[c] || memcmp(text, v->s[c], n) != 0) fail_msg("case %d does not decode back to its text", c);
        free(text);
    }
    fk_tok_out_free(&o);
}

static void test_tiny_gguf(void **s) {
    (void)s;
    fk_tokenizer *t;
    CHECK(fk_tok_load(TINY_GGUF, &t));
    assert_int_equal(fk_tok_kind_of(t), FK_TOK_SPM);
    assert_int_equal(fk_tok_vocab_size(t), 700);
    assert_int_equal(fk_tok_bos(t), 2);
    assert_int_equal(fk_tok_eos(t), 1);
    assert_true(fk_tok_adds_bos(t));
    assert_int_equal(fk_tok_type(t, 5), FK_TT_CONTROL);       // <start_of_turn>
    assert_int_equal(fk_tok_type(t, 8), FK_TT_USER_DEFINED);  // "\n"
    vectors v;
    load_vectors(&v, "tiny_llamacpp.out");
    check_vectors(t, &v, 0, "tiny vocabulary from GGUF vs llama.cpp");
    check_roundtrip(t, &v);
    free_vectors(&v);
    load_vectors(&v, "tiny_llamacpp_special.out");
    check_vectors(t, &v, FK_ENC_PARSE_SPECIAL, "tiny vocabulary from GGUF vs llama.cpp, specials parsed");
    // No dummy prefix; BOS first with the configured specials; control tokens parsed on request.
    fk_tok_out o = {0};
    CHECK(fk_tok_encode(t, "<start_of_turn>user", 19, FK_ENC_ADD_SPECIAL | FK_ENC_PARSE_SPECIAL, &o));
    assert_true(o.n >= 3);
    assert_int_equal(o.ids[0], 2);
    assert_int_equal(o.ids[1], 5);
    uint32_t len;
    const char *p = fk_tok_piece(t, o.ids[2], &len);
    assert_false(len >= 3 && memcmp(p, "\xe2\x96\x81", 3) == 0);
    fk_tok_out_free(&o);
    free_vectors(&v);
    fk_tok_free(t);
}

static void test_tiny_json(void **s) {
    (void)s;
    fk_tokenizer *t;
    CHECK(fk_tok_load(TOK "/tokenizer.json", &t));
    assert_int_equal(fk_tok_kind_of(t), FK_TOK_SPM);
    vectors v;
    load_vectors(&v, "tiny_hf.out");
    // Hugging Face matches special added tokens even without add_special_tokens.
    check_vectors(t, &v, FK_ENC_PARSE_SPECIAL, "tiny vocabulary from tokenizer.json vs Hugging Face");
    free_vectors(&v);
    fk_tok_free(t);
}

// The GGUF tokenizer written back as tokenizer.json and as GGUF metadata encodes the same.
static void test_tiny_save(void **s) {
    (void)s;
    fk_tokenizer *t, *j, *g;
    CHECK(fk_tok_load(TINY_GGUF, &t));
    CHECK(fk_tok_save_hf(t, tmpdir));
    CHECK(fk_tok_load(tpath("tokenizer.json"), &j));
    fk_gguf_writer *w = fk_gguf_writer_new();
    assert_non_null(w);
    CHECK(fk_gguf_set_str(w, "general.architecture", "gemma3", 6));
    CHECK(fk_tok_to_gguf(t, w));
    CHECK(fk_gguf_writer_write(w, tpath("tok.gguf")));
    fk_gguf_writer_free(w);
    CHECK(fk_tok_load(tpath("tok.gguf"), &g));
    assert_true(fk_tok_fingerprint(g) == fk_tok_fingerprint(t));
    vectors v;
    load_vectors(&v, "tiny_llamacpp.out");
    check_vectors(g, &v, 0, "tiny vocabulary saved to GGUF");
    check_vectors(j, &v, 0, "tiny vocabulary saved to tokenizer.json");
    free_vectors(&v);
    fk_tok_free(t);
    fk_tok_free(j);
    fk_tok_free(g);
}

static void test_real_gemma3(void **s) {
    (void)s;
    const char *dir = getenv("FK_REAL_MODELS");
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir && *dir ? dir : "/work/cache/real/models", REAL_NAME);
    if (!fk_path_exists(path)) {
        print_message("SKIP: %s is absent (set FK_REAL_MODELS to the folder holding it): the real Gemma 3 tokenizer is not checked\n", path);
        skip();
    }
    fk_tokenizer *t;
    CHECK(fk_tok_load(path, &t));
    assert_int_equal(fk_tok_vocab_size(t), 262144);
    assert_int_equal(fk_tok_bos(t), 2);
    assert_int_equal(fk_tok_eos(t), 1);
    assert_true(fk_tok_adds_bos(t));
    vectors v;
    load_vectors(&v, "real_llamacpp.out");
    check_vectors(t, &v, 0, "Gemma 3 vocabulary vs llama.cpp");
    check_roundtrip(t, &v);
    free_vectors(&v);
    load_vectors(&v, "real_llamacpp_special.out");
    check_vectors(t, &v, FK_ENC_PARSE_SPECIAL, "Gemma 3 vocabulary vs llama.cpp, specials parsed");
    free_vectors(&v);
    fk_tok_free(t);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tiny_gguf),
        cmocka_unit_test(test_tiny_json),
        cmocka_unit_test(test_tiny_save),
        cmocka_unit_test(test_real_gemma3),
    };
    return cmocka_run_group_tests(tests, tmpdir_setup, tmpdir_teardown);
}
