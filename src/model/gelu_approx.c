// Exact-GELU models as llama.cpp computes them: its GELU graphs (gpt2, mpt, gptneox, phi2,
// starcoder2, falcon in llama.cpp 0.3.36) all build ggml_gelu, the tanh approximation, so such a
// model is exported only when the caller accepts that form (fusekit export --gelu-approx).
#include "fusekit/gguf_model.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

fk_status fk_model_gelu_to_tanh(fk_model *m, int T, double *max_diff) {
    *max_diff = 0;
    if (!m->cfg.gelu_exact) return FK_OK;
    if (T < 1) return fk_error(FK_ERR_ARG, "gelu approximation: a probe of %d tokens", T);
    if (T > m->cfg.max_seq) T = (int)m->cfg.max_seq;
    int64_t V = m->cfg.vocab_size, n = (int64_t)T * V;
    int32_t *tok = malloc((size_t)T * sizeof *tok);
    float *exact = malloc((size_t)n * sizeof *exact);
    fk_status st = tok && exact ? FK_OK : fk_error(FK_ERR_NOMEM, "gelu approximation: out of memory for a probe of %d tokens", T);
    fk_rng r;
    fk_rng_seed(&r, 0x6E1Au);  // the probe: T token ids drawn uniformly from the tokenizer's rows
    for (int i = 0; tok && i < T; i++) tok[i] = (int32_t)fk_rng_below(&r, (uint64_t)fk_model_vocab_real(m));
    if (st == FK_OK) st = fk_model_forward(m, tok, NULL, 1, T, false, NULL);
    if (st == FK_OK) {
        memcpy(exact, fk_model_logits(m), (size_t)n * sizeof *exact);
        m->cfg.gelu_exact = false;
        st = fk_model_forward(m, tok, NULL, 1, T, false, NULL);
        if (st != FK_OK) m->cfg.gelu_exact = true;
    }
    if (st == FK_OK) {
        const float *tanh_form = fk_model_logits(m);
        for (int64_t i = 0; i < n; i++)  // (masked padding rows are the same constant in both)
            *max_diff = fmax(*max_diff, fabs((double)tanh_form[i] - (double)exact[i]));
    }
    free(tok);
    free(exact);
    return st;
}
