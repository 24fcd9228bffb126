// Evaluation (fusekit/eval.h): the window iterator and the figures computed on it.
#include "fusekit/eval.h"
#include "fusekit/gpu.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/dist.h"
#include "nn/rowops.h"

// ------------------------------------------------------------------ windows

// Window w holds ids [w * step, (w + 1) * step) after `lead` BOS positions (step = seq - lead);
// its position t holds id w * step + t - lead (BOS for t < lead) and, for t < step, predicts
// id w * step + t + 1 - lead. Every id is predicted once (the first only after BOS).
fk_eval_windowing fk_eval_windowing_of(int64_t n_ids, int64_t max_tokens, int seq, int32_t bos) {
    fk_eval_windowing w = {0, 0, seq, bos >= 0 ? bos : -1};
    int lead = w.bos >= 0 ? 1 : 0, step = seq - lead;
    int64_t cap = max_tokens > 0 && max_tokens < n_ids ? max_tokens + 1 - lead : 0;  // the ids that make max_tokens predictions
    w.n = cap > 0 && cap < n_ids ? cap : n_ids;
    int64_t predicted = w.n - 1 + lead;
    w.n_windows = step > 0 && predicted > 0 ? (predicted + step - 1) / step : 0;
    return w;
}

fk_eval_windowing fk_eval_windowing_data(const fk_token_data *d, int64_t max_tokens, int seq) {
    return fk_eval_windowing_of(d->n, max_tokens, seq, d->bos_first ? d->bos_id : -1);
}

int fk_eval_windows(const fk_eval_windowing *w, const int32_t *ids, int64_t w0, int batch, int32_t *x, int64_t *target) {
    int rows = (int)(w->n_windows - w0 < batch ? w->n_windows - w0 : batch), seq = w->seq, lead = w->bos >= 0 ? 1 : 0;
    int64_t step = seq - lead;
    for (int b = 0; b < rows; b++)
        for (int t = 0; t < seq; t++) {
            int64_t i = (w0 + b) * step + t - lead;  // the id at position t (t < lead: BOS)
            x[b * seq + t] = t < lead ? w->bos : i < w->n ? ids[i] : 0;
            if (target) target[b * seq + t] = t < step && i + 1 < w->n ? i + 1 : -1;
        }
    return rows;
}

fk_status fk_eval_iter_init(fk_eval_iter *it, const fk_eval_windowing *w, int batch) {
    memset(it, 0, sizeof *it);
    it->w = *w;
    it->batch = batch;
    it->w_end = w->n_windows;
    it->x = malloc((size_t)batch * w->seq * sizeof *it->x);
    it->target = malloc((size_t)batch * w->seq * sizeof *it->target);
    if (!it->x || !it->target) { fk_eval_iter_free(it); return fk_error(FK_ERR_NOMEM, "evaluation: out of memory (%d windows of %d)", batch, w->seq); }
    return FK_OK;
}

bool fk_eval_iter_next(fk_eval_iter *it, const int32_t *ids) {
    int64_t end = it->w_end < it->w.n_windows ? it->w_end : it->w.n_windows;
    if (it->w0 >= end) { it->rows = 0; return false; }
    it->rows = fk_eval_windows(&it->w, ids, it->w0, (int)(end - it->w0 < it->batch ? end - it->w0 : it->batch), it->x, it->target);
    it->w0 += it->batch;
    return true;
}

void fk_eval_iter_free(fk_eval_iter *it) {
    free(it->x);
    free(it->target);
    it->x = NULL;
    it->target = NULL;
}

// ------------------------------------------------------------------ loss, bits per byte

