// FuseLLM's token strings (FK_ALIGN_FUSELLM, FK_VMAP_FUSELLM, FK_VMAP_FUSELLM_EXACT; fusion.md
// §2-3): FuseLLM (github fanqiwan/FuseLLM, src/utils/others.py and vocab_mapping.py) compares
// tokens as transformers' convert_ids_to_tokens gives them — the vocabulary strings, "Ġ" for
// a space and "Ċ" for a newline in byte-level BPE, "▁" and "<0x0A>" in SentencePiece — and
// measures edit distances in code points. Reimplemented from the published algorithm.
#include "fusekit/align.h"
#include "fuse/align_internal.h"

#include <stdlib.h>
#include <string.h>

// The word marker of a kind's strings: "▁" (U+2581) for SentencePiece, "Ġ" (U+0120, the
// space in GPT-2's byte-to-unicode table) for byte-level BPE and the byte tokenizer. FuseLLM
// keys it by tokenizer class (LlamaTokenizer, GPTNeoXTokenizerFast); fusekit by kind.
static uint32_t marker_cp(const fk_tokenizer *t) { return fk_tok_kind_of(t) == FK_TOK_SPM ? 0x2581u : 0x120u; }
static const char *marker_utf8(const fk_tokenizer *t) { return fk_tok_kind_of(t) == FK_TOK_SPM ? "\xE2\x96\x81" : "\xC4\xA0"; }

// One UTF-8 character at p (n > 0 bytes left): its code point and length. A byte that does not
// start a valid character is read alone as 0xDC00 + byte (as Python's surrogateescape),
// distinct from every character.
static uint32_t utf8_next(const uint8_t *p, size_t n, size_t *len) {
    uint8_t c = p[0];
    int k = c < 0x80 ? 0 : (c & 0xE0) == 0xC0 ? 1 : (c & 0xF0) == 0xE0 ? 2 : (c & 0xF8) == 0xF0 ? 3 : -1;
    uint32_t cp = k == 0 ? c : k == 1 ? c & 0x1Fu : k == 2 ? c & 0x0Fu : c & 0x07u;
    if (k < 0 || (size_t)k >= n) goto bad;
    for (int i = 1; i <= k; i++) {
        if ((p[i] & 0xC0) != 0x80) goto bad;
        cp = (cp << 6) | (p[i] & 0x3Fu);
    }
    static const uint32_t min_cp[4] = {0, 0x80, 0x800, 0x10000};
    if (cp < min_cp[k] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) goto bad;
    *len = (size_t)k + 1;
    return cp;
bad:
    *len = 1;
    return 0xDC00u + c;
}

// Code points of p with every `drop` removed and every `from` written as `to`.
static size_t to_cps(const uint8_t *p, size_t n, uint32_t drop, uint32_t from, uint32_t to, uint32_t *out, size_t cap) {
    size_t k = 0;
    for (size_t i = 0, len; i < n; i += len) {
        uint32_t cp = utf8_next(p + i, n - i, &len);
        if (cp == drop) continue;
        if (k < cap) out[k] = cp == from ? to : cp;
        k++;
    }
    return k;
}

size_t fk_fusellm_token(const fk_tokenizer *t, int32_t id, uint32_t *buf, size_t cap) {
    uint32_t len;
    const char *p = fk_tok_piece(t, id, &len);
    return to_cps((const uint8_t *)p, len, marker_cp(t), UINT32_MAX, 0, buf, cap);
}

// ---------------------------------------------------------------- distance over code points
FK_EDIT_DP(edit_dp_cp, uint32_t)

static inline unsigned cp_hash(uint32_t c) { return (c * 2654435761u) >> 25; }  // 0..127

static inline uint64_t cpeq_get(const fk_cpeq *q, uint32_t c) {
    if (c < 512) return q->lo[c];
    for (unsigned h = cp_hash(c);; h = (h + 1) & 127) {
        if (!q->val[h]) return 0;  // (a pattern's code point always has a bit set)
        if (q->key[h] == c) return q->val[h];
    }
}

bool fk_cpeq_set(fk_cpeq *q, const uint32_t *p, size_t m) {
    if (m > 64) return false;
    for (size_t k = 0; k < m; k++) {
        uint64_t bit = (uint64_t)1 << k;
        if (p[k] < 512) { q->lo[p[k]] |= bit; continue; }
        unsigned h = cp_hash(p[k]);
        while (q->val[h] && q->key[h] != p[k]) h = (h + 1) & 127;  // at most 64 of 128 slots are used
        q->key[h] = p[k];
        q->val[h] |= bit;
    }
    return true;
}

void fk_cpeq_clear(fk_cpeq *q, const uint32_t *p, size_t m) {
    for (size_t k = 0; k < m; k++) {
        if (p[k] < 512) q->lo[p[k]] = 0;
        else for (unsigned h = cp_hash(p[k]); q->val[h]; h = (h + 1) & 127) q->val[h] = 0;  // clears the probe chain
    }
}

