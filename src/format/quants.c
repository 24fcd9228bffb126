// ggml tensor types: block sizes, dequantization (bit-identical to gguf-py's
// gguf.quants.dequantize) and the matrix product over quantized weights.
//
// Bit-exactness: every value is computed with the same f32 operations, in the same order,
// as gguf-py's numpy code (one rounding per product or sum; this file is compiled with
// -ffp-contract=off so no multiply-add is fused). Element order inside a block follows
// ggml's layouts, spelled out above each decoder.
#include "fusekit/quants.h"

#include <cblas.h>
#include <limits.h>
#include <math.h>
#include "base/par.h"
#include <stdlib.h>
#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#endif
#include <stdbool.h>
#include <string.h>

#define QK_K 256

// ------------------------------------------------------------------ the type table

static void deq_f32(const uint8_t *b, float *y);
static void deq_f16(const uint8_t *b, float *y);
static void deq_bf16(const uint8_t *b, float *y);
static void deq_q4_0(const uint8_t *b, float *y);
static void deq_q4_1(const uint8_t *b, float *y);
static void deq_q5_0(const uint8_t *b, float *y);
static void deq_q5_1(const uint8_t *b, float *y);
static void deq_q8_0(const uint8_t *b, float *y);
static void deq_q2_k(const uint8_t *b, float *y);
static void deq_q3_k(const uint8_t *b, float *y);
static void deq_q4_k(const uint8_t *b, float *y);
static void deq_q5_k(const uint8_t *b, float *y);
static void deq_q6_k(const uint8_t *b, float *y);
static void deq_q8_k(const uint8_t *b, float *y);
static void deq_iq4_nl(const uint8_t *b, float *y);
static void deq_iq4_xs(const uint8_t *b, float *y);

typedef void (*deq_fn)(const uint8_t *b, float *y);

typedef struct {
    fk_ggml_type_info info;
    deq_fn deq;  // one block
} type_entry;

#define T(id, nm, blk, sz, fn) [id] = {{nm, blk, sz, true}, fn}
#define S(id, nm, blk, sz) [id] = {{nm, blk, sz, false}, NULL}  // known by size only
static const type_entry types[FK_GGML_TYPE_COUNT] = {
    T(0, "F32", 1, 4, deq_f32),
    T(1, "F16", 1, 2, deq_f16),
    T(2, "Q4_0", 32, 18, deq_q4_0),
    T(3, "Q4_1", 32, 20, deq_q4_1),
    T(6, "Q5_0", 32, 22, deq_q5_0),
    T(7, "Q5_1", 32, 24, deq_q5_1),
    T(8, "Q8_0", 32, 34, deq_q8_0),
    S(9, "Q8_1", 32, 36),
    T(10, "Q2_K", QK_K, 84, deq_q2_k),
    T(11, "Q3_K", QK_K, 110, deq_q3_k),
    T(12, "Q4_K", QK_K, 144, deq_q4_k),
    T(13, "Q5_K", QK_K, 176, deq_q5_k),
    T(14, "Q6_K", QK_K, 210, deq_q6_k),
    T(15, "Q8_K", QK_K, 292, deq_q8_k),
    S(16, "IQ2_XXS", QK_K, 66),
    S(17, "IQ2_XS", QK_K, 74),
    S(18, "IQ3_XXS", QK_K, 98),
    S(19, "IQ1_S", QK_K, 50),
    T(20, "IQ4_NL", 32, 18, deq_iq4_nl),
    S(21, "IQ3_S", QK_K, 110),
    S(22, "IQ2_S", QK_K, 82),
    T(23, "IQ4_XS", QK_K, 136, deq_iq4_xs),
    S(24, "I8", 1, 1),
    S(25, "I16", 1, 2),
    S(26, "I32", 1, 4),
    S(27, "I64", 1, 8),
    S(28, "F64", 1, 8),
    S(29, "IQ1_M", QK_K, 56),
    T(30, "BF16", 1, 2, deq_bf16),
    S(34, "TQ1_0", QK_K, 54),
    S(35, "TQ2_0", QK_K, 66),
    S(39, "MXFP4", 32, 17),
    S(40, "NVFP4", 64, 36),
    S(41, "Q1_0", 128, 18),
};
#undef T
#undef S

const fk_ggml_type_info *fk_ggml_type(uint32_t type) {
    return type < FK_GGML_TYPE_COUNT && types[type].info.name ? &types[type].info : NULL;
}

const char *fk_ggml_type_name(uint32_t type) {
    const fk_ggml_type_info *t = fk_ggml_type(type);
    return t ? t->name : "unknown";
}

fk_status fk_ggml_row_bytes(uint32_t type, int64_t n, uint64_t *bytes) {
    const fk_ggml_type_info *t = fk_ggml_type(type);
    if (!t) return fk_error(FK_ERR_FORMAT, "unknown ggml type %u", type);
    if (n < 0) return fk_error(FK_ERR_FORMAT, "a row of %lld elements", (long long)n);
    if (n % t->block)
        return fk_error(FK_ERR_FORMAT, "a row of %lld elements is not a multiple of the %s block size %d", (long long)n, t->name,
                        t->block);
    uint64_t blocks = (uint64_t)n / (uint64_t)t->block;
    if (blocks > UINT64_MAX / (uint64_t)t->bytes)
        return fk_error(FK_ERR_FORMAT, "a row of %lld %s elements overflows the byte count", (long long)n, t->name);
    *bytes = blocks * (uint64_t)t->bytes;
    return FK_OK;
}

fk_status fk_ggml_tensor_bytes(uint32_t type, const uint64_t *dims, uint32_t n_dims, uint64_t *bytes) {
    if (n_dims == 0) return fk_ggml_row_bytes(type, 1, bytes);
    if (dims[0] > (uint64_t)INT64_MAX) return fk_error(FK_ERR_FORMAT, "a row of %llu elements is too long", (unsigned long long)dims[0]);
    uint64_t nb;
    FK_TRY(fk_ggml_row_bytes(type, (int64_t)dims[0], &nb));
    for (uint32_t d = 1; d < n_dims; d++) {
        if (dims[d] && nb > UINT64_MAX / dims[d])
            return fk_error(FK_ERR_FORMAT, "%s tensor of %u dimensions overflows the byte count at dimension %u (%llu)",
                            fk_ggml_type_name(type), n_dims, d, (unsigned long long)dims[d]);
        nb *= dims[d];
    }
    *bytes = nb;
    return FK_OK;
}

// ------------------------------------------------------------------ scalar helpers

// IEEE half to f32, exactly (subnormals included; a NaN keeps its payload and its quiet
// bit, as numpy's conversion does, which F16C's would not). Branch-free enough to vectorize:
// subnormals are renormalised by one exact f32 subtraction.
static inline float half_to_f32(uint16_t h) {
    uint32_t o = (uint32_t)(h & 0x7fff) << 13, e = o & 0x0f800000u;
    o += (uint32_t)(127 - 15) << 23;
    float f;
    if (e == 0x0f800000u) o += (uint32_t)(128 - 16) << 23;  // Inf / NaN
    else if (e == 0) {                                      // zero / subnormal
        o += 1u << 23;
        memcpy(&f, &o, 4);
        f -= 6.103515625e-05f;  // 2^-14
        memcpy(&o, &f, 4);
    }
    o |= (uint32_t)(h & 0x8000) << 16;
    memcpy(&f, &o, 4);
    return f;
}

static inline float h2f(const uint8_t *p) { return half_to_f32((uint16_t)(p[0] | p[1] << 8)); }

static inline float f32at(const uint8_t *p) {
    uint32_t x = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
    float f;
    memcpy(&f, &x, 4);
    return f;
}

// IQ4_NL's non-linear levels (ggml-common.h kvalues_iq4nl).
static const int8_t kvalues_iq4nl[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};

// ------------------------------------------------------------------ block decoders

static void deq_f32(const uint8_t *b, float *y) { *y = f32at(b); }
static void deq_f16(const uint8_t *b, float *y) { *y = h2f(b); }
static void deq_bf16(const uint8_t *b, float *y) {
    uint32_t x = (uint32_t)(b[0] | b[1] << 8) << 16;
    memcpy(y, &x, 4);
}

// Q4_0 (18 bytes): d, qs[16]; element l is the low nibble of qs[l], element 16+l the high one.
static void deq_q4_0(const uint8_t *b, float *y) {
    float d = h2f(b);
    const uint8_t *qs = b + 2;
    for (int l = 0; l < 16; l++) {
        y[l] = d * (float)((qs[l] & 0xF) - 8);
        y[l + 16] = d * (float)((qs[l] >> 4) - 8);
    }
}

