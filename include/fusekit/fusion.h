// Fusion of several teachers' next-token distributions into one sparse target per position
// (fusion.md §5), and the teacher set that feeds fused training from distribution stores.
//
// Every teacher is given on the target's positions: position j predicts target token j+1.
// At each position a teacher has either entries (target ids with log-probabilities, the
// top-k it stored, mapped to the target vocabulary) or none, which means a one-hot on the
// true next token (its tokenization disagreed there). Each teacher also carries ce[j], the
// nats it spent on the bytes of target token j+1 on its own tokenization, so sums of ce over
// any run of positions compare teachers with different tokenizers on the same bytes.
//
// A teacher's distribution at a position is its entries renormalised after an optional
// temperature: q(v) ∝ exp(logp(v) / temperature) over the entries (FuseLLM's convention).
// With `tail`, the entries keep their probabilities under the teacher's full softmax,
// q(v) = exp(logp(v)), and the mass they leave (1 - sum q) stays with the row: the loss then
// matches it with a tail class (exact KL between the distributions coarsened to the entries
// plus "the rest"), so that a student is not taught to put nothing outside the top k.
// - MinCE: the distribution of the teacher with the lowest cross-entropy on the span.
// - AvgCE: sum_k w_k q_k with w = softmax(-CE_k / tau), CE_k the teacher's mean ce per
//   position over the span (the reference computed softmax(exp(-CE)), nearly uniform).
// - Spans: the whole training window (FK_FUSE_SEQUENCE, as the reference) or each position
//   (FK_FUSE_TOKEN). Ties go to the teacher listed first.
#ifndef FUSEKIT_FUSION_H
#define FUSEKIT_FUSION_H

#include "fusekit/align.h"
#include "fusekit/data.h"
#include "fusekit/train.h"

typedef enum { FK_FUSE_MINCE = 0, FK_FUSE_AVGCE = 1 } fk_fusion_kind;
typedef enum { FK_FUSE_SEQUENCE = 0, FK_FUSE_TOKEN = 1 } fk_fusion_level;

typedef struct {
    fk_fusion_kind kind;
    fk_fusion_level level;
    float tau;          // AvgCE temperature on the cross-entropies (1)
    float temperature;  // on the teachers' log-probabilities (1)
    bool tail;          // keep the full-softmax probabilities and the rest as a tail class (false)
    fk_objective objective;  // how the target learns from the fused rows: soft CE (default) or ULD (fk_teacher.objective)
    float span_temp;    // FK_OBJECTIVE_SPAN: the binarisation temperature tau on chunk log-likelihoods (1, chosen on validation; ALM's code: 100)
    uint64_t shuffle_seed;  // shuffled-teachers control: 0 off; else every teacher's rows read at fk_shuffle_at's positions
} fk_fusion_opts;

void fk_fusion_defaults(fk_fusion_opts *o);
// The teachers' weights at a span from their cross-entropies ce[0..S) there (fusion.md §5): MinCE
// one-hot on the lowest (ties: the first), AvgCE softmax(-ce / tau).
void fk_fusion_weights(const fk_fusion_opts *o, const double *ce, int S, double *w);
// Parses "mince"/"avgce" and "sequence"/"token".
fk_status fk_fusion_parse(const char *kind, const char *level, fk_fusion_opts *o);

// One teacher over a window of n positions (arrays indexed by position; ids/logp stride k).
typedef struct {
    int64_t n;
    int k;
    const uint8_t *count;
    const int32_t *ids;
    const float *logp;
    const float *ce;
} fk_teacher_window;

// Growable compressed rows (fk_sparse_dist); zero-initialise, free with fk_fused_rows_free.
typedef struct {
    int64_t n_rows, n_entries, cap_rows, cap_entries;
    int64_t *row;
    int32_t *ids;
    float *p;
} fk_fused_rows;
void fk_fused_rows_clear(fk_fused_rows *r);
void fk_fused_rows_free(fk_fused_rows *r);
static inline fk_sparse_dist fk_fused_rows_dist(const fk_fused_rows *r) { return (fk_sparse_dist){r->row, r->ids, r->p}; }

// Fuses S teachers over one window of n positions whose true next tokens are labels[0..n)
// and appends n rows to out (ids sorted ascending, distinct, p summing to 1). weights (S)
// gets, per teacher, its weight summed over the window's positions (MinCE: positions chosen).
fk_status fk_fuse_window(const fk_fusion_opts *o, const fk_teacher_window *t, int S, const int32_t *labels, int64_t n,
                         fk_fused_rows *out, double *weights);

