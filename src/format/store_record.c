// Distribution stores: the record codec, one sequence's positions (entries' log-prob offsets on
// the grid, the top-1, the label's rank, ids through the id model, the cross-entropy) coded in
// one range-coded stream, and the model prior that every record's bit models start from. The
// fk_store_seq buffers they decode into are allocated here too.
#include "format/store_rc.h"

#include <math.h>
#include <stdlib.h>

#define NCLS 12           // context classes by entry slot (slots >= NCLS-1 share one)
#define NCONF 8           // context classes by the top-1's confidence

struct rec_ctx {
    uctx count, top1[NCONF], gap[NCLS], rank[NCONF], li[NCLS], gr[NCLS], ce_hit, ce_miss, ce_none;
    bm present[NCONF], inlist[NCLS][2];
};

// A record's models start from the prior when there is one, else at 1/2.
static void rec_ctx_init(rec_ctx *r, const rec_ctx *prior) {
    if (prior) memcpy(r, prior, sizeof *r);
    else bm_reset(r, sizeof *r);
}

// ------------------------------------------------------------------ prior section
// Models reset in every record pay to learn their probabilities again each time. The prior
// is what the models learnt over sequence 0 (encoded once from 1/2), quantised to 7 bits, with
// a count that lets them adapt at rate 1/(PRIOR_N+2) at first: every record, sequence 0's
// included, starts from it. Section: u32 payload bytes, u32 CRC-32, then a range-coded stream:
// per bit model in struct order, 0 when sequence 0 never used it, else 1 + zigzag(p/16 - 64).

#define PRIOR_N 12
#define PRIOR_HEAD 8

static fk_status prior_encode(const rec_ctx *fin, fk_store_buf *out) {
    size_t head = out->n;
    if (!store_buf_reserve(out, PRIOR_HEAD)) return fk_error(FK_ERR_NOMEM, "out of memory");
    out->n += PRIOR_HEAD;
    uctx u[2];
    bm_reset(u, sizeof u);
    rc_enc e;
    rc_enc_init(&e, out);
    const bm *b = (const bm *)fin;
    int prev = 0;
    for (size_t i = 0; i < sizeof *fin / sizeof(bm); i++) {
        uint64_t v = b[i].n == 0 ? 0 : 1 + zigzag((int64_t)(b[i].p >> 4) - 64);
        enc_uint(&e, &u[prev], v);
        prev = v != 0;
    }
    rc_enc_flush(&e);
    if (e.oom) return fk_error(FK_ERR_NOMEM, "out of memory");
    size_t payload = out->n - head - PRIOR_HEAD;
    put_u32(out->data + head, (uint32_t)payload);
    put_u32(out->data + head + 4, store_crc32(out->data + head + PRIOR_HEAD, payload));
    return FK_OK;
}

fk_status store_prior_decode(const uint8_t *b, uint64_t avail, rec_ctx **out, uint64_t *bytes, const char *path) {
    *out = NULL;
    if (avail < PRIOR_HEAD || get_u32(b) > avail - PRIOR_HEAD)
        return fk_error(FK_ERR_FORMAT, "%s: the model prior section is truncated", path);
    uint32_t payload = get_u32(b);
    if (get_u32(b + 4) != store_crc32(b + PRIOR_HEAD, payload)) return fk_error(FK_ERR_FORMAT, "%s: model prior checksum mismatch", path);
    rec_ctx *r = malloc(sizeof *r);
    if (!r) return fk_error(FK_ERR_NOMEM, "out of memory");
    uctx u[2];
    bm_reset(u, sizeof u);
    rc_dec d;
    rc_dec_init(&d, b + PRIOR_HEAD, payload);
    bm *m = (bm *)r;
    int prev = 0;
    for (size_t i = 0; i < sizeof *r / sizeof(bm); i++) {
        uint64_t v = dec_uint(&d, &u[prev]);
        int64_t q = v ? 64 + unzigzag(v - 1) : 0;
        if (v > 1000 || q < 0 || q > 127) { free(r); return fk_error(FK_ERR_FORMAT, "%s: the model prior section is corrupt", path); }
        m[i] = v == 0 ? (bm){1u << (RC_PBITS - 1), 0} : (bm){bm_clamp((uint32_t)(q * 16 + 8)), PRIOR_N};
        prev = v != 0;
    }
    if (d.over) { free(r); return fk_error(FK_ERR_FORMAT, "%s: the model prior section is corrupt", path); }
    *out = r;
    *bytes = PRIOR_HEAD + (uint64_t)payload;
    return FK_OK;
}

