// Extraction (the fuse layer): a model's top-k next-token distributions over a corpus, written
// to a .fkd store (store.h). FuseLLM's "knowledge" of a source model, computed once and cached.
#ifndef FUSEKIT_EXTRACT_H
#define FUSEKIT_EXTRACT_H

#include "fusekit/base.h"
#include "fusekit/model.h"
#include "fusekit/store.h"
#include "fusekit/tokenizer.h"

// defaults: k 10, seq = min(model context, 512) (context - 1 when the tokenizer adds BOS: it goes
// first), batch 4, grid FK_STORE_GRID_FINE (store.h: the quantisation presets), precision FP32
// (the matrix products for this extraction; what it resolves to is kept in the store's flags,
// FK_STORE_BF16 and FK_STORE_INT8, so a store made in one precision is not taken for another's)
// device: FK_DEVICE_CPU (0), or FK_DEVICE_CUDA: the forwards and each position's top-k on the CUDA
// engine (include/fusekit/gpu.h; bf16 products, so the store is marked bf16 whatever precision says).
typedef struct { int k; int seq; int batch; int grid; fk_precision precision; int device; } fk_extract_opts;
typedef struct { int64_t seqs_done, seqs_total, positions_done; double elapsed_s, positions_per_s; } fk_extract_progress;
// Called after every sequence written; return false to stop early (the .partial stays, resumable).
typedef bool (*fk_extract_cb)(const fk_extract_progress *p, void *user);

void fk_extract_defaults(fk_extract_opts *o);
// Hash of the config (every switch and per-layer width) and of every weight. Independent of
// the thread count. A frozen model's stored matrices are hashed as their stored bytes and
// types, so a GGUF file loaded frozen and loaded decoded has two fingerprints.
uint64_t fk_model_fingerprint(const fk_model *m);
uint64_t fk_corpus_fingerprint(const void *data, size_t n);

// Encodes the text file corpus_path whole with t (no BOS/EOS, special tokens not parsed: as
// fk_data_load_tok does), cuts the tokens into sequences of o->seq, runs the model over o->batch
// sequences at a time (each sequence sees only its own tokens) and writes, per position, the
// top-k of the log-softmax and the cross-entropy of the true next token to out_path.
// - A complete store with the same header at out_path: returns FK_OK at once (cached).
// - A complete store with another header: FK_ERR_ARG unless restart (then it is replaced).
// - A .partial with the same header is resumed (restart: discarded). The result is byte-identical
//   to an uninterrupted run with the same thread count.
// - Stopped by cb (false): returns FK_OK with out_path not yet written, the .partial resumable.
// - Byte-identical resume needs the same batch and thread count: a resumed run recomputes the
//   interrupted batch from its start, so every sequence is computed in the same batch as before.
fk_status fk_extract(fk_model *m, const fk_tokenizer *t, const char *corpus_path, const fk_extract_opts *o, const char *out_path,
                     bool restart, fk_extract_cb cb, void *user);
// fk_extract, also telling whether it stopped early and whether the store was already there
// (stopped and cached may be NULL).
fk_status fk_extract_ex(fk_model *m, const fk_tokenizer *t, const char *corpus_path, const fk_extract_opts *o,
                        const char *out_path, bool restart, fk_extract_cb cb, void *user, bool *stopped, bool *cached);

#endif
