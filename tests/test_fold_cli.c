// End to end: folding as a user runs it. A small Llama-style model trained on Shakespeare is
// planned (--plan-only changes nothing), folded by a budget, pruned by each baseline at the same
// budget, healed by distillation (which must lower its held-out bits per byte), and folded
// progressively in two rounds; bad arguments give clear errors.
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


static double eval_bpb(const char *model) {
    char *out;
    if (run(&out, "%s eval --model %s --data %s", FK_CLI, model, tpath("val.txt")) != 0) fail_msg("eval failed: %s", out);
    double b = json_num(out, "bpb");
    free(out);
    return b;
}

static void test_fold_heal_prune(void **s) {
    (void)s;
    if (!fk_path_exists(CORPORA "/shakespeare/input.txt")) skip();
    size_t n;
    char *a = slurp(CORPORA "/shakespeare/input.txt", &n);
    assert_true(n > 300000);
    spit(tpath("train.txt"), a, 150000);
    spit(tpath("val.txt"), a + n - 20000, 20000);
    free(a);
    const char *F = FK_CLI;
    RUN_OK("%s tokenizer train --data %s --vocab 384 -o %s", F, tpath("train.txt"), tpath("tok"));
    RUN_OK("%s train --data %s --tokenizer %s -o %s --arch llama --d-model 64 --layers 4 --heads 4 --kv-heads 2 --ffn 192 --ctx 64 --batch 16 "
           "--steps 300 --lr 3e-3 --eval-every 0 --log-every 1000 --val-frac 0",
           F, tpath("train.txt"), tpath("tok"), tpath("orig"));
    double b0 = eval_bpb(tpath("orig"));
    // --plan-only: plan.json, no model
    char *out;
    int rc = run(&out, "%s fold --model %s --data %s --budget 0.3 --plan-only -o %s", F, tpath("orig"), tpath("train.txt"), tpath("plan"));
    if (rc != 0) fail_msg("fold --plan-only failed:\n%s", out);
    free(out);
    assert_true(fk_path_exists(tpath("plan/plan.json")));
    assert_false(fk_path_exists(tpath("plan/config.json")));
    size_t pn;
    char *plan = slurp(tpath("plan/plan.json"), &pn);
    assert_non_null(strstr(plan, "\"ffn_after\""));
    free(plan);
    // fold by the budget
    rc = run(&out, "%s fold --model %s --data %s --budget 0.3 -o %s", F, tpath("orig"), tpath("train.txt"), tpath("folded"));
    if (rc != 0) fail_msg("fold failed:\n%s", out);
    double frac = json_num(out, "scope_removed_fraction"), kl = json_num(out, "probe_kl");
    free(out);
    assert_true(frac >= 0.3 && frac < 0.36);
    assert_true(kl > 0 && kl < 1);
    fk_model fm;
    CHECK(fk_hf_load(&fm, tpath("folded")));
    assert_int_equal(fm.cfg.ffn[0], 192);  // the edges are left alone
    assert_int_equal(fm.cfg.ffn[3], 192);
    assert_true(fm.cfg.ffn[1] < 192 || fm.cfg.ffn[2] < 192 || fm.cfg.n_layer < 4);
    fk_model_free(&fm);
    double bf = eval_bpb(tpath("folded"));
    // KL to the original over the evaluation's positions: 0 for the original itself
    rc = run(&out, "%s eval --model %s --data %s --kl-to %s", F, tpath("folded"), tpath("val.txt"), tpath("orig"));
    if (rc != 0) fail_msg("eval --kl-to failed:\n%s", out);
    double klf = json_num(out, "kl");
    free(out);
    rc = run(&out, "%s eval --model %s --data %s --kl-to %s", F, tpath("orig"), tpath("val.txt"), tpath("orig"));
    if (rc != 0) fail_msg("eval --kl-to failed:\n%s", out);
    assert_true(fabs(json_num(out, "kl")) < 1e-9);
    free(out);
    assert_true(klf > 0 && klf < 0.5);
    // the same plan with the medoids of correlation clusters kept (least squares, and mean-sum)
    const char *variants[] = {"--select medoid", "--method mean-sum"};
    for (int i = 0; i < 2; i++) {
        rc = run(&out, "%s fold --model %s --data %s --budget 0.3 %s -o %s --force", F, tpath("orig"), tpath("train.txt"), variants[i], tpath("variant"));
        if (rc != 0) fail_msg("fold %s failed:\n%s", variants[i], out);
        double kv = json_num(out, "probe_kl"), fv = json_num(out, "scope_removed_fraction");
        free(out);
        print_message("  fold %s: probe KL %.4g (greedy least squares %.4g)\n", variants[i], kv, kl);
        assert_true(fv >= 0.3 && kv > 0 && kv < 1);
    }
    // the baselines at the same budget
    const char *methods[] = {"magnitude", "flap", "shortgpt"};
    for (int i = 0; i < 3; i++) {
        char dir[64];
        snprintf(dir, sizeof dir, "prune_%s", methods[i]);
        rc = run(&out, "%s prune --model %s --data %s --method %s --budget 0.3 -o %s", F, tpath("orig"), tpath("train.txt"), methods[i], tpath(dir));
        if (rc != 0) fail_msg("prune %s failed:\n%s", methods[i], out);
        double fr = json_num(out, "scope_removed_fraction");
        assert_true(fr >= 0.3);
        // an overshoot past the budget (whole layers) is said on stderr, naming the method and --params
        if (fr > 1.1 * 0.3) assert_non_null(strstr(out, "warning: shortgpt removed"));
        else assert_null(strstr(out, "warning:"));
        if (fr > 1.1 * 0.3) assert_non_null(strstr(out, "--params"));
        free(out);
        print_message("  %s: removed %.3f of the FFN scope, held-out bits per byte %.4f\n", methods[i], fr, eval_bpb(tpath(dir)));
    }
    // healing by distillation from the original
    RUN_OK("%s heal --teacher %s --model %s --data %s -o %s --steps 60 --batch 16 --lr 3e-4 --eval-every 0 --log-every 1000 --val-frac 0", F,
           tpath("orig"), tpath("folded"), tpath("train.txt"), tpath("healed"));
    double bh = eval_bpb(tpath("healed"));
    print_message("  bits per byte: original %.4f, folded %.4f, healed %.4f\n", b0, bf, bh);
    assert_true(bf >= b0 - 1e-3);
    assert_true(bh < bf);
    // progressive: two rounds of fold -> heal
    rc = run(&out, "%s fold --model %s --data %s --budget 0.3 --rounds 2 --heal-steps 60 -o %s -- --batch 16 --lr 3e-4 --eval-every 0 --log-every 1000 --val-frac 0",
             F, tpath("orig"), tpath("train.txt"), tpath("progressive"));
    if (rc != 0) fail_msg("fold --rounds failed:\n%s", out);
    {
        // the last JSON line sums up the run: both rounds' removals against the original's scope,
        // each round's KL to its own input
        const char *last = strstr(out, "\"rounds\":2");
        if (!last) fail_msg("no summary of the rounds:\n%s", out);
        const char *line = last;
        while (line > out && line[-1] != '\n') line--;
        double frac = json_num(line, "scope_removed_fraction");
        assert_true(frac >= 0.3 && frac < 0.45);
        assert_non_null(strstr(line, "\"round_probe_kl\":["));
        assert_non_null(strstr(out, "fold: 2 rounds removed"));
        assert_true(json_num(line, "params_after") < json_num(line, "params_before"));
    }
    free(out);
    assert_true(fk_path_exists(tpath("progressive/round-1/folded/config.json")));
    assert_true(fk_path_exists(tpath("progressive/round-1/healed/config.json")));
    assert_true(fk_path_exists(tpath("progressive/round-2/folded/plan.json")));
    double bp = eval_bpb(tpath("progressive"));
    print_message("  progressive (2 rounds, 60 healing steps): %.4f\n", bp);
    assert_true(bp < bf);
    // bad arguments
    RUN_FAILS(2, "--budget", "%s fold --model %s --data %s --budget 1.5 -o %s", F, tpath("orig"), tpath("train.txt"), tpath("x"));
    RUN_FAILS(1, "guards", "%s fold --model %s --data %s --budget 0.9 -o %s", F, tpath("orig"), tpath("train.txt"), tpath("x"));
    RUN_FAILS(1, "nowhere", "%s fold --model %s --data %s -o %s", F, tpath("nowhere"), tpath("train.txt"), tpath("x"));
    RUN_FAILS(2, NULL, "%s prune --model %s --data %s --method random -o %s", F, tpath("orig"), tpath("train.txt"), tpath("x"));
    // healing's checks come before any folding: an -o holding a model but no run is refused first
    RUN_FAILS(2, "no training run", "%s fold --model %s --data %s --budget 0.3 --heal-steps 2 -o %s", F, tpath("orig"), tpath("train.txt"),
              tpath("folded"));
    assert_false(fk_path_exists(tpath("folded/round-1")));
    RUN_FAILS(2, "--resume is set by fold itself", "%s fold --model %s --data %s --budget 0.3 --heal-steps 2 -o %s -- --resume", F,
              tpath("orig"), tpath("train.txt"), tpath("x"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fold_heal_prune),
    };
    return cmocka_run_group_tests(tests, tmpdir_setup, tmpdir_teardown);
}
