// Extraction (fusion.md §1): a source model's top-k next-token distributions over a corpus,
// written to a distribution store (fusekit/store.h). Also the model and corpus fingerprints
// that stores record.
#include "fusekit/data.h"
#include "fusekit/extract.h"
#include "fusekit/gpu.h"

#include "base/dist.h"

#include <math.h>
#include "base/par.h"
#include <stdlib.h>
#include <string.h>

#include "nn/rowops.h"

// ------------------------------------------------------------------ fingerprints
// 64-bit words mixed by multiply-rotate, in chunks of 1 MiB hashed independently (in
// parallel) and combined in order, so the result does not depend on the thread count.

#define FP_CHUNK ((size_t)1 << 20)

static inline uint64_t rotl64(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }

static uint64_t hash_bytes(const void *data, size_t n, uint64_t seed) {
    const uint8_t *p = data;
    uint64_t h = seed ^ 0x9E3779B97F4A7C15ull;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, p + i, 8);
        h = rotl64(h ^ (w * 0x87C37B91114253D5ull), 31) * 0x4CF5AD432745937Full;
    }
    uint64_t w = 0;
    for (size_t j = 0; i + j < n; j++) w |= (uint64_t)p[i + j] << (8 * j);
    h = rotl64(h ^ (w * 0x87C37B91114253D5ull), 31) * 0x4CF5AD432745937Full;
    return fk_hash64(h ^ (uint64_t)n);
}

static uint64_t hash_chunked(const void *data, size_t n, uint64_t seed) {
    size_t nch = n / FP_CHUNK + 1;
    uint64_t *hc = malloc(nch * sizeof(uint64_t));
    uint64_t h = fk_hash64(seed ^ (uint64_t)n);
    if (!hc) {  // no memory for the chunk hashes: the same values, one after another
        for (size_t c = 0; c < nch; c++) {
            size_t off = c * FP_CHUNK, len = n - off < FP_CHUNK ? n - off : FP_CHUNK;
            h = fk_hash64(h + hash_bytes((const uint8_t *)data + off, len, c));
        }
        return h;
    }
    #pragma omp parallel for schedule(static) if (nch > 4)
    for (size_t c = 0; c < nch; c++) {
        size_t off = c * FP_CHUNK, len = n - off < FP_CHUNK ? n - off : FP_CHUNK;
        hc[c] = hash_bytes((const uint8_t *)data + off, len, c);
    }
    for (size_t c = 0; c < nch; c++) h = fk_hash64(h + hc[c]);
    free(hc);
    return h;
}

uint64_t fk_corpus_fingerprint(const void *data, size_t n) { return hash_chunked(data, n, 0xC0A9A5ull); }

