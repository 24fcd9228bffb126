// The architecture table: model families and their tensor names in Hugging Face folders and
// GGUF files (see arch.h). The sets list the tensors in the order the files hold them.
#include "arch.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SET(a) {a, (int)(sizeof a / sizeof a[0])}

// ------------------------------------------------------------------ tensor-name patterns

// GPT-2 (transformers' GPT2LMHeadModel): fused q/k/v, Conv1D weights stored transposed.
static const arch_tensor hf_gpt2[] = {
    {FK_P_TOK_EMB, ARCH_ROWS_ALL, 0, "transformer.wte.weight"},
    {FK_P_POS_EMB, ARCH_ROWS_ALL, 0, "transformer.wpe.weight"},
    {FK_P_LN1_W, ARCH_ROWS_ALL, 0, "transformer.h.%d.ln_1.weight"},
    {FK_P_LN1_B, ARCH_ROWS_ALL, 0, "transformer.h.%d.ln_1.bias"},
    {FK_P_QKV_W, ARCH_ROWS_ALL, ARCH_T_TRANSPOSE, "transformer.h.%d.attn.c_attn.weight"},
    {FK_P_QKV_B, ARCH_ROWS_ALL, 0, "transformer.h.%d.attn.c_attn.bias"},
    {FK_P_O_W, ARCH_ROWS_ALL, ARCH_T_TRANSPOSE, "transformer.h.%d.attn.c_proj.weight"},
    {FK_P_O_B, ARCH_ROWS_ALL, 0, "transformer.h.%d.attn.c_proj.bias"},
    {FK_P_LN2_W, ARCH_ROWS_ALL, 0, "transformer.h.%d.ln_2.weight"},
    {FK_P_LN2_B, ARCH_ROWS_ALL, 0, "transformer.h.%d.ln_2.bias"},
    {FK_P_UP_W, ARCH_ROWS_ALL, ARCH_T_TRANSPOSE, "transformer.h.%d.mlp.c_fc.weight"},
    {FK_P_UP_B, ARCH_ROWS_ALL, 0, "transformer.h.%d.mlp.c_fc.bias"},
    {FK_P_DOWN_W, ARCH_ROWS_ALL, ARCH_T_TRANSPOSE, "transformer.h.%d.mlp.c_proj.weight"},
    {FK_P_DOWN_B, ARCH_ROWS_ALL, 0, "transformer.h.%d.mlp.c_proj.bias"},
    {FK_P_LNF_W, ARCH_ROWS_ALL, 0, "transformer.ln_f.weight"},
    {FK_P_LNF_B, ARCH_ROWS_ALL, 0, "transformer.ln_f.bias"},
    {FK_P_LM_HEAD, ARCH_ROWS_ALL, 0, "lm_head.weight"},
};

