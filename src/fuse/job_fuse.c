// The fusion and healing jobs (fusekit/job.h): a store per teacher model (extracted, cached or
// resumed), then the training job with those stores as its teachers.
#include "fusekit/job.h"
#include "job_internal.h"

#include <stdlib.h>
#include <string.h>

fk_status fk_store_keep_tokenizer(const char *store_path, fk_tokenizer **tok) {
    FK_TRY(fk_store_save_tokenizer(store_path, *tok));
    char *dir = fk_store_tokenizer_dir(store_path);
    if (!dir) return fk_error(FK_ERR_NOMEM, "out of memory");
    fk_tokenizer *back = NULL;
    fk_status st = fk_tok_load(dir, &back);
    free(dir);
    if (st != FK_OK) return st;
    if (fk_tok_fingerprint(back) == fk_tok_fingerprint(*tok)) fk_tok_free(back);
    else { fk_tok_free(*tok); *tok = back; }
    fk_heap_trim();
    return FK_OK;
}

typedef struct { const fk_job_hooks *h; const char *model; } extract_ctx;

static bool on_extract(const fk_extract_progress *p, void *user) {
    const extract_ctx *c = user;
    bool go = !c->h->extract || c->h->extract(p, c->model, c->h->user);
    return go && !(c->h->stop && *c->h->stop);  // stopped: the store's .partial is kept and resumes
}

// The store's path: "<model name>-<fingerprint>.fkd" in store_dir (malloc'd).
static char *store_path(const char *model, const fk_model *m, const char *store_dir) {
    char base[512], name[600];
    fk_model_name(model, base, sizeof base);
    snprintf(name, sizeof name, "%s-%016llx.fkd", base, (unsigned long long)fk_model_fingerprint(m));
    return fk_path_join(store_dir, name);
}

fk_status fk_extract_model_store(const char *model, const char *data, const char *store_dir, int k, const fk_job_hooks *h, char **path,
                                 bool *stopped_out) {
    static const fk_job_hooks none;
    if (!h) h = &none;
    *path = NULL;
    if (stopped_out) *stopped_out = false;
    fk_model m = {0};
    fk_tokenizer *tok = NULL;
    fk_status st = fk_model_load_tok(model, NULL, FK_LOAD_FROZEN, &m, &tok);
    if (st == FK_OK && !tok)
        st = fk_error(FK_ERR_ARG, "%s has no tokenizer (tokenizer.json, or the GGUF's tokenizer.ggml.* keys): fusion needs every model's tokenizer", model);
    if (st == FK_OK && !(*path = store_path(model, &m, store_dir))) st = fk_error(FK_ERR_NOMEM, "out of memory");
    if (st == FK_OK) st = fk_store_keep_tokenizer(*path, &tok);
    if (st == FK_OK) {
        fk_extract_opts eo;
        fk_extract_defaults(&eo);
        eo.k = k;
        extract_ctx c = {h, model};
        double t0 = fk_time_s();
        bool stopped = false, cached = false;
        st = fk_extract_ex(&m, tok, data, &eo, *path, false, on_extract, &c, &stopped, &cached);  // (tokenizer saved above)
        if (st == FK_OK && stopped && stopped_out) *stopped_out = true;
        if (st == FK_OK && stopped)
            st = fk_error(FK_ERR_IO, "interrupted while extracting %s; %s.partial is kept, run the same command again to resume", model, *path);
        else if (st == FK_OK && cached) fk_job_note(h, "store %s (cached)", *path);
        else if (st == FK_OK) fk_job_note(h, "store %s (%.1f s)", *path, fk_time_s() - t0);
    }
    fk_tok_free(tok);
    fk_model_free(&m);
    if (st != FK_OK) { free(*path); *path = NULL; }
    return st;
}

// ------------------------------------------------------------------ a training job on stores

