// Distribution stores (.fkd): writer, reader, the range coder and the id model they share.
// The format is documented byte by byte in fusekit/store.h.
#include "fusekit/store.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define FOOTER_BYTES 32
#define FOOTER_MAGIC "FKDSTEND"
#define TOKSEC_HEAD 16
#define REC_HEAD 8        // u32 payload bytes, u32 CRC-32
#define REC_FIXED 16      // u64 sequence index, f64 mean ce
#define MAX_OFFSET_NATS 128
#define NCLS 12           // context classes by entry slot (slots >= NCLS-1 share one)
#define NCONF 8           // context classes by the top-1's confidence

// Default quantisation and model parameters (written into every header; readers use the header's).
#define DEF_Q_LP 5
#define DEF_BASE 3
#define DEF_N_BANDS 2
#define DEF_BAND_W 8
#define DEF_Q_TOP 4
#define DEF_Q_CE 5
#define DEF_SUCC_LOG2 24

// ------------------------------------------------------------------ little-endian bytes

static void put_u32(uint8_t *p, uint32_t v) { for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i)); }
static void put_u64(uint8_t *p, uint64_t v) { for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i)); }
static uint32_t get_u32(const uint8_t *p) { uint32_t v = 0; for (int i = 3; i >= 0; i--) v = v << 8 | p[i]; return v; }
static uint64_t get_u64(const uint8_t *p) { uint64_t v = 0; for (int i = 7; i >= 0; i--) v = v << 8 | p[i]; return v; }
static void put_f64(uint8_t *p, double d) { uint64_t v; memcpy(&v, &d, 8); put_u64(p, v); }
static double get_f64(const uint8_t *p) { uint64_t v = get_u64(p); double d; memcpy(&d, &v, 8); return d; }

// ------------------------------------------------------------------ CRC-32 (zlib polynomial)

static const uint32_t crc_nibble[16] = {
    0x00000000, 0x1DB71064, 0x3B6E20C8, 0x26D930AC, 0x76DC4190, 0x6B6B51F4, 0x4DB26158, 0x5005713C,
    0xEDB88320, 0xF00F9344, 0xD6D6A3E8, 0xCB61B38C, 0x9B64C2B0, 0x86D3D2D4, 0xA00AE278, 0xBDBDF21C,
};

static uint32_t crc32_of(const void *data, size_t n) {
    const uint8_t *p = data;
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        c = (c >> 4) ^ crc_nibble[c & 15];
        c = (c >> 4) ^ crc_nibble[c & 15];
    }
    return c ^ 0xFFFFFFFFu;
}

// ------------------------------------------------------------------ growable byte buffer

static bool buf_reserve(fk_store_buf *b, size_t more) {
    if (b->n + more <= b->cap) return true;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->n + more) cap *= 2;
    uint8_t *d = realloc(b->data, cap);
    if (!d) return false;
    b->data = d;
    b->cap = cap;
    return true;
}

void fk_store_buf_free(fk_store_buf *b) {
    free(b->data);
    memset(b, 0, sizeof *b);
}

// ------------------------------------------------------------------ binary range coder
// 32-bit range, 11-bit adaptive probabilities of a 0 bit, carries propagated through a
// pending run of 0xFF bytes. Encoder and decoder normalise identically.

#define RC_TOP (1u << 24)
#define RC_PBITS 11
#define RC_LIMIT 30   // adaptation rate 1/(n+2) for the first bits a model sees, then 1/32

// An adaptive bit model: p = probability of a 0 in 1/2048, n = bits seen (saturating). A fresh
// model learns fast (rate 1/2, 1/3, ...) so that models reset in every record cost little.
typedef struct { uint16_t p, n; } bm;

static const uint16_t bm_rate[RC_LIMIT + 1] = {  // 65536 / (n + 2), then 65536 / 32
    32768, 21845, 16384, 13107, 10922, 9362, 8192, 7281, 6553, 5957, 5461, 5041, 4681, 4369, 4096, 3855,
    3640, 3449, 3276, 3120, 2978, 2849, 2730, 2621, 2520, 2427, 2340, 2259, 2184, 2114, 2048,
};

static inline void bm_update(bm *m, int bit) {
    uint32_t rate = bm_rate[m->n];
    if (!bit) m->p = (uint16_t)(m->p + ((((1u << RC_PBITS) - m->p) * rate) >> 16));
    else m->p = (uint16_t)(m->p - ((m->p * rate) >> 16));
    if (m->p < 32) m->p = 32;
    if (m->p > (1u << RC_PBITS) - 32) m->p = (1u << RC_PBITS) - 32;
    if (m->n < RC_LIMIT) m->n++;
}

typedef struct {
    fk_store_buf *out;
    uint64_t low;
    uint32_t range;
    uint8_t cache;
    uint64_t pending;
    bool oom;
} rc_enc;

static void rc_enc_init(rc_enc *e, fk_store_buf *out) {
    e->out = out; e->low = 0; e->range = 0xFFFFFFFFu; e->cache = 0; e->pending = 1; e->oom = false;
}

static inline void rc_emit(rc_enc *e, uint8_t b) {
    if (e->out->n == e->out->cap && !buf_reserve(e->out, 1)) { e->oom = true; return; }
    e->out->data[e->out->n++] = b;
}

static inline void rc_shift_low(rc_enc *e) {
    if ((uint32_t)e->low < 0xFF000000u || (e->low >> 32) != 0) {
        uint8_t carry = (uint8_t)(e->low >> 32), t = e->cache;
        do { rc_emit(e, (uint8_t)(t + carry)); t = 0xFF; } while (--e->pending != 0);
        e->cache = (uint8_t)(e->low >> 24);
    }
    e->pending++;
    e->low = (e->low & 0x00FFFFFFu) << 8;
}

static inline void rc_bit(rc_enc *e, bm *m, int bit) {
    uint32_t bound = (e->range >> RC_PBITS) * m->p;
    if (!bit) e->range = bound;
    else { e->low += bound; e->range -= bound; }
    bm_update(m, bit);
    while (e->range < RC_TOP) { e->range <<= 8; rc_shift_low(e); }
}

static inline void rc_direct(rc_enc *e, int bit) {
    e->range >>= 1;
    if (bit) e->low += e->range;
    while (e->range < RC_TOP) { e->range <<= 8; rc_shift_low(e); }
}

static void rc_enc_flush(rc_enc *e) { for (int i = 0; i < 5; i++) rc_shift_low(e); }

typedef struct {
    const uint8_t *p, *end;
    uint32_t range, code;
    bool over;   // read past the end: the stream is corrupt
} rc_dec;

static inline uint8_t rc_next(rc_dec *d) {
    if (d->p < d->end) return *d->p++;
    d->over = true;
    return 0;
}

static void rc_dec_init(rc_dec *d, const uint8_t *p, size_t n) {
    d->p = p; d->end = p + n; d->over = false; d->range = 0xFFFFFFFFu; d->code = 0;
    for (int i = 0; i < 5; i++) d->code = (d->code << 8) | rc_next(d);
}

static inline int rd_bit(rc_dec *d, bm *m) {
    uint32_t bound = (d->range >> RC_PBITS) * m->p;
    int bit;
    if (d->code < bound) { d->range = bound; bit = 0; }
    else { d->code -= bound; d->range -= bound; bit = 1; }
    bm_update(m, bit);
    while (d->range < RC_TOP) { d->range <<= 8; d->code = (d->code << 8) | rc_next(d); }
    return bit;
}

static inline int rd_direct(rc_dec *d) {
    d->range >>= 1;
    int bit = d->code >= d->range;
    if (bit) d->code -= d->range;
    while (d->range < RC_TOP) { d->range <<= 8; d->code = (d->code << 8) | rc_next(d); }
    return bit;
}

// Adaptive Elias-gamma integers: v+1 has bit length b+1; b in unary (one model per step),
// the two bits below the leading one with models per b, the rest at probability 1/2.
typedef struct {
    bm len[33];
    bm hi[33][3];
} uctx;

// Resets `bytes` of bit models (a struct made only of bm and uctx members).
static void bm_reset(void *models, size_t bytes) {
    bm *b = models;
    for (size_t i = 0; i < bytes / sizeof(bm); i++) b[i] = (bm){1u << (RC_PBITS - 1), 0};
}

static inline void enc_uint(rc_enc *e, uctx *c, uint64_t v) {
    uint64_t n = v + 1;
    int b = 63 - __builtin_clzll(n);
    if (b > 32) b = 32;  // callers keep v < 2^32
    for (int i = 0; i < b; i++) rc_bit(e, &c->len[i], 1);
    if (b < 32) rc_bit(e, &c->len[b], 0);
    if (b >= 1) {
        int t = (int)((n >> (b - 1)) & 1);
        rc_bit(e, &c->hi[b][0], t);
        if (b >= 2) {
            rc_bit(e, &c->hi[b][1 + t], (int)((n >> (b - 2)) & 1));
            for (int j = b - 3; j >= 0; j--) rc_direct(e, (int)((n >> j) & 1));
        }
    }
}

static uint64_t dec_uint(rc_dec *d, uctx *c) {
    int b = 0;
    while (b < 32 && rd_bit(d, &c->len[b])) b++;
    uint64_t n = 1;
    if (b >= 1) {
        int t = rd_bit(d, &c->hi[b][0]);
        n = n << 1 | (uint64_t)t;
        if (b >= 2) {
            n = n << 1 | (uint64_t)rd_bit(d, &c->hi[b][1 + t]);
            for (int j = b - 3; j >= 0; j--) n = n << 1 | (uint64_t)rd_direct(d);
        }
    }
    return n - 1;
}

