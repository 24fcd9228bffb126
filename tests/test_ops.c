// Op-level tests: every backward against central finite differences computed in double
// precision (the ops are instantiated for double here), and the float kernels against
// naive double references.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdint.h>
#define FK_ATT_BLK 8  // small row blocks so short sequences cross several blocks
#define real double
#define FK_OP(name) d_##name
#define FK_GEMM cblas_dgemm
#define FK_GEMM_ATTN cblas_dgemm
#define FK_GEMV cblas_dgemv
#define FK_EXP exp
#define FK_TANH tanh
#define FK_ERF erf
#include "nn/ops_impl.h"
#undef real
#undef FK_OP
#undef FK_GEMM
#undef FK_GEMM_ATTN
#undef FK_EXP
#undef FK_GEMV
#undef FK_TANH
#undef FK_ERF
#include "nn/ops.h"
#include "fusekit/base.h"

static fk_rng rng;
static void fill(double *x, int64_t n, double scale) { for (int64_t i = 0; i < n; i++) x[i] = scale * fk_rng_normal(&rng); }
static double *dalloc(int64_t n) { double *p = calloc((size_t)n, sizeof(double)); assert_non_null(p); return p; }
static double dot(const double *a, const double *b, int64_t n) { double s = 0; for (int64_t i = 0; i < n; i++) s += a[i] * b[i]; return s; }

// Compares an analytic gradient with central differences of loss() over every element of x.
static void check_fd(const char *what, double *x, int64_t n, const double *analytic, double (*loss)(void *), void *ctx) {
    const double h = 1e-5;
    double max_err = 0;
    for (int64_t i = 0; i < n; i++) {
        double old = x[i];
        x[i] = old + h; double lp = loss(ctx);
        x[i] = old - h; double lm = loss(ctx);
        x[i] = old;
        double num = (lp - lm) / (2 * h), err = fabs(num - analytic[i]) / (1e-6 + fabs(num));
        if (err > max_err) max_err = err;
        if (fabs(num - analytic[i]) > 1e-7 + 1e-6 * fabs(num))
            fail_msg("%s: element %lld: analytic %.12g vs finite difference %.12g", what, (long long)i, analytic[i], num);
    }
    print_message("  %-28s %6lld elements, max relative error %.2e\n", what, (long long)n, max_err);
}

// ------------------------------------------------------------------ matmul
typedef struct { double *out, *inp, *w, *b, *r; int64_t N, C, OC; } mm_ctx;
static double mm_loss(void *p) { mm_ctx *c = p; d_matmul_forward(c->out, c->inp, c->w, c->b, c->N, c->C, c->OC); return dot(c->out, c->r, c->N * c->OC); }

static void test_matmul(void **state) {
    (void)state;
    mm_ctx c = {.N = 5, .C = 7, .OC = 6};
    c.out = dalloc(c.N * c.OC); c.inp = dalloc(c.N * c.C); c.w = dalloc(c.OC * c.C); c.b = dalloc(c.OC); c.r = dalloc(c.N * c.OC);
    fill(c.inp, c.N * c.C, 1); fill(c.w, c.OC * c.C, 1); fill(c.b, c.OC, 1); fill(c.r, c.N * c.OC, 1);
    double *dinp = dalloc(c.N * c.C), *dw = dalloc(c.OC * c.C), *db = dalloc(c.OC);
    d_matmul_backward(dinp, dw, db, c.r, c.inp, c.w, c.N, c.C, c.OC);
    check_fd("matmul dinp", c.inp, c.N * c.C, dinp, mm_loss, &c);
    check_fd("matmul dw", c.w, c.OC * c.C, dw, mm_loss, &c);
    check_fd("matmul db", c.b, c.OC, db, mm_loss, &c);
    // the float kernel against a naive triple loop
    int64_t N = 33, C = 47, OC = 29;
    float *fi = malloc(N * C * 4), *fw = malloc(OC * C * 4), *fb = malloc(OC * 4), *fo = malloc(N * OC * 4);
    for (int64_t i = 0; i < N * C; i++) fi[i] = fk_rng_normal(&rng);
    for (int64_t i = 0; i < OC * C; i++) fw[i] = fk_rng_normal(&rng);
    for (int64_t i = 0; i < OC; i++) fb[i] = fk_rng_normal(&rng);
    fk_matmul_forward(fo, fi, fw, fb, N, C, OC);
    for (int64_t i = 0; i < N; i++)
        for (int64_t o = 0; o < OC; o++) {
            double s = fb[o];
            for (int64_t k = 0; k < C; k++) s += (double)fi[i * C + k] * fw[o * C + k];
            assert_true(fabs(s - fo[i * OC + o]) < 1e-4 * (1 + fabs(s)));
        }
    free(fi); free(fw); free(fb); free(fo);
    free(c.out); free(c.inp); free(c.w); free(c.b); free(c.r); free(dinp); free(dw); free(db);
}

// ------------------------------------------------------------------ encoder
typedef struct { double *out, *wte, *wpe, *r; int32_t *tok, *pos; int64_t N, C; } enc_ctx;
static double enc_loss(void *p) { enc_ctx *c = p; d_encoder_forward(c->out, c->tok, c->pos, c->wte, c->wpe, c->N, c->C); return dot(c->out, c->r, c->N * c->C); }

static void test_encoder(void **state) {
    (void)state;
    int32_t tok[6] = {3, 1, 3, 0, 2, 3}, pos[6] = {0, 1, 2, 0, 1, 2};
    enc_ctx c = {.N = 6, .C = 5, .tok = tok, .pos = pos};
    c.out = dalloc(30); c.wte = dalloc(4 * 5); c.wpe = dalloc(3 * 5); c.r = dalloc(30);
    fill(c.wte, 20, 1); fill(c.wpe, 15, 1); fill(c.r, 30, 1);
    double *dwte = dalloc(20), *dwpe = dalloc(15);
    d_encoder_backward(dwte, dwpe, c.r, tok, pos, 6, 5);
    check_fd("encoder dwte (repeated ids)", c.wte, 20, dwte, enc_loss, &c);
    check_fd("encoder dwpe", c.wpe, 15, dwpe, enc_loss, &c);
    free(c.out); free(c.wte); free(c.wpe); free(c.r); free(dwte); free(dwpe);
}

// ------------------------------------------------------------------ norms
typedef struct { double *out, *mean, *rstd, *inp, *w, *b, *r; int64_t N, C; int rms; double off; } norm_ctx;
static double norm_loss(void *p) {
    norm_ctx *c = p;
    if (c->rms) d_rmsnorm_forward(c->out, c->rstd, c->inp, c->w, c->N, c->C, 1e-5, c->off);
    else d_layernorm_forward(c->out, c->mean, c->rstd, c->inp, c->w, c->b, c->N, c->C, 1e-5);
    return dot(c->out, c->r, c->N * c->C);
}

static void run_norm(int rms, double off) {
    norm_ctx c = {.N = 4, .C = 9, .rms = rms, .off = off};
    c.out = dalloc(36); c.mean = dalloc(4); c.rstd = dalloc(4); c.inp = dalloc(36); c.w = dalloc(9); c.b = dalloc(9); c.r = dalloc(36);
    fill(c.inp, 36, 2); fill(c.w, 9, 1); fill(c.b, 9, 1); fill(c.r, 36, 1);
    for (int i = 0; i < 9; i++) c.inp[i] += 3;  // a row with a large mean
    double *dinp = dalloc(36), *dw = dalloc(9), *db = dalloc(9);
    for (int i = 0; i < 36; i++) dinp[i] = 0.25;  // backward adds into dinp
    norm_loss(&c);
    if (rms) d_rmsnorm_backward(dinp, dw, c.r, c.inp, c.w, c.rstd, c.N, c.C, c.off);
    else d_layernorm_backward(dinp, dw, db, c.r, c.inp, c.w, c.mean, c.rstd, c.N, c.C);
    for (int i = 0; i < 36; i++) dinp[i] -= 0.25;
    check_fd(rms ? off != 0 ? "rmsnorm (1 + w) dinp" : "rmsnorm dinp" : "layernorm dinp", c.inp, 36, dinp, norm_loss, &c);
    check_fd(rms ? off != 0 ? "rmsnorm (1 + w) dw" : "rmsnorm dw" : "layernorm dw", c.w, 9, dw, norm_loss, &c);
    if (!rms) check_fd("layernorm db", c.b, 9, db, norm_loss, &c);
    free(c.out); free(c.mean); free(c.rstd); free(c.inp); free(c.w); free(c.b); free(c.r); free(dinp); free(dw); free(db);
}
static void test_layernorm(void **state) { (void)state; run_norm(0, 0); }
static void test_rmsnorm(void **state) {
    (void)state;
    run_norm(1, 0);
    run_norm(1, 1);  // Gemma: x / rms(x) * (1 + w)
    // Gemma's (1 + w) with w = v - 1 is Llama's v, exactly as computed
    double x[6] = {0.5, -1.25, 2.0, 0.0, 3.5, -0.75}, v[3] = {1.5, 0.25, -2.0}, w[3], y0[6], y1[6], r0[2], r1[2];
    for (int i = 0; i < 3; i++) w[i] = v[i] - 1;
    d_rmsnorm_forward(y0, r0, x, v, 2, 3, 1e-6, 0);
    d_rmsnorm_forward(y1, r1, x, w, 2, 3, 1e-6, 1);
    for (int i = 0; i < 6; i++) assert_true(fabs(y0[i] - y1[i]) < 1e-15);
    // row 0 from the definition: x / sqrt(mean(x^2) + eps) * v
    double ms = (0.25 + 1.5625 + 4.0) / 3;
    for (int i = 0; i < 3; i++) assert_true(fabs(y0[i] - x[i] / sqrt(ms + 1e-6) * v[i]) < 1e-14);
}

