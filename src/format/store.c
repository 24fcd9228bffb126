// Distribution stores (.fkd): the container. The header (pack, unpack, check), the footer and
// index, opening and mapping a complete store with every section and record offset checked,
// reading and verifying records, and the error bounds and KL that say how exact a store is.
// The format is documented byte by byte in fusekit/store.h; the pieces are listed in
// store_internal.h (the writer is store_writer.c).
#include "format/store_internal.h"

#include <math.h>
#include <stdlib.h>

// ------------------------------------------------------------------ header

int64_t fk_store_header_positions(const fk_store_header *h) { return h->n_tokens > 1 ? h->n_tokens - 1 : 0; }
int64_t fk_store_header_n_seqs(const fk_store_header *h) {
    int64_t p = fk_store_header_positions(h);
    return h->seq > 0 ? (p + h->seq - 1) / h->seq : 0;
}

void store_header_pack(uint8_t *b, const fk_store_header *h, const store_params *p, uint64_t tok_bytes) {
    memset(b, 0, FK_STORE_HEADER_BYTES);
    memcpy(b, FK_STORE_MAGIC, 8);
    put_u32(b + 8, FK_STORE_VERSION);
    put_u32(b + 12, h->flags);
    put_u32(b + 16, (uint32_t)h->k);
    put_u32(b + 20, (uint32_t)h->seq);
    put_u64(b + 24, (uint64_t)h->vocab_size);
    put_u64(b + 32, (uint64_t)h->n_tokens);
    put_u64(b + 40, (uint64_t)h->corpus_bytes);
    put_u64(b + 48, h->model_fp);
    put_u64(b + 56, h->tokenizer_fp);
    put_u64(b + 64, h->corpus_fp);
    b[72] = p->q_lp; b[73] = p->n_bands; b[74] = p->band_w; b[75] = p->q_top; b[76] = p->q_ce; b[77] = p->succ_log2; b[78] = p->base;
    put_u64(b + 80, FK_STORE_HEADER_BYTES);
    put_u64(b + 88, tok_bytes);
    put_u64(b + 96, FK_STORE_HEADER_BYTES + tok_bytes);
    put_u32(b + 124, store_crc32(b, 124));
}

fk_status store_header_check(const fk_store_header *h, const char *path) {
    if (h->flags & ~(uint32_t)(FK_STORE_ALIGNED | FK_STORE_BOS | FK_STORE_BF16 | FK_STORE_INT8)) return fk_error(FK_ERR_FORMAT, "%s: unknown flags 0x%x", path, h->flags);
    if (h->k < 1 || h->k > FK_STORE_MAX_K) return fk_error(FK_ERR_FORMAT, "%s: k is %d, expected 1..%d", path, h->k, FK_STORE_MAX_K);
    if (h->seq < 1 || h->seq > FK_STORE_MAX_SEQ)
        return fk_error(FK_ERR_FORMAT, "%s: header field seq (sequence length) is %d, expected 1..%d", path, h->seq, FK_STORE_MAX_SEQ);
    if (h->vocab_size < 1 || h->vocab_size > FK_STORE_MAX_VOCAB)
        return fk_error(FK_ERR_FORMAT, "%s: header field vocab_size is %lld, expected 1..%d", path, (long long)h->vocab_size, FK_STORE_MAX_VOCAB);
    if (h->n_tokens < 0 || h->n_tokens > ((int64_t)1 << 40))
        return fk_error(FK_ERR_FORMAT, "%s: header field n_tokens is %lld, expected 0..2^40", path, (long long)h->n_tokens);
    if (h->corpus_bytes < 0 || h->corpus_bytes > ((int64_t)1 << 50))
        return fk_error(FK_ERR_FORMAT, "%s: header field corpus_bytes is %lld, expected 0..2^50", path, (long long)h->corpus_bytes);
    return FK_OK;
}

