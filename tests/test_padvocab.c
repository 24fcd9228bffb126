// Padded vocabularies (issue 18 item 7): a model whose LM head has more rows than its tokenizer
// has tokens (Qwen2.5, Phi-3) scores, extracts, trains, fuses and generates over its real tokens
// only. The independent reference is the same model with the padding rows cut: a tiny Llama on
// the byte tokenizer (256 tokens) with 2 padding rows (258, within fk_vocab_check's 1%) whose
// LM-head rows are large, so that unmasked they would take most of the probability mass.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fusekit/fusekit.h"
#include "test_util.h"

#define VR 256   // the byte tokenizer's tokens
#define VP 258   // the padded model's rows
#define TOL 1e-5 // relative, for figures that sum the same terms in another grouping

// Padding rows of the LM head: 40 times the real rows' scale, random signs.
#define PAD_SCALE 40.0f

static const char *text_file(void) {
    const char *p = tpath("text.txt");
    if (!fk_path_exists(p)) {
        char buf[6000];
        size_t n = 0;
        for (int i = 0; n + 64 < sizeof buf; i++) n += (size_t)snprintf(buf + n, sizeof buf - n, "row %d: a padded head, %d rows.\n", i, i * 7);
        spit(p, buf, n);
    }
    return p;
}

// A tiny random Llama with V rows: untied LM head, else tied (Qwen2.5-0.5B) and with Gemma 2's
// final soft-cap when softcap > 0.
static void tiny_ex(fk_model *m, int64_t V, bool tied, float softcap) {
    fk_config c;
    fk_config_llama(&c, V, 32, 2, 4, 2, 64, 64);
    c.tied = tied;
    c.final_softcap = softcap;
    CHECK(fk_model_init(m, &c));
    fk_model_init_weights(m, 7);
}

static void tiny(fk_model *m, int64_t V) { tiny_ex(m, V, false, 0); }

static bool vocab_rows(fk_param_kind k) { return k == FK_P_TOK_EMB || k == FK_P_LM_HEAD; }

// p: t with VP - VR padding rows added (embedding rows small, LM-head rows large, both large when
// tied), masked when mask.
static void padded_of(const fk_model *t, fk_model *p, bool mask) {
    fk_config c = t->cfg;
    c.vocab_size = VP;
    CHECK(fk_model_init(p, &c));
    fk_rng rng;
    fk_rng_seed(&rng, 99);
    for (int i = 0; i < p->n_params; i++) {
        const fk_param *q = &p->params[i], *s = &t->params[i];
        assert_int_equal(q->kind, s->kind);
        memcpy(p->w + q->offset, t->w + s->offset, (size_t)s->numel * sizeof(float));
        if (!vocab_rows(q->kind)) continue;
        float scale = q->kind == FK_P_LM_HEAD || t->cfg.tied ? PAD_SCALE : 0.02f;
        for (int64_t j = s->numel; j < q->numel; j++) p->w[q->offset + j] = scale * (float)(2 * fk_rng_uniform(&rng) - 1);
    }
    if (mask) CHECK(fk_model_set_vocab_real(p, VR));
}

static void load_bytes(fk_tokenizer **tok, fk_token_data *d) {
    CHECK(fk_tok_new_bytes(tok));
    CHECK(fk_data_load_tok(text_file(), *tok, d));
}

static void assert_rel(double a, double b, double tol) {
    if (!(fabs(a - b) <= tol * fmax(fabs(b), 1e-30))) fail_msg("%.9g vs %.9g (relative %.3g > %.3g)", a, b, fabs(a - b) / fabs(b), tol);
}

