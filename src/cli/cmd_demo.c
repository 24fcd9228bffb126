// fusekit demo: the whole system on the embedded synthetic corpus, end to end, with a fixed
// protocol (docs in README, "The demo").
//
//   1. data      fusekit data synth: four domains (arith, facts, grammar, records) with train,
//                valid and test splits and probes
//   2. sources   three specialists with their own tokenizers and architectures:
//                  A  Llama style, byte-level BPE (digits split), mostly arithmetic
//                  B  Llama style with grouped-query attention, SentencePiece-style BPE, mostly facts
//                  C  GPT-2 style, byte-level BPE (GPT-2 pre-tokenizer), mostly grammar and records
//   3. arms      from B, on a small mixed corpus, with the same steps, batch and schedule:
//                  fused     lambda * CLM + (1 - lambda) * fused teacher distributions of B, A, C
//                            (fusekit fuse: the target B counts as a teacher, as in FuseLLM)
//                  baseline  the CLM loss only (fusekit train)
//                  folded    the fused model folded by an FFN budget and healed (fusekit fold)
//                and with --controls:
//                  self      B's initial model the only teacher (self-distillation: fuse with no --source)
//                  B+A, B+C  the target and one source as teachers
//                  shuffled  A, B, C with their rows read at permuted positions (--shuffle-teachers)
//                  replay    the baseline with the fused run's extra FLOPs (extraction) as extra steps
//                  healed    the fused model healed as the fold heals, without folding (fold --heal-only)
//   4. tuning    on the first seed only, every arm gets the same number of trials (the tuning
//                budget, demo_cfg.trials: full 8, quick 4): fuse arms lambda x lr x vocabulary map
//                (self-distillation, whose map is the identity, lambda x more lrs instead),
//                CLM arms the lr, heal arms the healing lr (demo_grid); each trial is scored by the
//                mean bits per byte over the domains' valid.txt, and the arm keeps the lowest
//                (the first on ties). The trial's model is that seed's model (renamed, in
//                commands.sh as mv); later seeds train each arm once with the chosen settings.
//   5. seeds     --seeds N reruns 1-3 (corpus, tokenizers, sources, arms) with seeds seed..seed+N-1.
//   6. eval      after every seed has trained, each model on each domain's test split and probes,
//                read once; mean +- sd over seeds, paired differences (fused - each control,
//                folded - healed) with 95% t intervals; results.json, report.html, the table.
//
// Each step fills a verb's options struct and calls its entry point (cli_X_exec) in this process,
// with its output in logs/; commands.sh holds each step as the fusekit command those options
// render to (cli_render), so every number can be reproduced one command at a time.
#include "demo.h"

#include <dirent.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct {
    const char *name, *desc, *arch, *kind, *pre;
    int vocab;
    const char *domains[2];  // mostly trained on these (and a slice of the mixed corpus)
    double lr;
} demo_source;

static const demo_source sources[N_SRC] = {
    {"A", "Llama style, byte-level BPE 384 (digits split), arithmetic", "llama", "bpe", "qwen2", 384, {"arith", NULL}, 3e-3},
    {"B", "Llama style + GQA, SentencePiece-style BPE 512, facts", "llama", "spm", NULL, 512, {"facts", NULL}, 3e-3},
    {"C", "GPT-2 style, byte-level BPE 768, grammar and records", "gpt2", "bpe", "gpt-2", 768, {"grammar", "records"}, 5e-3},
};

// The tuning grids: the same number of trials (cfg.trials) for every arm. Fuse arms vary lambda,
// the learning rate and the vocabulary map (mined, exact); CLM arms the learning rate over as
// many values; heal arms the healing learning rate (healing's lambda stays fold's 0.5).
static const demo_cfg cfg_quick = {"quick", 60000, 8000, 100, 64, 2, 4, 64, 16, 600, 20000, 40000, 150, 25, 80, 0.25, 4,
                                   {2, 1, 2, {0.5, 0.8}, {2e-3}, {FK_VMAP_MINED, FK_VMAP_EXACT},
                                    {5e-4, 1e-3, 2e-3, 4e-3}, {1e-4, 3e-4, 1e-3, 3e-3}, {2e-3, 4e-3}}};
static const demo_cfg cfg_full = {"full", 120000, 12000, 250, 96, 3, 4, 128, 16, 600, 30000, 80000, 300, 25, 150, 0.25, 8,
                                  {2, 2, 2, {0.5, 0.8}, {2e-3, 4e-3}, {FK_VMAP_MINED, FK_VMAP_EXACT},
                                   {5e-4, 1e-3, 1.5e-3, 2e-3, 3e-3, 4e-3, 6e-3, 8e-3}, {3e-5, 1e-4, 2e-4, 4e-4, 1e-3, 2e-3, 4e-3, 8e-3},
                                   {1e-3, 2e-3, 4e-3, 8e-3}}};
// For the test suite: the protocol's structure in seconds; its numbers mean nothing.
static const demo_cfg cfg_tiny = {"tiny", 16000, 3000, 20, 32, 1, 2, 32, 8, 60, 4000, 8000, 16, 8, 8, 0.25, 2,
                                  {2, 1, 1, {0.5, 0.8}, {4e-3}, {FK_VMAP_MINED}, {2e-3, 4e-3}, {1e-4, 1e-3}, {4e-3}}};

