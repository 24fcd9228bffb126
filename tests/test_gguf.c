// GGUF tests: writer -> reader round trips (every value type, string arrays holding NUL
// bytes and UTF-8, f32/f16 tensors), the shared llama.cpp vocabulary files, and
// malformed files built byte by byte that must fail with a message naming the problem.
// FK_KEEP_GGUF=path keeps a copy of the round-trip file (for tools/ref/check_gguf.py).
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <dirent.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fusekit/gguf.h"
#include "test_util.h"

// Plain write (no fsync): the prefix loop writes hundreds of files.
static void put_file(const char *path, const void *data, size_t n) {
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    if (n) assert_int_equal(fwrite(data, 1, n, fp), n);
    assert_int_equal(fclose(fp), 0);
}

static void expect_error(fk_status st, fk_status want, const char *needle1, const char *needle2) {
    if (st == FK_OK) fail_msg("expected an error mentioning '%s'", needle1);
    const char *msg = fk_last_error();
    if (st != want) fail_msg("status %s, expected %s: %s", fk_status_name(st), fk_status_name(want), msg);
    print_message("  error as expected: %s\n", msg);
    if (needle1 && !strstr(msg, needle1)) fail_msg("message '%s' does not mention '%s'", msg, needle1);
    if (needle2 && !strstr(msg, needle2)) fail_msg("message '%s' does not mention '%s'", msg, needle2);
}

static void expect_open_error(const char *path, fk_status want, const char *needle1, const char *needle2) {
    fk_gguf g;
    expect_error(fk_gguf_open(path, &g), want, needle1, needle2);
    assert_null(g.kvs);  // closed and cleared on failure
    assert_null(g.map.data);
}

static bool str_is(fk_gguf_str s, const char *c, size_t n) { return s.n == n && memcmp(s.s, c, n) == 0; }
#define STR_IS(s, lit) str_is((s), (lit), sizeof(lit) - 1)

// ------------------------------------------------------------------ byte builder

typedef struct { unsigned char *b; size_t n, cap; } bb;
static void bb_put(bb *x, const void *p, size_t n) {
    if (x->n + n > x->cap) { x->cap = (x->n + n) * 2 + 64; x->b = realloc(x->b, x->cap); assert_non_null(x->b); }
    if (n) memcpy(x->b + x->n, p, n);
    x->n += n;
}
static void bb_u8(bb *x, uint8_t v) { bb_put(x, &v, 1); }
static void bb_u16(bb *x, uint16_t v) { unsigned char b[2] = {(unsigned char)v, (unsigned char)(v >> 8)}; bb_put(x, b, 2); }
static void bb_u32(bb *x, uint32_t v) { unsigned char b[4]; for (int i = 0; i < 4; i++) b[i] = (unsigned char)(v >> 8 * i); bb_put(x, b, 4); }
static void bb_u64(bb *x, uint64_t v) { unsigned char b[8]; for (int i = 0; i < 8; i++) b[i] = (unsigned char)(v >> 8 * i); bb_put(x, b, 8); }
static void bb_str(bb *x, const char *s) { bb_u64(x, strlen(s)); bb_put(x, s, strlen(s)); }
static void bb_hdr(bb *x, uint32_t version, uint64_t n_tensors, uint64_t n_kv) {
    bb_put(x, "GGUF", 4); bb_u32(x, version); bb_u64(x, n_tensors); bb_u64(x, n_kv);
}
static void bb_pad(bb *x, size_t a) { while (x->n % a) bb_u8(x, 0); }
static void bb_zeros(bb *x, size_t n) { for (size_t i = 0; i < n; i++) bb_u8(x, 0); }
static void bb_save(bb *x, const char *name) { put_file(tpath(name), x->b, x->n); x->n = 0; }

// ------------------------------------------------------------------ round trip

static const uint8_t a_u8[] = {0, 1, 255};
static const int8_t a_i8[] = {-128, 0, 127};
static const uint16_t a_u16[] = {0, 65535, 1234};
static const int16_t a_i16[] = {-32768, 32767, -1};
static const uint32_t a_u32[] = {0, 4294967295u, 7};
static const int32_t a_i32[] = {INT32_MIN, INT32_MAX, -5};
static const float a_f32[] = {1.5f, -0.25f, 3.0e38f};
static const uint8_t a_bool[] = {1, 0, 1};
static const uint64_t a_u64[] = {0, UINT64_MAX, 1ull << 40};
static const int64_t a_i64[] = {INT64_MIN, INT64_MAX, -3};
static const double a_f64[] = {3.141592653589793, -1e300, 0.0};
static const char s_nul[] = "a\0b";            // 3 bytes with a NUL inside
static const char s_utf8[] = "h\xc3\xa9llo \xe2\x82\xac \xf0\x9f\x98\x80";  // héllo € 😀

static float t0[15];
static uint16_t t1[7];