// The Llama family (llama, mistral, qwen2, gemma*, fusekit): q/k/v and gate/up as separate
// tensors. With post-norms (Gemma 2/3) post_attention_layernorm is the attention output's norm and
// the FFN's input norm is pre_feedforward_layernorm; without, post_attention_layernorm is the latter.
static const arch_tensor hf_llama[] = {
    {FK_P_TOK_EMB, ARCH_ROWS_ALL, 0, "model.embed_tokens.weight"},
    {FK_P_POS_EMB, ARCH_ROWS_ALL, 0, "model.embed_positions.weight"},
    {FK_P_LN1_W, ARCH_ROWS_ALL, 0, "model.layers.%d.input_layernorm.weight"},
    {FK_P_LN1_B, ARCH_ROWS_ALL, 0, "model.layers.%d.input_layernorm.bias"},
    {FK_P_QKV_W, ARCH_ROWS_Q, 0, "model.layers.%d.self_attn.q_proj.weight"},
    {FK_P_QKV_B, ARCH_ROWS_Q, 0, "model.layers.%d.self_attn.q_proj.bias"},
    {FK_P_QKV_W, ARCH_ROWS_K, 0, "model.layers.%d.self_attn.k_proj.weight"},
    {FK_P_QKV_B, ARCH_ROWS_K, 0, "model.layers.%d.self_attn.k_proj.bias"},
    {FK_P_QKV_W, ARCH_ROWS_V, 0, "model.layers.%d.self_attn.v_proj.weight"},
    {FK_P_QKV_B, ARCH_ROWS_V, 0, "model.layers.%d.self_attn.v_proj.bias"},
    {FK_P_Q_NORM_W, ARCH_ROWS_ALL, 0, "model.layers.%d.self_attn.q_norm.weight"},
    {FK_P_K_NORM_W, ARCH_ROWS_ALL, 0, "model.layers.%d.self_attn.k_norm.weight"},
    {FK_P_O_W, ARCH_ROWS_ALL, 0, "model.layers.%d.self_attn.o_proj.weight"},
    {FK_P_O_B, ARCH_ROWS_ALL, 0, "model.layers.%d.self_attn.o_proj.bias"},
    {FK_P_ATTN_POST_W, ARCH_ROWS_ALL, ARCH_T_POST, "model.layers.%d.post_attention_layernorm.weight"},
    {FK_P_LN2_W, ARCH_ROWS_ALL, ARCH_T_POST, "model.layers.%d.pre_feedforward_layernorm.weight"},
    {FK_P_LN2_B, ARCH_ROWS_ALL, ARCH_T_POST, "model.layers.%d.pre_feedforward_layernorm.bias"},
    {FK_P_FFN_POST_W, ARCH_ROWS_ALL, ARCH_T_POST, "model.layers.%d.post_feedforward_layernorm.weight"},
    {FK_P_LN2_W, ARCH_ROWS_ALL, ARCH_T_NO_POST, "model.layers.%d.post_attention_layernorm.weight"},
    {FK_P_LN2_B, ARCH_ROWS_ALL, ARCH_T_NO_POST, "model.layers.%d.post_attention_layernorm.bias"},
    {FK_P_UP_W, ARCH_ROWS_GATE, 0, "model.layers.%d.mlp.gate_proj.weight"},
    {FK_P_UP_B, ARCH_ROWS_GATE, 0, "model.layers.%d.mlp.gate_proj.bias"},
    {FK_P_UP_W, ARCH_ROWS_UP, 0, "model.layers.%d.mlp.up_proj.weight"},
    {FK_P_UP_B, ARCH_ROWS_UP, 0, "model.layers.%d.mlp.up_proj.bias"},
    {FK_P_DOWN_W, ARCH_ROWS_ALL, 0, "model.layers.%d.mlp.down_proj.weight"},
    {FK_P_DOWN_B, ARCH_ROWS_ALL, 0, "model.layers.%d.mlp.down_proj.bias"},
    {FK_P_LNF_W, ARCH_ROWS_ALL, 0, "model.norm.weight"},
    {FK_P_LNF_B, ARCH_ROWS_ALL, 0, "model.norm.bias"},
    {FK_P_LM_HEAD, ARCH_ROWS_ALL, 0, "lm_head.weight"},
};

// llama.cpp's gpt2: fused q/k/v in the internal (untransposed) layout.
static const arch_tensor gguf_gpt2[] = {
    {FK_P_TOK_EMB, ARCH_ROWS_ALL, 0, "token_embd.weight"},
    {FK_P_POS_EMB, ARCH_ROWS_ALL, 0, "position_embd.weight"},
    {FK_P_LN1_W, ARCH_ROWS_ALL, ARCH_T_NORM, "blk.%d.attn_norm.weight"},
    {FK_P_LN1_B, ARCH_ROWS_ALL, 0, "blk.%d.attn_norm.bias"},
    {FK_P_QKV_W, ARCH_ROWS_ALL, 0, "blk.%d.attn_qkv.weight"},
    {FK_P_QKV_B, ARCH_ROWS_ALL, 0, "blk.%d.attn_qkv.bias"},
    {FK_P_O_W, ARCH_ROWS_ALL, 0, "blk.%d.attn_output.weight"},
    {FK_P_O_B, ARCH_ROWS_ALL, 0, "blk.%d.attn_output.bias"},
    {FK_P_LN2_W, ARCH_ROWS_ALL, ARCH_T_NORM, "blk.%d.ffn_norm.weight"},
    {FK_P_LN2_B, ARCH_ROWS_ALL, 0, "blk.%d.ffn_norm.bias"},
    {FK_P_UP_W, ARCH_ROWS_UP, 0, "blk.%d.ffn_up.weight"},
    {FK_P_UP_B, ARCH_ROWS_UP, 0, "blk.%d.ffn_up.bias"},
    {FK_P_DOWN_W, ARCH_ROWS_ALL, 0, "blk.%d.ffn_down.weight"},
    {FK_P_DOWN_B, ARCH_ROWS_ALL, 0, "blk.%d.ffn_down.bias"},
    {FK_P_LNF_W, ARCH_ROWS_ALL, ARCH_T_NORM, "output_norm.weight"},
    {FK_P_LNF_B, ARCH_ROWS_ALL, 0, "output_norm.bias"},
    {FK_P_LM_HEAD, ARCH_ROWS_ALL, 0, "output.weight"},
};

