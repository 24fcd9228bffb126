// Hostile GGUF files (issue 16): tokenizer arrays of the wrong element type or length, declared
// counts and lengths far beyond the file, models declared larger than the file's tensors, and
// key values no float holds. Each file is written by the test itself (a minimal GGUF with the
// metadata under test); each must give an error naming the file and the key or tensor, never an
// assert, a crash or an allocation of the declared size (the suite's sanitizer run checks that).
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "fusekit/gguf.h"
#include "fusekit/gguf_model.h"
#include "fusekit/model.h"
#include "fusekit/tokenizer.h"
#include "test_util.h"

static void expect_msg(fk_status st, fk_status want, const char *path, const char *n1, const char *n2) {
    const char *msg = fk_last_error();
    if (st == FK_OK) fail_msg("%s: accepted, expected an error naming '%s'", path, n1);
    if (st != want) fail_msg("status %s, expected %s: %s", fk_status_name(st), fk_status_name(want), msg);
    print_message("  refused as expected: %s\n", msg);
    if (!strstr(msg, path)) fail_msg("message '%s' does not name the file %s", msg, path);
    if (n1 && !strstr(msg, n1)) fail_msg("message '%s' does not mention '%s'", msg, n1);
    if (n2 && !strstr(msg, n2)) fail_msg("message '%s' does not mention '%s'", msg, n2);
}

static void put_u32(unsigned char **p, uint32_t v) { memcpy(*p, &v, 4); *p += 4; }
static void put_u64(unsigned char **p, uint64_t v) { memcpy(*p, &v, 8); *p += 8; }
static void put_str(unsigned char **p, const char *s) { put_u64(p, strlen(s)); memcpy(*p, s, strlen(s)); *p += strlen(s); }

// Inserts raw key/value entries (n bytes, `count` of them; what the writer cannot write) after
// the keys of a file the writer wrote, followed by a filler key that keeps the data section on
// its 32-byte alignment.
static void insert_kvs(const char *path, const unsigned char *kvs, size_t n, uint64_t count) {
    fk_gguf g;
    CHECK(fk_gguf_open(path, &g));
    const unsigned char *base = g.map.data, *end;
    if (g.n_tensors) {
        end = (const unsigned char *)g.tensors[0].name.s - 8;
    } else {  // the end of the last key's value (the writer pads the file after it)
        const fk_gguf_kv *kv = &g.kvs[g.n_kv - 1];
        static const int sizes[] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
        if (kv->elem_type == FK_GGUF_STRING) end = (const unsigned char *)kv->strs[kv->count - 1].s + kv->strs[kv->count - 1].n;
        else end = (const unsigned char *)kv->data + kv->count * (uint64_t)sizes[kv->elem_type];
    }
    size_t at = (size_t)(end - base);
    fk_gguf_close(&g);
    size_t fsize;
    char *b = slurp(path, &fsize);
    unsigned char *nb = malloc(fsize + n + 128), *q = nb;
    assert_non_null(nb);
    memcpy(q, b, at); q += at;
    memcpy(q, kvs, n); q += n;
    size_t fill = 8 + 6 + 4 + 4 + 8;  // "fk.pad": u8 array
    uint64_t extra = (32 - (n + fill) % 32) % 32;
    put_str(&q, "fk.pad");
    put_u32(&q, FK_GGUF_ARRAY);
    put_u32(&q, FK_GGUF_U8);
    put_u64(&q, extra);
    memset(q, 0, extra); q += extra;
    memcpy(q, b + at, fsize - at); q += fsize - at;
    uint64_t nkv;
    memcpy(&nkv, nb + 16, 8);
    nkv += count + 1;
    memcpy(nb + 16, &nkv, 8);
    spit(path, nb, (size_t)(q - nb));
    free(nb);
    free(b);
}

// ------------------------------------------------------------------ tokenizer metadata

// What a tokenizer file holds; each field can be replaced by a hostile variant.
enum { TT_OK, TT_STRINGS, TT_FLOATS, TT_SHORT, TT_SCALAR, TT_BADVAL };
enum { SC_OK, SC_STRINGS, SC_LONG, SC_HUGE_F64, SC_NESTED, SC_NAN };
enum { TK_OK, TK_INTS };
enum { MG_NONE, MG_INTS, MG_BAD };

