// .fkd distribution stores: header, footer, index, the tokenization section and the records
// (every one decoded: up to 64), then fk_store_verify.
#include "fusekit/store.h"
#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fk_store *s = NULL;
    if (fk_store_open(fz_file(data, size), &s) != FK_OK) return 0;
    const fk_store_header *h = fk_store_header_of(s);
    const int32_t *ids = fk_store_token_ids(s);
    const int64_t *begin = fk_store_token_begin(s);
    for (int64_t i = 0; i < h->n_tokens; i++)
        if (ids[i] < 0 || ids[i] >= h->vocab_size || begin[i] > begin[i + 1] || begin[i + 1] > h->corpus_bytes) abort();
    int64_t ns = fk_store_n_seqs(s);
    fk_store_seq q = {0};
    for (int64_t c = 0; c < ns && c < 64; c++) {
        if (fk_store_read_seq(s, c, &q) != FK_OK) continue;
        for (int64_t i = 0; i < q.n; i++) {
            if (q.count[i] > q.k) abort();
            for (int j = 0; j < q.count[i]; j++)
                if (q.ids[i * q.k + j] < 0 || q.ids[i * q.k + j] >= h->vocab_size) abort();
            fz_touch(&q.ce[i], sizeof q.ce[i]);
        }
    }
    fk_store_seq_free(&q);
    (void)fk_store_verify(s);
    (void)fk_store_ce_error_bound(s);
    fk_store_close(s);
    return 0;
}
