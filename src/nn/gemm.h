// Internal: the library's GEMM and GEMV, with cblas_sgemm's and cblas_sgemv's arguments (row-major
// only), following the precision fk_matmul_set_precision chose (see gemm.c).
#ifndef FK_NN_GEMM_H
#define FK_NN_GEMM_H
#include <cblas.h>

#include "fusekit/model.h"

void fk_sgemm(CBLAS_ORDER order, CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int M, int N, int K, float alpha,
              const float *A, int lda, const float *B, int ldb, float beta, float *C, int ldc);
// Under bf16, y = A x with A not transposed and unit strides is fk_sgemm's one-row product (the same
// result as that row inside a batch); any other form stays fp32 (the library uses none).
void fk_sgemv(CBLAS_ORDER order, CBLAS_TRANSPOSE ta, int M, int N, float alpha, const float *A, int lda,
              const float *x, int incx, float beta, float *y, int incy);
#endif
