// Attention's bf16 products (src/nn/attn_amx.c: AMX tiles, or AVX512-BF16 where the CPU has no
// tiles or FUSEKIT_ATTN_AMX=avx512 asks for it) against references in double precision:
//  - the same arithmetic: q, k, v (and in the backward dO, P and dS) rounded to bf16 by base's
//    fk_f32_to_bf16 before each product, everything else in double; the kernel must match it up
//    to fp32 accumulation and the rare bf16 rounding that lands the other way (tight bounds);
//  - plain attention in double without rounding (what the fp32 kernel computes): within bf16's
//    precision, and measurably further from it than from the rounded reference, so the test
//    sees the rounding the kernel documents;
//  - the probabilities the forward keeps: the rounded reference's, and exactly zero outside the
//    visible keys within each FK_ATT_BLK row block's columns (the fp32 backward reads them); the
//    rows' log-sum-exp it keeps instead for training; the backward both from kept probabilities
//    and from the log-sum-exp (recomputing them, ALiBi's slopes included).
// Shapes cover GQA and MQA, head sizes padded to 32 (80) or not (32, 64, 128, 256), rows and keys
// not multiples of 32, sliding windows, soft-capping, ALiBi, a KV cache (p0 > 0, its own key
// stride). On a CPU without either unit (or with FUSEKIT_ATTN_AMX=0) the kernels must decline:
// the test checks that and says so.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/par.h"
#include "fusekit/fusekit.h"
#include "nn/attn_amx.h"

static double rb(float f) { return (double)fk_bf16_to_f32(fk_f32_to_bf16(f)); }

typedef struct {
    const char *name;
    int64_t B, n, p0, H, KVH, hd, window;
    double softcap;
    bool alibi;
} shape;

static const shape SHAPES[] = {
    {"GQA 4/2, hd 64, 77 rows", 2, 77, 0, 4, 2, 64, 0, 0, false},
    {"MHA, hd 32, 300 rows", 1, 300, 0, 2, 2, 32, 0, 0, false},
    {"MQA 3/1, hd 80, window 20", 2, 45, 0, 3, 1, 80, 20, 0, false},
    {"hd 128, soft-cap 30, ALiBi", 1, 70, 0, 2, 1, 128, 0, 30.0, true},
    {"hd 256, window 33", 1, 100, 0, 2, 2, 256, 33, 0, false},
    {"KV cache: 40 rows after 100", 2, 40, 100, 4, 2, 64, 0, 0, false},
    {"KV cache, window 50", 1, 33, 70, 2, 1, 64, 50, 0, false},
};

// The shape's ALiBi slopes (8 heads at most), zeros without ALiBi: 2^(-8 (h+1) / H).
static void shape_slopes(const shape *s, float *slopes) {
    for (int64_t h = 0; h < s->H; h++) slopes[h] = s->alibi ? (float)pow(2.0, -8.0 * (double)(h + 1) / (double)s->H) : 0;
}

static float *randn(fk_rng *r, int64_t n, float s) {
    float *x = malloc((size_t)n * sizeof(float));
    assert_non_null(x);
    for (int64_t i = 0; i < n; i++) x[i] = s * fk_rng_normal(r);
    return x;
}

static int64_t first_col(int64_t i, int64_t w) { return w > 0 && i - w + 1 > 0 ? i - w + 1 : 0; }

// Row i (position p) of head h: probabilities p[lo..p] in double from q and keys k (row stride
// ks), the operands rounded when round is set; returns lo.
static int64_t ref_probs(double *pr, const float *q, const float *k, int64_t ks, int64_t hd, int64_t p, double scale,
                         const shape *s, double slope, bool round, double *lse) {
    int64_t lo = first_col(p, s->window);
    double mx = -INFINITY, sum = 0;
    for (int64_t j = lo; j <= p; j++) {
        double d = 0;
        for (int64_t e = 0; e < hd; e++) d += (round ? rb(q[e]) * rb(k[j * ks + e]) : (double)q[e] * k[j * ks + e]);
        d *= scale;
        if (s->softcap > 0) d = s->softcap * tanh(d / s->softcap);
        d += slope * (double)(j - p);
        pr[j] = d;
        mx = fmax(mx, d);
    }
    for (int64_t j = lo; j <= p; j++) sum += (pr[j] = exp(pr[j] - mx));
    for (int64_t j = lo; j <= p; j++) pr[j] /= sum;
    if (lse) *lse = mx + log(sum);
    return lo;
}