fk_status store_header_unpack(const uint8_t *b, size_t size, const char *path, fk_store_header *h, store_params *p,
                               uint64_t *tok_bytes) {
    if (size < FK_STORE_HEADER_BYTES) return fk_error(FK_ERR_FORMAT, "%s: %zu bytes, too short for a store header (%d bytes)", path, size, FK_STORE_HEADER_BYTES);
    if (memcmp(b, FK_STORE_MAGIC, 8) != 0) return fk_error(FK_ERR_FORMAT, "%s: not a distribution store (magic is not FKDSTORE)", path);
    uint32_t ver = get_u32(b + 8);
    if (ver != FK_STORE_VERSION) return fk_error(FK_ERR_FORMAT, "%s: store version %u, this fusekit reads version %d", path, ver, FK_STORE_VERSION);
    if (get_u32(b + 124) != store_crc32(b, 124)) return fk_error(FK_ERR_FORMAT, "%s: header checksum mismatch (corrupt header)", path);
    h->flags = get_u32(b + 12);
    h->k = (int32_t)get_u32(b + 16);
    h->seq = (int32_t)get_u32(b + 20);
    h->vocab_size = (int64_t)get_u64(b + 24);
    h->n_tokens = (int64_t)get_u64(b + 32);
    h->corpus_bytes = (int64_t)get_u64(b + 40);
    h->model_fp = get_u64(b + 48);
    h->tokenizer_fp = get_u64(b + 56);
    h->corpus_fp = get_u64(b + 64);
    *p = (store_params){b[72], b[78], b[73], b[74], b[75], b[76], b[77]};
    h->grid = store_params_grid(p);
    FK_TRY(store_header_check(h, path));
    FK_TRY(store_params_check(p, path));
    *tok_bytes = get_u64(b + 88);
    if (get_u64(b + 80) != FK_STORE_HEADER_BYTES || *tok_bytes < TOKSEC_HEAD || *tok_bytes > size - FK_STORE_HEADER_BYTES ||
        get_u64(b + 96) != FK_STORE_HEADER_BYTES + *tok_bytes)
        return fk_error(FK_ERR_FORMAT, "%s: section offsets in the header are inconsistent with a file of %zu bytes (truncated?)", path, size);
    // the token count against the bytes that encode it, before any allocation sized by it
    uint64_t payload = *tok_bytes - TOKSEC_HEAD;
    if ((uint64_t)h->n_tokens > payload * FK_STORE_TOKENS_PER_BYTE + 1)
        return fk_error(FK_ERR_FORMAT, "%s: header field n_tokens is %lld but the tokenization section's %llu bytes encode at most %llu tokens",
                        path, (long long)h->n_tokens, (unsigned long long)payload, (unsigned long long)(payload * FK_STORE_TOKENS_PER_BYTE + 1));
    return FK_OK;
}

// The first field where two headers differ, NULL when equal.
const char *fk_store_header_diff(const fk_store_header *a, const fk_store_header *b) {
    if (a->model_fp != b->model_fp) return "model fingerprint";
    if (a->tokenizer_fp != b->tokenizer_fp) return "tokenizer fingerprint";
    if (a->corpus_fp != b->corpus_fp) return "corpus fingerprint";
    if (a->flags != b->flags) return "flags";
    if (a->k != b->k) return "k";
    if (a->seq != b->seq) return "sequence length";
    if (a->vocab_size != b->vocab_size) return "vocabulary size";
    if (a->n_tokens != b->n_tokens) return "token count";
    if (a->corpus_bytes != b->corpus_bytes) return "corpus size";
    return NULL;
}

// ------------------------------------------------------------------ reader

struct fk_store {
    char *path;
    fk_mmap map;
    codec c;
    int64_t n_seqs;
    const uint8_t *index;  // n_seqs u64 record offsets
};

const fk_store_header *fk_store_header_of(const fk_store *s) { return &s->c.h; }
const char *fk_store_path(const fk_store *s) { return s->path; }
int64_t fk_store_n_seqs(const fk_store *s) { return s->n_seqs; }
int64_t fk_store_file_bytes(const fk_store *s) { return (int64_t)s->map.size; }
const int32_t *fk_store_token_ids(const fk_store *s) { return s->c.tok; }
const int64_t *fk_store_token_begin(const fk_store *s) { return s->c.begin; }

void fk_store_close(fk_store *s) {
    if (!s) return;
    fk_mmap_close(&s->map);
    store_codec_free(&s->c);
    free(s->path);
    free(s);
}