// ------------------------------------------------------------------ QK-norm
typedef struct { double *qkv, *work, *pre, *rstd, *wq, *wk, *r, off; int64_t N; fk_qk_groups G; } qkn_ctx;
static int64_t qkn_row(const fk_qk_groups *G) { return G->nq * G->dq + 2 * G->nk * G->dk; }
static double qkn_loss(void *p) {
    qkn_ctx *c = p;
    int64_t n = c->N * qkn_row(&c->G);
    memcpy(c->work, c->qkv, (size_t)n * sizeof(double));
    d_qknorm_forward(c->work, c->pre, c->rstd, c->wq, c->wk, c->N, &c->G, 1e-6, c->off);
    return dot(c->work, c->r, n);
}

// Per head (H 4, KVH 2, hd 6; weights plain and Gemma's 1 + w), over the whole projections with
// grouped KV heads (OLMo 2: q over 4 heads x 6 = 24 values, k over 2 x 6 = 12), and StableLM 2 12B's
// LayerNorm per head with each head's own weights (q 4 x 6, k 2 x 6).
static void test_qknorm(void **state) {
    (void)state;
    const fk_qk_groups head = {.nq = 4, .dq = 6, .nk = 2, .dk = 6}, whole = {.nq = 1, .dq = 24, .nk = 1, .dk = 12},
                       ln = {.nq = 4, .dq = 6, .nk = 2, .dk = 6, .ln = true, .own = true}, groups[4] = {head, head, whole, ln};
    for (int k = 0; k < 4; k++) {
        qkn_ctx c = {.N = 3, .G = groups[k], .off = k == 1};
        const fk_qk_groups *G = &c.G;
        int64_t R = qkn_row(G), n = c.N * R, PD = G->nq * G->dq + G->nk * G->dk;
        int64_t WQ = G->own ? G->nq * G->dq : G->dq, WK = G->own ? G->nk * G->dk : G->dk;
        c.qkv = dalloc(n); c.work = dalloc(n); c.pre = dalloc(c.N * PD); c.rstd = dalloc(c.N * (G->nq + G->nk));
        c.wq = dalloc(WQ); c.wk = dalloc(WK); c.r = dalloc(n);
        fill(c.qkv, n, 2); fill(c.wq, WQ, 1); fill(c.wk, WK, 1); fill(c.r, n, 1);
        double *g = dalloc(n), *dwq = dalloc(WQ), *dwk = dalloc(WK);
        qkn_loss(&c);
        // v passes through untouched
        for (int64_t i = 0; i < c.N; i++)
            for (int64_t j = PD; j < R; j++) assert_true(c.work[i * R + j] == c.qkv[i * R + j]);
        if (k == 2) {  // the definition: row 0's keys divided by their RMS over all 12 values, times wk
            double ss = 0;
            for (int64_t e = 0; e < G->dk; e++) ss += c.qkv[G->dq + e] * c.qkv[G->dq + e];
            for (int64_t e = 0; e < G->dk; e++)
                assert_true(fabs(c.work[G->dq + e] - c.qkv[G->dq + e] / sqrt(ss / 12 + 1e-6) * c.wk[e]) < 1e-12);
        }
        if (k == 3) {  // the definition: row 1's second key head less its mean, over its standard deviation, times its weights
            const double *x = c.qkv + R + 24 + 6, *y = c.work + R + 24 + 6;
            double mu = 0, var = 0;
            for (int e = 0; e < 6; e++) mu += x[e] / 6;
            for (int e = 0; e < 6; e++) var += (x[e] - mu) * (x[e] - mu) / 6;
            for (int e = 0; e < 6; e++) assert_true(fabs(y[e] - (x[e] - mu) / sqrt(var + 1e-6) * c.wk[6 + e]) < 1e-12);
        }
        memcpy(g, c.r, (size_t)n * sizeof(double));
        d_qknorm_backward(g, dwq, dwk, c.pre, c.wq, c.wk, c.rstd, c.N, G, c.off);
        const char *names[4][3] = {{"qk-norm dqkv", "qk-norm dwq", "qk-norm dwk"},
                                   {"qk-norm (1 + w) dqkv", "qk-norm (1 + w) dwq", "qk-norm (1 + w) dwk"},
                                   {"qk-norm whole GQA dqkv", "qk-norm whole GQA dwq", "qk-norm whole GQA dwk"},
                                   {"qk-norm LayerNorm per head dqkv", "qk-norm LayerNorm per head dwq", "qk-norm LayerNorm per head dwk"}};
        check_fd(names[k][0], c.qkv, n, g, qkn_loss, &c);
        check_fd(names[k][1], c.wq, WQ, dwq, qkn_loss, &c);
        check_fd(names[k][2], c.wk, WK, dwk, qkn_loss, &c);
        free(c.qkv); free(c.work); free(c.pre); free(c.rstd); free(c.wq); free(c.wk); free(c.r); free(g); free(dwq); free(dwk);
    }
}

// ------------------------------------------------------------------ rope
typedef struct { double *x, *y, *r; float *cs, *sn; int32_t *pos; int64_t N, H, KVH, hd, rd; } rope_ctx;
static double rope_loss(void *p) {
    rope_ctx *c = p;
    int64_t n = c->N * (c->H + 2 * c->KVH) * c->hd;
    memcpy(c->y, c->x, (size_t)n * sizeof(double));
    d_rope_apply(c->y, c->cs, c->sn, c->pos, c->N, c->H, c->KVH, c->hd, c->rd, 1);
    return dot(c->y, c->r, n);
}

// The context's buffers and a table of P positions, angle t * 10000^(-2d/rd), random x and r.
static void rope_setup(rope_ctx *c, int P) {
    int64_t n = c->N * (c->H + 2 * c->KVH) * c->hd, half = c->rd / 2;
    c->x = dalloc(n); c->y = dalloc(n); c->r = dalloc(n);
    c->cs = malloc((size_t)(P * half) * sizeof(float)); c->sn = malloc((size_t)(P * half) * sizeof(float));
    for (int t = 0; t < P; t++)
        for (int64_t d = 0; d < half; d++) {
            double a = t * pow(10000.0, -2.0 * (double)d / (double)c->rd);
            c->cs[t * half + d] = (float)cos(a); c->sn[t * half + d] = (float)sin(a);
        }
    fill(c->x, n, 1); fill(c->r, n, 1);
}

