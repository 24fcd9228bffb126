// Folding FFN units: exact duplicates and scaled copies fold away without changing the
// model's outputs; the least-squares refit beats the mean-sum rule on correlated neurons; the
// folded model (per-layer widths) saves, loads and trains.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fusekit/analyze.h"
#include "fusekit/fold.h"
#include "fusekit/fusekit.h"
#include "test_util.h"

// A model of config c with GPT-2 initialisation (seed) times `scale`, so that every part matters.
static void scaled_model(fk_model *m, const fk_config *c, uint64_t seed, float scale) {
    CHECK(fk_model_init(m, c));
    fk_model_init_weights(m, seed);
    for (int64_t i = 0; i < m->n_floats; i++) m->w[i] *= scale;
}

// Mean squared difference of the logits of two models on the same batch, relative to the
// mean square of the first model's logits.
static double logit_error(fk_model *a, fk_model *b, const fk_token_data *d) {
    int B = 2, T = 16;
    int64_t V = a->cfg.vocab_size, n = (int64_t)B * T * V;
    CHECK(fk_model_forward(a, d->ids, NULL, B, T, false, NULL));
    float *la = malloc((size_t)n * sizeof(float));
    memcpy(la, fk_model_logits(a), (size_t)n * sizeof(float));
    CHECK(fk_model_forward(b, d->ids, NULL, B, T, false, NULL));
    const float *lb = fk_model_logits(b);
    double e = 0, s = 0;
    for (int64_t i = 0; i < n; i++) { e += ((double)la[i] - lb[i]) * ((double)la[i] - lb[i]); s += (double)la[i] * la[i]; }
    free(la);
    return e / s;
}

// SwiGLU layer 0 of 12 units: unit 7 = unit 2 with its up row times 3 (h7 = 3 h2), unit 9 an
// exact copy of unit 4. Folding 12 -> 10 units must leave the logits unchanged.
static void test_fold_copies(void **s) {
    (void)s;
    fk_config c;
    fk_config_llama(&c, 30, 16, 2, 2, 2, 12, 16);
    fk_model m;
    CHECK(fk_model_init(&m, &c));
    fk_model_init_weights(&m, 4);
    // larger weights so the FFN matters
    for (int64_t i = 0; i < m.n_floats; i++) m.w[i] *= 5;
    const fk_layer_offsets *o = &m.layer[0];
    int64_t C = c.d_model, F = 12;
    float *up = m.w + o->up_w;  // gate rows 0..11, up rows 12..23
    memcpy(up + 7 * C, up + 2 * C, (size_t)C * sizeof(float));
    for (int64_t i = 0; i < C; i++) up[(F + 7) * C + i] = 3 * up[(F + 2) * C + i];
    memcpy(up + 9 * C, up + 4 * C, (size_t)C * sizeof(float));
    memcpy(up + (F + 9) * C, up + (F + 4) * C, (size_t)C * sizeof(float));
    fk_token_data d, test;
    random_tokens(&d, 2000, 30, 1);
    random_tokens(&test, 64, 30, 2);
    fk_analysis a;
    CHECK(fk_analyze(&m, &d, 16, 4, 0, 1, &a));
    int32_t labels[12], rep[10];
    for (int f = 0, j = 0; f < 12; f++) {
        if (f == 7) { labels[f] = labels[2]; continue; }
        if (f == 9) { labels[f] = labels[4]; continue; }
        rep[j] = f;
        labels[f] = j++;
    }
    fk_model lsq, ms;
    CHECK(fk_fold_ffn(&m, 0, labels, rep, 10, a.ffn_gram[0], 1e-10, FK_FOLD_LSQ, &lsq));
    assert_int_equal(lsq.cfg.ffn[0], 10);
    assert_int_equal(lsq.cfg.ffn[1], 12);
    double e = logit_error(&m, &lsq, &test);
    print_message("  least squares, scaled copy and duplicate folded: relative logit error %.2e\n", e);
    assert_true(e < 1e-10);  // (1e-5 relative RMS)
    // mean-sum is exact for the exact duplicate alone
    int32_t labels2[12], rep2[11];
    for (int f = 0, j = 0; f < 12; f++) {
        if (f == 9) { labels2[f] = labels2[4]; continue; }
        rep2[j] = f;
        labels2[f] = j++;
    }
    CHECK(fk_fold_ffn(&m, 0, labels2, rep2, 11, NULL, 0, FK_FOLD_MEAN_SUM, &ms));
    double e2 = logit_error(&m, &ms, &test);
    print_message("  mean-sum, duplicate folded: relative logit error %.2e\n", e2);
    assert_true(e2 < 1e-10);
    fk_model_free(&ms);
    // the folded model saves with per-layer widths, loads and trains one step with finite gradients
    CHECK(fk_hf_save(&lsq, tpath("folded"), FK_DT_F32));
    fk_model back;
    CHECK(fk_hf_load(&back, tpath("folded")));
    assert_int_equal(back.cfg.ffn[0], 10);
    assert_true(logit_error(&lsq, &back, &test) == 0);
    CHECK(fk_model_alloc_grads(&back));
    fk_model_zero_grads(&back);
    float loss;
    CHECK(fk_model_forward(&back, test.ids, test.ids + 1, 2, 16, true, &loss));
    CHECK(fk_model_backward(&back, 1.0f));
    assert_true(isfinite(fk_grad_norm(&back)) && fk_grad_norm(&back) > 0);
    fk_model_free(&back);
    fk_model_free(&lsq);
    // bad arguments
    rep[0] = 7;  // not in cluster 0
    assert_int_equal(fk_fold_ffn(&m, 0, labels, rep, 10, a.ffn_gram[0], 1e-2, FK_FOLD_LSQ, &lsq), FK_ERR_ARG);
    assert_int_equal(fk_fold_ffn(&m, 5, labels, rep, 10, a.ffn_gram[0], 1e-2, FK_FOLD_LSQ, &lsq), FK_ERR_ARG);
    fk_analysis_free(&a);
    fk_data_free(&d); fk_data_free(&test);
    fk_model_free(&m);
}

