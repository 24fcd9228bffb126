// Weight-space merges: every method's per-tensor formula against numbers worked out by hand,
// the top-k cuts against brute force, whole-model merges against the per-tensor formula on
// real folders (f32/bf16 inputs, shards, f16/bf16 outputs), the identities a merge must
// satisfy, inputs that must be refused, and the CLI end to end.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include <cjson/cJSON.h>

#include "fusekit/fusekit.h"
#include "fusekit/merge.h"
#include "test_util.h"

// "<tmpdir>/<name>" from a pool large enough that the paths one test holds stay valid.
static const char *tp(const char *name) {
    static char buf[256][512];
    static int k;
    char *p = buf[k++ % 256];
    snprintf(p, sizeof buf[0], "%s/%s", tmpdir, name);
    return p;
}

static void assert_close(const float *got, const double *want, int64_t n, double tol) {
    for (int64_t j = 0; j < n; j++)
        if (fabs((double)got[j] - want[j]) > tol * (1 + fabs(want[j])))
            fail_msg("entry %lld: got %.9g, expected %.9g", (long long)j, got[j], want[j]);
}

static fk_merge_opts opts_for(fk_merge_method m) {
    fk_merge_opts o;
    fk_merge_opts_default(&o, m);
    return o;
}

// ------------------------------------------------------------------ per-tensor formulas by hand

static void test_linear_formula(void **s) {
    (void)s;
    const float x1[] = {1, 2, -3, 0.5f}, x2[] = {3, 0, 1, 0.5f}, w[] = {1, 3};
    const float *x[] = {x1, x2};
    float out[4];
    fk_merge_opts o = opts_for(FK_MERGE_LINEAR);
    // normalised: (1·x1 + 3·x2) / 4 = [(1+9)/4, (2+0)/4, (-3+3)/4, (0.5+1.5)/4]
    CHECK(fk_merge_tensor(&o, x, NULL, w, 2, 4, out));
    assert_close(out, (const double[]){2.5, 0.5, 0, 0.5}, 4, 1e-7);
    // --no-normalize: 1·x1 + 3·x2
    o.normalize = false;
    CHECK(fk_merge_tensor(&o, x, NULL, w, 2, 4, out));
    assert_close(out, (const double[]){10, 2, 0, 2}, 4, 1e-7);
    // weights summing to 0 cannot be normalised
    o.normalize = true;
    assert_int_equal(fk_merge_tensor(&o, x, NULL, (const float[]){1, -1}, 2, 4, out), FK_ERR_ARG);
    assert_non_null(strstr(fk_last_error(), "cannot be normalised"));
}

static void test_task_arithmetic_formula(void **s) {
    (void)s;
    // base 1; τ1 = [1, -1, 0, 2], τ2 = [-1, 2, 0, 0]; w = [1, 0.5], λ = 2
    const float b[] = {1, 1, 1, 1}, x1[] = {2, 0, 1, 3}, x2[] = {0, 3, 1, 1}, w[] = {1, 0.5f};
    const float *x[] = {x1, x2};
    float out[4];
    fk_merge_opts o = opts_for(FK_MERGE_TASK_ARITHMETIC);
    assert_false(o.normalize);  // mergekit's default for task arithmetic
    o.lambda = 2;
    // Σ w τ = [1-0.5, -1+1, 0, 2] = [0.5, 0, 0, 2]; base + 2·that = [2, 1, 1, 5]
    CHECK(fk_merge_tensor(&o, x, b, w, 2, 4, out));
    assert_close(out, (const double[]){2, 1, 1, 5}, 4, 1e-7);
    // normalised by Σw = 1.5: base + 2·[1/3, 0, 0, 4/3]
    o.normalize = true;
    CHECK(fk_merge_tensor(&o, x, b, w, 2, 4, out));
    assert_close(out, (const double[]){1 + 2.0 / 3, 1, 1, 1 + 8.0 / 3}, 4, 1e-6);
    // a base is required
    assert_int_equal(fk_merge_tensor(&o, x, NULL, w, 2, 4, out), FK_ERR_ARG);
    assert_non_null(strstr(fk_last_error(), "needs a base model"));
}

