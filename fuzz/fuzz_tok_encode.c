// Tokenizing hostile text: the input is the text, encoded (all flag combinations) and decoded
// with the tokenizers of the test data (a byte-level BPE and a SentencePiece one).
#include "fuzz_tok.h"

#ifndef FK_FUZZ_DATA
#error "FK_FUZZ_DATA (tests/data) must be defined"
#endif

static fk_tokenizer *toks[2];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!toks[0]) {
        if (fk_tok_load_json(FK_FUZZ_DATA "/gguf/llamacpp/hf/tokenizer.json", &toks[0]) != FK_OK ||
            fk_tok_load_json(FK_FUZZ_DATA "/gguf/gemma/tok/tokenizer.json", &toks[1]) != FK_OK) {
            fprintf(stderr, "fuzz_tok_encode: %s\n", fk_last_error());
            abort();
        }
    }
    for (int k = 0; k < 2; k++) fz_tok_exercise(toks[k], (const char *)data, size, false);
    return 0;
}
