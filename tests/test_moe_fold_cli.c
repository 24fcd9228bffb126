// End to end: folding a mixture-of-experts model as a user runs it. A tiny Mixtral-like model
// (config.json of model_type mixtral: 2 layers of 4 SwiGLU experts, top 2) is trained on
// Shakespeare through the CLI and saved as a folder; `analyze` reports each layer's experts,
// `fold --budget` merges experts and `prune --method experts` drops the least used at the same
// budget, both removing exactly the budget; the outputs reload (model_type fusekit with per-layer
// expert counts), evaluate with the KL to the original small, and fold again; budgets beyond the
// guards and --uniform are refused.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fusekit/fusekit.h"
#include "test_util.h"

#define CORPORA FK_SHARED_DATA "/corpora"

// 2 x 4 experts of width 32 at d_model 32: each expert (up 2 x 32 x 32, down 32 x 32) and its
// router row (32) are 3104 parameters of the FFN scope's 24832; 25% of it is two experts.
static const char mixtral_config[] =
    "{\"architectures\": [\"MixtralForCausalLM\"], \"model_type\": \"mixtral\", \"hidden_act\": \"silu\", \"hidden_size\": 32,\n"
    " \"intermediate_size\": 32, \"max_position_embeddings\": 64, \"num_attention_heads\": 4, \"num_key_value_heads\": 2,\n"
    " \"num_hidden_layers\": 2, \"num_local_experts\": 4, \"num_experts_per_tok\": 2, \"rms_norm_eps\": 1e-5,\n"
    " \"rope_theta\": 10000.0, \"tie_word_embeddings\": false, \"vocab_size\": 320}\n";
#define SCOPE 24832
#define EXPERT 3104

// The held-out evaluation of model: bits per byte and the KL to the original (0 for itself).
static void eval_kl(const char *model, double *bpb, double *kl) {
    char *out;
    if (run(&out, "%s eval --model %s --data %s --kl-to %s", FK_CLI, model, tpath("val.txt"), tpath("orig")) != 0)
        fail_msg("eval failed: %s", out);
    *bpb = json_num(out, "bpb");
    *kl = json_num(out, "kl");
    free(out);
}

// The folder's model reloaded: its experts per layer (each at least the top-k) and their sum;
// the parameter count matches what the command reported.
static int64_t reload_experts(const char *model, double params_after) {
    fk_model m;
    CHECK(fk_hf_load(&m, model));
    int64_t sum = 0;
    for (int64_t l = 0; l < m.cfg.n_layer; l++) {
        int64_t e = fk_config_experts(&m.cfg, l);
        assert_true(e >= m.cfg.n_expert_used && e <= 4);
        sum += e;
    }
    assert_int_equal(fk_model_num_params(&m), (int64_t)params_after);
    fk_model_free(&m);
    return sum;
}

// One budget-cutting command (fold or prune): exits 0, removes exactly `budget` of the scope
// (whole experts), and the output reloads with two experts fewer. Returns params_after.
static double cut(const char *what, const char *cmd_fmt, const char *dir) {
    char *out;
    int rc = run(&out, cmd_fmt, FK_CLI, tpath("orig"), tpath("train.txt"), tpath(dir));
    if (rc != 0) fail_msg("%s failed:\n%s", what, out);
    double removed = json_num(out, "scope_removed"), frac = json_num(out, "scope_removed_fraction");
    double before = json_num(out, "params_before"), after = json_num(out, "params_after");
    free(out);
    print_message("  %s: removed %.0f of %d (%.4f), parameters %.0f -> %.0f\n", what, removed, SCOPE, frac, before, after);
    assert_true(removed == 2 * EXPERT && frac >= 0.25 && frac < 0.2501);
    assert_true(before - after == removed);
    assert_int_equal(reload_experts(tpath(dir), after), 2 * 4 - 2);
    return after;
}