// ------------------------------------------------------------------ teacher set
// The distribution stores of S teachers, each over the training data's tokenization (the
// target's tokens: a store extracted with the target's tokenizer, or one aligned to it), used
// by fk_train as its teacher. Stores are read through mmap and decoded per batch, so memory
// does not grow with the corpus.
typedef struct fk_teacher_set fk_teacher_set;

// Opens the stores and checks each against the training data: same tokenizer fingerprint,
// the same number of tokens and the same ids (the error names the store and what differs).
fk_status fk_teacher_set_open(const char *const *paths, int n, const fk_fusion_opts *o, const fk_token_data *train,
                              fk_teacher_set **out);
void fk_teacher_set_close(fk_teacher_set *s);
// Checks the stores against the model being trained (`model` names it in the error): a store
// whose vocabulary is larger than the model's is refused unless no stored id reaches past the
// model's (padding rows; checked when the store is decoded whole, refused otherwise).
fk_status fk_teacher_set_check_model(const fk_teacher_set *s, int64_t vocab, const char *model);
// The fk_teacher for fk_train_opts (valid while the set is open).
const fk_teacher *fk_teacher_set_teacher(fk_teacher_set *s, float lambda);
// The shuffled-teachers control (fk_fusion_opts.shuffle_seed, train/fuse --shuffle-teachers):
// the teachers' row for position p (of the n positions of the training data, n = tokens - 1) is
// read at position pi(p) = (a p + b) mod n, a fixed bijection of the corpus positions, the same
// for every teacher: each row stays a real distribution of its teacher (a real fusion of the
// teachers, at another place in the corpus) while its alignment with the labels is destroyed.
// a is drawn from seed in [n/4, 3n/4) and moved up to the next value coprime with n (so the map is
// a bijection and neighbouring positions read rows about n/4 or more apart); b uniform in
// [0, n). n < 4: a = 1. Positions p >= n are read where they are.
typedef struct { int64_t n, a, b; } fk_shuffle;
void fk_shuffle_init(fk_shuffle *sh, uint64_t seed, int64_t n);
int64_t fk_shuffle_at(const fk_shuffle *sh, int64_t p);
// Per teacher, the share of fused positions it contributed so far (sums to 1 over teachers).
void fk_teacher_set_shares(const fk_teacher_set *s, double *shares);
int fk_teacher_set_size(const fk_teacher_set *s);

// ------------------------------------------------------------------ aligning stores to a target
typedef struct {
    fk_align_mode mode;      // offsets (default), dtw (the reference's DTW on bytes) or fusellm (FuseLLM-faithful)
    fk_vmap_mode vmap;       // mined (default) or exact
    const char *cache_dir;   // aligned stores and vocabulary maps (NULL: beside each store)
} fk_align_opts;
void fk_align_opts_default(fk_align_opts *o);
// Parses fk_align_parse_mode's and fk_vmap_parse_mode's names (either may be NULL).
fk_status fk_align_parse(const char *mode, const char *vmap, fk_align_opts *o);

typedef struct fk_store fk_store;
// A store's tokenizer lives beside it, in the folder "<store>.tokenizer" (tokenizer.json and
// tokenizer_config.json), written by fusekit extract; its fingerprint must be the store's.
char *fk_store_tokenizer_dir(const char *store_path);
fk_status fk_store_save_tokenizer(const char *store_path, const fk_tokenizer *t);
fk_status fk_store_tokenizer(const fk_store *s, fk_tokenizer **out);
// A store usable as a teacher for text encoded with tgt: store_path itself when the store is
// in tgt's tokenization, else an aligned store "<name>.to-<tgt fingerprint>-<mode>-<vmap>.fkd"
// (in cache_dir or beside the store), built when missing: the corpus is encoded with tgt,
// tokens aligned, the vocabulary mapped and the distributions moved to the target's
// positions (fusekit/align.h). *path is malloc'd; *built (may be NULL) says whether an aligned
// store was built now. corpus_path must be the extraction's text. Beside an aligned store it
// writes its boundary file (fk_span_bounds_path) when building it or when the file is missing.
fk_status fk_teacher_prepare(const char *store_path, const fk_tokenizer *tgt, const char *corpus_path, const fk_align_opts *o,
                             char **path, bool *built);