// Runs rows x seq tokens x with targets y (-1: not scored) and adds the scored positions'
// nats to *total and their count to *scored.
static fk_eval_progress_fn g_progress;
static void *g_progress_user;
void fk_eval_set_progress(fk_eval_progress_fn fn, void *user) { g_progress = fn, g_progress_user = user; }
void fk_eval_progress_report(int64_t done, int64_t total, int64_t tokens) {
    if (g_progress) g_progress(done, total, tokens, g_progress_user);
}
static void progress(int64_t done, int64_t total, int64_t tokens) {
    if (g_progress) g_progress(done, total, tokens, g_progress_user);
}

// The iterator restricted to this rank's share of the windows (all of them with one rank).
static void iter_share(fk_eval_iter *it) { fk_dist_range(it->w.n_windows, &it->w0, &it->w_end); }

// A loop's outcome agreed by the ranks, then its sums (nats or KL, positions) summed over them.
static fk_status dist_totals(fk_status st, double *total, int64_t *scored) {
    st = fk_dist_agree(st);
    if (st == FK_OK) {
        fk_dist_sum_f64(total, 1);
        fk_dist_sum_i64(scored, 1);
    }
    return st;
}

static fk_gpu *g_gpu;
void fk_eval_set_gpu(fk_gpu *g) { g_gpu = g; }

static fk_status score_rows(fk_model *m, const int32_t *x, const int32_t *y, int rows, int seq, double *total, int64_t *scored) {
    float loss;
    const float *tl;
    float *gl = NULL;
    if (g_gpu) {
        if (!(gl = malloc((size_t)rows * seq * sizeof(float)))) return fk_error(FK_ERR_NOMEM, "out of memory");
        fk_status st = fk_gpu_forward(g_gpu, x, y, rows, seq, &loss, gl, NULL);
        if (st != FK_OK) { free(gl); return st; }
        tl = gl;
    } else {
        FK_TRY(fk_model_forward(m, x, y, rows, seq, false, &loss));
        tl = fk_model_token_losses(m);
    }
    for (int64_t i = 0; i < (int64_t)rows * seq; i++)
        if (y[i] >= 0) { *total += tl[i]; (*scored)++; }
    free(gl);
    return FK_OK;
}

// The result of `scored` positions worth `total` nats, bytes_per_token bytes each (0: no bpb).
static void eval_result(double total, int64_t scored, double bytes_per_token, fk_eval_result *r) {
    r->tokens = scored;
    r->loss = total / (double)scored;
    r->ppl = exp(r->loss);
    if (bytes_per_token > 0) {
        r->bytes = (int64_t)(bytes_per_token * (double)scored + 0.5);
        r->bpb = total / log(2.0) / (bytes_per_token * (double)scored);
    }
}

fk_status fk_eval_data(fk_model *m, const fk_token_data *d, int seq, int batch, int64_t max_tokens, fk_eval_result *r) {
    memset(r, 0, sizeof *r);
    if (d->n < 2) return fk_error(FK_ERR_ARG, "evaluation data %s has fewer than 2 tokens", d->path ? d->path : "");
    if (d->vocab_size > m->cfg.vocab_size)
        return fk_error(FK_ERR_ARG, "evaluation data %s has vocabulary %lld but the model only %lld", d->path ? d->path : "",
                        (long long)d->vocab_size, (long long)m->cfg.vocab_size);
    if (d->bos_first && d->bos_id >= m->cfg.vocab_size)
        return fk_error(FK_ERR_ARG, "evaluation data %s: the tokenizer's BOS %d is outside the model's vocabulary of %lld",
                        d->path ? d->path : "", d->bos_id, (long long)m->cfg.vocab_size);
    if (seq < (d->bos_first ? 2 : 1) || batch < 1)
        return fk_error(FK_ERR_ARG, "evaluation: window %d / batch %d (at least %d / 1)", seq, batch, d->bos_first ? 2 : 1);
    fk_eval_windowing w = fk_eval_windowing_data(d, max_tokens, seq);
    fk_eval_iter it;
    FK_TRY(fk_eval_iter_init(&it, &w, batch));
    int32_t *y = malloc((size_t)batch * seq * sizeof(int32_t));
    fk_status st = y ? FK_OK : fk_error(FK_ERR_NOMEM, "out of memory");
    double total = 0;
    int64_t scored = 0, lo;
    iter_share(&it);
    lo = it.w0;
    while (st == FK_OK && fk_eval_iter_next(&it, d->ids)) {
        for (int64_t i = 0; i < (int64_t)it.rows * seq; i++) y[i] = it.target[i] >= 0 ? d->ids[it.target[i]] : -1;
        st = score_rows(m, it.x, y, it.rows, seq, &total, &scored);
        progress((it.w0 < it.w_end ? it.w0 : it.w_end) - lo, it.w_end - lo, scored);  // this rank's share
    }
    free(y);
    fk_eval_iter_free(&it);
    FK_TRY(dist_totals(st, &total, &scored));
    eval_result(total, scored, d->n > 0 ? (double)d->text_bytes / (double)d->n : 1.0, r);
    return FK_OK;
}

