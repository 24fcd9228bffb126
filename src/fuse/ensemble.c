// Output ensembles across tokenizers: the average of several models' next-token
// distributions, aligned to the first model's tokens (fusion.md §7), scored in bits per byte.
#include "fusekit/fusion.h"
#include "fusekit/align.h"
#include "fusekit/eval.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/dist.h"
#include "nn/rowops.h"

// Per position j of the scorer's tokenization: model i's probability of the true next
// scorer token, or -1 where model i has no distribution aligned 1:1 there.
typedef struct {
    float *p;            // n positions
    double own_nats;     // model i's cross-entropy on its own tokenization
    int64_t own_tokens, own_bytes;
} member;

// Runs model m over its tokenization `s` in windows of seq tokens (the fk_eval_data protocol,
// after bos when >= 0) and fills mem->p[j] for the scorer positions j whose 1:1 source position
// it computes. Under mpirun each rank runs a contiguous share of the windows and the ranks'
// figures are combined (each position is filled by the one window that predicts it).
// The ranks' shares of one member summed: the sums, and each position's probability from the rank
// that filled it (the others hold -1 there), as doubles (p + 1, or 0) summed over the ranks.
static fk_status combine_ranks(member *mem, int64_t P) {
    double *d = malloc((size_t)(P > 0 ? P : 1) * sizeof *d);
    if (!d) return fk_error(FK_ERR_NOMEM, "out of memory");
    for (int64_t j = 0; j < P; j++) d[j] = mem->p[j] >= 0 ? (double)mem->p[j] + 1 : 0;
    for (int64_t j0 = 0; j0 < P; j0 += (int64_t)1 << 28) fk_dist_sum_f64(d + j0, (int)(P - j0 < ((int64_t)1 << 28) ? P - j0 : (int64_t)1 << 28));
    for (int64_t j = 0; j < P; j++) mem->p[j] = d[j] > 0 ? (float)(d[j] - 1) : -1;
    free(d);
    fk_dist_sum_f64(&mem->own_nats, 1);
    int64_t c[2] = {mem->own_tokens, mem->own_bytes};
    fk_dist_sum_i64(c, 2);
    mem->own_tokens = c[0], mem->own_bytes = c[1];
    return FK_OK;
}

static fk_status run_member(fk_model *m, const fk_tok_out *s, int32_t bos, const int64_t *tgt_of_src, const int32_t *next_tgt,
                            const int64_t *inv_row, const int32_t *inv_ids, bool identity, int64_t P, int seq, int batch, member *mem) {
    int64_t V = m->cfg.vocab_size;
    if (seq > m->cfg.max_seq) seq = (int)m->cfg.max_seq;
    if (bos >= V) bos = -1;
    if (seq < (bos >= 0 ? 2 : 1)) return fk_error(FK_ERR_ARG, "window of %d tokens is too short", seq);
    fk_eval_windowing w = fk_eval_windowing_of(s->n, 0, seq, bos);
    fk_eval_iter it;
    FK_TRY(fk_eval_iter_init(&it, &w, batch));
    fk_dist_range(w.n_windows, &it.w0, &it.w_end);  // this rank's windows (all of them in one process)
    fk_status st = FK_OK;
    while (st == FK_OK && fk_eval_iter_next(&it, s->ids)) {
        st = fk_model_forward(m, it.x, NULL, it.rows, seq, false, NULL);
        if (st != FK_OK) break;
        const float *logits = fk_model_logits(m);
        for (int64_t r = 0; r < (int64_t)it.rows * seq; r++) {
            int64_t p = it.target[r];  // the source id predicted here; the position holds id p - 1 (BOS for p = 0)
            if (p < 0) continue;
            const float *z = logits + r * V;
            double lse = fk_row_lse_exact(z, V);
            mem->own_nats += lse - z[s->ids[p]];
            mem->own_tokens++;
            mem->own_bytes += s->end[p] - s->begin[p];
            int64_t j = p > 0 ? tgt_of_src[p - 1] : -1;
            if (j < 0) continue;
            int32_t y = next_tgt[j];
            double q = 0;
            if (identity) q = exp(z[y] - lse);
            else
                for (int64_t e = inv_row[y]; e < inv_row[y + 1]; e++) q += exp(z[inv_ids[e]] - lse);
            mem->p[j] = (float)q;
        }
    }
    fk_eval_iter_free(&it);
    st = fk_dist_agree(st);
    if (st == FK_OK && fk_dist_size() > 1) st = combine_ranks(mem, P);
    return st;
}

