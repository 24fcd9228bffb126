// Jobs (the fuse layer): training, knowledge fusion and healing as one call each, with every
// decision the fusekit program used to make around fk_train — which tokenizer, the held-out
// split, resume or a fresh run, the teachers aligned and opened, metrics.jsonl kept to one
// line per step — so that a verb only fills a job, calls it and prints what its hooks report.
//
// A job's fields are named after the train options that set them (fusekit train --help); the
// messages the library leaves (fk_last_error) and the lines it reports through the hooks name
// those options too ("pass --force", "--lr is ignored when resuming").
#ifndef FUSEKIT_JOB_H
#define FUSEKIT_JOB_H

#include "fusekit/extract.h"
#include "fusekit/fusion.h"
#include "fusekit/model_load.h"
#include "fusekit/train.h"

#include <signal.h>

// Paths given in a list (teachers, sources), in order.
#define FK_PATH_LIST_MAX 64
typedef struct {
    const char *v[FK_PATH_LIST_MAX];
    int n;
} fk_path_list;

// The shape of a new model: used when neither config nor init gives one.
typedef enum { FK_SHAPE_GPT2 = 0, FK_SHAPE_LLAMA = 1 } fk_shape_arch;
typedef struct {
    fk_shape_arch arch;
    int64_t vocab;           // 0: the tokenizer's (else the data's)
    int64_t d_model, layers, heads;
    int64_t kv_heads;        // 0: heads
    int64_t ffn;             // 0: 4*d for gpt2, 8/3*d rounded up to 32 for llama
    int64_t ctx;
    float rope_theta;        // llama
} fk_train_shape;

// The options given explicitly (fk_train_job.given): on a resume the first four override the
// checkpoint's values; the others would change the run the checkpoint belongs to, so a resume
// keeps the checkpoint's and reports each one given as ignored.
enum {
    FK_GIVEN_STEPS = 1u << 0, FK_GIVEN_EVAL_EVERY = 1u << 1, FK_GIVEN_SAVE_EVERY = 1u << 2, FK_GIVEN_LOG_EVERY = 1u << 3,
    FK_GIVEN_LR = 1u << 4, FK_GIVEN_MIN_LR_FRAC = 1u << 5, FK_GIVEN_WARMUP = 1u << 6, FK_GIVEN_WD = 1u << 7,
    FK_GIVEN_BETA1 = 1u << 8, FK_GIVEN_BETA2 = 1u << 9, FK_GIVEN_CLIP = 1u << 10, FK_GIVEN_BATCH = 1u << 11,
    FK_GIVEN_SEQ = 1u << 12, FK_GIVEN_GRAD_ACCUM = 1u << 13, FK_GIVEN_SEED = 1u << 14, FK_GIVEN_KEEP = 1u << 15,
    FK_GIVEN_EVAL_TOKENS = 1u << 16, FK_GIVEN_CONFIG = 1u << 17, FK_GIVEN_INIT = 1u << 18, FK_GIVEN_ARCH = 1u << 19,
    FK_GIVEN_PRECISION = 1u << 20, FK_GIVEN_OPTIM_STATE = 1u << 21,
};
// The FK_GIVEN_* bit of a train option ("--lr"), 0 for an option that has none.
unsigned fk_train_given_bit(const char *option);

// A training run: what fusekit train's options set. fk_train_job_defaults fills every default.
typedef struct {
    const char *data;        // training text or token shard (required)
    const char *val;         // held-out text or shard; NULL: the last val_frac of data
    double val_frac;         // 0.1
    const char *out;         // the run's folder: final model, checkpoint-<step>/, metrics.jsonl (required)
    const char *config;      // a new model's shape from a Hugging Face config.json
    const char *init;        // start from this model's weights (folder or .gguf)
    bool resume;             // continue from the newest checkpoint in out
    const char *resume_from; // continue from this checkpoint folder
    bool force;              // out may hold a model that is not a run (it is overwritten)
    const char *tokenizer;   // NULL: the checkpoint's, else init's, else bytes for text
    fk_train_shape shape;
    fk_path_list teachers;   // distribution stores (.fkd) on data: fused training / distillation
    float lambda;            // weight of the CLM loss with teachers (0.9)
    // The run's options. Two defaults depend on other values: o.seq 0 = the model's context,
    // o.optim.warmup -1 = steps/20. o.optim.total_steps is set from o.steps. o.fault_hook
    // (tests) is kept; o.stop, o.tokenizer and o.teacher are set by the run.
    fk_train_opts o;
    fk_fusion_opts fo;
    fk_align_opts ao;
    unsigned given;          // FK_GIVEN_*: the options given explicitly
    bool resumes_itself;     // run by a job that resumes by itself (fuse, heal): reported in the stop hint
} fk_train_job;

void fk_train_job_defaults(fk_train_job *j);

// What a run checks before any work: data and out given; a new model's d_model a multiple of
// its heads; teachers need data as text (the stores' corpus), not a token shard; an out that
// holds a model but no training run is refused unless force, resume or resume_from.
// FK_ERR_ARG with the message.
fk_status fk_train_job_check(const fk_train_job *j);

// What a job reports while it runs (every member may be NULL).
typedef struct {
    // A line for the person running it (the program prints it to stderr): "resuming from ...",
    // "warning: --lr is ignored when resuming ...", "teacher ...: aligned ...", "model: ...",
    // "saved ... (peak RSS ...)", "store ... (cached)".
    void (*note)(const char *line, void *user);
    // After every training step; json_line is the step's metrics line (as appended to
    // metrics.jsonl) when ev->log, else NULL. Under MPI only rank 0 reports.
    void (*step)(const fk_train_event *ev, const char *json_line, void *user);
    // After every sequence extracted by model; false stops (the store's .partial resumes later).
    bool (*extract)(const fk_extract_progress *p, const char *model, void *user);
    // Stop request (e.g. set by a SIGINT handler), polled by extraction and after every
    // training step: the step in progress is finished and saved as a checkpoint.
    const volatile sig_atomic_t *stop;
    void *user;
} fk_job_hooks;