// Q4_1 (20 bytes): d, m, qs[16] as Q4_0.
static void deq_q4_1(const uint8_t *b, float *y) {
    float d = h2f(b), m = h2f(b + 2);
    const uint8_t *qs = b + 4;
    for (int l = 0; l < 16; l++) {
        y[l] = d * (float)(qs[l] & 0xF) + m;
        y[l + 16] = d * (float)(qs[l] >> 4) + m;
    }
}

// Q5_0 (22 bytes): d, qh (u32: bit e is element e's fifth bit), qs[16] as Q4_0.
static void deq_q5_0(const uint8_t *b, float *y) {
    float d = h2f(b);
    uint32_t qh = (uint32_t)b[2] | (uint32_t)b[3] << 8 | (uint32_t)b[4] << 16 | (uint32_t)b[5] << 24;
    const uint8_t *qs = b + 6;
    for (int l = 0; l < 16; l++) {
        int q0 = (qs[l] & 0xF) | (int)((qh >> l) & 1) << 4, q1 = (qs[l] >> 4) | (int)((qh >> (l + 16)) & 1) << 4;
        y[l] = d * (float)(q0 - 16);
        y[l + 16] = d * (float)(q1 - 16);
    }
}

// Q5_1 (24 bytes): d, m, qh, qs[16].
static void deq_q5_1(const uint8_t *b, float *y) {
    float d = h2f(b), m = h2f(b + 2);
    uint32_t qh = (uint32_t)b[4] | (uint32_t)b[5] << 8 | (uint32_t)b[6] << 16 | (uint32_t)b[7] << 24;
    const uint8_t *qs = b + 8;
    for (int l = 0; l < 16; l++) {
        int q0 = (qs[l] & 0xF) | (int)((qh >> l) & 1) << 4, q1 = (qs[l] >> 4) | (int)((qh >> (l + 16)) & 1) << 4;
        y[l] = d * (float)q0 + m;
        y[l + 16] = d * (float)q1 + m;
    }
}

// Q8_0 (34 bytes): d, int8 qs[32].
static void deq_q8_0(const uint8_t *b, float *y) {
    float d = h2f(b);
    for (int l = 0; l < 32; l++) y[l] = (float)(int8_t)b[2 + l] * d;
}

// Q2_K (84 bytes): scales[16] (scale | min << 4, one per 16 elements), qs[64], d, dmin.
// Element 128j + 32s + l is bits 2s..2s+1 of qs[32j + l].
static void deq_q2_k(const uint8_t *b, float *y) {
    const uint8_t *sc = b, *qs = b + 16;
    float d = h2f(b + 80), dmin = h2f(b + 82);
    for (int j = 0; j < 2; j++)
        for (int h = 0; h < 2; h++) {
            const uint8_t *q = qs + 32 * j + 16 * h, *g = sc + 8 * j + h;  // scales g[0], g[2], g[4], g[6] for shifts 0..3
            float *o = y + 128 * j + 16 * h;
            float d0 = d * (float)(g[0] & 0xF), d1 = d * (float)(g[2] & 0xF), d2 = d * (float)(g[4] & 0xF), d3 = d * (float)(g[6] & 0xF);
            float m0 = dmin * (float)(g[0] >> 4), m1 = dmin * (float)(g[2] >> 4), m2 = dmin * (float)(g[4] >> 4), m3 = dmin * (float)(g[6] >> 4);
            for (int l = 0; l < 16; l++) {
                o[l] = d0 * (float)(q[l] & 3) - m0;
                o[l + 32] = d1 * (float)((q[l] >> 2) & 3) - m1;
                o[l + 64] = d2 * (float)((q[l] >> 4) & 3) - m2;
                o[l + 96] = d3 * (float)(q[l] >> 6) - m3;
            }
        }
}

// Q3_K (110 bytes): hmask[32], qs[64], scales[12], d. Element e: low bits as Q2_K, high bit
// e/32 of hmask[e%32] (set: +0, clear: -4). Scale i (6 bits, one per 16 elements): low
// nibble (scales[i%8] >> 4*(i/8)), high bits (scales[8 + i%4] >> 2*(i/4)) & 3; minus 32.
static void deq_q3_k(const uint8_t *b, float *y) {
    const uint8_t *hm = b, *qs = b + 32, *sc = b + 96;
    float d = h2f(b + 108);
    float dl[16];
    for (int g = 0; g < 16; g++) {
        int s6 = ((sc[g % 8] >> (4 * (g / 8))) & 0xF) | ((sc[8 + g % 4] >> (2 * (g / 4))) & 3) << 4;
        dl[g] = d * (float)(s6 - 32);
    }
    for (int j = 0; j < 2; j++)
        for (int h = 0; h < 2; h++) {
            const uint8_t *q = qs + 32 * j + 16 * h, *m = hm + 16 * h;
            const float *g = dl + 8 * j + h;
            float *o = y + 128 * j + 16 * h;
            int b0 = 4 * j;  // high bit of shift s: bit 4j + s of hm
            for (int l = 0; l < 16; l++) {
                o[l] = g[0] * (float)((q[l] & 3) - (((m[l] >> b0) & 1) ? 0 : 4));
                o[l + 32] = g[2] * (float)(((q[l] >> 2) & 3) - (((m[l] >> (b0 + 1)) & 1) ? 0 : 4));
                o[l + 64] = g[4] * (float)(((q[l] >> 4) & 3) - (((m[l] >> (b0 + 2)) & 1) ? 0 : 4));
                o[l + 96] = g[6] * (float)((q[l] >> 6) - (((m[l] >> (b0 + 3)) & 1) ? 0 : 4));
            }
        }
}

// The 6-bit scale and min of sub-block j (0..7) of Q4_K / Q5_K from their 12 bytes.
static inline void scale_min_k4(int j, const uint8_t *q, int *sc, int *mn) {
    if (j < 4) {
        *sc = q[j] & 63;
        *mn = q[j + 4] & 63;
    } else {
        *sc = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
        *mn = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    }
}

// Q4_K (144 bytes): d, dmin, scales[12], qs[128]. Sub-block g (32 elements): nibble g%2 of
// qs[32*(g/2) + l].
static void deq_q4_k(const uint8_t *b, float *y) {
    float d = h2f(b), dmin = h2f(b + 2);
    const uint8_t *scales = b + 4, *qs = b + 16;
    for (int g = 0; g < 8; g++) {
        int sc, mn;
        scale_min_k4(g, scales, &sc, &mn);
        float d1 = d * (float)sc, m1 = dmin * (float)mn;
        const uint8_t *q = qs + 32 * (g / 2);
        int sh = 4 * (g % 2);
        for (int l = 0; l < 32; l++) y[32 * g + l] = d1 * (float)((q[l] >> sh) & 0xF) - m1;
    }
}

// Q5_K (176 bytes): d, dmin, scales[12], qh[32], qs[128]; fifth bit of element e: bit e/32 of qh[e%32].
static void deq_q5_k(const uint8_t *b, float *y) {
    float d = h2f(b), dmin = h2f(b + 2);
    const uint8_t *scales = b + 4, *qh = b + 16, *qs = b + 48;
    for (int g = 0; g < 8; g++) {
        int sc, mn;
        scale_min_k4(g, scales, &sc, &mn);
        float d1 = d * (float)sc, m1 = dmin * (float)mn;
        const uint8_t *q = qs + 32 * (g / 2);
        int sh = 4 * (g % 2);
        for (int l = 0; l < 32; l++) y[32 * g + l] = d1 * (float)(((q[l] >> sh) & 0xF) | ((qh[l] >> g) & 1) << 4) - m1;
    }
}

// Q6_K (210 bytes): ql[128], qh[64], int8 scales[16], d. Element e = 128a + 32s + l:
// low nibble (ql[64a + 32(s%2) + l] >> 4*(s/2)), high bits (qh[32a + l] >> 2s) & 3; minus 32.
static void deq_q6_k(const uint8_t *b, float *y) {
    const uint8_t *ql = b, *qh = b + 128;
    const int8_t *sc = (const int8_t *)(b + 192);
    float d = h2f(b + 208);
    for (int a = 0; a < 2; a++)
        for (int h = 0; h < 2; h++) {
            const uint8_t *lo = ql + 64 * a + 16 * h, *hi = qh + 32 * a + 16 * h;
            float *o = y + 128 * a + 16 * h;
            const int8_t *g = sc + 8 * a + h;
            float d0 = d * (float)g[0], d1 = d * (float)g[2], d2 = d * (float)g[4], d3 = d * (float)g[6];
            for (int l = 0; l < 16; l++) {
                o[l] = d0 * (float)(((lo[l] & 0xF) | (hi[l] & 3) << 4) - 32);
                o[l + 32] = d1 * (float)(((lo[l + 32] & 0xF) | ((hi[l] >> 2) & 3) << 4) - 32);
                o[l + 64] = d2 * (float)(((lo[l] >> 4) | ((hi[l] >> 4) & 3) << 4) - 32);
                o[l + 96] = d3 * (float)(((lo[l + 32] >> 4) | ((hi[l] >> 6) & 3) << 4) - 32);
            }
        }
}