// How a member's tokenization feeds the scorer's: tgt_of_src[s] is the scorer position source
// position s predicts for (-1: none), inv_row/inv_ids the source ids of each scorer id
// (compressed rows; NULL for the scorer's own tokenizer).
typedef struct {
    fk_tok_out src;
    int64_t *tgt_of_src, *inv_row, *src_begin;
    int32_t *inv_ids, *vmap;
    fk_alignment al;
} member_map;

static void member_map_free(member_map *mm) {
    fk_alignment_free(&mm->al);
    fk_tok_out_free(&mm->src);
    free(mm->tgt_of_src); free(mm->inv_row); free(mm->inv_ids); free(mm->vmap); free(mm->src_begin);
}

// The source ids mapped to each scorer id by mm->vmap, as compressed rows.
static fk_status map_inverse(member_map *mm, int32_t Vs, int32_t Vt) {
    mm->inv_row = calloc((size_t)Vt + 1, sizeof *mm->inv_row);
    mm->inv_ids = malloc((size_t)(Vs > 0 ? Vs : 1) * sizeof *mm->inv_ids);
    int64_t *fill = malloc((size_t)(Vt > 0 ? Vt : 1) * sizeof *fill);
    if (!mm->inv_row || !mm->inv_ids || !fill) { free(fill); return fk_error(FK_ERR_NOMEM, "out of memory"); }
    for (int32_t v = 0; v < Vs; v++) if (mm->vmap[v] >= 0) mm->inv_row[mm->vmap[v] + 1]++;
    for (int32_t y = 0; y < Vt; y++) mm->inv_row[y + 1] += mm->inv_row[y];
    memcpy(fill, mm->inv_row, (size_t)Vt * sizeof *fill);
    for (int32_t v = 0; v < Vs; v++) if (mm->vmap[v] >= 0) mm->inv_ids[fill[mm->vmap[v]]++] = v;
    free(fill);
    return FK_OK;
}

// A member with another tokenizer: its tokenization of the text aligned to the scorer's `tgt`
// (begins tgt_begin, P positions); source position s feeds scorer position j when token j
// aligns 1:1 with token s.
static fk_status map_aligned(const fk_tokenizer *ts, const fk_tokenizer *tt, const char *text, size_t len, const fk_tok_out *tgt,
                             int64_t *tgt_begin, int64_t P, const fk_align_opts *ao, member_map *mm) {
    FK_TRY(fk_tok_encode(ts, text, len, 0, &mm->src));
    FK_TRY(ao->cache_dir ? fk_vmap_load_or_build(ts, tt, ao->vmap, ao->cache_dir, &mm->vmap) : fk_vmap_build(ts, tt, ao->vmap, &mm->vmap));
    const fk_tok_out *src = &mm->src;
    mm->src_begin = malloc((size_t)(src->n + 1) * sizeof *mm->src_begin);
    mm->tgt_of_src = malloc((size_t)(src->n > 0 ? src->n : 1) * sizeof *mm->tgt_of_src);
    if (!mm->src_begin || !mm->tgt_of_src) return fk_error(FK_ERR_NOMEM, "out of memory");
    for (int64_t k = 0; k < src->n; k++) mm->src_begin[k] = src->begin[k];
    mm->src_begin[src->n] = (int64_t)len;
    fk_tokseq ss = {src->n, src->ids, mm->src_begin}, sq = {tgt->n, tgt->ids, tgt_begin};
    FK_TRY(fk_align_tokens(ts, &ss, tt, &sq, ao->mode, mm->vmap, &mm->al));
    for (int64_t k = 0; k < src->n; k++) mm->tgt_of_src[k] = -1;
    for (int64_t j = 0; j < P; j++)
        if (mm->al.one_to_one[j]) mm->tgt_of_src[mm->al.lo[j]] = j;
    return map_inverse(mm, fk_tok_vocab_size(ts), fk_tok_vocab_size(tt));
}

// The scorer's shared state: its tokenization of the text, the next token at each position
// and the tokens' begins (the text's length last).
typedef struct {
    fk_tok_out tgt;
    int64_t P;
    int32_t *next;
    int64_t *begin;
} scorer;

