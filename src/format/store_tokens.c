// Distribution stores: the tokenization section, the corpus's ids and byte spans coded once per
// store. Each token is coded against an adaptive list of the ranks seen after the previous
// token (most frequent first): its index there, or an escape and its global rank; its byte
// length only when it differs from its id's first occurrence.
#include "format/store_rc.h"

#include <stdlib.h>

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

fk_status store_tok_encode(const codec *c, fk_store_buf *out) {
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
    if (!t || !store_buf_reserve(out, TOKSEC_HEAD)) { free(dlen); free(t); return fk_error(FK_ERR_NOMEM, "out of memory"); }
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
    put_u32(out->data + head + 8, store_crc32(out->data + head + TOKSEC_HEAD, payload));
    return FK_OK;
}

// The tokens, once the distinct ids (gid, by rank) and their first lengths (dlen) are decoded:
// into c->tok and c->begin, checked against the corpus size.
static fk_status tok_decode_tokens(codec *c, rc_dec *d, tok_ctx *t, const int32_t *gid, const int64_t *dlen, uint64_t D, const char *path) {
    int64_t n = c->h.n_tokens, at = 0;
    dyn_list *lists = calloc((size_t)(D ? D : 1), sizeof *lists), first = {0};
    if (!lists) return fk_error(FK_ERR_NOMEM, "out of memory");
    fk_status st = FK_OK;
    int32_t prev = -1;
    for (int64_t i = 0; i < n; i++) {
        dyn_list *l = prev >= 0 ? &lists[prev] : &first;
        int lc = rank_cls(l->len);
        uint64_t r;
        if (rd_bit(d, &t->inl[lc])) {
            uint64_t j = dec_uint(d, &t->idx[lc]);
            if (j >= (uint64_t)l->len) { st = fk_error(FK_ERR_FORMAT, "%s: token %lld does not decode (corrupt tokenization)", path, (long long)i); break; }
            r = (uint64_t)l->r[j];
            dyn_hit(l, (int32_t)j);
        } else {
            r = dec_uint(d, &t->esc[lc]);
            if (r >= D) {
                st = fk_error(FK_ERR_FORMAT, "%s: token %lld has rank %llu of %llu (corrupt tokenization)", path, (long long)i,
                              (unsigned long long)r, (unsigned long long)D);
                break;
            }
            if (!dyn_push(l, (int32_t)r)) { st = fk_error(FK_ERR_NOMEM, "out of memory"); break; }
        }
        int64_t len = rd_bit(d, &t->same[rank_cls((int64_t)r)]) ? (int64_t)dec_uint(d, &t->len) : dlen[r];
        c->tok[i] = gid[r];
        c->begin[i] = at;
        at += len;
        if (at > c->h.corpus_bytes || d->over) {
            st = fk_error(FK_ERR_FORMAT, "%s: token spans run past the corpus (%lld bytes) at token %lld", path, (long long)c->h.corpus_bytes,
                          (long long)i);
            break;
        }
        prev = (int32_t)r;
    }
    if (st == FK_OK) {
        c->begin[n] = at;
        if (at != c->h.corpus_bytes || d->over)
            st = fk_error(FK_ERR_FORMAT, "%s: token spans cover %lld bytes, the header says %lld", path, (long long)at, (long long)c->h.corpus_bytes);
    }
    dyn_free(lists, (int64_t)D);
    free(first.r); free(first.cnt);
    return st;
}

fk_status store_tok_decode(codec *c, const uint8_t *b, uint64_t sec_bytes, const char *path) {
    uint64_t payload = get_u64(b);
    if (payload != sec_bytes - TOKSEC_HEAD || get_u32(b + 12) != 0)
        return fk_error(FK_ERR_FORMAT, "%s: tokenization section head is inconsistent (size or reserved field)", path);
    if (get_u32(b + 8) != store_crc32(b + TOKSEC_HEAD, payload))
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
    st = tok_decode_tokens(c, &d, t, gid, dlen, D, path);
done:
    free(gid); free(dlen); free(t);
    return st;
}