static void test_moe_fold_prune_cli(void **s) {
    (void)s;
    if (!fk_path_exists(CORPORA "/shakespeare/input.txt")) skip();
    size_t n;
    char *a = slurp(CORPORA "/shakespeare/input.txt", &n);
    assert_true(n > 200000);
    spit(tpath("train.txt"), a, 80000);
    spit(tpath("val.txt"), a + n - 15000, 15000);
    free(a);
    spit(tpath("mixtral.json"), mixtral_config, strlen(mixtral_config));
    const char *F = FK_CLI;
    RUN_OK("%s tokenizer train --data %s --vocab 320 -o %s", F, tpath("train.txt"), tpath("tok"));
    RUN_OK("%s train --data %s --tokenizer %s --config %s -o %s --ctx 64 --batch 8 --steps 60 --lr 3e-3 --eval-every 0 --log-every 1000 "
           "--val-frac 0",
           F, tpath("train.txt"), tpath("tok"), tpath("mixtral.json"), tpath("orig"));
    size_t cn;
    char *cfg = slurp(tpath("orig/config.json"), &cn);
    assert_non_null(strstr(cfg, "\"mixtral\""));
    free(cfg);
    assert_int_equal(reload_experts(tpath("orig"), 51616), 8);
    // analyze: one line per layer with its 4 experts' load range and most similar pair
    char *out;
    if (run(&out, "%s analyze --model %s --data %s -o %s", F, tpath("orig"), tpath("train.txt"), tpath("analysis")) != 0)
        fail_msg("analyze failed:\n%s", out);
    const char *p = out;
    for (int l = 0; l < 2; l++) {
        p = strstr(p, "{\"layer\":");
        assert_non_null(p);
        assert_int_equal((int)json_num(p, "layer"), l);
        assert_int_equal((int)json_num(p, "experts"), 4);
        double lo = json_num(p, "expert_load_min"), hi = json_num(p, "expert_load_max");
        assert_true(lo >= 0 && lo <= 0.25 && hi >= 0.25 && hi <= 1);  // shares of the choices: 1/4 on average
        assert_non_null(strstr(p, "\"most_similar_experts\":["));
        p++;
    }
    free(out);
    assert_true(fk_path_exists(tpath("analysis/analysis.json")) && fk_path_exists(tpath("analysis/stats.safetensors")));
    // merging and dropping experts at the same budget (2 layers: the edges may fold)
    cut("fold --budget 0.25", "%s fold --model %s --data %s --budget 0.25 --fold-edges -o %s", "folded");
    size_t pn;
    char *plan = slurp(tpath("folded/plan.json"), &pn);
    assert_non_null(strstr(plan, "\"experts_after\""));
    free(plan);
    cut("prune --method experts", "%s prune --model %s --data %s --method experts --budget 0.25 -o %s", "pruned");
    // the outputs evaluate; KL 0 for the original itself, small and positive for the cut models
    double b0, k0, bf, kf, bp, kp;
    eval_kl(tpath("orig"), &b0, &k0);
    eval_kl(tpath("folded"), &bf, &kf);
    eval_kl(tpath("pruned"), &bp, &kp);
    print_message("  bits per byte: original %.4f, merged %.4f (KL %.3g), pruned %.4f (KL %.3g)\n", b0, bf, kf, bp, kp);
    assert_true(fabs(k0) < 1e-9);
    assert_true(kf >= 0 && kf < 0.1 && kp >= 0 && kp < 0.1);
    assert_true(isfinite(bf) && isfinite(bp) && fabs(bf - b0) < 0.2 && fabs(bp - b0) < 0.2);
    // a folded model (model_type fusekit, experts [4, 2]) folds again: a whole expert of layer 0
    if (run(&out, "%s fold --model %s --data %s --budget 0.1 --fold-edges -o %s", F, tpath("folded"), tpath("train.txt"), tpath("folded2")) != 0)
        fail_msg("fold of the folded model failed:\n%s", out);
    assert_true(json_num(out, "scope_removed") == EXPERT);
    free(out);
    // refused, naming why: more than the guards allow (each layer keeps its top-k), --uniform
    RUN_FAILS(1, "guards allow", "%s fold --model %s --data %s --budget 0.9 --fold-edges -o %s", F, tpath("orig"), tpath("train.txt"), tpath("x"));
    RUN_FAILS(1, "more experts than", "%s prune --model %s --data %s --method experts --budget 0.9 -o %s", F, tpath("orig"), tpath("train.txt"),
              tpath("x"));
    RUN_FAILS(1, "--uniform is not implemented for mixture-of-experts", "%s fold --model %s --data %s --budget 0.25 --fold-edges --uniform -o %s",
              F, tpath("orig"), tpath("train.txt"), tpath("x"));
    assert_false(fk_path_exists(tpath("x/config.json")));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_moe_fold_prune_cli),
    };
    return cmocka_run_group_tests(tests, tmpdir_setup, tmpdir_teardown);
}