// Parallel attention and MLP (GPT-NeoX: two norms; Phi-2: one, with an LM-head bias): the FFN
// activations analyze sees are those the layer adds, so folding an exact duplicate unit (unit 9 =
// unit 4 in layer 1) leaves the logits unchanged; the folded model (per-layer widths: model_type
// fusekit) saves and loads back the same.
static void test_fold_parallel(void **s) {
    (void)s;
    for (int shared = 0; shared < 2; shared++) {
        fk_config c;
        cfg_parallel(&c, 30, 16, shared);
        c.ffn[0] = c.ffn[1] = 12;
        fk_model m;
        CHECK(fk_model_init(&m, &c));
        fk_model_init_weights(&m, 6);
        for (int64_t i = 0; i < m.n_floats; i++) m.w[i] = m.w[i] * 5 + 0.01f * (float)(i % 7);
        const fk_layer_offsets *o = &m.layer[1];
        memcpy(m.w + o->up_w + 9 * c.d_model, m.w + o->up_w + 4 * c.d_model, (size_t)c.d_model * sizeof(float));
        m.w[o->up_b + 9] = m.w[o->up_b + 4];
        fk_token_data d, test;
        random_tokens(&d, 2000, 30, 1);
        random_tokens(&test, 64, 30, 2);
        fk_analysis a;
        CHECK(fk_analyze(&m, &d, 16, 4, 0, 1, &a));
        int32_t labels[12], rep[11];
        for (int f = 0, j = 0; f < 12; f++) {
            if (f == 9) { labels[f] = labels[4]; continue; }
            rep[j] = f;
            labels[f] = j++;
        }
        fk_model lsq, back;
        CHECK(fk_fold_ffn(&m, 1, labels, rep, 11, a.ffn_gram[1], 1e-10, FK_FOLD_LSQ, &lsq));
        double e = logit_error(&m, &lsq, &test);
        print_message("  %s: duplicate unit folded, relative logit error %.2e\n", shared ? "phi" : "gpt_neox", e);
        assert_true(e < 1e-10);
        CHECK(fk_hf_save(&lsq, tpath("folded_par"), FK_DT_F32));
        CHECK(fk_hf_load(&back, tpath("folded_par")));
        assert_int_equal(back.cfg.residual, c.residual);
        assert_true(logit_error(&lsq, &back, &test) == 0);
        fk_model_free(&back);
        fk_model_free(&lsq);
        fk_analysis_free(&a);
        fk_data_free(&d); fk_data_free(&test);
        fk_model_free(&m);
    }
}

// GELU layer of 16 units made of 8 pairs of correlated neurons (the second of each pair is the
// first plus small noise): folding each pair to one unit, least squares loses less than mean-sum.
static void test_lsq_beats_mean_sum(void **s) {
    (void)s;
    fk_config c;
    fk_config_gpt2(&c, 30, 16, 1, 2, 16);
    c.ffn[0] = 16;
    fk_model m;
    scaled_model(&m, &c, 8, 5);
    int64_t C = c.d_model;
    float *up = m.w + m.layer[0].up_w;
    fk_rng r;
    fk_rng_seed(&r, 12);
    for (int p = 0; p < 8; p++)
        for (int64_t i = 0; i < C; i++) up[(2 * p + 1) * C + i] = up[2 * p * C + i] * 1.5f + 0.05f * fk_rng_normal(&r);
    fk_token_data d, test;
    random_tokens(&d, 3000, 30, 3);
    random_tokens(&test, 64, 30, 4);
    fk_analysis a;
    CHECK(fk_analyze(&m, &d, 16, 4, 0, 1, &a));
    int32_t labels[16], rep[8];
    for (int f = 0; f < 16; f++) labels[f] = f / 2;
    for (int p = 0; p < 8; p++) rep[p] = 2 * p;
    fk_model lsq, ms;
    CHECK(fk_fold_ffn(&m, 0, labels, rep, 8, a.ffn_gram[0], 1e-2, FK_FOLD_LSQ, &lsq));
    CHECK(fk_fold_ffn(&m, 0, labels, rep, 8, NULL, 0, FK_FOLD_MEAN_SUM, &ms));
    double el = logit_error(&m, &lsq, &test), em = logit_error(&m, &ms, &test);
    print_message("  relative logit error: least squares %.3e, mean-sum %.3e\n", el, em);
    assert_true(el < em);
    fk_model_free(&lsq); fk_model_free(&ms);
    fk_analysis_free(&a);
    fk_data_free(&d); fk_data_free(&test);
    fk_model_free(&m);
}


