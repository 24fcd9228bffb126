// Streaming redundancy statistics over a calibration text (fusekit/analyze.h, fold.md §1).
#include "fusekit/analyze.h"
#include "base/dist.h"
#include "fusekit/eval.h"
#include "fold/moe.h"
#include "fusekit/html.h"
#include "fusekit/safetensors.h"

#include <cblas.h>
#include <cjson/cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    fk_analysis *a;
    const fk_model *m;
    float *slots;      // (L+1) x N x C residual snapshots of the current batch
    double *hbuf;      // N x max(F, D) activations in double
    int64_t N, C;
    bool oom;
    fk_status st;      // the first failure inside the hook (MoE statistics)
} hook_ctx;

// G += h^T h (n x n, upper triangle), mean += column sums, over N rows of h (float).
static void gram_add(double *G, double *mean, double *hbuf, const float *h, int64_t N, int64_t n) {
    for (int64_t i = 0; i < N * n; i++) hbuf[i] = h[i];
    cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, (int)n, (int)N, 1.0, hbuf, (int)n, 1.0, G, (int)n);
    if (mean)
        for (int64_t t = 0; t < N; t++)
            for (int64_t j = 0; j < n; j++) mean[j] += hbuf[t * n + j];
}

static void on_layer(void *user, int layer, const float *resid, const float *att, const float *act, int64_t N) {
    hook_ctx *h = user;
    fk_analysis *a = h->a;
    if (N != h->N || h->oom) return;
    memcpy(h->slots + (int64_t)(layer + 1) * N * h->C, resid, (size_t)(N * h->C) * sizeof(float));
    if (layer < 0) return;
    if (a->experts && a->experts[layer] > 0 && h->st == FK_OK)  // x_l: the snapshot of the previous call
        h->st = fk_moe_stats_add(h->m, layer, h->slots + (int64_t)layer * N * h->C, att, N, a);
    if (act && a->ffn[layer] > 0) gram_add(a->ffn_gram[layer], a->ffn_mean[layer], h->hbuf, act, N, a->ffn[layer]);
    gram_add(a->att_gram[layer], NULL, h->hbuf, att, N, a->heads[layer] * a->head_dim);
}

static double cosine(const float *x, const float *y, int64_t C) {
    double xy = 0, xx = 0, yy = 0;
    for (int64_t i = 0; i < C; i++) { xy += (double)x[i] * y[i]; xx += (double)x[i] * x[i]; yy += (double)y[i] * y[i]; }
    double c = xx > 0 && yy > 0 ? xy / sqrt(xx * yy) : 1.0;
    return c > 1 ? 1 : c < -1 ? -1 : c;
}

// The residual statistics of one batch from the snapshots.
static fk_status residual_stats(hook_ctx *h, float *cross) {
    fk_analysis *a = h->a;
    int L = a->n_layer;
    int64_t N = h->N, C = h->C;
    for (int l = 0; l < L; l++)
        for (int n = 1; n <= a->max_n && l + n <= L; n++) {
            const float *x = h->slots + (int64_t)l * N * C, *y = h->slots + (int64_t)(l + n) * N * C;
            double cs = 0, as = 0;
            for (int64_t t = 0; t < N; t++) {
                double c = cosine(x + t * C, y + t * C, C);
                cs += c;
                as += acos(c) / M_PI;
            }
            if (n == 1) a->cos_sum[l] += cs;
            a->ang_sum[l * a->max_n + n - 1] += as;
        }
    // centre each snapshot's columns, then HSIC(X, Y) = ||Xc^T Yc||_F^2
    double *hx = malloc((size_t)(L + 1) * sizeof *hx);
    if (!hx) return fk_error(FK_ERR_NOMEM, "out of memory");
    for (int l = 0; l <= L; l++) {
        float *x = h->slots + (int64_t)l * N * C;
        for (int64_t j = 0; j < C; j++) {
            double s = 0;
            for (int64_t t = 0; t < N; t++) s += x[t * C + j];
            float mu = (float)(s / (double)N);
            for (int64_t t = 0; t < N; t++) x[t * C + j] -= mu;
        }
    }
    for (int l = 0; l <= L; l++) {
        for (int r = 0; r < 2 && (r == 0 || l < L); r++) {
            const float *x = h->slots + (int64_t)l * N * C, *y = h->slots + (int64_t)(l + r) * N * C;
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)C, (int)C, (int)N, 1.0f, x, (int)C, y, (int)C, 0.0f, cross, (int)C);
            double s = 0;
            for (int64_t i = 0; i < C * C; i++) s += (double)cross[i] * cross[i];
            if (r == 0) hx[l] = s;
            else a->hsic_xy[l] += s;
        }
    }
    for (int l = 0; l < L; l++) { a->hsic_xx[l] += hx[l]; a->hsic_yy[l] += hx[l + 1]; }
    free(hx);
    return FK_OK;
}

