// Model-level tests: golden logits, loss, gradients and five AdamW steps from the
// independent PyTorch/transformers reference (tools/ref/make_golden.py, files under
// tests/data/golden/), whole-model finite-difference checks, and overfitting one batch.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fusekit/fusekit.h"
#include "test_util.h"

// Tolerances (tools/ref/README.md measured the float32 noise of the reference itself against
// float64: logits 1e-6, loss 1e-7 relative, gradients 1e-6 of the tensor's largest value).
#define TOL_LOGITS 1e-4
#define TOL_LOSS_REL 1e-5
#define TOL_GRAD_ABS 1e-6
#define TOL_GRAD_REL 1e-4   // of the tensor's largest |g|
#define TOL_TRAIN_LOSS 1e-4
#define TOL_FINAL 2e-4
// A finite difference that moved a top-k choice: its values at h and h/2 disagree by more than this
// (relative to their size, plus an absolute floor above the float32 loss's noise over h).
#define MOE_FLIP_REL 0.05
#define MOE_FLIP_ABS 2e-3

typedef struct { fk_model m; fk_safetensors gold; int B, T; int32_t *x, *y; fk_arch arch; } golden;

// The family whose HF tensor names the folder's files use: its config.json's model_type, which may
// differ from the one fusekit saves the config as (falcon_seq: read as falcon, saved as starcoder2).
static fk_arch folder_arch(const fk_model *m, const char *dir) {
    char type[64];
    CHECK(fk_hf_model_type(dir, type, sizeof type));
    for (int a = 0; a <= FK_ARCH_OLMOE; a++)
        if (strcmp(fk_arch_name((fk_arch)a), type) == 0) return (fk_arch)a;
    return fk_config_arch(&m->cfg);
}

static void golden_open(golden *g, const char *name) {
    char dir[512], path[600];
    snprintf(dir, sizeof dir, "%s/golden/%s", FK_TEST_DATA, name);
    CHECK(fk_hf_load(&g->m, dir));
    g->arch = folder_arch(&g->m, dir);
    snprintf(path, sizeof path, "%s/golden.safetensors", dir);
    CHECK(fk_st_open(&g->gold, path));
    const fk_st_tensor *tok = fk_st_find(&g->gold, "tokens");
    assert_non_null(tok);
    assert_int_equal(tok->dtype, FK_DT_I32);
    g->B = (int)tok->shape[0];
    g->T = (int)tok->shape[1] - 1;
    g->x = malloc((size_t)(g->B * g->T) * sizeof(int32_t));
    g->y = malloc((size_t)(g->B * g->T) * sizeof(int32_t));
    const int32_t *t = tok->data;
    for (int b = 0; b < g->B; b++)
        for (int i = 0; i < g->T; i++) {
            g->x[b * g->T + i] = t[b * (g->T + 1) + i];
            g->y[b * g->T + i] = t[b * (g->T + 1) + i + 1];
        }
}

static void golden_close(golden *g) {
    free(g->x); free(g->y);
    fk_st_close(&g->gold);
    fk_model_free(&g->m);
}

static const float *gold_f32(golden *g, const char *name, int64_t numel) {
    const fk_st_tensor *t = fk_st_find(&g->gold, name);
    if (!t) fail_msg("golden tensor %s missing", name);
    assert_int_equal(t->dtype, FK_DT_F32);
    assert_int_equal(t->numel, numel);
    return t->data;
}

// 1 where the true gradient is exactly zero: the key bias's dims RoPE does not turn (all of them with
// learned positions (GPT-2) or ALiBi) add a constant to each query's scores, which softmax ignores,
// unless a norm follows the projection (QK-norm). After AdamW steps such values are float noise on
// both sides (make_golden.py reports them apart), so final values skip them.
static float *zero_grad_mask(const fk_model *m) {
    const fk_config *c = &m->cfg;
    float *mask = calloc((size_t)m->n_floats, sizeof(float));
    int64_t hd = c->head_dim, turned = c->pos == FK_POS_ROPE ? fk_config_rotary_dim(c) : 0;
    for (int i = 0; i < m->n_params && !c->qk_norm && !c->qk_norm_whole; i++) {
        const fk_param *p = &m->params[i];
        if (p->kind != FK_P_QKV_B) continue;
        float *k = mask + p->offset + fk_config_heads(c, p->layer) * hd;  // the bias's key rows
        for (int64_t h = 0; h < c->n_kv_head; h++)
            for (int64_t d = turned; d < hd; d++) k[h * hd + d] = 1;
    }
    return mask;
}

// Compares every HF tensor of an arena (gradients or weights) with "<prefix><hf name>", skipping the
// elements where `skip` (an arena, or NULL) is 1.
static void compare_arena(golden *g, const float *arena, const char *prefix, double tol_abs, double tol_rel, const float *skip) {
    fk_hf_tensor *ts;
    int n;
    CHECK(fk_hf_tensors(&g->m, g->arch, &ts, &n));
    double worst = 0;
    int64_t skipped = 0;
    for (int i = 0; i < n; i++) {
        int64_t numel = ts[i].ndim == 1 ? ts[i].shape[0] : ts[i].shape[0] * ts[i].shape[1];
        char name[160];
        snprintf(name, sizeof name, "%s%s", prefix, ts[i].name);
        const float *want = gold_f32(g, name, numel);
        float *got = malloc((size_t)numel * sizeof(float)), *off = calloc((size_t)numel, sizeof(float));
        fk_hf_gather(&g->m, arena, &ts[i], got);
        if (skip) fk_hf_gather(&g->m, skip, &ts[i], off);
        double mx = 0;
        for (int64_t j = 0; j < numel; j++) mx = fmax(mx, fabs(want[j]));
        for (int64_t j = 0; j < numel; j++) {
            if (off[j] != 0) { skipped++; continue; }
            double err = fabs((double)got[j] - want[j]);
            worst = fmax(worst, err / (tol_abs + tol_rel * mx));
            if (err > tol_abs + tol_rel * mx)
                fail_msg("%s[%lld]: fusekit %.8g, reference %.8g (max |ref| %.3g)", name, (long long)j, got[j], want[j], mx);
        }
        free(got);
        free(off);
    }
    print_message("  %s: %d tensors within tolerance (worst at %.2f of it; %lld zero-gradient values skipped)\n", prefix, n, worst,
                  (long long)skipped);
    free(ts);
}

