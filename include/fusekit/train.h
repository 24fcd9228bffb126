// Training: AdamW with decoupled weight decay, global-norm gradient clipping,
// linear warmup + cosine decay, gradient accumulation, held-out evaluation, and
// checkpoints (Hugging Face folder + optimizer state) that resume exactly.
#ifndef FUSEKIT_TRAIN_H
#define FUSEKIT_TRAIN_H

#include "fusekit/data.h"
#include "fusekit/eval.h"
#include "fusekit/model.h"
#include "fusekit/tokenizer.h"

#include <signal.h>

typedef struct {
    float lr;             // peak learning rate
    float min_lr_frac;    // the cosine decays to lr * min_lr_frac
    float beta1, beta2, eps;
    float weight_decay;   // decoupled, on matrices and embeddings only (fk_param.decay)
    float clip;           // global gradient-norm clip; <= 0 disables
    int64_t warmup;       // linear warmup steps
    int64_t total_steps;  // length of the schedule
    // How the two AdamW moments are stored: F32, or BF16 (half the optimizer's memory: 4 bytes per
    // weight instead of 8), each update computed in f32 from the stored values and rounded back
    // stochastically (unbiased; the random bits a hash of the step and the element, so runs and
    // resumes repeat exactly) — rounding to nearest would drop updates smaller than half a bf16
    // step (beta2 close to 1).
    int moments;          // fk_moments
} fk_optim_opts;
typedef enum { FK_MOMENTS_F32 = 0, FK_MOMENTS_BF16 = 1 } fk_moments;
// "f32" or "bf16" -> *out; else FK_ERR_ARG naming --optim-state and the value.
fk_status fk_moments_parse(const char *s, fk_moments *out);
// x rounded to bf16 stochastically with 16 random bits r: up with probability (x's low 16 bits)/2^16.
uint16_t fk_bf16_round_stochastic(float x, uint32_t r);

void fk_optim_defaults(fk_optim_opts *o);
// Learning rate at `step` (0-based): lr*(step+1)/warmup during warmup, then cosine to lr*min_lr_frac.
float fk_lr_at(const fk_optim_opts *o, int64_t step);

typedef struct {
    fk_optim_opts o;
    float *m, *v;         // moments of the arena entries lo .. hi-1 (FK_MOMENTS_F32; else NULL):
                          // entry i of the arena at m[i - lo]
    uint16_t *m16, *v16;  // the same as bf16 bit patterns (FK_MOMENTS_BF16; else NULL)
    int64_t n;            // the arena's entries
    int64_t lo, hi;       // the entries this optimizer updates: all (0, n), or a ZeRO-1 shard
    int64_t t;            // updates done (bias correction)
} fk_adamw;

fk_status fk_adamw_init(fk_adamw *a, const fk_model *m, const fk_optim_opts *o);
void fk_adamw_free(fk_adamw *a);
// Keeps the moments of arena entries [lo, hi) only (within those held now): fk_adamw_update then
// updates those weights alone (ZeRO-1: each rank of a data-parallel run one share, the weights
// exchanged after). FK_ERR_NOMEM leaves a as it was.
fk_status fk_adamw_shard(fk_adamw *a, int64_t lo, int64_t hi);
// Global L2 norm of the gradients (accumulated in double).
double fk_grad_norm(const fk_model *m);
// One update with learning rate lr; gradients are multiplied by grad_scale first (clipping).
void fk_adamw_update(fk_adamw *a, fk_model *m, float lr, float grad_scale);

// A teacher for fused training and distillation: fills sparse next-token targets for a
// micro-batch whose row b holds positions off[b] .. off[b]+T-1 of the training data
// (labels: the true next tokens, B*T). The loss is lambda * CE + (1 - lambda) * the fusion term
// (objective: soft CE, the default, or ULD; fk_model_forward_objective).
typedef struct {
    fk_status (*fill)(void *ctx, const int64_t *off, int B, int T, const int32_t *labels, fk_sparse_dist *out);
    void *ctx;
    float lambda;
    fk_objective objective;
    // FK_OBJECTIVE_SPAN (fusion.md §6): called after a forward without teacher rows with the
    // student's nats on the labels (nll, B*T, fk_model_token_losses); sets *w to B*T weights
    // (the teacher's buffer) such that the step's loss lambda * CE + (1 - lambda) * L_span has
    // the gradient sum_i w[i] * d nll[i] (fk_model_weight_rows), *loss to that loss and *fusion
    // to L_span. NULL for the other objectives.
    fk_status (*span)(void *ctx, const int64_t *off, int B, int T, const int32_t *labels, const float *nll, const float **w,
                      float *loss, float *fusion);
} fk_teacher;