void fk_analysis_free(fk_analysis *a) {
    for (int l = 0; l < a->n_layer; l++) {
        if (a->ffn_mean) free(a->ffn_mean[l]);
        if (a->ffn_gram) free(a->ffn_gram[l]);
        if (a->att_gram) free(a->att_gram[l]);
    }
    free(a->ffn_mean); free(a->ffn_gram); free(a->att_gram); free(a->ffn); free(a->heads);
    free(a->bi); free(a->angular); free(a->cka); free(a->head_energy); free(a->head_sim);
    free(a->cos_sum); free(a->ang_sum); free(a->hsic_xy); free(a->hsic_xx); free(a->hsic_yy);
    fk_moe_stats_free(a);
    memset(a, 0, sizeof *a);
}

static void symmetrize(double *G, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < i; j++) G[i * n + j] = G[j * n + i];
}

// The analysis's arrays for model config c (zeroed); *maxF: the widest FFN or attention
// output, for the activation buffer.
static bool analysis_alloc(fk_analysis *a, const fk_config *c, int max_n, int64_t *maxF) {
    int L = a->n_layer;
    int64_t H = c->n_head;
    *maxF = c->n_head * c->head_dim;
    bool ok = true;
#define A(field, count) ok = ok && (a->field = calloc((size_t)(count), sizeof *a->field)) != NULL
    A(bi, L); A(angular, L * max_n); A(cka, L); A(ffn, L); A(ffn_mean, L); A(ffn_gram, L); A(att_gram, L);
    A(head_energy, L * H); A(head_sim, L * H * H); A(cos_sum, L); A(ang_sum, L * max_n);
    A(hsic_xy, L); A(hsic_xx, L); A(hsic_yy, L); A(heads, L);
#undef A
    for (int l = 0; ok && l < L; l++) {
        a->ffn[l] = c->ffn[l];
        if (ok) a->heads[l] = fk_config_heads(c, l);
        int64_t Dl = fk_config_heads(c, l) * c->head_dim;
        if (c->ffn[l] > *maxF) *maxF = c->ffn[l];
        int64_t F1 = c->ffn[l] > 0 ? c->ffn[l] : 1;  // (an MoE layer may have no dense FFN)
        ok = ok && (a->ffn_mean[l] = calloc((size_t)F1, sizeof(double))) && (a->ffn_gram[l] = calloc((size_t)(F1 * F1), sizeof(double))) &&
             (a->att_gram[l] = calloc((size_t)(Dl * Dl), sizeof(double)));
    }
    return ok && fk_moe_stats_alloc(a, c);
}

// Every sum the batches add to, summed over the ranks of an MPI run (in place, on every rank).
static void sum_over_ranks(fk_analysis *a, int L) {
    int max_n = a->max_n;
    fk_dist_sum_i64(&a->tokens, 1);
    fk_dist_sum_f64(a->cos_sum, L);
    fk_dist_sum_f64(a->ang_sum, L * max_n);
    fk_dist_sum_f64(a->hsic_xy, L);
    fk_dist_sum_f64(a->hsic_xx, L);
    fk_dist_sum_f64(a->hsic_yy, L);
    for (int l = 0; l < L; l++) {
        int64_t F = a->ffn[l] > 0 ? a->ffn[l] : 1, D = a->heads[l] * a->head_dim;
        fk_dist_sum_f64(a->ffn_mean[l], (int)F);
        fk_dist_sum_f64(a->ffn_gram[l], (int)(F * F));
        fk_dist_sum_f64(a->att_gram[l], (int)(D * D));
        if (a->experts && a->experts[l] > 0) {
            int64_t E = a->experts[l];
            fk_dist_sum_f64(a->expert_load[l], (int)E);
            fk_dist_sum_f64(a->expert_usage[l], (int)E);
            fk_dist_sum_f64(a->expert_gram[l], (int)(E * E));
        }
    }
}