// ------------------------------------------------------------------ contexts

// Top-1 context: how far below it the second entry is (a peaked distribution has its top-1 near 0).
static inline int top_cls(int cnt, int lv1) {
    if (cnt < 2) return NCONF - 1;
    int b = bitlen((uint64_t)lv1);
    return b < NCONF - 2 ? b : NCONF - 2;
}

// List indices already taken at a position (ascending): an id's index is coded as its index
// among the entries of the list not yet taken.
static inline void used_insert(int64_t *u, int *n, int64_t v) {
    int i = (*n)++;
    while (i > 0 && u[i - 1] > v) { u[i] = u[i - 1]; i--; }
    u[i] = v;
}
static inline int64_t used_rank(const int64_t *u, int n, int64_t li) {
    int64_t a = li;
    for (int i = 0; i < n; i++) a -= u[i] < li;
    return a;
}
static inline int64_t used_unrank(const int64_t *u, int n, int64_t a) {
    for (int i = 0; i < n && u[i] <= a; i++) a++;
    return a;
}

static inline int conf_cls(uint64_t a0) { int b = bitlen(a0); return b < NCONF - 1 ? b : NCONF - 1; }
static inline int slot_cls(int j) { return j < NCLS - 1 ? j : NCLS - 1; }

// The quantisation grids' scales: 2^q_lp, 2^q_top, 2^q_ce steps a nat.
typedef struct { double lp, top, ce; } rec_scale;
static rec_scale rec_scales(const codec *c) {
    return (rec_scale){ldexp(1.0, c->p.q_lp), ldexp(1.0, c->p.q_top), ldexp(1.0, c->p.q_ce)};
}

// ------------------------------------------------------------------ sequences

fk_status fk_store_seq_reserve(fk_store_seq *q, int64_t n, int k) {
    if (k < 1 || k > FK_STORE_MAX_K || n < 0) return fk_error(FK_ERR_ARG, "store sequence: bad size %lld x %d", (long long)n, k);
    if (n <= q->cap && k == q->k) return FK_OK;
    int64_t cap = n > q->cap ? n : q->cap;
    uint8_t *count = realloc(q->count, (size_t)(cap ? cap : 1));
    if (count) q->count = count;
    int32_t *ids = realloc(q->ids, (size_t)(cap ? cap : 1) * (size_t)k * sizeof(int32_t));
    if (ids) q->ids = ids;
    float *logp = realloc(q->logp, (size_t)(cap ? cap : 1) * (size_t)k * sizeof(float));
    if (logp) q->logp = logp;
    float *ce = realloc(q->ce, (size_t)(cap ? cap : 1) * sizeof(float));
    if (ce) q->ce = ce;
    if (!count || !ids || !logp || !ce) return fk_error(FK_ERR_NOMEM, "out of memory (store sequence of %lld positions)", (long long)n);
    q->cap = cap;
    q->k = k;
    return FK_OK;
}

void fk_store_seq_free(fk_store_seq *q) {
    free(q->count); free(q->ids); free(q->logp); free(q->ce);
    memset(q, 0, sizeof *q);
}

// ------------------------------------------------------------------ encoding

// Checks that q can be sequence seq_idx of the codec's store: its positions and k, and at each
// position the count, ids (in the vocabulary, distinct), log-probs (<= 0, descending) and ce.
static fk_status rec_check(const codec *c, int64_t seq_idx, const fk_store_seq *q, const char *path) {
    const fk_store_header *h = &c->h;
    int64_t first = seq_idx * h->seq, pos = fk_store_header_positions(h);
    int64_t n = pos - first < h->seq ? pos - first : h->seq;
    if (q->first != first || q->n != n)
        return fk_error(FK_ERR_ARG, "%s: sequence %lld must hold positions %lld..%lld, got %lld positions from %lld", path,
                        (long long)seq_idx, (long long)first, (long long)(first + n), (long long)q->n, (long long)q->first);
    if (q->k != h->k) return fk_error(FK_ERR_ARG, "%s: sequence has k %d, the store %d", path, q->k, h->k);
    int k = h->k;
    bool aligned = h->flags & FK_STORE_ALIGNED;
    for (int64_t t = 0; t < n; t++) {
        int cnt = q->count[t];
        if (cnt > k || (cnt == 0 && !aligned))
            return fk_error(FK_ERR_ARG, "%s: position %lld has %d entries (expected %s..%d)", path, (long long)(first + t), cnt, aligned ? "0" : "1", k);
        if (!isfinite(q->ce[t])) return fk_error(FK_ERR_NUMERIC, "%s: cross-entropy at position %lld is not finite", path, (long long)(first + t));
        for (int j = 0; j < cnt; j++) {
            int32_t id = q->ids[t * k + j];
            float lp = q->logp[t * k + j];
            if (id < 0 || id >= h->vocab_size)
                return fk_error(FK_ERR_ARG, "%s: id %d at position %lld is outside the vocabulary (%lld)", path, id, (long long)(first + t), (long long)h->vocab_size);
            for (int i = 0; i < j; i++)
                if (q->ids[t * k + i] == id) return fk_error(FK_ERR_ARG, "%s: id %d appears twice at position %lld", path, id, (long long)(first + t));
            if (isnan(lp) || (j == 0 && !isfinite(lp)) || lp > 1e-3f || (j > 0 && lp > q->logp[t * k + j - 1]))
                return fk_error(FK_ERR_ARG, "%s: log-probs at position %lld are not finite, <= 0 and descending (entry %d: %g)", path,
                                (long long)(first + t), j, lp);
        }
    }
    return FK_OK;
}