static void test_ties_formula(void **s) {
    (void)s;
    // base 1 everywhere; task vectors (x_i = 1 + τ_i):
    //   τ1 = [ 4, -3, 0.5,  2, -1, 1]
    //   τ2 = [-2,  3, 1,   -2,  2, 1]
    //   τ3 = [ 1,  1, 1,    1,  1, 1]
    // density 0.5 → k = floor(0.5·6) = 3 entries kept per task vector:
    //   τ1: |τ| = 4, 3, 2 are the top three              → τ̂1 = [ 4, -3, 0,  2, 0, 0]
    //   τ2: 3, then three 2s (idx 0, 3, 4) for two places: the lower indexes 0 and 3 win
    //                                                      → τ̂2 = [-2,  3, 0, -2, 0, 0]
    //   τ3: all six equal: indexes 0, 1, 2                → τ̂3 = [ 1,  1, 1,  0, 0, 0]
    // w = [1, 1, 2]: mass Σ w τ̂ = [4-2+2, -3+3+2, 2, 2-2, 0, 0] = [4, 2, 2, 0, 0, 0]
    //   elected sign: + everywhere (idx 3 is an exact tie: + wins)
    // disjoint mean over the entries agreeing with +, weighted:
    //   idx0: τ̂1=4 (w1), τ̂3=1 (w2)  → (4 + 2)/(1 + 2) = 2
    //   idx1: τ̂2=3 (w1), τ̂3=1 (w2)  → (3 + 2)/3 = 5/3
    //   idx2: τ̂3=1 (w2)             → 2/2 = 1
    //   idx3: τ̂1=2 (w1)             → 2
    //   idx4, idx5: nothing kept     → 0 (untrimmed, τ1=-1 and τ2=2 would have moved idx4)
    const float b[] = {1, 1, 1, 1, 1, 1};
    const float x1[] = {5, -2, 1.5f, 3, 0, 2}, x2[] = {-1, 4, 2, -1, 3, 2}, x3[] = {2, 2, 2, 2, 2, 2};
    const float *x[] = {x1, x2, x3}, w[] = {1, 1, 2};
    float out[6];
    fk_merge_opts o = opts_for(FK_MERGE_TIES);
    o.density = 0.5;
    CHECK(fk_merge_tensor(&o, x, b, w, 3, 6, out));
    assert_close(out, (const double[]){3, 1 + 5.0 / 3, 2, 3, 1, 1}, 6, 1e-6);
    // λ = 0.5 without normalising: the sums of agreeing weighted entries [6, 5, 2, 2, 0, 0]
    o.lambda = 0.5;
    o.normalize = false;
    CHECK(fk_merge_tensor(&o, x, b, w, 3, 6, out));
    assert_close(out, (const double[]){4, 3.5, 2, 2, 1, 1}, 6, 1e-6);
    // density 1 keeps everything: idx4 now has τ = [-1, 2, 1] with mass -1+2+2 = 3 → + ;
    // agreeing 2 (w1), 1 (w2) → (2 + 2)/3 = 4/3
    o = opts_for(FK_MERGE_TIES);
    CHECK(fk_merge_tensor(&o, x, b, w, 3, 6, out));
    assert_true(fabs(out[4] - (1 + 4.0 / 3)) < 1e-6);
    // a negative mass elects −: τ = [-3] and [1] with equal weights → only -3 agrees
    const float y1[] = {-2}, y2[] = {2}, yb[] = {1};
    CHECK(fk_merge_tensor(&o, (const float *const[]){y1, y2}, yb, NULL, 2, 1, out));
    assert_true(fabs(out[0] - (-2)) < 1e-7);
    // density 0.1 on 6 entries: k = 0, nothing kept, the base comes back
    o.density = 0.1;
    CHECK(fk_merge_tensor(&o, x, b, w, 3, 6, out));
    assert_close(out, (const double[]){1, 1, 1, 1, 1, 1}, 6, 0);
}

static void test_sce_formula(void **s) {
    (void)s;
    // base 1; three task vectors over four entries:
    //   τ1 = [1,  2, 0,  1]
    //   τ2 = [3, -2, 0,  1]
    //   τ3 = [2,  5, 0, -4]
    // population variance per entry:
    //   idx0: 1,3,2 → mean 2, (1+1+0)/3 = 0.667
    //   idx1: 2,-2,5 → mean 5/3, (1/9 + 121/9 + 100/9)/3 = 8.222
    //   idx2: 0
    //   idx3: 1,1,-4 → mean -2/3, (25/9 + 25/9 + 100/9)/3 = 5.556
    // select_topk 0.7: k = floor(0.7 · 3 nonzero) = 2 → idx1 and idx3 are kept, idx0 zeroed
    //   τ̂1 = [0, 2, 0, 1], τ̂2 = [0, -2, 0, 1], τ̂3 = [0, 5, 0, -4]
    // energies: 4+1 = 5, 4+1 = 5, 25+16 = 41 → c = [5, 5, 41]/51
    // erase (w = 1): mass idx1 = 2-2+5 = 5 → +, idx3 = 1+1-4 = -2 → −
    //   idx1: agreeing τ̂1=2, τ̂3=5 → (5·2 + 41·5)/(5 + 41) = 215/46
    //   idx3: agreeing τ̂3=-4 → -4
    const float b[] = {1, 1, 1, 1}, x1[] = {2, 3, 1, 2}, x2[] = {4, -1, 1, 2}, x3[] = {3, 6, 1, -3};
    const float *x[] = {x1, x2, x3};
    float out[4];
    fk_merge_opts o = opts_for(FK_MERGE_SCE);
    o.select_topk = 0.7;
    CHECK(fk_merge_tensor(&o, x, b, NULL, 3, 4, out));
    assert_close(out, (const double[]){1, 1 + 215.0 / 46, 1, -3}, 4, 1e-6);
    // select_topk 1 keeps all: energies 1+4+0+1 = 6, 9+4+0+1 = 14, 4+25+0+16 = 45 → c = [6, 14, 45]/65
    //   idx0: mass 6 → +, all agree: (6·1 + 14·3 + 45·2)/65 = 138/65
    //   idx1: mass 5 → +, τ1=2, τ3=5: (6·2 + 45·5)/(6 + 45) = 237/51
    //   idx3: mass -2 → −, τ3=-4: -4
    o.select_topk = 1;
    CHECK(fk_merge_tensor(&o, x, b, NULL, 3, 4, out));
    assert_close(out, (const double[]){1 + 138.0 / 65, 1 + 237.0 / 51, 1, -3}, 4, 1e-6);
    // λ = 2 doubles the merged task vector
    o.lambda = 2;
    CHECK(fk_merge_tensor(&o, x, b, NULL, 3, 4, out));
    assert_close(out, (const double[]){1 + 276.0 / 65, 1 + 474.0 / 51, 1, -7}, 4, 1e-6);
    // a tie at the variance cut goes to the lower index: two models, τ1 = [1, -1, 1],
    // τ2 = [-1, 1, -1]: variances 1, 1, 1; select_topk 0.5 → k = 1 → idx0 only;
    // energies 1 and 1; mass at idx0 is 0 → + → τ1 = 1 alone survives
    const float u1[] = {2, 0, 2}, u2[] = {0, 2, 0}, ub[] = {1, 1, 1};
    o = opts_for(FK_MERGE_SCE);
    o.select_topk = 0.5;
    CHECK(fk_merge_tensor(&o, (const float *const[]){u1, u2}, ub, NULL, 2, 3, out));
    assert_close(out, (const double[]){2, 1, 1}, 3, 0);
}

