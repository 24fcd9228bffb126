// The fusion and healing jobs (fusekit/job.h): a store per teacher model (extracted, cached or
// resumed), then the training job with those stores as its teachers.
#include "fusekit/job.h"
#include "fusekit/gguf.h"
#include "fusekit/hf.h"
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

// The forward FLOPs model m spent extracting the store at path: fk_model_flops_per_token over
// the store's windows (its seq, plus BOS when the store's tokenizer adds one) x the positions
// run (every token, and a BOS per window).
static fk_status store_flops(const fk_model *m, const char *path, double *flops) {
    fk_store *s;
    FK_TRY(fk_store_open(path, &s));
    const fk_store_header *h = fk_store_header_of(s);
    int lead = (h->flags & FK_STORE_BOS) ? 1 : 0;
    double fwd;
    fk_model_flops_per_token(m, (int)h->seq + lead, &fwd, NULL);
    *flops = fwd * (double)(h->n_tokens + lead * fk_store_n_seqs(s));
    fk_store_close(s);
    return FK_OK;
}

// fk_extract_model_store in the given matrix-product precision (fuse: its --precision), and *flops (may be NULL) += the extraction's forward FLOPs (store_flops).
static fk_status extract_store(const char *model, const char *data, const char *store_dir, int k, fk_precision precision,
                               const fk_job_hooks *h, char **path, bool *stopped_out, double *flops) {
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
        eo.precision = precision;
        extract_ctx c = {h, model};
        double t0 = fk_time_s();
        bool stopped = false, cached = false;
        st = fk_extract_ex(&m, tok, data, &eo, *path, false, on_extract, &c, &stopped, &cached);  // (tokenizer saved above)
        if (st == FK_OK && stopped && stopped_out) *stopped_out = true;
        if (st == FK_OK && stopped)
            st = fk_error(FK_ERR_IO, "interrupted while extracting %s; %s.partial is kept, run the same command again to resume", model, *path);
        else if (st == FK_OK && cached) fk_job_note(h, "store %s (cached)", *path);
        else if (st == FK_OK) fk_job_note(h, "store %s (%.1f s)", *path, fk_time_s() - t0);
        double f = 0;
        if (st == FK_OK && flops && (st = store_flops(&m, *path, &f)) == FK_OK) *flops += f;
    }
    fk_tok_free(tok);
    fk_model_free(&m);
    if (st != FK_OK) { free(*path); *path = NULL; }
    return st;
}

fk_status fk_extract_model_store(const char *model, const char *data, const char *store_dir, int k, const fk_job_hooks *h, char **path,
                                 bool *stopped_out) {
    return extract_store(model, data, store_dir, k, FK_PRECISION_FP32, h, path, stopped_out, NULL);
}

// ------------------------------------------------------------------ a training job on stores

// fuse's alignment report (fusion.h): every source but the target against the target's
// tokenizer on the fusion text, in the training's alignment modes (the vocabulary map cached
// in sdir, where training finds it), written as sdir/align_report.json and .html, with a note
// per source. A source without a tokenizer is left out (its extraction says why).
static fk_status fuse_report(const fk_train_job *tj, const char *const *models, int n, const char *sdir, const fk_job_hooks *h) {
    const char *names[FK_PATH_LIST_MAX];
    fk_tokenizer *tgt = NULL, *src[FK_PATH_LIST_MAX] = {0};
    fk_align_report rep[FK_PATH_LIST_MAX] = {0};
    fk_align_opts ao = tj->ao;
    ao.cache_dir = sdir;
    char *text = NULL;
    size_t len = 0;
    int m = 0;
    fk_status st = fk_data_is_shard(tj->data) ? FK_OK : fk_model_tokenizer(tj->init, tj->tokenizer, -1, &tgt);
    if (st == FK_OK && tgt) st = fk_read_file(tj->data, &text, &len);
    for (int i = 0; i < n && st == FK_OK && tgt; i++) {
        if (strcmp(models[i], tj->init) == 0) continue;
        st = fk_model_tokenizer(models[i], NULL, -1, &src[m]);
        if (st != FK_OK || !src[m]) continue;
        names[m] = models[i];
        st = fk_align_report_compute(src[m], tgt, text, len, &ao, 20, &rep[m]);
        if (st != FK_OK) { fk_error_context(st, "the alignment report of %s", models[i]); break; }
        char line[400];
        fk_align_report_line(&rep[m], line, sizeof line);
        fk_job_note(h, "alignment of %s to the target: %s", models[i], line);
        m++;
    }
    if (st == FK_OK && m > 0) {
        fk_align_report_set set = {tj->init, tj->data, tgt, ao, m, names, (const fk_tokenizer *const *)src, rep};
        st = fk_align_report_write(&set, sdir);
        if (st == FK_OK) fk_job_note(h, "alignment report: %s/align_report.json and align_report.html", sdir);
    }
    for (int i = 0; i <= m && i < FK_PATH_LIST_MAX; i++) { fk_align_report_free(&rep[i]); fk_tok_free(src[i]); }
    fk_tok_free(tgt);
    free(text);
    return st;
}

