// ggml types: the block-size table, dequantization bit for bit against the PyPI gguf
// package (goldens from tools/ref/make_quant_golden.py), the import of a quantized GGUF model
// written by the package, fk_qmatmul_forward against a double-precision reference, and
// broken files.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <math.h>

#include "fusekit/fusekit.h"
#include "test_util.h"

#define QDIR FK_TEST_DATA "/quants"

static const uint32_t ALL[] = {FK_GGML_F32, FK_GGML_F16, FK_GGML_BF16, FK_GGML_Q4_0, FK_GGML_Q4_1, FK_GGML_Q5_0,
                               FK_GGML_Q5_1, FK_GGML_Q8_0, FK_GGML_Q2_K, FK_GGML_Q3_K, FK_GGML_Q4_K, FK_GGML_Q5_K,
                               FK_GGML_Q6_K, FK_GGML_Q8_K, FK_GGML_IQ4_NL, FK_GGML_IQ4_XS};
#define N_ALL (sizeof ALL / sizeof ALL[0])

static uint32_t rd32(const unsigned char *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24; }
static uint64_t rd64(const unsigned char *p) { return rd32(p) | (uint64_t)rd32(p + 4) << 32; }

// ------------------------------------------------------------------ the table

static void test_type_table(void **s) {
    (void)s;
    // ggml.h / ggml-common.h: name, elements per block, bytes per block
    static const struct { uint32_t id; const char *name; int block, bytes; } want[] = {
        {0, "F32", 1, 4}, {1, "F16", 1, 2}, {30, "BF16", 1, 2}, {2, "Q4_0", 32, 18}, {3, "Q4_1", 32, 20}, {6, "Q5_0", 32, 22},
        {7, "Q5_1", 32, 24}, {8, "Q8_0", 32, 34}, {10, "Q2_K", 256, 84}, {11, "Q3_K", 256, 110}, {12, "Q4_K", 256, 144},
        {13, "Q5_K", 256, 176}, {14, "Q6_K", 256, 210}, {15, "Q8_K", 256, 292}, {20, "IQ4_NL", 32, 18}, {23, "IQ4_XS", 256, 136},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        const fk_ggml_type_info *t = fk_ggml_type(want[i].id);
        assert_non_null(t);
        assert_string_equal(t->name, want[i].name);
        assert_int_equal(t->block, want[i].block);
        assert_int_equal(t->bytes, want[i].bytes);
        assert_true(t->dequant);
        uint64_t b;
        CHECK(fk_ggml_row_bytes(want[i].id, 3 * want[i].block, &b));
        assert_int_equal(b, 3 * (uint64_t)want[i].bytes);
    }
    // known by size only; unknown ids
    assert_false(fk_ggml_type(16)->dequant);  // IQ2_XXS
    assert_false(fk_ggml_type(39)->dequant);  // MXFP4
    assert_null(fk_ggml_type(4));             // the removed Q4_2
    assert_null(fk_ggml_type(31));
    assert_null(fk_ggml_type(FK_GGML_TYPE_COUNT));
    assert_string_equal(fk_ggml_type_name(99), "unknown");
    uint64_t b;
    assert_int_equal(fk_ggml_row_bytes(FK_GGML_Q4_K, 100, &b), FK_ERR_FORMAT);
    assert_non_null(strstr(fk_last_error(), "not a multiple of the Q4_K block size 256"));
    assert_int_equal(fk_ggml_row_bytes(5, 32, &b), FK_ERR_FORMAT);
    assert_non_null(strstr(fk_last_error(), "unknown ggml type 5"));
    assert_int_equal(fk_ggml_row_bytes(FK_GGML_Q8_0, -32, &b), FK_ERR_FORMAT);
    const uint64_t big[] = {1ull << 40, 1ull << 40};
    assert_int_equal(fk_ggml_tensor_bytes(FK_GGML_F32, big, 2, &b), FK_ERR_FORMAT);
    assert_non_null(strstr(fk_last_error(), "overflow"));
    const uint64_t ok[] = {512, 3, 2};
    CHECK(fk_ggml_tensor_bytes(FK_GGML_Q6_K, ok, 3, &b));
    assert_int_equal(b, 2 * 210 * 3 * 2);
}