static void run_golden(const char *name) {
    golden g = {0};
    golden_open(&g, name);
    fk_model *m = &g.m;
    int64_t N = (int64_t)g.B * g.T, V = m->cfg.vocab_size;
    // logits (inference path)
    float loss;
    CHECK(fk_model_forward(m, g.x, g.y, g.B, g.T, false, &loss));
    const float *logits = fk_model_logits(m), *want = gold_f32(&g, "logits", N * V);
    double max_err = 0;
    for (int64_t i = 0; i < N * V; i++) max_err = fmax(max_err, fabs((double)logits[i] - want[i]));
    print_message("  %s: logits max abs error %.2e, loss %.7f vs %.7f\n", name, max_err, loss, gold_f32(&g, "loss", 1)[0]);
    assert_true(max_err < TOL_LOGITS);
    float ref_loss = gold_f32(&g, "loss", 1)[0];
    assert_true(fabs(loss - ref_loss) < TOL_LOSS_REL * fabs(ref_loss));
    // the same computation with a KV cache, token by token, gives the same logits at every
    // position (Gemma 2/3: past the sliding window), for both sequences of the batch
    float *step_logits = malloc((size_t)V * sizeof(float));
    double step_err = 0;
    for (int b = 0; b < g.B; b++)
        for (int i = 0; i < g.T; i++) {
            CHECK(fk_model_step(m, &g.x[b * g.T + i], 1, i, step_logits));
            for (int64_t v = 0; v < V; v++) step_err = fmax(step_err, fabs(step_logits[v] - want[((int64_t)b * g.T + i) * V + v]));
        }
    // and a prompt of several tokens at once, then one more
    CHECK(fk_model_step(m, g.x, g.T - 1, 0, step_logits));
    for (int64_t v = 0; v < V; v++) step_err = fmax(step_err, fabs(step_logits[v] - want[(int64_t)(g.T - 2) * V + v]));
    CHECK(fk_model_step(m, &g.x[g.T - 1], 1, g.T - 1, step_logits));
    for (int64_t v = 0; v < V; v++) step_err = fmax(step_err, fabs(step_logits[v] - want[(int64_t)(g.T - 1) * V + v]));
    print_message("  %s: KV-cache steps vs reference logits, max abs error %.2e\n", name, step_err);
    assert_true(step_err < TOL_LOGITS);
    free(step_logits);
    // gradients (training path)
    CHECK(fk_model_alloc_grads(m));
    fk_model_zero_grads(m);
    CHECK(fk_model_forward(m, g.x, g.y, g.B, g.T, true, &loss));
    assert_true(fabs(loss - ref_loss) < TOL_LOSS_REL * fabs(ref_loss));
    CHECK(fk_model_backward(m, 1.0f));
    compare_arena(&g, m->g, "grad.", TOL_GRAD_ABS, TOL_GRAD_REL, NULL);
    // five AdamW steps, lr 1e-3, betas (0.9, 0.95), wd 0.1 on matrices, clip 1.0
    fk_optim_opts oo;
    fk_optim_defaults(&oo);
    oo.lr = 1e-3f;
    fk_adamw opt;
    CHECK(fk_adamw_init(&opt, m, &oo));
    const float *losses = gold_f32(&g, "train_losses", 5), *norms = gold_f32(&g, "train_grad_norms", 5);
    for (int s = 0; s < 5; s++) {
        fk_model_zero_grads(m);
        CHECK(fk_model_forward(m, g.x, g.y, g.B, g.T, true, &loss));
        CHECK(fk_model_backward(m, 1.0f));
        double gn = fk_grad_norm(m);
        assert_true(fabs(loss - losses[s]) < TOL_TRAIN_LOSS);
        assert_true(fabs(gn - norms[s]) < 1e-4 * norms[s]);
        fk_adamw_update(&opt, m, 1e-3f, (float)fmin(1.0, 1.0 / (gn + 1e-6)));
    }
    float *zero = zero_grad_mask(m);
    compare_arena(&g, m->w, "final.", TOL_FINAL, 0, zero);
    free(zero);
    fk_adamw_free(&opt);
    golden_close(&g);
}

static void test_golden_gpt2(void **s) { (void)s; run_golden("gpt2"); }
static void test_golden_llama(void **s) { (void)s; run_golden("llama"); }
static void test_golden_qwen2(void **s) { (void)s; run_golden("qwen2"); }
// The Gemma family (tools/ref/make_gemma_golden.py): head_dim != d/H, GQA, sliding and global
// layers with windows shorter than the sequence, soft-capping (gemma2), QK-norm, local RoPE base
// and linear RoPE scaling (gemma3), random (1 + w) norm weights.
static void test_golden_gemma(void **s) { (void)s; run_golden("gemma"); }
static void test_golden_gemma2(void **s) { (void)s; run_golden("gemma2"); }
static void test_golden_gemma3(void **s) { (void)s; run_golden("gemma3"); }
// MPT (tools/ref/make_golden.py, MptForCausalLM): ALiBi over 6 heads (MPT's slopes for a head
// count that is not a power of two) with clip_qkv 0.5; 8 heads, softmax_scale 0.3, an untied head.
static void test_golden_mpt(void **s) { (void)s; run_golden("mpt"); }
static void test_golden_mpt_8h(void **s) { (void)s; run_golden("mpt_8h"); }
// The families added since, each the forward folder's model class and switches at width 16
// (make_golden.py's GRAD_OF): <folder>_grad. The golden's name is the test's state.
static void test_golden_named(void **s) { run_golden(*s); }
#define GOLDEN_TEST(name) {"test_golden_" name, test_golden_named, NULL, NULL, (void *)name}

