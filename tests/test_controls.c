// The controls of fused training (issue 19): shuffled teachers (fk_shuffle, the teacher set's
// rows read at the permuted positions), self-distillation (fuse with no source), the compute
// count (fk_model_flops_per_token against hand counts), the replay control's steps and the
// FLOPs a fuse run reports.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fusekit/fusekit.h"
#include "test_util.h"

// ---------------------------------------------------------------- the permutation

// Every n from 1 to 300 and a few larger ones, several seeds: a bijection of [0, n), positions
// past n left where they are, a coprime with n in [n/4, 3n/4] for n >= 4, the same map for the
// same seed and another for another seed.
static void test_shuffle_bijection(void **s) {
    (void)s;
    int64_t sizes[310];
    int ns = 0;
    for (int64_t n = 1; n <= 300; n++) sizes[ns++] = n;
    const int64_t big[] = {1024, 4096, 65537, 100000, 199999};
    for (size_t i = 0; i < sizeof big / sizeof big[0]; i++) sizes[ns++] = big[i];
    uint8_t *seen = malloc(200000);
    for (int i = 0; i < ns; i++) {
        int64_t n = sizes[i];
        for (uint64_t seed = 1; seed <= 3; seed++) {
            fk_shuffle sh;
            fk_shuffle_init(&sh, seed, n);
            assert_int_equal(sh.n, n);
            if (n >= 4) assert_true(sh.a >= n / 4 && sh.a < n);
            memset(seen, 0, (size_t)n);
            for (int64_t p = 0; p < n; p++) {
                int64_t q = fk_shuffle_at(&sh, p);
                assert_true(q >= 0 && q < n);
                assert_int_equal(q, (int64_t)(((__int128)sh.a * p + sh.b) % n));  // the documented map
                assert_int_equal(seen[q], 0);
                seen[q] = 1;
            }
            assert_int_equal(fk_shuffle_at(&sh, n), n);
            assert_int_equal(fk_shuffle_at(&sh, n + 5), n + 5);
            fk_shuffle again;
            fk_shuffle_init(&again, seed, n);
            assert_true(again.a == sh.a && again.b == sh.b);
        }
    }
    free(seen);
    // another seed, another map; neighbours land far apart
    fk_shuffle a, b;
    fk_shuffle_init(&a, 1, 100000);
    fk_shuffle_init(&b, 2, 100000);
    assert_true(a.a != b.a || a.b != b.b);
    int64_t d = llabs(fk_shuffle_at(&a, 501) - fk_shuffle_at(&a, 500));
    assert_true(d >= 100000 / 4 - 1 && d <= 100000 * 3 / 4 + 1);
    // past 2^32 positions the product is reduced without overflow: (a p + b) mod n by 128-bit arithmetic
    int64_t n = ((int64_t)1 << 40) + 15;
    fk_shuffle_init(&a, 9, n);
    for (int64_t p = n - 100; p < n; p++) assert_int_equal(fk_shuffle_at(&a, p), (int64_t)(((__int128)a.a * p + a.b) % n));
}

// ---------------------------------------------------------------- the teacher set's rows

#define NT 300  // tokens of the corpus: 299 positions
#define SK 3    // entries per position

// A store for the byte tokenization of d: every position has 1..3 entries of random ids and
// log-probabilities and a random ce (seed), so that every row differs.
static void write_store(const char *path, const fk_token_data *d, uint64_t fp, uint64_t seed) {
    int64_t begin[NT + 1];
    for (int i = 0; i <= NT; i++) begin[i] = i;
    fk_store_header h = {.flags = 0, .k = SK, .seq = 64, .vocab_size = 256, .n_tokens = NT, .corpus_bytes = NT, .tokenizer_fp = fp};
    fk_store_writer *w;
    int64_t done;
    CHECK(fk_store_writer_open(path, &h, d->ids, begin, true, &w, &done));
    fk_rng r;
    fk_rng_seed(&r, seed);
    static uint8_t count[NT];
    static int32_t ids[NT * SK];
    static float logp[NT * SK], ce[NT];
    for (int t = 0; t < NT - 1; t++) {
        count[t] = (uint8_t)(1 + fk_rng_below(&r, SK));
        float lp = -0.05f;
        for (int j = 0; j < SK; j++) {
            ids[t * SK + j] = j < count[t] ? (int32_t)(j * 80 + fk_rng_below(&r, 80)) : -1;  // distinct ids
            logp[t * SK + j] = j < count[t] ? lp : -INFINITY;
            lp -= 0.3f + fk_rng_uniform(&r);
        }
        ce[t] = 0.1f + 3 * fk_rng_uniform(&r);
    }
    for (int64_t first = 0; first < NT - 1; first += 64) {
        int64_t n = NT - 1 - first < 64 ? NT - 1 - first : 64;
        fk_store_seq q = {.first = first, .n = n, .k = SK, .count = count + first, .ids = ids + first * SK, .logp = logp + first * SK,
                          .ce = ce + first, .mean_ce = 1};
        CHECK(fk_store_write_seq(w, &q));
    }
    CHECK(fk_store_writer_finish(w));
}

