// Folding (fold.md §4): structural edits that make a model smaller while keeping what it
// computes as far as a least-squares fit allows. The result is an ordinary fusekit model
// with per-layer FFN widths.
#ifndef FUSEKIT_FOLD_H
#define FUSEKIT_FOLD_H

#include "fusekit/analyze.h"
#include "fusekit/data.h"
#include "fusekit/eval.h"
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
//   mean(diag G) (fold.md §4). With ridge -> 0 this is the least-squares reconstruction of the layer's
//   output D h from the kept units, exact when the dropped units are scaled copies of kept ones.
// - FK_FOLD_MEAN_SUM: producing rows of each cluster averaged, consuming columns summed (gram unused).
// out is a new model (fk_model_free it); m is not changed.
fk_status fk_fold_ffn(const fk_model *m, int layer, const int32_t *labels, const int32_t *rep, int k, const double *gram, double ridge,
                      fk_fold_method method, fk_model *out);


// Greedy least-squares elimination of the FFN units of `layer` (the cost of fold.md §3):
// starting from all F units, repeatedly removes the unit whose removal raises the ridge
// least-squares residual of reconstructing the layer's output D h from the remaining units
// least (for weights W = D G_:K A^-1, A = G_KK + lambda I, removing unit j costs
// |W_:,j|^2 / (A^-1)_jj, then W and A^-1 are downdated in O(F (C + F))). order[F] gets the
// units in the order they go (order[F-w..F-1] is the kept set of width w); resid[F+1] (may
// be NULL) gets the relative residual r(w) = (tr(D G D^T) - tr(W A W^T)) / tr(D G D^T) of
// keeping w units, r(F) = the ridge's own residual (about 0), r(0) = 1.
fk_status fk_ffn_elimination(const fk_model *m, int layer, const double *gram, double ridge, int32_t *order, double *resid);
// Folds `layer` to the k units in keep (any order) by the least-squares refit of fk_fold_ffn;
// each dropped unit is assigned to the kept unit it correlates with most (|rho| from gram).
fk_status fk_fold_ffn_keep(const fk_model *m, int layer, const int32_t *keep, int k, const double *gram, double ridge, fk_model *out);

// Attention heads, folded within KV groups (grouped-query attention stays valid: every group
// keeps the same number of query heads; keys and values are untouched; heads are kept or
// dropped whole, never permuted inside, since RoPE rotates fixed dimension pairs).
// fk_head_elimination: greedy least squares on the heads' output Gram Z (D x D, D = heads *
// head_dim, from fusekit/analyze.h): each step removes one head from every group, the one whose
// removal leaves the most of tr(O Z O^T) explained by a refit of W_O on the remaining heads.
// order[heads] gets the heads in the order they go (the last n_kv_head * g entries are the
// kept set with g heads per group); resid[g] (G + 1 values, may be NULL) the relative residual
// with g heads per group.
fk_status fk_head_elimination(const fk_model *m, int layer, const double *Z, double ridge, int32_t *order, double *resid);
// Keeps the k query heads in keep (k / n_kv_head from every group) and refits the output
// projection: O' = O Z_:K (Z_KK + lambda I)^-1 over the kept heads' dimensions K.
fk_status fk_fold_heads(const fk_model *m, int layer, const int32_t *keep, int k, const double *Z, double ridge, fk_model *out);

// Pruning (the baselines): keeps the k units in keep and drops the rest. With mean (the
// activations' mean per unit, ffn[layer] values) the dropped units' mean output D_:,j mean_j
// is added to the down projection's bias (FLAP's bias compensation); a model without MLP
// biases gets them (zero for the kept rows; saved as model_type fusekit, see fk_config_arch).
fk_status fk_prune_ffn(const fk_model *m, int layer, const int32_t *keep, int k, const double *mean, fk_model *out);