// ------------------------------------------------------------------ finite differences, whole model
// float32 model: central differences with h (1e-2) and h/2, extrapolated, on a model with
// large weights, compared per tensor as a relative vector error over sampled elements.
// With experts, an element whose step moves a top-k choice is skipped: the loss jumps there (the
// choice has no gradient), seen as differences at h and h/2 that disagree (moe_flips counts them).
static int64_t moe_flips, moe_checked;
static void whole_model_fd_h(fk_config *c, const fk_sparse_dist *teacher, float lambda, float h) {
    fk_model m;
    CHECK(fk_model_init(&m, c));
    fk_rng r;
    fk_rng_seed(&r, 7);
    for (int64_t i = 0; i < m.n_floats; i++) m.w[i] = 0.3f * fk_rng_normal(&r);
    for (int i = 0; i < m.n_params; i++) {
        fk_param_kind k = m.params[i].kind;
        if (k == FK_P_LN1_W || k == FK_P_LN2_W || k == FK_P_LNF_W || k == FK_P_ATTN_POST_W || k == FK_P_FFN_POST_W ||
            k == FK_P_Q_NORM_W || k == FK_P_K_NORM_W)
            for (int64_t j = 0; j < m.params[i].numel; j++) m.w[m.params[i].offset + j] += 1.0f - c->norm_offset;
    }
    int B = 2, T = 9;
    int32_t x[18], y[18];
    for (int i = 0; i < B * T; i++) { x[i] = (int32_t)fk_rng_below(&r, (uint64_t)c->vocab_size); y[i] = (int32_t)fk_rng_below(&r, (uint64_t)c->vocab_size); }
    y[5] = -1;  // an ignored position
    CHECK(fk_model_alloc_grads(&m));
    fk_model_zero_grads(&m);
    float loss;
    CHECK(fk_model_forward_soft(&m, x, y, teacher, lambda, B, T, true, &loss, NULL));
    CHECK(fk_model_backward(&m, 1.0f));
    for (int i = 0; i < m.n_params; i++) {
        const fk_param *p = &m.params[i];
        double num2 = 0, err2 = 0;
        int64_t stride = p->numel > 40 ? p->numel / 40 : 1;
        for (int64_t j = 0; j < p->numel; j += stride) {
            // central differences at h and h/2, extrapolated (Richardson) to cancel the h^2 term:
            // the post-norms of Gemma 2/3 curve the loss enough for that term to show at h = 1e-2
            float *w = &m.w[p->offset + j], old = *w, lp, lm, lp2, lm2;
            *w = old + h; CHECK(fk_model_forward_soft(&m, x, y, teacher, lambda, B, T, false, &lp, NULL));
            *w = old - h; CHECK(fk_model_forward_soft(&m, x, y, teacher, lambda, B, T, false, &lm, NULL));
            *w = old + h / 2; CHECK(fk_model_forward_soft(&m, x, y, teacher, lambda, B, T, false, &lp2, NULL));
            *w = old - h / 2; CHECK(fk_model_forward_soft(&m, x, y, teacher, lambda, B, T, false, &lm2, NULL));
            *w = old;
            double d1 = ((double)lp - lm) / (2.0 * h), d2 = ((double)lp2 - lm2) / (double)h;
            if (c->n_expert > 0) {
                moe_checked++;
                if (fabs(d1 - d2) > MOE_FLIP_REL * (fabs(d1) + fabs(d2)) + MOE_FLIP_ABS) { moe_flips++; continue; }
            }
            double num = (4 * d2 - d1) / 3, an = m.g[p->offset + j];
            num2 += num * num;
            err2 += (num - an) * (num - an);
        }
        double rel = sqrt(err2) / (sqrt(num2) + 1e-4);
        if (rel > 2e-2) fail_msg("%s: relative gradient error %.3g (|g| %.3g)", p->name, rel, sqrt(num2));
    }
    fk_model_free(&m);
}

static void whole_model_fd_soft(fk_config *c, const fk_sparse_dist *teacher, float lambda) { whole_model_fd_h(c, teacher, lambda, 1e-2f); }
static void whole_model_fd(fk_config *c) { whole_model_fd_soft(c, NULL, 1.0f); }

// The fusion loss through the whole model: a sparse teacher on every position but two (an
// empty row counts as a one-hot on the label), lambda 0.25.
static void test_fd_llama_fusion(void **s) {
    (void)s;
    fk_config c;
    fk_config_llama(&c, 11, 8, 2, 4, 2, 12, 16);
    int64_t row[19];
    int32_t ids[18 * 3];
    float p[18 * 3];
    int64_t n = 0;
    for (int i = 0; i < 18; i++) {
        row[i] = n;
        if (i == 3 || i == 11) continue;
        int k = 1 + i % 3;
        float z = 0;
        for (int e = 0; e < k; e++) { ids[n + e] = (int32_t)((i * 7 + e * 3) % 11); p[n + e] = 1.0f + (float)e; z += p[n + e]; }
        for (int e = 0; e < k; e++) p[n + e] /= z;
        n += k;
    }
    row[18] = n;
    fk_sparse_dist t = {row, ids, p};
    whole_model_fd_soft(&c, &t, 0.25f);
}

