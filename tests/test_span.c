// The span objective (fusion.md §6): chunking at shared byte boundaries on hand-made
// tokenizations, the chunk loss against hand-worked values and tools/ref/make_span_golden.py
// (PyTorch autograd), finite differences of the whole loss with respect to the logits and
// of fk_model_weight_rows' gradient, the boundary files, and training lowering the loss.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fusekit/fusekit.h"
#include "fusekit/fusion.h"
#include "fusekit/store.h"
#include "test_util.h"

// "the cat sat": source "the" " cat" " sat", target "th" "e" " c" "at" " " "sat": the target's
// tokens 1, 3 and 5 end where a source token does.
static void test_shared_ends(void **state) {
    (void)state;
    const int64_t sb[] = {0, 3, 7, 11}, tb[] = {0, 2, 3, 5, 7, 8, 11};
    uint8_t end[6];
    fk_span_shared_ends(sb, 3, tb, 6, end);
    const uint8_t want[] = {0, 1, 0, 1, 0, 1};
    assert_memory_equal(end, want, 6);
    // empty tokens (a BOS at 0, an empty target token at 3) and the same tokenization
    const int64_t sb2[] = {0, 0, 3, 5}, tb2[] = {0, 3, 3, 4, 5};
    uint8_t end2[4];
    fk_span_shared_ends(sb2, 3, tb2, 4, end2);
    const uint8_t want2[] = {1, 1, 0, 1};
    assert_memory_equal(end2, want2, 4);
    fk_span_shared_ends(tb, 6, tb, 6, end);
    for (int t = 0; t < 6; t++) assert_int_equal(end[t], 1);
}

static void test_chunks(void **state) {
    (void)state;
    const uint8_t ends[] = {0, 1, 0, 1, 0, 1};  // tokens 0..5 of the case above
    int32_t chunk[5];
    // off 0, 5 positions (tokens 1..5): token 1 ("e") starts inside "the": no whole chunk
    assert_int_equal(fk_span_chunks(ends, 5, chunk), 2);
    const int32_t want0[] = {-1, 0, 0, 1, 1};
    assert_memory_equal(chunk, want0, sizeof want0);
    // off 1, 4 positions (tokens 2..5): " c"+"at", " "+"sat"
    assert_int_equal(fk_span_chunks(ends + 1, 4, chunk), 2);
    const int32_t want1[] = {0, 0, 1, 1};
    assert_memory_equal(chunk, want1, sizeof want1);
    // off 1, 3 positions: the last chunk is cut by the window's end
    assert_int_equal(fk_span_chunks(ends + 1, 3, chunk), 1);
    const int32_t want2[] = {0, 0, -1};
    assert_memory_equal(chunk, want2, sizeof want2);
    // every boundary shared: one chunk per position
    const uint8_t all[] = {1, 1, 1, 1};
    assert_int_equal(fk_span_chunks(all, 3, chunk), 3);
    for (int j = 0; j < 3; j++) assert_int_equal(chunk[j], j);
    const uint8_t none[] = {1, 0, 0, 0};
    assert_int_equal(fk_span_chunks(none, 3, chunk), 0);
}

// p = 1/2, q = 1/4 at temperature 1: -(1/2 log 1/4 + 1/2 log 3/4) = 0.8369882; the student is
// below the teacher, so the derivative with respect to its nats is positive.
static void test_bce_hand(void **state) {
    (void)state;
    double d, l = fk_span_bce(log(0.5), log(0.25), 1.0, &d);
    assert_true(fabs(l - 0.5 * (log(4.0) + log(4.0 / 3))) < 1e-5);
    assert_true(d > 0);
    // at q = p the derivative vanishes (within eps) and the loss is the binary entropy
    l = fk_span_bce(log(0.3), log(0.3), 1.0, &d);
    assert_true(fabs(d) < 1e-5);
    assert_true(fabs(l + 0.3 * log(0.3) + 0.7 * log(0.7)) < 1e-5);
    // a student above the teacher is pushed down; log-likelihoods above 0 count as 0
    fk_span_bce(log(0.3), log(0.6), 2.0, &d);
    assert_true(d < 0);
    assert_true(fabs(fk_span_bce(0.1, -1, 1, NULL) - fk_span_bce(0, -1, 1, NULL)) < 1e-12);
}

