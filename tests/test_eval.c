// The evaluation module: the window iterator predicts every id once; the row kernel's
// instances agree with a plain log-sum-exp; fk_eval_data agrees with a hand-summed loss; the KL
// of a model to itself is zero; probe results from several files add up by domain.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fusekit/eval.h"
#include "fusekit/probes.h"
#include "nn/rowops.h"
#include "test_util.h"

// Every id but the first (every id with BOS) is predicted exactly once, by the position
// holding the id before it (or a window's BOS).
static void test_iter_covers_once(void **s) {
    (void)s;
    int32_t ids[103];
    for (int i = 0; i < 103; i++) ids[i] = i;
    for (int bos = -1; bos <= 200; bos += 201) {
        fk_eval_windowing w = fk_eval_windowing_of(103, 0, 8, bos);
        fk_eval_iter it;
        CHECK(fk_eval_iter_init(&it, &w, 3));
        int hits[103] = {0}, batches = 0;
        while (fk_eval_iter_next(&it, ids)) {
            batches++;
            for (int i = 0; i < it.rows * 8; i++) {
                int64_t t = it.target[i];
                if (t < 0) continue;
                hits[t]++;
                assert_int_equal(it.x[i], bos >= 0 && i % 8 == 0 ? bos : ids[t - 1]);  // BOS opens each window
            }
        }
        assert_int_equal(batches, (int)((w.n_windows + 2) / 3));
        for (int i = 0; i < 103; i++) assert_int_equal(hits[i], i == 0 && bos < 0 ? 0 : 1);
        fk_eval_iter_free(&it);
    }
}

// The kernel's instances against log(sum exp) in long double.
static void test_row_kernel(void **s) {
    (void)s;
    fk_rng r;
    fk_rng_seed(&r, 5);
    for (int64_t V = 1; V <= 3000; V = V * 3 + 1) {
        float *z = malloc((size_t)V * sizeof(float));
        double *zd = malloc((size_t)V * sizeof(double));
        for (int64_t v = 0; v < V; v++) zd[v] = z[v] = 8 * fk_rng_normal(&r);
        long double mx = z[0], sum = 0;
        for (int64_t v = 1; v < V; v++) mx = z[v] > mx ? z[v] : mx;
        for (int64_t v = 0; v < V; v++) sum += expl(z[v] - mx);
        double ref = (double)(mx + logl(sum));
        assert_true(fabs(fk_row_lse_exact(z, V) - ref) < 1e-12 * (1 + fabs(ref)));
        assert_true(fabs(fk_row_lse_fast(z, V) - ref) < 1e-5 * (1 + fabs(ref)));
        assert_true(fabs(fk_row_lse_d(zd, V) - ref) < 1e-12 * (1 + fabs(ref)));
        fk_row_log_softmax_exact(z, V);
        double p = 0;
        for (int64_t v = 0; v < V; v++) p += exp((double)z[v]);
        assert_true(fabs(p - 1) < 1e-5);
        free(z);
        free(zd);
    }
}

static void tiny_model(fk_model *m) {
    fk_config c;
    fk_config_llama(&c, 40, 16, 2, 2, 2, 24, 32);
    CHECK(fk_model_init(m, &c));
    fk_model_init_weights(m, 7);
}

// fk_eval_data's loss is the mean of the model's per-token losses over the iterator's targets.
static void test_eval_data_by_hand(void **s) {
    (void)s;
    fk_model m;
    tiny_model(&m);
    fk_token_data d;
    random_tokens(&d, 150, 40, 3);
    fk_eval_result r;
    CHECK(fk_eval_data(&m, &d, 16, 2, 0, &r));
    fk_eval_windowing w = fk_eval_windowing_data(&d, 0, 16);
    fk_eval_iter it;
    CHECK(fk_eval_iter_init(&it, &w, 1));
    double total = 0;
    int64_t n = 0;
    while (fk_eval_iter_next(&it, d.ids)) {
        CHECK(fk_model_forward(&m, it.x, NULL, it.rows, 16, false, NULL));
        const float *z = fk_model_logits(&m);
        for (int i = 0; i < it.rows * 16; i++)
            if (it.target[i] >= 0) { total += fk_row_lse_exact(z + i * 40, 40) - z[i * 40 + d.ids[it.target[i]]]; n++; }
    }
    fk_eval_iter_free(&it);
    assert_int_equal(r.tokens, 149);
    assert_int_equal(n, 149);
    assert_true(fabs(r.loss - total / (double)n) < 1e-5);
    fk_data_free(&d);
    fk_model_free(&m);
}