// Teacher rows of one window [off, off + T) through the teacher's fill; copied out.
typedef struct { int64_t n; int64_t row[65]; int32_t ids[65 * 2 * SK]; float p[65 * 2 * SK]; } rows_copy;

static void fill(const fk_teacher *t, const fk_token_data *d, int64_t off, int T, rows_copy *out) {
    int32_t labels[64];
    for (int j = 0; j < T; j++) labels[j] = d->ids[off + j + 1];
    fk_sparse_dist r;
    CHECK(t->fill(t->ctx, &off, 1, T, labels, &r));
    out->n = T;
    for (int j = 0; j <= T; j++) out->row[j] = r.row[j] - r.row[0];
    memcpy(out->ids, r.ids + r.row[0], (size_t)out->row[T] * sizeof *out->ids);
    memcpy(out->p, r.p + r.row[0], (size_t)out->row[T] * sizeof *out->p);
}

// Two teachers fused per position (MinCE token level: the position's lower ce wins): with
// --shuffle-teachers the row at position p is exactly the unshuffled row at position
// fk_shuffle_at(p) (both teachers read at the same permuted position), with the stores decoded
// whole and read per batch (FK_TEACHER_MEM_MB=0).
static void shuffled_rows(bool per_batch) {
    fk_tokenizer *bytes = NULL;
    CHECK(fk_tok_new_bytes(&bytes));
    char text[NT + 1];
    for (int i = 0; i < NT; i++) text[i] = (char)('a' + (i * 7 + i / 13) % 26);
    spit(tpath("corpus.txt"), text, NT);
    fk_token_data d;
    CHECK(fk_data_load_tok(tpath("corpus.txt"), bytes, &d));
    assert_int_equal(d.n, NT);
    const char *paths[2] = {tpath("t1.fkd"), tpath("t2.fkd")};
    write_store(paths[0], &d, fk_tok_fingerprint(bytes), 1);
    write_store(paths[1], &d, fk_tok_fingerprint(bytes), 2);
    if (per_batch) setenv("FK_TEACHER_MEM_MB", "0", 1);
    fk_fusion_opts fo;
    fk_fusion_defaults(&fo);
    fo.level = FK_FUSE_TOKEN;
    fk_teacher_set *plain = NULL, *shuf = NULL;
    CHECK(fk_teacher_set_open(paths, 2, &fo, &d, &plain));
    fo.shuffle_seed = 19;
    CHECK(fk_teacher_set_open(paths, 2, &fo, &d, &shuf));
    unsetenv("FK_TEACHER_MEM_MB");
    fk_shuffle sh;
    fk_shuffle_init(&sh, 19, NT - 1);
    const fk_teacher *tp = fk_teacher_set_teacher(plain, 0.5f), *ts = fk_teacher_set_teacher(shuf, 0.5f);
    rows_copy got, want, same;
    int moved = 0;
    for (int64_t off = 0; off + 64 <= NT - 1; off += 50) {
        fill(ts, &d, off, 64, &got);
        fill(tp, &d, off, 64, &same);
        for (int j = 0; j < 64; j++) {
            int64_t q = fk_shuffle_at(&sh, off + j);
            moved += q != off + j;
            fill(tp, &d, q, 1, &want);
            int64_t n = got.row[j + 1] - got.row[j];
            assert_int_equal(n, want.row[1]);
            assert_memory_equal(got.ids + got.row[j], want.ids, (size_t)n * sizeof(int32_t));
            assert_memory_equal(got.p + got.row[j], want.p, (size_t)n * sizeof(float));  // bit for bit
        }
        assert_true(same.row[64] != got.row[64] || memcmp(same.ids, got.ids, (size_t)got.row[64] * sizeof(int32_t)) != 0);
    }
    assert_true(moved > 250);  // the map moves nearly every position (fixed points: (a - 1) p = -b mod n)
    fk_teacher_set_close(plain);
    fk_teacher_set_close(shuf);
    fk_data_free(&d);
    fk_tok_free(bytes);
}

