// AdamW (decoupled weight decay, as torch.optim.AdamW), gradient norm, LR schedule.
#include "fusekit/train.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void fk_optim_defaults(fk_optim_opts *o) {
    o->lr = 3e-4f;
    o->min_lr_frac = 0.1f;
    o->beta1 = 0.9f;
    o->beta2 = 0.95f;
    o->eps = 1e-8f;
    o->weight_decay = 0.1f;
    o->clip = 1.0f;
    o->warmup = 0;
    o->total_steps = 0;
    o->moments = FK_MOMENTS_F32;
}

fk_status fk_moments_parse(const char *s, fk_moments *out) {
    if (s && strcmp(s, "f32") == 0) *out = FK_MOMENTS_F32;
    else if (s && strcmp(s, "bf16") == 0) *out = FK_MOMENTS_BF16;
    else return fk_error(FK_ERR_ARG, "--optim-state: '%s' is not f32 or bf16", s ? s : "(none)");
    return FK_OK;
}

uint16_t fk_bf16_round_stochastic(float x, uint32_t r) {
    uint32_t b;
    memcpy(&b, &x, 4);
    if ((b & 0x7f800000u) == 0x7f800000u) return (uint16_t)((b >> 16) | ((b & 0xffffu) ? 0x40u : 0));  // inf / NaN kept
    uint32_t up = b + (r & 0xffffu);  // carries into the kept bits with probability low/2^16
    if ((up & 0x7f800000u) == 0x7f800000u) up = b;  // never rounds a finite value to infinity
    return (uint16_t)(up >> 16);
}

float fk_lr_at(const fk_optim_opts *o, int64_t step) {
    if (o->warmup > 0 && step < o->warmup) return o->lr * (float)(step + 1) / (float)o->warmup;
    if (o->total_steps <= o->warmup) return o->lr;
    double frac = (double)(step - o->warmup) / (double)(o->total_steps - o->warmup);
    if (frac > 1) frac = 1;
    double min_lr = (double)o->lr * o->min_lr_frac;
    return (float)(min_lr + 0.5 * ((double)o->lr - min_lr) * (1.0 + cos(M_PI * frac)));
}

fk_status fk_adamw_init(fk_adamw *a, const fk_model *m, const fk_optim_opts *o) {
    memset(a, 0, sizeof *a);
    a->o = *o;
    a->n = m->n_floats;
    a->lo = 0, a->hi = a->n;
    if (o->moments != FK_MOMENTS_F32 && o->moments != FK_MOMENTS_BF16)
        return fk_error(FK_ERR_ARG, "AdamW moments: unknown storage %d", o->moments);
    bool half = o->moments == FK_MOMENTS_BF16;
    size_t each = half ? sizeof(uint16_t) : sizeof(float);
    // checked before allocating, as the weights and gradients are (the moments are touched at once)
    FK_TRY(half ? fk_mem_check("the AdamW state (two bf16 moments per weight)", 2.0 * (double)a->n * (double)each)
                : fk_mem_check_hint("the AdamW state (two f32 moments per weight)", 2.0 * (double)a->n * (double)each,
                                    "--optim-state bf16 stores them in %s", 2.0 * (double)a->n * sizeof(uint16_t)));
    // lazily zeroed pages: nothing is resident until an update (or a loaded checkpoint) writes
    // them, so a ZeRO-1 run that keeps only its share never holds the whole
    void *m1 = fk_alloc_pages((size_t)a->n * each), *m2 = fk_alloc_pages((size_t)a->n * each);
    if (half) a->m16 = m1, a->v16 = m2;  // bf16 zero is the bit pattern 0
    else a->m = m1, a->v = m2;
    if (!m1 || !m2) {
        fk_free_pages(m1, (size_t)a->n * each); fk_free_pages(m2, (size_t)a->n * each);
        memset(a, 0, sizeof *a);
        return fk_error(FK_ERR_NOMEM, "cannot allocate optimizer state");
    }
    return FK_OK;
}

// The moment arrays (pages of (hi - lo) entries each), NULL after.
static void fk_adamw_free_moments(fk_adamw *a) {
    size_t bytes = (size_t)(a->hi - a->lo) * (a->m16 ? sizeof(uint16_t) : sizeof(float));
    fk_free_pages(a->m, bytes); fk_free_pages(a->v, bytes); fk_free_pages(a->m16, bytes); fk_free_pages(a->v16, bytes);
    a->m = a->v = NULL, a->m16 = a->v16 = NULL;
}