// Layer surgery: a model of n_new layers, layer i = sum_j coef[i * n_layer + j] * layer j of m,
// tensor by tensor (global tensors copied). Layers combined with more than one non-zero
// coefficient must have equal shapes. Drop (one 1 per row), averaging (0.5, 0.5) and LaCo's
// merge (theta_l + sum_k (theta_{l+k} - theta_l): 1 - n, 1, ..., 1) are all of this form.
fk_status fk_fold_layers(const fk_model *m, int n_new, const double *coef, fk_model *out);

// Mixture of experts (fold.md §4): experts of an MoE layer merged or dropped (experts[layer] shrinks;
// n_expert_used must stay <= the experts left).
// fk_expert_groups: the layer's experts in k groups by greedy merges of their outputs on the
// calibration tokens (a->expert_gram) weighted by their usage (a->expert_usage): each step joins
// the two groups whose merge adds least to the residual of fk_expert_merge_residual (Ward's
// criterion u_A u_B / (u_A + u_B) |ybar_A - ybar_B|^2; ties: the lowest pair), so that a rarely
// used expert joins the expert it is most like, and duplicates merge at no cost. labels gets
// experts[layer] values in 0..k-1, numbered by first appearance.
fk_status fk_expert_groups(const fk_analysis *a, int layer, int k, int32_t *labels);
// The relative residual of merging the layer's experts as labels says, from the outputs' Gram
// matrix: sum_e u_e |y_e - ybar_g(e)|^2 / sum_e u_e |y_e|^2 with u = a->expert_usage and ybar_g the
// usage-weighted mean output of e's group (0: nothing merged, every expert alone).
double fk_expert_merge_residual(const fk_analysis *a, int layer, const int32_t *labels, int k);
// Merges the experts of MoE layer `layer` into k: labels (experts[layer] values in 0..k-1) give
// each expert's group. Merged expert j is the average of its group's up and down weights weighted
// by usage (experts[layer] values, e.g. a->expert_load: the share of the routing choices; equal
// weights where a group has none), and takes the router row of the group's most used member
// (ties: the lower index): the tokens routed to that member, most of the group's, keep their
// routing (an averaged row lowers the group's logits where members disagree). out is a new model
// (fk_model_free it); m is not changed.
fk_status fk_fold_experts(const fk_model *m, int layer, const int32_t *labels, int k, const double *usage, fk_model *out);
// Parameters one expert of c holds with its router row (what removing it saves).
int64_t fk_expert_params(const fk_config *c);
// Expert pruning (the baseline): keeps the k experts in keep, in that order, with their router
// rows; the router's softmax then runs over the kept experts (renormalising as the router does).
fk_status fk_prune_experts(const fk_model *m, int layer, const int32_t *keep, int k, fk_model *out);

// KL probes (fk_kl_probe, fold.md §3) and fk_eval_kl are evaluation: fusekit/eval.h.

// ---- The dynamic threshold (fold.md §3) ----
typedef enum { FK_SCOPE_FFN = 0, FK_SCOPE_BLOCKS, FK_SCOPE_ALL } fk_fold_scope;
// Parameters a scope counts: FFN units and experts (FK_PARAMS_FFN_UNITS | FK_PARAMS_EXPERTS: the
// down bias does not shrink with folding), everything in the layers (FK_PARAMS_BLOCKS), or the
// whole model (FK_PARAMS_ALL).
int64_t fk_fold_scope_params(const fk_model *m, fk_fold_scope scope);
typedef enum { FK_LAYER_DROP = 0, FK_LAYER_AVERAGE, FK_LAYER_LACO } fk_layer_op_kind;

typedef struct {
    double budget;        // fraction of the scope's parameters to remove (0..1)
    fk_fold_scope scope;  // what the fraction is of: FFN parameters, all layers' parameters, or all
    int round;            // FFN widths become multiples of this (default 8)
    double min_width;     // keep at least this fraction of each layer's FFN width (default 0.3)
    bool fold_edges;      // the first and last layer may be folded too (default false)
    bool uniform;         // one FFN width for every layer (edges included; no layer operations)
    bool ffn_ops;         // consider FFN width operations (default true)
    bool layer_ops;       // consider layer operations: drop, average with the next, LaCo merge (default true)
    bool head_ops;        // consider folding attention heads within KV groups (default true; never with
                          // scope FFN, whose budget heads do not count towards, nor with uniform)
    bool expert_ops;      // consider merging the experts of MoE layers (default true)
    double ridge;         // lambda = ridge * mean(diag G) (default 1e-2)
} fk_fold_opts;
void fk_fold_opts_default(fk_fold_opts *o);