static void test_shuffle_rows(void **s) { (void)s; shuffled_rows(false); }
static void test_shuffle_rows_per_batch(void **s) { (void)s; shuffled_rows(true); }

// ---------------------------------------------------------------- compute per token

static void flops_of(const fk_config *c, int ctx, double *fwd, double *train) {
    fk_model m;
    CHECK(fk_model_init(&m, c));
    fk_model_flops_per_token(&m, ctx, fwd, train);
    fk_model_free(&m);
}

// Hand counts (a multiply-add 2 FLOPs; attention 2 x 2 x keys x query width per layer):
//   GPT-2 V 256, d 32, 2 layers, 2 heads, FFN 128, tied, ctx 64: matrices per layer
//     qkv 32x96 3072 + out 1024 + up 4096 + down 4096 = 12288, x2 = 24576, head 256x32 8192:
//     32768 -> 65536; attention 2 x 4 x 64 x 32 = 16384: forward 81920, train 245760.
//   Llama V 64, d 32, 2 layers, 4 heads over 2 KV heads (head_dim 8), FFN 64, untied, ctx 16:
//     qkv 32x(32+16+16) 2048 + out 1024 + gate/up/down 3x2048 6144 = 9216, x2 = 18432, head
//     2048: 20480 -> 40960; attention 2 x 4 x 16 x 32 = 4096: forward 45056.
//     Layer 1 local with a window of 4 keys: its attention 4 x 4 x 32 = 512 not 2048: 43520.
//     Layer 0 with 2 query heads: qkv 32x(16+16+16) 1536 + out 16x32 512 + 6144 = 8192, 1024
//     fewer matrix weights (-2048 FLOPs), and attention 4 x 16 x 16 = 1024 not 2048: 41984.
//   Mixtral-like (cfg_moe) V 64, d 32, 2 layers, 4 experts of width 16, top 2, ctx 16: qkv 2048 +
//     out 1024 + router 4x32 128 + 2 active experts x 3 x 16 x 32 3072 = 6272, x2 = 12544, head
//     2048: 14592 -> 29184; attention 4096: forward 33280 (all 4 experts would be 39424).
static void test_flops_hand(void **s) {
    (void)s;
    fk_config c;
    double f, t;
    fk_config_gpt2(&c, 256, 32, 2, 2, 64);
    c.ffn[0] = c.ffn[1] = 128;
    flops_of(&c, 64, &f, &t);
    assert_true(f == 81920 && t == 245760);
    flops_of(&c, 32, &f, NULL);  // the context counts: attention 2 x 4 x 32 x 32 = 8192
    assert_true(f == 73728);
    fk_config_llama(&c, 64, 32, 2, 4, 2, 64, 16);
    flops_of(&c, 16, &f, &t);
    assert_true(f == 45056 && t == 3 * 45056.0);
    c.sliding_window = 4;
    c.sliding[1] = 1;
    flops_of(&c, 16, &f, NULL);
    assert_true(f == 43520);
    flops_of(&c, 3, &f, NULL);  // a window wider than the context changes nothing: 40960 + 2 x 4 x 3 x 32
    assert_true(f == 40960 + 768);
    fk_config_llama(&c, 64, 32, 2, 4, 2, 64, 16);
    c.heads[0] = 2;
    flops_of(&c, 16, &f, NULL);
    assert_true(f == 41984);
    cfg_moe(&c, CFG_MOE_MIXTRAL, 64, 32, 16, 2);
    flops_of(&c, 16, &f, NULL);
    assert_true(f == 33280);
}

// steps + ceil(extra / (train FLOPs per token x tokens per step)), by hand.
static void test_replay_steps(void **s) {
    (void)s;
    // a step costs 1000 x 256 = 256000 FLOPs
    assert_int_equal(fk_replay_steps(100, 0, 1000, 256), 100);
    assert_int_equal(fk_replay_steps(100, 256000, 1000, 256), 101);       // exactly one step's worth
    assert_int_equal(fk_replay_steps(100, 256001, 1000, 256), 102);       // a little more: one more step
    assert_int_equal(fk_replay_steps(100, 2.5 * 256000, 1000, 256), 103);
    assert_int_equal(fk_replay_steps(7, 1e12, 245760, 256), 7 + 15895);  // 1e12 / 62914560 = 15894.4
    assert_int_equal(fk_replay_steps(100, 5e9, 0, 256), 100);             // no cost known: unchanged
}

