// Internal to src/nn: the mixture-of-experts FFN (moe.c) and what model.c shares with it
// (the fold's expert analysis, src/fold/moe.c, calls fk_nn_act_forward too: one activation dispatch).
#ifndef FK_NN_MOE_H
#define FK_NN_MOE_H
#include "fusekit/model.h"

// model.c's matrix product over the arena or a frozen model's stored rows (see mm_forward there),
// and the MLP activation of the model's kind (pre (N, F or 2F gated) -> act (N, F)) with its backward.
fk_status fk_nn_mm_forward(fk_model *m, float *out, const float *inp, int64_t woff, const float *bias, int64_t N, int64_t C, int64_t OC);
void fk_nn_act_forward(const fk_config *c, float *act, const float *pre, int64_t N, int64_t F);
void fk_nn_act_backward(const fk_config *c, float *dpre, const float *pre, const float *dact, int64_t N, int64_t F);

// One layer's MoE buffers (NK = N * K pairs, E the layer's experts, UP = expert_ffn, or twice it
// gated). A training forward keeps one slot per layer for the backward; inference and KV-cache
// steps use one slot (out is then xg itself: each expert's down projection overwrites the rows
// its up projection has read).
typedef struct {
    float *probs;              // (N, E) router softmax
    int32_t *idx;              // (N, K) chosen experts, largest probability first
    float *wts;                // (N, K) their weights
    int32_t *order, *start, *row_of;  // the pairs grouped by expert (fk_moe_sort): (NK), (E+1), (NK)
    float *pre, *act, *out;    // (NK, UP), (NK, expert_ffn), (NK, C): the experts' rows in grouped order
    float *sig, *dense;        // shared gate: (N) sigmoids, (N, C) the dense FFN's output before the gate
    float *logit, *xg;         // scratch: (N, E) router logits (backward: their gradient), (NK, C) gathered inputs
} fk_moe_slot;

// The MoE buffers of an activation arena: slot s of each per-slot buffer at base + s * stride.
typedef struct {
    fk_moe_slot at0;           // slot 0
    int64_t s_probs, s_nk, s_start, s_pre, s_act, s_out, s_n, s_nc;  // per-slot strides (elements)
    float *dye, *dact, *dpre, *dwts, *dglogit;   // backward scratch (train): (NK, C), (NK, F), (NK, UP), (NK), (N)
} fk_moe_bufs;

// Lays the buffers out from float offset off of base (NULL: counts only) for S slots of N rows;
// returns the offset after them. Nothing on a model without experts.
int64_t fk_moe_layout(fk_moe_bufs *b, const fk_config *c, int64_t S, int64_t N, bool train, float *base, int64_t off);
// Slot s of the buffers.
fk_moe_slot fk_moe_slot_at(const fk_moe_bufs *b, int64_t s);

// The FFN branch of MoE layer l for the N rows x (N, C) (the norm's output) into out (N, C):
// the routed experts, plus the layer's dense FFN (ffn[l] > 0; its pre/act buffers given), gated.
fk_status fk_moe_forward(fk_model *m, int64_t l, const fk_moe_slot *s, const float *x, float *dense_pre, float *dense_act,
                         float *out, int64_t N);
// Its backward from dout (N, C): gradients of the experts, router and shared gate added to m->g,
// of x added to dx (N, C). Returns the gradient of the dense FFN's output: dout, or with the shared
// gate sigmoid(g . x) dout written into ddense (N, C).
const float *fk_moe_backward(fk_model *m, int64_t l, const fk_moe_slot *s, const fk_moe_bufs *b, const float *dout, const float *x,
                             float *dx, float *ddense, int64_t N);
#endif