typedef struct { int tt, sc, tk, mg; bool gpt2; const char *pre; size_t pre_n; } tok_spec;

static const char *const pieces[] = {"<unk>", "<s>", "</s>", "a", "b", "ab"};
#define NP 6

// A minimal GGUF holding only tokenizer keys (SentencePiece "llama", or "gpt2" with merges).
static const char *write_tok(const char *name, const tok_spec *s) {
    const char *path = tpath(name);
    fk_gguf_writer *w = fk_gguf_writer_new();
    assert_non_null(w);
    const char *model = s->gpt2 ? "gpt2" : "llama";
    CHECK(fk_gguf_set_str(w, "tokenizer.ggml.model", model, strlen(model)));
    if (s->pre) CHECK(fk_gguf_set_str(w, "tokenizer.ggml.pre", s->pre, s->pre_n));
    uint64_t lens[NP + 1];
    for (int i = 0; i < NP; i++) lens[i] = strlen(pieces[i]);
    if (s->tk == TK_INTS) {
        int32_t ids[NP] = {0, 1, 2, 3, 4, 5};
        CHECK(fk_gguf_set_arr(w, "tokenizer.ggml.tokens", FK_GGUF_I32, ids, NP));
    } else {
        CHECK(fk_gguf_set_arr_str(w, "tokenizer.ggml.tokens", pieces, lens, NP));
    }
    int32_t types[NP + 1] = {2, 3, 3, 1, 1, 1, 1};
    float ftypes[NP] = {2, 3, 3, 1, 1, 1};
    switch (s->tt) {
    case TT_OK: CHECK(fk_gguf_set_arr(w, "tokenizer.ggml.token_type", FK_GGUF_I32, types, NP)); break;
    case TT_STRINGS: CHECK(fk_gguf_set_arr_str(w, "tokenizer.ggml.token_type", pieces, lens, NP)); break;
    case TT_FLOATS: CHECK(fk_gguf_set_arr(w, "tokenizer.ggml.token_type", FK_GGUF_F32, ftypes, NP)); break;
    case TT_SHORT: CHECK(fk_gguf_set_arr(w, "tokenizer.ggml.token_type", FK_GGUF_I32, types, NP - 2)); break;
    case TT_SCALAR: CHECK(fk_gguf_set_u32(w, "tokenizer.ggml.token_type", 1)); break;
    case TT_BADVAL: types[4] = 99; CHECK(fk_gguf_set_arr(w, "tokenizer.ggml.token_type", FK_GGUF_I32, types, NP)); break;
    }
    float scores[NP + 1] = {0, 0, 0, -1, -2, -3, -4};
    double dscores[NP] = {0, 0, 0, -1, 1e300, -3};
    switch (s->sc) {
    case SC_OK: CHECK(fk_gguf_set_arr(w, "tokenizer.ggml.scores", FK_GGUF_F32, scores, NP)); break;
    case SC_STRINGS: CHECK(fk_gguf_set_arr_str(w, "tokenizer.ggml.scores", pieces, lens, NP)); break;
    case SC_LONG: CHECK(fk_gguf_set_arr(w, "tokenizer.ggml.scores", FK_GGUF_F32, scores, NP + 1)); break;
    case SC_HUGE_F64: CHECK(fk_gguf_set_arr(w, "tokenizer.ggml.scores", FK_GGUF_F64, dscores, NP)); break;
    case SC_NAN: dscores[4] = 0.0 / 0.0; CHECK(fk_gguf_set_arr(w, "tokenizer.ggml.scores", FK_GGUF_F64, dscores, NP)); break;
    case SC_NESTED: break;  // written by hand below
    }
    const char *merges[2] = {"a b", "x"};
    uint64_t mlens[2] = {3, 1};
    if (s->mg == MG_INTS) {
        int32_t m[2] = {3, 4};
        CHECK(fk_gguf_set_arr(w, "tokenizer.ggml.merges", FK_GGUF_I32, m, 2));
    } else if (s->mg == MG_BAD) {
        CHECK(fk_gguf_set_arr_str(w, "tokenizer.ggml.merges", merges, mlens, 2));
    } else if (s->gpt2) {
        CHECK(fk_gguf_set_arr_str(w, "tokenizer.ggml.merges", merges, mlens, 1));
    }
    CHECK(fk_gguf_writer_write(w, path));
    fk_gguf_writer_free(w);
    if (s->sc == SC_NESTED) {  // 'tokenizer.ggml.scores': an array of NP arrays of one u8
        unsigned char kv[256], *q = kv;
        put_str(&q, "tokenizer.ggml.scores");
        put_u32(&q, FK_GGUF_ARRAY);
        put_u32(&q, FK_GGUF_ARRAY);
        put_u64(&q, NP);
        for (int i = 0; i < NP; i++) { put_u32(&q, FK_GGUF_U8); put_u64(&q, 1); *q++ = 1; }
        insert_kvs(path, kv, (size_t)(q - kv), 1);
    }
    return path;
}

