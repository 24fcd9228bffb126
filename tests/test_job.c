// The training job through the library alone (fusekit/job.h), without the program: a run
// stopped early by the hooks' stop flag resumes to the same final weights as an uninterrupted
// run, metrics.jsonl holds each step once, notes and step lines come through the hooks; and
// fk_train_job_check's refusals.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "fusekit/fusekit.h"
#include "test_util.h"

#define STEPS 12

typedef struct {
    volatile sig_atomic_t stop;
    int64_t stop_at;       // the step after which the stop flag is set (0: never)
    int lines, notes;      // metrics lines and notes reported
    bool saved, ignored;   // a "saved" note; a "--lr is ignored when resuming" warning
} hooks_seen;

static void on_note(const char *line, void *user) {
    hooks_seen *s = user;
    s->notes++;
    if (strncmp(line, "saved ", 6) == 0) s->saved = true;
    if (strstr(line, "--lr is ignored when resuming")) s->ignored = true;
}

static void on_step(const fk_train_event *ev, const char *json_line, void *user) {
    hooks_seen *s = user;
    if (json_line) {
        s->lines++;
        assert_true(ev->log);
        assert_int_equal((int64_t)json_num(json_line, "step"), ev->step);
    }
    if (s->stop_at > 0 && ev->step == s->stop_at) s->stop = SIGINT;
}

static const char *text_file(void) {
    const char *p = tpath("text.txt");
    if (!fk_path_exists(p)) {
        char buf[8192];
        size_t n = 0;
        for (int i = 0; n + 64 < sizeof buf; i++) n += (size_t)snprintf(buf + n, sizeof buf - n, "line %d: the cat sat on the mat.\n", i);
        spit(p, buf, n);
    }
    return p;
}

// A tiny new GPT-2 on the text: a metrics line every step, a checkpoint every 4.
static void tiny_job(fk_train_job *j, const char *out) {
    fk_train_job_defaults(j);
    j->data = text_file();
    j->out = out;
    j->val_frac = 0;
    j->shape.d_model = 16;
    j->shape.layers = 1;
    j->shape.heads = 2;
    j->shape.ctx = 16;
    j->o.steps = STEPS;
    j->o.batch = 2;
    j->o.eval_every = 0;
    j->o.log_every = 1;
    j->o.save_every = 4;
}

static fk_status run_job(const fk_train_job *j, hooks_seen *s, fk_train_job_result *r) {
    fk_job_hooks h = {on_note, on_step, NULL, &s->stop, s};
    return fk_train_job_run(j, &h, r);
}

static int count_lines(const char *path) {
    size_t n;
    char *t = slurp(path, &n);
    int k = 0;
    for (size_t i = 0; i < n; i++) k += t[i] == '\n';
    free(t);
    return k;
}

static void test_stop_and_resume(void **st) {
    (void)st;
    fk_train_job j;
    fk_train_job_result r;
    hooks_seen s = {0};
    // uninterrupted
    tiny_job(&j, tpath("whole"));
    CHECK(run_job(&j, &s, &r));
    assert_false(r.stopped);
    assert_int_equal(r.step, STEPS);
    assert_int_equal(s.lines, STEPS);
    assert_true(s.saved);
    // the flag set while step 6 is reported is read after step 7 (polled before a step's report):
    // checkpoint-7, no final model
    memset(&s, 0, sizeof s);
    s.stop_at = 6;
    tiny_job(&j, tpath("stopped"));
    CHECK(run_job(&j, &s, &r));
    assert_true(r.stopped);
    assert_false(r.refused);
    assert_int_equal(r.step, 7);
    assert_false(s.saved);
    assert_true(fk_path_exists(tpath("stopped/checkpoint-7/trainer_state.json")));
    assert_false(fk_path_exists(tpath("stopped/model.safetensors")));
    // resumed (--lr given again: reported as ignored); the same final weights, each step's line once
    memset(&s, 0, sizeof s);
    j.resume = true;
    j.o.optim.lr = 1e-2f;
    j.given = fk_train_given_bit("--lr");
    assert_int_equal(j.given, FK_GIVEN_LR);
    CHECK(run_job(&j, &s, &r));
    assert_false(r.stopped);
    assert_int_equal(r.step, STEPS);
    assert_true(s.ignored);
    assert_int_equal(s.lines, STEPS - 7);
    size_t n0, n1;
    char *a = slurp(tpath("whole/model.safetensors"), &n0), *b = slurp(tpath("stopped/model.safetensors"), &n1);
    assert_int_equal(n0, n1);
    assert_memory_equal(a, b, n0);
    free(a);
    free(b);
    assert_int_equal(count_lines(tpath("stopped/metrics.jsonl")), STEPS);
    // a fresh run over a run is refused (by the run, not its checks)
    j.resume = false;
    fk_status rc = run_job(&j, &s, &r);
    assert_int_equal(rc, FK_ERR_ARG);
    assert_false(r.refused);
    assert_non_null(strstr(fk_last_error(), "already holds a training run"));
}

