// Distribution stores (.fkd): the writer. Header and tokenization go to "<path>.partial" first,
// then records in order, each flushed; a killed run resumes from the partial (a torn last record
// is cut off); finish appends index and footer, fsyncs and renames the partial to path.
#include "format/store_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

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
    store_codec_free(&w->c);
    free(w->path); free(w->partial); free(w->offsets);
    fk_store_buf_free(&w->rec);
    free(w);
}

void fk_store_writer_close(fk_store_writer *w) { writer_free(w); }

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
        if (size >= FK_STORE_HEADER_BYTES && store_header_unpack(b, size, w->partial, &ph, &pp, &tb) == FK_OK) {
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
    if (size > rec0 && store_prior_decode(b + rec0, size - rec0, &w->c.prior, &pb, w->partial) == FK_OK) off += pb;
    while (w->c.prior && c < w->n_seqs && off + REC_HEAD <= size) {
        uint64_t len = get_u32(b + off);
        if (len < REC_FIXED || off + REC_HEAD + len > size) break;
        const uint8_t *payload = b + off + REC_HEAD;
        if (get_u32(b + off + 4) != store_crc32(payload, len) || get_u64(payload) != (uint64_t)c) break;
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
    FK_TRY(store_header_check(h, path));
    if (h->grid != FK_STORE_GRID_FINE && h->grid != FK_STORE_GRID_COMPACT)
        return fk_error(FK_ERR_ARG, "%s: unknown quantisation preset %u (fine %d, compact %d)", path, h->grid, FK_STORE_GRID_FINE, FK_STORE_GRID_COMPACT);
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
    w->c.p = store_params_preset(h->grid);
    w->c.tok = malloc((size_t)(n ? n : 1) * sizeof(int32_t));
    w->c.begin = malloc((size_t)(n + 1) * sizeof(int64_t));
    w->n_seqs = fk_store_header_n_seqs(h);
    w->offsets = malloc((size_t)(w->n_seqs ? w->n_seqs : 1) * sizeof(uint64_t));
    if (!w->path || !w->partial || !w->c.tok || !w->c.begin || !w->offsets) { st = fk_error(FK_ERR_NOMEM, "out of memory"); goto fail; }
    memcpy(w->partial, path, pl);
    memcpy(w->partial + pl, ".partial", 9);
    if (n) memcpy(w->c.tok, tok_ids, (size_t)n * sizeof(int32_t));
    memcpy(w->c.begin, tok_begin, (size_t)(n + 1) * sizeof(int64_t));
    if ((st = store_codec_setup(&w->c)) != FK_OK) goto fail;
    if ((st = store_tok_encode(&w->c, &sec)) != FK_OK) goto fail;
    free(w->c.begin);  // only the tokenization section needed the spans
    w->c.begin = NULL;
    store_header_pack(w->header, h, &w->c.p, sec.n);
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
    if (w->c.prior) return store_rec_encode(&w->c, q->first / seq, q, rec, w->partial);
    // No prior yet: this must be sequence 0, which also carries the prior.
    if (q->first != 0)
        return fk_error(FK_ERR_ARG, "%s: sequence 0 must be encoded and written before the others", w->partial);
    return store_rec_encode_first(&w->c, q, rec, w->partial);
}

fk_status fk_store_write_encoded(fk_store_writer *w, const fk_store_buf *rec) {
    uint64_t pb = 0;
    rec_ctx *prior = NULL;
    if (!w->c.prior && w->next == 0)  // sequence 0's buffer starts with the prior section
        FK_TRY(store_prior_decode(rec->data, rec->n, &prior, &pb, w->partial));
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
    put_u32(f + 16, store_crc32(tail, ib));
    put_u32(f + 20, store_crc32(w->header, FK_STORE_HEADER_BYTES));
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
    if (st == FK_OK) fk_fsync_parent(w->path);
    writer_free(w);
    return st;
}
