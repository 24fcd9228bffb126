// ggml tensor types: the block layouts of quantized GGUF tensors, their dequantization to
// f32, and a matrix product that reads the weights in their stored type.
//
// Every ggml type is a sequence of blocks; a block holds `block` consecutive elements of one
// row in `bytes` bytes (F32/F16/BF16 are blocks of one element). A row must hold a whole
// number of blocks. The layouts and formulas are ggml's (ggml-common.h, ggml-quants.c) and
// the results are bit-identical to the PyPI `gguf` package's gguf.quants.dequantize:
//   Q4_0  d, 16 bytes of 4-bit q:               x = d * (q - 8)
//   Q4_1  d, m, 4-bit q:                        x = d * q + m
//   Q5_0  d, 32 high bits, 4-bit low q:         x = d * (q - 16)
//   Q5_1  d, m, 32 high bits, 4-bit low q:      x = d * q + m
//   Q8_0  d, 32 int8 q:                         x = q * d
//   Q2_K  16 (scale | min << 4), 2-bit q, d, dmin:           x = (d * sc) * q - (dmin * mn)
//   Q3_K  high-bit mask, 2-bit q, 12 bytes of 6-bit scales, d: x = (d * (sc - 32)) * (q - 4 * !hbit)
//   Q4_K  d, dmin, 12 bytes of 6-bit scales and mins, 4-bit q: x = (d * sc) * q - (dmin * mn)
//   Q5_K  as Q4_K with a fifth bit per element from qh
//   Q6_K  4-bit ql, 2-bit qh, 16 int8 scales, d:  x = (d * sc) * (q - 32)
//   Q8_K  f32 d, 256 int8 q, 16 int16 block sums: x = d * q
//   IQ4_NL d, 4-bit indices into a fixed 16-entry non-linear table kv: x = d * kv[q]
//   IQ4_XS d, 16+32 bits of 6-bit scales, 4-bit indices into kv: x = (d * (sc - 32)) * kv[q]
// (d, m, dmin: IEEE half floats except Q8_K's f32; every product is one f32 rounding.)
#ifndef FUSEKIT_QUANTS_H
#define FUSEKIT_QUANTS_H

#include "fusekit/gguf.h"

typedef struct {
    const char *name;  // ggml's name: "Q4_K"
    int32_t block;     // elements per block
    int32_t bytes;     // bytes per block
    bool dequant;      // fk_dequantize_row reads it (else the size is known but the values are not)
} fk_ggml_type_info;

// The ggml type `type`, or NULL when fusekit does not know it (a removed or future type id).
// Known without dequantization: the IQ1/IQ2/IQ3 types, TQ1_0, TQ2_0, MXFP4, I8..I64, F64, Q8_1.
const fk_ggml_type_info *fk_ggml_type(uint32_t type);
// ggml's name of the type, or "unknown".
const char *fk_ggml_type_name(uint32_t type);

// Bytes of a row of n elements of the type. FK_ERR_FORMAT when the type is unknown, n < 0,
// n is not a multiple of the block size, or the size overflows; the message names the
// type and what was expected (the caller adds the file and tensor).
fk_status fk_ggml_row_bytes(uint32_t type, int64_t n, uint64_t *bytes);
// Bytes of a tensor with ggml dims (dims[0] is the row); the same checks, overflow-checked.
fk_status fk_ggml_tensor_bytes(uint32_t type, const uint64_t *dims, uint32_t n_dims, uint64_t *bytes);

// Dequantizes one row: src holds n / block blocks of the type, dst gets n floats.
// Preconditions (asserted): the type has dequant set, n is a multiple of its block size.
// Values are whatever the bits say (a NaN or Inf scale gives NaN or Inf); callers that need
// finite weights check them.
void fk_dequantize_row(uint32_t type, const void *src, float *dst, int64_t n);
// Where the library was built for AVX512 (-march=native on such a CPU), fk_dequantize_row decodes
// Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K and Q6_K sixteen elements at a time, bit for bit the
// block decoders' values. fk_dequantize_simd(false) keeps it to the block decoders (tests compare
// both); returns whether the SIMD decoders exist in this build. Not thread-safe against decoding.
bool fk_dequantize_simd(bool use);

// inp is (N,C), w is (OC,C) row-major with every row stored as C / block blocks of
// ggml_type, bias is (OC) or NULL; out is (N,OC): out = inp w^T + bias (fk_matmul_forward on
// the dequantized w; the same dequantized values, summed in another order). N >= 2: tiles
// of up to 256 rows of w are dequantized into per-thread buffers (OpenMP over tiles) and
// multiplied by sgemm, so each weight is decoded once per call; N == 1: each row is decoded
// into a per-thread buffer and dotted with inp (OpenMP over rows). FK_ERR_ARG when the type
// cannot be dequantized, C is not a multiple of its block size or a dimension exceeds
// 2^31 - 1; FK_ERR_NOMEM when a buffer cannot be allocated. The per-thread buffers (at most
// 2 MB each) are kept for the next call.
fk_status fk_qmatmul_forward(float *out, const float *inp, const void *w, uint32_t ggml_type, const float *bias, int64_t N,
                             int64_t C, int64_t OC);
// The same product with each dequantized tile multiplied by gemm instead of cblas_sgemm:
// out (N x rows, row stride ldo) = inp (N x C) tile^T, tile (rows x C) row-major. The nn layer
// passes its own product, which follows the matrix-product precision (bf16 on AMX tiles where
// chosen). One token (N = 1) stays the exact row-by-row path whatever gemm is.
typedef void (*fk_tile_gemm_fn)(int N, int rows, int C, const float *inp, const float *tile, float *out, int ldo);
fk_status fk_qmatmul_forward_gemm(float *out, const float *inp, const void *w, uint32_t ggml_type, const float *bias, int64_t N,
                                  int64_t C, int64_t OC, fk_tile_gemm_fn gemm);

// The same product with the activations quantized to 8 bits (llama.cpp's approach): each
// 32 elements of a row of inp become int8 codes q = round(x / d), d = max|x| / 127, and every
// weight block is read as integer codes with f32 scales (and mins) per 16 or 32 elements,
// w = s * code + m, so the inner products are integer dot products. The error against the
// exact product is at most sum_c |w_c| d_c / 2 (the activation rounding) plus f32 rounding.
// For Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K..Q6_K, Q8_K, IQ4_NL and IQ4_XS (see
// fk_qmatmul_q8_supported); any other type falls back to fk_qmatmul_forward. Rows are
// split across OpenMP threads; each row is decoded once for all N tokens.
fk_status fk_qmatmul_forward_q8(float *out, const float *inp, const void *w, uint32_t ggml_type, const float *bias, int64_t N,
                                int64_t C, int64_t OC);
bool fk_qmatmul_q8_supported(uint32_t type);
// Where the library was built for AVX512-VNNI, a batch of 8 or more rows multiplies panels of 16
// weight rows repacked for VPDPBUSD (the same integer dot products, the f32 sums added in
// another order). fk_qmatmul_q8_blocked(false) keeps every batch on the row-by-row path (tests
// compare both); returns whether the blocked path exists in this build. Not thread-safe
// against products.
bool fk_qmatmul_q8_blocked(bool use);
// What runs a batch's 8-bit products in this build: "AVX512-VNNI", or on builds without it
// "AVX2, row by row (no AVX512-VNNI: the same integer products, slower)" or the portable C one.
const char *fk_qmatmul_q8_unit(void);

#endif
