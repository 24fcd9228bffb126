// Folding (fold.md §4): structural edits that make a model smaller while keeping what it
// computes as far as a least-squares fit allows. The result is an ordinary fusekit model
// with per-layer FFN widths.
#ifndef FUSEKIT_FOLD_H
#define FUSEKIT_FOLD_H

#include "fusekit/model.h"

typedef enum {
    FK_FOLD_LSQ = 0,       // keep the representatives, refit the down projection by least squares
    FK_FOLD_MEAN_SUM = 1,  // Model Folding: producing rows averaged per cluster, consuming columns summed
} fk_fold_method;

// Folds the FFN of `layer` to k units. labels (ffn[layer] values in 0..k-1) give each unit's
// cluster; rep (k values) the unit kept for each cluster (e.g. its medoid).
// - FK_FOLD_LSQ: unit rep[c] keeps its producing rows (gate/up or W_in, and biases); the down
//   projection becomes D' = D G_:K (G_KK + lambda I)^-1 with G the activations' Gram matrix
//   (ffn x ffn, sums over tokens, from fusekit/analyze.h), K = rep, lambda = ridge *
//   mean(diag G_KK). With ridge -> 0 this is the least-squares reconstruction of the layer's
//   output D h from the kept units, exact when the dropped units are scaled copies of kept ones.
// - FK_FOLD_MEAN_SUM: producing rows of each cluster averaged, consuming columns summed (gram unused).
// out is a new model (fk_model_free it); m is not changed.
fk_status fk_fold_ffn(const fk_model *m, int layer, const int32_t *labels, const int32_t *rep, int k, const double *gram, double ridge,
                      fk_fold_method method, fk_model *out);

#endif
