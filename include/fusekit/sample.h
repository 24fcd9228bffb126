// Sampling from next-token logits: greedy, temperature, top-k, top-p (nucleus).
#ifndef FUSEKIT_SAMPLE_H
#define FUSEKIT_SAMPLE_H

#include "fusekit/base.h"

typedef struct {
    float temperature;  // 0: greedy (argmax)
    int top_k;          // 0: off
    float top_p;        // 1: off
} fk_sampler;

// Picks a token from logits (n values) with rng; greedy ignores rng.
int32_t fk_sample(const fk_sampler *s, const float *logits, int64_t n, fk_rng *rng);

#endif
