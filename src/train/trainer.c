// The training loop, held-out evaluation and checkpoints.
#include "fusekit/eval.h"
#include "fusekit/hf.h"
#include "fusekit/train.h"
#include "fusekit/gpu.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "base/dist.h"
#ifdef FK_WITH_MPI
#include <mpi.h>
#endif

void fk_train_defaults(fk_train_opts *o) {
    memset(o, 0, sizeof *o);
    o->steps = 1000;
    o->batch = 8;
    o->seq = 256;
    o->grad_accum = 1;
    fk_optim_defaults(&o->optim);
    o->seed = 1337;
    o->eval_every = 100;
    o->eval_tokens = 65536;
    o->save_every = 0;
    o->keep = 2;
    o->log_every = 10;
}

// ------------------------------------------------------------------ batches

// The rows of micro-batch `micro` of step `step` depend only on (seed, step, micro), so a
// resumed run sees exactly the batches an uninterrupted one would.
static void sample_batch(const fk_token_data *d, const fk_train_opts *o, int64_t step, int micro, int32_t *x, int32_t *y,
                         int64_t *offs) {
    fk_rng r;
    fk_rng_seed(&r, fk_hash64(o->seed) ^ fk_hash64((uint64_t)step * 1000003u + (uint64_t)micro));
    int64_t span = d->n - o->seq - 1;
    for (int b = 0; b < o->batch; b++) {
        int64_t off = span > 0 ? (int64_t)fk_rng_below(&r, (uint64_t)span + 1) : 0;
        offs[b] = off;
        for (int t = 0; t < o->seq; t++) {
            x[b * o->seq + t] = d->ids[off + t];
            y[b * o->seq + t] = d->ids[off + t + 1];
        }
    }
}

// Held-out evaluation is fk_eval_data (fusekit/eval.h).

// ------------------------------------------------------------------ checkpoints

// The options a checkpoint records (trainer_state.json's "options"), one row a key in the
// order written: the field, its kind and the range a read accepts. The seed is a string (a
// JSON number, a double, cannot hold every 64-bit seed).
typedef enum { OPT_I64, OPT_INT, OPT_F32, OPT_SEED } opt_kind;
typedef struct { const char *key; opt_kind kind; size_t off; double lo, hi; } opt_row;
#define JSON_INT_MAX 9007199254740992.0  // 2^53: what a JSON number holds exactly
#define ROW(key, kind, field, lo, hi) {key, kind, offsetof(fk_train_opts, field), lo, hi}
static const opt_row opt_rows[] = {
    ROW("steps", OPT_I64, steps, 0, JSON_INT_MAX),
    ROW("batch", OPT_INT, batch, 1, INT32_MAX),
    ROW("seq", OPT_INT, seq, 1, INT32_MAX),
    ROW("grad_accum", OPT_INT, grad_accum, 1, INT32_MAX),
    ROW("seed", OPT_SEED, seed, 0, 0),
    ROW("eval_every", OPT_I64, eval_every, 0, JSON_INT_MAX),
    ROW("eval_tokens", OPT_I64, eval_tokens, 0, JSON_INT_MAX),
    ROW("save_every", OPT_I64, save_every, 0, JSON_INT_MAX),
    ROW("keep", OPT_INT, keep, 0, INT32_MAX),
    ROW("log_every", OPT_I64, log_every, 0, JSON_INT_MAX),
    ROW("lr", OPT_F32, optim.lr, 0, 1e3),
    ROW("min_lr_frac", OPT_F32, optim.min_lr_frac, 0, 1),
    ROW("beta1", OPT_F32, optim.beta1, 0, 1),
    ROW("beta2", OPT_F32, optim.beta2, 0, 1),
    ROW("eps", OPT_F32, optim.eps, 0, 1),
    ROW("weight_decay", OPT_F32, optim.weight_decay, 0, 1e3),
    ROW("clip", OPT_F32, optim.clip, 0, 1e30),
    ROW("warmup", OPT_I64, optim.warmup, 0, JSON_INT_MAX),
    ROW("schedule_steps", OPT_I64, optim.total_steps, 0, JSON_INT_MAX),  // absent: steps
};
#undef ROW

static cJSON *opts_to_json(const fk_train_opts *o) {
    cJSON *j = cJSON_CreateObject();
    // the precision only when it is not fp32: an fp32 run's trainer_state.json is as it was
    if (fk_precision_resolve(o->precision) == FK_PRECISION_BF16) cJSON_AddStringToObject(j, "precision", "bf16");
    if (o->optim.moments == FK_MOMENTS_BF16) cJSON_AddStringToObject(j, "optim_state", "bf16");  // absent: f32
    for (size_t i = 0; i < sizeof opt_rows / sizeof opt_rows[0]; i++) {
        const opt_row *r = &opt_rows[i];
        const char *f = (const char *)o + r->off;
        char seed[32];
        switch (r->kind) {
        case OPT_I64: cJSON_AddNumberToObject(j, r->key, (double)*(const int64_t *)f); break;
        case OPT_INT: cJSON_AddNumberToObject(j, r->key, *(const int *)f); break;
        case OPT_F32: cJSON_AddNumberToObject(j, r->key, *(const float *)f); break;
        case OPT_SEED:
            snprintf(seed, sizeof seed, "%llu", (unsigned long long)*(const uint64_t *)f);
            cJSON_AddStringToObject(j, r->key, seed);
            break;
        }
    }
    return j;
}

// A key of the options object, when there: an integer in [lo, hi] (checked before the cast).
static fk_status jint(const cJSON *j, const char *path, const char *k, int64_t lo, int64_t hi, int64_t *v) {
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(j, k);
    if (!x) return FK_OK;
    double d = cJSON_IsNumber(x) ? x->valuedouble : NAN;
    if (!(d >= (double)lo && d <= (double)hi) || d != floor(d))
        return fk_error(FK_ERR_FORMAT, "%s: key \"%s\" must be an integer in [%lld, %lld]", path, k, (long long)lo, (long long)hi);
    *v = (int64_t)d;
    return FK_OK;
}

