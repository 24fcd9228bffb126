// Token shards (FKTOKSHD): header, id width, vocabulary bound on every id; a file that is not
// a shard is read as raw bytes. Then evaluation windows over the ids.
#include "fusekit/data.h"
#include "fusekit/eval.h"
#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fz_file(data, size);
    (void)fk_data_is_shard(path);
    fk_token_data d;
    memset(&d, 0, sizeof d);
    if (fk_data_load(path, &d) != FK_OK) return 0;
    for (int64_t i = 0; i < d.n; i++)
        if (d.ids[i] < 0 || d.ids[i] >= d.vocab_size) abort();
    if (d.n > 2) {
        fk_token_data s2;
        memset(&s2, 0, sizeof s2);
        if (fk_data_slice(&d, 1, d.n - 1, &s2) == FK_OK) fk_data_free(&s2);
        fk_eval_windowing w = fk_eval_windowing_data(&d, 0, 8);
        (void)w;
    }
    fk_data_free(&d);
    return 0;
}