static void test_rope(void **state) {
    (void)state;
    rope_ctx c = {.N = 5, .H = 2, .KVH = 1, .hd = 6, .rd = 6};
    int64_t n = c.N * 4 * c.hd;
    int32_t pos[5] = {0, 1, 2, 7, 3};
    c.pos = pos;
    rope_setup(&c, 8);
    double *g = dalloc(n);
    memcpy(g, c.r, (size_t)n * sizeof(double));
    d_rope_apply(g, c.cs, c.sn, pos, c.N, c.H, c.KVH, c.hd, c.hd, -1);
    check_fd("rope dqkv (v untouched)", c.x, n, g, rope_loss, &c);
    // position 0 is the identity; the v heads are never rotated
    rope_loss(&c);
    for (int64_t j = 0; j < 3 * c.hd; j++) assert_true(fabs(c.y[j] - c.x[j]) < 1e-12);
    for (int64_t i = 0; i < c.N; i++)
        for (int64_t j = 3 * c.hd; j < 4 * c.hd; j++) assert_true(c.y[i * 4 * c.hd + j] == c.x[i * 4 * c.hd + j]);
    free(c.x); free(c.y); free(c.r); free(c.cs); free(c.sn); free(g);
}

// Partial rotary (GPT-NeoX, Phi-2): heads of 8 dims, the first 4 rotated in rotate_half layout
// over them (pairs d, d + 2) by theta^(-2d/4), dims 4..7 untouched; forward against the formula
// written out, backward by finite differences.
static void test_rope_partial(void **state) {
    (void)state;
    rope_ctx c = {.N = 4, .H = 2, .KVH = 1, .hd = 8, .rd = 4};
    int64_t QKVD = 4 * c.hd, n = c.N * QKVD, half = 2;
    int32_t pos[4] = {3, 0, 5, 1};
    c.pos = pos;
    rope_setup(&c, 6);
    rope_loss(&c);
    double err = 0;
    for (int64_t i = 0; i < c.N; i++)
        for (int64_t h = 0; h < 4; h++)
            for (int64_t e = 0; e < c.hd; e++) {
                const double *x = c.x + i * QKVD + h * c.hd;
                double want = x[e];  // v heads (h = 3) and dims >= rd unchanged
                if (h < 3 && e < c.rd) {
                    int64_t d = e % half;
                    double a = pos[i] * pow(10000.0, -2.0 * d / 4), cs = (float)cos(a), sn = (float)sin(a);
                    want = e < half ? x[d] * cs - x[d + half] * sn : x[d + half] * cs + x[d] * sn;
                }
                err = fmax(err, fabs(c.y[i * QKVD + h * c.hd + e] - want));
            }
    print_message("  rope partial forward vs formula, max abs error %.2e\n", err);
    assert_true(err < 1e-12);
    double *g = dalloc(n);
    memcpy(g, c.r, (size_t)n * sizeof(double));
    d_rope_apply(g, c.cs, c.sn, pos, c.N, c.H, c.KVH, c.hd, c.rd, -1);
    check_fd("rope partial dqkv", c.x, n, g, rope_loss, &c);
    free(c.x); free(c.y); free(c.r); free(c.cs); free(c.sn); free(g);
}

// ------------------------------------------------------------------ attention
typedef struct { double *out, *probs, *qkv, *r, scale, cap; int64_t B, T, H, KVH, hd, W; const float *alibi; } att_ctx;
static double att_loss(void *p) {
    att_ctx *c = p;
    d_self_attention_forward(c->out, c->probs, c->qkv, c->B, c->T, c->H, c->KVH, c->hd, c->scale, c->cap, c->W, c->alibi, NULL, 1);
    return dot(c->out, c->r, c->B * c->T * c->H * c->hd);
}

// Naive causal attention in double: full scores (scaled, soft-capped when cap > 0, plus
// alibi[h] * (j - i) when alibi is given), the causal mask and, with W > 0, the window j > i - W
// (transformers' sliding_window_overlay), softmax, weighted sum.
static void naive_attention(double *out, const float *qkv, int64_t B, int64_t T, int64_t H, int64_t KVH, int64_t hd,
                            double scale, double cap, int64_t W, const float *alibi) {
    int64_t QD = (H + 2 * KVH) * hd, D = H * hd;
    double *s = malloc((size_t)T * sizeof(double));
    for (int64_t b = 0; b < B; b++)
        for (int64_t h = 0; h < H; h++)
            for (int64_t i = 0; i < T; i++) {
                const float *q = qkv + (b * T + i) * QD + h * hd;
                double mx = -1e300, sum = 0;
                for (int64_t j = 0; j <= i; j++) {
                    const float *k = qkv + (b * T + j) * QD + D + (h / (H / KVH)) * hd;
                    double d = 0;
                    for (int64_t e = 0; e < hd; e++) d += (double)q[e] * k[e];
                    s[j] = d * scale;
                    if (cap > 0) s[j] = cap * tanh(s[j] / cap);
                    if (alibi) s[j] += alibi[h] * (double)(j - i);
                    if (W > 0 && !(j > i - W)) s[j] = -INFINITY;
                    if (s[j] > mx) mx = s[j];
                }
                for (int64_t j = 0; j <= i; j++) { s[j] = exp(s[j] - mx); sum += s[j]; }
                for (int64_t e = 0; e < hd; e++) {
                    double o = 0;
                    for (int64_t j = 0; j <= i; j++) o += s[j] / sum * qkv[(b * T + j) * QD + D + KVH * hd + (h / (H / KVH)) * hd + e];
                    out[(b * T + i) * D + h * hd + e] = o;
                }
            }
    free(s);
}

static void run_attention_h(const char *what, int64_t H, int64_t KVH, double scale, double cap, int64_t W, const float *alibi) {
    att_ctx c = {.B = 2, .T = 19, .H = H, .KVH = KVH, .hd = 3, .scale = scale, .cap = cap, .W = W, .alibi = alibi};  // 19 tokens = 3 row blocks of 8
    int64_t QD = (c.H + 2 * c.KVH) * c.hd, nq = c.B * c.T * QD, no = c.B * c.T * c.H * c.hd;
    c.out = dalloc(no); c.probs = dalloc(c.B * c.H * c.T * c.T); c.qkv = dalloc(nq); c.r = dalloc(no);
    fill(c.qkv, nq, 1.5); fill(c.r, no, 1);
    double *dqkv = dalloc(nq);
    att_loss(&c);
    int nthr = omp_get_max_threads();  // the ops' scratch: one slice per thread
    double *dscratch = dalloc(nthr * 2 * FK_ATT_BLK * c.T);
    d_attention_backward(dqkv, c.r, c.qkv, c.probs, c.B, c.T, c.H, c.KVH, c.hd, c.scale, c.cap, c.W, dscratch, nthr);
    check_fd(what, c.qkv, nq, dqkv, att_loss, &c);
    // float kernel, no probs kept (inference path), against the naive reference
    float *fq = malloc((size_t)nq * 4), *fo = malloc((size_t)no * 4), *fscratch = malloc((size_t)(nthr * FK_ATT_BLK * c.T) * 4);
    for (int64_t i = 0; i < nq; i++) fq[i] = (float)c.qkv[i];
    assert_non_null(fscratch);
    fk_self_attention_forward(fo, NULL, fq, c.B, c.T, c.H, c.KVH, c.hd, (float)scale, (float)cap, W, alibi, fscratch, nthr);
    double *ref = dalloc(no);
    naive_attention(ref, fq, c.B, c.T, c.H, c.KVH, c.hd, scale, cap, W, alibi);
    for (int64_t i = 0; i < no; i++) assert_true(fabs(ref[i] - fo[i]) < 1e-5);
    // the double kernel too (it fills probs)
    att_loss(&c);
    for (int64_t i = 0; i < no; i++) assert_true(fabs(ref[i] - c.out[i]) < 1e-5);
    free(fq); free(fo); free(ref); free(fscratch); free(dscratch);
    free(c.out); free(c.probs); free(c.qkv); free(c.r); free(dqkv);
}

static void run_attention(const char *what, double scale, double cap, int64_t W) { run_attention_h(what, 4, 2, scale, cap, W, NULL); }

static void test_attention(void **state) {
    (void)state;
    run_attention("attention dqkv (GQA 4/2)", 1 / sqrt(3.0), 0, 0);
    // Gemma 2: query_pre_attn_scalar scale, soft-capped scores, a window of 5 (crosses row blocks)
    run_attention("attention, scale, softcap 2", 0.3, 2.0, 0);
    run_attention("attention, window 5", 1 / sqrt(3.0), 0, 5);
    run_attention("attention, softcap 2, window 11", 0.45, 2.0, 11);
    run_attention("attention, window 1 (self only)", 0.5, 0, 1);
}