typedef struct {
    bool refused;            // the job's checks refused it before any work (FK_ERR_ARG; fusekit exits 2)
    bool stopped;            // the stop request ended the job early: during extraction (the error
                             // says the store's .partial is kept), before training (FK_OK,
                             // before_training), or after a step (FK_OK, its checkpoint saved)
    bool before_training;    // stopped while loading or aligning: no step ran, nothing new saved
    int64_t step;            // steps completed (the checkpoint's step when stopped)
    int64_t steps;           // the run's length
    // Compute (fk_model_flops_per_token), for replay controls at equal FLOPs (fk_replay_steps):
    double train_flops_per_token;  // of the model trained, over windows of its training seq (0: no model loaded)
    int64_t tokens_per_step;       // batch x seq x grad_accum x data-parallel ranks
    double extraction_flops;       // fuse, heal: the forward passes extracting the teachers' stores (whether
                                   // extracted now or found cached): per model, forward FLOPs per token x tokens
} fk_train_job_result;

// Runs the training job: checks it (fk_train_job_check; r->refused), loads the tokenizer and the data,
// resumes from a checkpoint or starts fresh (a fresh run refuses an out holding a run),
// creates out, prepares the teachers (aligned stores cached in ao.cache_dir), trims
// metrics.jsonl to the steps before the start and appends each logged step to it, then trains.
// A run stopped after a step returns FK_OK with r->stopped set and checkpoint-<r->step> under
// out; one stopped before its first step (the stop flag is polled between loading, resuming and
// aligning) returns FK_OK with r->stopped and r->before_training, having saved nothing.
fk_status fk_train_job_run(const fk_train_job *j, const fk_job_hooks *h, fk_train_job_result *r);

// ---- Models with their tokenizers, as the jobs and the program's verbs load them (here, not in
// model_load.h: a tokenizer is checked against the model's rows by fk_vocab_check, data.h's).

// The tokenizer a model (a folder or a .gguf file) uses: `path` when given, else the model's own
// (the folder's tokenizer.json, the GGUF's tokenizer.ggml.* keys), else the byte tokenizer when
// the vocabulary has 256 tokens, else NULL (ids only). vocab < 0: not checked against the model.
fk_status fk_model_tokenizer(const char *model, const char *path, int64_t vocab, fk_tokenizer **t);

// Loads a model from a folder or a .gguf file (fk_model_load; flags FK_LOAD_*) and, unless tok is
// NULL, its tokenizer as fk_model_tokenizer chooses it (`tok_path` first). On failure nothing
// is left allocated.
fk_status fk_model_load_tok(const char *path, const char *tok_path, unsigned flags, fk_model *m, fk_tokenizer **tok);

// The name a model path goes by in file names: its last component without a trailing '/' or
// ".gguf" (written into out, n bytes).
void fk_model_name(const char *path, char *out, size_t n);

// Gives the heap's free pages back to the system (after tokenizer JSON is parsed or written).
void fk_heap_trim(void);

// Loads a model for extraction (frozen) with its own tokenizer, saves the tokenizer beside the
// store and extracts (or finds cached, or resumes) its top-k store on the text `data` into
// store_dir, named "<model name>-<fingerprint>.fkd"; *path gets the store's path (free it).
// Stopped by the hooks: FK_ERR_IO saying the .partial is kept, and *stopped (may be NULL) set.
fk_status fk_extract_model_store(const char *model, const char *data, const char *store_dir, int k, const fk_job_hooks *h, char **path,
                                 bool *stopped);

// Writes *tok beside a store (fk_store_save_tokenizer) and makes *tok the tokenizer as it reads
// back from there. A tokenizer from GGUF metadata can read back from tokenizer.json with another
// fingerprint (SentencePiece pieces merge by rank there, by score in GGUF; the same ids), and a
// store must record the fingerprint of the tokenizer kept beside it.
fk_status fk_store_keep_tokenizer(const char *store_path, fk_tokenizer **tok);

// Knowledge fusion (FuseLLM) in one call: each source's store extracted on train.data (the
// target's own first unless no_target_source), then train run with init = target, the stores
// as teachers, ao.cache_dir = store_dir, and resume when out already holds a checkpoint.
typedef struct {
    const char *target;
    fk_path_list sources;
    int k;                   // entries per position in the stores (10)
    const char *store_dir;   // NULL: <out>/stores
    bool no_target_source;
    int extract_precision;   // the sources' extraction: an fk_precision (INT8 too), or -1: train.o.precision (the default)
    fk_train_job train;      // data and out are the fusion corpus and the fused model
} fk_fuse_job;

void fk_fuse_job_defaults(fk_fuse_job *j);
fk_status fk_fuse_run(const fk_fuse_job *j, const fk_job_hooks *h, fk_train_job_result *r);

// Healing a folded model by distillation from the model before folding: the teacher's store
// on data, then train run with init = model, that store as the teacher with the tail class
// (fo.tail), and resume when out already holds a checkpoint.
typedef struct {
    const char *teacher, *model;
    int k;                   // 10
    const char *store_dir;   // NULL: <out>/stores
    fk_train_job train;      // data, out; defaults lambda 0.5, lr 1e-4 (a gentle fine-tune)
} fk_heal_job;

void fk_heal_job_defaults(fk_heal_job *j);
fk_status fk_heal_run(const fk_heal_job *j, const fk_job_hooks *h, fk_train_job_result *r);

#endif
