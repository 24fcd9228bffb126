// GGUF model export and import (llama.cpp's llama, deci, gpt2, gemma, gemma2 and gemma3 architectures).
#include "fusekit/gguf_model.h"
#include "fusekit/quants.h"
#include "arch.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

// ------------------------------------------------------------------ architecture

// Whether a GGUF architecture follows llama.cpp's Gemma conventions (its row in the table).
static bool gemma_arch(const char *arch) {
    const arch_family *f = arch_of_gguf(arch, strlen(arch));
    return f && f->gguf_gemma;
}

// The Gemma generation of a GGUF architecture (the table's row: 1, 2, 3), 0 for the others.
static int gemma_gen(const char *arch) {
    const arch_family *f = arch_of_gguf(arch, strlen(arch));
    return f ? f->gemma : 0;
}

static bool uniform_arr(const int64_t *v, int64_t n) {
    for (int64_t i = 1; i < n; i++) if (v[i] != v[0]) return false;
    return true;
}

static void layer_heads(const fk_config *c, int64_t *h) {
    for (int64_t l = 0; l < c->n_layer; l++) h[l] = fk_config_heads(c, l);
}

// llama.cpp's attention scale for a Gemma architecture (src/models/gemma*.cpp): 1/sqrt(head_dim),
// except Gemma 2 27B (46 layers) and Gemma 3 27B (62 layers), which use 1/sqrt(d_model / n_head).
static float gemma_llama_attn_scale(const char *arch, int64_t n_layer, int64_t d, int64_t n_head, int64_t hd) {
    if ((gemma_gen(arch) == 2 && n_layer == 46) || (gemma_gen(arch) == 3 && n_layer == 62))
        return 1.0f / sqrtf((float)(d / n_head));
    return 1.0f / sqrtf((float)hd);
}

// The layers llama.cpp makes sliding when no sliding_window_pattern key says otherwise:
// layer l of n_pattern is sliding unless l % n_pattern == n_pattern - 1 (gemma2: 2, gemma3: 6).
static bool gemma_default_sliding(int64_t l, int64_t n_pattern) { return n_pattern == 0 || l % n_pattern < n_pattern - 1; }

static int64_t gemma_pattern(const char *arch) { return arch_of_gguf(arch, strlen(arch))->gguf_swa_pattern; }

// The row that claims c (its defining switches) and represents it; when none claims it, what
// no architecture represents, or which switches no architecture combines.
fk_status fk_gguf_model_arch(const fk_config *c, const char **arch) {
    *arch = NULL;
    for (int i = 0; i < arch_n_families; i++) {
        const arch_family *f = &arch_families[i];
        if (!f->gguf_claims || !f->gguf_claims(f, c)) continue;
        FK_TRY(f->gguf_fits(f, c));
        *arch = f->gguf;
        return FK_OK;
    }
    FK_TRY(arch_gguf_refuse(NULL, c));
    char what[160] = "";
    if (c->norm == FK_NORM_RMSNORM && c->bias_norm) strcat(what, "RMSNorm with bias, ");
    if (c->pos == FK_POS_NONE) strcat(what, "no position encoding, ");
    if (c->norm == FK_NORM_LAYERNORM && c->pos == FK_POS_ROPE) strcat(what, "LayerNorm with RoPE, ");
    if (c->norm == FK_NORM_RMSNORM && c->pos == FK_POS_LEARNED) strcat(what, "RMSNorm with learned positions, ");
    if (c->pos == FK_POS_ROPE && c->mlp == FK_MLP_GELU) strcat(what, "GELU MLP with RoPE, ");
    if (c->pos == FK_POS_LEARNED && c->mlp == FK_MLP_SWIGLU) strcat(what, "SwiGLU MLP with learned positions, ");
    size_t n = strlen(what);
    if (n >= 2) what[n - 2] = 0;
    else snprintf(what, sizeof what, "this combination of switches");
    return fk_error(FK_ERR_UNSUPPORTED, "gguf export: the model (%s) has no llama.cpp architecture: llama needs RMSNorm without bias, "
                    "RoPE and SwiGLU; gpt2 needs LayerNorm with bias, learned positions and GELU", what);
}

// ------------------------------------------------------------------ tensor table

// One GGUF tensor: `rows` rows of `cols` floats at `w` inside the model's arena (1-D when
// one_d); rope_hd > 0: rows are permuted per head of rope_hd rows. Export writes
// (w + add) * mul (Gemma: the RMSNorm offset, an attention scale folded into the queries);
// import reads a model whose config makes them 0 and 1. n_exp > 0: a 3-D tensor [cols, rows,
// n_exp] of the layer's experts, expert e's rows at w + e * exp_stride. f32: kept F32 in a
// half-precision export (MoE routers, as llama.cpp's converter and quantizer keep them).
typedef struct {
    char name[96];
    float *w;
    int64_t rows, cols;
    bool one_d, f32;
    int64_t rope_hd;
    float add, mul;
    int64_t n_exp, exp_stride;
} gt;

typedef struct { gt *t; int n; } gt_list;

// The GGUF tensors of a model under tensor set `set` of its architecture's row of the table,
// pointing into its weight arena; the experts in the set's ARCH_T_ALT form when alt (older files).
static fk_status gguf_tensors(const fk_model *m, const char *arch, arch_tensor_set set, bool alt, gt_list *l) {
    const fk_config *c = &m->cfg;
    const arch_family *fam = arch_of_gguf(arch, strlen(arch));
    FK_ASSERT(fam);
    memset(l, 0, sizeof *l);
    int64_t d = c->d_model, hd = c->head_dim;
    bool gemma = fam->gguf_gemma;
    // Gemma: llama.cpp's converter stores RMSNorm weights as 1 + w and hard-codes the attention
    // scale; another scale is folded into the queries (gemma3: into the QK-norm weights, which
    // multiply the queries). NEOX order (Gemma): query and key rows as they are, no permutation.
    float noff = gemma ? c->norm_offset : 0.0f, qmul = 1.0f;
    if (gemma && c->attn_scale != 0)
        qmul = c->attn_scale / gemma_llama_attn_scale(arch, c->n_layer, d, c->n_head, hd);
    if (fabsf(qmul - 1.0f) <= 1e-6f) qmul = 1.0f;
    arch_item *it;
    int n;
    FK_TRY(arch_items(m, set, &it, &n));
    l->t = malloc((size_t)(n > 0 ? n : 1) * sizeof *l->t);
    if (!l->t) { free(it); return fk_error(FK_ERR_NOMEM, "out of memory"); }
    for (int i = 0; i < n; i++) {
        const fk_param *p = &m->params[it[i].param];
        unsigned f = it[i].flags;
        bool expert = p->kind == FK_P_EXP_UP_W || p->kind == FK_P_EXP_DOWN_W;
        if (expert && alt != ((f & ARCH_T_ALT) != 0)) continue;  // the other form of the experts
        gt *t = &l->t[l->n++];
        memcpy(t->name, it[i].name, sizeof t->name);
        t->n_exp = it[i].n_exp;
        t->exp_stride = it[i].exp_stride;
        t->f32 = p->kind == FK_P_ROUTER_W || p->kind == FK_P_SHARED_GATE_W;
        t->one_d = p->ndim == 1;
        t->cols = t->one_d ? 1 : p->shape[1];
        t->w = m->w + p->offset + it[i].row0 * t->cols;
        t->rows = it[i].rows;
        if ((f & ARCH_T_HEAD_ROWS) && c->qk_norm_ln) {  // stablelm: the heads' QK-norm weights as (heads, head_dim), F32
            t->one_d = false;
            t->f32 = true;
            t->cols = hd;
            t->rows /= hd;
        }
        t->rope_hd = (f & ARCH_T_ROPE) && !fam->gguf_neox ? hd : 0;
        t->add = f & ARCH_T_NORM ? noff : 0;
        // the query scale goes on the QK-norm weight when the layer has one, else on the query rows
        bool qscale = (f & ARCH_T_QSCALE) && (p->kind != FK_P_QKV_W || m->layer[p->layer].q_norm_w < 0);
        t->mul = qscale ? qmul : 1;
    }
    free(it);
    return FK_OK;
}

// Hugging Face rotate-half order -> llama.cpp interleaved order, per head of hd rows:
// out row 2j+s = in row s*hd/2+j (inverse: the other way round).
static void rope_permute(float *dst, const float *src, int64_t rows, int64_t cols, int64_t hd, bool inverse) {
    int64_t half = hd / 2;
    for (int64_t h = 0; h < rows / hd; h++)
        for (int64_t j = 0; j < half; j++)
            for (int64_t s = 0; s < 2; s++) {
                int64_t il = h * hd + 2 * j + s, hf = h * hd + s * half + j;
                if (inverse) memcpy(dst + hf * cols, src + il * cols, (size_t)cols * sizeof(float));
                else memcpy(dst + il * cols, src + hf * cols, (size_t)cols * sizeof(float));
            }
}

// ------------------------------------------------------------------ export

static fk_status set_u32(fk_gguf_writer *w, const char *arch, const char *key, int64_t v) {
    char k[128];
    snprintf(k, sizeof k, "%s.%s", arch, key);
    if (v < 0 || v > UINT32_MAX) return fk_error(FK_ERR_ARG, "gguf export: %s = %lld does not fit in u32", k, (long long)v);
    return fk_gguf_set_u32(w, k, (uint32_t)v);
}

static fk_status set_f32(fk_gguf_writer *w, const char *arch, const char *key, float v) {
    char k[128];
    snprintf(k, sizeof k, "%s.%s", arch, key);
    return fk_gguf_set_f32(w, k, v);
}

static fk_status set_bool(fk_gguf_writer *w, const char *arch, const char *key, bool v) {
    char k[128];
    snprintf(k, sizeof k, "%s.%s", arch, key);
    return fk_gguf_set_bool(w, k, v);
}

