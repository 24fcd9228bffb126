// Format-level tests: safetensors and Hugging Face folder round trips, checkpoints that
// resume to identical weights, and bad inputs that fail clearly and leave files intact.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <math.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fusekit/fusekit.h"
#include "test_util.h"

static void tiny_gpt2(fk_config *c) { fk_config_gpt2(c, 50, 16, 2, 2, 24); }
static void tiny_llama(fk_config *c) {
    fk_config_llama(c, 50, 16, 3, 4, 2, 24, 24);
    c->ffn[1] = 10;  // per-layer widths
    c->bias_qkv = true;
}

static bool file_equal(const char *a, const char *b) {
    char *x, *y;
    size_t nx, ny;
    if (fk_read_file(a, &x, &nx) != FK_OK) return false;
    if (fk_read_file(b, &y, &ny) != FK_OK) { free(x); return false; }
    bool eq = nx == ny && memcmp(x, y, nx) == 0;
    free(x); free(y);
    return eq;
}

static void copy_file(const char *from, const char *to) {
    char *d;
    size_t n;
    CHECK(fk_read_file(from, &d, &n));
    CHECK(fk_write_file_atomic(to, d, n));
    free(d);
}

// ------------------------------------------------------------------ round trips

static void roundtrip(fk_config *c, const char *dir, fk_dtype dt, double tol) {
    fk_model a, b;
    CHECK(fk_model_init(&a, c));
    fk_model_init_weights(&a, 5);
    for (int64_t i = 0; i < a.n_floats; i++) a.w[i] += 0.01f * (float)(i % 7);  // biases and norms non-trivial
    CHECK(fk_hf_save(&a, dir, dt));
    CHECK(fk_hf_load(&b, dir));
    assert_memory_equal(&a.cfg, &b.cfg, sizeof a.cfg);
    assert_int_equal(a.n_floats, b.n_floats);
    for (int64_t i = 0; i < a.n_floats; i++)
        if (fabs(a.w[i] - b.w[i]) > tol * (1 + fabs(a.w[i]))) fail_msg("weight %lld: %g vs %g", (long long)i, a.w[i], b.w[i]);
    fk_model_free(&a);
    fk_model_free(&b);
}

static void test_roundtrip(void **s) {
    (void)s;
    fk_config c;
    tiny_gpt2(&c);
    roundtrip(&c, tpath("rt_gpt2"), FK_DT_F32, 0);
    roundtrip(&c, tpath("rt_gpt2_bf16"), FK_DT_BF16, 1.0 / 256);
    roundtrip(&c, tpath("rt_gpt2_f16"), FK_DT_F16, 1.0 / 2048);
    tiny_llama(&c);
    roundtrip(&c, tpath("rt_llama"), FK_DT_F32, 0);
    // a mixed config no Hugging Face type represents: saved as model_type fusekit
    tiny_gpt2(&c);
    c.pos = FK_POS_ROPE;
    c.mlp = FK_MLP_SWIGLU;
    roundtrip(&c, tpath("rt_mixed"), FK_DT_F32, 0);
    char *json;
    CHECK(fk_read_file(tpath("rt_mixed/config.json"), &json, NULL));
    assert_non_null(strstr(json, "\"model_type\":\t\"fusekit\""));
    free(json);
    CHECK(fk_read_file(tpath("rt_llama/config.json"), &json, NULL));
    assert_non_null(strstr(json, "\"model_type\":\t\"qwen2\""));
    assert_non_null(strstr(json, "fusekit_intermediate_sizes"));
    free(json);
}