// The arms in the table's order; the fused arm runs first (the folded, healed and replay arms use it).
static const demo_arm arm_table[] = {
    {"baseline", "CLM only, from B", ARM_CLM, 0, false, false, false, false},
    {"fused", "fusion of A, B, C, from B", ARM_FUSE, 5, false, false, false, false},
    {"folded", "fused, folded + healed", ARM_HEAL, 0, false, false, true, false},
    {"self", "self-distillation of B", ARM_FUSE, 0, false, false, false, true},
    {"B+A", "fusion of A and B, from B", ARM_FUSE, 1, false, false, false, true},
    {"B+C", "fusion of C and B, from B", ARM_FUSE, 4, false, false, false, true},
    {"shuffled", "A, B, C, shuffled teachers", ARM_FUSE, 5, true, false, false, true},
    {"replay", "CLM only, + fusion's FLOPs", ARM_CLM, 0, false, true, false, true},
    {"healed", "fused, healed, not folded", ARM_HEAL, 0, false, false, false, true},
};
#define N_ARM_TABLE ((int)(sizeof arm_table / sizeof *arm_table))

void demo_say(demo *d, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "[%5.1fs] ", fk_time_s() - d->t0);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fflush(stderr);
}

int demo_arm_index(const demo_results *R, const char *name) {
    for (int i = 0; i < R->n_arms; i++)
        if (strcmp(R->arms[i]->name, name) == 0) return i;
    return -1;
}

// One step's command: its option rows, written into commands.sh as those differing from defs
// (the same rows over a default-initialised struct), and rest (NULL: none) after "--" (fold's
// healing options) against rest_defs: a line a user can rerun.
typedef struct {
    const char *verb;
    const cli_opt *rows, *defs, *rest, *rest_defs;
} step_cmd;

// A step's stdout and stderr sent to <logs>/NN-<log>.log while it runs in this process.
typedef struct {
    const char *log;
    char *path;
    int so, se;  // the demo's own stdout and stderr
} step_io;

// Where the steps of one seed (or of its tuning trials) write: their logs, numbered from 1, and
// the tag before each command's comment in commands.sh ("" for the first seed, "seed-2/").
typedef struct {
    demo *d;
    const char *logs;
    int step;
    char tag[32];
} step_place;

// Writes the step's command line and sends stdout and stderr to its log. Returns 0, or the exit
// code after the error.
static int step_begin(step_place *p, const char *log, const step_cmd *cmd, step_io *io) {
    FILE *f = p->d->commands;
    cli_render(f, cmd->verb, cmd->rows, cmd->defs);
    if (cmd->rest) {
        fputs(" '--'", f);
        cli_render_rows(f, cmd->rest, cmd->rest_defs);
    }
    fprintf(f, "  # %s%s\n", p->tag, log);
    fflush(f);
    char name[128];
    snprintf(name, sizeof name, "%02d-%s.log", ++p->step, log);
    *io = (step_io){.log = log, .path = fk_path_join(p->logs, name)};
    fflush(stdout);
    fflush(stderr);
    int fd = io->path ? open(io->path, O_WRONLY | O_CREAT | O_TRUNC, 0644) : -1;
    if (fd < 0) {
        fprintf(stderr, "fusekit demo: error: cannot create %s\n", io->path ? io->path : name);
        free(io->path);
        return 1;
    }
    io->so = dup(1);
    io->se = dup(2);
    dup2(fd, 1);
    dup2(fd, 2);
    close(fd);
    return 0;
}

// Puts stdout and stderr back after the step ran with exit code rc; a failed step's last output
// is shown. Returns rc; *log (may be NULL) gets the log's path (else it is freed).
static int step_end(step_io *io, int rc, char **log) {
    fflush(stdout);
    fflush(stderr);
    dup2(io->so, 1);
    dup2(io->se, 2);
    close(io->so);
    close(io->se);
    if (rc != 0) {
        fprintf(stderr, "fusekit demo: error: step '%s' failed (exit %d); its output:\n", io->log, rc);
        char *text = NULL;
        size_t n = 0;
        if (fk_read_file(io->path, &text, &n) == FK_OK) {
            size_t from = n > 3000 ? n - 3000 : 0;
            fwrite(text + from, 1, n - from, stderr);
        }
        free(text);
    }
    if (log) *log = io->path;
    else free(io->path);
    return rc;
}

// Runs one step: its line in commands.sh, exec with its output in the log (*log as step_end).
typedef int (*step_exec)(void *args);
static int run_step(step_place *p, const char *log, const step_cmd *cmd, step_exec exec, void *args, char **log_path) {
    step_io io;
    int rc = step_begin(p, log, cmd, &io);
    return rc != 0 ? rc : step_end(&io, exec(args), log_path);
}

static int exec_train(void *a) { return cli_train_exec(a); }
static int exec_fuse(void *a) { return cli_fuse_exec(a); }
static int exec_fold(void *a) { return cli_fold_exec(a); }
static int exec_synth(void *a) { return cli_synth_exec(a); }
static int exec_tok(void *a) { return cli_tok_train_exec(a); }