// ALiBi slopes against transformers 5.25's build_mpt_alibi_tensor (MPT, float32; the values
// printed by Python) and the attention with them: FD of the backward (which the constant biases
// leave unchanged), the float and double kernels against the naive reference (1e-5).
static void test_alibi(void **state) {
    (void)state;
    float s[12];
    // 6 heads, alibi_bias_max 8: the slopes 2^-1 .. 2^-8 of 8 heads, even positions then odd ones
    const double mpt6[6] = {0.25, 0.0625, 0.015625, 0.00390625, 0.5, 0.125};
    fk_alibi_slopes(s, 6, 8);
    for (int h = 0; h < 6; h++) assert_true(s[h] == (float)mpt6[h]);
    // 12 heads at 8 and 5 heads at alibi_bias_max 4: within 1e-7 relative (torch rounds in float32)
    const double mpt12[12] = {0.5, 0.25, 0.125, 0.0625, 0.03125, 0.015625, 0.0078125, 0.00390625, 0.7071067690849304, 0.3535533845424652,
                              0.1767766922712326, 0.0883883461356163};
    fk_alibi_slopes(s, 12, 8);
    for (int h = 0; h < 12; h++) assert_true(fabs(s[h] - mpt12[h]) <= 1e-7 * mpt12[h]);
    const double mpt5[5] = {0.5, 0.25, 0.125, 0.0625, 0.7071067690849304};
    fk_alibi_slopes(s, 5, 4);
    for (int h = 0; h < 5; h++) assert_true(fabs(s[h] - mpt5[h]) <= 1e-7 * mpt5[h]);
    fk_alibi_slopes(s, 4, 8);
    run_attention_h("attention, ALiBi 4 heads", 4, 2, 1 / sqrt(3.0), 0, 0, s);
    fk_alibi_slopes(s, 6, 8);
    run_attention_h("attention, ALiBi 6 heads, MQA", 6, 1, 0.4, 0, 0, s);
    run_attention_h("attention, ALiBi, window 5", 6, 2, 0.4, 0, 5, s);
    run_attention_h("attention, ALiBi, softcap 2", 6, 3, 0.4, 2.0, 0, s);
}

// ------------------------------------------------------------------ clamp
typedef struct { double *x, *y, *r, c; int64_t N; } clamp_ctx;
static double clamp_loss(void *p) {
    clamp_ctx *c = p;
    memcpy(c->y, c->x, (size_t)c->N * sizeof(double));
    d_clamp_forward(c->y, c->N, c->c);
    return dot(c->y, c->r, c->N);
}
// clip_qkv: values inside [-c, c] pass with their gradient, values outside become +-c with none.
static void test_clamp(void **state) {
    (void)state;
    clamp_ctx c = {.N = 40, .c = 1.0};
    c.x = dalloc(c.N); c.y = dalloc(c.N); c.r = dalloc(c.N);
    fill(c.x, c.N, 2); fill(c.r, c.N, 1);
    int outside = 0;
    for (int64_t i = 0; i < c.N; i++) {
        if (fabs(fabs(c.x[i]) - c.c) < 1e-3) c.x[i] *= 1.1;  // keep the FD steps off the edges
        outside += fabs(c.x[i]) > c.c;
    }
    assert_true(outside > 3 && outside < c.N - 3);
    double *g = dalloc(c.N);
    clamp_loss(&c);
    memcpy(g, c.r, (size_t)c.N * sizeof(double));
    d_clamp_backward(g, c.y, c.N, c.c);
    check_fd("clamp dx", c.x, c.N, g, clamp_loss, &c);
    for (int64_t i = 0; i < c.N; i++) assert_true(c.y[i] == (fabs(c.x[i]) > c.c ? copysign(c.c, c.x[i]) : c.x[i]));
    free(c.x); free(c.y); free(c.r); free(g);
}

// ------------------------------------------------------------------ activations
typedef struct { double *out, *inp, *r; int64_t N, F; int swiglu; } act_ctx;  // swiglu 2: GeGLU; -1: exact GELU
static double act_loss(void *p) {
    act_ctx *c = p;
    if (c->swiglu == -1) d_gelu_exact_forward(c->out, c->inp, c->N * c->F);
    else if (c->swiglu == 2) d_geglu_forward(c->out, c->inp, c->N, c->F);
    else if (c->swiglu) d_swiglu_forward(c->out, c->inp, c->N, c->F);
    else d_gelu_forward(c->out, c->inp, c->N * c->F);
    return dot(c->out, c->r, c->N * c->F);
}

static void run_act(int swiglu) {
    act_ctx c = {.N = 3, .F = 8, .swiglu = swiglu};
    int64_t ni = swiglu > 0 ? 2 * c.N * c.F : c.N * c.F;
    c.out = dalloc(c.N * c.F); c.inp = dalloc(ni); c.r = dalloc(c.N * c.F);
    fill(c.inp, ni, 2); fill(c.r, c.N * c.F, 1);
    double *g = dalloc(ni);
    if (swiglu == -1) d_gelu_exact_backward(g, c.inp, c.r, c.N * c.F);
    else if (swiglu == 2) d_geglu_backward(g, c.inp, c.r, c.N, c.F);
    else if (swiglu) d_swiglu_backward(g, c.inp, c.r, c.N, c.F);
    else d_gelu_backward(g, c.inp, c.r, c.N * c.F);
    const char *what = swiglu == -1 ? "gelu (exact) dinp" : swiglu == 2 ? "geglu dinp" : swiglu ? "swiglu dinp" : "gelu (tanh) dinp";
    check_fd(what, c.inp, ni, g, act_loss, &c);
    free(c.out); free(c.inp); free(c.r); free(g);
}
static void test_gelu(void **state) {
    (void)state;
    run_act(0);
    // gelu_new at a few points, values from Python math: 0.5x(1+tanh(sqrt(2/pi)(x+0.044715x^3)))
    double x[3] = {-1.5, 0.3, 2.0}, y[3], want[3] = {-0.10042842301976707, 0.18537092354275922, 1.954597694087775};
    d_gelu_forward(y, x, 3);
    for (int i = 0; i < 3; i++) assert_true(fabs(y[i] - want[i]) < 1e-12);
}
static void test_gelu_exact(void **state) {
    (void)state;
    run_act(-1);
    // transformers' "gelu" at a few points, values from Python math: 0.5x(1+erf(x/sqrt(2)))
    double x[4] = {-1.5, 0.3, 2.0, -6.0}, y[4], want[4] = {-0.10021080190328713, 0.18537342665668577, 1.9544997361036416,
                                                           -5.919525869479969e-09};
    d_gelu_exact_forward(y, x, 4);
    for (int i = 0; i < 4; i++) assert_true(fabs(y[i] - want[i]) < 1e-12);
    float fx[4], fy[4];
    for (int i = 0; i < 4; i++) fx[i] = (float)x[i];
    fk_gelu_exact_forward(fy, fx, 4);
    for (int i = 0; i < 4; i++) assert_true(fabs(fy[i] - want[i]) < 1e-6);
    // the float backward against the double one
    double dy[4] = {0}, r[4] = {1, -0.5, 2, 1};
    float fdy[4] = {0}, fr[4] = {1, -0.5f, 2, 1};
    d_gelu_exact_backward(dy, x, r, 4);
    fk_gelu_exact_backward(fdy, fx, fr, 4);
    for (int i = 0; i < 4; i++) assert_true(fabs(fdy[i] - dy[i]) < 1e-6);
}
static void test_swiglu(void **state) { (void)state; run_act(1); }
static void test_geglu(void **state) {
    (void)state;
    run_act(2);
    // gelu_pytorch_tanh(gate) * up, values from Python math: 0.5g(1+tanh(sqrt(2/pi)(g+0.044715g^3))) * u
    double in[6] = {-1.5, 0.3, 2.0, 0.5, -2.0, 3.0}, y[3];
    double want[3] = {-0.10042842301976707 * 0.5, 0.18537092354275922 * -2.0, 1.954597694087775 * 3.0};
    d_geglu_forward(y, in, 1, 3);
    for (int i = 0; i < 3; i++) assert_true(fabs(y[i] - want[i]) < 1e-12);
    float fin[6], fy[3];
    for (int i = 0; i < 6; i++) fin[i] = (float)in[i];
    fk_geglu_forward(fy, fin, 1, 3);
    for (int i = 0; i < 3; i++) assert_true(fabs(fy[i] - want[i]) < 1e-6);
}