static void test_forward(void **state) {
    (void)state;
    fk_matmul_set_precision(FK_PRECISION_BF16);
    // the unit the switch asks for: none with 0; AVX512-BF16 with avx512 wherever bf16 products
    // run natively (oneDNN on a CPU with AVX512-BF16), AMX CPUs included
    const char *env = getenv("FUSEKIT_ATTN_AMX"), *unit = fk_attn_bf16_unit();
    bool native = strstr(fk_matmul_backend(), "oneDNN") != NULL;
    if (env && strcmp(env, "0") == 0) assert_null(unit);
    if (env && strcmp(env, "avx512") == 0 && native) {
        assert_non_null(unit);
        assert_string_equal(unit, "AVX512-BF16");
    }
    assert_int_equal(unit != NULL, fk_attn_amx_on());
    print_message("  attention's products on: %s (%s)\n", unit ? unit : "none (fp32)", fk_matmul_backend());
    if (!fk_attn_amx_on()) {
        float o = 0;
        fk_att_dims d = {.B = 1, .n = 1, .H = 1, .KVH = 1, .hd = 32, .q_stride = 96, .kv_stride = 96, .kv_seq = 96};
        assert_false(fk_attention_forward_amx(&o, NULL, NULL, NULL, &o, &o, &o, &d, 1, 0, 1));
        assert_false(fk_attention_backward_amx(&o, &o, &o, &o, NULL, NULL, 1, 1, 1, 1, 32, 1, 0, 0, 1));
        print_message("  bf16 attention is not available here (%s): the kernels decline, checked; nothing else to run\n",
                      fk_matmul_backend());
        fk_matmul_set_precision(FK_PRECISION_FP32);
        return;
    }
    fk_rng r;
    fk_rng_seed(&r, 7);
    int nthr = omp_get_max_threads();
    for (size_t c = 0; c < sizeof SHAPES / sizeof SHAPES[0]; c++) {
        const shape *s = &SHAPES[c];
        int64_t B = s->B, n = s->n, p0 = s->p0, H = s->H, KVH = s->KVH, hd = s->hd, Tk = p0 + n, D = H * hd, KVD = KVH * hd;
        double scale = 1 / sqrt((double)hd);
        // queries in their own rows (stride D); keys and values as a KV cache would hold them
        // (rows of KVD, Tk per sequence) for p0 > 0, else inside qkv rows like a training forward
        int64_t qs = p0 > 0 ? D : D + 2 * KVD, ks = p0 > 0 ? KVD : qs, kv_seq = p0 > 0 ? Tk * KVD : n * qs;
        float *q = randn(&r, B * n * qs, 1.5f), *kvbuf = p0 > 0 ? randn(&r, 2 * B * Tk * KVD, 1.5f) : NULL;
        const float *k = p0 > 0 ? kvbuf : q + D, *v = p0 > 0 ? kvbuf + B * Tk * KVD : q + D + KVD;
        float slopes[8];
        shape_slopes(s, slopes);
        fk_att_dims d = {.B = B, .n = n, .p0 = p0, .H = H, .KVH = KVH, .hd = hd, .q_stride = qs, .kv_stride = ks,
                         .kv_seq = kv_seq, .window = s->window, .alibi = s->alibi ? slopes : NULL};
        float *out = malloc((size_t)(B * n * D) * sizeof(float)), *out2 = malloc((size_t)(B * n * D) * sizeof(float));
        float *probs = p0 == 0 ? malloc((size_t)(B * H * n * n) * sizeof(float)) : NULL;
        if (probs) for (int64_t i = 0; i < B * H * n * n; i++) probs[i] = NAN;  // every entry the contract names is written
        float *lse = p0 == 0 ? malloc((size_t)(B * H * n) * sizeof(float)) : NULL;
        assert_true(fk_attention_forward_amx(out, NULL, probs, lse, q, k, v, &d, (float)scale, (float)s->softcap, nthr));
        assert_true(fk_attention_forward_amx(out2, NULL, NULL, NULL, q, k, v, &d, (float)scale, (float)s->softcap, nthr));
        // the output as bf16 alone (training's act16 layout): out rounded to nearest even, bit for bit
        uint16_t *out16 = malloc((size_t)(B * n * D) * 2);
        assert_non_null(out16);
        assert_false(fk_attention_forward_amx(NULL, NULL, NULL, NULL, q, k, v, &d, (float)scale, (float)s->softcap, nthr));
        assert_true(fk_attention_forward_amx(NULL, out16, NULL, NULL, q, k, v, &d, (float)scale, (float)s->softcap, nthr));
        for (int64_t i = 0; i < B * n * D; i++)
            if (out16[i] != fk_f32_to_bf16(out[i]) && fpclassify(out[i]) != FP_SUBNORMAL)  // (the instruction flushes subnormals)
                fail_msg("%s: out16[%lld] = %04x, out %g rounds to %04x", s->name, (long long)i, out16[i], out[i], fk_f32_to_bf16(out[i]));
        free(out16);
        double *pr = malloc((size_t)Tk * sizeof(double)), *pu = malloc((size_t)Tk * sizeof(double));
        double err_r = 0, err_u = 0, err_p = 0, vmax = 0, ss_r = 0, ss_u = 0, err_lse = 0;
        for (int64_t b = 0; b < B; b++)
            for (int64_t h = 0; h < H; h++) {
                int64_t g = h / (H / KVH);
                const float *kb = k + b * kv_seq + g * hd, *vb = v + b * kv_seq + g * hd;
                for (int64_t i = 0; i < n; i++) {
                    int64_t p = p0 + i;
                    const float *qi = q + (b * n + i) * qs + h * hd;
                    double want_lse;
                    int64_t lo = ref_probs(pr, qi, kb, ks, hd, p, scale, s, slopes[h], true, &want_lse);
                    ref_probs(pu, qi, kb, ks, hd, p, scale, s, slopes[h], false, NULL);
                    if (lse) err_lse = fmax(err_lse, fabs(lse[(b * H + h) * n + i] - want_lse));
                    if (probs) {
                        const float *row = probs + ((b * H + h) * n + i) * n;
                        int64_t bi = i / FK_ATT_BLK * FK_ATT_BLK, bi1 = bi + FK_ATT_BLK < n ? bi + FK_ATT_BLK : n;
                        for (int64_t j = first_col(bi, s->window); j < bi1; j++) {
                            if (j < lo || j > p) {
                                if (row[j] != 0) fail_msg("%s: probs[%lld][%lld] = %g outside the visible keys", s->name, (long long)i, (long long)j, row[j]);
                            } else err_p = fmax(err_p, fabs(row[j] - pr[j]));
                        }
                    }
                    for (int64_t e = 0; e < hd; e++) {
                        double want = 0, plain = 0;
                        for (int64_t j = lo; j <= p; j++) {
                            want += rb((float)pr[j]) * rb(vb[j * ks + e]);
                            plain += pu[j] * vb[j * ks + e];
                            vmax = fmax(vmax, fabs(vb[j * ks + e]));
                        }
                        float got = out[(b * n + i) * D + h * hd + e];
                        assert_true(got == out2[(b * n + i) * D + h * hd + e]);  // keeping probs changes nothing
                        err_r = fmax(err_r, fabs(got - want));
                        err_u = fmax(err_u, fabs(got - plain));
                        ss_r += (got - want) * (got - want);
                        ss_u += (got - plain) * (got - plain);
                    }
                }
            }
        print_message("  %-28s |out - rounded ref| max %.2e rms %.2e; |out - plain ref| max %.2e rms %.2e (|v| <= %.1f); probs %.2e\n",
                      s->name, err_r, sqrt(ss_r / (double)(B * n * D)), err_u, sqrt(ss_u / (double)(B * n * D)), vmax, err_p);
        // the documented arithmetic up to fp32 sums, where a probability's bf16 rounding can land
        // one step (2^-8 relative) the other way from the double reference's: one such step at most
        assert_true(err_r < vmax / 256);
        assert_true(err_u < 3e-2 * vmax);       // bf16's precision against plain attention
        assert_true(ss_r < 0.01 * ss_u);        // and far closer to the rounded arithmetic than to plain
        if (probs) assert_true(err_p < 2e-5);
        if (lse) {
            print_message("  %-28s log-sum-exp max error %.2e\n", s->name, err_lse);
            assert_true(err_lse < 1e-5);
        }
        free(q); free(kvbuf); free(out); free(out2); free(probs); free(lse); free(pr); free(pu);
    }
    fk_matmul_set_precision(FK_PRECISION_FP32);
    assert_false(fk_attn_amx_on());  // only under bf16
}