// The arguments fk_eval_llama_ppl refuses, with the reason.
static fk_status llama_ppl_check(const fk_model *m, const int32_t *ids, int64_t n, int n_ctx) {
    if (n_ctx < 4) return fk_error(FK_ERR_ARG, "llama-perplexity protocol: context %d is too short (at least 4)", n_ctx);
    if (n_ctx > m->cfg.max_seq)
        return fk_error(FK_ERR_ARG, "llama-perplexity protocol: context %d is longer than the model's %lld", n_ctx, (long long)m->cfg.max_seq);
    if (n < 2 * (int64_t)n_ctx)  // llama-perplexity's own requirement
        return fk_error(FK_ERR_ARG, "llama-perplexity protocol: the text has %lld tokens; a context of %d needs at least %lld", (long long)n,
                        n_ctx, 2 * (long long)n_ctx);
    for (int64_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= m->cfg.vocab_size)
            return fk_error(FK_ERR_ARG, "llama-perplexity protocol: token %lld has id %d outside the model's vocabulary of %lld", (long long)i,
                            ids[i], (long long)m->cfg.vocab_size);
    return FK_OK;
}

fk_status fk_eval_llama_ppl(fk_model *m, const int32_t *ids, int64_t n, int n_ctx, int32_t bos, int batch, int64_t text_bytes,
                            fk_eval_result *r) {
    memset(r, 0, sizeof *r);
    FK_TRY(llama_ppl_check(m, ids, n, n_ctx));
    if (batch < 1) batch = 1;
    int64_t n_chunk = n / n_ctx;
    int first = n_ctx / 2;
    int32_t *x = malloc((size_t)batch * (size_t)n_ctx * sizeof(int32_t)), *y = malloc((size_t)batch * (size_t)n_ctx * sizeof(int32_t));
    if (!x || !y) { free(x); free(y); return fk_error(FK_ERR_NOMEM, "out of memory"); }
    double total = 0;
    int64_t scored = 0;
    fk_status st = FK_OK;
    int64_t vocab_real = m->vocab_real;
    m->vocab_real = 0;  // llama.cpp's softmax is over every row of the LM head, padding included
    int64_t lo, hi;  // this rank's chunks
    fk_dist_range(n_chunk, &lo, &hi);
    for (int64_t c0 = lo; c0 < hi && st == FK_OK; c0 += batch) {
        int rows = (int)(hi - c0 < batch ? hi - c0 : batch);
        for (int b = 0; b < rows; b++) {
            const int32_t *c = ids + (c0 + b) * n_ctx;
            for (int t = 0; t < n_ctx; t++) {
                x[b * n_ctx + t] = t == 0 && bos >= 0 ? bos : c[t];
                y[b * n_ctx + t] = t >= first && t + 1 < n_ctx ? c[t + 1] : -1;
            }
        }
        st = score_rows(m, x, y, rows, n_ctx, &total, &scored);
        progress(c0 + rows - lo, hi - lo, scored);
    }
    m->vocab_real = vocab_real;
    free(x); free(y);
    FK_TRY(dist_totals(st, &total, &scored));
    eval_result(total, scored, text_bytes > 0 ? (double)text_bytes / (double)n : 0, r);
    return FK_OK;
}