static inline uint64_t zigzag(int64_t v) { return v < 0 ? ((uint64_t)(-(v + 1)) << 1) | 1 : (uint64_t)v << 1; }
static inline int64_t unzigzag(uint64_t z) { return z & 1 ? -(int64_t)(z >> 1) - 1 : (int64_t)(z >> 1); }
static inline int bitlen(uint64_t v) { return v ? 64 - __builtin_clzll(v) : 0; }

// ------------------------------------------------------------------ parameters and the id model

typedef struct {
    uint8_t q_lp, base, n_bands, band_w, q_top, q_ce, succ_log2;
} store_params;

typedef struct rec_ctx rec_ctx;

// Shared by writer and reader: the header, parameters, offset grid, the id model, and the
// initial state of the records' bit models (NULL until sequence 0 is written or read).
typedef struct {
    fk_store_header h;
    store_params p;
    int32_t *lev;        // offset grid, in units of 2^-q_lp nats, increasing
    int n_lev;
    int32_t *tok;        // n_tokens ids
    int64_t *begin;      // n_tokens + 1
    int32_t n_distinct;
    int32_t *grank;      // V: global rank of each id (count descending, ties lower id)
    int32_t *gid;        // V: the id at each rank
    int64_t *succ_off;   // V + 1
    int32_t *succ_id;    // per token a: successors, most frequent first
    int32_t *succ_key;   // per token a: successors ascending (lookup)
    int32_t *succ_pos;   // index in succ_id of succ_key[x]
    int32_t *succ_grk;   // per token a: the global ranks of its successors, ascending
    rec_ctx *prior;
} codec;

static void codec_free(codec *c) {
    free(c->lev); free(c->tok); free(c->begin); free(c->grank); free(c->gid);
    free(c->succ_off); free(c->succ_id); free(c->succ_key); free(c->succ_pos); free(c->succ_grk); free(c->prior);
    memset(c, 0, sizeof *c);
}

static fk_status params_check(const store_params *p, const char *path) {
    if (p->q_lp > 12 || p->base < 1 || p->base > 16 || p->n_bands > 8 || p->band_w < 1 || p->band_w > 64 || p->q_top > 16 || p->q_ce > 16 ||
        p->succ_log2 > 40)
        return fk_error(FK_ERR_FORMAT, "%s: bad quantisation parameters (q_lp %d, base %d, n_bands %d, band_w %d, q_top %d, q_ce %d, succ_log2 %d)",
                        path, p->q_lp, p->base, p->n_bands, p->band_w, p->q_top, p->q_ce, p->succ_log2);
    return FK_OK;
}

// The offset grid, in units of 2^-q_lp nats: band b < n_bands spans band_w * base * 2^n_bands
// units with step base * 2^b; past them the step stays base * 2^n_bands, up to MAX_OFFSET_NATS.
static int64_t grid_step(const store_params *p, int64_t u) {
    int64_t b = u / (((int64_t)p->band_w * p->base) << p->n_bands);
    return (int64_t)p->base << (b < p->n_bands ? b : p->n_bands);
}

static fk_status grid_build(codec *c) {
    const store_params *p = &c->p;
    int64_t top = (int64_t)MAX_OFFSET_NATS << p->q_lp;
    int64_t n = 0;
    for (int64_t u = 0; u <= top; n++) u += grid_step(p, u);
    c->lev = malloc((size_t)n * sizeof(int32_t));
    if (!c->lev) return fk_error(FK_ERR_NOMEM, "out of memory");
    int64_t u = 0;
    for (int64_t i = 0; i < n; i++) {
        c->lev[i] = (int32_t)u;
        u += grid_step(p, u);
    }
    c->n_lev = (int)n;
    return FK_OK;
}

// The grid level nearest to u units (ties: the lower level).
static int grid_quant(const codec *c, double u) {
    if (!(u > 0)) return 0;
    if (u >= c->lev[c->n_lev - 1]) return c->n_lev - 1;
    // the band of u, then the level at or below it in that band, then the nearer neighbour
    const store_params *p = &c->p;
    int64_t width = ((int64_t)p->band_w * p->base) << p->n_bands, band = (int64_t)(u / (double)width);
    if (band > p->n_bands) band = p->n_bands;
    int64_t lo = 0;  // levels before the band
    for (int64_t b = 0; b < band; b++) lo += width / ((int64_t)p->base << b);
    lo += (int64_t)((u - (double)(band * width)) / (double)((int64_t)p->base << band));
    if (lo >= c->n_lev - 1) return c->n_lev - 1;
    while (lo > 0 && c->lev[lo] > u) lo--;            // float rounding at a band edge
    while (lo + 1 < c->n_lev && c->lev[lo + 1] <= u) lo++;
    int hi = (int)lo + 1;
    return u - c->lev[lo] > c->lev[hi] - u ? hi : (int)lo;
}

typedef struct { int64_t count; int32_t id; } id_count;
static int cmp_id_count(const void *a, const void *b) {
    const id_count *x = a, *y = b;
    if (x->count != y->count) return x->count > y->count ? -1 : 1;
    return (x->id > y->id) - (x->id < y->id);
}
static int cmp_i32(const void *a, const void *b) {
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}
typedef struct { int64_t count; int32_t rank; int32_t idx; } succ_sort;
static int cmp_succ(const void *a, const void *b) {
    const succ_sort *x = a, *y = b;
    if (x->count != y->count) return x->count > y->count ? -1 : 1;
    return (x->rank > y->rank) - (x->rank < y->rank);
}

// Global ranks from c->tok.
static fk_status model_ranks(codec *c) {
    int64_t V = c->h.vocab_size, n = c->h.n_tokens;
    id_count *ic = malloc((size_t)V * sizeof *ic);
    c->grank = malloc((size_t)V * sizeof(int32_t));
    c->gid = malloc((size_t)V * sizeof(int32_t));
    if (!ic || !c->grank || !c->gid) { free(ic); return fk_error(FK_ERR_NOMEM, "out of memory (id model, vocabulary %lld)", (long long)V); }
    for (int64_t v = 0; v < V; v++) { ic[v].count = 0; ic[v].id = (int32_t)v; }
    for (int64_t i = 0; i < n; i++) ic[c->tok[i]].count++;
    qsort(ic, (size_t)V, sizeof *ic, cmp_id_count);
    c->n_distinct = 0;
    for (int64_t r = 0; r < V; r++) {
        c->gid[r] = ic[r].id;
        c->grank[ic[r].id] = (int32_t)r;
        if (ic[r].count > 0) c->n_distinct++;
    }
    free(ic);
    return FK_OK;
}

// Successor lists from the first 2^succ_log2 tokens.
static fk_status model_successors(codec *c) {
    int64_t V = c->h.vocab_size, n = c->h.n_tokens;
    int64_t lim = c->p.succ_log2 >= 62 ? n : ((int64_t)1 << c->p.succ_log2);
    if (lim > n) lim = n;
    int64_t m = lim > 1 ? lim - 1 : 0;  // pairs (tok[i], tok[i+1]), i < m
    c->succ_off = calloc((size_t)V + 1, sizeof(int64_t));
    int64_t *fill = calloc((size_t)V + 1, sizeof(int64_t));
    int32_t *b = malloc((size_t)(m ? m : 1) * sizeof(int32_t));
    if (!c->succ_off || !fill || !b) { free(fill); free(b); return fk_error(FK_ERR_NOMEM, "out of memory (id model)"); }
    for (int64_t i = 0; i < m; i++) fill[c->tok[i] + 1]++;
    for (int64_t v = 0; v < V; v++) fill[v + 1] += fill[v];
    int64_t *at = malloc((size_t)(V + 1) * sizeof(int64_t));
    if (!at) { free(fill); free(b); return fk_error(FK_ERR_NOMEM, "out of memory (id model)"); }
    memcpy(at, fill, (size_t)(V + 1) * sizeof(int64_t));
    for (int64_t i = 0; i < m; i++) b[at[c->tok[i]]++] = c->tok[i + 1];
    free(at);
    // per first token: sort its successors, count runs, compact in place
    int64_t *cnt = malloc((size_t)(m ? m : 1) * sizeof(int64_t));
    if (!cnt) { free(fill); free(b); return fk_error(FK_ERR_NOMEM, "out of memory (id model)"); }
    int64_t out = 0, max_len = 0;
    for (int64_t v = 0; v < V; v++) {
        int64_t s = fill[v], e = fill[v + 1];
        c->succ_off[v] = out;
        if (e > s) qsort(b + s, (size_t)(e - s), sizeof(int32_t), cmp_i32);
        for (int64_t i = s; i < e;) {
            int64_t j = i;
            while (j < e && b[j] == b[i]) j++;
            b[out] = b[i];
            cnt[out] = j - i;
            out++;
            i = j;
        }
        if (out - c->succ_off[v] > max_len) max_len = out - c->succ_off[v];
    }
    c->succ_off[V] = out;
    free(fill);
    c->succ_key = b;
    c->succ_id = malloc((size_t)(out ? out : 1) * sizeof(int32_t));
    c->succ_pos = malloc((size_t)(out ? out : 1) * sizeof(int32_t));
    c->succ_grk = malloc((size_t)(out ? out : 1) * sizeof(int32_t));
    succ_sort *ss = malloc((size_t)(max_len ? max_len : 1) * sizeof *ss);
    if (!c->succ_id || !c->succ_pos || !c->succ_grk || !ss) { free(cnt); free(ss); return fk_error(FK_ERR_NOMEM, "out of memory (id model)"); }
    for (int64_t v = 0; v < V; v++) {
        int64_t s = c->succ_off[v], e = c->succ_off[v + 1];
        for (int64_t i = s; i < e; i++) ss[i - s] = (succ_sort){cnt[i], c->grank[b[i]], (int32_t)(i - s)};
        qsort(ss, (size_t)(e - s), sizeof *ss, cmp_succ);
        for (int64_t j = 0; j < e - s; j++) {
            c->succ_id[s + j] = b[s + ss[j].idx];
            c->succ_pos[s + ss[j].idx] = (int32_t)j;
        }
        for (int64_t i = s; i < e; i++) c->succ_grk[i] = c->grank[b[i]];
        if (e > s) qsort(c->succ_grk + s, (size_t)(e - s), sizeof(int32_t), cmp_i32);
    }
    free(ss);
    free(cnt);
    return FK_OK;
}