static const cJSON *item(const cJSON *o, const char *k) {
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(o, k);
    if (!x) fail_msg("golden: no key %s", k);
    return x;
}

// Against tools/ref/make_span_golden.py: chunks exactly; teacher chunk log-likelihoods, the
// loss and its derivatives within 1e-5 relative (float32 inputs, double sums here and there).
static void test_golden(void **state) {
    (void)state;
    cJSON *root;
    CHECK(fk_json_read(FK_TEST_DATA "/span/golden.json", &root));
    const cJSON *c;
    int ncases = 0;
    cJSON_ArrayForEach(c, item(root, "cases")) {
        int n = item(c, "n")->valueint, S = item(c, "S")->valueint;
        fk_fusion_opts o;
        fk_fusion_defaults(&o);
        CHECK(fk_fusion_parse(item(c, "kind")->valuestring, item(c, "level")->valuestring, &o));
        o.tau = (float)item(c, "tau")->valuedouble;
        double temp = item(c, "temp")->valuedouble;
        uint8_t ends[64];
        float nll[64], ce[4][64], g[64];
        int32_t chunk[64];
        double tl[64];
        for (int j = 0; j <= n; j++) ends[j] = (uint8_t)cJSON_GetArrayItem(item(c, "ends"), j)->valueint;
        for (int j = 0; j < n; j++) nll[j] = (float)cJSON_GetArrayItem(item(c, "nll"), j)->valuedouble;
        fk_teacher_window w[4];
        for (int k = 0; k < S; k++) {
            for (int j = 0; j < n; j++) ce[k][j] = (float)cJSON_GetArrayItem(cJSON_GetArrayItem(item(c, "ce"), k), j)->valuedouble;
            w[k] = (fk_teacher_window){.n = n, .k = 1, .ce = ce[k]};
        }
        int64_t nc = fk_span_chunks(ends, n, chunk);
        assert_int_equal(nc, cJSON_GetArraySize(item(c, "tl")));
        for (int j = 0; j < n; j++) assert_int_equal(chunk[j], cJSON_GetArrayItem(item(c, "chunk"), j)->valueint);
        double wt[4] = {0};
        fk_span_teacher_logp(&o, w, S, chunk, n, tl, wt);
        for (int64_t q = 0; q < nc; q++) {
            double want = cJSON_GetArrayItem(item(c, "tl"), (int)q)->valuedouble;
            assert_true(fabs(tl[q] - want) < 1e-5 * fmax(1, fabs(want)));
        }
        double loss = fk_span_window(chunk, n, nll, tl, nc, temp, g), want = item(c, "loss")->valuedouble;
        assert_true(fabs(loss - want) < 1e-5 * fmax(1, fabs(want)));
        for (int j = 0; j < n; j++) {
            double gw = cJSON_GetArrayItem(item(c, "g"), j)->valuedouble;
            assert_true(fabs(g[j] - gw) < 1e-5 * fmax(1e-2, fabs(gw)));
        }
        ncases++;
    }
    assert_int_equal(ncases, 6);
    cJSON_Delete(root);
}

// lambda * mean CE + (1 - lambda) * mean over chunks of L_c, in double, from logits z (N, V).
#define FN 10
#define FV 7
static double whole_loss(const double *z, const int32_t *y, const int32_t *chunk, int64_t nc, const double *tl, double lambda,
                         double temp) {
    double ce = 0, s[FN] = {0};
    for (int i = 0; i < FN; i++) {
        double mx = z[i * FV], sum = 0;
        for (int v = 1; v < FV; v++) mx = fmax(mx, z[i * FV + v]);
        for (int v = 0; v < FV; v++) sum += exp(z[i * FV + v] - mx);
        double nll = mx + log(sum) - z[i * FV + y[i]];
        ce += nll;
        if (chunk[i] >= 0) s[chunk[i]] -= nll;
    }
    double span = 0;
    for (int64_t c = 0; c < nc; c++) span += fk_span_bce(tl[c], s[c], temp, NULL);
    return lambda * ce / FN + (1 - lambda) * span / (double)nc;
}

