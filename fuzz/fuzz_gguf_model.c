// A GGUF model: architecture keys into a config, tensors into the model (dequantized, or kept
// stored when the input's size is odd), the tokenizer; a small model then runs one forward.
#include "fusekit/gguf_model.h"
#include "fusekit/model.h"
#include "fusekit/tokenizer.h"
#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fk_model m;
    fk_tokenizer *tok = NULL;
    unsigned flags = (size & 1) ? FK_GGUF_KEEP_STORED : 0;
    if (fk_gguf_import_ex(fz_file(data, size), flags, &m, &tok) != FK_OK) return 0;
    if (fk_model_num_params(&m) < (1 << 22) && m.cfg.max_seq >= 4 && m.cfg.vocab_size > 0) {
        int32_t x[4], y[4];
        for (int i = 0; i < 4; i++) { x[i] = (int32_t)((i * 7) % m.cfg.vocab_size); y[i] = (int32_t)((i * 5 + 1) % m.cfg.vocab_size); }
        float loss;
        (void)fk_model_forward(&m, x, y, 1, 4, false, &loss);
    }
    if (tok) fk_tok_free(tok);
    fk_model_free(&m);
    return 0;
}
