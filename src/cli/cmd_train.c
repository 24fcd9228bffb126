// fusekit train: trains a model on a text file (bytes) or token shards.
#include "cli.h"
#include "fusekit/fusion.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

// ------------------------------------------------------------------ stopping (cli.h)

volatile sig_atomic_t cli_stop_signal;
static int stop_depth;
static struct sigaction stop_old[2];

static void on_stop_signal(int sig) {
    if (cli_stop_signal) _exit(128 + sig);  // the second: at once (everything saved is complete)
    cli_stop_signal = sig;
    static const char msg[] = "\nfusekit: stopping after the current step to save (press Ctrl-C again to quit at once)\n";
    ssize_t w = write(2, msg, sizeof msg - 1);
    (void)w;
}

void cli_stop_begin(void) {
    if (stop_depth++ > 0) return;
    cli_stop_signal = 0;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop_signal;
    sa.sa_flags = SA_RESTART;  // reads and writes in progress go on; the loop polls the flag
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &stop_old[0]);
    sigaction(SIGTERM, &sa, &stop_old[1]);
}

void cli_stop_end(void) {
    if (stop_depth == 0 || --stop_depth > 0) return;
    sigaction(SIGINT, &stop_old[0], NULL);
    sigaction(SIGTERM, &stop_old[1], NULL);
}

int cli_stop_code(void) { return 128 + (cli_stop_signal ? (int)cli_stop_signal : SIGINT); }

bool cli_train_resumes_itself;

// Test-only fault injection (tests/test_faults.c): FK_TEST_KILL_AT=checkpoint-write[:STEP] kills
// the process with SIGKILL while a checkpoint (of STEP, or any) is half written.
static void test_fault(const char *point, int64_t step, void *ctx) {
    (void)ctx;
    const char *want = getenv("FK_TEST_KILL_AT");
    size_t n = strlen(point);
    if (!want || strncmp(want, point, n) != 0) return;
    if (want[n] == 0 || (want[n] == ':' && strtoll(want + n + 1, NULL, 10) == step)) raise(SIGKILL);
}

// metrics.jsonl holds each step once: after a resume (or a fresh start over a run killed before
// its first checkpoint), the lines past `step` are dropped, and so is a line a kill cut short.
static fk_status trim_metrics(const char *path, int64_t step) {
    if (!fk_path_exists(path)) return FK_OK;
    char *text = NULL;
    size_t n = 0;
    FK_TRY(fk_read_file(path, &text, &n));
    char *out = malloc(n + 1);
    if (!out) { free(text); return fk_error(FK_ERR_NOMEM, "out of memory reading %s", path); }
    size_t k = 0;
    bool changed = false;
    for (char *line = text; *line;) {
        char *nl = strchr(line, '\n');
        size_t len = nl ? (size_t)(nl - line) : strlen(line);
        cJSON *j = nl ? cJSON_ParseWithLength(line, len) : NULL;  // a line without its newline was cut short
        const cJSON *s = cJSON_GetObjectItemCaseSensitive(j, "step");
        if (cJSON_IsNumber(s) && s->valuedouble <= (double)step) {
            memcpy(out + k, line, len + 1);
            k += len + 1;
        } else changed = true;
        cJSON_Delete(j);
        line += len + (nl ? 1 : 0);
    }
    fk_status st = changed ? fk_write_file_atomic(path, out, k) : FK_OK;
    free(out);
    free(text);
    return st;
}

typedef struct { FILE *metrics; bool tty; int64_t start_step; fk_teacher_set *teachers; } train_ui;