int64_t fk_cp_distance(const fk_cpeq *q, const uint32_t *a, size_t na, const uint32_t *b, size_t nb, int64_t bound) {
    if (q) {  // bit-parallel, pattern a in q
        if (na == 0) return (int64_t)nb;
        uint64_t pv = ~(uint64_t)0, mv = 0, last = (uint64_t)1 << (na - 1);
        int64_t score = (int64_t)na;
        for (size_t j = 0; j < nb; j++) {
            score += myers_step(cpeq_get(q, b[j]), &pv, &mv, last);
            if (score - (int64_t)(nb - 1 - j) > bound) return bound + 1;
        }
        return score;
    }
    return edit_dp_cp(a, na, b, nb);
}

// ---------------------------------------------------------------- agreement test
// The bytes of p with every occurrence of marker `from` written as `to` into buf (cap bytes);
// returns the length (more than cap: not all written).
static size_t replace_marker(const char *p, size_t n, const char *from, const char *to, char *buf, size_t cap) {
    size_t k = 0, fl = strlen(from), tl = strlen(to);
    for (size_t i = 0; i < n;) {
        bool m = i + fl <= n && memcmp(p + i, from, fl) == 0;
        const char *w = m ? to : p + i;
        size_t wl = m ? tl : 1;
        for (size_t x = 0; x < wl; x++, k++)
            if (k < cap) buf[k] = w[x];
        i += m ? fl : 1;
    }
    return k;
}

static bool byte_level(const fk_tokenizer *t) { return fk_tok_kind_of(t) != FK_TOK_SPM; }

bool fk_fusellm_agree(const fk_tokenizer *st, int32_t sid, const fk_tokenizer *tt, int32_t tid, bool first, const int32_t *vmap) {
    uint32_t sl, tl;
    const char *sp = fk_tok_piece(st, sid, &sl), *tp = fk_tok_piece(tt, tid, &tl);
    const char *sm = marker_utf8(st), *tm = marker_utf8(tt);
    size_t tml = strlen(tm);
    char small[1024], *buf = small;
    size_t n = replace_marker(sp, sl, sm, tm, buf, sizeof small);
    if (n > sizeof small && !(buf = malloc(n + tml))) return false;
    if (buf != small) replace_marker(sp, sl, sm, tm, buf, n);
    // others.py's special case ("for mpt"): a byte-level source's first token lacks the
    // marker a SentencePiece target's dummy prefix gives the first target token
    bool pre = first && byte_level(st) && tl >= tml && memcmp(tp, tm, tml) == 0 && !(n >= tml && memcmp(buf, tm, tml) == 0);
    bool eq = n + (pre ? tml : 0) == tl && memcmp(buf, tp + (pre ? tml : 0), n) == 0;
    if (buf != small) free(buf);
    if (eq || !vmap) return eq;
    // soft: the mapping of the (prefixed) source string
    int32_t key = sid;
    if (pre) {
        size_t sml = strlen(sm);
        char *q = malloc(sml + sl);
        if (!q) return false;
        memcpy(q, sm, sml);
        memcpy(q + sml, sp, sl);
        key = fk_tok_find(st, q, sml + sl);
        free(q);
    }
    return key >= 0 && vmap[key] == tid;
}

// ---------------------------------------------------------------- vocabulary map
typedef struct {
    uint32_t *cp;       // every target string's code points, back to back
    uint64_t *off;      // target id v: cp[off[v] .. off[v + 1])
    int32_t *ids;       // target ids sorted by (length, id)
    uint8_t *counts;    // FK_N_CLASS class counts per entry of ids (for bag_bound)
    int64_t *at;        // ids of length L: ids[at[L] .. at[L + 1])
    int64_t max_len;
} cp_vocab;

// Code points hashed into FK_N_CLASS classes, counted (saturating) for the bag bound.
static void cp_counts(const uint32_t *p, size_t n, uint8_t *cnt) {
    memset(cnt, 0, FK_N_CLASS);
    for (size_t i = 0; i < n; i++) {
        uint8_t k = (uint8_t)((p[i] * 2654435761u) >> 27);
        if (cnt[k] < 255) cnt[k]++;
    }
}

static void cp_vocab_free(cp_vocab *v) {
    free(v->counts);
    free(v->cp);
    free(v->off);
    free(v->ids);
    free(v->at);
}