// Loss, bits per byte and perplexity as the truncated model's; llama-perplexity unmasked (as
// llama.cpp); KL to the unmasked model over the real tokens 0; unmasked, the padding rows
// change everything.
static void test_eval(void **st) {
    (void)st;
    fk_model t, p, u;
    fk_tokenizer *tok;
    fk_token_data d;
    tiny(&t, VR);
    padded_of(&t, &p, true);
    padded_of(&t, &u, false);
    load_bytes(&tok, &d);
    fk_eval_result rt, rp, ru;
    CHECK(fk_eval_data(&t, &d, 32, 4, 0, &rt));
    CHECK(fk_eval_data(&p, &d, 32, 4, 0, &rp));
    CHECK(fk_eval_data(&u, &d, 32, 4, 0, &ru));
    assert_int_equal(rp.tokens, rt.tokens);
    assert_rel(rp.loss, rt.loss, TOL);
    assert_rel(rp.bpb, rt.bpb, TOL);
    assert_rel(rp.ppl, rt.ppl, TOL);
    assert_true(ru.loss > rt.loss + 1.0);  // the test bites: unmasked, the padding takes the mass
    double kl;  // a reference without its tokenizer: both distributions over p's real tokens
    CHECK(fk_eval_kl(&u, &p, &d, 32, 4, 0, &kl));
    assert_true(fabs(kl) < 1e-6);
    // llama-perplexity scores the full row, padding included, as llama.cpp does
    fk_eval_result lp, lu;
    CHECK(fk_eval_llama_ppl(&p, d.ids, d.n, 32, -1, 4, 0, &lp));
    CHECK(fk_eval_llama_ppl(&u, d.ids, d.n, 32, -1, 4, 0, &lu));
    assert_true(lp.loss == lu.loss);
    assert_int_equal(p.vocab_real, VR);  // restored after the protocol
    fk_data_free(&d);
    fk_tok_free(tok);
    fk_model_free(&t); fk_model_free(&p); fk_model_free(&u);
}

// One training step with hard targets and a sparse teacher: the same loss and gradients on the
// real rows as the truncated model (relative 1e-4 of the largest), exactly zero gradient on the
// padding rows; untied, tied, and with a final soft-cap of 30.
static void train_step(bool tied, float softcap) {
    fk_model t, p;
    tiny_ex(&t, VR, tied, softcap);
    padded_of(&t, &p, true);
    enum { B = 2, T = 16, N = B * T };
    int32_t x[N], y[N], ids[2 * N];
    int64_t row[N + 1];
    float pr[2 * N];
    for (int i = 0; i < N; i++) {
        x[i] = (i * 37 + 11) % VR;
        y[i] = (i * 53 + 5) % VR;
        row[i] = 2 * i;
        ids[2 * i] = y[i];
        ids[2 * i + 1] = (y[i] + 1) % VR;
        pr[2 * i] = 0.7f;
        pr[2 * i + 1] = 0.2f;  // 0.1 left to the tail class
    }
    row[N] = 2 * N;
    fk_sparse_dist teacher = {row, ids, pr};
    float lt, lp, ft, fp;
    fk_model *ms[2] = {&t, &p};
    float *loss[2] = {&lt, &lp}, *floss[2] = {&ft, &fp};
    for (int k = 0; k < 2; k++) {
        CHECK(fk_model_forward_soft(ms[k], x, y, &teacher, 0.5f, B, T, true, loss[k], floss[k]));
        CHECK(fk_model_alloc_grads(ms[k]));
        fk_model_zero_grads(ms[k]);
        CHECK(fk_model_backward(ms[k], 1.0f));
    }
    assert_rel(lp, lt, TOL);
    assert_rel(fp, ft, TOL);
    for (int i = 0; i < p.n_params; i++) {
        const fk_param *q = &p.params[i], *s = &t.params[i];
        double gmax = 0, dmax = 0;
        for (int64_t j = 0; j < s->numel; j++) {
            gmax = fmax(gmax, fabs(t.g[s->offset + j]));
            dmax = fmax(dmax, fabs(p.g[q->offset + j] - t.g[s->offset + j]));
        }
        if (dmax > 1e-4 * gmax + 1e-9) fail_msg("%s: gradient differs by %g (largest %g)", q->name, dmax, gmax);
        if (vocab_rows(q->kind))
            for (int64_t j = s->numel; j < q->numel; j++) assert_true(p.g[q->offset + j] == 0.0f);
    }
    fk_model_free(&t); fk_model_free(&p);
}