// Direct least-squares residual of reconstructing D h from the units in K (Gaussian elimination
// in double, independent of the LAPACK path): tr(D G D^T) - tr(D G_:K A^-1 G_K: D^T), A = G_KK + lambda I.
static double direct_residual(const float *D, int64_t C, int64_t F, const double *G, const int32_t *K, int k, double lambda) {
    double total = 0;
    for (int64_t r = 0; r < C; r++)
        for (int64_t i = 0; i < F; i++)
            for (int64_t j = 0; j < F; j++) total += (double)D[r * F + i] * G[i * F + j] * D[r * F + j];
    if (k == 0) return total;
    double *A = malloc((size_t)(k * (k + 1)) * sizeof *A), expl = 0;
    for (int64_t r = 0; r < C; r++) {
        // b = (D G_:K)_r, solve A x = b, expl += b . x
        for (int i = 0; i < k; i++) {
            for (int j = 0; j < k; j++) A[i * (k + 1) + j] = G[(int64_t)K[i] * F + K[j]] + (i == j ? lambda : 0);
            double b = 0;
            for (int64_t f = 0; f < F; f++) b += (double)D[r * F + f] * G[f * F + K[i]];
            A[i * (k + 1) + k] = b;
        }
        double *bcopy = malloc((size_t)k * sizeof *bcopy);
        for (int i = 0; i < k; i++) bcopy[i] = A[i * (k + 1) + k];
        for (int c = 0; c < k; c++)
            for (int i = c + 1; i < k; i++) {
                double f = A[i * (k + 1) + c] / A[c * (k + 1) + c];
                for (int j = c; j <= k; j++) A[i * (k + 1) + j] -= f * A[c * (k + 1) + j];
            }
        for (int i = k - 1; i >= 0; i--) {
            double x = A[i * (k + 1) + k];
            for (int j = i + 1; j < k; j++) x -= A[i * (k + 1) + j] * A[j * (k + 1) + k];
            A[i * (k + 1) + k] = x / A[i * (k + 1) + i];
            expl += bcopy[i] * A[i * (k + 1) + k];
        }
        free(bcopy);
    }
    free(A);
    return total - expl;
}

// Greedy elimination: every step removes the unit whose removal costs least (checked against
// a direct recomputation for every candidate), the residual curve matches direct residuals,
// and a scaled copy and a duplicate are the first to go, at no cost.
static void test_elimination(void **s) {
    (void)s;
    fk_config c;
    fk_config_llama(&c, 30, 16, 2, 2, 2, 12, 16);
    fk_model m;
    scaled_model(&m, &c, 4, 5);
    int64_t C = c.d_model, F = 12;
    float *up = m.w + m.layer[0].up_w;
    memcpy(up + 7 * C, up + 2 * C, (size_t)C * sizeof(float));
    for (int64_t i = 0; i < C; i++) up[(F + 7) * C + i] = 3 * up[(F + 2) * C + i];
    memcpy(up + 9 * C, up + 4 * C, (size_t)C * sizeof(float));
    memcpy(up + (F + 9) * C, up + (F + 4) * C, (size_t)C * sizeof(float));
    fk_token_data d, test;
    random_tokens(&d, 2000, 30, 1);
    random_tokens(&test, 64, 30, 2);
    fk_analysis a;
    CHECK(fk_analyze(&m, &d, 16, 4, 0, 1, &a));
    const double *G = a.ffn_gram[0];
    const float *D = m.w + m.layer[0].down_w;
    double ridge = 1e-3, diag = 0;
    for (int64_t i = 0; i < F; i++) diag += G[i * F + i];
    double lambda = ridge * diag / (double)F;
    int32_t order[12];
    double resid[13];
    CHECK(fk_ffn_elimination(&m, 0, G, ridge, order, resid));
    int32_t all[12];
    for (int i = 0; i < 12; i++) all[i] = i;
    double total = direct_residual(D, C, F, G, all, 0, lambda);
    // walk the order: each removal is the cheapest among the units left
    char alive[12];
    memset(alive, 1, sizeof alive);
    for (int step = 0; step < 11; step++) {
        int32_t K[12];
        double best = INFINITY, chosen = NAN;
        for (int cand = 0; cand < 12; cand++) {
            if (!alive[cand]) continue;
            int k = 0;
            for (int f = 0; f < 12; f++)
                if (alive[f] && f != cand) K[k++] = f;
            double r = direct_residual(D, C, F, G, K, k, lambda) / total;
            if (r < best) best = r;
            if (cand == order[step]) chosen = r;
        }
        assert_true(alive[order[step]]);
        if (!(chosen <= best + 1e-9)) fail_msg("step %d: removed unit %d costs %.10g, the cheapest %.10g", step, order[step], chosen, best);
        if (fabs(chosen - resid[11 - step]) > 1e-8) fail_msg("step %d: residual curve %.10g, direct %.10g", step, resid[11 - step], chosen);
        alive[order[step]] = 0;
    }
    assert_true(resid[0] == 1 && resid[12] < 1e-3);
    // the scaled copy (7 or 2) and the duplicate (9 or 4) go first, costing ~ nothing but the ridge
    bool copy = order[0] == 7 || order[0] == 2 || order[1] == 7 || order[1] == 2;
    bool dup = order[0] == 9 || order[0] == 4 || order[1] == 9 || order[1] == 4;
    assert_true(copy && dup);
    fk_model f;
    CHECK(fk_fold_ffn_keep(&m, 0, order + 2, 10, G, 1e-10, &f));
    double e = logit_error(&m, &f, &test);
    print_message("  elimination: first removed %d, %d; folding them away: relative logit error %.2e\n", order[0], order[1], e);
    assert_true(e < 1e-10);
    fk_model_free(&f);
    fk_analysis_free(&a);
    fk_data_free(&d); fk_data_free(&test);
    fk_model_free(&m);
}