static void test_safetensors_values(void **s) {
    (void)s;
    // written by us, read back by us: dtype, shape, bytes, metadata
    float a[6] = {1, -2, 3.5f, 0, 1e-3f, -7};
    int32_t b[3] = {7, -1, 1 << 30};
    fk_st_entry e[2] = {{"a", FK_DT_F32, 2, {2, 3}, a}, {"b.x", FK_DT_I32, 1, {3}, b}};
    CHECK(fk_st_write(tpath("v.safetensors"), e, 2, "{\"format\":\"pt\"}"));
    fk_safetensors st;
    CHECK(fk_st_open(&st, tpath("v.safetensors")));
    assert_int_equal(st.n_tensors, 2);
    const fk_st_tensor *t = fk_st_find(&st, "a");
    assert_non_null(t);
    assert_int_equal(t->shape[0], 2);
    assert_int_equal(t->shape[1], 3);
    assert_memory_equal(t->data, a, sizeof a);
    assert_memory_equal(fk_st_find(&st, "b.x")->data, b, sizeof b);
    assert_non_null(strstr(st.metadata_json, "pt"));
    // header length is a multiple of 8 and the data start is aligned
    assert_int_equal(((const char *)t->data - (const char *)st.map.data) % 8, 0);
    fk_st_close(&st);
    // the reference's own file (written by Python safetensors) reads with the shapes it declares
    char path[512];
    snprintf(path, sizeof path, "%s/golden/llama/model.safetensors", FK_TEST_DATA);
    CHECK(fk_st_open(&st, path));
    t = fk_st_find(&st, "model.layers.0.self_attn.k_proj.weight");
    assert_non_null(t);
    assert_int_equal(t->shape[0], 16);
    assert_int_equal(t->shape[1], 32);
    fk_st_close(&st);
}

static void test_half_floats(void **s) {
    (void)s;
    // exact values and rounding, checked against IEEE half/bfloat16 bit patterns
    assert_int_equal(fk_f32_to_f16(1.0f), 0x3c00);
    assert_int_equal(fk_f32_to_f16(-2.0f), 0xc000);
    assert_int_equal(fk_f32_to_f16(65504.0f), 0x7bff);
    assert_int_equal(fk_f32_to_f16(1e6f), 0x7c00);         // overflow to inf
    assert_int_equal(fk_f32_to_f16(5.9604645e-8f), 0x0001); // smallest subnormal
    assert_int_equal(fk_f32_to_bf16(1.0f), 0x3f80);
    assert_int_equal(fk_f32_to_bf16(3.14159265f), 0x4049);
    for (float x = -10; x < 10; x += 0.37f) {
        assert_true(fabsf(fk_f16_to_f32(fk_f32_to_f16(x)) - x) <= fabsf(x) / 2048);
        assert_true(fabsf(fk_bf16_to_f32(fk_f32_to_bf16(x)) - x) <= fabsf(x) / 256);
    }
}

// A sharded checkpoint (model.safetensors.index.json + two files) loads to the same weights.
static void test_sharded(void **s) {
    (void)s;
    fk_config c;
    tiny_llama(&c);
    fk_model a, b;
    CHECK(fk_model_init(&a, &c));
    fk_model_init_weights(&a, 8);
    CHECK(fk_hf_save(&a, tpath("shard_src"), FK_DT_F32));
    fk_safetensors src;
    CHECK(fk_st_open(&src, tpath("shard_src/model.safetensors")));
    CHECK(fk_mkdir_p(tpath("sharded")));
    int half = src.n_tensors / 2;
    fk_st_entry *e = calloc((size_t)src.n_tensors, sizeof *e);
    char *index = malloc(65536);
    int k = snprintf(index, 65536, "{\"metadata\": {}, \"weight_map\": {");
    for (int i = 0; i < src.n_tensors; i++) {
        const fk_st_tensor *t = &src.tensors[i];
        e[i].name = t->name;
        e[i].dtype = t->dtype;
        e[i].ndim = t->ndim;
        memcpy(e[i].shape, t->shape, sizeof t->shape);
        e[i].data = t->data;
        k += snprintf(index + k, (size_t)(65536 - k), "%s\"%s\": \"model-%05d-of-00002.safetensors\"", i ? ", " : "", t->name,
                      i < half ? 1 : 2);
    }
    snprintf(index + k, (size_t)(65536 - k), "}}");
    CHECK(fk_st_write(tpath("sharded/model-00001-of-00002.safetensors"), e, half, NULL));
    CHECK(fk_st_write(tpath("sharded/model-00002-of-00002.safetensors"), e + half, src.n_tensors - half, NULL));
    CHECK(fk_write_file_atomic(tpath("sharded/model.safetensors.index.json"), index, strlen(index)));
    copy_file(tpath("shard_src/config.json"), tpath("sharded/config.json"));
    CHECK(fk_hf_load(&b, tpath("sharded")));
    assert_memory_equal(a.w, b.w, (size_t)a.n_floats * sizeof(float));
    free(e); free(index);
    fk_st_close(&src);
    fk_model_free(&a); fk_model_free(&b);
}