// Runs the model over `windows` windows of seq tokens (of `all` in d), `rows` at a time,
// accumulating the statistics through the layer hook. ok: analysis_alloc succeeded.
static fk_status analyze_windows(fk_model *m, const fk_token_data *d, int seq, int rows, int64_t windows, int64_t all,
                                 int64_t maxF, bool ok, fk_analysis *a) {
    int L = a->n_layer;
    int64_t C = m->cfg.d_model;
    hook_ctx h = {a, m, NULL, NULL, (int64_t)rows * seq, C, false, FK_OK};
    h.slots = ok ? malloc((size_t)((L + 1) * h.N * C) * sizeof(float)) : NULL;
    h.hbuf = ok ? malloc((size_t)(h.N * maxF) * sizeof(double)) : NULL;
    float *cross = malloc((size_t)(C * C) * sizeof(float));
    int32_t *x = malloc((size_t)h.N * sizeof(int32_t));
    fk_status st = ok && h.slots && h.hbuf && cross && x ? FK_OK : fk_error(FK_ERR_NOMEM, "analyze: out of memory");
    m->hook = on_layer;
    m->hook_user = &h;
    // whole batches of `rows` windows only, so every forward has the same shape; under mpirun
    // each rank a contiguous share of them, the sums added over the ranks at the end
    int64_t batches = windows / rows, lo, hi;
    fk_dist_range(batches, &lo, &hi);
    for (int64_t b = lo; b < hi && st == FK_OK; b++) {
        // windows spread evenly over the whole text, so a limit still sees all of it
        for (int r = 0; r < rows; r++) {
            int64_t w = (b * rows + r) * all / (batches * rows);
            memcpy(x + (int64_t)r * seq, d->ids + w * seq, (size_t)seq * sizeof(int32_t));
        }
        st = fk_model_forward(m, x, NULL, rows, seq, false, NULL);
        if (st == FK_OK) st = h.st;
        if (st == FK_OK) st = residual_stats(&h, cross);
        a->tokens += h.N;
        fk_eval_progress_report((b + 1 - lo) * rows, (hi - lo) * rows, a->tokens);  // this rank's share
    }
    m->hook = NULL;
    m->hook_user = NULL;
    free(h.slots); free(h.hbuf); free(cross); free(x);
    st = fk_dist_agree(st);
    if (st == FK_OK && fk_dist_size() > 1) sum_over_ranks(a, L);
    return st;
}

// Layer l's head similarity through W_O (C x D): S_hg = sum_{i in h, j in g} Z_ij (W^T W)_ij,
// the heads' energies (the diagonal over T tokens), then S normalised by the energies.
static fk_status head_similarity(const fk_model *m, fk_analysis *a, int l, double T) {
    int64_t C = m->cfg.d_model, H = a->n_head, Hl = a->heads[l], D = Hl * a->head_dim;
    // W_O as f32 (decoded when the model reads it as stored)
    const fk_param *po = fk_model_param_of(m, m->layer[l].o_w);
    float *W = malloc((size_t)(C * D) * sizeof(float));
    double *WtW = calloc((size_t)(D * D), sizeof(double));
    fk_status st = W && WtW && po ? FK_OK : fk_error(FK_ERR_NOMEM, "analyze: out of memory");
    if (st == FK_OK) st = fk_model_read_rows(m, (int)(po - m->params), 0, C, W);
    if (st != FK_OK) { free(W); free(WtW); return st; }
    for (int64_t r = 0; r < C; r++)
        for (int64_t i = 0; i < D; i++) {
            double wi = W[r * D + i];
            for (int64_t j = 0; j < D; j++) WtW[i * D + j] += wi * W[r * D + j];
        }
    int64_t hd = a->head_dim;
    double *S = a->head_sim + (int64_t)l * H * H;
    for (int64_t p = 0; p < Hl; p++)
        for (int64_t q = 0; q < Hl; q++) {
            double s = 0;
            for (int64_t i = p * hd; i < (p + 1) * hd; i++)
                for (int64_t j = q * hd; j < (q + 1) * hd; j++) s += a->att_gram[l][i * D + j] * WtW[i * D + j];
            S[p * H + q] = s;
        }
    for (int64_t p = 0; p < Hl; p++) a->head_energy[l * H + p] = S[p * H + p] / T;
    double *e = malloc((size_t)H * sizeof *e);
    if (e) {
        for (int64_t p = 0; p < Hl; p++) e[p] = S[p * H + p];
        for (int64_t p = 0; p < Hl; p++)
            for (int64_t q = 0; q < Hl; q++) S[p * H + q] = e[p] > 0 && e[q] > 0 ? S[p * H + q] / sqrt(e[p] * e[q]) : 0;
        free(e);
    }
    free(WtW);
    free(W);
    return FK_OK;
}