// Codes row t of q, position p (input a = token p, label y = token p+1): steps 1..7 of the
// record format in fusekit/store.h.
static fk_status pos_encode(const codec *c, const rec_scale *s, rc_enc *e, rec_ctx *x, int64_t p, const fk_store_seq *q, int64_t t,
                            const char *path) {
    int k = c->h.k;
    int32_t a = c->tok[p], y = c->tok[p + 1];
    int cnt = q->count[t];
    const float *lp = q->logp + t * k;
    const int32_t *ids = q->ids + t * k;
    double ce = q->ce[t] > 0 ? q->ce[t] : 0;
    enc_uint(e, &x->count, (uint64_t)(k - cnt));
    if (cnt == 0) {
        double v = nearbyint(ce * s->ce);
        if (v > 4e9) return fk_error(FK_ERR_ARG, "%s: cross-entropy %g at position %lld is out of range", path, ce, (long long)p);
        enc_uint(e, &x->ce_none, (uint64_t)v);
        return FK_OK;
    }
    double top = lp[0] < 0 ? -(double)lp[0] : 0;
    double a0d = nearbyint(top * s->top);
    if (a0d > 4e9) return fk_error(FK_ERR_ARG, "%s: top-1 log-prob %g at position %lld is out of range", path, lp[0], (long long)p);
    uint64_t a0 = (uint64_t)a0d;
    double dec[FK_STORE_MAX_K];
    int64_t used[FK_STORE_MAX_K + 1];
    int lvs[FK_STORE_MAX_K];
    lvs[0] = 0;
    for (int j = 1; j < cnt; j++) {
        lvs[j] = store_grid_quant(c, ((double)lp[0] - (double)lp[j]) * s->lp);
        enc_uint(e, &x->gap[slot_cls(j)], (uint64_t)(lvs[j] - lvs[j - 1]));
    }
    enc_uint(e, &x->top1[top_cls(cnt, cnt > 1 ? lvs[1] : 0)], a0);
    dec[0] = -(double)a0 / s->top;
    for (int j = 1; j < cnt; j++) dec[j] = dec[0] - (double)c->lev[lvs[j]] / s->lp;
    int r = cnt;
    for (int j = 0; j < cnt; j++) if (ids[j] == y) { r = j; break; }
    int cc = conf_cls(a0);
    rc_bit(e, &x->present[cc], r < cnt);
    int nu = 0, esc = 0;
    if (r < cnt) {
        enc_uint(e, &x->rank[cc], (uint64_t)r);
        int64_t ly = succ_lookup(c, a, y);
        if (ly >= 0) used_insert(used, &nu, ly);
    }
    for (int j = 0; j < cnt; j++) {
        if (j == r) continue;
        int sc = slot_cls(j);
        int64_t li = succ_lookup(c, a, ids[j]);
        rc_bit(e, &x->inlist[sc][esc], li >= 0);
        esc = li < 0;
        if (li >= 0) {
            enc_uint(e, &x->li[sc], (uint64_t)used_rank(used, nu, li));
            used_insert(used, &nu, li);
        } else {
            enc_uint(e, &x->gr[sc], (uint64_t)escape_rank(c, a, ids[j]));
        }
    }
    double pred = r < cnt ? -dec[r] : -dec[cnt - 1];
    double v = nearbyint((ce - pred) * s->ce);
    if (fabs(v) > 2e9) return fk_error(FK_ERR_ARG, "%s: cross-entropy %g at position %lld is out of range", path, ce, (long long)p);
    enc_uint(e, r < cnt ? &x->ce_hit : &x->ce_miss, zigzag((int64_t)v));
    return FK_OK;
}