static void write_sample(const char *path) {
    fk_gguf_writer *w = fk_gguf_writer_new();
    assert_non_null(w);
    CHECK(fk_gguf_set_str(w, "general.architecture", "test", 4));
    CHECK(fk_gguf_set_u32(w, "replaced", 1));
    CHECK(fk_gguf_set_u32(w, "s.u32", 4000000000u));
    CHECK(fk_gguf_set_i32(w, "s.i32", -123456));
    CHECK(fk_gguf_set_u64(w, "s.u64", 0xfedcba9876543210ull));
    CHECK(fk_gguf_set_f32(w, "s.f32", 0.1f));
    CHECK(fk_gguf_set_bool(w, "s.true", true));
    CHECK(fk_gguf_set_bool(w, "s.false", false));
    CHECK(fk_gguf_set_str(w, "s.str_nul", s_nul, 3));
    CHECK(fk_gguf_set_str(w, "s.str_utf8", s_utf8, strlen(s_utf8)));
    CHECK(fk_gguf_set_str(w, "s.str_empty", "", 0));
    CHECK(fk_gguf_set_arr(w, "a.u8", FK_GGUF_U8, a_u8, 3));
    CHECK(fk_gguf_set_arr(w, "a.i8", FK_GGUF_I8, a_i8, 3));
    CHECK(fk_gguf_set_arr(w, "a.u16", FK_GGUF_U16, a_u16, 3));
    CHECK(fk_gguf_set_arr(w, "a.i16", FK_GGUF_I16, a_i16, 3));
    CHECK(fk_gguf_set_arr(w, "a.u32", FK_GGUF_U32, a_u32, 3));
    CHECK(fk_gguf_set_arr(w, "a.i32", FK_GGUF_I32, a_i32, 3));
    CHECK(fk_gguf_set_arr(w, "a.f32", FK_GGUF_F32, a_f32, 3));
    CHECK(fk_gguf_set_arr(w, "a.bool", FK_GGUF_BOOL, a_bool, 3));
    CHECK(fk_gguf_set_arr(w, "a.u64", FK_GGUF_U64, a_u64, 3));
    CHECK(fk_gguf_set_arr(w, "a.i64", FK_GGUF_I64, a_i64, 3));
    CHECK(fk_gguf_set_arr(w, "a.f64", FK_GGUF_F64, a_f64, 3));
    CHECK(fk_gguf_set_arr(w, "a.empty", FK_GGUF_I32, NULL, 0));
    const char *strs[] = {"!", s_nul, s_utf8, "", "<|endoftext|>"};
    const uint64_t lens[] = {1, 3, strlen(s_utf8), 0, 13};
    CHECK(fk_gguf_set_arr_str(w, "a.str", strs, lens, 5));
    CHECK(fk_gguf_set_u32(w, "replaced", 2));  // replaces in place, keeps its position
    for (int i = 0; i < 15; i++) t0[i] = (float)i * 0.5f - 3.0f;
    for (int i = 0; i < 7; i++) t1[i] = fk_f32_to_f16((float)i / 3.0f);
    const uint64_t d0[] = {5, 3}, d1[] = {7};
    CHECK(fk_gguf_add_tensor(w, "blk.0.weight", FK_GGML_F32, 2, d0, t0, sizeof t0));
    CHECK(fk_gguf_add_tensor(w, "blk.0.bias", FK_GGML_F16, 1, d1, t1, sizeof t1));
    CHECK(fk_gguf_writer_write(w, path));
    fk_gguf_writer_free(w);
}