// ------------------------------------------------------------------ cross-entropy
typedef struct { double *logits, *work, *losses; int32_t *tgt; int64_t N, V; } ce_ctx;
static double ce_loss(void *p) {
    ce_ctx *c = p;
    memcpy(c->work, c->logits, (size_t)(c->N * c->V) * sizeof(double));
    d_crossentropy_forward(c->losses, c->work, c->tgt, c->N, c->V, 0);
    double s = 0;
    for (int64_t i = 0; i < c->N; i++) s += c->losses[i];
    return s;
}

// log sum_j exp(x[j]), computed from the definition (shifted by the maximum).
static double row_lse(const double *x, int V) {
    double mx = x[0], s = 0;
    for (int j = 1; j < V; j++) mx = fmax(mx, x[j]);
    for (int j = 0; j < V; j++) s += exp(x[j] - mx);
    return mx + log(s);
}

static void test_crossentropy(void **state) {
    (void)state;
    int32_t tgt[4] = {2, -1, 0, 6};
    ce_ctx c = {.N = 4, .V = 7, .tgt = tgt};
    c.logits = dalloc(28); c.work = dalloc(28); c.losses = dalloc(4);
    fill(c.logits, 28, 3);
    c.logits[5] = 80;  // a large logit: the max-subtracted form must not overflow
    double *g = dalloc(28);
    memcpy(g, c.logits, sizeof(double) * 28);
    int64_t scored = d_crossentropy_forward(c.losses, g, tgt, 4, 7, 1);
    assert_int_equal(scored, 3);
    assert_true(c.losses[1] == 0);
    d_crossentropy_backward(g, tgt, 4, 7, 1.0);
    check_fd("cross-entropy dlogits", c.logits, 28, g, ce_loss, &c);
    // direct value: -log softmax for row 0
    ce_loss(&c);
    assert_true(fabs(c.losses[0] - (row_lse(c.logits, 7) - c.logits[2])) < 1e-12);
    free(c.logits); free(c.work); free(c.losses); free(g);
}

// ------------------------------------------------------------------ soft (fusion) cross-entropy
typedef struct { double *logits, *work, *losses, *flosses, lambda; int32_t *tgt; const fk_sparse_dist *t; int64_t N, V; } sce_ctx;
static double sce_loss(void *p) {
    sce_ctx *c = p;
    memcpy(c->work, c->logits, (size_t)(c->N * c->V) * sizeof(double));
    d_soft_crossentropy_forward(c->losses, c->flosses, c->work, c->tgt, c->t, c->N, c->V, 0);
    double s = 0;
    for (int64_t i = 0; i < c->N; i++) s += c->lambda * c->losses[i] + (1 - c->lambda) * c->flosses[i];
    return s;
}

static void test_soft_crossentropy(void **state) {
    (void)state;
    // rows: a 3-entry teacher, an empty row (counts as one-hot on the target), an ignored
    // position with a teacher, a one-entry teacher on another id than the target
    int32_t tgt[4] = {2, 4, -1, 6};
    int64_t row[5] = {0, 3, 3, 5, 6};
    int32_t ids[6] = {2, 0, 5, 1, 3, 0};
    float p[6] = {0.5f, 0.3f, 0.2f, 0.6f, 0.4f, 1.0f};
    fk_sparse_dist t = {row, ids, p};
    sce_ctx c = {.N = 4, .V = 7, .tgt = tgt, .t = &t, .lambda = 0.3};
    c.logits = dalloc(28); c.work = dalloc(28); c.losses = dalloc(4); c.flosses = dalloc(4);
    fill(c.logits, 28, 3);
    c.logits[5] = 80;
    double *g = dalloc(28);
    memcpy(g, c.logits, sizeof(double) * 28);
    assert_int_equal(d_soft_crossentropy_forward(c.losses, c.flosses, g, tgt, &t, 4, 7, 1), 3);
    d_soft_crossentropy_backward(g, tgt, &t, c.lambda, 4, 7, 1.0);
    check_fd("soft cross-entropy dlogits", c.logits, 28, g, sce_loss, &c);
    // direct values: -sum_v P(v) log softmax(x)(v), computed here from the definition
    sce_loss(&c);
    for (int i = 0; i < 4; i++) {
        const double *x = c.logits + i * 7;
        double lse = row_lse(x, 7), want = 0;
        if (tgt[i] < 0) want = 0;
        else if (row[i + 1] == row[i]) want = lse - x[tgt[i]];
        else for (int64_t e = row[i]; e < row[i + 1]; e++) want += p[e] * (lse - x[ids[e]]);
        assert_true(fabs(c.flosses[i] - want) < 1e-9 * (1 + fabs(want)));
    }
    // lambda 1 is plain cross-entropy
    double *g1 = dalloc(28), *g2 = dalloc(28);
    memcpy(g1, c.logits, sizeof(double) * 28); memcpy(g2, c.logits, sizeof(double) * 28);
    d_soft_crossentropy_forward(c.losses, c.flosses, g1, tgt, &t, 4, 7, 1);
    d_soft_crossentropy_backward(g1, tgt, &t, 1.0, 4, 7, 1.0);
    d_crossentropy_forward(c.losses, g2, tgt, 4, 7, 1);
    d_crossentropy_backward(g2, tgt, 4, 7, 1.0);
    for (int i = 0; i < 28; i++) assert_true(fabs(g1[i] - g2[i]) < 1e-15);
    free(c.logits); free(c.work); free(c.losses); free(c.flosses); free(g); free(g1); free(g2);
}

// Teacher rows with mass below 1 (top-k probabilities under the teacher's full softmax): the
// rest is a tail class, flosses = -sum_K P log q - (1 - sum_K P) log(1 - sum_K q).
static void test_soft_crossentropy_tail(void **state) {
    (void)state;
    int32_t tgt[4] = {2, 4, 1, 6};
    int64_t row[5] = {0, 3, 4, 6, 7};
    int32_t ids[7] = {2, 0, 5, 4, 1, 3, 6};
    float p[7] = {0.4f, 0.2f, 0.1f, 0.9f, 0.5f, 0.5f, 0.3f};  // masses 0.7, 0.9, 1 (no tail), 0.3
    fk_sparse_dist t = {row, ids, p};
    sce_ctx c = {.N = 4, .V = 7, .tgt = tgt, .t = &t, .lambda = 0.25};
    c.logits = dalloc(28); c.work = dalloc(28); c.losses = dalloc(4); c.flosses = dalloc(4);
    fill(c.logits, 28, 5);
    double *g = dalloc(28);
    memcpy(g, c.logits, sizeof(double) * 28);
    d_soft_crossentropy_forward(c.losses, c.flosses, g, tgt, &t, 4, 7, 1);
    d_soft_crossentropy_backward(g, tgt, &t, c.lambda, 4, 7, 1.0);
    check_fd("soft cross-entropy with a tail class, dlogits", c.logits, 28, g, sce_loss, &c);
    sce_loss(&c);
    for (int i = 0; i < 4; i++) {
        const double *x = c.logits + i * 7;
        double lse = row_lse(x, 7), want = 0, ps = 0, S = 0;
        for (int64_t e = row[i]; e < row[i + 1]; e++) { want += p[e] * (lse - x[ids[e]]); ps += p[e]; S += exp(x[ids[e]] - lse); }
        if (1 - ps > 1e-5) want -= (1 - ps) * log(1 - S);
        assert_true(fabs(c.flosses[i] - want) < 1e-9 * (1 + fabs(want)));
    }
    // the minimum: a model whose distribution has the teacher's entries and the rest anywhere
    // outside them has zero gradient on the fusion term (lambda 0)
    double q[7] = {0.2, 0.1, 0.4, 0.1, 0.05, 0.1, 0.05};  // row 0's entries: q(2) 0.4, q(0) 0.2, q(5) 0.1; the other 0.3 elsewhere
    double *z = dalloc(7), *gz = dalloc(7), l1[1], f1[1];
    for (int j = 0; j < 7; j++) z[j] = log(q[j]);
    memcpy(gz, z, sizeof(double) * 7);
    int64_t row1[2] = {0, 3};
    fk_sparse_dist t1 = {row1, ids, p};
    d_soft_crossentropy_forward(l1, f1, gz, tgt, &t1, 1, 7, 1);
    d_soft_crossentropy_backward(gz, tgt, &t1, 0.0, 1, 7, 1.0);
    for (int j = 0; j < 7; j++) assert_true(fabs(gz[j]) < 1e-6);
    free(z); free(gz);
    free(c.logits); free(c.work); free(c.losses); free(c.flosses); free(g);
}