static int64_t ffn_count(const fk_model *m) {
    int64_t s = 0;
    for (int i = 0; i < m->n_params; i++) {
        fk_param_kind k = m->params[i].kind;
        if (k == FK_P_UP_W || k == FK_P_UP_B || k == FK_P_DOWN_W) s += m->params[i].numel;
    }
    return s;
}

// Plans meet the budget without overshooting by more than one step, respect the guards
// (width >= 30%, multiples of 8, edge layers untouched), --uniform gives one width, and an
// impossible budget is refused with a message.
static void test_plan(void **s) {
    (void)s;
    fk_config c;
    fk_config_llama(&c, 40, 32, 6, 4, 2, 64, 32);
    fk_model m;
    scaled_model(&m, &c, 21, 4);
    // layer 3 nearly an identity: dropping it is the cheapest operation per parameter
    for (int64_t i = 0; i < 32 * 32; i++) m.w[m.layer[3].o_w + i] *= 0.01f;
    for (int64_t i = 0; i < 32 * 64; i++) m.w[m.layer[3].down_w + i] *= 0.01f;
    fk_token_data d;
    random_tokens(&d, 4000, 40, 5);
    fk_analysis a;
    CHECK(fk_analyze(&m, &d, 32, 4, 0, 1, &a));
    fk_kl_probe probe;
    CHECK(fk_kl_probe_init(&m, &d, 4, 32, &probe));
    double kl0;
    CHECK(fk_kl_probe_eval(&m, &probe, &kl0));
    assert_true(fabs(kl0) < 1e-6);  // the model against itself
    int64_t unit = 3 * 32, ffn0 = ffn_count(&m);
    double budgets[] = {0.1, 0.3, 0.4};
    for (int bi = 0; bi < 3; bi++)
        for (int layer_ops = 0; layer_ops < 2; layer_ops++) {
            fk_fold_opts o;
            fk_fold_opts_default(&o);
            o.budget = budgets[bi];
            o.layer_ops = layer_ops;
            fk_fold_plan p;
            CHECK(fk_fold_plan_make(&m, &a, &probe, &o, &p));
            int64_t want = (int64_t)ceil(o.budget * (double)ffn0);
            assert_int_equal(p.budget_params, want);
            assert_true(p.removed_params >= want);
            for (int l = 0; l < 6; l++) {
                bool op = false;
                for (int i = 0; i < p.n_ops; i++) op = op || (l >= p.ops[i].layer && l < p.ops[i].layer + p.ops[i].span);
                if (l == 0 || l == 5) { assert_int_equal(p.ffn_after[l], 64); assert_false(op); }
                assert_true(p.ffn_after[l] % 8 == 0 && p.ffn_after[l] >= 24);
                if (op) assert_int_equal(p.ffn_after[l], 64);  // a layer operation's layers keep their widths
            }
            if (layer_ops && bi > 0) {  // the near-identity layer 3 is dropped, the rest of the budget from FFN widths
                assert_int_equal(p.n_ops, 1);
                assert_true(p.ops[0].kind == FK_LAYER_DROP && p.ops[0].layer == 3);
            }
            int64_t layer_removed = 0;
            for (int i = 0; i < p.n_ops; i++) layer_removed += p.ops[i].params;
            if (p.removed_params - layer_removed > 0) assert_true(p.removed_params < want + 8 * unit);  // at most one FFN step over
            else assert_true(p.removed_params >= want);
            char *js = fk_fold_plan_json(&p);
            assert_non_null(strstr(js, "\"budget_params\""));
            free(js);
            // applying: layers first, then widths planned again on the new model, must give the planned parameter count
            if (p.n_ops == 0) {
                fk_model f;
                CHECK(fk_fold_plan_apply_ffn(&m, &p, &a, o.ridge, &f));
                assert_int_equal(ffn0 - ffn_count(&f), p.removed_params);
                for (int l = 0; l < 6; l++) assert_int_equal(f.cfg.ffn[l], p.ffn_after[l]);
                double kl;
                CHECK(fk_kl_probe_eval(&f, &probe, &kl));
                print_message("  budget %.2f: removed %lld/%lld FFN parameters, widths %lld %lld %lld %lld %lld %lld, estimated KL %.3g, probe KL %.3g\n",
                              o.budget, (long long)p.removed_params, (long long)ffn0, (long long)p.ffn_after[0], (long long)p.ffn_after[1],
                              (long long)p.ffn_after[2], (long long)p.ffn_after[3], (long long)p.ffn_after[4], (long long)p.ffn_after[5], p.est_kl_total, kl);
                assert_true(kl > 0 && isfinite(kl));
                fk_model_free(&f);
            } else {
                fk_model f;
                CHECK(fk_fold_plan_apply_layers(&m, &p, &f));
                int removed_layers = 0;
                for (int i = 0; i < p.n_ops; i++) removed_layers += p.ops[i].kind == FK_LAYER_DROP ? 1 : p.ops[i].span - 1;
                assert_int_equal(f.cfg.n_layer, 6 - removed_layers);
                print_message("  budget %.2f: %d layer operation(s), first %s at %d (KL %.3g)\n", o.budget, p.n_ops, fk_layer_op_name(p.ops[0].kind),
                              p.ops[0].layer, p.ops[0].kl);
                fk_model_free(&f);
            }
            fk_fold_plan_free(&p);
        }
    // fk_fold_run's estimate counts what it applied: with a layer operation, that operation's
    // measured KL plus the widths planned again after it (the first plan's widths, never applied,
    // do not count), so it stays near the probe KL measured on the folded model
    {
        fk_fold_run_opts ro;
        fk_fold_run_defaults(&ro);
        ro.plan.budget = 0.3;
        ro.plan.layer_ops = true;
        ro.seq = 32;
        fk_fold_result r;
        CHECK(fk_fold_run(&m, &d, &ro, NULL, NULL, &r));
        assert_true(r.has_widths && r.plan.n_ops > 0);
        double want = r.widths.est_kl_total;
        for (int i = 0; i < r.plan.n_ops; i++) want += r.plan.ops[i].kl;
        assert_true(fabs(r.est_kl - want) <= 1e-12 * (1 + want));
        print_message("  fold run with a layer operation: estimated KL %.3g (the first plan alone %.3g), probe KL %.3g\n", r.est_kl,
                      r.plan.est_kl_total, r.probe_kl);
        fk_fold_result_free(&r);
    }
    // scope "blocks" with head operations: heads fold within KV groups too, and applying the plan
    // removes exactly the planned parameters
    {
        fk_fold_opts oh;
        fk_fold_opts_default(&oh);
        oh.scope = FK_SCOPE_BLOCKS;
        oh.budget = 0.25;
        oh.layer_ops = false;
        fk_fold_plan ph;
        CHECK(fk_fold_plan_make(&m, &a, &probe, &oh, &ph));
        int folded_heads = 0;
        for (int l = 0; l < 6; l++) {
            folded_heads += ph.group_after[l] < ph.group_before[l];
            if (l == 0 || l == 5) assert_int_equal(ph.group_after[l], 2);
        }
        fk_model f;
        CHECK(fk_fold_plan_apply_ffn(&m, &ph, &a, oh.ridge, &f));
        assert_int_equal(fk_model_num_params(&m) - fk_model_num_params(&f), ph.removed_params);
        for (int l = 0; l < 6; l++) assert_int_equal(fk_config_heads(&f.cfg, l), ph.group_after[l] * 2);
        double kl;
        CHECK(fk_kl_probe_eval(&f, &probe, &kl));
        print_message("  scope blocks, budget 0.25: %d layer(s) with heads folded, estimated KL %.3g, probe KL %.3g\n", folded_heads, ph.est_kl_total, kl);
        assert_true(folded_heads > 0);
        fk_model_free(&f);
        fk_fold_plan_free(&ph);
    }
    // uniform: every layer the same width, edges included
    fk_fold_opts o;
    fk_fold_opts_default(&o);
    o.uniform = true;
    fk_fold_plan p;
    CHECK(fk_fold_plan_make(&m, &a, &probe, &o, &p));
    for (int l = 0; l < 6; l++) assert_int_equal(p.ffn_after[l], p.ffn_after[0]);
    assert_true(p.ffn_after[0] < 64 && p.removed_params >= p.budget_params);
    assert_int_equal(p.n_ops, 0);
    fk_fold_plan_free(&p);
    // more than the guards allow
    fk_fold_opts_default(&o);
    o.budget = 0.6;
    o.layer_ops = false;
    assert_int_equal(fk_fold_plan_make(&m, &a, &probe, &o, &p), FK_ERR_ARG);
    assert_non_null(strstr(fk_last_error(), "guards"));
    fk_kl_probe_free(&probe);
    fk_analysis_free(&a);
    fk_data_free(&d);
    fk_model_free(&m);
}