static void on_step(const fk_train_event *ev, void *user) {
    train_ui *ui = user;
    if (fk_dp_rank() != 0) return;  // under MPI, rank 0 speaks for all
    if (ui->tty) {
        double rate = (double)(ev->step - ui->start_step) / (ev->elapsed_s > 0 ? ev->elapsed_s : 1e-9);
        double eta = rate > 0 ? (double)(ev->steps - ev->step) / rate : 0;
        fprintf(stderr, "\rstep %lld/%lld  loss %.4f  lr %.2e  %.0f tok/s  ETA %dm%02ds   ", (long long)ev->step,
                (long long)ev->steps, ev->loss, ev->lr, ev->tokens_per_s, (int)(eta / 60), (int)fmod(eta, 60));
        if (ev->step == ev->steps || ev->stopped) fputc('\n', stderr);
        fflush(stderr);
    }
    if (!ev->log) return;
    // cJSON builds the line: numbers formatted, the checkpoint path escaped, no fixed buffer
    cJSON *j = cJSON_CreateObject();
    cJSON_AddNumberToObject(j, "step", (double)ev->step);
    cJSON_AddNumberToObject(j, "loss", ev->loss);
    if (isfinite(ev->fusion_loss)) {
        cJSON_AddNumberToObject(j, "clm_loss", ev->clm_loss);
        cJSON_AddNumberToObject(j, "fusion_loss", ev->fusion_loss);
    }
    cJSON_AddNumberToObject(j, "lr", ev->lr);
    cJSON_AddNumberToObject(j, "grad_norm", ev->grad_norm);
    cJSON_AddNumberToObject(j, "tokens_per_s", round(ev->tokens_per_s * 10) / 10);
    cJSON_AddNumberToObject(j, "elapsed_s", round(ev->elapsed_s * 1000) / 1000);
    if (isfinite(ev->val_loss)) {
        cJSON_AddNumberToObject(j, "val_loss", ev->val_loss);
        cJSON_AddNumberToObject(j, "val_bpb", ev->val_bpb);
    }
    if (ev->checkpoint) cJSON_AddStringToObject(j, "checkpoint", ev->checkpoint);
    if (ui->teachers) {  // which teacher the fusion followed so far, in shares of positions
        double sh[64];
        int n = fk_teacher_set_size(ui->teachers);
        fk_teacher_set_shares(ui->teachers, sh);
        cJSON_AddItemToObject(j, "teacher_shares", cJSON_CreateDoubleArray(sh, n));
    }
    if (ui->tty) fputs("\r\033[K", stderr);
    cli_json_print(j, stdout, ui->metrics);
}

// The shape of a new model: the flags used when neither --config nor --init gives one.
typedef enum { SHAPE_GPT2 = 0, SHAPE_LLAMA = 1 } shape_arch;
typedef struct {
    shape_arch arch;
    int64_t vocab, d_model, layers, heads, kv_heads, ffn, ctx;
    float rope_theta;
} train_shape;

// Everything train's flags set: the library's options (fk_train_defaults, fk_fusion_defaults,
// fk_align_opts_default) and what only the command line has.
typedef struct {
    const char *data, *val, *out, *config, *init, *resume_from, *tokenizer;
    double val_frac;
    train_shape shape;
    bool resume, force;
    int64_t threads;
    cli_list teachers;
    float lambda;
    fk_train_opts o;
    fk_fusion_opts fo;
    fk_align_opts ao;
    cli_opt *rows;  // the table, for cli_was_set
} train_args;

static void train_args_init(train_args *a) {
    memset(a, 0, sizeof *a);
    a->val_frac = 0.1;
    a->shape = (train_shape){SHAPE_GPT2, 0, 128, 4, 4, 0, 0, 256, 10000.0f};
    a->lambda = 0.9f;
    fk_train_defaults(&a->o);
    fk_fusion_defaults(&a->fo);
    fk_align_opts_default(&a->ao);
}

static const char train_usage[] =
    "usage: fusekit train --data FILE -o OUT [options]\n\n"
    "With --teacher: fused training (knowledge fusion; one teacher: distillation). The loss is\n"
    "lambda * CLM + (1 - lambda) * soft cross-entropy against the fused teachers' next-token\n"
    "distributions. --data must be the text the stores were extracted from.";

