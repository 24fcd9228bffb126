// The teacher set: distribution stores feeding fused training (fusekit/fusion.h).
#include "fusekit/data.h"
#include "fusekit/fusion.h"
#include "fusekit/extract.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

// ------------------------------------------------------------------ top-k arrays
// Positions' stored distributions: per position its count, k ids and log-probs, and ce.
typedef struct {
    uint8_t *count;
    int32_t *ids;
    float *logp, *ce;
} topk_arrays;

static void topk_free(topk_arrays *a) {
    free(a->count); free(a->ids); free(a->logp); free(a->ce);
    *a = (topk_arrays){0};
}

// Room for n positions (at least one) of k entries; false when out of memory.
static bool topk_alloc(topk_arrays *a, int64_t n, int64_t k) {
    if (n < 1) n = 1;
    a->count = malloc((size_t)n);
    a->ids = malloc((size_t)(n * k > 0 ? n * k : 1) * sizeof *a->ids);
    a->logp = malloc((size_t)(n * k > 0 ? n * k : 1) * sizeof *a->logp);
    a->ce = malloc((size_t)n * sizeof *a->ce);
    return a->count && a->ids && a->logp && a->ce;
}

// Copies n positions of sequence q, from its position o, to a's position at.
static void topk_put(topk_arrays *a, int64_t at, const fk_store_seq *q, int64_t o, int64_t n, int64_t k) {
    memcpy(a->count + at, q->count + o, (size_t)n);
    memcpy(a->ids + at * k, q->ids + o * k, (size_t)(n * k) * sizeof *a->ids);
    memcpy(a->logp + at * k, q->logp + o * k, (size_t)(n * k) * sizeof *a->logp);
    memcpy(a->ce + at, q->ce + o, (size_t)n * sizeof *a->ce);
}

// Decodes every sequence of store s (path names it in errors) into a, which holds all its
// positions; sequences decode in parallel.
static fk_status topk_decode_whole(fk_store *s, const char *path, topk_arrays *a) {
    int64_t k = fk_store_header_of(s)->k, ns = fk_store_n_seqs(s);
    int bad = 0;
    int64_t bad_c = 0;
    #pragma omp parallel
    {
        fk_store_seq q = {0};
        #pragma omp for schedule(dynamic, 1)
        for (int64_t c = 0; c < ns; c++) {
            if (bad) continue;
            if (fk_store_read_seq(s, c, &q) != FK_OK) {
                #pragma omp critical
                { if (!bad) { bad = 1; bad_c = c; } }
                continue;
            }
            topk_put(a, q.first, &q, 0, q.n, k);
        }
        fk_store_seq_free(&q);
    }
    if (!bad) return FK_OK;
    // again on this thread, whose error message the caller reads
    fk_store_seq q = {0};
    fk_status st = fk_store_read_seq(s, bad_c, &q);
    fk_store_seq_free(&q);
    return st != FK_OK ? st : fk_error(FK_ERR_FORMAT, "%s: sequence %lld did not decode", path, (long long)bad_c);
}

// ------------------------------------------------------------------ teacher set

typedef struct {
    fk_store *store;
    fk_store_seq seq;        // the last decoded sequence
    int64_t seq_index;       // which one (-1: none)
    char *path;
    topk_arrays all;         // the whole store decoded at open when it fits the memory budget (else NULL: per batch)
    topk_arrays win;         // one window's arrays, gathered from the decoded sequences
    uint8_t *ends;           // objective span: per token, whether it ends on a boundary the source shares (NULL: every one)
    int64_t cap;             // positions win holds
} teacher_src;

struct fk_teacher_set {
    int S;
    fk_fusion_opts o;
    teacher_src *src;
    fk_fused_rows rows;
    fk_teacher teacher;
    double *shares;          // summed weights per teacher
    // objective span: a micro-batch's weights and chunk-loss derivatives (B*T), a window's
    // shared ends (T+1), chunks (T) and teachers' chunk log-likelihoods (T); span_n positions
    float *span_w, *span_g;
    uint8_t *span_ends;
    int32_t *span_chunk;
    double *span_tl;
    int64_t span_n;
    fk_shuffle shuffle;      // the shuffled-teachers control (n 0: off)
};