// Trains with t's options (fusekit train), its line in commands.sh and its output in the log.
static int run_train(step_place *p, const char *log, cli_train_args *t, char **log_path) {
    cli_train_args t0;
    cli_train_args_init(&t0);
    cli_opt rows[CLI_TRAIN_ROWS], defs[CLI_TRAIN_ROWS];
    cli_train_rows(t, rows);
    cli_train_rows(&t0, defs);
    cli_rows_mark_set(rows, defs);
    cli_train_given(rows, &t->job);
    return run_step(p, log, &(step_cmd){"train", rows, defs, NULL, NULL}, exec_train, t, log_path);
}

static char *pj(const char *a, const char *b) { return fk_path_join(a, b); }
static char *pj3(const char *a, const char *b, const char *c) {
    char *t = fk_path_join(a, b), *r = t ? fk_path_join(t, c) : NULL;
    free(t);
    return r;
}

// Appends whole lines of src (up to max bytes, 0 = all) to the growing buffer.
static fk_status append_file(const char *src, int64_t max, char **buf, size_t *n) {
    char *t;
    size_t len;
    FK_TRY(fk_read_file(src, &t, &len));
    if (max > 0 && (size_t)max < len) {
        len = (size_t)max;
        while (len > 0 && t[len - 1] != '\n') len--;
    }
    char *g = realloc(*buf, *n + len + 1);
    if (!g) { free(t); return fk_error(FK_ERR_NOMEM, "out of memory"); }
    memcpy(g + *n, t, len);
    *n += len;
    g[*n] = 0;
    *buf = g;
    free(t);
    return FK_OK;
}

// A rerun starts afresh: the folders an earlier demo wrote are removed, but only in a folder
// that an earlier demo made (commands.sh is there) or an empty one.
static fk_status demo_clean(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return FK_OK;  // created below
    int entries = 0;
    for (struct dirent *e; (e = readdir(d));) entries += strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0;
    closedir(d);
    char *marker = fk_path_join(dir, "commands.sh");
    bool ours = marker && fk_path_exists(marker);
    free(marker);
    if (entries == 0) return FK_OK;
    if (!ours) return fk_error(FK_ERR_ARG, "%s exists and is not a fusekit demo folder (no commands.sh): choose another -o", dir);
    const char *sub[] = {"logs", "models", "tokenizers", "corpus", "data", "tune", "seeds", "report.html", "results.json", "commands.sh"};
    for (size_t i = 0; i < sizeof sub / sizeof *sub; i++) {
        char *p = fk_path_join(dir, sub[i]);
        if (p && fk_remove_tree(p) != FK_OK) {
            fk_status st = fk_error(FK_ERR_IO, "cannot remove %s from an earlier demo", p);
            free(p);
            return st;
        }
        free(p);
    }
    return FK_OK;
}

static int demo_fail(const char *what, fk_status st) {
    if (st != FK_OK) fk_error_context(st, "%s", what);
    return cli_fail("demo", st);
}

// ---------------------------------------------------------------- one seed's folders
// Every path one seed writes: the first seed's under the demo's folder, seed k's under
// seeds/<k>/ (the same layout).
typedef struct {
    int64_t seed;
    step_place place;
    char *root, *logs, *models, *data, *corpus, *toks, *stores, *tune;
    char *mix_train, *mix_valid, *fusion_text, *src_text[N_SRC], *src_dir[N_SRC];
    char *arm_dir[DEMO_MAX_ARMS];
} seed_run;

// The protocol's state: the settings, the runner, the results.
typedef struct {
    demo d;
    demo_results R;
    int64_t threads;
    seed_run seeds[DEMO_MAX_SEEDS];
} demo_ctx;

static void seed_free(seed_run *s) {
    char **all[] = {&s->root, &s->logs, &s->models, &s->data, &s->corpus, &s->toks, &s->stores, &s->tune,
                    &s->mix_train, &s->mix_valid, &s->fusion_text};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) free(*all[i]);
    for (int k = 0; k < N_SRC; k++) { free(s->src_text[k]); free(s->src_dir[k]); }
    for (int a = 0; a < DEMO_MAX_ARMS; a++) free(s->arm_dir[a]);
}

// The paths of seed index i and its folders.
static fk_status seed_open(demo_ctx *x, int i) {
    seed_run *s = &x->seeds[i];
    s->seed = x->R.seeds[i];
    char sub[48];
    snprintf(sub, sizeof sub, "seeds/%lld", (long long)s->seed);
    s->root = i == 0 ? strdup(x->d.dir) : pj(x->d.dir, sub);
    if (!s->root) return fk_error(FK_ERR_NOMEM, "out of memory");
    s->logs = pj(s->root, "logs");
    s->models = pj(s->root, "models");
    s->data = pj(s->root, "data");
    s->corpus = pj(s->root, "corpus");
    s->toks = pj(s->root, "tokenizers");
    s->stores = pj(s->models, "stores");
    s->tune = pj(s->root, "tune");
    s->mix_train = pj3(s->data, "mix", "train.txt");
    s->mix_valid = pj3(s->data, "mix", "valid.txt");
    s->fusion_text = pj(s->corpus, "fusion.txt");
    for (int k = 0; k < N_SRC; k++) {
        char name[32];
        snprintf(name, sizeof name, "source-%s.txt", sources[k].name);
        s->src_text[k] = pj(s->corpus, name);
        s->src_dir[k] = pj(s->models, sources[k].name);
    }
    for (int a = 0; a < x->R.n_arms; a++) s->arm_dir[a] = pj(s->models, x->R.arms[a]->name);
    s->place = (step_place){.d = &x->d, .logs = s->logs};
    if (i > 0) snprintf(s->place.tag, sizeof s->place.tag, "seed-%lld/", (long long)s->seed);
    if (!s->fusion_text || !s->src_dir[N_SRC - 1] || !s->stores || !s->tune) return fk_error(FK_ERR_NOMEM, "out of memory");
    FK_TRY(fk_mkdir_p(s->logs));
    FK_TRY(fk_mkdir_p(s->models));
    FK_TRY(fk_mkdir_p(s->corpus));
    return fk_mkdir_p(s->toks);
}

