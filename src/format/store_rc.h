// Distribution stores: the binary range coder, adaptive bit models and adaptive integers that
// the tokenization, prior and record codecs are written in (static inline: they run per bit).
// 32-bit range, 11-bit adaptive probabilities of a 0 bit, carries propagated through a
// pending run of 0xFF bytes. Encoder and decoder normalise identically.
#ifndef FUSEKIT_STORE_RC_H
#define FUSEKIT_STORE_RC_H

#include "format/store_internal.h"

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

// Keeps a model's probability inside [32, 2048 - 32] / 2048.
static inline uint16_t bm_clamp(uint32_t p) {
    if (p < 32) return 32;
    if (p > (1u << RC_PBITS) - 32) return (uint16_t)((1u << RC_PBITS) - 32);
    return (uint16_t)p;
}

static inline void bm_update(bm *m, int bit) {
    uint32_t rate = bm_rate[m->n];
    if (!bit) m->p = (uint16_t)(m->p + ((((1u << RC_PBITS) - m->p) * rate) >> 16));
    else m->p = (uint16_t)(m->p - ((m->p * rate) >> 16));
    m->p = bm_clamp(m->p);
    if (m->n < RC_LIMIT) m->n++;
}

// ------------------------------------------------------------------ encoder

typedef struct {
    fk_store_buf *out;
    uint64_t low;
    uint32_t range;
    uint8_t cache;
    uint64_t pending;
    bool oom;
} rc_enc;

static inline void rc_enc_init(rc_enc *e, fk_store_buf *out) {
    e->out = out; e->low = 0; e->range = 0xFFFFFFFFu; e->cache = 0; e->pending = 1; e->oom = false;
}

static inline void rc_emit(rc_enc *e, uint8_t b) {
    if (e->out->n == e->out->cap && !store_buf_reserve(e->out, 1)) { e->oom = true; return; }
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

static inline void rc_enc_flush(rc_enc *e) { for (int i = 0; i < 5; i++) rc_shift_low(e); }

// ------------------------------------------------------------------ decoder

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

static inline void rc_dec_init(rc_dec *d, const uint8_t *p, size_t n) {
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

// ------------------------------------------------------------------ adaptive integers
// Adaptive Elias-gamma integers: v+1 has bit length b+1; b in unary (one model per step),
// the two bits below the leading one with models per b, the rest at probability 1/2.
typedef struct {
    bm len[33];
    bm hi[33][3];
} uctx;

// Resets `bytes` of bit models (a struct made only of bm and uctx members) to 1/2, unseen.
static inline void bm_reset(void *models, size_t bytes) {
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

static inline uint64_t dec_uint(rc_dec *d, uctx *c) {
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

#endif