// The config's fields in a frozen layout (not FK_CONFIG_FIELDS: these hashes key caches on disk).
// Per-layer query heads need no field of their own: each entry's name and shape is hashed below,
// and a layer's heads set its qkv and o shapes.
uint64_t fk_model_fingerprint(const fk_model *m) {
    const fk_config *c = &m->cfg;
    uint64_t f[48 + FK_MAX_LAYERS];
    int n = 0;
    uint32_t eps, theta;
    memcpy(&eps, &c->norm_eps, 4);
    memcpy(&theta, &c->rope_theta, 4);
    f[n++] = (uint64_t)c->vocab_size; f[n++] = (uint64_t)c->d_model; f[n++] = (uint64_t)c->n_layer;
    f[n++] = (uint64_t)c->n_head; f[n++] = (uint64_t)c->n_kv_head; f[n++] = (uint64_t)c->head_dim;
    f[n++] = (uint64_t)c->max_seq; f[n++] = (uint64_t)c->norm; f[n++] = eps; f[n++] = (uint64_t)c->pos;
    f[n++] = theta; f[n++] = (uint64_t)c->mlp;
    f[n++] = (uint64_t)c->bias_qkv | (uint64_t)c->bias_out << 1 | (uint64_t)c->bias_mlp << 2 | (uint64_t)c->bias_norm << 3 |
             (uint64_t)c->tied << 4;
    for (int64_t l = 0; l < c->n_layer && l < FK_MAX_LAYERS; l++) f[n++] = (uint64_t)c->ffn[l];
    // the Gemma switches, when any is on (other models keep the fingerprints they had)
    const float sw[] = {c->emb_scale, c->norm_offset, c->attn_scale, c->attn_softcap, c->final_softcap, c->rope_theta_local,
                        c->rope_scale};
    uint64_t slide[FK_MAX_LAYERS / 64] = {0};
    bool any = c->sliding_window != 0 || c->post_norms || c->qk_norm;
    for (size_t k = 0; k < sizeof sw / sizeof sw[0]; k++) any |= sw[k] != 0;
    for (int64_t l = 0; l < c->n_layer && l < FK_MAX_LAYERS; l++)
        if (c->sliding[l]) { slide[l / 64] |= 1ull << (l % 64); any = true; }
    if (any) {
        f[n++] = 0x6E33A;  // marks the switches' block
        for (size_t k = 0; k < sizeof sw / sizeof sw[0]; k++) {
            uint32_t b;
            memcpy(&b, &sw[k], 4);
            f[n++] = b;
        }
        f[n++] = (uint64_t)c->sliding_window;
        f[n++] = (uint64_t)c->post_norms | (uint64_t)c->qk_norm << 1;
        for (size_t k = 0; k < sizeof slide / sizeof slide[0]; k++) f[n++] = slide[k];
    }
    if (c->gelu_exact) f[n++] = 0xE6E1u;  // exact GELU (tanh-GELU models keep their fingerprints)
    if (c->qk_norm_ln) f[n++] = 0x9C1Bu;  // QK-norm as a LayerNorm per head (StableLM 2 12B)
    if (c->alibi_bias_max > 0 || c->clip_qkv > 0) {  // ALiBi, clip_qkv (MPT)
        uint32_t ab, cq;
        memcpy(&ab, &c->alibi_bias_max, 4);
        memcpy(&cq, &c->clip_qkv, 4);
        f[n++] = 0xA11B1ull << 32 | ab;
        f[n++] = cq;
    }
    if (c->pos == FK_POS_ROPE && fk_config_rotary_dim(c) != c->head_dim)  // partial rotary (whole-head RoPE models keep theirs)
        f[n++] = 0x20DA0000u | (uint64_t)c->rotary_dim;
    if (c->rope_ext != FK_ROPE_EXT_NONE) {  // dynamic/yarn/longrope (other models keep theirs): its fields and factors
        float v[] = {c->rope_ext_factor, c->rope_attn_factor, c->rope_beta_fast, c->rope_beta_slow};
        uint64_t h = hash_bytes(v, sizeof v, 6) ^ hash_bytes(c->rope_short, (size_t)c->rope_n_factors * sizeof(float), 7) ^
                     fk_hash64(hash_bytes(c->rope_long, (size_t)c->rope_n_factors * sizeof(float), 8));
        f[n++] = 0x20E0000ull << 32 | (uint64_t)c->rope_ext << 8 | (uint64_t)c->rope_yarn_no_trunc;
        f[n++] = (uint64_t)c->rope_ext_ctx;
        f[n++] = h;
    }
    if (c->residual != FK_RESID_SEQUENTIAL || c->bias_lm_head) f[n++] = 0x9A7A0u | (uint64_t)c->residual << 1 | c->bias_lm_head;
    if (c->n_expert > 0) f[n++] = 0x30E0ull << 40 | (uint64_t)c->n_expert_used << 2 | (uint64_t)c->expert_norm << 1 | c->shared_gate;  // MoE
    if (m->vocab_real > 0) f[n++] = 0x9ADull << 40 | (uint64_t)m->vocab_real;  // padding rows masked (unpadded models keep theirs)
    uint64_t h = hash_bytes(f, (size_t)n * sizeof(uint64_t), 0x30DE1ull);
    for (int i = 0; i < m->n_params; i++) {
        const fk_param *p = &m->params[i];
        uint64_t shape[3] = {(uint64_t)p->ndim, (uint64_t)p->shape[0], (uint64_t)p->shape[1]};
        h = fk_hash64(h + hash_bytes(p->name, strlen(p->name), 1));
        h = fk_hash64(h + hash_bytes(shape, sizeof shape, 2));
        bool stored = false;
        for (int j = 0; j < m->n_stored; j++) {  // a frozen model's matrices: the bytes its file stores
            const fk_stored *s = &m->stored[j];
            if (s->param != i) continue;
            uint64_t seg[4] = {(uint64_t)s->row0, (uint64_t)s->rows, s->type, (uint64_t)s->rope_hd};
            h = fk_hash64(h + hash_bytes(seg, sizeof seg, 4));
            h = fk_hash64(h + hash_chunked(s->data, (size_t)s->rows * s->row_bytes, 5));
            stored = true;
        }
        if (!stored) h = fk_hash64(h + hash_chunked(m->w + p->offset, (size_t)p->numel * sizeof(float), 3));
    }
    return h;
}