// Q8_K (292 bytes): f32 d, int8 qs[256], int16 bsums[16] (not needed here).
static void deq_q8_k(const uint8_t *b, float *y) {
    float d = f32at(b);
    for (int l = 0; l < QK_K; l++) y[l] = d * (float)(int8_t)b[4 + l];
}

// IQ4_NL (18 bytes): d, qs[16] of table indices laid out as Q4_0.
static void deq_iq4_nl(const uint8_t *b, float *y) {
    float d = h2f(b);
    const uint8_t *qs = b + 2;
    for (int l = 0; l < 16; l++) {
        y[l] = d * (float)kvalues_iq4nl[qs[l] & 0xF];
        y[l + 16] = d * (float)kvalues_iq4nl[qs[l] >> 4];
    }
}

// IQ4_XS (136 bytes): d, scales_h (u16: bits 2j..2j+1 are sub-block j's high scale bits),
// scales_l[4] (nibble j%2 of byte j/2), qs[128] (sub-block j: 16 bytes, low nibbles then high).
static void deq_iq4_xs(const uint8_t *b, float *y) {
    float d = h2f(b);
    unsigned sh = (unsigned)(b[2] | b[3] << 8);
    const uint8_t *sl = b + 4, *qs = b + 8;
    for (int j = 0; j < 8; j++) {
        int s6 = ((sl[j / 2] >> (4 * (j % 2))) & 0xF) | ((sh >> (2 * j)) & 3) << 4;
        float dl = d * (float)(s6 - 32);
        const uint8_t *q = qs + 16 * j;
        for (int l = 0; l < 16; l++) {
            y[32 * j + l] = dl * (float)kvalues_iq4nl[q[l] & 0xF];
            y[32 * j + 16 + l] = dl * (float)kvalues_iq4nl[q[l] >> 4];
        }
    }
}

// ------------------------------------------------------------------ whole rows, 16 lanes at a time
// AVX512 decoders of the most common types (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K):
// the block decoders' arithmetic, operation for operation (a multiply, then an add or subtract,
// never fused: quants.c is built -ffp-contract=off), so bit for bit their results (test_quants
// checks both against gguf-py's goldens).
#if defined(__AVX512F__) && defined(__AVX512BW__)
#include <immintrin.h>
#define FK_DEQ_SIMD 1

static bool g_force_scalar;

// 16 bytes as 16 int32, zero-extended
static inline __m512i u8x16(const uint8_t *p) { return _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)p)); }
static inline void put(float *y, __m512 d, __m512i q) { _mm512_storeu_ps(y, _mm512_mul_ps(d, _mm512_cvtepi32_ps(q))); }
static inline void put_add(float *y, __m512 d, __m512i q, __m512 m) {
    _mm512_storeu_ps(y, _mm512_add_ps(_mm512_mul_ps(d, _mm512_cvtepi32_ps(q)), m));
}
static inline void put_sub(float *y, __m512 d, __m512i q, __m512 m) {
    _mm512_storeu_ps(y, _mm512_sub_ps(_mm512_mul_ps(d, _mm512_cvtepi32_ps(q)), m));
}

static void rows_q8_0(const uint8_t *b, float *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, b += 34, y += 32) {
        __m512 d = _mm512_set1_ps(h2f(b));
        for (int h = 0; h < 2; h++)
            put(y + 16 * h, d, _mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(b + 2 + 16 * h))));
    }
}

static void rows_q4_0(const uint8_t *b, float *y, int64_t nb) {
    const __m512i lo4 = _mm512_set1_epi32(0xF), eight = _mm512_set1_epi32(8);
    for (int64_t i = 0; i < nb; i++, b += 18, y += 32) {
        __m512 d = _mm512_set1_ps(h2f(b));
        __m512i q = u8x16(b + 2);
        put(y, d, _mm512_sub_epi32(_mm512_and_si512(q, lo4), eight));
        put(y + 16, d, _mm512_sub_epi32(_mm512_srli_epi32(q, 4), eight));
    }
}

static void rows_q4_1(const uint8_t *b, float *y, int64_t nb) {
    const __m512i lo4 = _mm512_set1_epi32(0xF);
    for (int64_t i = 0; i < nb; i++, b += 20, y += 32) {
        __m512 d = _mm512_set1_ps(h2f(b)), m = _mm512_set1_ps(h2f(b + 2));
        __m512i q = u8x16(b + 4);
        put_add(y, d, _mm512_and_si512(q, lo4), m);
        put_add(y + 16, d, _mm512_srli_epi32(q, 4), m);
    }
}

// bit l of qh (lanes l = 0..15) and bit l + 16, each moved to bit 4
static inline void fifth_bits(uint32_t qh, __m512i *b0, __m512i *b1) {
    const __m512i lane = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0), one = _mm512_set1_epi32(1);
    __m512i v = _mm512_set1_epi32((int)qh);
    *b0 = _mm512_slli_epi32(_mm512_and_si512(_mm512_srlv_epi32(v, lane), one), 4);
    *b1 = _mm512_slli_epi32(_mm512_and_si512(_mm512_srlv_epi32(v, _mm512_add_epi32(lane, _mm512_set1_epi32(16))), one), 4);
}

static inline uint32_t u32at(const uint8_t *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24; }

static void rows_q5_0(const uint8_t *b, float *y, int64_t nb) {
    const __m512i lo4 = _mm512_set1_epi32(0xF), sixteen = _mm512_set1_epi32(16);
    for (int64_t i = 0; i < nb; i++, b += 22, y += 32) {
        __m512 d = _mm512_set1_ps(h2f(b));
        __m512i h0, h1, q = u8x16(b + 6);
        fifth_bits(u32at(b + 2), &h0, &h1);
        put(y, d, _mm512_sub_epi32(_mm512_or_si512(_mm512_and_si512(q, lo4), h0), sixteen));
        put(y + 16, d, _mm512_sub_epi32(_mm512_or_si512(_mm512_srli_epi32(q, 4), h1), sixteen));
    }
}

static void rows_q5_1(const uint8_t *b, float *y, int64_t nb) {
    const __m512i lo4 = _mm512_set1_epi32(0xF);
    for (int64_t i = 0; i < nb; i++, b += 24, y += 32) {
        __m512 d = _mm512_set1_ps(h2f(b)), m = _mm512_set1_ps(h2f(b + 2));
        __m512i h0, h1, q = u8x16(b + 8);
        fifth_bits(u32at(b + 4), &h0, &h1);
        put_add(y, d, _mm512_or_si512(_mm512_and_si512(q, lo4), h0), m);
        put_add(y + 16, d, _mm512_or_si512(_mm512_srli_epi32(q, 4), h1), m);
    }
}

// Q4_K and Q5_K: sub-block g's 32 codes, nibble g % 2 of qs[32 (g / 2) + l] (Q5_K: bit g of qh[l] as bit 4)
static void rows_qk(const uint8_t *b, float *y, int64_t nb, bool five) {
    const __m512i lo4 = _mm512_set1_epi32(0xF), one = _mm512_set1_epi32(1);
    size_t bytes = five ? 176 : 144;
    for (int64_t i = 0; i < nb; i++, b += bytes, y += QK_K) {
        float d = h2f(b), dmin = h2f(b + 2);
        const uint8_t *scales = b + 4, *qh = b + 16, *qs = b + (five ? 48 : 16);
        for (int g = 0; g < 8; g++) {
            int sc, mn;
            scale_min_k4(g, scales, &sc, &mn);
            __m512 d1 = _mm512_set1_ps(d * (float)sc), m1 = _mm512_set1_ps(dmin * (float)mn);
            const uint8_t *q = qs + 32 * (g / 2);
            __m128i sh = _mm_cvtsi32_si128(4 * (g % 2)), gb = _mm_cvtsi32_si128(g);
            for (int h = 0; h < 2; h++) {
                __m512i v = _mm512_and_si512(_mm512_srl_epi32(u8x16(q + 16 * h), sh), lo4);
                if (five) v = _mm512_or_si512(v, _mm512_slli_epi32(_mm512_and_si512(_mm512_srl_epi32(u8x16(qh + 16 * h), gb), one), 4));
                put_sub(y + 32 * g + 16 * h, d1, v, m1);
            }
        }
    }
}

static void rows_q4_k(const uint8_t *b, float *y, int64_t nb) { rows_qk(b, y, nb, false); }
static void rows_q5_k(const uint8_t *b, float *y, int64_t nb) { rows_qk(b, y, nb, true); }