// A tiny Gemma: GeGLU, embedding scale, (1 + w) norms, head_dim 6 != 8/4, GQA 4/2, tied.
static void gemma_tiny(fk_config *c) {
    fk_config_llama(c, 11, 8, 3, 4, 2, 12, 16);
    c->head_dim = 6;
    c->mlp = FK_MLP_GEGLU;
    c->emb_scale = sqrtf(8.0f);
    c->norm_offset = 1;
    c->norm_eps = 1e-6f;
    c->tied = true;
}

// Gemma 2: post-norms, attention scale, both soft-caps (small, so the tanh bends), layers 0 and
// 2 slide with a window of 4 < T = 9.
static void test_fd_gemma2(void **s) {
    (void)s;
    fk_config c;
    gemma_tiny(&c);
    c.post_norms = true;
    c.attn_scale = 0.3f;
    c.attn_softcap = 1.5f;
    c.final_softcap = 2.0f;
    c.sliding_window = 4;
    c.sliding[0] = c.sliding[2] = 1;
    whole_model_fd(&c);
    // and through the fusion loss (the soft-capped logits' backward with teacher rows)
    int64_t row[19];
    int32_t ids[18 * 2];
    float p[18 * 2];
    int64_t n = 0;
    for (int i = 0; i < 18; i++) {
        row[i] = n;
        if (i % 5 == 0) continue;
        ids[n] = (int32_t)(i % 11); p[n++] = 0.6f;
        ids[n] = (int32_t)((i * 3 + 1) % 11); p[n++] = 0.3f;  // mass 0.9: a tail class
    }
    row[18] = n;
    fk_sparse_dist t = {row, ids, p};
    whole_model_fd_soft(&c, &t, 0.5f);
}

// Gemma 3: QK-norm, a local RoPE base on the sliding layers (0 and 1, window 3) and linear
// scaling 4 on the global one, per-layer FFN widths and query heads as folded models have.
static void test_fd_gemma3(void **s) {
    (void)s;
    fk_config c;
    gemma_tiny(&c);
    c.post_norms = true;
    c.qk_norm = true;
    c.attn_scale = 0.25f;
    c.sliding_window = 3;
    c.sliding[0] = c.sliding[1] = 1;
    c.rope_theta = 1e6f;
    c.rope_theta_local = 1e4f;
    c.rope_scale = 4;
    c.ffn[1] = 7;
    c.heads[2] = 2;
    c.tied = false;
    whole_model_fd_h(&c, NULL, 1.0f, 2e-3f);  // QK-norm over 6 values curves the loss: a smaller step
}

static void test_fd_gpt2(void **s) {
    (void)s;
    fk_config c;
    fk_config_gpt2(&c, 11, 8, 2, 2, 16);
    whole_model_fd(&c);
}

// exact GELU (transformers' "gelu")
static void test_fd_gpt2_gelu_exact(void **s) {
    (void)s;
    fk_config c;
    fk_config_gpt2(&c, 11, 8, 2, 2, 16);
    c.gelu_exact = true;
    whole_model_fd(&c);
}

static void test_fd_llama(void **s) {
    (void)s;
    fk_config c;
    fk_config_llama(&c, 11, 8, 2, 4, 2, 12, 16);
    c.ffn[1] = 7;    // per-layer FFN width, as folded models have
    c.heads[1] = 2;  // and per-layer query heads (one per KV group)
    c.bias_qkv = true;
    whole_model_fd(&c);
}

// Qwen3: QK-norm with the plain RMSNorm weight (norm_offset 0), head_dim 4 != 8 / 4 heads
// MPT: ALiBi over 6 heads, q/k/v clamped to [-0.8, 0.8] (a part of them is), no biases, exact GELU
static void test_fd_mpt(void **s) {
    (void)s;
    fk_config c;
    fk_config_gpt2(&c, 11, 12, 2, 6, 16);
    c.pos = FK_POS_NONE;
    c.alibi_bias_max = 8;
    c.clip_qkv = 0.8f;
    c.bias_qkv = c.bias_out = c.bias_mlp = c.bias_norm = false;
    c.gelu_exact = true;
    whole_model_fd_h(&c, NULL, 1.0f, 2e-3f);  // a small step seldom moves a value across the clamp's edges
}

static void test_fd_qwen3(void **s) {
    (void)s;
    fk_config c;
    fk_config_llama(&c, 11, 8, 2, 4, 2, 12, 16);
    c.qk_norm = true;
    c.head_dim = 4;
    c.rope_theta = 1e6f;
    whole_model_fd_h(&c, NULL, 1.0f, 2e-3f);  // QK-norm over 4 values curves the loss: a smaller step
}

// StarCoder2: LayerNorm with bias, RoPE, a GELU (tanh) MLP, biases on every linear map, GQA 4/2,
// a window of 4 < T = 9 on every layer (Mistral's and Phi-3's windows are the same mask)
static void test_fd_starcoder2(void **s) {
    (void)s;
    fk_config c;
    fk_config_llama(&c, 11, 8, 2, 4, 2, 12, 16);
    c.norm = FK_NORM_LAYERNORM;
    c.mlp = FK_MLP_GELU;
    c.bias_qkv = c.bias_out = c.bias_mlp = c.bias_norm = true;
    c.sliding_window = 4;
    c.sliding[0] = c.sliding[1] = 1;
    whole_model_fd(&c);
}

// Partial rotary (GPT-NeoX, Phi-2, StableLM): 2 of head_dim 4 rotated, with GQA and per-layer
// heads; gradients by finite differences and KV-cache steps against the full forward.
static void check_steps_match_forward(const fk_config *c);
static void test_fd_partial_rotary(void **s) {
    (void)s;
    fk_config c;
    fk_config_llama(&c, 11, 8, 2, 2, 1, 12, 16);
    c.rotary_dim = 2;
    c.heads[1] = 1;
    whole_model_fd(&c);
    check_steps_match_forward(&c);
}

