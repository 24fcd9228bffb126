// Vocabulary maps (MinED, fusion.md §3): every source token to the target token with the
// same bytes, or the nearest one by edit distance, or (approx) the first token of the target's
// encoding of its bytes; and their cache files. See fusekit/align.h.
//
// Speed: the search for one source token visits the target tokens bucketed by length in
// order of length difference (the distance is at least the difference, so it stops once the
// difference exceeds the best distance found), skips tokens whose byte classes alone prove a
// larger distance (a bag distance over byte classes), and computes the rest with the bit-parallel distance with an early exit at
// the bound. Source tokens are spread over OpenMP threads; each result depends on its token
// only, so any thread count gives the same map.
#include "fusekit/align.h"
#include "fuse/align_internal.h"

#include <stdlib.h>
#include <string.h>

#define VMAP_MAGIC "FKVOCMAP"
#define VMAP_VERSION 1u  // bump when the mapping rules change: old cache files are then rebuilt
#define VMAP_HEADER 48

const char *fk_vmap_mode_name(fk_vmap_mode mode) {
    static const char *names[] = {"mined", "exact", "prefix", "fusellm", "fusellm-exact", "approx"};
    return mode >= FK_VMAP_MINED && mode <= FK_VMAP_APPROX ? names[mode] : "mined";
}

static bool vmap_mode_valid(fk_vmap_mode mode) { return mode >= FK_VMAP_MINED && mode <= FK_VMAP_APPROX; }

fk_status fk_vmap_parse_mode(const char *name, fk_vmap_mode *mode) {
    if (strcmp(name, "mined") == 0) *mode = FK_VMAP_MINED;
    else if (strcmp(name, "exact") == 0) *mode = FK_VMAP_EXACT;
    else if (strcmp(name, "prefix") == 0) *mode = FK_VMAP_PREFIX;
    else if (strcmp(name, "fusellm") == 0) *mode = FK_VMAP_FUSELLM;
    else if (strcmp(name, "fusellm-exact") == 0) *mode = FK_VMAP_FUSELLM_EXACT;
    else if (strcmp(name, "approx") == 0) *mode = FK_VMAP_APPROX;
    else return fk_error(FK_ERR_ARG, "vocabulary map must be mined, exact, prefix, fusellm, fusellm-exact or approx (got \"%s\")", name);
    return FK_OK;
}

// ---------------------------------------------------------------- the bytes of a vocabulary
typedef struct {
    int32_t n;
    uint8_t *buf;
    uint64_t *off;  // token i: buf[off[i] .. off[i + 1])
} vbytes;

static void vbytes_free(vbytes *v) {
    free(v->buf);
    free(v->off);
}

static fk_status vbytes_load(const fk_tokenizer *t, vbytes *v) {
    memset(v, 0, sizeof *v);
    int32_t n = v->n = fk_tok_vocab_size(t);
    v->off = malloc(sizeof *v->off * ((size_t)n + 1));
    size_t cap = (size_t)n * 8 + 64, len = 0;
    v->buf = malloc(cap);
    if (!v->off || !v->buf) { vbytes_free(v); return fk_error(FK_ERR_NOMEM, "out of memory for the bytes of %d tokens", n); }
    for (int32_t i = 0; i < n; i++) {
        v->off[i] = len;
        for (;;) {
            size_t k = fk_tok_token_bytes(t, i, (char *)v->buf + len, cap - len);
            if (k <= cap - len) { len += k; break; }
            uint8_t *g = realloc(v->buf, cap = 2 * (len + k));
            if (!g) { vbytes_free(v); return fk_error(FK_ERR_NOMEM, "out of memory for the bytes of %d tokens", n); }
            v->buf = g;
        }
    }
    v->off[n] = len;
    return FK_OK;
}

static inline size_t vlen(const vbytes *v, int32_t i) { return (size_t)(v->off[i + 1] - v->off[i]); }
static inline const uint8_t *vptr(const vbytes *v, int32_t i) { return v->buf + v->off[i]; }

// Preference among target tokens with the same bytes: normal, byte, user-defined, the rest.
static int type_rank(int type) {
    switch (type) {
    case FK_TT_NORMAL: return 0;
    case FK_TT_BYTE: return 1;
    case FK_TT_USER_DEFINED: return 2;
    default: return 3;
    }
}

