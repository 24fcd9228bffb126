// tokenizer.json (Hugging Face tokenizers): model, vocab, merges, added tokens, normalizer and
// pre-tokenizer; every piece read back and a short text encoded and decoded.
#include "fuzz_tok.h"

static const char TEXT[] = "Hello, world! It's 2024: \xc3\xbcn\xc3\xaf" "c\xc3\xb6" "d\xc3\xa9\n\ttabs  <s> </s> <|endoftext|> 12345 \xe2\x96\x81x \xff\xfe";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fk_tokenizer *t = NULL;
    if (fk_tok_load_json(fz_file(data, size), &t) != FK_OK) return 0;
    fz_tok_exercise(t, TEXT, sizeof TEXT - 1, true);
    fk_tok_free(t);
    return 0;
}