// The gradient fused training uses (fk_span_window's derivatives as fk_teacher_set weights
// them, times softmax - onehot: fk_model_weight_rows' rows) against central differences of
// the loss in double: within 1e-4 relative to the largest entry.
static void test_fd_logits(void **state) {
    (void)state;
    fk_rng r;
    fk_rng_seed(&r, 7);
    double z[FN * FV], tl[FN];
    int32_t y[FN], chunk[FN];
    const uint8_t ends[FN + 1] = {1, 0, 1, 1, 0, 0, 1, 0, 1, 1, 0};
    for (int i = 0; i < FN * FV; i++) z[i] = 2 * fk_rng_uniform(&r) - 1;
    for (int i = 0; i < FN; i++) y[i] = (int32_t)fk_rng_below(&r, FV);
    int64_t nc = fk_span_chunks(ends, FN, chunk);
    assert_int_equal(nc, 5);
    for (int64_t c = 0; c < nc; c++) tl[c] = -4 * fk_rng_uniform(&r);
    for (int t = 0; t < 2; t++) {
        double lambda = t == 0 ? 0.0 : 0.6, temp = t == 0 ? 1.0 : 10.0;
        float nll[FN], g[FN];
        double p[FN * FV];
        for (int i = 0; i < FN; i++) {
            double mx = z[i * FV], sum = 0;
            for (int v = 1; v < FV; v++) mx = fmax(mx, z[i * FV + v]);
            for (int v = 0; v < FV; v++) sum += exp(z[i * FV + v] - mx);
            for (int v = 0; v < FV; v++) p[i * FV + v] = exp(z[i * FV + v] - mx) / sum;
            nll[i] = (float)(mx + log(sum) - z[i * FV + y[i]]);
        }
        fk_span_window(chunk, FN, nll, tl, nc, temp, g);
        double worst = 0, big = 0;
        for (int i = 0; i < FN; i++)
            for (int v = 0; v < FV; v++) {
                double w = lambda / FN + (1 - lambda) * g[i] / (double)nc;
                double an = w * (p[i * FV + v] - (v == y[i]));
                double zz[FN * FV], h = 1e-5;
                memcpy(zz, z, sizeof z);
                zz[i * FV + v] += h;
                double lp = whole_loss(zz, y, chunk, nc, tl, lambda, temp);
                zz[i * FV + v] -= 2 * h;
                double fd = (lp - whole_loss(zz, y, chunk, nc, tl, lambda, temp)) / (2 * h);
                worst = fmax(worst, fabs(an - fd));
                big = fmax(big, fabs(fd));
            }
        assert_true(big > 1e-3);
        assert_true(worst < 1e-4 * big);
    }
}

// A tiny GPT-2 (vocab 11, width 8, 2 layers) and a batch of 2 x 6 tokens.
static void tiny_model(fk_model *m, int32_t *x, int32_t *y) {
    fk_config c;
    fk_config_gpt2(&c, 11, 8, 2, 2, 16);
    CHECK(fk_model_init(m, &c));
    fk_model_init_weights(m, 3);
    fk_rng r;
    fk_rng_seed(&r, 5);
    for (int i = 0; i < 12; i++) { x[i] = (int32_t)fk_rng_below(&r, 11); y[i] = (int32_t)fk_rng_below(&r, 11); }
}

