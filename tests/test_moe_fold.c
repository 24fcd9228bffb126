// Folding mixture-of-experts models: duplicated experts merge to the same function (logits within
// 1e-5), the plan spends exactly the budget asked for on experts, expert pruning drops the least
// used experts, a folded Qwen2-MoE-style model (shared experts, a dense layer) trains, a model
// with per-layer expert counts saves and loads back, and what is not implemented is refused.
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
static void moe_model(fk_model *m, const fk_config *c, uint64_t seed, float scale) {
    CHECK(fk_model_init(m, c));
    fk_model_init_weights(m, seed);
    for (int64_t i = 0; i < m->n_floats; i++) m->w[i] *= scale;
}

// Largest |difference| of the two models' logits on the first 2 x 16 tokens of d, relative to the
// largest |logit| of a.
static double logit_diff(fk_model *a, fk_model *b, const fk_token_data *d) {
    int64_t n = 2 * 16 * a->cfg.vocab_size;
    CHECK(fk_model_forward(a, d->ids, NULL, 2, 16, false, NULL));
    float *la = malloc((size_t)n * sizeof(float));
    memcpy(la, fk_model_logits(a), (size_t)n * sizeof(float));
    CHECK(fk_model_forward(b, d->ids, NULL, 2, 16, false, NULL));
    const float *lb = fk_model_logits(b);
    double e = 0, s = 0;
    for (int64_t i = 0; i < n; i++) { e = fmax(e, fabs((double)la[i] - lb[i])); s = fmax(s, fabs((double)la[i])); }
    free(la);
    return e / s;
}

// Expert `dst` of layer l becomes a copy of expert `src`: up, down and router row.
static void copy_expert(fk_model *m, int l, int src, int dst) {
    const fk_layer_offsets *o = &m->layer[l];
    int64_t C = m->cfg.d_model, F = m->cfg.expert_ffn, UP = fk_config_gated(&m->cfg) ? 2 * F : F;
    memcpy(m->w + o->exp_up_w + dst * o->exp_up_stride, m->w + o->exp_up_w + src * o->exp_up_stride, (size_t)(UP * C) * sizeof(float));
    memcpy(m->w + o->exp_down_w + dst * o->exp_down_stride, m->w + o->exp_down_w + src * o->exp_down_stride, (size_t)(C * F) * sizeof(float));
    memcpy(m->w + o->router_w + dst * C, m->w + o->router_w + src * C, (size_t)C * sizeof(float));
}

// Mixtral-style, top-1 renormalised (every chosen expert weighs 1), 4 experts per layer with
// expert 3 a copy of expert 2 (weights and router row: the tie goes to expert 2, so 3 is never
// chosen). The analysis sees it (load 0, cosine 1), the groups put 2 and 3 together, and merging
// them leaves the logits unchanged.
static void dup_model(fk_model *m) {
    fk_config c;
    cfg_moe(&c, CFG_MOE_MIXTRAL, 30, 16, 8, 1);
    moe_model(m, &c, 7, 4);
    for (int l = 0; l < 2; l++) copy_expert(m, l, 2, 3);
}

static void test_merge_duplicates(void **s) {
    (void)s;
    fk_model m;
    dup_model(&m);
    fk_token_data d, test;
    random_tokens(&d, 3000, 30, 1);
    random_tokens(&test, 64, 30, 2);
    fk_analysis a;
    CHECK(fk_analyze(&m, &d, 16, 4, 0, 1, &a));
    fk_model cur;
    CHECK(fk_model_clone(&cur, &m));
    for (int l = 0; l < 2; l++) {
        double sum = 0;
        for (int e = 0; e < 4; e++) sum += a.expert_load[l][e];
        print_message("  layer %d: load %.3f %.3f %.3f %.3f, cos(2, 3) %.9f, cos(0, 1) %.3f\n", l, a.expert_load[l][0], a.expert_load[l][1],
                      a.expert_load[l][2], a.expert_load[l][3], a.expert_sim[l][2 * 4 + 3], a.expert_sim[l][0 * 4 + 1]);
        assert_true(fabs(sum - 1) < 1e-9);
        assert_true(a.expert_load[l][3] == 0 && a.expert_load[l][2] > 0);
        assert_true(a.expert_sim[l][2 * 4 + 3] > 1 - 1e-6);
        int32_t labels[4];
        CHECK(fk_expert_groups(&a, l, 3, labels));
        assert_int_equal(labels[2], labels[3]);
        assert_true(labels[0] != labels[1] && labels[0] != labels[2] && labels[1] != labels[2]);
        assert_true(fk_expert_merge_residual(&a, l, labels, 3) < 1e-12);
        fk_model next;
        CHECK(fk_fold_experts(&cur, l, labels, 3, a.expert_load[l], &next));
        fk_model_free(&cur);
        cur = next;
    }
    assert_int_equal(fk_config_experts(&cur.cfg, 0), 3);
    assert_int_equal(fk_config_experts(&cur.cfg, 1), 3);
    assert_int_equal(fk_model_num_params(&m) - fk_model_num_params(&cur), 2 * fk_expert_params(&m.cfg));
    double e = logit_diff(&m, &cur, &test);
    print_message("  experts 2 and 3 merged in both layers: logits differ by %.2e (relative to the largest)\n", e);
    assert_true(e < 1e-5);
    // the report: analysis.json has the experts
    CHECK(fk_analysis_save(&a, tpath("analysis")));
    char *js = slurp(tpath("analysis/analysis.json"), NULL);
    assert_non_null(strstr(js, "\"experts\""));
    free(js);
    fk_model_free(&cur);
    fk_analysis_free(&a);
    fk_data_free(&d); fk_data_free(&test);
    fk_model_free(&m);
}