// A scalar u32 when every layer has the same value, else an i32 array (what llama.cpp's
// get_key_or_arr reads).
static fk_status set_per_layer(fk_gguf_writer *w, const char *arch, const char *key, const int64_t *v, int64_t L) {
    if (uniform_arr(v, L)) return set_u32(w, arch, key, v[0]);
    int32_t a[FK_MAX_LAYERS];
    for (int64_t l = 0; l < L; l++) a[l] = (int32_t)v[l];
    char k[128];
    snprintf(k, sizeof k, "%s.%s", arch, key);
    return fk_gguf_set_arr(w, k, FK_GGUF_I32, a, (uint64_t)L);
}

// llama.cpp's rope_freqs tensor (a divisor of each inverse frequency) for what it expresses so:
// Llama 3 scaling (the factors its converter computes: 1 for short wavelengths, the factor for
// long ones, 1 / ((1 - s) / factor + s) between) and LongRoPE whose long and short factors are one
// set with attention factor 1. The count written to f (rotary dims / 2), or 0 for none.
static int64_t rope_freq_factors(const fk_config *c, float *f) {
    int64_t rd = fk_config_rotary_dim(c), half = rd / 2;
    if (c->rope_ext == FK_ROPE_EXT_LONGROPE) {
        if (c->rope_attn_factor != 1 || memcmp(c->rope_short, c->rope_long, (size_t)half * sizeof(float)) != 0) return 0;
        memcpy(f, c->rope_short, (size_t)half * sizeof(float));
        return half;
    }
    if (c->rope_orig_ctx <= 0) return 0;
    double lo_wave = (double)c->rope_orig_ctx / c->rope_low_freq, hi_wave = (double)c->rope_orig_ctx / c->rope_high_freq;
    for (int64_t d = 0; d < half; d++) {
        double wave = 2 * M_PI * pow(c->rope_theta, (double)(2 * d) / (double)rd), s = ((double)c->rope_orig_ctx / wave - c->rope_low_freq) /
                                                                                    ((double)c->rope_high_freq - c->rope_low_freq);
        f[d] = wave < hi_wave ? 1.0f : wave > lo_wave ? c->rope_scale : (float)(1 / ((1 - s) / c->rope_scale + s));
    }
    return half;
}

// YaRN as llama.cpp reads it: attn_factor is transformers' attention factor over llama.cpp's own
// 1 + 0.1 ln factor (yarn_config's inverse); betas 32/1 and truncation are llama.cpp's fixed ones.
static fk_status yarn_keys(fk_gguf_writer *w, const fk_config *c, const char *arch) {
    char k[128];
    snprintf(k, sizeof k, "%s.rope.scaling.type", arch);
    FK_TRY(fk_gguf_set_str(w, k, "yarn", 4));
    FK_TRY(set_f32(w, arch, "rope.scaling.factor", c->rope_ext_factor));
    FK_TRY(set_u32(w, arch, "rope.scaling.original_context_length", c->rope_ext_ctx));
    float own = c->rope_ext_factor > 1 ? 1.0f + 0.1f * logf(c->rope_ext_factor) : 1.0f;
    return set_f32(w, arch, "rope.scaling.attn_factor", c->rope_attn_factor / own);
}

// Linear RoPE scaling (llama.cpp divides the positions by the factor, as transformers' "linear").
static fk_status linear_scaling_keys(fk_gguf_writer *w, const fk_config *c, const char *arch) {
    char k[128];
    snprintf(k, sizeof k, "%s.rope.scaling.type", arch);
    FK_TRY(fk_gguf_set_str(w, k, "linear", 6));
    return set_f32(w, arch, "rope.scaling.factor", c->rope_scale);
}

// The Gemma keys beyond llama's: sliding windows (with the layer pattern when it is not the one
// llama.cpp hard-codes), the local RoPE base, soft-capping, linear RoPE scaling.
static fk_status gemma_keys(fk_gguf_writer *w, const fk_config *c, const char *arch) {
    bool g2 = gemma_gen(arch) == 2, g3 = gemma_gen(arch) == 3, sliding = arch_any_sliding(c);
    if (g2 || (g3 && sliding)) {
        FK_TRY(set_u32(w, arch, "attention.sliding_window", c->sliding_window > 0 ? c->sliding_window : c->max_seq));
        uint8_t pat[FK_MAX_LAYERS];
        bool dflt = true;
        for (int64_t l = 0; l < c->n_layer; l++) {
            pat[l] = sliding && c->sliding[l];
            dflt &= pat[l] == gemma_default_sliding(l, gemma_pattern(arch));
        }
        if (!dflt) {
            char k[128];
            snprintf(k, sizeof k, "%s.attention.sliding_window_pattern", arch);
            FK_TRY(fk_gguf_set_arr(w, k, FK_GGUF_BOOL, pat, (uint64_t)c->n_layer));
        }
        float local = c->rope_theta_local > 0 ? c->rope_theta_local : c->rope_theta;
        if (g3 || local != c->rope_theta) FK_TRY(set_f32(w, arch, "rope.freq_base_swa", local));
    }
    if (g2) FK_TRY(set_f32(w, arch, "attn_logit_softcapping", c->attn_softcap));
    if (g2 || c->final_softcap > 0) FK_TRY(set_f32(w, arch, "final_logit_softcapping", c->final_softcap));
    if (c->rope_scale != 0 && c->rope_scale != 1) FK_TRY(linear_scaling_keys(w, c, arch));
    return FK_OK;
}

// The experts as llama.cpp reads them: expert_count (one for every layer: gguf_fits checked), expert_used_count,
// and for qwen2moe and qwen3moe the experts' width and the shared expert's beside feed_forward_length.
static fk_status moe_keys(fk_gguf_writer *w, const fk_config *c, const char *arch, unsigned keys) {
    FK_TRY(set_u32(w, arch, "expert_count", fk_config_experts(c, 0)));
    FK_TRY(set_u32(w, arch, "expert_used_count", c->n_expert_used));
    if (keys & ARCH_GK_EXPERT_FFN) FK_TRY(set_u32(w, arch, "expert_feed_forward_length", c->expert_ffn));
    if (keys & ARCH_GK_MOE_SHARED) FK_TRY(set_u32(w, arch, "expert_shared_feed_forward_length", c->ffn[0]));
    return FK_OK;
}

static fk_status export_keys(fk_gguf_writer *w, const fk_config *c, const char *arch, fk_dtype type, const char *name) {
    FK_TRY(fk_gguf_set_str(w, "general.architecture", arch, strlen(arch)));
    FK_TRY(fk_gguf_set_str(w, "general.name", name, strlen(name)));
    FK_TRY(fk_gguf_set_u32(w, "general.file_type", type == FK_DT_F32 ? 0 : type == FK_DT_F16 ? 1 : 32));
    FK_TRY(set_u32(w, arch, "vocab_size", c->vocab_size));
    // llama.cpp's non-Gemma graphs have no sliding windows (phi3's key is read and switched off):
    // within the window full attention is the same, so the window is exported as the context
    bool gemma_row = arch_of_gguf(arch, strlen(arch))->gguf_keys & ARCH_GK_GEMMA;
    FK_TRY(set_u32(w, arch, "context_length", !gemma_row && arch_any_sliding(c) ? c->sliding_window : c->max_seq));
    FK_TRY(set_u32(w, arch, "embedding_length", c->d_model));
    FK_TRY(set_u32(w, arch, "block_count", c->n_layer));
    int64_t h[FK_MAX_LAYERS], eff[FK_MAX_LAYERS];
    layer_heads(c, h);
    for (int64_t l = 0; l < c->n_layer; l++) eff[l] = c->expert_ffn;  // MoE without a shared expert: llama.cpp's experts' n_ff
    bool moe_ffn = c->n_expert > 0 && !arch_moe_shared(c);
    FK_TRY(set_per_layer(w, arch, "feed_forward_length", moe_ffn ? eff : c->ffn, c->n_layer));
    FK_TRY(set_per_layer(w, arch, "attention.head_count", h, c->n_layer));
    unsigned keys = arch_of_gguf(arch, strlen(arch))->gguf_keys;
    if (c->n_expert > 0) FK_TRY(moe_keys(w, c, arch, keys));
    if (keys & ARCH_GK_LAYERNORM) FK_TRY(set_f32(w, arch, "attention.layer_norm_epsilon", c->norm_eps));
    if (keys & ARCH_GK_LLAMA) {
        FK_TRY(set_u32(w, arch, "attention.head_count_kv", c->n_kv_head));
        FK_TRY(set_f32(w, arch, "rope.freq_base", c->rope_theta));
        FK_TRY(set_u32(w, arch, "rope.dimension_count", fk_config_rotary_dim(c)));
        if (!(keys & ARCH_GK_GEMMA) && arch_rope_scaled(c) && c->rope_orig_ctx == 0) FK_TRY(linear_scaling_keys(w, c, arch));  // not Llama 3's factor
        if (c->rope_ext == FK_ROPE_EXT_YARN) FK_TRY(yarn_keys(w, c, arch));
        if (c->rope_ext == FK_ROPE_EXT_LONGROPE && strcmp(arch, "phi3") == 0) {  // llama.cpp: long factors when n_ctx > it
            FK_TRY(set_u32(w, arch, "rope.scaling.original_context_length", c->rope_ext_ctx));
            FK_TRY(set_f32(w, arch, "rope.scaling.attn_factor", c->rope_attn_factor));
        }
        if (!(keys & ARCH_GK_LAYERNORM)) FK_TRY(set_f32(w, arch, "attention.layer_norm_rms_epsilon", c->norm_eps));
    }
    // llama.cpp's default head size is embedding_length / head_count (of layer 0)
    if ((keys & ARCH_GK_LLAMA) && (c->head_dim * h[0] != c->d_model || (keys & ARCH_GK_HEAD_LENGTHS))) {
        FK_TRY(set_u32(w, arch, "attention.key_length", c->head_dim));
        FK_TRY(set_u32(w, arch, "attention.value_length", c->head_dim));
    }
    if (keys & ARCH_GK_PARALLEL) FK_TRY(set_bool(w, arch, "use_parallel_residual", c->residual == FK_RESID_PARALLEL));
    if (keys & ARCH_GK_ALIBI) {  // mpt: llama.cpp's names for alibi_bias_max and clip_qkv
        FK_TRY(set_u32(w, arch, "attention.head_count_kv", c->n_kv_head));
        FK_TRY(set_f32(w, arch, "attention.max_alibi_bias", c->alibi_bias_max));
        if (c->clip_qkv > 0) FK_TRY(set_f32(w, arch, "attention.clamp_kqv", c->clip_qkv));
    }
    return keys & ARCH_GK_GEMMA ? gemma_keys(w, c, arch) : FK_OK;
}

