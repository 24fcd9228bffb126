// Shared by the tokenizer harnesses: reads every piece back, encodes and decodes a text.
#ifndef FK_FUZZ_TOK_H
#define FK_FUZZ_TOK_H
#include "fusekit/tokenizer.h"
#include "fuzz_util.h"

static inline void fz_tok_exercise(const fk_tokenizer *t, const char *text, size_t len, bool pieces) {
    int32_t nv = fk_tok_vocab_size(t);
    for (int32_t i = 0; pieces && i < nv && i < 4096; i++) {
        uint32_t n = 0;
        const char *p = fk_tok_piece(t, i, &n);
        if (p) fz_touch(p, n);
        (void)fk_tok_type(t, i);
        (void)fk_tok_score(t, i);
        char buf[64];
        (void)fk_tok_token_bytes(t, i, buf, sizeof buf);
    }
    (void)fk_tok_fingerprint(t);
    (void)fk_tok_bos(t);
    (void)fk_tok_eos(t);
    (void)fk_tok_pre(t);
    fk_tok_out o = {0};
    for (unsigned flags = 0; flags < 4; flags++) {
        fk_tok_out_clear(&o);
        if (fk_tok_encode(t, text, len, flags, &o) != FK_OK) continue;
        for (int64_t i = 0; i < o.n; i++)
            if (o.ids[i] < 0 || o.ids[i] >= nv || o.begin[i] > o.end[i]) abort();   // ids in the vocabulary
        for (unsigned df = 0; df < 4; df++) {
            char *out = NULL;
            size_t n = 0;
            if (fk_tok_decode(t, o.ids, o.n, df, &out, &n) == FK_OK) fz_touch(out, n + 1);
            free(out);
        }
    }
    fk_tok_out_free(&o);
}
#endif