// KV-cache steps (one token, then a block of 3) give the full forward's logits, within 1e-5.
static void check_steps_match_forward(const fk_config *c) {
    fk_model m;
    CHECK(fk_model_init(&m, c));
    fk_model_init_weights(&m, 5);
    for (int64_t i = 0; i < m.n_floats; i++) m.w[i] += 0.05f * (float)((i * 37) % 11 - 5);  // biases and norms not trivial
    int32_t x[7] = {1, 4, 9, 2, 7, 3, 10};
    CHECK(fk_model_forward(&m, x, NULL, 1, 7, false, NULL));
    const float *want = fk_model_logits(&m);
    float lg[64];
    assert_true(c->vocab_size <= 64);
    double err = 0;
    for (int i = 0; i < 4; i++) {
        CHECK(fk_model_step(&m, &x[i], 1, i, lg));
        for (int64_t v = 0; v < c->vocab_size; v++) err = fmax(err, fabs(lg[v] - want[i * c->vocab_size + v]));
    }
    CHECK(fk_model_step(&m, &x[4], 3, 4, lg));
    for (int64_t v = 0; v < c->vocab_size; v++) err = fmax(err, fabs(lg[v] - want[6 * c->vocab_size + v]));
    assert_true(err < 1e-5);
    fk_model_free(&m);
}

// Parallel attention and MLP (GPT-NeoX use_parallel_residual: two norms; Phi-2: one shared
// norm), with an LM-head bias (Phi-2): gradients by finite differences, KV-cache steps.
static void test_fd_parallel(void **s) {
    (void)s;
    for (int shared = 0; shared < 2; shared++) {
        fk_config c;
        cfg_parallel(&c, 11, 8, shared);
        c.tied = !shared;
        whole_model_fd(&c);
        check_steps_match_forward(&c);
        c.bias_lm_head = !shared;  // the LM-head bias on a sequential model too
        c.residual = FK_RESID_SEQUENTIAL;
        c.tied = false;
        whole_model_fd(&c);
    }
}

// OLMo 2: no pre-norms, post-norms on both branches, QK-norm over the whole q and k projections;
// multi-head (4 KV heads) and grouped (2: k normed over its 2 x 2 values, q over 4 x 2).
static void test_fd_olmo2(void **s) {
    (void)s;
    for (int64_t kv = 4; kv >= 2; kv -= 2) {
        fk_config c;
        fk_config_llama(&c, 11, 8, 2, 4, kv, 12, 16);
        c.post_norms = c.qk_norm = c.qk_norm_whole = c.no_pre_norms = true;
        whole_model_fd_h(&c, NULL, 1.0f, 2e-3f);  // the norms curve the loss: a smaller step
        check_steps_match_forward(&c);
    }
}

// StableLM 2 12B: QK-norm as a LayerNorm (no bias) over each of 4 query and 2 key heads of 4 dims, each
// head its own weights, with StableLM's LayerNorm, partial rotary and q/k/v biases; parallel from one
// norm (12B's use_parallel_residual) and sequential. KV-cache steps against the full forward (1e-5).
static void test_fd_stablelm_qkln(void **s) {
    (void)s;
    for (int k = 0; k < 2; k++) {
        fk_config c;
        fk_config_llama(&c, 11, 16, 2, 4, 2, 12, 16);
        c.norm = FK_NORM_LAYERNORM;
        c.bias_norm = c.bias_qkv = c.qk_norm = c.qk_norm_ln = true;
        c.rotary_dim = 2;
        c.residual = k ? FK_RESID_PARALLEL_SHARED : FK_RESID_SEQUENTIAL;
        whole_model_fd_h(&c, NULL, 1.0f, 2e-3f);  // the norms over 4 values curve the loss: a smaller step
        check_steps_match_forward(&c);
    }
}

// The training forward's per-token losses equal an inference forward's (another slot layout of
// the same computation), exactly.
static void check_train_matches_eval(const fk_config *c) {
    fk_model m;
    CHECK(fk_model_init(&m, c));
    fk_model_init_weights(&m, 9);
    for (int64_t i = 0; i < m.n_floats; i++) m.w[i] += 0.05f * (float)((i * 37) % 11 - 5);
    int32_t x[14] = {1, 4, 9, 2, 7, 3, 10, 5, 0, 8, 6, 1, 2, 3}, y[14] = {4, 9, 2, 7, 3, 10, 5, 0, 8, 6, 1, 2, 3, 4};
    float lt, le, tl[14];
    CHECK(fk_model_forward(&m, x, y, 2, 7, true, &lt));
    memcpy(tl, fk_model_token_losses(&m), sizeof tl);
    CHECK(fk_model_forward(&m, x, y, 2, 7, false, &le));
    for (int i = 0; i < 14; i++) assert_true(tl[i] == fk_model_token_losses(&m)[i]);
    assert_true(lt == le);
    fk_model_free(&m);
}

// Mixture of experts: gradients of experts, routers and shared gates by finite differences (a
// step that moves a top-k choice skipped, at most 1 in 8), KV-cache steps against the full
// forward (1e-5), the training forward against an inference forward. Mixtral-like (SwiGLU, top-2 of
// 4 renormalised, no dense FFN), Qwen2-MoE-like (a dense layer between MoE layers, top-1 and top-2
// unnormalised, shared expert behind its gate), GELU experts with a layer of fewer experts.
static void test_fd_moe(void **s) {
    (void)s;
    const int kinds[4] = {CFG_MOE_MIXTRAL, CFG_MOE_QWEN2, CFG_MOE_QWEN2, CFG_MOE_GELU}, ks[4] = {2, 1, 2, 2};
    for (int i = 0; i < 4; i++) {
        fk_config c;
        cfg_moe(&c, kinds[i], 11, 8, 6, ks[i]);
        moe_flips = moe_checked = 0;
        whole_model_fd(&c);
        print_message("  MoE kind %d top-%d: %lld of %lld differences skipped (a choice moved)\n", kinds[i], ks[i],
                      (long long)moe_flips, (long long)moe_checked);
        assert_true(moe_flips * 8 <= moe_checked);
        check_steps_match_forward(&c);
        check_train_matches_eval(&c);
    }
}