// A padded model (more rows than tokens): the tokenizer's arrays get an entry per padding row,
// "[PAD<id>]" of type UNUSED (score -1000 where scores are kept), as llama.cpp's converter writes
// them: llama.cpp reads as many tokens as the embedding has rows.
static fk_status pad_tokens(fk_gguf_writer *w, const fk_tokenizer *tok, int64_t rows) {
    int64_t n = fk_tok_vocab_size(tok), np = rows - n;
    if (np <= 0) return FK_OK;
    char (*names)[24] = malloc((size_t)np * sizeof *names);
    const char **strs = malloc((size_t)np * sizeof *strs);
    uint64_t *lens = malloc((size_t)np * sizeof *lens);
    int32_t *types = malloc((size_t)np * sizeof *types);
    float *scores = malloc((size_t)np * sizeof *scores);
    fk_status st = names && strs && lens && types && scores ? FK_OK : fk_error(FK_ERR_NOMEM, "out of memory for padding tokens");
    for (int64_t i = 0; st == FK_OK && i < np; i++) {
        lens[i] = (uint64_t)snprintf(names[i], sizeof names[i], "[PAD%lld]", (long long)(n + i));
        strs[i] = names[i];
        types[i] = FK_TT_UNUSED;
        scores[i] = -1000.0f;
    }
    if (st == FK_OK) st = fk_gguf_append_arr(w, "tokenizer.ggml.tokens", NULL, strs, lens, (uint64_t)np);
    if (st == FK_OK) st = fk_gguf_append_arr(w, "tokenizer.ggml.token_type", types, NULL, NULL, (uint64_t)np);
    if (st == FK_OK && fk_tok_kind_of(tok) == FK_TOK_SPM) st = fk_gguf_append_arr(w, "tokenizer.ggml.scores", scores, NULL, NULL, (uint64_t)np);
    free(names); free(strs); free(lens); free(types); free(scores);
    return st;
}

fk_status fk_gguf_export(const fk_model *m, const fk_tokenizer *tok, const char *path, fk_dtype type, const char *name,
                         fk_gguf_export_stats *stats) {
    if (fk_model_is_frozen(m))
        return fk_error(FK_ERR_ARG, "gguf export %s: the model reads its matrices as stored in its file (loaded frozen); load it decoded to export it",
                        path);
    if (type != FK_DT_F32 && type != FK_DT_F16 && type != FK_DT_BF16)
        return fk_error(FK_ERR_ARG, "gguf export: type %s is not one of F32, F16, BF16", fk_dtype_name(type));
    const char *arch;
    fk_status st = fk_gguf_model_arch(&m->cfg, &arch);
    if (st != FK_OK) return fk_error_context(st, "%s", path);
    if (tok && fk_tok_vocab_size(tok) > m->cfg.vocab_size)
        return fk_error(FK_ERR_ARG, "%s: the tokenizer has %d tokens but the model's vocabulary only %lld", path, fk_tok_vocab_size(tok),
                        (long long)m->cfg.vocab_size);
    gt_list l;
    FK_TRY(gguf_tensors(m, arch, arch_of_gguf(arch, strlen(arch))->gguf_t, false, &l));
    fk_gguf_writer *w = fk_gguf_writer_new();
    void **bufs = calloc((size_t)l.n + 1, sizeof *bufs);
    st = w && bufs ? FK_OK : fk_error(FK_ERR_NOMEM, "out of memory");
    if (st == FK_OK) st = export_keys(w, &m->cfg, arch, type, name ? name : "fusekit");
    if (st == FK_OK && tok) {
        st = fk_tok_to_gguf(tok, w);
        if (st == FK_OK) st = pad_tokens(w, tok, m->cfg.vocab_size);
        if (st != FK_OK) fk_error_context(st, "%s", path);
    }
    uint64_t total = 0;
    float freqs[FK_LIM_HEAD_DIM / 2];
    const fk_config *c = &m->cfg;
    uint64_t nf = c->rope_n_factors;
    if (st == FK_OK && strcmp(arch, "phi3") == 0 && c->rope_ext == FK_ROPE_EXT_LONGROPE) {  // phi3: both factor sets
        st = fk_gguf_add_tensor(w, "rope_factors_long.weight", FK_GGML_F32, 1, &nf, c->rope_long, nf * 4);
        if (st == FK_OK) st = fk_gguf_add_tensor(w, "rope_factors_short.weight", FK_GGML_F32, 1, &nf, c->rope_short, nf * 4);
        total += 2 * nf * 4;
    } else if (st == FK_OK && (nf = (uint64_t)rope_freq_factors(c, freqs)) > 0) {  // Llama 3, single-set LongRoPE: rope_freqs
        st = fk_gguf_add_tensor(w, "rope_freqs.weight", FK_GGML_F32, 1, &nf, freqs, nf * 4);
        total += nf * 4;
    }
    for (int i = 0; i < l.n && st == FK_OK; i++) {
        const gt *t = &l.t[i];
        int64_t ne = t->n_exp ? t->n_exp : 1, numel = t->rows * t->cols * ne;
        bool half = type != FK_DT_F32 && !t->one_d && !t->f32;
        const void *data = t->w;
        if (t->rope_hd || half || t->add != 0 || t->mul != 1 || t->n_exp) {
            float *tmp = malloc((size_t)numel * sizeof(float));
            bufs[i] = tmp;
            if (!tmp) { st = fk_error(FK_ERR_NOMEM, "out of memory"); break; }
            if (t->rope_hd) rope_permute(tmp, t->w, t->rows, t->cols, t->rope_hd, false);
            else  // the experts' slices one after another (expert-major)
                for (int64_t e = 0, sz = t->rows * t->cols; e < ne; e++) memcpy(tmp + e * sz, t->w + e * t->exp_stride, (size_t)sz * sizeof(float));
            if (t->add != 0 || t->mul != 1)
                for (int64_t j = 0; j < numel; j++) tmp[j] = (tmp[j] + t->add) * t->mul;
            if (half) {
                uint16_t *h = (uint16_t *)tmp;  // in place: element j is written after it is read
                for (int64_t j = 0; j < numel; j++) h[j] = type == FK_DT_F16 ? fk_f32_to_f16(tmp[j]) : fk_f32_to_bf16(tmp[j]);
            }
            data = tmp;
        }
        uint64_t dims[3] = {(uint64_t)t->cols, (uint64_t)t->rows, (uint64_t)ne};
        if (t->one_d) dims[0] = (uint64_t)t->rows;
        uint32_t gtype = !half ? FK_GGML_F32 : type == FK_DT_F16 ? FK_GGML_F16 : FK_GGML_BF16;
        uint64_t nbytes = (uint64_t)numel * (half ? 2 : 4);
        st = fk_gguf_add_tensor(w, t->name, gtype, t->one_d ? 1 : t->n_exp ? 3 : 2, dims, data, nbytes);
        total += nbytes;
    }
    if (st == FK_OK) {
        st = fk_gguf_writer_write(w, path);
        if (st != FK_OK && !strstr(fk_last_error(), path)) fk_error_context(st, "%s", path);
    }
    if (st == FK_OK && stats) *stats = (fk_gguf_export_stats){arch, l.n, total};
    for (int i = 0; bufs && i < l.n; i++) free(bufs[i]);
    free(bufs);
    free(l.t);
    fk_gguf_writer_free(w);
    return st;
}

// ------------------------------------------------------------------ import

typedef struct { const fk_gguf *g; const char *arch; } kreader;

static fk_status key_i64(const kreader *r, const char *key, bool required, int64_t def, int64_t *v) {
    char k[128];
    snprintf(k, sizeof k, "%s.%s", r->arch, key);
    if (!fk_gguf_find(r->g, k)) {
        if (required) return fk_error(FK_ERR_FORMAT, "%s: required key '%s' is missing", r->g->path, k);
        *v = def;
        return FK_OK;
    }
    FK_TRY(fk_gguf_get_i64(r->g, k, v));
    if (*v < 0) return fk_error(FK_ERR_FORMAT, "%s: key '%s' is %lld, expected a count", r->g->path, k, (long long)*v);
    return FK_OK;
}

static fk_status key_f64(const kreader *r, const char *key, bool required, double def, double *v) {
    char k[128];
    snprintf(k, sizeof k, "%s.%s", r->arch, key);
    if (!fk_gguf_find(r->g, k)) {
        if (required) return fk_error(FK_ERR_FORMAT, "%s: required key '%s' is missing", r->g->path, k);
        *v = def;
        return FK_OK;
    }
    FK_TRY(fk_gguf_get_f64(r->g, k, v));
    if (!(fabs(*v) <= FLT_MAX))  // every such key becomes a float: NaN, infinities and larger values are refused here
        return fk_error(FK_ERR_FORMAT, "%s: key '%s' is %g, expected a finite number within float range", r->g->path, k, *v);
    return FK_OK;
}

// A per-layer count: a scalar for every layer or an integer array of L entries.
static fk_status key_per_layer(const kreader *r, const char *key, bool required, int64_t L, int64_t *v, bool *present) {
    char k[128];
    snprintf(k, sizeof k, "%s.%s", r->arch, key);
    const fk_gguf_kv *kv = fk_gguf_find(r->g, k);
    *present = kv != NULL;
    if (!kv) return required ? fk_error(FK_ERR_FORMAT, "%s: required key '%s' is missing", r->g->path, k) : FK_OK;
    if (kv->type != FK_GGUF_ARRAY) {
        int64_t s;
        FK_TRY(key_i64(r, key, true, 0, &s));
        for (int64_t l = 0; l < L; l++) v[l] = s;
        return FK_OK;
    }
    bool integer = kv->elem_type == FK_GGUF_U8 || kv->elem_type == FK_GGUF_I8 || kv->elem_type == FK_GGUF_U16 ||
                   kv->elem_type == FK_GGUF_I16 || kv->elem_type == FK_GGUF_U32 || kv->elem_type == FK_GGUF_I32 ||
                   kv->elem_type == FK_GGUF_U64 || kv->elem_type == FK_GGUF_I64;
    if (!integer)
        return fk_error(FK_ERR_FORMAT, "%s: key '%s' is an array of %s, expected integers (one per layer)", r->g->path, k,
                        fk_gguf_type_name(kv->elem_type));
    if (kv->count != (uint64_t)L)
        return fk_error(FK_ERR_FORMAT, "%s: key '%s' has %llu entries but block_count is %lld", r->g->path, k,
                        (unsigned long long)kv->count, (long long)L);
    for (int64_t l = 0; l < L; l++) v[l] = fk_gguf_arr_i64(kv, (uint64_t)l);
    return FK_OK;
}

