// Distribution stores (.fkd): per source model, the top-k next-token distributions of every
// position of a corpus, written once by extraction (fusion.md §1), read by mmap.
//
// A store holds the corpus's tokenization (ids and byte spans) and, for each position i
// (predicting token i+1), up to k entries (token id, log-probability under the model's full
// softmax) sorted by log-probability, descending, and the cross-entropy of the true next
// token. Positions are grouped into sequences of `seq` positions (the extraction chunks):
// sequence c holds positions [c*seq, min((c+1)*seq, n_tokens-1)). Each sequence is one
// record, decoded on its own, so a reader can visit sequences in any order.
//
// With FK_STORE_ALIGNED the entries are over another (target) tokenizer's vocabulary and
// tokenization (an aligned store, fusion.md §4): a position may have fewer than k entries,
// or none, which means a one-hot on the true next token.
//
// Implemented in src/format/store*.c, one concern a file (src/format/store_internal.h lists them).
//
// ------------------------------------------------------------------------ file format
// All integers little-endian. Sections, in order: header, tokenization, model prior (when
// there is at least one sequence), records, index, footer.
//
// Header, 128 bytes:
//   0   magic "FKDSTORE"            8   u32 version (1)          12  u32 flags (FK_STORE_ALIGNED)
//   16  i32 k (1..64)               20  i32 seq (>= 1)            24  i64 vocab_size
//   32  i64 n_tokens                40  i64 corpus_bytes          48  u64 model fingerprint
//   56  u64 tokenizer fingerprint   64  u64 corpus fingerprint
//   72  u8 q_lp      log-prob offsets are integers in units u = 2^-q_lp nats        (5)
//   73  u8 n_bands   the offset grid's step doubles n_bands times...               (2)
//   74  u8 band_w    ...every band_w * base * 2^n_bands units                      (8)
//   75  u8 q_top     the top-1 log-prob's grid: 2^-q_top nats                      (4)
//   76  u8 q_ce      the cross-entropy's grid: 2^-q_ce nats                        (5)
//   77  u8 succ_log2 the id model reads the first 2^succ_log2 tokens (below)       (24)
//   78  u8 base      the offset grid's finest step, in units                       (3)
//   79  u8 reserved (0)
//   80  u64 offset of the tokenization section (128)   88  u64 its size in bytes (head included)
//   96  u64 offset of what follows it (128 + tokenization size)
//   104 20 reserved bytes (0)       124 u32 CRC-32 of bytes 0..123
//
// Tokenization section: u64 payload bytes, u32 CRC-32 of the payload, u32 reserved (0), then
// one range-coded stream: D, the number of distinct ids; the D ids in global-rank order
// (count in the corpus descending, ties: lower id first); the byte length of each one's first
// occurrence; then per token, with an adaptive list of the ranks seen so far after the
// previous token (most frequent first): a bit "in the list" and the index there, or the
// token's global rank (it joins the list); a bit "its length is its id's first length", and
// the length when not. The spans tile the corpus: token i is [begin[i], begin[i+1]),
// begin[0] = 0, begin[n_tokens] = corpus_bytes.
//
// Model prior: u32 payload bytes, u32 CRC-32, then a range-coded stream giving the initial
// state of every adaptive bit model of a record (below), learnt by encoding sequence 0 once:
// per model 0 (never used: starts at 1/2) or 1 + zigzag(p/16 - 64) (starts at p, 7 bits,
// with the adaptation rate of a model that has seen 12 bits). All records, sequence 0's
// included, start from it, so short records do not each pay to learn their statistics.
//
// Records, one per sequence, in order: u32 payload bytes, u32 CRC-32 of the payload, then
// the payload: u64 sequence index, f64 the sequence's mean cross-entropy (as given to the
// writer), then one range-coded stream over its positions. Per position i, with a = token i
// (the input) and y = token i+1 (the label):
//   1. k - count;
//   2. count 0: round(ce * 2^q_ce); done.
//   3. the entries' offsets below the top-1, o_j = logp[0] - logp[j], each rounded to the
//      nearest level of the offset grid (ties: the lower level); coded as the differences of
//      consecutive level indices (>= 0; context: the entry's slot);
//   4. a0 = round(-logp[0] * 2^q_top) (context: the second entry's level);
//   5. a bit "y is an entry", and its rank among them (context: a0's bit length);
//   6. each other entry's id: a bit "in a's successor list" (context: slot, whether the
//      entry before was outside), then its index in that list counting only indices not taken
//      at this position (y's included), or else its global rank counting only ids outside the
//      list;
//   7. round((ce - pred) * 2^q_ce), signed, pred = -(stored logp of y) when y is an entry,
//      else -(stored logp of the last entry).
// Decoding: logp[0] = -a0 * 2^-q_top, logp[j] = logp[0] - level(j) * 2^-q_lp, ce = pred +
// residual * 2^-q_ce.
//
// The offset grid, in units u: steps of base u below W = band_w * base * 2^n_bands units,
// 2 base below 2W, ..., base * 2^n_bands from n_bands * W on, up to 128 nats (offsets beyond,
// or -inf, are stored as the last level). Defaults: steps 3/32 nats up to 3 nats below the
// top-1, 3/16 up to 6, then 3/8. Coarser steps where the probability is smaller spend the
// quantisation error where the KL divergence weighs it least (an entry's error counts in
// proportion to its probability); the KL bound below shows the trade.
//
// The id model comes from the tokenization, so it costs no bytes: each id's global rank, and
// for each token a its successors in the first 2^succ_log2 tokens of the corpus, most
// frequent first (ties: lower global rank). A model's top entries after a are mostly among
// a's frequent successors, so their indices there are small numbers.
//
// Range coder: binary, 32-bit range, 11-bit probabilities; a bit model that has seen n bits
// adapts at rate 1/(n+2) until 1/32. Integers v >= 0 are coded Elias-gamma style: the bit
// length of v+1 in unary (one adaptive model per step), the two bits below its leading one
// with adaptive models, the rest at probability 1/2. Each record starts from the prior, so
// records decode independently of each other.
//
// Index and footer, written by fk_store_writer_finish: n_seqs u64 absolute record offsets,
// then 32 bytes: u64 index offset, u64 n_seqs, u32 CRC-32 of the index, u32 CRC-32 of the
// header's 128 bytes, magic "FKDSTEND". CRC-32 is the zlib/PNG polynomial (0xEDB88320).
// While it is being written a store is "<path>.partial": everything but index and footer.
// A record torn by a kill is detected by its length or CRC and cut off when the writer resumes.
//
// ------------------------------------------------------------------------ precision
// Ids, counts and the entry order are exact; log-probabilities and ce are quantised:
//   |stored logp[0] - logp[0]| <= 2^-(q_top+1)  (1/32 nats),
//   |stored o_j - o_j| <= e(o_j) = half the grid's step around o_j (3/64 nats up to 3 nats
//     below the top-1, 3/32 up to 6, then 3/16; fk_store_offset_error_bound gives it),
//   |stored logp[j] - logp[j]| <= 2^-(q_top+1) + e(o_j) (fk_store_logp_error_bound),
//   |stored ce - ce| <= 2^-(q_ce+1) (1/64 nats), mean_ce exactly as written.
// Quantisation KL, as tests/test_store.c and bench/fk_store_bench measure it: at a position,
// P = the exact top-k entries renormalised, Q = the stored entries renormalised (the same ids:
// nothing is dropped, so KL(P||Q) is finite), KL(P||Q) = sum_j P_j log(P_j / Q_j) in double
// precision (fk_store_seq_kl), reported as the mean over positions and the maximum. Since
// Q_j is P_j e^(x_j) renormalised with |x_j| <= e(o_j), KL(P||Q) <= 1/2 sum_j P_j e(o_j)^2
// exp(e(o_j)) at every position (tests check this bound). Measured on trained Shakespeare
// models (bench): mean 2.2e-4, max 7e-4 nats.
//
// Presets (fk_store_header.grid; fusekit extract --store-grid): the parameters above are the
// header's, so both presets are this version's format and every reader takes either.
//   fine (FK_STORE_GRID_FINE, the default): the defaults above.
//   compact (FK_STORE_GRID_COMPACT): q_lp 5, base 8, n_bands 1, band_w 4, q_top 3, q_ce 3:
//     offsets on steps of 1/4 nat up to 2 nats below the top-1, then 1/2 nat; e(o) = 1/8 nat
//     below 2 nats, 1/4 beyond; top-1 within 1/16 nat, ce within 1/16 nat.
// What these bounds give for probabilities (b_j = fk_store_logp_error_bound, e_j =
// fk_store_offset_error_bound at entry j's offset; tests/test_store.c checks each one):
//   full-softmax p_j = exp(logp[j]): |p^_j - p_j| <= p_j (exp(b_j) - 1): relative error at most
//     fine 3.2% for the top-1, 8.1% within 3 nats of it, 13.3% within 6, 24.4% beyond; compact
//     6.5% for the top-1, 20.6% within 2 nats, 36.7% beyond; so absolute error at most 0.032 /
//     0.065 for the top-1 and, since p_j <= 1/2 for the others, 0.041 (fine) / 0.103 (compact);
//   the tail mass 1 - sum_j p_j: within sum_j p_j (exp(b_j) - 1);
//   renormalised top-k P_j: |log Q_j - log P_j| <= e_j + log sum_i P_i exp(e_i) <= e_j + max_i e_i;
//   a soft cross-entropy -sum_j P_j log s_j: within sum_j |Q_j - P_j| |log s_j|.
// Measured on a trained BPE-2048 Shakespeare model (bench/fk_store_bench runs both presets):
// see docs/fusion.md §1 for bytes per position and KL of each.
#ifndef FUSEKIT_STORE_H
#define FUSEKIT_STORE_H

