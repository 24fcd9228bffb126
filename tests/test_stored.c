// Frozen models that read their matrices as stored (fk_model_add_stored): the forward, the
// KV-cache step and the embedding lookup read F16 and Q8_0 rows in place, including rows kept
// in llama.cpp's interleaved RoPE order, and give the logits of the same model with the
// decoded weights in its arena. The stored rows are made here from the format's definition
// (F16: IEEE half; Q8_0: blocks of 32 int8 with one half-float scale, x = q * d), and the
// arena model gets exactly the values those rows decode to.
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "fusekit/gguf.h"
#include "fusekit/gguf_model.h"
#include "fusekit/hf.h"
#include "fusekit/model.h"
#include "fusekit/quants.h"
#include "nn/gemm.h"
#include "test_util.h"

enum { TY_F16 = 1, TY_Q8_0 = 8, TY_BF16 = 30 };

// The type make_pair stores the F16 entries in (test_stored_bf16_onednn switches it to BF16).
static uint32_t g_half_type = TY_F16;

// Encodes row w (n floats, n % 32 == 0) as Q8_0 blocks into dst and writes the decoded values
// back into w.
static void q8_0_row(float *w, int64_t n, unsigned char *dst) { test_q8_0_row(w, n, dst, w); }

static void bf16_row(float *w, int64_t n, unsigned char *dst) {
    for (int64_t j = 0; j < n; j++) {
        uint16_t h = fk_f32_to_bf16(w[j]);
        dst[2 * j] = (unsigned char)(h & 0xff);
        dst[2 * j + 1] = (unsigned char)(h >> 8);
        w[j] = fk_bf16_to_f32(h);
    }
}

static void f16_row(float *w, int64_t n, unsigned char *dst) {
    for (int64_t j = 0; j < n; j++) {
        uint16_t h = fk_f32_to_f16(w[j]);
        dst[2 * j] = (unsigned char)(h & 0xff);
        dst[2 * j + 1] = (unsigned char)(h >> 8);
        w[j] = fk_f16_to_f32(h);
    }
}

typedef struct {
    unsigned char *bufs[64];
    int n;
} owner;

static void owner_release(void *p) {
    owner *o = p;
    for (int i = 0; i < o->n; i++) free(o->bufs[i]);
    free(o);
}

// Stores rows [row0, row0 + rows) of entry pi of `stored` (encoded from ref's values, which
// get the decoded values), optionally in interleaved RoPE order, and poisons the arena rows.
static void store_rows(fk_model *ref, fk_model *stored, owner *ow, int pi, int64_t row0, int64_t rows, uint32_t type,
                       int64_t rope_hd) {
    const fk_param *p = &ref->params[pi];
    int64_t C = p->shape[1];
    size_t rb = type == TY_F16 || type == TY_BF16 ? (size_t)C * 2 : (size_t)(C / 32) * 34;
    unsigned char *buf = malloc(rb * (size_t)rows);
    assert_non_null(buf);
    for (int64_t r = 0; r < rows; r++) {
        // file row r holds table row t
        int64_t t = r;
        if (rope_hd > 0) {
            int64_t h = r / rope_hd, w = r % rope_hd;
            t = h * rope_hd + (w % 2) * (rope_hd / 2) + w / 2;
        }
        float *row = ref->w + p->offset + (row0 + t) * C;
        if (type == TY_F16) f16_row(row, C, buf + r * rb);
        else if (type == TY_BF16) bf16_row(row, C, buf + r * rb);
        else q8_0_row(row, C, buf + r * rb);
        float *poison = stored->w + p->offset + (row0 + t) * C;
        for (int64_t j = 0; j < C; j++) poison[j] = NAN;
    }
    ow->bufs[ow->n++] = buf;
    fk_stored s = {.param = pi, .row0 = row0, .rows = rows, .type = type, .data = buf, .row_bytes = rb, .rope_hd = rope_hd};
    CHECK(fk_model_add_stored(stored, &s));
}