static void rows_q6_k(const uint8_t *b, float *y, int64_t nb) {
    const __m512i lo4 = _mm512_set1_epi32(0xF), three = _mm512_set1_epi32(3), k32 = _mm512_set1_epi32(32);
    for (int64_t i = 0; i < nb; i++, b += 210, y += QK_K) {
        const uint8_t *ql = b, *qh = b + 128;
        const int8_t *sc = (const int8_t *)(b + 192);
        float d = h2f(b + 208);
        for (int a = 0; a < 2; a++)
            for (int h = 0; h < 2; h++) {
                const int8_t *g = sc + 8 * a + h;
                float *o = y + 128 * a + 16 * h;
                __m512i lo = u8x16(ql + 64 * a + 16 * h), lo2 = u8x16(ql + 64 * a + 16 * h + 32), hi = u8x16(qh + 32 * a + 16 * h);
                __m512i c0 = _mm512_or_si512(_mm512_and_si512(lo, lo4), _mm512_slli_epi32(_mm512_and_si512(hi, three), 4));
                __m512i c1 = _mm512_or_si512(_mm512_and_si512(lo2, lo4), _mm512_slli_epi32(_mm512_and_si512(_mm512_srli_epi32(hi, 2), three), 4));
                __m512i c2 = _mm512_or_si512(_mm512_srli_epi32(lo, 4), _mm512_slli_epi32(_mm512_and_si512(_mm512_srli_epi32(hi, 4), three), 4));
                __m512i c3 = _mm512_or_si512(_mm512_srli_epi32(lo2, 4), _mm512_slli_epi32(_mm512_srli_epi32(hi, 6), 4));
                put(o, _mm512_set1_ps(d * (float)g[0]), _mm512_sub_epi32(c0, k32));
                put(o + 32, _mm512_set1_ps(d * (float)g[2]), _mm512_sub_epi32(c1, k32));
                put(o + 64, _mm512_set1_ps(d * (float)g[4]), _mm512_sub_epi32(c2, k32));
                put(o + 96, _mm512_set1_ps(d * (float)g[6]), _mm512_sub_epi32(c3, k32));
            }
    }
}

// The row decoder of the type, NULL where only the block decoder exists (or the block decoders are forced).
static void (*simd_rows(uint32_t type))(const uint8_t *, float *, int64_t) {
    if (g_force_scalar) return NULL;
    switch (type) {
    case FK_GGML_Q8_0: return rows_q8_0;
    case FK_GGML_Q4_0: return rows_q4_0;
    case FK_GGML_Q4_1: return rows_q4_1;
    case FK_GGML_Q5_0: return rows_q5_0;
    case FK_GGML_Q5_1: return rows_q5_1;
    case FK_GGML_Q4_K: return rows_q4_k;
    case FK_GGML_Q5_K: return rows_q5_k;
    case FK_GGML_Q6_K: return rows_q6_k;
    default: return NULL;
    }
}
#endif

bool fk_dequantize_simd(bool use) {
#ifdef FK_DEQ_SIMD
    g_force_scalar = !use;
    return true;
#else
    (void)use;
    return false;
#endif
}

// ------------------------------------------------------------------ rows

void fk_dequantize_row(uint32_t type, const void *src, float *dst, int64_t n) {
    FK_ASSERT(type < FK_GGML_TYPE_COUNT && types[type].deq);
    const type_entry *t = &types[type];
    FK_ASSERT(n >= 0 && n % t->info.block == 0);
    const uint8_t *b = src;
    if (type == FK_GGML_F32) { memcpy(dst, src, (size_t)n * sizeof(float)); return; }
    if (type == FK_GGML_F16) {
        for (int64_t i = 0; i < n; i++) dst[i] = half_to_f32((uint16_t)(b[2 * i] | b[2 * i + 1] << 8));
        return;
    }
    if (type == FK_GGML_BF16) {
        for (int64_t i = 0; i < n; i++) {
            uint32_t x = (uint32_t)(b[2 * i] | b[2 * i + 1] << 8) << 16;
            memcpy(&dst[i], &x, 4);
        }
        return;
    }
    int64_t nb = n / t->info.block;
#ifdef FK_DEQ_SIMD
    void (*rows)(const uint8_t *, float *, int64_t) = simd_rows(type);
    if (rows) { rows(b, dst, nb); return; }
#endif
    for (int64_t i = 0; i < nb; i++) t->deq(b + i * t->info.bytes, dst + i * t->info.block);
}

// ------------------------------------------------------------------ matrix product

// Per-thread tile buffer, kept between calls (grown when a call needs more).
static _Thread_local float *tile_buf;
static _Thread_local size_t tile_cap;

static float *tile_scratch(size_t floats) {
    if (floats <= tile_cap) return tile_buf;
    float *p = realloc(tile_buf, floats * sizeof(float));
    if (!p) return NULL;
    tile_buf = p;
    tile_cap = floats;
    return p;
}

// Rows per tile: up to 256 (sgemm re-packs inp for every tile, so tiles must be wide), at
// most 2 MB of f32 per thread, and few enough that every thread gets a tile; a multiple of 16.
static int64_t tile_rows(int64_t C, int64_t OC, int threads) {
    int64_t r = 256, cap = ((int64_t)1 << 19) / (C > 0 ? C : 1), share = (OC + threads - 1) / threads;
    r = cap < r ? cap : r;
    r = share < r ? share : r;
    r = (r + 15) / 16 * 16;
    return r < 16 ? 16 : r;
}

// sum_i a[i] b[i] in 16 interleaved partial sums (vectorizes without reassociation flags).
static float dot16(const float *a, const float *b, int64_t n) {
#if defined(__AVX512F__)
    // four independent sums: one would wait on the addition's latency every 16 elements
    __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps(), s2 = _mm512_setzero_ps(), s3 = _mm512_setzero_ps();
    int64_t i = 0;
    for (; i + 64 <= n; i += 64) {
        s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
        s1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16), s1);
        s2 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 32), _mm512_loadu_ps(b + i + 32), s2);
        s3 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 48), _mm512_loadu_ps(b + i + 48), s3);
    }
    for (; i + 16 <= n; i += 16) s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
    float tail = 0;
    for (; i < n; i++) tail += a[i] * b[i];
    return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3))) + tail;
#else
    float part[16] = {0};
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        for (int l = 0; l < 16; l++) part[l] += a[i + l] * b[i + l];
    float tail = 0;
    for (; i < n; i++) tail += a[i] * b[i];
    for (int l = 0; l < 8; l++) part[l] += part[l + 8];
    for (int l = 0; l < 4; l++) part[l] += part[l + 4];
    return (part[0] + part[2]) + (part[1] + part[3]) + tail;
#endif
}

// out[o] = inp . dequant(w row o) + bias[o], for one token: the row is decoded into a
// per-thread buffer (L1/L2-sized) and dotted with inp.
static int qmatvec(float *out, const float *inp, const uint8_t *w, uint32_t type, const float *bias, int64_t C, int64_t OC,
                   uint64_t row_bytes) {
    int failed = 0;
    #pragma omp parallel if ((double)C * OC > 262144)
    {
        float *y = tile_scratch((size_t)C);
        if (!y) {
            #pragma omp atomic write
            failed = 1;
        }
        #pragma omp for schedule(static)
        for (int64_t o = 0; o < OC; o++) {
            if (!y) continue;
            fk_dequantize_row(type, w + (uint64_t)o * row_bytes, y, C);
            out[o] = dot16(y, inp, C) + (bias ? bias[o] : 0.0f);
        }
    }
    return failed;
}

// The dimensions both products accept: C a positive multiple of the type's block size, N, C
// and OC within BLAS's int. Sets the bytes of a row of w.
static fk_status qmatmul_dims(const type_entry *t, uint32_t ggml_type, int64_t N, int64_t C, int64_t OC, uint64_t *row_bytes) {
    if (N < 0 || OC < 0 || C < 1 || N > INT_MAX || C > INT_MAX || OC > INT_MAX ||
        fk_ggml_row_bytes(ggml_type, C, row_bytes) != FK_OK)
        return fk_error(FK_ERR_ARG, "qmatmul: %s rows of %lld elements (a positive multiple of %d expected), N %lld, OC %lld "
                        "(each at most 2^31 - 1)", t->info.name, (long long)C, t->info.block, (long long)N, (long long)OC);
    return FK_OK;
}

fk_status fk_qmatmul_forward(float *out, const float *inp, const void *w, uint32_t ggml_type, const float *bias, int64_t N,
                             int64_t C, int64_t OC) {
    return fk_qmatmul_forward_gemm(out, inp, w, ggml_type, bias, N, C, OC, NULL);
}

static void blas_tile(int N, int rows, int C, const float *inp, const float *tile, float *out, int ldo) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, rows, C, 1.0f, inp, C, tile, C, 0.0f, out, ldo);
}