// ------------------------------------------------------------------ goldens

// Every golden row decoded by fk_dequantize_row, bit for bit gguf-py's values.
static void check_dequant_goldens(void) {
    int n_cases = 0, n_real = 0;
    for (size_t k = 0; k < N_ALL; k++) {
        char path[512];
        snprintf(path, sizeof path, QDIR "/%s.bin", fk_ggml_type_name(ALL[k]));
        size_t n;
        unsigned char *b = (unsigned char *)slurp(path, &n);
        assert_true(n >= 16 && memcmp(b, "FKQG", 4) == 0);
        assert_int_equal(rd32(b + 4), 1);
        assert_int_equal(rd32(b + 8), ALL[k]);
        uint32_t cases = rd32(b + 12);
        size_t pos = 16;
        for (uint32_t c = 0; c < cases; c++) {
            assert_true(pos + 4 <= n);
            uint32_t nl = rd32(b + pos);
            char name[256];
            snprintf(name, sizeof name, "%.*s", (int)nl, (const char *)b + pos + 4);
            pos += 4 + nl;
            uint32_t rows = rd32(b + pos), elems = rd32(b + pos + 4);
            uint64_t row_bytes = rd64(b + pos + 8), want;
            pos += 16;
            CHECK(fk_ggml_row_bytes(ALL[k], elems, &want));
            assert_int_equal(want, row_bytes);  // the package's byte count for this many elements
            assert_true(pos + rows * (row_bytes + 4ull * elems) <= n);
            const unsigned char *raw = b + pos, *ref = b + pos + rows * row_bytes;
            float *got = malloc(elems * sizeof(float));
            for (uint32_t r = 0; r < rows; r++) {
                fk_dequantize_row(ALL[k], raw + r * row_bytes, got, elems);
                const unsigned char *e = ref + (size_t)r * elems * 4;
                if (memcmp(got, e, (size_t)elems * 4) != 0)
                    for (uint32_t i = 0; i < elems; i++) {
                        uint32_t gb, eb = rd32(e + 4 * i);
                        memcpy(&gb, &got[i], 4);
                        if (gb != eb) {
                            float ef;
                            memcpy(&ef, &eb, 4);
                            fail_msg("%s case %s row %u element %u: got %a (%08x), gguf-py %a (%08x)", fk_ggml_type_name(ALL[k]), name, r, i,
                                     got[i], gb, ef, eb);
                        }
                    }
            }
            free(got);
            pos += rows * (row_bytes + 4ull * elems);
            n_cases++;
            n_real += strncmp(name, "real:", 5) == 0;
        }
        assert_int_equal(pos, n);
        free(b);
    }
    assert_true(n_cases >= (int)N_ALL + 8);
    assert_true(n_real >= 6);  // Q4_1, Q5_0, Q8_0 x2, Q4_K, Q6_K rows of the real files
}

// Both decoders where the build has the SIMD ones (AVX512): the block decoders, then the row decoders.
static void test_dequant_goldens(void **s) {
    (void)s;
    bool simd = fk_dequantize_simd(false);
    check_dequant_goldens();
    fk_dequantize_simd(true);
    if (simd) check_dequant_goldens();
}

// ------------------------------------------------------------------ the tiny quantized model

