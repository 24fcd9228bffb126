// End to end: knowledge fusion across tokenizers and architectures as a user runs it.
// Two sources, each trained on its own domain with its own tokenizer (Shakespeare with a
// GPT-2-style model, Linux C code with a Llama-style model), are fused into a target with a
// third tokenizer by `fusekit fuse`; the CLM-only control trains the same target on the same
// data for the same steps. The fused model must reach lower held-out bits per byte. Also:
// the ensemble evaluation, teacher stores refused for another corpus, and distillation.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fusekit/fusekit.h"
#include "test_util.h"

#define CORPORA FK_SHARED_DATA "/corpora"




static double eval_bpb(const char *model, const char *data) {
    char *out;
    if (run(&out, "%s eval --model %s --data %s", FK_CLI, model, data) != 0) fail_msg("eval failed: %s", out);
    double b = json_num(out, "bpb");
    free(out);
    return b;
}

static bool have_corpora(void) { return fk_path_exists(CORPORA "/shakespeare/input.txt"); }

// The two-domain set-up, built once: corpora, three tokenizers, two sources, the target's start.
static void setup_domains(void) {
    static bool done;
    if (done) return;
    done = true;
    size_t na, nb, nvb;
    char *a = slurp(CORPORA "/shakespeare/input.txt", &na), *b = slurp(CORPORA "/linux/train.txt", &nb);
    char *vb = slurp(CORPORA "/linux/test.txt", &nvb);
    assert_true(na > 300000 && nb >= 240000 && nvb >= 12000);
    // the sources learn their domain from 200 kB each; the fusion corpus is the next 40 kB of
    // both, interleaved in 2000-byte blocks; held-out: the end of Shakespeare and Linux's test text
    spit(tpath("A.txt"), a, 200000);
    spit(tpath("B.txt"), b, 200000);
    char *mix = malloc(80000);
    size_t m = 0;
    for (size_t i = 200000; i < 240000; i += 2000) {
        memcpy(mix + m, a + i, 2000); m += 2000;
        memcpy(mix + m, b + i, 2000); m += 2000;
    }
    spit(tpath("mix.txt"), mix, m);
    char *val = malloc(24000);
    memcpy(val, a + na - 12000, 12000);
    memcpy(val + 12000, vb, 12000);
    spit(tpath("val.txt"), val, 24000);
    free(a); free(b); free(vb); free(mix); free(val);
    const char *F = FK_CLI;
    RUN_OK("%s tokenizer train --data %s --vocab 320 -o %s", F, tpath("A.txt"), tpath("tokA"));
    RUN_OK("%s tokenizer train --data %s --vocab 300 -o %s", F, tpath("B.txt"), tpath("tokB"));
    RUN_OK("%s tokenizer train --data %s --vocab 400 -o %s", F, tpath("mix.txt"), tpath("tokT"));
    const char *shape = "--d-model 48 --layers 2 --heads 4 --ctx 64 --batch 16 --lr 3e-3 --eval-every 0 --log-every 1000 --val-frac 0";
    RUN_OK("%s train --data %s --tokenizer %s -o %s --arch gpt2 %s --steps 400", F, tpath("A.txt"), tpath("tokA"), tpath("srcA"), shape);
    RUN_OK("%s train --data %s --tokenizer %s -o %s --arch llama --kv-heads 2 %s --steps 400", F, tpath("B.txt"), tpath("tokB"),
           tpath("srcB"), shape);
    // the target's starting point: a short CLM run on the fusion corpus
    RUN_OK("%s train --data %s --tokenizer %s -o %s --arch llama %s --steps 20", F, tpath("mix.txt"), tpath("tokT"), tpath("T0"), shape);
}

static void test_fused_beats_clm(void **s) {
    (void)s;
    if (!have_corpora()) skip();
    setup_domains();
    const char *F = FK_CLI;
    const char *tr = "--steps 150 --batch 16 --lr 2e-3 --eval-every 0 --log-every 1000 --val-frac 0";
    char *out;
    // source B under a name with dots (as "SmolLM2-135M-Instruct.Q4_1" or "run-l0.8-s1" have)
    RUN_OK("ln -sfn %s %s", tpath("srcB"), tpath("srcB.v0.8"));
    int rc = run(&out, "%s fuse --target %s --source %s %s --no-target-source --data %s -o %s --lambda 0.7 %s", F, tpath("T0"),
                 tpath("srcA"), tpath("srcB.v0.8"), tpath("mix.txt"), tpath("fused"), tr);
    if (rc != 0) fail_msg("fuse failed:\n%s", out);
    assert_non_null(strstr(out, "teacher_shares"));
    assert_non_null(strstr(out, "\"teachers\":[\"srcA\",\"srcB.v0.8\"]"));  // the shares' labels, in order
    free(out);
    RUN_OK("%s train --init %s --data %s -o %s %s", F, tpath("T0"), tpath("mix.txt"), tpath("clm"), tr);
    double a = eval_bpb(tpath("srcA"), tpath("val.txt")), b = eval_bpb(tpath("srcB"), tpath("val.txt"));
    double t0 = eval_bpb(tpath("T0"), tpath("val.txt")), fused = eval_bpb(tpath("fused"), tpath("val.txt"));
    double clm = eval_bpb(tpath("clm"), tpath("val.txt"));
    print_message("  held-out bits per byte: source A %.4f, source B %.4f, target start %.4f, CLM-only %.4f, fused %.4f\n", a, b, t0,
                  clm, fused);
    assert_true(fused < clm);
    // a second fuse reuses the stores and their alignments (cached)
    rc = run(&out, "%s fuse --target %s --source %s %s --no-target-source --data %s -o %s --store-dir %s --lambda 0.7 %s --steps 1", F,
             tpath("T0"), tpath("srcA"), tpath("srcB.v0.8"), tpath("mix.txt"), tpath("fused2"), tpath("fused/stores"), tr);
    if (rc != 0) fail_msg("fuse failed:\n%s", out);
    assert_non_null(strstr(out, "(cached)"));
    assert_null(strstr(out, "aligned to the target's tokens in"));
    free(out);
}