fk_status fk_qmatmul_forward_gemm(float *out, const float *inp, const void *w, uint32_t ggml_type, const float *bias, int64_t N,
                                  int64_t C, int64_t OC, fk_tile_gemm_fn gemm) {
    if (!gemm) gemm = blas_tile;
    if (ggml_type >= FK_GGML_TYPE_COUNT || !types[ggml_type].deq)
        return fk_error(FK_ERR_ARG, "qmatmul: ggml type %s (%u) cannot be dequantized", fk_ggml_type_name(ggml_type), ggml_type);
    const type_entry *t = &types[ggml_type];
    uint64_t row_bytes;
    FK_TRY(qmatmul_dims(t, ggml_type, N, C, OC, &row_bytes));
    if (N == 0 || OC == 0) return FK_OK;
    const uint8_t *wb = w;
    if (N == 1) {
        if (qmatvec(out, inp, wb, ggml_type, bias, C, OC, row_bytes))
            return fk_error(FK_ERR_NOMEM, "qmatmul: out of memory for a row of %lld floats", (long long)C);
        return FK_OK;
    }
    bool par = (double)N * C * OC > 1e6;  // in double: the product may pass 2^63
    int64_t TR = tile_rows(C, OC, par ? omp_get_max_threads() : 1), n_tiles = (OC + TR - 1) / TR;
    int failed = 0;
    #pragma omp parallel for schedule(dynamic) if (par && n_tiles > 1)
    for (int64_t ti = 0; ti < n_tiles; ti++) {
        int64_t o0 = ti * TR, rows = OC - o0 < TR ? OC - o0 : TR;
        float *buf = tile_scratch((size_t)(TR * C));
        if (!buf) {
            #pragma omp atomic write
            failed = 1;
            continue;
        }
        for (int64_t r = 0; r < rows; r++) fk_dequantize_row(ggml_type, wb + (uint64_t)(o0 + r) * row_bytes, buf + r * C, C);
        gemm((int)N, (int)rows, (int)C, inp, buf, out + o0, (int)OC);
        if (bias)
            for (int64_t i = 0; i < N; i++)
                for (int64_t r = 0; r < rows; r++) out[i * OC + o0 + r] += bias[o0 + r];
    }
    if (failed)
        return fk_error(FK_ERR_NOMEM, "qmatmul: out of memory for a tile of %lld x %lld floats", (long long)TR, (long long)C);
    return FK_OK;
}

// ------------------------------------------------------------------ 8-bit activations

// A weight row as integer codes: w[i] = s[i/16] * q[i] + m[i/16] (m is 0 for the types
// without a min), with s and m computed in f32 as the dequantizers compute them.
typedef void (*unpack_fn)(const uint8_t *b, int8_t *q, float *s, float *m);

static void fill2(float *v, float a) { v[0] = v[1] = a; }

static void unpack_q4_0(const uint8_t *b, int8_t *q, float *s, float *m) {
    fill2(s, h2f(b));
    fill2(m, 0);
    for (int l = 0; l < 16; l++) { q[l] = (int8_t)((b[2 + l] & 0xF) - 8); q[l + 16] = (int8_t)((b[2 + l] >> 4) - 8); }
}
static void unpack_q4_1(const uint8_t *b, int8_t *q, float *s, float *m) {
    fill2(s, h2f(b));
    fill2(m, h2f(b + 2));
    for (int l = 0; l < 16; l++) { q[l] = (int8_t)(b[4 + l] & 0xF); q[l + 16] = (int8_t)(b[4 + l] >> 4); }
}
static void unpack_q5(const uint8_t *qs, uint32_t qh, int8_t *q, int off) {
    for (int l = 0; l < 16; l++) {
        q[l] = (int8_t)(((qs[l] & 0xF) | (int)((qh >> l) & 1) << 4) - off);
        q[l + 16] = (int8_t)(((qs[l] >> 4) | (int)((qh >> (l + 16)) & 1) << 4) - off);
    }
}
static void unpack_q5_0(const uint8_t *b, int8_t *q, float *s, float *m) {
    fill2(s, h2f(b));
    fill2(m, 0);
    unpack_q5(b + 6, (uint32_t)b[2] | (uint32_t)b[3] << 8 | (uint32_t)b[4] << 16 | (uint32_t)b[5] << 24, q, 16);
}
static void unpack_q5_1(const uint8_t *b, int8_t *q, float *s, float *m) {
    fill2(s, h2f(b));
    fill2(m, h2f(b + 2));
    unpack_q5(b + 8, (uint32_t)b[4] | (uint32_t)b[5] << 8 | (uint32_t)b[6] << 16 | (uint32_t)b[7] << 24, q, 0);
}
static void unpack_q8_0(const uint8_t *b, int8_t *q, float *s, float *m) {
    fill2(s, h2f(b));
    fill2(m, 0);
    memcpy(q, b + 2, 32);
}
static void unpack_iq4_nl(const uint8_t *b, int8_t *q, float *s, float *m) {
    fill2(s, h2f(b));
    fill2(m, 0);
    for (int l = 0; l < 16; l++) { q[l] = kvalues_iq4nl[b[2 + l] & 0xF]; q[l + 16] = kvalues_iq4nl[b[2 + l] >> 4]; }
}
static void unpack_q2_k(const uint8_t *b, int8_t *q, float *s, float *m) {
    const uint8_t *sc = b, *qs = b + 16;
    float d = h2f(b + 80), dmin = h2f(b + 82);
    for (int j = 0; j < 2; j++)
        for (int sh = 0; sh < 4; sh++)
            for (int h = 0; h < 2; h++) {
                int g = 8 * j + 2 * sh + h;
                s[g] = d * (float)(sc[g] & 0xF);
                m[g] = -(dmin * (float)(sc[g] >> 4));
                for (int l = 0; l < 16; l++) q[16 * g + l] = (int8_t)((qs[32 * j + 16 * h + l] >> (2 * sh)) & 3);
            }
}
static void unpack_q3_k(const uint8_t *b, int8_t *q, float *s, float *m) {
    const uint8_t *hm = b, *qs = b + 32, *sc = b + 96;
    float d = h2f(b + 108);
    for (int j = 0; j < 2; j++)
        for (int sh = 0; sh < 4; sh++)
            for (int h = 0; h < 2; h++) {
                int g = 8 * j + 2 * sh + h, bit = 4 * j + sh;
                int s6 = ((sc[g % 8] >> (4 * (g / 8))) & 0xF) | ((sc[8 + g % 4] >> (2 * (g / 4))) & 3) << 4;
                s[g] = d * (float)(s6 - 32);
                m[g] = 0;
                for (int l = 0; l < 16; l++)
                    q[16 * g + l] = (int8_t)(((qs[32 * j + 16 * h + l] >> (2 * sh)) & 3) - (((hm[16 * h + l] >> bit) & 1) ? 0 : 4));
            }
}
static void unpack_q45_k(const uint8_t *b, int8_t *q, float *s, float *m, bool five) {
    float d = h2f(b), dmin = h2f(b + 2);
    const uint8_t *scales = b + 4, *qh = b + 16, *qs = five ? b + 48 : b + 16;
    for (int g = 0; g < 8; g++) {
        int sc, mn;
        scale_min_k4(g, scales, &sc, &mn);
        fill2(s + 2 * g, d * (float)sc);
        fill2(m + 2 * g, -(dmin * (float)mn));
        const uint8_t *p = qs + 32 * (g / 2);
        int sh = 4 * (g % 2);
        for (int l = 0; l < 32; l++) q[32 * g + l] = (int8_t)(((p[l] >> sh) & 0xF) | (five ? ((qh[l] >> g) & 1) << 4 : 0));
    }
}
static void unpack_q4_k(const uint8_t *b, int8_t *q, float *s, float *m) { unpack_q45_k(b, q, s, m, false); }
static void unpack_q5_k(const uint8_t *b, int8_t *q, float *s, float *m) { unpack_q45_k(b, q, s, m, true); }
static void unpack_q6_k(const uint8_t *b, int8_t *q, float *s, float *m) {
    const uint8_t *ql = b, *qh = b + 128;
    const int8_t *sc = (const int8_t *)(b + 192);
    float d = h2f(b + 208);
    for (int g = 0; g < 16; g++) { s[g] = d * (float)sc[g]; m[g] = 0; }
    for (int a = 0; a < 2; a++)
        for (int h = 0; h < 2; h++) {
            const uint8_t *lo = ql + 64 * a + 16 * h, *hi = qh + 32 * a + 16 * h;
            int8_t *o = q + 128 * a + 16 * h;
            for (int l = 0; l < 16; l++) {
                o[l] = (int8_t)(((lo[l] & 0xF) | (hi[l] & 3) << 4) - 32);
                o[l + 32] = (int8_t)(((lo[l + 32] & 0xF) | ((hi[l] >> 2) & 3) << 4) - 32);
                o[l + 64] = (int8_t)(((lo[l] >> 4) | ((hi[l] >> 4) & 3) << 4) - 32);
                o[l + 96] = (int8_t)(((lo[l + 32] >> 4) | ((hi[l] >> 6) & 3) << 4) - 32);
            }
        }
}
static void unpack_q8_k(const uint8_t *b, int8_t *q, float *s, float *m) {
    float d = f32at(b);
    for (int g = 0; g < 16; g++) { s[g] = d; m[g] = 0; }
    memcpy(q, b + 4, QK_K);
}
static void unpack_iq4_xs(const uint8_t *b, int8_t *q, float *s, float *m) {
    float d = h2f(b);
    unsigned shi = (unsigned)(b[2] | b[3] << 8);
    const uint8_t *sl = b + 4, *qs = b + 8;
    for (int j = 0; j < 8; j++) {
        int s6 = ((sl[j / 2] >> (4 * (j % 2))) & 0xF) | ((shi >> (2 * j)) & 3) << 4;
        fill2(s + 2 * j, d * (float)(s6 - 32));
        fill2(m + 2 * j, 0);
        for (int l = 0; l < 16; l++) {
            q[32 * j + l] = kvalues_iq4nl[qs[16 * j + l] & 0xF];
            q[32 * j + 16 + l] = kvalues_iq4nl[qs[16 * j + l] >> 4];
        }
    }
}

