// The mixture-of-experts FFN branch (Mixtral, Qwen2-MoE, Qwen3-MoE, OLMoE; fk_config's MoE
// switches): router softmax and top-k, the (token, slot) pairs grouped per expert so each expert
// runs one matrix product over its rows, the weighted sum, the gated dense (shared) expert, and
// the backward of all of it.
#include "nn/moe.h"
#include "nn/ops.h"

#include <string.h>

static int64_t exp_up_dim(const fk_config *c) { return fk_config_gated(c) ? 2 * c->expert_ffn : c->expert_ffn; }

int64_t fk_moe_layout(fk_moe_bufs *b, const fk_config *c, int64_t S, int64_t N, bool train, float *base, int64_t off) {
    memset(b, 0, sizeof *b);
    if (c->n_expert == 0) return off;
    int64_t E = c->n_expert, NK = N * c->n_expert_used, C = c->d_model, F = c->expert_ffn, UP = exp_up_dim(c);
    fk_moe_slot *s = &b->at0;
    b->s_probs = N * E; b->s_nk = NK; b->s_start = E + 1; b->s_pre = NK * UP; b->s_act = NK * F; b->s_out = train ? NK * C : 0;
    b->s_n = c->shared_gate ? N : 0; b->s_nc = c->shared_gate ? N * C : 0;
    // each buffer starts 64-byte aligned (16 floats)
#define CARVE(p, type, count) do { p = base ? (type *)(base + off) : NULL; off += ((count) + 15) & ~(int64_t)15; } while (0)
    CARVE(s->probs, float, S * b->s_probs); CARVE(s->idx, int32_t, S * NK); CARVE(s->wts, float, S * NK);
    CARVE(s->order, int32_t, S * NK); CARVE(s->start, int32_t, S * b->s_start); CARVE(s->row_of, int32_t, S * NK);
    CARVE(s->pre, float, S * b->s_pre); CARVE(s->act, float, S * b->s_act);
    if (c->shared_gate) { CARVE(s->sig, float, S * N); CARVE(s->dense, float, S * N * C); }
    CARVE(s->logit, float, N * E); CARVE(s->xg, float, NK * C);
    if (train) {
        CARVE(s->out, float, S * NK * C);
        CARVE(b->dye, float, NK * C); CARVE(b->dact, float, NK * F); CARVE(b->dpre, float, NK * UP); CARVE(b->dwts, float, NK);
        CARVE(b->dglogit, float, N);
    } else
        s->out = s->xg;
#undef CARVE
    return off;
}

fk_moe_slot fk_moe_slot_at(const fk_moe_bufs *b, int64_t k) {
    fk_moe_slot s = b->at0;
    if (!s.probs) return s;
    s.probs += k * b->s_probs; s.idx += k * b->s_nk; s.wts += k * b->s_nk; s.order += k * b->s_nk; s.start += k * b->s_start;
    s.row_of += k * b->s_nk; s.pre += k * b->s_pre; s.act += k * b->s_act; s.out += k * b->s_out;
    if (s.sig) { s.sig += k * b->s_n; s.dense += k * b->s_nc; }
    return s;
}

fk_status fk_moe_forward(fk_model *m, int64_t l, const fk_moe_slot *s, const float *x, float *dense_pre, float *dense_act,
                         float *out, int64_t N) {
    const fk_config *c = &m->cfg;
    const fk_layer_offsets *o = &m->layer[l];
    int64_t C = c->d_model, E = fk_config_experts(c, l), K = c->n_expert_used, F = c->expert_ffn, UP = exp_up_dim(c);
    // the dense (shared) expert, times sigmoid(shared_gate . x) with the gate; or nothing
    if (c->ffn[l] > 0) {
        int64_t DF = c->ffn[l];
        FK_TRY(fk_nn_mm_forward(m, dense_pre, x, o->up_w, NULL, N, C, fk_config_gated(c) ? 2 * DF : DF));
        fk_nn_act_forward(c, dense_act, dense_pre, N, DF);
        FK_TRY(fk_nn_mm_forward(m, c->shared_gate ? s->dense : out, dense_act, o->down_w, NULL, N, DF, C));
        if (c->shared_gate) {
            fk_matmul_forward(s->sig, x, m->w + o->shared_gate_w, NULL, N, C, 1);
            fk_sigmoid_gate_forward(out, s->sig, s->sig, s->dense, N, C);  // the logits become their sigmoids in place
        }
    } else
        memset(out, 0, (size_t)(N * C) * sizeof(float));
    // route, group the pairs per expert, run each expert over its rows, add the weighted outputs
    FK_TRY(fk_nn_mm_forward(m, s->logit, x, o->router_w, NULL, N, C, E));
    fk_moe_route_forward(s->probs, s->idx, s->wts, s->logit, N, E, K, c->expert_norm);
    fk_moe_sort(s->order, s->start, s->row_of, s->idx, N, K, E);
    fk_moe_gather(s->xg, x, s->order, N * K, K, C);
    for (int64_t e = 0; e < E; e++) {
        int64_t r0 = s->start[e], n = s->start[e + 1] - r0;
        if (n == 0) continue;  // an expert no token chose costs nothing
        FK_TRY(fk_nn_mm_forward(m, s->pre + r0 * UP, s->xg + r0 * C, o->exp_up_w + e * o->exp_up_stride, NULL, n, C, UP));
    }
    fk_nn_act_forward(c, s->act, s->pre, N * K, F);
    for (int64_t e = 0; e < E; e++) {
        int64_t r0 = s->start[e], n = s->start[e + 1] - r0;
        if (n == 0) continue;
        FK_TRY(fk_nn_mm_forward(m, s->out + r0 * C, s->act + r0 * F, o->exp_down_w + e * o->exp_down_stride, NULL, n, F, C));
    }
    fk_moe_combine_forward(out, s->out, s->wts, s->row_of, N, K, C);
    return FK_OK;
}

