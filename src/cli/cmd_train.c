// fusekit train: trains a model on a text file (bytes) or token shards (fk_train_job_run); and
// what the verbs that run a job share (cli_job_exec): the hooks that print, Ctrl-C handling.
#include "cli.h"

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

// Test-only fault injection (tests/test_faults.c): FK_TEST_KILL_AT=checkpoint-write[:STEP] kills
// the process with SIGKILL while a checkpoint (of STEP, or any) is half written.
static void test_fault(const char *point, int64_t step, void *ctx) {
    (void)ctx;
    const char *want = getenv("FK_TEST_KILL_AT");
    size_t n = strlen(point);
    if (!want || strncmp(want, point, n) != 0) return;
    if (want[n] == 0 || (want[n] == ':' && strtoll(want + n + 1, NULL, 10) == step)) raise(SIGKILL);
}


// ------------------------------------------------------------------ running a job (cli.h)

typedef struct { bool tty; int64_t start_step; bool started; } job_ui;

static void on_note(const char *line, void *user) {
    (void)user;
    fprintf(stderr, "%s\n", line);
}

static void on_step(const fk_train_event *ev, const char *json_line, void *user) {
    job_ui *ui = user;
    if (!ui->started) { ui->start_step = ev->step - 1; ui->started = true; }  // the step the run (or resume) started after
    if (ui->tty) {
        double rate = (double)(ev->step - ui->start_step) / (ev->elapsed_s > 0 ? ev->elapsed_s : 1e-9);
        double eta = rate > 0 ? (double)(ev->steps - ev->step) / rate : 0;
        fprintf(stderr, "\rstep %lld/%lld  loss %.4f  lr %.2e  %.0f tok/s  ETA %dm%02ds   ", (long long)ev->step,
                (long long)ev->steps, ev->loss, ev->lr, ev->tokens_per_s, (int)(eta / 60), (int)fmod(eta, 60));
        if (ev->step == ev->steps || ev->stopped) fputc('\n', stderr);
        fflush(stderr);
    }
    if (!json_line) return;
    if (ui->tty) fputs("\r\033[K", stderr);
    printf("%s\n", json_line);
    fflush(stdout);
}

static bool on_extract(const fk_extract_progress *p, const char *model, void *user) {
    const job_ui *ui = user;
    if (ui->tty) {
        double eta = p->positions_per_s > 0 && p->seqs_done > 0
                         ? p->elapsed_s * (double)(p->seqs_total - p->seqs_done) / (double)p->seqs_done : 0;
        fprintf(stderr, "\rextract %s: %lld/%lld sequences  %.0f positions/s  ETA %dm%02ds   ", model, (long long)p->seqs_done,
                (long long)p->seqs_total, p->positions_per_s, (int)(eta / 60), (int)fmod(eta, 60));
        if (p->seqs_done == p->seqs_total) fputc('\n', stderr);
        fflush(stderr);
    }
    return true;  // Ctrl-C / SIGTERM: the hooks' stop flag
}

// The job run with the hooks that print; -o already checked.
static int run_job(const char *verb, cli_job_run run, const void *job, const char *out, int64_t threads, bool again) {
    cli_set_threads(threads);
    job_ui ui = {isatty(2) != 0, 0, false};
    fk_job_hooks h = {on_note, on_step, on_extract, &cli_stop_signal, &ui};
    fk_train_job_result r;
    // Ctrl-C / SIGTERM: extraction stops (its .partial resumes), training saves the step in progress
    cli_stop_begin();
    fk_status st = run(job, &h, &r);
    int rc = 0;
    if (st != FK_OK && r.refused) {
        fprintf(stderr, "fusekit %s: error: %s\n", verb, fk_last_error());
        rc = 2;
    } else if (st != FK_OK && cli_stop_signal) {
        fprintf(stderr, "fusekit %s: %s\n", verb, fk_last_error());
        rc = cli_stop_code();
    } else if (st != FK_OK) {
        rc = cli_fail(verb, st);
    } else if (r.stopped && r.before_training) {
        if (fk_dp_rank() == 0)
            fprintf(stderr, "fusekit %s: interrupted before training began; nothing new was saved; run the same command again to start\n", verb);
        rc = cli_stop_code();
    } else if (r.stopped) {
        if (fk_dp_rank() == 0) {
            char name[64];
            snprintf(name, sizeof name, "checkpoint-%lld", (long long)r.step);
            char *ck = fk_path_join(out, name);
            fprintf(stderr, "fusekit %s: interrupted at step %lld; checkpoint %s; run the same command%s to resume\n", verb, (long long)r.step,
                    ck, again ? " again" : " with --resume");
            free(ck);
        }
        rc = cli_stop_code();
    }
    cli_stop_end();
    return rc;
}

