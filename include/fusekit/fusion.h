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
} fk_fusion_opts;

void fk_fusion_defaults(fk_fusion_opts *o);
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
// Per teacher, the share of fused positions it contributed so far (sums to 1 over teachers).
void fk_teacher_set_shares(const fk_teacher_set *s, double *shares);
int fk_teacher_set_size(const fk_teacher_set *s);

// ------------------------------------------------------------------ aligning stores to a target
typedef struct {
    fk_align_mode mode;      // offsets (default) or dtw (the reference's)
    fk_vmap_mode vmap;       // mined (default) or exact
    const char *cache_dir;   // aligned stores and vocabulary maps (NULL: beside each store)
} fk_align_opts;
void fk_align_opts_default(fk_align_opts *o);
// Parses "offsets"/"dtw" and "mined"/"exact" (either may be NULL).
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
// store was built now. corpus_path must be the extraction's text.
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

#endif
