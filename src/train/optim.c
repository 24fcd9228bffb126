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
    // checked before allocating, as the weights and gradients are (the moments are touched at once)
    FK_TRY(fk_mem_check("the AdamW state (two f32 moments per weight)", 2.0 * (double)a->n * sizeof(float)));
    a->m = fk_calloc_aligned((size_t)a->n * sizeof(float));
    a->v = fk_calloc_aligned((size_t)a->n * sizeof(float));
    if (!a->m || !a->v) { fk_adamw_free(a); return fk_error(FK_ERR_NOMEM, "cannot allocate optimizer state"); }
    return FK_OK;
}

void fk_adamw_free(fk_adamw *a) {
    free(a->m); free(a->v);
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
        float *w = m->w + p->offset, *g = m->g + p->offset, *mm = a->m + p->offset, *vv = a->v + p->offset;
        #pragma omp parallel for schedule(static) if (p->numel > 65536)
        for (int64_t j = 0; j < p->numel; j++) {
            float gj = g[j] * grad_scale;
            mm[j] = b1 * mm[j] + (1.0f - b1) * gj;
            vv[j] = b2 * vv[j] + (1.0f - b2) * gj * gj;
            float denom = sqrtf(vv[j]) / bc2_sqrt + o->eps;
            w[j] = w[j] * decay - step_size * mm[j] / denom;
        }
    }
}