fk_status fk_adamw_shard(fk_adamw *a, int64_t lo, int64_t hi) {
    if (lo < a->lo || hi > a->hi || lo > hi) return fk_error(FK_ERR_ARG, "AdamW shard [%lld, %lld) outside [%lld, %lld)", (long long)lo,
                                                           (long long)hi, (long long)a->lo, (long long)a->hi);
    bool half = a->m16 != NULL;
    size_t each = half ? sizeof(uint16_t) : sizeof(float), k = (size_t)(hi - lo);
    char *m1 = fk_alloc_pages(k * each), *m2 = fk_alloc_pages(k * each);
    if (!m1 || !m2) {
        fk_free_pages(m1, k * each); fk_free_pages(m2, k * each);
        return fk_error(FK_ERR_NOMEM, "cannot allocate the AdamW shard (%lld entries)", (long long)(hi - lo));
    }
    const char *o1 = half ? (const char *)a->m16 : (const char *)a->m, *o2 = half ? (const char *)a->v16 : (const char *)a->v;
    memcpy(m1, o1 + (size_t)(lo - a->lo) * each, k * each);
    memcpy(m2, o2 + (size_t)(lo - a->lo) * each, k * each);
    fk_adamw_free_moments(a);
    if (half) a->m16 = (uint16_t *)m1, a->v16 = (uint16_t *)m2;
    else a->m = (float *)m1, a->v = (float *)m2;
    a->lo = lo, a->hi = hi;
    return FK_OK;
}

void fk_adamw_free(fk_adamw *a) {
    fk_adamw_free_moments(a);
    memset(a, 0, sizeof *a);
}

double fk_grad_norm(const fk_model *m) {
    // Fixed chunks summed in a fixed order: the same result whatever the thread count or timing
    // (an OpenMP reduction would combine partial sums in arrival order).
    enum { CHUNK = 1 << 16 };
    int64_t n = m->n_floats, n_chunks = (n + CHUNK - 1) / CHUNK;
    double *part = malloc((size_t)(n_chunks ? n_chunks : 1) * sizeof(double));
    if (!part) return NAN;
    #pragma omp parallel for schedule(static)
    for (int64_t c = 0; c < n_chunks; c++) {
        int64_t end = (c + 1) * CHUNK < n ? (c + 1) * CHUNK : n;
        double s = 0;
        for (int64_t j = c * CHUNK; j < end; j++) s += (double)m->g[j] * m->g[j];
        part[c] = s;
    }
    double ss = 0;
    for (int64_t c = 0; c < n_chunks; c++) ss += part[c];
    free(part);
    return sqrt(ss);
}

void fk_adamw_update(fk_adamw *a, fk_model *m, float lr, float grad_scale) {
    a->t++;
    const fk_optim_opts *o = &a->o;
    float b1 = o->beta1, b2 = o->beta2;
    float bc1 = 1.0f - powf(b1, (float)a->t), bc2 = 1.0f - powf(b2, (float)a->t);
    float step_size = lr / bc1, bc2_sqrt = sqrtf(bc2);
    for (int i = 0; i < m->n_params; i++) {
        const fk_param *p = &m->params[i];
        float decay = p->decay ? 1.0f - lr * o->weight_decay : 1.0f;
        float *w = m->w + p->offset, *g = m->g + p->offset;
        // the entries j0 .. j1-1 of this parameter in the optimizer's share (all without ZeRO-1)
        int64_t j0 = a->lo > p->offset ? a->lo - p->offset : 0, j1 = a->hi - p->offset < p->numel ? a->hi - p->offset : p->numel;
        if (j1 <= j0) continue;
        if (a->m16) {  // bf16 moments: f32 arithmetic on the stored values, stochastic rounding back
            uint16_t *mm = a->m16 + (p->offset + j0 - a->lo), *vv = a->v16 + (p->offset + j0 - a->lo);  // entry j0
            uint64_t key = fk_hash64((uint64_t)a->t * 0x9e3779b97f4a7c15ull + (uint64_t)p->offset);
            #pragma omp parallel for schedule(static) if (j1 - j0 > 65536)
            for (int64_t j = j0; j < j1; j++) {
                float gj = g[j] * grad_scale;
                float mj = b1 * fk_bf16_to_f32(mm[j - j0]) + (1.0f - b1) * gj;
                float vj = b2 * fk_bf16_to_f32(vv[j - j0]) + (1.0f - b2) * gj * gj;
                uint64_t r = fk_hash64(key + (uint64_t)j);  // 32 random bits for each moment
                mm[j - j0] = fk_bf16_round_stochastic(mj, (uint32_t)r);
                vv[j - j0] = fk_bf16_round_stochastic(vj, (uint32_t)(r >> 32));
                float denom = sqrtf(vj) / bc2_sqrt + o->eps;
                w[j] = w[j] * decay - step_size * mj / denom;
            }
            continue;
        }
        float *mm = a->m + (p->offset + j0 - a->lo), *vv = a->v + (p->offset + j0 - a->lo);  // entry j0
        #pragma omp parallel for schedule(static) if (j1 - j0 > 65536)
        for (int64_t j = j0; j < j1; j++) {
            float gj = g[j] * grad_scale;
            mm[j - j0] = b1 * mm[j - j0] + (1.0f - b1) * gj;
            vv[j - j0] = b2 * vv[j - j0] + (1.0f - b2) * gj * gj;
            float denom = sqrtf(vv[j - j0]) / bc2_sqrt + o->eps;
            w[j] = w[j] * decay - step_size * mm[j - j0] / denom;
        }
    }
}