// Layer surgery: an identity layer (zero output projections) drops without changing the
// outputs; averaging two equal layers is either of them; LaCo's merge is 1-(n-1), 1, ..., 1.
static void test_layers(void **s) {
    (void)s;
    fk_config c;
    fk_config_gpt2(&c, 30, 16, 4, 2, 16);
    fk_model m;
    scaled_model(&m, &c, 9, 5);
    fk_token_data test;
    random_tokens(&test, 64, 30, 2);
    // layer 2 := identity
    const fk_layer_offsets *o = &m.layer[2];
    const fk_param *po = fk_model_find_param(&m, "layers.2.attn.o.weight"), *pd = fk_model_find_param(&m, "layers.2.mlp.down.weight");
    memset(m.w + o->o_w, 0, (size_t)po->numel * sizeof(float));
    memset(m.w + o->down_w, 0, (size_t)pd->numel * sizeof(float));
    memset(m.w + o->o_b, 0, 16 * sizeof(float));
    memset(m.w + o->down_b, 0, 16 * sizeof(float));
    double coef[3 * 4] = {1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1};
    fk_model f;
    CHECK(fk_fold_layers(&m, 3, coef, &f));
    assert_int_equal(f.cfg.n_layer, 3);
    double e = logit_error(&m, &f, &test);
    print_message("  identity layer dropped: relative logit error %.2e\n", e);
    assert_true(e < 1e-12);
    fk_model_free(&f);
    // ShortGPT finds it: its Block Influence is 0
    fk_token_data d;
    random_tokens(&d, 1000, 30, 3);
    fk_analysis a;
    CHECK(fk_analyze(&m, &d, 16, 4, 0, 1, &a));
    int64_t removed;
    CHECK(fk_prune(&m, &a, FK_PRUNE_SHORTGPT, 0.2, FK_SCOPE_BLOCKS, &f, &removed));
    assert_int_equal(f.cfg.n_layer, 3);
    assert_true(logit_error(&m, &f, &test) < 1e-12);
    fk_model_free(&f);
    fk_analysis_free(&a);
    fk_data_free(&d);
    // LaCo over layers 0..2 and averaging 1..2, tensor by tensor
    double laco[2 * 4] = {-1, 1, 1, 0, 0, 0, 0, 1}, avg[3 * 4] = {1, 0, 0, 0, 0, 0.5, 0.5, 0, 0, 0, 0, 1};
    fk_model g;
    CHECK(fk_fold_layers(&m, 2, laco, &f));
    CHECK(fk_fold_layers(&m, 3, avg, &g));
    for (int i = 0; i < f.n_params; i++) {
        const fk_param *q = &f.params[i];
        if (q->layer != 0) continue;
        char n0[64], n1[64], n2[64];
        const char *suffix = strchr(q->name + 7, '.') + 1;
        snprintf(n0, sizeof n0, "layers.0.%s", suffix);
        snprintf(n1, sizeof n1, "layers.1.%s", suffix);
        snprintf(n2, sizeof n2, "layers.2.%s", suffix);
        const float *t0 = m.w + fk_model_find_param(&m, n0)->offset, *t1 = m.w + fk_model_find_param(&m, n1)->offset, *t2 = m.w + fk_model_find_param(&m, n2)->offset;
        const float *av = g.w + fk_model_find_param(&g, n1)->offset;
        for (int64_t j = 0; j < q->numel; j++) {
            assert_float_equal(f.w[q->offset + j], -t0[j] + t1[j] + t2[j], 1e-5);
            assert_float_equal(av[j], 0.5f * (t1[j] + t2[j]), 1e-6);
        }
    }
    fk_model_free(&f);
    fk_model_free(&g);
    // combining layers of different widths is refused
    m.cfg.ffn[1] = 8;
    fk_model m2;
    CHECK(fk_model_init(&m2, &m.cfg));
    assert_int_equal(fk_fold_layers(&m2, 3, avg, &f), FK_ERR_ARG);
    fk_model_free(&m2);
    fk_data_free(&test);
    fk_model_free(&m);
}