// ------------------------------------------------------------------ ULD (sorted-probability L1)
// The selection: the k largest of a vector with ties, against a full sort by (value
// decreasing, index increasing), for k = 1, a middle k and k = V.
static void test_uld_topk(void **state) {
    (void)state;
    fk_rng r;
    fk_rng_seed(&r, 1902);
    enum { V = 300 };
    double x[V];
    int64_t idx[V], ref[V];
    for (int j = 0; j < V; j++) x[j] = floor(fk_rng_normal(&r) * 8) / 8;  // many ties
    for (int j = 0; j < V; j++) ref[j] = j;
    for (int a = 1; a < V; a++)  // insertion sort: the reference order
        for (int b = a; b > 0 && (x[ref[b - 1]] < x[ref[b]] || (x[ref[b - 1]] == x[ref[b]] && ref[b - 1] > ref[b])); b--) {
            int64_t t = ref[b]; ref[b] = ref[b - 1]; ref[b - 1] = t;
        }
    const int64_t ks[3] = {1, 37, V};
    for (int c = 0; c < 3; c++) {
        d_uld_topk(idx, x, V, ks[c]);
        for (int64_t i = 0; i < ks[c]; i++) assert_int_equal(idx[i], ref[i]);
    }
}

// lambda * CE + (1 - lambda) * ULD summed over rows, from the logits (uld_forward's logits path).
typedef struct { double *logits, *work, *losses, *flosses, lambda; int32_t *tgt; const fk_sparse_dist *t; int64_t N, V, kmax; } uld_ctx;
static double uld_loss(void *p) {
    uld_ctx *c = p;
    int64_t iscr[16];
    double rscr[16];
    memcpy(c->work, c->logits, (size_t)(c->N * c->V) * sizeof(double));
    d_soft_crossentropy_forward(c->losses, NULL, c->work, c->tgt, NULL, c->N, c->V, 0);
    d_uld_forward(c->flosses, c->work, c->tgt, c->t, c->N, c->V, 0, iscr, rscr, c->kmax, 1);
    double s = 0;
    for (int64_t i = 0; i < c->N; i++) s += c->lambda * c->losses[i] + (1 - c->lambda) * c->flosses[i];
    return s;
}

// The ULD gradient w.r.t. the logits against central differences. Rows: 3 entries summing to 1,
// an empty row (the one-hot [1]), an ignored position, a tail row (mass 0.7), a row of 9 entries
// (more than V = 7: the student is padded with zeros). Ids are not read: some lie outside the
// vocabulary. Ties are kept away by construction: the logits are spread 0.9 apart in a shuffled
// order, and every |s_(i) - t_(i)| and |R - r| is checked to be at least 1e-3 (the finite
// difference step 1e-5 moves a probability by less than 1e-5).
static void test_uld(void **state) {
    (void)state;
    enum { N = 5, V = 7 };
    int32_t tgt[N] = {2, 4, -1, 6, 1};
    int64_t row[N + 1] = {0, 3, 3, 5, 8, 17};
    int32_t ids[17] = {2, 900, 5, 1, 3, 4, 0, 77, 0, 1, 2, 3, 4, 5, 6, 7, 8};
    float p[17] = {0.5f, 0.3f, 0.2f, 0.6f, 0.4f, 0.45f, 0.05f, 0.2f,
                   0.2f, 0.03f, 0.17f, 0.11f, 0.07f, 0.09f, 0.13f, 0.15f, 0.05f};
    fk_sparse_dist t = {row, ids, p};
    uld_ctx c = {.N = N, .V = V, .tgt = tgt, .t = &t, .lambda = 0.3, .kmax = 9};
    c.logits = dalloc(N * V); c.work = dalloc(N * V); c.losses = dalloc(N); c.flosses = dalloc(N);
    const int perm[N][V] = {{3, 0, 6, 1, 5, 2, 4}, {6, 2, 0, 4, 1, 3, 5}, {0, 1, 2, 3, 4, 5, 6}, {2, 5, 1, 6, 0, 4, 3}, {4, 6, 3, 0, 2, 1, 5}};
    for (int i = 0; i < N; i++)
        for (int j = 0; j < V; j++) c.logits[i * V + j] = 0.9 * perm[i][j] - 2.0 + 0.1 * i;
    // the margins (rows 0, 1, 3, 4; row 2 is ignored), from the definition
    for (int i = 0; i < N; i++) {
        if (tgt[i] < 0) continue;
        double lse = row_lse(c.logits + i * V, V), s[V], ts[9] = {1}, S = 0, ps = 0;
        int k = row[i + 1] > row[i] ? (int)(row[i + 1] - row[i]) : 1;
        for (int j = 0; j < V; j++) s[j] = exp(c.logits[i * V + j] - lse);
        for (int j = 0; j < V; j++)  // sorted decreasing (the perm's values are distinct)
            for (int b = j; b > 0 && s[b - 1] < s[b]; b--) { double u = s[b]; s[b] = s[b - 1]; s[b - 1] = u; }
        for (int e = 0; e < k && row[i + 1] > row[i]; e++) ts[e] = p[row[i] + e];
        for (int e = 0; e < k; e++)
            for (int b = e; b > 0 && ts[b - 1] < ts[b]; b--) { double u = ts[b]; ts[b] = ts[b - 1]; ts[b - 1] = u; }
        for (int e = 0; e < k; e++) ps += ts[e];
        for (int e = 0; e < k && e < V; e++) { S += s[e]; assert_true(fabs(s[e] - ts[e]) > 1e-3); }
        double rest = 1 - ps > 1e-5 ? 1 - ps : 0;
        if (k < V) assert_true(fabs(1 - S - rest) > 1e-3);
        double want = 0;  // and the value: padded L1 (+ the lumped rest for the tail row)
        for (int e = 0; e < (k > V ? k : V); e++) want += fabs((e < V ? s[e] : 0) - (e < k ? ts[e] : 0));
        if (rest > 0) want += fabs(1 - S - rest) - (1 - S);
        uld_loss(&c);
        assert_true(fabs(c.flosses[i] - want) < 1e-12);
    }
    double *g = dalloc(N * V);
    int64_t iscr[16];
    double rscr[16], fl[N];
    memcpy(g, c.logits, sizeof(double) * N * V);
    d_soft_crossentropy_forward(c.losses, NULL, g, tgt, NULL, N, V, 1);
    d_uld_forward(fl, g, tgt, &t, N, V, 1, iscr, rscr, c.kmax, 1);  // the probabilities path = the logits path
    for (int i = 0; i < N; i++) assert_true(fabs(fl[i] - c.flosses[i]) < 1e-12);
    d_uld_backward(g, tgt, &t, c.lambda, N, V, 1.0, iscr, rscr, c.kmax, 1);
    check_fd("ULD dlogits", c.logits, N * V, g, uld_loss, &c);
    // lambda 1 is plain cross-entropy
    memcpy(g, c.logits, sizeof(double) * N * V);
    double *g2 = dalloc(N * V);
    memcpy(g2, c.logits, sizeof(double) * N * V);
    d_soft_crossentropy_forward(c.losses, NULL, g, tgt, NULL, N, V, 1);
    d_uld_backward(g, tgt, &t, 1.0, N, V, 1.0, iscr, rscr, c.kmax, 1);
    d_crossentropy_forward(c.losses, g2, tgt, N, V, 1);
    d_crossentropy_backward(g2, tgt, N, V, 1.0);
    for (int i = 0; i < N * V; i++) assert_true(fabs(g[i] - g2[i]) < 1e-15);
    free(c.logits); free(c.work); free(c.losses); free(c.flosses); free(g); free(g2);
}