// ------------------------------------------------------------------ top-k cuts against brute force

static const float *sort_key;
static int cmp_by_key(const void *a, const void *b) {
    int64_t i = *(const int64_t *)a, j = *(const int64_t *)b;
    if (sort_key[i] != sort_key[j]) return sort_key[i] > sort_key[j] ? -1 : 1;
    return i < j ? -1 : i > j;
}

// The k = floor(frac·count) largest keys (ties to the lower index), as a 0/1 mask.
static void brute_topk(const float *key, int64_t n, int64_t k, unsigned char *keep) {
    int64_t *idx = malloc((size_t)n * sizeof *idx);
    for (int64_t j = 0; j < n; j++) idx[j] = j;
    sort_key = key;
    qsort(idx, (size_t)n, sizeof *idx, cmp_by_key);
    memset(keep, 0, (size_t)n);
    for (int64_t j = 0; j < k && j < n; j++) keep[idx[j]] = 1;
    free(idx);
}

static void test_ties_trim_bruteforce(void **s) {
    (void)s;
    // One model: every kept entry agrees with its own sign, so the result is base + kept τ.
    // Values on a coarse grid make many equal magnitudes (ties at the cut).
    fk_rng r;
    fk_rng_seed(&r, 7);
    const int64_t n = 5003;
    float *b = malloc(n * sizeof *b), *x = malloc(n * sizeof *x), *out = malloc(n * sizeof *out), *mag = malloc(n * sizeof *mag);
    unsigned char *keep = malloc(n);
    for (int64_t j = 0; j < n; j++) {
        b[j] = (float)((int)fk_rng_below(&r, 9) - 4) * 0.25f;
        x[j] = b[j] + (float)((int)fk_rng_below(&r, 21) - 10) * 0.125f;
        mag[j] = fabsf(x[j] - b[j]);
    }
    const double densities[] = {0, 0.0001, 0.05, 0.3, 0.5, 0.77, 0.999, 1};
    for (size_t d = 0; d < sizeof densities / sizeof densities[0]; d++) {
        fk_merge_opts o = opts_for(FK_MERGE_TIES);
        o.density = densities[d];
        CHECK(fk_merge_tensor(&o, (const float *const[]){x}, b, NULL, 1, n, out));
        int64_t k = densities[d] >= 1 ? n : (int64_t)floor(densities[d] * (double)n);
        brute_topk(mag, n, k, keep);
        for (int64_t j = 0; j < n; j++) {
            float want = keep[j] ? x[j] : b[j];
            if (out[j] != want) fail_msg("density %g, entry %lld: got %g, expected %g", densities[d], (long long)j, out[j], want);
        }
    }
    free(b); free(x); free(out); free(mag); free(keep);
}

static void test_sce_select_bruteforce(void **s) {
    (void)s;
    // Two models with dyadic task vectors: the variance ((τ1-τ2)/2)² is exact, so a brute-force
    // selection reproduces the cut exactly; the rest is recomputed in double.
    fk_rng r;
    fk_rng_seed(&r, 11);
    const int64_t n = 2000;
    float *b = malloc(n * sizeof *b), *x1 = malloc(n * sizeof *x1), *x2 = malloc(n * sizeof *x2), *out = malloc(n * sizeof *out);
    float *var = malloc(n * sizeof *var);
    unsigned char *keep = malloc(n);
    int64_t nonzero = 0;
    for (int64_t j = 0; j < n; j++) {
        b[j] = 0.5f;
        x1[j] = b[j] + (float)((int)fk_rng_below(&r, 9) - 4) * 0.25f;
        x2[j] = b[j] + (float)((int)fk_rng_below(&r, 9) - 4) * 0.25f;
        double d = ((double)(x1[j] - b[j]) - (double)(x2[j] - b[j])) / 2;
        var[j] = (float)(d * d);
        nonzero += var[j] != 0;
    }
    const float w[] = {1, 2};
    fk_merge_opts o = opts_for(FK_MERGE_SCE);
    o.select_topk = 0.37;
    o.lambda = 0.8;
    CHECK(fk_merge_tensor(&o, (const float *const[]){x1, x2}, b, w, 2, n, out));
    brute_topk(var, n, (int64_t)floor(0.37 * (double)nonzero), keep);
    double e[2] = {0, 0};
    for (int64_t j = 0; j < n; j++)
        if (keep[j]) { double a = x1[j] - b[j], c = x2[j] - b[j]; e[0] += a * a; e[1] += c * c; }
    double c0 = w[0] * e[0] / (w[0] * e[0] + w[1] * e[1]), c1 = w[1] * e[1] / (w[0] * e[0] + w[1] * e[1]);
    for (int64_t j = 0; j < n; j++) {
        double t0 = keep[j] ? x1[j] - b[j] : 0, t1 = keep[j] ? x2[j] - b[j] : 0;
        int sgn = w[0] * t0 + w[1] * t1 >= 0 ? 1 : -1;
        double num = 0, den = 0;
        if ((t0 > 0 && sgn > 0) || (t0 < 0 && sgn < 0)) { num += c0 * t0; den += c0; }
        if ((t1 > 0 && sgn > 0) || (t1 < 0 && sgn < 0)) { num += c1 * t1; den += c1; }
        double want = b[j] + 0.8 * (den != 0 ? num / den : 0);
        if (fabs(out[j] - want) > 1e-6) fail_msg("entry %lld: got %.9g, expected %.9g", (long long)j, out[j], want);
    }
    free(b); free(x1); free(x2); free(out); free(var); free(keep);
}

