// Sampling from next-token logits: greedy, temperature, top-k, top-p (nucleus); and generation
// with a KV cache, one token at a time.
#ifndef FUSEKIT_SAMPLE_H
#define FUSEKIT_SAMPLE_H

#include "fusekit/base.h"
#include "fusekit/model.h"

typedef struct {
    float temperature;  // 0: greedy (argmax)
    int top_k;          // 0: off
    float top_p;        // 1: off
} fk_sampler;

// Picks a token from logits (n values) with rng; greedy ignores rng.
int32_t fk_sample(const fk_sampler *s, const float *logits, int64_t n, fk_rng *rng);

typedef struct {
    fk_sampler sampler;
    int64_t max_new;      // tokens generated at most
    uint64_t seed;        // the sampler's
    int32_t stop[2];      // tokens that end generation after they are passed on (-1: none); the
                          // model's eos_id always does
    float repeat_penalty; // llama.cpp's repetition penalty over the last repeat_last_n tokens of the
                          // context (prompt included): 1 = off
    int repeat_last_n;    // 0: none; -1: the whole context
    // Continuing a conversation (llama.cpp's prompt cache): the first `reuse` prompt tokens are
    // already in the model's KV cache at positions 0 .. reuse-1, left there by the previous
    // fk_generate on this model (the caller vouches: they are a prefix of that call's context,
    // as `context` returned it); only the rest of the prompt is run. 0: all of it.
    int64_t reuse;
    // When not NULL (room for the model's context, max_seq ids): the tokens in the KV cache after
    // the call, in order (what a next call may reuse a prefix of), their number in stats->n_context.
    int32_t *context;
} fk_generate_opts;

// temperature 0.8, top-k off, top-p off, 128 new tokens, seed 1337, no stop tokens but EOS,
// repetition penalty off (1, last 64 tokens).
void fk_generate_defaults(fk_generate_opts *o);

// The repetition penalty as llama.cpp applies it: every distinct id among recent[0..n) has its
// logit divided by penalty when positive, multiplied by it otherwise (ids outside [0, V) ignored).
void fk_repeat_penalty(float *logits, int64_t V, const int32_t *recent, int64_t n, float penalty);

// Called with each generated token; return false to stop after it.
typedef bool (*fk_token_cb)(int32_t id, void *user);
typedef struct {
    int64_t generated;
    double prompt_s;      // seconds to the first token's logits (the prompt's forward)
    double total_s;
    int64_t reused;       // prompt tokens not run again (opts.reuse, as far as it applied)
    int64_t n_context;    // tokens in the KV cache at the end (see opts.context)
} fk_generate_stats;

// Generates after prompt (n tokens; when longer than the context its newest tokens are kept;
// none: the model's BOS, or '\n' for a 256-token byte model, or 0), passing each token to cb.
// When the context fills, its newest half is kept and the cache rebuilt from it. stats may be
// NULL.
fk_status fk_generate(fk_model *m, const int32_t *prompt, int64_t n, const fk_generate_opts *o, fk_token_cb cb, void *user,
                      fk_generate_stats *stats);

#endif