void fk_teacher_set_close(fk_teacher_set *s) {
    if (!s) return;
    for (int i = 0; i < s->S; i++) {
        teacher_src *t = &s->src[i];
        fk_store_seq_free(&t->seq);
        if (t->store) fk_store_close(t->store);
        free(t->path);
        topk_free(&t->win);
        topk_free(&t->all);
        free(t->ends);
    }
    free(s->src);
    free(s->shares);
    free(s->span_w); free(s->span_g); free(s->span_ends); free(s->span_chunk); free(s->span_tl);
    fk_fused_rows_free(&s->rows);
    free(s);
}

int fk_teacher_set_size(const fk_teacher_set *s) { return s->S; }

void fk_teacher_set_shares(const fk_teacher_set *s, double *shares) {
    double z = 0;
    for (int i = 0; i < s->S; i++) z += s->shares[i];
    for (int i = 0; i < s->S; i++) shares[i] = z > 0 ? s->shares[i] / z : 0;
}

// Gathers positions [from, from + n) of one teacher into its window arrays. Positions past
// the store's end (the corpus's last token has none) become one-hots with zero ce.
static fk_status gather(teacher_src *t, int64_t from, int64_t n, fk_teacher_window *w) {
    const fk_store_header *h = fk_store_header_of(t->store);
    int k = h->k;
    int64_t positions = h->n_tokens - 1;
    const topk_arrays *all = &t->all;
    if (all->count && from + n <= positions) {  // decoded whole: a view, no copy
        *w = (fk_teacher_window){n, k, all->count + from, all->ids + from * k, all->logp + from * k, all->ce + from};
        return FK_OK;
    }
    topk_arrays *win = &t->win;
    if (n > t->cap) {
        topk_free(win);
        t->cap = topk_alloc(win, n, k) ? n : 0;
        if (!t->cap) return fk_error(FK_ERR_NOMEM, "out of memory");
    }
    for (int64_t j = 0; j < n;) {
        int64_t pos = from + j;
        if (pos >= positions) {
            win->count[j] = 0;
            win->ce[j] = 0;
            j++;
            continue;
        }
        int64_t c = pos / h->seq;
        if (c != t->seq_index) {
            FK_TRY(fk_store_read_seq(t->store, c, &t->seq));
            t->seq_index = c;
        }
        int64_t take = t->seq.first + t->seq.n - pos;
        if (take > n - j) take = n - j;
        int64_t o = pos - t->seq.first;
        topk_put(win, j, &t->seq, o, take, k);
        j += take;
    }
    *w = (fk_teacher_window){n, k, win->count, win->ids, win->logp, win->ce};
    return FK_OK;
}

// ------------------------------------------------------------------ shuffled teachers

// (x * y) mod n for x, y < n, without overflow.
static uint64_t mulmod(uint64_t x, uint64_t y, uint64_t n) {
    if (n <= (1ull << 32)) return x * y % n;
    uint64_t r = 0;
    for (; y; y >>= 1) {
        if (y & 1) r = r >= n - x ? r - (n - x) : r + x;
        x = x >= n - x ? x - (n - x) : x + x;
    }
    return r;
}

static uint64_t gcd_u64(uint64_t x, uint64_t y) {
    while (y) { uint64_t t = x % y; x = y; y = t; }
    return x;
}

void fk_shuffle_init(fk_shuffle *sh, uint64_t seed, int64_t n) {
    *sh = (fk_shuffle){n > 0 ? n : 0, 1, 0};
    if (n < 1) return;
    fk_rng r;
    fk_rng_seed(&r, seed);
    uint64_t a = 1;
    if (n >= 4) {
        a = (uint64_t)n / 4 + fk_rng_below(&r, (uint64_t)n / 2);
        while (gcd_u64(a, (uint64_t)n) != 1) a = a + 1 < (uint64_t)n ? a + 1 : 1;  // n - 1 is coprime: always ends
    }
    sh->a = (int64_t)a;
    sh->b = (int64_t)fk_rng_below(&r, (uint64_t)n);
}

