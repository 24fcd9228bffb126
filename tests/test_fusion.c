// Fusion functions (MinCE, AvgCE; sequence and token level) against a direct dense
// computation of the definitions in fusion.md §5, and hand-worked cases.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fusekit/fusekit.h"
#include "fusekit/fusion.h"
#include "test_util.h"

#define V 12

// Dense reference: the fused distribution at position j over V ids, straight from the
// definitions (each teacher's entries renormalised after temperature, one-hot on the label
// where it has none; weights from the span's cross-entropy).
static void dense_ref(const fk_fusion_opts *o, const fk_teacher_window *t, int S, const int32_t *labels, int64_t n, int64_t j,
                      double *out) {
    double ce[8], w[8];
    for (int s = 0; s < S; s++) {
        if (o->level == FK_FUSE_TOKEN) ce[s] = t[s].ce[j];
        else { double sum = 0; for (int64_t i = 0; i < n; i++) sum += t[s].ce[i]; ce[s] = sum / (double)n; }
    }
    if (o->kind == FK_FUSE_MINCE) {
        int best = 0;
        for (int s = 1; s < S; s++) if (ce[s] < ce[best]) best = s;
        for (int s = 0; s < S; s++) w[s] = s == best;
    } else {
        double z = 0;
        for (int s = 0; s < S; s++) z += exp(-ce[s] / o->tau);
        for (int s = 0; s < S; s++) w[s] = exp(-ce[s] / o->tau) / z;
    }
    memset(out, 0, V * sizeof(double));
    for (int s = 0; s < S; s++) {
        double q[V] = {0};
        int c = t[s].count[j];
        if (c == 0) q[labels[j]] = 1;
        else {
            double z = 0;
            for (int e = 0; e < c; e++) z += exp(t[s].logp[j * t[s].k + e] / o->temperature);
            for (int e = 0; e < c; e++) q[t[s].ids[j * t[s].k + e]] += exp(t[s].logp[j * t[s].k + e] / o->temperature) / z;
        }
        for (int v = 0; v < V; v++) out[v] += w[s] * q[v];
    }
}

static void compare(const fk_fusion_opts *o, const fk_teacher_window *t, int S, const int32_t *labels, int64_t n) {
    fk_fused_rows r = {0};
    double wts[8];
    CHECK(fk_fuse_window(o, t, S, labels, n, &r, wts));
    assert_int_equal(r.n_rows, n);
    double wsum = 0;
    for (int s = 0; s < S; s++) wsum += wts[s];
    assert_true(fabs(wsum - (double)n) < 1e-9);  // the weights of every position sum to 1
    for (int64_t j = 0; j < n; j++) {
        double want[V], got[V] = {0}, psum = 0;
        dense_ref(o, t, S, labels, n, j, want);
        for (int64_t e = r.row[j]; e < r.row[j + 1]; e++) {
            if (e > r.row[j]) assert_true(r.ids[e] > r.ids[e - 1]);  // sorted, distinct
            got[r.ids[e]] = r.p[e];
            psum += r.p[e];
        }
        assert_true(fabs(psum - 1) < 1e-6);
        for (int v = 0; v < V; v++)
            if (fabs(got[v] - want[v]) > 1e-6) fail_msg("position %lld id %d: fused %.8f, direct %.8f", (long long)j, v, got[v], want[v]);
    }
    fk_fused_rows_free(&r);
}