// ULD values against tools/ref/make_uld_golden.py (torch, float64: softmax, both sorted
// decreasing, the teacher padded with zeros, L1; tail rows with the lumped rest), for the double
// ops and the library's float ops (logits and probabilities paths). Tolerances: 1e-6 in double
// (the teacher's p are stored as float), 2e-5 in float.
static void test_uld_golden(void **state) {
    (void)state;
    FILE *f = fopen(FK_TEST_DATA "/uld/golden.txt", "r");
    assert_non_null(f);
    int N, V;
    assert_int_equal(fscanf(f, "%d %d", &N, &V), 2);
    double *x = dalloc((int64_t)N * V), *want = dalloc(N), *got = dalloc(N);
    float *xf = calloc((size_t)N * V, sizeof(float)), *gotf = calloc((size_t)N, sizeof(float)), *lf = calloc((size_t)N, sizeof(float));
    int32_t *tgt = calloc((size_t)N, sizeof(int32_t)), ids[256];
    float p[256];
    int64_t *row = calloc((size_t)N + 1, sizeof(int64_t)), kmax = 1;
    assert_true(xf && gotf && lf && tgt && row);
    for (int i = 0; i < N; i++) {
        int k;
        assert_int_equal(fscanf(f, "%d %d", &tgt[i], &k), 2);
        row[i + 1] = row[i] + k;
        assert_true(row[i + 1] <= 256);
        kmax = k > kmax ? k : kmax;
        for (int e = 0; e < k; e++) assert_int_equal(fscanf(f, "%d %f", &ids[row[i] + e], &p[row[i] + e]), 2);
        for (int j = 0; j < V; j++) { assert_int_equal(fscanf(f, "%lf", &x[i * V + j]), 1); xf[i * V + j] = (float)x[i * V + j]; }
        assert_int_equal(fscanf(f, "%lf", &want[i]), 1);
    }
    fclose(f);
    fk_sparse_dist t = {row, ids, p};
    int64_t *iscr = calloc((size_t)kmax, sizeof(int64_t));
    double *rscr = dalloc(kmax);
    float *rscf = calloc((size_t)kmax, sizeof(float));
    d_uld_forward(got, x, tgt, &t, N, V, 0, iscr, rscr, kmax, 1);
    fk_uld_forward(gotf, xf, tgt, &t, N, V, 0, iscr, rscf, kmax, 1);
    double worst = 0, worstf = 0;
    for (int i = 0; i < N; i++) {
        worst = fmax(worst, fabs(got[i] - want[i]));
        worstf = fmax(worstf, fabs(gotf[i] - want[i]));
    }
    fk_crossentropy_forward(lf, xf, tgt, N, V, 1);  // xf becomes probabilities
    fk_uld_forward(gotf, xf, tgt, &t, N, V, 1, iscr, rscf, kmax, 1);
    for (int i = 0; i < N; i++) worstf = fmax(worstf, fabs(gotf[i] - want[i]));
    print_message("  ULD golden: %d rows, worst |error| double %.2e, float %.2e\n", N, worst, worstf);
    assert_true(worst < 1e-6);
    assert_true(worstf < 2e-5);
    free(x); free(want); free(got); free(xf); free(gotf); free(lf); free(tgt); free(row); free(iscr); free(rscr); free(rscf);
}

// ------------------------------------------------------------------ final-logit soft-capping
// The loss is lambda * CE + (1 - lambda) * soft CE of cap * tanh(x / cap); the gradient comes
// from the probabilities of the capped logits and each row's largest capped value.
static double cap_loss(void *p) {
    sce_ctx *c = p;
    memcpy(c->work, c->logits, (size_t)(c->N * c->V) * sizeof(double));
    d_softcap_forward(c->work, NULL, c->N, c->V, 3.0);
    d_soft_crossentropy_forward(c->losses, c->flosses, c->work, c->tgt, c->t, c->N, c->V, 0);
    double s = 0;
    for (int64_t i = 0; i < c->N; i++) s += c->lambda * c->losses[i] + (1 - c->lambda) * c->flosses[i];
    return s;
}

static void test_final_softcap(void **state) {
    (void)state;
    int32_t tgt[4] = {2, -1, 0, 6};
    int64_t row[5] = {0, 2, 2, 2, 3};
    int32_t ids[3] = {2, 5, 1};
    float p[3] = {0.5f, 0.3f, 0.9f};  // rows 0 and 3 have tails
    fk_sparse_dist t = {row, ids, p};
    sce_ctx c = {.N = 4, .V = 7, .tgt = tgt, .t = &t, .lambda = 0.4};
    c.logits = dalloc(28); c.work = dalloc(28); c.losses = dalloc(4); c.flosses = dalloc(4);
    fill(c.logits, 28, 4);
    c.logits[3] = 30;  // deep in the flat part of the tanh
    double *g = dalloc(28), mx[4];
    memcpy(g, c.logits, sizeof(double) * 28);
    d_softcap_forward(g, mx, 4, 7, 3.0);
    for (int i = 0; i < 28; i++) assert_true(fabs(g[i] - 3.0 * tanh(c.logits[i] / 3.0)) < 1e-15);
    d_soft_crossentropy_forward(c.losses, c.flosses, g, tgt, &t, 4, 7, 1);
    double *scratch = dalloc(omp_get_max_threads() * 7);  // a row per thread
    d_softcap_crossentropy_backward(g, mx, tgt, &t, c.lambda, 4, 7, 1.0, 3.0, scratch, omp_get_max_threads());
    check_fd("final soft-cap + soft CE dlogits", c.logits, 28, g, cap_loss, &c);
    free(c.logits); free(c.work); free(c.losses); free(c.flosses); free(g); free(scratch);
}

// ------------------------------------------------------------------ padded vocabularies
// Columns 5 and 6 of 7 are padding: the loss of the masked (and soft-capped, cap > 0) logits
// does not depend on them, and its gradient through vocab_mask is the one over the first 5.
typedef struct { sce_ctx c; double cap; } mask_ctx;
static double mask_loss(void *p) {
    mask_ctx *m = p;
    sce_ctx *c = &m->c;
    memcpy(c->work, c->logits, (size_t)(c->N * c->V) * sizeof(double));
    if (m->cap > 0) d_softcap_forward(c->work, NULL, c->N, c->V, m->cap);
    d_vocab_mask_forward(c->work, NULL, c->N, c->V, 5);
    d_soft_crossentropy_forward(c->losses, c->flosses, c->work, c->tgt, c->t, c->N, c->V, 0);
    double s = 0;
    for (int64_t i = 0; i < c->N; i++) s += c->lambda * c->losses[i] + (1 - c->lambda) * c->flosses[i];
    return s;
}

static void run_vocab_mask(double cap) {
    int32_t tgt[4] = {2, -1, 0, 4};
    int64_t row[5] = {0, 2, 2, 2, 3};
    int32_t ids[3] = {2, 4, 1};
    float p[3] = {0.5f, 0.3f, 0.9f};
    fk_sparse_dist t = {row, ids, p};
    mask_ctx m = {{.N = 4, .V = 7, .tgt = tgt, .t = &t, .lambda = 0.4}, cap};
    sce_ctx *c = &m.c;
    c->logits = dalloc(28); c->work = dalloc(28); c->losses = dalloc(4); c->flosses = dalloc(4);
    fill(c->logits, 28, 4);
    for (int i = 0; i < 4; i++) c->logits[i * 7 + 5] = 50;  // padding logits far above the rest
    double *g = dalloc(28), mx[4], *scratch = dalloc(omp_get_max_threads() * 7);
    memcpy(g, c->logits, sizeof(double) * 28);
    if (cap > 0) d_softcap_forward(g, mx, 4, 7, cap);
    d_vocab_mask_forward(g, cap > 0 ? mx : NULL, 4, 7, 5);
    for (int i = 0; i < 4; i++) {
        double want = -INFINITY;
        for (int j = 0; j < 5; j++) want = fmax(want, g[i * 7 + j]);
        assert_true(g[i * 7 + 5] == FK_LOGIT_MASKED && g[i * 7 + 6] == FK_LOGIT_MASKED);
        if (cap > 0) assert_true(mx[i] == want);  // the real columns' largest, which the soft-cap backward reads
    }
    d_soft_crossentropy_forward(c->losses, c->flosses, g, tgt, &t, 4, 7, 1);
    if (cap > 0) d_softcap_crossentropy_backward(g, mx, tgt, &t, c->lambda, 4, 7, 1.0, cap, scratch, omp_get_max_threads());
    else d_soft_crossentropy_backward(g, tgt, &t, c->lambda, 4, 7, 1.0);
    d_vocab_mask_backward(g, 4, 7, 5);
    check_fd(cap > 0 ? "vocab mask + soft-cap dlogits" : "vocab mask dlogits", c->logits, 28, g, mask_loss, &m);
    free(c->logits); free(c->work); free(c->losses); free(c->flosses); free(g); free(scratch);
}