static void make_pair(const fk_config *c, fk_model *ref, fk_model *st) {
    CHECK(fk_model_init(ref, c));
    CHECK(fk_model_init(st, c));
    fk_model_init_weights(ref, 5);
    fk_model_init_weights(st, 5);
    owner *ow = calloc(1, sizeof *ow);
    assert_non_null(ow);
    for (int i = 0; i < ref->n_params; i++) {
        const fk_param *p = &ref->params[i];
        int64_t hd = c->head_dim, H = fk_config_heads(c, p->layer < 0 ? 0 : p->layer), KV = c->n_kv_head;
        switch (p->kind) {
        case FK_P_QKV_W:  // q in Q8_0 and k in F16, both in RoPE order; v in Q8_0
            store_rows(ref, st, ow, i, 0, H * hd, TY_Q8_0, hd);
            store_rows(ref, st, ow, i, H * hd, KV * hd, g_half_type, hd);
            store_rows(ref, st, ow, i, (H + KV) * hd, KV * hd, TY_Q8_0, 0);
            break;
        case FK_P_TOK_EMB: case FK_P_DOWN_W: case FK_P_EXP_DOWN_W:
            store_rows(ref, st, ow, i, 0, p->shape[0], TY_Q8_0, 0);
            break;
        case FK_P_O_W: case FK_P_UP_W: case FK_P_LM_HEAD: case FK_P_EXP_UP_W:
            store_rows(ref, st, ow, i, 0, p->shape[0], g_half_type, 0);
            break;
        default:
            break;
        }
    }
    fk_model_set_stored_owner(st, ow, owner_release);
}

static void compare_models(const fk_config *c) {
    fk_model ref, st;
    make_pair(c, &ref, &st);
    assert_true(fk_model_is_frozen(&st));
    assert_false(fk_model_is_frozen(&ref));
    assert_true(fk_model_weight_bytes(&st) < fk_model_weight_bytes(&ref) / 2);
    enum { B = 2, T = 12 };
    int32_t tok[B * T], tgt[B * T];
    for (int i = 0; i < B * T; i++) { tok[i] = (i * 7 + 3) % (int)c->vocab_size; tgt[i] = (i * 5 + 1) % (int)c->vocab_size; }
    float l_ref, l_st;
    CHECK(fk_model_forward(&ref, tok, tgt, B, T, false, &l_ref));
    CHECK(fk_model_forward(&st, tok, tgt, B, T, false, &l_st));
    const float *a = fk_model_logits(&ref), *b = fk_model_logits(&st);
    double maxd = 0, maxa = 0;
    for (int64_t i = 0; i < (int64_t)B * T * c->vocab_size; i++) {
        maxd = fmax(maxd, fabs((double)a[i] - b[i]));
        maxa = fmax(maxa, fabs((double)a[i]));
    }
    // Same weights, same math; only the order of float sums inside the products differs.
    assert_true(maxd <= 1e-5 * fmax(1.0, maxa));
    assert_float_equal(l_ref, l_st, 1e-5 * fabs(l_ref));
    // Generation through the KV cache equals the full forward at the last position.
    float *lg = malloc((size_t)c->vocab_size * sizeof(float));
    assert_non_null(lg);
    CHECK(fk_model_step(&st, tok, T, 0, lg));
    for (int64_t v = 0; v < c->vocab_size; v++) assert_float_equal(lg[v], a[(int64_t)(T - 1) * c->vocab_size + v], 1e-4 * fmax(1.0, maxa));
    free(lg);
    // A frozen model does not train.
    assert_int_equal(fk_model_forward(&st, tok, tgt, B, T, true, &l_st), FK_OK);
    assert_int_not_equal(fk_model_backward(&st, 1.0f), FK_OK);
    assert_non_null(strstr(fk_last_error(), "frozen"));
    fk_model_free(&ref);
    fk_model_free(&st);
}

static void test_stored_llama(void **s) {
    (void)s;
    fk_config c;
    fk_config_llama(&c, 96, 64, 2, 4, 2, 96, 16);
    c.head_dim = 16;
    compare_models(&c);
    c.tied = true;
    compare_models(&c);
}

static void test_stored_gemma_like(void **s) {
    (void)s;
    fk_config c;
    fk_config_llama(&c, 96, 64, 3, 4, 1, 64, 16);
    c.head_dim = 32;  // head_dim * heads != d_model
    c.mlp = FK_MLP_GEGLU;
    c.tied = true;
    c.emb_scale = 8.0f;
    c.norm_offset = 1.0f;
    c.post_norms = true;
    c.qk_norm = true;
    c.attn_scale = 0.125f;
    c.sliding_window = 4;
    c.sliding[0] = c.sliding[1] = 1;
    c.rope_theta_local = 10000.0f;
    c.rope_theta = 1e6f;
    compare_models(&c);
}

// Mixture of experts: each expert's up (F16) and down (Q8_0) read as stored, found by its own
// table entry; Mixtral-like (no dense FFN) and Qwen2-MoE-like (a stored shared expert and a dense layer).
static void test_stored_moe(void **s) {
    (void)s;
    fk_config c;
    cfg_moe(&c, CFG_MOE_MIXTRAL, 96, 64, 32, 2);
    compare_models(&c);
    cfg_moe(&c, CFG_MOE_QWEN2, 96, 64, 32, 2);
    compare_models(&c);
}