static fk_status load_tok(const char *path) {
    fk_gguf g;
    fk_status st = fk_gguf_open(path, &g);
    if (st != FK_OK) return st;
    fk_tokenizer *t = NULL;
    st = fk_tok_load_gguf(&g, &t);
    fk_gguf_close(&g);
    if (st == FK_OK) fk_tok_free(t);
    else assert_null(t);
    return st;
}

static void test_tokenizer_good(void **s) {
    (void)s;
    CHECK(load_tok(write_tok("tok_ok.gguf", &(tok_spec){0})));
    CHECK(load_tok(write_tok("tok_ok2.gguf", &(tok_spec){.gpt2 = true})));
}

// Wrong element types: strings where integers or numbers belong hit an assert before.
static void test_tokenizer_types(void **s) {
    (void)s;
    const char *p = write_tok("tt_str.gguf", &(tok_spec){.tt = TT_STRINGS});
    expect_msg(load_tok(p), FK_ERR_FORMAT, p, "key 'tokenizer.ggml.token_type' is an array of string", "expected an array of integers");
    p = write_tok("tt_f32.gguf", &(tok_spec){.tt = TT_FLOATS});
    expect_msg(load_tok(p), FK_ERR_FORMAT, p, "key 'tokenizer.ggml.token_type' is an array of f32", "integers");
    p = write_tok("tt_scalar.gguf", &(tok_spec){.tt = TT_SCALAR});
    expect_msg(load_tok(p), FK_ERR_FORMAT, p, "key 'tokenizer.ggml.token_type' has type u32", "expected an array of integers");
    p = write_tok("sc_str.gguf", &(tok_spec){.sc = SC_STRINGS});
    expect_msg(load_tok(p), FK_ERR_FORMAT, p, "key 'tokenizer.ggml.scores' is an array of string", "expected an array of numbers");
    p = write_tok("sc_nested.gguf", &(tok_spec){.sc = SC_NESTED});
    expect_msg(load_tok(p), FK_ERR_FORMAT, p, "key 'tokenizer.ggml.scores' is an array of array", "numbers");
    p = write_tok("tk_int.gguf", &(tok_spec){.tk = TK_INTS});
    expect_msg(load_tok(p), FK_ERR_FORMAT, p, "key 'tokenizer.ggml.tokens'", "expected an array of string");
    p = write_tok("mg_int.gguf", &(tok_spec){.gpt2 = true, .mg = MG_INTS});
    expect_msg(load_tok(p), FK_ERR_FORMAT, p, "key 'tokenizer.ggml.merges'", "expected an array of string");
    p = write_tok("mg_bad.gguf", &(tok_spec){.gpt2 = true, .mg = MG_BAD});
    expect_msg(load_tok(p), FK_ERR_FORMAT, p, "key 'tokenizer.ggml.merges'", "not two tokens");
}