// ------------------------------------------------------------------ output ensembles
// Scores the average of several models' next-token distributions on a text, aligned to the
// first model's tokens (fusion.md §7). At each of the first model's positions a member takes
// part when its tokenization has a token aligned 1:1 with the position's (same byte span):
// its probability of the true next token is then the sum of its probabilities over the source
// ids the vocabulary map sends to that token (a sub-distribution: nothing is invented, so the
// ensemble's bits per byte are an honest upper bound). The first model always takes part;
// the others where they can. Every model runs over its own tokens in windows of seq tokens
// (fk_eval_data's protocol, after BOS when its tokenizer adds one).
typedef struct {
    double bpb, loss;          // the ensemble: bits per byte, nats per position of the first model
    int64_t positions, bytes;  // positions scored and the bytes of the tokens they predict
    double coverage[64];       // per member: the fraction of positions it took part in
    double member_bpb[64];     // per member: its own bits per byte on its own tokens
} fk_ensemble_result;
fk_status fk_eval_ensemble(fk_model *const *models, fk_tokenizer *const *toks, int n, const char *text, size_t len, int seq,
                           int batch, const fk_align_opts *ao, fk_ensemble_result *r);

// ------------------------------------------------------------------ alignment report
// How well a source's tokenization and vocabulary fit the target's on a text, before any
// model runs (docs/fusion.md, "Alignment report"): the text encoded by both tokenizers
// without special tokens (as extraction encodes it), the tokens aligned by fk_align_tokens
// in o->mode and the vocabulary mapped in o->vmap (fk_vmap_load_or_build in o->cache_dir
// when set, else fk_vmap_build), as a fused training run does (fk_teacher_prepare).
//
// The source's ids by how the map sends them: to the target token with the same bytes
// (exact); a source BOS, EOS or unknown token to the target's, whose bytes differ (special);
// to a token with other bytes (fallback: mined's nearest or prefix's longest prefix);
// to nothing (unmapped, -1).
enum { FK_MAP_EXACT, FK_MAP_SPECIAL, FK_MAP_FALLBACK, FK_MAP_UNMAPPED, FK_MAP_CLASSES };

typedef struct {
    int64_t count;      // occurrences of the source token on the text
    int32_t src, tgt;   // the source id and the target id the map sends it to (-1: unmapped)
} fk_align_mismatch;

typedef struct {
    int64_t bytes;                      // the text's (bytes per token: bytes / tokens)
    int64_t src_tokens, tgt_tokens;     // each tokenization's tokens
    // Target tokens by their alignment (they sum to tgt_tokens): one to one (fk_alignment's
    // one_to_one: in offsets mode, the same byte span); one target token over several source
    // tokens (one_to_many); over one source token otherwise (many_to_one: the target splits
    // the source's token, or their spans cross); over none (unaligned: an empty target token).
    // Fused training uses the source's distribution at the one_to_one positions only.
    int64_t one_to_one, one_to_many, many_to_one, unaligned;
    int32_t src_vocab, tgt_vocab;
    int64_t vocab[FK_MAP_CLASSES];      // source ids by class (sum: src_vocab)
    int64_t text[FK_MAP_CLASSES];       // source tokens of the text by their id's class (sum: src_tokens)
    int n_mismatch;                     // at most the `top` asked for
    fk_align_mismatch *mismatch;        // the most frequent source tokens on the text whose id is
                                        // fallback or unmapped; count descending, ties by id
} fk_align_report;

// The report of src against tgt on text (len > 0 bytes), with the top most frequent
// mismatches (top >= 0). r is overwritten; free it with fk_align_report_free.
fk_status fk_align_report_compute(const fk_tokenizer *src, const fk_tokenizer *tgt, const char *text, size_t len,
                                  const fk_align_opts *o, int top, fk_align_report *r);
void fk_align_report_free(fk_align_report *r);
// The bytes of token id as readable text, NUL-terminated in buf (cap >= 8): printable ASCII and
// valid UTF-8 as they are, \n \t \r and \\ escaped, other bytes as \xNN; cut short (ending
// in "...") when longer than cap. Returns buf.
char *fk_align_token_text(const fk_tokenizer *t, int32_t id, char *buf, size_t cap);
// One line: "1:1 87.3% of target tokens (1:n 5.1%, n:1 7.4%, none 0.2%); vocabulary map exact
// 45.1% of ids, 96.0% of the text's tokens, unmapped ...; 3.95 vs 4.10 bytes per token".
void fk_align_report_line(const fk_align_report *r, char *buf, size_t cap);