int64_t fk_shuffle_at(const fk_shuffle *sh, int64_t p) {
    if (p < 0 || p >= sh->n) return p;
    uint64_t n = (uint64_t)sh->n;
    return (int64_t)((mulmod((uint64_t)sh->a, (uint64_t)p, n) + (uint64_t)sh->b) % n);
}

// gather with the shuffle: position from + j's row is the one stored at fk_shuffle_at(from + j),
// copied one position at a time (from the whole decoded store, else from its sequence, decoded
// when it is not the last one read: slow for stores read per batch, one sequence per position).
static fk_status gather_shuffled(teacher_src *t, const fk_shuffle *sh, int64_t from, int64_t n, fk_teacher_window *w) {
    const fk_store_header *h = fk_store_header_of(t->store);
    int k = h->k;
    int64_t positions = h->n_tokens - 1;
    topk_arrays *win = &t->win;
    if (n > t->cap) {
        topk_free(win);
        t->cap = topk_alloc(win, n, k) ? n : 0;
        if (!t->cap) return fk_error(FK_ERR_NOMEM, "out of memory");
    }
    for (int64_t j = 0; j < n; j++) {
        int64_t pos = fk_shuffle_at(sh, from + j);
        if (pos >= positions) {
            win->count[j] = 0;
            win->ce[j] = 0;
        } else if (t->all.count) {
            const topk_arrays *all = &t->all;
            fk_store_seq q = {.count = all->count, .ids = all->ids, .logp = all->logp, .ce = all->ce};
            topk_put(win, j, &q, pos, 1, k);
        } else {
            int64_t c = pos / h->seq;
            if (c != t->seq_index) {
                FK_TRY(fk_store_read_seq(t->store, c, &t->seq));
                t->seq_index = c;
            }
            topk_put(win, j, &t->seq, pos - t->seq.first, 1, k);
        }
    }
    *w = (fk_teacher_window){n, k, win->count, win->ids, win->logp, win->ce};
    return FK_OK;
}

// Teacher i's window at positions [from, from + n): shuffled when the control is on.
static fk_status gather_rows(fk_teacher_set *s, int i, int64_t from, int64_t n, fk_teacher_window *w) {
    fk_status st = s->shuffle.n > 0 ? gather_shuffled(&s->src[i], &s->shuffle, from, n, w) : gather(&s->src[i], from, n, w);
    return st != FK_OK ? fk_error_context(st, "%s", s->src[i].path) : FK_OK;
}

static fk_status set_fill(void *ctx, const int64_t *off, int B, int T, const int32_t *labels, fk_sparse_dist *out) {
    fk_teacher_set *s = ctx;
    fk_fused_rows_clear(&s->rows);
    fk_teacher_window w[64];
    double wt[64];
    for (int b = 0; b < B; b++) {
        for (int i = 0; i < s->S; i++) FK_TRY(gather_rows(s, i, off[b], T, &w[i]));
        FK_TRY(fk_fuse_window(&s->o, w, s->S, labels + (int64_t)b * T, T, &s->rows, wt));
        for (int i = 0; i < s->S; i++) s->shares[i] += wt[i];
    }
    *out = fk_fused_rows_dist(&s->rows);
    return FK_OK;
}

// ------------------------------------------------------------------ the span objective

// Reads the boundary file of every aligned store (a store in the target's tokenization shares
// every boundary).
static fk_status span_open(fk_teacher_set *s) {
    for (int i = 0; i < s->S; i++) {
        teacher_src *t = &s->src[i];
        const fk_store_header *h = fk_store_header_of(t->store);
        if (!(h->flags & FK_STORE_ALIGNED)) continue;
        char *bp = fk_span_bounds_path(t->path);
        fk_status st = bp ? fk_span_bounds_read(bp, h->n_tokens, h->tokenizer_fp, h->corpus_fp, &t->ends)
                          : fk_error(FK_ERR_NOMEM, "out of memory");
        free(bp);
        FK_TRY(st);
    }
    return FK_OK;
}

