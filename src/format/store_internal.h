// Distribution stores (.fkd), shared inside src/format/store*.c: section sizes, default
// parameters, little-endian bytes, the codec state that writer and reader share (header,
// parameters, offset grid, tokenization, id model, prior) and the functions each file offers
// the others. The format itself is documented byte by byte in fusekit/store.h.
//
//   store.c          the container: header, footer, index; open/map/read/verify; error bounds, KL
//   store_writer.c   the writer: .partial file, resume after a kill, records in order, finish
//   store_record.c   the record codec: one sequence's positions, and the model prior
//   store_tokens.c   the tokenization codec: ids and byte spans of the corpus
//   store_model.c    the offset grid and the id model (global ranks, successor lists)
//   store_bytes.c    CRC-32 and the growable byte buffer
//   store_rc.h       the binary range coder, adaptive bit models and integers
#ifndef FUSEKIT_STORE_INTERNAL_H
#define FUSEKIT_STORE_INTERNAL_H

#include "fusekit/store.h"

#include <string.h>

#define FOOTER_BYTES 32
#define FOOTER_MAGIC "FKDSTEND"
#define TOKSEC_HEAD 16
#define REC_HEAD 8        // u32 payload bytes, u32 CRC-32
#define REC_FIXED 16      // u64 sequence index, f64 mean ce
#define MAX_OFFSET_NATS 128

// Default quantisation and model parameters (written into every header; readers use the header's).
#define DEF_Q_LP 5
#define DEF_BASE 3
#define DEF_N_BANDS 2
#define DEF_BAND_W 8
#define DEF_Q_TOP 4
#define DEF_Q_CE 5
#define DEF_SUCC_LOG2 24
// The compact preset (FK_STORE_GRID_COMPACT): offset steps of 8 units (1/4 nat) below
// 4 * 8 * 2 units (2 nats), 1/2 nat beyond; top-1 and cross-entropy on 1/8-nat grids.
#define CMP_Q_LP 5
#define CMP_BASE 8
#define CMP_N_BANDS 1
#define CMP_BAND_W 4
#define CMP_Q_TOP 3
#define CMP_Q_CE 3

// ------------------------------------------------------------------ little-endian bytes

static inline void put_u32(uint8_t *p, uint32_t v) { for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i)); }
static inline void put_u64(uint8_t *p, uint64_t v) { for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i)); }
static inline uint32_t get_u32(const uint8_t *p) { uint32_t v = 0; for (int i = 3; i >= 0; i--) v = v << 8 | p[i]; return v; }
static inline uint64_t get_u64(const uint8_t *p) { uint64_t v = 0; for (int i = 7; i >= 0; i--) v = v << 8 | p[i]; return v; }
static inline void put_f64(uint8_t *p, double d) { uint64_t v; memcpy(&v, &d, 8); put_u64(p, v); }
static inline double get_f64(const uint8_t *p) { uint64_t v = get_u64(p); double d; memcpy(&d, &v, 8); return d; }

// ------------------------------------------------------------------ store_bytes.c

// CRC-32 with the zlib/PNG polynomial (0xEDB88320).
uint32_t store_crc32(const void *data, size_t n);
// Room for `more` bytes after b->n (doubling from 4 KiB); false when out of memory.
bool store_buf_reserve(fk_store_buf *b, size_t more);

// ------------------------------------------------------------------ the codec state

typedef struct {
    uint8_t q_lp, base, n_bands, band_w, q_top, q_ce, succ_log2;
} store_params;

// The parameters of a preset (FK_STORE_GRID_FINE or _COMPACT), and the preset that p matches.
store_params store_params_preset(uint32_t grid);
uint32_t store_params_grid(const store_params *p);

// A record's adaptive bit models (defined in store_record.c; the prior is one, malloc'd).
typedef struct rec_ctx rec_ctx;