typedef struct {
    fk_layer_op_kind kind;
    int layer;            // first layer of the operation (in the original numbering)
    int span;             // layers it replaces by one (drop: 1 and removes it; average: 2; LaCo: 3)
    double kl;            // measured KL on the probe
    int64_t params;       // parameters removed
} fk_layer_op;

typedef struct {
    int n_layer;
    int64_t scope_params, budget_params, removed_params;
    int64_t ffn_before[FK_MAX_LAYERS], ffn_after[FK_MAX_LAYERS];
    int64_t unit_params[FK_MAX_LAYERS];  // parameters per FFN unit of each layer
    bool foldable[FK_MAX_LAYERS];
    double sensitivity[FK_MAX_LAYERS];   // KL per unit of relative residual, from the probe
    double probe_kl[FK_MAX_LAYERS];      // KL of the layer alone folded to probe_width
    int64_t probe_width[FK_MAX_LAYERS];
    double resid[FK_MAX_LAYERS];         // relative residual at the planned width
    double est_kl[FK_MAX_LAYERS];        // sensitivity * resid
    int32_t *order[FK_MAX_LAYERS];       // elimination order (fk_ffn_elimination), NULL for unfoldable layers
    int64_t group_before[FK_MAX_LAYERS], group_after[FK_MAX_LAYERS];  // query heads per KV group
    int64_t head_step_params[FK_MAX_LAYERS];  // parameters one head fewer per group saves
    double head_sensitivity[FK_MAX_LAYERS], head_probe_kl[FK_MAX_LAYERS], head_est_kl[FK_MAX_LAYERS];
    int32_t *head_order[FK_MAX_LAYERS];  // fk_head_elimination's order, NULL where heads are not folded
    int64_t experts_before[FK_MAX_LAYERS], experts_after[FK_MAX_LAYERS];  // MoE layers' experts (0: dense)
    int64_t expert_step_params[FK_MAX_LAYERS];  // parameters one expert fewer saves (its weights, its router row)
    bool expert_foldable[FK_MAX_LAYERS];
    int64_t expert_probe[FK_MAX_LAYERS];        // experts at the probe
    double expert_sensitivity[FK_MAX_LAYERS], expert_probe_kl[FK_MAX_LAYERS], expert_est_kl[FK_MAX_LAYERS];
    int n_ops;
    fk_layer_op ops[FK_MAX_LAYERS];      // the layer operations taken, in ascending layer order
    double est_kl_total;
} fk_fold_plan;

// Spends the budget where it costs least estimated KL. FFN steps of `round` units per layer,
// expert steps (one expert fewer in an MoE layer: fk_expert_groups' next cut, its relative
// residual fk_expert_merge_residual; at least max(n_expert_used, min_width of the experts) kept)
// and head steps (one query head fewer in every KV group of a layer) are ranked by estimated
// KL per parameter saved (estimated KL = sensitivity * relative
// residual, the sensitivity from one KL probe per layer) and taken until budget_params is met.
// Layer operations (each measured on the probe; the best of drop / average / LaCo kept per
// place) come first: one is taken when it plus the FFN plan for the rest of the budget costs
// less than the FFN plan without it; they never overshoot the budget, and their layers get no
// FFN steps. Guards: widths >= min_width, multiples of round, edge layers untouched unless
// fold_edges. Fails with a message when the guards leave too little to reach the budget. a
// must be of m.
fk_status fk_fold_plan_make(fk_model *m, const fk_analysis *a, const fk_kl_probe *probe, const fk_fold_opts *o, fk_fold_plan *plan);
// Applies the plan's layer operations (first; then re-collect statistics and plan the widths
// again with ffn_ops only) or its FFN widths (each layer folded to its planned kept set), heads
// and experts (merged by fk_expert_groups at the planned count, weighted by a->expert_load).
fk_status fk_fold_plan_apply_layers(const fk_model *m, const fk_fold_plan *p, fk_model *out);
fk_status fk_fold_plan_apply_ffn(const fk_model *m, const fk_fold_plan *p, const fk_analysis *a, double ridge, fk_model *out);
// The plan as JSON (budget, per-layer widths, residuals, sensitivities, estimates, layer
// operations); the caller frees it with free().
char *fk_fold_plan_json(const fk_fold_plan *p);
void fk_fold_plan_free(fk_fold_plan *p);
const char *fk_layer_op_name(fk_layer_op_kind k);

