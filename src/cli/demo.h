// Internal to `fusekit demo` (cmd_demo.c: the protocol and its steps; cmd_demo_report.c: the
// evaluation, the table, results.json and report.html).
#ifndef FK_CLI_DEMO_H
#define FK_CLI_DEMO_H

#include "cli.h"

#include <stdio.h>

#define N_DOM FK_SYNTH_N_DOMAINS
#define N_SRC 3
#define DEMO_MAX_TRIALS 8   // the largest tuning budget (full mode's)
#define DEMO_MAX_SEEDS 16
#define DEMO_MAX_ARMS 9
#define DEMO_MAX_ROWS (N_SRC + DEMO_MAX_ARMS)

// An arm's kind, which says what its tuning trials vary.
typedef enum {
    ARM_FUSE,  // fusekit fuse from B: lambda x learning rate x vocabulary map
    ARM_CLM,   // fusekit train from B (CLM only): the learning rate
    ARM_HEAL,  // fold + heal, or the same healing alone (fold --heal-only), of the fused model: the healing learning rate
} arm_kind;

// One model the protocol trains and compares: the fused model, the baseline, the folded model
// and, with --controls, the controls.
typedef struct {
    const char *name, *role;
    arm_kind kind;
    unsigned sources;  // ARM_FUSE: bit s = sources[s] is a teacher beside the target B (0: self-distillation)
    bool shuffle;      // ARM_FUSE: shuffled teachers (--shuffle-teachers)
    bool replay;       // ARM_CLM: the baseline given the fused run's extra FLOPs as extra steps
    bool fold;         // ARM_HEAL: fold before healing (else heal the unfolded model: the healed original)
    bool control;      // only with --controls
} demo_arm;

// One tuning trial's settings (the fields its arm's kind varies; the rest at the demo's values).
typedef struct {
    double lambda, lr;
    int vmap;  // fk_vmap_mode
} trial_set;

// The tuning grid: every arm gets exactly demo_cfg.trials trials.
typedef struct {
    int n_lambda, n_lr, n_vmap;  // ARM_FUSE trials: n_lambda * n_lr * n_vmap = trials
    double lambda[3], fuse_lr[3];
    int vmap[2];
    double clm_lr[DEMO_MAX_TRIALS], heal_lr[DEMO_MAX_TRIALS];  // ARM_CLM and ARM_HEAL trials
    // Self-distillation (no source beside B: every map is the identity, so the map cannot vary):
    // lambda x these n_lr * n_vmap learning rates, the same number of distinct trials.
    double self_lr[DEMO_MAX_TRIALS];
} demo_grid;

typedef struct {
    const char *mode;  // "full", "quick", "tiny"
    int64_t synth_bytes, heldout_bytes, probes;
    int64_t d_model, layers, heads, ctx, batch, src_steps;
    int64_t mix_slice;   // bytes of the mixed corpus each source also sees
    int64_t fuse_bytes;  // the fusion corpus: the first bytes of mix/train.txt
    int64_t fuse_steps, eval_every, heal_steps;
    double budget;       // the fold's share of FFN parameters
    int trials;          // the tuning budget: trials per arm
    demo_grid grid;
} demo_cfg;

// The step runner: logs, commands.sh and the clock.
typedef struct {
    const char *dir;
    double t0;
    FILE *commands;
    int step;
} demo;

void demo_say(demo *d, const char *fmt, ...);

// A model's figures on one split of every domain (and, on test, its probes).
typedef struct {
    const char *name, *role;
    char *dir;
    char arch[64], tok[64];
    int64_t params, ffn_params;
    double bpb[N_DOM], avg_bpb;
    double acc[N_DOM], avg_acc;
    double tokens_per_s;
} model_row;

// Evaluates r->dir on data_dir/<domain>/<split>.txt (bits per byte) and, with probes, on each
// domain's probes.jsonl.
fk_status demo_evaluate(const char *data_dir, const char *split, bool probes, model_row *r, int64_t ctx);

// What the protocol measured, for the table, results.json and report.html.
typedef struct {
    int n_trials;
    trial_set set[DEMO_MAX_TRIALS];
    double valid[DEMO_MAX_TRIALS];  // mean bits per byte over the domains' valid.txt
    int chosen;                     // argmin of valid (the first on ties)
} arm_tuning;

typedef struct {
    const demo_cfg *c;
    bool quick, controls;
    int n_seeds;
    int64_t seeds[DEMO_MAX_SEEDS];
    int n_arms;
    const demo_arm *arms[DEMO_MAX_ARMS];
    arm_tuning tune[DEMO_MAX_ARMS];
    int64_t replay_steps;              // the replay control's steps (0: none)
    double extract_flops, train_flops; // the fused run's (seed 1): extraction, and fused training
    int n_rows;                        // the sources, then the arms
    model_row rows[DEMO_MAX_SEEDS][DEMO_MAX_ROWS];  // test figures per seed
    const char *fused_dir, *base_dir, *folded_dir;  // seed 1's, for the curves and the fold charts
    const char *mix_valid;
    double secs;
} demo_results;

// The index of the arm named name in R's arms, or -1.
int demo_arm_index(const demo_results *R, const char *name);
// results.json and report.html in d->dir, then the table on stdout.
fk_status demo_outputs(demo *d, const demo_results *R);

#endif