static bool has_tensor(const fk_gguf *g, const char *name) { return fk_gguf_find_tensor(g, name) != NULL; }

// The tensor set a file of architecture `arch` is read with: its row's, or the row's older converters'
// fused form when the file has that form's layer-0 attn_qkv.weight (phi2).
static arch_tensor_set import_set(const fk_gguf *g, const char *arch) {
    const arch_family *f = arch_of_gguf(arch, strlen(arch));
    const arch_tensor *qkv = f->gguf_t_fused.n ? arch_tensor_of(f->gguf_t_fused, FK_P_QKV_W, ARCH_ROWS_ALL) : NULL;
    char name[96] = "";
    if (qkv) snprintf(name, sizeof name, qkv->name, 0);
    return qkv && has_tensor(g, name) ? f->gguf_t_fused : f->gguf_t;
}

// Linear RoPE scaling of a Gemma file: rope.scaling.type none or linear (llama.cpp's default
// when absent), rope.scaling.factor (or the older rope.scale_linear); *f = 0 when none.
static fk_status gemma_rope_scale(const kreader *r, double *f) {
    const fk_gguf *g = r->g;
    char k[128];
    snprintf(k, sizeof k, "%s.rope.scaling.type", r->arch);
    fk_gguf_str sc = {"linear", 6};
    if (fk_gguf_find(g, k)) FK_TRY(fk_gguf_get_str(g, k, &sc));
    bool none = sc.n == 4 && memcmp(sc.s, "none", 4) == 0, linear = sc.n == 6 && memcmp(sc.s, "linear", 6) == 0;
    if (!none && !linear)
        return fk_error(FK_ERR_UNSUPPORTED, "%s: key '%s' is '%.*s'; fusekit reads linear RoPE scaling only", g->path, k,
                        (int)(sc.n > 32 ? 32 : sc.n), sc.s);
    FK_TRY(key_f64(r, "rope.scaling.factor", false, 0, f));
    if (*f == 0) FK_TRY(key_f64(r, "rope.scale_linear", false, 0, f));
    if (!(*f >= 0 && *f <= 1e6))
        return fk_error(FK_ERR_FORMAT, "%s: key '%s.rope.scaling.factor' is %g, expected a factor in [0, 1e6]", g->path, r->arch, *f);
    if (none || *f == 1) *f = 0;
    return FK_OK;
}

// The Gemma switches of a gemma, gemma2 or gemma3 file, with what llama.cpp hard-codes rather than
// stores (src/models/gemma*.cpp): embeddings times sqrt(n_embd); the attention scale; gemma2's
// soft-caps 50 and 30 and window 4096 when absent, every other layer sliding (0, 2, ...) and the
// local RoPE base equal to the global one; gemma3's five sliding layers of every six (layer l
// slides unless l % 6 == 5) when attention.sliding_window is set, and its local base 10000.
// The norm weights are read as stored (llama.cpp's converter stores 1 + w): norm_offset 0.
static fk_status gemma_config(const kreader *r, fk_config *c, double rope_factor) {
    const fk_gguf *g = r->g;
    const char *arch = r->arch;
    bool g2 = gemma_gen(arch) == 2, g3 = gemma_gen(arch) == 3;
    int64_t L = c->n_layer;
    if (!fk_config_uniform_ffn(c) || !fk_config_uniform_heads(c))
        return fk_error(FK_ERR_UNSUPPORTED, "%s: keys '%s.feed_forward_length' and '%s.attention.head_count' give per-layer values; llama.cpp's %s "
                        "reads one of each", g->path, arch, arch, arch);
    c->mlp = FK_MLP_GEGLU;
    c->emb_scale = sqrtf((float)c->d_model);
    c->norm_offset = 0;
    c->post_norms = g2 || g3;
    c->qk_norm = g3;
    c->attn_scale = gemma_llama_attn_scale(arch, L, c->d_model, c->n_head, c->head_dim);
    double v;
    if (g2) {
        FK_TRY(key_f64(r, "attn_logit_softcapping", false, 50.0, &v));
        c->attn_softcap = (float)v;
        FK_TRY(key_f64(r, "final_logit_softcapping", false, 30.0, &v));
        c->final_softcap = (float)v;
        if (!(c->attn_softcap > 0) || !(c->final_softcap > 0))
            return fk_error(FK_ERR_FORMAT, "%s: keys '%s.attn_logit_softcapping' (%g) and '%s.final_logit_softcapping' (%g) must be positive",
                            g->path, arch, c->attn_softcap, arch, c->final_softcap);
    } else if (g3) {
        FK_TRY(key_f64(r, "final_logit_softcapping", false, 0.0, &v));
        if (!(v >= 0)) return fk_error(FK_ERR_FORMAT, "%s: key '%s.final_logit_softcapping' is %g, expected >= 0", g->path, arch, v);
        c->final_softcap = (float)v;
    }
    int64_t window = 0;
    if (g2 || g3) FK_TRY(key_i64(r, "attention.sliding_window", false, g2 ? 4096 : 0, &window));
    if (window > 0) {
        char k[128];
        snprintf(k, sizeof k, "%s.attention.sliding_window_pattern", arch);
        const fk_gguf_kv *kv = fk_gguf_find(g, k);
        int64_t n_pattern = gemma_pattern(arch);
        if (kv && kv->type == FK_GGUF_ARRAY) {
            bool integer = kv->elem_type == FK_GGUF_BOOL || kv->elem_type == FK_GGUF_U32 || kv->elem_type == FK_GGUF_I32;
            if (!integer || kv->count != (uint64_t)L)
                return fk_error(FK_ERR_FORMAT, "%s: key '%s' is an array of %llu %s, expected %lld booleans (one per layer)", g->path, k,
                                (unsigned long long)kv->count, fk_gguf_type_name(kv->elem_type), (long long)L);
            for (int64_t l = 0; l < L; l++) c->sliding[l] = fk_gguf_arr_i64(kv, (uint64_t)l) != 0;
        } else {
            if (kv) FK_TRY(key_i64(r, "attention.sliding_window_pattern", true, 0, &n_pattern));
            for (int64_t l = 0; l < L; l++) c->sliding[l] = gemma_default_sliding(l, n_pattern);
        }
        c->sliding_window = window;
        FK_TRY(key_f64(r, "rope.freq_base_swa", false, g2 ? c->rope_theta : 10000.0, &v));
        if (!(v > 0)) return fk_error(FK_ERR_FORMAT, "%s: key '%s.rope.freq_base_swa' is %g, expected > 0", g->path, arch, v);
        c->rope_theta_local = (float)v;
    }
    if (rope_factor != 0) {
        if (g2 && arch_any_sliding(c))
            return fk_error(FK_ERR_UNSUPPORTED, "%s: key '%s.rope.scaling.factor' is %g: llama.cpp's gemma2 scales its sliding layers too, "
                            "fusekit only the global ones", g->path, arch, rope_factor);
        c->rope_scale = (float)rope_factor;
    }
    return FK_OK;
}

// A window of a non-Gemma file, as llama.cpp computes it (src/models/*.cpp of llama-cpp-python
// 0.3.36's llama.cpp): a row with a sliding pattern (olmo2, whose graph reads the key) is handled
// below; the others' graphs never read attention.sliding_window (llama, qwen2, qwen3, starcoder2,
// phi2, stablelm, ...) or read it and set swa_type NONE (phi3, whose converter writes Phi-3's
// window), so the key is ignored: no window. One at least the context is none.
static fk_status window_config(const kreader *r, fk_config *c) {
    int64_t w;
    FK_TRY(key_i64(r, "attention.sliding_window", false, 0, &w));
    if (w <= 0 || w >= c->max_seq) return FK_OK;
    int64_t n = gemma_pattern(r->arch);
    if (n > 0)  // olmo2: OLMo 3's layout (sliding layers by a pattern, with RoPE of their own)
        return fk_error(FK_ERR_UNSUPPORTED, "%s: key '%s.attention.sliding_window' is %lld: llama.cpp's %s then slides the layers "
                        "sliding_window_pattern names (by default %lld of every %lld) with unscaled RoPE (OLMo 3), which fusekit does "
                        "not import", r->g->path, r->arch, (long long)w, r->arch, (long long)(n - 1), (long long)n);
    return FK_OK;  // no window, as llama.cpp's graph for the file
}