// Buffers for micro-batches of B rows of T positions.
static fk_status span_reserve(fk_teacher_set *s, int B, int T) {
    int64_t n = (int64_t)B * T;
    if (n <= s->span_n) return FK_OK;
    free(s->span_w); free(s->span_g); free(s->span_ends); free(s->span_chunk); free(s->span_tl);
    s->span_w = malloc((size_t)n * sizeof *s->span_w);
    s->span_g = malloc((size_t)n * sizeof *s->span_g);
    s->span_ends = malloc((size_t)n + 1);
    s->span_chunk = malloc((size_t)n * sizeof *s->span_chunk);
    s->span_tl = malloc((size_t)n * sizeof *s->span_tl);
    bool ok = s->span_w && s->span_g && s->span_ends && s->span_chunk && s->span_tl;
    s->span_n = ok ? n : 0;
    return ok ? FK_OK : fk_error(FK_ERR_NOMEM, "out of memory");
}

// The span loss of a micro-batch (fk_teacher.span): per row, the chunks every teacher's
// boundaries allow, the fused teacher chunk log-likelihoods and the chunks' losses; the
// weights are lambda / (scored positions) + (1 - lambda) dL_c/dnll / (chunks).
static fk_status set_span(void *ctx, const int64_t *off, int B, int T, const int32_t *labels, const float *nll, const float **w,
                          float *loss, float *fusion) {
    fk_teacher_set *s = ctx;
    FK_TRY(span_reserve(s, B, T));
    int64_t chunks = 0, scored = 0, N = (int64_t)B * T;
    double lsum = 0, clm = 0;
    for (int b = 0; b < B; b++) {
        fk_teacher_window win[64];
        memset(s->span_ends, 1, (size_t)T + 1);
        for (int i = 0; i < s->S; i++) {
            FK_TRY(gather_rows(s, i, off[b], T, &win[i]));
            if (s->src[i].ends)  // tokens off[b] .. off[b] + T, the first one's end starting the window's first chunk
                for (int j = 0; j <= T; j++) s->span_ends[j] &= s->src[i].ends[off[b] + j];
        }
        int32_t *chunk = s->span_chunk;
        int64_t nc = fk_span_chunks(s->span_ends, T, chunk);
        fk_span_teacher_logp(&s->o, win, s->S, chunk, T, s->span_tl, s->shares);
        lsum += fk_span_window(chunk, T, nll + (int64_t)b * T, s->span_tl, nc, s->o.span_temp, s->span_g + (int64_t)b * T);
        chunks += nc;
    }
    if (!isfinite(lsum)) return fk_error(FK_ERR_NUMERIC, "span objective: the loss is not finite (out of memory or a bad temperature %g)",
                                         s->o.span_temp);
    for (int64_t i = 0; i < N; i++)
        if (labels[i] >= 0) { scored++; clm += nll[i]; }
    float lambda = s->teacher.lambda;
    for (int64_t i = 0; i < N; i++)
        s->span_w[i] = labels[i] < 0 ? 0.0f
                                     : lambda / (float)scored + (chunks > 0 ? (1 - lambda) * s->span_g[i] / (float)chunks : 0.0f);
    *w = s->span_w;
    *fusion = chunks > 0 ? (float)(lsum / (double)chunks) : 0.0f;
    *loss = (float)(lambda * (scored > 0 ? clm / (double)scored : 0) + (1 - lambda) * *fusion);
    return FK_OK;
}

// Opens teacher i's store at path and checks it against the training data: the same
// tokenizer and the same tokens.
static fk_status open_source(teacher_src *t, const char *path, const fk_token_data *train) {
    t->seq_index = -1;
    t->path = strdup(path);
    FK_TRY(fk_store_open(path, &t->store));
    const fk_store_header *h = fk_store_header_of(t->store);
    if (train->tokenizer_fp && h->tokenizer_fp != train->tokenizer_fp)
        return fk_error(FK_ERR_ARG,
                        "teacher store %s holds another tokenizer's positions (fingerprint %016llx, the training data's %016llx): "
                        "align it to the target's tokenizer first",
                        path, (unsigned long long)h->tokenizer_fp, (unsigned long long)train->tokenizer_fp);
    if (h->n_tokens < train->n)
        return fk_error(FK_ERR_ARG, "teacher store %s covers %lld tokens, the training data %s %lld: not the same corpus", path,
                        (long long)h->n_tokens, train->path ? train->path : "", (long long)train->n);
    const int32_t *ids = fk_store_token_ids(t->store);
    for (int64_t j = 0; j < train->n; j++)
        if (ids[j] != train->ids[j])
            return fk_error(FK_ERR_ARG, "teacher store %s differs from the training data %s at token %lld (%d vs %d): not the same corpus",
                            path, train->path ? train->path : "", (long long)j, ids[j], train->ids[j]);
    return FK_OK;
}