#include "fusekit/base.h"

#define FK_STORE_MAGIC "FKDSTORE"
#define FK_STORE_VERSION 1
#define FK_STORE_HEADER_BYTES 128
#define FK_STORE_MAX_K 64
// Sizes a store's header may declare, checked before anything is allocated: the vocabulary and
// the sequence length at most the model limits (2^24, config.c); the token count at most what
// the tokenization section's bytes can encode (FK_STORE_TOKENS_PER_BYTE: every token costs three
// or more range-coded decisions, each of at least log2(2048/2016) bits, so 117.4 a byte at best).
#define FK_STORE_MAX_VOCAB (1 << 24)
#define FK_STORE_MAX_SEQ (1 << 24)
#define FK_STORE_TOKENS_PER_BYTE 118
// Likewise a record's positions: one decision or more each, at most 352.1 a byte of its payload.
#define FK_STORE_POSITIONS_PER_BYTE 353

enum {
    FK_STORE_ALIGNED = 1,  // distributions are over another (target) tokenizer's vocabulary; count 0 = one-hot on the true next token
    FK_STORE_BOS = 2,      // the source saw its tokenizer's BOS token before each sequence (not stored: positions are unchanged)
    FK_STORE_BF16 = 4,     // the source's matrix products ran in bf16 (fk_extract_opts.precision), not fp32
    FK_STORE_INT8 = 8,     // its quantized weights multiplied 8-bit activations (--precision int8)
};