// ------------------------------------------------------------------ one position

// The k largest of z (V values), largest first; equal values keep the lower id first. Returns
// how many (min(k, V), fewer if z holds NaNs). Blocks of 16 whose maximum cannot enter the
// current top-k are skipped after one vectorised pass, so a position costs about one read of z.
#define TOPK_BLOCK 16
static int top_k(const float *z, int64_t V, int k, int32_t *idx) {
    int n = 0;
    float thr = -INFINITY;
    for (int64_t b0 = 0; b0 < V; b0 += TOPK_BLOCK) {
        int64_t b1 = b0 + TOPK_BLOCK < V ? b0 + TOPK_BLOCK : V;
        if (n == k) {
            float bm = -INFINITY;
            #pragma omp simd reduction(max : bm)
            for (int64_t v = b0; v < b1; v++) bm = z[v] > bm ? z[v] : bm;
            if (!(bm > thr)) continue;
        }
        for (int64_t v = b0; v < b1; v++) {
            float x = z[v];
            if (n == k ? !(x > thr) : x != x) continue;
            int j = n < k ? n++ : k - 1;
            while (j > 0 && z[idx[j - 1]] < x) { idx[j] = idx[j - 1]; j--; }
            idx[j] = (int32_t)v;
            if (n == k) thr = z[idx[k - 1]];
        }
    }
    return n;
}

// Log-softmax top-k and cross-entropy of `label` from logits z: what the store keeps at a
// position. Returns false when the logits are not finite.
static bool position_dist(const float *z, int64_t V, int k, int32_t label, uint8_t *count, int32_t *ids, float *logp, float *ce) {
    int n = top_k(z, V, k, ids);
    if (n < 1) return false;
    float mx = z[ids[0]];  // top_k's first: the row's max
    float lse = fk_lse_in_float(mx, fk_row_sumexp_fast(z, V, mx));  // the fast kernel: stores stay as they were
    if (!isfinite(lse)) return false;
    for (int j = 0; j < n; j++) logp[j] = z[ids[j]] - lse;
    for (int j = n; j < k; j++) { ids[j] = -1; logp[j] = -INFINITY; }
    *count = (uint8_t)n;
    *ce = lse - z[label];
    return isfinite(*ce);
}

// ------------------------------------------------------------------ extraction

void fk_extract_defaults(fk_extract_opts *o) {
    o->k = 10;
    o->seq = 0;
    o->batch = 4;
    o->grid = FK_STORE_GRID_FINE;
    o->precision = FK_PRECISION_FP32;
    o->device = FK_DEVICE_CPU;
}

// Reads and encodes the corpus: ids and n+1 span starts.
static fk_status load_corpus(const fk_tokenizer *t, const char *path, int32_t **ids, int64_t **begin, int64_t *n, int64_t *bytes,
                             uint64_t *fp) {
    // a store keeps each token's span of the text (teachers are aligned by it): a shard has none
    if (fk_data_is_shard(path))
        return fk_error(FK_ERR_ARG, "%s is a token shard, not text: extraction needs the corpus as text (each token's span is kept to "
                        "align teachers); pass the text file the shard was made from", path);
    char *buf;
    size_t len;
    fk_tok_out o = {0};
    fk_status st = fk_tok_encode_file(t, path, 0, &o, &len, &buf);
    if (st != FK_OK) { fk_tok_out_free(&o); return st; }
    *fp = fk_corpus_fingerprint(buf, len);
    *bytes = (int64_t)len;
    free(buf);
    *n = o.n;
    *ids = o.ids ? o.ids : malloc(sizeof(int32_t));
    o.ids = NULL;
    *begin = malloc((size_t)(o.n + 1) * sizeof(int64_t));
    if (!*ids || !*begin) { free(*ids); free(*begin); fk_tok_out_free(&o); return fk_error(FK_ERR_NOMEM, "out of memory encoding %s", path); }
    for (int64_t i = 0; i < o.n; i++) {
        (*begin)[i] = o.begin[i];
        if (o.begin[i] != (i ? o.end[i - 1] : 0)) {
            fk_tok_out_free(&o);
            free(*ids); free(*begin);
            return fk_error(FK_ERR_FORMAT, "%s: the tokenizer's spans do not tile the text at token %lld", path, (long long)i);
        }
    }
    (*begin)[o.n] = (int64_t)len;
    fk_tok_out_free(&o);
    return FK_OK;
}