static double weighted_ce(fk_model *m, const int32_t *x, const int32_t *y, const float *w) {
    float loss;
    CHECK(fk_model_forward(m, x, y, 2, 6, false, &loss));
    const float *tl = fk_model_token_losses(m);
    double s = 0;
    for (int i = 0; i < 12; i++) s += (double)w[i] * tl[i];
    return s;
}

// fk_model_weight_rows: the gradient of sum_i w_i CE_i (weights of both signs) against
// central differences on the model's 40 entries of largest gradient (float32 model: within
// 2e-2 relative to the largest), and weights 1/N give the mean's gradient.
static void test_weight_rows(void **state) {
    (void)state;
    fk_model m;
    int32_t x[12], y[12];
    tiny_model(&m, x, y);
    float w[12], loss;
    fk_rng r;
    fk_rng_seed(&r, 9);
    for (int i = 0; i < 12; i++) w[i] = (float)(fk_rng_uniform(&r) - 0.3);
    CHECK(fk_model_alloc_grads(&m));
    fk_model_zero_grads(&m);
    CHECK(fk_model_forward(&m, x, y, 2, 6, true, &loss));
    CHECK(fk_model_weight_rows(&m, w));
    CHECK(fk_model_backward(&m, 1.0f));
    int64_t n = m.n_floats;
    float *g = malloc((size_t)n * sizeof *g);
    memcpy(g, m.g, (size_t)n * sizeof *g);
    double big = 0, worst = 0;
    for (int pick = 0; pick < 40; pick++) {  // the largest gradients not yet checked
        int64_t at = -1;
        for (int64_t i = 0; i < n; i++) if (g[i] != 0 && (at < 0 || fabsf(g[i]) > fabsf(g[at]))) at = i;
        if (at < 0) break;
        float keep = m.w[at], h = 1e-2f;
        m.w[at] = keep + h;
        double lp = weighted_ce(&m, x, y, w);
        m.w[at] = keep - h;
        double lm = weighted_ce(&m, x, y, w);
        m.w[at] = keep;
        double fd = (lp - lm) / (2 * h);
        big = fmax(big, fabs(fd));
        worst = fmax(worst, fabs(fd - g[at]));
        g[at] = 0;
    }
    assert_true(big > 1e-2);
    assert_true(worst < 2e-2 * big);
    // weights 1/N: the mean's gradient (to float rounding)
    for (int i = 0; i < 12; i++) w[i] = 1.0f / 12;
    fk_model_zero_grads(&m);
    CHECK(fk_model_forward(&m, x, y, 2, 6, true, &loss));
    CHECK(fk_model_weight_rows(&m, w));
    CHECK(fk_model_backward(&m, 1.0f));
    memcpy(g, m.g, (size_t)n * sizeof *g);
    fk_model_zero_grads(&m);
    CHECK(fk_model_forward(&m, x, y, 2, 6, true, &loss));
    CHECK(fk_model_backward(&m, 1.0f));
    for (int64_t i = 0; i < n; i++) assert_true(fabsf(g[i] - m.g[i]) <= 1e-6f * (1 + fabsf(m.g[i])));
    // refused without a training forward, or after a forward with teacher rows
    CHECK(fk_model_forward(&m, x, y, 2, 6, false, &loss));
    assert_int_equal(fk_model_weight_rows(&m, w), FK_ERR_ARG);
    free(g);
    fk_model_free(&m);
}

