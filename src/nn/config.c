// fk_config presets and validation.
#include "fusekit/model.h"

#include <math.h>
#include <string.h>

static void config_common(fk_config *c, int64_t vocab, int64_t d_model, int64_t n_layer, int64_t n_head, int64_t max_seq) {
    memset(c, 0, sizeof *c);
    c->vocab_size = vocab;
    c->d_model = d_model;
    c->n_layer = n_layer;
    c->n_head = n_head;
    c->n_kv_head = n_head;
    c->head_dim = n_head > 0 ? d_model / n_head : 0;
    c->max_seq = max_seq;
    c->rope_theta = 10000.0f;
    c->bos_id = -1;
    c->eos_id = -1;
}

void fk_config_gpt2(fk_config *c, int64_t vocab, int64_t d_model, int64_t n_layer, int64_t n_head, int64_t max_seq) {
    config_common(c, vocab, d_model, n_layer, n_head, max_seq);
    for (int l = 0; l < FK_MAX_LAYERS; l++) c->ffn[l] = 4 * d_model;
    c->norm = FK_NORM_LAYERNORM;
    c->norm_eps = 1e-5f;
    c->pos = FK_POS_LEARNED;
    c->mlp = FK_MLP_GELU;
    c->bias_qkv = c->bias_out = c->bias_mlp = c->bias_norm = true;
    c->tied = true;
}

void fk_config_llama(fk_config *c, int64_t vocab, int64_t d_model, int64_t n_layer, int64_t n_head,
                     int64_t n_kv_head, int64_t ffn, int64_t max_seq) {
    config_common(c, vocab, d_model, n_layer, n_head, max_seq);
    c->n_kv_head = n_kv_head;
    for (int l = 0; l < FK_MAX_LAYERS; l++) c->ffn[l] = ffn;
    c->norm = FK_NORM_RMSNORM;
    c->norm_eps = 1e-5f;
    c->pos = FK_POS_ROPE;
    c->mlp = FK_MLP_SWIGLU;
    c->tied = false;
}

bool fk_config_gated(const fk_config *c) { return c->mlp == FK_MLP_SWIGLU || c->mlp == FK_MLP_GEGLU; }

bool fk_config_uniform_ffn(const fk_config *c) {
    for (int64_t l = 1; l < c->n_layer; l++)
        if (c->ffn[l] != c->ffn[0]) return false;
    return true;
}

fk_status fk_config_validate(const fk_config *c) {
    if (c->vocab_size < 1 || c->vocab_size > (1 << 30)) return fk_error(FK_ERR_ARG, "config: vocab_size %lld is out of range", (long long)c->vocab_size);
    if (c->d_model < 1) return fk_error(FK_ERR_ARG, "config: d_model must be positive (got %lld)", (long long)c->d_model);
    if (c->n_layer < 1 || c->n_layer > FK_MAX_LAYERS)
        return fk_error(FK_ERR_ARG, "config: n_layer %lld must be in 1..%d", (long long)c->n_layer, FK_MAX_LAYERS);
    if (c->n_head < 1 || c->n_kv_head < 1 || c->n_head % c->n_kv_head != 0)
        return fk_error(FK_ERR_ARG, "config: n_head %lld must be a positive multiple of n_kv_head %lld",
                        (long long)c->n_head, (long long)c->n_kv_head);
    if (c->head_dim < 1) return fk_error(FK_ERR_ARG, "config: head_dim must be positive (got %lld)", (long long)c->head_dim);
    if (c->pos == FK_POS_ROPE && c->head_dim % 2 != 0)
        return fk_error(FK_ERR_ARG, "config: RoPE needs an even head_dim (got %lld)", (long long)c->head_dim);
    if (c->max_seq < 1) return fk_error(FK_ERR_ARG, "config: max_seq must be positive");
    for (int64_t l = 0; l < c->n_layer; l++) {
        if (c->ffn[l] < 1) return fk_error(FK_ERR_ARG, "config: layer %lld has FFN width %lld", (long long)l, (long long)c->ffn[l]);
        int64_t h = fk_config_heads(c, l);
        if (h < c->n_kv_head || h > c->n_head || h % c->n_kv_head != 0)
            return fk_error(FK_ERR_ARG, "config: layer %lld has %lld query heads, expected a multiple of n_kv_head %lld up to n_head %lld", (long long)l,
                            (long long)h, (long long)c->n_kv_head, (long long)c->n_head);
    }
    // Sizes (from hostile files too): every matrix dimension within BLAS's int, and the weights,
    // the RoPE tables and the KV cache at most 2^40 floats, so that no size product overflows.
    const double lim = 2147483647.0, cap = 1099511627776.0;
    double C = (double)c->d_model, hd = (double)c->head_dim, S = (double)c->max_seq, H = (double)c->n_head;
    double KVD = (double)c->n_kv_head * hd, QKV = H * hd + 2 * KVD;
    const struct { const char *name; double v; } dims[] = {
        {"d_model", C}, {"head_dim", hd}, {"max_seq", S}, {"(n_head + 2 n_kv_head) x head_dim", QKV}};
    for (size_t i = 0; i < sizeof dims / sizeof dims[0]; i++)
        if (dims[i].v > lim) return fk_error(FK_ERR_ARG, "config: %s is %.0f, expected at most 2^31 - 1", dims[i].name, dims[i].v);
    double total = 2 * (double)c->vocab_size * C + S * C;
    for (int64_t l = 0; l < c->n_layer; l++) {
        double F = (double)c->ffn[l];
        if (2 * F > lim) return fk_error(FK_ERR_ARG, "config: layer %lld has FFN width %lld, expected at most 2^30 - 1", (long long)l, (long long)c->ffn[l]);
        total += (QKV + H * hd + 3 * F) * C + QKV + 2 * F + 8 * C;
    }
    if (total > cap) return fk_error(FK_ERR_ARG, "config: %.4g weights, expected at most 2^40", total);
    if ((double)c->n_layer * S * KVD > cap || S * hd > cap)
        return fk_error(FK_ERR_ARG, "config: max_seq %lld makes a KV cache of %.4g floats or RoPE tables of %.4g, expected at most 2^40",
                        (long long)c->max_seq, (double)c->n_layer * S * KVD, S * hd / 2);
    if (!(c->norm_eps > 0)) return fk_error(FK_ERR_ARG, "config: norm epsilon must be positive");
    if (c->pos == FK_POS_ROPE && !(c->rope_theta > 0)) return fk_error(FK_ERR_ARG, "config: rope_theta must be positive");
    if (c->norm == FK_NORM_RMSNORM && c->bias_norm) return fk_error(FK_ERR_ARG, "config: RMSNorm has no bias");
    if (c->mlp != FK_MLP_GELU && c->mlp != FK_MLP_SWIGLU && c->mlp != FK_MLP_GEGLU)
        return fk_error(FK_ERR_ARG, "config: unknown MLP kind %d", (int)c->mlp);
    if (c->norm != FK_NORM_RMSNORM && (c->post_norms || c->qk_norm || c->norm_offset != 0))
        return fk_error(FK_ERR_ARG, "config: post-norms, QK-norm and a norm offset need RMSNorm");
    // the Gemma switches: finite, not negative
    const struct { const char *name; float v; } f[] = {
        {"emb_scale", c->emb_scale}, {"norm_offset", c->norm_offset}, {"attn_scale", c->attn_scale},
        {"attn_softcap", c->attn_softcap}, {"final_softcap", c->final_softcap},
        {"rope_theta_local", c->rope_theta_local}, {"rope_scale", c->rope_scale}};
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++)
        if (!(f[i].v >= 0) || !isfinite(f[i].v))
            return fk_error(FK_ERR_ARG, "config: %s is %g, expected a finite value >= 0", f[i].name, (double)f[i].v);
    if (c->sliding_window < 0) return fk_error(FK_ERR_ARG, "config: sliding_window %lld is negative", (long long)c->sliding_window);
    for (int64_t l = 0; l < c->n_layer; l++)
        if (c->sliding[l] > 1) return fk_error(FK_ERR_ARG, "config: sliding[%lld] is %d, expected 0 or 1", (long long)l, c->sliding[l]);
    return FK_OK;
}