static int32_t first_of_type(const fk_tokenizer *t, int type) {
    int32_t n = fk_tok_vocab_size(t);
    for (int32_t i = 0; i < n; i++)
        if (fk_tok_type(t, i) == type) return i;
    return -1;
}

// Byte classes for a lower bound: mapping bytes to classes can only shorten the edit
// distance, and the distance between two strings is at least their bag distance (the larger
// of the two one-sided excesses of their class counts). 32 classes: 13 for lower-case
// letters, 5 upper case, digits, space, 2 other ASCII, 8 for UTF-8 continuation bytes and 2
// for lead bytes, so tokens in different scripts are told apart at once.
static uint8_t byte_class(uint8_t c) {
    if (c >= 'a' && c <= 'z') return (uint8_t)((c - 'a') % 13);
    if (c >= 'A' && c <= 'Z') return (uint8_t)(13 + (c - 'A') % 5);
    if (c >= '0' && c <= '9') return 18;
    if (c == ' ') return 19;
    if (c < 0x80) return (uint8_t)(20 + (c & 1));
    if (c < 0xC0) return (uint8_t)(22 + (c & 7));
    return (uint8_t)(30 + ((c >> 4) & 1));
}

static void class_counts(const uint8_t *p, size_t n, uint8_t *cnt) {
    memset(cnt, 0, FK_N_CLASS);
    for (size_t i = 0; i < n; i++) {
        uint8_t k = byte_class(p[i]);
        if (cnt[k] < 255) cnt[k]++;  // saturated counts only weaken the bound
    }
}


// ---------------------------------------------------------------- exact lookup
typedef struct {
    const vbytes *v;
    int32_t *slot;  // target ids, -1 = empty
    uint64_t mask;
} bytemap;

static uint64_t bytes_hash(const uint8_t *p, size_t n) { return fk_hash64(fk_fnv1a64(p, n, 0) ^ n); }

static int32_t bytemap_get(const bytemap *m, const uint8_t *p, size_t n) {
    for (uint64_t i = bytes_hash(p, n) & m->mask;; i = (i + 1) & m->mask) {
        int32_t id = m->slot[i];
        if (id < 0) return -1;
        if (vlen(m->v, id) == n && memcmp(vptr(m->v, id), p, n) == 0) return id;
    }
}

static void bytemap_put_first(bytemap *m, int32_t id) {
    const uint8_t *p = vptr(m->v, id);
    size_t n = vlen(m->v, id);
    for (uint64_t i = bytes_hash(p, n) & m->mask;; i = (i + 1) & m->mask) {
        int32_t o = m->slot[i];
        if (o < 0) { m->slot[i] = id; return; }
        if (vlen(m->v, o) == n && memcmp(vptr(m->v, o), p, n) == 0) return;  // a preferred token holds these bytes
    }
}

// ---------------------------------------------------------------- MinED search
typedef struct {
    const vbytes *v;
    int32_t *ids;       // candidates sorted by (length, id)
    uint8_t *counts;    // FK_N_CLASS class counts per entry of ids
    int64_t *at;        // candidates of length L: ids[at[L] .. at[L + 1])
    int64_t max_len;
} cands;

static int64_t byte_dist(const fk_mined_cands *c, const fk_mined_query *q, int32_t id, size_t len, int64_t bound) {
    const uint8_t *b = vptr(c->strings, id);
    return q->match ? myers_bounded(q->match, q->na, b, len, bound) : fk_edit_distance(q->a, q->na, b, len);
}

// The candidate nearest to a (ties: lowest id; fk_mined_search), or -1 when there are none.
// No candidate has a's bytes (the exact lookup came first), so the least distance is 1.
static int32_t mined_search(const cands *c, const uint8_t *a, size_t na, uint64_t *peq) {
    uint8_t ca[FK_N_CLASS];
    class_counts(a, na, ca);
    bool bits = na <= 64;
    if (bits) peq_set(peq, a, na);
    fk_mined_cands mc = {c->ids, c->counts, c->at, c->max_len, 1, c->v};
    int32_t r = fk_mined_search(&mc, &(fk_mined_query){a, na, bits ? peq : NULL}, ca, byte_dist);
    if (bits) peq_clear(peq, a, na);
    return r;
}