static void test_per_tensor_identities(void **s) {
    (void)s;
    fk_rng r;
    fk_rng_seed(&r, 3);
    const int64_t n = 999;
    float *a = malloc(n * sizeof *a), *b = malloc(n * sizeof *b), *out = malloc(n * sizeof *out), *ta = malloc(n * sizeof *ta);
    for (int64_t j = 0; j < n; j++) { a[j] = fk_rng_normal(&r); b[j] = fk_rng_normal(&r); }
    b[5] = a[5];  // one zero task-vector entry
    // a model merged with itself (any weights) is the model
    fk_merge_opts o = opts_for(FK_MERGE_LINEAR);
    CHECK(fk_merge_tensor(&o, (const float *const[]){a, a}, NULL, (const float[]){0.25f, 0.75f}, 2, n, out));
    assert_memory_equal(out, a, n * sizeof *a);
    // task arithmetic with λ = 0 is the base
    o = opts_for(FK_MERGE_TASK_ARITHMETIC);
    o.lambda = 0;
    CHECK(fk_merge_tensor(&o, (const float *const[]){a, a, a}, b, NULL, 3, n, out));
    assert_memory_equal(out, b, n * sizeof *b);
    // one model, density 1: ties and sce are task arithmetic
    o.lambda = 0.7;
    CHECK(fk_merge_tensor(&o, (const float *const[]){a}, b, NULL, 1, n, ta));
    fk_merge_opts t = opts_for(FK_MERGE_TIES), c = opts_for(FK_MERGE_SCE);
    t.lambda = c.lambda = 0.7;
    CHECK(fk_merge_tensor(&t, (const float *const[]){a}, b, NULL, 1, n, out));
    assert_memory_equal(out, ta, n * sizeof *ta);
    CHECK(fk_merge_tensor(&c, (const float *const[]){a}, b, NULL, 1, n, out));
    assert_memory_equal(out, ta, n * sizeof *ta);
    free(a); free(b); free(out); free(ta);
}

// ------------------------------------------------------------------ model folders

static void tiny_llama(fk_config *c, int64_t d) {
    fk_config_llama(c, 40, d, 2, 4, 2, 24, 16);  // grouped-query attention
    c->ffn[1] = 12;                               // per-layer widths
    c->bias_qkv = true;
}

static void save_model(const char *dir, const fk_config *c, uint64_t seed, fk_dtype dt) {
    fk_model m;
    CHECK(fk_model_init(&m, c));
    fk_model_init_weights(&m, seed);
    fk_rng r;
    fk_rng_seed(&r, seed * 31 + 1);
    for (int64_t i = 0; i < m.n_floats; i++) m.w[i] += 0.01f * fk_rng_normal(&r);  // norms and biases differ too
    CHECK(fk_hf_save(&m, dir, dt));
    fk_model_free(&m);
}

// Loads the merged folder and every input, and checks each HF tensor of the result against
// fk_merge_tensor applied to the inputs' tensors (rounded to out_dtype).
static void check_against_formula(const fk_merge_opts *o, const char *out_dir, const char *const *dirs, const float *w,
                                  int n, const char *base) {
    fk_model merged, in[8], bm;
    CHECK(fk_hf_load(&merged, out_dir));
    for (int i = 0; i < n; i++) CHECK(fk_hf_load(&in[i], dirs[i]));
    if (base) CHECK(fk_hf_load(&bm, base));
    fk_hf_tensor *ts;
    int nt;
    CHECK(fk_hf_tensors(&merged, fk_config_arch(&merged.cfg), &ts, &nt));
    assert_true(nt > 10);
    for (int k = 0; k < nt; k++) {
        int64_t numel = ts[k].ndim == 1 ? ts[k].shape[0] : ts[k].shape[0] * ts[k].shape[1];
        float *x[8], *b = malloc(numel * sizeof(float)), *got = malloc(numel * sizeof(float)), *want = malloc(numel * sizeof(float));
        for (int i = 0; i < n; i++) { x[i] = malloc(numel * sizeof(float)); fk_hf_gather(&in[i], in[i].w, &ts[k], x[i]); }
        if (base) fk_hf_gather(&bm, bm.w, &ts[k], b);
        fk_hf_gather(&merged, merged.w, &ts[k], got);
        CHECK(fk_merge_tensor(o, (const float *const *)x, base ? b : NULL, w, n, numel, want));
        for (int64_t j = 0; j < numel; j++) {
            float e = o->out_dtype == FK_DT_F16 ? fk_f16_to_f32(fk_f32_to_f16(want[j]))
                    : o->out_dtype == FK_DT_BF16 ? fk_bf16_to_f32(fk_f32_to_bf16(want[j])) : want[j];
            if (got[j] != e) fail_msg("%s[%lld]: merged %.9g, formula %.9g", ts[k].name, (long long)j, got[j], e);
        }
        for (int i = 0; i < n; i++) free(x[i]);
        free(b); free(got); free(want);
    }
    free(ts);
    fk_model_free(&merged);
    for (int i = 0; i < n; i++) fk_model_free(&in[i]);
    if (base) fk_model_free(&bm);
}

