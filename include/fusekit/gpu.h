// fusekit gpu: the CUDA engine. A model's device copy (fk_gpu) holds its weights (fp32 master
// copy and a bf16 copy the matrix products read), gradients, AdamW moments and activations on one
// GPU, laid out by the model's own parameter table: the arenas have the host model's offsets, so
// weights, gradients and moments move between host and device as whole arenas. Matrix products
// run through cuBLASLt with bf16 operands and fp32 accumulation and output; every other op is a
// kernel of src/gpu/gpu.cu in fp32 (attention in the flash style: one pass over the keys with a
// running softmax, no T x T matrix anywhere; its backward recomputes the probabilities from the
// forward's log-sum-exp). The CPU engine (src/nn) is the reference the tests compare it with.
//
// Built with -DFK_CUDA=ON; without it every call returns FK_ERR_UNSUPPORTED saying so. The
// library never selects the device on its own: callers (the CLI's --device cuda) ask for it.
#ifndef FUSEKIT_GPU_H
#define FUSEKIT_GPU_H

#include "fusekit/base.h"
#include "fusekit/model.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { FK_DEVICE_CPU = 0, FK_DEVICE_CUDA = 1 } fk_device;
// "cpu" or "cuda" -> *out; anything else FK_ERR_ARG naming --device and the value.
fk_status fk_device_parse(const char *s, fk_device *out);
const char *fk_device_name(fk_device d);

// True when the library was built with the CUDA engine.
bool fk_gpu_built(void);
// The first CUDA device in words ("NVIDIA H200, 139.8 GiB, compute 9.0, 132 SMs"); FK_ERR_UNSUPPORTED
// when the library has no CUDA engine or no device answers (the CUDA runtime's reason quoted).
fk_status fk_gpu_describe(char *buf, size_t n);

// Why the CUDA engine cannot run this model (a config switch it does not implement, a head size it
// has no attention kernel for), as FK_ERR_UNSUPPORTED naming it; FK_OK when it can.
fk_status fk_gpu_supports(const fk_config *c);

// Device bytes a model's copy needs for batches of up to B x T tokens: weights (fp32 + bf16), and
// when train, gradients, AdamW moments and every activation the backward reads.
fk_status fk_gpu_bytes(const fk_model *m, int B, int T, bool train, size_t *bytes);

typedef struct fk_gpu fk_gpu;
// Copies m to the first CUDA device for batches of up to B x T tokens (train: with gradients and
// moments, zeroed). Checks fk_gpu_supports and the estimate of fk_gpu_bytes against the device's
// free memory before allocating anything (FK_ERR_NOMEM with both figures). A frozen model's stored
// (quantized) matrices are decoded once, on the host, row block by row block. m must outlive g
// (its RoPE tables are read at open).
fk_status fk_gpu_open(fk_gpu **g, fk_model *m, int B, int T, bool train);
void fk_gpu_close(fk_gpu *g);

// A forward without a backward over tokens (B, T) (B, T at most the opened sizes). With targets
// (-1: not scored), *loss gets the mean cross-entropy over scored positions and, when token_losses
// is not NULL, each position's (B*T floats, 0 where not scored). With logits not NULL the (B, T, V)
// logits are copied there (padded vocabulary rows set to FK_LOGIT_MASKED, as the CPU engine does).
fk_status fk_gpu_forward(fk_gpu *g, const int32_t *tokens, const int32_t *targets, int B, int T, float *loss,
                         float *token_losses, float *logits);
// A training forward and its backward: adds grad_scale * d(loss)/d(params) into the device
// gradients, loss = lambda * CE + (1 - lambda) * soft CE against teacher rows (fk_sparse_dist with
// B*T rows, ids in the vocabulary) when teacher is not NULL, plain CE otherwise. *loss gets the mean
// loss, *fusion_loss (may be NULL) the teacher term's mean (the CE without a teacher).
fk_status fk_gpu_train_step(fk_gpu *g, const int32_t *tokens, const int32_t *targets, const fk_sparse_dist *teacher,
                            float lambda, int B, int T, float grad_scale, float *loss, float *fusion_loss);
// A forward's top-k per position, as extraction stores it: for each of the B*T positions the k
// largest logits among the real vocabulary rows (largest first, equal values lower id first) as ids
// and log-softmax values (ids -1 and logp -inf past the vocabulary), and ce the cross-entropy of
// labels[i] (NaN where labels[i] < 0). Computed on the device: only B*T*k entries come back.
// k at most 255. FK_ERR_NUMERIC naming the first position whose logits are not finite.
fk_status fk_gpu_topk(fk_gpu *g, const int32_t *tokens, const int32_t *labels, int B, int T, int k, int32_t *ids, float *logp,
                      float *ce);
void fk_gpu_zero_grads(fk_gpu *g);
// The gradient's Euclidean norm over the whole arena, in double.
fk_status fk_gpu_grad_norm(fk_gpu *g, double *norm);
// AdamW over every table entry, as fk_adamw_update: t is the step's number (1 for the first),
// gradients multiplied by grad_scale first, decoupled weight decay on the entries with decay set.
// The bf16 copy of the weights is refreshed from the updated fp32 ones.
fk_status fk_gpu_adamw(fk_gpu *g, int64_t t, float lr, float beta1, float beta2, float eps, float weight_decay,
                       float grad_scale);

// Arena transfers (n_floats floats each, the host model's layout).
fk_status fk_gpu_get_weights(fk_gpu *g, float *w);
fk_status fk_gpu_set_weights(fk_gpu *g, const float *w);
fk_status fk_gpu_get_grads(fk_gpu *g, float *grad);
fk_status fk_gpu_get_moments(fk_gpu *g, float *m, float *v);
fk_status fk_gpu_set_moments(fk_gpu *g, const float *m, const float *v);
// Bytes the copy holds on the device.
size_t fk_gpu_held_bytes(const fk_gpu *g);

#ifdef __cplusplus
}
#endif
#endif