// The run's compute, as a note and as <out>/flops.json: the extraction's forward FLOPs, the
// fused training's (train FLOPs per token x tokens of the steps run; the fusion loss's own
// cost, O(k) per position, not counted) and the steps a CLM-only replay control of the same
// step size needs to spend as much in all (fk_replay_steps).
static fk_status write_flops(const char *out, const fk_train_job_result *r, const fk_job_hooks *h) {
    double tokens = (double)r->step * (double)r->tokens_per_step, training = r->train_flops_per_token * tokens;
    int64_t replay = fk_replay_steps(r->step, r->extraction_flops, r->train_flops_per_token, r->tokens_per_step);
    fk_job_note(h, "compute: extraction %.4g FLOPs, training %.4g FLOPs (%.4g per token x %.0f tokens); a CLM-only replay of "
                "equal compute: %lld steps", r->extraction_flops, training, r->train_flops_per_token, tokens, (long long)replay);
    char *p = fk_path_join(out, "flops.json");
    if (!p) return fk_error(FK_ERR_NOMEM, "out of memory");
    char text[600];
    int n = snprintf(text, sizeof text,
                     "{\"extraction_flops\": %.17g, \"train_flops_per_token\": %.17g, \"tokens_per_step\": %lld, \"steps\": %lld, "
                     "\"training_flops\": %.17g, \"total_flops\": %.17g, \"replay_steps\": %lld}\n",
                     r->extraction_flops, r->train_flops_per_token, (long long)r->tokens_per_step, (long long)r->step, training,
                     training + r->extraction_flops, (long long)replay);
    fk_status st = fk_dp_rank() == 0 ? fk_write_file_atomic(p, text, (size_t)n) : FK_OK;
    free(p);
    return st;
}

// What fuse and heal share: the stores' folder (given, else <out>/stores), the stores of the
// models extracted into it, then the training job tj with them as its teachers, resuming when
// Each source as far as it can be checked without loading its weights: a GGUF's header and
// metadata, or a folder's config.json, and a tokenizer for it (fusion needs every model's), so a
// bad second source is refused before the first one's extraction (which may take hours).
static fk_status check_source(const char *model) {
    size_t l = strlen(model);
    if (l >= 5 && strcmp(model + l - 5, ".gguf") == 0) {
        fk_gguf g;
        FK_TRY(fk_gguf_open(model, &g));
        bool tok = fk_gguf_find(&g, "tokenizer.ggml.model") != NULL;
        fk_gguf_close(&g);
        return tok ? FK_OK : fk_error(FK_ERR_ARG, "%s has no tokenizer (the GGUF's tokenizer.ggml.* keys): fusion needs every model's tokenizer", model);
    }
    char *cfg = fk_path_join(model, "config.json"), *tj = fk_path_join(model, "tokenizer.json");
    fk_status st = cfg && tj ? FK_OK : fk_error(FK_ERR_NOMEM, "out of memory");
    fk_config c;
    if (st == FK_OK) st = fk_hf_config_read(cfg, &c);
    if (st == FK_OK && !fk_path_exists(tj) && c.vocab_size != 256)  // (a 256-token model reads bytes without one)
        st = fk_error(FK_ERR_ARG, "%s has no tokenizer.json: fusion needs every model's tokenizer", model);
    free(cfg);
    free(tj);
    return st;
}