// ------------------------------------------------------------------ KL to a reference

// Log-softmax of the first Vr of each of n rows of V logits, in place (the row kernel's float
// rounding); Vr < V: the rest are padding rows.
static void log_softmax_rows(float *x, int64_t n, int64_t V, int64_t Vr) {
    #pragma omp parallel for if (n * V > 65536)
    for (int64_t t = 0; t < n; t++) fk_row_log_softmax_exact(x + t * V, Vr);
}

// KL(p || q) of one position: logp, the reference's log-probabilities; z, the model's logits
// (read only: q's log-probabilities are z - lse(z), rounded as log_softmax_rows rounds them).
static double kl_row(const float *logp, const float *z, int64_t V) {
    float mx = fk_row_max_exact(z, V), lse = fk_lse_in_float(mx, fk_row_sumexp_exact(z, V, mx));
    double r = 0;
    for (int64_t v = 0; v < V; v++) r += exp((double)logp[v]) * ((double)logp[v] - (double)(z[v] - lse));
    return r;
}

fk_status fk_kl_probe_init(fk_model *m, const fk_token_data *d, int B, int T, fk_kl_probe *p) {
    memset(p, 0, sizeof *p);
    if (B < 1 || T < 2 || T > m->cfg.max_seq) return fk_error(FK_ERR_ARG, "KL probe: %d windows of %d tokens (context %lld)", B, T, (long long)m->cfg.max_seq);
    if (d->n < T) return fk_error(FK_ERR_ARG, "KL probe: %s has %lld tokens, fewer than one window of %d", d->path ? d->path : "the data", (long long)d->n, T);
    if (d->vocab_size > m->cfg.vocab_size)
        return fk_error(FK_ERR_ARG, "KL probe: the data's ids reach %lld, the model's vocabulary is %lld", (long long)d->vocab_size, (long long)m->cfg.vocab_size);
    p->B = B; p->T = T; p->V = m->cfg.vocab_size;
    p->tokens = malloc((size_t)B * T * sizeof *p->tokens);
    p->logp = malloc((size_t)B * T * p->V * sizeof *p->logp);
    if (!p->tokens || !p->logp) { fk_kl_probe_free(p); return fk_error(FK_ERR_NOMEM, "KL probe: out of memory (%d x %d x %lld)", B, T, (long long)p->V); }
    int64_t span = d->n - T;
    for (int b = 0; b < B; b++) {
        int64_t off = B > 1 ? span * b / (B - 1) : 0;
        memcpy(p->tokens + (int64_t)b * T, d->ids + off, (size_t)T * sizeof(int32_t));
    }
    fk_status st = fk_model_forward(m, p->tokens, NULL, B, T, false, NULL);
    if (st != FK_OK) { fk_kl_probe_free(p); return st; }
    memcpy(p->logp, fk_model_logits(m), (size_t)B * T * p->V * sizeof(float));
    log_softmax_rows(p->logp, (int64_t)B * T, p->V, p->V);
    return FK_OK;
}

fk_status fk_kl_probe_eval(fk_model *m, const fk_kl_probe *p, double *kl) {
    if (m->cfg.vocab_size != p->V) return fk_error(FK_ERR_ARG, "KL probe: vocabulary %lld, the probe's is %lld", (long long)m->cfg.vocab_size, (long long)p->V);
    FK_TRY(fk_model_forward(m, p->tokens, NULL, p->B, p->T, false, NULL));
    const float *z = fk_model_logits(m);
    int64_t n = (int64_t)p->B * p->T, V = p->V;
    double s = 0;
    #pragma omp parallel for reduction(+ : s) if (n * V > 65536)
    for (int64_t t = 0; t < n; t++) s += kl_row(p->logp + t * V, z + t * V, V);
    *kl = s / (double)n;
    if (!isfinite(*kl)) return fk_error(FK_ERR_NUMERIC, "KL probe: the KL to the original model is not finite (the model's outputs overflow)");
    return FK_OK;
}