static void check_sample(const char *path) {
    fk_gguf g;
    CHECK(fk_gguf_open(path, &g));
    assert_int_equal(g.version, 3);
    assert_int_equal(g.alignment, 32);
    assert_int_equal(g.n_kv, 24);
    assert_int_equal(g.n_tensors, 2);
    assert_true(STR_IS(g.kvs[0].key, "general.architecture"));
    assert_true(STR_IS(g.kvs[1].key, "replaced"));
    assert_true(STR_IS(g.kvs[23].key, "a.str"));
    uint64_t u;
    int64_t i;
    double d;
    bool b;
    fk_gguf_str s;
    CHECK(fk_gguf_get_u64(&g, "replaced", &u)); assert_int_equal(u, 2);
    CHECK(fk_gguf_get_u64(&g, "s.u32", &u)); assert_int_equal(u, 4000000000u);
    CHECK(fk_gguf_get_i64(&g, "s.u32", &i)); assert_int_equal(i, 4000000000);
    CHECK(fk_gguf_get_i64(&g, "s.i32", &i)); assert_int_equal(i, -123456);
    CHECK(fk_gguf_get_f64(&g, "s.i32", &d)); assert_true(d == -123456.0);
    CHECK(fk_gguf_get_u64(&g, "s.u64", &u)); assert_true(u == 0xfedcba9876543210ull);
    CHECK(fk_gguf_get_f64(&g, "s.f32", &d)); assert_true(d == (double)0.1f);
    CHECK(fk_gguf_get_bool(&g, "s.true", &b)); assert_true(b);
    CHECK(fk_gguf_get_bool(&g, "s.false", &b)); assert_false(b);
    CHECK(fk_gguf_get_str(&g, "general.architecture", &s)); assert_true(STR_IS(s, "test"));
    CHECK(fk_gguf_get_str(&g, "s.str_nul", &s)); assert_true(str_is(s, s_nul, 3));
    CHECK(fk_gguf_get_str(&g, "s.str_utf8", &s)); assert_true(str_is(s, s_utf8, strlen(s_utf8)));
    CHECK(fk_gguf_get_str(&g, "s.str_empty", &s)); assert_int_equal(s.n, 0);
    // getters refuse what does not fit or has the wrong type
    expect_error(fk_gguf_get_u64(&g, "s.i32", &u), FK_ERR_FORMAT, "'s.i32' is -123456", "non-negative");
    expect_error(fk_gguf_get_i64(&g, "s.u64", &i), FK_ERR_FORMAT, "'s.u64'", "does not fit in i64");
    expect_error(fk_gguf_get_u64(&g, "s.f32", &u), FK_ERR_FORMAT, "'s.f32' has type f32", "expected an integer");
    expect_error(fk_gguf_get_u64(&g, "s.true", &u), FK_ERR_FORMAT, "has type bool", NULL);
    expect_error(fk_gguf_get_str(&g, "s.u32", &s), FK_ERR_FORMAT, "'s.u32' has type u32, expected type string", path);
    expect_error(fk_gguf_get_bool(&g, "a.bool", &b), FK_ERR_FORMAT, "has an array of bool, expected type bool", NULL);
    expect_error(fk_gguf_get_u64(&g, "nope", &u), FK_ERR_FORMAT, "key 'nope' is missing", path);
    const void *p;
    uint64_t n;
    expect_error(fk_gguf_get_arr(&g, "a.f32", FK_GGUF_F64, &p, &n), FK_ERR_FORMAT, "'a.f32' has an array of f32, expected an array of f64", NULL);
    expect_error(fk_gguf_get_arr(&g, "s.u32", FK_GGUF_U32, &p, &n), FK_ERR_FORMAT, "has type u32, expected an array of u32", NULL);
    // numeric arrays: raw bytes and element readers
    struct { const char *key; fk_gguf_type t; const void *v; size_t sz; } arrs[] = {
        {"a.u8", FK_GGUF_U8, a_u8, 1}, {"a.i8", FK_GGUF_I8, a_i8, 1}, {"a.u16", FK_GGUF_U16, a_u16, 2},
        {"a.i16", FK_GGUF_I16, a_i16, 2}, {"a.u32", FK_GGUF_U32, a_u32, 4}, {"a.i32", FK_GGUF_I32, a_i32, 4},
        {"a.f32", FK_GGUF_F32, a_f32, 4}, {"a.bool", FK_GGUF_BOOL, a_bool, 1}, {"a.u64", FK_GGUF_U64, a_u64, 8},
        {"a.i64", FK_GGUF_I64, a_i64, 8}, {"a.f64", FK_GGUF_F64, a_f64, 8}};
    for (size_t k = 0; k < sizeof arrs / sizeof *arrs; k++) {
        CHECK(fk_gguf_get_arr(&g, arrs[k].key, arrs[k].t, &p, &n));
        assert_int_equal(n, 3);
        assert_memory_equal(p, arrs[k].v, 3 * arrs[k].sz);
        const fk_gguf_kv *kv = fk_gguf_find(&g, arrs[k].key);
        assert_int_equal(kv->type, FK_GGUF_ARRAY);
        assert_int_equal(kv->elem_type, arrs[k].t);
    }
    const fk_gguf_kv *kv;
    kv = fk_gguf_find(&g, "a.i8");
    assert_int_equal(fk_gguf_arr_i64(kv, 0), -128); assert_true(fk_gguf_arr_f64(kv, 2) == 127.0);
    kv = fk_gguf_find(&g, "a.i16");
    assert_int_equal(fk_gguf_arr_i64(kv, 0), -32768); assert_int_equal(fk_gguf_arr_i64(kv, 2), -1);
    kv = fk_gguf_find(&g, "a.u16");
    assert_int_equal(fk_gguf_arr_i64(kv, 1), 65535);
    kv = fk_gguf_find(&g, "a.u32");
    assert_int_equal(fk_gguf_arr_i64(kv, 1), 4294967295ll);
    kv = fk_gguf_find(&g, "a.i32");
    assert_int_equal(fk_gguf_arr_i64(kv, 0), INT32_MIN); assert_true(fk_gguf_arr_f64(kv, 2) == -5.0);
    kv = fk_gguf_find(&g, "a.f32");
    assert_true(fk_gguf_arr_f64(kv, 1) == -0.25); assert_int_equal(fk_gguf_arr_i64(kv, 0), 1);
    assert_int_equal(fk_gguf_arr_i64(kv, 2), INT64_MAX);  // 3e38 saturates
    kv = fk_gguf_find(&g, "a.i64");
    assert_true(fk_gguf_arr_i64(kv, 0) == INT64_MIN); assert_true(fk_gguf_arr_i64(kv, 1) == INT64_MAX);
    kv = fk_gguf_find(&g, "a.u64");
    assert_true(fk_gguf_arr_f64(kv, 1) == 18446744073709551615.0);
    kv = fk_gguf_find(&g, "a.f64");
    assert_true(fk_gguf_arr_f64(kv, 0) == 3.141592653589793); assert_true(fk_gguf_arr_f64(kv, 1) == -1e300);
    kv = fk_gguf_find(&g, "a.bool");
    assert_int_equal(fk_gguf_arr_i64(kv, 0), 1); assert_int_equal(fk_gguf_arr_i64(kv, 1), 0);
    kv = fk_gguf_find(&g, "s.i32");  // a scalar reads as element 0
    assert_int_equal(fk_gguf_arr_i64(kv, 0), -123456);
    CHECK(fk_gguf_get_arr(&g, "a.empty", FK_GGUF_I32, &p, &n)); assert_int_equal(n, 0);
    // string array
    CHECK(fk_gguf_get_arr(&g, "a.str", FK_GGUF_STRING, &p, &n));
    assert_int_equal(n, 5);
    const fk_gguf_str *ss = p;
    assert_true(STR_IS(ss[0], "!"));
    assert_true(str_is(ss[1], s_nul, 3));
    assert_true(str_is(ss[2], s_utf8, strlen(s_utf8)));
    assert_int_equal(ss[3].n, 0);
    assert_true(STR_IS(ss[4], "<|endoftext|>"));
    // tensors: order, shapes, aligned offsets, identical bytes
    const fk_gguf_tensor *t = &g.tensors[0];
    assert_true(STR_IS(t->name, "blk.0.weight"));
    assert_int_equal(t->n_dims, 2); assert_int_equal(t->dims[0], 5); assert_int_equal(t->dims[1], 3);
    assert_int_equal(t->ggml_type, FK_GGML_F32);
    assert_int_equal(t->nbytes, sizeof t0);
    assert_memory_equal(t->data, t0, sizeof t0);
    t = fk_gguf_find_tensor(&g, "blk.0.bias");
    assert_ptr_equal(t, &g.tensors[1]);
    assert_int_equal(t->n_dims, 1); assert_int_equal(t->dims[0], 7); assert_int_equal(t->dims[1], 1);
    assert_int_equal(t->ggml_type, FK_GGML_F16);
    assert_int_equal(t->nbytes, sizeof t1);
    assert_int_equal(t->offset, 64);  // 60 bytes of f32, padded to 32
    assert_memory_equal(t->data, t1, sizeof t1);
    assert_int_equal(g.data_offset % 32, 0);
    assert_int_equal(g.data_offset + 64 + 32, g.map.size);  // the last tensor is padded too
    assert_null(fk_gguf_find_tensor(&g, "blk.0"));
    assert_null(fk_gguf_find(&g, "a.str."));
    fk_gguf_close(&g);
    assert_null(g.kvs);
}