// Imports the package-written model, exports it as F32 (llama.cpp's row order again) and
// compares every tensor's FNV-1a 64 with that of the package's dequantization.
static void test_import_quantized_model(void **s) {
    (void)s;
    fk_model m;
    fk_tokenizer *tok = NULL;
    CHECK(fk_gguf_import(QDIR "/tiny_llama_quant.gguf", &m, &tok));
    assert_null(tok);
    assert_int_equal(m.cfg.d_model, 256);
    assert_int_equal(m.cfg.n_layer, 2);
    assert_int_equal(m.cfg.head_dim, 32);
    assert_false(m.cfg.tied);
    CHECK(fk_gguf_export(&m, NULL, tpath("tiny_f32.gguf"), FK_DT_F32, NULL, NULL));
    fk_model_free(&m);
    fk_gguf g;
    CHECK(fk_gguf_open(tpath("tiny_f32.gguf"), &g));
    size_t n;
    char *ref = slurp(QDIR "/tiny_llama_quant.ref", &n);
    int checked = 0;
    for (char *line = strtok(ref, "\n"); line; line = strtok(NULL, "\n")) {
        if (line[0] == '#') continue;
        char name[128], first[64];
        long long elems;
        unsigned long long hash;
        assert_int_equal(sscanf(line, "%127s %lld %llx %63s", name, &elems, &hash, first), 4);
        const fk_gguf_tensor *t = fk_gguf_find_tensor(&g, name);
        if (!t) fail_msg("tensor %s is missing from the export", name);
        assert_int_equal(t->ggml_type, FK_GGML_F32);
        assert_int_equal(t->nbytes, (uint64_t)elems * 4);
        float f0;
        memcpy(&f0, t->data, 4);
        uint64_t h = fk_fnv1a64(t->data, (size_t)t->nbytes, 0);
        if (h != hash) fail_msg("tensor %s: fusekit's import differs from gguf-py's dequantization (first value %a, gguf-py %s)", name, f0, first);
        assert_true(f0 == strtof(first, NULL));
        checked++;
    }
    assert_int_equal(checked, 2 + 2 * 9 + 1);
    assert_int_equal(g.n_tensors, checked);
    free(ref);
    fk_gguf_close(&g);
}

// ------------------------------------------------------------------ qmatmul

// Random blocks: random bytes with small finite scales in the half-float fields.
static void random_weights(uint8_t *w, uint64_t nbytes, uint32_t type, fk_rng *r) {
    const fk_ggml_type_info *t = fk_ggml_type(type);
    for (uint64_t i = 0; i < nbytes; i++) w[i] = (uint8_t)fk_rng_u64(r);
    int off[2] = {-1, -1};
    switch (type) {
    case FK_GGML_F32:
        for (uint64_t i = 0; i < nbytes; i += 4) { float f = fk_rng_normal(r); memcpy(w + i, &f, 4); }
        return;
    case FK_GGML_F16: case FK_GGML_BF16:
        for (uint64_t i = 0; i < nbytes; i += 2) {
            float f = fk_rng_normal(r);
            uint16_t h = type == FK_GGML_F16 ? fk_f32_to_f16(f) : fk_f32_to_bf16(f);
            memcpy(w + i, &h, 2);
        }
        return;
    case FK_GGML_Q4_1: case FK_GGML_Q5_1: case FK_GGML_Q4_K: case FK_GGML_Q5_K: off[0] = 0; off[1] = 2; break;
    case FK_GGML_Q2_K: off[0] = 80; off[1] = 82; break;
    case FK_GGML_Q3_K: off[0] = 108; break;
    case FK_GGML_Q6_K: off[0] = 208; break;
    case FK_GGML_Q8_K:
        for (uint64_t k = 0; k < nbytes; k += (uint64_t)t->bytes) { float d = 0.01f * fk_rng_uniform(r); memcpy(w + k, &d, 4); }
        return;
    default: off[0] = 0;  // Q4_0, Q5_0, Q8_0, IQ4_NL, IQ4_XS
    }
    for (uint64_t k = 0; k < nbytes; k += (uint64_t)t->bytes)
        for (int j = 0; j < 2; j++)
            if (off[j] >= 0) {
                uint16_t h = fk_f32_to_f16(0.02f * (fk_rng_uniform(r) - 0.3f));
                memcpy(w + k + off[j], &h, 2);
            }
}

