// The training job (fusekit/job.h): a run of fk_train with everything decided around it — the
// tokenizer, the held-out split, resume or a fresh model, the teachers, metrics.jsonl.
#include "fusekit/job.h"
#include "fusekit/hf.h"
#include "job_internal.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void fk_job_note(const fk_job_hooks *h, const char *fmt, ...) {
    if (!h->note) return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);  // the whole line, however long its paths
    va_end(ap);
    char *line = n >= 0 ? malloc((size_t)n + 1) : NULL;
    if (!line) return;
    va_start(ap, fmt);
    vsnprintf(line, (size_t)n + 1, fmt, ap);
    va_end(ap);
    h->note(line, h->user);
    free(line);
}

bool fk_job_has_checkpoint(const char *dir) {
    char *ck = NULL;
    bool run = fk_checkpoint_latest(dir, &ck) == FK_OK;
    free(ck);
    return run;
}

// ------------------------------------------------------------------ options given

// The options a resume takes from the command (the first four) or reports as ignored.
static const struct { const char *name; unsigned bit; } given_names[] = {
    {"--steps", FK_GIVEN_STEPS},       {"--eval-every", FK_GIVEN_EVAL_EVERY}, {"--save-every", FK_GIVEN_SAVE_EVERY},
    {"--log-every", FK_GIVEN_LOG_EVERY}, {"--lr", FK_GIVEN_LR},               {"--min-lr-frac", FK_GIVEN_MIN_LR_FRAC},
    {"--warmup", FK_GIVEN_WARMUP},     {"--wd", FK_GIVEN_WD},                 {"--beta1", FK_GIVEN_BETA1},
    {"--beta2", FK_GIVEN_BETA2},       {"--clip", FK_GIVEN_CLIP},             {"--batch", FK_GIVEN_BATCH},
    {"--seq", FK_GIVEN_SEQ},           {"--grad-accum", FK_GIVEN_GRAD_ACCUM}, {"--seed", FK_GIVEN_SEED},
    {"--keep", FK_GIVEN_KEEP},         {"--eval-tokens", FK_GIVEN_EVAL_TOKENS}, {"--config", FK_GIVEN_CONFIG},
    {"--init", FK_GIVEN_INIT},         {"--arch", FK_GIVEN_ARCH},             {"--precision", FK_GIVEN_PRECISION},
    {"--optim-state", FK_GIVEN_OPTIM_STATE},
};
#define N_GIVEN (sizeof given_names / sizeof given_names[0])
#define GIVEN_OVERRIDES (FK_GIVEN_STEPS | FK_GIVEN_EVAL_EVERY | FK_GIVEN_SAVE_EVERY | FK_GIVEN_LOG_EVERY)

unsigned fk_train_given_bit(const char *option) {
    for (size_t i = 0; option && i < N_GIVEN; i++)
        if (strcmp(given_names[i].name, option) == 0) return given_names[i].bit;
    return 0;
}

// ------------------------------------------------------------------ defaults and checks

void fk_train_job_defaults(fk_train_job *j) {
    memset(j, 0, sizeof *j);
    j->val_frac = 0.1;
    j->shape = (fk_train_shape){FK_SHAPE_GPT2, 0, 128, 4, 4, 0, 0, 256, 10000.0f};
    j->lambda = 0.9f;
    fk_train_defaults(&j->o);
    j->o.precision = FK_PRECISION_AUTO;  // bf16 where it is the faster path (fk_bf16_fast), else fp32
    j->o.seq = 0;             // the model's context
    j->o.optim.warmup = -1;   // steps / 20
    fk_fusion_defaults(&j->fo);
    fk_align_opts_default(&j->ao);
}

static bool resuming(const fk_train_job *j) { return j->resume || j->resume_from; }

