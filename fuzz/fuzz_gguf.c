// GGUF: header, metadata (every scalar, string and array element read back), tensor infos,
// and the tensors' data dequantized row by row where the type allows (up to 1M elements).
#include "fusekit/gguf.h"
#include "fusekit/quants.h"
#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fk_gguf g;
    if (fk_gguf_open(fz_file(data, size), &g) != FK_OK) return 0;
    for (int64_t i = 0; i < g.n_kv; i++) {
        const fk_gguf_kv *kv = &g.kvs[i];
        fz_touch(kv->key.s, kv->key.n);
        char key[256];
        size_t kn = kv->key.n < sizeof key - 1 ? kv->key.n : sizeof key - 1;
        memcpy(key, kv->key.s, kn);
        key[kn] = 0;
        (void)fk_gguf_find(&g, key);
        uint64_t u; int64_t s; double d; bool b; fk_gguf_str str;
        (void)fk_gguf_get_u64(&g, key, &u);
        (void)fk_gguf_get_i64(&g, key, &s);
        (void)fk_gguf_get_f64(&g, key, &d);
        (void)fk_gguf_get_bool(&g, key, &b);
        if (fk_gguf_get_str(&g, key, &str) == FK_OK) fz_touch(str.s, str.n);
        if (kv->type == FK_GGUF_ARRAY) {
            uint64_t n = kv->count < 4096 ? kv->count : 4096;
            if (kv->elem_type == FK_GGUF_STRING) {
                for (uint64_t k = 0; k < n; k++) fz_touch(kv->strs[k].s, kv->strs[k].n);
            } else if (kv->elem_type != FK_GGUF_ARRAY) {
                const void *arr; uint64_t cnt;
                (void)fk_gguf_get_arr(&g, key, kv->elem_type, &arr, &cnt);
                for (uint64_t k = 0; k < n; k++) { d += fk_gguf_arr_f64(kv, k); u += (uint64_t)fk_gguf_arr_i64(kv, k); }
            }
        } else if (kv->type == FK_GGUF_STRING) {
            fz_touch(kv->strs[0].s, kv->strs[0].n);
        }
    }
    for (int64_t i = 0; i < g.n_tensors; i++) {
        const fk_gguf_tensor *t = &g.tensors[i];
        fz_touch(t->name.s, t->name.n);
        fz_touch(t->data, t->nbytes);
        const fk_ggml_type_info *ti = fk_ggml_type(t->ggml_type);
        if (!ti || !ti->dequant || t->n_dims == 0) continue;
        uint64_t row = t->dims[0], rb;
        if (row == 0 || row > (1u << 20) || fk_ggml_row_bytes(t->ggml_type, (int64_t)row, &rb) != FK_OK || rb == 0) continue;
        uint64_t rows = t->nbytes / rb;
        if (rows * row > (1u << 20)) rows = (1u << 20) / row;
        float *out = malloc(row * sizeof *out);
        if (!out) abort();
        for (uint64_t r = 0; r < rows; r++) fk_dequantize_row(t->ggml_type, (const uint8_t *)t->data + r * rb, out, (int64_t)row);
        free(out);
    }
    fk_gguf_close(&g);
    return 0;
}