// The target's strings as they are (vocab_mapping.py compares the source's, marker replaced,
// with the target's vocabulary strings unchanged), bucketed by length.
static fk_status cp_vocab_load(const fk_tokenizer *t, cp_vocab *v) {
    memset(v, 0, sizeof *v);
    int32_t n = fk_tok_vocab_size(t);
    size_t total = 0;
    for (int32_t i = 0; i < n; i++) {
        uint32_t len;
        fk_tok_piece(t, i, &len);
        total += len;
    }
    v->cp = malloc(sizeof *v->cp * (total + 1));
    v->off = malloc(sizeof *v->off * ((size_t)n + 1));
    v->ids = malloc(sizeof *v->ids * ((size_t)n + 1));
    if (!v->cp || !v->off || !v->ids) return fk_error(FK_ERR_NOMEM, "out of memory for the strings of %d tokens", n);
    size_t k = 0;
    for (int32_t i = 0; i < n; i++) {
        uint32_t len;
        const char *p = fk_tok_piece(t, i, &len);
        v->off[i] = k;
        k += to_cps((const uint8_t *)p, len, UINT32_MAX, UINT32_MAX, 0, v->cp + k, total - k);
        if ((int64_t)(k - v->off[i]) > v->max_len) v->max_len = (int64_t)(k - v->off[i]);
    }
    v->off[n] = k;
    if (!(v->at = calloc((size_t)v->max_len + 2, sizeof *v->at))) return fk_error(FK_ERR_NOMEM, "out of memory for a vocabulary map");
    for (int32_t i = 0; i < n; i++) v->at[v->off[i + 1] - v->off[i] + 1]++;
    for (int64_t L = 0; L <= v->max_len; L++) v->at[L + 1] += v->at[L];
    int64_t *fill = malloc(sizeof *fill * ((size_t)v->max_len + 1));
    if (!fill) return fk_error(FK_ERR_NOMEM, "out of memory for a vocabulary map");
    memcpy(fill, v->at, sizeof *fill * ((size_t)v->max_len + 1));
    for (int32_t i = 0; i < n; i++) v->ids[fill[v->off[i + 1] - v->off[i]]++] = i;  // ids ascending within each length
    free(fill);
    if (!(v->counts = malloc((size_t)FK_N_CLASS * (size_t)(n > 0 ? n : 1)))) return fk_error(FK_ERR_NOMEM, "out of memory for a vocabulary map");
    for (int32_t x = 0; x < n; x++) {
        int32_t id = v->ids[x];
        cp_counts(v->cp + v->off[id], v->off[id + 1] - v->off[id], v->counts + (size_t)x * FK_N_CLASS);
    }
    return FK_OK;
}

static int64_t cp_dist(const fk_mined_cands *c, const fk_mined_query *q, int32_t id, size_t len, int64_t bound) {
    const cp_vocab *v = c->strings;
    return fk_cp_distance(q->match, q->a, q->na, v->cp + v->off[id], len, bound);
}

// The target id nearest to a (na code points; ties: lowest id; fk_mined_search). A target
// string may equal a's (no assumption on the exact lookup), so the least distance is 0. q
// holds a when na <= 64.
static int32_t cp_mined(const cp_vocab *v, const uint32_t *a, size_t na, fk_cpeq *q) {
    uint8_t ca[FK_N_CLASS];
    cp_counts(a, na, ca);
    bool bits = fk_cpeq_set(q, a, na);
    fk_mined_cands c = {v->ids, v->counts, v->at, v->max_len, 0, v};
    int32_t r = fk_mined_search(&c, &(fk_mined_query){a, na, bits ? q : NULL}, ca, cp_dist);
    if (bits) fk_cpeq_clear(q, a, na);
    return r;
}

fk_status fk_vmap_build_fusellm(const fk_tokenizer *src, const fk_tokenizer *tgt, bool mined, int32_t **map) {
    *map = NULL;
    int32_t ns = fk_tok_vocab_size(src);
    cp_vocab v = {0};
    fk_status st = mined ? cp_vocab_load(tgt, &v) : FK_OK;
    int32_t *m = st == FK_OK ? malloc(sizeof *m * (size_t)(ns > 0 ? ns : 1)) : NULL;
    if (st == FK_OK && !m) st = fk_error(FK_ERR_NOMEM, "out of memory for a vocabulary map");
    const char *sm = marker_utf8(src), *tm = marker_utf8(tgt);
    int failed = 0;
    #pragma omp parallel if (st == FK_OK)
    {
        fk_cpeq *q = calloc(1, sizeof *q);
        size_t cap = 256;
        char *buf = malloc(cap);
        uint32_t *cps = malloc(sizeof *cps * cap);
        bool ok = q && buf && cps && m;
        #pragma omp for schedule(dynamic, 64)
        for (int32_t s = 0; s < ns; s++) {
            if (!ok) continue;
            uint32_t len;
            const char *p = fk_tok_piece(src, s, &len);
            size_t n = replace_marker(p, len, sm, tm, buf, cap);
            if (n > cap) {
                cap = 2 * n;
                char *b = realloc(buf, cap);
                if (b) buf = b;
                uint32_t *c = b ? realloc(cps, sizeof *cps * cap) : NULL;
                if (c) cps = c;
                if (!(ok = b && c)) continue;
                replace_marker(p, len, sm, tm, buf, cap);
            }
            int32_t r = fk_tok_find(tgt, buf, n);
            if (r < 0 && mined) r = cp_mined(&v, cps, to_cps((const uint8_t *)buf, n, UINT32_MAX, UINT32_MAX, 0, cps, cap), q);
            m[s] = r;
        }
        if (!ok) {
            #pragma omp atomic write
            failed = 1;
        }
        free(q);
        free(buf);
        free(cps);
    }
    if (st == FK_OK && failed) st = fk_error(FK_ERR_NOMEM, "out of memory for a vocabulary map");
    cp_vocab_free(&v);
    if (st != FK_OK) free(m);
    else *map = m;
    return st;
}