// ---- The fold pipeline (src/fold/run.c): what `fusekit fold` runs in each round ----
typedef enum {
    FK_FOLD_SELECT_GREEDY = 0,  // the kept FFN units by the plan's greedy least-squares elimination
    FK_FOLD_SELECT_MEDOID,      // the medoids of average-linkage clusters of 1 - |rho|
} fk_fold_select;

typedef struct {
    fk_fold_opts plan;      // budget, scope, guards, operations, ridge (fk_fold_opts_default; budget 0.3)
    fk_fold_method method;  // lsq (default) or mean-sum (clusters: always by medoid clusters)
    fk_fold_select select;  // with lsq: greedy (default) or medoid
    int seq;                // window length for statistics and probes, 0 = the model's context (default)
    int batch;              // windows per forward pass while collecting statistics (default 4)
    int64_t max_tokens;     // calibration positions at most, 0 = all (default 65536)
    int probe_windows;      // windows in the KL probe that calibrates the estimates (default 8)
    bool plan_only;         // plan and stop: no folded model
} fk_fold_run_opts;
void fk_fold_run_defaults(fk_fold_run_opts *o);

typedef struct {
    fk_fold_plan plan;      // the plan (layer operations and widths)
    fk_fold_plan widths;    // after layer operations: the widths planned again (has_widths)
    bool has_widths;
    fk_model folded;        // the folded model (not with plan_only)
    int64_t params_before, params_after, scope_before, scope_removed;
    double est_kl;          // estimated KL of what was applied, nats: the plan's, or with layer operations
                            // their measured KL plus the widths planned again after them
    double probe_kl;        // KL(original || folded) measured on the held-out probe text (NAN with plan_only)
} fk_fold_result;
void fk_fold_result_free(fk_fold_result *r);

// Called with each plan as it is made (widths: the second plan, after layer operations), before
// it is applied: the CLI writes plan.json and reports. A failure stops the run.
typedef fk_status (*fk_fold_plan_fn)(const fk_fold_plan *p, bool widths, void *user);

// Folds m by o->plan.budget of its scope on the calibration tokens d: statistics from the first
// 90% of d, KL probes on the last 10% (all of d for both when the tenth is shorter than a
// window); the plan; its layer operations, then fresh statistics and the widths planned again
// for what is left; the FFN folded by the plan or by clusters; the probe's KL of the result.
// on_plan may be NULL. m's weights are not changed (its activations are used). fk_fold_result_free r.
fk_status fk_fold_run(fk_model *m, const fk_token_data *d, const fk_fold_run_opts *o, fk_fold_plan_fn on_plan, void *user, fk_fold_result *r);

// Progressive folding (fold.md): rounds of fold -> heal, each folding 1/rounds of the budget
// (in parameters of the original's scope) and healing heal_steps / rounds steps. Round r folds
// into OUT/round-r/folded and heals into OUT/round-r/healed (the last round into OUT); with no
// healing (one round) the fold goes to OUT itself. A round whose healing has a checkpoint and
// whose folded model is complete is not folded again: its healing resumes.
typedef struct {
    double budget;        // fraction of the original's scope to remove in all
    fk_fold_scope scope;
    int rounds;           // >= 1; more than one needs heal_steps
    int64_t heal_steps;   // in all, split over the rounds; 0: no healing
} fk_fold_rounds_opts;

