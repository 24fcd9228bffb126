// Shared by the test programs: a temporary folder per program, removed at the end.
#ifndef FK_TEST_UTIL_H
#define FK_TEST_UTIL_H
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "fusekit/base.h"

static char tmpdir[256];

// Fails the running cmocka test with the library's message when a call does not return FK_OK.
#define CHECK(st) do { fk_status st_ = (st); if (st_ != FK_OK) fail_msg("%s", fk_last_error()); } while (0)

// n token ids below vocab with structure a small model learns: every period-th id drawn at random
// (seed), the others the previous id times mul plus add, mod vocab.
static inline void structured_ids(int32_t *ids, int n, int vocab, uint64_t seed, int period, int mul, int add) {
    fk_rng r;
    fk_rng_seed(&r, seed);
    for (int i = 0; i < n; i++) ids[i] = i % period == 0 ? (int32_t)fk_rng_below(&r, (uint64_t)vocab) : (ids[i > 0 ? i - 1 : 0] * mul + add) % vocab;
}

// "<tmpdir>/<name>"; the last eight results stay valid.
static inline char *tpath(const char *name) {
    static char buf[8][512];
    static int k;
    char *p = buf[k++ % 8];
    snprintf(p, 512, "%s/%s", tmpdir, name);
    return p;
}

static inline int tmpdir_setup(void **s) {
    (void)s;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/fk_test_XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static inline int tmpdir_teardown(void **s) {
    (void)s;
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}
// A whole file (malloc'd; the test fails when it cannot be read), and a file written whole.
static inline char *slurp(const char *path, size_t *n) {
    char *b;
    if (fk_read_file(path, &b, n) != FK_OK) fail_msg("%s", fk_last_error());
    return b;
}

static inline void spit(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, n, f), n);
    fclose(f);
}

// Runs a shell command with stdout and stderr to <tmpdir>/out.txt; returns its exit status and
// the output in *out (malloc'd).
static inline int run(char **out, const char *fmt, ...) {
    char cmd[8192], path[300];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd - 400, fmt, ap);
    va_end(ap);
    snprintf(path, sizeof path, "%s/out.txt", tmpdir);
    snprintf(cmd + strlen(cmd), 400, " > %.300s 2>&1", path);
    int rc = system(cmd);
    size_t n;
    if (fk_read_file(path, out, &n) != FK_OK) *out = strdup("");
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

// The number after "key": in a JSON line (the first occurrence); fails the test when absent.
static inline double json_num(const char *s, const char *key) {
    char k[64];
    snprintf(k, sizeof k, "\"%s\":", key);
    const char *p = strstr(s, k);
    if (!p) fail_msg("no %s in: %s", key, s);
    return atof(p + strlen(k));
}

// Runs a command and fails the test with its output when it exits non-zero.
#define RUN_OK(...) do { char *o_; if (run(&o_, __VA_ARGS__) != 0) fail_msg("command failed:\n%s", o_); free(o_); } while (0)
// Runs a command that must exit with `code` and print `needle` (NULL: anything); fails the
// test with its output otherwise.
#define RUN_FAILS(code, needle, ...)                                                                     \
    do {                                                                                                \
        char *o_;                                                                                       \
        int rc_ = run(&o_, __VA_ARGS__);                                                                \
        if (rc_ != (code)) fail_msg("exit %d, expected %d:\n%s", rc_, (code), o_);                      \
        const char *n_ = (needle);                                                                      \
        if (n_ && !strstr(o_, n_)) fail_msg("no '%s' in the output:\n%s", n_, o_);                      \
        free(o_);                                                                                       \
    } while (0)

#ifdef FUSEKIT_TOKENIZER_H
// a and b have the same vocabulary: the same pieces, in the same order.
static inline void assert_same_pieces(const fk_tokenizer *a, const fk_tokenizer *b) {
    assert_int_equal(fk_tok_vocab_size(a), fk_tok_vocab_size(b));
    for (int32_t i = 0; i < fk_tok_vocab_size(a); i++) {
        uint32_t la, lb;
        const char *pa = fk_tok_piece(a, i, &la), *pb = fk_tok_piece(b, i, &lb);
        assert_int_equal(la, lb);
        assert_memory_equal(pa, pb, la);
    }
}
#endif