static bool tmp_leftovers(void) {
    DIR *d = opendir(tmpdir);
    assert_non_null(d);
    bool found = false;
    struct dirent *e;
    while ((e = readdir(d))) if (strstr(e->d_name, ".tmp.")) found = true;
    closedir(d);
    return found;
}

static void test_roundtrip(void **st) {
    (void)st;
    write_sample(tpath("rt.gguf"));
    check_sample(tpath("rt.gguf"));
    assert_false(tmp_leftovers());
    const char *keep = getenv("FK_KEEP_GGUF");
    if (keep && *keep) { write_sample(keep); check_sample(keep); print_message("  kept %s\n", keep); }
}

// The reader's side of the scalar types the writer has no setter for, and nested arrays,
// which are validated and skipped: the kv is there, the typed getters refuse it.
static void test_reader_types(void **st) {
    (void)st;
    bb x = {0};
    bb_hdr(&x, 2, 0, 9);
    bb_str(&x, "u8"); bb_u32(&x, FK_GGUF_U8); bb_u8(&x, 200);
    bb_str(&x, "i8"); bb_u32(&x, FK_GGUF_I8); bb_u8(&x, 0x80);
    bb_str(&x, "u16"); bb_u32(&x, FK_GGUF_U16); bb_u16(&x, 60000);
    bb_str(&x, "i16"); bb_u32(&x, FK_GGUF_I16); bb_u16(&x, 0xfffe);
    bb_str(&x, "i64"); bb_u32(&x, FK_GGUF_I64); bb_u64(&x, (uint64_t)-5);
    double f = -2.5e-300;
    uint64_t fb;
    memcpy(&fb, &f, 8);
    bb_str(&x, "f64"); bb_u32(&x, FK_GGUF_F64); bb_u64(&x, fb);
    // [[1, 2], ["x"], []]
    bb_str(&x, "nested"); bb_u32(&x, FK_GGUF_ARRAY); bb_u32(&x, FK_GGUF_ARRAY); bb_u64(&x, 3);
    bb_u32(&x, FK_GGUF_U16); bb_u64(&x, 2); bb_u16(&x, 1); bb_u16(&x, 2);
    bb_u32(&x, FK_GGUF_STRING); bb_u64(&x, 1); bb_str(&x, "x");
    bb_u32(&x, FK_GGUF_I8); bb_u64(&x, 0);
    bb_str(&x, "general.alignment"); bb_u32(&x, FK_GGUF_U32); bb_u32(&x, 64);
    bb_str(&x, "last"); bb_u32(&x, FK_GGUF_BOOL); bb_u8(&x, 1);
    size_t full = x.n;
    unsigned char *copy = malloc(full);
    memcpy(copy, x.b, full);
    bb_save(&x, "types.gguf");
    fk_gguf g;
    CHECK(fk_gguf_open(tpath("types.gguf"), &g));
    assert_int_equal(g.version, 2);
    assert_int_equal(g.alignment, 64);
    uint64_t u;
    int64_t i;
    double d;
    bool b;
    CHECK(fk_gguf_get_u64(&g, "u8", &u)); assert_int_equal(u, 200);
    CHECK(fk_gguf_get_i64(&g, "i8", &i)); assert_int_equal(i, -128);
    CHECK(fk_gguf_get_u64(&g, "u16", &u)); assert_int_equal(u, 60000);
    CHECK(fk_gguf_get_i64(&g, "i16", &i)); assert_int_equal(i, -2);
    CHECK(fk_gguf_get_i64(&g, "i64", &i)); assert_int_equal(i, -5);
    CHECK(fk_gguf_get_f64(&g, "f64", &d)); assert_true(d == f);
    CHECK(fk_gguf_get_f64(&g, "u16", &d)); assert_true(d == 60000.0);
    CHECK(fk_gguf_get_bool(&g, "last", &b)); assert_true(b);
    expect_error(fk_gguf_get_u64(&g, "i8", &u), FK_ERR_FORMAT, "'i8' is -128", NULL);
    const fk_gguf_kv *kv = fk_gguf_find(&g, "nested");
    assert_non_null(kv);
    assert_int_equal(kv->type, FK_GGUF_ARRAY);
    assert_int_equal(kv->elem_type, FK_GGUF_ARRAY);
    assert_int_equal(kv->count, 3);
    const void *p;
    expect_error(fk_gguf_get_arr(&g, "nested", FK_GGUF_ARRAY, &p, &u), FK_ERR_FORMAT, "'nested' is an array of arrays",
                 "skips and does not read");
    fk_gguf_close(&g);
    // every prefix of a file without tensors fails cleanly
    for (size_t n = 0; n < full; n++) {
        put_file(tpath("types_cut.gguf"), copy, n);
        fk_status s = fk_gguf_open(tpath("types_cut.gguf"), &g);
        if (s != FK_ERR_FORMAT) fail_msg("prefix of %zu/%zu bytes: %s %s", n, full, fk_status_name(s), fk_last_error());
    }
    free(copy);
    free(x.b);
}

