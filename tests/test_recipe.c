// fusekit run: recipe files end to end. Parser errors name the file, line and column; wrong
// types, unknown verbs, keys and variables are refused naming the step and key (with "did you
// mean"), every step before any runs; the resolved recipe records every default and the inputs'
// SHA-256 (checked against sha256sum) and reruns to byte-identical models with another -o; a
// changed input or default is refused; outputs are kept without --force; a failing step stops
// the run naming it. The four examples/ resolve (--dry-run) and the tiny ones run. mergekit
// configs (ties / linear / task_arithmetic) map onto fusekit merge: the same merged weights as
// the merge command given by hand; keys without an equivalent are refused by name.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "test_util.h"

#define EXAMPLES FK_TEST_DATA "/../../examples"
#define TINY "--set bytes=4000 --set steps=12 --set threads=1"

static void write_text(const char *name, const char *text) { spit(tpath(name), text, strlen(text)); }

static bool same_file(const char *a, const char *b) {
    size_t na, nb;
    char *x = slurp(a, &na), *y = slurp(b, &nb);
    bool same = na == nb && memcmp(x, y, na) == 0;
    free(x);
    free(y);
    return same;
}

// Runs `fusekit run` on recipe text written to name; expects the exit code and the needles.
static void run_expect(const char *name, const char *text, int code, const char *needle, const char *needle2) {
    write_text(name, text);
    char *out;
    int rc = run(&out, "cd %s && %s run %s -o %s --dry-run", tmpdir, FK_CLI, name, tpath("dry"));
    if (rc != code) fail_msg("%s: exit %d, expected %d:\n%s", name, rc, code, out);
    if (needle && !strstr(out, needle)) fail_msg("%s: no '%s' in:\n%s", name, needle, out);
    if (needle2 && !strstr(out, needle2)) fail_msg("%s: no '%s' in:\n%s", name, needle2, out);
    free(out);
}

static void test_errors(void **s) {
    (void)s;
    // YAML and JSON syntax: file, line and column
    run_expect("bad.yaml", "steps:\n  - train: {data: a.txt\n  - eval: {}\n", 2, "bad.yaml:3:", "flow mapping");
    run_expect("bad.json", "{\"steps\": [\n  {\"train\": {\"data\": }}\n]}\n", 2, "bad.json:2:", "not valid JSON");
    run_expect("ok.json", "{\"steps\": [{\"data synth\": {\"out\": \"c\", \"bytes\": 2e3, \"force\": false}}]}\n", 0, "bytes: 2000", "force: false");
    run_expect("dup.yaml", "steps:\n  - train: {steps: 1, steps: 2}\n", 2, "dup.yaml:2:", "key 'steps' repeated");
    // shapes and types
    run_expect("nosteps.yaml", "vars: {a: 1}\n", 2, "steps must be a list", NULL);
    run_expect("top.yaml", "stepz: []\n", 2, "unknown key 'stepz' (did you mean 'steps'?)", NULL);
    run_expect("verb.yaml", "steps:\n  - trian: {data: a.txt}\n", 2, "step 1 (trian): unknown verb 'trian' (did you mean 'train'?)", NULL);
    run_expect("two.yaml", "steps:\n  - {train: {}, eval: {}}\n", 2, "step 1", "one verb");
    run_expect("key.yaml", "steps:\n  - data synth: {out: c}\n  - fuse: {target: a, data: b.txt, out: f, lamda: 0.5}\n", 2,
               "step 2 (fuse): unknown option 'lamda' (did you mean 'lambda'?)", "fusekit fuse --help");
    run_expect("list.yaml", "steps:\n  - train: {data: a.txt, out: o, lr: [0.1, 0.2]}\n", 2, "step 1 (train): option 'lr' takes one value, not a list", NULL);
    run_expect("flag.yaml", "steps:\n  - train: {data: a.txt, out: o, resume: \"yes\"}\n", 2, "option 'resume' is a flag: give true or false", NULL);
    run_expect("map.yaml", "steps:\n  - train: {data: {a: 1}, out: o}\n", 2, "option 'data' takes one value, not a mapping", NULL);
    // values: the verb's own messages, then the step named
    run_expect("range.yaml", "steps:\n  - train: {data: a.txt, out: o, lr: -1}\n", 2, "fusekit train: error: --lr must be > 0", "step 1 (train): invalid options");
    run_expect("choice.yaml", "steps:\n  - train: {data: a.txt, out: o, arch: gtp2}\n", 2, "--arch must be one of gpt2|llama", "step 1 (train)");
    run_expect("req.yaml", "steps:\n  - train: {out: o}\n", 2, "step 1 (train): option 'data' is required", NULL);
    run_expect("var.yaml", "steps:\n  - train: {data: \"${corpus}/a.txt\", out: o}\n", 2, "unknown variable ${corpus}", NULL);
    run_expect("same.yaml", "steps:\n  - data synth: {out: c}\n  - data synth: {out: c}\n", 2, "step 2 (data synth)", "as step 1 does");
    // nothing runs when a later step is wrong: the first step's output is not written
    write_text("late.yaml", "steps:\n  - data synth: {out: corpus, bytes: 2000}\n  - train: {data: corpus/mix/train.txt, out: m, steps: 0}\n");
    RUN_FAILS(2, "step 2 (train)", "cd %s && %s run late.yaml -o %s", tmpdir, FK_CLI, tpath("late"));
    char *out;
    assert_int_not_equal(run(&out, "test -e %s", tpath("late/corpus")), 0);
    free(out);
    // a step that fails at run time stops the run, named
    write_text("fails.yaml", "steps:\n  - eval: {model: missing-model, data: missing.txt}\n  - data synth: {out: corpus, bytes: 2000}\n");
    RUN_FAILS(1, "step 1 (eval): failed (exit 1); the steps after it were not run", "cd %s && %s run fails.yaml -o %s", tmpdir, FK_CLI, tpath("fails"));
    assert_int_not_equal(run(&out, "test -e %s", tpath("fails/corpus")), 0);
    free(out);
    // the command line's unknown options get the same hint
    RUN_FAILS(2, "unknown option --lamda (did you mean --lambda?)", "%s train --lamda 0.5", FK_CLI);
}