// The whole fold (fk_fold_run) at a budget of one expert per layer: the plan takes exactly the
// merge of the duplicates in each layer, removes exactly the budget, and the probe's KL is 0.
// Pruning at the same budget drops expert 3 (load 0) in each layer: the logits stay too.
static void test_fold_run_budget(void **s) {
    (void)s;
    fk_model m;
    dup_model(&m);
    fk_token_data d, test;
    random_tokens(&d, 4000, 30, 3);
    random_tokens(&test, 64, 30, 4);
    int64_t step = fk_expert_params(&m.cfg), scope = fk_fold_scope_params(&m, FK_SCOPE_FFN);
    assert_int_equal(scope, fk_model_count_params(&m, FK_PARAMS_EXPERTS, FK_PARAMS_ANY_LAYER));  // no dense FFN
    fk_fold_run_opts o;
    fk_fold_run_defaults(&o);
    o.plan.budget = ((double)(2 * step) - 0.5) / (double)scope;
    o.plan.fold_edges = true;
    o.plan.layer_ops = false;
    o.seq = 16;
    fk_fold_result r;
    CHECK(fk_fold_run(&m, &d, &o, NULL, NULL, &r));
    print_message("  fold: removed %lld of %lld (budget %lld), probe KL %.3g\n", (long long)r.scope_removed, (long long)scope,
                  (long long)r.plan.budget_params, r.probe_kl);
    assert_int_equal(r.plan.budget_params, 2 * step);
    assert_int_equal(r.plan.removed_params, 2 * step);
    assert_int_equal(r.scope_removed, 2 * step);
    for (int l = 0; l < 2; l++) assert_int_equal(r.plan.experts_after[l], 3);
    assert_true(fabs(r.probe_kl) < 1e-9);
    assert_true(logit_diff(&m, &r.folded, &test) < 1e-5);
    char *js = fk_fold_plan_json(&r.plan);
    assert_non_null(strstr(js, "\"experts_after\":\t3"));
    free(js);
    fk_fold_result_free(&r);
    // expert pruning at the same budget
    fk_analysis a;
    CHECK(fk_analyze(&m, &d, 16, 4, 0, 1, &a));
    fk_model pr;
    int64_t removed = 0;
    CHECK(fk_prune(&m, &a, FK_PRUNE_EXPERTS, o.plan.budget, FK_SCOPE_FFN, &pr, &removed));
    assert_int_equal(removed, 2 * step);
    assert_int_equal(fk_config_experts(&pr.cfg, 0), 3);
    assert_int_equal(fk_config_experts(&pr.cfg, 1), 3);
    for (int l = 0; l < 2; l++)  // the kept experts are 0, 1, 2
        assert_memory_equal(pr.w + pr.layer[l].router_w, m.w + m.layer[l].router_w, (size_t)(3 * 16) * sizeof(float));
    double e = logit_diff(&m, &pr, &test);
    print_message("  prune: the unused expert dropped in both layers: logits differ by %.2e\n", e);
    assert_true(e < 1e-5);
    fk_model_free(&pr);
    // a budget that needs more experts than top-1 routing can spare
    assert_int_equal(fk_prune(&m, &a, FK_PRUNE_EXPERTS, 0.9, FK_SCOPE_FFN, &pr, &removed), FK_ERR_ARG);
    assert_non_null(strstr(fk_last_error(), "routed to"));
    fk_analysis_free(&a);
    fk_data_free(&d); fk_data_free(&test);
    fk_model_free(&m);
}