fk_status fk_train_job_check(const fk_train_job *j) {
    if (!j->data || !j->out) return fk_error(FK_ERR_ARG, "--data and --out are required");
    FK_TRY(fk_train_precision_check(j->o.precision));
    if (!resuming(j) && !j->force) {  // a model folder that is not a run would be overwritten
        char *mp = fk_path_join(j->out, "model.safetensors");
        bool model = mp && fk_path_exists(mp);
        free(mp);
        if (model && !fk_job_has_checkpoint(j->out))
            return fk_error(FK_ERR_ARG, "-o %s holds a model but no training run: pass --force to overwrite it, or choose another -o", j->out);
    }
    const fk_train_shape *sh = &j->shape;
    if (!j->config && !j->init && !resuming(j) && (sh->heads <= 0 || sh->d_model % sh->heads != 0))  // head_dim = d / heads
        return fk_error(FK_ERR_ARG, "--d-model %lld is not a multiple of --heads %lld", (long long)sh->d_model, (long long)sh->heads);
    if (j->teachers.n > 0 && fk_data_is_shard(j->data))
        return fk_error(FK_ERR_ARG, "--teacher needs --data as the text the stores were extracted from, not a token shard");
    if (j->fo.shuffle_seed && j->teachers.n == 0)
        return fk_error(FK_ERR_ARG, "--shuffle-teachers %llu needs teachers (--teacher; fuse: its sources)", (unsigned long long)j->fo.shuffle_seed);
    return FK_OK;
}

// ------------------------------------------------------------------ the run's state

typedef struct {
    fk_token_data all, tr, va;
    fk_teacher_set *tset;
    char *tpaths[FK_PATH_LIST_MAX];
    fk_model m;
    fk_adamw opt;
    fk_tokenizer *tok;
} job_state;

static void job_state_free(job_state *s) {
    fk_teacher_set_close(s->tset);
    for (int i = 0; i < FK_PATH_LIST_MAX; i++) free(s->tpaths[i]);
    fk_adamw_free(&s->opt);
    fk_model_free(&s->m);
    fk_data_free(&s->all); fk_data_free(&s->tr); fk_data_free(&s->va);
    fk_tok_free(s->tok);
}

// The tokenizer (given, else the one of the run being resumed or the model started from, else
// raw bytes for text: a token shard without a tokenizer trains on its ids as they are), then
// the training and held-out data.
static fk_status load_data(const fk_train_job *j, const fk_job_hooks *h, job_state *s) {
    char *from = NULL;
    if (j->resume_from) from = strdup(j->resume_from);
    else if (j->resume) fk_checkpoint_latest(j->out, &from);
    fk_status st = fk_model_tokenizer(from ? from : j->init, j->tokenizer, -1, &s->tok);
    free(from);
    if (st == FK_OK && !s->tok && !fk_data_is_shard(j->data)) st = fk_tok_new_bytes(&s->tok);
    if (st == FK_OK) st = fk_data_load_tok(j->data, s->tok, &s->all);
    if (st != FK_OK) return st;
    if (!s->tok)  // a shard's ids with no tokenizer: the model is saved without one, so say it now
        fk_job_note(h, "warning: %s is a token shard and no tokenizer was given (--tokenizer): %s will have no tokenizer.json, "
                       "and eval/generate on text will need --tokenizer", j->data, j->out);
    if (j->val) {
        st = fk_data_load_tok(j->val, s->tok, &s->va);
        if (st == FK_OK) { s->tr = s->all; memset(&s->all, 0, sizeof s->all); }
        return st;
    }
    int64_t cut = (int64_t)((double)s->all.n * (1.0 - j->val_frac));
    st = fk_data_slice(&s->all, 0, cut, &s->tr);
    if (st == FK_OK && j->val_frac > 0) st = fk_data_slice(&s->all, cut, s->all.n, &s->va);
    return st;
}