// Index of id in the successor list of a, or -1.
static int64_t succ_lookup(const codec *c, int32_t a, int32_t id) {
    int64_t lo = c->succ_off[a], hi = c->succ_off[a + 1];
    while (lo < hi) {
        int64_t mid = (lo + hi) / 2;
        if (c->succ_key[mid] < id) lo = mid + 1; else hi = mid;
    }
    return lo < c->succ_off[a + 1] && c->succ_key[lo] == id ? c->succ_pos[lo] : -1;
}

// How many successors of a have a global rank <= r.
static int64_t succ_ranks_upto(const codec *c, int32_t a, int64_t r) {
    int64_t lo = c->succ_off[a], hi = c->succ_off[a + 1], s = lo;
    while (lo < hi) {
        int64_t mid = (lo + hi) / 2;
        if (c->succ_grk[mid] <= r) lo = mid + 1; else hi = mid;
    }
    return lo - s;
}

// An id outside a's successor list is coded by its global rank among the ids outside it.
static int64_t escape_rank(const codec *c, int32_t a, int32_t id) {
    int64_t r = c->grank[id];
    return r - succ_ranks_upto(c, a, r);
}

static int64_t escape_unrank(const codec *c, int32_t a, int64_t adj) {
    int64_t r = adj;
    for (;;) {  // the adj-th rank (from 0) not taken by the list
        int64_t next = adj + succ_ranks_upto(c, a, r);
        if (next == r) return r;
        r = next;
    }
}

int64_t fk_store_header_positions(const fk_store_header *h) { return h->n_tokens > 1 ? h->n_tokens - 1 : 0; }
int64_t fk_store_header_n_seqs(const fk_store_header *h) {
    int64_t p = fk_store_header_positions(h);
    return h->seq > 0 ? (p + h->seq - 1) / h->seq : 0;
}

// ------------------------------------------------------------------ header

static void header_pack(uint8_t *b, const fk_store_header *h, const store_params *p, uint64_t tok_bytes) {
    memset(b, 0, FK_STORE_HEADER_BYTES);
    memcpy(b, FK_STORE_MAGIC, 8);
    put_u32(b + 8, FK_STORE_VERSION);
    put_u32(b + 12, h->flags);
    put_u32(b + 16, (uint32_t)h->k);
    put_u32(b + 20, (uint32_t)h->seq);
    put_u64(b + 24, (uint64_t)h->vocab_size);
    put_u64(b + 32, (uint64_t)h->n_tokens);
    put_u64(b + 40, (uint64_t)h->corpus_bytes);
    put_u64(b + 48, h->model_fp);
    put_u64(b + 56, h->tokenizer_fp);
    put_u64(b + 64, h->corpus_fp);
    b[72] = p->q_lp; b[73] = p->n_bands; b[74] = p->band_w; b[75] = p->q_top; b[76] = p->q_ce; b[77] = p->succ_log2; b[78] = p->base;
    put_u64(b + 80, FK_STORE_HEADER_BYTES);
    put_u64(b + 88, tok_bytes);
    put_u64(b + 96, FK_STORE_HEADER_BYTES + tok_bytes);
    put_u32(b + 124, crc32_of(b, 124));
}

static fk_status header_check(const fk_store_header *h, const char *path) {
    if (h->flags & ~(uint32_t)(FK_STORE_ALIGNED | FK_STORE_BOS)) return fk_error(FK_ERR_FORMAT, "%s: unknown flags 0x%x", path, h->flags);
    if (h->k < 1 || h->k > FK_STORE_MAX_K) return fk_error(FK_ERR_FORMAT, "%s: k is %d, expected 1..%d", path, h->k, FK_STORE_MAX_K);
    if (h->seq < 1 || h->seq > FK_STORE_MAX_SEQ)
        return fk_error(FK_ERR_FORMAT, "%s: header field seq (sequence length) is %d, expected 1..%d", path, h->seq, FK_STORE_MAX_SEQ);
    if (h->vocab_size < 1 || h->vocab_size > FK_STORE_MAX_VOCAB)
        return fk_error(FK_ERR_FORMAT, "%s: header field vocab_size is %lld, expected 1..%d", path, (long long)h->vocab_size, FK_STORE_MAX_VOCAB);
    if (h->n_tokens < 0 || h->n_tokens > ((int64_t)1 << 40))
        return fk_error(FK_ERR_FORMAT, "%s: header field n_tokens is %lld, expected 0..2^40", path, (long long)h->n_tokens);
    if (h->corpus_bytes < 0 || h->corpus_bytes > ((int64_t)1 << 50))
        return fk_error(FK_ERR_FORMAT, "%s: header field corpus_bytes is %lld, expected 0..2^50", path, (long long)h->corpus_bytes);
    return FK_OK;
}

static fk_status header_unpack(const uint8_t *b, size_t size, const char *path, fk_store_header *h, store_params *p,
                               uint64_t *tok_bytes) {
    if (size < FK_STORE_HEADER_BYTES) return fk_error(FK_ERR_FORMAT, "%s: %zu bytes, too short for a store header (%d bytes)", path, size, FK_STORE_HEADER_BYTES);
    if (memcmp(b, FK_STORE_MAGIC, 8) != 0) return fk_error(FK_ERR_FORMAT, "%s: not a distribution store (magic is not FKDSTORE)", path);
    uint32_t ver = get_u32(b + 8);
    if (ver != FK_STORE_VERSION) return fk_error(FK_ERR_FORMAT, "%s: store version %u, this fusekit reads version %d", path, ver, FK_STORE_VERSION);
    if (get_u32(b + 124) != crc32_of(b, 124)) return fk_error(FK_ERR_FORMAT, "%s: header checksum mismatch (corrupt header)", path);
    h->flags = get_u32(b + 12);
    h->k = (int32_t)get_u32(b + 16);
    h->seq = (int32_t)get_u32(b + 20);
    h->vocab_size = (int64_t)get_u64(b + 24);
    h->n_tokens = (int64_t)get_u64(b + 32);
    h->corpus_bytes = (int64_t)get_u64(b + 40);
    h->model_fp = get_u64(b + 48);
    h->tokenizer_fp = get_u64(b + 56);
    h->corpus_fp = get_u64(b + 64);
    *p = (store_params){b[72], b[78], b[73], b[74], b[75], b[76], b[77]};
    FK_TRY(header_check(h, path));
    FK_TRY(params_check(p, path));
    *tok_bytes = get_u64(b + 88);
    if (get_u64(b + 80) != FK_STORE_HEADER_BYTES || *tok_bytes < TOKSEC_HEAD || *tok_bytes > size - FK_STORE_HEADER_BYTES ||
        get_u64(b + 96) != FK_STORE_HEADER_BYTES + *tok_bytes)
        return fk_error(FK_ERR_FORMAT, "%s: section offsets in the header are inconsistent with a file of %zu bytes (truncated?)", path, size);
    // the token count against the bytes that encode it, before any allocation sized by it
    uint64_t payload = *tok_bytes - TOKSEC_HEAD;
    if ((uint64_t)h->n_tokens > payload * FK_STORE_TOKENS_PER_BYTE + 1)
        return fk_error(FK_ERR_FORMAT, "%s: header field n_tokens is %lld but the tokenization section's %llu bytes encode at most %llu tokens",
                        path, (long long)h->n_tokens, (unsigned long long)payload, (unsigned long long)(payload * FK_STORE_TOKENS_PER_BYTE + 1));
    return FK_OK;
}

// ------------------------------------------------------------------ tokenization section

typedef struct {
    uctx n, id, dlen, idx[16], esc[16], len;
    bm inl[16], same[16];
} tok_ctx;

static void tok_ctx_init(tok_ctx *t) { bm_reset(t, sizeof *t); }
static inline int rank_cls(int64_t r) { int b = bitlen((uint64_t)r + 1); return b < 15 ? b : 15; }

// Adaptive successor lists for the tokenization: for each previous token (by rank), the
// ranks seen after it so far, most frequent first (a hit swaps the entry in front of the
// others of its count). A token is coded as its index there, or else as an escape and its rank.
typedef struct {
    int32_t *r;
    uint32_t *cnt;
    int32_t len, cap;
} dyn_list;

static void dyn_free(dyn_list *l, int64_t n) {
    for (int64_t i = 0; l && i < n; i++) { free(l[i].r); free(l[i].cnt); }
    free(l);
}

static bool dyn_push(dyn_list *l, int32_t r) {
    if (l->len == l->cap) {
        int32_t cap = l->cap ? 2 * l->cap : 4;
        int32_t *nr = realloc(l->r, (size_t)cap * sizeof *nr);
        if (nr) l->r = nr;
        uint32_t *nc = realloc(l->cnt, (size_t)cap * sizeof *nc);
        if (nc) l->cnt = nc;
        if (!nr || !nc) return false;
        l->cap = cap;
    }
    l->r[l->len] = r;
    l->cnt[l->len++] = 1;
    return true;
}