// ------------------------------------------------------------------ overfit one batch
static void overfit(fk_config *c) {
    fk_model m;
    CHECK(fk_model_init(&m, c));
    fk_model_init_weights(&m, 3);
    fk_optim_opts oo;
    fk_optim_defaults(&oo);
    oo.lr = 3e-3f;
    oo.weight_decay = 0;
    fk_adamw opt;
    CHECK(fk_adamw_init(&opt, &m, &oo));
    fk_rng r;
    fk_rng_seed(&r, 11);
    int B = 4, T = 32;
    int32_t x[128], y[128];
    for (int i = 0; i < B * T; i++) { x[i] = (int32_t)fk_rng_below(&r, 64); y[i] = (int32_t)fk_rng_below(&r, 64); }
    float loss = 0, first = 0, best = INFINITY;
    CHECK(fk_model_alloc_grads(&m));
    for (int s = 0; s < 300; s++) {
        fk_model_zero_grads(&m);
        CHECK(fk_model_forward(&m, x, y, B, T, true, &loss));
        if (s == 0) first = loss;
        best = fminf(best, loss);
        CHECK(fk_model_backward(&m, 1.0f));
        double gn = fk_grad_norm(&m);
        fk_adamw_update(&opt, &m, oo.lr, gn > 1 ? (float)(1 / gn) : 1.0f);
    }
    print_message("  overfit: loss %.3f -> %.4f\n", first, loss);
    // the memory estimate `fusekit info` prints is what a training step really holds
    assert_int_equal(fk_model_memory_bytes(&m), 2 * (size_t)m.n_floats * sizeof(float) + fk_model_activation_bytes(&m, B, T, true));
    assert_true(first > 3.5f);   // ~ln 64 at the start
    // random targets memorised; with experts, the best step's loss: a top-k choice moving late in the
    // run makes the loss jump for a step (it is discontinuous in the weights), as seen with 2 threads
    assert_true((c->n_expert > 0 ? best : loss) < 0.05f);
    fk_adamw_free(&opt);
    fk_model_free(&m);
}

// llama.cpp's llama-perplexity protocol, against an independent computation: every chunk run
// token by token through the KV cache (another code path), BOS in place of its first token,
// the negative log-softmax of the positions n_ctx/2 .. n_ctx-2 summed in double.
static void check_llama_ppl(fk_model *m, const int32_t *ids, int64_t n, int n_ctx, int32_t bos) {
    fk_eval_result r;
    CHECK(fk_eval_llama_ppl(m, ids, n, n_ctx, bos, 2, n * 3, &r));
    int64_t V = m->cfg.vocab_size, chunks = n / n_ctx, count = 0;
    float *lg = malloc(sizeof(float) * (size_t)V);
    double nll = 0;
    for (int64_t c = 0; c < chunks; c++) {
        const int32_t *t = ids + c * n_ctx;
        for (int p = 0; p < n_ctx - 1; p++) {
            int32_t tok = p == 0 && bos >= 0 ? bos : t[p];
            CHECK(fk_model_step(m, &tok, 1, p, lg));
            if (p < n_ctx / 2) continue;
            double mx = lg[0], sum = 0;
            for (int64_t v = 1; v < V; v++) mx = fmax(mx, lg[v]);
            for (int64_t v = 0; v < V; v++) sum += exp((double)lg[v] - mx);
            nll += mx + log(sum) - lg[t[p + 1]];
            count++;
        }
    }
    free(lg);
    assert_int_equal(r.tokens, count);
    assert_int_equal(count, chunks * (n_ctx - 1 - n_ctx / 2));
    assert_true(fabs(r.loss - nll / (double)count) < 2e-5);
    assert_true(fabs(r.bpb - nll / (double)count / log(2.0) / 3.0) < 2e-5);
}

static void test_llama_ppl_protocol(void **s) {
    (void)s;
    fk_config c;
    fk_config_llama(&c, 48, 32, 2, 4, 2, 64, 16);
    fk_model m;
    CHECK(fk_model_init(&m, &c));
    fk_model_init_weights(&m, 11);
    int32_t ids[53];
    fk_rng rng;
    fk_rng_seed(&rng, 5);
    for (int i = 0; i < 53; i++) ids[i] = (int32_t)(fk_rng_u64(&rng) % 48);
    check_llama_ppl(&m, ids, 53, 16, 1);   // 3 chunks of 16, the last 5 tokens left out, BOS 1
    check_llama_ppl(&m, ids, 53, 16, -1);  // no BOS: the chunk's own first token
    check_llama_ppl(&m, ids, 53, 10, 1);   // odd sizes: 5 chunks, positions 5..8
    fk_eval_result r;
    assert_int_equal(fk_eval_llama_ppl(&m, ids, 53, 32, 1, 2, 0, &r), FK_ERR_ARG);  // 53 < 2 * 32 tokens
    assert_int_equal(fk_eval_llama_ppl(&m, ids, 53, 17, 1, 2, 0, &r), FK_ERR_ARG);  // longer than the context
    ids[7] = 48;
    assert_int_equal(fk_eval_llama_ppl(&m, ids, 53, 16, 1, 2, 0, &r), FK_ERR_ARG);  // id outside the vocabulary
    fk_model_free(&m);
}