// Member i (model m, tokenizer ts) scored into mem: on the scorer's tokens when it shares the
// scorer's tokenizer t0, else on its own aligned to them.
static fk_status score_member(fk_model *m, const fk_tokenizer *ts, const fk_tokenizer *t0, const scorer *sc, const char *text, size_t len,
                              int seq, int batch, const fk_align_opts *ao, member *mem) {
    if (m->cfg.vocab_size < fk_tok_vocab_size(ts))
        return fk_error(FK_ERR_ARG, "the model's vocabulary (%lld) is smaller than its tokenizer's (%d)", (long long)m->cfg.vocab_size,
                        fk_tok_vocab_size(ts));
    mem->p = malloc((size_t)sc->P * sizeof(float));
    if (!mem->p) return fk_error(FK_ERR_NOMEM, "out of memory");
    for (int64_t j = 0; j < sc->P; j++) mem->p[j] = -1;
    bool identity = fk_tok_fingerprint(ts) == fk_tok_fingerprint(t0);
    int32_t bos = fk_tok_adds_bos(ts) ? fk_tok_bos(ts) : -1;
    member_map mm = {0};
    fk_status st = FK_OK;
    if (identity) {
        mm.tgt_of_src = malloc((size_t)sc->tgt.n * sizeof *mm.tgt_of_src);
        if (!mm.tgt_of_src) st = fk_error(FK_ERR_NOMEM, "out of memory");
        for (int64_t j = 0; j < sc->tgt.n && st == FK_OK; j++) mm.tgt_of_src[j] = j < sc->P ? j : -1;
    } else {
        st = map_aligned(ts, t0, text, len, &sc->tgt, sc->begin, sc->P, ao, &mm);
    }
    if (st == FK_OK)
        st = run_member(m, identity ? &sc->tgt : &mm.src, bos, mm.tgt_of_src, sc->next, mm.inv_row, mm.inv_ids, identity, sc->P, seq, batch,
                        mem);
    member_map_free(&mm);
    return st;
}

// The ensemble's figures from its members' probabilities of the scorer's tokens.
static void ensemble_figures(const member *mem, int n, const scorer *sc, fk_ensemble_result *r) {
    double nats = 0;
    int64_t bytes = 0, P = sc->P;
    for (int64_t j = 0; j < P; j++) {
        double s = 0;
        int c = 0;
        for (int i = 0; i < n; i++)
            if (mem[i].p[j] >= 0) { s += mem[i].p[j]; c++; r->coverage[i] += 1; }
        double p = s / c;
        nats += -log(p > 1e-30 ? p : 1e-30);
        bytes += sc->tgt.end[j + 1] - sc->tgt.begin[j + 1];
    }
    r->positions = P;
    r->bytes = bytes;
    r->loss = nats / (double)P;
    r->bpb = nats / log(2.0) / (double)(bytes > 0 ? bytes : 1);
    for (int i = 0; i < n; i++) {
        r->coverage[i] /= (double)P;
        r->member_bpb[i] = mem[i].own_nats / log(2.0) / (double)(mem[i].own_bytes > 0 ? mem[i].own_bytes : 1);
    }
}

fk_status fk_eval_ensemble(fk_model *const *models, fk_tokenizer *const *toks, int n, const char *text, size_t len, int seq,
                           int batch, const fk_align_opts *ao, fk_ensemble_result *r) {
    memset(r, 0, sizeof *r);
    if (n < 1 || n > 64) return fk_error(FK_ERR_ARG, "an ensemble takes 1 to 64 models (got %d)", n);
    scorer sc = {0};
    FK_TRY(fk_tok_encode(toks[0], text, len, 0, &sc.tgt));
    if (sc.tgt.n < 2) { fk_tok_out_free(&sc.tgt); return fk_error(FK_ERR_ARG, "the evaluation text has fewer than 2 tokens for the first model"); }
    sc.P = sc.tgt.n - 1;  // scorer positions
    sc.next = malloc((size_t)sc.P * sizeof *sc.next);
    sc.begin = malloc((size_t)(sc.tgt.n + 1) * sizeof *sc.begin);
    member *mem = calloc((size_t)n, sizeof *mem);
    fk_status st = sc.next && sc.begin && mem ? FK_OK : fk_error(FK_ERR_NOMEM, "out of memory");
    if (st == FK_OK) {
        for (int64_t j = 0; j < sc.P; j++) sc.next[j] = sc.tgt.ids[j + 1];
        for (int64_t j = 0; j < sc.tgt.n; j++) sc.begin[j] = sc.tgt.begin[j];
        sc.begin[sc.tgt.n] = (int64_t)len;
    }
    for (int i = 0; i < n && st == FK_OK; i++) {
        st = score_member(models[i], toks[i], toks[0], &sc, text, len, seq, batch, ao, &mem[i]);
        if (st != FK_OK) fk_error_context(st, "ensemble member %d", i + 1);
    }
    if (st == FK_OK) ensemble_figures(mem, n, &sc, r);
    for (int i = 0; mem && i < n; i++) free(mem[i].p);
    free(mem); free(sc.next); free(sc.begin);
    fk_tok_out_free(&sc.tgt);
    return st;
}