#ifdef FUSEKIT_MODEL_H
// A small GPT-2-style model with RoPE whose attention and MLP run in parallel: from two norms
// (GPT-NeoX), or shared from one with an LM-head bias (Phi-2).
static inline void cfg_parallel(fk_config *c, int64_t vocab, int64_t d_model, bool shared) {
    fk_config_gpt2(c, vocab, d_model, 2, 2, 16);
    c->pos = FK_POS_ROPE;
    c->residual = shared ? FK_RESID_PARALLEL_SHARED : FK_RESID_PARALLEL;
    c->bias_lm_head = shared;
}

// Encodes row w (n % 32 == 0) as ggml's Q8_0 blocks into dst (32 int8 with one half-float scale:
// x = q * d); decoded (may be w itself, or NULL) gets the values the blocks decode to.
static inline void test_q8_0_row(const float *w, int64_t n, unsigned char *dst, float *decoded) {
    for (int64_t b = 0; b < n / 32; b++) {
        float amax = 0;
        for (int j = 0; j < 32; j++) amax = fmaxf(amax, fabsf(w[b * 32 + j]));
        uint16_t dh = fk_f32_to_f16(amax / 127.0f);
        float d = fk_f16_to_f32(dh);
        unsigned char *blk = dst + b * 34;
        blk[0] = (unsigned char)(dh & 0xff);
        blk[1] = (unsigned char)(dh >> 8);
        for (int j = 0; j < 32; j++) {
            int q = d > 0 ? (int)lrintf(w[b * 32 + j] / d) : 0;
            q = q > 127 ? 127 : q < -128 ? -128 : q;
            blk[2 + j] = (unsigned char)(int8_t)q;
            if (decoded) decoded[b * 32 + j] = (float)q * d;
        }
    }
}

// Small mixture-of-experts models (E experts of width F, no biases):
//   CFG_MOE_MIXTRAL  Llama-style SwiGLU, 2 MoE layers, E 4, top-2 renormalised, no dense FFN;
//   CFG_MOE_QWEN2    Qwen2-MoE: 3 layers, the middle one dense (width 2F), the others MoE with E 4,
//                    top-k unnormalised and a shared expert of width F behind a sigmoid gate;
//   CFG_MOE_GELU     GPT-2-style (LayerNorm, learned positions, tanh GELU), 2 MoE layers, top-2 of
//                    E 3 unnormalised, layer 1 keeping 2 experts (as a folded model may).
enum { CFG_MOE_MIXTRAL, CFG_MOE_QWEN2, CFG_MOE_GELU };
static inline void cfg_moe(fk_config *c, int kind, int64_t vocab, int64_t d_model, int64_t F, int64_t k) {
    if (kind == CFG_MOE_GELU) {
        fk_config_gpt2(c, vocab, d_model, 2, 2, 16);
        c->bias_mlp = false;
        c->experts[1] = 2;
    } else
        fk_config_llama(c, vocab, d_model, kind == CFG_MOE_QWEN2 ? 3 : 2, 4, 2, 2 * F, 16);
    c->n_expert = kind == CFG_MOE_GELU ? 3 : 4;
    c->n_expert_used = k;
    c->expert_ffn = F;
    c->expert_norm = kind == CFG_MOE_MIXTRAL;
    c->shared_gate = kind == CFG_MOE_QWEN2;
    for (int64_t l = 0; l < c->n_layer; l++) {
        c->moe[l] = kind != CFG_MOE_QWEN2 || l != 1;
        if (c->moe[l]) c->ffn[l] = kind == CFG_MOE_QWEN2 ? F : 0;
    }
}
#endif

#ifdef FUSEKIT_DATA_H
// n random token ids below V (deterministic for a seed), as a dataset of n bytes.
static inline void random_tokens(fk_token_data *d, int64_t n, int64_t V, uint64_t seed) {
    memset(d, 0, sizeof *d);
    d->ids = malloc((size_t)n * sizeof(int32_t));
    d->n = n;
    d->vocab_size = V;
    d->text_bytes = n;
    fk_rng r;
    fk_rng_seed(&r, seed);
    for (int64_t i = 0; i < n; i++) d->ids[i] = (int32_t)fk_rng_below(&r, (uint64_t)V);
}
#endif
#endif