// The head size and RoPE keys of a llama-style file (h0: layer 0's heads): key_length (default
// d / h0) equal to value_length, RoPE over whole heads unless the row's graph rotates part of
// them (*rot: the rotated dims, rope.dimension_count), and RoPE scaling only as Gemma's linear
// scaling (*f, 0 when none); any other is refused.
static fk_status llama_head_keys(const kreader *r, int64_t d, int64_t h0, int64_t *hd, int64_t *rot, double *f) {
    const fk_gguf *g = r->g;
    const char *arch = r->arch;
    int64_t vd;
    char kl[128];
    snprintf(kl, sizeof kl, "%s.attention.key_length", arch);
    if (d % h0 && !fk_gguf_find(g, kl))
        return fk_error(FK_ERR_FORMAT, "%s: embedding_length %lld is not a multiple of head_count %lld and '%s.attention.key_length' is missing",
                        g->path, (long long)d, (long long)h0, arch);
    FK_TRY(key_i64(r, "attention.key_length", false, d / h0, hd));
    FK_TRY(key_i64(r, "attention.value_length", false, d / h0, &vd));
    FK_TRY(key_i64(r, "rope.dimension_count", false, *hd, rot));
    if (vd != *hd)
        return fk_error(FK_ERR_UNSUPPORTED, "%s: keys '%s.attention.key_length' and '%s.attention.value_length' differ: key_length %lld != "
                        "value_length %lld is not supported", g->path, arch, arch, (long long)*hd, (long long)vd);
    const arch_family *row = arch_of_gguf(arch, strlen(arch));
    bool part = row && row->gguf_rotary_part && row->gguf_neox;  // llama.cpp's graph rotates the first *rot dims
    if (*rot != *hd && !(part && *rot > 0 && *rot < *hd && *rot % 2 == 0))
        return fk_error(FK_ERR_UNSUPPORTED, "%s: key '%s.rope.dimension_count' is %lld but heads have %lld dimensions; %s", g->path, arch,
                        (long long)*rot, (long long)*hd,
                        part ? "expected an even number of dims up to the head size" : "llama.cpp's graph for it rotates whole heads only");
    char k[128];
    snprintf(k, sizeof k, "%s.rope.scaling.type", arch);
    fk_gguf_str sc;
    if (gemma_arch(arch)) {
        FK_TRY(gemma_rope_scale(r, f));
    } else {
        // linear (positions / factor), yarn (yarn_config reads it) or none
        bool linear = false;
        if (fk_gguf_find(g, k) && fk_gguf_get_str(g, k, &sc) == FK_OK && !(sc.n == 4 && memcmp(sc.s, "none", 4) == 0)) {
            linear = sc.n == 6 && memcmp(sc.s, "linear", 6) == 0;
            if (sc.n == 4 && memcmp(sc.s, "yarn", 4) == 0) { *f = 0; return FK_OK; }  // its factor is YaRN's, not linear
            if (!linear)
                return fk_error(FK_ERR_UNSUPPORTED, "%s: key '%s' is %.*s; fusekit imports RoPE scaling none, linear and yarn", g->path, k,
                                (int)sc.n, sc.s);
        }
        FK_TRY(key_f64(r, "rope.scaling.factor", false, 0, f));
        if (*f != 0 && *f != 1 && !(linear && *f > 0 && *f < 1e6))
            return fk_error(FK_ERR_UNSUPPORTED, "%s: key '%s.rope.scaling.factor' is %g%s", g->path, arch, *f,
                            linear ? ", expected a factor in (0, 1e6)" : " without rope.scaling.type linear; RoPE scaling is not supported");
    }
    return FK_OK;
}

// llama.cpp's YaRN (rope.scaling.type yarn): its factor, original_context_length and attn_factor;
// llama.cpp multiplies cos and sin by attn_factor * (1 + 0.1 ln factor), which is transformers'
// attention_factor, and takes beta_fast 32, beta_slow 1 and a truncated correction range.
static fk_status yarn_config(const kreader *r, fk_config *c) {
    char k[128];
    fk_gguf_str sc;
    snprintf(k, sizeof k, "%s.rope.scaling.type", r->arch);
    if (!fk_gguf_find(r->g, k) || fk_gguf_get_str(r->g, k, &sc) != FK_OK || !(sc.n == 4 && memcmp(sc.s, "yarn", 4) == 0)) return FK_OK;
    double f, af, lm;
    int64_t orig;
    FK_TRY(key_f64(r, "rope.scaling.factor", true, 0, &f));
    FK_TRY(key_i64(r, "rope.scaling.original_context_length", false, c->max_seq, &orig));
    FK_TRY(key_f64(r, "rope.scaling.attn_factor", false, 1, &af));
    FK_TRY(key_f64(r, "rope.scaling.yarn_log_multiplier", false, 0, &lm));
    if (!(f >= 1 && f < 1e6) || !(af > 0 && af < 1e6) || lm != 0)
        return fk_error(FK_ERR_UNSUPPORTED, "%s: YaRN with factor %g, attn_factor %g, yarn_log_multiplier %g: fusekit imports a factor >= 1, a "
                        "positive attn_factor and no log multiplier", r->g->path, f, af, lm);
    c->rope_ext = FK_ROPE_EXT_YARN;
    c->rope_ext_factor = (float)f;
    c->rope_ext_ctx = orig;
    c->rope_attn_factor = (float)af * (f > 1 ? 1.0f + 0.1f * logf((float)f) : 1.0f);
    c->rope_beta_fast = 32;
    c->rope_beta_slow = 1;
    return FK_OK;
}

// The n positive F32 entries of factor tensor t (name in errors) into out.
static fk_status factor_tensor(const fk_gguf *g, const fk_gguf_tensor *t, const char *name, int64_t n, float *out) {
    if (t->ggml_type != FK_GGML_F32 || t->n_dims != 1 || t->dims[0] != (uint64_t)n || n > FK_MAX_ROPE_FACTORS)
        return fk_error(FK_ERR_UNSUPPORTED, "%s: tensor '%s' must be F32 with %lld entries (rotary dims / 2, at most %d)", g->path, name,
                        (long long)n, FK_MAX_ROPE_FACTORS);
    for (int64_t d = 0; d < n; d++) {
        memcpy(&out[d], (const char *)t->data + 4 * d, 4);
        if (!(out[d] > 0 && out[d] < 1e30f))
            return fk_error(FK_ERR_FORMAT, "%s: tensor '%s' entry %lld is %g, expected a finite value > 0", g->path, name, (long long)d, (double)out[d]);
    }
    return FK_OK;
}

// phi3's LongRoPE: rope_factors_long/short, rope.scaling.original_context_length and attn_factor
// (transformers' longrope; llama.cpp picks the set by its context size, transformers by length).
static fk_status phi3_factors_config(const kreader *r, fk_config *c) {
    const fk_gguf_tensor *lo = fk_gguf_find_tensor(r->g, "rope_factors_long.weight"), *sh = fk_gguf_find_tensor(r->g, "rope_factors_short.weight");
    if (!lo && !sh) return FK_OK;
    if (!lo || !sh || strcmp(r->arch, "phi3") != 0)
        return fk_error(FK_ERR_UNSUPPORTED, "%s: tensor '%s' is read only with rope_factors_%s.weight in a phi3 file (llama.cpp's LongRoPE)",
                        r->g->path, lo ? "rope_factors_long.weight" : "rope_factors_short.weight", lo ? "short" : "long");
    int64_t half = fk_config_rotary_dim(c) / 2;
    FK_TRY(factor_tensor(r->g, lo, "rope_factors_long.weight", half, c->rope_long));
    FK_TRY(factor_tensor(r->g, sh, "rope_factors_short.weight", half, c->rope_short));
    double af;
    FK_TRY(key_i64(r, "rope.scaling.original_context_length", false, c->max_seq, &c->rope_ext_ctx));
    FK_TRY(key_f64(r, "rope.scaling.attn_factor", false, 1, &af));
    if (!(af > 0 && af < 1e6)) return fk_error(FK_ERR_FORMAT, "%s: key '%s.rope.scaling.attn_factor' is %g, expected > 0", r->g->path, r->arch, af);
    c->rope_attn_factor = (float)af;
    c->rope_ext = FK_ROPE_EXT_LONGROPE;
    c->rope_n_factors = (int32_t)half;
    return FK_OK;
}

// A rope_freqs tensor (llama.cpp's Llama 3 form: each inverse frequency divided by its entry)
// becomes LongRoPE with one factor set, attention factor 1 and the context as its original
// length: the same frequencies, which transformers' longrope computes alike.
static fk_status rope_freqs_config(const kreader *r, fk_config *c) {
    const fk_gguf *g = r->g;
    const fk_gguf_tensor *t = fk_gguf_find_tensor(g, "rope_freqs.weight");
    if (!t) return phi3_factors_config(r, c);
    if (strcmp(r->arch, "llama") != 0 && strcmp(r->arch, "deci") != 0)  // llama.cpp refuses such a file (an extra tensor)
        return fk_error(FK_ERR_UNSUPPORTED, "%s: tensor 'rope_freqs.weight' in a %s file: llama.cpp reads it only for llama and deci", g->path,
                        r->arch);
    int64_t half = fk_config_rotary_dim(c) / 2;
    if (t->ggml_type != FK_GGML_F32 || t->n_dims != 1 || t->dims[0] != (uint64_t)half || half > FK_MAX_ROPE_FACTORS)
        return fk_error(FK_ERR_UNSUPPORTED, "%s: tensor 'rope_freqs.weight' must be F32 with %lld entries (rotary dims / 2, at most %d)", g->path,
                        (long long)half, FK_MAX_ROPE_FACTORS);
    if (c->rope_scale != 0 && c->rope_scale != 1)
        return fk_error(FK_ERR_UNSUPPORTED, "%s: tensor 'rope_freqs.weight' with linear RoPE scaling %g is not supported", g->path, (double)c->rope_scale);
    FK_TRY(factor_tensor(g, t, "rope_freqs.weight", half, c->rope_short));
    memcpy(c->rope_long, c->rope_short, (size_t)half * sizeof(float));
    c->rope_ext = FK_ROPE_EXT_LONGROPE;
    c->rope_n_factors = (int32_t)half;
    c->rope_ext_ctx = c->max_seq;
    c->rope_attn_factor = 1;
    return FK_OK;
}