// ---------------------------------------------------------------- corpus and sources
// Each source's own domains plus a slice of the mix, and the fusion corpus: the first bytes of the mix.
static fk_status write_corpora(const seed_run *s, const demo_cfg *c) {
    fk_status st = FK_OK;
    for (int k = 0; k < N_SRC && st == FK_OK; k++) {
        char *buf = NULL;
        size_t n = 0;
        for (int j = 0; j < 2 && sources[k].domains[j] && st == FK_OK; j++) {
            char *f = pj3(s->data, sources[k].domains[j], "train.txt");
            st = append_file(f, 0, &buf, &n);
            free(f);
        }
        if (st == FK_OK) st = append_file(s->mix_train, c->mix_slice, &buf, &n);
        if (st == FK_OK) st = fk_write_file_atomic(s->src_text[k], buf, n);
        free(buf);
    }
    if (st == FK_OK) {
        char *buf = NULL;
        size_t n = 0;
        st = append_file(s->mix_train, c->fuse_bytes, &buf, &n);
        if (st == FK_OK) st = fk_write_file_atomic(s->fusion_text, buf, n);
        free(buf);
    }
    return st;
}

// 1. the synthetic corpus, and the training corpora cut from it. Returns the exit code.
static int step_corpus(demo_ctx *x, seed_run *s) {
    const demo_cfg *c = x->R.c;
    demo_say(&x->d, "seed %lld: synthetic corpus, 4 domains, %lld bytes of training text each -> %s\n", (long long)s->seed,
             (long long)c->synth_bytes, s->data);
    cli_synth_args a, a0;
    cli_synth_args_init(&a);
    cli_synth_args_init(&a0);
    a.out.path = s->data;
    a.o.seed = (uint64_t)s->seed;
    a.o.bytes_per_domain = c->synth_bytes;
    a.o.heldout_bytes = c->heldout_bytes;
    a.o.probes_per_domain = c->probes;
    cli_opt rows[CLI_SYNTH_ROWS], defs[CLI_SYNTH_ROWS];
    cli_synth_rows(&a, rows);
    cli_synth_rows(&a0, defs);
    int rc = run_step(&s->place, "synth", &(step_cmd){"data synth", rows, defs, NULL, NULL}, exec_synth, &a, NULL);
    if (rc != 0) return rc;
    fprintf(x->d.commands, "# %s: corpus/ is cut from data/ by the demo itself: source-X.txt is X's domains' train.txt and the first "
            "%lld bytes of mix/train.txt, fusion.txt the first %lld bytes of mix/train.txt (whole lines)\n", s->root,
            (long long)c->mix_slice, (long long)c->fuse_bytes);
    fk_status st = write_corpora(s, c);
    return st == FK_OK ? 0 : demo_fail("writing the training corpora", st);
}

// 2. source k: its tokenizer, then the model trained on its corpus. Returns the exit code.
static int step_source(demo_ctx *x, seed_run *s, int k) {
    const demo_source *S = &sources[k];
    const demo_cfg *c = x->R.c;
    char *tdir = pj(s->toks, S->name), log[32];
    cli_tok_train_args a, a0;
    cli_tok_train_args_init(&a);
    cli_tok_train_args_init(&a0);
    a.data.v[a.data.n++] = s->src_text[k];
    a.o.vocab_size = S->vocab;
    a.kind = strcmp(S->kind, "spm") == 0;
    if (S->pre) a.o.pre = S->pre;
    else a.o.split_digits = true;
    a.pre_given = S->pre != NULL;
    a.out.path = tdir;
    cli_opt rows[CLI_TOK_TRAIN_ROWS], defs[CLI_TOK_TRAIN_ROWS];
    cli_tok_train_rows(&a, rows);
    cli_tok_train_rows(&a0, defs);
    snprintf(log, sizeof log, "tokenizer-%s", S->name);
    int rc = run_step(&s->place, log, &(step_cmd){"tokenizer train", rows, defs, NULL, NULL}, exec_tok, &a, NULL);
    if (rc == 0) {
        demo_say(&x->d, "seed %lld: source %s: %s, %lld steps\n", (long long)s->seed, S->name, S->desc, (long long)c->src_steps);
        cli_train_args t;
        cli_train_args_init(&t);
        fk_train_job *j = &t.job;
        j->data = s->src_text[k];
        j->tokenizer = tdir;
        j->shape.arch = strcmp(S->arch, "llama") == 0 ? FK_SHAPE_LLAMA : FK_SHAPE_GPT2;
        j->shape.d_model = c->d_model;
        j->shape.layers = c->layers;
        j->shape.heads = c->heads;
        if (j->shape.arch == FK_SHAPE_LLAMA && k == 1) j->shape.kv_heads = c->heads / 2;
        j->shape.ctx = c->ctx;
        j->o.batch = (int)c->batch;
        j->o.steps = c->src_steps;
        j->o.optim.lr = (float)S->lr;
        j->o.seed = (uint64_t)s->seed;
        t.threads = x->threads;
        j->o.eval_every = c->src_steps;
        j->o.log_every = 50;
        j->out = s->src_dir[k];
        snprintf(log, sizeof log, "source-%s", S->name);
        rc = run_train(&s->place, log, &t, NULL);
    }
    free(tdir);
    return rc;
}