// Shared by writer and reader: the header, parameters, offset grid, the id model, and the
// initial state of the records' bit models (NULL until sequence 0 is written or read).
typedef struct {
    fk_store_header h;
    store_params p;
    int32_t *lev;        // offset grid, in units of 2^-q_lp nats, increasing
    int n_lev;
    int32_t *tok;        // n_tokens ids
    int64_t *begin;      // n_tokens + 1
    int32_t n_distinct;
    int32_t *grank;      // V: global rank of each id (count descending, ties lower id)
    int32_t *gid;        // V: the id at each rank
    int64_t *succ_off;   // V + 1
    int32_t *succ_id;    // per token a: successors, most frequent first
    int32_t *succ_key;   // per token a: successors ascending (lookup)
    int32_t *succ_pos;   // index in succ_id of succ_key[x]
    int32_t *succ_grk;   // per token a: the global ranks of its successors, ascending
    rec_ctx *prior;
} codec;

// ------------------------------------------------------------------ store_model.c

fk_status store_params_check(const store_params *p, const char *path);
// Builds the offset grid and, from c->tok, the id model (c->h and c->p set).
fk_status store_codec_setup(codec *c);
void store_codec_free(codec *c);
// The grid level nearest to u units (ties: the lower level).
int store_grid_quant(const codec *c, double u);

// Index of id in the successor list of a, or -1.
static inline int64_t succ_lookup(const codec *c, int32_t a, int32_t id) {
    int64_t lo = c->succ_off[a], hi = c->succ_off[a + 1];
    while (lo < hi) {
        int64_t mid = (lo + hi) / 2;
        if (c->succ_key[mid] < id) lo = mid + 1; else hi = mid;
    }
    return lo < c->succ_off[a + 1] && c->succ_key[lo] == id ? c->succ_pos[lo] : -1;
}

// How many successors of a have a global rank <= r.
static inline int64_t succ_ranks_upto(const codec *c, int32_t a, int64_t r) {
    int64_t lo = c->succ_off[a], hi = c->succ_off[a + 1], s = lo;
    while (lo < hi) {
        int64_t mid = (lo + hi) / 2;
        if (c->succ_grk[mid] <= r) lo = mid + 1; else hi = mid;
    }
    return lo - s;
}

// An id outside a's successor list is coded by its global rank among the ids outside it.
static inline int64_t escape_rank(const codec *c, int32_t a, int32_t id) {
    int64_t r = c->grank[id];
    return r - succ_ranks_upto(c, a, r);
}

static inline int64_t escape_unrank(const codec *c, int32_t a, int64_t adj) {
    int64_t r = adj;
    for (;;) {  // the adj-th rank (from 0) not taken by the list
        int64_t next = adj + succ_ranks_upto(c, a, r);
        if (next == r) return r;
        r = next;
    }
}

// ------------------------------------------------------------------ store_tokens.c

// Appends the tokenization section of c->tok / c->begin (ranks already built) to out.
fk_status store_tok_encode(const codec *c, fk_store_buf *out);
// Decodes the section at b (sec_bytes long) into c->tok, c->begin.
fk_status store_tok_decode(codec *c, const uint8_t *b, uint64_t sec_bytes, const char *path);

// ------------------------------------------------------------------ store_record.c

// Validates q as sequence seq_idx and appends its record (head included) to rec, its models
// started from the codec's prior.
fk_status store_rec_encode(const codec *c, int64_t seq_idx, const fk_store_seq *q, fk_store_buf *rec, const char *path);
// Sequence 0 when there is no prior yet: learns the prior from it, then appends the prior
// section followed by sequence 0's record encoded from that prior.
fk_status store_rec_encode_first(const codec *c, const fk_store_seq *q, fk_store_buf *rec, const char *path);
// Decodes the record payload (CRC already checked) of sequence seq_idx into q.
fk_status store_rec_decode(const codec *c, int64_t seq_idx, const uint8_t *payload, size_t size, fk_store_seq *q, const char *path);
// Reads a prior section from b (avail bytes there) into *out (malloc'd); *bytes gets its size.
fk_status store_prior_decode(const uint8_t *b, uint64_t avail, rec_ctx **out, uint64_t *bytes, const char *path);

// ------------------------------------------------------------------ store.c (header)

void store_header_pack(uint8_t *b, const fk_store_header *h, const store_params *p, uint64_t tok_bytes);
fk_status store_header_check(const fk_store_header *h, const char *path);
fk_status store_header_unpack(const uint8_t *b, size_t size, const char *path, fk_store_header *h, store_params *p, uint64_t *tok_bytes);

#endif