// Every type, N in {1, 2, 5, 64}, OC across tile boundaries, with and without bias: out
// within the rounding bound of an f32 sum, (C + 2) u (sum |x w| + |b|), u = 2^-24, of a
// double-precision product of the same dequantized weights.
static void test_qmatmul(void **s) {
    (void)s;
    fk_rng r;
    fk_rng_seed(&r, 5);
    static const int64_t Ns[] = {1, 2, 5, 64};
    for (size_t k = 0; k < N_ALL; k++) {
        uint32_t type = ALL[k];
        int64_t blk = fk_ggml_type(type)->block;
        int64_t C = blk == 1 ? 300 : blk == 32 ? 96 : 1024, OC = 300;  // K-quants: big enough for the threaded one-token path
        uint64_t rb;
        CHECK(fk_ggml_row_bytes(type, C, &rb));
        uint8_t *w = malloc(rb * (uint64_t)OC);
        random_weights(w, rb * (uint64_t)OC, type, &r);
        float *wf = malloc((size_t)(OC * C) * sizeof(float)), *b = malloc((size_t)OC * sizeof(float));
        for (int64_t o = 0; o < OC; o++) fk_dequantize_row(type, w + (uint64_t)o * rb, wf + o * C, C);
        for (int64_t o = 0; o < OC; o++) b[o] = fk_rng_normal(&r);
        for (size_t ni = 0; ni < sizeof Ns / sizeof Ns[0]; ni++) {
            int64_t N = Ns[ni];
            float *x = malloc((size_t)(N * C) * sizeof(float)), *y = malloc((size_t)(N * OC) * sizeof(float));
            for (int64_t i = 0; i < N * C; i++) x[i] = fk_rng_normal(&r);
            for (int bias = 0; bias < 2; bias++) {
                CHECK(fk_qmatmul_forward(y, x, w, type, bias ? b : NULL, N, C, OC));
                double worst = 0;
                for (int64_t i = 0; i < N; i++)
                    for (int64_t o = 0; o < OC; o++) {
                        double acc = bias ? b[o] : 0, mag = bias ? fabs(b[o]) : 0;
                        for (int64_t c = 0; c < C; c++) {
                            acc += (double)x[i * C + c] * wf[o * C + c];
                            mag += fabs((double)x[i * C + c] * wf[o * C + c]);
                        }
                        double err = fabs(y[i * OC + o] - acc), tol = (double)(C + 2) * 0x1p-24 * mag + 1e-30;
                        if (!(err <= tol))
                            fail_msg("%s N=%lld bias=%d out[%lld][%lld] = %.9g, reference %.9g (tolerance %.3g)", fk_ggml_type_name(type),
                                     (long long)N, bias, (long long)i, (long long)o, y[i * OC + o], acc, tol);
                        worst = err / tol > worst ? err / tol : worst;
                    }
            }
            free(x);
            free(y);
        }
        free(w);
        free(wf);
        free(b);
    }
    // arguments
    float x[32] = {0}, y[4];
    uint8_t w[4 * 34] = {0};
    assert_int_equal(fk_qmatmul_forward(y, x, w, 16 /* IQ2_XXS */, NULL, 1, 256, 1), FK_ERR_ARG);
    assert_int_equal(fk_qmatmul_forward(y, x, w, FK_GGML_Q8_0, NULL, 1, 33, 1), FK_ERR_ARG);
    assert_non_null(strstr(fk_last_error(), "Q8_0"));
    CHECK(fk_qmatmul_forward(y, x, w, FK_GGML_Q8_0, NULL, 1, 32, 4));
    for (int i = 0; i < 4; i++) assert_true(y[i] == 0);
}