// Baselines: FLAP's bias compensation removes a constant unit exactly (and only with the
// compensation); FLAP's global order takes such a unit first; magnitude pruning takes the same
// fraction of every layer, smallest norms first.
static void test_prune(void **s) {
    (void)s;
    fk_config c;
    fk_config_llama(&c, 30, 16, 2, 2, 2, 24, 16);
    fk_model m;
    scaled_model(&m, &c, 13, 5);
    int64_t C = 16, F = 24;
    // unit 5 of each layer: gate row zero -> silu(0) * up = 0, a constant activation;
    // give the model MLP biases so the gate bias can make it a non-zero constant
    c.bias_mlp = true;
    fk_model mb;
    CHECK(fk_model_init(&mb, &c));
    for (int i = 0; i < mb.n_params; i++) {
        const fk_param *q = &mb.params[i];
        const fk_param *p = fk_model_find_param(&m, q->name);
        if (p) memcpy(mb.w + q->offset, m.w + p->offset, (size_t)q->numel * sizeof(float));
    }
    fk_model_free(&m);
    for (int l = 0; l < 2; l++) {
        float *up = mb.w + mb.layer[l].up_w, *ub = mb.w + mb.layer[l].up_b;
        memset(up + 5 * C, 0, (size_t)C * sizeof(float));        // gate row
        memset(up + (F + 5) * C, 0, (size_t)C * sizeof(float));  // up row
        ub[5] = 1.5f;                                             // gate bias
        ub[F + 5] = 2.0f;                                         // up bias: h5 = silu(1.5) * 2
    }
    fk_token_data d, test;
    random_tokens(&d, 1500, 30, 6);
    random_tokens(&test, 64, 30, 7);
    fk_analysis a;
    CHECK(fk_analyze(&mb, &d, 16, 4, 0, 1, &a));
    assert_true(fabs(a.ffn_mean[0][5] - 2.0 * 1.5 / (1 + exp(-1.5))) < 1e-5);
    int32_t keep[23];
    for (int f = 0, k = 0; f < 24; f++)
        if (f != 5) keep[k++] = f;
    fk_model p1, p2;
    CHECK(fk_prune_ffn(&mb, 0, keep, 23, a.ffn_mean[0], &p1));
    CHECK(fk_prune_ffn(&mb, 0, keep, 23, NULL, &p2));
    double e1 = logit_error(&mb, &p1, &test), e2 = logit_error(&mb, &p2, &test);
    print_message("  constant unit removed: with bias compensation %.2e, without %.2e\n", e1, e2);
    assert_true(e1 < 1e-10 && e2 > 1e-6);
    fk_model_free(&p1); fk_model_free(&p2);
    // FLAP at a budget of one unit: a constant unit (zero fluctuation) goes, outputs unchanged
    int64_t removed;
    double one = (double)(3 * C + 2) / (double)(2 * F * (3 * C + 2));
    CHECK(fk_prune(&mb, &a, FK_PRUNE_FLAP, one * 0.999, FK_SCOPE_FFN, &p1, &removed));
    assert_int_equal(removed, 3 * C + 2);
    assert_true(p1.cfg.ffn[0] + p1.cfg.ffn[1] == 47);
    assert_true(logit_error(&mb, &p1, &test) < 1e-10);
    fk_model_free(&p1);
    // magnitude: the same fraction per layer; a channel with tiny weights goes first
    float *up = mb.w + mb.layer[1].up_w, *dn = mb.w + mb.layer[1].down_w;
    for (int64_t i = 0; i < C; i++) { up[11 * C + i] *= 1e-3f; up[(F + 11) * C + i] *= 1e-3f; dn[i * F + 11] *= 1e-3f; }
    CHECK(fk_prune(&mb, &a, FK_PRUNE_MAGNITUDE, 0.25, FK_SCOPE_FFN, &p1, &removed));
    assert_int_equal(p1.cfg.ffn[0], 18);
    assert_int_equal(p1.cfg.ffn[1], 18);
    assert_true(removed >= (int64_t)ceil(0.25 * 2 * F * (3 * C + 2)));
    // unit 11 of layer 1 is gone: no kept down column equals its (scaled) one
    const float *dn2 = p1.w + p1.layer[1].down_w;
    for (int j = 0; j < 18; j++) assert_false(dn2[j] == dn[11] && dn2[18 + j] == dn[F + 11]);
    fk_model_free(&p1);
    assert_int_equal(fk_prune(&mb, &a, FK_PRUNE_FLAP, 1.2, FK_SCOPE_FFN, &p1, &removed), FK_ERR_ARG);
    fk_analysis_free(&a);
    fk_data_free(&d); fk_data_free(&test);
    fk_model_free(&mb);
}