// ---------------------------------------------------------------- the arms
// The fused/CLM schedule: the same steps, batch, evaluation and seed for every fuse and CLM arm.
static void arm_schedule(const demo_cfg *c, const seed_run *s, fk_train_job *j, double lr, int64_t steps) {
    j->o.steps = steps;
    j->o.batch = (int)c->batch;
    j->o.optim.lr = (float)lr;
    j->val = s->mix_valid;
    j->o.eval_every = c->eval_every;
    j->o.log_every = 5;
    j->o.seed = (uint64_t)s->seed;
}

// A fuse arm: target B, its sources, lambda, lr and vocabulary map t; the stores and alignments
// are shared by every fuse arm of the seed (extracted once, cached).
static int run_fuse_arm(demo_ctx *x, seed_run *s, step_place *p, const demo_arm *A, const trial_set *t, const char *out, const char *log,
                        char **log_path) {
    cli_fuse_args a, a0;
    cli_fuse_args_init(&a);
    cli_fuse_args_init(&a0);
    a.job.target = s->src_dir[1];
    for (int k = 0; k < N_SRC; k++)
        if (A->sources & (1u << k)) a.job.sources.v[a.job.sources.n++] = s->src_dir[k];
    a.job.store_dir = s->stores;
    fk_train_job *j = &a.job.train;
    j->data = s->fusion_text;
    j->lambda = (float)t->lambda;
    j->fo.tail = true;
    j->ao.vmap = (fk_vmap_mode)t->vmap;
    if (A->shuffle) j->fo.shuffle_seed = (uint64_t)s->seed + 1;  // (0 is off)
    arm_schedule(x->R.c, s, j, t->lr, x->R.c->fuse_steps);
    a.threads = x->threads;
    j->out = out;
    cli_opt rows[CLI_FUSE_ROWS], defs[CLI_FUSE_ROWS];
    cli_fuse_rows(&a, rows);
    cli_fuse_rows(&a0, defs);
    cli_rows_mark_set(rows, defs);
    cli_train_given(rows, j);
    return run_step(p, log, &(step_cmd){"fuse", rows, defs, NULL, NULL}, exec_fuse, &a, log_path);
}

// A CLM arm: the baseline's initialisation and corpus, lr t->lr; replay runs replay_steps.
static int run_clm_arm(demo_ctx *x, seed_run *s, step_place *p, const demo_arm *A, const trial_set *t, const char *out, const char *log,
                       char **log_path) {
    cli_train_args b;
    cli_train_args_init(&b);
    b.job.init = s->src_dir[1];
    b.job.data = s->fusion_text;
    arm_schedule(x->R.c, s, &b.job, t->lr, A->replay ? x->R.replay_steps : x->R.c->fuse_steps);
    b.threads = x->threads;
    b.job.out = out;
    return run_train(p, log, &b, log_path);
}

// The healing options of both heal arms (after fold's "--"): the fold's heal defaults (lambda
// 0.5), the demo's batch, validation text and seed, and the lr; fold sets the steps.
static void heal_schedule(const demo_cfg *c, const seed_run *s, fk_train_job *j, double lr) {
    j->o.batch = (int)c->batch;
    j->val = s->mix_valid;
    j->o.eval_every = c->heal_steps;
    j->o.seed = (uint64_t)s->seed;
    j->o.optim.lr = (float)lr;
}

// The folded arm: the fused model folded by the budget and healed heal_steps steps at lr t->lr;
// heal_only: the healed original (fold --heal-only: nothing folded, the same healing job).
static int run_fold_arm(demo_ctx *x, seed_run *s, step_place *p, const char *fused, const trial_set *t, bool heal_only, const char *out,
                        const char *log, char **log_path) {
    const demo_cfg *c = x->R.c;
    cli_fold_args a, a0;
    cli_fold_args_init(&a);
    cli_fold_args_init(&a0);
    a.model = fused;
    a.data = s->fusion_text;
    a.budget = c->budget;
    a.heal_steps = c->heal_steps;
    a.edges = true;
    a.heal_only = heal_only;
    a.threads = x->threads;
    a.out = out;
    heal_schedule(c, s, &a.heal.job, t->lr);
    cli_opt rows[CLI_FOLD_ROWS], defs[CLI_FOLD_ROWS], heal[CLI_TRAIN_ROWS], heal0[CLI_TRAIN_ROWS];
    cli_fold_rows(&a, rows);
    cli_fold_rows(&a0, defs);
    // the healing options after "--": train's rows without those heal sets itself, as fold parses them
    cli_train_job_rows(&a.heal.job, &a.heal.threads, cli_heal_sets, heal);
    cli_train_job_rows(&a0.heal.job, &a0.heal.threads, cli_heal_sets, heal0);
    cli_rows_mark_set(heal, heal0);
    cli_train_given(heal, &a.heal.job);
    return run_step(p, log, &(step_cmd){"fold", rows, defs, heal, heal0}, exec_fold, &a, log_path);
}