// mpt: the row's switches (ALiBi, no positions; GELU, which llama.cpp computes with the tanh
// approximation, so gelu_exact stays off), the biases its tensors have, the KV heads,
// max_alibi_bias (> 0: without ALiBi llama.cpp's mpt would have no positions) and clamp_kqv.
static fk_status alibi_config(const kreader *r, fk_config *c) {
    const fk_gguf *g = r->g;
    arch_apply_switches(arch_of_gguf(r->arch, strlen(r->arch)), c);
    c->bias_norm = has_tensor(g, "blk.0.attn_norm.bias");
    c->bias_qkv = has_tensor(g, "blk.0.attn_qkv.bias");
    c->bias_out = has_tensor(g, "blk.0.attn_output.bias");
    c->bias_mlp = has_tensor(g, "blk.0.ffn_up.bias");
    double bmax, clip;
    FK_TRY(key_i64(r, "attention.head_count_kv", false, c->n_head, &c->n_kv_head));
    FK_TRY(key_f64(r, "attention.max_alibi_bias", true, 0, &bmax));
    FK_TRY(key_f64(r, "attention.clamp_kqv", false, 0, &clip));
    if (!(bmax > 0 && bmax < 1e6))
        return fk_error(FK_ERR_UNSUPPORTED, "%s: key '%s.attention.max_alibi_bias' is %g; an mpt model without ALiBi (a positive maximum "
                        "bias) has no positions and is not supported", g->path, r->arch, bmax);
    if (!(clip >= 0 && clip < 1e30))
        return fk_error(FK_ERR_FORMAT, "%s: key '%s.attention.clamp_kqv' is %g, expected a number >= 0", g->path, r->arch, clip);
    c->alibi_bias_max = (float)bmax;
    c->clip_qkv = (float)clip;
    return FK_OK;
}

// gptneox's use_parallel_residual (llama.cpp: parallel when absent): two norms in parallel, or sequential.
static fk_status parallel_key(const kreader *r, fk_config *c) {
    char k[128];
    snprintf(k, sizeof k, "%s.use_parallel_residual", r->arch);
    bool par = true;
    if (fk_gguf_find(r->g, k) && fk_gguf_get_bool(r->g, k, &par) != FK_OK)
        return fk_error(FK_ERR_FORMAT, "%s: key '%s' is not a boolean", r->g->path, k);
    c->residual = par ? FK_RESID_PARALLEL : FK_RESID_SEQUENTIAL;
    return FK_OK;
}

// A per-layer key (llama.cpp's get_key_or_arr: a scalar or L entries) that must give every layer one count.
static fk_status key_uniform(const kreader *r, const char *key, bool required, int64_t L, int64_t def, int64_t *v) {
    int64_t a[FK_MAX_LAYERS];
    bool present;
    FK_TRY(key_per_layer(r, key, required, L, a, &present));
    if (present && !uniform_arr(a, L))
        return fk_error(FK_ERR_UNSUPPORTED, "%s: key '%s.%s' differs between layers; fusekit has one for every layer", r->g->path, r->arch, key);
    *v = present ? a[0] : def;
    return FK_OK;
}

// The experts of a file whose architecture has them (ARCH_GK_EXPERTS, ARCH_GK_MOE), as llama.cpp's graph
// computes them: expert_count experts on every layer, top expert_used_count, the row's renormalisation;
// their width expert_feed_forward_length (default n_ff / expert_used_count, as llama.cpp) or the file's
// feed_forward_length n_ff; the shared expert (qwen2moe) expert_shared_feed_forward_length wide (default n_ff).
static fk_status moe_config(const kreader *r, fk_config *c, int64_t n_ff) {
    unsigned k = arch_of_gguf(r->arch, strlen(r->arch))->gguf_keys;
    if (!(k & (ARCH_GK_EXPERTS | ARCH_GK_MOE))) return FK_OK;
    const char *path = r->g->path, *arch = r->arch;
    int64_t E, K = 0, F, S;  // (K: set by key_uniform; initialised for gcc's -Wmaybe-uninitialized)
    FK_TRY(key_i64(r, "expert_count", (k & ARCH_GK_MOE) != 0, 0, &E));
    if (E == 0 && !(k & ARCH_GK_MOE)) return FK_OK;  // a dense llama
    if (E < 1 || E > FK_LIM_EXPERTS)
        return fk_error(FK_ERR_FORMAT, "%s: key '%s.expert_count' is %lld, expected 1..%d experts", path, arch, (long long)E, FK_LIM_EXPERTS);
    FK_TRY(key_uniform(r, "expert_used_count", true, c->n_layer, 0, &K));
    if (K < 1 || K > E)
        return fk_error(FK_ERR_FORMAT, "%s: key '%s.expert_used_count' is %lld, expected 1..%lld (expert_count)", path, arch, (long long)K,
                        (long long)E);
    F = n_ff;
    if (k & ARCH_GK_EXPERT_FFN) FK_TRY(key_uniform(r, "expert_feed_forward_length", false, c->n_layer, n_ff / K, &F));
    S = n_ff;
    if (k & ARCH_GK_MOE_SHARED) FK_TRY(key_i64(r, "expert_shared_feed_forward_length", false, n_ff, &S));
    if (F < 1 || ((k & ARCH_GK_MOE_SHARED) && S < 1))
        return fk_error(FK_ERR_FORMAT, "%s: key '%s.%s' gives the %s experts width %lld", path, arch, F < 1 ? "expert_feed_forward_length" :
                        "expert_shared_feed_forward_length", F < 1 ? "routed" : "shared", (long long)(F < 1 ? F : S));
    c->n_expert = E;
    c->n_expert_used = K;
    c->expert_ffn = F;
    c->expert_norm = k & ARCH_GK_MOE_NORM;
    c->shared_gate = k & ARCH_GK_MOE_SHARED;
    for (int64_t l = 0; l < FK_MAX_LAYERS; l++) {  // (the entries past the last layer as the config.json reader leaves them)
        c->moe[l] = l < c->n_layer;
        c->experts[l] = 0;
        c->ffn[l] = c->shared_gate && l < c->n_layer ? S : 0;
    }
    return FK_OK;
}

// The sizes every architecture's keys give: width, layers, context, vocabulary (vocab_size, else
// token_embd's rows), each layer's FFN width and head count (H the most), all positive.
typedef struct { int64_t d, L, ctx, V, H, ffn[FK_MAX_LAYERS], heads[FK_MAX_LAYERS]; } gguf_sizes;

static fk_status read_sizes(const kreader *r, gguf_sizes *z) {
    const fk_gguf *g = r->g;
    const char *arch = r->arch;
    FK_TRY(key_i64(r, "embedding_length", true, 0, &z->d));
    FK_TRY(key_i64(r, "block_count", true, 0, &z->L));
    FK_TRY(key_i64(r, "context_length", true, 0, &z->ctx));
    if (z->L < 1 || z->L > FK_MAX_LAYERS)
        return fk_error(FK_ERR_FORMAT, "%s: key '%s.block_count' is %lld, expected 1..%d", g->path, arch, (long long)z->L, FK_MAX_LAYERS);
    if (z->d < 1) return fk_error(FK_ERR_FORMAT, "%s: key '%s.embedding_length' is 0", g->path, arch);
    const fk_gguf_tensor *emb = fk_gguf_find_tensor(g, "token_embd.weight");
    if (!emb) return fk_error(FK_ERR_FORMAT, "%s: tensor 'token_embd.weight' is missing", g->path);
    FK_TRY(key_i64(r, "vocab_size", false, emb->n_dims == 2 ? (int64_t)emb->dims[1] : 0, &z->V));
    bool present;
    FK_TRY(key_per_layer(r, "feed_forward_length", true, z->L, z->ffn, &present));
    FK_TRY(key_per_layer(r, "attention.head_count", true, z->L, z->heads, &present));
    z->H = 0;
    for (int64_t l = 0; l < z->L; l++) {
        if (z->heads[l] < 1)
            return fk_error(FK_ERR_UNSUPPORTED, "%s: key '%s.attention.head_count' gives layer %lld %lld heads; layers without attention "
                            "are not supported", g->path, arch, (long long)l, (long long)z->heads[l]);
        if (z->ffn[l] < 1)
            return fk_error(FK_ERR_UNSUPPORTED, "%s: key '%s.feed_forward_length' gives layer %lld width %lld; layers without an FFN "
                            "are not supported", g->path, arch, (long long)l, (long long)z->ffn[l]);
        z->H = z->heads[l] > z->H ? z->heads[l] : z->H;
    }
    return FK_OK;
}

// gpt2, mpt (LayerNorm keys alone): one head count and FFN width, the LayerNorm epsilon, ALiBi's keys.
static fk_status layernorm_config(const kreader *r, const gguf_sizes *z, unsigned keys, fk_config *c) {
    const fk_gguf *g = r->g;
    const char *arch = r->arch;
    if (!uniform_arr(z->heads, z->L) || !uniform_arr(z->ffn, z->L))
        return fk_error(FK_ERR_UNSUPPORTED, "%s: per-layer head counts or FFN widths are not supported for %s", g->path, arch);
    if (z->d % z->H) return fk_error(FK_ERR_FORMAT, "%s: embedding_length %lld is not a multiple of head_count %lld", g->path, (long long)z->d, (long long)z->H);
    fk_config_gpt2(c, z->V, z->d, z->L, z->H, z->ctx);
    for (int l = 0; l < FK_MAX_LAYERS; l++) c->ffn[l] = z->ffn[0];
    double eps;
    FK_TRY(key_f64(r, "attention.layer_norm_epsilon", true, 0, &eps));
    c->norm_eps = (float)eps;
    if (keys & ARCH_GK_ALIBI) FK_TRY(alibi_config(r, c));
    return FK_OK;
}

