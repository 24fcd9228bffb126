// Sampling: greedy, temperature, top-k and top-p over a softmax of the logits.
#include "fusekit/sample.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

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

void fk_generate_defaults(fk_generate_opts *o) {
    memset(o, 0, sizeof *o);
    o->sampler = (fk_sampler){0.8f, 0, 1.0f};
    o->max_new = 128;
    o->seed = 1337;
    o->stop[0] = o->stop[1] = -1;
    o->repeat_penalty = 1.0f;
    o->repeat_last_n = 64;
}

void fk_repeat_penalty(float *logits, int64_t V, const int32_t *recent, int64_t n, float penalty) {
    for (int64_t i = 0; i < n; i++) {
        int32_t id = recent[i];
        if (id < 0 || id >= V) continue;
        bool seen = false;  // each id once, however often it occurs
        for (int64_t j = 0; j < i && !seen; j++) seen = recent[j] == id;
        if (seen) continue;
        logits[id] = logits[id] > 0 ? logits[id] / penalty : logits[id] * penalty;
    }
}

// The context when it is full (of n tokens): its newest half kept and the cache rebuilt from
// it; *n the tokens now cached.
static fk_status slide_context(fk_model *m, int32_t *toks, int *n, float *logits) {
    int keep = (int)(m->cfg.max_seq / 2);
    memmove(toks, toks + *n - keep, (size_t)keep * sizeof(int32_t));
    *n = keep;
    return fk_model_step(m, toks, keep, 0, logits);
}

fk_status fk_generate(fk_model *m, const int32_t *prompt, int64_t n_prompt, const fk_generate_opts *o, fk_token_cb cb, void *user,
                      fk_generate_stats *stats) {
    int64_t V = m->cfg.vocab_size, cap = m->cfg.max_seq;
    int32_t *toks = malloc((size_t)cap * sizeof(int32_t));
    float *logits = malloc((size_t)V * sizeof(float));
    if (!toks || !logits) {
        free(toks); free(logits);
        return fk_error(FK_ERR_NOMEM, "out of memory for a context of %lld tokens", (long long)cap);
    }
    int n = 0;
    for (int64_t i = n_prompt > cap ? n_prompt - cap : 0; i < n_prompt; i++) toks[n++] = prompt[i];
    if (n == 0) toks[n++] = m->cfg.bos_id >= 0 && m->cfg.bos_id < V ? m->cfg.bos_id : (V == 256 ? '\n' : 0);
    // the cached prefix holds when the prompt was not cut at its front; one token at least is
    // run again, for the logits after the prompt
    int64_t reuse = n_prompt <= cap && n_prompt > 0 && o->reuse > 0 ? (o->reuse < n ? o->reuse : n - 1) : 0;
    fk_rng rng;
    fk_rng_seed(&rng, o->seed);
    double t0 = fk_time_s();
    int64_t generated = 0;
    fk_status st = fk_model_step(m, toks + reuse, (int)(n - reuse), (int)reuse, logits);
    double t_first = fk_time_s() - t0;
    bool go = true;
    while (st == FK_OK && go && generated < o->max_new) {
        if (o->repeat_penalty != 1.0f && o->repeat_last_n != 0) {
            int64_t k = o->repeat_last_n < 0 || o->repeat_last_n > n ? n : o->repeat_last_n;
            fk_repeat_penalty(logits, V, toks + n - k, k, o->repeat_penalty);
        }
        int32_t next = fk_sample(&o->sampler, logits, fk_model_vocab_real(m), &rng);  // never a padding row
        generated++;
        go = cb(next, user) && next != m->cfg.eos_id && next != o->stop[0] && next != o->stop[1];
        if (!go) break;
        if (n == cap && cap == 1) {  // a context of one token: start over from the new one
            toks[0] = next;
            st = fk_model_step(m, toks, 1, 0, logits);
            continue;
        }
        if (n == cap && (st = slide_context(m, toks, &n, logits)) != FK_OK) break;
        toks[n] = next;
        st = fk_model_step(m, &toks[n], 1, n, logits);
        n++;
    }
    if (stats) *stats = (fk_generate_stats){generated, t_first, fk_time_s() - t0, reuse, st == FK_OK ? n : 0};
    if (o->context && st == FK_OK) memcpy(o->context, toks, (size_t)n * sizeof(int32_t));
    free(toks);
    free(logits);
    return st;
}