// Resuming: the checkpoint's model, optimizer and options; options given again override the
// stored ones where it is safe (*o holds the job's options on entry, the run's on return).
static fk_status resume_run(const fk_train_job *j, const fk_job_hooks *h, job_state *s, fk_train_opts *o) {
    char *ckpt = NULL;
    fk_status st = FK_OK;
    if (j->resume_from) ckpt = strdup(j->resume_from);
    else st = fk_checkpoint_latest(j->out, &ckpt);
    fk_train_opts given = *o;
    if (st == FK_OK) st = fk_checkpoint_load(ckpt, &s->m, &s->opt, o);
    o->tokenizer = s->tok;
    if (st == FK_OK) {
        unsigned g = j->given;
        if (g & FK_GIVEN_STEPS) { o->steps = given.steps; o->optim.total_steps = given.steps; s->opt.o.total_steps = given.steps; }
        if (g & FK_GIVEN_EVAL_EVERY) o->eval_every = given.eval_every;
        if (g & FK_GIVEN_SAVE_EVERY) o->save_every = given.save_every;
        if (g & FK_GIVEN_LOG_EVERY) o->log_every = given.log_every;
        // the rest would change the run the checkpoint belongs to: say so rather than ignore it silently
        for (size_t k = 0; k < N_GIVEN; k++)
            if ((g & given_names[k].bit) && !(given_names[k].bit & GIVEN_OVERRIDES))
                fk_job_note(h, "warning: %s is ignored when resuming (the checkpoint's value is used)", given_names[k].name);
        fk_job_note(h, "resuming from %s at step %lld", ckpt, (long long)s->opt.t);
    }
    free(ckpt);
    return st;
}