// The options with their defaults, checked against the model and the tokenizer. A tokenizer
// that adds BOS (Llama 2, Gemma, ...): every sequence is computed after BOS, as the model was
// trained to see text; BOS is context only, the positions stay the text's. *bos: that id, or
// -1; *lead: 1 with it.
static fk_status extract_opts(const fk_model *m, const fk_tokenizer *t, const fk_extract_opts *opts, fk_extract_opts *o,
                              int32_t *bos, int *lead) {
    fk_extract_defaults(o);
    if (opts) {
        if (opts->k > 0) o->k = opts->k;
        if (opts->seq > 0) o->seq = opts->seq;
        if (opts->batch > 0) o->batch = opts->batch;
        o->grid = opts->grid;
        o->precision = opts->precision;
        o->device = opts->device;
    }
    int64_t V = m->cfg.vocab_size;
    if (!t) return fk_error(FK_ERR_ARG, "extract: a tokenizer is required");
    *bos = fk_tok_adds_bos(t) ? fk_tok_bos(t) : -1;
    if (*bos >= V) *bos = -1;
    *lead = *bos >= 0 ? 1 : 0;
    if (o->seq <= 0) o->seq = (int)(m->cfg.max_seq - *lead < 512 ? m->cfg.max_seq - *lead : 512);
    if (o->k < 1 || o->k > FK_STORE_MAX_K) return fk_error(FK_ERR_ARG, "extract: k must be 1..%d (got %d)", FK_STORE_MAX_K, o->k);
    if (o->grid != FK_STORE_GRID_FINE && o->grid != FK_STORE_GRID_COMPACT)
        return fk_error(FK_ERR_ARG, "extract: store grid must be %d (fine) or %d (compact), got %d", FK_STORE_GRID_FINE, FK_STORE_GRID_COMPACT, o->grid);
    if (o->precision != FK_PRECISION_FP32 && o->precision != FK_PRECISION_BF16 && o->precision != FK_PRECISION_AUTO &&
        o->precision != FK_PRECISION_INT8)
        return fk_error(FK_ERR_ARG, "extract: precision must be fp32, bf16, auto or int8 (got %d)", (int)o->precision);
    if (o->precision == FK_PRECISION_INT8 && o->device == FK_DEVICE_CUDA)
        return fk_error(FK_ERR_ARG, "extract: --precision int8 runs on the CPU (the CUDA engine multiplies in bf16): drop --device cuda or --precision int8");
    if ((int64_t)o->seq + *lead > m->cfg.max_seq)
        return fk_error(FK_ERR_ARG, "extract: sequence length %d%s exceeds the model's context %lld", o->seq, *lead ? " (+ BOS)" : "",
                        (long long)m->cfg.max_seq);
    if (fk_tok_vocab_size(t) > V)
        return fk_error(FK_ERR_ARG, "extract: the tokenizer has %d tokens but the model's vocabulary only %lld", fk_tok_vocab_size(t), (long long)V);
    return FK_OK;
}

// A file already at out_path: *same when it is a complete store of this extraction (header h);
// another store, or no valid store, is refused unless restart (which replaces it).
static fk_status check_existing(const char *out_path, const fk_store_header *h, bool restart, bool *same) {
    *same = false;
    if (!fk_path_exists(out_path)) return FK_OK;
    fk_store *s = NULL;
    fk_status st = fk_store_open(out_path, &s);
    const char *diff = st == FK_OK ? fk_store_header_diff(fk_store_header_of(s), h) : NULL;
    fk_store_close(s);
    if (st == FK_OK && !diff) { *same = true; return FK_OK; }
    if (restart) return FK_OK;
    if (st != FK_OK) return fk_error_context(st, "%s is there but is not a valid store; restart (fusekit extract --restart) replaces it", out_path);
    return fk_error(FK_ERR_ARG, "%s holds another extraction (its %s differs); restart (fusekit extract --restart) replaces it", out_path, diff);
}