static void test_merge_models(void **s) {
    (void)s;
    fk_config c;
    tiny_llama(&c, 16);
    save_model(tp("mA"), &c, 1, FK_DT_F32);
    save_model(tp("mB"), &c, 2, FK_DT_BF16);  // inputs may be f16/bf16: converted to f32 for the arithmetic
    save_model(tp("mC"), &c, 4, FK_DT_F16);
    save_model(tp("mBase"), &c, 3, FK_DT_F32);
    const char *dirs[] = {tp("mA"), tp("mB"), tp("mC")}, *base = tp("mBase");
    const float w[] = {0.5f, 1.0f, 0.75f};

    fk_merge_opts o = opts_for(FK_MERGE_TIES);
    o.density = 0.6;
    o.lambda = 0.9;
    CHECK(fk_merge(&o, dirs, w, 3, base, tp("ties")));
    check_against_formula(&o, tp("ties"), dirs, w, 3, base);

    o = opts_for(FK_MERGE_SCE);
    o.select_topk = 0.5;
    CHECK(fk_merge(&o, dirs, w, 3, base, tp("sce")));
    check_against_formula(&o, tp("sce"), dirs, w, 3, base);

    o = opts_for(FK_MERGE_TASK_ARITHMETIC);
    o.lambda = 0.6;
    o.out_dtype = FK_DT_BF16;
    CHECK(fk_merge(&o, dirs, w, 2, base, tp("ta")));
    check_against_formula(&o, tp("ta"), dirs, w, 2, base);

    o = opts_for(FK_MERGE_LINEAR);
    o.out_dtype = FK_DT_F16;
    CHECK(fk_merge(&o, dirs, NULL, 3, NULL, tp("lin")));
    check_against_formula(&o, tp("lin"), dirs, NULL, 3, NULL);

    // deterministic: the same merge twice gives the same bytes
    o = opts_for(FK_MERGE_TIES);
    o.density = 0.6;
    o.lambda = 0.9;
    CHECK(fk_merge(&o, dirs, w, 3, base, tp("ties2")));
    char *a, *b;
    size_t na, nb;
    CHECK(fk_read_file(tp("ties/model.safetensors"), &a, &na));
    CHECK(fk_read_file(tp("ties2/model.safetensors"), &b, &nb));
    assert_int_equal(na, nb);
    assert_memory_equal(a, b, na);
    free(a); free(b);
    // the output's config is the inputs' with the output dtype
    fk_config got;
    CHECK(fk_hf_config_read(tp("ta/config.json"), &got));
    assert_int_equal(got.d_model, c.d_model);
    assert_int_equal(got.n_kv_head, c.n_kv_head);
    assert_int_equal(got.ffn[1], c.ffn[1]);
    assert_true(got.bias_qkv);
    char *cfg;
    CHECK(fk_read_file(tp("ta/config.json"), &cfg, NULL));
    assert_non_null(strstr(cfg, "\"torch_dtype\":\t\"bfloat16\""));
    free(cfg);
}

static void test_merge_identities(void **s) {
    (void)s;
    fk_config c;
    fk_config_gpt2(&c, 30, 16, 2, 2, 12);  // tied head, transposed Conv1D tensors
    save_model(tp("gA"), &c, 5, FK_DT_F32);
    save_model(tp("gBase"), &c, 6, FK_DT_F32);
    fk_model a, b, m;
    CHECK(fk_hf_load(&a, tp("gA")));
    CHECK(fk_hf_load(&b, tp("gBase")));
    // linear merge of a model with itself is the model
    fk_merge_opts o = opts_for(FK_MERGE_LINEAR);
    const char *self[] = {tp("gA"), tp("gA")};
    CHECK(fk_merge(&o, self, (const float[]){0.25f, 0.75f}, 2, NULL, tp("gself")));
    CHECK(fk_hf_load(&m, tp("gself")));
    assert_memory_equal(m.w, a.w, (size_t)a.n_floats * sizeof(float));
    fk_model_free(&m);
    // task arithmetic with λ = 0 is the base
    o = opts_for(FK_MERGE_TASK_ARITHMETIC);
    o.lambda = 0;
    CHECK(fk_merge(&o, self, NULL, 1, tp("gBase"), tp("gl0")));
    CHECK(fk_hf_load(&m, tp("gl0")));
    assert_memory_equal(m.w, b.w, (size_t)b.n_floats * sizeof(float));
    fk_model_free(&m);
    // one model, density 1: ties and sce equal task arithmetic
    fk_model ta, x;
    o.lambda = 0.7;
    CHECK(fk_merge(&o, self, NULL, 1, tp("gBase"), tp("gta")));
    CHECK(fk_hf_load(&ta, tp("gta")));
    fk_merge_method ms[] = {FK_MERGE_TIES, FK_MERGE_SCE};
    for (int k = 0; k < 2; k++) {
        fk_merge_opts t = opts_for(ms[k]);
        t.lambda = 0.7;
        CHECK(fk_merge(&t, self, NULL, 1, tp("gBase"), tp("gone")));
        CHECK(fk_hf_load(&x, tp("gone")));
        assert_memory_equal(x.w, ta.w, (size_t)ta.n_floats * sizeof(float));
        fk_model_free(&x);
    }
    fk_model_free(&ta);
    fk_model_free(&a);
    fk_model_free(&b);
}

