// Token data: shards and raw bytes.
#include "fusekit/data.h"
#include "fusekit/model.h"

#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static uint64_t rd64(const unsigned char *p) { uint64_t v = 0; for (int i = 7; i >= 0; i--) v = (v << 8) | p[i]; return v; }
static uint32_t rd32(const unsigned char *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24; }
static void wr64(unsigned char *p, uint64_t v) { for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i)); }
static void wr32(unsigned char *p, uint32_t v) { for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i)); }

void fk_data_free(fk_token_data *d) {
    free(d->ids);
    free(d->path);
    memset(d, 0, sizeof *d);
}

fk_status fk_data_load_bytes(const char *path, fk_token_data *d) {
    memset(d, 0, sizeof *d);
    char *buf;
    size_t n;
    struct stat sb;
    if (stat(path, &sb) == 0 && S_ISREG(sb.st_mode)) {  // the text and its ids (4 bytes a byte) must fit
        char what[600];
        snprintf(what, sizeof what, "%s: reading %lld bytes as byte ids", path, (long long)sb.st_size);
        FK_TRY(fk_mem_check(what, 5.0 * (double)sb.st_size));
    }
    FK_TRY(fk_read_file(path, &buf, &n));
    d->ids = malloc((n ? n : 1) * sizeof(int32_t));
    if (!d->ids) { free(buf); return fk_error(FK_ERR_NOMEM, "out of memory reading %s", path); }
    for (size_t i = 0; i < n; i++) d->ids[i] = (unsigned char)buf[i];
    free(buf);
    d->n = (int64_t)n;
    d->vocab_size = 256;
    d->text_bytes = (int64_t)n;
    d->path = strdup(path);
    return FK_OK;
}

fk_status fk_data_load(const char *path, fk_token_data *d) {
    memset(d, 0, sizeof *d);
    fk_mmap mm;
    FK_TRY(fk_mmap_open(&mm, path));
    const unsigned char *p = mm.data;
    if (mm.size < 8 || memcmp(p, FK_SHARD_MAGIC, 8) != 0) {
        fk_mmap_close(&mm);
        return fk_data_load_bytes(path, d);
    }
    fk_status st = FK_OK;
    if (mm.size < FK_SHARD_HEADER_BYTES) st = fk_error(FK_ERR_FORMAT, "%s: token shard header truncated (%zu bytes)", path, mm.size);
    uint32_t ver = st == FK_OK ? rd32(p + 8) : 0, w = st == FK_OK ? rd32(p + 12) : 0;
    if (st == FK_OK && ver != FK_SHARD_VERSION) st = fk_error(FK_ERR_FORMAT, "%s: token shard version %u, expected %d", path, ver, FK_SHARD_VERSION);
    if (st == FK_OK && w != 2 && w != 4) st = fk_error(FK_ERR_FORMAT, "%s: token shard header: %u bytes per id, expected 2 or 4", path, w);
    uint32_t vocab = st == FK_OK ? rd32(p + 16) : 0;
    if (st == FK_OK && (vocab < 1 || vocab > FK_SHARD_MAX_VOCAB))
        st = fk_error(FK_ERR_FORMAT, "%s: token shard header: vocabulary size %u, expected 1..%d", path, vocab, FK_SHARD_MAX_VOCAB);
    if (st == FK_OK && w == 2 && vocab > 65536)
        st = fk_error(FK_ERR_FORMAT, "%s: token shard header: vocabulary size %u does not fit ids of 2 bytes", path, vocab);
    uint64_t count = st == FK_OK ? rd64(p + 24) : 0;
    if (st == FK_OK && (count > (mm.size - FK_SHARD_HEADER_BYTES) / w || FK_SHARD_HEADER_BYTES + count * w != mm.size))
        st = fk_error(FK_ERR_FORMAT, "%s: token shard header: number of ids %llu (of %u bytes) but the file holds %zu bytes of ids (truncated?)",
                      path, (unsigned long long)count, w, mm.size - FK_SHARD_HEADER_BYTES);
    uint64_t text_bytes = st == FK_OK ? rd64(p + 32) : 0;
    if (st == FK_OK && text_bytes > ((uint64_t)1 << 53))
        st = fk_error(FK_ERR_FORMAT, "%s: token shard header: text bytes %llu is out of range (at most 2^53)", path, (unsigned long long)text_bytes);
    if (st == FK_OK) {
        char what[600];
        snprintf(what, sizeof what, "%s: loading a token shard of %llu ids", path, (unsigned long long)count);
        st = fk_mem_check(what, 4.0 * (double)count);
    }
    if (st == FK_OK) {
        d->vocab_size = vocab;
        d->n = (int64_t)count;
        d->text_bytes = (int64_t)text_bytes;
        d->tokenizer_fp = rd64(p + 40);
        d->ids = malloc((count ? count : 1) * sizeof(int32_t));
        if (!d->ids) st = fk_error(FK_ERR_NOMEM, "out of memory reading %s", path);
    }
    for (uint64_t i = 0; st == FK_OK && i < count; i++) {
        const unsigned char *q = p + FK_SHARD_HEADER_BYTES + i * w;
        uint32_t id = w == 2 ? (uint32_t)q[0] | (uint32_t)q[1] << 8 : rd32(q);
        if (id >= (uint64_t)d->vocab_size)
            st = fk_error(FK_ERR_FORMAT, "%s: id %u at index %llu is outside the vocabulary (%lld)", path, id,
                          (unsigned long long)i, (long long)d->vocab_size);
        else d->ids[i] = (int32_t)id;
    }
    fk_mmap_close(&mm);
    if (st != FK_OK) { fk_data_free(d); return st; }
    d->path = strdup(path);
    return FK_OK;
}