int64_t fk_config_heads(const fk_config *c, int64_t l) { return c->heads[l] > 0 ? c->heads[l] : c->n_head; }

bool fk_config_uniform_heads(const fk_config *c) {
    for (int64_t l = 0; l < c->n_layer; l++)
        if (fk_config_heads(c, l) != c->n_head) return false;
    return true;
}

void fk_config_describe(const fk_config *c, char *buf, size_t n) {
    char ffn[64];
    if (fk_config_uniform_ffn(c)) snprintf(ffn, sizeof ffn, "%lld", (long long)c->ffn[0]);
    else snprintf(ffn, sizeof ffn, "per-layer");
    snprintf(buf, n, "vocab=%lld d_model=%lld n_layer=%lld n_head=%lld n_kv_head=%lld head_dim=%lld ffn=%s ctx=%lld "
             "norm=%s pos=%s mlp=%s bias(qkv=%d out=%d mlp=%d norm=%d) tied=%d",
             (long long)c->vocab_size, (long long)c->d_model, (long long)c->n_layer, (long long)c->n_head,
             (long long)c->n_kv_head, (long long)c->head_dim, ffn, (long long)c->max_seq,
             c->norm == FK_NORM_LAYERNORM ? "layernorm" : "rmsnorm",
             c->pos == FK_POS_LEARNED ? "learned" : c->pos == FK_POS_ROPE ? "rope" : "none",
             c->mlp == FK_MLP_GELU ? "gelu" : c->mlp == FK_MLP_GEGLU ? "geglu" : "swiglu", c->bias_qkv, c->bias_out,
             c->bias_mlp, c->bias_norm, c->tied);
    // the Gemma switches, only those that are on
    size_t k = strlen(buf);
#define ADD(...) do { if (k < n) { snprintf(buf + k, n - k, __VA_ARGS__); k += strlen(buf + k); } } while (0)
    if (c->emb_scale > 0) ADD(" emb_scale=%g", (double)c->emb_scale);
    if (c->norm_offset != 0) ADD(" norm_offset=%g", (double)c->norm_offset);
    if (c->post_norms) ADD(" post_norms=1");
    if (c->qk_norm) ADD(" qk_norm=1");
    if (c->attn_scale > 0) ADD(" attn_scale=%g", (double)c->attn_scale);
    if (c->attn_softcap > 0) ADD(" attn_softcap=%g", (double)c->attn_softcap);
    if (c->final_softcap > 0) ADD(" final_softcap=%g", (double)c->final_softcap);
    int64_t ns = 0;
    for (int64_t l = 0; l < c->n_layer; l++) ns += c->sliding[l] != 0;
    if (c->sliding_window > 0 && ns > 0) ADD(" window=%lld on %lld/%lld layers", (long long)c->sliding_window, (long long)ns, (long long)c->n_layer);
    if (c->rope_theta_local > 0) ADD(" rope_theta_local=%g", (double)c->rope_theta_local);
    if (c->rope_scale > 0 && c->rope_scale != 1) ADD(" rope_scale=%g", (double)c->rope_scale);
#undef ADD
}