// Decodes the stores whole when they fit (positions x k x 9 bytes each; FK_TEACHER_MEM_MB,
// 4096 by default), else leaves them to be read per batch.
static fk_status decode_all(fk_teacher_set *s) {
    int64_t need = 0;
    for (int i = 0; i < s->S; i++) {
        const fk_store_header *h = fk_store_header_of(s->src[i].store);
        need += (h->n_tokens - 1) * ((int64_t)h->k * 8 + 5);
    }
    const char *budget_env = getenv("FK_TEACHER_MEM_MB");
    int64_t budget = (budget_env ? atoll(budget_env) : 4096) << 20;
    if (need > budget) return FK_OK;
    for (int i = 0; i < s->S; i++) {
        teacher_src *t = &s->src[i];
        const fk_store_header *h = fk_store_header_of(t->store);
        int64_t P = h->n_tokens - 1;
        if (P < 1) continue;
        if (!topk_alloc(&t->all, P, h->k)) return fk_error(FK_ERR_NOMEM, "out of memory decoding %s", t->path);
        FK_TRY(topk_decode_whole(t->store, t->path, &t->all));
    }
    return FK_OK;
}

fk_status fk_teacher_set_open(const char *const *paths, int n, const fk_fusion_opts *o, const fk_token_data *train,
                              fk_teacher_set **out) {
    *out = NULL;
    if (n < 1 || n > 64) return fk_error(FK_ERR_ARG, "fused training takes 1 to 64 teachers (got %d)", n);
    fk_teacher_set *s = calloc(1, sizeof *s);
    if (!s) return fk_error(FK_ERR_NOMEM, "out of memory");
    s->src = calloc((size_t)n, sizeof *s->src);
    s->shares = calloc((size_t)n, sizeof *s->shares);
    s->S = n;
    s->o = *o;
    if (!s->src || !s->shares) { fk_teacher_set_close(s); return fk_error(FK_ERR_NOMEM, "out of memory"); }
    fk_status st = FK_OK;
    for (int i = 0; i < n && st == FK_OK; i++) st = open_source(&s->src[i], paths[i], train);
    if (st == FK_OK) st = decode_all(s);
    if (o->shuffle_seed) fk_shuffle_init(&s->shuffle, o->shuffle_seed, train->n - 1);
    if (st != FK_OK) { fk_teacher_set_close(s); return st; }
    if (o->objective == FK_OBJECTIVE_SPAN && (st = span_open(s)) != FK_OK) { fk_teacher_set_close(s); return st; }
    s->teacher = (fk_teacher){set_fill, s, 0.9f, o->objective, o->objective == FK_OBJECTIVE_SPAN ? set_span : NULL};
    *out = s;
    return FK_OK;
}

fk_status fk_teacher_set_check_model(const fk_teacher_set *s, int64_t vocab, const char *model) {
    for (int i = 0; i < s->S; i++) {
        const teacher_src *t = &s->src[i];
        const fk_store_header *h = fk_store_header_of(t->store);
        if (h->vocab_size <= vocab) continue;
        // a larger vocabulary is padding rows when no stored id reaches past the model's
        int64_t P = h->n_tokens - 1, k = h->k;
        if (!t->all.ids)
            return fk_error(FK_ERR_ARG, "teacher store %s has vocabulary %lld, the model being trained (%s) %lld: the store was extracted "
                            "from a model of another vocabulary", t->path, (long long)h->vocab_size, model, (long long)vocab);
        for (int64_t p = 0; p < P; p++)
            for (int j = 0; j < t->all.count[p]; j++)
                if (t->all.ids[p * k + j] >= vocab)
                    return fk_error(FK_ERR_ARG, "teacher store %s (vocabulary %lld) has id %d at position %lld, outside the vocabulary of the "
                                    "model being trained (%s, %lld): the store was extracted from a model of another vocabulary",
                                    t->path, (long long)h->vocab_size, t->all.ids[p * k + j], (long long)p, model, (long long)vocab);
    }
    return FK_OK;
}