static void test_train_step(void **st) {
    (void)st;
    train_step(false, 0);
    train_step(true, 0);
    train_step(false, 30.0f);
}

static int64_t count_ids_from(const char *store, int32_t from, double *kl_to, const char *other) {
    fk_store *s, *o = NULL;
    CHECK(fk_store_open(store, &s));
    if (other) CHECK(fk_store_open(other, &o));
    int64_t bad = 0;
    double klmax = 0;
    for (int64_t c = 0; c < fk_store_n_seqs(s); c++) {
        fk_store_seq q = {0}, r = {0};
        CHECK(fk_store_read_seq(s, c, &q));
        for (int64_t i = 0; i < q.n * q.k; i++) bad += q.ids[i] >= from;
        if (o) {
            CHECK(fk_store_read_seq(o, c, &r));
            double *kl = malloc((size_t)q.n * sizeof *kl);
            CHECK(fk_store_seq_kl(&r, &q, kl));
            for (int64_t i = 0; i < q.n; i++) klmax = fmax(klmax, kl[i]);
            for (int64_t i = 0; i < q.n; i++) assert_rel(q.ce[i], r.ce[i], 1e-4);
            free(kl);
            fk_store_seq_free(&r);
        }
        fk_store_seq_free(&q);
    }
    if (kl_to) *kl_to = klmax;
    fk_store_close(s);
    if (o) fk_store_close(o);
    return bad;
}

// Extraction: the padded model's store holds no padding id and the truncated model's
// distributions (KL < 1e-9 at every position, cross-entropies within 1e-4 relative); unmasked,
// the padding ids fill the top-k.
static void test_extract(void **st) {
    (void)st;
    fk_model t, p, u;
    fk_tokenizer *tok;
    tiny(&t, VR);
    padded_of(&t, &p, true);
    padded_of(&t, &u, false);
    CHECK(fk_tok_new_bytes(&tok));
    fk_extract_opts o;
    fk_extract_defaults(&o);
    o.seq = 32;
    CHECK(fk_extract(&t, tok, text_file(), &o, tpath("t.fkd"), true, NULL, NULL));
    CHECK(fk_extract(&p, tok, text_file(), &o, tpath("p.fkd"), true, NULL, NULL));
    CHECK(fk_extract(&u, tok, text_file(), &o, tpath("u.fkd"), true, NULL, NULL));
    double kl;
    assert_int_equal(count_ids_from(tpath("p.fkd"), VR, &kl, tpath("t.fkd")), 0);
    assert_true(kl < 1e-9);
    assert_true(count_ids_from(tpath("u.fkd"), VR, NULL, NULL) > 0);
    fk_tok_free(tok);
    fk_model_free(&t); fk_model_free(&p); fk_model_free(&u);
}

static bool collect(int32_t id, void *user) {
    int32_t **out = user;
    *(*out)++ = id;
    return true;
}

// Generation samples the truncated model's tokens, never a padding id.
static void test_generate(void **st) {
    (void)st;
    fk_model t, p;
    tiny(&t, VR);
    padded_of(&t, &p, true);
    fk_generate_opts o;
    fk_generate_defaults(&o);
    o.max_new = 40;
    o.sampler.temperature = 1.0f;
    int32_t a[40], b[40], *pa = a, *pb = b, prompt[3] = {'a', 'b', 'c'};
    CHECK(fk_generate(&t, prompt, 3, &o, collect, &pa, NULL));
    CHECK(fk_generate(&p, prompt, 3, &o, collect, &pb, NULL));
    assert_int_equal(pa - a, pb - b);
    for (int i = 0; i < (int)(pa - a); i++) {
        assert_true(b[i] < VR);
        assert_int_equal(a[i], b[i]);
    }
    fk_model_free(&t); fk_model_free(&p);
}

// A model folder with its tokenizer.json.
static void save_dir(const fk_model *m, const fk_tokenizer *tok, const char *dir) {
    CHECK(fk_hf_save(m, dir, FK_DT_F32));
    CHECK(fk_tok_save_hf(tok, dir));
}