static unpack_fn unpacker(uint32_t type, bool *has_min) {
    *has_min = type == FK_GGML_Q4_1 || type == FK_GGML_Q5_1 || type == FK_GGML_Q2_K || type == FK_GGML_Q4_K || type == FK_GGML_Q5_K;
    switch (type) {
    case FK_GGML_Q4_0: return unpack_q4_0;
    case FK_GGML_Q4_1: return unpack_q4_1;
    case FK_GGML_Q5_0: return unpack_q5_0;
    case FK_GGML_Q5_1: return unpack_q5_1;
    case FK_GGML_Q8_0: return unpack_q8_0;
    case FK_GGML_IQ4_NL: return unpack_iq4_nl;
    case FK_GGML_Q2_K: return unpack_q2_k;
    case FK_GGML_Q3_K: return unpack_q3_k;
    case FK_GGML_Q4_K: return unpack_q4_k;
    case FK_GGML_Q5_K: return unpack_q5_k;
    case FK_GGML_Q6_K: return unpack_q6_k;
    case FK_GGML_Q8_K: return unpack_q8_k;
    case FK_GGML_IQ4_XS: return unpack_iq4_xs;
    default: return NULL;
    }
}

bool fk_qmatmul_q8_supported(uint32_t type) {
    bool has_min;
    return type < FK_GGML_TYPE_COUNT && unpacker(type, &has_min) != NULL;
}

// sum_i s[i/16] dx[i/32] q[i] qx[i] over C elements (C % 32 == 0).
static float dot_codes(const int8_t *q, const float *s, const int8_t *qx, const float *dx, int64_t C) {
#if defined(__AVX2__) && defined(__FMA__)
    __m256 acc = _mm256_setzero_ps();
    const __m256i ones = _mm256_set1_epi16(1);
    for (int64_t k = 0; k < C / 32; k++) {
        __m256i a = _mm256_loadu_si256((const __m256i *)(q + 32 * k)), y = _mm256_loadu_si256((const __m256i *)(qx + 32 * k));
        // |a| * (y * sign a): unsigned x signed byte products in pairs, then in fours (ggml's trick)
        __m256i p = _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_sign_epi8(a, a), _mm256_sign_epi8(y, a)), ones);
        __m256 sc = _mm256_set_m128(_mm_set1_ps(s[2 * k + 1] * dx[k]), _mm_set1_ps(s[2 * k] * dx[k]));
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), sc, acc);
    }
    __m128 h = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
    h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    h = _mm_add_ss(h, _mm_movehdup_ps(h));
    return _mm_cvtss_f32(h);
#else
    float acc = 0;
    for (int64_t g = 0; g < C / 16; g++) {
        int32_t is = 0;
        for (int l = 0; l < 16; l++) is += (int32_t)q[16 * g + l] * qx[16 * g + l];
        acc += s[g] * dx[g / 2] * (float)is;
    }
    return acc;
#endif
}

// 32 activations as codes q = x / d rounded to nearest (ties to even), d = max |x| / 127 (ggml's
// Q8_0 rule); returns d. An Inf makes d Inf and a NaN makes d NaN, so the products that read the
// block are not finite either (the codes stay in range: no undefined cast).
static inline float q8_codes(const float *x, int8_t *q) {
#if defined(__AVX512F__) && defined(__AVX512BW__)
    __m512 a = _mm512_loadu_ps(x), b = _mm512_loadu_ps(x + 16);
    bool nan = (_mm512_cmp_ps_mask(a, a, _CMP_UNORD_Q) | _mm512_cmp_ps_mask(b, b, _CMP_UNORD_Q)) != 0;
    float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(a), _mm512_abs_ps(b)));
    float d = nan ? NAN : amax / 127.0f, id = d != 0 ? 1.0f / d : 0.0f;
    __m512 vid = _mm512_set1_ps(id);
    const __m512i lo = _mm512_set1_epi32(-127), hi = _mm512_set1_epi32(127);
    __m512i qa = _mm512_max_epi32(lo, _mm512_min_epi32(hi, _mm512_cvtps_epi32(_mm512_mul_ps(a, vid))));
    __m512i qb = _mm512_max_epi32(lo, _mm512_min_epi32(hi, _mm512_cvtps_epi32(_mm512_mul_ps(b, vid))));
    _mm_storeu_si128((__m128i *)q, _mm512_cvtepi32_epi8(qa));
    _mm_storeu_si128((__m128i *)(q + 16), _mm512_cvtepi32_epi8(qb));
    return d;
#else
    float amax = 0;
    bool nan = false;
    for (int l = 0; l < 32; l++) {
        amax = fabsf(x[l]) > amax ? fabsf(x[l]) : amax;
        nan |= x[l] != x[l];
    }
    float d = nan ? NAN : amax / 127.0f, id = d != 0 ? 1.0f / d : 0.0f;
    for (int l = 0; l < 32; l++) {  // clamped so that a NaN or Inf activation cannot overflow the cast
        float v = rintf(x[l] * id);
        q[l] = (int8_t)(v > 127.0f ? 127.0f : v < -127.0f ? -127.0f : v == v ? v : 0.0f);
    }
    return d;
#endif
}

// ------------------------------------------------------------------ 8-bit activations, blocked (AVX512-VNNI)
//
// Where the library is built for AVX512-VNNI, a batch (N >= FK_Q8_BLOCKED_MIN_N) multiplies
// panels of 16 weight rows repacked for VPDPBUSD: each 32-bit lane of a 64-byte vector holds 4
// consecutive codes of one weight row, so one instruction adds 4 products to each of the 16
// rows' sums, with 4 activation codes broadcast. VPDPBUSD multiplies unsigned by signed bytes:
// the activation codes are stored offset by 128 (q ^ 0x80 = q + 128 as a byte) and each group's
// integer sum corrected by 128 times the sum of the weight codes, computed when the panel is
// packed, so the integer dot products are exact. Each group of G codes (32; 16 for the types
// whose scales change every 16: Q2_K, Q3_K, Q6_K) then adds s_w d_x (its integer sum) and,
// for types with mins, m_w times d_x (the activation codes' sum) to 16 f32 sums. Pairs of
// panels (32 rows of w) are multiplied 5 rows of the batch at a time (q8_blocked: who packs what).
#if defined(__AVX512VNNI__) && defined(__AVX512BW__) && defined(__AVX512F__)
#define FK_Q8_BLOCKED 1
#define Q8_MR 5                  // batch rows a kernel call holds in registers (5 x 2 panels: 20 accumulators)
#define FK_Q8_BLOCKED_MIN_N 8    // EPYC, 2 threads: at 4 rows the row-by-row path is 1.1-1.4x faster, at 8 this one

typedef struct {
    int8_t *codes[2];  // [C / 4][16][4]: codes of the panel's 16 rows, 4 consecutive per lane
    float *sc[2];      // [C / G][16]: each group's scale per row
    float *mn[2];      // [C / G][16]: each group's min per row (types with mins)
    int32_t *cp[2];    // [C / G][16]: 128 x the group's code sum per row
} q8_panels;