// One row's key of the options object, when there, range-checked into its field.
static fk_status opt_from_json(const cJSON *j, const char *path, const opt_row *r, fk_train_opts *o) {
    char *f = (char *)o + r->off;
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(j, r->key);
    if (!x) return FK_OK;
    if (r->kind == OPT_SEED) {
        if (cJSON_IsString(x)) *(uint64_t *)f = strtoull(x->valuestring, NULL, 10);
        return FK_OK;
    }
    if (r->kind == OPT_F32) {
        double d = cJSON_IsNumber(x) ? x->valuedouble : NAN;
        if (!(d >= r->lo && d <= r->hi)) return fk_error(FK_ERR_FORMAT, "%s: key \"%s\" must be a number in [%g, %g]", path, r->key, r->lo, r->hi);
        *(float *)f = (float)d;
        return FK_OK;
    }
    int64_t v = r->kind == OPT_INT ? *(int *)f : *(int64_t *)f;
    FK_TRY(jint(j, path, r->key, (int64_t)r->lo, (int64_t)r->hi, &v));
    if (r->kind == OPT_INT) *(int *)f = (int)v;
    else *(int64_t *)f = v;
    return FK_OK;
}

// The options a checkpoint was made with (trainer_state.json's "options"); every value range-checked.
static fk_status opts_from_json(const cJSON *j, const char *path, fk_train_opts *o) {
    for (size_t i = 0; i < sizeof opt_rows / sizeof opt_rows[0]; i++) FK_TRY(opt_from_json(j, path, &opt_rows[i], o));
    if (!cJSON_GetObjectItemCaseSensitive(j, "schedule_steps")) o->optim.total_steps = o->steps;
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(j, "precision");  // absent: fp32
    o->precision = FK_PRECISION_FP32;
    if (p && !(cJSON_IsString(p) && fk_precision_parse(p->valuestring, &o->precision) == FK_OK))
        return fk_error(FK_ERR_FORMAT, "%s: key \"precision\" must be \"fp32\" or \"bf16\"", path);
    const cJSON *ms = cJSON_GetObjectItemCaseSensitive(j, "optim_state");  // absent: f32
    fk_moments mo = FK_MOMENTS_F32;
    if (ms && !(cJSON_IsString(ms) && fk_moments_parse(ms->valuestring, &mo) == FK_OK))
        return fk_error(FK_ERR_FORMAT, "%s: key \"optim_state\" must be \"f32\" or \"bf16\"", path);
    o->optim.moments = mo;
    return FK_OK;
}

static void remove_dir(const char *dir);

// "<path><suffix>" in a malloc'd string.
static char *path_suffix(const char *path, const char *suffix) {
    size_t n = strlen(path) + strlen(suffix) + 1;
    char *p = malloc(n);
    if (p) snprintf(p, n, "%s%s", path, suffix);
    return p;
}

// Renames the complete temporary folder tmp to dir; an older folder at dir goes aside as
// "<dir>.old" first and is removed after (remove_dir: trainer_state.json first).
static fk_status commit_dir(const char *tmp, const char *dir) {
    char *old = path_suffix(dir, ".old");
    if (!old) return fk_error(FK_ERR_NOMEM, "out of memory");
    fk_status st = fk_dir_replace(tmp, dir, old, remove_dir);
    free(old);
    return st;
}

// optimizer.safetensors's entries: exp_avg.<name> and exp_avg_sq.<name> of every parameter, in
// the moments' dtype; data pointers into opt when it holds every moment (else NULL). e and
// names hold 2 n_params entries.
static void moment_entries(const fk_model *m, const fk_adamw *opt, fk_st_entry *e, char (*names)[80]) {
    bool all = opt->lo == 0 && opt->hi == opt->n;
    for (int i = 0; i < m->n_params; i++) {
        const fk_param *p = &m->params[i];
        for (int k = 0; k < 2; k++) {
            fk_st_entry *x = &e[2 * i + k];
            snprintf(names[2 * i + k], sizeof names[0], "%s.%s", k ? "exp_avg_sq" : "exp_avg", p->name);
            x->name = names[2 * i + k];
            x->dtype = opt->m16 ? FK_DT_BF16 : FK_DT_F32;  // as the run keeps them
            x->ndim = p->ndim;
            x->shape[0] = p->shape[0];
            x->shape[1] = p->shape[1];
            if (!all) x->data = NULL;
            else if (opt->m16) x->data = (k ? opt->v16 : opt->m16) + p->offset;
            else x->data = (k ? opt->v : opt->m) + p->offset;
        }
    }
}

// Writes optimizer.safetensors at path (a ZeRO-1 run's rank 0 streams it from the ranks).
typedef fk_status (*opt_file_fn)(const char *path, void *ctx);

static fk_status checkpoint_save(const char *dir, const fk_model *m, const fk_adamw *opt, const fk_train_opts *o, opt_file_fn opt_file,
                                 void *ctx);

fk_status fk_checkpoint_save(const char *dir, const fk_model *m, const fk_adamw *opt, const fk_train_opts *o) {
    if (opt->lo != 0 || opt->hi != opt->n)
        return fk_error(FK_ERR_ARG, "checkpoint %s: the optimizer holds a share of the moments (ZeRO-1), not all of them", dir);
    return checkpoint_save(dir, m, opt, o, NULL, NULL);
}

static fk_status checkpoint_save(const char *dir, const fk_model *m, const fk_adamw *opt, const fk_train_opts *o, opt_file_fn opt_file,
                                 void *ctx) {
    char *final_dir = strdup(dir), *tmp = path_suffix(dir, ".tmp");
    if (!final_dir || !tmp) { free(final_dir); free(tmp); return fk_error(FK_ERR_NOMEM, "out of memory"); }
    dir = tmp;  // everything below is written into the temporary folder
    remove_dir(tmp);  // a stale one from a killed run
    fk_status st0 = fk_mkdir_p(tmp);
    if (st0 != FK_OK) { free(final_dir); free(tmp); return st0; }
    char *state_path = fk_path_join(dir, "trainer_state.json");
    fk_status st = fk_hf_save(m, dir, FK_DT_F32);
    if (st == FK_OK && o->tokenizer) st = fk_tok_save_hf(o->tokenizer, dir);
    if (st == FK_OK && o->fault_hook) o->fault_hook("checkpoint-write", opt->t, o->fault_ctx);
    if (st == FK_OK) {
        char *opath = fk_path_join(dir, "optimizer.safetensors");
        if (opt_file) st = opath ? opt_file(opath, ctx) : fk_error(FK_ERR_NOMEM, "out of memory");
        else {
            fk_st_entry *e = calloc((size_t)(2 * m->n_params), sizeof *e);
            char (*names)[80] = calloc((size_t)(2 * m->n_params), sizeof *names);
            if (e && names && opath) {
                moment_entries(m, opt, e, names);
                st = fk_st_write(opath, e, 2 * m->n_params, NULL);
            } else st = fk_error(FK_ERR_NOMEM, "out of memory");
            free(e); free(names);
        }
        free(opath);
    }
    if (st == FK_OK) {
        cJSON *j = cJSON_CreateObject();
        cJSON_AddNumberToObject(j, "format", 1);
        cJSON_AddNumberToObject(j, "step", (double)opt->t);
        cJSON_AddItemToObject(j, "options", opts_to_json(o));
        char *s = cJSON_Print(j);
        cJSON_Delete(j);
        st = s ? fk_write_file_atomic(state_path, s, strlen(s)) : fk_error(FK_ERR_NOMEM, "out of memory writing %s", state_path);
        free(s);
    }
    free(state_path);
    if (st == FK_OK) st = commit_dir(tmp, final_dir);
    if (st != FK_OK) {
        remove_dir(tmp);
        fk_error_context(st, "checkpoint %s", final_dir);
    }
    free(tmp);
    free(final_dir);
    return st;
}

