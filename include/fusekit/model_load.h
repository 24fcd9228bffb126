// One entry point for a model on disk, whatever its format: a GGUF file (llama.cpp's format,
// F32/F16/BF16 or quantized tensors, the tokenizer in its metadata) or a model folder
// (config.json + model.safetensors, Hugging Face or fusekit, tokenizer.json beside them).
// Every CLI verb that reads a model goes through here, so a .gguf file is accepted wherever a
// folder is.
#ifndef FUSEKIT_MODEL_LOAD_H
#define FUSEKIT_MODEL_LOAD_H

#include "fusekit/model.h"
#include "fusekit/tokenizer.h"

// Flags of fk_model_load.
enum {
    // The model will only be read (eval, generate, extract, a fusion source, a teacher): a GGUF
    // file's weight matrices stay mapped in their stored type (quantized, f16, bf16) and the
    // forward computes from them (FK_GGUF_KEEP_STORED), and so do a folder's F16/BF16 matrices
    // (FK_HF_KEEP_STORED; F32 ones are copied); the model is frozen (no backward).
    FK_LOAD_FROZEN = 1u << 0,
};

// Whether path names a GGUF file: a file (not a folder) whose first four bytes are "GGUF", or
// a path ending in ".gguf" that is not a folder (so that a missing file is reported as such).
bool fk_model_path_is_gguf(const char *path);

// Loads the model at path into a new model (free it with fk_model_free): a GGUF file through
// fk_gguf_import, a folder through fk_hf_load. tok may be NULL; otherwise *tok gets the
// model's own tokenizer — the GGUF's tokenizer.ggml.* keys, or the folder's tokenizer.json
// (tokenizer_config.json beside it) — or NULL when it has none. flags: FK_LOAD_*. Errors name
// the file (and the key or tensor inside it); a file that is neither GGUF nor a folder is
// refused as such. With tok, the model knows which of its vocabulary rows are padding
// (fk_model_set_vocab_real with fk_model_tokens_of).
fk_status fk_model_load(const char *path, unsigned flags, fk_model *m, fk_tokenizer **tok);

// The architecture a model path's own file names, into buf: a GGUF file's general.architecture
// (*gguf true) or a folder's config.json model_type ("" when it names none).
fk_status fk_model_file_type(const char *path, char *buf, size_t n, bool *gguf);

// The tokens of t that stand for text: all, less a trailing run of padding entries
// ("[PAD<n>]" of type UNUSED), which llama.cpp's converter and fusekit's GGUF export append to
// a tokenizer up to a padded model's rows (fk_gguf_export). A model's rows from there on are
// padding (Qwen2.5: 151665 tokens, 151936 rows).
int32_t fk_model_tokens_of(const fk_tokenizer *t);

// The model's own tokenizer alone (as fk_model_load gives it), without loading the weights:
// *tok is NULL when the GGUF file has no tokenizer keys or the folder no tokenizer.json.
fk_status fk_model_load_tokenizer(const char *path, fk_tokenizer **tok);

#endif