// Pure span training (lambda 0) of the tiny model toward fixed teacher chunk likelihoods:
// 40 AdamW steps (lr 1e-2) lower the mean chunk loss (measured: 1.13 -> 0.50 at temperature 1).
static void test_training_lowers(void **state) {
    (void)state;
    fk_model m;
    int32_t x[12], y[12], chunk[12];
    tiny_model(&m, x, y);
    const uint8_t ends[13] = {1, 0, 1, 1, 0, 0, 1, 1, 0, 1, 1, 1, 1};  // row 0: ends[0..6], row 1: ends[6..12]
    int64_t nc = fk_span_chunks(ends, 6, chunk), nc2 = fk_span_chunks(ends + 6, 6, chunk + 6);  // 3 and 5
    for (int j = 6; j < 12; j++) if (chunk[j] >= 0) chunk[j] += (int32_t)nc;
    nc += nc2;
    double tl[12];
    for (int64_t c = 0; c < nc; c++) tl[c] = -0.5 - 0.3 * (double)c;
    fk_optim_opts oo;
    fk_optim_defaults(&oo);
    oo.lr = 1e-2f;
    oo.warmup = 0;
    fk_adamw opt;
    CHECK(fk_adamw_init(&opt, &m, &oo));
    double first = 0, last = 0;
    for (int s = 0; s < 40; s++) {
        float loss, g[12], w[12];
        fk_model_zero_grads(&m);
        CHECK(fk_model_forward(&m, x, y, 2, 6, true, &loss));
        double l = fk_span_window(chunk, 12, fk_model_token_losses(&m), tl, nc, 1.0, g) / (double)nc;
        for (int i = 0; i < 12; i++) w[i] = g[i] / (float)nc;
        CHECK(fk_model_weight_rows(&m, w));
        CHECK(fk_model_backward(&m, 1.0f));
        fk_adamw_update(&opt, &m, oo.lr, 1.0f);
        if (s == 0) first = l;
        last = l;
    }
    print_message("span loss %.4f -> %.4f\n", first, last);
    assert_true(last < 0.8 * first);
    fk_adamw_free(&opt);
    fk_model_free(&m);
}

// Boundary files: a round trip, and a wrong token count, fingerprint, magic or flag refused
// naming the file.
static void test_bounds_file(void **state) {
    (void)state;
    const uint8_t ends[5] = {1, 0, 1, 1, 0};
    char *p = tpath("a.fkd.bounds");
    CHECK(fk_span_bounds_write(p, ends, 5, 11, 22));
    uint8_t *got;
    CHECK(fk_span_bounds_read(p, 5, 11, 22, &got));
    assert_memory_equal(got, ends, 5);
    free(got);
    assert_int_equal(fk_span_bounds_read(p, 6, 11, 22, &got), FK_ERR_FORMAT);
    assert_non_null(strstr(fk_last_error(), "a.fkd.bounds"));
    assert_int_equal(fk_span_bounds_read(p, 5, 12, 22, &got), FK_ERR_FORMAT);
    assert_null(got);
    size_t n;
    char *data = slurp(p, &n);
    data[32 + 2] = 2;
    spit(p, data, n);
    assert_int_equal(fk_span_bounds_read(p, 5, 11, 22, &got), FK_ERR_FORMAT);
    assert_non_null(strstr(fk_last_error(), "token 2"));
    data[0] = 'X';
    spit(p, data, n);
    assert_int_equal(fk_span_bounds_read(p, 5, 11, 22, &got), FK_ERR_FORMAT);
    free(data);
    assert_int_equal(fk_span_bounds_read(tpath("none.bounds"), 5, 11, 22, &got), FK_ERR_IO);
    char *bp = fk_span_bounds_path("x/s.to-1.fkd");
    assert_string_equal(bp, "x/s.to-1.fkd.bounds");
    free(bp);
}

// ---------------------------------------------------------------- the teacher set's span term

#define NT 200  // corpus tokens (bytes)