// Arm a of seed s with settings t into out. Returns the exit code.
static int run_arm(demo_ctx *x, seed_run *s, step_place *p, int a, const trial_set *t, const char *out, const char *log, char **log_path) {
    const demo_arm *A = x->R.arms[a];
    const char *fused = s->arm_dir[demo_arm_index(&x->R, "fused")];
    switch (A->kind) {
    case ARM_FUSE: return run_fuse_arm(x, s, p, A, t, out, log, log_path);
    case ARM_CLM: return run_clm_arm(x, s, p, A, t, out, log, log_path);
    default: return run_fold_arm(x, s, p, fused, t, !A->fold, out, log, log_path);
    }
}

// The log name of arm A's step: "fuse" and "fold" as before the protocol, else its name.
static const char *arm_log(const demo_arm *A) {
    return strcmp(A->name, "fused") == 0 ? "fuse" : strcmp(A->name, "folded") == 0 ? "fold" : A->name;
}

// ---------------------------------------------------------------- tuning
// The trials of arm A: cfg.trials settings of the grid (lambda slowest, map fastest); the
// self-distillation arm, whose map is the identity whatever its mode, varies the lr instead.
static int grid_trials(const demo_cfg *c, const demo_arm *A, trial_set *t) {
    const demo_grid *g = &c->grid;
    arm_kind k = A->kind;
    int n = 0;
    if (k == ARM_FUSE && A->sources == 0) {
        for (int i = 0; i < g->n_lambda; i++)
            for (int j = 0; j < g->n_lr * g->n_vmap; j++) t[n++] = (trial_set){g->lambda[i], g->self_lr[j], g->vmap[0]};
    } else if (k == ARM_FUSE) {
        for (int i = 0; i < g->n_lambda; i++)
            for (int j = 0; j < g->n_lr; j++)
                for (int v = 0; v < g->n_vmap; v++) t[n++] = (trial_set){g->lambda[i], g->fuse_lr[j], g->vmap[v]};
    } else {
        for (int i = 0; i < c->trials; i++) t[n++] = (trial_set){k == ARM_CLM ? 0.0 : 0.5, k == ARM_CLM ? g->clm_lr[i] : g->heal_lr[i], -1};
    }
    return n;
}

// The mean bits per byte over the domains' valid.txt of the model in dir: the tuning's score.
static fk_status valid_score(const seed_run *s, const char *dir, int64_t ctx, double *score) {
    model_row v = {.dir = (char *)dir};
    FK_TRY(demo_evaluate(s->data, "valid", false, &v, ctx));
    *score = v.avg_bpb;
    return FK_OK;
}

// Copies the text file from to to (the chosen trial's log into the seed's logs).
static fk_status copy_file(const char *from, const char *to) {
    char *t = NULL;
    size_t n = 0;
    FK_TRY(fk_read_file(from, &t, &n));
    fk_status st = fk_write_file_atomic(to, t, n);
    free(t);
    return st;
}

// The chosen trial becomes the seed's model of the arm: its folder renamed (a mv line in
// commands.sh) and its log copied into the seed's logs under the arm's step number.
static fk_status keep_trial(demo_ctx *x, seed_run *s, int a, const char *trial_dir, const char *trial_log) {
    const char *dst = s->arm_dir[a];
    fprintf(x->d.commands, "mv ");
    cli_render_word(x->d.commands, trial_dir);
    fputc(' ', x->d.commands);
    cli_render_word(x->d.commands, dst);
    fprintf(x->d.commands, "  # %s: the trial with the lowest validation bits per byte\n", x->R.arms[a]->name);
    fflush(x->d.commands);
    if (rename(trial_dir, dst) != 0) return fk_error(FK_ERR_IO, "cannot rename %s to %s", trial_dir, dst);
    char name[128];
    snprintf(name, sizeof name, "%02d-%s.log", ++s->place.step, arm_log(x->R.arms[a]));
    char *to = pj(s->logs, name);
    fk_status st = to ? copy_file(trial_log, to) : fk_error(FK_ERR_NOMEM, "out of memory");
    free(to);
    return st;
}

// Tunes arm a on the first seed: each trial trained into tune/<arm>/tN and scored on the
// validation splits; the lowest score's trial is kept. Returns the exit code.
static int tune_arm(demo_ctx *x, seed_run *s, step_place *tp, int a) {
    const demo_arm *A = x->R.arms[a];
    arm_tuning *tu = &x->R.tune[a];
    tu->n_trials = grid_trials(x->R.c, A, tu->set);
    demo_say(&x->d, "tuning %s: %d trials on the validation splits\n", A->name, tu->n_trials);
    char *dirs[DEMO_MAX_TRIALS] = {0}, *logs[DEMO_MAX_TRIALS] = {0};
    char *adir = pj(s->tune, A->name);
    int rc = adir ? 0 : demo_fail("tuning", fk_error(FK_ERR_NOMEM, "out of memory"));
    for (int i = 0; i < tu->n_trials && rc == 0; i++) {
        char tn[16], log[64];
        snprintf(tn, sizeof tn, "t%d", i + 1);
        snprintf(log, sizeof log, "%s-t%d", A->name, i + 1);
        dirs[i] = pj(adir, tn);
        rc = run_arm(x, s, tp, a, &tu->set[i], dirs[i], log, &logs[i]);
        fk_status st = rc == 0 ? valid_score(s, dirs[i], x->R.c->ctx, &tu->valid[i]) : FK_OK;
        if (st != FK_OK) rc = demo_fail("scoring a tuning trial", st);
    }
    if (rc == 0) {
        tu->chosen = 0;
        for (int i = 1; i < tu->n_trials; i++)
            if (tu->valid[i] < tu->valid[tu->chosen]) tu->chosen = i;
        fk_status st = keep_trial(x, s, a, dirs[tu->chosen], logs[tu->chosen]);
        if (st != FK_OK) rc = demo_fail("keeping the chosen trial", st);
    }
    for (int i = 0; i < DEMO_MAX_TRIALS; i++) { free(dirs[i]); free(logs[i]); }
    free(adir);
    return rc;
}