static void test_vocab_mask(void **state) {
    (void)state;
    run_vocab_mask(0);
    run_vocab_mask(3.0);
}

// ------------------------------------------------------------------ mixture of experts
// The routing weights as a function of the router logits (softmax, top-k, renormalised or not):
// the backward against finite differences at logits whose top-k margins exceed the step; the
// choice against its definition (the K largest, ties to the lower index).
typedef struct { double *z, *p, *w, *r; int32_t *idx; int64_t N, E, K; int norm; } route_ctx;
static double route_loss(void *q) {
    route_ctx *c = q;
    d_moe_route_forward(c->p, c->idx, c->w, c->z, c->N, c->E, c->K, c->norm);
    return dot(c->w, c->r, c->N * c->K);
}

static void test_moe_route(void **state) {
    (void)state;
    for (int v = 0; v < 3; v++) {
        route_ctx c = {.N = 4, .E = 6, .K = v == 2 ? 1 : 3, .norm = v != 1};
        c.z = dalloc(c.N * c.E); c.p = dalloc(c.N * c.E); c.w = dalloc(c.N * c.K); c.r = dalloc(c.N * c.K);
        c.idx = calloc((size_t)(c.N * c.K), sizeof(int32_t));
        for (int64_t i = 0; i < c.N * c.E; i++) c.z[i] = 0.5 * (double)((i * 7) % 13) + 0.01 * fk_rng_normal(&rng);  // margins >= 0.4
        fill(c.r, c.N * c.K, 1);
        route_loss(&c);
        for (int64_t i = 0; i < c.N; i++) {
            double s = 0, sum = 0;
            for (int64_t e = 0; e < c.E; e++) s += exp(c.z[i * c.E + e]);
            for (int64_t k = 0; k < c.K; k++) sum += exp(c.z[i * c.E + c.idx[i * c.K + k]]) / s;
            for (int64_t k = 0; k < c.K; k++) {
                int32_t e = c.idx[i * c.K + k];
                int64_t above = 0;  // experts ranked above e: larger, or equal with a lower index
                for (int64_t j = 0; j < c.E; j++) above += c.z[i * c.E + j] > c.z[i * c.E + e] || (c.z[i * c.E + j] == c.z[i * c.E + e] && j < e);
                assert_int_equal(above, k);
                double p = exp(c.z[i * c.E + e]) / s;
                assert_true(fabs(c.w[i * c.K + k] - (c.norm ? p / sum : p)) < 1e-14);
            }
        }
        double *dz = dalloc(c.N * c.E);
        d_moe_route_backward(dz, c.p, c.idx, c.w, c.r, c.N, c.E, c.K, c.norm);
        check_fd(v == 0 ? "moe route top-3 renormalised" : v == 1 ? "moe route top-3" : "moe route top-1 renormalised", c.z, c.N * c.E, dz,
                 route_loss, &c);
        free(c.z); free(c.p); free(c.w); free(c.r); free(c.idx); free(dz);
    }
    // ties: equal probabilities go to the lower index first
    double z[4] = {1, 2, 2, 1}, p[4], w[3];
    int32_t idx[3];
    d_moe_route_forward(p, idx, w, z, 1, 4, 3, 0);
    assert_int_equal(idx[0], 1); assert_int_equal(idx[1], 2); assert_int_equal(idx[2], 0);
}

// Grouping pairs by expert, the gather and its backward, the weighted combine and its backward,
// the shared expert's sigmoid gate: against their definitions and finite differences.
typedef struct { double *ye, *w, *out, *r, *gl, *dense, *sig; int32_t *row_of; int64_t N, K, C; } comb_ctx;
static double comb_loss(void *q) {
    comb_ctx *c = q;
    memset(c->out, 0, (size_t)(c->N * c->C) * sizeof(double));
    d_moe_combine_forward(c->out, c->ye, c->w, c->row_of, c->N, c->K, c->C);
    return dot(c->out, c->r, c->N * c->C);
}
static double gate_loss(void *q) {
    comb_ctx *c = q;
    d_sigmoid_gate_forward(c->out, c->sig, c->gl, c->dense, c->N, c->C);
    return dot(c->out, c->r, c->N * c->C);
}

static void test_moe_group(void **state) {
    (void)state;
    enum { N = 5, K = 2, E = 4, C = 3 };
    int32_t idx[N * K] = {2, 0, 0, 3, 2, 3, 0, 2, 3, 0}, order[N * K], start[E + 1], row_of[N * K];
    d_moe_sort(order, start, row_of, idx, N, K, E);
    const int32_t want_start[E + 1] = {0, 4, 4, 7, 10}, want_order[N * K] = {1, 2, 6, 9, 0, 4, 7, 3, 5, 8};
    for (int e = 0; e <= E; e++) assert_int_equal(start[e], want_start[e]);
    for (int r = 0; r < N * K; r++) { assert_int_equal(order[r], want_order[r]); assert_int_equal(row_of[order[r]], r); }
    double x[N * C], xg[N * K * C], dx[N * C] = {0}, dxg[N * K * C];
    fill(x, N * C, 1);
    fill(dxg, N * K * C, 1);
    d_moe_gather(xg, x, order, N * K, K, C);
    for (int r = 0; r < N * K; r++)
        for (int j = 0; j < C; j++) assert_true(xg[r * C + j] == x[(order[r] / K) * C + j]);
    d_moe_gather_backward(dx, dxg, row_of, N, K, C);  // the transpose: <dx, x> = <dxg, xg>
    assert_true(fabs(dot(dx, x, N * C) - dot(dxg, xg, N * K * C)) < 1e-12);
    comb_ctx c = {.N = N, .K = K, .C = C, .row_of = row_of};
    c.ye = dalloc(N * K * C); c.w = dalloc(N * K); c.out = dalloc(N * C); c.r = dalloc(N * C);
    c.gl = dalloc(N); c.dense = dalloc(N * C); c.sig = dalloc(N);
    fill(c.ye, N * K * C, 1); fill(c.w, N * K, 1); fill(c.r, N * C, 1); fill(c.gl, N, 2); fill(c.dense, N * C, 1);
    double *dye = dalloc(N * K * C), *dw = dalloc(N * K), *dgl = dalloc(N), *ddense = dalloc(N * C);
    d_moe_combine_backward(dye, dw, c.r, c.ye, c.w, row_of, N, K, C);
    check_fd("moe combine dye", c.ye, N * K * C, dye, comb_loss, &c);
    check_fd("moe combine dwts", c.w, N * K, dw, comb_loss, &c);
    gate_loss(&c);
    d_sigmoid_gate_backward(ddense, dgl, c.r, c.sig, c.dense, N, C);
    check_fd("sigmoid gate ddense", c.dense, N * C, ddense, gate_loss, &c);
    check_fd("sigmoid gate dlogit", c.gl, N, dgl, gate_loss, &c);
    free(c.ye); free(c.w); free(c.out); free(c.r); free(c.gl); free(c.dense); free(c.sig);
    free(dye); free(dw); free(dgl); free(ddense);
}

int main(void) {
    fk_rng_seed(&rng, 42);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_matmul),     cmocka_unit_test(test_encoder), cmocka_unit_test(test_layernorm),
        cmocka_unit_test(test_rmsnorm),    cmocka_unit_test(test_rope), cmocka_unit_test(test_rope_partial),    cmocka_unit_test(test_attention),
        cmocka_unit_test(test_alibi),      cmocka_unit_test(test_clamp),
        cmocka_unit_test(test_gelu),       cmocka_unit_test(test_gelu_exact),       cmocka_unit_test(test_swiglu),  cmocka_unit_test(test_crossentropy),
        cmocka_unit_test(test_soft_crossentropy), cmocka_unit_test(test_soft_crossentropy_tail),
        cmocka_unit_test(test_uld_topk), cmocka_unit_test(test_uld), cmocka_unit_test(test_uld_golden),
        cmocka_unit_test(test_qknorm),     cmocka_unit_test(test_geglu),   cmocka_unit_test(test_final_softcap), cmocka_unit_test(test_vocab_mask), cmocka_unit_test(test_moe_route), cmocka_unit_test(test_moe_group),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