// KL(p || p) = 0 through both KL paths; a different model has a positive KL.
static void test_kl_self(void **s) {
    (void)s;
    fk_model m, other;
    tiny_model(&m);
    tiny_model(&other);
    fk_model_init_weights(&other, 8);
    fk_token_data d;
    random_tokens(&d, 100, 40, 4);
    double kl;
    CHECK(fk_eval_kl(&m, &m, &d, 16, 3, 0, &kl));
    assert_true(fabs(kl) < 1e-6);
    CHECK(fk_eval_kl(&m, &other, &d, 16, 3, 0, &kl));
    assert_true(kl > 1e-4);
    fk_kl_probe p;
    CHECK(fk_kl_probe_init(&m, &d, 3, 16, &p));
    CHECK(fk_kl_probe_eval(&m, &p, &kl));
    assert_true(fabs(kl) < 1e-6);
    fk_kl_probe_free(&p);
    fk_data_free(&d);
    fk_model_free(&m);
    fk_model_free(&other);
}

static void set_domain(fk_probe_result *r, const char *name, int64_t items, int64_t correct) {
    fk_probe_domain *d = &r->domain[r->n_domains++];
    snprintf(d->name, sizeof d->name, "%s", name);
    d->items = items;
    d->correct = correct;
    r->items += items;
    r->correct += correct;
}

// Domains add up by name; a domain past the table's 16 counts as "other", never past its end.
static void test_probe_result_add(void **s) {
    (void)s;
    fk_probe_result total = {0}, a = {0}, b = {0};
    set_domain(&a, "arith", 10, 7);
    set_domain(&a, "facts", 4, 1);
    set_domain(&b, "facts", 6, 5);
    set_domain(&b, "grammar", 2, 2);
    fk_probe_result_add(&total, &a);
    fk_probe_result_add(&total, &b);
    assert_int_equal(total.items, 22);
    assert_int_equal(total.correct, 15);
    assert_true(fabs(total.accuracy - 15.0 / 22.0) < 1e-12);
    assert_int_equal(total.n_domains, 3);
    assert_string_equal(total.domain[1].name, "facts");
    assert_int_equal(total.domain[1].items, 10);
    assert_int_equal(total.domain[1].correct, 6);
    assert_null(total.pred);
    fk_probe_result many = {0}, more = {0};
    char name[32];
    for (int k = 0; k < FK_PROBES_MAX_DOMAINS; k++) { snprintf(name, sizeof name, "d%d", k); set_domain(&many, name, 1, 1); }
    for (int k = 0; k < 4; k++) { snprintf(name, sizeof name, "e%d", k); set_domain(&more, name, 2, 0); }
    fk_probe_result_add(&total, &many);
    fk_probe_result_add(&total, &more);
    assert_int_equal(total.n_domains, FK_PROBES_MAX_DOMAINS);
    int64_t items = 0;
    for (int k = 0; k < total.n_domains; k++) items += total.domain[k].items;
    assert_int_equal(items, total.items);
    assert_string_equal(total.domain[FK_PROBES_MAX_DOMAINS - 1].name, "other");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_iter_covers_once),
        cmocka_unit_test(test_row_kernel),
        cmocka_unit_test(test_eval_data_by_hand),
        cmocka_unit_test(test_kl_self),
        cmocka_unit_test(test_probe_result_add),
    };
    return cmocka_run_group_tests(tests, tmpdir_setup, tmpdir_teardown);
}