// Pruning to a parameter count (fk_prune_to_params) on a 4-layer SwiGLU model without biases
// (a channel holds 3 C = 48 parameters): magnitude at 8 channels is the uniform fraction's model
// bit for bit, at 7 the layers differ by one channel; FLAP adds its biases (2 per kept channel,
// C per layer: P + 256 - 50 n parameters after n channels); ShortGPT drops the identity layer
// whole, then magnitude takes the rest; a count between two steps gives the one below.
static void test_prune_to_params(void **s) {
    (void)s;
    fk_config c;
    fk_config_llama(&c, 30, 16, 4, 2, 2, 24, 16);
    fk_model m, p, q;
    scaled_model(&m, &c, 21, 5);
    memset(m.w + m.layer[2].o_w, 0, 16 * 16 * sizeof(float));    // layer 2 := identity
    memset(m.w + m.layer[2].down_w, 0, 16 * 24 * sizeof(float));
    fk_token_data d, test;
    random_tokens(&d, 1000, 30, 8);
    random_tokens(&test, 64, 30, 9);
    fk_analysis a;
    CHECK(fk_analyze(&m, &d, 16, 4, 0, 1, &a));
    int64_t P = fk_model_num_params(&m), removed, unit = 48, block = fk_model_count_params(&m, FK_PARAMS_BLOCKS, 2);
    // magnitude, 8 channels: fk_prune's uniform fraction (ceil(0.08 * 4608) = 369 -> 2 per layer)
    CHECK(fk_prune_to_params(&m, &a, FK_PRUNE_MAGNITUDE, P - 8 * unit, &p, &removed));
    CHECK(fk_prune(&m, &a, FK_PRUNE_MAGNITUDE, 0.08, FK_SCOPE_FFN, &q, &removed));
    assert_int_equal(fk_model_num_params(&p), P - 8 * unit);
    assert_int_equal(p.n_floats, q.n_floats);
    assert_memory_equal(p.w, q.w, (size_t)p.n_floats * sizeof(float));
    fk_model_free(&p); fk_model_free(&q);
    CHECK(fk_prune_to_params(&m, &a, FK_PRUNE_MAGNITUDE, P - 7 * unit, &p, &removed));
    assert_int_equal(removed, 7 * unit);
    assert_int_equal(fk_model_num_params(&p), P - 7 * unit);
    for (int l = 0; l < 4; l++) assert_true(p.cfg.ffn[l] == 22 || p.cfg.ffn[l] == 23);
    fk_model_free(&p);
    CHECK(fk_prune_to_params(&m, &a, FK_PRUNE_MAGNITUDE, P - 7 * unit - 5, &p, &removed));  // not reachable: the next below
    assert_int_equal(fk_model_num_params(&p), P - 8 * unit);
    fk_model_free(&p);
    // FLAP, 10 channels: P + 256 - 500
    CHECK(fk_prune_to_params(&m, &a, FK_PRUNE_FLAP, P - 244, &p, &removed));
    assert_int_equal(fk_model_num_params(&p), P - 244);
    assert_true(p.cfg.bias_mlp);
    assert_int_equal(p.cfg.ffn[0] + p.cfg.ffn[1] + p.cfg.ffn[2] + p.cfg.ffn[3], 86);
    fk_model_free(&p);
    CHECK(fk_prune_to_params(&m, &a, FK_PRUNE_FLAP, P - 245, &p, &removed));  // 11 channels
    assert_int_equal(fk_model_num_params(&p), P - 294);
    assert_int_equal(removed, 294);
    fk_model_free(&p);
    assert_int_equal(fk_prune_to_params(&m, &a, FK_PRUNE_MAGNITUDE, 4 * unit, &p, &removed), FK_ERR_ARG);  // below one channel per layer
    // ShortGPT: one whole layer, the identity (outputs unchanged); then one layer and 3 channels
    CHECK(fk_prune_to_params(&m, &a, FK_PRUNE_SHORTGPT, P - block, &p, &removed));
    assert_int_equal(p.cfg.n_layer, 3);
    assert_true(logit_error(&m, &p, &test) < 1e-12);
    fk_model_free(&p);
    CHECK(fk_prune_to_params(&m, &a, FK_PRUNE_SHORTGPT, P - block - 3 * unit, &p, &removed));
    assert_int_equal(fk_model_num_params(&p), P - block - 3 * unit);
    assert_int_equal(p.cfg.n_layer, 3);
    assert_int_equal(p.cfg.ffn[0] + p.cfg.ffn[1] + p.cfg.ffn[2], 69);
    assert_memory_equal(p.w + p.layer[2].o_w, m.w + m.layer[3].o_w, 16 * 16 * sizeof(float));  // layers 0, 1, 3 kept
    fk_model_free(&p);
    // less than a layer: channels only
    CHECK(fk_prune_to_params(&m, &a, FK_PRUNE_SHORTGPT, P - 5 * unit, &p, &removed));
    assert_int_equal(p.cfg.n_layer, 4);
    assert_int_equal(fk_model_num_params(&p), P - 5 * unit);
    fk_model_free(&p);
    assert_int_equal(fk_prune_to_params(&m, &a, FK_PRUNE_SHORTGPT, P, &p, &removed), FK_ERR_ARG);
    assert_int_equal(fk_prune_to_params(&m, &a, FK_PRUNE_EXPERTS, P - unit, &p, &removed), FK_ERR_ARG);
    fk_analysis_free(&a);
    fk_data_free(&d); fk_data_free(&test);
    fk_model_free(&m);
}

