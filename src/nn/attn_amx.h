// Internal: causal attention with its products on AMX tiles or AVX512-BF16 (bf16 operands, fp32
// accumulation), taken under bf16 precision where the matrix products run natively too (see
// attn_amx.c).
#ifndef FK_NN_ATTN_AMX_H
#define FK_NN_ATTN_AMX_H
#include <stdbool.h>

#include "nn/ops.h"

// True when attention's products take bf16 operands now: the matrix-product precision is bf16 on
// oneDNN and either (AMX) the CPU has AMX-BF16, oneDNN's products are on the tiles
// (fk_bf16_tiles) and the kernel granted this process the tile data, or (AVX512-BF16's
// VDPBF16PS on zmm registers) the CPU has AVX512-BF16 without usable tiles and bf16 is the faster
// path there (fk_bf16_fast: AMD), or FUSEKIT_ATTN_AMX=avx512 asks for that kernel (also on an AMX
// CPU: how its tests run it there). FUSEKIT_ATTN_AMX=0 keeps attention in fp32 under bf16, as
// before, to compare the two.
bool fk_attn_amx_on(void);
// "AMX tiles" or "AVX512-BF16": what attention's products run on now; NULL when they are fp32.
const char *fk_attn_bf16_unit(void);

// Heads larger than this stay on the fp32 kernel.
#define FK_ATTN_AMX_MAX_HD 256

// fk_attention_forward's contract (ops_impl.h: out (B,n,H*hd), probs (B,H,n,n) kept only with
// p0 = 0, zero outside the visible keys within each FK_ATT_BLK row block's columns), with
// q, k, v and the probabilities rounded to bf16 for the two products; scores, soft-cap, ALiBi,
// mask and softmax in fp32. lse (B,H,n), when given (p0 = 0), receives each row's log-sum-exp of
// its final scores: what the backward needs instead of probs. out16, when given, receives out
// rounded to bf16 (nearest even, as the products round their operands; out may then be NULL):
// all that training's output projection reads, forward and backward. False (nothing written) when the
// tiles are not usable, the head is larger than FK_ATTN_AMX_MAX_HD or its buffers could not be
// allocated: the caller then runs the fp32 kernel.
bool fk_attention_forward_amx(float *out, uint16_t *out16, float *probs, float *lse, const float *q, const float *k,
                              const float *v, const fk_att_dims *d, float scale, float softcap, int nthr);

// fk_attention_backward's contract (adds into dqkv), its four products on the tiles with bf16
// operands (dO, q, k, v, P and dS rounded) and fp32 accumulation. The probabilities come from
// probs (the forward's) or, when probs is NULL, are recomputed from the scores on the tiles and
// the forward's lse (alibi: the heads' ALiBi slopes or NULL, as the forward had them), so no
// B x H x T x T buffer need be kept. False, nothing added, when the tiles are not usable, the
// head is too large or its buffers could not be allocated.
bool fk_attention_backward_amx(float *dqkv, const float *dout, const float *qkv, const float *probs, const float *lse,
                               const float *alibi, int64_t B, int64_t T, int64_t H, int64_t KVH, int64_t hd, float scale,
                               float softcap, int64_t window, int nthr);
#endif