// The 8-bit-activation product: within the activation rounding bound sum_c |w_c| d_c / 2
// (d_c = max |x| over c's block of 32 / 127) plus an f32 allowance 2e-5 sum_c |x_c| (|w_c| +
// max |w|); types without integer codes must give fk_qmatmul_forward's result exactly.
static void test_qmatmul_q8(void **s) {
    (void)s;
    fk_rng r;
    fk_rng_seed(&r, 6);
    static const int64_t Ns[] = {1, 3, 13, 40};
    for (size_t k = 0; k < N_ALL; k++) {
        uint32_t type = ALL[k];
        int64_t blk = fk_ggml_type(type)->block;
        int64_t C = blk == 1 ? 96 : blk == 32 ? 96 : 512, OC = 70;
        uint64_t rb;
        CHECK(fk_ggml_row_bytes(type, C, &rb));
        uint8_t *w = malloc(rb * (uint64_t)OC);
        random_weights(w, rb * (uint64_t)OC, type, &r);
        float *wf = malloc((size_t)(OC * C) * sizeof(float)), *b = malloc((size_t)OC * sizeof(float));
        for (int64_t o = 0; o < OC; o++) fk_dequantize_row(type, w + (uint64_t)o * rb, wf + o * C, C);
        for (int64_t o = 0; o < OC; o++) b[o] = fk_rng_normal(&r);
        bool q8 = fk_qmatmul_q8_supported(type);
        assert_true(q8 == (type != FK_GGML_F32 && type != FK_GGML_F16 && type != FK_GGML_BF16));
        for (size_t ni = 0; ni < sizeof Ns / sizeof Ns[0]; ni++) {
            int64_t N = Ns[ni];
            float *x = malloc((size_t)(N * C) * sizeof(float)), *y = malloc((size_t)(N * OC) * sizeof(float));
            float *y2 = malloc((size_t)(N * OC) * sizeof(float));
            for (int64_t i = 0; i < N * C; i++) x[i] = fk_rng_normal(&r) * (i % 7 == 0 ? 5.0f : 1.0f);
            CHECK(fk_qmatmul_forward_q8(y, x, w, type, b, N, C, OC));
            if (q8 && fk_qmatmul_q8_blocked(false)) {
                // the blocked (VNNI) path against the row-by-row one: the same integer dot products and
                // f32 terms, added in another order
                CHECK(fk_qmatmul_forward_q8(y2, x, w, type, b, N, C, OC));
                fk_qmatmul_q8_blocked(true);
                for (int64_t i = 0; i < N; i++)
                    for (int64_t o = 0; o < OC; o++) {
                        double mag = fabs(b[o]);
                        for (int64_t c = 0; c < C; c++) mag += fabs((double)x[i * C + c] * wf[o * C + c]);
                        if (!(fabs((double)y[i * OC + o] - y2[i * OC + o]) <= 1e-5 * mag + 1e-6))
                            fail_msg("%s q8 N=%lld out[%lld][%lld]: blocked %.9g, rows %.9g", fk_ggml_type_name(type), (long long)N,
                                     (long long)i, (long long)o, y[i * OC + o], y2[i * OC + o]);
                    }
            }
            fk_qmatmul_q8_blocked(true);
            if (!q8) {
                CHECK(fk_qmatmul_forward(y2, x, w, type, b, N, C, OC));
                assert_memory_equal(y, y2, (size_t)(N * OC) * sizeof(float));
            }
            double se = 0, sr = 0;
            for (int64_t i = 0; i < N; i++)
                for (int64_t o = 0; o < OC; o++) {
                    double acc = b[o], tol = 1e-6 * fabs(b[o]), wmax = 0, mag = 0;
                    for (int64_t c = 0; c < C; c++) wmax = fmax(wmax, fabs(wf[o * C + c]));
                    for (int64_t c = 0; c < C; c++) {
                        const float *xb = x + i * C + c / 32 * 32;
                        double amax = 0;
                        for (int l = 0; l < 32; l++) amax = fmax(amax, fabs(xb[l]));
                        acc += (double)x[i * C + c] * wf[o * C + c];
                        mag += fabs((double)x[i * C + c] * wf[o * C + c]);
                        tol += fabs(wf[o * C + c]) * amax / 127 / 2 + 2e-5 * fabs(x[i * C + c]) * (fabs(wf[o * C + c]) + wmax);
                    }
                    double err = fabs(y[i * OC + o] - acc);
                    if (!(err <= tol))
                        fail_msg("%s q8 N=%lld out[%lld][%lld] = %.9g, reference %.9g (tolerance %.3g)", fk_ggml_type_name(type), (long long)N,
                                 (long long)i, (long long)o, y[i * OC + o], acc, tol);
                    se += err * err;
                    sr += mag * mag;
                }
            if (q8 && !(se < 1e-4 * sr))  // RMS error below 1% of the RMS of sum_c |x_c w_c|
                fail_msg("%s q8 N=%lld: relative RMS error %.3g", fk_ggml_type_name(type), (long long)N, sqrt(se / sr));
            free(x);
            free(y);
            free(y2);
        }
        free(w);
        free(wf);
        free(b);
    }
    // the blocked kernel's two ways of sharing the work, against the row-by-row one: many pairs of
    // panels (47,688 rows of w: each thread packs its own pairs), and a few wide ones (C = 16,384: a
    // 2 MB chunk holds two of the three pairs, packed by all threads, then multiplied in blocks of rows)
    for (int shape = 0; shape < 2; shape++) {
        int64_t C = shape ? 16384 : 32, OC = shape ? 70 : 32 * 1489 + 40, N = 9, rb = C / 32 * 34;
        uint8_t *w = malloc((size_t)(rb * OC));
        float *x = malloc((size_t)(N * C) * sizeof(float)), *y = malloc((size_t)(N * OC) * sizeof(float));
        float *y2 = malloc((size_t)(N * OC) * sizeof(float));
        random_weights(w, (uint64_t)(rb * OC), FK_GGML_Q8_0, &r);
        for (int64_t i = 0; i < N * C; i++) x[i] = fk_rng_normal(&r);
        CHECK(fk_qmatmul_forward_q8(y, x, w, FK_GGML_Q8_0, NULL, N, C, OC));
        if (fk_qmatmul_q8_blocked(false)) {
            CHECK(fk_qmatmul_forward_q8(y2, x, w, FK_GGML_Q8_0, NULL, N, C, OC));
            float *wrow = malloc((size_t)C * sizeof(float));
            for (int64_t o = 0; o < OC; o++) {
                fk_dequantize_row(FK_GGML_Q8_0, w + o * rb, wrow, C);
                for (int64_t n = 0; n < N; n++) {
                    double mag = 0;
                    for (int64_t c = 0; c < C; c++) mag += fabs((double)x[n * C + c] * wrow[c]);
                    if (!(fabs((double)y[n * OC + o] - y2[n * OC + o]) <= 1e-5 * mag + 1e-6))
                        fail_msg("Q8_0 %lld x %lld: out[%lld][%lld] blocked %.9g, rows %.9g", (long long)OC, (long long)C, (long long)n,
                                 (long long)o, y[n * OC + o], y2[n * OC + o]);
                }
            }
            free(wrow);
        }
        fk_qmatmul_q8_blocked(true);
        free(w); free(x); free(y); free(y2);
    }
    // arguments; non-finite activations give non-finite outputs, not undefined casts
    float x[64], y[2];
    uint8_t w[2 * 2 * 34] = {0};
    for (int i = 0; i < 64; i++) x[i] = (float)i;
    x[3] = INFINITY;
    x[40] = NAN;
    assert_int_equal(fk_qmatmul_forward_q8(y, x, w, FK_GGML_Q8_0, NULL, 1, 48, 2), FK_ERR_ARG);
    CHECK(fk_qmatmul_forward_q8(y, x, w, FK_GGML_Q8_0, NULL, 1, 64, 2));
}