// ---------------------------------------------------------------- replay's budget
// The replay control's steps: the fused run's extraction FLOPs (each teacher's forward FLOPs per
// token times its tokens of the fusion text) turned into extra CLM steps of the target; counted
// on the first seed and kept for the others, like the tuned settings.
static fk_status replay_budget(demo_ctx *x, const seed_run *s) {
    const demo_cfg *c = x->R.c;
    const char *teachers[N_SRC] = {s->src_dir[1], s->src_dir[0], s->src_dir[2]};  // B (the target) first, as fuse
    double extract = 0, tgt_train = 0;
    for (int k = 0; k < N_SRC; k++) {
        fk_model m;
        FK_TRY(fk_hf_load(&m, teachers[k]));
        fk_tokenizer *tok = NULL;
        fk_token_data d = {0};
        fk_status st = cli_model_tokenizer(teachers[k], NULL, m.cfg.vocab_size, &tok);
        if (st == FK_OK) st = fk_data_load_tok(s->fusion_text, tok, &d);
        double fwd = 0, train = 0;
        if (st == FK_OK) fk_model_flops_per_token(&m, (int)c->ctx, &fwd, &train);
        if (st == FK_OK) extract += fwd * (double)d.n;
        if (st == FK_OK && k == 0) tgt_train = train;
        fk_data_free(&d);
        fk_tok_free(tok);
        fk_model_free(&m);
        FK_TRY(st);
    }
    x->R.extract_flops = extract;
    x->R.train_flops = tgt_train * (double)(c->fuse_steps * c->batch * c->ctx);
    x->R.replay_steps = fk_replay_steps(c->fuse_steps, extract, tgt_train, c->batch * c->ctx);
    return FK_OK;
}

// ---------------------------------------------------------------- one seed
// The arms in run order: the fused arm first (the others use its model or its FLOPs).
static int run_order(const demo_results *R, int k) {
    int f = demo_arm_index(R, "fused");
    return k == 0 ? f : k <= f ? k - 1 : k;
}

// Trains seed i: corpus, sources, then each arm (tuned on the first seed, else once with the
// chosen settings). Returns the exit code.
static int run_seed(demo_ctx *x, int i) {
    seed_run *s = &x->seeds[i];
    fk_status st = seed_open(x, i);
    if (st != FK_OK) return demo_fail("creating the output folders", st);
    int rc = step_corpus(x, s);
    for (int k = 0; k < N_SRC && rc == 0; k++) rc = step_source(x, s, k);
    step_place tp = {.d = &x->d};
    char *tlogs = pj(s->tune, "logs");
    if (rc == 0 && i == 0 && (!tlogs || fk_mkdir_p(tlogs) != FK_OK))
        rc = demo_fail("creating tune/logs", fk_error(FK_ERR_IO, "cannot create %s", tlogs));
    tp.logs = tlogs;
    for (int k = 0; k < x->R.n_arms && rc == 0; k++) {
        int a = run_order(&x->R, k);
        const demo_arm *A = x->R.arms[a];
        if (A->replay && i == 0 && (st = replay_budget(x, s)) != FK_OK) rc = demo_fail("counting the fused run's FLOPs", st);
        if (rc != 0) break;
        if (i == 0) {
            rc = tune_arm(x, s, &tp, a);
        } else {
            demo_say(&x->d, "seed %lld: %s\n", (long long)s->seed, A->name);
            const arm_tuning *tu = &x->R.tune[a];
            rc = run_arm(x, s, &s->place, a, &tu->set[tu->chosen], s->arm_dir[a], arm_log(A), NULL);
        }
    }
    free(tlogs);
    return rc;
}

// Every seed's models on the test splits and probes, read once, after all training.
static int evaluate_all(demo_ctx *x) {
    demo_results *R = &x->R;
    demo_say(&x->d, "evaluation: held-out test splits and probes of every domain, %d seed%s\n", R->n_seeds, R->n_seeds > 1 ? "s" : "");
    static const char *const src_roles[N_SRC] = {"source: arith", "source: facts", "source: grammar+records"};
    for (int i = 0; i < R->n_seeds; i++) {
        seed_run *s = &x->seeds[i];
        for (int r = 0; r < R->n_rows; r++) {
            model_row *row = &R->rows[i][r];
            bool src = r < N_SRC;
            *row = (model_row){.name = src ? sources[r].name : R->arms[r - N_SRC]->name,
                               .role = src ? src_roles[r] : R->arms[r - N_SRC]->role,
                               .dir = src ? s->src_dir[r] : s->arm_dir[r - N_SRC]};
            fk_status st = demo_evaluate(s->data, "test", true, row, R->c->ctx);
            if (st != FK_OK) return demo_fail("evaluating", st);
        }
    }
    return 0;
}