// Quantisation presets (the grids under "precision" below); both are this version's format.
enum {
    FK_STORE_GRID_FINE = 0,     // the default: offsets on a 3/32-nat grid, top-1 1/16, ce 1/32
    FK_STORE_GRID_COMPACT = 1,  // smaller: offsets 1/4 nat (1/2 beyond 2 nats), top-1 and ce 1/8
    FK_STORE_GRID_OTHER = 2,    // read only: a file with other parameters
};

typedef struct {
    uint32_t flags;
    int32_t k;               // max entries per position (1..64)
    int32_t seq;             // positions per sequence (the extraction chunk); the last sequence may be shorter
    int64_t vocab_size;      // every stored id < vocab_size
    int64_t n_tokens;        // tokens of the stored tokenization; positions = n_tokens - 1 (position i predicts token i+1)
    int64_t corpus_bytes;
    uint64_t model_fp, tokenizer_fp, corpus_fp;
    uint32_t grid;           // quantisation preset (FK_STORE_GRID_*): writing, the one used; reading, the one the file's
                             // parameters match (FK_STORE_GRID_OTHER if none). Not compared by fk_store_header_diff.
} fk_store_header;

typedef struct fk_store fk_store;

// One decoded sequence. Sequence c holds positions [c*seq, min((c+1)*seq, n_tokens-1)).
typedef struct {
    int64_t first, n;        // first position, number of positions
    int k;
    uint8_t *count;          // n: entries kept at each position (0..k)
    int32_t *ids;            // n*k, row-major, entries sorted by log-prob descending (slots past count: id -1, logp -inf)
    float *logp;             // n*k log-probabilities under the model's full softmax
    float *ce;               // n: cross-entropy (nats) of the true next token
    double mean_ce;          // per-sequence mean of ce
    int64_t cap;             // internal
} fk_store_seq;