// One batch of the extraction: the corpus ids, the shapes, and the rows' buffers.
typedef struct {
    fk_model *m;
    const int32_t *ids;
    int64_t n_tokens, positions, V;
    int T, T1, lead, k;  // T1: the forward's length (BOS first)
    int32_t bos;
    int32_t *x;          // (B, T1) input ids
    fk_store_seq *q;     // B sequences
    fk_gpu *gpu;         // the CUDA engine's copy of m, or NULL
    int32_t *glab, *gids;  // with gpu: (B, T1) labels, (B, T1, k) ids, logp and (B, T1) cross-entropies
    float *glogp, *gce;
} extract_batch;

// The sequences' mean cross-entropies, from the rows computed in this call.
static void mean_ces(const extract_batch *e, int64_t c0, int rows, int64_t done_seqs) {
    for (int b = done_seqs > c0 ? (int)(done_seqs - c0) : 0; b < rows; b++) {
        double s = 0;
        for (int64_t tt = 0; tt < e->q[b].n; tt++) s += e->q[b].ce[tt];
        e->q[b].mean_ce = e->q[b].n > 0 ? s / (double)e->q[b].n : 0;
    }
}

// batch_dists on the CUDA engine (e->x filled): the top-k computed on the device, copied into the rows.
static fk_status batch_dists_gpu(const extract_batch *e, int64_t c0, int rows, int64_t done_seqs) {
    int T1 = e->T1, lead = e->lead, k = e->k;
    fk_store_seq *q = e->q;
    for (int64_t i = 0; i < (int64_t)rows * T1; i++) e->glab[i] = -1;
    for (int b = 0; b < rows; b++)
        for (int tt = 0; tt < q[b].n; tt++) e->glab[(int64_t)b * T1 + lead + tt] = e->ids[q[b].first + tt + 1];
    fk_status st = fk_gpu_topk(e->gpu, e->x, e->glab, rows, T1, k, e->gids, e->glogp, e->gce);
    if (st != FK_OK) return fk_error_context(st, "extract: sequences %lld..%lld", (long long)c0, (long long)(c0 + rows - 1));
    for (int b = done_seqs > c0 ? (int)(done_seqs - c0) : 0; b < rows; b++)
        for (int tt = 0; tt < q[b].n; tt++) {
            int64_t r = (int64_t)b * T1 + lead + tt;
            int n = 0;
            for (int j = 0; j < k; j++) {
                q[b].ids[(int64_t)tt * k + j] = e->gids[r * k + j];
                q[b].logp[(int64_t)tt * k + j] = e->glogp[r * k + j];
                n += e->gids[r * k + j] >= 0;
            }
            q[b].count[tt] = (uint8_t)n;
            q[b].ce[tt] = e->gce[r];
        }
    mean_ces(e, c0, rows, done_seqs);
    return FK_OK;
}

// Sequences c0 .. c0 + rows - 1 through the model: each position's top-k and cross-entropy into
// e->q[b], for the rows from done_seqs on (those before are on disk already).
static fk_status batch_dists(const extract_batch *e, int64_t c0, int rows, int64_t done_seqs) {
    int T = e->T, T1 = e->T1, lead = e->lead, k = e->k;
    int64_t V = e->V, Vr = fk_model_vocab_real(e->m);  // rows Vr.. are padding: never a stored id, no mass
    fk_store_seq *q = e->q;
    for (int b = 0; b < rows; b++) {
        int64_t off = (c0 + b) * T;
        if (lead) e->x[b * T1] = e->bos;
        for (int i = 0; i < T; i++) e->x[b * T1 + lead + i] = off + i < e->n_tokens ? e->ids[off + i] : 0;
        q[b].first = off;
        q[b].n = e->positions - off < T ? e->positions - off : T;
    }
    if (e->gpu) return batch_dists_gpu(e, c0, rows, done_seqs);
    FK_TRY(fk_model_forward(e->m, e->x, NULL, rows, T1, false, NULL));
    const float *logits = fk_model_logits(e->m);
    int64_t bad = -1;
    #pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < (int64_t)rows * T; i++) {
        int b = (int)(i / T), tt = (int)(i % T);
        if (c0 + b < done_seqs || tt >= q[b].n) continue;
        int64_t p = q[b].first + tt;
        if (!position_dist(logits + ((int64_t)b * T1 + lead + tt) * V, Vr, k, e->ids[p + 1], &q[b].count[tt], q[b].ids + (int64_t)tt * k,
                           q[b].logp + (int64_t)tt * k, &q[b].ce[tt])) {
            #pragma omp critical
            if (bad < 0 || p < bad) bad = p;
        }
    }
    if (bad >= 0) return fk_error(FK_ERR_NUMERIC, "extract: the logits at position %lld (token %lld) are not finite", (long long)bad, (long long)bad);
    mean_ces(e, c0, rows, done_seqs);
    return FK_OK;
}

