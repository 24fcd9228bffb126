// Quantized blocks: the first byte picks a ggml type that fusekit dequantizes, the rest are
// whole blocks of it, read as one row (fk_dequantize_row) and as a matrix of 2 rows in both
// quantized products (f32 and 8-bit activations).
#include "fusekit/quants.h"
#include "fuzz_util.h"

static const uint32_t TYPES[] = {0, 1, 2, 3, 6, 7, 8, 10, 11, 12, 13, 14, 15, 20, 23, 30};  // F32 F16 Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 Q2_K..Q8_K IQ4_NL IQ4_XS BF16

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    uint32_t type = TYPES[data[0] % (sizeof TYPES / sizeof TYPES[0])];
    const fk_ggml_type_info *ti = fk_ggml_type(type);
    if (!ti || !ti->dequant) return 0;
    size_t nb = (size - 1) / (size_t)ti->bytes;
    if (nb == 0) return 0;
    // a copy of exactly the blocks, so ASan sees a read past them
    uint8_t *w = malloc(nb * (size_t)ti->bytes);
    if (!w) abort();
    memcpy(w, data + 1, nb * (size_t)ti->bytes);
    int64_t n = (int64_t)nb * ti->block;
    float *out = malloc((size_t)n * sizeof *out);
    if (!out) abort();
    fk_dequantize_row(type, w, out, n);
    if (nb % 2 == 0) {   // 2 rows of C = n / 2 elements
        int64_t C = n / 2, N = 2;
        float *inp = malloc((size_t)(N * C) * sizeof *inp), y[4];
        if (!inp) abort();
        for (int64_t i = 0; i < N * C; i++) inp[i] = (float)((i % 7) - 3) * 0.25f;
        (void)fk_qmatmul_forward(y, inp, w, type, NULL, N, C, 2);
        (void)fk_qmatmul_forward(y, inp, w, type, NULL, 1, C, 2);
        (void)fk_qmatmul_forward_q8(y, inp, w, type, NULL, N, C, 2);
        (void)fk_qmatmul_forward_q8(y, inp, w, type, NULL, 1, C, 2);
        free(inp);
    }
    free(out);
    free(w);
    return 0;
}