// The first field where two headers differ ("model fingerprint", "k", ...), NULL when equal.
const char *fk_store_header_diff(const fk_store_header *a, const fk_store_header *b);
// Positions of a store (n_tokens - 1, or 0) and its number of sequences.
int64_t fk_store_header_positions(const fk_store_header *h);
int64_t fk_store_header_n_seqs(const fk_store_header *h);
// Makes room for n positions of k entries (contents are kept only when k stays the same).
fk_status fk_store_seq_reserve(fk_store_seq *q, int64_t n, int k);

// ------------------------------------------------------------------------ reading
// Opens and maps a complete store. Validates the header, the tokenization, the footer, the
// index and every record offset; a truncated or corrupted file is an FK_ERR_FORMAT error
// naming the path and what is wrong. Records' CRCs are checked as they are read.
fk_status fk_store_open(const char *path, fk_store **out);
void fk_store_close(fk_store *s);
const fk_store_header *fk_store_header_of(const fk_store *s);
const char *fk_store_path(const fk_store *s);
int64_t fk_store_n_seqs(const fk_store *s);
int64_t fk_store_file_bytes(const fk_store *s);
const int32_t *fk_store_token_ids(const fk_store *s);        // n_tokens
// n_tokens + 1: byte offset where each token starts in the corpus, last = corpus_bytes (spans
// tile the corpus, so token i is [begin[i], begin[i+1])).
const int64_t *fk_store_token_begin(const fk_store *s);
// Decodes sequence c (out zero-initialised once, reused). Several threads may read at once.
fk_status fk_store_read_seq(const fk_store *s, int64_t c, fk_store_seq *out);
void fk_store_seq_free(fk_store_seq *q);
// Checks every record (CRC and decoding): reads the whole file.
fk_status fk_store_verify(const fk_store *s);
// Checks the header's fingerprints against what a caller expects (pass 0 to skip one); the
// error (FK_ERR_ARG) names the store and which fingerprint differs.
fk_status fk_store_check(const fk_store *s, uint64_t model_fp, uint64_t tokenizer_fp, uint64_t corpus_fp);
// The largest error of a stored log-prob `offset` nats below its position's top-1 (see above),
// and of its offset from the top-1 (what renormalised distributions see).
double fk_store_logp_error_bound(const fk_store *s, double offset);
double fk_store_offset_error_bound(const fk_store *s, double offset);
double fk_store_ce_error_bound(const fk_store *s);
// KL(P||Q) at each position of p (kl: p->n values), P = p's entries renormalised (the
// exact distribution), Q = q's entries renormalised (the stored one), entries matched by id.
// A P entry missing from Q gives +inf; positions where p has no entries give 0.
fk_status fk_store_seq_kl(const fk_store_seq *p, const fk_store_seq *q, double *kl);

// ------------------------------------------------------------------------ writing
typedef struct fk_store_writer fk_store_writer;
// Starts path (writing path + ".partial"), or resumes a ".partial" whose header and
// tokenization equal these: *done gets the number of complete sequences already in it (a torn
// last record is cut off). A partial with a different header is an error (or is restarted if
// `restart`). tok_ids: n_tokens ids < vocab_size; tok_begin: n_tokens + 1 offsets (see above).
fk_status fk_store_writer_open(const char *path, const fk_store_header *h, const int32_t *tok_ids, const int64_t *tok_begin,
                               bool restart, fk_store_writer **w, int64_t *done);
// Sequences in order: done, done+1, ...; each is on disk (flushed) when this returns.
// q->first and q->n must be the sequence's; q->k the header's k.
fk_status fk_store_write_seq(fk_store_writer *w, const fk_store_seq *q);
fk_status fk_store_writer_finish(fk_store_writer *w);   // writes index + footer, fsyncs, renames to path; frees w
void fk_store_writer_close(fk_store_writer *w);         // stops, leaving the .partial for a later resume; frees w
int64_t fk_store_writer_next(const fk_store_writer *w); // the sequence the next write must be

// The same in two steps, so that several threads can encode sequences at once (encode only
// reads w) while one thread appends them in order. Sequence 0 must be written before any other
// is encoded: its buffer also carries the model prior that the other records start from.
typedef struct { uint8_t *data; size_t n, cap; } fk_store_buf;
fk_status fk_store_encode_seq(const fk_store_writer *w, const fk_store_seq *q, fk_store_buf *rec);
fk_status fk_store_write_encoded(fk_store_writer *w, const fk_store_buf *rec);
void fk_store_buf_free(fk_store_buf *b);

#endif
