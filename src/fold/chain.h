// Internal to the fold module: a chain of per-layer folds. cur starts as the input model,
// borrowed; each step's result replaces it (the previous result freed); the end gives the last
// result, or a copy of the input when no step ran.
#ifndef FK_FOLD_CHAIN_H
#define FK_FOLD_CHAIN_H
#include "fusekit/model.h"

static inline fk_status fk_chain_step(fk_model *cur, bool *owned, fk_status st, fk_model *next) {
    if (*owned) fk_model_free(cur);
    *owned = st == FK_OK;
    if (st == FK_OK) *cur = *next;
    return st;
}

static inline fk_status fk_chain_end(const fk_model *m, fk_model *cur, bool owned, fk_status st, fk_model *out) {
    if (st != FK_OK) return st;
    if (owned) { *out = *cur; return FK_OK; }
    return fk_model_clone(out, m);
}
#endif