// The prior, then every record offset from the index: records contiguous from rec0 up to the
// index at index_off, each no longer than the space left and no shorter than its positions need.
static fk_status records_check(fk_store *s, uint64_t rec0, uint64_t index_off, const char *path) {
    const uint8_t *b = s->map.data;
    const fk_store_header *h = &s->c.h;
    uint64_t n_seqs = (uint64_t)s->n_seqs;
    uint64_t at = rec0;
    if (n_seqs > 0) {
        uint64_t pb;
        FK_TRY(store_prior_decode(b + rec0, index_off - rec0, &s->c.prior, &pb, path));
        at += pb;
    }
    for (uint64_t i = 0; i < n_seqs; i++) {
        uint64_t off = get_u64(s->index + 8 * i);
        if (off != at || off + REC_HEAD > index_off)
            return fk_error(FK_ERR_FORMAT, "%s: record %llu is at offset %llu, expected %llu", path, (unsigned long long)i,
                            (unsigned long long)off, (unsigned long long)at);
        uint64_t len = get_u32(b + off);
        if (len < REC_FIXED || off + REC_HEAD + len > index_off)
            return fk_error(FK_ERR_FORMAT, "%s: record %llu (offset %llu) claims %llu bytes, past the index at %llu", path,
                            (unsigned long long)i, (unsigned long long)off, (unsigned long long)len, (unsigned long long)index_off);
        // its positions (decoded into positions x k arrays) against its bytes: each position
        // costs at least one range-coded decision of log2(2048/2016) bits, so 352.1 a byte at best
        int64_t first = (int64_t)i * h->seq, rn = fk_store_header_positions(h) - first;
        if (rn > h->seq) rn = h->seq;
        if ((uint64_t)rn > (len - REC_FIXED + 1) * FK_STORE_POSITIONS_PER_BYTE)
            return fk_error(FK_ERR_FORMAT, "%s: record %llu holds %lld positions by the header (seq %d, n_tokens %lld) but its %llu bytes "
                            "encode at most %llu", path, (unsigned long long)i, (long long)rn, h->seq, (long long)h->n_tokens,
                            (unsigned long long)len, (unsigned long long)((len - REC_FIXED + 1) * FK_STORE_POSITIONS_PER_BYTE));
        at = off + REC_HEAD + len;
    }
    if (at != index_off)
        return fk_error(FK_ERR_FORMAT, "%s: %llu bytes between the last record and the index", path, (unsigned long long)(index_off - at));
    return FK_OK;
}

static fk_status store_open(fk_store *s, const char *path) {
    FK_TRY(fk_mmap_open(&s->map, path));
    const uint8_t *b = s->map.data;
    size_t size = s->map.size;
    uint64_t tok_bytes;
    FK_TRY(store_header_unpack(b, size, path, &s->c.h, &s->c.p, &tok_bytes));
    const fk_store_header *h = &s->c.h;
    uint64_t rec0 = FK_STORE_HEADER_BYTES + tok_bytes;
    // footer
    if (size < rec0 + FOOTER_BYTES || memcmp(b + size - 8, FOOTER_MAGIC, 8) != 0)
        return fk_error(FK_ERR_FORMAT, "%s: no footer (the file is truncated, or an unfinished extraction)", path);
    const uint8_t *f = b + size - FOOTER_BYTES;
    uint64_t index_off = get_u64(f), n_seqs = get_u64(f + 8);
    s->n_seqs = fk_store_header_n_seqs(h);
    if (n_seqs != (uint64_t)s->n_seqs)
        return fk_error(FK_ERR_FORMAT, "%s: footer lists %llu sequences, the header implies %lld", path, (unsigned long long)n_seqs, (long long)s->n_seqs);
    if (get_u32(f + 20) != store_crc32(b, FK_STORE_HEADER_BYTES))
        return fk_error(FK_ERR_FORMAT, "%s: the footer does not belong to this header (checksum mismatch)", path);
    if (index_off < rec0 || index_off > size - FOOTER_BYTES || (size - FOOTER_BYTES - index_off) != n_seqs * 8)
        return fk_error(FK_ERR_FORMAT, "%s: index offset %llu is inconsistent with %llu sequences in a file of %zu bytes", path,
                        (unsigned long long)index_off, (unsigned long long)n_seqs, size);
    s->index = b + index_off;
    if (get_u32(f + 16) != store_crc32(s->index, n_seqs * 8)) return fk_error(FK_ERR_FORMAT, "%s: index checksum mismatch (corrupt index)", path);
    FK_TRY(records_check(s, rec0, index_off, path));
    // tokenization, then the id model built from it: ids and spans (12 bytes a token), ranks and
    // successor offsets (48 bytes a vocabulary entry), successor lists (28 bytes a pair)
    int64_t pairs = h->n_tokens < ((int64_t)1 << s->c.p.succ_log2) ? h->n_tokens : ((int64_t)1 << s->c.p.succ_log2);
    double need = 12.0 * (double)h->n_tokens + 48.0 * (double)h->vocab_size + 28.0 * (double)pairs;
    char what[600];
    snprintf(what, sizeof what, "%s: opening the store (n_tokens %lld, vocab_size %lld)", path, (long long)h->n_tokens, (long long)h->vocab_size);
    FK_TRY(fk_mem_check(what, need));
    FK_TRY(store_tok_decode(&s->c, b + FK_STORE_HEADER_BYTES, tok_bytes, path));
    for (int64_t i = 0; i < h->n_tokens; i++)
        if (s->c.tok[i] < 0 || s->c.tok[i] >= h->vocab_size) return fk_error(FK_ERR_FORMAT, "%s: token %lld is outside the vocabulary", path, (long long)i);
    return store_codec_setup(&s->c);
}

fk_status fk_store_open(const char *path, fk_store **out) {
    *out = NULL;
    fk_store *s = calloc(1, sizeof *s);
    if (!s || !(s->path = strdup(path))) { free(s); return fk_error(FK_ERR_NOMEM, "out of memory"); }
    fk_status st = store_open(s, path);
    if (st != FK_OK) { fk_store_close(s); return st; }
    *out = s;
    return FK_OK;
}