// Qwen2-MoE-style (shared experts behind a gate, a dense middle layer, top-2 unnormalised): a fold
// of 30% of the FFN scope (dense FFNs, shared experts and experts) meets the budget, merges
// experts, folds FFN units; the result trains (healing's mechanics).
// Expert merging and expert pruning at the same budget are compared on the held-out probe.
static void test_qwen2_moe_fold(void **s) {
    (void)s;
    fk_config c;
    cfg_moe(&c, CFG_MOE_QWEN2, 30, 16, 16, 2);
    fk_model m;
    moe_model(&m, &c, 11, 3);
    for (int l = 0; l < 3; l += 2) copy_expert(&m, l, 0, 1);  // a near-duplicate pair: expert 1 = expert 0, router row scaled
    for (int l = 0; l < 3; l += 2)
        for (int64_t i = 0; i < 16; i++) m.w[m.layer[l].router_w + 16 + i] *= 0.5f;
    fk_token_data d, test;
    random_tokens(&d, 6000, 30, 5);
    random_tokens(&test, 64, 30, 6);
    fk_fold_run_opts o;
    fk_fold_run_defaults(&o);
    o.plan.budget = 0.3;
    o.plan.fold_edges = true;
    o.plan.layer_ops = false;
    o.plan.round = 4;
    o.seq = 16;
    fk_fold_result r;
    CHECK(fk_fold_run(&m, &d, &o, NULL, NULL, &r));
    int64_t step = fk_expert_params(&c), merged = 0;
    for (int l = 0; l < 3; l++) {
        print_message("  layer %d: ffn %lld -> %lld, experts %lld -> %lld\n", l, (long long)r.plan.ffn_before[l], (long long)r.plan.ffn_after[l],
                      (long long)r.plan.experts_before[l], (long long)r.plan.experts_after[l]);
        assert_int_equal(fk_config_experts(&r.folded.cfg, l), r.plan.experts_after[l]);
        assert_true(r.plan.experts_after[l] >= (l == 1 ? 0 : 2));
        merged += r.plan.experts_before[l] - r.plan.experts_after[l];
    }
    print_message("  fold: removed %lld of %lld (budget %lld), %lld expert(s) merged, probe KL %.4g\n", (long long)r.scope_removed,
                  (long long)r.plan.scope_params, (long long)r.plan.budget_params, (long long)merged, r.probe_kl);
    assert_true(merged > 0);
    assert_true(r.scope_removed >= r.plan.budget_params && r.scope_removed < r.plan.budget_params + step);
    assert_int_equal(r.scope_removed, r.plan.removed_params);
    // the folded model trains
    fk_model back;
    CHECK(fk_model_clone(&back, &r.folded));
    CHECK(fk_model_alloc_grads(&back));
    float loss0 = 0, loss = 0;
    for (int it = 0; it < 8; it++) {  // healing's mechanics: steps of plain gradient descent lower the loss
        fk_model_zero_grads(&back);
        CHECK(fk_model_forward(&back, test.ids, test.ids + 1, 2, 16, true, &loss));
        CHECK(fk_model_backward(&back, 1.0f));
        if (it == 0) loss0 = loss;
        for (int64_t i = 0; i < back.n_floats; i++) back.w[i] -= 0.05f * back.g[i];
    }
    print_message("  training the folded model: loss %.4f -> %.4f\n", loss0, loss);
    assert_true(isfinite(loss) && loss < loss0);
    fk_model_free(&back);
    // expert pruning at the budget the fold met
    fk_analysis a;
    CHECK(fk_analyze(&m, &d, 16, 4, 0, 1, &a));
    fk_model pr;
    int64_t removed = 0;
    assert_int_equal(fk_prune(&m, &a, FK_PRUNE_MAGNITUDE, 0.3, FK_SCOPE_FFN, &pr, &removed), FK_ERR_ARG);  // channels of an MoE model
    assert_non_null(strstr(fk_last_error(), "mixture-of-experts"));
    CHECK(fk_prune(&m, &a, FK_PRUNE_EXPERTS, (double)merged * (double)step / (double)r.plan.scope_params, FK_SCOPE_FFN, &pr, &removed));
    assert_int_equal(removed, merged * step);
    fk_token_data held = d;
    held.ids += d.n - d.n / 10;
    held.n = d.n / 10;
    fk_kl_probe probe;
    CHECK(fk_kl_probe_init(&m, &held, 8, 16, &probe));
    fk_model fe;  // the fold's expert merges alone, for a like-with-like comparison
    fk_fold_plan experts_only = r.plan;
    for (int l = 0; l < 3; l++) { experts_only.ffn_after[l] = experts_only.ffn_before[l]; experts_only.group_after[l] = experts_only.group_before[l]; }
    CHECK(fk_fold_plan_apply_ffn(&m, &experts_only, &a, o.plan.ridge, &fe));
    double kl_merge, kl_prune;
    CHECK(fk_kl_probe_eval(&fe, &probe, &kl_merge));
    CHECK(fk_kl_probe_eval(&pr, &probe, &kl_prune));
    print_message("  %lld expert(s) out: merged KL %.4g, pruned (least used) KL %.4g\n", (long long)merged, kl_merge, kl_prune);
    assert_true(isfinite(kl_merge) && isfinite(kl_prune));
    fk_kl_probe_free(&probe);
    fk_model_free(&fe);
    fk_model_free(&pr);
    fk_analysis_free(&a);
    fk_fold_result_free(&r);
    fk_data_free(&d); fk_data_free(&test);
    fk_model_free(&m);
}