// A store of the byte tokenization of d with one entry and a random ce per position; aligned
// marks it as aligned from another tokenization (its boundary file then says which ends it shares).
static void write_store(const char *path, const fk_token_data *d, uint64_t fp, bool aligned, uint64_t seed) {
    int64_t begin[NT + 1];
    for (int i = 0; i <= NT; i++) begin[i] = i;
    fk_store_header h = {.flags = aligned ? FK_STORE_ALIGNED : 0, .k = 1, .seq = 64, .vocab_size = 256, .n_tokens = NT,
                         .corpus_bytes = NT, .tokenizer_fp = fp, .corpus_fp = 77};
    fk_store_writer *w;
    int64_t done;
    CHECK(fk_store_writer_open(path, &h, d->ids, begin, true, &w, &done));
    fk_rng r;
    fk_rng_seed(&r, seed);
    static uint8_t count[NT];
    static int32_t ids[NT];
    static float logp[NT], ce[NT];
    for (int t = 0; t < NT - 1; t++) { count[t] = 1; ids[t] = d->ids[t + 1]; logp[t] = -0.5f; ce[t] = 0.1f + 2 * fk_rng_uniform(&r); }
    for (int64_t first = 0; first < NT - 1; first += 64) {
        int64_t n = NT - 1 - first < 64 ? NT - 1 - first : 64;
        fk_store_seq q = {.first = first, .n = n, .k = 1, .count = count + first, .ids = ids + first, .logp = logp + first,
                          .ce = ce + first, .mean_ce = 1};
        CHECK(fk_store_write_seq(w, &q));
    }
    CHECK(fk_store_writer_finish(w));
}

// The stored (quantised) ce of every position of the store at path.
static void stored_ce(const char *path, float *ce) {
    fk_store *st;
    CHECK(fk_store_open(path, &st));
    fk_store_seq q = {0};
    for (int64_t c = 0; c < fk_store_n_seqs(st); c++) {
        CHECK(fk_store_read_seq(st, c, &q));
        memcpy(ce + q.first, q.ce, (size_t)q.n * sizeof *ce);
    }
    fk_store_seq_free(&q);
    fk_store_close(st);
}

static void record_fusion(const fk_train_event *ev, void *user) {
    float *f = user;
    f[ev->step - 1] = ev->fusion_loss;
}

// fk_train through the set's span teacher (lambda 0, a tiny Llama over the bytes, 30 steps of
// 2 x 32 tokens, lr 1e-2): every step's fusion_loss is finite and the last five steps' mean
// is below the first five's (the windows differ per step: a mean, not one batch).
static void span_training(const fk_token_data *d, fk_teacher_set *set) {
    fk_config c;
    fk_config_llama(&c, 256, 16, 1, 2, 2, 32, 32);
    fk_model m;
    CHECK(fk_model_init(&m, &c));
    fk_model_init_weights(&m, 2);
    fk_train_opts o;
    fk_train_defaults(&o);
    o.steps = 30;
    o.batch = 2;
    o.seq = 32;
    o.optim.lr = 1e-2f;
    o.optim.warmup = 0;
    o.optim.total_steps = 30;
    o.eval_every = 0;
    o.teacher = fk_teacher_set_teacher(set, 0.0f);
    fk_adamw opt;
    CHECK(fk_adamw_init(&opt, &m, &o.optim));
    float f[30];
    CHECK(fk_train(&m, &opt, d, NULL, &o, NULL, record_fusion, f));
    double a = 0, z = 0;
    for (int i = 0; i < 30; i++) assert_true(isfinite(f[i]) && f[i] > 0);
    for (int i = 0; i < 5; i++) { a += f[i]; z += f[25 + i]; }
    print_message("span training: fusion loss %.4f -> %.4f (means of 5 steps)\n", a / 5, z / 5);
    assert_true(z < a);
    fk_adamw_free(&opt);
    fk_model_free(&m);
}