// approx (align.h): the first target token, covering input, of the target's context-free
// encoding of source token v's bytes p[0 .. n); -1 for control, unused and unknown source
// tokens, and when the encoding fails, is empty or starts with an unknown token. *nomem is set
// when the encoder ran out of memory (any other encoding error only unmaps v).
static int32_t approx_first(const fk_tokenizer *src, int32_t v, const fk_tokenizer *tgt, const uint8_t *p, size_t n, fk_tok_out *o,
                            bool *nomem) {
    int type = fk_tok_type(src, v);
    if (n == 0 || type == FK_TT_CONTROL || type == FK_TT_UNUSED || type == FK_TT_UNKNOWN) return -1;
    fk_tok_out_clear(o);
    fk_status st = fk_tok_encode(tgt, (const char *)p, n, FK_ENC_NO_PREFIX, o);
    if (st == FK_ERR_NOMEM) *nomem = true;
    for (int64_t k = 0; st == FK_OK && k < o->n; k++)
        if (o->end[k] > o->begin[k]) return fk_tok_type(tgt, o->ids[k]) == FK_TT_UNKNOWN ? -1 : o->ids[k];
    return -1;
}

static int cmp_cand(const void *x, const void *y, void *ctx) {
    const vbytes *v = ctx;
    int32_t a = *(const int32_t *)x, b = *(const int32_t *)y;
    size_t la = vlen(v, a), lb = vlen(v, b);
    if (la != lb) return la < lb ? -1 : 1;
    return a < b ? -1 : a > b;
}

static int cmp_pref(const void *x, const void *y, void *ctx) {
    const fk_tokenizer *t = ctx;
    int32_t a = *(const int32_t *)x, b = *(const int32_t *)y;
    int ra = type_rank(fk_tok_type(t, a)), rb = type_rank(fk_tok_type(t, b));
    if (ra != rb) return ra < rb ? -1 : 1;
    return a < b ? -1 : a > b;
}