// A folded model whose layers keep different numbers of experts saves (config.json's
// fusekit_experts), loads back with them and computes the same logits.
static void test_folded_saves(void **s) {
    (void)s;
    fk_model m, f;
    dup_model(&m);
    int32_t labels[4] = {0, 1, 2, 2};
    double load[4] = {0.3, 0.3, 0.4, 0};
    CHECK(fk_fold_experts(&m, 1, labels, 3, load, &f));
    CHECK(fk_hf_save(&f, tpath("moe_folded"), FK_DT_F32));
    char *js = slurp(tpath("moe_folded/config.json"), NULL);
    assert_non_null(strstr(js, "fusekit_experts"));
    free(js);
    fk_model back;
    CHECK(fk_hf_load(&back, tpath("moe_folded")));
    assert_int_equal(fk_config_experts(&back.cfg, 0), 4);
    assert_int_equal(fk_config_experts(&back.cfg, 1), 3);
    fk_token_data test;
    random_tokens(&test, 64, 30, 2);
    assert_true(logit_diff(&f, &back, &test) == 0);
    assert_true(logit_diff(&m, &back, &test) < 1e-5);  // the duplicates merged
    fk_data_free(&test);
    fk_model_free(&back);
    fk_model_free(&f);
    fk_model_free(&m);
}

// What is not implemented, or impossible, is refused with a message.
static void test_refusals(void **s) {
    (void)s;
    fk_config c;
    cfg_moe(&c, CFG_MOE_QWEN2, 30, 16, 8, 2);
    fk_model m, out;
    moe_model(&m, &c, 3, 2);
    fk_token_data d;
    random_tokens(&d, 2000, 30, 9);
    int32_t labels[4] = {0, 0, 1, 1};
    assert_int_equal(fk_fold_experts(&m, 0, labels, 1, NULL, &out), FK_ERR_ARG);  // fewer experts than a token uses
    assert_non_null(strstr(fk_last_error(), "num_experts_per_tok"));
    assert_int_equal(fk_fold_experts(&m, 1, labels, 2, NULL, &out), FK_ERR_ARG);  // the dense layer
    assert_non_null(strstr(fk_last_error(), "not a mixture-of-experts layer"));
    int32_t bad[4] = {0, 1, 1, 3};
    assert_int_equal(fk_fold_experts(&m, 0, bad, 2, NULL, &out), FK_ERR_ARG);
    int32_t keep[2] = {1, 1};
    assert_int_equal(fk_prune_experts(&m, 0, keep, 2, &out), FK_ERR_ARG);
    // layer surgery cannot average an MoE layer with a dense one
    double coef[2 * 3] = {0.5, 0.5, 0, 0, 0, 1};
    assert_int_equal(fk_fold_layers(&m, 2, coef, &out), FK_ERR_ARG);
    assert_non_null(strstr(fk_last_error(), "differ"));
    // dropping a layer keeps the others' experts
    double drop[2 * 3] = {1, 0, 0, 0, 0, 1};
    CHECK(fk_fold_layers(&m, 2, drop, &out));
    assert_int_equal(fk_config_experts(&out.cfg, 0), 4);
    assert_int_equal(fk_config_experts(&out.cfg, 1), 4);
    assert_memory_equal(out.w + out.layer[1].exp_down_w + 3 * out.layer[1].exp_down_stride,
                        m.w + m.layer[2].exp_down_w + 3 * m.layer[2].exp_down_stride, (size_t)(16 * 8) * sizeof(float));
    fk_model_free(&out);
    // --uniform has no meaning for MoE layers
    fk_fold_run_opts o;
    fk_fold_run_defaults(&o);
    o.plan.uniform = true;
    o.seq = 16;
    fk_fold_result r;
    assert_int_equal(fk_fold_run(&m, &d, &o, NULL, NULL, &r), FK_ERR_ARG);
    assert_non_null(strstr(fk_last_error(), "--uniform"));
    fk_data_free(&d);
    fk_model_free(&m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_merge_duplicates),
        cmocka_unit_test(test_fold_run_budget),
        cmocka_unit_test(test_qwen2_moe_fold),
        cmocka_unit_test(test_folded_saves),
        cmocka_unit_test(test_refusals),
    };
    return cmocka_run_group_tests(tests, tmpdir_setup, tmpdir_teardown);
}