// ------------------------------------------------------------------ resume

static void make_text(const char *path, int n) {
    char *t = malloc((size_t)n);
    const char *words[] = {"the ", "cat ", "sat ", "on ", "a ", "mat ", "and ", "dog ", "ran.\n"};
    int k = 0;
    fk_rng r;
    fk_rng_seed(&r, 1);
    while (k < n) {
        const char *w = words[fk_rng_below(&r, 9)];
        for (const char *p = w; *p && k < n; p++) t[k++] = *p;
    }
    CHECK(fk_write_file_atomic(path, t, (size_t)n));
    free(t);
}

static void train_opts(fk_train_opts *o, int64_t steps) {
    fk_train_defaults(o);
    o->steps = steps;
    o->batch = 2;
    o->seq = 16;
    o->grad_accum = 2;
    o->optim.lr = 1e-3f;
    o->optim.warmup = 2;
    o->optim.total_steps = steps;
    o->eval_every = 0;
    o->eval_tokens = 256;
    o->seed = 0xFFFFFFFFFFFFFFF1ull;  // above 2^53: the checkpoint must keep every bit
}

// A freshly initialised model and its optimizer, ready for fk_train.
static void fresh_model(fk_model *m, fk_adamw *opt, const fk_config *c, const fk_train_opts *o, uint64_t seed) {
    CHECK(fk_model_init(m, c));
    fk_model_init_weights(m, seed);
    CHECK(fk_adamw_init(opt, m, &o->optim));
}