int cli_job_exec(const cli_job_spec *s) {
    cli_out_spec os = {"-o", s->train->out, false, true};
    int rc = cli_check_output(s->verb, &os, s->inputs, s->n_inputs);
    if (rc != 0) return rc;
    if (getenv("FK_TEST_KILL_AT")) s->train->o.fault_hook = test_fault;
    rc = run_job(s->verb, s->run, s->job, s->train->out, s->threads, s->again);
    if (rc == 0 && fk_dp_rank() == 0 && fk_path_exists(s->train->out)) {  // the finished run's page beside its model
        fk_status st = cli_report_write(s->train->out, s->verb, s->inputs, s->n_inputs, NULL, NULL, NULL);
        if (st != FK_OK) rc = cli_fail(s->verb, st);
    }
    return rc;
}

// ------------------------------------------------------------------ fusekit train

static const char train_usage[] =
    "usage: fusekit train --data FILE -o OUT [options]\n\n"
    "With --teacher: fused training (knowledge fusion; one teacher: distillation). The loss is\n"
    "lambda * CLM + (1 - lambda) * soft cross-entropy against the fused teachers' next-token\n"
    "distributions. --data must be the text the stores were extracted from.";

void cli_train_args_init(cli_train_args *a) {
    memset(a, 0, sizeof *a);
    fk_train_job_defaults(&a->job);
}

static bool excepted(const char *name, const char *const *except) {
    for (; except && *except; except++)
        if (strcmp(name, *except) == 0) return true;
    return false;
}

// The rows are one table so that --help lists them in this order.
int cli_train_job_rows(fk_train_job *j, int64_t *threads, const char *const *except, cli_opt *rows) {
    fk_train_shape *sh = &j->shape;
    fk_train_opts *o = &j->o;
    const cli_opt t[] = {
        {"--data", OPT_STR, &j->data, "training text or token shard (required)", false, NULL},
        {"--tokenizer", OPT_STR, &j->tokenizer, "tokenizer for text data (.gguf, tokenizer.json or a folder; default: --init's or the checkpoint's, else bytes)", false, NULL},
        {"--val", OPT_STR, &j->val, "held-out text or shard (default: the last --val-frac of --data)", false, NULL},
        {"--val-frac", OPT_FLOAT, &j->val_frac, "fraction of --data held out when --val is absent", false, "[0,1)"},
        {"-o|--out", OPT_STR, &j->out, "output folder: the final model, checkpoint-<step>/ folders, metrics.jsonl (required)", false, NULL},
        {"--config", OPT_STR, &j->config, "model shape from a Hugging Face config.json", false, NULL},
        {"--init", OPT_STR, &j->init, "start from the weights of this model (a folder or a .gguf file; its tokenizer comes along)", false, NULL},
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
        {"--checkpoint-activations", OPT_FLAG, &o->checkpoint_activations, "keep only each layer's input in the forward and "
         "recompute the rest in the backward: less memory per sequence, about a third more compute, the same gradients", false, NULL},
        {"--zero1", OPT_FLAG, &o->zero1, "under mpirun: each rank keeps the AdamW moments of its 1/R share of the weights "
         "and updates that share, the updated weights exchanged (optimizer memory per rank / R, the same numbers)", false, NULL},
        {"--device", OPT_CHOICE, CLI_ENUM(&o->device), "where the steps run: cpu, or cuda (the CUDA engine of a "
         "-DFK_CUDA=ON build: bf16 products, one GPU; checkpoints resume on either)", false, "cpu|cuda"},
        {"--optim-state", OPT_CHOICE, CLI_ENUM(&o->optim.moments), "AdamW's two moments stored in f32, or bf16 (half the "
         "optimizer's memory; updates in f32, stochastic rounding back)", false, "f32|bf16"},
        {"--seed", OPT_INT, (int64_t *)&o->seed, "seed for initialisation and batches", false, "[0,)"},
        {"--eval-every", OPT_INT, &o->eval_every, "steps between held-out evaluations", false, "[0,)"},
        {"--eval-tokens", OPT_INT, &o->eval_tokens, "held-out tokens per evaluation, 0 = all", false, "[0,)"},
        {"--save-every", OPT_INT, &o->save_every, "steps between checkpoints, 0 = only at the end", false, "[0,)"},
        {"--keep", OPT_I32, &o->keep, "checkpoints kept", false, "[1,1000000]"},
        {"--log-every", OPT_INT, &o->log_every, "steps between metric lines", false, "[1,)"},
        {"--resume", OPT_FLAG, &j->resume, "continue from the newest checkpoint in --out", false, NULL},
        {"--resume-from", OPT_STR, &j->resume_from, "continue from this checkpoint folder", false, NULL},
        {"--force", OPT_FLAG, &j->force, "write into an --out that holds a model but no training run (it is overwritten)", false, NULL},
        CLI_ROW_THREADS(threads),
        CLI_ROW_PRECISION(&o->precision),
        {"--teacher", OPT_LIST, &j->teachers, "distribution store (.fkd, from fusekit extract) of a teacher on --data; repeat for fusion", false, NULL},
        {"--fusion", OPT_CHOICE, CLI_ENUM(&j->fo.kind), "how teachers are fused", false, "mince|avgce"},
        {"--fusion-level", OPT_CHOICE, CLI_ENUM(&j->fo.level), "the span MinCE/AvgCE compare teachers on", false, "sequence|token"},
        {"--objective", OPT_CHOICE, CLI_ENUM(&j->fo.objective), "how the target learns from the fused rows: ce (soft cross-entropy) "
         "or uld (L1 between sorted probabilities, Universal Logit Distillation; no soft-capped models); span: the teachers' and "
         "the target's likelihoods of chunks cut where every tokenization has a boundary, matched as ALM does", false, "ce|uld|span"},
        {"--span-temp", OPT_F32, &j->fo.span_temp, "--objective span: temperature on chunk log-likelihoods (default 1; ALM's code uses 100)", false, "(0,)"},
        {"--lambda", OPT_F32, &j->lambda, "weight of the CLM loss; 1 - lambda goes to the fusion loss", false, "[0,1]"},
        {"--tau", OPT_F32, &j->fo.tau, "AvgCE temperature on cross-entropies", false, "(0,)"},
        {"--teacher-temp", OPT_F32, &j->fo.temperature, "temperature on the teachers' log-probabilities", false, "(0,)"},
        {"--teacher-tail", OPT_FLAG, &j->fo.tail, "keep the teachers' full-softmax top-k probabilities and match the rest as a tail class (default: renormalise the top k, as FuseLLM)", false, NULL},
        {"--shuffle-teachers", OPT_INT, (int64_t *)&j->fo.shuffle_seed, "control: read the teachers' rows at a fixed pseudo-random "
         "permutation of the corpus positions drawn from seed N (p -> (a p + b) mod n), destroying their alignment with the text; "
         "0 = off", false, "[0,)"},
        CLI_ROWS_ALIGN(&j->ao, "teachers of another tokenizer"),
        {"--align-cache", OPT_STR, &j->ao.cache_dir, "folder for aligned stores and vocabulary maps (default: beside each store)", false, NULL},
    };
    _Static_assert(sizeof t / sizeof t[0] < CLI_TRAIN_ROWS, "CLI_TRAIN_ROWS holds train's rows and the end");
    int n = 0;
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++)
        if (!excepted(t[i].name, except)) rows[n++] = t[i];
    rows[n] = (cli_opt)CLI_ROWS_END;
    return n;
}