// A recipe over an input file of the recipe's folder: synthetic corpus, a model, its evaluation.
static const char tiny_recipe[] =
    "# tiny\n"
    "vars:\n  steps: 15\n"
    "steps:\n"
    "  - data synth: {out: corpus, bytes: 3000, probes: 5}\n"
    "  - train:\n"
    "      data: text.txt\n"
    "      val: corpus/mix/valid.txt\n"
    "      arch: llama\n      d-model: 32\n      layers: 2\n      heads: 2\n      ctx: 64\n"
    "      steps: ${steps}\n      batch: 2\n      threads: 1\n      out: model\n"
    "  - eval: {model: model, data: corpus/mix/test.txt, threads: 1}\n";

// The "bpb" of the last JSON line of out that has one.
static double last_bpb(const char *out) {
    const char *p = NULL;
    for (const char *q = strstr(out, "\"bpb\":"); q; q = strstr(q + 1, "\"bpb\":")) p = q;
    if (!p) fail_msg("no bpb in:\n%s", out);
    return atof(p + 6);
}

static void test_resolve_and_reproduce(void **s) {
    (void)s;
    char text[6000];
    for (size_t i = 0; i + 1 < sizeof text; i++) text[i] = "the quick brown fox jumps over the lazy dog\n"[i % 44];
    text[sizeof text - 1] = 0;
    write_text("text.txt", text);
    write_text("tiny.yaml", tiny_recipe);
    char *out, *sum;
    // --dry-run: every default, the input's hash as sha256sum gives it, nothing written
    assert_int_equal(run(&out, "cd %s && %s run tiny.yaml -o %s --dry-run", tmpdir, FK_CLI, tpath("A")), 0);
    assert_int_equal(run(&sum, "sha256sum %s | cut -c1-64", tpath("text.txt")), 0);
    sum[64] = 0;
    char line[400];
    snprintf(line, sizeof line, "\"%s\": \"%s\"", tpath("text.txt"), sum);
    if (!strstr(out, line)) fail_msg("no '%s' in:\n%s", line, out);
    assert_non_null(strstr(out, "lr: 0.0003"));            // train's default, recorded
    assert_non_null(strstr(out, "steps: 15"));             // the var substituted
    assert_non_null(strstr(out, "out: \"model\""));        // outputs relative: -o places them
    assert_non_null(strstr(out, "version: \"" ));
    free(out);
    assert_int_not_equal(run(&out, "test -e %s", tpath("A")), 0);
    free(out);
    // the run, then its resolved recipe rerun elsewhere: the same bytes
    assert_int_equal(run(&out, "cd %s && %s run tiny.yaml -o %s", tmpdir, FK_CLI, tpath("A")), 0);
    double bpb_a = last_bpb(out);
    free(out);
    assert_int_equal(run(&out, "cd / && %s run %s -o %s", FK_CLI, tpath("A/model/recipe.resolved.yaml"), tpath("B")), 0);
    double bpb_b = last_bpb(out);
    free(out);
    assert_true(same_file(tpath("A/model/model.safetensors"), tpath("B/model/model.safetensors")));
    assert_true(same_file(tpath("A/corpus/mix/test.txt"), tpath("B/corpus/mix/test.txt")));
    assert_true(bpb_a == bpb_b);
    assert_true(same_file(tpath("A/corpus/recipe.resolved.yaml"), tpath("A/model/recipe.resolved.yaml")));
    // outputs are kept without --force, replaced with it
    RUN_FAILS(2, "A/corpus exists (fusekit run --force replaces it)", "cd %s && %s run tiny.yaml -o %s", tmpdir, FK_CLI, tpath("A"));
    RUN_OK("cd %s && %s run tiny.yaml -o %s --force", tmpdir, FK_CLI, tpath("A"));
    assert_true(same_file(tpath("A/model/model.safetensors"), tpath("B/model/model.safetensors")));
    // a changed default and a changed input are refused on a rerun
    RUN_OK("cp %s %s && sed -i 's/      lr: 0.0003/      lr: 0.5/' %s", tpath("A/model/recipe.resolved.yaml"), tpath("lr.yaml"), tpath("lr.yaml"));
    RUN_FAILS(2, "the default of 'lr' is 0.0003 in this fusekit, the recipe recorded 0.5", "%s run %s -o %s", FK_CLI, tpath("lr.yaml"), tpath("C"));
    text[100] = 'X';
    write_text("text.txt", text);
    RUN_FAILS(2, "changed since the recipe was resolved", "%s run %s -o %s", FK_CLI, tpath("A/model/recipe.resolved.yaml"), tpath("C"));
    free(sum);
}