// Lengths that disagree with tokenizer.ggml.tokens, and values outside their range.
static void test_tokenizer_lengths_values(void **s) {
    (void)s;
    const char *p = write_tok("tt_short.gguf", &(tok_spec){.tt = TT_SHORT});
    expect_msg(load_tok(p), FK_ERR_FORMAT, p, "key 'tokenizer.ggml.token_type' has 4 entries", "'tokenizer.ggml.tokens' has 6 tokens");
    p = write_tok("sc_long.gguf", &(tok_spec){.sc = SC_LONG});
    expect_msg(load_tok(p), FK_ERR_FORMAT, p, "key 'tokenizer.ggml.scores' has 7 entries", "6 tokens");
    p = write_tok("tt_val.gguf", &(tok_spec){.tt = TT_BADVAL});
    expect_msg(load_tok(p), FK_ERR_FORMAT, p, "key 'tokenizer.ggml.token_type': token 4 has type 99", "expected 1..6");
    // an f64 score no float holds: the conversion was undefined behaviour
    p = write_tok("sc_huge.gguf", &(tok_spec){.sc = SC_HUGE_F64});
    expect_msg(load_tok(p), FK_ERR_FORMAT, p, "key 'tokenizer.ggml.scores': token 4 has score 1e+300", NULL);
    p = write_tok("sc_nan.gguf", &(tok_spec){.sc = SC_NAN});
    expect_msg(load_tok(p), FK_ERR_FORMAT, p, "key 'tokenizer.ggml.scores': token 4", NULL);
    // a pre-tokenizer name with a NUL byte was shown cut at the NUL ("'gpt-2', a pre-tokenizer fusekit does not know")
    p = write_tok("pre_nul.gguf", &(tok_spec){.gpt2 = true, .pre = "gpt-2\0x", .pre_n = 7});
    expect_msg(load_tok(p), FK_ERR_UNSUPPORTED, p, "key 'tokenizer.ggml.pre' is 'gpt-2?x'", NULL);
}

// ------------------------------------------------------------------ declared counts and lengths

// A 1 KB file whose one key is an array (or string) declaring `count` elements (or bytes).
static const char *write_declared(const char *name, uint64_t n_tensors, uint64_t n_kv, uint32_t elem, uint64_t count) {
    unsigned char b[1024], *p = b;
    memset(b, 0xff, sizeof b);  // the bytes after the entries: lengths that run past the file
    memcpy(p, "GGUF", 4); p += 4;
    put_u32(&p, 3);
    put_u64(&p, n_tensors);
    put_u64(&p, n_kv);
    put_str(&p, "tokenizer.ggml.tokens");
    if (elem == FK_GGUF_STRING && count >> 62) {  // a string scalar with a huge length
        put_u32(&p, FK_GGUF_STRING);
        put_u64(&p, count);
    } else {
        put_u32(&p, FK_GGUF_ARRAY);
        put_u32(&p, elem);
        put_u64(&p, count);
        for (int i = 0; i < 8 && elem == FK_GGUF_STRING; i++) put_str(&p, "ab");
    }
    const char *path = tpath(name);
    spit(path, b, sizeof b);
    return path;
}