int cli_rows_then_train(const cli_opt *own, int n, fk_train_job *job, int64_t *threads, const char *const *except, cli_opt *rows) {
    if (n > 0) memcpy(rows, own, (size_t)n * sizeof *own);
    rows[n++] = (cli_opt)CLI_ROW_GROUP("train");
    return n + cli_train_job_rows(job, threads, except, rows + n);
}

int cli_refuse_set(const char *verb, int argc, char **argv, const char *const *sets, const char *hint) {
    for (int i = 1; i < argc; i++)
        for (const char *const *s = sets; *s; s++) {
            size_t n = strlen(*s);
            if (strncmp(argv[i], *s, n) == 0 && (argv[i][n] == 0 || argv[i][n] == '=')) {
                fprintf(stderr, "fusekit %s: error: %s is set by %s itself (%s)\n", verb, *s, verb, hint);
                return 2;
            }
        }
    return 0;
}

int cli_parse_job(const char *verb, int argc, char **argv, cli_opt *rows, const char *usage, const char *const *sets, const char *hint,
                  fk_train_job *train) {
    if (sets && cli_refuse_set(verb, argc, argv, sets, hint)) return 2;
    int rc = cli_parse_verb(argc, argv, rows, usage);
    if (rc < 0) cli_train_given(rows, train);
    return rc;
}

int cli_train_rows(cli_train_args *a, cli_opt *rows) { return cli_train_job_rows(&a->job, &a->threads, NULL, rows); }

void cli_train_given(const cli_opt *rows, fk_train_job *job) {
    for (const cli_opt *o = rows; o->name; o++)
        if (o->set && o->type != OPT_GROUP) job->given |= fk_train_given_bit(o->name);
}

static fk_status run_train(const void *job, const fk_job_hooks *h, fk_train_job_result *r) { return fk_train_job_run(job, h, r); }

int cli_train_exec(cli_train_args *a) {
    fk_train_job *j = &a->job;
    const char *ins[] = {j->data, j->val, j->init, j->config, j->tokenizer, j->resume_from};
    // an existing -o is resumed, or refused by the job's checks
    return cli_job_exec(&(cli_job_spec){"train", run_train, j, j, ins, 6, a->threads, j->resume || j->resume_from || j->resumes_itself});
}

int cmd_train(int argc, char **argv) {
    cli_train_args a;
    cli_opt rows[CLI_TRAIN_ROWS];
    cli_train_args_init(&a);
    cli_train_rows(&a, rows);
    int rc = cli_parse_job("train", argc, argv, rows, train_usage, NULL, NULL, &a.job);
    if (rc >= 0) return rc;
    if (!a.job.data || !a.job.out) { fprintf(stderr, "fusekit train: error: --data and --out are required\n"); return 2; }
    return cli_train_exec(&a);
}