// llama-style files (llama.cpp's Llama keys): one KV head count, head size and RoPE keys, norm epsilon
// and base, the switches the tensors present say, MoE, then Gemma's or the others' RoPE scaling.
static fk_status llama_style_config(const kreader *r, const gguf_sizes *z, unsigned keys, fk_config *c) {
    const fk_gguf *g = r->g;
    const char *arch = r->arch;
    int64_t L = z->L, H = z->H, kv[FK_MAX_LAYERS];
    bool present;
    FK_TRY(key_per_layer(r, "attention.head_count_kv", false, L, kv, &present));
    if (!present) memcpy(kv, z->heads, sizeof(int64_t) * (size_t)L);
    if (!uniform_arr(kv, L))
        return fk_error(FK_ERR_UNSUPPORTED, "%s: key '%s.attention.head_count_kv' differs between layers; fusekit has one KV head count",
                        g->path, arch);
    int64_t KV = kv[0];
    if (KV < 1) return fk_error(FK_ERR_FORMAT, "%s: key '%s.attention.head_count_kv' is 0", g->path, arch);
    int64_t hd, rot;
    double f;
    FK_TRY(llama_head_keys(r, z->d, z->heads[0], &hd, &rot, &f));
    fk_config_llama(c, z->V, z->d, L, H, KV, z->ffn[0], z->ctx);
    arch_apply_switches(arch_of_gguf(arch, strlen(arch)), c);  // the row's; biases and Gemma's below
    c->head_dim = hd;
    c->rotary_dim = rot == hd ? 0 : rot;
    for (int64_t l = 0; l < L; l++) { c->ffn[l] = z->ffn[l]; c->heads[l] = z->heads[l] == H ? 0 : z->heads[l]; }
    double eps, theta;
    FK_TRY(key_f64(r, keys & ARCH_GK_LAYERNORM ? "attention.layer_norm_epsilon" : "attention.layer_norm_rms_epsilon", true, 0, &eps));
    FK_TRY(key_f64(r, "rope.freq_base", false, 10000.0, &theta));
    c->norm_eps = (float)eps;
    c->rope_theta = (float)theta;
    c->bias_qkv = has_tensor(g, "blk.0.attn_q.bias") || has_tensor(g, "blk.0.attn_qkv.bias");
    if (keys & ARCH_GK_PARALLEL) FK_TRY(parallel_key(r, c));
    // stablelm: llama.cpp's graph feeds the MLP the attention's norm when the file has no ffn_norm
    const arch_family *row = arch_of_gguf(arch, strlen(arch));
    if (row->residual == FK_RESID_PARALLEL_SHARED && arch_tensor_of(row->gguf_t, FK_P_LN2_W, -1) && has_tensor(g, "blk.0.ffn_norm.weight"))
        c->residual = FK_RESID_SEQUENTIAL;
    // falcon: the new decoder's two norms when the file has the attention's own norm (attn_norm_2)
    for (int i = 0; i < row->gguf_t.n; i++)
        if (row->gguf_t.t[i].kind == FK_P_LN1_W && (row->gguf_t.t[i].flags & ARCH_T_TWO_NORMS)) {
            char name[96];
            snprintf(name, sizeof name, row->gguf_t.t[i].name, 0);
            if (has_tensor(g, name)) c->residual = FK_RESID_PARALLEL;
        }
    c->bias_out = has_tensor(g, "blk.0.attn_output.bias");
    c->bias_mlp = has_tensor(g, "blk.0.ffn_up.bias");
    if (row->qk_norm_ln && has_tensor(g, "blk.0.attn_q_norm.weight")) c->qk_norm = c->qk_norm_ln = true;  // StableLM 2 12B
    FK_TRY(moe_config(r, c, z->ffn[0]));
    if (gemma_arch(arch)) {
        FK_TRY(gemma_config(r, c, f));
    } else {
        if (f != 0 && f != 1) c->rope_scale = (float)f;  // linear scaling
        FK_TRY(window_config(r, c));
        FK_TRY(rope_freqs_config(r, c));
        FK_TRY(yarn_config(r, c));
    }
    return FK_OK;
}

static fk_status import_config(const fk_gguf *g, const char *arch, fk_config *c) {
    kreader r = {g, arch};
    gguf_sizes z;
    FK_TRY(read_sizes(&r, &z));
    unsigned keys = arch_of_gguf(arch, strlen(arch))->gguf_keys;
    if ((keys & ARCH_GK_LAYERNORM) && !(keys & ARCH_GK_LLAMA)) FK_TRY(layernorm_config(&r, &z, keys, c));
    else FK_TRY(llama_style_config(&r, &z, keys, c));
    int64_t V = z.V;
    c->tied = !has_tensor(g, "output.weight") || (gemma_gen(arch) == 1 || gemma_gen(arch) == 2);
    int64_t id;
    c->bos_id = fk_gguf_get_i64(g, "tokenizer.ggml.bos_token_id", &id) == FK_OK && id >= 0 && id < V ? (int32_t)id : -1;
    c->eos_id = fk_gguf_get_i64(g, "tokenizer.ggml.eos_token_id", &id) == FK_OK && id >= 0 && id < V ? (int32_t)id : -1;
    fk_status st = fk_config_validate(c);  // before anything is sized from these numbers
    if (st != FK_OK)
        return fk_error_context(st, "%s: the model its '%s.*' keys describe", g->path, arch);
    return FK_OK;
}

static void dims_str(char *buf, size_t n, const uint64_t *dims, uint32_t nd) {
    buf[0] = 0;
    for (uint32_t i = 0; i < nd; i++) snprintf(buf + strlen(buf), n - strlen(buf), "%s%llu", i ? ", " : "", (unsigned long long)dims[i]);
}

typedef struct { char name[64]; uint64_t d0, d1; } shape_want;

// Tensor t of the row's set (layer l of a per-layer one) should be [d0, d1].
static void want_set(shape_want *w, int64_t d0, int64_t d1, const arch_tensor *t, int64_t l) {
    snprintf(w->name, sizeof w->name, t->name, (int)l);
    w->d0 = (uint64_t)d0;
    w->d1 = (uint64_t)d1;
}

// Every weight of the model comes from a tensor of the file, so the weights the keys describe
// cannot outnumber the elements the file's tensors hold (each bounded by the file's size):
// checked before the model is allocated, so that a small file declaring a huge model is
// refused without allocating it.
static fk_status check_declared_size(const fk_gguf *g, const char *arch, const fk_config *c) {
    double d = (double)c->d_model, hd = (double)c->head_dim, kvd = (double)c->n_kv_head * hd;
    double need = (double)c->vocab_size * d + (c->pos == FK_POS_LEARNED ? (double)c->max_seq * d : 0);
    for (int64_t l = 0; l < c->n_layer; l++)  // (MoE: the experts and the router)
        need += (2 * (double)fk_config_heads(c, l) * hd + 2 * kvd) * d + (fk_config_gated(c) ? 3 : 2) * (double)c->ffn[l] * d +
                (double)fk_config_experts(c, l) * ((fk_config_gated(c) ? 3 : 2) * (double)c->expert_ffn + 1) * d;
    double have = 0;
    for (int64_t i = 0; i < g->n_tensors; i++) {
        double e = 1;
        for (uint32_t k = 0; k < g->tensors[i].n_dims; k++) e *= (double)g->tensors[i].dims[k];
        have += e;
    }
    if (!(need > have)) return FK_OK;
    // name the tensor whose shape disagrees with the keys, when one of the telling ones does
    arch_tensor_set set = import_set(g, arch);
    const arch_tensor *qkv = arch_tensor_of(set, FK_P_QKV_W, -1);  // fused (all rows) or the queries
    const arch_tensor *up = arch_tensor_of(set, FK_P_UP_W, fk_config_gated(c) ? ARCH_ROWS_GATE : ARCH_ROWS_UP);
    int64_t fused = qkv->rows == ARCH_ROWS_ALL ? 3 : 1;
    for (int64_t l = -1; l < c->n_layer; l++) {
        shape_want want[2];
        int nw = 0;
        if (l < 0) {
            want_set(&want[nw++], c->d_model, c->vocab_size, arch_tensor_of(set, FK_P_TOK_EMB, -1), l);
            if (c->pos == FK_POS_LEARNED) want_set(&want[nw++], c->d_model, c->max_seq, arch_tensor_of(set, FK_P_POS_EMB, -1), l);
        } else {
            want_set(&want[nw++], c->d_model, fused * fk_config_heads(c, l) * c->head_dim, qkv, l);
            want_set(&want[nw++], c->d_model, c->ffn[l], up, l);
        }
        for (int k = 0; k < nw; k++) {
            const fk_gguf_tensor *t = fk_gguf_find_tensor(g, want[k].name);
            if (t && (t->n_dims != 2 || t->dims[0] != want[k].d0 || t->dims[1] != want[k].d1)) {
                char got[96];
                dims_str(got, sizeof got, t->dims, t->n_dims);
                return fk_error(FK_ERR_FORMAT, "%s: tensor '%s' has shape [%s] (ggml order) but the keys imply [%llu, %llu]", g->path,
                                want[k].name, got, (unsigned long long)want[k].d0, (unsigned long long)want[k].d1);
            }
        }
    }
    if (c->n_expert > 0)
        return fk_error(FK_ERR_FORMAT, "%s: keys '%s.expert_count' (%lld), the experts' width (%lld), '%s.embedding_length' (%lld) and "
                        "'%s.block_count' (%lld) describe a model of at least %.0f weights, but the file's tensors (%lld) hold only %.0f "
                        "elements", g->path, arch, (long long)c->n_expert, (long long)c->expert_ffn, arch, (long long)c->d_model, arch,
                        (long long)c->n_layer, need, (long long)g->n_tensors, have);
    return fk_error(FK_ERR_FORMAT, "%s: keys '%s.embedding_length' (%lld), '%s.block_count' (%lld), '%s.feed_forward_length' (%lld), "
                        "'%s.attention.head_count' (%lld) and the vocabulary (%lld) describe a model of at least %.0f weights, but the "
                        "file's tensors (%lld) hold only %.0f elements", g->path, arch, (long long)c->d_model, arch, (long long)c->n_layer,
                        arch, (long long)c->ffn[0], arch, (long long)c->n_head, (long long)c->vocab_size, need, (long long)g->n_tensors, have);
}

