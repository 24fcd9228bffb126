// Models with their tokenizers, as the jobs and the program's verbs load them (fusekit/job.h).
#include "fusekit/data.h"
#include "fusekit/job.h"

#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <stdio.h>
#include <string.h>

// A tokenizer must cover the model's vocabulary, up to padding rows (fk_vocab_check); m (NULL:
// none) then knows which rows are padding.
static fk_status check_vocab(fk_tokenizer **t, int64_t vocab, fk_model *m) {
    if (!*t || vocab <= 0) return FK_OK;
    fk_status st = fk_vocab_check(fk_tok_vocab_size(*t), vocab);
    if (st == FK_OK && m) st = fk_model_set_vocab_real(m, fk_model_tokens_of(*t));
    if (st == FK_OK) return FK_OK;
    fk_tok_free(*t);
    *t = NULL;
    return st;
}

fk_status fk_model_tokenizer(const char *model, const char *path, int64_t vocab, fk_tokenizer **t) {
    *t = NULL;
    fk_status st = path ? fk_tok_load(path, t) : model ? fk_model_load_tokenizer(model, t) : FK_OK;
    if (st == FK_OK && !*t && !path && vocab == 256) st = fk_tok_new_bytes(t);
    if (st != FK_OK) return st;
    st = check_vocab(t, vocab, NULL);
    if (st != FK_OK && (path || model))
        st = fk_error_context(st, "tokenizer %s, model %s", path ? path : model, model ? model : "(given)");
    return st;
}

// Loading a tokenizer parses (and saving one builds) JSON trees of tens of MB, freed at once
// but left in the heap under smaller blocks allocated after them: their pages go back to the
// system before the model's activations take their own (Gemma-3-270M extraction: -67 MB RSS).
void fk_heap_trim(void) {
#ifdef __GLIBC__
    malloc_trim(0);
#endif
}

fk_status fk_model_load_tok(const char *path, const char *tok_path, unsigned flags, fk_model *m, fk_tokenizer **tok) {
    if (!tok) {
        FK_TRY(fk_model_load(path, flags, m, NULL));
        fk_heap_trim();
        return FK_OK;
    }
    *tok = NULL;
    FK_TRY(fk_model_load(path, flags, m, tok_path ? NULL : tok));
    fk_status st = FK_OK;
    if (tok_path) st = fk_tok_load(tok_path, tok);
    else if (!*tok && m->cfg.vocab_size == 256) st = fk_tok_new_bytes(tok);
    if (st == FK_OK) st = check_vocab(tok, m->cfg.vocab_size, m);
    if (st != FK_OK) { fk_tok_free(*tok); *tok = NULL; fk_model_free(m); }
    fk_heap_trim();
    return st;
}

void fk_model_name(const char *path, char *out, size_t n) {
    size_t len = strlen(path);
    while (len > 1 && path[len - 1] == '/') len--;
    size_t b = len;
    while (b > 0 && path[b - 1] != '/') b--;
    if (len - b > 5 && strncmp(path + len - 5, ".gguf", 5) == 0) len -= 5;
    snprintf(out, n, "%.*s", (int)(len - b), path + b);
}