// A run stopped and resumed from its checkpoint ends bit for bit where the uninterrupted run does,
// with f32 moments and with bf16 ones (stochastic rounding keyed by step and element, stored as
// BF16 in optimizer.safetensors: half the bytes).
static void resume_equality(fk_moments mom, const char *tag) {
    char ra[64], rb[64], path[160], opath[600];
    snprintf(ra, sizeof ra, "run_a%s", tag);
    snprintf(rb, sizeof rb, "run_b%s", tag);
    make_text(tpath("resume.txt"), 4000);
    fk_token_data d;
    CHECK(fk_data_load(tpath("resume.txt"), &d));
    fk_config c;
    fk_config_llama(&c, 256, 16, 2, 2, 1, 32, 32);
    fk_train_opts o;
    // uninterrupted: 8 steps
    fk_model a;
    fk_adamw oa;
    train_opts(&o, 8);
    o.optim.moments = mom;
    fresh_model(&a, &oa, &c, &o, 9);
    assert_int_equal(oa.m16 != NULL, mom == FK_MOMENTS_BF16);
    assert_int_equal(oa.m != NULL, mom == FK_MOMENTS_F32);
    CHECK(fk_train(&a, &oa, &d, &d, &o, tpath(ra), NULL, NULL));
    // interrupted: a run that stops after 4 (checkpoint every 2), then resumes from the newest checkpoint
    fk_model b;
    fk_adamw ob;
    train_opts(&o, 8);
    o.optim.moments = mom;
    o.save_every = 2;
    fresh_model(&b, &ob, &c, &o, 9);
    fk_train_opts first = o;
    first.steps = 4;  // same schedule (total_steps 8), stopped early
    CHECK(fk_train(&b, &ob, &d, &d, &first, tpath(rb), NULL, NULL));
    fk_model_free(&b);
    fk_adamw_free(&ob);
    char *ck;
    CHECK(fk_checkpoint_latest(tpath(rb), &ck));
    assert_non_null(strstr(ck, "checkpoint-4"));
    fk_train_opts ro;
    fk_train_defaults(&ro);
    CHECK(fk_checkpoint_load(ck, &b, &ob, &ro));
    assert_int_equal(ro.optim.moments, mom);  // from trainer_state.json's optim_state
    assert_int_equal(ob.m16 != NULL, mom == FK_MOMENTS_BF16);
    snprintf(opath, sizeof opath, "%s/optimizer.safetensors", ck);
    fk_safetensors sf;
    CHECK(fk_st_open(&sf, opath));
    assert_true(sf.n_tensors > 0);
    for (int i = 0; i < sf.n_tensors; i++) assert_int_equal(sf.tensors[i].dtype, mom == FK_MOMENTS_BF16 ? FK_DT_BF16 : FK_DT_F32);
    fk_st_close(&sf);
    free(ck);
    assert_true(ro.seed == 0xFFFFFFFFFFFFFFF1ull);
    assert_int_equal(ob.t, 4);
    ro.steps = 8;
    CHECK(fk_train(&b, &ob, &d, &d, &ro, tpath(rb), NULL, NULL));
    assert_int_equal(a.n_floats, b.n_floats);
    assert_memory_equal(a.w, b.w, (size_t)a.n_floats * sizeof(float));
    snprintf(path, sizeof path, "%s/model.safetensors", ra);
    char pb[160];
    snprintf(pb, sizeof pb, "%s/model.safetensors", rb);
    assert_true(file_equal(tpath(path), tpath(pb)));
    // only the newest `keep` checkpoints remain
    snprintf(path, sizeof path, "%s/checkpoint-2", rb);
    assert_false(fk_path_exists(tpath(path)));
    snprintf(path, sizeof path, "%s/checkpoint-8/trainer_state.json", rb);
    assert_true(fk_path_exists(tpath(path)));
    fk_model_free(&a); fk_model_free(&b);
    fk_adamw_free(&oa); fk_adamw_free(&ob);
    fk_data_free(&d);
}

static void test_resume_equality(void **s) {
    (void)s;
    resume_equality(FK_MOMENTS_F32, "");
}

static void test_resume_equality_bf16_moments(void **s) {
    (void)s;
    resume_equality(FK_MOMENTS_BF16, "_bf16m");
    // the BF16 optimizer file is half the f32 one (the tensors; the header is a few hundred bytes)
    long fa = 0, fb = 0;
    FILE *f = fopen(tpath("run_b/checkpoint-8/optimizer.safetensors"), "rb");
    if (f) { fseek(f, 0, SEEK_END); fa = ftell(f); fclose(f); }
    f = fopen(tpath("run_b_bf16m/checkpoint-8/optimizer.safetensors"), "rb");
    if (f) { fseek(f, 0, SEEK_END); fb = ftell(f); fclose(f); }
    print_message("  optimizer.safetensors: f32 moments %ld bytes, bf16 %ld\n", fa, fb);
    assert_true(fa > 0 && fb > 0 && fb < 0.55 * fa);
}

// fk_physical_cores against an independent count: the distinct thread_siblings_list strings of
// the CPUs this process may use (one list per physical core, SMT siblings share it).
static void test_physical_cores(void **s) {
    (void)s;
    cpu_set_t set;
    assert_int_equal(sched_getaffinity(0, sizeof set, &set), 0);
    int n = fk_physical_cores(), cpus = CPU_COUNT(&set);
    assert_true(n >= 1 && n <= cpus);
    static char lists[CPU_SETSIZE][64];
    int distinct = 0;
    bool readable = true;
    for (int c = 0; c < CPU_SETSIZE && readable; c++) {
        if (!CPU_ISSET(c, &set)) continue;
        char path[96], buf[64] = "";
        snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu%d/topology/thread_siblings_list", c);
        FILE *f = fopen(path, "r");
        if (!f || !fgets(buf, sizeof buf, f)) readable = false;
        if (f) fclose(f);
        bool dup = false;
        for (int k = 0; k < distinct && !dup; k++) dup = strcmp(lists[k], buf) == 0;
        if (!dup) snprintf(lists[distinct++], sizeof lists[0], "%s", buf);
    }
    print_message("  physical cores %d (CPUs in the affinity mask %d, sibling lists %d%s)\n", n, cpus, distinct, readable ? "" : ", unreadable");
    if (readable) assert_int_equal(n, distinct);
}