// Parses train's flags into a (rows: a table of TRAIN_ROWS entries). Returns -1 to go on, else the exit code.
#define TRAIN_ROWS 49
static int train_parse(int argc, char **argv, train_args *a, cli_opt *rows) {
    train_shape *sh = &a->shape;
    fk_train_opts *o = &a->o;
    cli_opt t[TRAIN_ROWS] = {
        {"--data", OPT_STR, &a->data, "training text or token shard (required)", false, NULL},
        {"--tokenizer", OPT_STR, &a->tokenizer, "tokenizer for text data (.gguf, tokenizer.json or a folder; default: --init's or the checkpoint's, else bytes)", false, NULL},
        {"--val", OPT_STR, &a->val, "held-out text or shard (default: the last --val-frac of --data)", false, NULL},
        {"--val-frac", OPT_FLOAT, &a->val_frac, "fraction of --data held out when --val is absent", false, "[0,1)"},
        {"-o|--out", OPT_STR, &a->out, "output folder: the final model, checkpoint-<step>/ folders, metrics.jsonl (required)", false, NULL},
        {"--config", OPT_STR, &a->config, "model shape from a Hugging Face config.json", false, NULL},
        {"--init", OPT_STR, &a->init, "start from the weights of this model (a folder or a .gguf file; its tokenizer comes along)", false, NULL},
        {"--arch", OPT_CHOICE, CLI_ENUM(&sh->arch), "preset for the shape flags", false, "gpt2|llama"},
        {"--vocab", OPT_INT, &sh->vocab, "vocabulary size (default: the data's)", false, "[0,16777216]"},
        {"--d-model", OPT_INT, &sh->d_model, "model width", false, "[1,65536]"},
        {"--layers", OPT_INT, &sh->layers, "number of layers", false, "[1,256]"},
        {"--heads", OPT_INT, &sh->heads, "attention heads", false, "[1,4096]"},
        {"--kv-heads", OPT_INT, &sh->kv_heads, "key/value heads, grouped-query attention (default: --heads)", false, "[0,4096]"},
        {"--ffn", OPT_INT, &sh->ffn, "FFN width (default 4*d for gpt2, 8/3*d rounded up to 32 for llama)", false, "[0,1048576]"},
        {"--ctx", OPT_INT, &sh->ctx, "context length", false, "[1,1048576]"},
        {"--rope-theta", OPT_F32, &sh->rope_theta, "RoPE base (llama)", false, "(0,)"},
        {"--steps", OPT_INT, &o->steps, "optimizer steps", false, "[1,)"},
        {"--batch", OPT_I32, &o->batch, "sequences per micro-batch", false, "[1,65536]"},
        {"--seq", OPT_I32, &o->seq, "tokens per sequence (default: the context length)", false, "[0,1048576]"},
        {"--grad-accum", OPT_I32, &o->grad_accum, "micro-batches per step", false, "[1,65536]"},
        {"--lr", OPT_F32, &o->optim.lr, "peak learning rate", false, "(0,1]"},
        {"--min-lr-frac", OPT_F32, &o->optim.min_lr_frac, "cosine floor as a fraction of --lr", false, "[0,1]"},
        {"--warmup", OPT_INT, &o->optim.warmup, "linear warmup steps (default: steps/20)", false, "[0,)"},
        {"--wd", OPT_F32, &o->optim.weight_decay, "AdamW decoupled weight decay on matrices and embeddings", false, "[0,1]"},
        {"--beta1", OPT_F32, &o->optim.beta1, "AdamW beta1", false, "[0,1)"},
        {"--beta2", OPT_F32, &o->optim.beta2, "AdamW beta2", false, "[0,1)"},
        {"--clip", OPT_F32, &o->optim.clip, "global gradient-norm clip, 0 = off", false, "[0,)"},
        {"--seed", OPT_INT, (int64_t *)&o->seed, "seed for initialisation and batches", false, "[0,)"},
        {"--eval-every", OPT_INT, &o->eval_every, "steps between held-out evaluations", false, "[0,)"},
        {"--eval-tokens", OPT_INT, &o->eval_tokens, "held-out tokens per evaluation, 0 = all", false, "[0,)"},
        {"--save-every", OPT_INT, &o->save_every, "steps between checkpoints, 0 = only at the end", false, "[0,)"},
        {"--keep", OPT_I32, &o->keep, "checkpoints kept", false, "[1,1000000]"},
        {"--log-every", OPT_INT, &o->log_every, "steps between metric lines", false, "[1,)"},
        {"--resume", OPT_FLAG, &a->resume, "continue from the newest checkpoint in --out", false, NULL},
        {"--resume-from", OPT_STR, &a->resume_from, "continue from this checkpoint folder", false, NULL},
        {"--force", OPT_FLAG, &a->force, "write into an --out that holds a model but no training run (it is overwritten)", false, NULL},
        CLI_ROW_THREADS(&a->threads),
        {"--teacher", OPT_LIST, &a->teachers, "distribution store (.fkd, from fusekit extract) of a teacher on --data; repeat for fusion", false, NULL},
        {"--fusion", OPT_CHOICE, CLI_ENUM(&a->fo.kind), "how teachers are fused", false, "mince|avgce"},
        {"--fusion-level", OPT_CHOICE, CLI_ENUM(&a->fo.level), "the span MinCE/AvgCE compare teachers on", false, "sequence|token"},
        {"--lambda", OPT_F32, &a->lambda, "weight of the CLM loss; 1 - lambda goes to the fusion loss", false, "[0,1]"},
        {"--tau", OPT_F32, &a->fo.tau, "AvgCE temperature on cross-entropies", false, "(0,)"},
        {"--teacher-temp", OPT_F32, &a->fo.temperature, "temperature on the teachers' log-probabilities", false, "(0,)"},
        {"--teacher-tail", OPT_FLAG, &a->fo.tail, "keep the teachers' full-softmax top-k probabilities and match the rest as a tail class (default: renormalise the top k, as FuseLLM)", false, NULL},
        CLI_ROWS_ALIGN(&a->ao, "teachers of another tokenizer"),
        {"--align-cache", OPT_STR, &a->ao.cache_dir, "folder for aligned stores and vocabulary maps (default: beside each store)", false, NULL},
        CLI_ROWS_END,
    };
    memcpy(rows, t, sizeof t);
    a->rows = rows;
    int rc = cli_parse_verb(argc, argv, rows, train_usage);
    if (rc >= 0) return rc;
    if (!a->data || !a->out) { fprintf(stderr, "fusekit train: error: --data and --out are required\n"); return 2; }
    if (!cli_was_set(rows, "--warmup")) o->optim.warmup = o->steps / 20;
    o->optim.total_steps = o->steps;
    return -1;
}

