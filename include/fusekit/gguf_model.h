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
//   gemma, gemma2, gemma3  GeGLU, embeddings times sqrt(d_model), RMSNorm, RoPE in NEOX order
//          (no Q/K permutation), tied embeddings (gemma3 may have output.weight), one FFN width
//          and head count; gemma2 adds post-norms, attention and final soft-capping and
//          sliding windows; gemma3 post-norms, QK-norm, sliding windows with a local RoPE base,
//          optional final soft-capping and linear RoPE scaling of the global layers. llama.cpp
//          hard-codes what the keys do not store: the attention scale (1/sqrt(head_dim);
//          1/sqrt(d_model/n_head) for 46-layer gemma2 and 62-layer gemma3), gemma2's defaults
//          (caps 50 and 30, window 4096, even layers sliding, local base = global base), gemma3's
//          five sliding layers in six (layer l slides unless l % 6 == 5) and local base 10000.
//          attention.sliding_window_pattern (a per-layer boolean array, or the period) and
//          rope.freq_base_swa override them and are written when a model differs.
//          The file stores RMSNorm weights as 1 + w (llama.cpp's converter adds Gemma's offset):
//          import reads them as stored with norm_offset 0; export adds norm_offset. An attention
//          scale other than llama.cpp's is folded into the query weights (gemma3: the QK-norm
//          weights of the queries).
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
    const char *arch;    // "llama", "deci", "gpt2", "gemma", "gemma2" or "gemma3" (static string)
    int64_t n_tensors;
    uint64_t tensor_bytes;  // bytes of tensor data (without padding)
} fk_gguf_export_stats;

// The llama.cpp architecture a config is written as (see above), or NULL with an
// FK_ERR_UNSUPPORTED message naming what llama.cpp cannot express.
fk_status fk_gguf_model_arch(const fk_config *c, const char **arch);

// Writes the model (and the tokenizer's tokenizer.ggml.* keys unless tok is NULL) as GGUF v3,
// atomically. type: FK_DT_F32, FK_DT_F16 or FK_DT_BF16 for the matrices. name: general.name
// (NULL: "fusekit"). stats may be NULL.
fk_status fk_gguf_export(const fk_model *m, const fk_tokenizer *tok, const char *path, fk_dtype type, const char *name,
                         fk_gguf_export_stats *stats);

// llama.cpp computes the tanh GELU wherever these models have GELU (ggml_gelu in every GELU graph),
// so fk_gguf_export refuses an exact-GELU model (cfg.gelu_exact). This makes such a model that form
// in place (gelu_exact false; a tanh-GELU model is left as it is, *max_diff 0) and sets *max_diff to
// the largest |logit| change it makes on a probe of min(T, max_seq) token ids (drawn from a fixed
// seed), so that a caller exporting it can say how far the file is from the model.
fk_status fk_model_gelu_to_tanh(fk_model *m, int T, double *max_diff);

// Reads a llama, deci, gpt2, gemma, gemma2 or gemma3 GGUF file into a new model (free it
// with fk_model_free). tok may be NULL; otherwise *tok gets the file's tokenizer, or NULL when
// the file has none (no tokenizer.ggml.model). Errors name the file and the key or tensor.
fk_status fk_gguf_import(const char *path, fk_model *m, fk_tokenizer **tok);

// Flags of fk_gguf_import_ex.
enum {
    // A frozen model for inference: the weight matrices stay in the file's mapping in their
    // stored type (quantized, f16, bf16; f32 ones are copied) and the forward passes compute from them
    // (fk_model_add_stored); the model keeps the file mapped until fk_model_free. Their values
    // are still checked (a non-finite weight is refused). Norms and biases are decoded to f32.
    FK_GGUF_KEEP_STORED = 1u << 0,
};
fk_status fk_gguf_import_ex(const char *path, unsigned flags, fk_model *m, fk_tokenizer **tok);

#endif