void fk_kl_probe_free(fk_kl_probe *p) {
    free(p->tokens);
    free(p->logp);
    memset(p, 0, sizeof *p);
}

// The arguments fk_eval_kl refuses, with the reason.
static fk_status eval_kl_check(const fk_model *ref, const fk_model *m, const fk_token_data *d, int seq, int batch) {
    int64_t V = m->cfg.vocab_size;
    if (ref->cfg.vocab_size != V) return fk_error(FK_ERR_ARG, "KL: the models' vocabularies differ (%lld, %lld)", (long long)ref->cfg.vocab_size, (long long)V);
    if (d->n < 2) return fk_error(FK_ERR_ARG, "KL: %s has fewer than 2 tokens", d->path ? d->path : "the data");
    if (d->vocab_size > V) return fk_error(FK_ERR_ARG, "KL: %s has vocabulary %lld, the models %lld", d->path ? d->path : "the data", (long long)d->vocab_size, (long long)V);
    if (seq < 2 || seq > m->cfg.max_seq || seq > ref->cfg.max_seq || batch < 1) return fk_error(FK_ERR_ARG, "KL: window %d / batch %d", seq, batch);
    if (d->bos_first && d->bos_id >= V) return fk_error(FK_ERR_ARG, "KL: the tokenizer's BOS %d is outside the vocabulary of %lld", d->bos_id, (long long)V);
    return FK_OK;
}

fk_status fk_eval_kl(fk_model *ref, fk_model *m, const fk_token_data *d, int seq, int batch, int64_t max_tokens, double *kl) {
    *kl = NAN;
    FK_TRY(eval_kl_check(ref, m, d, seq, batch));
    int64_t V = m->cfg.vocab_size, Vr = fk_model_vocab_real(m);  // over m's tokens: its padding rows are no token
    fk_eval_windowing w = fk_eval_windowing_data(d, max_tokens, seq);  // the windows of fk_eval_data
    fk_eval_iter it;
    FK_TRY(fk_eval_iter_init(&it, &w, batch));
    float *lr = malloc((size_t)batch * seq * V * sizeof(float));
    fk_status st = lr ? FK_OK : fk_error(FK_ERR_NOMEM, "KL: out of memory");
    double total = 0;
    int64_t scored = 0, lo;
    iter_share(&it);
    lo = it.w0;
    while (st == FK_OK && fk_eval_iter_next(&it, d->ids)) {
        st = fk_model_forward(ref, it.x, NULL, it.rows, seq, false, NULL);
        if (st != FK_OK) break;
        int64_t N = (int64_t)it.rows * seq;
        memcpy(lr, fk_model_logits(ref), (size_t)(N * V) * sizeof(float));
        log_softmax_rows(lr, N, V, Vr);
        st = fk_model_forward(m, it.x, NULL, it.rows, seq, false, NULL);
        if (st != FK_OK) break;
        const float *z = fk_model_logits(m);
        for (int64_t i = 0; i < N; i++) {
            if (it.target[i] < 0) continue;  // scored positions only (a next token exists)
            total += kl_row(lr + i * V, z + i * V, Vr);
            scored++;
        }
        progress((it.w0 < it.w_end ? it.w0 : it.w_end) - lo, it.w_end - lo, scored);
    }
    free(lr);
    fk_eval_iter_free(&it);
    FK_TRY(dist_totals(st, &total, &scored));
    *kl = total / (double)scored;
    if (!isfinite(*kl)) return fk_error(FK_ERR_NUMERIC, "KL: not finite (a model's outputs overflow)");
    return FK_OK;
}
