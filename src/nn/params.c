// Parameter counting by role: the table's entries grouped (embeddings, attention, FFN units,
// norms, ...) so that every count in the library and the CLI is one mask over one loop.
#include "fusekit/model.h"

unsigned fk_param_group(fk_param_kind k) {
    switch (k) {
    case FK_P_TOK_EMB: case FK_P_POS_EMB: return FK_PARAMS_EMBED;
    case FK_P_QKV_W: case FK_P_QKV_B: case FK_P_O_W: case FK_P_O_B: case FK_P_Q_NORM_W: case FK_P_K_NORM_W: return FK_PARAMS_ATTN;
    case FK_P_UP_W: case FK_P_UP_B: case FK_P_DOWN_W: return FK_PARAMS_FFN_UNITS;
    case FK_P_DOWN_B: return FK_PARAMS_FFN_DOWN_B;
    case FK_P_LN1_W: case FK_P_LN1_B: case FK_P_LN2_W: case FK_P_LN2_B: case FK_P_ATTN_POST_W: case FK_P_FFN_POST_W: return FK_PARAMS_NORMS;
    case FK_P_LNF_W: case FK_P_LNF_B: case FK_P_LM_HEAD: case FK_P_LM_HEAD_B: return FK_PARAMS_FINAL;
    case FK_P_ROUTER_W: case FK_P_EXP_UP_W: case FK_P_EXP_DOWN_W: case FK_P_SHARED_GATE_W: return FK_PARAMS_EXPERTS;
    case FK_P_COUNT: break;
    }
    return 0;
}

int64_t fk_model_count_params(const fk_model *m, unsigned mask, int layer) {
    int64_t n = 0;
    for (int i = 0; i < m->n_params; i++) {
        const fk_param *p = &m->params[i];
        if ((layer == FK_PARAMS_ANY_LAYER || p->layer == layer) && (fk_param_group(p->kind) & mask)) n += p->numel;
    }
    return n;
}

int64_t fk_model_num_params(const fk_model *m) { return fk_model_count_params(m, FK_PARAMS_ALL, FK_PARAMS_ANY_LAYER); }

void fk_model_flops_per_token(const fk_model *m, int ctx, double *fwd, double *train) {
    const fk_config *c = &m->cfg;
    double f = 2.0 * (double)fk_model_num_matmul_params(m);
    for (int64_t l = 0; l < c->n_layer; l++) {
        int64_t keys = ctx, heads = c->heads[l] ? c->heads[l] : c->n_head;
        if (c->sliding_window > 0 && c->sliding[l] && c->sliding_window < keys) keys = c->sliding_window;
        f += 4.0 * (double)keys * (double)(heads * c->head_dim);
    }
    if (fwd) *fwd = f;
    if (train) *train = 3 * f;
}