// Each example resolves (the real-model one with stand-in paths: nothing is read at --dry-run);
// the tiny ones run, and each output folder holds the resolved recipe.
static void test_examples(void **s) {
    (void)s;
    RUN_OK("FK_REAL_SMOLLM2=/nonexistent/smol.gguf FK_REAL_GEMMA3=/nonexistent/gemma.gguf %s run %s/fusellm_real.yaml -o %s --dry-run",
           FK_CLI, EXAMPLES, tpath("real"));
    RUN_FAILS(2, "unknown variable ${FK_REAL_SMOLLM2}", "env -u FK_REAL_SMOLLM2 %s run %s/fusellm_real.yaml -o %s --dry-run", FK_CLI, EXAMPLES, tpath("real"));
    static const char *const names[] = {"fold_heal", "merge", "ensemble_eval"};
    static const char *const outs[] = {"folded", "merged", "bpe-model"};
    for (int i = 0; i < 3; i++) {
        RUN_OK("%s run %s/%s.yaml -o %s --dry-run " TINY, FK_CLI, EXAMPLES, names[i], tpath(names[i]));
        RUN_OK("%s run %s/%s.yaml -o %s " TINY " --set heal_steps=3 --set tune_steps=4", FK_CLI, EXAMPLES, names[i], tpath(names[i]));
        char p[200];
        snprintf(p, sizeof p, "%s/%s/recipe.resolved.yaml", names[i], outs[i]);
        RUN_OK("test -s %s", tpath(p));
    }
}

// mergekit configs: the same merged weights as fusekit merge given the options by hand.
static void check_mergekit(const char *name, const char *config, const char *by_hand) {
    char cfg[100], a[100], b[100];
    snprintf(cfg, sizeof cfg, "%s.yml", name);
    write_text(cfg, config);
    snprintf(a, sizeof a, "%s-run", name);
    snprintf(b, sizeof b, "%s-hand", name);
    RUN_OK("%s run %s -o %s", FK_CLI, tpath(cfg), tpath(a));
    RUN_OK("%s merge %s -o %s", FK_CLI, by_hand, tpath(b));
    char ma[200], mb[200];
    snprintf(ma, sizeof ma, "%s/model.safetensors", a);
    snprintf(mb, sizeof mb, "%s/model.safetensors", b);
    assert_true(same_file(tpath(ma), tpath(mb)));
    snprintf(ma, sizeof ma, "%s/recipe.resolved.yaml", a);
    RUN_OK("test -s %s", tpath(ma));
}

