// Internal: the library's GEMM and GEMV, with cblas_sgemm's and cblas_sgemv's arguments (row-major
// only), following the precision fk_matmul_set_precision chose (see gemm.c).
#ifndef FK_NN_GEMM_H
#define FK_NN_GEMM_H
#include <cblas.h>

#include <stdint.h>
#include <string.h>

#include "fusekit/model.h"

// fk_f32_to_bf16 (round to nearest even, NaN kept quiet) inlined and branch-free, so that
// conversion loops vectorize: a call per element costs more than the products it feeds.
static inline uint32_t fk_bf16_rne(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t rounded = (x + 0x7fffu + ((x >> 16) & 1)) >> 16, nan = (x >> 16) | 0x40u;
    return (x & 0x7fffffffu) > 0x7f800000u ? nan : rounded;
}

// bf16 products run natively on oneDNN (built with it, the CPU has AVX512-BF16, emulation not
// forced); and on its AMX-BF16 tiles.
bool fk_bf16_native(void);
bool fk_bf16_tiles(void);

void fk_sgemm(CBLAS_ORDER order, CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int M, int N, int K, float alpha,
              const float *A, int lda, const float *B, int ldb, float beta, float *C, int ldc);
// C (M x N, row stride ldc) = beta C + ep(A (M x K) B^T + bias), B (N x K), bias a row of N added
// to every row (or NULL), ep FK_EP_GELU_TANH GPT-2's tanh GELU (0.5 x (1 + tanh(sqrt(2/pi) (x +
// 0.044715 x^3)))) or none, in one oneDNN primitive: the bias, the activation and a residual
// added where the product is stored, with no pass over C of their own. Only on the oneDNN bf16
// path; false, with nothing done, anywhere else (the caller takes its separate steps there).
typedef enum { FK_EP_NONE, FK_EP_GELU_TANH } fk_epilogue;
bool fk_sgemm_fused(int M, int N, int K, const float *A, int lda, const float *B, int ldb, const float *bias, float beta,
                    fk_epilogue ep, float *C, int ldc);
// A layer's two backward products, dinp (N x C) = dinp_beta dinp + dout (N x OC) w (OC x C) and
// dw (OC x C) += dout^T inp (inp N x C), all packed: fk_sgemm's results, with dout rounded to
// bf16 once for both where bf16 runs on oneDNN (the same rounding each product would make of it).
void fk_sgemm_backward(int N, int C, int OC, const float *dout, const float *inp, const float *w, float dinp_beta, float *dinp,
                       float *dw);
// C (M x N, row stride ldc) = A (M x K) B^T + bias, B (N x K), bias a row of N added to every
// row: a layer's forward. Under bf16 on oneDNN the bias joins the product's store.
void fk_sgemm_bias(int M, int N, int K, const float *A, int lda, const float *B, int ldb, const float *bias, float *C, int ldc);
// Products whose operands are already bf16 (frozen models' stored weights: bf16 rows used where
// they are mapped, other types decoded to bf16 once per batch). fk_gemm_bf16_on: whether an
// M x N x K product goes to oneDNN now (bf16 precision, oneDNN and AVX512-BF16, large enough, not
// inside a parallel region). fk_rows_to_bf16: the rows x cols matrix at src (row stride ld) rounded
// to packed bf16 (nearest even). fk_gemm_bf16: C (M x N, row stride ldc) = A (M x K) B^T + bias
// with A and B packed bf16, bias a row of N or NULL, through oneDNN (whatever its size: the
// caller decided with fk_gemm_bf16_on for the whole matrix); false, with nothing done, where
// bf16 does not run on oneDNN now or oneDNN fails (the caller takes the f32 path).
bool fk_gemm_bf16_on(int M, int N, int K);
void fk_rows_to_bf16(uint16_t *dst, const float *src, int rows, int cols, int ld);
bool fk_gemm_bf16(int M, int N, int K, const uint16_t *a16, const uint16_t *b16, const float *bias, float *C, int ldc);
// A layer's products with its input activations kept as packed bf16 (bf16 training keeps the MLP's
// activation so: half the memory, no conversion pass before each product). fk_sgemm_a16: C (M x N,
// row stride ldc) = A16 (M x K) B^T + bias, B (N x K, row stride ldb) fp32 weights rounded to bf16
// as fk_sgemm rounds them, bias a row of N or NULL. fk_sgemm_backward_a16: fk_sgemm_backward with
// inp given as packed bf16. On oneDNN's bf16 path where it runs; elsewhere the bf16 values in fp32
// through fk_sgemm (the same operands: rounding a bf16 value to bf16 keeps it).
void fk_sgemm_a16(int M, int N, int K, const uint16_t *a16, const float *B, int ldb, const float *bias, float *C, int ldc);
void fk_sgemm_backward_a16(int N, int C, int OC, const float *dout, const uint16_t *inp16, const float *w, float dinp_beta,
                           float *dinp, float *dw);
// How many stored segments' batch products took that bf16 path since the program started (tests).
int64_t fk_nn_stored_bf16_products(void);
// How many stored segments' batch products took 8-bit activations (--precision int8; tests).
int64_t fk_nn_stored_int8_products(void);
// Under bf16, y = A x with A not transposed and unit strides is fk_sgemm's one-row product (the same
// result as that row inside a batch); any other form stays fp32 (the library uses none).
void fk_sgemv(CBLAS_ORDER order, CBLAS_TRANSPOSE ta, int M, int N, float alpha, const float *A, int lda,
              const float *x, int incx, float beta, float *y, int incy);
#endif