// The sums over T tokens become layer l's means: block influence, angular distances, CKA,
// the FFN means and the symmetric Gram matrices, then the head similarity.
static fk_status finish_layer(const fk_model *m, fk_analysis *a, int l, double T) {
    int L = a->n_layer, max_n = a->max_n;
    a->bi[l] = 1 - a->cos_sum[l] / T;
    for (int n = 1; n <= max_n; n++) a->angular[l * max_n + n - 1] = l + n <= L ? a->ang_sum[l * max_n + n - 1] / T : NAN;
    a->cka[l] = a->hsic_xx[l] > 0 && a->hsic_yy[l] > 0 ? a->hsic_xy[l] / sqrt(a->hsic_xx[l] * a->hsic_yy[l]) : NAN;
    int64_t F = a->ffn[l], D = a->heads[l] * a->head_dim;
    symmetrize(a->ffn_gram[l], F);
    symmetrize(a->att_gram[l], D);
    for (int64_t j = 0; j < F; j++) a->ffn_mean[l][j] /= T;
    fk_moe_stats_finish(a, l, m->cfg.n_expert_used);
    return head_similarity(m, a, l, T);
}

fk_status fk_analyze(fk_model *m, const fk_token_data *d, int seq, int batch, int64_t max_tokens, int max_n, fk_analysis *a) {
    memset(a, 0, sizeof *a);
    const fk_config *c = &m->cfg;
    int L = (int)c->n_layer;
    if (seq < 2 || seq > c->max_seq || batch < 1)
        return fk_error(FK_ERR_ARG, "analyze: seq must be 2..%lld and batch positive (got %d, %d)", (long long)c->max_seq, seq, batch);
    if (max_n < 1 || max_n > L) return fk_error(FK_ERR_ARG, "analyze: the angular distance span must be 1..%d (got %d)", L, max_n);
    if (d->vocab_size > c->vocab_size)
        return fk_error(FK_ERR_ARG, "analyze: %s has vocabulary %lld, the model %lld", d->path ? d->path : "data", (long long)d->vocab_size,
                        (long long)c->vocab_size);
    int64_t all = d->n / seq, windows = all;
    if (max_tokens > 0 && windows > (max_tokens + seq - 1) / seq) windows = (max_tokens + seq - 1) / seq;
    if (windows < 1) return fk_error(FK_ERR_ARG, "analyze: %s has %lld tokens, fewer than one window of %d", d->path ? d->path : "data", (long long)d->n, seq);
    a->n_layer = L;
    a->max_n = max_n;
    a->n_head = (int)c->n_head;
    a->head_dim = (int)c->head_dim;
    int64_t maxF;
    bool ok = analysis_alloc(a, c, max_n, &maxF);
    int rows = (int)(windows < batch ? windows : batch);
    fk_status st = analyze_windows(m, d, seq, rows, windows, all, maxF, ok, a);
    for (int l = 0; l < L && st == FK_OK; l++) st = finish_layer(m, a, l, (double)a->tokens);
    if (st != FK_OK) fk_analysis_free(a);
    return st;
}

