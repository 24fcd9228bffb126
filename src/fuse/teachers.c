// The teacher set: distribution stores feeding fused training (fusekit/fusion.h).
#include "fusekit/data.h"
#include "fusekit/fusion.h"
#include "fusekit/extract.h"

#include <stdlib.h>
#include <string.h>

// ------------------------------------------------------------------ teacher set

typedef struct {
    fk_store *store;
    fk_store_seq seq;        // the last decoded sequence
    int64_t seq_index;       // which one (-1: none)
    char *path;
    // the whole store decoded at open when it fits the memory budget (else NULL: per batch)
    uint8_t *all_count;
    int32_t *all_ids;
    float *all_logp, *all_ce;
    // one window's arrays, gathered from the decoded sequences
    uint8_t *count;
    int32_t *ids;
    float *logp, *ce;
    int64_t cap;
} teacher_src;

struct fk_teacher_set {
    int S;
    fk_fusion_opts o;
    teacher_src *src;
    fk_fused_rows rows;
    fk_teacher teacher;
    double *shares;          // summed weights per teacher
};

void fk_teacher_set_close(fk_teacher_set *s) {
    if (!s) return;
    for (int i = 0; i < s->S; i++) {
        teacher_src *t = &s->src[i];
        fk_store_seq_free(&t->seq);
        if (t->store) fk_store_close(t->store);
        free(t->path); free(t->count); free(t->ids); free(t->logp); free(t->ce);
        free(t->all_count); free(t->all_ids); free(t->all_logp); free(t->all_ce);
    }
    free(s->src);
    free(s->shares);
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
    if (t->all_count && from + n <= positions) {  // decoded whole: a view, no copy
        *w = (fk_teacher_window){n, k, t->all_count + from, t->all_ids + from * k, t->all_logp + from * k, t->all_ce + from};
        return FK_OK;
    }
    if (n > t->cap) {
        free(t->count); free(t->ids); free(t->logp); free(t->ce);
        t->count = malloc((size_t)n);
        t->ids = malloc((size_t)(n * k) * sizeof *t->ids);
        t->logp = malloc((size_t)(n * k) * sizeof *t->logp);
        t->ce = malloc((size_t)n * sizeof *t->ce);
        t->cap = t->count && t->ids && t->logp && t->ce ? n : 0;
        if (!t->cap) return fk_error(FK_ERR_NOMEM, "out of memory");
    }
    for (int64_t j = 0; j < n;) {
        int64_t pos = from + j;
        if (pos >= positions) {
            t->count[j] = 0;
            t->ce[j] = 0;
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
        memcpy(t->count + j, t->seq.count + o, (size_t)take);
        memcpy(t->ids + j * k, t->seq.ids + o * k, (size_t)(take * k) * sizeof *t->ids);
        memcpy(t->logp + j * k, t->seq.logp + o * k, (size_t)(take * k) * sizeof *t->logp);
        memcpy(t->ce + j, t->seq.ce + o, (size_t)take * sizeof *t->ce);
        j += take;
    }
    *w = (fk_teacher_window){n, k, t->count, t->ids, t->logp, t->ce};
    return FK_OK;
}

static fk_status set_fill(void *ctx, const int64_t *off, int B, int T, const int32_t *labels, fk_sparse_dist *out) {
    fk_teacher_set *s = ctx;
    fk_fused_rows_clear(&s->rows);
    fk_teacher_window w[64];
    double wt[64];
    for (int b = 0; b < B; b++) {
        for (int i = 0; i < s->S; i++) {
            fk_status st = gather(&s->src[i], off[b], T, &w[i]);
            if (st != FK_OK) return fk_error_context(st, "%s", s->src[i].path);
        }
        FK_TRY(fk_fuse_window(&s->o, w, s->S, labels + (int64_t)b * T, T, &s->rows, wt));
        for (int i = 0; i < s->S; i++) s->shares[i] += wt[i];
    }
    *out = fk_fused_rows_dist(&s->rows);
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
    for (int i = 0; i < n && st == FK_OK; i++) {
        teacher_src *t = &s->src[i];
        t->seq_index = -1;
        t->path = strdup(paths[i]);
        st = fk_store_open(paths[i], &t->store);
        if (st != FK_OK) break;
        const fk_store_header *h = fk_store_header_of(t->store);
        if (train->tokenizer_fp && h->tokenizer_fp != train->tokenizer_fp) {
            st = fk_error(FK_ERR_ARG,
                          "teacher store %s holds another tokenizer's positions (fingerprint %016llx, the training data's %016llx): "
                          "align it to the target's tokenizer first",
                          paths[i], (unsigned long long)h->tokenizer_fp, (unsigned long long)train->tokenizer_fp);
            break;
        }
        if (h->n_tokens < train->n) {
            st = fk_error(FK_ERR_ARG, "teacher store %s covers %lld tokens, the training data %s %lld: not the same corpus", paths[i],
                          (long long)h->n_tokens, train->path ? train->path : "", (long long)train->n);
            break;
        }
        const int32_t *ids = fk_store_token_ids(t->store);
        for (int64_t j = 0; j < train->n; j++)
            if (ids[j] != train->ids[j]) {
                st = fk_error(FK_ERR_ARG, "teacher store %s differs from the training data %s at token %lld (%d vs %d): not the same corpus",
                              paths[i], train->path ? train->path : "", (long long)j, ids[j], train->ids[j]);
                break;
            }
    }
    // decode the stores whole when they fit (positions x k x 9 bytes each); sequences decode in parallel
    int64_t need = 0;
    for (int i = 0; i < n && st == FK_OK; i++) {
        const fk_store_header *h = fk_store_header_of(s->src[i].store);
        need += (h->n_tokens - 1) * ((int64_t)h->k * 8 + 5);
    }
    const char *budget_env = getenv("FK_TEACHER_MEM_MB");
    int64_t budget = (budget_env ? atoll(budget_env) : 4096) << 20;
    for (int i = 0; i < n && st == FK_OK && need <= budget; i++) {
        teacher_src *t = &s->src[i];
        const fk_store_header *h = fk_store_header_of(t->store);
        int64_t P = h->n_tokens - 1, k = h->k, ns = fk_store_n_seqs(t->store);
        if (P < 1) continue;
        t->all_count = malloc((size_t)P);
        t->all_ids = malloc((size_t)(P * k) * sizeof *t->all_ids);
        t->all_logp = malloc((size_t)(P * k) * sizeof *t->all_logp);
        t->all_ce = malloc((size_t)P * sizeof *t->all_ce);
        if (!t->all_count || !t->all_ids || !t->all_logp || !t->all_ce) { st = fk_error(FK_ERR_NOMEM, "out of memory decoding %s", t->path); break; }
        int bad = 0;
        int64_t bad_c = 0;
        #pragma omp parallel
        {
            fk_store_seq q = {0};
            #pragma omp for schedule(dynamic, 1)
            for (int64_t c = 0; c < ns; c++) {
                if (bad) continue;
                if (fk_store_read_seq(t->store, c, &q) != FK_OK) {
                    #pragma omp critical
                    { if (!bad) { bad = 1; bad_c = c; } }
                    continue;
                }
                memcpy(t->all_count + q.first, q.count, (size_t)q.n);
                memcpy(t->all_ids + q.first * k, q.ids, (size_t)(q.n * k) * sizeof *t->all_ids);
                memcpy(t->all_logp + q.first * k, q.logp, (size_t)(q.n * k) * sizeof *t->all_logp);
                memcpy(t->all_ce + q.first, q.ce, (size_t)q.n * sizeof *t->all_ce);
            }
            fk_store_seq_free(&q);
        }
        if (bad) {  // again on this thread, whose error message the caller reads
            fk_store_seq q = {0};
            st = fk_store_read_seq(t->store, bad_c, &q);
            fk_store_seq_free(&q);
            if (st == FK_OK) st = fk_error(FK_ERR_FORMAT, "%s: sequence %lld did not decode", t->path, (long long)bad_c);
        }
    }
    if (st != FK_OK) { fk_teacher_set_close(s); return st; }
    s->teacher = (fk_teacher){set_fill, s, 0.9f};
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
        if (!t->all_ids)
            return fk_error(FK_ERR_ARG, "teacher store %s has vocabulary %lld, the model being trained (%s) %lld: the store was extracted "
                            "from a model of another vocabulary", t->path, (long long)h->vocab_size, model, (long long)vocab);
        for (int64_t p = 0; p < P; p++)
            for (int j = 0; j < t->all_count[p]; j++)
                if (t->all_ids[p * k + j] >= vocab)
                    return fk_error(FK_ERR_ARG, "teacher store %s (vocabulary %lld) has id %d at position %lld, outside the vocabulary of the "
                                    "model being trained (%s, %lld): the store was extracted from a model of another vocabulary",
                                    t->path, (long long)h->vocab_size, t->all_ids[p * k + j], (long long)p, model, (long long)vocab);
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
             o->mode == FK_ALIGN_DTW ? "dtw" : "offsets", fk_vmap_mode_name(o->vmap));
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
    fk_store *cached = NULL;
    if (out && fk_path_exists(out) && fk_store_open(out, &cached) == FK_OK) {
        const fk_store_header *c = fk_store_header_of(cached);
        bool ok = c->tokenizer_fp == tfp && c->corpus_fp == h.corpus_fp && c->model_fp == h.model_fp && (c->flags & FK_STORE_ALIGNED) &&
                  (c->flags & FK_STORE_BOS) == (h.flags & FK_STORE_BOS);
        fk_store_close(cached);
        if (ok) { fk_store_close(s); *path = out; return FK_OK; }
    }
    fk_tokenizer *src_tok = NULL;
    char *text = NULL;
    size_t len = 0;
    int32_t *vmap = NULL;
    int64_t *tbegin = NULL;
    fk_tok_out te = {0};
    fk_alignment al = {0};
    fk_aligned_dist ad = {0};
    uint8_t *cnt = NULL;
    int32_t *ids = NULL;
    float *logp = NULL, *ce = NULL;
    fk_store_seq q = {0};
    fk_status st = out ? FK_OK : fk_error(FK_ERR_NOMEM, "out of memory");
    if (st == FK_OK && fk_data_is_shard(corpus_path))
        st = fk_error(FK_ERR_ARG, "%s is a token shard: aligning the teacher store %s to the target's tokens needs the corpus as text", corpus_path,
                      store_path);
    if (st == FK_OK) st = fk_read_file(corpus_path, &text, &len);
    if (st == FK_OK && fk_corpus_fingerprint(text, len) != h.corpus_fp)
        st = fk_error(FK_ERR_ARG, "%s was extracted from another corpus than %s (corpus fingerprints differ)", store_path, corpus_path);
    if (st == FK_OK) st = fk_store_tokenizer(s, &src_tok);
    if (st == FK_OK) st = fk_tok_encode(tgt, text, len, 0, &te);
    fk_tokseq tt = {0};
    if (st == FK_OK) st = fk_tokseq_from_out(&te, &tt, &tbegin);
    if (st == FK_OK) {
        const char *dir = o->cache_dir;
        char *sdir = NULL;
        if (!dir) {
            const char *slash = strrchr(store_path, '/');
            sdir = slash ? strndup(store_path, (size_t)(slash - store_path)) : strdup(".");
            dir = sdir;
        }
        st = fk_vmap_load_or_build(src_tok, tgt, o->vmap, dir, &vmap);
        free(sdir);
    }
    fk_tokseq ss = {h.n_tokens, fk_store_token_ids(s), fk_store_token_begin(s)};
    if (st == FK_OK) st = fk_align_tokens(src_tok, &ss, tgt, &tt, o->mode, vmap, &al);
    // the source's distributions, decoded whole (positions x k)
    int64_t P = h.n_tokens - 1, k = h.k;
    if (st == FK_OK) {
        cnt = malloc((size_t)(P > 0 ? P : 1));
        ids = malloc((size_t)(P * k > 0 ? P * k : 1) * sizeof *ids);
        logp = malloc((size_t)(P * k > 0 ? P * k : 1) * sizeof *logp);
        ce = malloc((size_t)(P > 0 ? P : 1) * sizeof *ce);
        if (!cnt || !ids || !logp || !ce) st = fk_error(FK_ERR_NOMEM, "out of memory decoding %s", store_path);
    }
    for (int64_t c = 0; c < fk_store_n_seqs(s) && st == FK_OK; c++) {
        st = fk_store_read_seq(s, c, &q);
        if (st != FK_OK) break;
        memcpy(cnt + q.first, q.count, (size_t)q.n);
        memcpy(ids + q.first * k, q.ids, (size_t)(q.n * k) * sizeof *ids);
        memcpy(logp + q.first * k, q.logp, (size_t)(q.n * k) * sizeof *logp);
        memcpy(ce + q.first, q.ce, (size_t)q.n * sizeof *ce);
    }
    if (st == FK_OK) st = fk_align_dists(&al, &ss, &tt, vmap, (int)k, cnt, ids, logp, ce, &ad);
    if (st == FK_OK) st = write_aligned(out, &h, tgt, &tt, &ad);
    if (st == FK_OK) st = fk_store_save_tokenizer(out, tgt);
    if (st != FK_OK) fk_error_context(st, "aligning %s to the target's tokenizer", store_path);
    fk_store_seq_free(&q);
    free(cnt); free(ids); free(logp); free(ce);
    fk_aligned_dist_free(&ad);
    fk_alignment_free(&al);
    fk_tok_out_free(&te);
    free(tbegin); free(vmap); free(text);
    fk_tok_free(src_tok);
    fk_store_close(s);
    if (st == FK_OK) { *path = out; if (built) *built = true; }
    else free(out);
    return st;
}
