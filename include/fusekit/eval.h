// Evaluation (module eval): one window iterator over token data and the figures built on it and
// on the one log-sum-exp kernel (src/nn/rowops.h): loss, bits per byte and perplexity
// (fk_eval_data), llama.cpp's perplexity protocol, the KL to a reference model (eval --kl-to)
// and fold's KL probes. Multiple-choice probes are in probes.h; the cross-tokenizer ensemble,
// which needs alignment, is in fusion.h and runs on this iterator.
#ifndef FUSEKIT_EVAL_H
#define FUSEKIT_EVAL_H

#include "fusekit/base.h"
#include "fusekit/data.h"
#include "fusekit/model.h"

// ------------------------------------------------------------------ windows
// The evaluation protocol (fk_eval_data, eval --kl-to, the ensemble): the first n ids are cut
// into consecutive windows of seq positions and every id but the first is predicted once, from
// the ids before it in its window. With bos >= 0 (a tokenizer that adds BOS) each window is BOS
// and then seq - 1 ids, and every id, the first too, is predicted once (after BOS alone), as
// llama.cpp and transformers run such models.
typedef struct {
    int64_t n;          // ids used: all, or fewer when max_tokens caps the predicted ids
    int64_t n_windows;
    int seq;            // positions per window, BOS included
    int32_t bos;        // -1: none
} fk_eval_windowing;
// The windowing of n_ids ids (max_tokens > 0: at most that many predicted); seq >= 2 with BOS.
fk_eval_windowing fk_eval_windowing_of(int64_t n_ids, int64_t max_tokens, int seq, int32_t bos);
// The windowing fk_eval_data uses for d: with d's BOS when it has one.
fk_eval_windowing fk_eval_windowing_data(const fk_token_data *d, int64_t max_tokens, int seq);
// Copies windows w0.. (at most batch of them) into x (rows * seq, 0 past the end) and, when
// target is not NULL, the index in ids of the id each position predicts (-1: none) into target;
// returns how many windows it copied.
int fk_eval_windows(const fk_eval_windowing *w, const int32_t *ids, int64_t w0, int batch, int32_t *x, int64_t *target);

// The iterator every evaluation loop runs on: batches of up to `batch` windows of w, from window
// w0 up to (not including) w_end: all of them after init. Under mpirun the library's evaluations
// give each rank a contiguous share of the windows and sum the results over the ranks.
//   fk_eval_iter it;
//   FK_TRY(fk_eval_iter_init(&it, &w, batch));
//   while (fk_eval_iter_next(&it, ids)) { forward it.x (it.rows x w.seq); it.target[i]: the id predicted at i }
//   fk_eval_iter_free(&it);
typedef struct {
    fk_eval_windowing w;
    int batch;
    int64_t w0;         // the next window
    int64_t w_end;      // the end of the windows this iterator runs (w.n_windows after init)
    int rows;           // windows in the current batch
    int32_t *x;         // batch * seq ids
    int64_t *target;    // batch * seq: the index in ids each position predicts, -1 none
} fk_eval_iter;
fk_status fk_eval_iter_init(fk_eval_iter *it, const fk_eval_windowing *w, int batch);
// Fills the next batch; false when the windows are exhausted.
bool fk_eval_iter_next(fk_eval_iter *it, const int32_t *ids);
void fk_eval_iter_free(fk_eval_iter *it);

// ------------------------------------------------------------------ loss, bits per byte
typedef struct { double loss; double bpb; double ppl; int64_t tokens; int64_t bytes; } fk_eval_result;
// Evaluation over the windows above: mean nats per predicted id, perplexity, and bits per
// byte from d's text bytes per id.
fk_status fk_eval_data(fk_model *m, const fk_token_data *d, int seq, int batch, int64_t max_tokens, fk_eval_result *r);

// Progress of the evaluations here (fk_eval_data, fk_eval_llama_ppl, fk_eval_kl): fn, when set, is
// called after every batch with the units (windows or chunks) done and in all, and the positions
// scored so far; process-wide (set it before an evaluation starts, NULL to stop). The library
// reports, the program prints.
typedef void (*fk_eval_progress_fn)(int64_t done, int64_t total, int64_t tokens, void *user);
// Runs the window forwards of fk_eval_data (loss, bits per byte) on the CUDA engine's copy g of the
// model passed to it (include/fusekit/gpu.h; opened for batches at least as large), until called
// again with NULL. Process-wide, like the progress callback.
typedef struct fk_gpu fk_gpu;
void fk_eval_set_gpu(fk_gpu *g);
void fk_eval_set_progress(fk_eval_progress_fn fn, void *user);
// Reports through the same hook from the library's other long loops over windows (analyze's and
// fold's statistics); nothing when no hook is set.
void fk_eval_progress_report(int64_t done, int64_t total, int64_t tokens);

// llama.cpp's llama-perplexity protocol (its default, no stride): ids are the whole text
// encoded once with the tokenizer's specials (BOS first when it adds one); they are cut into
// floor(n / n_ctx) chunks of n_ctx tokens (the rest is left out); when bos >= 0 each chunk's
// first token is replaced by BOS; in each chunk the positions n_ctx/2 .. n_ctx-2 are scored,
// each predicting the token after it from the chunk's tokens up to it. r->ppl = exp(mean
// nats); r->bytes and r->bpb count text_bytes / n bytes per token (0: bpb not reported).
// As in llama.cpp, the softmax is over every row of the LM head: a padded model's padding rows
// (fk_model_set_vocab_real) are not masked here, unlike in every other figure.
fk_status fk_eval_llama_ppl(fk_model *m, const int32_t *ids, int64_t n, int n_ctx, int32_t bos, int batch, int64_t text_bytes,
                            fk_eval_result *r);

// ------------------------------------------------------------------ KL to a reference
// Mean KL(p_ref || p_m) in nats over the positions fk_eval_data scores (its windows), for two
// models of one vocabulary; both distributions over m's real tokens (fk_model_vocab_real).
fk_status fk_eval_kl(fk_model *ref, fk_model *m, const fk_token_data *d, int seq, int batch, int64_t max_tokens, double *kl);

// KL probes (fold.md §3: calibrating fold's cost estimates against the real model): B windows
// of T tokens of d and the original model's next-token log-probabilities on them.
typedef struct {
    int32_t *tokens;   // B * T
    int B, T;
    int64_t V;
    float *logp;       // B * T * V
} fk_kl_probe;
// Windows at evenly spaced offsets of d, so the probe sees the whole calibration text.
fk_status fk_kl_probe_init(fk_model *m, const fk_token_data *d, int B, int T, fk_kl_probe *p);
// Mean over positions of KL(p_original || p_model) in nats. m must have the probe's vocabulary.
fk_status fk_kl_probe_eval(fk_model *m, const fk_kl_probe *p, double *kl);
void fk_kl_probe_free(fk_kl_probe *p);

#endif
