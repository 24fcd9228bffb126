// Hugging Face model folders: config.json <-> fk_config, model.safetensors (or shards
// with model.safetensors.index.json) <-> the parameter table, with HF tensor names and layouts.
#ifndef FUSEKIT_HF_H
#define FUSEKIT_HF_H

#include "fusekit/model.h"
#include "fusekit/safetensors.h"

// Which Hugging Face model_type a config is written as. The Gemma family (model_type gemma,
// gemma2, gemma3_text) stores RMSNorm weights as w with the scale 1 + w: a model whose
// norm_offset is 0 (llama.cpp's Gemma GGUF stores 1 + w) is saved with 1 subtracted from every
// norm weight and loads back with norm_offset 1 (the same function).
typedef enum { FK_ARCH_GPT2, FK_ARCH_LLAMA, FK_ARCH_QWEN2, FK_ARCH_MISTRAL, FK_ARCH_FUSEKIT,
               FK_ARCH_GEMMA, FK_ARCH_GEMMA2, FK_ARCH_GEMMA3, FK_ARCH_QWEN3, FK_ARCH_STARCODER2, FK_ARCH_PHI3,
               FK_ARCH_MPT, FK_ARCH_GPTNEOX, FK_ARCH_PHI, FK_ARCH_STABLELM, FK_ARCH_OLMO2,
               FK_ARCH_FALCON, FK_ARCH_MIXTRAL, FK_ARCH_QWEN2_MOE, FK_ARCH_QWEN3_MOE, FK_ARCH_OLMOE } fk_arch;
const char *fk_arch_name(fk_arch a);
// The HF model_type that represents this config exactly (FK_ARCH_FUSEKIT when none does:
// then config.json carries every switch and only fusekit loads it).
fk_arch fk_config_arch(const fk_config *c);

// One Hugging Face tensor: rows [row0, row0+rows) of table entry `param`, transposed for
// GPT-2's Conv1D layout.
typedef struct {
    char name[96];
    int param;
    int64_t row0, rows;
    bool transpose;
    int ndim;
    int64_t shape[3];   // the HF shape (ndim 3: [experts, rows, cols], n_exp > 0)
    int64_t head_rows;  // > 0: a whole qkv entry whose file rows are grouped per KV head, [q of the group's heads;
                        // k_g; v_g] of head_rows each (GPT-NeoX's and Falcon's query_key_value); 0: the rows in order
    int64_t n_exp, exp_stride;  // > 0: the same rows of a layer's n_exp experts stacked (transformers 5's in-memory
                                // experts.gate_up_proj / down_proj, read only), expert e exp_stride floats after `param`
} fk_hf_tensor;

// Lists the HF tensors of a model (malloc'd array in *out, count returned in *n).
fk_status fk_hf_tensors(const fk_model *m, fk_arch arch, fk_hf_tensor **out, int *n);

// Copies HF tensor t out of an arena laid out like the model's (weights, gradients or
// optimizer moments) into out (HF layout), and back.
void fk_hf_gather(const fk_model *m, const float *arena, const fk_hf_tensor *t, float *out);
void fk_hf_scatter(const fk_model *m, float *arena, const fk_hf_tensor *t, const float *in);

// config.json text for a config (malloc'd), with torch_dtype float32.
char *fk_hf_config_json(const fk_config *c);
// Parses config.json text; `path` names the file in errors.
fk_status fk_hf_config_parse(const char *json, const char *path, fk_config *c);
fk_status fk_hf_config_read(const char *path, fk_config *c);
// The model_type dir/config.json names, into buf ("" when it names none; it may differ from
// fk_config_arch's, which the folder is read as and saved as); errors name the file.
fk_status fk_hf_model_type(const char *dir, char *buf, size_t n);

// Writes dir/config.json (torch_dtype naming dtype) and dir/model.safetensors (dtype F32, F16
// or BF16), each atomically.
fk_status fk_hf_save(const fk_model *m, const char *dir, fk_dtype dtype);
// Reads the weights of dir (model.safetensors, or the shards model.safetensors.index.json
// lists; F32, F16, BF16 or F64) into an initialised model whose config matches the folder's.
// The files are mmapped and each tensor is copied once from the mapping into the weight arena.
// Errors name the file and the tensor: missing, wrong shape, extra, integer dtype, non-finite.
fk_status fk_hf_load_weights(fk_model *m, const char *dir);
// Reads config.json, builds the model and loads its weights.
fk_status fk_hf_load(fk_model *m, const char *dir);
// Flags of fk_hf_load_ex.
enum {
    // A frozen model for inference: F16/BF16 weight matrices stay in the files' mapping in their
    // stored type and the forward multiplies by them (fk_model_add_stored: tiles decoded on the
    // fly); norms, biases, and matrices in F32 or a layout the engine cannot read in place (GPT-2's
    // transposed Conv1D, per-head-grouped qkv, stacked experts) are copied as f32. When every matrix
    // in the files is F16/BF16 the memory check counts only the copied tensors.
    FK_HF_KEEP_STORED = 1u << 0,
};
// fk_hf_load with flags (FK_HF_*).
fk_status fk_hf_load_ex(fk_model *m, const char *dir, unsigned flags);

#endif