// ------------------------------------------------------------------ shared vocabulary files

#define VOCAB FK_SHARED_DATA "/tokenizers/"

static void test_real_files(void **st) {
    (void)st;
    if (!fk_path_exists(FK_SHARED_DATA)) {
        print_message("  SKIPPED: shared data folder %s is absent\n", FK_SHARED_DATA);
        skip();
    }
    fk_gguf g;
    fk_gguf_str s;
    const void *p;
    uint64_t n, u;
    bool b;
    CHECK(fk_gguf_open(VOCAB "ggml-vocab-gpt-2.gguf", &g));
    assert_int_equal(g.version, 3);
    assert_int_equal(g.n_tensors, 0);
    CHECK(fk_gguf_get_str(&g, "tokenizer.ggml.model", &s)); assert_true(STR_IS(s, "gpt2"));
    CHECK(fk_gguf_get_arr(&g, "tokenizer.ggml.tokens", FK_GGUF_STRING, &p, &n));
    assert_int_equal(n, 50257);
    const fk_gguf_str *tok = p;
    assert_true(STR_IS(tok[0], "!"));
    assert_true(STR_IS(tok[50256], "<|endoftext|>"));
    CHECK(fk_gguf_get_arr(&g, "tokenizer.ggml.merges", FK_GGUF_STRING, &p, &n));
    assert_int_equal(n, 50000);
    assert_true(STR_IS(((const fk_gguf_str *)p)[0], "\xc4\xa0 t"));  // "Ġ t"
    CHECK(fk_gguf_get_arr(&g, "tokenizer.ggml.token_type", FK_GGUF_I32, &p, &n));
    assert_int_equal(n, 50257);
    CHECK(fk_gguf_get_u64(&g, "tokenizer.ggml.eos_token_id", &u)); assert_int_equal(u, 50256);
    fk_gguf_close(&g);

    CHECK(fk_gguf_open(VOCAB "ggml-vocab-llama-spm.gguf", &g));
    CHECK(fk_gguf_get_str(&g, "tokenizer.ggml.model", &s)); assert_true(STR_IS(s, "llama"));
    CHECK(fk_gguf_get_arr(&g, "tokenizer.ggml.scores", FK_GGUF_F32, &p, &n));
    assert_int_equal(n, 32000);
    const fk_gguf_kv *kv = fk_gguf_find(&g, "tokenizer.ggml.scores");
    for (uint64_t k = 0; k < n; k++) if (!isfinite(fk_gguf_arr_f64(kv, k))) fail_msg("score %llu is not finite", (unsigned long long)k);
    CHECK(fk_gguf_get_bool(&g, "tokenizer.ggml.add_bos_token", &b)); assert_true(b);
    CHECK(fk_gguf_get_bool(&g, "tokenizer.ggml.add_eos_token", &b)); assert_false(b);
    CHECK(fk_gguf_get_arr(&g, "tokenizer.ggml.tokens", FK_GGUF_STRING, &p, &n));
    assert_int_equal(n, 32000);
    assert_true(STR_IS(((const fk_gguf_str *)p)[1], "<s>"));
    fk_gguf_close(&g);

    // every vocabulary file in the folder opens
    const char *others[] = {"deepseek-coder", "deepseek-llm", "falcon", "mpt", "phi-3", "refact", "starcoder"};
    for (size_t k = 0; k < sizeof others / sizeof *others; k++) {
        char path[512];
        snprintf(path, sizeof path, VOCAB "ggml-vocab-%s.gguf", others[k]);
        if (!fk_path_exists(path)) continue;
        CHECK(fk_gguf_open(path, &g));
        CHECK(fk_gguf_get_arr(&g, "tokenizer.ggml.tokens", FK_GGUF_STRING, &p, &n));
        assert_true(n > 1000);
        fk_gguf_close(&g);
    }
}

// ------------------------------------------------------------------ malformed files

// A file with one tensor "w" (no kvs); data_bytes zero bytes after the padded infos.
static void tensor_file(bb *x, uint32_t n_dims, const uint64_t *dims, uint32_t type, uint64_t offset, size_t data_bytes) {
    bb_hdr(x, 3, 1, 0);
    bb_str(x, "w"); bb_u32(x, n_dims);
    for (uint32_t d = 0; d < n_dims; d++) bb_u64(x, dims[d]);
    bb_u32(x, type); bb_u64(x, offset);
    bb_pad(x, 32);
    bb_zeros(x, data_bytes);
}

