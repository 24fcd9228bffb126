// End to end: `fusekit demo --quick`, as a newcomer runs it. Three sources with different
// tokenizers (byte-level BPE 384 and 768, SentencePiece-style 512) and architectures (Llama,
// GPT-2) are trained on their domains, fused, compared with the CLM-only baseline, folded and
// healed. The fused model must beat the baseline and every source on mean held-out bits per
// byte; the folded model must have fewer parameters; the report must be a self-contained page;
// commands.sh must hold commands that fusekit runs to the same files. test_demo_protocol runs
// the tuning / replication / controls protocol on a tiny schedule and checks its structure.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fusekit/fusekit.h"
#include "test_util.h"

static const cJSON *model_named(const cJSON *models, const char *name) {
    const cJSON *m;
    cJSON_ArrayForEach(m, models) {
        const cJSON *n = cJSON_GetObjectItem(m, "name");
        if (cJSON_IsString(n) && strcmp(n->valuestring, name) == 0) return m;
    }
    fail_msg("no model %s in results.json", name);
    return NULL;
}

static double num(const cJSON *o, const char *key) {
    const cJSON *v = cJSON_GetObjectItem(o, key);
    if (!cJSON_IsNumber(v)) fail_msg("results.json: %s is not a number", key);
    return v->valuedouble;
}

// Reruns the line of demo/commands.sh commented "# log", its -o pointed at <tmpdir>/to, with the
// fusekit program on PATH: what it writes must be the demo's folder `from`, file for file.
static void rerun_step(const char *log, const char *from, const char *to) {
    char bin[512];
    snprintf(bin, sizeof bin, "%s", FK_CLI);
    *strrchr(bin, '/') = 0;
    const char *script = tpath("rerun.sh");
    RUN_OK("grep -- '  # %s$' '%s' | sed \"s|'-o' '[^']*'|'-o' '%s'|\" > '%s' && test \"$(wc -l < '%s')\" = 1 && "
           "PATH='%s':\"$PATH\" sh -e '%s' && diff -r '%s' '%s'",
           log, tpath("demo/commands.sh"), tpath(to), script, script, bin, script, tpath(from), tpath(to));
}

// The JSON file at tpath(rel), parsed (for cJSON_Delete).
static cJSON *read_json(const char *rel) {
    size_t n;
    char *text = slurp(tpath(rel), &n);
    cJSON *r = cJSON_Parse(text);
    free(text);
    assert_non_null(r);
    return r;
}

// The tuning in results.json: every arm has exactly trials_per_arm trials, and its chosen trial
// is the argmin of the recorded validation scores (the first on ties). Returns the arm count.
static int check_tuning(const cJSON *r, int trials) {
    const cJSON *tu = cJSON_GetObjectItem(r, "tuning");
    assert_int_equal((int)num(tu, "trials_per_arm"), trials);
    const cJSON *arms = cJSON_GetObjectItem(tu, "arms"), *a;
    cJSON_ArrayForEach(a, arms) {
        const cJSON *tr = cJSON_GetObjectItem(a, "trials"), *t;
        assert_int_equal(cJSON_GetArraySize(tr), trials);
        int i = 0, best = -1;
        double bv = INFINITY;
        cJSON_ArrayForEach(t, tr) {
            double v = num(t, "valid_bpb");
            assert_true(isfinite(v) && v > 0);
            if (v < bv) { bv = v; best = i; }
            i++;
        }
        if ((int)num(a, "chosen") != best)
            fail_msg("arm %s: chosen %d, argmin %d", cJSON_GetObjectItem(a, "name")->valuestring, (int)num(a, "chosen"), best);
    }
    return cJSON_GetArraySize(arms);
}

// Each model's mean and sd are those of its per-seed figures (fk_stats_mean_sd), n seeds each;
// *per gets model name's per-seed mean bpb.
static void seed_points(const cJSON *models, const char *name, int n, double *per) {
    const cJSON *m = model_named(models, name), *sd = cJSON_GetObjectItem(m, "seeds"), *e;
    assert_int_equal(cJSON_GetArraySize(sd), n);
    int i = 0;
    cJSON_ArrayForEach(e, sd) per[i++] = num(e, "mean_bpb");
    double mean, dev;
    fk_stats_mean_sd(per, n, &mean, &dev);
    assert_true(fabs(mean - num(m, "mean_bpb")) < 1e-12);
    assert_true(fabs(dev - num(m, "mean_bpb_sd")) < 1e-12);
}