// Returns where the entry moved to (the entry there before moves to j).
static int32_t dyn_hit(dyn_list *l, int32_t j) {
    uint32_t c = l->cnt[j];
    int32_t lo = 0, hi = j;  // the first entry with count <= c (counts are descending)
    while (lo < hi) {
        int32_t mid = (lo + hi) / 2;
        if (l->cnt[mid] <= c) hi = mid; else lo = mid + 1;
    }
    int32_t t = l->r[lo];
    l->r[lo] = l->r[j];
    l->r[j] = t;
    l->cnt[lo]++;
    return lo;
}

// The encoder's index of (list, rank) -> position in the list: open addressing, keys + 1 so
// that 0 marks a free slot.
typedef struct { uint64_t *key; int32_t *pos; uint64_t cap, n; } pos_map;

static inline uint64_t pos_slot(const pos_map *m, uint64_t key) { return fk_hash64(key) & (m->cap - 1); }

static int32_t *pos_find(pos_map *m, uint64_t key) {
    if (m->cap == 0) return NULL;
    for (uint64_t i = pos_slot(m, key);; i = (i + 1) & (m->cap - 1)) {
        if (m->key[i] == key + 1) return &m->pos[i];
        if (m->key[i] == 0) return NULL;
    }
}

static bool pos_put(pos_map *m, uint64_t key, int32_t pos) {
    if (2 * (m->n + 1) > m->cap) {  // grow to keep the load under 1/2
        pos_map g = {calloc(m->cap ? 2 * m->cap : 1024, sizeof(uint64_t)), malloc((m->cap ? 2 * m->cap : 1024) * sizeof(int32_t)),
                     m->cap ? 2 * m->cap : 1024, m->n};
        if (!g.key || !g.pos) { free(g.key); free(g.pos); return false; }
        for (uint64_t i = 0; i < m->cap; i++)
            if (m->key[i]) {
                uint64_t k = pos_slot(&g, m->key[i] - 1);
                while (g.key[k]) k = (k + 1) & (g.cap - 1);
                g.key[k] = m->key[i];
                g.pos[k] = m->pos[i];
            }
        free(m->key); free(m->pos);
        *m = g;
    }
    uint64_t i = pos_slot(m, key);
    while (m->key[i] && m->key[i] != key + 1) i = (i + 1) & (m->cap - 1);
    if (!m->key[i]) m->n++;
    m->key[i] = key + 1;
    m->pos[i] = pos;
    return true;
}

// Encodes c->tok / c->begin (ranks already built) into out: head + payload.
static fk_status tok_encode(const codec *c, fk_store_buf *out) {
    int64_t n = c->h.n_tokens;
    int32_t D = c->n_distinct;
    int64_t *dlen = malloc((size_t)(D ? D : 1) * sizeof(int64_t));
    if (!dlen) return fk_error(FK_ERR_NOMEM, "out of memory");
    for (int32_t r = 0; r < D; r++) dlen[r] = -1;
    for (int64_t i = 0; i < n; i++) {
        int32_t r = c->grank[c->tok[i]];
        if (dlen[r] < 0) dlen[r] = c->begin[i + 1] - c->begin[i];
    }
    tok_ctx *t = malloc(sizeof *t);
    if (!t || !buf_reserve(out, TOKSEC_HEAD)) { free(dlen); free(t); return fk_error(FK_ERR_NOMEM, "out of memory"); }
    tok_ctx_init(t);
    size_t head = out->n;
    memset(out->data + head, 0, TOKSEC_HEAD);
    out->n += TOKSEC_HEAD;
    rc_enc e;
    rc_enc_init(&e, out);
    enc_uint(&e, &t->n, (uint64_t)D);
    for (int32_t r = 0; r < D; r++) enc_uint(&e, &t->id, (uint64_t)c->gid[r]);
    for (int32_t r = 0; r < D; r++) enc_uint(&e, &t->dlen, (uint64_t)dlen[r]);
    dyn_list *lists = calloc((size_t)(D ? D : 1), sizeof *lists), first = {0};
    pos_map pm = {0};
    bool oom = !lists;
    for (int64_t i = 0; i < n && !oom; i++) {
        int32_t r = c->grank[c->tok[i]];
        int64_t pr = i ? c->grank[c->tok[i - 1]] : -1;
        dyn_list *l = pr >= 0 ? &lists[pr] : &first;
        uint64_t base = (uint64_t)(pr + 1) << 32;
        int lc = rank_cls(l->len);
        int32_t *at = pos_find(&pm, base | (uint32_t)r);
        rc_bit(&e, &t->inl[lc], at != NULL);
        if (at) {
            int32_t j = *at;
            enc_uint(&e, &t->idx[lc], (uint64_t)j);
            int32_t lo = dyn_hit(l, j);
            *at = lo;
            if (lo != j) *pos_find(&pm, base | (uint32_t)l->r[j]) = j;
        } else {
            enc_uint(&e, &t->esc[lc], (uint64_t)r);
            oom = !dyn_push(l, r) || !pos_put(&pm, base | (uint32_t)r, l->len - 1);
        }
        int64_t len = c->begin[i + 1] - c->begin[i];
        rc_bit(&e, &t->same[rank_cls(r)], len != dlen[r]);
        if (len != dlen[r]) enc_uint(&e, &t->len, (uint64_t)len);
    }
    rc_enc_flush(&e);
    dyn_free(lists, D);
    free(first.r); free(first.cnt);
    free(pm.key); free(pm.pos);
    free(dlen); free(t);
    if (oom) return fk_error(FK_ERR_NOMEM, "out of memory");
    if (e.oom) return fk_error(FK_ERR_NOMEM, "out of memory");
    uint64_t payload = out->n - head - TOKSEC_HEAD;
    put_u64(out->data + head, payload);
    put_u32(out->data + head + 8, crc32_of(out->data + head + TOKSEC_HEAD, payload));
    return FK_OK;
}

// Decodes the section at b (sec_bytes long) into c->tok, c->begin.
static fk_status tok_decode(codec *c, const uint8_t *b, uint64_t sec_bytes, const char *path) {
    uint64_t payload = get_u64(b);
    if (payload != sec_bytes - TOKSEC_HEAD || get_u32(b + 12) != 0)
        return fk_error(FK_ERR_FORMAT, "%s: tokenization section head is inconsistent (size or reserved field)", path);
    if (get_u32(b + 8) != crc32_of(b + TOKSEC_HEAD, payload))
        return fk_error(FK_ERR_FORMAT, "%s: tokenization checksum mismatch (corrupt or truncated file)", path);
    int64_t n = c->h.n_tokens, V = c->h.vocab_size;
    c->tok = malloc((size_t)(n ? n : 1) * sizeof(int32_t));
    c->begin = malloc((size_t)(n + 1) * sizeof(int64_t));
    tok_ctx *t = malloc(sizeof *t);
    if (!c->tok || !c->begin || !t) { free(t); return fk_error(FK_ERR_NOMEM, "out of memory reading %s (%lld tokens)", path, (long long)n); }
    tok_ctx_init(t);
    rc_dec d;
    rc_dec_init(&d, b + TOKSEC_HEAD, payload);
    fk_status st = FK_OK;
    uint64_t D = dec_uint(&d, &t->n);
    int32_t *gid = NULL;
    int64_t *dlen = NULL;
    dyn_list *lists = NULL, first = {0};
    if (D > (uint64_t)V) { st = fk_error(FK_ERR_FORMAT, "%s: tokenization has %llu distinct ids, more than the vocabulary", path, (unsigned long long)D); goto done; }
    gid = malloc((size_t)(D ? D : 1) * sizeof(int32_t));
    dlen = malloc((size_t)(D ? D : 1) * sizeof(int64_t));
    if (!gid || !dlen) { st = fk_error(FK_ERR_NOMEM, "out of memory"); goto done; }
    for (uint64_t r = 0; r < D; r++) {
        uint64_t id = dec_uint(&d, &t->id);
        if (id >= (uint64_t)V) { st = fk_error(FK_ERR_FORMAT, "%s: tokenization id %llu is outside the vocabulary", path, (unsigned long long)id); goto done; }
        gid[r] = (int32_t)id;
    }
    for (uint64_t r = 0; r < D; r++) dlen[r] = (int64_t)dec_uint(&d, &t->dlen);
    int64_t at = 0;
    lists = calloc((size_t)(D ? D : 1), sizeof *lists);
    if (!lists) { st = fk_error(FK_ERR_NOMEM, "out of memory"); goto done; }
    int32_t prev = -1;
    for (int64_t i = 0; i < n; i++) {
        dyn_list *l = prev >= 0 ? &lists[prev] : &first;
        int lc = rank_cls(l->len);
        uint64_t r;
        if (rd_bit(&d, &t->inl[lc])) {
            uint64_t j = dec_uint(&d, &t->idx[lc]);
            if (j >= (uint64_t)l->len) { st = fk_error(FK_ERR_FORMAT, "%s: token %lld does not decode (corrupt tokenization)", path, (long long)i); goto done; }
            r = (uint64_t)l->r[j];
            dyn_hit(l, (int32_t)j);
        } else {
            r = dec_uint(&d, &t->esc[lc]);
            if (r >= D) {
                st = fk_error(FK_ERR_FORMAT, "%s: token %lld has rank %llu of %llu (corrupt tokenization)", path, (long long)i,
                              (unsigned long long)r, (unsigned long long)D);
                goto done;
            }
            if (!dyn_push(l, (int32_t)r)) { st = fk_error(FK_ERR_NOMEM, "out of memory"); goto done; }
        }
        int64_t len = rd_bit(&d, &t->same[rank_cls((int64_t)r)]) ? (int64_t)dec_uint(&d, &t->len) : dlen[r];
        c->tok[i] = gid[r];
        c->begin[i] = at;
        at += len;
        if (at > c->h.corpus_bytes || d.over) {
            st = fk_error(FK_ERR_FORMAT, "%s: token spans run past the corpus (%lld bytes) at token %lld", path, (long long)c->h.corpus_bytes,
                          (long long)i);
            goto done;
        }
        prev = (int32_t)r;
    }
    c->begin[n] = at;
    if (at != c->h.corpus_bytes || d.over)
        st = fk_error(FK_ERR_FORMAT, "%s: token spans cover %lld bytes, the header says %lld", path, (long long)at, (long long)c->h.corpus_bytes);
done:
    dyn_free(lists, (int64_t)D);
    free(first.r); free(first.cnt);
    free(gid); free(dlen); free(t);
    return st;
}