// ------------------------------------------------------------------ bad inputs

static void expect_error(fk_status st, fk_status want, const char *needle1, const char *needle2) {
    if (st == FK_OK) fail_msg("expected an error mentioning '%s'", needle1);
    assert_int_equal(st, want);
    const char *msg = fk_last_error();
    print_message("  error as expected: %s\n", msg);
    if (needle1 && !strstr(msg, needle1)) fail_msg("message '%s' does not mention '%s'", msg, needle1);
    if (needle2 && !strstr(msg, needle2)) fail_msg("message '%s' does not mention '%s'", msg, needle2);
}

// A checkpoint's trainer_state.json with options out of range (1e15 micro-batches: a float to
// int cast out of range was undefined behaviour; NaN-like strings, negative steps): refused,
// naming the file and the key. Uses the checkpoint test_resume_equality leaves.
static void test_checkpoint_state_ranges(void **s) {
    (void)s;
    static const char *bad[][2] = {
        {"{\"step\":4,\"options\":{\"grad_accum\":1e15}}", "grad_accum"},
        {"{\"step\":4,\"options\":{\"batch\":-3}}", "batch"},
        {"{\"step\":4,\"options\":{\"steps\":2.5}}", "steps"},
        {"{\"step\":4,\"options\":{\"lr\":\"x\"}}", "lr"},
        {"{\"step\":4,\"options\":{\"beta2\":1e300}}", "beta2"},
        {"{\"step\":1e300,\"options\":{}}", "step"},
        {"{\"options\":{}}", "step"},
    };
    char *dir = tpath("ckpt_ranges");
    char *state = tpath("ckpt_ranges/trainer_state.json");
    CHECK(fk_mkdir_p(dir));
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        FILE *f = fopen(state, "wb");
        assert_non_null(f);
        fputs(bad[i][0], f);
        fclose(f);
        fk_model m;
        fk_adamw opt;
        fk_train_opts o;
        fk_train_defaults(&o);
        expect_error(fk_checkpoint_load(dir, &m, &opt, &o), FK_ERR_FORMAT, "trainer_state.json", bad[i][1]);
    }
}

// The evaluation windows, with and without BOS, for many lengths and caps: every id is
// predicted exactly once (without BOS: all but the first), by a position whose input is the id
// before it (or BOS for a window's first id), and windows hold consecutive ids.
static void test_eval_windows(void **s) {
    (void)s;
    enum { N = 50, SEQ_MAX = 7, BATCH = 3 };
    int32_t ids[N];
    for (int i = 0; i < N; i++) ids[i] = 1000 + i;
    for (int bos = -1; bos <= 7; bos += 8)
        for (int seq = bos >= 0 ? 2 : 1; seq <= SEQ_MAX; seq++)
            for (int n = 2; n <= N; n += 3)
                for (int cap = 0; cap <= 12; cap += 5) {
                    fk_eval_windowing w = fk_eval_windowing_of(n, cap, seq, bos);
                    int64_t want = cap > 0 && cap < n - (bos < 0) ? cap : n - (bos < 0);
                    int hits[N] = {0};
                    int64_t predicted = 0;
                    int32_t x[BATCH * SEQ_MAX];
                    int64_t tg[BATCH * SEQ_MAX];
                    for (int64_t w0 = 0; w0 < w.n_windows; w0 += BATCH) {
                        int rows = fk_eval_windows(&w, ids, w0, BATCH, x, tg);
                        assert_true(rows >= 1 && rows <= BATCH);
                        for (int r = 0; r < rows * seq; r++) {
                            if (r % seq == 0 && bos >= 0) assert_int_equal(x[r], bos);
                            if (tg[r] < 0) continue;
                            assert_true(tg[r] < n);
                            hits[tg[r]]++;
                            predicted++;
                            int32_t before = tg[r] > 0 ? ids[tg[r] - 1] : -1;
                            if (r % seq == 0 && bos >= 0) assert_int_equal(x[r], bos);
                            else assert_int_equal(x[r], before);
                        }
                    }
                    assert_int_equal(predicted, want);
                    for (int i = 0; i < N; i++) assert_true(hits[i] <= 1);
                    for (int i = bos < 0 ? 1 : 0; i < (bos < 0 ? want + 1 : want); i++) assert_int_equal(hits[i], 1);
                    if (w.n_windows > 0) {  // the last window is needed: it predicts something
                        int rows = fk_eval_windows(&w, ids, w.n_windows - 1, 1, x, tg);
                        assert_int_equal(rows, 1);
                        int any = 0;
                        for (int t = 0; t < seq; t++) any |= tg[t] >= 0;
                        assert_true(any);
                    }
                }
}