// Saving keeps the padding rows (config.json's vocab_size), loading with the tokenizer knows
// them; a tokenizer larger than the rows is refused.
static void test_save_load(void **st) {
    (void)st;
    fk_model t, p, m;
    fk_tokenizer *tok, *lt = NULL;
    tiny(&t, VR);
    padded_of(&t, &p, true);
    CHECK(fk_tok_new_bytes(&tok));
    save_dir(&p, tok, tpath("padded"));
    CHECK(fk_model_load(tpath("padded"), 0, &m, &lt));
    assert_int_equal(m.cfg.vocab_size, VP);
    assert_int_equal(fk_model_vocab_real(&m), VR);
    fk_model_free(&m); fk_tok_free(lt);
    CHECK(fk_model_load_tok(tpath("padded"), NULL, 0, &m, &lt));
    assert_int_equal(fk_model_vocab_real(&m), VR);
    fk_model_free(&m); fk_tok_free(lt);
    CHECK(fk_model_load(tpath("padded"), 0, &m, NULL));  // without its tokenizer: no padding known
    assert_int_equal(fk_model_vocab_real(&m), VP);
    assert_int_equal(fk_model_set_vocab_real(&m, VP + 1), FK_ERR_ARG);
    assert_non_null(strstr(fk_last_error(), "259 tokens for a model of 258"));
    fk_model_free(&m);
    fk_tok_free(tok);
    fk_model_free(&t); fk_model_free(&p);
}

// GGUF: the export lists a "[PAD<id>]" entry of type UNUSED per padding row (as llama.cpp's
// converter does, so llama.cpp reads 258 tokens for 258 rows); the import knows them as
// padding: the same loss as the truncated model.
static void test_gguf(void **st) {
    (void)st;
    fk_model t, p, m;
    fk_tokenizer *tok, *lt;
    fk_token_data d;
    tiny(&t, VR);
    padded_of(&t, &p, true);
    load_bytes(&tok, &d);
    CHECK(fk_gguf_export(&p, tok, tpath("p.gguf"), FK_DT_F32, "padded", NULL));
    fk_gguf g;
    CHECK(fk_gguf_open(tpath("p.gguf"), &g));
    const void *types;
    uint64_t n;
    CHECK(fk_gguf_get_arr(&g, "tokenizer.ggml.token_type", FK_GGUF_I32, &types, &n));
    assert_int_equal(n, VP);
    int32_t last;  // GGUF arrays are packed: the element need not be 4-byte aligned
    memcpy(&last, (const char *)types + (size_t)(VP - 1) * sizeof last, sizeof last);
    assert_int_equal(last, FK_TT_UNUSED);
    fk_gguf_close(&g);
    CHECK(fk_model_load(tpath("p.gguf"), 0, &m, &lt));
    assert_int_equal(m.cfg.vocab_size, VP);
    assert_int_equal(fk_tok_vocab_size(lt), VP);
    assert_int_equal(fk_model_tokens_of(lt), VR);
    uint32_t len;
    const char *piece = fk_tok_piece(lt, VP - 1, &len);
    assert_int_equal(len, 8);
    assert_memory_equal(piece, "[PAD257]", 8);
    assert_int_equal(fk_model_vocab_real(&m), VR);
    fk_eval_result rt, rm;
    CHECK(fk_eval_data(&t, &d, 32, 4, 0, &rt));
    CHECK(fk_eval_data(&m, &d, 32, 4, 0, &rm));
    assert_rel(rm.loss, rt.loss, TOL);
    fk_model_free(&m); fk_tok_free(lt);
    fk_data_free(&d);
    fk_tok_free(tok);
    fk_model_free(&t); fk_model_free(&p);
}