// ------------------------------------------------------------------ analysis.html
// A self-contained page (inline SVG, no scripts, no network): block influence and CKA per
// layer, the angular-distance heatmap, per-layer histograms of the FFN neurons' |correlation|,
// and each layer's head-similarity heatmap.

// MoE layers: each layer's expert load (share of the routing choices) and the cosine similarity
// of its experts' outputs (candidates to merge).
static void write_html_experts(fk_sbuf *b, const fk_analysis *a) {
    if (!a->experts) return;
    fk_sb(b, "<h3>Experts: load (share of the routing choices) and cosine similarity of their outputs, per MoE layer</h3>");
    for (int l = 0; l < a->n_layer; l++) {
        int64_t E = a->experts[l];
        if (E == 0) continue;
        double mx = 0;
        for (int64_t e = 0; e < E; e++) mx = fmax(mx, a->expert_load[l][e]);
        char t[48];
        snprintf(t, sizeof t, "layer %d: expert load", l);
        fk_sb(b, "<div class='l'>");
        fk_svg_bars(b, t, a->expert_load[l], (int)E, mx, NULL);
        snprintf(t, sizeof t, "layer %d: expert similarity", l);
        fk_svg_heatmap(b, t, a->expert_sim[l], (int)E, (int)E, E <= 16 ? 14 : E <= 64 ? 6 : 3, 0, 1, "expert", 0, "expert", 0);
        fk_sb(b, "</div>");
    }
}

