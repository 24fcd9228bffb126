// The GGUF tokenizer (tokenizer.ggml.*): loaded from a parsed GGUF; every piece read back and
// a short text encoded and decoded.
#include "fusekit/gguf.h"
#include "fuzz_tok.h"

static const char TEXT[] = "Hello, world! It's 2024: \xc3\xbcn\xc3\xaf" "c\xc3\xb6" "d\xc3\xa9\n\ttabs  <s> </s> <|endoftext|> 12345 \xe2\x96\x81x \xff\xfe";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fk_gguf g;
    if (fk_gguf_open(fz_file(data, size), &g) != FK_OK) return 0;
    fk_tokenizer *t = NULL;
    if (fk_tok_load_gguf(&g, &t) == FK_OK) {
        fz_tok_exercise(t, TEXT, sizeof TEXT - 1, true);
        fk_tok_free(t);
    }
    fk_gguf_close(&g);
    return 0;
}
