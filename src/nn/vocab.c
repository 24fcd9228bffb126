// Padded vocabularies: which rows of a model's embedding and LM head are its tokenizer's tokens.
#include "fusekit/model.h"

fk_status fk_model_set_vocab_real(fk_model *m, int64_t n_tokens) {
    if (n_tokens < 0 || n_tokens > m->cfg.vocab_size)
        return fk_error(FK_ERR_ARG, "a tokenizer of %lld tokens for a model of %lld vocabulary rows", (long long)n_tokens,
                        (long long)m->cfg.vocab_size);
    m->vocab_real = n_tokens == m->cfg.vocab_size ? 0 : n_tokens;
    return FK_OK;
}

int64_t fk_model_vocab_real(const fk_model *m) { return m->vocab_real > 0 ? m->vocab_real : m->cfg.vocab_size; }
