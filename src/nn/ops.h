// Internal: the float instantiation of the ops (see ops_impl.h).
#ifndef FK_NN_OPS_H
#define FK_NN_OPS_H
#include <stdint.h>
#include "nn/gemm.h"
#define real float
#define FK_OP(name) fk_##name
#define FK_GEMM fk_sgemm  // fp32 or bf16 products (nn/gemm.h)
#define FK_GEMV fk_sgemv
#define FK_GEMM_BIAS fk_sgemm_bias
#define FK_GEMM_BACKWARD fk_sgemm_backward
// Attention's products (q k^T, p v and their gradients) stay fp32 under bf16: row blocks of a few
// dozen rows, too small for oneDNN to gain on (its per-call cost and AVX-512 kernels made them the
// slowest part of a bf16 run), and never weights.
#define FK_GEMM_ATTN cblas_sgemm
#define FK_EXP fk_fast_expf
#define FK_TANH fk_fast_tanhf
#define FK_ERF erff
#include "nn/ops_impl.h"
#undef real
#undef FK_OP
#undef FK_GEMM
#undef FK_GEMM_ATTN
#undef FK_EXP
#undef FK_GEMV
#undef FK_GEMM_BIAS
#undef FK_GEMM_BACKWARD
#undef FK_TANH
#undef FK_ERF
#endif