// ------------------------------------------------------------------ broken files

typedef struct { unsigned char *b; size_t n, cap; } buf;
static void put(buf *x, const void *p, size_t n) {
    if (x->n + n > x->cap) { x->cap = (x->n + n) * 2; x->b = realloc(x->b, x->cap); }
    memcpy(x->b + x->n, p, n);
    x->n += n;
}
static void put32(buf *x, uint32_t v) { put(x, &v, 4); }
static void put64(buf *x, uint64_t v) { put(x, &v, 8); }

// A GGUF v3 file with no keys and `nt` tensors named t0.. of 2 dims, then `data` bytes.
static void one_file(const char *name, int nt, const uint64_t *dims, const uint32_t *types, const uint64_t *offsets, size_t data) {
    buf x = {0};
    put(&x, "GGUF", 4);
    put32(&x, 3);
    put64(&x, (uint64_t)nt);
    put64(&x, 0);
    for (int i = 0; i < nt; i++) {
        char nm[16];
        snprintf(nm, sizeof nm, "t%d", i);
        put64(&x, strlen(nm));
        put(&x, nm, strlen(nm));
        put32(&x, 2);
        put64(&x, dims[2 * i]);
        put64(&x, dims[2 * i + 1]);
        put32(&x, types[i]);
        put64(&x, offsets[i]);
    }
    static const unsigned char zeros[64];
    put(&x, zeros, (32 - x.n % 32) % 32);
    unsigned char *d = calloc(1, data + 1);
    put(&x, d, data);
    free(d);
    spit(tpath(name), x.b, x.n);
    free(x.b);
}