// What train checks before any work: the output, a model folder that is not a run, the shape
// flags, --teacher's data. Returns -1 to go on, else the exit code.
static int train_check(const train_args *a) {
    const char *ins[] = {a->data, a->val, a->init, a->config, a->tokenizer, a->resume_from};
    cli_out_spec os = {"-o", a->out, false, true};  // an existing run is resumed, or refused below
    int rc = cli_check_output("train", &os, ins, 6);
    if (rc != 0) return rc;
    if (cli_check_only) return 0;  // fuse / heal check train's options before their own work
    if (!a->resume && !a->resume_from && !a->force) {  // a model folder that is not a run would be overwritten
        char *ck = NULL, *mp = fk_path_join(a->out, "model.safetensors");
        bool run = fk_checkpoint_latest(a->out, &ck) == FK_OK, model = mp && fk_path_exists(mp);
        free(ck);
        free(mp);
        if (model && !run) {
            fprintf(stderr, "fusekit train: error: -o %s holds a model but no training run: pass --force to overwrite it, or choose another -o\n", a->out);
            return 2;
        }
    }
    const train_shape *sh = &a->shape;
    if (!a->config && !a->init && !a->resume && !a->resume_from && sh->d_model % sh->heads != 0) {  // head_dim = d / heads
        fprintf(stderr, "fusekit train: error: --d-model %lld is not a multiple of --heads %lld\n", (long long)sh->d_model, (long long)sh->heads);
        return 2;
    }
    if (a->teachers.n > 0 && fk_data_is_shard(a->data)) {
        fprintf(stderr, "fusekit train: error: --teacher needs --data as the text the stores were extracted from, not a token shard\n");
        return 2;
    }
    return -1;
}