// A model folder split into two shards with model.safetensors.index.json.
static void write_sharded(const char *from, const char *to) {
    fk_safetensors st;
    char p[512];
    snprintf(p, sizeof p, "%s/model.safetensors", from);
    CHECK(fk_st_open(&st, p));
    CHECK(fk_mkdir_p(to));
    fk_st_entry *e = calloc((size_t)st.n_tensors, sizeof *e);
    for (int i = 0; i < st.n_tensors; i++) {
        const fk_st_tensor *t = &st.tensors[i];
        e[i].name = t->name;
        e[i].dtype = t->dtype;
        e[i].ndim = t->ndim;
        memcpy(e[i].shape, t->shape, sizeof t->shape);
        e[i].data = t->data;
    }
    int half = st.n_tensors / 2;
    snprintf(p, sizeof p, "%s/model-00001-of-00002.safetensors", to);
    CHECK(fk_st_write(p, e, half, NULL));
    snprintf(p, sizeof p, "%s/model-00002-of-00002.safetensors", to);
    CHECK(fk_st_write(p, e + half, st.n_tensors - half, NULL));
    cJSON *root = cJSON_CreateObject(), *map = cJSON_CreateObject();
    for (int i = 0; i < st.n_tensors; i++)
        cJSON_AddStringToObject(map, st.tensors[i].name, i < half ? "model-00001-of-00002.safetensors" : "model-00002-of-00002.safetensors");
    cJSON_AddItemToObject(root, "weight_map", map);
    char *json = cJSON_Print(root);
    snprintf(p, sizeof p, "%s/model.safetensors.index.json", to);
    CHECK(fk_write_file_atomic(p, json, strlen(json)));
    free(json);
    cJSON_Delete(root);
    free(e);
    fk_st_close(&st);
    char *cfg;
    size_t n;
    snprintf(p, sizeof p, "%s/config.json", from);
    CHECK(fk_read_file(p, &cfg, &n));
    snprintf(p, sizeof p, "%s/config.json", to);
    CHECK(fk_write_file_atomic(p, cfg, n));
    free(cfg);
}

static void test_sharded_input(void **s) {
    (void)s;
    fk_config c;
    tiny_llama(&c, 16);
    save_model(tp("sA"), &c, 11, FK_DT_F32);
    save_model(tp("sB"), &c, 12, FK_DT_F32);
    write_sharded(tp("sA"), tp("sA_sharded"));
    fk_merge_opts o = opts_for(FK_MERGE_LINEAR);
    const char *plain[] = {tp("sA"), tp("sB")}, *sharded[] = {tp("sA_sharded"), tp("sB")};
    CHECK(fk_merge(&o, plain, NULL, 2, NULL, tp("s_plain")));
    CHECK(fk_merge(&o, sharded, NULL, 2, NULL, tp("s_sharded")));
    fk_model a, b;
    CHECK(fk_hf_load(&a, tp("s_plain")));
    CHECK(fk_hf_load(&b, tp("s_sharded")));
    assert_memory_equal(a.w, b.w, (size_t)a.n_floats * sizeof(float));
    fk_model_free(&a);
    fk_model_free(&b);
}

// ------------------------------------------------------------------ refusals

static fk_tokenizer *trained_tokenizer(const char *text) {
    fk_tok_train_opts t = {0};
    t.vocab_size = 262;
    t.min_frequency = 1;
    fk_tokenizer *tok;
    const char *texts[] = {text};
    CHECK(fk_tok_train(&t, texts, NULL, 1, &tok, NULL));
    return tok;
}

static void expect_refused(fk_status st, fk_status want, const char *const *fragments) {
    if (st != want) fail_msg("expected %s, got %s: %s", fk_status_name(want), fk_status_name(st), fk_last_error());
    for (const char *const *f = fragments; *f; f++)
        if (!strstr(fk_last_error(), *f)) fail_msg("message \"%s\" lacks \"%s\"", fk_last_error(), *f);
}