// The backward of the same shapes (p0 = 0, as training has it), given the probabilities of the
// rounded forward in double: dP = dO V^T, dS = P (dP - rowsum(P dP)) scale [(1 - tanh^2)],
// dQ = dS K, dK = dS^T Q, dV = P^T dO, each product's operands rounded to bf16.
static void test_backward(void **state) {
    (void)state;
    fk_matmul_set_precision(FK_PRECISION_BF16);
    if (!fk_attn_amx_on()) {
        fk_matmul_set_precision(FK_PRECISION_FP32);
        print_message("  bf16 attention is not available here: skipped\n");
        return;
    }
    fk_rng r;
    fk_rng_seed(&r, 11);
    int nthr = omp_get_max_threads();
    for (size_t c = 0; c < sizeof SHAPES / sizeof SHAPES[0]; c++) {
        const shape *s = &SHAPES[c];
        if (s->p0 > 0) continue;  // the backward is training's
        int64_t B = s->B, T = s->n, H = s->H, KVH = s->KVH, hd = s->hd, D = H * hd, QD = D + 2 * KVH * hd, G = H / KVH;
        double scale = 1 / sqrt((double)hd);
        float *qkv = randn(&r, B * T * QD, 1.5f), *dout = randn(&r, B * T * D, 1.0f);
        float *probs = calloc((size_t)(B * H * T * T), sizeof(float)), *lse = malloc((size_t)(B * H * T) * sizeof(float));
        float slopes[8];
        shape_slopes(s, slopes);
        double *ds = malloc((size_t)T * sizeof(double)), *dq = calloc((size_t)(B * T * QD), sizeof(double));
        assert_non_null(probs); assert_non_null(dq);
        // the forward's probabilities (rounded q, k) and the reference gradients
        for (int64_t b = 0; b < B; b++)
            for (int64_t h = 0; h < H; h++) {
                int64_t g = h / G;
                const float *kb = qkv + b * T * QD + D + g * hd, *vb = kb + KVH * hd;
                for (int64_t i = 0; i < T; i++) {
                    const float *qi = qkv + (b * T + i) * QD + h * hd, *dO = dout + (b * T + i) * D + h * hd;
                    float *P = probs + ((b * H + h) * T + i) * T;
                    double l;
                    int64_t lo = ref_probs(ds, qi, kb, QD, hd, i, scale, s, slopes[h], true, &l);
                    lse[(b * H + h) * T + i] = (float)l;
                    for (int64_t j = lo; j <= i; j++) P[j] = (float)ds[j];
                    double dot = 0;
                    for (int64_t j = lo; j <= i; j++) {
                        double dp = 0;
                        for (int64_t e = 0; e < hd; e++) dp += rb(dO[e]) * rb(vb[j * QD + e]);
                        ds[j] = dp;
                        dot += (double)P[j] * dp;
                    }
                    for (int64_t j = lo; j <= i; j++) {
                        double x = (double)P[j] * (ds[j] - dot) * scale;
                        if (s->softcap > 0) {
                            double raw = 0;
                            for (int64_t e = 0; e < hd; e++) raw += rb(qi[e]) * rb(kb[j * QD + e]);
                            double t = tanh(raw * scale / s->softcap);
                            x *= 1 - t * t;
                        }
                        double dsr = rb((float)x), pj = rb(P[j]);
                        for (int64_t e = 0; e < hd; e++) {
                            dq[(b * T + i) * QD + h * hd + e] += dsr * rb(kb[j * QD + e]);
                            dq[(b * T + j) * QD + D + g * hd + e] += dsr * rb(qi[e]);
                            dq[(b * T + j) * QD + D + KVH * hd + g * hd + e] += pj * rb(dO[e]);
                        }
                    }
                }
            }
        float *got = malloc((size_t)(B * T * QD) * sizeof(float));
        // with the kept probabilities, and with them recomputed from the log-sum-exp (ALiBi's
        // slopes then matter: the recomputed scores need them)
        for (int from_lse = 0; from_lse < 2; from_lse++) {
            for (int64_t i = 0; i < B * T * QD; i++) got[i] = 0.25f;  // the kernel adds to what is there
            assert_true(fk_attention_backward_amx(got, dout, qkv, from_lse ? NULL : probs, from_lse ? lse : NULL,
                                                  s->alibi ? slopes : NULL, B, T, H, KVH, hd, (float)scale, (float)s->softcap,
                                                  s->window, nthr));
            double num = 0, den = 0, worst = 0, gmax = 0;
            for (int64_t i = 0; i < B * T * QD; i++) {
                double e = (double)got[i] - 0.25 - dq[i];
                num += e * e; den += dq[i] * dq[i];
                worst = fmax(worst, fabs(e)); gmax = fmax(gmax, fabs(dq[i]));
            }
            print_message("  %-28s dqkv (%s): relative L2 error %.2e, max |error| %.2e of max |grad| %.2f\n", s->name,
                          from_lse ? "P from lse" : "kept P", sqrt(num / den), worst, gmax);
            assert_true(sqrt(num / den) < 2e-3);
            assert_true(worst < 1e-2 * gmax);
        }
        free(qkv); free(dout); free(probs); free(lse); free(ds); free(dq); free(got);
    }
    fk_matmul_set_precision(FK_PRECISION_FP32);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_forward),
        cmocka_unit_test(test_backward),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