// ------------------------------------------------------------------ records

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
    if (!buf_reserve(out, PRIOR_HEAD)) return fk_error(FK_ERR_NOMEM, "out of memory");
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
    put_u32(out->data + head + 4, crc32_of(out->data + head + PRIOR_HEAD, payload));
    return FK_OK;
}

// Reads a prior section from b (avail bytes there); *bytes gets its size.
static fk_status prior_decode(const uint8_t *b, uint64_t avail, rec_ctx **out, uint64_t *bytes, const char *path) {
    *out = NULL;
    if (avail < PRIOR_HEAD || get_u32(b) > avail - PRIOR_HEAD)
        return fk_error(FK_ERR_FORMAT, "%s: the model prior section is truncated", path);
    uint32_t payload = get_u32(b);
    if (get_u32(b + 4) != crc32_of(b + PRIOR_HEAD, payload)) return fk_error(FK_ERR_FORMAT, "%s: model prior checksum mismatch", path);
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
        m[i] = v == 0 ? (bm){1u << (RC_PBITS - 1), 0} : (bm){(uint16_t)(q * 16 + 8), PRIOR_N};
        if (m[i].p < 32) m[i].p = 32;
        if (m[i].p > (1u << RC_PBITS) - 32) m[i].p = (1u << RC_PBITS) - 32;
        prev = v != 0;
    }
    if (d.over) { free(r); return fk_error(FK_ERR_FORMAT, "%s: the model prior section is corrupt", path); }
    *out = r;
    *bytes = PRIOR_HEAD + (uint64_t)payload;
    return FK_OK;
}

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

// Validates q as sequence c of the codec's store and appends its record to rec (head
// included); the models start from init (NULL: 1/2), and fin (may be NULL) gets their last state.
static fk_status rec_encode(const codec *c, const rec_ctx *init, int64_t seq_idx, const fk_store_seq *q, fk_store_buf *rec,
                            rec_ctx *fin, const char *path) {
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
    size_t start = rec->n;
    if (!buf_reserve(rec, REC_HEAD + REC_FIXED + (size_t)n * 4)) return fk_error(FK_ERR_NOMEM, "out of memory");
    memset(rec->data + start, 0, REC_HEAD);
    put_u64(rec->data + start + REC_HEAD, (uint64_t)seq_idx);
    put_f64(rec->data + start + REC_HEAD + 8, q->mean_ce);
    rec->n = start + REC_HEAD + REC_FIXED;
    rec_ctx *x = malloc(sizeof *x);
    if (!x) return fk_error(FK_ERR_NOMEM, "out of memory");
    rec_ctx_init(x, init);
    rc_enc e;
    rc_enc_init(&e, rec);
    const double s_lp = ldexp(1.0, c->p.q_lp), s_top = ldexp(1.0, c->p.q_top), s_ce = ldexp(1.0, c->p.q_ce);
    fk_status st = FK_OK;
    double dec[FK_STORE_MAX_K];
    int64_t used[FK_STORE_MAX_K + 1];
    int lvs[FK_STORE_MAX_K];
    for (int64_t t = 0; t < n && st == FK_OK; t++) {
        int64_t p = first + t;
        int32_t a = c->tok[p], y = c->tok[p + 1];
        int cnt = q->count[t];
        const float *lp = q->logp + t * k;
        const int32_t *ids = q->ids + t * k;
        double ce = q->ce[t] > 0 ? q->ce[t] : 0;
        enc_uint(&e, &x->count, (uint64_t)(k - cnt));
        if (cnt == 0) {
            double v = nearbyint(ce * s_ce);
            if (v > 4e9) { st = fk_error(FK_ERR_ARG, "%s: cross-entropy %g at position %lld is out of range", path, ce, (long long)p); break; }
            enc_uint(&e, &x->ce_none, (uint64_t)v);
            continue;
        }
        double top = lp[0] < 0 ? -(double)lp[0] : 0;
        double a0d = nearbyint(top * s_top);
        if (a0d > 4e9) { st = fk_error(FK_ERR_ARG, "%s: top-1 log-prob %g at position %lld is out of range", path, lp[0], (long long)p); break; }
        uint64_t a0 = (uint64_t)a0d;
        lvs[0] = 0;
        for (int j = 1; j < cnt; j++) {
            lvs[j] = grid_quant(c, ((double)lp[0] - (double)lp[j]) * s_lp);
            enc_uint(&e, &x->gap[slot_cls(j)], (uint64_t)(lvs[j] - lvs[j - 1]));
        }
        enc_uint(&e, &x->top1[top_cls(cnt, cnt > 1 ? lvs[1] : 0)], a0);
        dec[0] = -(double)a0 / s_top;
        for (int j = 1; j < cnt; j++) dec[j] = dec[0] - (double)c->lev[lvs[j]] / s_lp;
        int r = cnt;
        for (int j = 0; j < cnt; j++) if (ids[j] == y) { r = j; break; }
        int cc = conf_cls(a0);
        rc_bit(&e, &x->present[cc], r < cnt);
        int nu = 0, esc = 0;
        if (r < cnt) {
            enc_uint(&e, &x->rank[cc], (uint64_t)r);
            int64_t ly = succ_lookup(c, a, y);
            if (ly >= 0) used_insert(used, &nu, ly);
        }
        for (int j = 0; j < cnt; j++) {
            if (j == r) continue;
            int sc = slot_cls(j);
            int64_t li = succ_lookup(c, a, ids[j]);
            rc_bit(&e, &x->inlist[sc][esc], li >= 0);
            esc = li < 0;
            if (li >= 0) {
                enc_uint(&e, &x->li[sc], (uint64_t)used_rank(used, nu, li));
                used_insert(used, &nu, li);
            } else {
                enc_uint(&e, &x->gr[sc], (uint64_t)escape_rank(c, a, ids[j]));
            }
        }
        double pred = r < cnt ? -dec[r] : -dec[cnt - 1];
        double v = nearbyint((ce - pred) * s_ce);
        if (fabs(v) > 2e9) { st = fk_error(FK_ERR_ARG, "%s: cross-entropy %g at position %lld is out of range", path, ce, (long long)p); break; }
        enc_uint(&e, r < cnt ? &x->ce_hit : &x->ce_miss, zigzag((int64_t)v));
    }
    if (fin && st == FK_OK) memcpy(fin, x, sizeof *x);
    free(x);
    if (st != FK_OK) return st;
    rc_enc_flush(&e);
    if (e.oom) return fk_error(FK_ERR_NOMEM, "out of memory");
    size_t payload = rec->n - start - REC_HEAD;
    if (payload > UINT32_MAX) return fk_error(FK_ERR_ARG, "%s: sequence %lld encodes to more than 4 GiB", path, (long long)seq_idx);
    put_u32(rec->data + start, (uint32_t)payload);
    put_u32(rec->data + start + 4, crc32_of(rec->data + start + REC_HEAD, payload));
    return FK_OK;
}