static fk_status write_html(const fk_analysis *a, const char *dir) {
    fk_sbuf b = {0};
    int L = a->n_layer, H = a->n_head;
    fk_sb(&b, "<!DOCTYPE html><html><head><meta charset='utf-8'/><title>fusekit analyze</title>"
           "<style>body{font-family:sans-serif;margin:20px;max-width:1100px}h3{margin:18px 0 4px}"
           "div.l{display:inline-block;margin-right:16px;vertical-align:top}</style></head><body>");
    fk_sb(&b, "<h1>Redundancy analysis</h1><p>%d layers, %lld positions. Hover a cell or bar for its value. Low block influence, "
           "small angular distance and CKA near 1 mark layers that change the residual stream little (candidates to drop or "
           "merge); FFN neurons with high |correlation| and heads with similar contributions are candidates to fold.</p>",
       L, (long long)a->tokens);
    if (a->model_path || a->data_path) {
        fk_sb(&b, "<p>Model <code>");
        fk_sb_text(&b, a->model_path ? a->model_path : "(not given)");
        fk_sb(&b, "</code>, calibration text <code>");
        fk_sb_text(&b, a->data_path ? a->data_path : "(not given)");
        fk_sb(&b, "</code>.</p>");
    }
    double mx = 0;
    for (int l = 0; l < L; l++) mx = fmax(mx, a->bi[l]);
    fk_svg_bars(&b, "Block influence 1 − cos(x<sub>l</sub>, x<sub>l+1</sub>) per layer", a->bi, L, mx, NULL);
    fk_svg_bars(&b, "Linear CKA between x<sub>l</sub> and x<sub>l+1</sub>", a->cka, L, 1.0, NULL);
    double amx = 0;
    for (int i = 0; i < L * a->max_n; i++) if (isfinite(a->angular[i])) amx = fmax(amx, a->angular[i]);
    double *scaled = malloc((size_t)(L * a->max_n) * sizeof *scaled);
    if (!scaled) { fk_sb_free(&b); return fk_error(FK_ERR_NOMEM, "out of memory"); }
    for (int i = 0; i < L * a->max_n; i++) scaled[i] = amx > 0 ? a->angular[i] / amx : a->angular[i];
    char t[160];
    snprintf(t, sizeof t, "Angular distance d(l, l+n) (rows: layer l, columns: n = 1..%d; darkest = %.3g)", a->max_n, amx);
    fk_svg_heatmap(&b, t, scaled, L, a->max_n, 22, 0, 1, "layer", 0, "n", 1);
    free(scaled);
    fk_sb(&b, "<h3>FFN neurons: histogram of |correlation| between pairs, per layer</h3>");
    for (int l = 0; l < L; l++) {
        int64_t F = a->ffn[l];
        double hist[20] = {0}, total = 0, T = (double)a->tokens;
        for (int64_t i = 0; i < F; i++)
            for (int64_t j = i + 1; j < F; j++) {
                double vi = a->ffn_gram[l][i * F + i] / T - a->ffn_mean[l][i] * a->ffn_mean[l][i];
                double vj = a->ffn_gram[l][j * F + j] / T - a->ffn_mean[l][j] * a->ffn_mean[l][j];
                if (!(vi > 1e-12 && vj > 1e-12)) continue;
                double r = fabs((a->ffn_gram[l][i * F + j] / T - a->ffn_mean[l][i] * a->ffn_mean[l][j]) / sqrt(vi * vj));
                int k = (int)(r * 20);
                hist[k > 19 ? 19 : k] += 1;
                total += 1;
            }
        double hm = 0;
        for (int k = 0; k < 20; k++) hm = fmax(hm, hist[k]);
        fk_sb(&b, "<div class='l'><svg width='150' height='104' xmlns='http://www.w3.org/2000/svg' font-family='sans-serif'>");
        // axes: |r| from 0 to 1 along x, pairs up to the tallest bar's count along y
        fk_sb(&b, "<line x1='4' y1='65' x2='126' y2='65' stroke='#999'/><text x='2' y='76' font-size='8'>0</text>"
                  "<text x='62' y='76' font-size='8'>0.5</text><text x='120' y='76' font-size='8'>1</text>"
                  "<text x='128' y='68' font-size='8'>|r|</text><text x='4' y='3' font-size='8' dominant-baseline='hanging'>%.0f pairs</text>", hm);
        for (int k = 0; k < 20; k++) {
            double bh = hm > 0 ? 60 * hist[k] / hm : 0;
            fk_sb(&b, "<rect x='%d' y='%.1f' width='5' height='%.1f' fill='#b0604a'><title>|r| %.2f-%.2f: %.0f pairs</title></rect>", 5 + 6 * k,
               65 - bh, bh, k / 20.0, (k + 1) / 20.0, hist[k]);
        }
        fk_sb(&b, "<text x='5' y='96' font-size='10'>layer %d (%lld neurons)</text></svg></div>", l, (long long)F);
        (void)total;
    }
    fk_sb(&b, "<h3>Attention heads: cosine similarity of their contributions through W<sub>O</sub>, per layer</h3>");
    int cell = H <= 8 ? 14 : H <= 16 ? 8 : 4;
    for (int l = 0; l < L; l++) {
        fk_sb(&b, "<div class='l'>");
        char tt[32];
        snprintf(tt, sizeof tt, "layer %d", l);
        fk_svg_heatmap(&b, tt, a->head_sim + (int64_t)l * H * H, H, H, cell, 0, 1, "head", 0, "head", 0);
        fk_sb(&b, "</div>");
    }
    write_html_experts(&b, a);
    fk_sb(&b, "</body></html>\n");
    return fk_sb_write_in(&b, dir, "analysis.html");
}

static cJSON *num_array(const double *v, int64_t n) {
    cJSON *arr = cJSON_CreateArray();
    for (int64_t i = 0; i < n; i++) cJSON_AddItemToArray(arr, isfinite(v[i]) ? cJSON_CreateNumber(v[i]) : cJSON_CreateNull());
    return arr;
}