fk_status fk_checkpoint_load(const char *dir, fk_model *m, fk_adamw *opt, fk_train_opts *o) {
    char *state_path = fk_path_join(dir, "trainer_state.json"), *json = NULL;
    fk_status st = fk_read_file(state_path, &json, NULL);
    if (st != FK_OK) { free(state_path); return fk_error_context(st, "%s is not a complete checkpoint", dir); }
    cJSON *j = NULL;
    st = fk_json_parse(state_path, json, strlen(json), &j);
    free(json);
    int64_t t = -1;
    if (st == FK_OK) st = jint(j, state_path, "step", 0, (int64_t)1 << 53, &t);
    if (st == FK_OK && t < 0) st = fk_error(FK_ERR_FORMAT, "%s: missing key \"step\"", state_path);
    if (st == FK_OK) st = opts_from_json(cJSON_GetObjectItemCaseSensitive(j, "options"), state_path, o);
    cJSON_Delete(j);
    free(state_path);
    FK_TRY(st);
    FK_TRY(fk_hf_load(m, dir));
    st = fk_adamw_init(opt, m, &o->optim);
    fk_safetensors sf;
    char *opath = fk_path_join(dir, "optimizer.safetensors");
    if (st == FK_OK) st = fk_st_open(&sf, opath);
    free(opath);
    if (st != FK_OK) { fk_adamw_free(opt); fk_model_free(m); return st; }
    for (int i = 0; i < m->n_params && st == FK_OK; i++) {
        const fk_param *p = &m->params[i];
        for (int k = 0; k < 2 && st == FK_OK; k++) {
            char name[80];
            snprintf(name, sizeof name, "%s.%s", k ? "exp_avg_sq" : "exp_avg", p->name);
            const fk_st_tensor *x = fk_st_find(&sf, name);
            fk_dtype want = opt->m16 ? FK_DT_BF16 : FK_DT_F32;  // trainer_state.json's optim_state
            if (!x || x->numel != p->numel || x->dtype != want)
                st = fk_error(FK_ERR_FORMAT, "%s: optimizer tensor %s is missing, has the wrong shape or is not %s as "
                              "trainer_state.json's optim_state says", sf.path, name, opt->m16 ? "BF16" : "F32");
            else if (opt->m16) memcpy((k ? opt->v16 : opt->m16) + p->offset, x->data, (size_t)p->numel * sizeof(uint16_t));
            else memcpy((k ? opt->v : opt->m) + p->offset, x->data, (size_t)p->numel * sizeof(float));
        }
    }
    fk_st_close(&sf);
    if (st != FK_OK) { fk_adamw_free(opt); fk_model_free(m); return st; }
    opt->t = t;
    return FK_OK;
}

// Lists checkpoint-<step> folders that hold trainer_state.json; returns the count, the
// steps sorted ascending in *steps (malloc'd).
static int list_checkpoints(const char *out_dir, int64_t **steps) {
    *steps = NULL;
    DIR *d = opendir(out_dir);
    if (!d) return 0;
    int n = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        long long s;
        char tail;
        if (sscanf(e->d_name, "checkpoint-%lld%c", &s, &tail) != 1) continue;
        char *cp = fk_path_join(out_dir, e->d_name), *sp = fk_path_join(cp, "trainer_state.json");
        bool ok = fk_path_exists(sp);
        free(cp); free(sp);
        if (!ok) continue;
        if (n == cap) { cap = cap ? 2 * cap : 8; *steps = realloc(*steps, (size_t)cap * sizeof **steps); }
        (*steps)[n++] = s;
    }
    closedir(d);
    for (int i = 1; i < n; i++)
        for (int k = i; k > 0 && (*steps)[k - 1] > (*steps)[k]; k--) { int64_t t = (*steps)[k]; (*steps)[k] = (*steps)[k - 1]; (*steps)[k - 1] = t; }
    return n;
}

static char *checkpoint_path(const char *out_dir, int64_t step) {
    char name[64];
    snprintf(name, sizeof name, "checkpoint-%lld", (long long)step);
    return fk_path_join(out_dir, name);
}

fk_status fk_checkpoint_latest(const char *out_dir, char **path) {
    int64_t *steps;
    int n = list_checkpoints(out_dir, &steps);
    if (n == 0) { free(steps); return fk_error(FK_ERR_IO, "no complete checkpoint-<step> folder under %s", out_dir); }
    *path = checkpoint_path(out_dir, steps[n - 1]);
    free(steps);
    return FK_OK;
}

static void remove_dir(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    char *state = fk_path_join(dir, "trainer_state.json");
    unlink(state);  // first, so a half-removed folder never looks complete
    free(state);
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.' && (e->d_name[1] == 0 || (e->d_name[1] == '.' && e->d_name[2] == 0))) continue;
        char *p = fk_path_join(dir, e->d_name);
        unlink(p);
        free(p);
    }
    closedir(d);
    rmdir(dir);
}

// Keeps the newest `keep` checkpoints at or below `current` (the one just written among them);
// checkpoints of higher steps, left by an earlier longer run, are not this run's to delete.
static void prune_checkpoints(const char *out_dir, int keep, int64_t current) {
    int64_t *steps;
    int n = list_checkpoints(out_dir, &steps);
    while (n > 0 && steps[n - 1] > current) n--;
    for (int i = 0; i < n - keep; i++) {
        // renamed aside first, so a kill while removing never leaves part of one under its name
        char *p = checkpoint_path(out_dir, steps[i]), *del = path_suffix(p, ".del");
        if (del && rename(p, del) == 0) remove_dir(del);
        else remove_dir(p);
        free(p); free(del);
    }
    free(steps);
}