static inline __attribute__((always_inline)) void q8_kernel(const int MR, const int G, const bool has_min, const uint8_t *xu,
                                                            int64_t C, const float *dx, const float *sxg, const q8_panels *p,
                                                            float *out, int64_t ldo, int64_t ncols, const float *bias) {
    __m512 f[Q8_MR][2];
    for (int r = 0; r < MR; r++) f[r][0] = f[r][1] = _mm512_setzero_ps();
    const int64_t ng = C / G, nb32 = C / 32;
    for (int64_t g = 0; g < ng; g++) {
        __m512i a[Q8_MR][2];
        for (int r = 0; r < MR; r++) a[r][0] = a[r][1] = _mm512_setzero_si512();
        const int8_t *w0 = p->codes[0] + g * G * 16, *w1 = p->codes[1] + g * G * 16;
        const uint8_t *xg = xu + g * G;
        for (int k4 = 0; k4 < G / 4; k4++) {
            __m512i v0 = _mm512_load_si512((const void *)(w0 + 64 * k4)), v1 = _mm512_load_si512((const void *)(w1 + 64 * k4));
            for (int r = 0; r < MR; r++) {
                int32_t x4;
                memcpy(&x4, xg + r * C + 4 * k4, 4);
                __m512i xb = _mm512_set1_epi32(x4);
                a[r][0] = _mm512_dpbusd_epi32(a[r][0], xb, v0);
                a[r][1] = _mm512_dpbusd_epi32(a[r][1], xb, v1);
            }
        }
        __m512 s0 = _mm512_load_ps(p->sc[0] + 16 * g), s1 = _mm512_load_ps(p->sc[1] + 16 * g);
        __m512i c0 = _mm512_load_si512((const void *)(p->cp[0] + 16 * g)), c1 = _mm512_load_si512((const void *)(p->cp[1] + 16 * g));
        for (int r = 0; r < MR; r++) {
            __m512 d = _mm512_set1_ps(dx[r * nb32 + g * G / 32]);
            f[r][0] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(a[r][0], c0)), _mm512_mul_ps(s0, d), f[r][0]);
            f[r][1] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(a[r][1], c1)), _mm512_mul_ps(s1, d), f[r][1]);
        }
        if (has_min) {
            __m512 m0 = _mm512_load_ps(p->mn[0] + 16 * g), m1 = _mm512_load_ps(p->mn[1] + 16 * g);
            for (int r = 0; r < MR; r++) {
                __m512 sv = _mm512_set1_ps(sxg[r * ng + g]);
                f[r][0] = _mm512_fmadd_ps(m0, sv, f[r][0]);
                f[r][1] = _mm512_fmadd_ps(m1, sv, f[r][1]);
            }
        }
    }
    for (int h = 0; h < 2; h++) {
        int64_t n = ncols - 16 * h;
        if (n <= 0) break;
        __mmask16 mask = n >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << n) - 1);
        __m512 b = bias ? _mm512_maskz_loadu_ps(mask, bias + 16 * h) : _mm512_setzero_ps();
        for (int r = 0; r < MR; r++) _mm512_mask_storeu_ps(out + r * ldo + 16 * h, mask, _mm512_add_ps(f[r][h], b));
    }
}

// One kernel call of MR rows (1..Q8_MR), G and the min term fixed at compile time.
#define Q8_CASES(G, M)                                                                                  \
    switch (mr) {                                                                                       \
    case 5: q8_kernel(5, G, M, xu, C, dx, sxg, p, out, ldo, ncols, bias); break;                        \
    case 4: q8_kernel(4, G, M, xu, C, dx, sxg, p, out, ldo, ncols, bias); break;                        \
    case 3: q8_kernel(3, G, M, xu, C, dx, sxg, p, out, ldo, ncols, bias); break;                        \
    case 2: q8_kernel(2, G, M, xu, C, dx, sxg, p, out, ldo, ncols, bias); break;                        \
    default: q8_kernel(1, G, M, xu, C, dx, sxg, p, out, ldo, ncols, bias); break;                       \
    }
static void q8_tile(int mr, int G, bool has_min, const uint8_t *xu, int64_t C, const float *dx, const float *sxg, const q8_panels *p,
                    float *out, int64_t ldo, int64_t ncols, const float *bias) {
    if (G == 32 && has_min) { Q8_CASES(32, true) }
    else if (G == 32) { Q8_CASES(32, false) }
    else if (has_min) { Q8_CASES(16, true) }
    else { Q8_CASES(16, false) }
}
#undef Q8_CASES

// Packs the panel of weight rows o0 .. o0 + 15 at pb (codes_b bytes of codes, then grp_b each
// of scales, mins and corrections, as q8_pair_at reads them); rows from OC on are zero codes
// with zero scales. q, s16 and m16 are scratch for one row's codes and scales.
static void q8_pack(const uint8_t *wb, uint64_t row_bytes, int64_t o0, int64_t OC, unpack_fn unpack, const type_entry *t, int64_t C,
                    int G, bool has_min, uint8_t *pb, size_t codes_b, size_t grp_b, int8_t *q, float *s16, float *m16) {
    int64_t blk = t->info.block, gpb = blk / 16, ng = C / G;
    int64_t ncols = OC - o0 < 0 ? 0 : OC - o0 > 16 ? 16 : OC - o0;
    int8_t *codes = (int8_t *)pb;
    float *sc = (float *)(pb + codes_b), *mn = (float *)(pb + codes_b + grp_b);
    int32_t *cp = (int32_t *)(pb + codes_b + 2 * grp_b);
    for (int c = 0; c < 16; c++) {
        if (c < ncols) {
            const uint8_t *row = wb + (uint64_t)(o0 + c) * row_bytes;
            for (int64_t k = 0; k < C / blk; k++) unpack(row + k * t->info.bytes, q + k * blk, s16 + k * gpb, m16 + k * gpb);
        } else {
            memset(q, 0, (size_t)C);
            for (int64_t g = 0; g < C / 16; g++) s16[g] = m16[g] = 0;
        }
        for (int64_t k4 = 0; k4 < C / 4; k4++) memcpy(codes + 64 * k4 + 4 * c, q + 4 * k4, 4);
        for (int64_t g = 0; g < ng; g++) {
            int32_t sum = 0;
            for (int l = 0; l < G; l++) sum += q[g * G + l];
            cp[16 * g + c] = 128 * sum;
            sc[16 * g + c] = s16[g * G / 16];
            if (has_min) mn[16 * g + c] = m16[g * G / 16];
        }
    }
}

static _Thread_local void *pack_buf;
static _Thread_local size_t pack_cap;

// Packed pairs of panels are made a chunk of at most this many bytes at a time, shared by the threads.
#define FK_Q8_CHUNK_BYTES ((size_t)2 << 20)

// The panels of a pair packed at pb (two panels of panel_b bytes) as the kernel reads them.
static q8_panels q8_pair_at(uint8_t *pb, size_t panel_b, size_t codes_b, size_t grp_b) {
    q8_panels p;
    for (int h = 0; h < 2; h++, pb += panel_b) {
        p.codes[h] = (int8_t *)pb;
        p.sc[h] = (float *)(pb + codes_b);
        p.mn[h] = (float *)(pb + codes_b + grp_b);
        p.cp[h] = (int32_t *)(pb + codes_b + 2 * grp_b);
    }
    return p;
}

// Rows r0 .. r1 - 1 of the batch times the pair p (weight rows o0 .. o0 + 31).
static void q8_rows(const q8_panels *p, int64_t r0, int64_t r1, int64_t o0, const uint8_t *xu, const float *dx, const float *sxg, int G,
                    bool has_min, const float *bias, float *out, int64_t C, int64_t OC) {
    int64_t ng = C / G, nb32 = C / 32, ncols = OC - o0 < 32 ? OC - o0 : 32;
    for (int64_t i = r0; i < r1; i += Q8_MR) {
        int mr = r1 - i < Q8_MR ? (int)(r1 - i) : Q8_MR;
        q8_tile(mr, G, has_min, xu + i * C, C, dx + i * nb32, has_min ? sxg + i * ng : NULL, p, out + i * OC + o0, OC, ncols,
                bias ? bias + o0 : NULL);
    }
}