// The file's tensor for t, checked: present, of t's shape, of a type fusekit dequantizes and of
// the size that type and shape make (*row_bytes: one stored row of dims[0] elements).
static fk_status find_tensor(const fk_gguf *g, const gt *t, const fk_gguf_tensor **out, uint64_t *row_bytes) {
    const fk_gguf_tensor *f = fk_gguf_find_tensor(g, t->name);
    if (!f) return fk_error(FK_ERR_FORMAT, "%s: tensor '%s' is missing (the keys and layer 0 ask for it)", g->path, t->name);
    uint64_t want[3] = {(uint64_t)t->cols, (uint64_t)t->rows, (uint64_t)t->n_exp};
    uint32_t nd = t->one_d ? 1 : t->n_exp ? 3 : 2;
    if (t->one_d) want[0] = (uint64_t)t->rows;
    if (f->n_dims != nd || f->dims[0] != want[0] || (nd >= 2 && f->dims[1] != want[1]) || (nd == 3 && f->dims[2] != want[2])) {
        char got[96], exp[64];
        dims_str(got, sizeof got, f->dims, f->n_dims);
        dims_str(exp, sizeof exp, want, nd);
        return fk_error(FK_ERR_FORMAT, "%s: tensor '%s' has shape [%s] (ggml order) but the keys imply [%s]", g->path, t->name, got, exp);
    }
    // Any ggml type fusekit can dequantize; one row at a time straight into the arena.
    uint32_t ty = f->ggml_type;
    const fk_ggml_type_info *ti = fk_ggml_type(ty);
    if (!ti || !ti->dequant)
        return fk_error(FK_ERR_UNSUPPORTED, "%s: tensor '%s' has ggml type %s (%u), which fusekit cannot dequantize (it reads F32, "
                        "F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, Q8_K, IQ4_NL and IQ4_XS)",
                        g->path, t->name, fk_ggml_type_name(ty), ty);
    int64_t rows = (t->one_d ? 1 : t->rows) * (t->n_exp ? t->n_exp : 1), cols = t->one_d ? t->rows : t->cols;  // as stored: rows of dims[0]
    *row_bytes = 0;
    if (fk_ggml_row_bytes(ty, cols, row_bytes) != FK_OK || f->nbytes != *row_bytes * (uint64_t)rows)
        return fk_error(FK_ERR_FORMAT, "%s: tensor '%s' has %llu bytes of %s data, expected %llu (%lld rows of %lld elements)", g->path,
                        t->name, (unsigned long long)f->nbytes, ti->name, (unsigned long long)(*row_bytes * (uint64_t)rows),
                        (long long)rows, (long long)cols);
    *out = f;
    return FK_OK;
}

// A row buffer of at least n floats (*buf grown as needed).
static fk_status row_buffer(float **buf, int64_t *cap, int64_t n) {
    if (n <= *cap) return FK_OK;
    float *grown = realloc(*buf, (size_t)n * sizeof(float));
    if (!grown) return fk_error(FK_ERR_NOMEM, "out of memory");
    *buf = grown;
    *cap = n;
    return FK_OK;
}

// Expert e's slice of tensor t (e 0 for any other tensor) from file tensor f (rows of row_bytes). keep: a
// matrix the engine can read as stored (fk_model_add_stored) stays in the file's mapping in its own type,
// its rows decoded only to check them; everything else is decoded into the arena.
static fk_status import_slice(const fk_gguf *g, fk_model *m, const gt *t, const fk_gguf_tensor *f, uint64_t row_bytes, int64_t e, bool keep,
                              float **tmp, int64_t *cap) {
    uint32_t ty = f->ggml_type;
    int64_t rows = t->one_d ? 1 : t->rows, cols = t->one_d ? t->rows : t->cols;  // as stored: rows of dims[0]
    float *w = t->w + e * t->exp_stride;
    const unsigned char *p = (const unsigned char *)f->data + (uint64_t)(e * rows) * row_bytes;
    // f32 rows gain nothing from staying in the file, so they are decoded into the arena, bit for bit the same
    const fk_param *kp = keep && ty != FK_GGML_F32 && !t->one_d && t->add == 0 && t->mul == 1 ? fk_model_param_of(m, w - m->w) : NULL;
    if (kp && !fk_param_storable(kp->kind)) kp = NULL;
    bool via_tmp = kp || (t->one_d && t->rope_hd);  // decoded rows that do not go to the arena: a small buffer
    if (via_tmp) FK_TRY(row_buffer(tmp, cap, cols));
    int64_t hd = t->rope_hd, half = hd / 2;
    for (int64_t r = 0; r < rows; r++) {
        // file row r is llama.cpp's interleaved row 2j+s of its head: fusekit's row s*hd/2+j
        int64_t dr = hd && !t->one_d ? r / hd * hd + (r % hd) % 2 * half + (r % hd) / 2 : r;
        float *dst = via_tmp ? *tmp : w + dr * cols;
        fk_dequantize_row(ty, p + (uint64_t)r * row_bytes, dst, cols);
        for (int64_t c = 0; c < cols; c++)
            if (!isfinite(dst[c]))
                return fk_error(FK_ERR_NUMERIC, "%s: tensor '%s' element %lld is not finite", g->path, t->name,
                                (long long)((e * rows + r) * cols + c));
    }
    if (kp) {
        fk_stored s = {.param = (int)(kp - m->params), .row0 = (w - m->w - kp->offset) / kp->shape[1], .rows = rows, .type = ty,
                       .data = p, .row_bytes = row_bytes, .rope_hd = t->rope_hd};
        return fk_model_add_stored(m, &s);
    }
    if (t->one_d && hd) rope_permute(t->w, *tmp, t->rows, 1, hd, true);
    return FK_OK;
}

// Whether the file holds the experts in the set's ARCH_T_ALT form (layer 0's first such tensor, expert 0).
static bool alt_experts(const fk_gguf *g, arch_tensor_set set) {
    for (int i = 0; i < set.n; i++)
        if (set.t[i].flags & ARCH_T_ALT) {
            char name[96];
            snprintf(name, sizeof name, set.t[i].name, 0, 0);
            return has_tensor(g, name);
        }
    return false;
}

static fk_status import_tensors(const fk_gguf *g, fk_model *m, const char *arch, bool keep) {
    gt_list l;
    arch_tensor_set set = import_set(g, arch);
    FK_TRY(gguf_tensors(m, arch, set, alt_experts(g, set), &l));
    fk_status st = FK_OK;
    float *tmp = NULL;
    int64_t cap = 0;
    for (int i = 0; i < l.n && st == FK_OK; i++) {
        const gt *t = &l.t[i];
        const fk_gguf_tensor *f = NULL;
        uint64_t row_bytes = 0;
        st = find_tensor(g, t, &f, &row_bytes);
        for (int64_t e = 0; st == FK_OK && e < (t->n_exp ? t->n_exp : 1); e++) st = import_slice(g, m, t, f, row_bytes, e, keep, &tmp, &cap);
    }
    // Every tensor in the file must be used: an extra one is something fusekit would drop.
    for (int64_t j = 0; j < g->n_tensors && st == FK_OK; j++) {
        const fk_gguf_str *nm = &g->tensors[j].name;
        bool known = false;
        for (int i = 0; i < l.n && !known; i++) known = strlen(l.t[i].name) == nm->n && memcmp(l.t[i].name, nm->s, nm->n) == 0;
        known |= m->cfg.rope_ext == FK_ROPE_EXT_LONGROPE && ((nm->n == 17 && memcmp(nm->s, "rope_freqs.weight", 17) == 0) ||
                                                             (nm->n == 24 && memcmp(nm->s, "rope_factors_long.weight", 24) == 0) ||
                                                             (nm->n == 25 && memcmp(nm->s, "rope_factors_short.weight", 25) == 0));  // config
        if (!known)
            st = fk_error(FK_ERR_UNSUPPORTED, "%s: tensor '%.*s' is not part of the model the keys describe (%s, %lld layers) or is not "
                          "supported by fusekit", g->path, (int)(nm->n > 200 ? 200 : nm->n), nm->s, arch, (long long)m->cfg.n_layer);
    }
    free(tmp);
    free(l.t);
    return st;
}

static void gguf_release(void *p) {
    fk_gguf_close(p);
    free(p);
}

fk_status fk_gguf_import(const char *path, fk_model *m, fk_tokenizer **tok) { return fk_gguf_import_ex(path, 0, m, tok); }

fk_status fk_gguf_import_ex(const char *path, unsigned flags, fk_model *m, fk_tokenizer **tok) {
    memset(m, 0, sizeof *m);
    if (tok) *tok = NULL;
    bool keep = flags & FK_GGUF_KEEP_STORED;
    fk_gguf *gp = malloc(sizeof *gp);
    if (!gp) return fk_error(FK_ERR_NOMEM, "out of memory");
    fk_status ost = fk_gguf_open(path, gp);
    if (ost != FK_OK) { free(gp); return ost; }
    fk_gguf_str a;
    fk_status st = fk_gguf_get_str(gp, "general.architecture", &a);
    const char *arch = NULL;
    if (st == FK_OK) {
        const arch_family *fam = arch_of_gguf(a.s, a.n);
        if (fam) arch = fam->gguf ? fam->gguf : fam->gguf_import;
        else
            st = fk_error(FK_ERR_UNSUPPORTED, "%s: key 'general.architecture' is \"%.*s\", which fusekit does not import (supported: %s)",
                          path, (int)(a.n > 64 ? 64 : a.n), a.s, arch_gguf_names());
    }
    fk_config c;
    if (st == FK_OK) st = import_config(gp, arch, &c);  // fk_config_validate: every size bounded before a product
    if (st == FK_OK) st = check_declared_size(gp, arch, &c);
    bool inited = false;
    if (st == FK_OK) {
        st = fk_model_init_ex(m, &c, keep ? FK_MODEL_INIT_STORED : 0);
        if (st != FK_OK) fk_error_context(st, "%s", path);
        inited = st == FK_OK;
    }
    if (st == FK_OK) st = import_tensors(gp, m, arch, keep);
    if (st == FK_OK && tok && fk_gguf_find(gp, "tokenizer.ggml.model")) {
        st = fk_tok_load_gguf(gp, tok);
        if (st == FK_OK && fk_tok_vocab_size(*tok) > c.vocab_size) {
            st = fk_error(FK_ERR_FORMAT, "%s: the tokenizer has %d tokens but the model's vocabulary only %lld", path,
                          fk_tok_vocab_size(*tok), (long long)c.vocab_size);
        }
        if (st != FK_OK) {
            if (!strstr(fk_last_error(), path)) fk_error_context(st, "%s", path);
            fk_tok_free(*tok);
            *tok = NULL;
        }
    }
    if (st != FK_OK && inited) fk_model_free(m);  // before the mapping its stored rows point into
    if (st == FK_OK && m->n_stored > 0) fk_model_set_stored_owner(m, gp, gguf_release);
    else gguf_release(gp);
    return st;
}
