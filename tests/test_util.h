// Shared by the test programs: a temporary folder per program, removed at the end.
#ifndef FK_TEST_UTIL_H
#define FK_TEST_UTIL_H
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "fusekit/base.h"

static char tmpdir[256];

// Fails the running cmocka test with the library's message when a call does not return FK_OK.
#define CHECK(st) do { fk_status st_ = (st); if (st_ != FK_OK) fail_msg("%s", fk_last_error()); } while (0)

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