// The blocked product (see above) of the activations' codes plus 128 xu (N x C), their scales dx
// (N x C / 32) and, for the types with mins, d times their code sums per group sxg (N x C / G).
// With at least 4 pairs of panels per thread, each thread packs a pair into its own buffer and
// multiplies every row of the batch by it while it is in cache. With fewer (a k or v projection
// on many threads), a chunk of pairs is packed across the threads into a shared buffer, then
// multiplied across them in items of one pair times a block of rows, so every thread has work.
// Returns 0, or 1 when a buffer cannot be allocated.
static int q8_blocked(float *out, const uint8_t *xu, const float *dx, const float *sxg, const uint8_t *wb, uint64_t row_bytes,
                      unpack_fn unpack, const type_entry *t, bool has_min, const float *bias, int64_t N, int64_t C, int64_t OC, int G) {
    int64_t ng = C / G;
    size_t codes_b = (size_t)(16 * C), grp_b = (size_t)(16 * ng) * 4, panel_b = codes_b + 3 * grp_b;  // all multiples of 64
    int64_t npairs = (OC + 31) / 32;
    bool par = (double)N * C * OC > 262144;
    int nthr = par ? omp_get_max_threads() : 1;
    bool own = npairs >= 4 * (int64_t)nthr;
    int64_t chunk = own ? 0 : (int64_t)(FK_Q8_CHUNK_BYTES / (2 * panel_b));
    chunk = own ? 0 : chunk < 1 ? 1 : chunk > npairs ? npairs : chunk;
    uint8_t *buf = own ? NULL : aligned_alloc(64, (size_t)chunk * 2 * panel_b);
    if (!own && !buf) return 1;
    // a thread's scratch: one row's codes and scales, then (own) its pair
    size_t row_b = ((size_t)C + 2 * (size_t)(C / 16) * sizeof(float) + 63) / 64 * 64;
    size_t need = row_b + (own ? 2 * panel_b : 0);
    int failed = 0;
    #pragma omp parallel if (par)
    {
        if (pack_cap < need) {
            free(pack_buf);
            pack_buf = aligned_alloc(64, need);
            pack_cap = pack_buf ? need : 0;
        }
        bool ok = pack_cap >= need;
        if (!ok) {
            #pragma omp atomic write
            failed = 1;
        }
        float *s16 = ok ? pack_buf : NULL, *m16 = ok ? s16 + C / 16 : NULL;
        int8_t *q = ok ? (int8_t *)(m16 + C / 16) : NULL;
        uint8_t *mine = ok ? (uint8_t *)pack_buf + row_b : NULL;
        if (own) {
            #pragma omp for schedule(dynamic, 1)
            for (int64_t pi = 0; pi < npairs; pi++) {
                if (!ok) continue;
                for (int h = 0; h < 2; h++)
                    q8_pack(wb, row_bytes, 32 * pi + 16 * h, OC, unpack, t, C, G, has_min, mine + (size_t)h * panel_b, codes_b, grp_b, q,
                            s16, m16);
                q8_panels p = q8_pair_at(mine, panel_b, codes_b, grp_b);
                q8_rows(&p, 0, N, 32 * pi, xu, dx, sxg, G, has_min, bias, out, C, OC);
            }
        } else {
            for (int64_t p0 = 0; p0 < npairs; p0 += chunk) {
                int64_t np = npairs - p0 < chunk ? npairs - p0 : chunk;
                #pragma omp for schedule(dynamic, 1)
                for (int64_t k = 0; k < 2 * np; k++)  // panel k of the chunk: rows 16 (2 p0 + k) .. + 15 of w
                    if (ok)
                        q8_pack(wb, row_bytes, 16 * (2 * p0 + k), OC, unpack, t, C, G, has_min, buf + (size_t)k * panel_b, codes_b, grp_b, q,
                                s16, m16);
                // rows in blocks of whole kernel calls, enough items for every thread (the implicit
                // barriers keep the chunk's packing and multiplying apart)
                int64_t want = (4 * (int64_t)nthr + np - 1) / np, rb = (N + want - 1) / want;
                rb = (rb + Q8_MR - 1) / Q8_MR * Q8_MR;
                if (rb < 8 * Q8_MR) rb = 8 * Q8_MR;
                int64_t nrb = (N + rb - 1) / rb;
                #pragma omp for schedule(dynamic, 1)
                for (int64_t it = 0; it < np * nrb; it++) {
                    if (failed) continue;
                    int64_t pi = it / nrb, r0 = it % nrb * rb, r1 = r0 + rb < N ? r0 + rb : N;
                    q8_panels p = q8_pair_at(buf + (size_t)(2 * pi) * panel_b, panel_b, codes_b, grp_b);
                    q8_rows(&p, r0, r1, 32 * (p0 + pi), xu, dx, sxg, G, has_min, bias, out, C, OC);
                }
            }
        }
    }
    free(buf);
    return failed;
}
#endif

static bool g_q8_rows;  // tests: the row-by-row path even where the blocked one exists

const char *fk_qmatmul_q8_unit(void) {
#ifdef FK_Q8_BLOCKED
    return "AVX512-VNNI";
#elif defined(__AVX2__) && defined(__FMA__)
    return "AVX2, row by row (no AVX512-VNNI: the same integer products, slower)";
#else
    return "portable C, row by row (no AVX512-VNNI: the same integer products, slower)";
#endif
}

bool fk_qmatmul_q8_blocked(bool use) {
    g_q8_rows = !use;
#ifdef FK_Q8_BLOCKED
    return true;
#else
    return false;
#endif
}

// Per-thread row codes, kept between calls.
static _Thread_local void *code_buf;
static _Thread_local size_t code_cap;

fk_status fk_qmatmul_forward_q8(float *out, const float *inp, const void *w, uint32_t ggml_type, const float *bias, int64_t N,
                                int64_t C, int64_t OC) {
    bool has_min;
    unpack_fn unpack = ggml_type < FK_GGML_TYPE_COUNT ? unpacker(ggml_type, &has_min) : NULL;
    if (!unpack) return fk_qmatmul_forward(out, inp, w, ggml_type, bias, N, C, OC);
    const type_entry *t = &types[ggml_type];
    uint64_t row_bytes;
    FK_TRY(qmatmul_dims(t, ggml_type, N, C, OC, &row_bytes));
    if (N == 0 || OC == 0) return FK_OK;
    // activations: int8 codes per 32 (q8_codes: ggml's Q8_0 rule), their scales, and for the
    // types with mins d times the code sums per group of G (16 on the row-by-row path)
    const uint8_t *wb = w;
    bool blocked = false;
    int G = 16;
#ifdef FK_Q8_BLOCKED
    blocked = N >= FK_Q8_BLOCKED_MIN_N && !g_q8_rows;
    if (blocked) G = ggml_type == FK_GGML_Q2_K || ggml_type == FK_GGML_Q3_K || ggml_type == FK_GGML_Q6_K ? 16 : 32;
#endif
    int64_t nb32 = C / 32, ng = C / G;
    int8_t *qx = malloc((size_t)(N * C));
    float *dx = malloc((size_t)(N * nb32) * sizeof(float));
    float *sx = has_min ? malloc((size_t)(N * ng) * sizeof(float)) : NULL;
    if (!qx || !dx || (has_min && !sx)) {
        free(qx); free(dx); free(sx);
        return fk_error(FK_ERR_NOMEM, "qmatmul: out of memory for %lld x %lld 8-bit activations", (long long)N, (long long)C);
    }
    #pragma omp parallel for schedule(static) if ((double)N * C > 65536)
    for (int64_t i = 0; i < N * nb32; i++) {
        int8_t *q = qx + 32 * i;
        float d = dx[i] = q8_codes(inp + 32 * i, q);
        if (has_min)
            for (int h = 0; h < 32 / G; h++) {
                int32_t sum = 0;
                for (int l = 0; l < G; l++) sum += q[G * h + l];
                sx[32 / G * i + h] = d * (float)sum;
            }
        if (blocked)  // the unsigned operand of VPDPBUSD: q + 128
            for (int l = 0; l < 32; l++) q[l] = (int8_t)((uint8_t)q[l] ^ 0x80u);
    }
#ifdef FK_Q8_BLOCKED
    if (blocked) {
        int failed = q8_blocked(out, (const uint8_t *)qx, dx, sx, wb, row_bytes, unpack, t, has_min, bias, N, C, OC, G);
        free(qx);
        free(dx);
        free(sx);
        if (failed) return fk_error(FK_ERR_NOMEM, "qmatmul: out of memory for a panel of 32 x %lld codes", (long long)C);
        return FK_OK;
    }
#endif
    int64_t blk = t->info.block, gpb = blk / 16;  // 16-groups per block
    size_t need = (size_t)C + 2 * (size_t)ng * sizeof(float) + 64;
    int failed = 0;
    #pragma omp parallel if ((double)N * C * OC > 262144)
    {
        if (code_cap < need) {
            void *p = realloc(code_buf, need);
            if (p) { code_buf = p; code_cap = need; }
        }
        bool ok = code_cap >= need;
        if (!ok) {
            #pragma omp atomic write
            failed = 1;
        }
        float *s = ok ? code_buf : NULL, *m = ok ? s + ng : NULL;
        int8_t *q = ok ? (int8_t *)(m + ng) : NULL;
        #pragma omp for schedule(static)
        for (int64_t o = 0; o < OC; o++) {
            if (!ok) continue;
            const uint8_t *row = wb + (uint64_t)o * row_bytes;
            for (int64_t k = 0; k < C / blk; k++) unpack(row + k * t->info.bytes, q + k * blk, s + k * gpb, m + k * gpb);
            for (int64_t n = 0; n < N; n++) {
                const float *d = dx + n * nb32;
                float acc = dot_codes(q, s, qx + n * C, d, C);
                if (has_min) acc += dot16(m, sx + n * ng, ng);
                out[n * OC + o] = acc + (bias ? bias[o] : 0.0f);
            }
        }
    }
    free(qx);
    free(dx);
    free(sx);
    if (failed) return fk_error(FK_ERR_NOMEM, "qmatmul: out of memory for a row of %lld codes", (long long)C);
    return FK_OK;
}
