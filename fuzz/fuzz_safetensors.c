// safetensors: header JSON, dtypes, shapes against byte ranges, __metadata__; then every
// tensor (up to 1M elements) converted to f32.
#include "fusekit/safetensors.h"
#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fk_safetensors st;
    if (fk_st_open(&st, fz_file(data, size)) != FK_OK) return 0;
    for (int i = 0; i < st.n_tensors; i++) {
        const fk_st_tensor *t = &st.tensors[i];
        if (fk_st_find(&st, t->name) == NULL) abort();   // every listed tensor is found by its name
        fz_touch(t->data, t->nbytes);
        if (t->numel < 0 || t->numel > (1 << 20)) continue;
        float *out = malloc((size_t)t->numel * sizeof *out + 1);
        if (!out) abort();
        (void)fk_st_to_f32(t, out);
        free(out);
    }
    if (st.metadata_json) fz_touch(st.metadata_json, strlen(st.metadata_json));
    fk_st_close(&st);
    return 0;
}