// Two teachers, three positions, worked by hand.
static void test_hand(void **s) {
    (void)s;
    // teacher A: entries at every position; teacher B: one-hot (no entries) at position 1
    uint8_t ca[3] = {2, 2, 1}, cb[3] = {2, 0, 2};
    int32_t ia[6] = {3, 4, 5, 6, 7, 0}, ib[6] = {3, 9, 0, 0, 7, 8};
    float la[6] = {logf(0.6f), logf(0.2f), logf(0.5f), logf(0.5f), logf(0.9f), 0};
    float lb[6] = {logf(0.3f), logf(0.1f), 0, 0, logf(0.4f), logf(0.4f)};
    float cea[3] = {1.0f, 2.0f, 3.0f}, ceb[3] = {0.5f, 4.0f, 0.5f};
    fk_teacher_window t[2] = {{3, 2, ca, ia, la, cea}, {3, 2, cb, ib, lb, ceb}};
    int32_t labels[3] = {3, 11, 8};
    fk_fusion_opts o;
    fk_fusion_defaults(&o);
    // MinCE, sequence: means 2.0 (A) vs 1.667 (B): B everywhere.
    fk_fused_rows r = {0};
    double w[2];
    CHECK(fk_fuse_window(&o, t, 2, labels, 3, &r, w));
    assert_true(w[0] == 0 && w[1] == 3);
    // position 0: B's {3: 0.3, 9: 0.1} renormalised = {3: 0.75, 9: 0.25}
    assert_int_equal(r.row[1] - r.row[0], 2);
    assert_int_equal(r.ids[0], 3); assert_true(fabs(r.p[0] - 0.75f) < 1e-6);
    assert_int_equal(r.ids[1], 9); assert_true(fabs(r.p[1] - 0.25f) < 1e-6);
    // position 1: B has no entries: one-hot on the next token, 11
    assert_int_equal(r.row[2] - r.row[1], 1);
    assert_int_equal(r.ids[r.row[1]], 11); assert_true(r.p[r.row[1]] == 1.0f);
    // position 2: B's {7: 0.4, 8: 0.4} = {7: 0.5, 8: 0.5}
    assert_int_equal(r.row[3] - r.row[2], 2);
    assert_true(fabs(r.p[r.row[2]] - 0.5f) < 1e-6);
    // MinCE, token: A at position 1 (2.0 < 4.0), B at 0 and 2
    o.level = FK_FUSE_TOKEN;
    fk_fused_rows_clear(&r);
    CHECK(fk_fuse_window(&o, t, 2, labels, 3, &r, w));
    assert_true(w[0] == 1 && w[1] == 2);
    // position 1 is A's {5: 0.5, 6: 0.5}
    assert_int_equal(r.row[2] - r.row[1], 2);
    assert_int_equal(r.ids[r.row[1]], 5); assert_true(fabs(r.p[r.row[1]] - 0.5f) < 1e-6);
    // AvgCE, token, tau 1 at position 0: w_A = e^-1 / (e^-1 + e^-0.5) = 0.37754; A's {3: 0.75, 4: 0.25},
    // B's {3: 0.75, 9: 0.25}: p(3) = 0.75, p(4) = 0.25 w_A = 0.094385, p(9) = 0.25 (1 - w_A) = 0.155615
    o.kind = FK_FUSE_AVGCE;
    fk_fused_rows_clear(&r);
    CHECK(fk_fuse_window(&o, t, 2, labels, 3, &r, w));
    assert_int_equal(r.row[1], 3);
    assert_int_equal(r.ids[0], 3); assert_true(fabs(r.p[0] - 0.75) < 1e-6);
    assert_int_equal(r.ids[1], 4); assert_true(fabs(r.p[1] - 0.094385) < 1e-6);
    assert_int_equal(r.ids[2], 9); assert_true(fabs(r.p[2] - 0.155615) < 1e-6);
    fk_fused_rows_free(&r);
}

// Random teachers against the dense reference, every kind and level, with temperatures.
static void test_random(void **s) {
    (void)s;
    fk_rng g;
    fk_rng_seed(&g, 11);
    for (int trial = 0; trial < 200; trial++) {
        int S = 1 + (int)fk_rng_below(&g, 4), k = 1 + (int)fk_rng_below(&g, 5);
        int64_t n = 1 + (int64_t)fk_rng_below(&g, 9);
        uint8_t cnt[4][16];
        int32_t ids[4][16 * 5], labels[16];
        float lp[4][16 * 5], ce[4][16];
        fk_teacher_window t[4];
        for (int64_t j = 0; j < n; j++) labels[j] = (int32_t)fk_rng_below(&g, V);
        for (int si = 0; si < S; si++) {
            for (int64_t j = 0; j < n; j++) {
                cnt[si][j] = (uint8_t)fk_rng_below(&g, (uint64_t)k + 1);
                ce[si][j] = (float)(3 * fk_rng_uniform(&g));
                // distinct ids, log-probs descending
                int32_t perm[V];
                for (int v = 0; v < V; v++) perm[v] = v;
                float prev = 0;
                for (int e = 0; e < k; e++) {
                    int q = e + (int)fk_rng_below(&g, (uint64_t)(V - e));
                    int32_t tmp = perm[e]; perm[e] = perm[q]; perm[q] = tmp;
                    ids[si][j * k + e] = perm[e];
                    prev -= (float)(2 * fk_rng_uniform(&g));
                    lp[si][j * k + e] = prev;
                }
            }
            t[si] = (fk_teacher_window){n, k, cnt[si], ids[si], lp[si], ce[si]};
        }
        fk_fusion_opts o;
        fk_fusion_defaults(&o);
        o.kind = trial % 2 ? FK_FUSE_AVGCE : FK_FUSE_MINCE;
        o.level = (trial / 2) % 2 ? FK_FUSE_TOKEN : FK_FUSE_SEQUENCE;
        o.tau = trial % 3 ? 1.0f : 0.5f;
        o.temperature = trial % 5 ? 1.0f : 2.0f;
        compare(&o, t, S, labels, n);
    }
}

static void test_parse(void **s) {
    (void)s;
    fk_fusion_opts o;
    fk_fusion_defaults(&o);
    CHECK(fk_fusion_parse("avgce", "token", &o));
    assert_int_equal(o.kind, FK_FUSE_AVGCE);
    assert_int_equal(o.level, FK_FUSE_TOKEN);
    assert_int_equal(fk_fusion_parse("max", NULL, &o), FK_ERR_ARG);
    assert_non_null(strstr(fk_last_error(), "mince or avgce"));
    assert_int_equal(fk_fusion_parse(NULL, "doc", &o), FK_ERR_ARG);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hand),
        cmocka_unit_test(test_random),
        cmocka_unit_test(test_parse),
    };
    return cmocka_run_group_tests(tests, tmpdir_setup, tmpdir_teardown);
}
