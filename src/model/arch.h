// The architecture table (internal to src/model): one row per model family with its Hugging
// Face model_type and class, its llama.cpp general.architecture, and the tensor-name patterns
// of both file formats. hf.c and gguf_model.c load, save, import and export through it, so a
// family whose layers the engine already computes is one row here (plus its config keys).
#ifndef FUSEKIT_MODEL_ARCH_H
#define FUSEKIT_MODEL_ARCH_H

#include "fusekit/hf.h"

// Which rows of a parameter-table entry a file tensor holds.
typedef enum {
    ARCH_ROWS_ALL,                         // the whole entry
    ARCH_ROWS_Q, ARCH_ROWS_K, ARCH_ROWS_V, // qkv's query rows (the layer's heads), key rows, value rows
    ARCH_ROWS_GATE,                        // a gated FFN's gate rows (no tensor when the FFN is not gated)
    ARCH_ROWS_UP,                          // a gated FFN's up rows; every row when it is not gated
} arch_rows;

// Conditions and conventions of one tensor (bits).
enum {
    ARCH_T_POST = 1u << 0,      // only with post-norms (cfg.post_norms)
    ARCH_T_NO_POST = 1u << 1,   // only without post-norms
    ARCH_T_TRANSPOSE = 1u << 2, // stored transposed (GPT-2's Conv1D weights)
    ARCH_T_ROPE = 1u << 3,      // GGUF: llama.cpp's interleaved RoPE row order within each head (not for Gemma)
    ARCH_T_NORM = 1u << 4,      // GGUF: an RMSNorm weight, stored plus the norm offset (Gemma)
    ARCH_T_QSCALE = 1u << 5,    // GGUF: carries an attention scale folded into the queries (Gemma): the
                                // QK-norm weight when the layer has one, else the query rows
};

// One file tensor: `name` is a printf pattern, with %d for the layer of a per-layer entry.
typedef struct {
    fk_param_kind kind;
    arch_rows rows;
    unsigned flags;
    const char *name;
} arch_tensor;

typedef struct {
    const arch_tensor *t;
    int n;
} arch_tensor_set;

// One family. A row may lack a Hugging Face side (deci: a GGUF form of per-layer widths) or a
// GGUF side of its own (qwen2, mistral: exported as llama).
// How config.json of a family is read (hf.c): the GPT-2 keys, the Llama-family keys (with the
// model_type's own extras), or the Gemma keys of one generation.
typedef enum { ARCH_KEYS_NONE, ARCH_KEYS_GPT2, ARCH_KEYS_LLAMA, ARCH_KEYS_GEMMA } arch_keys;

typedef struct {
    int arch;                 // fk_arch, -1 when there is no Hugging Face model_type
    const char *model_type;   // config.json model_type, written and read
    const char *model_type_alias;  // another model_type read as this family (NULL: none)
    arch_keys keys;           // which config.json keys, and switches, it has
    int gemma;                // Gemma generation (1, 2, 3: the switches the Gemma keys set), 0 for others
    const char *hf_class;     // config.json architectures[0]
    arch_tensor_set hf;       // Hugging Face tensor names
    const char *gguf;         // general.architecture, NULL when exported under another family's name
    bool gguf_gemma;          // llama.cpp's Gemma conventions (norm weights 1 + w, NEOX RoPE order,
                              // a hard-coded attention scale)
    arch_tensor_set gguf_t;   // GGUF tensor names
} arch_family;

extern const arch_family arch_families[];
extern const int arch_n_families;

// The row of an fk_arch, and of a GGUF architecture name (n bytes; NULL when none imports it).
const arch_family *arch_of(fk_arch a);
const arch_family *arch_of_gguf(const char *name, size_t n);
// The GGUF architecture names, ", "-separated, in table order (for messages).
const char *arch_gguf_names(void);
// The row whose model_type (or alias, then *alias is set) is `type`; NULL when none.
const arch_family *arch_of_model_type(const char *type, bool *alias);
// The model_types read, aliases included, ", "-separated (for messages).
const char *arch_model_type_names(void);

// One tensor of a model under a set: rows [row0, row0 + rows) of table entry `param`.
typedef struct {
    char name[96];
    int param;
    int64_t row0, rows;
    unsigned flags;   // the set row's ARCH_T_* flags
} arch_item;

// The tensors of model m under set s, in the set's order, layer by layer (malloc'd array).
fk_status arch_items(const fk_model *m, arch_tensor_set s, arch_item **out, int *n);

#endif