static void test_refusals(void **s) {
    (void)s;
    fk_config c, wide;
    tiny_llama(&c, 16);
    tiny_llama(&wide, 24);
    save_model(tp("rA"), &c, 1, FK_DT_F32);
    save_model(tp("rB"), &c, 2, FK_DT_F32);
    save_model(tp("rWide"), &wide, 3, FK_DT_F32);
    fk_merge_opts lin = opts_for(FK_MERGE_LINEAR), ties = opts_for(FK_MERGE_TIES);
    const char *ab[] = {tp("rA"), tp("rB")}, *aw[] = {tp("rA"), tp("rWide")};

    // a different shape in config.json: the folder and the key are named
    expect_refused(fk_merge(&lin, aw, NULL, 2, NULL, tp("rOut")), FK_ERR_FORMAT,
                   (const char *[]){tp("rWide"), "hidden_size", "24", "16", NULL});
    // the same config but one tensor with another shape (hand-edited file)
    fk_safetensors st;
    CHECK(fk_st_open(&st, tp("rB/model.safetensors")));
    fk_st_entry *e = calloc((size_t)st.n_tensors, sizeof *e);
    const char *edited = NULL;
    for (int i = 0; i < st.n_tensors; i++) {
        const fk_st_tensor *t = &st.tensors[i];
        e[i] = (fk_st_entry){t->name, t->dtype, t->ndim, {0}, t->data};
        memcpy(e[i].shape, t->shape, sizeof t->shape);
        if (!edited && t->ndim == 2) { e[i].ndim = 1; e[i].shape[0] = t->numel; edited = t->name; }
    }
    CHECK(fk_mkdir_p(tp("rBad")));
    CHECK(fk_st_write(tp("rBad/model.safetensors"), e, st.n_tensors, NULL));
    char *cfg;
    size_t n;
    CHECK(fk_read_file(tp("rB/config.json"), &cfg, &n));
    CHECK(fk_write_file_atomic(tp("rBad/config.json"), cfg, n));
    free(cfg);
    const char *abad[] = {tp("rA"), tp("rBad")};
    expect_refused(fk_merge(&lin, abad, NULL, 2, NULL, tp("rOut")), FK_ERR_FORMAT,
                   (const char *[]){tp("rBad"), edited, "has shape [", NULL});
    free(e);
    fk_st_close(&st);
    // a missing base, and a base given to linear
    expect_refused(fk_merge(&ties, ab, NULL, 2, NULL, tp("rOut")), FK_ERR_ARG, (const char *[]){"needs a base model", NULL});
    expect_refused(fk_merge(&lin, ab, NULL, 2, tp("rA"), tp("rOut")), FK_ERR_ARG, (const char *[]){"does not use a base", NULL});
    // a base that is not a model folder
    expect_refused(fk_merge(&ties, ab, NULL, 2, tp("nowhere"), tp("rOut")), FK_ERR_IO, (const char *[]){"nowhere", "config.json", NULL});
    // the base must match too
    expect_refused(fk_merge(&ties, ab, NULL, 2, tp("rWide"), tp("rOut")), FK_ERR_FORMAT, (const char *[]){tp("rWide"), NULL});
    // writing over an input
    expect_refused(fk_merge(&lin, ab, NULL, 2, NULL, tp("rB")), FK_ERR_ARG, (const char *[]){"is one of the inputs", NULL});
    assert_false(fk_path_exists(tp("rOut/model.safetensors")));  // nothing was written by the refusals

    // tokenizers: identical ones are copied to the output ...
    fk_tokenizer *t1 = trained_tokenizer("aaaa bbbb aaaa bbbb abab"), *t2 = trained_tokenizer("xyz xyz xyz zzz yyy");
    CHECK(fk_tok_save_hf(t1, tp("rA")));
    CHECK(fk_tok_save_hf(t1, tp("rB")));
    CHECK(fk_merge(&lin, ab, NULL, 2, NULL, tp("rTok")));
    assert_true(fk_path_exists(tp("rTok/tokenizer.json")));
    assert_true(fk_path_exists(tp("rTok/tokenizer_config.json")));
    fk_tokenizer *t3;
    CHECK(fk_tok_load(tp("rTok"), &t3));
    assert_true(fk_tok_fingerprint(t3) == fk_tok_fingerprint(t1));
    fk_tok_free(t3);
    // ... the same tokenizer written with other formatting is accepted (fingerprints agree) ...
    char *json;
    CHECK(fk_read_file(tp("rB/tokenizer.json"), &json, NULL));
    cJSON *root = cJSON_Parse(json);
    char *flat = cJSON_PrintUnformatted(root);
    if (strlen(flat) == strlen(json)) { free(flat); flat = cJSON_Print(root); }
    assert_true(strlen(flat) != strlen(json));
    CHECK(fk_write_file_atomic(tp("rB/tokenizer.json"), flat, strlen(flat)));
    free(json); free(flat); cJSON_Delete(root);
    CHECK(fk_merge(&lin, ab, NULL, 2, NULL, tp("rTok")));
    // ... a different one is refused with both folders named ...
    CHECK(fk_tok_save_hf(t2, tp("rB")));
    expect_refused(fk_merge(&lin, ab, NULL, 2, NULL, tp("rOut")), FK_ERR_FORMAT,
                   (const char *[]){tp("rB"), tp("rA"), "tokenizer.json differs", NULL});
    // ... and so is one folder having a tokenizer the other lacks
    save_model(tp("rNoTok"), &c, 9, FK_DT_F32);
    const char *anotok[] = {tp("rA"), tp("rNoTok")};
    expect_refused(fk_merge(&lin, anotok, NULL, 2, NULL, tp("rOut")), FK_ERR_FORMAT,
                   (const char *[]){tp("rNoTok"), "has no tokenizer.json", NULL});
    fk_tok_free(t1);
    fk_tok_free(t2);
    // bad options
    fk_merge_opts bad = ties;
    bad.density = -0.5;
    expect_refused(fk_merge(&bad, ab, NULL, 2, tp("rA"), tp("rOut")), FK_ERR_ARG, (const char *[]){"density", NULL});
    fk_merge_method mm;
    assert_int_equal(fk_merge_method_parse("slerp", &mm), FK_ERR_ARG);
    assert_non_null(strstr(fk_last_error(), "slerp"));
    CHECK(fk_merge_method_parse("task_arithmetic", &mm));
    assert_int_equal(mm, FK_MERGE_TASK_ARITHMETIC);
}