// Temporaries a killed run left under out_dir: checkpoint-<step>.tmp (being written),
// checkpoint-<step>.old (being replaced) and checkpoint-<step>.del (being removed, always
// removed), and files "<name>.tmp.<pid>" of an atomic write. A .tmp or .old that is complete (trainer_state.json, written
// last, present) while checkpoint-<step> is missing was killed between the two renames and
// becomes checkpoint-<step>; the rest are removed.
static void clean_stale(const char *out_dir) {
    DIR *d = opendir(out_dir);
    if (!d) return;
    char **names = NULL;
    int n = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        long long s;
        int end = 0;
        // a file an atomic write (fk_afile: "<name>.tmp.<pid>") left behind when killed
        const char *t = strstr(e->d_name, ".tmp.");
        if (t && t[5] && strspn(t + 5, "0123456789") == strlen(t + 5)) {
            char *p = fk_path_join(out_dir, e->d_name);
            unlink(p);
            free(p);
            continue;
        }
        if (sscanf(e->d_name, "checkpoint-%lld%n", &s, &end) != 1 || end <= 0) continue;
        const char *tail = e->d_name + end;
        if (strcmp(tail, ".tmp") != 0 && strcmp(tail, ".old") != 0 && strcmp(tail, ".del") != 0) continue;
        if (n == cap) {
            cap = cap ? 2 * cap : 8;
            char **nn = realloc(names, (size_t)cap * sizeof *names);
            if (!nn) break;
            names = nn;
        }
        if (!(names[n] = strdup(e->d_name))) break;
        n++;
    }
    closedir(d);
    // complete .tmp copies first: when a kill left both the new (.tmp) and the replaced (.old)
    // copy of one step, the new one takes the final name
    for (int pass = 0; pass < 2; pass++)
        for (int i = 0; i < n; i++) {
            bool tmp = strcmp(names[i] + strlen(names[i]) - 4, ".tmp") == 0;
            if (tmp != (pass == 0)) continue;
            char *p = fk_path_join(out_dir, names[i]), *sp = p ? fk_path_join(p, "trainer_state.json") : NULL;
            char *fin = p ? strndup(p, strlen(p) - 4) : NULL;
            bool del = p && strcmp(p + strlen(p) - 4, ".del") == 0;
            if (!del && fin && sp && fk_path_exists(sp) && !fk_path_exists(fin) && rename(p, fin) == 0) fk_fsync_parent(fin);
            else if (p) remove_dir(p);
            free(p); free(sp); free(fin);
        }
    for (int i = 0; i < n; i++) free(names[i]);
    free(names);
}

// ------------------------------------------------------------------ data parallelism (MPI)
// With an MPI build run under mpirun, each rank trains on its own micro-batches and the
// gradients are averaged with an all-reduce, so every rank holds the same weights; rank 0
// alone writes files. Without MPI (or without MPI_Init) this is one rank.

int fk_dp_rank(void) { return fk_dist_rank(); }
int fk_dp_size(void) { return fk_dist_size(); }

// This process's rank and the number of ranks; 0 and 1 without MPI or before MPI_Init.
static void dp_query(int *rank, int *size) {
    *rank = fk_dist_rank();
    *size = fk_dist_size();
}

// All ranks learn whether any failed, so none waits forever in a collective.
static fk_status dp_agree(fk_status st, int size) { return size > 1 ? fk_dist_agree(st) : st; }

// True on every rank when it is true on any.
static bool dp_any(bool x, int size) { return size > 1 ? fk_dist_any(x) : x; }

// Gradient buckets: during the backward of a step's last micro-batch, each layer's gradients
// (one run of the arena, fk_model_layer_range) start their all-reduce as soon as the layer is
// done (MPI_Iallreduce on a communicator of their own, progressed at every later layer), so the
// reduction overlaps the backward of the layers below; dp_average reduces the rest (embeddings,
// final norm, head) and waits for the buckets. FUSEKIT_MPI_BUCKETS=0: one reduction after the
// backward, as before (for comparison).
typedef struct {
    fk_model *m;
#ifdef FK_WITH_MPI
    MPI_Comm comm;
    MPI_Request *req;
#endif
    int64_t *lo, *hi;      // the buckets started this step, n of them
    int64_t *layer;        // 2 per layer: its arena run [lo, hi), found once (lo -1: not one run)
    int n, cap;
} dp_buckets;

#ifdef FK_WITH_MPI
static void on_layer_grads(void *user, int l) {
    dp_buckets *b = user;
    int64_t lo = b->layer[2 * l], hi = b->layer[2 * l + 1];
    if (b->n == b->cap || lo < 0 || hi - lo > (1 << 30)) return;  // reduced with the rest
    MPI_Iallreduce(MPI_IN_PLACE, b->m->g + lo, (int)(hi - lo), MPI_FLOAT, MPI_SUM, b->comm, &b->req[b->n]);
    b->lo[b->n] = lo, b->hi[b->n] = hi;
    b->n++;
    int done;
    MPI_Testall(b->n, b->req, &done, MPI_STATUSES_IGNORE);  // moves the started reductions along
}
#endif

// Ready for a run of `size` ranks (no buckets with one rank, or FUSEKIT_MPI_BUCKETS=0, or out of
// memory: then one reduction after the backward). Collective.
static void dp_buckets_init(dp_buckets *b, fk_model *m, int size) {
    memset(b, 0, sizeof *b);
    b->m = m;
#ifdef FK_WITH_MPI
    const char *e = getenv("FUSEKIT_MPI_BUCKETS");
    if (size < 2 || (e && strcmp(e, "0") == 0)) return;
    b->cap = (int)m->cfg.n_layer;
    b->req = malloc((size_t)b->cap * sizeof *b->req);
    b->lo = malloc((size_t)b->cap * sizeof *b->lo);
    b->hi = malloc((size_t)b->cap * sizeof *b->hi);
    b->layer = malloc(2 * (size_t)b->cap * sizeof *b->layer);
    if (!b->req || !b->lo || !b->hi || !b->layer) {  // one reduction after the backward then
        free(b->req); free(b->lo); free(b->hi); free(b->layer);
        memset(b, 0, sizeof *b);
        b->m = m;
    }
    for (int l = 0; l < b->cap; l++)
        if (!fk_model_layer_range(m, l, &b->layer[2 * l], &b->layer[2 * l + 1])) b->layer[2 * l] = -1;
    MPI_Comm_dup(MPI_COMM_WORLD, &b->comm);
#else
    (void)size;
#endif
}