static void test_ensemble(void **s) {
    (void)s;
    if (!have_corpora()) skip();
    setup_domains();
    char *out;
    int rc = run(&out, "%s eval --model %s --ensemble %s --data %s", FK_CLI, tpath("srcA"), tpath("srcB"), tpath("val.txt"));
    if (rc != 0) fail_msg("ensemble failed:\n%s", out);
    double a = eval_bpb(tpath("srcA"), tpath("val.txt"));
    // the last "bpb" of the line is the ensemble's
    const char *p = strrchr(out, '}'), *q = out, *last = NULL;
    while ((q = strstr(q, "\"bpb\":")) && q < p) { last = q; q++; }
    double e = atof(last + 6);
    print_message("  ensemble bits per byte %.4f (source A alone %.4f)\n", e, a);
    // source B knows the code half far better: the ensemble must beat source A alone
    assert_true(e < a);
    free(out);
}

// A store of another corpus is refused with a message naming it; one teacher is distillation.
static void test_store_checks_and_distillation(void **s) {
    (void)s;
    if (!have_corpora()) skip();
    setup_domains();
    const char *F = FK_CLI;
    RUN_OK("%s extract --model %s --data %s -k 8 -o %s", F, tpath("srcA"), tpath("A.txt"), tpath("a_on_A.fkd"));
    char *out;
    int rc = run(&out, "%s train --init %s --data %s -o %s --teacher %s --steps 2", F, tpath("T0"), tpath("mix.txt"), tpath("bad"),
                 tpath("a_on_A.fkd"));
    assert_int_equal(rc, 1);
    assert_non_null(strstr(out, "another corpus"));
    free(out);
    // distillation: one teacher of the same tokenizer, lambda 0 (no label term)
    RUN_OK("%s train --init %s --data %s -o %s --teacher %s --lambda 0 --steps 30 --batch 8 --lr 2e-3 --eval-every 0 --val-frac 0", F,
           tpath("srcA"), tpath("A.txt"), tpath("distil"), tpath("a_on_A.fkd"));
}

// A kill -9 during extraction leaves a .partial; the same command resumes it, and the store
// equals an uninterrupted run's byte for byte.
static void test_extract_kill_resume(void **s) {
    (void)s;
    if (!have_corpora()) skip();
    setup_domains();
    const char *F = FK_CLI;
    RUN_OK("%s extract --model %s --data %s --seq 32 -o %s", F, tpath("srcB"), tpath("B.txt"), tpath("full.fkd"));
    char *out;
    run(&out, "sh -c '%s extract --model %s --data %s --seq 32 -o %s & p=$!; sleep 0.15; kill -9 $p; wait $p'", F, tpath("srcB"),
        tpath("B.txt"), tpath("killed.fkd"));
    free(out);
    char partial[600];
    snprintf(partial, sizeof partial, "%s.partial", tpath("killed.fkd"));
    bool was_partial = fk_path_exists(partial);
    print_message("  killed mid-run: %s\n", was_partial ? "yes (resuming the .partial)" : "no (it had finished)");
    RUN_OK("%s extract --model %s --data %s --seq 32 -o %s", F, tpath("srcB"), tpath("B.txt"), tpath("killed.fkd"));
    assert_false(fk_path_exists(partial));
    size_t na, nb;
    char *a, *b;
    CHECK(fk_read_file(tpath("full.fkd"), &a, &na));
    CHECK(fk_read_file(tpath("killed.fkd"), &b, &nb));
    assert_int_equal(na, nb);
    assert_memory_equal(a, b, na);
    free(a); free(b);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fused_beats_clm),
        cmocka_unit_test(test_ensemble),
        cmocka_unit_test(test_store_checks_and_distillation),
        cmocka_unit_test(test_extract_kill_resume),
    };
    return cmocka_run_group_tests(tests, tmpdir_setup, tmpdir_teardown);
}