// The padding rule (fk_vocab_check) on tokenizer and row counts of published models (Qwen2.5
// 0.5B and 7B, Phi-3, Phi-2, MPT-7B, Llama 3), and what it refuses.
static void test_vocab_rule(void **st) {
    (void)st;
    const int64_t ok[][2] = {{151665, 151936}, {151665, 152064}, {32011, 32064}, {50295, 51200},
                             {50277, 50432}, {128256, 128256}, {256, 258}};
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) CHECK(fk_vocab_check(ok[i][0], ok[i][1]));
    assert_int_equal(fk_vocab_check(257, 256), FK_ERR_ARG);            // more tokens than rows
    assert_int_equal(fk_vocab_check(256, 300), FK_ERR_ARG);            // 44 rows, 15%
    assert_int_equal(fk_vocab_check(256, 320), FK_ERR_ARG);            // a multiple of 64, but 20%
    assert_int_equal(fk_vocab_check(50295, 51201), FK_ERR_ARG);        // 1.8%, not a multiple of 64
    assert_int_equal(fk_vocab_check(100000, 101120), FK_ERR_ARG);      // 1120 rows > 1024
    assert_non_null(strstr(fk_last_error(), "1120 rows would have no token"));
}

// The final loss of metrics.jsonl's last line.
static double last_loss(const char *out) {
    char path[600];
    snprintf(path, sizeof path, "%s/metrics.jsonl", out);
    size_t n;
    char *s = slurp(path, &n), *last = s;
    for (char *q = s; *q; q++)
        if (*q == '\n' && q[1]) last = q + 1;
    double l = json_num(last, "loss");
    free(s);
    return l;
}

static void fuse(const char *target, const char *source, const char *out) {
    fk_fuse_job j;
    fk_fuse_job_defaults(&j);
    j.target = target;
    j.sources.v[j.sources.n++] = source;
    j.train.data = text_file();
    j.train.out = out;
    j.train.val_frac = 0;
    j.train.o.steps = 6;
    j.train.o.batch = 2;
    j.train.o.seq = 32;
    j.train.o.eval_every = 0;
    j.train.o.log_every = 1;
    j.train.o.save_every = 0;
    j.train.given = FK_GIVEN_STEPS;
    fk_train_job_result r;
    CHECK(fk_fuse_run(&j, NULL, &r));
}

// Knowledge fusion with a padded teacher and a padded student: the losses of the truncated
// pair's run step by step (relative 1e-4), and the fused model keeps its 258 rows.
static void test_fuse(void **st) {
    (void)st;
    fk_model t, p, t2, p2, m;
    fk_tokenizer *tok, *lt;
    CHECK(fk_tok_new_bytes(&tok));
    tiny(&t, VR);
    padded_of(&t, &p, true);
    fk_config c = t.cfg;
    c.n_layer = 1;
    CHECK(fk_model_init(&t2, &c));
    fk_model_init_weights(&t2, 11);
    padded_of(&t2, &p2, true);
    save_dir(&t, tok, tpath("st")); save_dir(&p, tok, tpath("sp"));
    save_dir(&t2, tok, tpath("tt")); save_dir(&p2, tok, tpath("tp"));
    fuse(tpath("st"), tpath("tt"), tpath("fuse_t"));
    fuse(tpath("sp"), tpath("tp"), tpath("fuse_p"));
    assert_rel(last_loss(tpath("fuse_p")), last_loss(tpath("fuse_t")), 1e-4);
    CHECK(fk_model_load(tpath("fuse_p"), 0, &m, &lt));
    assert_int_equal(m.cfg.vocab_size, VP);
    assert_int_equal(fk_model_vocab_real(&m), VR);
    fk_model_free(&m); fk_tok_free(lt);
    fk_tok_free(tok);
    fk_model_free(&t); fk_model_free(&p); fk_model_free(&t2); fk_model_free(&p2);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_eval),     cmocka_unit_test(test_train_step), cmocka_unit_test(test_extract),
        cmocka_unit_test(test_generate), cmocka_unit_test(test_save_load),  cmocka_unit_test(test_gguf),         cmocka_unit_test(test_vocab_rule),
        cmocka_unit_test(test_fuse),
    };
    return cmocka_run_group_tests(tests, tmpdir_setup, tmpdir_teardown);
}
