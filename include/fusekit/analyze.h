// Redundancy analysis (fold.md §1): streaming statistics of a model over a calibration text,
// accumulated batch by batch without storing activations.
//
// Residual stream, x_l the input of layer l (x_0 the embeddings, x_L the last layer's output):
// - Block Influence BI_l = 1 - mean_t cos(x_l, x_{l+1}) (ShortGPT);
// - angular distance d(l, l+n) = mean_t arccos(cos(x_l, x_{l+n})) / pi, n = 1..max_n (Gromov et al.);
// - linear CKA(x_l, x_{l+1}) in the minibatch form: sum_b HSIC(X_b, Y_b) /
//   sqrt(sum_b HSIC(X_b, X_b) * sum_b HSIC(Y_b, Y_b)), HSIC(X, Y) = ||Xc^T Yc||_F^2 with the
//   columns of each batch's rows centred (the biased estimator per batch).
// FFN of layer l, h the activations (act(gate x) * (up x), or act(W_in x)): the running mean
// and the Gram matrix G = sum_t h h^T (F_l x F_l), accumulated in double.
// Attention of layer l, z the heads' outputs before W_O: Z = sum_t z z^T (D x D, double);
// each head's contribution energy E||W_O,h z_h||^2 and the cosine similarity of the heads'
// contributions through W_O, both computed from Z.
#ifndef FUSEKIT_ANALYZE_H
#define FUSEKIT_ANALYZE_H

#include "fusekit/data.h"
#include "fusekit/model.h"

typedef struct {
    int n_layer, max_n, n_head, head_dim;
    int64_t tokens;             // positions analysed
    double *bi;                 // n_layer
    double *angular;            // n_layer * max_n: d(l, l+n) at [l * max_n + n - 1]; NaN past the last layer
    double *cka;                // n_layer
    int64_t *ffn;               // n_layer widths
    double **ffn_mean;          // per layer, ffn[l] values
    double **ffn_gram;          // per layer, ffn[l]^2 values (sum over tokens, not divided)
    int64_t *heads;             // n_layer: query heads per layer (folded models may have fewer than n_head)
    double **att_gram;          // per layer, D_l^2 values, D_l = heads[l] * head_dim (sum over tokens)
    double *head_energy;        // n_layer * n_head: mean ||W_O,h z_h||^2 (0 past heads[l])
    double *head_sim;           // n_layer * n_head^2: cosine of the heads' contributions (0 past heads[l])
    // Mixture of experts (cfg.moe layers; 0 / NULL on dense layers). x is the layer's FFN input,
    // norm2(x_l + W_O z + b_O), recomputed from the layer's input and heads' outputs (the hook's
    // arguments); the routing is the engine's (softmax, top-K, renormalised when expert_norm).
    int64_t *experts;           // n_layer: experts of the layer (fk_config_experts)
    double **expert_load;       // per MoE layer, E: share of the tokens' K routing choices that chose e (sums to 1)
    double **expert_usage;      // per MoE layer, E: mean over tokens of e's routing weight (0 where not chosen):
                                // how much of the layer's output e makes
    double **expert_gram;       // per MoE layer, E x E: sum_t y_e(x_t) . y_f(x_t), every expert on every token
    double **expert_sim;        // per MoE layer, E x E: cosine of the experts' outputs (from expert_gram)
    const char *model_path, *data_path;  // named in analysis.html when the caller sets them (not owned)
    // accumulators (internal)
    double *cos_sum, *ang_sum, *hsic_xy, *hsic_xx, *hsic_yy;
} fk_analysis;

// Runs the model over d in windows of seq tokens, in whole batches of `batch` windows (a last
// partial batch is left out), up to max_tokens positions (0: all; the windows are then spread
// evenly over the whole text), and fills *a. max_n: the largest layer distance for the
// angular distance (1..n_layer).
fk_status fk_analyze(fk_model *m, const fk_token_data *d, int seq, int batch, int64_t max_tokens, int max_n, fk_analysis *a);
void fk_analysis_free(fk_analysis *a);
// Writes dir/analysis.json (per-layer summaries; MoE layers: expert load, usage and output
// similarity) and dir/stats.safetensors (the Gram matrices, means and head similarities as f64
// tensors: ffn_gram.<l>, ffn_mean.<l>, att_gram.<l>, head_sim.<l>; MoE layers expert_gram.<l>,
// expert_usage.<l>) and dir/analysis.html (inline SVG charts: block influence, CKA, the
// angular-distance heatmap, FFN |correlation| histograms, head-similarity heatmaps, expert load
// bars and expert-similarity heatmaps; no scripts, no network), atomically.
fk_status fk_analysis_save(const fk_analysis *a, const char *dir);

#endif