static void test_malformed(void **st) {
    (void)st;
    bb x = {0};
    expect_open_error(tpath("missing.gguf"), FK_ERR_IO, "cannot open", "missing.gguf");
    bb_save(&x, "empty.gguf");
    expect_open_error(tpath("empty.gguf"), FK_ERR_FORMAT, "empty.gguf: not a GGUF file (only 0 bytes)", NULL);
    bb_put(&x, "GGML", 4); bb_u32(&x, 3); bb_u64(&x, 0); bb_u64(&x, 0); bb_save(&x, "magic.gguf");
    expect_open_error(tpath("magic.gguf"), FK_ERR_FORMAT, "bad magic", "not a GGUF file");
    bb_put(&x, "GGUF", 4); bb_u32(&x, 3); bb_save(&x, "short.gguf");
    expect_open_error(tpath("short.gguf"), FK_ERR_FORMAT, "truncated header", NULL);
    bb_hdr(&x, 1, 0, 0); bb_save(&x, "v1.gguf");
    expect_open_error(tpath("v1.gguf"), FK_ERR_FORMAT, "GGUF version 1 is not supported", NULL);
    bb_hdr(&x, 4, 0, 0); bb_save(&x, "v4.gguf");
    expect_open_error(tpath("v4.gguf"), FK_ERR_FORMAT, "unsupported GGUF version 4", NULL);
    bb_hdr(&x, 3u << 24, 0, 0); bb_save(&x, "be.gguf");
    expect_open_error(tpath("be.gguf"), FK_ERR_FORMAT, "big-endian", NULL);
    // absurd counts: refused before any allocation
    bb_hdr(&x, 3, 0, 1ull << 60); bb_zeros(&x, 64); bb_save(&x, "nkv.gguf");
    expect_open_error(tpath("nkv.gguf"), FK_ERR_FORMAT, "kv count 1152921504606846976 cannot fit", NULL);
    bb_hdr(&x, 3, UINT64_MAX, 0); bb_zeros(&x, 64); bb_save(&x, "nt.gguf");
    expect_open_error(tpath("nt.gguf"), FK_ERR_FORMAT, "tensor count 18446744073709551615", "cannot fit");
    bb_hdr(&x, 3, 0, 1); bb_str(&x, "arr"); bb_u32(&x, FK_GGUF_ARRAY); bb_u32(&x, FK_GGUF_U64); bb_u64(&x, 1ull << 61);
    bb_zeros(&x, 64); bb_save(&x, "narr.gguf");
    expect_open_error(tpath("narr.gguf"), FK_ERR_FORMAT, "key 'arr': array of 2305843009213693952 u64 elements", "does not fit");
    // string lengths past the end: key name, string value, string array element
    bb_hdr(&x, 3, 0, 1); bb_u64(&x, 1000); bb_put(&x, "abc", 3); bb_zeros(&x, 20); bb_save(&x, "keylen.gguf");
    expect_open_error(tpath("keylen.gguf"), FK_ERR_FORMAT, "key 0: name runs past the end of the file", "length 1000");
    bb_hdr(&x, 3, 0, 1); bb_str(&x, "general.name"); bb_u32(&x, FK_GGUF_STRING); bb_u64(&x, UINT64_MAX - 3);
    bb_save(&x, "strlen.gguf");
    expect_open_error(tpath("strlen.gguf"), FK_ERR_FORMAT, "key 'general.name': string value runs past the end of the file",
                      "length 18446744073709551612");
    bb_hdr(&x, 3, 0, 1); bb_str(&x, "tokenizer.ggml.tokens"); bb_u32(&x, FK_GGUF_ARRAY); bb_u32(&x, FK_GGUF_STRING);
    bb_u64(&x, 3); bb_str(&x, "a"); bb_u64(&x, 789); bb_zeros(&x, 20);
    bb_save(&x, "arrstr.gguf");
    expect_open_error(tpath("arrstr.gguf"), FK_ERR_FORMAT,
                      "arrstr.gguf: key 'tokenizer.ggml.tokens': string 1 runs past the end of the file (offset 78, length 789, file 106 bytes)", NULL);
    // unknown types
    bb_hdr(&x, 3, 0, 1); bb_str(&x, "weird"); bb_u32(&x, 13); bb_u64(&x, 0); bb_save(&x, "type.gguf");
    expect_open_error(tpath("type.gguf"), FK_ERR_FORMAT, "key 'weird': unknown value type 13", NULL);
    bb_hdr(&x, 3, 0, 1); bb_str(&x, "weird"); bb_u32(&x, FK_GGUF_ARRAY); bb_u32(&x, 99); bb_u64(&x, 0); bb_save(&x, "etype.gguf");
    expect_open_error(tpath("etype.gguf"), FK_ERR_FORMAT, "key 'weird': unknown array element type 99", NULL);
    // nested arrays deeper than the reader follows
    bb_hdr(&x, 3, 0, 1); bb_str(&x, "deep"); bb_u32(&x, FK_GGUF_ARRAY);
    for (int k = 0; k < 12; k++) { bb_u32(&x, FK_GGUF_ARRAY); bb_u64(&x, 1); }
    bb_u32(&x, FK_GGUF_U8); bb_u64(&x, 0); bb_save(&x, "deep.gguf");
    expect_open_error(tpath("deep.gguf"), FK_ERR_FORMAT, "key 'deep': arrays nested more than", NULL);
    // duplicate keys; general.alignment
    bb_hdr(&x, 3, 0, 3); bb_str(&x, "k"); bb_u32(&x, FK_GGUF_U8); bb_u8(&x, 1); bb_str(&x, "j"); bb_u32(&x, FK_GGUF_U8); bb_u8(&x, 1);
    bb_str(&x, "k"); bb_u32(&x, FK_GGUF_BOOL); bb_u8(&x, 1); bb_save(&x, "dupkey.gguf");
    expect_open_error(tpath("dupkey.gguf"), FK_ERR_FORMAT, "duplicate key 'k'", NULL);
    bb_hdr(&x, 3, 0, 1); bb_str(&x, "general.alignment"); bb_u32(&x, FK_GGUF_U32); bb_u32(&x, 48); bb_save(&x, "align.gguf");
    expect_open_error(tpath("align.gguf"), FK_ERR_FORMAT, "'general.alignment' is 48, expected a nonzero power of two", NULL);
    bb_hdr(&x, 3, 0, 1); bb_str(&x, "general.alignment"); bb_u32(&x, FK_GGUF_U32); bb_u32(&x, 0); bb_save(&x, "align0.gguf");
    expect_open_error(tpath("align0.gguf"), FK_ERR_FORMAT, "'general.alignment' is 0", NULL);
    bb_hdr(&x, 3, 0, 1); bb_str(&x, "general.alignment"); bb_u32(&x, FK_GGUF_U64); bb_u64(&x, 32); bb_save(&x, "align64.gguf");
    expect_open_error(tpath("align64.gguf"), FK_ERR_FORMAT, "'general.alignment' has type u64, expected u32", NULL);
    // tensors
    const uint64_t d4[] = {4, 2}, d5[] = {1, 1, 1, 1, 1}, dz[] = {4, 0}, dbig[] = {1ull << 32, 1ull << 32};
    tensor_file(&x, 2, d4, FK_GGML_F32, 0, 32); bb_save(&x, "t_ok.gguf");
    fk_gguf g;
    CHECK(fk_gguf_open(tpath("t_ok.gguf"), &g));
    assert_int_equal(g.tensors[0].nbytes, 32);
    fk_gguf_close(&g);
    tensor_file(&x, 2, d4, FK_GGML_F32, 0, 31); bb_save(&x, "t_past.gguf");
    expect_open_error(tpath("t_past.gguf"), FK_ERR_FORMAT, "tensor 'w': data runs past the end of the file", "32 bytes");
    tensor_file(&x, 2, d4, FK_GGML_F32, 1ull << 62, 32); bb_save(&x, "t_off.gguf");
    expect_open_error(tpath("t_off.gguf"), FK_ERR_FORMAT, "tensor 'w': data runs past the end of the file", NULL);
    tensor_file(&x, 2, d4, FK_GGML_F16, 16, 32); bb_save(&x, "t_align.gguf");
    expect_open_error(tpath("t_align.gguf"), FK_ERR_FORMAT, "tensor 'w': data offset 16 is not a multiple of the alignment 32", NULL);
    tensor_file(&x, 5, d5, FK_GGML_F32, 0, 32); bb_save(&x, "t_dims.gguf");
    expect_open_error(tpath("t_dims.gguf"), FK_ERR_FORMAT, "tensor 'w': has 5 dimensions, at most 4", NULL);
    tensor_file(&x, 2, dz, FK_GGML_F32, 0, 32); bb_save(&x, "t_zero.gguf");
    expect_open_error(tpath("t_zero.gguf"), FK_ERR_FORMAT, "tensor 'w': dimension 1 is 0", NULL);
    tensor_file(&x, 2, dbig, FK_GGML_F32, 0, 32); bb_save(&x, "t_big.gguf");
    expect_open_error(tpath("t_big.gguf"), FK_ERR_FORMAT, "tensor 'w': ", "overflow");
    // a quantised type: byte count from its blocks; rows must hold whole blocks (tests/test_quants.c has more)
    const uint64_t d64[] = {64, 2};
    tensor_file(&x, 2, d64, 8 /* Q8_0 */, 0, 136); bb_save(&x, "t_q8.gguf");
    CHECK(fk_gguf_open(tpath("t_q8.gguf"), &g));
    assert_int_equal(g.tensors[0].ggml_type, 8);
    assert_int_equal(g.tensors[0].nbytes, 136);
    assert_non_null(g.tensors[0].data);
    fk_gguf_close(&g);
    tensor_file(&x, 2, d4, 8 /* Q8_0 */, 0, 34); bb_save(&x, "t_q8row.gguf");
    expect_open_error(tpath("t_q8row.gguf"), FK_ERR_FORMAT, "tensor 'w': has rows of 4 elements", "Q8_0 block size 32");
    bb_hdr(&x, 3, 2, 0);
    for (int k = 0; k < 2; k++) { bb_str(&x, "same"); bb_u32(&x, 1); bb_u64(&x, 8); bb_u32(&x, FK_GGML_F32); bb_u64(&x, 32 * (uint64_t)k); }
    bb_pad(&x, 32); bb_zeros(&x, 64); bb_save(&x, "t_dup.gguf");
    expect_open_error(tpath("t_dup.gguf"), FK_ERR_FORMAT, "duplicate tensor 'same'", NULL);
    free(x.b);
}