const fk_teacher *fk_teacher_set_teacher(fk_teacher_set *s, float lambda) {
    s->teacher.lambda = lambda;
    return &s->teacher;
}

// ------------------------------------------------------------------ aligning a store to the target

char *fk_store_tokenizer_dir(const char *store_path) {
    size_t n = strlen(store_path);
    char *p = malloc(n + 11);
    if (p) { memcpy(p, store_path, n); memcpy(p + n, ".tokenizer", 11); }
    return p;
}

fk_status fk_store_save_tokenizer(const char *store_path, const fk_tokenizer *t) {
    char *dir = fk_store_tokenizer_dir(store_path);
    if (!dir) return fk_error(FK_ERR_NOMEM, "out of memory");
    fk_status st = fk_tok_save_hf(t, dir);
    free(dir);
    return st;
}

fk_status fk_store_tokenizer(const fk_store *s, fk_tokenizer **out) {
    *out = NULL;
    const char *path = fk_store_path(s);
    char *dir = fk_store_tokenizer_dir(path);
    if (!dir) return fk_error(FK_ERR_NOMEM, "out of memory");
    fk_status st = FK_OK;
    if (!fk_path_exists(dir))
        st = fk_error(FK_ERR_IO, "%s: the source's tokenizer is missing (expected the folder %s, which fusekit extract writes beside the store)",
                      path, dir);
    if (st == FK_OK) st = fk_tok_load(dir, out);
    if (st == FK_OK && fk_tok_fingerprint(*out) != fk_store_header_of(s)->tokenizer_fp) {
        st = fk_error(FK_ERR_FORMAT, "%s holds another tokenizer than the store %s was extracted with (fingerprints %016llx and %016llx)", dir,
                      path, (unsigned long long)fk_tok_fingerprint(*out), (unsigned long long)fk_store_header_of(s)->tokenizer_fp);
        fk_tok_free(*out);
        *out = NULL;
    }
    free(dir);
    return st;
}

// "<dir>/<store name without .fkd>.to-<target fingerprint>-<mode>-<vmap>.fkd"
static char *aligned_path(const char *src_path, const fk_tokenizer *tgt, const fk_align_opts *o) {
    const char *slash = strrchr(src_path, '/');
    const char *base = slash ? slash + 1 : src_path;
    size_t bl = strlen(base);
    if (bl > 4 && strcmp(base + bl - 4, ".fkd") == 0) bl -= 4;
    char name[700];
    snprintf(name, sizeof name, "%.*s.to-%016llx-%s-%s.fkd", (int)bl, base, (unsigned long long)fk_tok_fingerprint(tgt),
             fk_align_mode_name(o->mode), fk_vmap_mode_name(o->vmap));
    if (o->cache_dir) return fk_path_join(o->cache_dir, name);
    if (!slash) return strdup(name);
    char *dir = strndup(src_path, (size_t)(slash - src_path));
    char *p = fk_path_join(dir, name);
    free(dir);
    return p;
}

static fk_status write_aligned(const char *out_path, const fk_store_header *src_h, const fk_tokenizer *tgt, const fk_tokseq *tt,
                               fk_aligned_dist *d) {
    fk_store_header h = *src_h;
    h.flags = FK_STORE_ALIGNED | (src_h->flags & FK_STORE_BOS);
    h.vocab_size = fk_tok_vocab_size(tgt);
    h.n_tokens = tt->n;
    h.tokenizer_fp = fk_tok_fingerprint(tgt);
    h.seq = 1024;
    // a collision sum of quantised log-probs can pass 0 by a quantisation step: probabilities are at most 1
    for (int64_t i = 0; i < d->n * d->k; i++)
        if (d->logp[i] > 0) d->logp[i] = 0;
    fk_store_writer *w;
    int64_t done;
    FK_TRY(fk_store_writer_open(out_path, &h, tt->ids, tt->begin, true, &w, &done));
    fk_status st = FK_OK;
    int64_t positions = tt->n - 1;
    for (int64_t first = 0; first < positions && st == FK_OK; first += h.seq) {
        int64_t n = positions - first < h.seq ? positions - first : h.seq;
        double sum = 0;
        for (int64_t j = 0; j < n; j++) sum += d->ce[first + j];
        fk_store_seq q = {.first = first, .n = n, .k = d->k, .count = d->count + first, .ids = d->ids + first * d->k,
                          .logp = d->logp + first * d->k, .ce = d->ce + first, .mean_ce = n > 0 ? sum / (double)n : 0};
        st = fk_store_write_seq(w, &q);
    }
    if (st == FK_OK) return fk_store_writer_finish(w);
    fk_store_writer_close(w);
    return st;
}