// Long: the tables every byte-based mode reads and its one parallel pass over the source ids.
fk_status fk_vmap_build(const fk_tokenizer *src, const fk_tokenizer *tgt, fk_vmap_mode mode, int32_t **map) {
    *map = NULL;
    if (!src || !tgt) return fk_error(FK_ERR_ARG, "vocabulary map: a tokenizer is missing");
    if (!vmap_mode_valid(mode)) return fk_error(FK_ERR_ARG, "vocabulary map: unknown mode %d", (int)mode);
    if (mode == FK_VMAP_FUSELLM || mode == FK_VMAP_FUSELLM_EXACT) return fk_vmap_build_fusellm(src, tgt, mode == FK_VMAP_FUSELLM, map);
    fk_status st = FK_OK;
    vbytes sv = {0}, tv = {0};
    bytemap bm = {0};
    cands c = {0};
    int32_t *order = NULL, *m = NULL;
    if ((st = vbytes_load(src, &sv)) != FK_OK || (st = vbytes_load(tgt, &tv)) != FK_OK) goto done;
    int32_t ns = sv.n, nt = tv.n;
    m = malloc(sizeof *m * (size_t)ns);
    order = malloc(sizeof *order * (size_t)nt);
    uint64_t cap = 16;
    while (cap < 2 * (uint64_t)nt) cap <<= 1;
    bm.v = &tv;
    bm.mask = cap - 1;
    bm.slot = malloc(sizeof *bm.slot * cap);
    if (!m || !order || !bm.slot) { st = fk_error(FK_ERR_NOMEM, "out of memory for a vocabulary map"); goto done; }
    memset(bm.slot, 0xFF, sizeof *bm.slot * cap);
    for (int32_t i = 0; i < nt; i++) order[i] = i;
    qsort_r(order, (size_t)nt, sizeof *order, cmp_pref, (void *)tgt);
    for (int32_t i = 0; i < nt; i++) bytemap_put_first(&bm, order[i]);

    if (mode != FK_VMAP_EXACT && mode != FK_VMAP_APPROX) {
        int32_t nc = 0;
        for (int32_t i = 0; i < nt; i++)
            if (type_rank(fk_tok_type(tgt, i)) < 3) order[nc++] = i;
        qsort_r(order, (size_t)nc, sizeof *order, cmp_cand, &tv);
        c.v = &tv;
        c.ids = order;
        c.max_len = nc ? (int64_t)vlen(&tv, order[nc - 1]) : -1;
        c.counts = malloc((size_t)FK_N_CLASS * (size_t)(nc ? nc : 1));
        c.at = calloc((size_t)(c.max_len + 2), sizeof *c.at);
        if (!c.counts || !c.at) { st = fk_error(FK_ERR_NOMEM, "out of memory for a vocabulary map"); goto done; }
        for (int32_t q = 0; q < nc; q++) {
            class_counts(vptr(&tv, order[q]), vlen(&tv, order[q]), c.counts + (size_t)q * FK_N_CLASS);
            c.at[vlen(&tv, order[q]) + 1]++;
        }
        for (int64_t L = 0; L <= c.max_len; L++) c.at[L + 1] += c.at[L];
    }

    int32_t specials[3][2] = {{fk_tok_bos(src), fk_tok_bos(tgt)},
                              {fk_tok_eos(src), fk_tok_eos(tgt)},
                              {first_of_type(src, FK_TT_UNKNOWN), first_of_type(tgt, FK_TT_UNKNOWN)}};
    bool nomem = false;
    #pragma omp parallel
    {
        uint64_t peq[256] = {0};
        fk_tok_out enc = {0};
        bool oom = false;
        #pragma omp for schedule(dynamic, 64)
        for (int32_t v = 0; v < ns; v++) {
            int32_t r = -2;
            for (int k = 0; k < 3 && r == -2; k++)
                if (v == specials[k][0] && specials[k][1] >= 0) r = specials[k][1];
            if (r == -2 && mode == FK_VMAP_APPROX) r = approx_first(src, v, tgt, vptr(&sv, v), vlen(&sv, v), &enc, &oom);
            if (r == -2) r = bytemap_get(&bm, vptr(&sv, v), vlen(&sv, v));
            // prefix: the longest target token that starts the source token's bytes (what the
            // target's next token is when the source's next token is v), else MinED
            for (size_t L = vlen(&sv, v); r < 0 && mode == FK_VMAP_PREFIX && L-- > 1;) r = bytemap_get(&bm, vptr(&sv, v), L);
            if (r < 0 && mode != FK_VMAP_EXACT && mode != FK_VMAP_APPROX) r = mined_search(&c, vptr(&sv, v), vlen(&sv, v), peq);
            m[v] = r;
        }
        fk_tok_out_free(&enc);
        if (oom) {
            #pragma omp atomic write
            nomem = true;
        }
    }
    if (nomem) { st = fk_error(FK_ERR_NOMEM, "out of memory re-tokenizing the source vocabulary"); goto done; }
    *map = m;
    m = NULL;
done:
    free(m);
    free(order);
    free(bm.slot);
    free(c.counts);
    free(c.at);
    vbytes_free(&sv);
    vbytes_free(&tv);
    return st;
}

// ---------------------------------------------------------------- cache files
// Layout (little-endian): magic "FKVOCMAP", u32 version, u32 mode, u64 source fingerprint,
// u64 target fingerprint, u32 source vocabulary, u32 target vocabulary, u64 FNV-1a of the
// map's bytes, then the map as i32.
static void put_u32(uint8_t *p, uint32_t x) { for (int i = 0; i < 4; i++) p[i] = (uint8_t)(x >> (8 * i)); }
static void put_u64(uint8_t *p, uint64_t x) { for (int i = 0; i < 8; i++) p[i] = (uint8_t)(x >> (8 * i)); }
static uint32_t get_u32(const uint8_t *p) { uint32_t x = 0; for (int i = 0; i < 4; i++) x |= (uint32_t)p[i] << (8 * i); return x; }
static uint64_t get_u64(const uint8_t *p) { uint64_t x = 0; for (int i = 0; i < 8; i++) x |= (uint64_t)p[i] << (8 * i); return x; }

char *fk_vmap_cache_path(const fk_tokenizer *src, const fk_tokenizer *tgt, fk_vmap_mode mode, const char *cache_dir) {
    char name[96];
    snprintf(name, sizeof name, "vmap-%016llx-%016llx-%s.bin", (unsigned long long)fk_tok_fingerprint(src),
             (unsigned long long)fk_tok_fingerprint(tgt), fk_vmap_mode_name(mode));
    return fk_path_join(cache_dir, name);
}