static void expect_open_error(const char *name, const char *n1, const char *n2) {
    fk_gguf g;
    fk_status st = fk_gguf_open(tpath(name), &g);
    if (st == FK_OK) { fk_gguf_close(&g); fail_msg("%s opened", name); }
    assert_int_equal(st, FK_ERR_FORMAT);
    const char *e = fk_last_error();
    if (!strstr(e, tpath(name)) || !strstr(e, n1) || (n2 && !strstr(e, n2))) fail_msg("%s: unexpected message: %s", name, e);
}

static void test_bad_files(void **s) {
    (void)s;
    const uint64_t off0[] = {0, 0}, d_ok[] = {64, 2, 64, 2};
    const uint32_t q8[] = {FK_GGML_Q8_0, FK_GGML_Q8_0};
    one_file("ok.gguf", 1, d_ok, q8, off0, 2 * 2 * 34);
    fk_gguf g;
    CHECK(fk_gguf_open(tpath("ok.gguf"), &g));
    assert_int_equal(g.tensors[0].nbytes, 136);
    assert_non_null(g.tensors[0].data);
    fk_gguf_close(&g);
    // unknown type ids: a removed one and one past the table
    one_file("type4.gguf", 1, d_ok, (const uint32_t[]){4}, off0, 256);
    expect_open_error("type4.gguf", "tensor 't0'", "unknown ggml type 4");
    one_file("type99.gguf", 1, d_ok, (const uint32_t[]){99}, off0, 256);
    expect_open_error("type99.gguf", "tensor 't0'", "unknown ggml type 99");
    // a row that is not a whole number of blocks
    one_file("rows.gguf", 1, (const uint64_t[]){100, 2}, (const uint32_t[]){FK_GGML_Q4_K}, off0, 1024);
    expect_open_error("rows.gguf", "tensor 't0'", "rows of 100 elements (dimension 0), which is not a multiple of the Q4_K block size 256");
    // data past the end of the file
    one_file("past.gguf", 1, d_ok, q8, off0, 135);
    expect_open_error("past.gguf", "tensor 't0': data runs past the end of the file", "136 bytes");
    // overlapping tensors
    one_file("overlap.gguf", 2, d_ok, q8, (const uint64_t[]){0, 128}, 512);
    expect_open_error("overlap.gguf", "tensor 't1' (offset 128) overlaps tensor 't0'", "136 bytes");
    one_file("nooverlap.gguf", 2, d_ok, q8, (const uint64_t[]){0, 160}, 512);
    CHECK(fk_gguf_open(tpath("nooverlap.gguf"), &g));
    fk_gguf_close(&g);

    // the package-written model, truncated: every cut is refused by open or import, no crash
    size_t n;
    char *model = slurp(QDIR "/tiny_llama_quant.gguf", &n);
    const size_t cuts[] = {3, 20, 100, 1000, n / 2, n - 1000, n - 1};
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        spit(tpath("cut.gguf"), model, cuts[i]);
        fk_model m;
        fk_status st = fk_gguf_import(tpath("cut.gguf"), &m, NULL);
        if (st == FK_OK) fail_msg("a file cut at %zu of %zu bytes imported", cuts[i], n);
        assert_int_equal(st, FK_ERR_FORMAT);
        assert_non_null(strstr(fk_last_error(), tpath("cut.gguf")));
    }
    // a tensor of a type fusekit knows by size only (Q4_0 -> MXFP4: same block, 17 bytes)
    CHECK(fk_gguf_open(QDIR "/tiny_llama_quant.gguf", &g));
    const fk_gguf_tensor *t = fk_gguf_find_tensor(&g, "blk.0.attn_output.weight");
    assert_int_equal(t->ggml_type, FK_GGML_Q4_0);
    size_t at = (size_t)((const char *)t->name.s - (const char *)g.map.data) + t->name.n + 4 + 8 * t->n_dims;
    const fk_gguf_tensor *e = fk_gguf_find_tensor(&g, "token_embd.weight");
    assert_int_equal(e->ggml_type, FK_GGML_Q8_0);
    size_t emb = (size_t)((const unsigned char *)e->data - (const unsigned char *)g.map.data);
    fk_gguf_close(&g);
    char *copy = malloc(n);
    memcpy(copy, model, n);
    assert_int_equal(rd32((unsigned char *)copy + at), FK_GGML_Q4_0);
    uint32_t mx = 39;
    memcpy(copy + at, &mx, 4);
    spit(tpath("mxfp4.gguf"), copy, n);
    fk_model m;
    assert_int_equal(fk_gguf_import(tpath("mxfp4.gguf"), &m, NULL), FK_ERR_UNSUPPORTED);
    assert_non_null(strstr(fk_last_error(), "tensor 'blk.0.attn_output.weight' has ggml type MXFP4 (39)"));
    // an infinite scale: the import names the tensor
    memcpy(copy, model, n);
    copy[emb + 34] = 0x00;
    copy[emb + 35] = 0x7c;  // block 1's d = +inf
    spit(tpath("inf.gguf"), copy, n);
    assert_int_equal(fk_gguf_import(tpath("inf.gguf"), &m, NULL), FK_ERR_NUMERIC);
    assert_non_null(strstr(fk_last_error(), "tensor 'token_embd.weight' element"));
    // random byte flips in the header and tensor infos: any status, no crash (run under ASan too)
    fk_rng r;
    fk_rng_seed(&r, 11);
    CHECK(fk_gguf_open(QDIR "/tiny_llama_quant.gguf", &g));
    size_t head = (size_t)g.data_offset;
    fk_gguf_close(&g);
    for (int it = 0; it < 300; it++) {
        memcpy(copy, model, n);
        int flips = 1 + (int)fk_rng_below(&r, 4);
        for (int f = 0; f < flips; f++) copy[fk_rng_below(&r, head)] = (char)fk_rng_u64(&r);
        spit(tpath("flip.gguf"), copy, n);
        fk_status st = fk_gguf_import(tpath("flip.gguf"), &m, NULL);
        if (st == FK_OK) fk_model_free(&m);
    }
    free(copy);
    free(model);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_type_table),
        cmocka_unit_test(test_dequant_goldens),
        cmocka_unit_test(test_import_quantized_model),
        cmocka_unit_test(test_qmatmul),
        cmocka_unit_test(test_qmatmul_q8),
        cmocka_unit_test(test_bad_files),
    };
    return cmocka_run_group_tests(tests, tmpdir_setup, tmpdir_teardown);
}