// Whether out holds a store already aligned from a source with header h to the tokenizer
// of fingerprint tfp.
static bool aligned_cache_ok(const char *out, const fk_store_header *h, uint64_t tfp) {
    fk_store *cached = NULL;
    if (!out || !fk_path_exists(out) || fk_store_open(out, &cached) != FK_OK) return false;
    const fk_store_header *c = fk_store_header_of(cached);
    bool ok = c->tokenizer_fp == tfp && c->corpus_fp == h->corpus_fp && c->model_fp == h->model_fp && (c->flags & FK_STORE_ALIGNED) &&
              (c->flags & FK_STORE_BOS) == (h->flags & FK_STORE_BOS);
    fk_store_close(cached);
    return ok;
}

// Aligning a store to the target: the corpus, the source's tokenizer, the target's tokens,
// the vocabulary map and the alignment of the two tokenizations.
typedef struct {
    char *text;
    size_t len;
    fk_tokenizer *src_tok;
    fk_tok_out te;
    fk_tokseq tt;
    int64_t *tbegin;
    int32_t *vmap;
    fk_alignment al;
} align_job;

static void align_job_free(align_job *j) {
    fk_alignment_free(&j->al);
    fk_tok_out_free(&j->te);
    free(j->tbegin); free(j->vmap); free(j->text);
    fk_tok_free(j->src_tok);
}

// Reads the corpus (it must be the store's, as text), tokenizes it for the target, builds or
// loads the vocabulary map (in o->cache_dir, else beside the store) and aligns the store's
// tokens (ss) to the target's.
static fk_status align_positions(align_job *j, fk_store *s, const fk_tokseq *ss, const char *store_path, const fk_tokenizer *tgt,
                                 const char *corpus_path, const fk_align_opts *o) {
    if (fk_data_is_shard(corpus_path))
        return fk_error(FK_ERR_ARG, "%s is a token shard: aligning the teacher store %s to the target's tokens needs the corpus as text", corpus_path,
                        store_path);
    FK_TRY(fk_read_file(corpus_path, &j->text, &j->len));
    if (fk_corpus_fingerprint(j->text, j->len) != fk_store_header_of(s)->corpus_fp)
        return fk_error(FK_ERR_ARG, "%s was extracted from another corpus than %s (corpus fingerprints differ)", store_path, corpus_path);
    FK_TRY(fk_store_tokenizer(s, &j->src_tok));
    FK_TRY(fk_tok_encode(tgt, j->text, j->len, 0, &j->te));
    FK_TRY(fk_tokseq_from_out(&j->te, &j->tt, &j->tbegin));
    const char *dir = o->cache_dir;
    char *sdir = NULL;
    if (!dir) {
        const char *slash = strrchr(store_path, '/');
        sdir = slash ? strndup(store_path, (size_t)(slash - store_path)) : strdup(".");
        dir = sdir;
    }
    fk_status st = fk_vmap_load_or_build(j->src_tok, tgt, o->vmap, dir, &j->vmap);
    free(sdir);
    FK_TRY(st);
    return fk_align_tokens(j->src_tok, ss, tgt, &j->tt, o->mode, j->vmap, &j->al);
}