// The map in a cache file, or NULL when the file is not a valid one for this pair and mode.
static int32_t *vmap_read(const char *path, const fk_tokenizer *src, const fk_tokenizer *tgt, fk_vmap_mode mode) {
    char *data = NULL;
    size_t n = 0;
    if (!fk_path_exists(path) || fk_read_file(path, &data, &n) != FK_OK) return NULL;
    const uint8_t *p = (const uint8_t *)data;
    uint32_t ns = (uint32_t)fk_tok_vocab_size(src), nt = (uint32_t)fk_tok_vocab_size(tgt);
    int32_t *m = NULL;
    if (n == VMAP_HEADER + 4 * (size_t)ns && memcmp(p, VMAP_MAGIC, 8) == 0 && get_u32(p + 8) == VMAP_VERSION &&
        get_u32(p + 12) == (uint32_t)mode && get_u64(p + 16) == fk_tok_fingerprint(src) &&
        get_u64(p + 24) == fk_tok_fingerprint(tgt) && get_u32(p + 32) == ns && get_u32(p + 36) == nt &&
        get_u64(p + 40) == fk_fnv1a64(p + VMAP_HEADER, 4 * (size_t)ns, 0) && (m = malloc(4 * (size_t)ns))) {
        for (uint32_t i = 0; i < ns; i++) {
            m[i] = (int32_t)get_u32(p + VMAP_HEADER + 4 * (size_t)i);
            if (m[i] < -1 || m[i] >= (int32_t)nt) { free(m); m = NULL; break; }
        }
    }
    free(data);
    return m;
}

static fk_status vmap_write(const char *path, const fk_tokenizer *src, const fk_tokenizer *tgt, fk_vmap_mode mode, const int32_t *m) {
    uint32_t ns = (uint32_t)fk_tok_vocab_size(src);
    size_t n = VMAP_HEADER + 4 * (size_t)ns;
    uint8_t *p = malloc(n);
    if (!p) return fk_error(FK_ERR_NOMEM, "out of memory writing %s", path);
    memcpy(p, VMAP_MAGIC, 8);
    put_u32(p + 8, VMAP_VERSION);
    put_u32(p + 12, (uint32_t)mode);
    put_u64(p + 16, fk_tok_fingerprint(src));
    put_u64(p + 24, fk_tok_fingerprint(tgt));
    put_u32(p + 32, ns);
    put_u32(p + 36, (uint32_t)fk_tok_vocab_size(tgt));
    for (uint32_t i = 0; i < ns; i++) put_u32(p + VMAP_HEADER + 4 * (size_t)i, (uint32_t)m[i]);
    put_u64(p + 40, fk_fnv1a64(p + VMAP_HEADER, 4 * (size_t)ns, 0));
    fk_status st = fk_write_file_atomic(path, p, n);
    free(p);
    return st;
}

fk_status fk_vmap_load_or_build(const fk_tokenizer *src, const fk_tokenizer *tgt, fk_vmap_mode mode, const char *cache_dir,
                                int32_t **map) {
    *map = NULL;
    if (!src || !tgt || !cache_dir) return fk_error(FK_ERR_ARG, "vocabulary map: a tokenizer or the cache folder is missing");
    if (!vmap_mode_valid(mode)) return fk_error(FK_ERR_ARG, "vocabulary map: unknown mode %d", (int)mode);
    char *path = fk_vmap_cache_path(src, tgt, mode, cache_dir);
    if (!path) return fk_error(FK_ERR_NOMEM, "out of memory");
    if ((*map = vmap_read(path, src, tgt, mode))) {
        free(path);
        return FK_OK;
    }
    int32_t *m = NULL;
    fk_status st = fk_vmap_build(src, tgt, mode, &m);
    if (st == FK_OK) st = fk_mkdir_p(cache_dir);
    if (st == FK_OK) st = vmap_write(path, src, tgt, mode, m);
    if (st != FK_OK) {
        fk_error_context(st, "vocabulary map cache %s", path);
        free(m);
        m = NULL;
    }
    free(path);
    *map = m;
    return st;
}
