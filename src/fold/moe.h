// Internal to the fold module: the routing statistics of mixture-of-experts layers (moe.c).
#ifndef FK_FOLD_MOE_H
#define FK_FOLD_MOE_H
#include "fusekit/analyze.h"

// Allocates a's MoE arrays for model config c (zeroed; none when c has no MoE layer).
bool fk_moe_stats_alloc(fk_analysis *a, const fk_config *c);
// Adds one batch of MoE layer l's statistics: xl the layer's input and att its heads' outputs
// (N rows each, as the forward hook gives them).
fk_status fk_moe_stats_add(const fk_model *m, int l, const float *xl, const float *att, int64_t N, fk_analysis *a);
// The sums over `tokens` positions become means and cosines (layer l).
void fk_moe_stats_finish(fk_analysis *a, int l, int64_t n_expert_used);
void fk_moe_stats_free(fk_analysis *a);
#endif