// Progress reporting: the callback, and the run's start and positions so far.
typedef struct {
    fk_extract_cb cb;
    void *user;
    double t0;
    int64_t pos_run;
} extract_progress;

// Encodes the batch's rows b0 .. rows - 1 (sequences c0 + b) in parallel, then appends them in
// order; sequence 0 goes alone first (the others' encoding starts from the model prior it
// writes). *stop: the callback asked to stop (FK_OK).
static fk_status write_rows(fk_store_writer *w, fk_store_seq *q, fk_store_buf *rec, int b0, int rows, int64_t c0, int64_t n_seqs,
                            extract_progress *pg, bool *stop) {
    fk_status st = FK_OK;
    for (int lo = b0, hi; lo < rows && st == FK_OK; lo = hi) {
        hi = fk_store_writer_next(w) == 0 ? lo + 1 : rows;
        int failed = -1;  // the first row whose encoding failed (its message is per thread: encoded again below)
        #pragma omp parallel for schedule(dynamic, 1)
        for (int b = lo; b < hi; b++)
            if (fk_store_encode_seq(w, &q[b], &rec[b]) != FK_OK) {
                #pragma omp critical
                if (failed < 0 || b < failed) failed = b;
            }
        if (failed >= 0) {
            st = fk_store_encode_seq(w, &q[failed], &rec[failed]);
            return st == FK_OK ? fk_error(FK_ERR_NOMEM, "out of memory") : st;
        }
        for (int b = lo; b < hi; b++) {
            if ((st = fk_store_write_encoded(w, &rec[b])) != FK_OK) break;
            pg->pos_run += q[b].n;
            if (pg->cb) {
                double el = fk_time_s() - pg->t0;
                fk_extract_progress pr = {c0 + b + 1, n_seqs, q[b].first + q[b].n, el, el > 0 ? (double)pg->pos_run / el : 0};
                if (!pg->cb(&pr, pg->user)) { *stop = true; return FK_OK; }
            }
        }
    }
    return st;
}

// ------------------------------------------------------------------ ranks (mpirun)
// Under mpirun the ranks take the batches of a round in turn (rank r the r-th batch of R), and
// send the finished rows to rank 0, which writes every row in order: the same batches as one
// process, so the same store byte for byte. A row crosses as first, n (int64), mean_ce (double),
// count (n), ids (n k), logp (n k), ce (n).
static size_t row_bytes(int64_t n, int k) { return 24 + (size_t)n * (1 + 8 * (size_t)k + 4); }

static void pack_rows(uint8_t *p, const fk_store_seq *q, int b0, int rows, int k) {
    for (int b = b0; b < rows; b++) {
        size_t n = (size_t)q[b].n;
        memcpy(p, &q[b].first, 8); memcpy(p + 8, &q[b].n, 8); memcpy(p + 16, &q[b].mean_ce, 8);
        p += 24;
        memcpy(p, q[b].count, n); p += n;
        memcpy(p, q[b].ids, n * k * 4); p += n * k * 4;
        memcpy(p, q[b].logp, n * k * 4); p += n * k * 4;
        memcpy(p, q[b].ce, n * 4); p += n * 4;
    }
}

// Rows b0 .. rows - 1 from len bytes of another rank; each holds at most cap positions.
static fk_status unpack_rows(const uint8_t *p, size_t len, fk_store_seq *q, int b0, int rows, int k, int64_t cap) {
    const uint8_t *end = p + len;
    for (int b = b0; b < rows; b++) {
        if ((size_t)(end - p) < 24) return fk_error(FK_ERR_IO, "extract: a rank's rows are cut short");
        memcpy(&q[b].first, p, 8); memcpy(&q[b].n, p + 8, 8); memcpy(&q[b].mean_ce, p + 16, 8);
        p += 24;
        size_t n = (size_t)q[b].n;
        if (q[b].n < 0 || q[b].n > cap || (size_t)(end - p) < row_bytes(q[b].n, k) - 24)
            return fk_error(FK_ERR_IO, "extract: a rank sent a row of %lld positions (at most %lld)", (long long)q[b].n, (long long)cap);
        memcpy(q[b].count, p, n); p += n;
        memcpy(q[b].ids, p, n * k * 4); p += n * k * 4;
        memcpy(q[b].logp, p, n * k * 4); p += n * k * 4;
        memcpy(q[b].ce, p, n * 4); p += n * 4;
    }
    return p == end ? FK_OK : fk_error(FK_ERR_IO, "extract: a rank sent %zu bytes more than its rows", (size_t)(end - p));
}