// Decodes the source's distributions whole (positions x k), carries them over the
// alignment and writes the aligned store at out with the target's tokenizer beside it.
static fk_status write_aligned_store(align_job *j, fk_store *s, const fk_tokseq *ss, const char *store_path, const fk_tokenizer *tgt,
                                     const char *out) {
    const fk_store_header *h = fk_store_header_of(s);
    topk_arrays src = {0};
    fk_aligned_dist ad = {0};
    fk_status st = topk_alloc(&src, h->n_tokens - 1, h->k) ? FK_OK : fk_error(FK_ERR_NOMEM, "out of memory decoding %s", store_path);
    if (st == FK_OK) st = topk_decode_whole(s, store_path, &src);
    if (st == FK_OK) st = fk_align_dists(&j->al, ss, &j->tt, j->vmap, (int)h->k, src.count, src.ids, src.logp, src.ce, &ad);
    if (st == FK_OK) st = write_aligned(out, h, tgt, &j->tt, &ad);
    if (st == FK_OK) st = fk_store_save_tokenizer(out, tgt);
    fk_aligned_dist_free(&ad);
    topk_free(&src);
    return st;
}

// Writes the boundary file of the aligned store at path (fk_span_bounds_path: its tokens'
// ends shared with the source store src's tokens, for the span objective) when `fresh` or
// when the file is missing or does not fit the store.
static fk_status write_bounds(const char *path, fk_store *src, bool fresh) {
    fk_store *a;
    FK_TRY(fk_store_open(path, &a));
    const fk_store_header *h = fk_store_header_of(a);
    char *bp = fk_span_bounds_path(path);
    uint8_t *ends = NULL;
    fk_status st = bp ? FK_OK : fk_error(FK_ERR_NOMEM, "out of memory");
    if (st == FK_OK && (fresh || fk_span_bounds_read(bp, h->n_tokens, h->tokenizer_fp, h->corpus_fp, &ends) != FK_OK)) {
        free(ends);
        ends = malloc((size_t)(h->n_tokens > 0 ? h->n_tokens : 1));
        if (!ends) st = fk_error(FK_ERR_NOMEM, "out of memory");
        if (st == FK_OK) {
            fk_span_shared_ends(fk_store_token_begin(src), fk_store_header_of(src)->n_tokens, fk_store_token_begin(a), h->n_tokens, ends);
            st = fk_span_bounds_write(bp, ends, h->n_tokens, h->tokenizer_fp, h->corpus_fp);
        }
    }
    free(ends);
    free(bp);
    fk_store_close(a);
    return st;
}

fk_status fk_teacher_prepare(const char *store_path, const fk_tokenizer *tgt, const char *corpus_path, const fk_align_opts *o,
                             char **path, bool *built) {
    *path = NULL;
    if (built) *built = false;
    fk_store *s;
    FK_TRY(fk_store_open(store_path, &s));
    const fk_store_header h = *fk_store_header_of(s);
    uint64_t tfp = fk_tok_fingerprint(tgt);
    if (h.tokenizer_fp == tfp) {
        fk_store_close(s);
        *path = strdup(store_path);
        return FK_OK;
    }
    if (h.flags & FK_STORE_ALIGNED) {
        fk_store_close(s);
        return fk_error(FK_ERR_ARG, "%s is aligned to another tokenizer (fingerprint %016llx, the target's %016llx): pass the source's own store",
                        store_path, (unsigned long long)h.tokenizer_fp, (unsigned long long)tfp);
    }
    char *out = aligned_path(store_path, tgt, o);
    if (aligned_cache_ok(out, &h, tfp)) {
        fk_status bst = write_bounds(out, s, false);
        fk_store_close(s);
        if (bst != FK_OK) { free(out); return bst; }
        *path = out;
        return FK_OK;
    }
    align_job j = {0};
    fk_tokseq ss = {h.n_tokens, fk_store_token_ids(s), fk_store_token_begin(s)};
    fk_status st = out ? FK_OK : fk_error(FK_ERR_NOMEM, "out of memory");
    if (st == FK_OK) st = align_positions(&j, s, &ss, store_path, tgt, corpus_path, o);
    if (st == FK_OK) st = write_aligned_store(&j, s, &ss, store_path, tgt, out);
    if (st == FK_OK) st = write_bounds(out, s, true);
    if (st != FK_OK) fk_error_context(st, "aligning %s to the target's tokenizer", store_path);
    align_job_free(&j);
    fk_store_close(s);
    if (st == FK_OK) { *path = out; if (built) *built = true; }
    else free(out);
    return st;
}