// The training run's state, freed by train_state_free.
typedef struct {
    fk_token_data all, tr, va;
    fk_teacher_set *tset;
    char *tpaths[CLI_LIST_MAX];
    fk_model m;
    fk_adamw opt;
    fk_tokenizer *tok;
} train_state;

static void train_state_free(train_state *s) {
    fk_teacher_set_close(s->tset);
    for (int i = 0; i < CLI_LIST_MAX; i++) free(s->tpaths[i]);
    fk_adamw_free(&s->opt);
    fk_model_free(&s->m);
    fk_data_free(&s->all); fk_data_free(&s->tr); fk_data_free(&s->va);
    fk_tok_free(s->tok);
}

// The tokenizer (given, else the one of the run being resumed or the model started from, else
// raw bytes for text: a token shard without a tokenizer trains on its ids as they are), then
// the training and held-out data.
static fk_status train_load_data(const train_args *a, train_state *s) {
    char *from = NULL;
    if (a->resume_from) from = strdup(a->resume_from);
    else if (a->resume) fk_checkpoint_latest(a->out, &from);
    fk_status st = cli_model_tokenizer(from ? from : a->init, a->tokenizer, -1, &s->tok);
    free(from);
    if (st == FK_OK && !s->tok && !fk_data_is_shard(a->data)) st = fk_tok_new_bytes(&s->tok);
    if (st == FK_OK) st = fk_data_load_tok(a->data, s->tok, &s->all);
    if (st != FK_OK) return st;
    if (!s->tok)  // a shard's ids with no tokenizer: the model is saved without one, so say it now
        fprintf(stderr, "warning: %s is a token shard and no tokenizer was given (--tokenizer): %s will have no tokenizer.json, "
                        "and eval/generate on text will need --tokenizer\n", a->data, a->out);
    if (a->val) {
        st = fk_data_load_tok(a->val, s->tok, &s->va);
        if (st == FK_OK) { s->tr = s->all; memset(&s->all, 0, sizeof s->all); }
        return st;
    }
    int64_t cut = (int64_t)((double)s->all.n * (1.0 - a->val_frac));
    st = fk_data_slice(&s->all, 0, cut, &s->tr);
    if (st == FK_OK && a->val_frac > 0) st = fk_data_slice(&s->all, cut, s->all.n, &s->va);
    return st;
}

// Resuming: the checkpoint's model, optimizer and options; flags given again override the
// stored ones where it is safe (*o holds the flags on entry, the run's options on return).
static fk_status train_resume(const train_args *a, train_state *s, fk_train_opts *o) {
    char *ckpt = NULL;
    fk_status st = FK_OK;
    if (a->resume_from) ckpt = strdup(a->resume_from);
    else st = fk_checkpoint_latest(a->out, &ckpt);
    fk_train_opts flags = *o;
    if (st == FK_OK) st = fk_checkpoint_load(ckpt, &s->m, &s->opt, o);
    o->tokenizer = s->tok;
    if (st == FK_OK) {
        const cli_opt *rows = a->rows;
        if (cli_was_set(rows, "--steps")) { o->steps = flags.steps; o->optim.total_steps = flags.steps; s->opt.o.total_steps = flags.steps; }
        if (cli_was_set(rows, "--eval-every")) o->eval_every = flags.eval_every;
        if (cli_was_set(rows, "--save-every")) o->save_every = flags.save_every;
        if (cli_was_set(rows, "--log-every")) o->log_every = flags.log_every;
        // the rest would change the run the checkpoint belongs to: say so rather than ignore it silently
        const char *fixed[] = {"--lr", "--min-lr-frac", "--warmup", "--wd", "--beta1", "--beta2", "--clip", "--batch", "--seq",
                               "--grad-accum", "--seed", "--keep", "--eval-tokens", "--config", "--init", "--arch"};
        for (size_t k = 0; k < sizeof fixed / sizeof fixed[0]; k++)
            if (cli_was_set(rows, fixed[k]) && !(cli_train_resumes_itself && strcmp(fixed[k], "--init") == 0))  // (fuse and heal set --init)
                fprintf(stderr, "warning: %s is ignored when resuming (the checkpoint's value is used)\n", fixed[k]);
        fprintf(stderr, "resuming from %s at step %lld\n", ckpt, (long long)s->opt.t);
    }
    free(ckpt);
    return st;
}