static void test_demo_quick(void **s) {
    (void)s;
    char *out;
    int rc = run(&out, "%s demo --quick -o %s", FK_CLI, tpath("demo"));
    if (rc != 0) fail_msg("demo --quick failed:\n%s", out);
    // the table on stdout names every model
    const char *names[] = {"A", "B", "C", "baseline", "fused", "folded"};
    assert_non_null(strstr(out, "mean bpb"));
    assert_non_null(strstr(out, "fused vs baseline"));
    free(out);

    size_t n;
    cJSON *r = read_json("demo/results.json");
    const cJSON *models = cJSON_GetObjectItem(r, "models");
    assert_int_equal(cJSON_GetArraySize(models), 6);
    double mean[6];
    for (int i = 0; i < 6; i++) {
        const cJSON *m = model_named(models, names[i]);
        mean[i] = num(m, "mean_bpb");
        assert_true(isfinite(mean[i]) && mean[i] > 0.1 && mean[i] < 8);
        // per-domain numbers average to the mean
        const cJSON *bpb = cJSON_GetObjectItem(m, "bpb");
        double sum = 0;
        for (int k = 0; k < FK_SYNTH_N_DOMAINS; k++) sum += num(bpb, fk_synth_domains[k]);
        assert_true(fabs(sum / FK_SYNTH_N_DOMAINS - mean[i]) < 1e-9);
        double acc = num(m, "mean_accuracy");
        assert_true(acc >= 0 && acc <= 1);
        assert_true(num(m, "tokens_per_s") > 0);
    }
    // the claims: fused beats the CLM-only baseline and every source
    double fused = mean[4];
    print_message("mean bpb: A %.4f B %.4f C %.4f baseline %.4f fused %.4f folded %.4f\n", mean[0], mean[1], mean[2], mean[3], fused, mean[5]);
    for (int i = 0; i < 4; i++) assert_true(fused < mean[i]);
    // the sources differ in tokenizer and architecture
    assert_string_equal(cJSON_GetObjectItem(model_named(models, "B"), "tokenizer")->valuestring, "spm 512");
    assert_non_null(strstr(cJSON_GetObjectItem(model_named(models, "A"), "tokenizer")->valuestring, "bpe 384"));
    assert_non_null(strstr(cJSON_GetObjectItem(model_named(models, "C"), "arch")->valuestring, "gpt2"));
    assert_non_null(strstr(cJSON_GetObjectItem(model_named(models, "B"), "arch")->valuestring, "llama"));
    // folding removed FFN parameters and kept the model usable (within 5% of the fused model)
    const cJSON *fo = model_named(models, "folded"), *fu = model_named(models, "fused");
    assert_true(num(fo, "ffn_params") <= 0.8 * num(fu, "ffn_params"));
    assert_true(num(fo, "params") < num(fu, "params"));
    assert_true(mean[5] < 1.05 * fused);
    // teacher shares: three teachers, summing to one
    const cJSON *sh = cJSON_GetObjectItem(r, "teacher_shares"), *e;
    double tot = 0;
    assert_int_equal(cJSON_GetArraySize(sh), 3);
    cJSON_ArrayForEach(e, sh) tot += e->valuedouble;
    assert_true(fabs(tot - 1) < 1e-6);
    cJSON_Delete(r);

    // report.html: self-contained (no scripts, no external resources), with every chart
    char *html = slurp(tpath("demo/report.html"), &n);
    assert_null(strstr(html, "<script"));
    assert_null(strstr(html, "http://www.w3.org/1999/xhtml\" src"));
    assert_null(strstr(html, "src="));
    assert_null(strstr(html, "href="));
    const char *charts[] = {"bits per byte per domain", "Probe accuracy", "Training: held-out", "Fusion weights",
                            "Layer similarity", "Fold plan: FFN width"};
    for (size_t i = 0; i < sizeof charts / sizeof *charts; i++) {
        if (!strstr(html, charts[i])) fail_msg("report.html lacks the chart '%s'", charts[i]);
    }
    int svgs = 0;
    for (const char *p = html; (p = strstr(p, "<svg")); p++) svgs++;
    assert_true(svgs >= 8);
    assert_non_null(strstr(html, "Δ mean bpb vs baseline"));  // the delta column
    assert_non_null(strstr(html, "stroke-dasharray='4 3'><title>chance"));  // chance lines on the probe accuracies
    free(html);
    // well-formed (every tag closed), as test_reports checks the verbs' pages
    if (system("command -v xmllint > /dev/null 2>&1") == 0) RUN_OK("xmllint --noout %s", tpath("demo/report.html"));
    // every step is a command a user can rerun, and each left its log
    char *cmds = slurp(tpath("demo/commands.sh"), &n);
    assert_non_null(strstr(cmds, "'fuse'"));
    assert_non_null(strstr(cmds, "'fold'"));
    assert_non_null(strstr(cmds, "'--kind' 'spm'"));
    free(cmds);
    // and fusekit accepts them: the corpus and a tokenizer rerun from their lines are the demo's
    rerun_step("synth", "demo/data", "rerun-data");
    rerun_step("tokenizer-B", "demo/tokenizers/B", "rerun-tok-B");
    assert_true(fk_path_exists(tpath("demo/logs/08-fuse.log")));
    assert_true(fk_path_exists(tpath("demo/models/fused/config.json")));
    // the protocol: fused, baseline and folded tuned with 4 trials each on the validation splits
    r = read_json("demo/results.json");
    assert_int_equal(check_tuning(r, 4), 3);
    cJSON_Delete(r);
}