// Every prefix of a written file (keys, string array, two tensors, the last one a
// multiple of 32 bytes so there is no trailing padding) fails cleanly.
static void test_truncated(void **st) {
    (void)st;
    fk_gguf_writer *w = fk_gguf_writer_new();
    assert_non_null(w);
    const char *strs[] = {"a", "bc", ""};
    const uint64_t lens[] = {1, 2, 0};
    float a[8] = {1, 2, 3, 4, 5, 6, 7, 8}, b[3] = {9, 10, 11};
    const uint64_t da[] = {8}, db[] = {3};
    CHECK(fk_gguf_set_str(w, "general.architecture", "llama", 5));
    CHECK(fk_gguf_set_u32(w, "n", 7));
    CHECK(fk_gguf_set_arr_str(w, "tokenizer.ggml.tokens", strs, lens, 3));
    CHECK(fk_gguf_set_arr(w, "scores", FK_GGUF_F32, a, 3));
    CHECK(fk_gguf_add_tensor(w, "b", FK_GGML_F32, 1, db, b, sizeof b));
    CHECK(fk_gguf_add_tensor(w, "a", FK_GGML_F32, 1, da, a, sizeof a));
    CHECK(fk_gguf_writer_write(w, tpath("small.gguf")));
    fk_gguf_writer_free(w);
    char *data;
    size_t n;
    CHECK(fk_read_file(tpath("small.gguf"), &data, &n));
    fk_gguf g;
    CHECK(fk_gguf_open(tpath("small.gguf"), &g));
    assert_int_equal(g.tensors[1].offset + 32, n - g.data_offset);
    fk_gguf_close(&g);
    int past = 0, trunc = 0;
    for (size_t k = 0; k < n; k++) {
        put_file(tpath("cut.gguf"), data, k);
        fk_status s = fk_gguf_open(tpath("cut.gguf"), &g);
        const char *msg = fk_last_error();
        if (s != FK_ERR_FORMAT) fail_msg("prefix of %zu/%zu bytes: %s %s", k, n, fk_status_name(s), msg);
        if (!strstr(msg, "cut.gguf: ")) fail_msg("prefix of %zu bytes: message does not name the file: %s", k, msg);
        past += strstr(msg, "runs past the end") != NULL;
        trunc += strstr(msg, "truncated") != NULL;
    }
    assert_true(past > 0 && trunc > 0);
    print_message("  %zu prefixes rejected (%d 'truncated', %d 'runs past the end')\n", n, trunc, past);
    free(data);
}