int cmd_demo(int argc, char **argv) {
    const char *out = "demo";
    bool quick = false, tiny = false, controls = false;
    int64_t seed = 1, n_seeds = 1, threads = 0;
    cli_opt opts[] = {
        {"-o|--out", OPT_STR, &out, "output folder: report.html, results.json, commands.sh, logs/, models/, data/, tune/, seeds/", false,
         NULL},
        {"--quick", OPT_FLAG, &quick, "smaller corpus, models, schedules and tuning grid (4 trials per arm, else 8): the test suite runs it",
         false, NULL},
        {"--seeds", OPT_INT, &n_seeds, "replicates N: the whole pipeline with seeds SEED..SEED+N-1 (tuned on the first)", false, "[1,16]"},
        {"--controls", OPT_FLAG, &controls, "adds the controls: self-distillation, B+A, B+C, shuffled teachers, replay, healed original", false,
         NULL},
        {"--seed", OPT_INT, &seed, "seed of the corpus and of every training run (the first seed with --seeds)", false, "[0,)"},
        {"--threads", OPT_INT, &threads, "threads (default: one per physical core; 1 with --quick, which runs beside other tests)", false, "[0,4096]"},
        {"--tiny", OPT_FLAG, &tiny, "for tests: the protocol on a tiny corpus and schedule in seconds (numbers meaningless)", false, NULL},
        CLI_ROWS_END,
    };
    int rc = cli_parse_verb(argc, argv, opts,
                       "usage: fusekit demo [-o DIR] [--quick] [--seeds N] [--controls]\n\n"
                       "Knowledge fusion and folding end to end on the embedded synthetic corpus: three sources with different\n"
                       "tokenizers (byte-level BPE, SentencePiece-style BPE) and architectures (GPT-2, Llama) each learn mostly\n"
                       "one domain; they are fused into a target initialised from one of them, beside a CLM-only baseline with\n"
                       "the same data and steps; the fused model is folded by an FFN budget and healed. Every arm's settings are\n"
                       "tuned with the same number of trials on the validation splits (first seed); the test splits are read once,\n"
                       "at the end. Prints a table (mean +- sd over seeds, paired differences with 95% t intervals) and writes\n"
                       "DIR/report.html (open it in a browser) and DIR/results.json.");
    if (rc >= 0) return rc;
    cli_out_spec os = {"-o", out, false, true};  // an earlier demo's folder is cleaned below, any other refused
    if ((rc = cli_check_output("demo", &os, NULL, 0)) != 0) return rc;
    if ((quick || tiny) && !cli_was_set(opts, "--threads")) threads = 1;
    cli_set_threads(threads);
    demo_ctx *x = calloc(1, sizeof *x);
    if (!x) return demo_fail("starting", fk_error(FK_ERR_NOMEM, "out of memory"));
    x->d = (demo){.dir = out, .t0 = fk_time_s()};
    x->threads = threads;
    demo_results *R = &x->R;
    R->c = tiny ? &cfg_tiny : quick ? &cfg_quick : &cfg_full;
    R->quick = quick || tiny;
    R->controls = controls;
    R->n_seeds = (int)n_seeds;
    for (int i = 0; i < R->n_seeds; i++) R->seeds[i] = seed + i;
    for (int a = 0; a < N_ARM_TABLE; a++)
        if (controls || !arm_table[a].control) R->arms[R->n_arms++] = &arm_table[a];
    R->n_rows = N_SRC + R->n_arms;
    fk_status st = demo_clean(out);
    char *cmdp = pj(out, "commands.sh");
    if (st == FK_OK) st = fk_mkdir_p(out);
    if (st == FK_OK && !(x->d.commands = fopen(cmdp, "w"))) st = fk_error(FK_ERR_IO, "cannot create %s", cmdp);
    free(cmdp);
    if (st != FK_OK) rc = demo_fail("creating the output folder", st);
    if (rc == 0)
        fprintf(x->d.commands, "# The steps of `fusekit demo%s%s --seeds %d -o %s`, as fusekit commands (run from the same folder).\n",
                tiny ? " --tiny" : quick ? " --quick" : "", controls ? " --controls" : "", R->n_seeds, out);
    for (int i = 0; i < R->n_seeds && rc == 0; i++) rc = run_seed(x, i);
    if (rc == 0) rc = evaluate_all(x);
    if (rc == 0) {
        R->fused_dir = x->seeds[0].arm_dir[demo_arm_index(R, "fused")];
        R->base_dir = x->seeds[0].arm_dir[demo_arm_index(R, "baseline")];
        R->folded_dir = x->seeds[0].arm_dir[demo_arm_index(R, "folded")];
        R->mix_valid = x->seeds[0].mix_valid;
        R->secs = fk_time_s() - x->d.t0;
        st = demo_outputs(&x->d, R);
        if (st != FK_OK) rc = demo_fail("writing the report", st);
    }
    if (x->d.commands) fclose(x->d.commands);
    for (int i = 0; i < R->n_seeds; i++) seed_free(&x->seeds[i]);
    free(x);
    return rc;
}