// Heads within KV groups: with 4 query heads over 2 KV heads, head 1 copies head 0 and head 3
// copies head 2 (same query rows, so the same outputs): folding to one head per group is exact,
// the elimination takes a copy from each group first, and the folded model (per-layer heads)
// saves, loads, runs the KV cache like its full forward and trains.
static void test_fold_heads(void **s) {
    (void)s;
    fk_config c;
    fk_config_llama(&c, 30, 16, 2, 4, 2, 24, 16);
    fk_model m;
    scaled_model(&m, &c, 17, 5);
    int64_t C = 16, hd = 4;
    float *q = m.w + m.layer[1].qkv_w;  // q rows: head h at rows h*hd..
    memcpy(q + 1 * hd * C, q + 0 * hd * C, (size_t)(hd * C) * sizeof(float));
    memcpy(q + 3 * hd * C, q + 2 * hd * C, (size_t)(hd * C) * sizeof(float));
    fk_token_data d, test;
    random_tokens(&d, 2000, 30, 8);
    random_tokens(&test, 64, 30, 9);
    fk_analysis a;
    CHECK(fk_analyze(&m, &d, 16, 4, 0, 1, &a));
    int32_t order[4];
    double resid[3];
    CHECK(fk_head_elimination(&m, 1, a.att_gram[1], 1e-6, order, resid));
    assert_true(order[0] == 0 || order[0] == 1);
    assert_true(order[1] == 2 || order[1] == 3);
    assert_true(resid[1] < 1e-4 && resid[0] == 1);
    fk_model f;
    CHECK(fk_fold_heads(&m, 1, order + 2, 2, a.att_gram[1], 1e-10, &f));
    assert_int_equal(fk_config_heads(&f.cfg, 1), 2);
    assert_int_equal(fk_config_heads(&f.cfg, 0), 4);
    double e = logit_error(&m, &f, &test);
    print_message("  heads: removed %d and %d first; folded to one head per KV group: relative logit error %.2e\n", order[0], order[1], e);
    assert_true(e < 1e-10);
    CHECK(fk_hf_save(&f, tpath("heads"), FK_DT_F32));
    fk_model back;
    CHECK(fk_hf_load(&back, tpath("heads")));
    assert_int_equal(fk_config_heads(&back.cfg, 1), 2);
    assert_true(logit_error(&f, &back, &test) == 0);
    // the KV cache path agrees with the full forward on the folded model
    CHECK(fk_model_forward(&back, test.ids, NULL, 1, 16, false, NULL));
    float *full = malloc(16 * 30 * sizeof(float)), step[30];
    memcpy(full, fk_model_logits(&back), 16 * 30 * sizeof(float));
    double worst = 0;
    for (int t = 0; t < 16; t++) {
        CHECK(fk_model_step(&back, test.ids + t, 1, t, step));
        for (int v = 0; v < 30; v++) worst = fmax(worst, fabs(step[v] - full[t * 30 + v]));
    }
    assert_true(worst < 1e-3);
    free(full);
    CHECK(fk_model_alloc_grads(&back));
    fk_model_zero_grads(&back);
    float loss;
    CHECK(fk_model_forward(&back, test.ids, test.ids + 1, 2, 16, true, &loss));
    CHECK(fk_model_backward(&back, 1.0f));
    assert_true(isfinite(fk_grad_norm(&back)) && fk_grad_norm(&back) > 0);
    fk_model_free(&back);
    fk_model_free(&f);
    // unequal groups are refused
    int32_t bad[2] = {0, 1};
    assert_int_equal(fk_fold_heads(&m, 1, bad, 2, a.att_gram[1], 1e-2, &f), FK_ERR_ARG);
    assert_non_null(strstr(fk_last_error(), "group"));
    fk_analysis_free(&a);
    fk_data_free(&d); fk_data_free(&test);
    fk_model_free(&m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fold_parallel), cmocka_unit_test(test_fold_copies),
        cmocka_unit_test(test_lsq_beats_mean_sum),
        cmocka_unit_test(test_elimination),
        cmocka_unit_test(test_plan),
        cmocka_unit_test(test_layers),
        cmocka_unit_test(test_prune),
        cmocka_unit_test(test_prune_to_params),
        cmocka_unit_test(test_fold_heads),
    };
    return cmocka_run_group_tests(tests, tmpdir_setup, tmpdir_teardown);
}
