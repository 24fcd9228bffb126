// ULD (Universal Logit Distillation) as the fusion objective, end to end in the library:
// fk_train with a teacher whose objective is FK_OBJECTIVE_ULD lowers the ULD distance to the
// teacher, the teacher's ids are never read (they lie outside the model's vocabulary, which the
// soft cross-entropy refuses), and soft-capped models are refused. The loss and its gradient
// are checked against finite differences and a torch golden in test_ops (test_uld*).
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fusekit/fusekit.h"
#include "test_util.h"

// A teacher with the same sorted distribution at every position: 4 entries on ids the model's
// vocabulary does not have (ULD reads only the probabilities).
enum { K = 4, MAXN = 4 * 16 };
typedef struct { int64_t row[MAXN + 1]; int32_t ids[MAXN * K]; float p[MAXN * K]; } fixed_teacher;
static fk_status fixed_fill(void *ctx, const int64_t *off, int B, int T, const int32_t *labels, fk_sparse_dist *out) {
    (void)off; (void)labels;
    fixed_teacher *t = ctx;
    static const float p[K] = {0.6f, 0.25f, 0.1f, 0.05f};
    for (int i = 0; i <= B * T; i++) t->row[i] = (int64_t)i * K;
    for (int i = 0; i < B * T * K; i++) { t->ids[i] = 100000 + i % K; t->p[i] = p[i % K]; }
    *out = (fk_sparse_dist){t->row, t->ids, t->p};
    return FK_OK;
}

// The mean ULD distance of the model to the teacher on one fixed batch.
static float uld_distance(fk_model *m, fixed_teacher *t, const int32_t *x, const int32_t *y, int B, int T) {
    fk_sparse_dist d;
    CHECK(fixed_fill(t, NULL, B, T, y, &d));
    float loss, fus;
    CHECK(fk_model_forward_objective(m, x, y, &d, 0.0f, FK_OBJECTIVE_ULD, B, T, false, &loss, &fus));
    assert_true(fabsf(loss - fus) < 1e-6f);  // lambda 0: the loss is the ULD term
    return fus;
}

// 40 steps of fused training with lambda 0 and the ULD objective: the distance on a batch falls
// from near its value for a uniform model (1.875 with V = 64: 0.9375 on the top 4 ranks and 0.9375
// of student mass beyond them) to less than a third of it.
static void test_uld_training(void **s) {
    (void)s;
    enum { B = 4, T = 16, V = 64 };
    fk_config c;
    fk_config_llama(&c, V, 32, 2, 4, 2, 64, T);
    fk_token_data d;
    random_tokens(&d, 4000, V, 7);
    fk_model m;
    CHECK(fk_model_init(&m, &c));
    fk_model_init_weights(&m, 3);
    fixed_teacher *ft = calloc(1, sizeof *ft);
    int32_t x[B * T], y[B * T];
    for (int i = 0; i < B * T; i++) { x[i] = d.ids[i]; y[i] = d.ids[i + 1]; }
    float before = uld_distance(&m, ft, x, y, B, T);
    // the soft cross-entropy reads the ids: the same rows are refused there
    fk_sparse_dist rows;
    CHECK(fixed_fill(ft, NULL, B, T, y, &rows));
    float l;
    assert_int_equal(fk_model_forward_objective(&m, x, y, &rows, 0.0f, FK_OBJECTIVE_CE, B, T, false, &l, NULL), FK_ERR_ARG);

    fk_teacher teacher = {.fill = fixed_fill, .ctx = ft, .lambda = 0.0f, .objective = FK_OBJECTIVE_ULD};
    fk_train_opts o;
    fk_train_defaults(&o);
    o.steps = 40; o.batch = B; o.seq = T; o.log_every = 1000; o.seed = 5;
    o.optim.lr = 1e-2f; o.optim.warmup = 2; o.optim.total_steps = o.steps;
    o.teacher = &teacher;
    fk_adamw opt;
    CHECK(fk_adamw_init(&opt, &m, &o.optim));
    CHECK(fk_train(&m, &opt, &d, NULL, &o, NULL, NULL, NULL));
    float after = uld_distance(&m, ft, x, y, B, T);
    print_message("  ULD distance to the teacher: %.4f before, %.4f after 40 steps\n", before, after);
    assert_true(before > 1.7f);
    assert_true(after < before / 3);
    fk_adamw_free(&opt);
    fk_model_free(&m);

    // a final soft-cap (Gemma 2) is refused, naming the objective
    c.final_softcap = 30.0f;
    CHECK(fk_model_init(&m, &c));
    assert_int_equal(fk_model_forward_objective(&m, x, y, &rows, 0.0f, FK_OBJECTIVE_ULD, B, T, false, &l, NULL), FK_ERR_ARG);
    assert_non_null(strstr(fk_last_error(), "uld"));
    fk_model_free(&m);
    fk_data_free(&d);
    free(ft);
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_uld_training)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