// Declared sizes beyond the file fail with FK_ERR_FORMAT before any allocation of that size
// (an attempted allocation of 2^40 entries would be FK_ERR_NOMEM or an abort under ASan).
static void test_declared_sizes(void **s) {
    (void)s;
    fk_gguf g;
    const char *p = write_declared("arr_u8.gguf", 0, 1, FK_GGUF_U8, 1ull << 40);
    expect_msg(fk_gguf_open(p, &g), FK_ERR_FORMAT, p, "key 'tokenizer.ggml.tokens': array of 1099511627776 u8 elements", "does not fit");
    p = write_declared("arr_str.gguf", 0, 1, FK_GGUF_STRING, 1ull << 40);
    expect_msg(fk_gguf_open(p, &g), FK_ERR_FORMAT, p, "key 'tokenizer.ggml.tokens': array of 1099511627776 string", "does not fit");
    // a count the file could hold (8-byte strings) but whose strings run out: found before the index is allocated
    p = write_declared("arr_str_short.gguf", 0, 1, FK_GGUF_STRING, 100);
    expect_msg(fk_gguf_open(p, &g), FK_ERR_FORMAT, p, "key 'tokenizer.ggml.tokens'", "runs past the end of the file");
    p = write_declared("arr_nested.gguf", 0, 1, FK_GGUF_ARRAY, 1ull << 40);
    expect_msg(fk_gguf_open(p, &g), FK_ERR_FORMAT, p, "key 'tokenizer.ggml.tokens': array of 1099511627776 array", "does not fit");
    p = write_declared("str_len.gguf", 0, 1, FK_GGUF_STRING, 1ull << 62);
    expect_msg(fk_gguf_open(p, &g), FK_ERR_FORMAT, p, "key 'tokenizer.ggml.tokens': string value runs past the end", NULL);
    p = write_declared("n_kv.gguf", 0, 1ull << 40, FK_GGUF_U8, 1);
    expect_msg(fk_gguf_open(p, &g), FK_ERR_FORMAT, p, "kv count 1099511627776", "cannot fit");
    p = write_declared("n_tensors.gguf", 1ull << 40, 1, FK_GGUF_U8, 1);
    expect_msg(fk_gguf_open(p, &g), FK_ERR_FORMAT, p, "tensor count 1099511627776", "cannot fit");
    // n_kv the 1 KB file could hold (at 13 bytes a key) but does not: refused when the keys run out
    p = write_declared("n_kv_plausible.gguf", 0, 70, FK_GGUF_U8, 1);
    expect_msg(fk_gguf_open(p, &g), FK_ERR_FORMAT, p, "key", NULL);
}

// ------------------------------------------------------------------ declared models

// A llama file with the given keys and only a small token embedding (vocab 8 x d 4, f32).
typedef struct { int64_t d, L, ffn, heads, ctx, kv_len; const char *f64_key; double f64; } model_spec;

static const char *write_model(const char *name, const model_spec *m) {
    const char *path = tpath(name);
    fk_gguf_writer *w = fk_gguf_writer_new();
    assert_non_null(w);
    CHECK(fk_gguf_set_str(w, "general.architecture", "llama", 5));
    CHECK(fk_gguf_set_u64(w, "llama.embedding_length", (uint64_t)m->d));
    CHECK(fk_gguf_set_u64(w, "llama.block_count", (uint64_t)m->L));
    CHECK(fk_gguf_set_u64(w, "llama.context_length", (uint64_t)m->ctx));
    CHECK(fk_gguf_set_u64(w, "llama.feed_forward_length", (uint64_t)m->ffn));
    CHECK(fk_gguf_set_u64(w, "llama.attention.head_count", (uint64_t)m->heads));
    if (m->kv_len) CHECK(fk_gguf_set_u64(w, "llama.attention.key_length", (uint64_t)m->kv_len));
    if (m->kv_len) CHECK(fk_gguf_set_u64(w, "llama.attention.value_length", (uint64_t)m->kv_len));
    static const char eps_key[] = "llama.attention.layer_norm_rms_epsilon";
    if (!m->f64_key || strcmp(m->f64_key, eps_key) != 0) CHECK(fk_gguf_set_f32(w, eps_key, 1e-5f));
    static float emb[8 * 4];
    uint64_t dims[2] = {4, 8};
    CHECK(fk_gguf_add_tensor(w, "token_embd.weight", FK_GGML_F32, 2, dims, emb, sizeof emb));
    CHECK(fk_gguf_writer_write(w, path));
    fk_gguf_writer_free(w);
    if (m->f64_key) {  // an f64 scalar (the writer has no f64 setter)
        unsigned char kv[128], *q = kv;
        put_str(&q, m->f64_key);
        put_u32(&q, FK_GGUF_F64);
        memcpy(q, &m->f64, 8);
        q += 8;
        insert_kvs(path, kv, (size_t)(q - kv), 1);
    }
    return path;
}

static fk_status import(const char *path) {
    fk_model m;
    fk_tokenizer *t = NULL;
    fk_status st = fk_gguf_import(path, &m, &t);
    if (st == FK_OK) { fk_model_free(&m); fk_tok_free(t); }
    assert_null(t);
    return st;
}