static void test_overfit_gpt2(void **s) { (void)s; fk_config c; fk_config_gpt2(&c, 64, 64, 2, 4, 32); overfit(&c); }
static void test_overfit_llama(void **s) { (void)s; fk_config c; fk_config_llama(&c, 64, 64, 2, 4, 2, 160, 32); overfit(&c); }
// MoE: Mixtral-like and Qwen2-MoE-like (shared expert, a dense layer), top-2 of 4 experts of width 64
static void test_overfit_moe(void **s) {
    (void)s;
    for (int kind = CFG_MOE_MIXTRAL; kind <= CFG_MOE_QWEN2; kind++) {
        fk_config c;
        cfg_moe(&c, kind, 64, 64, 64, 2);
        c.max_seq = 32;
        overfit(&c);
    }
}

// Activation checkpointing (fk_model_set_checkpointing): the same loss and gradients bit for bit
// as keeping every layer's activations, with less activation memory, on a Llama (GQA), a GPT-2,
// a Gemma-3-like model (post-norms, QK-norm, sliding layers, per-layer widths), a parallel
// residual, a Mixtral-like MoE, and through the fusion loss's teacher rows; and fk_train with
// checkpoint_activations ends on the same weights.
static void ckpt_compare(fk_config *c, const char *what, const fk_sparse_dist *teacher) {
    fk_model m;
    CHECK(fk_model_init(&m, c));
    fk_model_init_weights(&m, 21);
    CHECK(fk_model_alloc_grads(&m));
    int B = 2, T = 9;
    int32_t tok[18], tgt[18];
    for (int i = 0; i < B * T; i++) tok[i] = (int32_t)((i * 5 + 3) % c->vocab_size), tgt[i] = (int32_t)((i * 7 + 1) % c->vocab_size);
    float loss[2];
    float *g[2];
    size_t bytes[2];
    for (int k = 0; k < 2; k++) {
        fk_model_set_checkpointing(&m, k == 1);
        bytes[k] = fk_model_activation_bytes(&m, B, T, true);
        memset(m.g, 0, (size_t)m.n_floats * sizeof(float));
        float fl;
        if (teacher) CHECK(fk_model_forward_soft(&m, tok, tgt, teacher, 0.5f, B, T, true, &loss[k], &fl));
        else CHECK(fk_model_forward(&m, tok, tgt, B, T, true, &loss[k]));
        CHECK(fk_model_backward(&m, 1.0f));
        g[k] = malloc((size_t)m.n_floats * sizeof(float));
        memcpy(g[k], m.g, (size_t)m.n_floats * sizeof(float));
    }
    print_message("  %-10s activations %zu -> %zu bytes with checkpointing; loss %.6f\n", what, bytes[0], bytes[1], (double)loss[0]);
    assert_true(loss[0] == loss[1]);
    assert_memory_equal(g[0], g[1], (size_t)m.n_floats * sizeof(float));
    if (c->n_layer > 1) assert_true(bytes[1] < bytes[0]);
    free(g[0]); free(g[1]);
    fk_model_free(&m);
}

static void test_checkpointing(void **s) {
    (void)s;
    fk_config c;
    fk_config_llama(&c, 50, 16, 3, 4, 2, 40, 32);
    ckpt_compare(&c, "llama", NULL);
    fk_config_gpt2(&c, 50, 16, 3, 2, 32);
    ckpt_compare(&c, "gpt2", NULL);
    gemma_tiny(&c);
    c.post_norms = c.qk_norm = true;
    c.attn_softcap = 1.5f, c.final_softcap = 2.0f;
    c.sliding_window = 3;
    c.sliding[0] = c.sliding[1] = 1;
    c.ffn[1] = 7;
    ckpt_compare(&c, "gemma3ish", NULL);
    fk_config_llama(&c, 50, 16, 3, 4, 4, 40, 32);
    c.residual = FK_RESID_PARALLEL;
    ckpt_compare(&c, "parallel", NULL);
    fk_config_llama(&c, 50, 16, 2, 4, 2, 16, 32);
    c.n_expert = 4, c.n_expert_used = 2, c.expert_ffn = 16, c.expert_norm = true;
    for (int64_t l = 0; l < c.n_layer; l++) c.moe[l] = 1, c.ffn[l] = 0;
    ckpt_compare(&c, "moe", NULL);
    int64_t row[19];
    int32_t ids[36];
    float p[36];
    int64_t n = 0;
    for (int i = 0; i < 18; i++) {
        row[i] = n;
        ids[n] = (int32_t)(i % 11); p[n++] = 0.7f;
        ids[n] = (int32_t)((i * 3 + 1) % 11); p[n++] = 0.3f;
    }
    row[18] = n;
    fk_sparse_dist t = {row, ids, p};
    fk_config_llama(&c, 50, 16, 3, 4, 2, 40, 32);
    ckpt_compare(&c, "teacher", &t);
    // fk_train with checkpoint_activations: the same weights after 6 steps, the model's setting back
    int32_t data[1024];
    for (int i = 0; i < 1024; i++) data[i] = (int32_t)((i * 13 + i / 7) % 50);
    fk_token_data d = {.ids = data, .n = 1024, .vocab_size = 50, .text_bytes = 1024};
    float *w[2];
    int64_t nf = 0;
    for (int k = 0; k < 2; k++) {
        fk_model m;
        CHECK(fk_model_init(&m, &c));
        fk_model_init_weights(&m, 5);
        CHECK(fk_model_alloc_grads(&m));
        fk_train_opts o;
        fk_train_defaults(&o);
        o.steps = 6, o.batch = 2, o.seq = 16, o.eval_every = 0, o.optim.total_steps = 6, o.checkpoint_activations = k == 1;
        fk_adamw opt;
        CHECK(fk_adamw_init(&opt, &m, &o.optim));
        CHECK(fk_train(&m, &opt, &d, NULL, &o, NULL, NULL, NULL));
        assert_false(m.checkpoint_acts);  // restored
        nf = m.n_floats;
        w[k] = malloc((size_t)nf * sizeof(float));
        memcpy(w[k], m.w, (size_t)nf * sizeof(float));
        fk_adamw_free(&opt), fk_model_free(&m);
    }
    assert_memory_equal(w[0], w[1], (size_t)nf * sizeof(float));
    free(w[0]); free(w[1]);
}