// llama.cpp's llama, deci and gemma*: separate q/k/v (queries and keys in its interleaved RoPE
// order, except Gemma's), gate/up.
static const arch_tensor gguf_llama[] = {
    {FK_P_TOK_EMB, ARCH_ROWS_ALL, 0, "token_embd.weight"},
    {FK_P_POS_EMB, ARCH_ROWS_ALL, 0, "position_embd.weight"},
    {FK_P_LN1_W, ARCH_ROWS_ALL, ARCH_T_NORM, "blk.%d.attn_norm.weight"},
    {FK_P_LN1_B, ARCH_ROWS_ALL, 0, "blk.%d.attn_norm.bias"},
    {FK_P_QKV_W, ARCH_ROWS_Q, ARCH_T_ROPE | ARCH_T_QSCALE, "blk.%d.attn_q.weight"},
    {FK_P_QKV_W, ARCH_ROWS_K, ARCH_T_ROPE, "blk.%d.attn_k.weight"},
    {FK_P_QKV_W, ARCH_ROWS_V, 0, "blk.%d.attn_v.weight"},
    {FK_P_QKV_B, ARCH_ROWS_Q, ARCH_T_ROPE, "blk.%d.attn_q.bias"},
    {FK_P_QKV_B, ARCH_ROWS_K, ARCH_T_ROPE, "blk.%d.attn_k.bias"},
    {FK_P_QKV_B, ARCH_ROWS_V, 0, "blk.%d.attn_v.bias"},
    {FK_P_Q_NORM_W, ARCH_ROWS_ALL, ARCH_T_NORM | ARCH_T_QSCALE, "blk.%d.attn_q_norm.weight"},
    {FK_P_K_NORM_W, ARCH_ROWS_ALL, ARCH_T_NORM, "blk.%d.attn_k_norm.weight"},
    {FK_P_O_W, ARCH_ROWS_ALL, 0, "blk.%d.attn_output.weight"},
    {FK_P_O_B, ARCH_ROWS_ALL, 0, "blk.%d.attn_output.bias"},
    {FK_P_ATTN_POST_W, ARCH_ROWS_ALL, ARCH_T_NORM, "blk.%d.post_attention_norm.weight"},
    {FK_P_LN2_W, ARCH_ROWS_ALL, ARCH_T_NORM, "blk.%d.ffn_norm.weight"},
    {FK_P_LN2_B, ARCH_ROWS_ALL, 0, "blk.%d.ffn_norm.bias"},
    {FK_P_UP_W, ARCH_ROWS_GATE, 0, "blk.%d.ffn_gate.weight"},
    {FK_P_UP_W, ARCH_ROWS_UP, 0, "blk.%d.ffn_up.weight"},
    {FK_P_UP_B, ARCH_ROWS_GATE, 0, "blk.%d.ffn_gate.bias"},
    {FK_P_UP_B, ARCH_ROWS_UP, 0, "blk.%d.ffn_up.bias"},
    {FK_P_DOWN_W, ARCH_ROWS_ALL, 0, "blk.%d.ffn_down.weight"},
    {FK_P_DOWN_B, ARCH_ROWS_ALL, 0, "blk.%d.ffn_down.bias"},
    {FK_P_FFN_POST_W, ARCH_ROWS_ALL, ARCH_T_NORM, "blk.%d.post_ffw_norm.weight"},
    {FK_P_LNF_W, ARCH_ROWS_ALL, ARCH_T_NORM, "output_norm.weight"},
    {FK_P_LNF_B, ARCH_ROWS_ALL, 0, "output_norm.bias"},
    {FK_P_LM_HEAD, ARCH_ROWS_ALL, 0, "output.weight"},
};

// ------------------------------------------------------------------ families

#define NONE {NULL, 0}  // a family without this naming (a macro: clang takes no const object as an initializer)

