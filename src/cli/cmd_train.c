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
    char *text = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    if (!text) return;
    size_t len = strlen(text);
    char *line = realloc(text, len + 2);
    if (!line) { free(text); return; }
    line[len] = '\n';
    line[len + 1] = 0;
    if (ui->tty) fputs("\r\033[K", stderr);
    fputs(line, stdout);
    fflush(stdout);
    if (ui->metrics) { fputs(line, ui->metrics); fflush(ui->metrics); }
    free(line);
}

int cmd_train(int argc, char **argv) {
    const char *data = NULL, *val = NULL, *out = NULL, *config = NULL, *init = NULL, *arch = "gpt2", *resume_from = NULL;
    const char *tokenizer = NULL;
    int64_t vocab = 0, d_model = 128, layers = 4, heads = 4, kv_heads = 0, ffn = 0, ctx = 256, threads = 0;
    int64_t steps = 1000, batch = 8, seq = 0, accum = 1, warmup = -1, seed = 1337, eval_every = 100, eval_tokens = 65536;
    int64_t save_every = 0, keep = 2, log_every = 10;
    double lr = 3e-4, min_lr = 0.1, wd = 0.1, beta1 = 0.9, beta2 = 0.95, clip = 1.0, rope_theta = 10000, val_frac = 0.1;
    bool resume = false, force = false;
    cli_list teachers = {0};
    const char *fusion = "mince", *level = "sequence", *align = "offsets", *vmap = "mined", *cache = NULL;
    double lambda = 0.9, tau = 1.0, ttemp = 1.0;
    bool ttail = false;
    cli_opt opts[] = {
        {"--data", OPT_STR, &data, "training text or token shard (required)", false, NULL},
        {"--tokenizer", OPT_STR, &tokenizer, "tokenizer for text data (.gguf, tokenizer.json or a folder; default: --init's or the checkpoint's, else bytes)", false, NULL},
        {"--val", OPT_STR, &val, "held-out text or shard (default: the last --val-frac of --data)", false, NULL},
        {"--val-frac", OPT_FLOAT, &val_frac, "fraction of --data held out when --val is absent (default 0.1)", false, "[0,1)"},
        {"-o|--out", OPT_STR, &out, "output folder: the final model, checkpoint-<step>/ folders, metrics.jsonl (required)", false, NULL},
        {"--config", OPT_STR, &config, "model shape from a Hugging Face config.json", false, NULL},
        {"--init", OPT_STR, &init, "start from the weights of this model (a folder or a .gguf file; its tokenizer comes along)", false, NULL},
        {"--arch", OPT_STR, &arch, "gpt2 | llama: preset for the shape flags (default gpt2)", false, NULL},
        {"--vocab", OPT_INT, &vocab, "vocabulary size (default: the data's)", false, "[0,16777216]"},
        {"--d-model", OPT_INT, &d_model, "model width (default 128)", false, "[1,65536]"},
        {"--layers", OPT_INT, &layers, "number of layers (default 4)", false, "[1,256]"},
        {"--heads", OPT_INT, &heads, "attention heads (default 4)", false, "[1,4096]"},
        {"--kv-heads", OPT_INT, &kv_heads, "key/value heads, grouped-query attention (default: --heads)", false, "[0,4096]"},
        {"--ffn", OPT_INT, &ffn, "FFN width (default 4*d for gpt2, 8/3*d rounded up to 32 for llama)", false, "[0,1048576]"},
        {"--ctx", OPT_INT, &ctx, "context length (default 256)", false, "[1,1048576]"},
        {"--rope-theta", OPT_FLOAT, &rope_theta, "RoPE base (llama; default 10000)", false, "(0,)"},
        {"--steps", OPT_INT, &steps, "optimizer steps (default 1000)", false, "[1,)"},
        {"--batch", OPT_INT, &batch, "sequences per micro-batch (default 8)", false, "[1,65536]"},
        {"--seq", OPT_INT, &seq, "tokens per sequence (default: the context length)", false, "[0,1048576]"},
        {"--grad-accum", OPT_INT, &accum, "micro-batches per step (default 1)", false, "[1,65536]"},
        {"--lr", OPT_FLOAT, &lr, "peak learning rate (default 3e-4)", false, "(0,1]"},
        {"--min-lr-frac", OPT_FLOAT, &min_lr, "cosine floor as a fraction of --lr (default 0.1)", false, "[0,1]"},
        {"--warmup", OPT_INT, &warmup, "linear warmup steps (default: steps/20)", false, "[0,)"},
        {"--wd", OPT_FLOAT, &wd, "AdamW decoupled weight decay on matrices and embeddings (default 0.1)", false, "[0,1]"},
        {"--beta1", OPT_FLOAT, &beta1, "AdamW beta1 (default 0.9)", false, "[0,1)"},
        {"--beta2", OPT_FLOAT, &beta2, "AdamW beta2 (default 0.95)", false, "[0,1)"},
        {"--clip", OPT_FLOAT, &clip, "global gradient-norm clip, 0 = off (default 1.0)", false, "[0,)"},
        {"--seed", OPT_INT, &seed, "seed for initialisation and batches (default 1337)", false, "[0,)"},
        {"--eval-every", OPT_INT, &eval_every, "steps between held-out evaluations (default 100)", false, "[0,)"},
        {"--eval-tokens", OPT_INT, &eval_tokens, "held-out tokens per evaluation, 0 = all (default 65536)", false, "[0,)"},
        {"--save-every", OPT_INT, &save_every, "steps between checkpoints, 0 = only at the end (default 0)", false, "[0,)"},
        {"--keep", OPT_INT, &keep, "checkpoints kept (default 2)", false, "[1,1000000]"},
        {"--log-every", OPT_INT, &log_every, "steps between metric lines (default 10)", false, "[1,)"},
        {"--resume", OPT_FLAG, &resume, "continue from the newest checkpoint in --out", false, NULL},
        {"--resume-from", OPT_STR, &resume_from, "continue from this checkpoint folder", false, NULL},
        {"--force", OPT_FLAG, &force, "write into an --out that holds a model but no training run (it is overwritten)", false, NULL},
        {"--threads", OPT_INT, &threads, "threads (default: all cores)", false, "[0,4096]"},
        {"--teacher", OPT_LIST, &teachers, "distribution store (.fkd, from fusekit extract) of a teacher on --data; repeat for fusion", false, NULL},
        {"--fusion", OPT_STR, &fusion, "mince | avgce: how teachers are fused (default mince)", false, NULL},
        {"--fusion-level", OPT_STR, &level, "sequence | token: the span MinCE/AvgCE compare teachers on (default sequence)", false, NULL},
        {"--lambda", OPT_FLOAT, &lambda, "weight of the CLM loss; 1 - lambda goes to the fusion loss (default 0.9)", false, "[0,1]"},
        {"--tau", OPT_FLOAT, &tau, "AvgCE temperature on cross-entropies (default 1)", false, "(0,)"},
        {"--teacher-temp", OPT_FLOAT, &ttemp, "temperature on the teachers' log-probabilities (default 1)", false, "(0,)"},
        {"--teacher-tail", OPT_FLAG, &ttail, "keep the teachers' full-softmax top-k probabilities and match the rest as a tail class (default: renormalise the top k, as FuseLLM)", false, NULL},
        {"--align", OPT_STR, &align, "offsets | dtw: token alignment for teachers of another tokenizer (default offsets)", false, NULL},
        {"--vmap", OPT_STR, &vmap, "mined | exact: vocabulary map for teachers of another tokenizer (default mined)", false, NULL},
        {"--align-cache", OPT_STR, &cache, "folder for aligned stores and vocabulary maps (default: beside each store)", false, NULL},
        {NULL, 0, NULL, NULL, false, NULL},
    };
    int rc = cli_parse(argc, argv, opts,
                       "usage: fusekit train --data FILE -o OUT [options]\n\n"
                       "With --teacher: fused training (knowledge fusion; one teacher: distillation). The loss is\n"
                       "lambda * CLM + (1 - lambda) * soft cross-entropy against the fused teachers' next-token\n"
                       "distributions. --data must be the text the stores were extracted from.");
    if (rc) return rc == 1 ? 0 : 2;
    if (!data || !out) { fprintf(stderr, "fusekit train: error: --data and --out are required\n"); return 2; }
    {
        const char *ins[] = {data, val, init, config, tokenizer, resume_from};
        cli_out_spec os = {"-o", out, false, true};  // an existing run is resumed, or refused below
        if ((rc = cli_check_output("train", &os, ins, 6)) != 0) return rc;
        if (cli_check_only) return 0;  // fuse / heal check train's options before their own work
    }
    if (!resume && !resume_from && !force) {  // a model folder that is not a run would be overwritten
        char *ck = NULL, *mp = fk_path_join(out, "model.safetensors");
        bool run = fk_checkpoint_latest(out, &ck) == FK_OK, model = mp && fk_path_exists(mp);
        free(ck);
        free(mp);
        if (model && !run) {
            fprintf(stderr, "fusekit train: error: -o %s holds a model but no training run: pass --force to overwrite it, or choose another -o\n", out);
            return 2;
        }
    }
    if (!config && !init && !resume && !resume_from && d_model % heads != 0) {  // the shape flags: head_dim = d / heads
        fprintf(stderr, "fusekit train: error: --d-model %lld is not a multiple of --heads %lld\n", (long long)d_model, (long long)heads);
        return 2;
    }
    cli_set_threads(threads);
    if (teachers.n > 0 && fk_data_is_shard(data)) {
        fprintf(stderr, "fusekit train: error: --teacher needs --data as the text the stores were extracted from, not a token shard\n");
        return 2;
    }

    fk_token_data all = {0}, tr = {0}, va = {0};
    fk_teacher_set *tset = NULL;
    char *tpaths[CLI_LIST_MAX] = {0};
    fk_model m = {0};
    fk_adamw opt = {0};
    fk_tokenizer *tok = NULL;
    fk_train_opts o;
    fk_train_defaults(&o);
    fk_status st = FK_OK;
    int stop_rc = 0;
    // The tokenizer: given, else the one of the run being resumed or the model started from,
    // else raw bytes for text (a token shard without a tokenizer trains on its ids as they are).
    {
        char *from = NULL;
        if (resume_from) from = strdup(resume_from);
        else if (resume) fk_checkpoint_latest(out, &from);
        st = cli_model_tokenizer(from ? from : init, tokenizer, -1, &tok);
        free(from);
        if (st == FK_OK && !tok && !fk_data_is_shard(data)) st = fk_tok_new_bytes(&tok);
        if (st != FK_OK) goto fail;
        o.tokenizer = tok;
    }
    st = fk_data_load_tok(data, tok, &all);
    if (st != FK_OK) goto fail;
    if (!tok)  // a shard's ids with no tokenizer: the model is saved without one, so say it now
        fprintf(stderr, "warning: %s is a token shard and no tokenizer was given (--tokenizer): %s will have no tokenizer.json, "
                        "and eval/generate on text will need --tokenizer\n", data, out);
    if (val) {
        st = fk_data_load_tok(val, tok, &va);
        if (st == FK_OK) { tr = all; memset(&all, 0, sizeof all); }
    } else {
        int64_t cut = (int64_t)((double)all.n * (1.0 - val_frac));
        st = fk_data_slice(&all, 0, cut, &tr);
        if (st == FK_OK && val_frac > 0) st = fk_data_slice(&all, cut, all.n, &va);
    }
    if (st != FK_OK) goto fail;

    char *ckpt = NULL;
    if (!resume && !resume_from && fk_checkpoint_latest(out, &ckpt) == FK_OK) {
        // a fresh run must not mix its checkpoints with an earlier run's
        st = fk_error(FK_ERR_ARG, "%s already holds a training run (%s): pass --resume to continue it, or choose another --out",
                      out, ckpt);
        free(ckpt);
        goto fail;
    }
    if (resume || resume_from) {
        if (resume_from) ckpt = strdup(resume_from);
        else st = fk_checkpoint_latest(out, &ckpt);
        if (st == FK_OK) st = fk_checkpoint_load(ckpt, &m, &opt, &o);
        o.tokenizer = tok;
        if (st == FK_OK) {
            // flags given again on the command line override the stored ones where it is safe
            if (cli_was_set(opts, "--steps")) { o.steps = steps; o.optim.total_steps = steps; opt.o.total_steps = steps; }
            if (cli_was_set(opts, "--eval-every")) o.eval_every = eval_every;
            if (cli_was_set(opts, "--save-every")) o.save_every = save_every;
            if (cli_was_set(opts, "--log-every")) o.log_every = log_every;
            // the rest would change the run the checkpoint belongs to: say so rather than ignore it silently
            const char *fixed[] = {"--lr", "--min-lr-frac", "--warmup", "--wd", "--beta1", "--beta2", "--clip", "--batch", "--seq",
                                   "--grad-accum", "--seed", "--keep", "--eval-tokens", "--config", "--init", "--arch"};
            for (size_t k = 0; k < sizeof fixed / sizeof fixed[0]; k++)
                if (cli_was_set(opts, fixed[k]) && !(cli_train_resumes_itself && strcmp(fixed[k], "--init") == 0))  // (fuse and heal set --init)
                    fprintf(stderr, "warning: %s is ignored when resuming (the checkpoint's value is used)\n", fixed[k]);
            fprintf(stderr, "resuming from %s at step %lld\n", ckpt, (long long)opt.t);
        }
        free(ckpt);
        if (st != FK_OK) goto fail;
    } else {
        fk_config c;
        if (init) {
            st = fk_model_load(init, 0, &m, NULL);
        } else {
            if (config) {
                st = fk_hf_config_read(config, &c);
            } else {
                int64_t V = vocab > 0 ? vocab : tok ? fk_tok_vocab_size(tok) : tr.vocab_size;
                if (strcmp(arch, "gpt2") == 0) {
                    fk_config_gpt2(&c, V, d_model, layers, heads, ctx);
                    if (ffn > 0) for (int l = 0; l < FK_MAX_LAYERS; l++) c.ffn[l] = ffn;
                } else if (strcmp(arch, "llama") == 0) {
                    int64_t f = ffn > 0 ? ffn : ((8 * d_model / 3 + 31) / 32) * 32;
                    fk_config_llama(&c, V, d_model, layers, heads, kv_heads > 0 ? kv_heads : heads, f, ctx);
                    c.rope_theta = (float)rope_theta;
                } else {
                    st = fk_error(FK_ERR_ARG, "--arch must be gpt2 or llama (got %s)", arch);
                }
            }
            if (st == FK_OK && tok && !config) {  // the config names the tokenizer's BOS and EOS
                c.bos_id = fk_tok_bos(tok);
                c.eos_id = fk_tok_eos(tok);
            }
            if (st == FK_OK) st = fk_model_init(&m, &c);
            if (st == FK_OK) fk_model_init_weights(&m, (uint64_t)seed);
        }
        // the model must fit its tokenizer, a new one (--vocab) too: rows beyond the tokens only as
        // padding (fk_vocab_check), so that what train saves loads in every other verb
        if (st == FK_OK && tok && (st = fk_vocab_check(fk_tok_vocab_size(tok), m.cfg.vocab_size)) != FK_OK)
            fk_error_context(st, "tokenizer %s, model %s", tokenizer ? tokenizer : "(the model's)", init ? init : resume_from ? resume_from : "(new)");
        if (st != FK_OK) goto fail;
        o.steps = steps;
        o.batch = (int)batch;
        o.seq = (int)(seq > 0 ? seq : m.cfg.max_seq);
        o.grad_accum = (int)accum;
        o.seed = (uint64_t)seed;
        o.eval_every = eval_every;
        o.eval_tokens = eval_tokens;
        o.save_every = save_every;
        o.keep = (int)keep;
        o.log_every = log_every;
        o.optim.lr = (float)lr;
        o.optim.min_lr_frac = (float)min_lr;
        o.optim.weight_decay = (float)wd;
        o.optim.beta1 = (float)beta1;
        o.optim.beta2 = (float)beta2;
        o.optim.clip = (float)clip;
        o.optim.warmup = warmup >= 0 ? warmup : steps / 20;
        o.optim.total_steps = steps;
        st = fk_adamw_init(&opt, &m, &o.optim);
        if (st != FK_OK) goto fail;
    }
    st = fk_mkdir_p(out);
    if (st != FK_OK) goto fail;
    if (teachers.n > 0) {
        fk_fusion_opts fo;
        fk_fusion_defaults(&fo);
        fo.tau = (float)tau;
        fo.temperature = (float)ttemp;
        fo.tail = ttail;
        fk_align_opts ao;
        fk_align_opts_default(&ao);
        ao.cache_dir = cache;
        st = fk_fusion_parse(fusion, level, &fo);
        if (st == FK_OK) st = fk_align_parse(align, vmap, &ao);
        if (st == FK_OK && !(lambda >= 0 && lambda <= 1)) st = fk_error(FK_ERR_ARG, "--lambda must be in [0, 1] (got %g)", lambda);
        for (int i = 0; i < teachers.n && st == FK_OK; i++) {
            bool built;
            double t0 = fk_time_s();
            st = fk_teacher_prepare(teachers.v[i], tok, data, &ao, &tpaths[i], &built);
            if (st == FK_OK && built)
                fprintf(stderr, "teacher %s: aligned to the target's tokens in %s (%.1f s)\n", teachers.v[i], tpaths[i], fk_time_s() - t0);
            else if (st == FK_OK && strcmp(tpaths[i], teachers.v[i]) != 0)
                fprintf(stderr, "teacher %s: aligned store %s (cached)\n", teachers.v[i], tpaths[i]);
        }
        if (st == FK_OK) st = fk_teacher_set_open((const char *const *)tpaths, teachers.n, &fo, &tr, &tset);
        if (st == FK_OK) st = fk_teacher_set_check_model(tset, m.cfg.vocab_size, init ? init : resume_from ? resume_from : "new model");
        if (st != FK_OK) goto fail;
        o.teacher = fk_teacher_set_teacher(tset, (float)lambda);
    }
    {
        char cfg[512];
        fk_config_describe(&m.cfg, cfg, sizeof cfg);
        bool lead = fk_dp_rank() == 0;
        if (lead)
            fprintf(stderr, "model: %s\nparameters: %lld; training tokens: %lld; held-out tokens: %lld; data-parallel ranks: %d\n",
                    cfg, (long long)fk_model_num_params(&m), (long long)tr.n, (long long)va.n, fk_dp_size());
        char *mp = fk_path_join(out, "metrics.jsonl");
        if (lead) st = trim_metrics(mp, opt.t);
        train_ui ui = {lead && st == FK_OK ? fopen(mp, "a") : NULL, lead && isatty(2) != 0, opt.t, tset};
        free(mp);
        if (getenv("FK_TEST_KILL_AT")) o.fault_hook = test_fault;
        // Ctrl-C / SIGTERM: the step in progress is finished and saved as a checkpoint
        cli_stop_begin();
        o.stop = &cli_stop_signal;
        if (st == FK_OK) st = fk_train(&m, &opt, &tr, va.n > 1 ? &va : NULL, &o, out, on_step, &ui);
        if (ui.metrics) fclose(ui.metrics);
        if (st == FK_OK && opt.t < o.steps) {  // stopped by a signal
            if (lead) {
                char name[64];
                snprintf(name, sizeof name, "checkpoint-%lld", (long long)opt.t);
                char *ck = fk_path_join(out, name);
                fprintf(stderr, "fusekit train: interrupted at step %lld; checkpoint %s; run the same command%s to resume\n",
                        (long long)opt.t, ck, resume || resume_from || cli_train_resumes_itself ? " again" : " with --resume");
                free(ck);
            }
            stop_rc = cli_stop_code();
        } else if (st == FK_OK && lead) fprintf(stderr, "saved %s (peak RSS %.0f MB)\n", out, fk_peak_rss_mb());
        cli_stop_end();
    }
fail:
    fk_teacher_set_close(tset);
    for (int i = 0; i < CLI_LIST_MAX; i++) free(tpaths[i]);
    fk_adamw_free(&opt);
    fk_model_free(&m);
    fk_data_free(&all); fk_data_free(&tr); fk_data_free(&va);
    fk_tok_free(tok);
    return st == FK_OK ? stop_rc : cli_fail("train", st);
}