typedef struct {
    int64_t steps;        // optimizer steps in all
    int batch, seq;       // sequences per micro-batch, tokens per sequence
    int grad_accum;       // micro-batches per step
    fk_optim_opts optim;
    uint64_t seed;
    int64_t eval_every;   // steps between held-out evaluations (0: only at the end)
    int64_t eval_tokens;  // held-out tokens per evaluation (0: all)
    int64_t save_every;   // steps between checkpoints (0: only at the end)
    int keep;             // checkpoints kept
    int64_t log_every;    // steps between metric events
    // Matrix products while training, evaluation included (fk_matmul_set_precision for the run,
    // the caller's setting restored after): FP32, or BF16 operands with fp32 accumulation into fp32
    // master weights and gradients (AdamW stays fp32). Saved in trainer_state.json when not FP32.
    fk_precision precision;
    // Activation checkpointing for the run (fk_model_set_checkpointing, the model's setting restored
    // after): less memory per sequence, one more forward's work per step, the same gradients. Not
    // part of the saved options (it does not change the run's numbers).
    bool checkpoint_activations;
    // ZeRO-1 under mpirun: each rank keeps the AdamW moments of its 1/R share of the weights and
    // updates that share, then the ranks exchange the updated weights; optimizer memory per rank
    // falls as 1/R, the numbers are the same (every update is element-wise). Checkpoints gather
    // the moments to rank 0, so they are the same files as without. Not part of the saved options.
    bool zero1;
    // Where the steps run: FK_DEVICE_CPU, or FK_DEVICE_CUDA (the CUDA engine, include/fusekit/gpu.h:
    // weights, gradients, moments and activations on the GPU; checkpoints, evaluations and the final
    // model go through the host model, so a run can be resumed on either). Not part of the saved options.
    int device;
    // Written (tokenizer.json, tokenizer_config.json) beside every checkpoint and the final
    // model so that each folder is complete; NULL for none. Not part of the saved options.
    const fk_tokenizer *tokenizer;
    // Fused training / distillation when set (not part of the saved options). The data's
    // positions must be the teacher's: row offsets are positions of `train`.
    const fk_teacher *teacher;
    // Stop request (not part of the saved options; NULL for none), e.g. set by a program's
    // SIGINT handler: polled after every step. When it reads non-zero the step in progress is
    // finished, checkpoint-<step> is written (when there is an out_dir) and fk_train returns
    // FK_OK early, without the final model: opt->t < o->steps tells a stopped run from a
    // finished one, and the last event has `stopped` set. The library installs no handler.
    const volatile sig_atomic_t *stop;
    // Fault injection for tests (NULL in normal use): called at named points, now only
    // "checkpoint-write" (a checkpoint half written: the model saved in the temporary folder,
    // the optimizer state and trainer_state.json not yet), with the step being saved.
    void (*fault_hook)(const char *point, int64_t step, void *ctx);
    void *fault_ctx;
} fk_train_opts;

void fk_train_defaults(fk_train_opts *o);

typedef struct {
    int64_t step;         // steps completed
    int64_t steps;
    float loss;           // mean training loss of this step (with a teacher: lambda * clm + (1 - lambda) * fusion)
    float clm_loss;       // mean cross-entropy of the true next tokens
    float fusion_loss;    // mean soft cross-entropy against the teacher (NaN without one)
    float lr;
    float grad_norm;      // before clipping
    double tokens_per_s;  // training throughput since the run (or resume) started
    double elapsed_s;
    float val_loss;       // NaN when not evaluated at this step
    float val_bpb;
    const char *checkpoint;  // path when a checkpoint was written at this step, else NULL
    bool log;             // a metrics step (every log_every steps, evaluations, checkpoints, the last)
    bool stopped;         // the run stops after this step on a stop request (o->stop); checkpoint is its checkpoint
} fk_train_event;

// Called after every step.

typedef void (*fk_train_cb)(const fk_train_event *ev, void *user);

// Data parallelism: this process's MPI rank and the number of ranks (0 and 1 without MPI).
// Under mpirun each rank draws its own micro-batches, gradients are averaged, rank 0 writes.
int fk_dp_rank(void);
int fk_dp_size(void);

// FK_ERR_ARG for a precision training does not take (INT8: frozen quantized models only).
fk_status fk_train_precision_check(fk_precision p);

// Trains from opt->t ... up to o->steps. Checkpoints go to out_dir/checkpoint-<step>/ and the
// final model to out_dir itself (temporaries a killed run left under out_dir are removed
// first). val may be NULL. With o->stop set, may return FK_OK early (see fk_train_opts.stop).
fk_status fk_train(fk_model *m, fk_adamw *opt, const fk_token_data *train, const fk_token_data *val,
                   const fk_train_opts *o, const char *out_dir, fk_train_cb cb, void *user);

// Held-out evaluation (fk_eval_data, fk_eval_result) is in eval.h, included above.

// Checkpoints: HF folder + optimizer.safetensors + trainer_state.json (written last: its
// presence marks a complete checkpoint). The folder is written as "<dir>.tmp", fsynced and
// renamed to dir when complete, so a kill at any point leaves either the old complete
// checkpoint or none under dir, never a half-written one; a stale "<dir>.tmp" is removed.
fk_status fk_checkpoint_save(const char *dir, const fk_model *m, const fk_adamw *opt, const fk_train_opts *o);
fk_status fk_checkpoint_load(const char *dir, fk_model *m, fk_adamw *opt, fk_train_opts *o);
// The newest complete checkpoint-<step> under out_dir (malloc'd path), FK_ERR_IO when none.
// Temporaries (checkpoint-<step>.tmp, .old) are never taken for checkpoints.
fk_status fk_checkpoint_latest(const char *out_dir, char **path);

// The replay control's length at equal compute: a CLM-only run of steps steps given the extra
// FLOPs a fused run spent besides training (the teachers' extraction; the fusion loss's own
// cost, a sparse row of at most S*k entries per position, is O(k) per token against the
// model's millions: not counted) as more steps of the same size:
//   steps + ceil(extra_flops / (train_flops_per_token x tokens_per_step)).
// steps when extra_flops <= 0 or the step's cost is not positive.
int64_t fk_replay_steps(int64_t steps, double extra_flops, double train_flops_per_token, int64_t tokens_per_step);

#endif