// Decodes the record payload (CRC already checked) of sequence seq_idx into q.
static fk_status rec_decode(const codec *c, int64_t seq_idx, const uint8_t *payload, size_t size, fk_store_seq *q, const char *path) {
    const fk_store_header *h = &c->h;
    if (size < REC_FIXED || get_u64(payload) != (uint64_t)seq_idx)
        return fk_error(FK_ERR_FORMAT, "%s: record of sequence %lld is malformed (its index says %llu)", path, (long long)seq_idx,
                        size >= 8 ? (unsigned long long)get_u64(payload) : 0ull);
    int64_t first = seq_idx * h->seq, pos = fk_store_header_positions(h);
    int64_t n = pos - first < h->seq ? pos - first : h->seq;
    int k = h->k;
    FK_TRY(fk_store_seq_reserve(q, n, k));
    q->first = first;
    q->n = n;
    q->mean_ce = get_f64(payload + 8);
    rec_ctx *x = malloc(sizeof *x);
    if (!x) return fk_error(FK_ERR_NOMEM, "out of memory");
    rec_ctx_init(x, c->prior);
    rc_dec d;
    rc_dec_init(&d, payload + REC_FIXED, size - REC_FIXED);
    const double s_lp = ldexp(1.0, c->p.q_lp), s_top = ldexp(1.0, c->p.q_top), s_ce = ldexp(1.0, c->p.q_ce);
    bool aligned = h->flags & FK_STORE_ALIGNED;
    fk_status st = FK_OK;
    double dec[FK_STORE_MAX_K];
    int64_t used[FK_STORE_MAX_K + 1];
    int lvs[FK_STORE_MAX_K];
    for (int64_t t = 0; t < n; t++) {
        int64_t p = first + t;
        int32_t a = c->tok[p], y = c->tok[p + 1];
        float *lp = q->logp + t * k;
        int32_t *ids = q->ids + t * k;
        uint64_t kc = dec_uint(&d, &x->count);
        if (kc > (uint64_t)k || (kc == (uint64_t)k && !aligned)) { st = FK_ERR_FORMAT; break; }
        int cnt = k - (int)kc;
        q->count[t] = (uint8_t)cnt;
        for (int j = cnt; j < k; j++) { ids[j] = -1; lp[j] = -INFINITY; }
        if (cnt == 0) {
            q->ce[t] = (float)((double)dec_uint(&d, &x->ce_none) / s_ce);
            continue;
        }
        lvs[0] = 0;
        for (int j = 1; j < cnt; j++) {
            uint64_t g = dec_uint(&d, &x->gap[slot_cls(j)]);
            if (g >= (uint64_t)(c->n_lev - lvs[j - 1])) { st = FK_ERR_FORMAT; break; }
            lvs[j] = lvs[j - 1] + (int)g;
        }
        if (st != FK_OK) break;
        uint64_t a0 = dec_uint(&d, &x->top1[top_cls(cnt, cnt > 1 ? lvs[1] : 0)]);
        dec[0] = -(double)a0 / s_top;
        for (int j = 1; j < cnt; j++) dec[j] = dec[0] - (double)c->lev[lvs[j]] / s_lp;
        for (int j = 0; j < cnt; j++) lp[j] = (float)dec[j];
        int cc = conf_cls(a0), r = cnt, nu = 0, esc = 0;
        if (rd_bit(&d, &x->present[cc])) {
            uint64_t rr = dec_uint(&d, &x->rank[cc]);
            if (rr >= (uint64_t)cnt) { st = FK_ERR_FORMAT; break; }
            r = (int)rr;
            ids[r] = y;
            int64_t ly = succ_lookup(c, a, y);
            if (ly >= 0) used_insert(used, &nu, ly);
        }
        for (int j = 0; j < cnt; j++) {
            if (j == r) continue;
            int sc = slot_cls(j);
            int in = rd_bit(&d, &x->inlist[sc][esc]);
            esc = !in;
            if (in) {
                uint64_t av = dec_uint(&d, &x->li[sc]);
                int64_t len = c->succ_off[a + 1] - c->succ_off[a];
                if (av >= (uint64_t)len) { st = FK_ERR_FORMAT; break; }
                int64_t li = used_unrank(used, nu, (int64_t)av);
                if (li >= len) { st = FK_ERR_FORMAT; break; }
                used_insert(used, &nu, li);
                ids[j] = c->succ_id[c->succ_off[a] + li];
            } else {
                uint64_t adj = dec_uint(&d, &x->gr[sc]);
                if (adj >= (uint64_t)h->vocab_size) { st = FK_ERR_FORMAT; break; }
                int64_t gr = escape_unrank(c, a, (int64_t)adj);
                if (gr >= h->vocab_size) { st = FK_ERR_FORMAT; break; }
                ids[j] = c->gid[gr];
            }
        }
        if (st != FK_OK) break;
        double pred = r < cnt ? -dec[r] : -dec[cnt - 1];
        q->ce[t] = (float)(pred + (double)unzigzag(dec_uint(&d, r < cnt ? &x->ce_hit : &x->ce_miss)) / s_ce);
        if (d.over) break;
    }
    free(x);
    if (st != FK_OK || d.over)
        return fk_error(FK_ERR_FORMAT, "%s: record of sequence %lld does not decode (corrupt data)", path, (long long)seq_idx);
    return FK_OK;
}

// ------------------------------------------------------------------ shared set-up

static fk_status codec_setup_model(codec *c) {
    FK_TRY(grid_build(c));
    FK_TRY(model_ranks(c));
    return model_successors(c);
}

// ------------------------------------------------------------------ reader

struct fk_store {
    char *path;
    fk_mmap map;
    codec c;
    int64_t n_seqs;
    const uint8_t *index;  // n_seqs u64 record offsets
};

const fk_store_header *fk_store_header_of(const fk_store *s) { return &s->c.h; }
const char *fk_store_path(const fk_store *s) { return s->path; }
int64_t fk_store_n_seqs(const fk_store *s) { return s->n_seqs; }
int64_t fk_store_file_bytes(const fk_store *s) { return (int64_t)s->map.size; }
const int32_t *fk_store_token_ids(const fk_store *s) { return s->c.tok; }
const int64_t *fk_store_token_begin(const fk_store *s) { return s->c.begin; }

void fk_store_close(fk_store *s) {
    if (!s) return;
    fk_mmap_close(&s->map);
    codec_free(&s->c);
    free(s->path);
    free(s);
}

static fk_status store_open(fk_store *s, const char *path) {
    FK_TRY(fk_mmap_open(&s->map, path));
    const uint8_t *b = s->map.data;
    size_t size = s->map.size;
    uint64_t tok_bytes;
    FK_TRY(header_unpack(b, size, path, &s->c.h, &s->c.p, &tok_bytes));
    const fk_store_header *h = &s->c.h;
    uint64_t rec0 = FK_STORE_HEADER_BYTES + tok_bytes;
    // footer
    if (size < rec0 + FOOTER_BYTES || memcmp(b + size - 8, FOOTER_MAGIC, 8) != 0)
        return fk_error(FK_ERR_FORMAT, "%s: no footer (the file is truncated, or an unfinished extraction)", path);
    const uint8_t *f = b + size - FOOTER_BYTES;
    uint64_t index_off = get_u64(f), n_seqs = get_u64(f + 8);
    s->n_seqs = fk_store_header_n_seqs(h);
    if (n_seqs != (uint64_t)s->n_seqs)
        return fk_error(FK_ERR_FORMAT, "%s: footer lists %llu sequences, the header implies %lld", path, (unsigned long long)n_seqs, (long long)s->n_seqs);
    if (get_u32(f + 20) != crc32_of(b, FK_STORE_HEADER_BYTES))
        return fk_error(FK_ERR_FORMAT, "%s: the footer does not belong to this header (checksum mismatch)", path);
    if (index_off < rec0 || index_off > size - FOOTER_BYTES || (size - FOOTER_BYTES - index_off) != n_seqs * 8)
        return fk_error(FK_ERR_FORMAT, "%s: index offset %llu is inconsistent with %llu sequences in a file of %zu bytes", path,
                        (unsigned long long)index_off, (unsigned long long)n_seqs, size);
    s->index = b + index_off;
    if (get_u32(f + 16) != crc32_of(s->index, n_seqs * 8)) return fk_error(FK_ERR_FORMAT, "%s: index checksum mismatch (corrupt index)", path);
    // the prior, then every record offset: contiguous up to the index
    uint64_t at = rec0;
    if (n_seqs > 0) {
        uint64_t pb;
        FK_TRY(prior_decode(b + rec0, index_off - rec0, &s->c.prior, &pb, path));
        at += pb;
    }
    for (uint64_t i = 0; i < n_seqs; i++) {
        uint64_t off = get_u64(s->index + 8 * i);
        if (off != at || off + REC_HEAD > index_off)
            return fk_error(FK_ERR_FORMAT, "%s: record %llu is at offset %llu, expected %llu", path, (unsigned long long)i,
                            (unsigned long long)off, (unsigned long long)at);
        uint64_t len = get_u32(b + off);
        if (len < REC_FIXED || off + REC_HEAD + len > index_off)
            return fk_error(FK_ERR_FORMAT, "%s: record %llu (offset %llu) claims %llu bytes, past the index at %llu", path,
                            (unsigned long long)i, (unsigned long long)off, (unsigned long long)len, (unsigned long long)index_off);
        // its positions (decoded into positions x k arrays) against its bytes: each position
        // costs at least one range-coded decision of log2(2048/2016) bits, so 352.1 a byte at best
        int64_t first = (int64_t)i * h->seq, rn = fk_store_header_positions(h) - first;
        if (rn > h->seq) rn = h->seq;
        if ((uint64_t)rn > (len - REC_FIXED + 1) * FK_STORE_POSITIONS_PER_BYTE)
            return fk_error(FK_ERR_FORMAT, "%s: record %llu holds %lld positions by the header (seq %d, n_tokens %lld) but its %llu bytes "
                            "encode at most %llu", path, (unsigned long long)i, (long long)rn, h->seq, (long long)h->n_tokens,
                            (unsigned long long)len, (unsigned long long)((len - REC_FIXED + 1) * FK_STORE_POSITIONS_PER_BYTE));
        at = off + REC_HEAD + len;
    }
    if (at != index_off)
        return fk_error(FK_ERR_FORMAT, "%s: %llu bytes between the last record and the index", path, (unsigned long long)(index_off - at));
    // tokenization, then the id model built from it: ids and spans (12 bytes a token), ranks and
    // successor offsets (48 bytes a vocabulary entry), successor lists (28 bytes a pair)
    int64_t pairs = h->n_tokens < ((int64_t)1 << s->c.p.succ_log2) ? h->n_tokens : ((int64_t)1 << s->c.p.succ_log2);
    double need = 12.0 * (double)h->n_tokens + 48.0 * (double)h->vocab_size + 28.0 * (double)pairs;
    char what[600];
    snprintf(what, sizeof what, "%s: opening the store (n_tokens %lld, vocab_size %lld)", path, (long long)h->n_tokens, (long long)h->vocab_size);
    FK_TRY(fk_mem_check(what, need));
    FK_TRY(tok_decode(&s->c, b + FK_STORE_HEADER_BYTES, tok_bytes, path));
    for (int64_t i = 0; i < h->n_tokens; i++)
        if (s->c.tok[i] < 0 || s->c.tok[i] >= h->vocab_size) return fk_error(FK_ERR_FORMAT, "%s: token %lld is outside the vocabulary", path, (long long)i);
    return codec_setup_model(&s->c);
}