// The backward's gradient hook (what MPI's gradient buckets start from): called once per layer,
// from the last to the first, when that layer's gradients are final (equal to those after the
// whole backward); fk_model_layer_range gives each layer one disjoint run holding exactly its
// "layers.<l>." entries, for a GPT-2 and a Llama.
typedef struct { fk_model *m; int calls, order_ok; float *snap; } grad_seen;
static void seen_layer(void *user, int l) {
    grad_seen *g = user;
    if (l != (int)g->m->cfg.n_layer - 1 - g->calls) g->order_ok = 0;
    g->calls++;
    int64_t lo, hi;
    if (fk_model_layer_range(g->m, l, &lo, &hi)) memcpy(g->snap + lo, g->m->g + lo, (size_t)(hi - lo) * sizeof(float));
}

static void test_grad_hook(void **s) {
    (void)s;
    for (int arch = 0; arch < 2; arch++) {
        fk_config c;
        if (arch == 0) fk_config_gpt2(&c, 64, 32, 3, 4, 16);
        else fk_config_llama(&c, 64, 32, 3, 4, 2, 88, 16);
        fk_model m;
        CHECK(fk_model_init(&m, &c));
        fk_model_init_weights(&m, 5);
        int64_t prev_hi = -1, covered = 0;
        for (int l = 0; l < 3; l++) {
            int64_t lo, hi;
            assert_true(fk_model_layer_range(&m, l, &lo, &hi));
            assert_true(lo >= prev_hi && hi > lo);  // disjoint, in layer order
            prev_hi = hi;
            covered += hi - lo;
        }
        int64_t in_layers = 0;
        for (int i = 0; i < m.n_params; i++)
            if (strncmp(m.params[i].name, "layers.", 7) == 0) in_layers += m.params[i].numel;
        assert_int_equal(covered, in_layers);
        assert_false(fk_model_layer_range(&m, 3, &(int64_t){0}, &(int64_t){0}));
        int32_t x[32], y[32];
        for (int i = 0; i < 32; i++) x[i] = (i * 7) % 64, y[i] = (i * 11 + 3) % 64;
        grad_seen g = {&m, 0, 1, calloc((size_t)m.n_floats, sizeof(float))};
        fk_model_zero_grads(&m);
        float loss;
        CHECK(fk_model_forward(&m, x, y, 2, 16, true, &loss));
        m.grad_hook = seen_layer, m.grad_hook_user = &g;
        CHECK(fk_model_backward(&m, 1.0f));
        m.grad_hook = NULL;
        assert_int_equal(g.calls, 3);
        assert_true(g.order_ok);
        int64_t lo, hi, hi2, lo2;
        assert_true(fk_model_layer_range(&m, 0, &lo, &hi) && fk_model_layer_range(&m, 2, &lo2, &hi2));
        assert_memory_equal(g.snap + lo, m.g + lo, (size_t)(hi2 - lo) * sizeof(float));  // final when the hook saw them
        free(g.snap);
        fk_model_free(&m);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_grad_hook),
        cmocka_unit_test(test_checkpointing),
        cmocka_unit_test(test_golden_gpt2),  cmocka_unit_test(test_golden_llama), cmocka_unit_test(test_golden_qwen2),
        cmocka_unit_test(test_golden_gemma), cmocka_unit_test(test_golden_gemma2), cmocka_unit_test(test_golden_gemma3),
        cmocka_unit_test(test_golden_mpt),   cmocka_unit_test(test_golden_mpt_8h),  cmocka_unit_test(test_fd_mpt),
        GOLDEN_TEST("qwen3_swa_grad"), GOLDEN_TEST("mistral_swa_grad"), GOLDEN_TEST("starcoder2_grad"), GOLDEN_TEST("phi3_partial_grad"),
        GOLDEN_TEST("gpt_neox_grad"), GOLDEN_TEST("phi_grad"), GOLDEN_TEST("olmo2_grad"), GOLDEN_TEST("stablelm_grad"),
        GOLDEN_TEST("stablelm_par_grad"), GOLDEN_TEST("falcon_grad"), GOLDEN_TEST("falcon_40b_grad"), GOLDEN_TEST("gpt2_gelu_grad"),
        GOLDEN_TEST("rope_yarn_grad"), GOLDEN_TEST("mixtral_grad"), GOLDEN_TEST("qwen2_moe_grad"), GOLDEN_TEST("qwen3_moe_grad"),
        GOLDEN_TEST("olmoe_grad"), GOLDEN_TEST("stablelm_qkln_grad"), GOLDEN_TEST("falcon2_grad"), GOLDEN_TEST("falcon_seq_grad"),
        cmocka_unit_test(test_fd_gemma2),    cmocka_unit_test(test_fd_gemma3),
        cmocka_unit_test(test_fd_gpt2),      cmocka_unit_test(test_fd_gpt2_gelu_exact),      cmocka_unit_test(test_fd_llama), cmocka_unit_test(test_fd_qwen3), cmocka_unit_test(test_fd_starcoder2), cmocka_unit_test(test_fd_partial_rotary), cmocka_unit_test(test_fd_parallel), cmocka_unit_test(test_fd_olmo2), cmocka_unit_test(test_fd_stablelm_qkln), cmocka_unit_test(test_fd_moe),     cmocka_unit_test(test_fd_llama_fusion),     cmocka_unit_test(test_overfit_gpt2),
        cmocka_unit_test(test_overfit_llama), cmocka_unit_test(test_overfit_moe),
        cmocka_unit_test(test_llama_ppl_protocol),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