// out already holds a checkpoint. tj is the caller's (init and options set).
// With `report`, fuse's alignment report first (fuse_report).
static fk_status train_on_stores(fk_train_job *tj, const char *store_dir, const char *const *models, int n, int k, bool report,
                                 fk_precision extract_precision, const fk_job_hooks *h, fk_train_job_result *r) {
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
    for (int i = 0; i < n && st == FK_OK; i++) st = check_source(models[i]);  // a file error (exit 1), not a refused option
    if (st != FK_OK) return st;
    char *sdir = store_dir ? strdup(store_dir) : fk_path_join(tj->out, "stores");
    st = sdir ? fk_mkdir_p(sdir) : fk_error(FK_ERR_NOMEM, "out of memory");
    if (st == FK_OK && report) st = fuse_report(tj, models, n, sdir, h);
    char *stores[FK_PATH_LIST_MAX] = {0};
    double extraction = 0;
    for (int i = 0; i < n && st == FK_OK; i++) {
        st = extract_store(models[i], tj->data, sdir, k, extract_precision, h, &stores[i], &r->stopped, &extraction);
        tj->teachers.v[tj->teachers.n++] = stores[i];
    }
    tj->ao.cache_dir = sdir;
    tj->resumes_itself = true;
    // run again after an interrupt, the job resumes its training (extraction resumes by itself)
    if (st == FK_OK && !tj->resume && !tj->resume_from && fk_job_has_checkpoint(tj->out)) tj->resume = true;
    if (st == FK_OK) st = fk_train_job_run(tj, h, r);
    r->extraction_flops = extraction;
    if (st == FK_OK && r->train_flops_per_token > 0) st = write_flops(tj->out, r, h);
    for (int i = 0; i < n; i++) free(stores[i]);
    free(sdir);
    return st;
}

// ------------------------------------------------------------------ fuse

void fk_fuse_job_defaults(fk_fuse_job *j) {
    memset(j, 0, sizeof *j);
    j->k = 10;
    j->extract_precision = -1;
    fk_train_job_defaults(&j->train);
}

fk_status fk_fuse_run(const fk_fuse_job *j, const fk_job_hooks *h, fk_train_job_result *r) {
    memset(r, 0, sizeof *r);
    if (!j->target || !j->train.data || !j->train.out) {
        r->refused = true;
        return fk_error(FK_ERR_ARG, "--target, --data and --out are required");
    }
    if (j->sources.n == 0 && j->no_target_source) {  // (no --source alone: self-distillation, the target its only teacher)
        r->refused = true;
        return fk_error(FK_ERR_ARG, "--no-target-source with no --source leaves no teacher: give a --source, or drop --no-target-source "
                                    "for self-distillation (the target's initial model as the only teacher)");
    }
    // the teachers: the target's own store first unless no_target_source, then each source once
    const char *models[FK_PATH_LIST_MAX + 1];
    int n = 0;
    if (!j->no_target_source) models[n++] = j->target;
    for (int i = 0; i < j->sources.n; i++)
        if (j->no_target_source || strcmp(j->sources.v[i], j->target) != 0) models[n++] = j->sources.v[i];  // (the target: already in)
    fk_train_job tj = j->train;
    tj.init = j->target;
    if (j->extract_precision < -1 || j->extract_precision > FK_PRECISION_INT8) {
        r->refused = true;
        return fk_error(FK_ERR_ARG, "--extract-precision must be fp32, bf16, auto or int8 (got %d)", j->extract_precision);
    }
    fk_precision ep = j->extract_precision < 0 ? tj.o.precision : (fk_precision)j->extract_precision;
    return train_on_stores(&tj, j->store_dir, models, n, j->k, true, ep, h, r);
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
    return train_on_stores(&tj, j->store_dir, &j->teacher, 1, j->k, false, tj.o.precision, h, r);
}