// A stop requested before the first step (while loading): nothing saved, and the same job run
// again starts afresh (it is not refused as a run over a run).
static void test_stop_before_training(void **st) {
    (void)st;
    fk_train_job j;
    fk_train_job_result r;
    hooks_seen s = {0};
    s.stop = SIGINT;
    tiny_job(&j, tpath("early"));
    CHECK(run_job(&j, &s, &r));
    assert_true(r.stopped);
    assert_true(r.before_training);
    assert_int_equal(r.step, 0);
    assert_int_equal(s.lines, 0);
    assert_false(fk_path_exists(tpath("early/checkpoint-1")));
    assert_false(fk_path_exists(tpath("early/model.safetensors")));
    memset(&s, 0, sizeof s);
    CHECK(run_job(&j, &s, &r));
    assert_false(r.stopped);
    assert_false(r.before_training);
    assert_int_equal(r.step, STEPS);
    assert_true(fk_path_exists(tpath("early/model.safetensors")));
}

static void test_checks(void **st) {
    (void)st;
    fk_train_job j;
    tiny_job(&j, tpath("checked"));
    CHECK(fk_train_job_check(&j));
    j.shape.d_model = 30;
    j.shape.heads = 4;
    assert_int_equal(fk_train_job_check(&j), FK_ERR_ARG);
    assert_non_null(strstr(fk_last_error(), "--d-model 30 is not a multiple of --heads 4"));
    j.init = tpath("some-model");  // the shape is the model's: not checked
    CHECK(fk_train_job_check(&j));
    // --precision int8 is for frozen quantized models: training refuses it before any work
    tiny_job(&j, tpath("checked"));
    j.o.precision = FK_PRECISION_INT8;
    assert_int_equal(fk_train_job_check(&j), FK_ERR_ARG);
    assert_non_null(strstr(fk_last_error(), "int8 is for frozen quantized models"));
    // teachers need the text, not a token shard
    tiny_job(&j, tpath("checked"));
    int32_t ids[64];
    for (int i = 0; i < 64; i++) ids[i] = i % 7;
    CHECK(fk_shard_write(tpath("ids.fktok"), ids, 64, 7, 64, 0));
    j.data = tpath("ids.fktok");
    j.teachers.v[j.teachers.n++] = tpath("t.fkd");
    assert_int_equal(fk_train_job_check(&j), FK_ERR_ARG);
    assert_non_null(strstr(fk_last_error(), "not a token shard"));
    // a model folder that is not a run: refused unless force
    tiny_job(&j, tpath("model-dir"));
    CHECK(fk_mkdir_p(tpath("model-dir")));
    spit(tpath("model-dir/model.safetensors"), "x", 1);
    assert_int_equal(fk_train_job_check(&j), FK_ERR_ARG);
    assert_non_null(strstr(fk_last_error(), "holds a model but no training run"));
    fk_train_job_result r;
    hooks_seen s = {0};
    assert_int_equal(run_job(&j, &s, &r), FK_ERR_ARG);
    assert_true(r.refused);
    j.force = true;
    CHECK(fk_train_job_check(&j));
    // required
    j.data = NULL;
    assert_int_equal(fk_train_job_check(&j), FK_ERR_ARG);
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_stop_and_resume), cmocka_unit_test(test_stop_before_training),
                                       cmocka_unit_test(test_checks)};
    return cmocka_run_group_tests(tests, tmpdir_setup, tmpdir_teardown);
}