// The protocol on a tiny schedule (numbers meaningless): two seeds, the controls, every arm
// tuned with the same number of trials, the choices the argmin of the validation scores, means,
// sds and paired intervals recomputed from the per-seed figures with fusekit/stats.h.
static void test_demo_protocol(void **s) {
    (void)s;
    char *out;
    int rc = run(&out, "%s demo --tiny --seeds 2 --controls -o %s", FK_CLI, tpath("proto"));
    if (rc != 0) fail_msg("demo --tiny --seeds 2 --controls failed:\n%s", out);
    assert_non_null(strstr(out, "fused - baseline"));
    assert_non_null(strstr(out, "folded - healed"));
    free(out);
    size_t n;
    cJSON *r = read_json("proto/results.json");
    const char *arms[] = {"baseline", "fused", "folded", "self", "B+A", "B+C", "shuffled", "replay", "healed"};
    assert_int_equal(check_tuning(r, 2), 9);
    const cJSON *models = cJSON_GetObjectItem(r, "models");
    assert_int_equal(cJSON_GetArraySize(models), 12);
    double per[9][2];
    for (int i = 0; i < 9; i++) seed_points(models, arms[i], 2, per[i]);
    // every paired interval is fk_stats_paired_ci of the per-seed figures
    const cJSON *pairs = cJSON_GetObjectItem(r, "paired"), *p;
    assert_int_equal(cJSON_GetArraySize(pairs), 7);  // fused - 6 others, folded - healed
    cJSON_ArrayForEach(p, pairs) {
        int a = -1, b = -1;
        for (int i = 0; i < 9; i++) {
            if (strcmp(cJSON_GetObjectItem(p, "a")->valuestring, arms[i]) == 0) a = i;
            if (strcmp(cJSON_GetObjectItem(p, "b")->valuestring, arms[i]) == 0) b = i;
        }
        assert_true(a >= 0 && b >= 0);
        double d, lo, hi;
        CHECK(fk_stats_paired_ci(per[a], per[b], 2, 0.95, &d, &lo, &hi));
        assert_true(fabs(d - num(p, "mean_diff")) < 1e-12 && fabs(lo - num(p, "lo")) < 1e-12 && fabs(hi - num(p, "hi")) < 1e-12);
        assert_int_equal((int)num(p, "n"), 2);
    }
    // replay: the baseline's steps plus the extraction's FLOPs as steps
    const cJSON *rp = cJSON_GetObjectItem(r, "replay");
    assert_true(num(rp, "steps") > num(rp, "fused_steps") && num(rp, "extraction_flops") > 0);
    cJSON_Delete(r);
    // the second seed's models are trained once each, with the chosen settings; the first's are the chosen trials
    char *cmds = slurp(tpath("proto/commands.sh"), &n);
    int mv = 0;
    for (const char *q = cmds; (q = strstr(q, "\nmv ")); q++) mv++;
    assert_int_equal(mv, 9);
    assert_non_null(strstr(cmds, "  # seed-2/fuse\n"));
    assert_non_null(strstr(cmds, "  # seed-2/healed\n"));
    free(cmds);
    assert_true(fk_path_exists(tpath("proto/seeds/2/models/shuffled/config.json")));
    assert_true(fk_path_exists(tpath("proto/models/self/config.json")));
    char *html = slurp(tpath("proto/report.html"), &n);
    const char *charts[] = {"Paired differences per seed", "one dot per seed", "Tuning trials", "95% t interval"};
    for (size_t i = 0; i < sizeof charts / sizeof *charts; i++)
        if (!strstr(html, charts[i])) fail_msg("report.html lacks '%s'", charts[i]);
    free(html);
}

// A folder that is not a demo's is never cleaned: the demo refuses it.
static void test_demo_foreign_folder(void **s) {
    (void)s;
    char *out;
    CHECK(fk_mkdir_p(tpath("mine/models")));
    spit(tpath("mine/models/keep.txt"), "x", 1);
    assert_int_not_equal(run(&out, "%s demo --quick -o %s", FK_CLI, tpath("mine")), 0);
    assert_non_null(strstr(out, "not a fusekit demo folder"));
    free(out);
    assert_true(fk_path_exists(tpath("mine/models/keep.txt")));
}

static void test_demo_bad_args(void **s) {
    (void)s;
    char *out;
    assert_int_not_equal(run(&out, "%s demo --quick --nonsense", FK_CLI), 0);
    assert_non_null(strstr(out, "--nonsense"));
    free(out);
    // an output folder that cannot be created
    spit(tpath("file"), "x", 1);
    assert_int_not_equal(run(&out, "%s demo --quick -o %s/sub", FK_CLI, tpath("file")), 0);
    assert_non_null(strstr(out, "error"));
    free(out);
    // --seeds out of range, before any work
    assert_int_not_equal(run(&out, "%s demo --quick --seeds 0 -o %s", FK_CLI, tpath("s0")), 0);
    assert_non_null(strstr(out, "--seeds"));
    free(out);
    assert_false(fk_path_exists(tpath("s0/commands.sh")));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_demo_bad_args),
        cmocka_unit_test(test_demo_foreign_folder),
        cmocka_unit_test(test_demo_quick),
        cmocka_unit_test(test_demo_protocol),
    };
    return cmocka_run_group_tests(tests, tmpdir_setup, tmpdir_teardown);
}