static void test_stored_bad(void **s) {
    (void)s;
    fk_config c;
    fk_model m;
    fk_config_llama(&c, 96, 64, 1, 4, 2, 96, 16);
    CHECK(fk_model_init(&m, &c));
    static unsigned char buf[96 * 128];
    const fk_param *norm = fk_model_find_param(&m, "layers.0.ln1.weight");
    const fk_param *down = fk_model_find_param(&m, "layers.0.mlp.down.weight");
    assert_non_null(norm);
    assert_non_null(down);
    fk_stored st = {.param = (int)(norm - m.params), .row0 = 0, .rows = 1, .type = TY_F16, .data = buf, .row_bytes = 128};
    assert_int_not_equal(fk_model_add_stored(&m, &st), FK_OK);  // not a matrix
    st.param = (int)(down - m.params);
    st.rows = 65;
    assert_int_not_equal(fk_model_add_stored(&m, &st), FK_OK);  // past the last row
    st.rows = 64;
    st.row_bytes = 100;
    assert_int_not_equal(fk_model_add_stored(&m, &st), FK_OK);  // wrong row size
    assert_non_null(strstr(fk_last_error(), "192"));
    st.row_bytes = 192;
    st.type = 999;
    assert_int_not_equal(fk_model_add_stored(&m, &st), FK_OK);  // unknown type
    st.type = TY_F16;
    st.rows = 32;
    CHECK(fk_model_add_stored(&m, &st));
    st.row0 = 16;
    assert_int_not_equal(fk_model_add_stored(&m, &st), FK_OK);  // overlap
    // half of the rows stored: the forward refuses rather than read poison
    int32_t tok[2] = {1, 2};
    assert_int_not_equal(fk_model_forward(&m, tok, NULL, 1, 2, false, NULL), FK_OK);
    assert_non_null(strstr(fk_last_error(), "32 of the 64 rows"));
    fk_model_free(&m);
}

// A GGUF file written by the `gguf` package with quantized matrices (tests/data/quants, see
// tools/ref/make_quant_golden.py): loaded frozen, it computes the logits of its decoded load
// from a fraction of the memory.
static void test_stored_gguf(void **s) {
    (void)s;
    const char *path = FK_TEST_DATA "/quants/tiny_llama_quant.gguf";
    fk_model d, f;
    CHECK(fk_gguf_import_ex(path, 0, &d, NULL));
    CHECK(fk_gguf_import_ex(path, FK_GGUF_KEEP_STORED, &f, NULL));
    assert_false(fk_model_is_frozen(&d));
    assert_true(fk_model_is_frozen(&f));
    assert_true(fk_model_weight_bytes(&f) * 3 < fk_model_weight_bytes(&d));
    // every stored row decodes to the decoded load's row
    for (int i = 0; i < d.n_params; i++) {
        const fk_param *p = &d.params[i];
        float *row = malloc((size_t)p->numel * sizeof(float));
        assert_non_null(row);
        CHECK(fk_model_read_rows(&f, i, 0, p->ndim == 2 ? p->shape[0] : 1, row));
        assert_memory_equal(row, d.w + p->offset, (size_t)p->numel * sizeof(float));
        free(row);
    }
    enum { T = 16 };
    int32_t tok[T];
    for (int i = 0; i < T; i++) tok[i] = (i * 37 + 11) % (int)d.cfg.vocab_size;
    CHECK(fk_model_forward(&d, tok, NULL, 1, T, false, NULL));
    CHECK(fk_model_forward(&f, tok, NULL, 1, T, false, NULL));
    const float *a = fk_model_logits(&d), *b = fk_model_logits(&f);
    double maxa = 0;
    for (int64_t i = 0; i < T * d.cfg.vocab_size; i++) maxa = fmax(maxa, fabs((double)a[i]));
    for (int64_t i = 0; i < T * d.cfg.vocab_size; i++) assert_float_equal(a[i], b[i], 1e-5 * fmax(1.0, maxa));
    // under bf16 products the stored matrices' tiles go through the same bf16 GEMM as the decoded
    // model's matrices (emulated, so that every machine takes one path): the two agree again, and
    // both moved away from the fp32 logits by bf16's rounding
    float *fp32 = malloc((size_t)(T * d.cfg.vocab_size) * sizeof(float));
    assert_non_null(fp32);
    memcpy(fp32, a, (size_t)(T * d.cfg.vocab_size) * sizeof(float));
    fk_matmul_force_emulation(true);
    fk_matmul_set_precision(FK_PRECISION_BF16);
    CHECK(fk_model_forward(&d, tok, NULL, 1, T, false, NULL));
    CHECK(fk_model_forward(&f, tok, NULL, 1, T, false, NULL));
    fk_matmul_set_precision(FK_PRECISION_FP32);
    fk_matmul_force_emulation(false);
    a = fk_model_logits(&d);
    b = fk_model_logits(&f);
    double moved = 0;
    for (int64_t i = 0; i < T * d.cfg.vocab_size; i++) {
        assert_float_equal(a[i], b[i], 1e-5 * fmax(1.0, maxa));
        moved = fmax(moved, fabs((double)b[i] - fp32[i]));
    }
    if (!(moved > 1e-4 * fmax(1.0, maxa) && moved < 0.05 * fmax(1.0, maxa)))
        fail_msg("bf16 moved the frozen model's logits by %g (largest logit %g): expected bf16 rounding's size", moved, maxa);
    free(fp32);
    // saving or exporting a frozen model is refused (its arena does not hold the matrices)
    assert_int_not_equal(fk_hf_save(&f, tpath("frozen"), FK_DT_F32), FK_OK);
    assert_int_not_equal(fk_gguf_export(&f, NULL, tpath("frozen.gguf"), FK_DT_F32, NULL, NULL), FK_OK);
    fk_model_free(&d);
    fk_model_free(&f);
}