// A small file declaring a model of ~2^38 weights (1 TB of floats): fk_config_validate lets it
// through (under 2^40), and it was allocated before the tensors were found to disagree.
static void test_declared_model(void **s) {
    (void)s;
    model_spec big = {.d = 1 << 15, .L = 32, .ffn = 1 << 15, .heads = 32, .ctx = 4096};
    const char *p = write_model("big.gguf", &big);
    expect_msg(import(p), FK_ERR_FORMAT, p, "tensor 'token_embd.weight' has shape [4, 8]", "the keys imply [32768, 8]");
    // no tensor disagrees by name: the keys are named
    model_spec big2 = {.d = 4, .L = 64, .ffn = 1 << 20, .heads = 2, .ctx = 4096};
    p = write_model("big_ffn.gguf", &big2);
    expect_msg(import(p), FK_ERR_FORMAT, p, "'llama.feed_forward_length' (1048576)", "but the file's tensors (1) hold only 32 elements");
    // beyond what fk_config_validate accepts (sizes that would overflow products): its message,
    // after the file and the keys
    const fk_status V = FK_ERR_ARG;
    model_spec ctx = {.d = 4, .L = 1, .ffn = 8, .heads = 2, .ctx = 1ll << 40};
    p = write_model("ctx.gguf", &ctx);
    expect_msg(import(p), V, p, "'llama.*' keys describe: config: ", NULL);
    model_spec emb = {.d = 1ll << 40, .L = 1, .ffn = 8, .heads = 1, .ctx = 16};
    p = write_model("emb.gguf", &emb);
    expect_msg(import(p), V, p, "'llama.*' keys describe: config: ", NULL);
    model_spec ffn = {.d = 4, .L = 1, .ffn = 1ll << 40, .heads = 1, .ctx = 16};
    p = write_model("ffn.gguf", &ffn);
    expect_msg(import(p), V, p, "'llama.*' keys describe: config: ", NULL);
    model_spec hd = {.d = 4, .L = 1, .ffn = 8, .heads = 2, .ctx = 16, .kv_len = 1ll << 40};
    p = write_model("head_dim.gguf", &hd);
    expect_msg(import(p), V, p, "'llama.*' keys describe: config: ", NULL);
}

// f64 keys that no float holds: the conversion was undefined, and an infinite RoPE base or
// epsilon loaded.
static void test_key_values(void **s) {
    (void)s;
    model_spec ok = {.d = 4, .L = 1, .ffn = 8, .heads = 2, .ctx = 16, .f64_key = "llama.rope.freq_base", .f64 = 500000.0};
    const char *p = write_model("theta_ok.gguf", &ok);
    expect_msg(import(p), FK_ERR_FORMAT, p, "describe a model of at least 192 weights", NULL);  // the keys pass
    model_spec th = ok;
    th.f64 = 1e300;
    p = write_model("theta.gguf", &th);
    expect_msg(import(p), FK_ERR_FORMAT, p, "key 'llama.rope.freq_base' is 1e+300", "within float range");
    model_spec ep = {.d = 4, .L = 1, .ffn = 8, .heads = 2, .ctx = 16, .f64_key = "llama.attention.layer_norm_rms_epsilon", .f64 = 1e300};
    p = write_model("eps.gguf", &ep);
    expect_msg(import(p), FK_ERR_FORMAT, p, "key 'llama.attention.layer_norm_rms_epsilon' is 1e+300", "within float range");
    ep.f64 = 1.0 / 0.0;
    p = write_model("eps_inf.gguf", &ep);
    expect_msg(import(p), FK_ERR_FORMAT, p, "key 'llama.attention.layer_norm_rms_epsilon' is inf", NULL);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tokenizer_good),  cmocka_unit_test(test_tokenizer_types), cmocka_unit_test(test_tokenizer_lengths_values),
        cmocka_unit_test(test_declared_sizes),  cmocka_unit_test(test_declared_model),  cmocka_unit_test(test_key_values),
    };
    return cmocka_run_group_tests(tests, tmpdir_setup, tmpdir_teardown);
}