// A new model's config from the shape flags (or --config).
static fk_status train_config(const train_args *a, const train_state *s, fk_config *c) {
    if (a->config) return fk_hf_config_read(a->config, c);
    const train_shape *sh = &a->shape;
    int64_t V = sh->vocab > 0 ? sh->vocab : s->tok ? fk_tok_vocab_size(s->tok) : s->tr.vocab_size;
    if (sh->arch == SHAPE_GPT2) {
        fk_config_gpt2(c, V, sh->d_model, sh->layers, sh->heads, sh->ctx);
        if (sh->ffn > 0) for (int l = 0; l < FK_MAX_LAYERS; l++) c->ffn[l] = sh->ffn;
    } else {
        int64_t f = sh->ffn > 0 ? sh->ffn : ((8 * sh->d_model / 3 + 31) / 32) * 32;
        fk_config_llama(c, V, sh->d_model, sh->layers, sh->heads, sh->kv_heads > 0 ? sh->kv_heads : sh->heads, f, sh->ctx);
        c->rope_theta = sh->rope_theta;
    }
    if (s->tok) {  // the config names the tokenizer's BOS and EOS
        c->bos_id = fk_tok_bos(s->tok);
        c->eos_id = fk_tok_eos(s->tok);
    }
    return FK_OK;
}

// A fresh run: the model (--init's weights, or new ones), checked against the tokenizer, and
// the optimizer.
static fk_status train_fresh(const train_args *a, train_state *s, fk_train_opts *o) {
    char *ckpt = NULL;
    if (fk_checkpoint_latest(a->out, &ckpt) == FK_OK) {  // a fresh run must not mix its checkpoints with an earlier run's
        fk_status st = fk_error(FK_ERR_ARG, "%s already holds a training run (%s): pass --resume to continue it, or choose another --out",
                                a->out, ckpt);
        free(ckpt);
        return st;
    }
    fk_status st;
    if (a->init) st = fk_model_load(a->init, 0, &s->m, NULL);
    else {
        fk_config c;
        st = train_config(a, s, &c);
        if (st == FK_OK) st = fk_model_init(&s->m, &c);
        if (st == FK_OK) fk_model_init_weights(&s->m, o->seed);
    }
    // the model must fit its tokenizer, a new one (--vocab) too: rows beyond the tokens only as
    // padding (fk_vocab_check), so that what train saves loads in every other verb
    if (st == FK_OK && s->tok && (st = fk_vocab_check(fk_tok_vocab_size(s->tok), s->m.cfg.vocab_size)) != FK_OK)
        fk_error_context(st, "tokenizer %s, model %s", a->tokenizer ? a->tokenizer : "(the model's)", a->init ? a->init : "(new)");
    if (st != FK_OK) return st;
    if (o->seq <= 0 || !cli_was_set(a->rows, "--seq")) o->seq = (int)s->m.cfg.max_seq;
    return fk_adamw_init(&s->opt, &s->m, &o->optim);
}