// Under bf16 products on oneDNN (AVX512-BF16 CPUs), a batch's product with stored matrices rounds
// the activations to bf16 once and multiplies them by the stored rows rounded to bf16: BF16 rows
// where they are mapped, Q8_0 and F16 rows decoded a chunk at a time (the LM head here spans two
// chunks of 2^21 elements), RoPE-ordered segments scattered after. The arena model with the same
// decoded weights takes oneDNN's ordinary bf16 path, which rounds the same operands: the logits
// agree within fp32 summation order, while both moved from the fp32 logits by bf16's rounding.
static void test_stored_bf16_onednn(void **s) {
    (void)s;
    fk_matmul_set_precision(FK_PRECISION_BF16);
    bool onednn = strstr(fk_matmul_backend(), "oneDNN") != NULL;
    fk_matmul_set_precision(FK_PRECISION_FP32);
    if (!onednn) skip();  // no oneDNN or no AVX512-BF16: the emulated path (test_stored_gguf covers it)
    fk_config c;
    fk_config_llama(&c, 40000, 64, 2, 4, 2, 96, 64);
    c.head_dim = 16;
    for (int pass = 0; pass < 2; pass++) {
        g_half_type = pass == 0 ? TY_F16 : TY_BF16;
        fk_model ref, st;
        make_pair(&c, &ref, &st);
        enum { B = 2, T = 64 };
        int32_t tok[B * T];
        for (int i = 0; i < B * T; i++) tok[i] = (i * 7919 + 3) % (int)c.vocab_size;
        int64_t n = (int64_t)B * T * c.vocab_size;
        float *fp32 = malloc((size_t)n * sizeof(float));
        assert_non_null(fp32);
        CHECK(fk_model_forward(&st, tok, NULL, B, T, false, NULL));
        memcpy(fp32, fk_model_logits(&st), (size_t)n * sizeof(float));
        int64_t before = fk_nn_stored_bf16_products();
        fk_matmul_set_precision(FK_PRECISION_BF16);
        CHECK(fk_model_forward(&ref, tok, NULL, B, T, false, NULL));
        CHECK(fk_model_forward(&st, tok, NULL, B, T, false, NULL));
        fk_matmul_set_precision(FK_PRECISION_FP32);
        // per layer: q, k, v, o, up (gate and up), down, then the LM head: every one on the new path
        assert_int_equal(fk_nn_stored_bf16_products() - before, c.n_layer * 6 + 1);
        const float *a = fk_model_logits(&ref), *b = fk_model_logits(&st);
        double maxd = 0, maxa = 0, moved = 0;
        for (int64_t i = 0; i < n; i++) {
            maxa = fmax(maxa, fabs((double)a[i]));
            maxd = fmax(maxd, fabs((double)a[i] - b[i]));
            moved = fmax(moved, fabs((double)b[i] - fp32[i]));
        }
        if (!(maxd <= 2e-5 * fmax(1.0, maxa)))
            fail_msg("pass %d: stored bf16 logits %g from the arena's (largest logit %g)", pass, maxd, maxa);
        if (!(moved > 1e-4 * fmax(1.0, maxa) && moved < 0.05 * fmax(1.0, maxa)))
            fail_msg("pass %d: bf16 moved the logits by %g (largest %g): expected bf16 rounding's size", pass, moved, maxa);
        free(fp32);
        fk_model_free(&ref);
        fk_model_free(&st);
    }
    g_half_type = TY_F16;
}