// Rows of batch c (B sequences from c, of n_seqs) and the first of them not on disk yet.
static int batch_rows(int64_t c, int B, int64_t n_seqs, int64_t done_seqs, int *b0) {
    int rows = c < n_seqs ? (int)(n_seqs - c < B ? n_seqs - c : B) : 0;
    *b0 = done_seqs > c ? (int)(done_seqs - c < rows ? done_seqs - c : rows) : 0;
    return rows;
}

fk_status fk_extract_ex(fk_model *m, const fk_tokenizer *t, const char *corpus_path, const fk_extract_opts *opts,
                        const char *out_path, bool restart, fk_extract_cb cb, void *user, bool *stopped, bool *cached) {
    if (stopped) *stopped = false;
    if (cached) *cached = false;
    fk_extract_opts o;
    int32_t bos = -1;
    int lead = 0;
    FK_TRY(extract_opts(m, t, opts, &o, &bos, &lead));
    int64_t V = m->cfg.vocab_size;
    fk_store_header h = {0};
    int32_t *ids = NULL;
    int64_t *begin = NULL;
    FK_TRY(load_corpus(t, corpus_path, &ids, &begin, &h.n_tokens, &h.corpus_bytes, &h.corpus_fp));
    // the products run in the chosen precision for this extraction only (restored at done)
    fk_precision before = fk_matmul_precision();
    fk_matmul_set_precision(o.precision);
    bool gpu = o.device == FK_DEVICE_CUDA;
    h.flags = (lead ? FK_STORE_BOS : 0) | (gpu || fk_matmul_precision() == FK_PRECISION_BF16 ? FK_STORE_BF16 : 0) |
              (!gpu && fk_matmul_int8() && fk_model_has_q8_stored(m) ? FK_STORE_INT8 : 0);
    h.k = o.k;
    h.seq = o.seq;
    h.vocab_size = V;
    h.model_fp = fk_model_fingerprint(m);
    h.tokenizer_fp = fk_tok_fingerprint(t);
    h.grid = (uint32_t)o.grid;

    fk_store_writer *w = NULL;
    int32_t *x = NULL;
    fk_store_seq *q = NULL;
    fk_store_buf *rec = NULL;
    uint8_t *pk = NULL;
    int B = o.batch, T = o.seq, k = o.k, T1 = T + lead, R = fk_dist_size(), me = fk_dist_rank();
    extract_batch eb = {0};
    bool same = false;
    int64_t done_seqs = 0;
    fk_status st = FK_OK;
    if (me == 0) {  // rank 0 alone reads and writes the store
        st = check_existing(out_path, &h, restart, &same);
        if (st == FK_OK && !same) st = fk_store_writer_open(out_path, &h, ids, begin, restart, &w, &done_seqs);
    }
    st = fk_dist_agree(st);
    int64_t shared[2] = {same, done_seqs};
    fk_dist_bcast_i64(shared, 2);
    same = shared[0] != 0, done_seqs = shared[1];
    if (st != FK_OK || same) {
        if (same && cached) *cached = true;
        goto done;
    }
    free(begin);
    begin = NULL;
    int64_t n_seqs = fk_store_header_n_seqs(&h);
    int nq = me == 0 ? R * B : B;  // rank 0 holds every rank's batch of a round
    size_t pk_cap = (size_t)B * row_bytes(T, k);
    x = malloc((size_t)B * T1 * sizeof(int32_t));
    q = calloc((size_t)nq, sizeof *q);
    rec = calloc((size_t)B, sizeof *rec);
    pk = R > 1 ? malloc(pk_cap) : NULL;
    if (!x || !q || !rec || (R > 1 && !pk)) st = fk_error(FK_ERR_NOMEM, "out of memory");
    for (int b = 0; b < nq && st == FK_OK; b++) st = fk_store_seq_reserve(&q[b], T, k);
    if ((st = fk_dist_agree(st)) != FK_OK) goto done;
    eb = (extract_batch){m, ids, h.n_tokens, fk_store_header_positions(&h), V, T, T1, lead, k, bos, x, q, NULL, NULL, NULL, NULL, NULL};
    if (gpu) {
        if (R > 1) st = fk_error(FK_ERR_UNSUPPORTED, "extract --device cuda runs in one process (not under mpirun with %d ranks)", R);
        if (st == FK_OK) st = fk_gpu_open(&eb.gpu, m, B, T1, false);
        eb.glab = malloc((size_t)B * T1 * sizeof(int32_t));
        eb.gids = malloc((size_t)B * T1 * k * sizeof(int32_t));
        eb.glogp = malloc((size_t)B * T1 * k * sizeof(float));
        eb.gce = malloc((size_t)B * T1 * sizeof(float));
        if (st == FK_OK && (!eb.glab || !eb.gids || !eb.glogp || !eb.gce)) st = fk_error(FK_ERR_NOMEM, "out of memory");
    }
    extract_progress pg = {cb, user, fk_time_s(), 0};
    bool stop = false;
    // Batches start where an uninterrupted run's would, so each sequence is computed in the
    // same batch as there (bit-identical output); sequences already on disk are skipped. A
    // round is R batches, rank r computing the r-th.
    for (int64_t g = done_seqs / B * B; g < n_seqs && st == FK_OK; g += (int64_t)R * B) {
        int b0, rows = batch_rows(g + (int64_t)me * B, B, n_seqs, done_seqs, &b0);
        if (rows > 0) st = batch_dists(&eb, g + (int64_t)me * B, rows, done_seqs);
        if ((st = fk_dist_agree(st)) != FK_OK) break;
        if (me != 0 && rows > b0) {
            int64_t len = 0;
            for (int b = b0; b < rows; b++) len += (int64_t)row_bytes(q[b].n, k);
            pack_rows(pk, q, b0, rows, k);
            fk_dist_send(0, &len, sizeof len);
            fk_dist_send(0, pk, (size_t)len);
        }
        if (me == 0) {
            for (int r = 1; r < R && st == FK_OK; r++) {  // every rank's rows first: none waits on a send
                int bb, rr = batch_rows(g + (int64_t)r * B, B, n_seqs, done_seqs, &bb);
                if (rr <= bb) continue;
                int64_t len;
                fk_dist_recv(r, &len, sizeof len);
                if (len < 0 || (size_t)len > pk_cap) st = fk_error(FK_ERR_IO, "extract: rank %d sends %lld bytes of rows (at most %zu)", r, (long long)len, pk_cap);
                else {
                    fk_dist_recv(r, pk, (size_t)len);
                    st = unpack_rows(pk, (size_t)len, q + (size_t)r * B, bb, rr, k, T);
                }
            }
            for (int r = 0; r < R && st == FK_OK && !stop; r++) {
                int bb, rr = batch_rows(g + (int64_t)r * B, B, n_seqs, done_seqs, &bb);
                if (rr > bb) st = write_rows(w, q + (size_t)r * B, rec, bb, rr, g + (int64_t)r * B, n_seqs, &pg, &stop);
            }
        }
        st = fk_dist_agree(st);
        if (fk_dist_any(stop)) {
            if (stopped) *stopped = true;
            goto done;
        }
    }
    if (st == FK_OK && me == 0) {
        st = fk_store_writer_finish(w);
        w = NULL;
    }

    st = fk_dist_agree(st);  // the store is complete (or not) for every rank when this returns
done:
    fk_matmul_set_precision(before);
    fk_gpu_close(eb.gpu);
    free(eb.glab); free(eb.gids); free(eb.glogp); free(eb.gce);
    if (w) fk_store_writer_close(w);
    for (int b = 0; rec && b < B; b++) fk_store_buf_free(&rec[b]);
    for (int b = 0; q && b < (me == 0 ? R * B : B); b++) fk_store_seq_free(&q[b]);
    free(q); free(rec); free(x); free(ids); free(begin); free(pk);
    return st;
}

fk_status fk_extract(fk_model *m, const fk_tokenizer *t, const char *corpus_path, const fk_extract_opts *o, const char *out_path,
                     bool restart, fk_extract_cb cb, void *user) {
    return fk_extract_ex(m, t, corpus_path, o, out_path, restart, cb, user, NULL, NULL);
}