// The reports of n sources against one target, written as align_report.json and
// align_report.html in dir (created when missing).
typedef struct {
    const char *target, *data;          // as named in the report (paths)
    const fk_tokenizer *tgt;
    fk_align_opts ao;                   // the modes the reports were made with
    int n;
    const char *const *sources;         // n names
    const fk_tokenizer *const *src;     // n tokenizers
    const fk_align_report *reports;     // n reports
} fk_align_report_set;
fk_status fk_align_report_write(const fk_align_report_set *s, const char *dir);

// ------------------------------------------------------------------ the span objective
// Approximate likelihood matching of chunks (ALM: Minixhofer, Vulic, Ponti 2025, "Universal
// cross-tokenizer distillation via approximate likelihood matching"; fusion.md §6). The text is
// cut into chunks at the byte offsets where the target's and every source's tokenizations all
// have a token boundary. A chunk's log-likelihood under a model is the sum of its tokens'
// log-probabilities of the actual tokens: the student's from its own positions, a teacher's
// -sum ce over the target positions predicting the chunk's tokens (ce spreads each source
// position's nats over the target tokens its bytes cover, so the sum over a chunk is exactly
// the source's nats on the chunk's source tokens). Per chunk, with t and s the teacher's and
// the student's log-likelihoods, temperature tau and eps = FK_SPAN_EPS:
//   p = exp(t / tau - eps), q = exp(s / tau - eps),
//   L_c = -(p log q + (1 - p) log(1 - q))      (binary cross-entropy of Bernoulli(p) against Bernoulli(q))
// and L_span is the mean of L_c over the chunks that lie whole inside a training window.
#define FK_SPAN_EPS 1e-6
// end[t] = 1 when target token t (of nt, spans [tb[t], tb[t+1])) ends where a source token
// (ns tokens, spans sb[0..ns]) begins, or at the source's end; else 0.
void fk_span_shared_ends(const int64_t *sb, int64_t ns, const int64_t *tb, int64_t nt, uint8_t *end);
// The chunks of a window of n positions (position j predicts token off + j + 1), from ends[0..n]
// (the flags of tokens off .. off + n): chunk[j] = the chunk of position j, numbered from 0, or
// -1 where the chunk is not whole inside the window. Returns the number of chunks.
int64_t fk_span_chunks(const uint8_t *ends, int64_t n, int32_t *chunk);
// L_c for teacher log-likelihood t and student s (both clamped to <= 0) at temperature temp;
// *dnll (may be NULL) gets dL_c / d(-s), the derivative with respect to the student's nats.
double fk_span_bce(double t, double s, double temp, double *dnll);
// Sum of L_c over nc chunks of n positions (chunk from fk_span_chunks), the student's chunk
// log-likelihoods from its nats on the labels nll[j], the teacher's t[c]; g[j] gets dL/d nll[j]
// (the chunk's dnll; 0 outside chunks). NaN when out of memory.
double fk_span_window(const int32_t *chunk, int64_t n, const float *nll, const double *t, int64_t nc, double temp, float *g);
// The teachers' chunk log-likelihoods over a window of n positions whose chunks are chunk[]
// (every teacher's ends taken together): tl[c] = log sum_k w_k exp(-sum_{j in c} ce_k[j]), the
// weights w_k from fk_fusion_weights on the window's mean ce per position (level sequence) or
// the chunk's (level token): MinCE takes the best teacher's likelihood, AvgCE mixes the
// teachers' chunk probabilities. weights (S, may be NULL) gets w_k times the chunk's positions added.
void fk_span_teacher_logp(const fk_fusion_opts *o, const fk_teacher_window *t, int S, const int32_t *chunk, int64_t n, double *tl,
                          double *weights);
// An aligned store's boundary file, "<aligned store>.bounds" (malloc'd path), written by
// fk_teacher_prepare: the store's n_tokens flags of fk_span_shared_ends. Reading checks the
// token count and the fingerprints and names the file in every error.
char *fk_span_bounds_path(const char *aligned_path);
fk_status fk_span_bounds_write(const char *path, const uint8_t *ends, int64_t n_tokens, uint64_t tokenizer_fp, uint64_t corpus_fp);
fk_status fk_span_bounds_read(const char *path, int64_t n_tokens, uint64_t tokenizer_fp, uint64_t corpus_fp, uint8_t **ends);

#endif