fk_status fk_data_slice(const fk_token_data *d, int64_t from, int64_t to, fk_token_data *out) {
    memset(out, 0, sizeof *out);
    if (from < 0 || to > d->n || from > to) return fk_error(FK_ERR_ARG, "data slice [%lld, %lld) outside [0, %lld)", (long long)from, (long long)to, (long long)d->n);
    int64_t n = to - from;
    out->ids = malloc((size_t)(n ? n : 1) * sizeof(int32_t));
    if (!out->ids) return fk_error(FK_ERR_NOMEM, "out of memory");
    memcpy(out->ids, d->ids + from, (size_t)n * sizeof(int32_t));
    out->n = n;
    out->vocab_size = d->vocab_size;
    out->text_bytes = d->n ? (int64_t)((double)d->text_bytes * (double)n / (double)d->n + 0.5) : 0;
    out->tokenizer_fp = d->tokenizer_fp;
    out->bos_first = d->bos_first;
    out->bos_id = d->bos_id;
    out->path = d->path ? strdup(d->path) : NULL;
    return FK_OK;
}

fk_status fk_shard_write(const char *path, const int32_t *ids, int64_t n, int64_t vocab_size, int64_t text_bytes,
                         uint64_t tokenizer_fp) {
    if (vocab_size < 1 || vocab_size > UINT32_MAX) return fk_error(FK_ERR_ARG, "shard: bad vocab size %lld", (long long)vocab_size);
    uint32_t w = vocab_size <= 65536 ? 2 : 4;
    unsigned char h[FK_SHARD_HEADER_BYTES] = {0};
    memcpy(h, FK_SHARD_MAGIC, 8);
    wr32(h + 8, FK_SHARD_VERSION);
    wr32(h + 12, w);
    wr32(h + 16, (uint32_t)vocab_size);
    wr64(h + 24, (uint64_t)n);
    wr64(h + 32, (uint64_t)text_bytes);
    wr64(h + 40, tokenizer_fp);
    unsigned char *buf = malloc((size_t)(n ? n : 1) * w);
    if (!buf) return fk_error(FK_ERR_NOMEM, "out of memory");
    for (int64_t i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= vocab_size) { free(buf); return fk_error(FK_ERR_ARG, "shard: id %d outside vocabulary %lld", ids[i], (long long)vocab_size); }
        if (w == 2) { buf[2 * i] = (unsigned char)ids[i]; buf[2 * i + 1] = (unsigned char)(ids[i] >> 8); }
        else wr32(buf + 4 * i, (uint32_t)ids[i]);
    }
    fk_afile f;
    fk_status st = fk_afile_open(&f, path);
    if (st == FK_OK) {
        fk_afile_write(&f, h, sizeof h);
        fk_afile_write(&f, buf, (size_t)n * w);
        st = fk_afile_commit(&f);
    }
    free(buf);
    return st;
}