static void test_writer_errors(void **st) {
    (void)st;
    fk_gguf_writer *w = fk_gguf_writer_new();
    assert_non_null(w);
    float v[6] = {0};
    const uint64_t d[] = {2, 3}, d5[] = {1, 1, 1, 1, 1};
    expect_error(fk_gguf_add_tensor(w, "x", FK_GGML_F32, 2, d, v, 20), FK_ERR_ARG, "tensor 'x'", "need 24 bytes, got 20");
    expect_error(fk_gguf_add_tensor(w, "x", FK_GGML_F32, 5, d5, v, 4), FK_ERR_ARG, "5 dimensions", NULL);
    CHECK(fk_gguf_add_tensor(w, "x", FK_GGML_BF16, 2, d, v, 12));
    expect_error(fk_gguf_add_tensor(w, "x", FK_GGML_F32, 2, d, v, 24), FK_ERR_ARG, "duplicate tensor 'x'", NULL);
    expect_error(fk_gguf_set_arr(w, "s", FK_GGUF_STRING, v, 1), FK_ERR_ARG, "numeric elements", NULL);
    // a non-default alignment the caller sets is honoured
    CHECK(fk_gguf_set_u32(w, "general.alignment", 64));
    CHECK(fk_gguf_add_tensor(w, "y", FK_GGML_F16, 1, d, v, 4));
    CHECK(fk_gguf_writer_write(w, tpath("a64.gguf")));
    fk_gguf g;
    CHECK(fk_gguf_open(tpath("a64.gguf"), &g));
    assert_int_equal(g.alignment, 64);
    assert_int_equal(g.data_offset % 64, 0);
    assert_int_equal(g.tensors[1].offset, 64);
    assert_int_equal(g.tensors[0].ggml_type, FK_GGML_BF16);
    assert_memory_equal(g.tensors[0].data, v, 12);
    fk_gguf_close(&g);
    CHECK(fk_gguf_set_u32(w, "general.alignment", 24));
    expect_error(fk_gguf_writer_write(w, tpath("a24.gguf")), FK_ERR_ARG, "general.alignment", NULL);
    assert_false(fk_path_exists(tpath("a24.gguf")));
    CHECK(fk_gguf_set_u32(w, "general.alignment", 32));
    // an unwritable destination: an error, nothing left behind
    expect_error(fk_gguf_writer_write(w, tpath("no/such/dir.gguf")), FK_ERR_IO, "no/such/dir.gguf", NULL);
    assert_false(tmp_leftovers());
    fk_gguf_writer_free(w);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip),   cmocka_unit_test(test_reader_types), cmocka_unit_test(test_real_files),
        cmocka_unit_test(test_malformed),   cmocka_unit_test(test_truncated),    cmocka_unit_test(test_writer_errors),
    };
    return cmocka_run_group_tests(tests, tmpdir_setup, tmpdir_teardown);
}