static void test_mergekit(void **s) {
    (void)s;
    // three models of one architecture: merge.yaml's base and two fine-tunes (test_examples ran it)
    char base[300], arith[300], facts[300], cfg[2000], hand[1200];
    snprintf(base, sizeof base, "%s", tpath("merge/base"));
    snprintf(arith, sizeof arith, "%s", tpath("merge/arith"));
    snprintf(facts, sizeof facts, "%s", tpath("merge/facts"));
    snprintf(cfg, sizeof cfg,
             "models:\n  - model: %s\n    # no parameters necessary for base model\n"
             "  - model: %s\n    parameters:\n      density: 0.5\n      weight: 0.6\n"
             "  - model: %s\n    parameters:\n      density: 0.5\n      weight: 0.4\n"
             "merge_method: ties\nbase_model: %s\nparameters:\n  normalize: true\n  int8_mask: true\ndtype: float32\n",
             base, arith, facts, base);
    snprintf(hand, sizeof hand, "--method ties --base %s --model %s --weight 0.6 --model %s --weight 0.4 --density 0.5 --normalize --dtype f32", base, arith, facts);
    check_mergekit("ties", cfg, hand);
    RUN_OK("%s merge --config %s -o %s", FK_CLI, tpath("ties.yml"), tpath("ties-config"));  // merge --config: the same
    assert_true(same_file(tpath("ties-config/model.safetensors"), tpath("ties-hand/model.safetensors")));
    RUN_FAILS(2, "--method and --config", "%s merge --config %s --method ties -o %s", FK_CLI, tpath("ties.yml"), tpath("ties-x"));
    snprintf(cfg, sizeof cfg, "models:\n  - model: %s\n    parameters:\n      weight: 1.0\n  - model: %s\n    parameters:\n      weight: 0.5\nmerge_method: linear\ndtype: float16\n", arith, facts);
    snprintf(hand, sizeof hand, "--method linear --model %s --weight 1.0 --model %s --weight 0.5 --dtype f16", arith, facts);
    check_mergekit("linear", cfg, hand);
    snprintf(cfg, sizeof cfg,
             "base_model: %s\nmerge_method: task_arithmetic\nmodels:\n  - model: %s\n    parameters: {weight: 0.7}\n"
             "  - model: %s\n    parameters: {weight: 0.3}\nparameters:\n  lambda: 0.8\ndtype: bfloat16\n",
             base, arith, facts);
    snprintf(hand, sizeof hand, "--method task-arithmetic --base %s --model %s --weight 0.7 --model %s --weight 0.3 --lambda 0.8 --dtype bf16", base, arith, facts);
    check_mergekit("ta", cfg, hand);
    // what has no fusekit equivalent is refused by name
    static const char *const refused[][2] = {
        {"models:\n  - model: a\nmerge_method: ties\nbase_model: b\ntokenizer_source: union\n", "'tokenizer_source'"},
        {"models:\n  - model: a\nmerge_method: slerp\nbase_model: b\n", "merge_method 'slerp'"},
        {"models:\n  - model: a\n    parameters: {density: 0.5}\n  - model: c\n    parameters: {density: 0.7}\nmerge_method: ties\nbase_model: b\n", "densities differ"},
        {"models:\n  - model: a\n    parameters:\n      weight:\n        - filter: mlp\n          value: 0.5\n        - value: 0\nmerge_method: ties\nbase_model: b\n", "per-layer gradients"},
        {"models:\n  - model: a\n    parameters: {weight: 1, epsilon: 0.1}\nmerge_method: linear\n", "'epsilon'"},
        {"models:\n  - model: a\nmerge_method: linear\ndtype: int8\n", "dtype 'int8'"},
    };
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
        write_text("refused.yml", refused[i][0]);
        RUN_FAILS(2, refused[i][1], "%s run %s -o %s", FK_CLI, tpath("refused.yml"), tpath("refused-out"));
    }
    RUN_FAILS(2, "needs -o DIR", "%s run %s", FK_CLI, tpath("ties.yml"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_resolve_and_reproduce),
        cmocka_unit_test(test_examples),
        cmocka_unit_test(test_mergekit),
    };
    return cmocka_run_group_tests(tests, tmpdir_setup, tmpdir_teardown);
}