fk_status fk_analysis_save(const fk_analysis *a, const char *dir) {
    FK_TRY(fk_mkdir_p(dir));
    int L = a->n_layer;
    int64_t H = a->n_head;
    cJSON *j = cJSON_CreateObject(), *layers = cJSON_AddArrayToObject(j, "layers");
    cJSON_AddNumberToObject(j, "tokens", (double)a->tokens);
    cJSON_AddNumberToObject(j, "n_layer", L);
    cJSON_AddNumberToObject(j, "max_n", a->max_n);
    for (int l = 0; l < L; l++) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "layer", l);
        cJSON_AddNumberToObject(o, "block_influence", a->bi[l]);
        cJSON_AddItemToObject(o, "angular_distance", num_array(a->angular + (int64_t)l * a->max_n, a->max_n));
        if (isfinite(a->cka[l])) cJSON_AddNumberToObject(o, "cka_next", a->cka[l]);
        int64_t F = a->ffn[l];
        // FFN summary: activation energy per neuron (diag G / T) and the mean |correlation|
        double e_sum = 0, dead = 0;
        for (int64_t i = 0; i < F; i++) {
            double var = a->ffn_gram[l][i * F + i] / (double)a->tokens - a->ffn_mean[l][i] * a->ffn_mean[l][i];
            e_sum += a->ffn_gram[l][i * F + i] / (double)a->tokens;
            if (var < 1e-12) dead++;
        }
        cJSON *ffn = cJSON_AddObjectToObject(o, "ffn");
        cJSON_AddNumberToObject(ffn, "width", (double)F);
        cJSON_AddNumberToObject(ffn, "mean_energy", F > 0 ? e_sum / (double)F : 0);
        cJSON_AddNumberToObject(ffn, "constant_neurons", dead);
        cJSON *att = cJSON_AddObjectToObject(o, "attention");
        cJSON_AddItemToObject(att, "head_energy", num_array(a->head_energy + (int64_t)l * H, H));
        cJSON_AddItemToObject(o, "attention_head_similarity", num_array(a->head_sim + (int64_t)l * H * H, H * H));
        if (a->experts && a->experts[l] > 0) {
            int64_t E = a->experts[l];
            cJSON *moe = cJSON_AddObjectToObject(o, "experts");
            cJSON_AddNumberToObject(moe, "count", (double)E);
            cJSON_AddItemToObject(moe, "load", num_array(a->expert_load[l], E));
            cJSON_AddItemToObject(moe, "usage", num_array(a->expert_usage[l], E));
            cJSON_AddItemToObject(moe, "similarity", num_array(a->expert_sim[l], E * E));
        }
        cJSON_AddItemToArray(layers, o);
    }
    FK_TRY(fk_json_write_in(dir, "analysis.json", j));
    // the matrices, for clustering and folding
    fk_st_entry *e = calloc((size_t)(6 * L), sizeof *e);
    char (*names)[48] = calloc((size_t)(6 * L), sizeof *names);
    if (!e || !names) { free(e); free(names); return fk_error(FK_ERR_NOMEM, "out of memory"); }
    int n = 0;
    for (int l = 0; l < L; l++) {
        int64_t F = a->ffn[l], E = a->experts ? a->experts[l] : 0;
        const struct { const char *name; const double *data; int ndim; int64_t d0, d1; } t[6] = {
            {"ffn_gram", a->ffn_gram[l], 2, F, F}, {"ffn_mean", a->ffn_mean[l], 1, F, 0},
            {"att_gram", a->att_gram[l], 2, a->heads[l] * a->head_dim, a->heads[l] * a->head_dim}, {"head_sim", a->head_sim + (int64_t)l * H * H, 2, H, H},
            {"expert_gram", E ? a->expert_gram[l] : NULL, 2, E, E}, {"expert_usage", E ? a->expert_usage[l] : NULL, 1, E, 0}};
        for (int k = 0; k < 6; k++, n++) {
            if (t[k].d0 == 0) { n--; continue; }  // no dense FFN (an MoE layer), no experts (a dense layer)
            snprintf(names[n], sizeof names[0], "%s.%d", t[k].name, l);
            e[n].name = names[n];
            e[n].dtype = FK_DT_F64;
            e[n].ndim = t[k].ndim;
            e[n].shape[0] = t[k].d0;
            e[n].shape[1] = t[k].d1;
            e[n].data = t[k].data;
        }
    }
    char meta[96];
    snprintf(meta, sizeof meta, "{\"tokens\":\"%lld\",\"format\":\"fusekit-analysis-1\"}", (long long)a->tokens);
    char *sp = fk_path_join(dir, "stats.safetensors");
    fk_status st = sp ? fk_st_write(sp, e, n, meta) : fk_error(FK_ERR_NOMEM, "out of memory");
    free(sp); free(e); free(names);
    if (st == FK_OK) st = write_html(a, dir);
    return st;
}