fk_status fk_store_read_seq(const fk_store *s, int64_t c, fk_store_seq *out) {
    if (c < 0 || c >= s->n_seqs)
        return fk_error(FK_ERR_ARG, "%s: sequence %lld does not exist (the store has %lld)", s->path, (long long)c, (long long)s->n_seqs);
    const uint8_t *b = s->map.data;
    uint64_t off = get_u64(s->index + 8 * (uint64_t)c);
    uint32_t len = get_u32(b + off);
    const uint8_t *payload = b + off + REC_HEAD;
    if (get_u32(b + off + 4) != store_crc32(payload, len))
        return fk_error(FK_ERR_FORMAT, "%s: record of sequence %lld is corrupt (checksum mismatch)", s->path, (long long)c);
    return store_rec_decode(&s->c, c, payload, len, out, s->path);
}

fk_status fk_store_verify(const fk_store *s) {
    fk_store_seq q = {0};
    fk_status st = FK_OK;
    for (int64_t c = 0; c < s->n_seqs && st == FK_OK; c++) st = fk_store_read_seq(s, c, &q);
    fk_store_seq_free(&q);
    return st;
}

fk_status fk_store_check(const fk_store *s, uint64_t model_fp, uint64_t tokenizer_fp, uint64_t corpus_fp) {
    const fk_store_header *h = &s->c.h;
    const char *what = NULL;
    uint64_t have = 0, want = 0;
    if (model_fp && h->model_fp != model_fp) { what = "model"; have = h->model_fp; want = model_fp; }
    else if (tokenizer_fp && h->tokenizer_fp != tokenizer_fp) { what = "tokenizer"; have = h->tokenizer_fp; want = tokenizer_fp; }
    else if (corpus_fp && h->corpus_fp != corpus_fp) { what = "corpus"; have = h->corpus_fp; want = corpus_fp; }
    if (what)
        return fk_error(FK_ERR_ARG, "%s: %s fingerprint differs: the store was extracted with %016llx, expected %016llx", s->path, what,
                        (unsigned long long)have, (unsigned long long)want);
    return FK_OK;
}

double fk_store_offset_error_bound(const fk_store *s, double offset) {
    const store_params *p = &s->c.p;
    if (offset <= 0) return 1e-6;
    if (offset >= MAX_OFFSET_NATS) return INFINITY;
    double d = ldexp((double)p->base, -p->q_lp), D = d * p->band_w * (double)(1 << p->n_bands);
    int b = (int)(offset / D);  // band edges are levels, so an offset is never farther than its own band's half step
    if (b > p->n_bands) b = p->n_bands;
    return 0.5 * d * (double)(1 << b) + 1e-6 * (1 + offset);
}

double fk_store_logp_error_bound(const fk_store *s, double offset) {
    return ldexp(1.0, -(s->c.p.q_top + 1)) + fk_store_offset_error_bound(s, offset);
}

double fk_store_ce_error_bound(const fk_store *s) { return ldexp(1.0, -(s->c.p.q_ce + 1)) + 1e-5; }

fk_status fk_store_seq_kl(const fk_store_seq *p, const fk_store_seq *q, double *kl) {
    if (p->n != q->n) return fk_error(FK_ERR_ARG, "KL: sequences of %lld and %lld positions", (long long)p->n, (long long)q->n);
    for (int64_t t = 0; t < p->n; t++) {
        int np = p->count[t], nq = q->count[t];
        const int32_t *pi = p->ids + t * p->k, *qi = q->ids + t * q->k;
        const float *pl = p->logp + t * p->k, *ql = q->logp + t * q->k;
        if (np == 0) { kl[t] = 0; continue; }
        double mp = -INFINITY, mq = -INFINITY, sp = 0, sq = 0;
        for (int j = 0; j < np; j++) mp = pl[j] > mp ? pl[j] : mp;
        for (int j = 0; j < nq; j++) mq = ql[j] > mq ? ql[j] : mq;
        for (int j = 0; j < np; j++) sp += exp(pl[j] - mp);
        for (int j = 0; j < nq; j++) sq += exp(ql[j] - mq);
        double lzp = mp + log(sp), lzq = mq + log(sq), v = 0;
        for (int j = 0; j < np && isfinite(v); j++) {
            int m = -1;
            for (int i = 0; i < nq; i++) if (qi[i] == pi[j]) { m = i; break; }
            double lp = pl[j] - lzp;
            if (m < 0) { v = INFINITY; break; }
            v += exp(lp) * (lp - (ql[m] - lzq));
        }
        kl[t] = v < 0 ? 0 : v;  // rounding can leave -1e-17
    }
    return FK_OK;
}