// Validates q as sequence seq_idx of the codec's store and appends its record to rec (head
// included); the models start from init (NULL: 1/2), and fin (may be NULL) gets their last state.
static fk_status rec_encode(const codec *c, const rec_ctx *init, int64_t seq_idx, const fk_store_seq *q, fk_store_buf *rec,
                            rec_ctx *fin, const char *path) {
    FK_TRY(rec_check(c, seq_idx, q, path));
    int64_t n = q->n;
    size_t start = rec->n;
    if (!store_buf_reserve(rec, REC_HEAD + REC_FIXED + (size_t)n * 4)) return fk_error(FK_ERR_NOMEM, "out of memory");
    memset(rec->data + start, 0, REC_HEAD);
    put_u64(rec->data + start + REC_HEAD, (uint64_t)seq_idx);
    put_f64(rec->data + start + REC_HEAD + 8, q->mean_ce);
    rec->n = start + REC_HEAD + REC_FIXED;
    rec_ctx *x = malloc(sizeof *x);
    if (!x) return fk_error(FK_ERR_NOMEM, "out of memory");
    rec_ctx_init(x, init);
    rc_enc e;
    rc_enc_init(&e, rec);
    const rec_scale s = rec_scales(c);
    fk_status st = FK_OK;
    for (int64_t t = 0; t < n && st == FK_OK; t++) st = pos_encode(c, &s, &e, x, q->first + t, q, t, path);
    if (fin && st == FK_OK) memcpy(fin, x, sizeof *x);
    free(x);
    if (st != FK_OK) return st;
    rc_enc_flush(&e);
    if (e.oom) return fk_error(FK_ERR_NOMEM, "out of memory");
    size_t payload = rec->n - start - REC_HEAD;
    if (payload > UINT32_MAX) return fk_error(FK_ERR_ARG, "%s: sequence %lld encodes to more than 4 GiB", path, (long long)seq_idx);
    put_u32(rec->data + start, (uint32_t)payload);
    put_u32(rec->data + start + 4, store_crc32(rec->data + start + REC_HEAD, payload));
    return FK_OK;
}

fk_status store_rec_encode(const codec *c, int64_t seq_idx, const fk_store_seq *q, fk_store_buf *rec, const char *path) {
    return rec_encode(c, c->prior, seq_idx, q, rec, NULL, path);
}

fk_status store_rec_encode_first(const codec *c, const fk_store_seq *q, fk_store_buf *rec, const char *path) {
    rec_ctx *fin = malloc(sizeof *fin), *prior = NULL;
    if (!fin) return fk_error(FK_ERR_NOMEM, "out of memory");
    size_t start = rec->n;
    fk_status st = rec_encode(c, NULL, 0, q, rec, fin, path);  // from 1/2, to learn the prior
    rec->n = start;
    uint64_t pb;
    if (st == FK_OK) st = prior_encode(fin, rec);
    if (st == FK_OK) st = store_prior_decode(rec->data + start, rec->n - start, &prior, &pb, path);
    if (st == FK_OK) st = rec_encode(c, prior, 0, q, rec, NULL, path);
    free(fin);
    free(prior);
    return st;
}

// ------------------------------------------------------------------ decoding