const float *fk_moe_backward(fk_model *m, int64_t l, const fk_moe_slot *s, const fk_moe_bufs *b, const float *dout, const float *x,
                             float *dx, float *ddense, int64_t N) {
    const fk_config *c = &m->cfg;
    const fk_layer_offsets *o = &m->layer[l];
    int64_t C = c->d_model, E = fk_config_experts(c, l), K = c->n_expert_used, F = c->expert_ffn, UP = exp_up_dim(c), NK = N * K;
    // the weighted sum: each pair's output gradient (grouped order) and its weight's
    memset(b->dye, 0, (size_t)(NK * C) * sizeof(float));
    memset(b->dwts, 0, (size_t)NK * sizeof(float));
    fk_moe_combine_backward(b->dye, b->dwts, dout, s->out, s->wts, s->row_of, N, K, C);
    // each expert: down, activation, up; the inputs' gradient (grouped) replaces dye's rows once
    // the down projection has read them
    fk_moe_gather(s->xg, x, s->order, NK, K, C);
    memset(b->dact, 0, (size_t)(NK * F) * sizeof(float));
    for (int64_t e = 0; e < E; e++) {
        int64_t r0 = s->start[e], n = s->start[e + 1] - r0, wd = o->exp_down_w + e * o->exp_down_stride;
        if (n > 0) fk_matmul_backward(b->dact + r0 * F, m->g + wd, NULL, b->dye + r0 * C, s->act + r0 * F, m->w + wd, n, F, C);
    }
    memset(b->dpre, 0, (size_t)(NK * UP) * sizeof(float));
    fk_nn_act_backward(c, b->dpre, s->pre, b->dact, NK, F);
    memset(b->dye, 0, (size_t)(NK * C) * sizeof(float));
    for (int64_t e = 0; e < E; e++) {
        int64_t r0 = s->start[e], n = s->start[e + 1] - r0, wu = o->exp_up_w + e * o->exp_up_stride;
        if (n > 0) fk_matmul_backward(b->dye + r0 * C, m->g + wu, NULL, b->dpre + r0 * UP, s->xg + r0 * C, m->w + wu, n, C, UP);
    }
    fk_moe_gather_backward(dx, b->dye, s->row_of, N, K, C);
    // the router: through the weights and the softmax (the choice has no gradient)
    memset(s->logit, 0, (size_t)(N * E) * sizeof(float));
    fk_moe_route_backward(s->logit, s->probs, s->idx, s->wts, b->dwts, N, E, K, c->expert_norm);
    fk_matmul_backward(dx, m->g + o->router_w, NULL, s->logit, x, m->w + o->router_w, N, C, E);
    if (!c->shared_gate) return dout;
    // the shared expert's gate: d dense = s dout, d logit = (dout . dense) s (1 - s)
    memset(ddense, 0, (size_t)(N * C) * sizeof(float));
    memset(b->dglogit, 0, (size_t)N * sizeof(float));
    fk_sigmoid_gate_backward(ddense, b->dglogit, dout, s->sig, s->dense, N, C);
    fk_matmul_backward(dx, m->g + o->shared_gate_w, NULL, b->dglogit, x, m->w + o->shared_gate_w, N, C, 1);
    return ddense;
}