// ---------------------------------------------------------------- fuse without a source

// The fusion corpus: 70 numbered lines (4.4 kB) in tmpdir, written on first use.
static const char *corpus(void) {
    const char *p = tpath("fuse.txt");
    FILE *f = fk_path_exists(p) ? NULL : fopen(p, "w");
    for (int i = 0; f && i < 70; i++) fprintf(f, "line %d: the self and the shuffled, %d.\n", i, i * 3);
    if (f) fclose(f);
    return p;
}

static void fuse_job(fk_fuse_job *j, const char *target, const char *out) {
    fk_fuse_job_defaults(j);
    j->target = target;
    j->train.data = corpus();
    j->train.out = out;
    j->train.val_frac = 0;
    j->train.o.steps = 4;
    j->train.o.batch = 2;
    j->train.o.seq = 32;
    j->train.o.eval_every = 0;
    j->train.o.log_every = 1;
    j->train.o.save_every = 0;
    j->train.given = FK_GIVEN_STEPS;
}


// In the file at path, the number after key on the line that starts with prefix (NaN: none).
static double line_num(const char *path, const char *prefix, const char *key) {
    char *s = NULL;
    size_t n;
    CHECK(fk_read_file(path, &s, &n));
    double v = NAN;
    for (char *line = s; line && *line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL) {
        char *end = strchr(line, '\n'), *at = strstr(line, key);
        if (strncmp(line, prefix, strlen(prefix)) == 0 && at && (!end || at < end)) { v = atof(at + strlen(key)); break; }
    }
    free(s);
    return v;
}

// No --source: the target's own initial model is the only teacher (one store, the target's);
// with --no-target-source as well there is no teacher: refused before any work. The run's
// flops.json: the extraction's forward FLOPs (the target over the corpus in windows of its
// context) and the training's, by hand; the replay steps fk_replay_steps gives. And fused
// training with shuffled teachers runs.
static void test_self_distillation(void **s) {
    (void)s;
    fk_config c;
    fk_config_gpt2(&c, 256, 32, 2, 2, 64);
    c.ffn[0] = c.ffn[1] = 128;
    fk_model m;
    CHECK(fk_model_init(&m, &c));
    fk_model_init_weights(&m, 5);
    fk_tokenizer *bytes;
    CHECK(fk_tok_new_bytes(&bytes));
    CHECK(fk_hf_save(&m, tpath("target"), FK_DT_F32));
    CHECK(fk_tok_save_hf(bytes, tpath("target")));
    fk_fuse_job j;
    fk_train_job_result r;
    fuse_job(&j, tpath("target"), tpath("self"));
    j.no_target_source = true;
    assert_int_equal(fk_fuse_run(&j, NULL, &r), FK_ERR_ARG);
    assert_true(r.refused);
    assert_non_null(strstr(fk_last_error(), "no --source"));
    assert_false(fk_path_exists(tpath("self")));
    fuse_job(&j, tpath("target"), tpath("self"));
    CHECK(fk_fuse_run(&j, NULL, &r));
    assert_int_equal(r.step, 4);
    // the target's store is the only one
    char name[64];
    snprintf(name, sizeof name, "self/stores/target-%016llx.fkd", (unsigned long long)fk_model_fingerprint(&m));
    assert_true(fk_path_exists(tpath(name)));
    size_t n;
    char *metrics = slurp(tpath("self/metrics.jsonl"), &n);
    assert_non_null(strstr(metrics, "\"teacher_shares\":[1]"));
    assert_non_null(strstr(metrics, "\"teachers\":[\"target\"]"));  // labelled by the store's model name
    assert_non_null(strstr(metrics, "fusion_loss"));
    free(metrics);
    // compute: extraction over windows of 64 (the context) of the corpus's bytes, forward 81920 per token;
    // training 3 x 73728 per token (windows of 32) x 2 x 32 tokens per step
    size_t bytes_n;
    free(slurp(corpus(), &bytes_n));
    assert_true(line_num(tpath("self/flops.json"), "{", "\"extraction_flops\":") == 81920.0 * (double)bytes_n);
    assert_true(line_num(tpath("self/flops.json"), "{", "\"train_flops_per_token\":") == 3 * 73728.0);
    assert_true(line_num(tpath("self/flops.json"), "{", "\"tokens_per_step\":") == 64);
    assert_true(line_num(tpath("self/flops.json"), "{", "\"training_flops\":") == 4 * 64 * 3 * 73728.0);
    assert_true(line_num(tpath("self/flops.json"), "{", "\"replay_steps\":") ==
                (double)fk_replay_steps(4, 81920.0 * (double)bytes_n, 3 * 73728.0, 64));
    assert_true(r.extraction_flops == 81920.0 * (double)bytes_n && r.train_flops_per_token == 3 * 73728.0 && r.tokens_per_step == 64);
    // shuffled teachers: the same run, another fusion loss
    fuse_job(&j, tpath("target"), tpath("shuffled"));
    j.train.fo.shuffle_seed = 3;
    CHECK(fk_fuse_run(&j, NULL, &r));
    assert_int_equal(r.step, 4);
    double fl_self = line_num(tpath("self/metrics.jsonl"), "{\"step\":1,", "\"fusion_loss\":");  // step 1's
    double fl_shuf = line_num(tpath("shuffled/metrics.jsonl"), "{\"step\":1,", "\"fusion_loss\":");
    assert_true(isfinite(fl_shuf) && fl_shuf != fl_self);
    fk_tok_free(bytes);
    fk_model_free(&m);
}