// Decodes row t of q, position p (input a = token p, label y = token p+1), the inverse of
// pos_encode; FK_ERR_FORMAT (no message) when a value is out of range.
static fk_status pos_decode(const codec *c, const rec_scale *s, rc_dec *d, rec_ctx *x, int64_t p, fk_store_seq *q, int64_t t) {
    const fk_store_header *h = &c->h;
    int k = h->k;
    int32_t a = c->tok[p], y = c->tok[p + 1];
    float *lp = q->logp + t * k;
    int32_t *ids = q->ids + t * k;
    uint64_t kc = dec_uint(d, &x->count);
    if (kc > (uint64_t)k || (kc == (uint64_t)k && !(h->flags & FK_STORE_ALIGNED))) return FK_ERR_FORMAT;
    int cnt = k - (int)kc;
    q->count[t] = (uint8_t)cnt;
    for (int j = cnt; j < k; j++) { ids[j] = -1; lp[j] = -INFINITY; }
    if (cnt == 0) {
        q->ce[t] = (float)((double)dec_uint(d, &x->ce_none) / s->ce);
        return FK_OK;
    }
    double dec[FK_STORE_MAX_K];
    int64_t used[FK_STORE_MAX_K + 1];
    int lvs[FK_STORE_MAX_K];
    lvs[0] = 0;
    for (int j = 1; j < cnt; j++) {
        uint64_t g = dec_uint(d, &x->gap[slot_cls(j)]);
        if (g >= (uint64_t)(c->n_lev - lvs[j - 1])) return FK_ERR_FORMAT;
        lvs[j] = lvs[j - 1] + (int)g;
    }
    uint64_t a0 = dec_uint(d, &x->top1[top_cls(cnt, cnt > 1 ? lvs[1] : 0)]);
    dec[0] = -(double)a0 / s->top;
    for (int j = 1; j < cnt; j++) dec[j] = dec[0] - (double)c->lev[lvs[j]] / s->lp;
    for (int j = 0; j < cnt; j++) lp[j] = (float)dec[j];
    int cc = conf_cls(a0), r = cnt, nu = 0, esc = 0;
    if (rd_bit(d, &x->present[cc])) {
        uint64_t rr = dec_uint(d, &x->rank[cc]);
        if (rr >= (uint64_t)cnt) return FK_ERR_FORMAT;
        r = (int)rr;
        ids[r] = y;
        int64_t ly = succ_lookup(c, a, y);
        if (ly >= 0) used_insert(used, &nu, ly);
    }
    for (int j = 0; j < cnt; j++) {
        if (j == r) continue;
        int sc = slot_cls(j);
        int in = rd_bit(d, &x->inlist[sc][esc]);
        esc = !in;
        if (in) {
            uint64_t av = dec_uint(d, &x->li[sc]);
            int64_t len = c->succ_off[a + 1] - c->succ_off[a];
            if (av >= (uint64_t)len) return FK_ERR_FORMAT;
            int64_t li = used_unrank(used, nu, (int64_t)av);
            if (li >= len) return FK_ERR_FORMAT;
            used_insert(used, &nu, li);
            ids[j] = c->succ_id[c->succ_off[a] + li];
        } else {
            uint64_t adj = dec_uint(d, &x->gr[sc]);
            if (adj >= (uint64_t)h->vocab_size) return FK_ERR_FORMAT;
            int64_t gr = escape_unrank(c, a, (int64_t)adj);
            if (gr >= h->vocab_size) return FK_ERR_FORMAT;
            ids[j] = c->gid[gr];
        }
    }
    double pred = r < cnt ? -dec[r] : -dec[cnt - 1];
    q->ce[t] = (float)(pred + (double)unzigzag(dec_uint(d, r < cnt ? &x->ce_hit : &x->ce_miss)) / s->ce);
    return FK_OK;
}

fk_status store_rec_decode(const codec *c, int64_t seq_idx, const uint8_t *payload, size_t size, fk_store_seq *q, const char *path) {
    const fk_store_header *h = &c->h;
    if (size < REC_FIXED || get_u64(payload) != (uint64_t)seq_idx)
        return fk_error(FK_ERR_FORMAT, "%s: record of sequence %lld is malformed (its index says %llu)", path, (long long)seq_idx,
                        size >= 8 ? (unsigned long long)get_u64(payload) : 0ull);
    int64_t first = seq_idx * h->seq, pos = fk_store_header_positions(h);
    int64_t n = pos - first < h->seq ? pos - first : h->seq;
    FK_TRY(fk_store_seq_reserve(q, n, h->k));
    q->first = first;
    q->n = n;
    q->mean_ce = get_f64(payload + 8);
    rec_ctx *x = malloc(sizeof *x);
    if (!x) return fk_error(FK_ERR_NOMEM, "out of memory");
    rec_ctx_init(x, c->prior);
    rc_dec d;
    rc_dec_init(&d, payload + REC_FIXED, size - REC_FIXED);
    const rec_scale s = rec_scales(c);
    fk_status st = FK_OK;
    for (int64_t t = 0; t < n && st == FK_OK && !d.over; t++) st = pos_decode(c, &s, &d, x, first + t, q, t);
    free(x);
    if (st != FK_OK || d.over)
        return fk_error(FK_ERR_FORMAT, "%s: record of sequence %lld does not decode (corrupt data)", path, (long long)seq_idx);
    return FK_OK;
}