typedef struct {
    int round, rounds;
    const char *model;    // what this round folds (NULL once folded)
    const char *folded;   // where its folded model goes
    int64_t params;       // scope parameters this round removes
    bool resumed;         // folded already: healing resumes
} fk_fold_round_event;

// What the rounds call back (the folding and healing themselves live where their inputs are
// loaded and their outputs saved: fold by fk_fold_run, heal by distillation through fuse, a
// sibling of fold that fold may not include).
typedef struct {
    // Folds the model at `model` by `fraction` of its own scope into dir (in_place: directly,
    // as healing follows; else through a temporary folder renamed when complete); *removed gets
    // the scope parameters removed.
    fk_status (*fold)(const char *model, const char *dir, double fraction, bool in_place, int64_t *removed, void *user);
    // Heals `model` by distillation from `teacher` (the original) into out for `steps` steps.
    fk_status (*heal)(const char *teacher, const char *model, const char *out, int64_t steps, bool resume, const fk_fold_round_event *ev,
                      void *user);
    void (*report)(const fk_fold_round_event *ev, void *user);  // before each round (may be NULL)
    void *user;
} fk_fold_rounds_ops;

fk_status fk_fold_rounds(const char *model, const char *out, const fk_fold_rounds_opts *o, const fk_fold_rounds_ops *ops);

// ---- Baselines at a parameter budget (fold.md §6) ----
typedef enum {
    FK_PRUNE_NONE = -1,      // none chosen (fk_prune_defaults)
    FK_PRUNE_MAGNITUDE = 0,  // FFN channels with the smallest L2 norm of their weights (gate, up rows; down column), the same fraction per layer
    FK_PRUNE_FLAP,           // FLAP: fluctuation Var(h_j) |D_:,j|^2, z-scored per layer, one global threshold, bias compensation
    FK_PRUNE_SHORTGPT,       // ShortGPT: whole layers in order of Block Influence, lowest first
    FK_PRUNE_EXPERTS,        // MoE: the least used experts (expert_load, one global order), >= n_expert_used kept per layer
} fk_prune_method;
// What fusekit prune runs: the method (required: FK_PRUNE_NONE until chosen), the budget and
// its scope, and the statistics' windows (seq 0: the model's context; max_tokens 0: all).
typedef struct {
    fk_prune_method method;
    double budget;
    fk_fold_scope scope;
    int64_t seq, batch, max_tokens;
    int64_t params;  // > 0: the pruned model's parameter count instead of the budget (fk_prune_to_params)
} fk_prune_opts;
// method none, budget 0.3, scope ffn, seq 0, batch 4, max_tokens 65536, params 0.
void fk_prune_defaults(fk_prune_opts *o);

// Removes at least budget * (the scope's parameters) (fk_fold_opts' scopes) by the method;
// *removed gets the parameters removed. Channel methods keep >= 1 unit per layer; ShortGPT
// never removes the last remaining layer. a must be of m (FLAP needs the FFN means and
// variances, ShortGPT the Block Influence).
fk_status fk_prune(const fk_model *m, const fk_analysis *a, fk_prune_method method, double budget, fk_fold_scope scope, fk_model *out,
                   int64_t *removed);
// Prunes to `params` parameters, the largest model of at most that many the method reaches:
// exactly `params` where its steps allow (e.g. a folded model's count, to compare at equal
// size). Magnitude and FLAP remove the shortest prefix of their channel order that reaches it
// (magnitude's layers then differ by one channel at most; whole channels: exact when the
// parameters to remove are a multiple of a channel's; FLAP's compensation biases, 2 per kept
// channel and d_model per layer on a model without MLP biases, are counted, so its steps are
// a channel and its 2 biases); ShortGPT drops whole layers, lowest Block Influence first, while
// they fit, then prunes the remaining layers' FFN channels by magnitude for the rest. Dense
// models only. *removed gets the parameters removed (all of them, not a scope's).
fk_status fk_prune_to_params(const fk_model *m, const fk_analysis *a, fk_prune_method method, int64_t params, fk_model *out, int64_t *removed);

#endif