bool fk_data_is_shard(const char *path) {
    char head[8];
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);  // a FIFO must not block here
    if (fd < 0) return false;
    struct stat sb;
    bool shard = fstat(fd, &sb) == 0 && S_ISREG(sb.st_mode) && read(fd, head, 8) == 8 && memcmp(head, FK_SHARD_MAGIC, 8) == 0;
    close(fd);
    return shard;
}

fk_status fk_vocab_check(int64_t n_tokens, int64_t rows) {
    int64_t gap = rows - n_tokens;
    if (n_tokens > rows)
        return fk_error(FK_ERR_ARG, "the tokenizer has %lld tokens but the model's vocabulary only %lld", (long long)n_tokens, (long long)rows);
    bool round = rows % FK_VOCAB_PAD_ALIGN == 0;  // padded to a round size: up to 2%
    if (gap > FK_VOCAB_PAD_MAX || gap * 100 > rows * (round ? 2 : 1))
        return fk_error(FK_ERR_ARG, "the tokenizer has %lld tokens but the model's vocabulary %lld: %lld rows would have no token; "
                        "a smaller tokenizer is accepted only as padding (at most %d rows and at most 1%% of the vocabulary, 2%% "
                        "when the rows are a multiple of %d) - is it the model's own tokenizer?", (long long)n_tokens, (long long)rows,
                        (long long)gap, FK_VOCAB_PAD_MAX, FK_VOCAB_PAD_ALIGN);
    return FK_OK;
}

// Records t's BOS when t adds one.
static void data_bos(const fk_tokenizer *t, fk_token_data *d) {
    int32_t bos = fk_tok_adds_bos(t) ? fk_tok_bos(t) : -1;
    d->bos_first = bos >= 0 && bos < fk_tok_vocab_size(t);
    d->bos_id = d->bos_first ? bos : 0;
}

fk_status fk_data_load_tok(const char *path, const fk_tokenizer *t, fk_token_data *d) {
    if (!t) return fk_data_load(path, d);
    memset(d, 0, sizeof *d);
    if (fk_data_is_shard(path)) {
        FK_TRY(fk_data_load(path, d));
        uint64_t fp = fk_tok_fingerprint(t);
        if (d->tokenizer_fp != 0 && d->tokenizer_fp != fp) {
            fk_data_free(d);
            return fk_error(FK_ERR_ARG, "%s: token shard was written with another tokenizer (fingerprint %016llx, this one is %016llx)",
                            path, (unsigned long long)d->tokenizer_fp, (unsigned long long)fp);
        }
        if (d->vocab_size != fk_tok_vocab_size(t)) {  // fusekit writes the tokenizer's own size
            int64_t v = d->vocab_size;
            fk_data_free(d);
            return fk_error(FK_ERR_ARG, "%s: token shard header: vocabulary size %lld, but the tokenizer has %d tokens (a shard written with another tokenizer?)",
                            path, (long long)v, fk_tok_vocab_size(t));
        }
        data_bos(t, d);
        return FK_OK;
    }
    size_t n;
    fk_tok_out o = {0};
    fk_status st = fk_tok_encode_file(t, path, 0, &o, &n, NULL);
    if (st != FK_OK) { fk_tok_out_free(&o); return st; }
    d->ids = o.ids;  // the id buffer is handed over; spans are not kept
    d->n = o.n;
    o.ids = NULL;
    fk_tok_out_free(&o);
    if (!d->ids) d->ids = malloc(sizeof(int32_t));
    if (!d->ids) return fk_error(FK_ERR_NOMEM, "out of memory reading %s", path);
    d->vocab_size = fk_tok_vocab_size(t);
    d->text_bytes = (int64_t)n;
    d->tokenizer_fp = fk_tok_fingerprint(t);
    data_bos(t, d);
    d->path = strdup(path);
    return FK_OK;
}