fk_status fk_store_open(const char *path, fk_store **out) {
    *out = NULL;
    fk_store *s = calloc(1, sizeof *s);
    if (!s || !(s->path = strdup(path))) { free(s); return fk_error(FK_ERR_NOMEM, "out of memory"); }
    fk_status st = store_open(s, path);
    if (st != FK_OK) { fk_store_close(s); return st; }
    *out = s;
    return FK_OK;
}

fk_status fk_store_read_seq(const fk_store *s, int64_t c, fk_store_seq *out) {
    if (c < 0 || c >= s->n_seqs)
        return fk_error(FK_ERR_ARG, "%s: sequence %lld does not exist (the store has %lld)", s->path, (long long)c, (long long)s->n_seqs);
    const uint8_t *b = s->map.data;
    uint64_t off = get_u64(s->index + 8 * (uint64_t)c);
    uint32_t len = get_u32(b + off);
    const uint8_t *payload = b + off + REC_HEAD;
    if (get_u32(b + off + 4) != crc32_of(payload, len))
        return fk_error(FK_ERR_FORMAT, "%s: record of sequence %lld is corrupt (checksum mismatch)", s->path, (long long)c);
    return rec_decode(&s->c, c, payload, len, out, s->path);
}

fk_status fk_store_verify(const fk_store *s) {
    fk_store_seq q = {0};
    fk_status st = FK_OK;
    for (int64_t c = 0; c < s->n_seqs && st == FK_OK; c++) st = fk_store_read_seq(s, c, &q);
    fk_store_seq_free(&q);
    return st;
}

fk_status fk_store_check(const fk_store *s, uint64_t model_fp, uint64_t tokenizer_fp, uint64_t corpus_fp) {
    const fk_store_header *h = &s->c.h;
    const char *what = NULL;
    uint64_t have = 0, want = 0;
    if (model_fp && h->model_fp != model_fp) { what = "model"; have = h->model_fp; want = model_fp; }
    else if (tokenizer_fp && h->tokenizer_fp != tokenizer_fp) { what = "tokenizer"; have = h->tokenizer_fp; want = tokenizer_fp; }
    else if (corpus_fp && h->corpus_fp != corpus_fp) { what = "corpus"; have = h->corpus_fp; want = corpus_fp; }
    if (what)
        return fk_error(FK_ERR_ARG, "%s: %s fingerprint differs: the store was extracted with %016llx, expected %016llx", s->path, what,
                        (unsigned long long)have, (unsigned long long)want);
    return FK_OK;
}

double fk_store_offset_error_bound(const fk_store *s, double offset) {
    const store_params *p = &s->c.p;
    if (offset <= 0) return 1e-6;
    if (offset >= MAX_OFFSET_NATS) return INFINITY;
    double d = ldexp((double)p->base, -p->q_lp), D = d * p->band_w * (double)(1 << p->n_bands);
    int b = (int)(offset / D) + 1;  // the next band's step covers rounding at a band's edge
    if (b > p->n_bands) b = p->n_bands;
    return 0.5 * d * (double)(1 << b) + 1e-6 * (1 + offset);
}

double fk_store_logp_error_bound(const fk_store *s, double offset) {
    return ldexp(1.0, -(s->c.p.q_top + 1)) + fk_store_offset_error_bound(s, offset);
}

double fk_store_ce_error_bound(const fk_store *s) { return ldexp(1.0, -(s->c.p.q_ce + 1)) + 1e-5; }

fk_status fk_store_seq_kl(const fk_store_seq *p, const fk_store_seq *q, double *kl) {
    if (p->n != q->n) return fk_error(FK_ERR_ARG, "KL: sequences of %lld and %lld positions", (long long)p->n, (long long)q->n);
    for (int64_t t = 0; t < p->n; t++) {
        int np = p->count[t], nq = q->count[t];
        const int32_t *pi = p->ids + t * p->k, *qi = q->ids + t * q->k;
        const float *pl = p->logp + t * p->k, *ql = q->logp + t * q->k;
        if (np == 0) { kl[t] = 0; continue; }
        double mp = -INFINITY, mq = -INFINITY, sp = 0, sq = 0;
        for (int j = 0; j < np; j++) mp = pl[j] > mp ? pl[j] : mp;
        for (int j = 0; j < nq; j++) mq = ql[j] > mq ? ql[j] : mq;
        for (int j = 0; j < np; j++) sp += exp(pl[j] - mp);
        for (int j = 0; j < nq; j++) sq += exp(ql[j] - mq);
        double lzp = mp + log(sp), lzq = mq + log(sq), v = 0;
        for (int j = 0; j < np && isfinite(v); j++) {
            int m = -1;
            for (int i = 0; i < nq; i++) if (qi[i] == pi[j]) { m = i; break; }
            double lp = pl[j] - lzp;
            if (m < 0) { v = INFINITY; break; }
            v += exp(lp) * (lp - (ql[m] - lzq));
        }
        kl[t] = v < 0 ? 0 : v;  // rounding can leave -1e-17
    }
    return FK_OK;
}

// ------------------------------------------------------------------ writer


struct fk_store_writer {
    char *path, *partial;
    FILE *fp;
    codec c;
    uint8_t header[FK_STORE_HEADER_BYTES];
    int64_t next, n_seqs;
    uint64_t *offsets;   // n_seqs record offsets
    uint64_t at;         // bytes in the partial
    fk_store_buf rec;
};

int64_t fk_store_writer_next(const fk_store_writer *w) { return w->next; }

static void writer_free(fk_store_writer *w) {
    if (!w) return;
    if (w->fp) fclose(w->fp);
    codec_free(&w->c);
    free(w->path); free(w->partial); free(w->offsets);
    fk_store_buf_free(&w->rec);
    free(w);
}

void fk_store_writer_close(fk_store_writer *w) { writer_free(w); }

const char *fk_store_header_diff(const fk_store_header *a, const fk_store_header *b) {
    if (a->model_fp != b->model_fp) return "model fingerprint";
    if (a->tokenizer_fp != b->tokenizer_fp) return "tokenizer fingerprint";
    if (a->corpus_fp != b->corpus_fp) return "corpus fingerprint";
    if (a->flags != b->flags) return "flags";
    if (a->k != b->k) return "k";
    if (a->seq != b->seq) return "sequence length";
    if (a->vocab_size != b->vocab_size) return "vocabulary size";
    if (a->n_tokens != b->n_tokens) return "token count";
    if (a->corpus_bytes != b->corpus_bytes) return "corpus size";
    return NULL;
}

// Resumes the partial at w->partial when it starts with our header and tokenization (sec).
static fk_status writer_resume(fk_store_writer *w, const fk_store_buf *sec, int64_t *done) {
    fk_mmap m;
    FK_TRY(fk_mmap_open(&m, w->partial));
    const uint8_t *b = m.data;
    size_t size = m.size;
    uint64_t rec0 = FK_STORE_HEADER_BYTES + sec->n;
    if (size < rec0 || memcmp(b, w->header, FK_STORE_HEADER_BYTES) != 0 || memcmp(b + FK_STORE_HEADER_BYTES, sec->data, sec->n) != 0) {
        fk_store_header ph;
        store_params pp;
        uint64_t tb;
        const char *what = "its tokenization or compression parameters";
        if (size >= FK_STORE_HEADER_BYTES && header_unpack(b, size, w->partial, &ph, &pp, &tb) == FK_OK) {
            const char *d = fk_store_header_diff(&ph, &w->c.h);
            if (d) what = d;
        } else if (size < rec0) {
            what = "its length (it is shorter than the header and tokenization)";
        }
        fk_mmap_close(&m);
        return fk_error(FK_ERR_ARG, "%s is an unfinished store that differs from this one in %s; restart (fusekit extract --restart) discards it",
                        w->partial, what);
    }
    uint64_t off = rec0, pb;
    int64_t c = 0;
    if (size > rec0 && prior_decode(b + rec0, size - rec0, &w->c.prior, &pb, w->partial) == FK_OK) off += pb;
    while (w->c.prior && c < w->n_seqs && off + REC_HEAD <= size) {
        uint64_t len = get_u32(b + off);
        if (len < REC_FIXED || off + REC_HEAD + len > size) break;
        const uint8_t *payload = b + off + REC_HEAD;
        if (get_u32(b + off + 4) != crc32_of(payload, len) || get_u64(payload) != (uint64_t)c) break;
        w->offsets[c++] = off;
        off += REC_HEAD + len;
    }
    fk_mmap_close(&m);
    if (off < size && truncate(w->partial, (off_t)off) != 0)
        return fk_error(FK_ERR_IO, "cannot cut the torn end of %s: %s", w->partial, strerror(errno));
    w->fp = fopen(w->partial, "r+b");
    if (!w->fp || fseeko(w->fp, (off_t)off, SEEK_SET) != 0)
        return fk_error(FK_ERR_IO, "cannot reopen %s: %s", w->partial, strerror(errno));
    w->at = off;
    w->next = c;
    *done = c;
    return FK_OK;
}