// In fk_arch order for the rows that have one (fk_arch_name, config.json's architectures).
const arch_family arch_families[] = {
    {FK_ARCH_GPT2, "gpt2", NULL, ARCH_KEYS_GPT2, 0, "GPT2LMHeadModel", SET(hf_gpt2), "gpt2", false, SET(gguf_gpt2)},
    {FK_ARCH_LLAMA, "llama", NULL, ARCH_KEYS_LLAMA, 0, "LlamaForCausalLM", SET(hf_llama), "llama", false, SET(gguf_llama)},
    {FK_ARCH_QWEN2, "qwen2", NULL, ARCH_KEYS_LLAMA, 0, "Qwen2ForCausalLM", SET(hf_llama), NULL, false, NONE},
    {FK_ARCH_MISTRAL, "mistral", NULL, ARCH_KEYS_LLAMA, 0, "MistralForCausalLM", SET(hf_llama), NULL, false, NONE},
    {FK_ARCH_FUSEKIT, "fusekit", NULL, ARCH_KEYS_LLAMA, 0, "FusekitForCausalLM", SET(hf_llama), NULL, false, NONE},
    {FK_ARCH_GEMMA, "gemma", NULL, ARCH_KEYS_GEMMA, 1, "GemmaForCausalLM", SET(hf_llama), "gemma", true, SET(gguf_llama)},
    {FK_ARCH_GEMMA2, "gemma2", NULL, ARCH_KEYS_GEMMA, 2, "Gemma2ForCausalLM", SET(hf_llama), "gemma2", true, SET(gguf_llama)},
    // gemma3: Gemma 3 with a vision tower, whose text model is text_config (its weights under another prefix)
    {FK_ARCH_GEMMA3, "gemma3_text", "gemma3", ARCH_KEYS_GEMMA, 3, "Gemma3ForCausalLM", SET(hf_llama), "gemma3", true, SET(gguf_llama)},
    {-1, NULL, NULL, ARCH_KEYS_NONE, 0, NULL, NONE, "deci", false, SET(gguf_llama)},  // llama with per-layer FFN widths and heads
};
const int arch_n_families = (int)(sizeof arch_families / sizeof arch_families[0]);

const arch_family *arch_of(fk_arch a) {
    for (int i = 0; i < arch_n_families; i++)
        if (arch_families[i].arch == (int)a) return &arch_families[i];
    FK_ASSERT(!"fk_arch without a row in the architecture table");
    return NULL;
}

const arch_family *arch_of_gguf(const char *name, size_t n) {
    for (int i = 0; i < arch_n_families; i++) {
        const char *g = arch_families[i].gguf;
        if (g && strlen(g) == n && memcmp(g, name, n) == 0) return &arch_families[i];
    }
    return NULL;
}

const char *arch_gguf_names(void) {
    static char buf[256];
    if (buf[0]) return buf;
    size_t k = 0;
    for (int i = 0; i < arch_n_families; i++)
        if (arch_families[i].gguf && k < sizeof buf)
            k += (size_t)snprintf(buf + k, sizeof buf - k, "%s%s", k ? ", " : "", arch_families[i].gguf);
    return buf;
}

const arch_family *arch_of_model_type(const char *type, bool *alias) {
    for (int i = 0; i < arch_n_families; i++) {
        const arch_family *f = &arch_families[i];
        *alias = f->model_type_alias && strcmp(f->model_type_alias, type) == 0;
        if ((f->model_type && strcmp(f->model_type, type) == 0) || *alias) return f;
    }
    return NULL;
}

const char *arch_model_type_names(void) {
    static char buf[256];
    if (buf[0]) return buf;
    size_t k = 0;
    for (int i = 0; i < arch_n_families; i++) {
        const arch_family *f = &arch_families[i];
        if (f->model_type && k < sizeof buf) k += (size_t)snprintf(buf + k, sizeof buf - k, "%s%s", k ? ", " : "", f->model_type);
        if (f->model_type_alias && k < sizeof buf) k += (size_t)snprintf(buf + k, sizeof buf - k, ", %s", f->model_type_alias);
    }
    return buf;
}

// ------------------------------------------------------------------ expansion