// What fuse and heal share: the stores' folder (given, else <out>/stores), the stores of the
// models extracted into it, then the training job tj with them as its teachers, resuming when
// out already holds a checkpoint. tj is the caller's (init and options set).
static fk_status train_on_stores(fk_train_job *tj, const char *store_dir, const char *const *models, int n, int k, const fk_job_hooks *h,
                                 fk_train_job_result *r) {
    static const fk_job_hooks none;
    if (!h) h = &none;
    memset(r, 0, sizeof *r);
    if (n > FK_PATH_LIST_MAX) { r->refused = true; return fk_error(FK_ERR_ARG, "at most %d teachers", FK_PATH_LIST_MAX); }
    // checked before any extraction, with the models standing in for their stores (a teacher needs text data)
    tj->teachers.n = n;
    for (int i = 0; i < n; i++) tj->teachers.v[i] = models[i];
    fk_status st = fk_train_job_check(tj);
    tj->teachers.n = 0;
    if (st != FK_OK) { r->refused = true; return st; }
    char *sdir = store_dir ? strdup(store_dir) : fk_path_join(tj->out, "stores");
    st = sdir ? fk_mkdir_p(sdir) : fk_error(FK_ERR_NOMEM, "out of memory");
    char *stores[FK_PATH_LIST_MAX] = {0};
    for (int i = 0; i < n && st == FK_OK; i++) {
        st = fk_extract_model_store(models[i], tj->data, sdir, k, h, &stores[i], &r->stopped);
        tj->teachers.v[tj->teachers.n++] = stores[i];
    }
    tj->ao.cache_dir = sdir;
    tj->resumes_itself = true;
    // run again after an interrupt, the job resumes its training (extraction resumes by itself)
    if (st == FK_OK && !tj->resume && !tj->resume_from && fk_job_has_checkpoint(tj->out)) tj->resume = true;
    if (st == FK_OK) st = fk_train_job_run(tj, h, r);
    for (int i = 0; i < n; i++) free(stores[i]);
    free(sdir);
    return st;
}

// ------------------------------------------------------------------ fuse

void fk_fuse_job_defaults(fk_fuse_job *j) {
    memset(j, 0, sizeof *j);
    j->k = 10;
    fk_train_job_defaults(&j->train);
}

fk_status fk_fuse_run(const fk_fuse_job *j, const fk_job_hooks *h, fk_train_job_result *r) {
    memset(r, 0, sizeof *r);
    if (!j->target || j->sources.n == 0 || !j->train.data || !j->train.out) {
        r->refused = true;
        return fk_error(FK_ERR_ARG, "--target, --source, --data and --out are required");
    }
    // the teachers: the target's own store first unless no_target_source, then each source once
    const char *models[FK_PATH_LIST_MAX + 1];
    int n = 0;
    if (!j->no_target_source) models[n++] = j->target;
    for (int i = 0; i < j->sources.n; i++)
        if (j->no_target_source || strcmp(j->sources.v[i], j->target) != 0) models[n++] = j->sources.v[i];  // (the target: already in)
    fk_train_job tj = j->train;
    tj.init = j->target;
    return train_on_stores(&tj, j->store_dir, models, n, j->k, h, r);
}

// ------------------------------------------------------------------ heal

void fk_heal_job_defaults(fk_heal_job *j) {
    memset(j, 0, sizeof *j);
    j->k = 10;
    fk_train_job_defaults(&j->train);
    j->train.lambda = 0.5f;
    j->train.o.optim.lr = 1e-4f;  // fine-tuning, not training from scratch
}

fk_status fk_heal_run(const fk_heal_job *j, const fk_job_hooks *h, fk_train_job_result *r) {
    memset(r, 0, sizeof *r);
    if (!j->teacher || !j->model || !j->train.data || !j->train.out) {
        r->refused = true;
        return fk_error(FK_ERR_ARG, "--teacher, --model, --data and --out are required");
    }
    fk_train_job tj = j->train;
    tj.init = j->model;
    tj.fo.tail = true;  // the teacher's full-softmax top k and the rest as a tail class
    return train_on_stores(&tj, j->store_dir, &j->teacher, 1, j->k, h, r);
}
