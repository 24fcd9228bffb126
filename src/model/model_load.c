// fk_model_load: a model from a GGUF file or a model folder, with its tokenizer.
#include "fusekit/model_load.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fusekit/gguf_model.h"
#include "fusekit/hf.h"

static bool ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

bool fk_model_path_is_gguf(const char *path) {
    if (!path) return false;
    struct stat sb;
    if (stat(path, &sb) != 0) return ends_with(path, ".gguf");
    if (S_ISDIR(sb.st_mode)) return false;
    if (!S_ISREG(sb.st_mode)) return ends_with(path, ".gguf");  // a FIFO would block here; the loader names it
    FILE *f = fopen(path, "rb");
    if (!f) return ends_with(path, ".gguf");
    char magic[4] = {0};
    size_t n = fread(magic, 1, 4, f);
    fclose(f);
    return (n == 4 && memcmp(magic, "GGUF", 4) == 0) || ends_with(path, ".gguf");
}

// A path that exists but is neither a folder nor a GGUF file: say what was expected.
static fk_status check_not_other_file(const char *path) {
    struct stat sb;
    if (stat(path, &sb) == 0 && !S_ISDIR(sb.st_mode))
        return fk_error(FK_ERR_ARG, "%s is a file but not a GGUF file (no \"GGUF\" magic): a model is a .gguf file or a folder "
                        "with config.json and model.safetensors", path);
    return FK_OK;
}

// The folder's tokenizer.json, when there is one.
static fk_status folder_tokenizer(const char *dir, fk_tokenizer **tok) {
    *tok = NULL;
    char *json = fk_path_join(dir, "tokenizer.json");
    if (!json) return fk_error(FK_ERR_NOMEM, "out of memory");
    fk_status st = fk_path_exists(json) ? fk_tok_load_json(json, tok) : FK_OK;
    free(json);
    return st;
}

// Whether token id of t is a padding entry, "[PAD<digits>]" of type UNUSED.
static bool pad_entry(const fk_tokenizer *t, int32_t id) {
    uint32_t len;
    const char *p = fk_tok_piece(t, id, &len);
    if (fk_tok_type(t, id) != FK_TT_UNUSED || len < 6 || memcmp(p, "[PAD", 4) != 0 || p[len - 1] != ']') return false;
    for (uint32_t i = 4; i + 1 < len; i++)
        if (p[i] < '0' || p[i] > '9') return false;
    return true;
}

int32_t fk_model_tokens_of(const fk_tokenizer *t) {
    int32_t n = fk_tok_vocab_size(t);
    while (n > 0 && pad_entry(t, n - 1)) n--;
    return n;
}

// The model's tokenizer knows which vocabulary rows are tokens: the rest are padding.
static fk_status join_tokenizer(fk_model *m, fk_tokenizer **tok, fk_status st) {
    if (st == FK_OK && tok && *tok) st = fk_model_set_vocab_real(m, fk_model_tokens_of(*tok));
    if (st != FK_OK && tok) { fk_tok_free(*tok); *tok = NULL; }
    if (st != FK_OK) fk_model_free(m);
    return st;
}

fk_status fk_model_load(const char *path, unsigned flags, fk_model *m, fk_tokenizer **tok) {
    memset(m, 0, sizeof *m);
    if (tok) *tok = NULL;
    if (!path || !*path) return fk_error(FK_ERR_ARG, "no model path given");
    if (fk_model_path_is_gguf(path))
        return join_tokenizer(m, tok, fk_gguf_import_ex(path, flags & FK_LOAD_FROZEN ? FK_GGUF_KEEP_STORED : 0, m, tok));
    FK_TRY(check_not_other_file(path));
    FK_TRY(fk_hf_load_ex(m, path, flags & FK_LOAD_FROZEN ? FK_HF_KEEP_STORED : 0));
    if (!tok) return FK_OK;
    fk_status st = folder_tokenizer(path, tok);
    if (st == FK_OK && *tok && fk_tok_vocab_size(*tok) > m->cfg.vocab_size)
        st = fk_error(FK_ERR_FORMAT, "%s: tokenizer.json has %d tokens but the model's vocabulary only %lld", path, fk_tok_vocab_size(*tok),
                      (long long)m->cfg.vocab_size);
    return join_tokenizer(m, tok, st);
}

fk_status fk_model_file_type(const char *path, char *buf, size_t n, bool *gguf) {
    buf[0] = 0;
    *gguf = path && fk_model_path_is_gguf(path);
    if (!path || !*path) return fk_error(FK_ERR_ARG, "no model path given");
    if (!*gguf) {
        FK_TRY(check_not_other_file(path));
        return fk_hf_model_type(path, buf, n);
    }
    fk_gguf g;
    FK_TRY(fk_gguf_open(path, &g));
    fk_gguf_str a;
    fk_status st = fk_gguf_get_str(&g, "general.architecture", &a);
    if (st == FK_OK) snprintf(buf, n, "%.*s", (int)a.n, a.s);
    fk_gguf_close(&g);
    return st;
}

fk_status fk_model_load_tokenizer(const char *path, fk_tokenizer **tok) {
    *tok = NULL;
    if (!path || !*path) return fk_error(FK_ERR_ARG, "no model path given");
    if (!fk_model_path_is_gguf(path)) {
        FK_TRY(check_not_other_file(path));
        return folder_tokenizer(path, tok);
    }
    fk_gguf g;
    FK_TRY(fk_gguf_open(path, &g));
    fk_status st = fk_gguf_find(&g, "tokenizer.ggml.model") ? fk_tok_load_gguf(&g, tok) : FK_OK;
    fk_gguf_close(&g);
    return st;
}
