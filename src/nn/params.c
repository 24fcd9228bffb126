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