fk_status fk_store_writer_open(const char *path, const fk_store_header *h, const int32_t *tok_ids, const int64_t *tok_begin,
                               bool restart, fk_store_writer **out, int64_t *done) {
    *out = NULL;
    *done = 0;
    FK_TRY(header_check(h, path));
    int64_t n = h->n_tokens;
    for (int64_t i = 0; i < n; i++)
        if (tok_ids[i] < 0 || tok_ids[i] >= h->vocab_size)
            return fk_error(FK_ERR_ARG, "%s: token %lld has id %d, outside the vocabulary (%lld)", path, (long long)i, tok_ids[i], (long long)h->vocab_size);
    if (tok_begin[0] != 0 || tok_begin[n] != h->corpus_bytes)
        return fk_error(FK_ERR_ARG, "%s: token spans must start at 0 and end at the corpus size %lld", path, (long long)h->corpus_bytes);
    for (int64_t i = 0; i < n; i++)
        if (tok_begin[i + 1] < tok_begin[i] || tok_begin[i + 1] - tok_begin[i] > UINT32_MAX)
            return fk_error(FK_ERR_ARG, "%s: token %lld's span [%lld, %lld) does not follow the one before it", path, (long long)i,
                            (long long)tok_begin[i], (long long)tok_begin[i + 1]);
    fk_store_writer *w = calloc(1, sizeof *w);
    if (!w) return fk_error(FK_ERR_NOMEM, "out of memory");
    fk_status st = FK_OK;
    fk_store_buf sec = {0};
    size_t pl = strlen(path);
    w->path = strdup(path);
    w->partial = malloc(pl + 9);
    w->c.h = *h;
    w->c.p = (store_params){DEF_Q_LP, DEF_BASE, DEF_N_BANDS, DEF_BAND_W, DEF_Q_TOP, DEF_Q_CE, DEF_SUCC_LOG2};
    w->c.tok = malloc((size_t)(n ? n : 1) * sizeof(int32_t));
    w->c.begin = malloc((size_t)(n + 1) * sizeof(int64_t));
    w->n_seqs = fk_store_header_n_seqs(h);
    w->offsets = malloc((size_t)(w->n_seqs ? w->n_seqs : 1) * sizeof(uint64_t));
    if (!w->path || !w->partial || !w->c.tok || !w->c.begin || !w->offsets) { st = fk_error(FK_ERR_NOMEM, "out of memory"); goto fail; }
    memcpy(w->partial, path, pl);
    memcpy(w->partial + pl, ".partial", 9);
    if (n) memcpy(w->c.tok, tok_ids, (size_t)n * sizeof(int32_t));
    memcpy(w->c.begin, tok_begin, (size_t)(n + 1) * sizeof(int64_t));
    if ((st = codec_setup_model(&w->c)) != FK_OK) goto fail;
    if ((st = tok_encode(&w->c, &sec)) != FK_OK) goto fail;
    free(w->c.begin);  // only the tokenization section needed the spans
    w->c.begin = NULL;
    header_pack(w->header, h, &w->c.p, sec.n);
    if (restart && unlink(w->partial) != 0 && errno != ENOENT) {
        st = fk_error(FK_ERR_IO, "cannot remove %s: %s", w->partial, strerror(errno));
        goto fail;
    }
    if (fk_path_exists(w->partial)) {
        if ((st = writer_resume(w, &sec, done)) != FK_OK) goto fail;
    } else {
        w->fp = fopen(w->partial, "wb");
        if (!w->fp) { st = fk_error(FK_ERR_IO, "cannot create %s: %s", w->partial, strerror(errno)); goto fail; }
        if (fwrite(w->header, 1, FK_STORE_HEADER_BYTES, w->fp) != FK_STORE_HEADER_BYTES || fwrite(sec.data, 1, sec.n, w->fp) != sec.n ||
            fflush(w->fp) != 0) {
            st = fk_error(FK_ERR_IO, "cannot write %s: %s", w->partial, strerror(errno));
            goto fail;
        }
        w->at = FK_STORE_HEADER_BYTES + sec.n;
    }
    fk_store_buf_free(&sec);
    *out = w;
    return FK_OK;
fail:
    fk_store_buf_free(&sec);
    writer_free(w);
    *done = 0;
    return st;
}

fk_status fk_store_encode_seq(const fk_store_writer *w, const fk_store_seq *q, fk_store_buf *rec) {
    int64_t seq = w->c.h.seq;
    if (q->first < 0 || q->first % seq != 0)
        return fk_error(FK_ERR_ARG, "%s: a sequence must start at a multiple of %lld (got position %lld)", w->partial, (long long)seq, (long long)q->first);
    if (q->first / seq >= w->n_seqs)
        return fk_error(FK_ERR_ARG, "%s: sequence %lld does not exist (the store has %lld)", w->partial, (long long)(q->first / seq), (long long)w->n_seqs);
    rec->n = 0;
    if (w->c.prior) return rec_encode(&w->c, w->c.prior, q->first / seq, q, rec, NULL, w->partial);
    // No prior yet: this must be sequence 0. Encode it once from 1/2 to learn the prior, then
    // emit the prior section followed by sequence 0's record encoded from it.
    if (q->first != 0)
        return fk_error(FK_ERR_ARG, "%s: sequence 0 must be encoded and written before the others", w->partial);
    rec_ctx *fin = malloc(sizeof *fin), *prior = NULL;
    if (!fin) return fk_error(FK_ERR_NOMEM, "out of memory");
    fk_status st = rec_encode(&w->c, NULL, 0, q, rec, fin, w->partial);
    rec->n = 0;
    uint64_t pb;
    if (st == FK_OK) st = prior_encode(fin, rec);
    if (st == FK_OK) st = prior_decode(rec->data, rec->n, &prior, &pb, w->partial);
    if (st == FK_OK) st = rec_encode(&w->c, prior, 0, q, rec, NULL, w->partial);
    free(fin);
    free(prior);
    return st;
}

fk_status fk_store_write_encoded(fk_store_writer *w, const fk_store_buf *rec) {
    uint64_t pb = 0;
    rec_ctx *prior = NULL;
    if (!w->c.prior && w->next == 0)  // sequence 0's buffer starts with the prior section
        FK_TRY(prior_decode(rec->data, rec->n, &prior, &pb, w->partial));
    if (rec->n < pb + REC_HEAD + REC_FIXED || get_u64(rec->data + pb + REC_HEAD) != (uint64_t)w->next) {
        free(prior);
        return fk_error(FK_ERR_ARG, "%s: sequences must be written in order; the next is %lld", w->partial, (long long)w->next);
    }
    if (fwrite(rec->data, 1, rec->n, w->fp) != rec->n || fflush(w->fp) != 0) {
        free(prior);
        return fk_error(FK_ERR_IO, "cannot write %s: %s", w->partial, strerror(errno));
    }
    if (prior) w->c.prior = prior;
    w->offsets[w->next++] = w->at + pb;
    w->at += rec->n;
    return FK_OK;
}

fk_status fk_store_write_seq(fk_store_writer *w, const fk_store_seq *q) {
    if (q->first != w->next * (int64_t)w->c.h.seq)
        return fk_error(FK_ERR_ARG, "%s: sequences must be written in order; the next is %lld (position %lld), got position %lld", w->partial,
                        (long long)w->next, (long long)(w->next * w->c.h.seq), (long long)q->first);
    FK_TRY(fk_store_encode_seq(w, q, &w->rec));
    return fk_store_write_encoded(w, &w->rec);
}

fk_status fk_store_writer_finish(fk_store_writer *w) {
    fk_status st = FK_OK;
    if (w->next != w->n_seqs) {
        st = fk_error(FK_ERR_ARG, "%s: %lld of %lld sequences written; the store cannot be finished", w->partial, (long long)w->next, (long long)w->n_seqs);
        writer_free(w);
        return st;
    }
    size_t ib = (size_t)w->n_seqs * 8;
    uint8_t *tail = malloc(ib + FOOTER_BYTES);
    if (!tail) { writer_free(w); return fk_error(FK_ERR_NOMEM, "out of memory"); }
    for (int64_t i = 0; i < w->n_seqs; i++) put_u64(tail + 8 * i, w->offsets[i]);
    uint8_t *f = tail + ib;
    put_u64(f, w->at);
    put_u64(f + 8, (uint64_t)w->n_seqs);
    put_u32(f + 16, crc32_of(tail, ib));
    put_u32(f + 20, crc32_of(w->header, FK_STORE_HEADER_BYTES));
    memcpy(f + 24, FOOTER_MAGIC, 8);
    if (fwrite(tail, 1, ib + FOOTER_BYTES, w->fp) != ib + FOOTER_BYTES || fflush(w->fp) != 0 || fsync(fileno(w->fp)) != 0)
        st = fk_error(FK_ERR_IO, "cannot write %s: %s", w->partial, strerror(errno));
    free(tail);
    if (st == FK_OK) {
        int rc = fclose(w->fp);
        w->fp = NULL;
        if (rc != 0) st = fk_error(FK_ERR_IO, "cannot close %s: %s", w->partial, strerror(errno));
    }
    if (st == FK_OK && rename(w->partial, w->path) != 0)
        st = fk_error(FK_ERR_IO, "cannot rename %s to %s: %s", w->partial, w->path, strerror(errno));
    if (st == FK_OK) {
        char *dir = strdup(w->path), *slash = dir ? strrchr(dir, '/') : NULL;
        if (dir) {
            if (slash) { *slash = 0; fk_fsync_dir(*dir ? dir : "/"); } else fk_fsync_dir(".");
            free(dir);
        }
    }
    writer_free(w);
    return st;
}
