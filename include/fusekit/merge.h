// Weight-space merges of models that share one architecture and one tokenizer (mergekit's
// methods): the baseline users compare knowledge fusion against (fusion.md §7).
//
// θ_i are the models' tensors, w_i their weights (1 unless given), θ_b the base model's,
// τ_i = θ_i − θ_b their task vectors, λ a scale (1). Per tensor, element-wise unless said:
//
//   linear            θ = Σ w_i θ_i / W                  W = Σ w_i (normalize, the default) or 1
//   task-arithmetic   θ = θ_b + λ Σ w_i τ_i / W          W = 1 (default) or Σ w_i (normalize)
//   ties              1. trim: each τ_i keeps its k = floor(density · numel) entries of largest
//                        |τ_i| (per tensor); the others become 0. Equal magnitudes at the cut go
//                        to the lower index. density >= 1 keeps everything.
//                     2. elect: s = +1 where Σ w_i τ̂_i >= 0, else −1 (an exact tie elects +).
//                     3. disjoint mean: m_i = [sign(w_i τ̂_i) == s] (a zero entry never agrees);
//                        θ = θ_b + λ Σ m_i w_i τ̂_i / D, D = Σ m_i w_i (normalize, the default;
//                        D = 0 counts as 1) or 1.
//   sce               1. select: v = the population variance of τ_1..τ_n per entry; keep the
//                        k = floor(select_topk · count(v != 0)) entries of largest v (ties to the
//                        lower index), zero the others in every τ_i. select_topk >= 1 keeps all.
//                     2. calculate: e_i = Σ τ̂_i² over the tensor (energy);
//                        c_i = w_i e_i / Σ_j w_j e_j (all energies 0: c_i = w_i / Σ_j w_j).
//                     3. erase: s and m_i as TIES step 2-3 on τ̂_i;
//                        θ = θ_b + λ Σ m_i c_i τ̂_i / D, D = Σ m_i c_i (normalize) or 1.
//
// Checked against mergekit (merge_methods/{linear,generalized_task_arithmetic,sce}.py and
// sparsify.py's magnitude) and FuseChat-2's SCE. Deviations:
// - λ scales every task-vector method (mergekit's newer `lambda` parameter; 1 gives mergekit).
// - TIES with k = 0 (tiny tensor, small density) keeps nothing (mergekit refuses).
// - Ties in magnitude or variance at the cut go to the lower index (torch's order is unspecified).
// - SCE: mergekit takes no per-model weight; here w_i multiplies the energy coefficients and the
//   sign election sums w_i τ̂_i. With equal weights (the default) both reduce to mergekit's.
// - Sums over models are accumulated in double; results are rounded to float once.
//
// Tensors that are not floating point (integer or bool buffers) are copied from the base (or
// the first model) and must be identical in dtype and shape in every input.
#ifndef FUSEKIT_MERGE_H
#define FUSEKIT_MERGE_H

#include "fusekit/safetensors.h"

typedef enum {
    FK_MERGE_LINEAR = 0,
    FK_MERGE_TASK_ARITHMETIC = 1,
    FK_MERGE_TIES = 2,
    FK_MERGE_SCE = 3,
} fk_merge_method;

typedef struct {
    fk_merge_method method;
    double lambda;        // scale of the merged task vector (1)
    double density;       // TIES: fraction of each task vector kept by magnitude (1)
    double select_topk;   // SCE: fraction of entries kept by variance across task vectors (1)
    bool normalize;       // divide by the (agreeing) weight sum; default per method (see above)
    fk_dtype out_dtype;   // F32 (default), F16 or BF16
} fk_merge_opts;

// Defaults for a method: λ 1, density 1, select_topk 1, F32, normalize true for linear, ties
// and sce, false for task-arithmetic (as mergekit).
void fk_merge_opts_default(fk_merge_opts *o, fk_merge_method method);
// "linear", "task-arithmetic" (also "task_arithmetic"), "ties", "sce".
fk_status fk_merge_method_parse(const char *s, fk_merge_method *m);
const char *fk_merge_method_name(fk_merge_method m);
// Whether the method needs a base model (every method but linear).
bool fk_merge_needs_base(fk_merge_method m);

// One tensor: inputs[i] (numel floats each, i < n), base (numel floats; NULL for linear), w
// (n weights), out (numel floats, may not alias an input). Uses numel floats of scratch for
// ties and sce. Deterministic: the result does not depend on the thread count.
fk_status fk_merge_tensor(const fk_merge_opts *o, const float *const *inputs, const float *base, const float *w,
                          int n, int64_t numel, float *out);

// Merges the model folders model_dirs[0..n) with weights (NULL: all 1) into out_dir, relative to
// the model folder base_dir (NULL for linear; refused for linear, required by the others).
// The inputs must agree on config.json (shape and architecture keys), on tensor names, shapes
// and kinds, and on tokenizer.json when any has one; a difference is refused naming the folder
// and the key or tensor. Tensors are read one at a time through mmap and the output is streamed
// to out_dir/model.safetensors (a temporary file, fsynced, renamed), so memory stays at a few
// times the largest tensor, not the models' size. out_dir also gets the first model's
// config.json (torch_dtype set to the output dtype) and its tokenizer.json,
// tokenizer_config.json, special_tokens_map.json and generation_config.json when present.
// Sharded inputs (model.safetensors.index.json) are read; the output is one file.
fk_status fk_merge(const fk_merge_opts *o, const char *const *model_dirs, const float *weights, int n,
                   const char *base_dir, const char *out_dir);

#endif
