// Distribution stores: what the codec knows before it reads a record, built the same way by
// writer and reader: the quantisation parameters' ranges, the offset grid, and the id model
// (each id's global rank; each token's successors in the corpus, most frequent first), which
// comes from the tokenization and so costs no bytes. Lookups used per entry are inline in
// store_internal.h.
#include "format/store_internal.h"

#include <stdlib.h>

void store_codec_free(codec *c) {
    free(c->lev); free(c->tok); free(c->begin); free(c->grank); free(c->gid);
    free(c->succ_off); free(c->succ_id); free(c->succ_key); free(c->succ_pos); free(c->succ_grk); free(c->prior);
    memset(c, 0, sizeof *c);
}

fk_status store_params_check(const store_params *p, const char *path) {
    if (p->q_lp > 12 || p->base < 1 || p->base > 16 || p->n_bands > 8 || p->band_w < 1 || p->band_w > 64 || p->q_top > 16 || p->q_ce > 16 ||
        p->succ_log2 > 40)
        return fk_error(FK_ERR_FORMAT, "%s: bad quantisation parameters (q_lp %d, base %d, n_bands %d, band_w %d, q_top %d, q_ce %d, succ_log2 %d)",
                        path, p->q_lp, p->base, p->n_bands, p->band_w, p->q_top, p->q_ce, p->succ_log2);
    return FK_OK;
}

store_params store_params_preset(uint32_t grid) {
    if (grid == FK_STORE_GRID_COMPACT) return (store_params){CMP_Q_LP, CMP_BASE, CMP_N_BANDS, CMP_BAND_W, CMP_Q_TOP, CMP_Q_CE, DEF_SUCC_LOG2};
    return (store_params){DEF_Q_LP, DEF_BASE, DEF_N_BANDS, DEF_BAND_W, DEF_Q_TOP, DEF_Q_CE, DEF_SUCC_LOG2};
}

uint32_t store_params_grid(const store_params *p) {
    for (uint32_t g = FK_STORE_GRID_FINE; g <= FK_STORE_GRID_COMPACT; g++) {
        store_params q = store_params_preset(g);
        if (memcmp(&q, p, sizeof q) == 0) return g;
    }
    return FK_STORE_GRID_OTHER;
}

// ------------------------------------------------------------------ offset grid

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

int store_grid_quant(const codec *c, double u) {
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

// ------------------------------------------------------------------ id model

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

// The second tokens of the pairs (tok[i], tok[i+1]), i < m, grouped by first token (a counting
// sort): token v's are b[fill[v] .. fill[v+1]).
static fk_status succ_pairs(const codec *c, int64_t m, int32_t **b_out, int64_t **fill_out) {
    int64_t V = c->h.vocab_size;
    int64_t *fill = calloc((size_t)V + 1, sizeof(int64_t)), *at = malloc((size_t)(V + 1) * sizeof(int64_t));
    int32_t *b = malloc((size_t)(m ? m : 1) * sizeof(int32_t));
    if (!fill || !at || !b) { free(fill); free(at); free(b); return fk_error(FK_ERR_NOMEM, "out of memory (id model)"); }
    for (int64_t i = 0; i < m; i++) fill[c->tok[i] + 1]++;
    for (int64_t v = 0; v < V; v++) fill[v + 1] += fill[v];
    memcpy(at, fill, (size_t)(V + 1) * sizeof(int64_t));
    for (int64_t i = 0; i < m; i++) b[at[c->tok[i]]++] = c->tok[i + 1];
    free(at);
    *b_out = b;
    *fill_out = fill;
    return FK_OK;
}

// Per first token: sorts its successors, counts runs and compacts them in place (b ascending,
// cnt their counts, c->succ_off the lists' offsets); returns the longest list's length.
static int64_t succ_runs(codec *c, int32_t *b, const int64_t *fill, int64_t *cnt) {
    int64_t V = c->h.vocab_size, out = 0, max_len = 0;
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
    return max_len;
}

// Each list most frequent first (ties: lower global rank), where its ascending keys point in it,
// and its global ranks ascending.
static fk_status succ_order(codec *c, const int64_t *cnt, int64_t max_len) {
    int64_t V = c->h.vocab_size, out = c->succ_off[V];
    const int32_t *b = c->succ_key;
    c->succ_id = malloc((size_t)(out ? out : 1) * sizeof(int32_t));
    c->succ_pos = malloc((size_t)(out ? out : 1) * sizeof(int32_t));
    c->succ_grk = malloc((size_t)(out ? out : 1) * sizeof(int32_t));
    succ_sort *ss = malloc((size_t)(max_len ? max_len : 1) * sizeof *ss);
    if (!c->succ_id || !c->succ_pos || !c->succ_grk || !ss) { free(ss); return fk_error(FK_ERR_NOMEM, "out of memory (id model)"); }
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
    return FK_OK;
}

// Successor lists from the first 2^succ_log2 tokens.
static fk_status model_successors(codec *c) {
    int64_t V = c->h.vocab_size, n = c->h.n_tokens;
    int64_t lim = c->p.succ_log2 >= 62 ? n : ((int64_t)1 << c->p.succ_log2);
    if (lim > n) lim = n;
    int64_t m = lim > 1 ? lim - 1 : 0;  // pairs (tok[i], tok[i+1]), i < m
    c->succ_off = calloc((size_t)V + 1, sizeof(int64_t));
    if (!c->succ_off) return fk_error(FK_ERR_NOMEM, "out of memory (id model)");
    int32_t *b = NULL;
    int64_t *fill = NULL;
    FK_TRY(succ_pairs(c, m, &b, &fill));
    int64_t *cnt = malloc((size_t)(m ? m : 1) * sizeof(int64_t));
    if (!cnt) { free(fill); free(b); return fk_error(FK_ERR_NOMEM, "out of memory (id model)"); }
    int64_t max_len = succ_runs(c, b, fill, cnt);
    free(fill);
    c->succ_key = b;
    fk_status st = succ_order(c, cnt, max_len);
    free(cnt);
    return st;
}

fk_status store_codec_setup(codec *c) {
    FK_TRY(grid_build(c));
    FK_TRY(model_ranks(c));
    return model_successors(c);
}