// fk_teacher.span of a teacher set of a store in the target's tokenization and an aligned one
// with a boundary file, AvgCE token level, lambda 0.3, two rows: the weights and the losses
// equal the definition assembled from fk_span_chunks, fk_span_teacher_logp and
// fk_span_window on the stored ce and the aligned store's boundaries (exactly: the same
// float operations); a missing boundary file is refused naming it; fk_train trains on it.
static void test_teacher_set(void **state) {
    (void)state;
    fk_tokenizer *bytes = NULL;
    CHECK(fk_tok_new_bytes(&bytes));
    char text[NT + 1];
    for (int i = 0; i < NT; i++) text[i] = (char)('a' + (i * 5 + i / 7) % 26);
    spit(tpath("corpus.txt"), text, NT);
    fk_token_data d;
    CHECK(fk_data_load_tok(tpath("corpus.txt"), bytes, &d));
    uint64_t fp = fk_tok_fingerprint(bytes);
    const char *paths[2] = {tpath("own.fkd"), tpath("al.fkd")};
    write_store(paths[0], &d, fp, false, 1);
    write_store(paths[1], &d, fp, true, 2);
    fk_fusion_opts fo;
    fk_fusion_defaults(&fo);
    fo.kind = FK_FUSE_AVGCE;
    fo.level = FK_FUSE_TOKEN;
    fo.objective = FK_OBJECTIVE_SPAN;
    fo.span_temp = 3;
    fk_teacher_set *set = NULL;
    assert_int_equal(fk_teacher_set_open(paths, 2, &fo, &d, &set), FK_ERR_IO);
    assert_non_null(strstr(fk_last_error(), "al.fkd.bounds"));
    uint8_t ends[NT];
    fk_rng r;
    fk_rng_seed(&r, 4);
    for (int t = 0; t < NT; t++) ends[t] = fk_rng_uniform(&r) < 0.4f;
    char *bp = fk_span_bounds_path(paths[1]);
    CHECK(fk_span_bounds_write(bp, ends, NT, fp, 77));
    free(bp);
    CHECK(fk_teacher_set_open(paths, 2, &fo, &d, &set));
    const fk_teacher *t = fk_teacher_set_teacher(set, 0.3f);
    assert_non_null(t->span);
    enum { B = 2, T = 40 };
    const int64_t off[B] = {17, 120};
    int32_t labels[B * T];
    float nll[B * T];
    for (int i = 0; i < B * T; i++) { labels[i] = d.ids[off[i / T] + i % T + 1]; nll[i] = 0.2f + 3 * fk_rng_uniform(&r); }
    const float *w;
    float loss, fusion;
    CHECK(t->span(t->ctx, off, B, T, labels, nll, &w, &loss, &fusion));
    // the definition
    static float ce0[NT], ce1[NT];
    stored_ce(paths[0], ce0);
    stored_ce(paths[1], ce1);
    float g[B * T];
    double sum = 0, clm = 0;
    int64_t chunks = 0;
    for (int b = 0; b < B; b++) {
        fk_teacher_window win[2] = {{.n = T, .k = 1, .ce = ce0 + off[b]}, {.n = T, .k = 1, .ce = ce1 + off[b]}};
        int32_t chunk[T];
        double tl[T];
        int64_t nc = fk_span_chunks(ends + off[b], T, chunk);  // the own store shares every boundary
        assert_true(nc >= 3);
        fk_span_teacher_logp(&fo, win, 2, chunk, T, tl, NULL);
        sum += fk_span_window(chunk, T, nll + b * T, tl, nc, 3, g + b * T);
        chunks += nc;
    }
    for (int i = 0; i < B * T; i++) clm += nll[i];
    for (int i = 0; i < B * T; i++) assert_true(w[i] == 0.3f / (float)(B * T) + 0.7f * g[i] / (float)chunks);
    assert_true(fusion == (float)(sum / (double)chunks));
    assert_true(fabsf(loss - (float)(0.3 * clm / (B * T) + 0.7 * fusion)) < 1e-6f);
    span_training(&d, set);
    fk_teacher_set_close(set);
    fk_data_free(&d);
    fk_tok_free(bytes);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_shared_ends),
        cmocka_unit_test(test_chunks),
        cmocka_unit_test(test_bce_hand),
        cmocka_unit_test(test_golden),
        cmocka_unit_test(test_fd_logits),
        cmocka_unit_test(test_weight_rows),
        cmocka_unit_test(test_training_lowers),
        cmocka_unit_test(test_bounds_file),
        cmocka_unit_test(test_teacher_set),
    };
    return cmocka_run_group_tests(tests, tmpdir_setup, tmpdir_teardown);
}