// ------------------------------------------------------------------ CLI


static void test_cli(void **s) {
    (void)s;
    fk_config c;
    fk_config_gpt2(&c, 256, 32, 2, 2, 32);  // byte vocabulary: eval and train need no tokenizer
    save_model(tp("cA"), &c, 21, FK_DT_F32);
    save_model(tp("cB"), &c, 22, FK_DT_F32);
    save_model(tp("cBase"), &c, 23, FK_DT_F32);
    FILE *f = fopen(tp("text.txt"), "w");
    for (int i = 0; i < 200; i++) fprintf(f, "line %d: the cat sat on the mat.\n", i % 13);
    fclose(f);
    char *out;
    int rc = run(&out, "%s merge --method ties -o %s --model %s --weight 0.7 --model %s --weight 0.3 --base %s --density 0.5 --lambda 0.8",
                 FK_CLI, tp("cTies"), tp("cA"), tp("cB"), tp("cBase"));
    if (rc != 0) fail_msg("merge failed: %s", out);
    assert_non_null(strstr(out, "\"method\":\"ties\""));
    free(out);
    // the result is what the library computes with the weights paired to their models
    fk_merge_opts o = opts_for(FK_MERGE_TIES);
    o.density = 0.5;
    o.lambda = 0.8;
    const char *dirs[] = {tp("cA"), tp("cB")};
    check_against_formula(&o, tp("cTies"), dirs, (const float[]){0.7f, 0.3f}, 2, tp("cBase"));
    // an ordinary model folder: eval and train --init load it
    rc = run(&out, "%s eval --model %s --data %s", FK_CLI, tp("cTies"), tp("text.txt"));
    if (rc != 0) fail_msg("eval of the merge failed: %s", out);
    assert_non_null(strstr(out, "\"bpb\":"));
    free(out);
    rc = run(&out, "%s train --data %s --init %s -o %s --steps 2 --batch 2 --seq 16 --eval-every 0", FK_CLI, tp("text.txt"),
             tp("cTies"), tp("cTrained"));
    if (rc != 0) fail_msg("train --init from the merge failed: %s", out);
    free(out);
    rc = run(&out, "%s merge --method sce -o %s --model %s %s --base %s --select-topk 0.3 --dtype bf16", FK_CLI, tp("cSce"),
             tp("cA"), tp("cB"), tp("cBase"));
    if (rc != 0) fail_msg("sce merge failed: %s", out);
    free(out);
    o = opts_for(FK_MERGE_SCE);
    o.select_topk = 0.3;
    o.out_dtype = FK_DT_BF16;
    check_against_formula(&o, tp("cSce"), dirs, NULL, 2, tp("cBase"));
    rc = run(&out, "%s merge --method linear -o %s --model %s --model %s --weight 3 --no-normalize", FK_CLI, tp("cLin"),
             tp("cA"), tp("cB"));
    if (rc != 0) fail_msg("linear merge failed: %s", out);
    free(out);
    o = opts_for(FK_MERGE_LINEAR);
    o.normalize = false;
    check_against_formula(&o, tp("cLin"), dirs, (const float[]){1, 3}, 2, NULL);

    // usage errors exit 2 with the problem named; refused inputs exit 1 with the folder named
    assert_int_equal(run(&out, "%s merge --method ties -o %s --model %s --model %s", FK_CLI, tp("cX"), tp("cA"), tp("cB")), 2);
    assert_non_null(strstr(out, "needs --base"));
    free(out);
    assert_int_equal(run(&out, "%s merge --method ties -o %s --weight 2 --model %s --base %s", FK_CLI, tp("cX"), tp("cA"), tp("cB")), 2);
    assert_non_null(strstr(out, "before any --model"));
    free(out);
    assert_int_equal(run(&out, "%s merge --method slerp -o %s --model %s", FK_CLI, tp("cX"), tp("cA")), 2);
    assert_non_null(strstr(out, "slerp"));
    free(out);
    fk_config other;
    fk_config_gpt2(&other, 256, 32, 3, 2, 32);
    save_model(tp("cDeep"), &other, 24, FK_DT_F32);
    assert_int_equal(run(&out, "%s merge --method linear -o %s --model %s --model %s", FK_CLI, tp("cX"), tp("cA"), tp("cDeep")), 1);
    assert_non_null(strstr(out, "cDeep: config.json num_hidden_layers"));
    free(out);
    assert_false(fk_path_exists(tp("cX/model.safetensors")));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_linear_formula),
        cmocka_unit_test(test_task_arithmetic_formula),
        cmocka_unit_test(test_ties_formula),
        cmocka_unit_test(test_sce_formula),
        cmocka_unit_test(test_ties_trim_bruteforce),
        cmocka_unit_test(test_sce_select_bruteforce),
        cmocka_unit_test(test_per_tensor_identities),
        cmocka_unit_test(test_merge_models),
        cmocka_unit_test(test_merge_identities),
        cmocka_unit_test(test_sharded_input),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_cli),
    };
    return cmocka_run_group_tests(tests, tmpdir_setup, tmpdir_teardown);
}