// The healed-original control: fold --heal-only --heal-steps S heals the unfolded model exactly as
// a fold's round heals its folded model (the original its teacher, heal's defaults and the options
// after "--"), so its run is step for step the run of heal --teacher M --model M with the same
// options; without --heal-steps (or with --rounds 2, or --plan) it is refused before any work.
static void test_healed_original(void **s) {
    (void)s;
    fk_config c;
    fk_config_llama(&c, 256, 32, 2, 4, 2, 64, 64);
    fk_model m;
    CHECK(fk_model_init(&m, &c));
    fk_model_init_weights(&m, 8);
    fk_tokenizer *bytes;
    CHECK(fk_tok_new_bytes(&bytes));
    CHECK(fk_hf_save(&m, tpath("orig"), FK_DT_F32));
    CHECK(fk_tok_save_hf(bytes, tpath("orig")));
    fk_tok_free(bytes);
    fk_model_free(&m);
    const char *opts = "--seq 32 --batch 2 --eval-every 0 --log-every 1 --threads 1";
    RUN_OK("%s fold --model %s --data %s --budget 0.25 --heal-only --heal-steps 3 -o %s --threads 1 -- %s", FK_CLI, tpath("orig"), corpus(), tpath("f0"), opts);
    RUN_OK("%s heal --teacher %s --model %s --data %s --steps 3 -o %s %s", FK_CLI, tpath("orig"), tpath("orig"), corpus(), tpath("h0"), opts);
    // the same losses, fusion losses, learning rates and gradient norms, step for step (bit for bit:
    // one thread, the same seed); the lines differ in their timings only
    const char *keys[] = {"\"loss\":", "\"fusion_loss\":", "\"lr\":", "\"grad_norm\":"};
    for (int step = 1; step <= 3; step++)
        for (int k = 0; k < 4; k++) {
            char sk[32], key[32];
            snprintf(sk, sizeof sk, "{\"step\":%d,", step);
            snprintf(key, sizeof key, "%s", keys[k]);
            double va = line_num(tpath("f0/metrics.jsonl"), sk, key), vb = line_num(tpath("h0/metrics.jsonl"), sk, key);
            if (!(va == vb && isfinite(va))) fail_msg("step %d %s: fold --heal-only %.17g, heal %.17g", step, key, va, vb);
        }
    assert_true(fk_path_exists(tpath("f0/model.safetensors")));
    RUN_FAILS(2, "--heal-only is the healed-original control", "%s fold --model %s --data %s --budget 0.25 --heal-only -o %s", FK_CLI, tpath("orig"), corpus(),
              tpath("f1"));
    RUN_FAILS(2, "one round", "%s fold --model %s --data %s --budget 0.25 --heal-only --heal-steps 2 --rounds 2 -o %s", FK_CLI, tpath("orig"), corpus(),
              tpath("f1"));
    assert_false(fk_path_exists(tpath("f1")));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_shuffle_bijection),
        cmocka_unit_test(test_shuffle_rows),
        cmocka_unit_test(test_shuffle_rows_per_batch),
        cmocka_unit_test(test_flops_hand),
        cmocka_unit_test(test_replay_steps),
        cmocka_unit_test(test_self_distillation),
        cmocka_unit_test(test_healed_original),
    };
    return cmocka_run_group_tests(tests, tmpdir_setup, tmpdir_teardown);
}
