// GGUF model files for llama.cpp: export of a fusekit model (with its tokenizer) and import
// back into a fusekit model.
//
// Architectures (general.architecture):
//   llama  RMSNorm (no bias), RoPE, SwiGLU, GQA; optional q/k/v, output-projection and (with
//          uniform FFN widths) MLP biases; Llama, Mistral and Qwen2-style models.
//   deci   the same with per-layer FFN widths or query-head counts (folded models): llama.cpp's
//          llama architecture reads one width for every layer, its deci architecture
//          (DeciLM / Nemotron-NAS) reads feed_forward_length and attention.head_count as
//          per-layer i32 arrays. No MLP biases there.
//   gpt2   LayerNorm with bias, learned positions, tanh GELU, biases everywhere, fused qkv.
// Tensor names follow llama.cpp (token_embd, blk.N.attn_q, ...); a row-major [out, in]
// matrix has ggml dims {in, out}. Query and key rows are permuted per head from fusekit's
// (Hugging Face) rotate-half order into llama.cpp's interleaved RoPE order (the permutation
// convert_hf_to_gguf.py applies): row 2j+s of a head holds row s*head_dim/2+j. 1-D tensors
// (norms, biases) stay F32; matrices are F32, F16 or BF16.
#ifndef FUSEKIT_GGUF_MODEL_H
#define FUSEKIT_GGUF_MODEL_H

#include "fusekit/gguf.h"
#include "fusekit/model.h"
#include "fusekit/safetensors.h"
#include "fusekit/tokenizer.h"

typedef struct {
    const char *arch;    // "llama", "deci" or "gpt2" (static string)
    int64_t n_tensors;
    uint64_t tensor_bytes;  // bytes of tensor data (without padding)
} fk_gguf_export_stats;

// The llama.cpp architecture a config is written as ("llama", "deci", "gpt2"), or NULL with an
// FK_ERR_UNSUPPORTED message naming what llama.cpp cannot express.
fk_status fk_gguf_model_arch(const fk_config *c, const char **arch);

// Writes the model (and the tokenizer's tokenizer.ggml.* keys unless tok is NULL) as GGUF v3,
// atomically. type: FK_DT_F32, FK_DT_F16 or FK_DT_BF16 for the matrices. name: general.name
// (NULL: "fusekit"). stats may be NULL.
fk_status fk_gguf_export(const fk_model *m, const fk_tokenizer *tok, const char *path, fk_dtype type, const char *name,
                         fk_gguf_export_stats *stats);

// Reads a llama, deci or gpt2 GGUF file with F32, F16 or BF16 tensors into a new model (free it
// with fk_model_free). tok may be NULL; otherwise *tok gets the file's tokenizer, or NULL when
// the file has none (no tokenizer.ggml.model). Errors name the file and the key or tensor.
fk_status fk_gguf_import(const char *path, fk_model *m, fk_tokenizer **tok);

#endif