// --teacher: each store aligned to the target's tokens (or found cached), opened as the set
// that feeds the fusion loss.
static fk_status train_teachers(const train_args *a, train_state *s, fk_train_opts *o) {
    fk_status st = FK_OK;
    for (int i = 0; i < a->teachers.n && st == FK_OK; i++) {
        bool built;
        double t0 = fk_time_s();
        const char *t = a->teachers.v[i];
        st = fk_teacher_prepare(t, s->tok, a->data, &a->ao, &s->tpaths[i], &built);
        if (st == FK_OK && built)
            fprintf(stderr, "teacher %s: aligned to the target's tokens in %s (%.1f s)\n", t, s->tpaths[i], fk_time_s() - t0);
        else if (st == FK_OK && strcmp(s->tpaths[i], t) != 0)
            fprintf(stderr, "teacher %s: aligned store %s (cached)\n", t, s->tpaths[i]);
    }
    if (st == FK_OK) st = fk_teacher_set_open((const char *const *)s->tpaths, a->teachers.n, &a->fo, &s->tr, &s->tset);
    if (st == FK_OK)
        st = fk_teacher_set_check_model(s->tset, s->m.cfg.vocab_size, a->init ? a->init : a->resume_from ? a->resume_from : "new model");
    if (st == FK_OK) o->teacher = fk_teacher_set_teacher(s->tset, a->lambda);
    return st;
}

// The run itself, with metrics lines and Ctrl-C handling. Returns the exit code on a stop
// (else 0) in *stop_rc.
static fk_status train_run(const train_args *a, train_state *s, fk_train_opts *o, int *stop_rc) {
    char cfg[512];
    fk_config_describe(&s->m.cfg, cfg, sizeof cfg);
    bool lead = fk_dp_rank() == 0;
    if (lead)
        fprintf(stderr, "model: %s\nparameters: %lld; training tokens: %lld; held-out tokens: %lld; data-parallel ranks: %d\n", cfg,
                (long long)fk_model_num_params(&s->m), (long long)s->tr.n, (long long)s->va.n, fk_dp_size());
    char *mp = fk_path_join(a->out, "metrics.jsonl");
    fk_status st = lead ? trim_metrics(mp, s->opt.t) : FK_OK;
    train_ui ui = {lead && st == FK_OK ? fopen(mp, "a") : NULL, lead && isatty(2) != 0, s->opt.t, s->tset};
    free(mp);
    if (getenv("FK_TEST_KILL_AT")) o->fault_hook = test_fault;
    // Ctrl-C / SIGTERM: the step in progress is finished and saved as a checkpoint
    cli_stop_begin();
    o->stop = &cli_stop_signal;
    if (st == FK_OK) st = fk_train(&s->m, &s->opt, &s->tr, s->va.n > 1 ? &s->va : NULL, o, a->out, on_step, &ui);
    if (ui.metrics) fclose(ui.metrics);
    if (st == FK_OK && s->opt.t < o->steps) {  // stopped by a signal
        if (lead) {
            char name[64];
            snprintf(name, sizeof name, "checkpoint-%lld", (long long)s->opt.t);
            char *ck = fk_path_join(a->out, name);
            fprintf(stderr, "fusekit train: interrupted at step %lld; checkpoint %s; run the same command%s to resume\n",
                    (long long)s->opt.t, ck, a->resume || a->resume_from || cli_train_resumes_itself ? " again" : " with --resume");
            free(ck);
        }
        *stop_rc = cli_stop_code();
    } else if (st == FK_OK && lead) fprintf(stderr, "saved %s (peak RSS %.0f MB)\n", a->out, fk_peak_rss_mb());
    cli_stop_end();
    return st;
}

int cmd_train(int argc, char **argv) {
    train_args a;
    cli_opt rows[TRAIN_ROWS];
    train_args_init(&a);
    int rc = train_parse(argc, argv, &a, rows);
    if (rc < 0) rc = train_check(&a);
    if (rc >= 0) return rc;
    cli_set_threads(a.threads);
    train_state s;
    memset(&s, 0, sizeof s);
    fk_train_opts o = a.o;
    int stop_rc = 0;
    fk_status st = train_load_data(&a, &s);
    o.tokenizer = s.tok;
    if (st == FK_OK) st = a.resume || a.resume_from ? train_resume(&a, &s, &o) : train_fresh(&a, &s, &o);
    if (st == FK_OK) st = fk_mkdir_p(a.out);
    if (st == FK_OK && a.teachers.n > 0) st = train_teachers(&a, &s, &o);
    if (st == FK_OK) st = train_run(&a, &s, &o, &stop_rc);
    train_state_free(&s);
    return st == FK_OK ? stop_rc : cli_fail("train", st);
}