// The arena offset of a table role in layer l (global roles ignore l); -1 when absent.
static int64_t kind_offset(const fk_model *m, fk_param_kind k, int l) {
    const fk_layer_offsets *o = l >= 0 ? &m->layer[l] : NULL;
    switch (k) {
    case FK_P_TOK_EMB: return m->tok_emb;
    case FK_P_POS_EMB: return m->pos_emb;
    case FK_P_LNF_W: return m->lnf_w;
    case FK_P_LNF_B: return m->lnf_b;
    case FK_P_LM_HEAD: return m->cfg.tied ? -1 : m->lm_head;
    case FK_P_LN1_W: return o->ln1_w;
    case FK_P_LN1_B: return o->ln1_b;
    case FK_P_QKV_W: return o->qkv_w;
    case FK_P_QKV_B: return o->qkv_b;
    case FK_P_O_W: return o->o_w;
    case FK_P_O_B: return o->o_b;
    case FK_P_LN2_W: return o->ln2_w;
    case FK_P_LN2_B: return o->ln2_b;
    case FK_P_UP_W: return o->up_w;
    case FK_P_UP_B: return o->up_b;
    case FK_P_DOWN_W: return o->down_w;
    case FK_P_DOWN_B: return o->down_b;
    case FK_P_ATTN_POST_W: return o->attn_post_w;
    case FK_P_FFN_POST_W: return o->ffn_post_w;
    case FK_P_Q_NORM_W: return o->q_norm_w;
    case FK_P_K_NORM_W: return o->k_norm_w;
    case FK_P_COUNT: break;
    }
    return -1;
}

static bool per_layer(fk_param_kind k) {
    return k != FK_P_TOK_EMB && k != FK_P_POS_EMB && k != FK_P_LNF_W && k != FK_P_LNF_B && k != FK_P_LM_HEAD;
}

// Rows [*row0, *row0 + *rows) of entry p that tensor row r of layer l holds; false when the
// tensor does not exist for this config.
static bool item_rows(const fk_config *c, const arch_tensor *r, int l, const fk_param *p, int64_t *row0, int64_t *rows) {
    if (((r->flags & ARCH_T_POST) && !c->post_norms) || ((r->flags & ARCH_T_NO_POST) && c->post_norms)) return false;
    int64_t Dq = l >= 0 ? fk_config_heads(c, l) * c->head_dim : 0, Dkv = c->n_kv_head * c->head_dim, F = l >= 0 ? c->ffn[l] : 0;
    bool gated = fk_config_gated(c);
    *row0 = 0;
    *rows = p->shape[0];
    switch (r->rows) {
    case ARCH_ROWS_ALL: return true;
    case ARCH_ROWS_Q: *rows = Dq; return true;
    case ARCH_ROWS_K: *row0 = Dq; *rows = Dkv; return true;
    case ARCH_ROWS_V: *row0 = Dq + Dkv; *rows = Dkv; return true;
    case ARCH_ROWS_GATE: *rows = F; return gated;
    case ARCH_ROWS_UP: if (gated) { *row0 = F; *rows = F; } return true;
    }
    return false;
}

typedef struct { arch_item *t; int n, cap; } item_list;

// Appends tensor row r of layer l (-1: a global tensor) when the model has it.
static fk_status add_item(item_list *L, const fk_model *m, const arch_tensor *r, int l) {
    int64_t off = kind_offset(m, r->kind, l);
    if (off < 0) return FK_OK;
    const fk_param *p = fk_model_param_of(m, off);
    FK_ASSERT(p && p->offset == off);
    arch_item it = {.param = (int)(p - m->params), .flags = r->flags};
    if (!item_rows(&m->cfg, r, l, p, &it.row0, &it.rows)) return FK_OK;
    snprintf(it.name, sizeof it.name, r->name, l);
    if (L->n == L->cap) {
        int cap = L->cap ? 2 * L->cap : 64;
        arch_item *t = realloc(L->t, (size_t)cap * sizeof *t);
        if (!t) return fk_error(FK_ERR_NOMEM, "out of memory");
        L->t = t;
        L->cap = cap;
    }
    L->t[L->n++] = it;
    return FK_OK;
}

fk_status arch_items(const fk_model *m, arch_tensor_set s, arch_item **out, int *n) {
    item_list L = {0};
    fk_status st = FK_OK;
    int first = 0, last = s.n;  // the per-layer rows are [first, last)
    while (first < s.n && !per_layer(s.t[first].kind)) first++;
    while (last > first && !per_layer(s.t[last - 1].kind)) last--;
    for (int i = 0; i < first && st == FK_OK; i++) st = add_item(&L, m, &s.t[i], -1);
    for (int l = 0; l < (int)m->cfg.n_layer; l++)
        for (int i = first; i < last && st == FK_OK; i++) st = add_item(&L, m, &s.t[i], l);
    for (int i = last; i < s.n && st == FK_OK; i++) st = add_item(&L, m, &s.t[i], -1);
    if (st != FK_OK) { free(L.t); return st; }
    *out = L.t;
    *n = L.n;
    return FK_OK;
}