// --precision int8: a batch's products with the Q8_0 segments (q and v in RoPE and table order,
// down) take 8-bit activations, the F16 ones stay exact (bf16 emulation forced, so INT8's float
// products resolve to fp32 on every machine). The logits move from the fp32 ones by the
// activation rounding's size, not more; the blocked (VNNI) and row-by-row kernels agree; and
// INT8 set and cleared leaves fp32 exactly as before.
static void test_stored_int8(void **s) {
    (void)s;
    fk_config c;
    fk_config_llama(&c, 300, 64, 2, 4, 2, 96, 64);
    c.head_dim = 16;
    fk_model ref, st;
    make_pair(&c, &ref, &st);
    assert_true(fk_model_has_q8_stored(&st));
    assert_false(fk_model_has_q8_stored(&ref));
    enum { B = 2, T = 24 };
    int32_t tok[B * T], tgt[B * T];
    for (int i = 0; i < B * T; i++) { tok[i] = (i * 7919 + 3) % (int)c.vocab_size; tgt[i] = (i * 31 + 5) % (int)c.vocab_size; }
    int64_t n = (int64_t)B * T * c.vocab_size;
    float *fp32 = malloc((size_t)n * sizeof(float)), *blocked = malloc((size_t)n * sizeof(float));
    assert_non_null(fp32);
    assert_non_null(blocked);
    float l32, l8, l8r, l32b;
    CHECK(fk_model_forward(&st, tok, tgt, B, T, false, &l32));
    memcpy(fp32, fk_model_logits(&st), (size_t)n * sizeof(float));
    fk_matmul_force_emulation(true);
    fk_matmul_set_precision(FK_PRECISION_INT8);
    assert_true(fk_matmul_int8());
    assert_int_equal(fk_matmul_precision(), FK_PRECISION_FP32);
    int64_t before = fk_nn_stored_int8_products();
    CHECK(fk_model_forward(&st, tok, tgt, B, T, false, &l8));
    assert_int_equal(fk_nn_stored_int8_products() - before, 3 * c.n_layer);  // q, v, down per layer
    memcpy(blocked, fk_model_logits(&st), (size_t)n * sizeof(float));
    bool has_blocked = fk_qmatmul_q8_blocked(false);
    CHECK(fk_model_forward(&st, tok, tgt, B, T, false, &l8r));
    fk_qmatmul_q8_blocked(true);
    const float *rows = fk_model_logits(&st);
    fk_matmul_set_precision(FK_PRECISION_FP32);
    fk_matmul_force_emulation(false);
    assert_false(fk_matmul_int8());
    double maxa = 0, moved = 0, kernels = 0;
    for (int64_t i = 0; i < n; i++) {
        maxa = fmax(maxa, fabs((double)fp32[i]));
        moved = fmax(moved, fabs((double)blocked[i] - fp32[i]));
        kernels = fmax(kernels, fabs((double)blocked[i] - rows[i]));
    }
    if (!(moved > 1e-5 * fmax(1.0, maxa) && moved < 0.05 * fmax(1.0, maxa)))
        fail_msg("int8 moved the logits by %g (largest %g): expected 8-bit activation rounding's size", moved, maxa);
    if (!(kernels <= 2e-5 * fmax(1.0, maxa)))
        fail_msg("blocked (%d) and row-by-row int8 logits differ by %g (largest %g)", has_blocked, kernels, maxa);
    if (!(fabsf(l8 - l32) < 0.01f * l32 && fabsf(l8r - l8) <= 1e-5f * l8))
        fail_msg("loss fp32 %g, int8 %g (blocked) / %g (rows)", l32, l8, l8r);
    CHECK(fk_model_forward(&st, tok, tgt, B, T, false, &l32b));  // fp32 again: as before
    assert_memory_equal(fk_model_logits(&st), fp32, (size_t)n * sizeof(float));
    free(fp32);
    free(blocked);
    fk_model_free(&ref);
    fk_model_free(&st);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stored_llama),
        cmocka_unit_test(test_stored_gemma_like),
        cmocka_unit_test(test_stored_moe), cmocka_unit_test(test_stored_bad),
        cmocka_unit_test(test_stored_gguf), cmocka_unit_test(test_stored_bf16_onednn),
        cmocka_unit_test(test_stored_int8),
    };
    return cmocka_run_group_tests(tests, tmpdir_setup, tmpdir_teardown);
}
