// Sampling: greedy, temperature, top-k and top-p over a softmax of the logits.
#include "fusekit/sample.h"

#include <math.h>
#include <stdlib.h>

typedef struct { float p; int32_t id; } cand;

static int by_prob_desc(const void *a, const void *b) {
    const cand *x = a, *y = b;
    if (x->p != y->p) return x->p < y->p ? 1 : -1;
    return x->id - y->id;
}

int32_t fk_sample(const fk_sampler *s, const float *logits, int64_t n, fk_rng *rng) {
    int32_t best = 0;
    for (int64_t i = 1; i < n; i++) if (logits[i] > logits[best]) best = (int32_t)i;
    if (!(s->temperature > 0)) return best;
    cand *c = malloc((size_t)n * sizeof *c);
    if (!c) return best;
    double sum = 0;
    for (int64_t i = 0; i < n; i++) {
        c[i].id = (int32_t)i;
        c[i].p = expf((logits[i] - logits[best]) / s->temperature);
        sum += c[i].p;
    }
    int64_t keep = n;
    if (s->top_k > 0 || s->top_p < 1) {
        qsort(c, (size_t)n, sizeof *c, by_prob_desc);
        if (s->top_k > 0 && s->top_k < keep) keep = s->top_k;
        if (s->top_p < 1) {
            // the nucleus is taken within what top-k kept, renormalised (as Hugging Face does)
            double kept_mass = 0;
            for (int64_t i = 0; i < keep; i++) kept_mass += c[i].p;
            double kept = 0, target = s->top_p * kept_mass;
            for (int64_t i = 0; i < keep; i++) {
                kept += c[i].p;
                if (kept >= target) { keep = i + 1; break; }
            }
        }
        sum = 0;
        for (int64_t i = 0; i < keep; i++) sum += c[i].p;
    }
    double u = fk_rng_uniform(rng) * sum, acc = 0;
    int32_t pick = c[keep - 1].id;
    for (int64_t i = 0; i < keep; i++) {
        acc += c[i].p;
        if (u < acc) { pick = c[i].id; break; }
    }
    free(c);
    return pick;
}