static void dp_buckets_free(dp_buckets *b) {
#ifdef FK_WITH_MPI
    if (b->comm != MPI_COMM_NULL && b->comm != 0) MPI_Comm_free(&b->comm);
    free(b->req);
#endif
    free(b->lo); free(b->hi); free(b->layer);
    memset(b, 0, sizeof *b);
}

#ifdef FK_WITH_MPI
// Reduces the arena entries [a, z) in pieces (MPI counts are int).
static void dp_reduce_range(float *g, int64_t a, int64_t z) {
    for (int64_t off = a; off < z; off += 1 << 30) {
        int64_t cnt = z - off < (1 << 30) ? z - off : (1 << 30);
        MPI_Allreduce(MPI_IN_PLACE, g + off, (int)cnt, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
    }
}
#endif

// Averages gradients and the step's loss over ranks: what no bucket holds reduced now, then the
// buckets waited for.
static void dp_average(fk_model *m, double *loss_sum, int size, dp_buckets *b) {
#ifdef FK_WITH_MPI
    if (size > 1) {
        // what no bucket holds, in arena order (the buckets sorted by position; layer ranges are disjoint)
        for (int i = 1; i < b->n; i++)
            for (int j = i; j > 0 && b->lo[j] < b->lo[j - 1]; j--) {
                int64_t t = b->lo[j]; b->lo[j] = b->lo[j - 1]; b->lo[j - 1] = t;
                t = b->hi[j]; b->hi[j] = b->hi[j - 1]; b->hi[j - 1] = t;
            }
        int64_t at = 0;
        for (int k = 0; k <= b->n; k++) {
            int64_t lo = k < b->n ? b->lo[k] : m->n_floats, hi = k < b->n ? b->hi[k] : m->n_floats;
            dp_reduce_range(m->g, at, lo);
            at = hi;
        }
        if (b->n > 0) MPI_Waitall(b->n, b->req, MPI_STATUSES_IGNORE);
        b->n = 0;
        MPI_Allreduce(MPI_IN_PLACE, loss_sum, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
        float inv = 1.0f / (float)size;
        for (int64_t i = 0; i < m->n_floats; i++) m->g[i] *= inv;
        *loss_sum /= size;
    }
#else
    (void)m; (void)loss_sum; (void)size; (void)b;
#endif
}

// ZeRO-1: whether opt holds one rank's share of the moments.
static bool sharded(const fk_adamw *opt) { return opt->lo != 0 || opt->hi != opt->n; }

// After the update of each rank's share of the weights, every rank's share to every rank.
static void zero1_exchange(fk_model *m, int size) {
    for (int r = 0; r < size; r++) {
        int64_t lo, hi;
        fk_dist_range_of(m->n_floats, r, &lo, &hi);
        fk_dist_bcast_bytes(m->w + lo, (size_t)(hi - lo) * sizeof(float), r);
    }
}

// ZeRO-1's optimizer file: rank 0 writes the header, then every moment tensor in the file's order
// as the ranks holding its entries send them, in pieces of at most Z1_PIECE bytes, so no rank
// holds more than its share and one piece. Every rank calls zero1_stream (f and buf on rank 0
// only); rank 0 keeps receiving after a write error, so no rank waits for ever.
#define Z1_PIECE ((size_t)64 << 20)
static fk_status zero1_stream(const fk_model *m, const fk_adamw *opt, int rank, int size, FILE *f, char *buf) {
    bool half = opt->m16 != NULL, ok = true;
    size_t each = half ? sizeof(uint16_t) : sizeof(float);
    for (int i = 0; i < m->n_params; i++)
        for (int k = 0; k < 2; k++) {
            const fk_param *p = &m->params[i];
            const char *mine = k ? (half ? (const char *)opt->v16 : (const char *)opt->v) : (half ? (const char *)opt->m16 : (const char *)opt->m);
            for (int r = 0; r < size; r++) {
                int64_t lo, hi;
                fk_dist_range_of(opt->n, r, &lo, &hi);
                int64_t a = p->offset > lo ? p->offset : lo, b = p->offset + p->numel < hi ? p->offset + p->numel : hi;
                if (a >= b) continue;
                size_t bytes = (size_t)(b - a) * each;
                const char *src = r == rank ? mine + (size_t)(a - opt->lo) * each : NULL;
                for (size_t o = 0; o < bytes; o += Z1_PIECE) {
                    size_t n = bytes - o < Z1_PIECE ? bytes - o : Z1_PIECE;
                    if (rank == 0) {
                        if (!src) fk_dist_recv(r, buf, n);
                        if (ok && (!f || fwrite(src ? src + o : buf, 1, n, f) != n)) ok = false;
                    } else if (rank == r) fk_dist_send(0, src + o, n);
                }
            }
        }
    return ok ? FK_OK : fk_error(FK_ERR_IO, "cannot write the optimizer's moments (disk full?)");
}

// Rank 0's optimizer file under ZeRO-1 (checkpoint_save's opt_file): it tells the others to
// send (or, failing to start, not to) by a broadcast.
typedef struct { const fk_model *m; const fk_adamw *opt; int size; bool called; } zero1_file_ctx;
static fk_status zero1_file(const char *path, void *ctx) {
    zero1_file_ctx *z = ctx;
    z->called = true;
    int n = 2 * z->m->n_params;
    fk_st_entry *e = calloc((size_t)n, sizeof *e);
    char (*names)[80] = calloc((size_t)n, sizeof *names), *hdr = NULL, *buf = malloc(Z1_PIECE);
    size_t len = 0;
    fk_status st = e && names && buf ? FK_OK : fk_error(FK_ERR_NOMEM, "out of memory");
    if (st == FK_OK) {
        moment_entries(z->m, z->opt, e, names);
        st = fk_st_header(e, n, NULL, &hdr, &len);
    }
    FILE *f = st == FK_OK ? fopen(path, "wb") : NULL;
    if (st == FK_OK && !f) st = fk_error(FK_ERR_IO, "cannot create %s", path);
    if (st == FK_OK && fwrite(hdr, 1, len, f) != len) st = fk_error(FK_ERR_IO, "cannot write %s", path);
    int64_t go = st == FK_OK;
    fk_dist_bcast_i64(&go, 1);
    if (go) st = zero1_stream(z->m, z->opt, 0, z->size, f, buf);
    if (f && (fflush(f) != 0 || fsync(fileno(f)) != 0) && st == FK_OK) st = fk_error(FK_ERR_IO, "cannot write %s", path);
    if (f && fclose(f) != 0 && st == FK_OK) st = fk_error(FK_ERR_IO, "cannot write %s", path);
    free(e); free(names); free(hdr); free(buf);
    return st == FK_OK ? FK_OK : fk_error_context(st, "%s", path);
}

// A checkpoint of a ZeRO-1 run: rank 0 writes it, the moments streamed from every rank. Collective.
static fk_status zero1_checkpoint(const char *ck, const fk_model *m, const fk_adamw *opt, const fk_train_opts *o, int rank, int size) {
    if (rank == 0) {
        zero1_file_ctx z = {m, opt, size, false};
        fk_status st = checkpoint_save(ck, m, opt, o, zero1_file, &z);
        if (!z.called) {  // it failed before the optimizer file: the others must not send
            int64_t go = 0;
            fk_dist_bcast_i64(&go, 1);
        }
        return st;
    }
    int64_t go = 0;
    fk_dist_bcast_i64(&go, 1);
    return go ? zero1_stream(m, opt, rank, size, NULL, NULL) : FK_OK;
}

// ------------------------------------------------------------------ the loop

// The options and data fk_train refuses, with the reason.
static fk_status check_train_args(const fk_model *m, const fk_token_data *train, const fk_train_opts *o) {
    if (o->batch < 1 || o->seq < 1 || o->grad_accum < 1 || o->steps < 0)
        return fk_error(FK_ERR_ARG, "train: batch, seq and grad_accum must be positive");
    if (o->seq > m->cfg.max_seq)
        return fk_error(FK_ERR_ARG, "train: sequence length %d exceeds the model's context %lld", o->seq, (long long)m->cfg.max_seq);
    if (train->n < o->seq + 1)
        return fk_error(FK_ERR_ARG, "train: %s has %lld tokens, fewer than one sequence of %d + 1", train->path ? train->path : "data",
                        (long long)train->n, o->seq);
    if (train->vocab_size > m->cfg.vocab_size)
        return fk_error(FK_ERR_ARG, "train: data vocabulary %lld exceeds the model's %lld", (long long)train->vocab_size,
                        (long long)m->cfg.vocab_size);
    return FK_OK;
}

// A step's sums over its micro-batches: loss, CLM loss and fusion loss.
typedef struct { double loss, clm, fus; } step_sums;

// A micro-batch's forward under the span objective (fk_teacher.span): the forward without
// teacher rows, then its rows weighted by the derivatives of lambda * CE + (1 - lambda) * L_span
// with respect to each position's cross-entropy, which the teacher computes.
static fk_status span_forward(fk_model *m, const fk_train_opts *o, const int32_t *x, const int32_t *y, const int64_t *offs, float *loss,
                              float *fus) {
    FK_TRY(fk_model_forward(m, x, y, o->batch, o->seq, true, loss));
    const float *w;
    fk_status st = o->teacher->span(o->teacher->ctx, offs, o->batch, o->seq, y, fk_model_token_losses(m), &w, loss, fus);
    if (st != FK_OK) return fk_error_context(st, "teacher");
    return fk_model_weight_rows(m, w);
}

// The gradient of one step: its grad_accum micro-batches (this rank's), forward and backward,
// adding into the gradients, the step's sums and the tokens seen.
static fk_status step_gradient(fk_model *m, const fk_token_data *train, const fk_train_opts *o, int64_t step, int rank, int size,
                               dp_buckets *bk, int32_t *x, int32_t *y, int64_t *offs, step_sums *sum, int64_t *tokens) {
    fk_status st = FK_OK;
    for (int mb = 0; mb < o->grad_accum && st == FK_OK; mb++) {
        sample_batch(train, o, step, rank * o->grad_accum + mb, x, y, offs);
        float loss, fus = NAN;
        fk_sparse_dist teach;
        bool span = o->teacher && o->teacher->span;
        if (o->teacher && !span) {
            st = o->teacher->fill(o->teacher->ctx, offs, o->batch, o->seq, y, &teach);
            if (st != FK_OK) return fk_error_context(st, "step %lld: teacher", (long long)step + 1);
        }
        st = span ? span_forward(m, o, x, y, offs, &loss, &fus)
                  : fk_model_forward_objective(m, x, y, o->teacher ? &teach : NULL, o->teacher ? o->teacher->lambda : 1.0f,
                                               o->teacher ? o->teacher->objective : FK_OBJECTIVE_CE, o->batch, o->seq, true, &loss, &fus);
        if (st != FK_OK) return fk_error_context(st, "step %lld", (long long)step + 1);
#ifdef FK_WITH_MPI
        if (bk->cap > 0 && mb == o->grad_accum - 1) m->grad_hook = on_layer_grads, m->grad_hook_user = bk;  // the last micro-batch
#endif
        st = fk_model_backward(m, 1.0f / (float)o->grad_accum);
        m->grad_hook = NULL, m->grad_hook_user = NULL;
        sum->loss += loss;
        double clm = 0;
        const float *tl = fk_model_token_losses(m);
        for (int64_t i = 0; i < (int64_t)o->batch * o->seq; i++) clm += tl[i];
        sum->clm += clm / ((double)o->batch * o->seq);
        sum->fus += fus;
        *tokens += (int64_t)o->batch * o->seq * size;
    }
    return st;
}

// The first gradient entry that is not finite, as the error naming it (FK_OK when none is).
static fk_status check_gradient(const fk_model *m, int64_t step) {
    for (int i = 0; i < m->n_params; i++)
        for (int64_t j = 0; j < m->params[i].numel; j++)
            if (!isfinite(m->g[m->params[i].offset + j]))
                return fk_error(FK_ERR_NUMERIC, "step %lld: gradient of %s[%lld] is not finite", (long long)step + 1, m->params[i].name,
                                (long long)j);
    return FK_OK;
}

// A finished step's event, its evaluation and checkpoint fields left empty (val_* NaN); the losses
// are the step's sums over its micro-batches.
static fk_train_event step_event(const fk_train_opts *o, int64_t done_steps, double loss, double clm, double fus, float lr, double gn,
                                 double t0, int64_t tokens) {
    fk_train_event ev = {0};
    ev.step = done_steps;
    ev.steps = o->steps;
    ev.loss = (float)(loss / o->grad_accum);
    ev.clm_loss = (float)(clm / o->grad_accum);
    ev.fusion_loss = o->teacher ? (float)(fus / o->grad_accum) : NAN;
    ev.lr = lr;
    ev.grad_norm = (float)gn;
    ev.elapsed_s = fk_time_s() - t0;
    ev.tokens_per_s = (double)tokens / (ev.elapsed_s > 0 ? ev.elapsed_s : 1e-9);
    ev.val_loss = NAN;
    ev.val_bpb = NAN;
    return ev;
}

// ------------------------------------------------------------------ the steps on a GPU
// The same loop on the CUDA engine: each micro-batch's forward and backward on the device, the
// gradient norm and AdamW there too; the host model and optimizer receive the weights and moments
// when a checkpoint, an evaluation or the end needs them. One process: NCCL data parallelism is not
// wired yet, so mpirun with more than one rank is refused, as are the objectives and options the
// CUDA engine does not implement.
static fk_status gpu_sync_host(fk_gpu *g, fk_model *m, fk_adamw *opt) {
    FK_TRY(fk_gpu_get_weights(g, m->w));
    return opt->m ? fk_gpu_get_moments(g, opt->m, opt->v) : FK_OK;
}

static fk_status train_steps_gpu(fk_model *m, fk_adamw *opt, const fk_token_data *train, const fk_token_data *val,
                                 const fk_train_opts *o, const char *out_dir, fk_train_cb cb, void *user) {
    FK_TRY(check_train_args(m, train, o));
    int rank, size;
    dp_query(&rank, &size);
    if (size > 1) return fk_error(FK_ERR_UNSUPPORTED, "--device cuda runs in one process: data parallelism over GPUs (NCCL) is not implemented yet");
    if (o->teacher && (o->teacher->span || o->teacher->objective != FK_OBJECTIVE_CE))
        return fk_error(FK_ERR_UNSUPPORTED, "--device cuda implements the ce objective only (not uld or span)");
    if (!opt->m || opt->m16) return fk_error(FK_ERR_UNSUPPORTED, "--device cuda keeps AdamW's moments in f32 (not --optim-state bf16)");
    if (opt->lo != 0 || opt->hi != opt->n) return fk_error(FK_ERR_UNSUPPORTED, "--device cuda: the optimizer state is sharded (--zero1)");
    fk_gpu *g;
    FK_TRY(fk_gpu_open(&g, m, o->batch, o->seq, true));
    fk_status st = opt->t > 0 ? fk_gpu_set_moments(g, opt->m, opt->v) : FK_OK;  // a resumed run's moments
    if (out_dir) clean_stale(out_dir);
    size_t nb = (size_t)o->batch * o->seq * sizeof(int32_t);
    int32_t *x = malloc(nb), *y = malloc(nb);
    int64_t *offs = malloc((size_t)o->batch * sizeof(int64_t));
    if (!x || !y || !offs) st = fk_error(FK_ERR_NOMEM, "out of memory");
    double t0 = fk_time_s();
    int64_t tokens = 0, first = opt->t;
    for (int64_t step = opt->t; step < o->steps && st == FK_OK; step++) {
        fk_gpu_zero_grads(g);
        double sl = 0, sf = 0;
        for (int mb = 0; mb < o->grad_accum && st == FK_OK; mb++) {
            sample_batch(train, o, step, mb, x, y, offs);
            fk_sparse_dist teach;
            if (o->teacher && (st = o->teacher->fill(o->teacher->ctx, offs, o->batch, o->seq, y, &teach)) != FK_OK) {
                st = fk_error_context(st, "step %lld: teacher", (long long)step + 1);
                break;
            }
            float loss, fus = NAN;
            st = fk_gpu_train_step(g, x, y, o->teacher ? &teach : NULL, o->teacher ? o->teacher->lambda : 1.0f, o->batch, o->seq,
                                   1.0f / (float)o->grad_accum, &loss, &fus);
            if (st != FK_OK) { st = fk_error_context(st, "step %lld", (long long)step + 1); break; }
            sl += loss;
            sf += fus;
            tokens += (int64_t)o->batch * o->seq;
        }
        if (st != FK_OK) break;
        double gn;
        if ((st = fk_gpu_grad_norm(g, &gn)) != FK_OK) break;
        if (!isfinite(gn)) {  // name the first entry that is not finite, from the host copy
            if ((st = fk_model_alloc_grads(m)) == FK_OK && (st = fk_gpu_get_grads(g, m->g)) == FK_OK) st = check_gradient(m, step);
            if (st == FK_OK) st = fk_error(FK_ERR_NUMERIC, "step %lld: the gradient norm is not finite", (long long)step + 1);
            break;
        }
        float scale = o->optim.clip > 0 && gn > o->optim.clip ? (float)(o->optim.clip / (gn + 1e-6)) : 1.0f;
        float lr = fk_lr_at(&opt->o, step);
        opt->t++;
        if ((st = fk_gpu_adamw(g, opt->t, lr, opt->o.beta1, opt->o.beta2, opt->o.eps, opt->o.weight_decay, scale)) != FK_OK) break;
        int64_t done_steps = step + 1;
        // the engine returns the mixed loss and the teacher term: the CLM part is what the mix leaves
        float lam = o->teacher ? o->teacher->lambda : 1.0f;
        double clm = lam > 0 ? (sl - (1 - lam) * sf) / lam : NAN;
        fk_train_event ev = step_event(o, done_steps, sl, clm, sf, lr, gn, t0, tokens);
        bool last = done_steps == o->steps;
        bool want_val = val && ((o->eval_every > 0 && done_steps % o->eval_every == 0) || last);
        bool stop = !last && o->stop && *o->stop;
        bool ckpt = out_dir && ((o->save_every > 0 && done_steps % o->save_every == 0) || last || stop);
        if (ckpt && (st = gpu_sync_host(g, m, opt)) != FK_OK) break;
        if (want_val) {  // on the GPU, from its weights
            fk_eval_result r;
            fk_eval_set_gpu(g);
            st = fk_eval_data(m, val, o->seq, o->batch, o->eval_tokens, &r);
            fk_eval_set_gpu(NULL);
            if (st != FK_OK) break;
            ev.val_loss = (float)r.loss;
            ev.val_bpb = (float)r.bpb;
        }
        char *ck = NULL;
        if (ckpt) {
            ck = checkpoint_path(out_dir, done_steps);
            st = fk_checkpoint_save(ck, m, opt, o);
            if (st == FK_OK) prune_checkpoints(out_dir, o->keep > 0 ? o->keep : 1, done_steps);
            ev.checkpoint = ck;
        }
        ev.stopped = stop;
        ev.log = last || stop || isfinite(ev.val_loss) || ck || o->log_every <= 1 || done_steps % o->log_every == 0 || step == first;
        if (cb && st == FK_OK) cb(&ev, user);
        free(ck);
        if (stop) break;
    }
    if (st == FK_OK) st = gpu_sync_host(g, m, opt);
    fk_gpu_close(g);
    bool finished = opt->t >= o->steps;
    if (st == FK_OK && finished && out_dir) st = fk_hf_save(m, out_dir, FK_DT_F32);
    if (st == FK_OK && finished && out_dir && o->tokenizer) st = fk_tok_save_hf(o->tokenizer, out_dir);
    free(x); free(y); free(offs);
    return st;
}

static fk_status train_steps(fk_model *m, fk_adamw *opt, const fk_token_data *train, const fk_token_data *val,
                             const fk_train_opts *o, const char *out_dir, fk_train_cb cb, void *user) {
    if (o->device == FK_DEVICE_CUDA) return train_steps_gpu(m, opt, train, val, o, out_dir, cb, user);
    FK_TRY(check_train_args(m, train, o));
    FK_TRY(fk_model_alloc_grads(m));
    int rank0, size0;
    dp_query(&rank0, &size0);
    if (out_dir && rank0 == 0) clean_stale(out_dir);
    size_t nb = (size_t)o->batch * o->seq * sizeof(int32_t);
    int32_t *x = malloc(nb), *y = malloc(nb);
    int64_t *offs = malloc((size_t)o->batch * sizeof(int64_t));
    if (!x || !y || !offs) { free(x); free(y); free(offs); return fk_error(FK_ERR_NOMEM, "out of memory"); }
    fk_status st = FK_OK;
    double t0 = fk_time_s();
    int64_t tokens = 0, first = opt->t;
    int rank, size;
    dp_query(&rank, &size);
    dp_buckets bk;
    dp_buckets_init(&bk, m, size);
    if (o->zero1 && size > 1 && !sharded(opt)) {  // each rank keeps its share of the moments
        int64_t lo, hi;
        fk_dist_range(opt->n, &lo, &hi);
        st = dp_agree(fk_adamw_shard(opt, lo, hi), size);
    }
    for (int64_t step = opt->t; step < o->steps && st == FK_OK; step++) {
        fk_model_zero_grads(m);
        step_sums sum = {0, 0, 0};
        st = step_gradient(m, train, o, step, rank, size, &bk, x, y, offs, &sum, &tokens);
        st = dp_agree(st, size);
        if (st != FK_OK) break;
        dp_average(m, &sum.loss, size, &bk);
        double gn = fk_grad_norm(m);
        if (!isfinite(gn) && (st = check_gradient(m, step)) != FK_OK) break;
        float scale = o->optim.clip > 0 && gn > o->optim.clip ? (float)(o->optim.clip / (gn + 1e-6)) : 1.0f;
        float lr = fk_lr_at(&opt->o, step);
        fk_adamw_update(opt, m, lr, scale);
        if (sharded(opt)) zero1_exchange(m, size);

        int64_t done_steps = step + 1;
        fk_train_event ev = step_event(o, done_steps, sum.loss, sum.clm, sum.fus, lr, gn, t0, tokens);
        bool last = done_steps == o->steps;
        if (val && ((o->eval_every > 0 && done_steps % o->eval_every == 0) || last)) {
            fk_eval_result r;
            st = fk_eval_data(m, val, o->seq, o->batch, o->eval_tokens, &r);
            if (st != FK_OK) break;
            ev.val_loss = (float)r.loss;
            ev.val_bpb = (float)r.bpb;
        }
        // a stop request ends the run after this step, with a checkpoint; all ranks agree on it
        bool stop = !last && o->stop && *o->stop;
        stop = dp_any(stop, size);
        char *ck = NULL;
        if (out_dir && ((o->save_every > 0 && done_steps % o->save_every == 0) || last || stop)) {
            ck = checkpoint_path(out_dir, done_steps);
            if (sharded(opt)) st = zero1_checkpoint(ck, m, opt, o, rank, size);  // the moments streamed to rank 0
            else if (rank == 0) st = fk_checkpoint_save(ck, m, opt, o);
            if (rank == 0 && st == FK_OK) prune_checkpoints(out_dir, o->keep > 0 ? o->keep : 1, done_steps);
            st = dp_agree(st, size);
            ev.checkpoint = ck;
        }
        ev.stopped = stop;
        ev.log = last || stop || isfinite(ev.val_loss) || ck || o->log_every <= 1 || done_steps % o->log_every == 0 || step == first;
        if (cb && st == FK_OK) cb(&ev, user);
        free(ck);
        if (stop) break;
    }
    bool finished = opt->t >= o->steps;  // not stopped early
    if (st == FK_OK && finished && out_dir && rank == 0) st = fk_hf_save(m, out_dir, FK_DT_F32);
    if (st == FK_OK && finished && out_dir && rank == 0 && o->tokenizer) st = fk_tok_save_hf(o->tokenizer, out_dir);
    free(x); free(y); free(offs);
    dp_buckets_free(&bk);
    return st;
}

fk_status fk_train_precision_check(fk_precision p) {
    if (p == FK_PRECISION_INT8)
        return fk_error(FK_ERR_ARG, "training takes --precision fp32, bf16 or auto: int8 is for frozen quantized models (eval, extract, generate)");
    return FK_OK;
}

// The run under its precision (o->precision, AUTO resolved here), the caller's restored after.
fk_status fk_train(fk_model *m, fk_adamw *opt, const fk_token_data *train, const fk_token_data *val,
                   const fk_train_opts *o, const char *out_dir, fk_train_cb cb, void *user) {
    FK_TRY(fk_train_precision_check(o->precision));
    fk_precision before = fk_matmul_precision();
    bool ckpt_before = m->checkpoint_acts;
    fk_matmul_set_precision(o->precision);
    if (o->checkpoint_activations) fk_model_set_checkpointing(m, true);
    fk_status st = train_steps(m, opt, train, val, o, out_dir, cb, user);
    fk_model_set_checkpointing(m, ckpt_before);
    fk_matmul_set_precision(before);
    return st;
}