static void test_bad_inputs(void **s) {
    (void)s;
    fk_model m = {0};
    fk_config c;
    tiny_gpt2(&c);
    fk_model good;
    CHECK(fk_model_init(&good, &c));
    fk_model_init_weights(&good, 1);
    CHECK(fk_hf_save(&good, tpath("good"), FK_DT_F32));

    // missing folder / file
    expect_error(fk_hf_load(&m, tpath("nope")), FK_ERR_IO, "nope/config.json", NULL);
    // truncated safetensors
    CHECK(fk_mkdir_p(tpath("trunc")));
    copy_file(tpath("good/config.json"), tpath("trunc/config.json"));
    char *data;
    size_t n;
    CHECK(fk_read_file(tpath("good/model.safetensors"), &data, &n));
    CHECK(fk_write_file_atomic(tpath("trunc/model.safetensors"), data, n - 100));
    expect_error(fk_hf_load(&m, tpath("trunc")), FK_ERR_FORMAT, "truncated", "model.safetensors");
    CHECK(fk_write_file_atomic(tpath("trunc/model.safetensors"), data, 5));
    expect_error(fk_hf_load(&m, tpath("trunc")), FK_ERR_FORMAT, "not a safetensors file", "only 5 bytes");
    free(data);
    // wrong tensor shape: the same file under a config with a wider FFN
    CHECK(fk_mkdir_p(tpath("shape")));
    copy_file(tpath("good/model.safetensors"), tpath("shape/model.safetensors"));
    fk_config wide = c;
    for (int l = 0; l < FK_MAX_LAYERS; l++) wide.ffn[l] = 72;
    char *json = fk_hf_config_json(&wide);
    CHECK(fk_write_file_atomic(tpath("shape/config.json"), json, strlen(json)));
    free(json);
    expect_error(fk_hf_load(&m, tpath("shape")), FK_ERR_FORMAT, "transformer.h.0.mlp.c_fc.weight", "has shape [16, 64]");
    // config/weights mismatch: more layers in config than in the file, and fewer
    fk_config deep = c;
    deep.n_layer = 3;
    json = fk_hf_config_json(&deep);
    CHECK(fk_write_file_atomic(tpath("shape/config.json"), json, strlen(json)));
    free(json);
    expect_error(fk_hf_load(&m, tpath("shape")), FK_ERR_FORMAT, "transformer.h.2.ln_1.weight", "missing");
    deep.n_layer = 1;
    json = fk_hf_config_json(&deep);
    CHECK(fk_write_file_atomic(tpath("shape/config.json"), json, strlen(json)));
    free(json);
    expect_error(fk_hf_load(&m, tpath("shape")), FK_ERR_FORMAT, "transformer.h.1.", "not part of the model");
    // bad config.json
    CHECK(fk_write_file_atomic(tpath("shape/config.json"), "{\"model_type\": \"bert\"}", 23));
    expect_error(fk_hf_load(&m, tpath("shape")), FK_ERR_UNSUPPORTED, "bert", NULL);
    CHECK(fk_write_file_atomic(tpath("shape/config.json"), "{\"model_type\": \"llama\", \"hidden_size\": 16}", 42));
    expect_error(fk_hf_load(&m, tpath("shape")), FK_ERR_FORMAT, "config.json", "missing key");
    CHECK(fk_write_file_atomic(tpath("shape/config.json"), "{ not json", 10));
    expect_error(fk_hf_load(&m, tpath("shape")), FK_ERR_FORMAT, "config.json", "not valid JSON");
    // truncated token shard
    int32_t ids[100];
    for (int i = 0; i < 100; i++) ids[i] = i % 50;
    CHECK(fk_shard_write(tpath("s.tok"), ids, 100, 50, 300, 0));
    fk_token_data d;
    CHECK(fk_data_load(tpath("s.tok"), &d));
    assert_int_equal(d.n, 100);
    assert_int_equal(d.vocab_size, 50);
    assert_memory_equal(d.ids, ids, sizeof ids);
    fk_data_free(&d);
    CHECK(fk_read_file(tpath("s.tok"), &data, &n));
    CHECK(fk_write_file_atomic(tpath("s2.tok"), data, n - 3));
    free(data);
    expect_error(fk_data_load(tpath("s2.tok"), &d), FK_ERR_FORMAT, "truncated", "s2.tok");

    // NaN loss: training stops, names where, and the existing model and checkpoint stay intact
    make_text(tpath("nan.txt"), 2000);
    CHECK(fk_data_load(tpath("nan.txt"), &d));
    fk_config bc;
    fk_config_gpt2(&bc, 256, 16, 1, 2, 32);
    fk_model t;
    fk_adamw opt;
    fk_train_opts o;
    train_opts(&o, 2);
    fresh_model(&t, &opt, &bc, &o, 2);
    CHECK(fk_train(&t, &opt, &d, NULL, &o, tpath("nanrun"), NULL, NULL));
    copy_file(tpath("nanrun/model.safetensors"), tpath("nan_before.safetensors"));
    copy_file(tpath("nanrun/checkpoint-2/optimizer.safetensors"), tpath("nan_opt_before.safetensors"));
    t.w[fk_model_find_param(&t, "lnf.weight")->offset + 3] = NAN;
    o.steps = 4;
    expect_error(fk_train(&t, &opt, &d, NULL, &o, tpath("nanrun"), NULL, NULL), FK_ERR_NUMERIC, "NaN", "step 3");
    assert_true(file_equal(tpath("nanrun/model.safetensors"), tpath("nan_before.safetensors")));
    assert_true(file_equal(tpath("nanrun/checkpoint-2/optimizer.safetensors"), tpath("nan_opt_before.safetensors")));
    assert_false(fk_path_exists(tpath("nanrun/checkpoint-3")));
    fk_adamw_free(&opt);
    fk_model_free(&t);
    fk_data_free(&d);
    // tokens outside the vocabulary
    int32_t bad[2] = {3, 50};
    expect_error(fk_model_forward(&good, bad, NULL, 1, 2, false, NULL), FK_ERR_ARG, "token 50", "vocabulary");
    fk_model_free(&good);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip),         cmocka_unit_test(test_safetensors_values),
        cmocka_unit_test(test_half_floats),       cmocka_unit_test(test_sharded),
        cmocka_unit_test(test_resume_equality),
        cmocka_unit_test(test_resume_equality_bf16_moments),
        cmocka_unit_test(test_physical_cores),
        cmocka_unit_test(test_bad_inputs),        cmocka_unit_test(test_eval_windows),
        cmocka_unit_test(test_checkpoint_state_ranges),
    };
    return cmocka_run_group_tests(tests, tmpdir_setup, tmpdir_teardown);
}