// A new model's config from the shape (or config).
static fk_status new_config(const fk_train_job *j, const job_state *s, fk_config *c) {
    if (j->config) return fk_hf_config_read(j->config, c);
    const fk_train_shape *sh = &j->shape;
    int64_t V = sh->vocab > 0 ? sh->vocab : s->tok ? fk_tok_vocab_size(s->tok) : s->tr.vocab_size;
    if (sh->arch == FK_SHAPE_GPT2) {
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

// A fresh run: the model (init's weights, or new ones), checked against the tokenizer, and the
// optimizer.
static fk_status fresh_run(const fk_train_job *j, job_state *s, fk_train_opts *o) {
    char *ckpt = NULL;
    if (fk_checkpoint_latest(j->out, &ckpt) == FK_OK) {  // a fresh run must not mix its checkpoints with an earlier run's
        fk_status st = fk_error(FK_ERR_ARG, "%s already holds a training run (%s): pass --resume to continue it, or choose another --out",
                                j->out, ckpt);
        free(ckpt);
        return st;
    }
    fk_status st;
    if (j->init) st = fk_model_load(j->init, 0, &s->m, NULL);
    else {
        fk_config c;
        st = new_config(j, s, &c);
        if (st == FK_OK) st = fk_model_init(&s->m, &c);
        if (st == FK_OK) fk_model_init_weights(&s->m, o->seed);
    }
    // the model must fit its tokenizer, a new one (vocab) too: rows beyond the tokens only as
    // padding (fk_vocab_check), so that what train saves loads in every other verb
    if (st == FK_OK && s->tok && (st = fk_vocab_check(fk_tok_vocab_size(s->tok), s->m.cfg.vocab_size)) != FK_OK)
        fk_error_context(st, "tokenizer %s, model %s", j->tokenizer ? j->tokenizer : "(the model's)", j->init ? j->init : "(new)");
    if (st != FK_OK) return st;
    if (o->seq <= 0) o->seq = (int)s->m.cfg.max_seq;  // 0: the model's context
    return fk_adamw_init(&s->opt, &s->m, &o->optim);
}

// The teachers: each store aligned to the target's tokens (or found cached), opened as the set
// that feeds the fusion loss.
static fk_status open_teachers(const fk_train_job *j, const fk_job_hooks *h, job_state *s, fk_train_opts *o) {
    fk_status st = FK_OK;
    for (int i = 0; i < j->teachers.n && st == FK_OK; i++) {
        bool built;
        double t0 = fk_time_s();
        const char *t = j->teachers.v[i];
        st = fk_teacher_prepare(t, s->tok, j->data, &j->ao, &s->tpaths[i], &built);
        if (st == FK_OK && built)
            fk_job_note(h, "teacher %s: aligned to the target's tokens in %s (%.1f s)", t, s->tpaths[i], fk_time_s() - t0);
        else if (st == FK_OK && strcmp(s->tpaths[i], t) != 0)
            fk_job_note(h, "teacher %s: aligned store %s (cached)", t, s->tpaths[i]);
    }
    if (st == FK_OK) st = fk_teacher_set_open((const char *const *)s->tpaths, j->teachers.n, &j->fo, &s->tr, &s->tset);
    if (st == FK_OK)
        st = fk_teacher_set_check_model(s->tset, s->m.cfg.vocab_size, j->init ? j->init : j->resume_from ? j->resume_from : "new model");
    if (st == FK_OK) o->teacher = fk_teacher_set_teacher(s->tset, j->lambda);
    return st;
}

// ------------------------------------------------------------------ metrics

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

// A step's metrics line (cJSON builds it: numbers formatted, the checkpoint path escaped);
// malloc'd, NULL when out of memory.
static char *step_line(const fk_train_event *ev, const fk_teacher_set *teachers, const fk_path_list *names) {
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
    if (teachers) {  // which teacher the fusion followed so far, in shares of positions
        double sh[FK_PATH_LIST_MAX];
        int n = fk_teacher_set_size(teachers);
        fk_teacher_set_shares(teachers, sh);
        cJSON_AddItemToObject(j, "teacher_shares", cJSON_CreateDoubleArray(sh, n));
        // the teachers in the same order, by their store's file name without its extension and
        // fingerprint ("m.Q4_1-11efe70783e5ad5d.fkd": "m.Q4_1"; a model's name may hold dots)
        cJSON *tn = cJSON_AddArrayToObject(j, "teachers");
        for (int i = 0; names && i < n && i < names->n; i++) {
            const char *b = strrchr(names->v[i], '/');
            b = b ? b + 1 : names->v[i];
            size_t len = strlen(b);
            const char *dot = memrchr(b, '.', len);
            if (dot && dot != b) len = (size_t)(dot - b);  // the extension
            const char *dash = memrchr(b, '-', len);
            if (dash && len - (size_t)(dash - b) == 17 && strspn(dash + 1, "0123456789abcdef") >= 16) len = (size_t)(dash - b);
            char name[256];
            snprintf(name, sizeof name, "%.*s", (int)(len < 255 ? len : 255), b);
            cJSON_AddItemToArray(tn, cJSON_CreateString(name));
        }
    }
    char *line = j ? cJSON_PrintUnformatted(j) : NULL;
    cJSON_Delete(j);
    return line;
}

typedef struct {
    FILE *metrics;
    const fk_job_hooks *h;
    const fk_teacher_set *teachers;
    const fk_path_list *names;  // the teachers' stores, for the labels
} step_ctx;

static void on_step(const fk_train_event *ev, void *user) {
    step_ctx *c = user;
    if (fk_dp_rank() != 0) return;  // under MPI, rank 0 speaks for all
    char *line = ev->log ? step_line(ev, c->teachers, c->names) : NULL;
    if (line && c->metrics) {
        fwrite(line, 1, strlen(line), c->metrics);
        fwrite("\n", 1, 1, c->metrics);
        fflush(c->metrics);
    }
    if (c->h->step) c->h->step(ev, line, c->h->user);
    free(line);
}

// The run itself, with metrics.jsonl kept to one line per step.
static fk_status train_with_metrics(const fk_train_job *j, const fk_job_hooks *h, job_state *s, const fk_train_opts *o) {
    char cfg[512];
    fk_config_describe(&s->m.cfg, cfg, sizeof cfg);
    bool lead = fk_dp_rank() == 0;
    if (lead) {
        fk_job_note(h, "model: %s", cfg);
        fk_job_note(h, "parameters: %lld; training tokens: %lld; held-out tokens: %lld; data-parallel ranks: %d",
                    (long long)fk_model_num_params(&s->m), (long long)s->tr.n, (long long)s->va.n, fk_dp_size());
        if (o->precision != FK_PRECISION_FP32) {  // which path bf16 or auto takes here (fk_train sets it for the run)
            fk_precision before = fk_matmul_precision();
            fk_matmul_set_precision(o->precision);
            fk_job_note(h, "matrix products: %s%s", fk_matmul_backend(),
                        o->precision == FK_PRECISION_AUTO ? " (--precision auto)" : "");
            fk_matmul_set_precision(before);
        }
    }
    char *mp = fk_path_join(j->out, "metrics.jsonl");
    fk_status st = !mp ? fk_error(FK_ERR_NOMEM, "out of memory") : lead ? trim_metrics(mp, s->opt.t) : FK_OK;
    step_ctx c = {lead && st == FK_OK ? fopen(mp, "a") : NULL, h, s->tset, &j->teachers};
    free(mp);
    if (st == FK_OK) st = fk_train(&s->m, &s->opt, &s->tr, s->va.n > 1 ? &s->va : NULL, o, j->out, on_step, &c);
    if (c.metrics) fclose(c.metrics);
    if (st == FK_OK && s->opt.t >= o->steps && lead) fk_job_note(h, "saved %s (peak RSS %.0f MB)", j->out, fk_peak_rss_mb());
    return st;
}

fk_status fk_train_job_run(const fk_train_job *j, const fk_job_hooks *h, fk_train_job_result *r) {
    static const fk_job_hooks none;
    if (!h) h = &none;
    memset(r, 0, sizeof *r);
    fk_status st = fk_train_job_check(j);
    if (st != FK_OK) { r->refused = true; return st; }
    fk_train_opts o = j->o;
    o.optim.total_steps = o.steps;
    if (o.optim.warmup < 0) o.optim.warmup = o.steps / 20;
    job_state s;
    memset(&s, 0, sizeof s);
    // a stop request while loading, resuming or aligning ends the job before its first step
#define STOPPED() (h->stop && *h->stop)
    st = load_data(j, h, &s);
    o.tokenizer = s.tok;
    if (st == FK_OK && !STOPPED()) st = resuming(j) ? resume_run(j, h, &s, &o) : fresh_run(j, &s, &o);
    if (st == FK_OK && s.tok && s.m.n_params > 0)  // a model loaded: its rows past the tokens are padding
        st = fk_model_set_vocab_real(&s.m, fk_model_tokens_of(s.tok));
    if (st == FK_OK && !STOPPED()) st = fk_mkdir_p(j->out);
    if (st == FK_OK && !STOPPED() && j->teachers.n > 0) st = open_teachers(j, h, &s, &o);
    r->before_training = st == FK_OK && STOPPED();
#undef STOPPED
    // not part of a checkpoint's options: the stop request and the test hook, as the job gives them
    o.stop = h->stop;
    o.fault_hook = j->o.fault_hook;
    o.fault_ctx = j->o.fault_ctx;
    if (st == FK_OK && !r->before_training) st = train_with_metrics(j, h, &s, &o);
    r->step = s.opt.t;
    r->steps = o.steps;
    if (s.m.n_params > 0) {
        fk_model_flops_per_token(&s.m, o.seq, NULL, &r->train_flops_per_token);
        r->tokens_per_step = (int64_t)o.batch * o.seq * o.grad_accum * fk_dp_size();
    }
    r->stopped = st == FK_OK && (r->before_training || s.opt.t < o.steps);
    job_state_free(&s);
    return st;
}
