// Output ensembles across tokenizers: the average of several models' next-token
// distributions, aligned to the first model's tokens (fusion.md §7), scored in bits per byte.
#include "fusekit/fusion.h"
#include "fusekit/align.h"
#include "fusekit/eval.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

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
// it computes.
static fk_status run_member(fk_model *m, const fk_tok_out *s, int32_t bos, const int64_t *tgt_of_src, const int32_t *next_tgt,
                            const int64_t *inv_row, const int32_t *inv_ids, bool identity, int seq, int batch, member *mem) {
    int64_t V = m->cfg.vocab_size;
    if (seq > m->cfg.max_seq) seq = (int)m->cfg.max_seq;
    if (bos >= V) bos = -1;
    if (seq < (bos >= 0 ? 2 : 1)) return fk_error(FK_ERR_ARG, "window of %d tokens is too short", seq);
    fk_eval_windowing w = fk_eval_windowing_of(s->n, 0, seq, bos);
    fk_eval_iter it;
    FK_TRY(fk_eval_iter_init(&it, &w, batch));
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
    return st;
}

fk_status fk_eval_ensemble(fk_model *const *models, fk_tokenizer *const *toks, int n, const char *text, size_t len, int seq,
                           int batch, const fk_align_opts *ao, fk_ensemble_result *r) {
    memset(r, 0, sizeof *r);
    if (n < 1 || n > 64) return fk_error(FK_ERR_ARG, "an ensemble takes 1 to 64 models (got %d)", n);
    fk_tok_out tgt = {0};
    FK_TRY(fk_tok_encode(toks[0], text, len, 0, &tgt));
    if (tgt.n < 2) { fk_tok_out_free(&tgt); return fk_error(FK_ERR_ARG, "the evaluation text has fewer than 2 tokens for the first model"); }
    int64_t P = tgt.n - 1;  // scorer positions
    int32_t *next = malloc((size_t)P * sizeof *next);
    int64_t *tgt_begin = malloc((size_t)(tgt.n + 1) * sizeof *tgt_begin);
    member *mem = calloc((size_t)n, sizeof *mem);
    fk_status st = next && tgt_begin && mem ? FK_OK : fk_error(FK_ERR_NOMEM, "out of memory");
    for (int64_t j = 0; j < P && st == FK_OK; j++) next[j] = tgt.ids[j + 1];
    if (st == FK_OK) {
        for (int64_t j = 0; j < tgt.n; j++) tgt_begin[j] = tgt.begin[j];
        tgt_begin[tgt.n] = (int64_t)len;
    }
    uint64_t fp0 = fk_tok_fingerprint(toks[0]);
    for (int i = 0; i < n && st == FK_OK; i++) {
        if (models[i]->cfg.vocab_size < fk_tok_vocab_size(toks[i])) {
            st = fk_error(FK_ERR_ARG, "ensemble member %d: the model's vocabulary (%lld) is smaller than its tokenizer's (%d)", i + 1,
                          (long long)models[i]->cfg.vocab_size, fk_tok_vocab_size(toks[i]));
            break;
        }
        mem[i].p = malloc((size_t)P * sizeof(float));
        if (!mem[i].p) { st = fk_error(FK_ERR_NOMEM, "out of memory"); break; }
        for (int64_t j = 0; j < P; j++) mem[i].p[j] = -1;
        bool identity = fk_tok_fingerprint(toks[i]) == fp0;
        int32_t bos = fk_tok_adds_bos(toks[i]) ? fk_tok_bos(toks[i]) : -1;
        fk_tok_out src = {0};
        int64_t *tgt_of_src = NULL, *inv_row = NULL, *src_begin = NULL;
        int32_t *inv_ids = NULL, *vmap = NULL;
        fk_alignment al = {0};
        if (identity) {
            tgt_of_src = malloc((size_t)tgt.n * sizeof *tgt_of_src);
            if (!tgt_of_src) st = fk_error(FK_ERR_NOMEM, "out of memory");
            for (int64_t j = 0; j < tgt.n && st == FK_OK; j++) tgt_of_src[j] = j < P ? j : -1;
            if (st == FK_OK) st = run_member(models[i], &tgt, bos, tgt_of_src, next, NULL, NULL, true, seq, batch, &mem[i]);
        } else {
            st = fk_tok_encode(toks[i], text, len, 0, &src);
            if (st == FK_OK)
                st = ao->cache_dir ? fk_vmap_load_or_build(toks[i], toks[0], ao->vmap, ao->cache_dir, &vmap)
                                   : fk_vmap_build(toks[i], toks[0], ao->vmap, &vmap);
            src_begin = malloc((size_t)(src.n + 1) * sizeof *src_begin);
            if (st == FK_OK && !src_begin) st = fk_error(FK_ERR_NOMEM, "out of memory");
            if (st == FK_OK) {
                for (int64_t k = 0; k < src.n; k++) src_begin[k] = src.begin[k];
                src_begin[src.n] = (int64_t)len;
                fk_tokseq ss = {src.n, src.ids, src_begin}, tt = {tgt.n, tgt.ids, tgt_begin};
                st = fk_align_tokens(toks[i], &ss, toks[0], &tt, ao->mode, vmap, &al);
            }
            if (st == FK_OK) {
                // source position s feeds scorer position j when token j aligns 1:1 with token s
                tgt_of_src = malloc((size_t)(src.n > 0 ? src.n : 1) * sizeof *tgt_of_src);
                int32_t Vt = fk_tok_vocab_size(toks[0]), Vs = fk_tok_vocab_size(toks[i]);
                inv_row = calloc((size_t)Vt + 1, sizeof *inv_row);
                inv_ids = malloc((size_t)(Vs > 0 ? Vs : 1) * sizeof *inv_ids);
                if (!tgt_of_src || !inv_row || !inv_ids) st = fk_error(FK_ERR_NOMEM, "out of memory");
                else {
                    for (int64_t k = 0; k < src.n; k++) tgt_of_src[k] = -1;
                    for (int64_t j = 0; j < P; j++)
                        if (al.one_to_one[j]) tgt_of_src[al.lo[j]] = j;
                    // source ids mapped to each scorer id (compressed rows)
                    for (int32_t v = 0; v < Vs; v++) if (vmap[v] >= 0) inv_row[vmap[v] + 1]++;
                    for (int32_t y = 0; y < Vt; y++) inv_row[y + 1] += inv_row[y];
                    int64_t *fill = malloc((size_t)Vt * sizeof *fill);
                    if (!fill) st = fk_error(FK_ERR_NOMEM, "out of memory");
                    else {
                        memcpy(fill, inv_row, (size_t)Vt * sizeof *fill);
                        for (int32_t v = 0; v < Vs; v++) if (vmap[v] >= 0) inv_ids[fill[vmap[v]]++] = v;
                        free(fill);
                    }
                }
            }
            if (st == FK_OK) st = run_member(models[i], &src, bos, tgt_of_src, next, inv_row, inv_ids, false, seq, batch, &mem[i]);
        }
        if (st != FK_OK) fk_error_context(st, "ensemble member %d", i + 1);
        fk_alignment_free(&al);
        fk_tok_out_free(&src);
        free(tgt_of_src); free(inv_row); free(inv_ids); free(vmap); free(src_begin);
    }
    if (st == FK_OK) {
        double nats = 0;
        int64_t bytes = 0;
        for (int64_t j = 0; j < P; j++) {
            double s = 0;
            int c = 0;
            for (int i = 0; i < n; i++)
                if (mem[i].p[j] >= 0) { s += mem[i].p[j]; c++; r->coverage[i] += 1; }
            double p = s / c;
            nats += -log(p > 1e-30 ? p : 1e-30);
            bytes += tgt.end[j + 1] - tgt.begin[j + 1];
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
    for (int i = 0; mem && i < n; i++) free(mem[i].p);
    free(mem); free(next); free(tgt_begin);
    fk_tok_out_free(&tgt);
    return st;
}
