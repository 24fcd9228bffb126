// Weight-space merges (linear, task arithmetic, TIES, SCE): the per-tensor formulas, and a
// driver that checks the inputs agree, reads one tensor at a time through mmap and streams
// the merged tensors into a safetensors file. The formulas are stated in fusekit/merge.h.
#include "fusekit/merge.h"

#include "fusekit/hf.h"
#include "fusekit/tokenizer.h"

#include <cjson/cJSON.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

// ------------------------------------------------------------------ options

void fk_merge_opts_default(fk_merge_opts *o, fk_merge_method method) {
    memset(o, 0, sizeof *o);
    o->method = method;
    o->lambda = 1.0;
    o->density = 1.0;
    o->select_topk = 1.0;
    o->normalize = method != FK_MERGE_TASK_ARITHMETIC;
    o->out_dtype = FK_DT_F32;
}

static const char *method_names[] = {"linear", "task-arithmetic", "ties", "sce"};

const char *fk_merge_method_name(fk_merge_method m) {
    return (unsigned)m < sizeof method_names / sizeof method_names[0] ? method_names[m] : "?";
}

fk_status fk_merge_method_parse(const char *s, fk_merge_method *m) {
    for (int i = 0; i < (int)(sizeof method_names / sizeof method_names[0]); i++)
        if (strcmp(s, method_names[i]) == 0) { *m = (fk_merge_method)i; return FK_OK; }
    if (strcmp(s, "task_arithmetic") == 0) { *m = FK_MERGE_TASK_ARITHMETIC; return FK_OK; }
    return fk_error(FK_ERR_ARG, "unknown merge method \"%s\" (expected linear, task-arithmetic, ties or sce)", s);
}

bool fk_merge_needs_base(fk_merge_method m) { return m != FK_MERGE_LINEAR; }

static fk_status check_opts(const fk_merge_opts *o) {
    if ((unsigned)o->method > FK_MERGE_SCE) return fk_error(FK_ERR_ARG, "merge: unknown method %d", (int)o->method);
    if (!isfinite(o->lambda)) return fk_error(FK_ERR_ARG, "merge: lambda must be a finite number");
    if (!(o->density >= 0) || !isfinite(o->density))
        return fk_error(FK_ERR_ARG, "merge: density %g must be in [0, 1]", o->density);
    if (!(o->select_topk >= 0) || !isfinite(o->select_topk))
        return fk_error(FK_ERR_ARG, "merge: select_topk %g must be in [0, 1]", o->select_topk);
    if (o->out_dtype != FK_DT_F32 && o->out_dtype != FK_DT_F16 && o->out_dtype != FK_DT_BF16)
        return fk_error(FK_ERR_ARG, "merge: output dtype %s is not one of F32, F16, BF16", fk_dtype_name(o->out_dtype));
    return FK_OK;
}

// ------------------------------------------------------------------ top-k by value

// Which entries of a non-negative array are the k largest: every entry above `thr`, and the
// first `quota` entries (by index) equal to it. Found by a radix select over the float bits
// (monotonic for non-negative floats): four histogram passes, no copy, no reordering.
typedef enum { CUT_NONE, CUT_ALL, CUT_THRESHOLD } cut_mode;
typedef struct { cut_mode mode; uint32_t thr; int64_t quota; } topk_cut;

static inline uint32_t fbits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }

static topk_cut topk_find(const float *v, int64_t n, int64_t k) {
    topk_cut c = {CUT_THRESHOLD, 0, 0};
    if (k <= 0) { c.mode = CUT_NONE; return c; }
    if (k >= n) { c.mode = CUT_ALL; return c; }
    uint32_t prefix = 0, mask = 0;
    int64_t hist[256];
    for (int shift = 24; shift >= 0; shift -= 8) {
        memset(hist, 0, sizeof hist);
        for (int64_t j = 0; j < n; j++) {
            uint32_t u = fbits(v[j]);
            if ((u & mask) == prefix) hist[(u >> shift) & 255]++;
        }
        int b = 255;
        while (hist[b] < k) { k -= hist[b]; b--; }  // k-th largest lies in bucket b
        prefix |= (uint32_t)b << shift;
        mask |= 255u << shift;
    }
    c.thr = prefix;
    c.quota = k;  // k-th largest among those equal to thr: keep the first k of them
    return c;
}

// Whether entry with bits u is kept; consumes quota for entries at the threshold.
static inline bool cut_keep(topk_cut *c, uint32_t u) {
    if (c->mode != CUT_THRESHOLD) return c->mode == CUT_ALL;
    if (u > c->thr) return true;
    if (u == c->thr && c->quota > 0) { c->quota--; return true; }
    return false;
}

static int64_t frac_count(double frac, int64_t n) {
    double k = floor(frac * (double)n);
    return k >= (double)n ? n : (int64_t)k;
}

// ------------------------------------------------------------------ per-tensor formulas

static inline int sign_of(double x) { return (x > 0) - (x < 0); }

// Disjoint merge (TIES' third step): the sign of sum_i w_i t_i elects; the deltas that agree
// with it are combined with coefficients c_i (t weighted by w for TIES, by c for SCE),
// divided by the sum of those coefficients when normalize.
static double disjoint_merge(const double *t, const double *w, const double *c, int n, bool normalize) {
    double mass = 0;
    for (int i = 0; i < n; i++) mass += w[i] * t[i];
    int s = mass >= 0 ? 1 : -1;
    double num = 0, den = 0;
    for (int i = 0; i < n; i++)
        if (sign_of(w[i] * t[i]) == s) { num += c[i] * t[i]; den += c[i]; }
    return normalize && den != 0 ? num / den : num;
}

// TIES: trim each task vector, elect signs by weighted mass, disjoint (weighted) mean.
static void merge_ties(const fk_merge_opts *o, const float *const *x, const float *b, const double *w, int n,
                       int64_t numel, float *out, float *scratch, topk_cut *cut, double *t) {
    for (int i = 0; i < n; i++) {
        if (o->density >= 1) { cut[i].mode = CUT_ALL; continue; }
        for (int64_t j = 0; j < numel; j++) scratch[j] = fabsf(x[i][j] - b[j]);
        cut[i] = topk_find(scratch, numel, frac_count(o->density, numel));
    }
    for (int64_t j = 0; j < numel; j++) {
        for (int i = 0; i < n; i++) {
            float d = x[i][j] - b[j];
            t[i] = cut_keep(&cut[i], fbits(fabsf(d))) ? (double)d : 0.0;
        }
        out[j] = (float)((double)b[j] + o->lambda * disjoint_merge(t, w, w, n, o->normalize));
    }
}

// Population variance of the task vectors at entry j (double math, one float result).
static float task_variance(const float *const *x, const float *b, int n, int64_t j) {
    double mean = 0, var = 0;
    for (int i = 0; i < n; i++) mean += (double)(x[i][j] - b[j]);
    mean /= n;
    for (int i = 0; i < n; i++) { double d = (double)(x[i][j] - b[j]) - mean; var += d * d; }
    return (float)(var / n);
}

// SCE: select top-variance entries, weight by energy, erase minority signs, combine.
static void merge_sce(const fk_merge_opts *o, const float *const *x, const float *b, const double *w, int n,
                      int64_t numel, float *out, float *sel, double *t) {
    // Select: sel[j] = 1 for the kept entries (sel == NULL: all kept).
    if (o->select_topk < 1) {
        int64_t nonzero = 0;
        for (int64_t j = 0; j < numel; j++) { sel[j] = task_variance(x, b, n, j); nonzero += sel[j] != 0; }
        topk_cut c = topk_find(sel, numel, frac_count(o->select_topk, nonzero));
        for (int64_t j = 0; j < numel; j++) sel[j] = cut_keep(&c, fbits(sel[j])) ? 1.0f : 0.0f;
    } else {
        sel = NULL;
    }
    // Calculate: c_i ∝ w_i · energy of the selected task vector.
    double *c = t + n, total = 0, wsum = 0;
    for (int i = 0; i < n; i++) {
        double e = 0;
        for (int64_t j = 0; j < numel; j++)
            if (!sel || sel[j] != 0) { double d = (double)(x[i][j] - b[j]); e += d * d; }
        c[i] = w[i] * e;
        total += c[i];
        wsum += w[i];
    }
    for (int i = 0; i < n; i++)
        c[i] = total != 0 ? c[i] / total : wsum != 0 ? w[i] / wsum : 1.0 / n;
    // Erase and combine.
    for (int64_t j = 0; j < numel; j++) {
        for (int i = 0; i < n; i++) t[i] = !sel || sel[j] != 0 ? (double)(x[i][j] - b[j]) : 0.0;
        out[j] = (float)((double)b[j] + o->lambda * disjoint_merge(t, w, c, n, o->normalize));
    }
}

fk_status fk_merge_tensor(const fk_merge_opts *o, const float *const *inputs, const float *base, const float *w,
                          int n, int64_t numel, float *out) {
    FK_TRY(check_opts(o));
    if (n < 1) return fk_error(FK_ERR_ARG, "merge: needs at least one model (got %d)", n);
    if (numel < 0) return fk_error(FK_ERR_ARG, "merge: negative element count %lld", (long long)numel);
    if (fk_merge_needs_base(o->method) && !base)
        return fk_error(FK_ERR_ARG, "merge: method %s needs a base model", fk_merge_method_name(o->method));
    double *wd = malloc((size_t)n * 3 * sizeof *wd);  // weights, then two per-model work rows
    topk_cut *cut = malloc((size_t)n * sizeof *cut);
    if (!wd || !cut) { free(wd); free(cut); return fk_error(FK_ERR_NOMEM, "out of memory"); }
    double wsum = 0;
    for (int i = 0; i < n; i++) { wd[i] = w ? (double)w[i] : 1.0; wsum += wd[i]; }
    fk_status st = FK_OK;
    for (int i = 0; i < n && st == FK_OK; i++)
        if (!isfinite(wd[i])) st = fk_error(FK_ERR_ARG, "merge: the weight of model %d is not a finite number", i);
    if (st != FK_OK) { free(wd); free(cut); return st; }
    float *scratch = NULL;
    switch (o->method) {
    case FK_MERGE_LINEAR:
    case FK_MERGE_TASK_ARITHMETIC: {
        bool ta = o->method == FK_MERGE_TASK_ARITHMETIC;
        double div = 1;
        if (o->normalize) {
            if (fabs(wsum) < 1e-12 && !ta) {
                st = fk_error(FK_ERR_ARG, "merge: the weights sum to %g, so they cannot be normalised to sum 1", wsum);
                break;
            }
            div = fabs(wsum) < 1e-12 ? 1 : wsum;  // task arithmetic: as mergekit, a zero sum divides by 1
        }
        for (int64_t j = 0; j < numel; j++) {
            double acc = 0;
            if (ta) {
                for (int i = 0; i < n; i++) acc += wd[i] * (double)(inputs[i][j] - base[j]);
                out[j] = (float)((double)base[j] + o->lambda * acc / div);
            } else {
                for (int i = 0; i < n; i++) acc += wd[i] * (double)inputs[i][j];
                out[j] = (float)(acc / div);
            }
        }
        break;
    }
    case FK_MERGE_TIES:
    case FK_MERGE_SCE:
        scratch = calloc((size_t)(numel > 0 ? numel : 1), sizeof *scratch);  // (calloc: gcc -O1 cannot see every entry is written first)
        if (!scratch) { st = fk_error(FK_ERR_NOMEM, "out of memory (%lld floats of scratch)", (long long)numel); break; }
        if (o->method == FK_MERGE_TIES) merge_ties(o, inputs, base, wd, n, numel, out, scratch, cut, wd + n);
        else merge_sce(o, inputs, base, wd, n, numel, out, scratch, wd + n);
        break;
    }
    free(scratch); free(wd); free(cut);
    return st;
}

// ------------------------------------------------------------------ model folders

// One model folder: its config and its safetensors files (one file, or the shards of an index).
typedef struct {
    const char *dir;
    fk_st_set f;
    fk_config cfg;
} merge_input;

static void input_close(merge_input *in) { fk_st_set_close(&in->f); }

static fk_status input_open(merge_input *in, const char *dir) {
    memset(in, 0, sizeof *in);
    in->dir = dir;
    char *cfg = fk_path_join(dir, "config.json");
    fk_status st = cfg ? FK_OK : fk_error(FK_ERR_NOMEM, "out of memory");
    if (st == FK_OK && !fk_path_exists(cfg)) st = fk_error(FK_ERR_IO, "%s: no config.json (not a model folder)", dir);
    if (st == FK_OK) st = fk_hf_config_read(cfg, &in->cfg);
    if (st == FK_OK) st = fk_st_set_open(&in->f, dir);
    free(cfg);
    return st;
}

static const fk_st_tensor *input_find(const merge_input *in, const char *name) { return fk_st_set_find(&in->f, name, NULL); }

static bool is_float(fk_dtype d) { return d == FK_DT_F32 || d == FK_DT_F16 || d == FK_DT_BF16 || d == FK_DT_F64; }

static void shape_str(const fk_st_tensor *t, char *buf, size_t n) {
    buf[0] = 0;
    for (int d = 0; d < t->ndim; d++)
        snprintf(buf + strlen(buf), n - strlen(buf), "%s%lld", d ? ", " : "", (long long)t->shape[d]);
}

// The first config key on which b differs from a (the model_type, then fk_config_diff's
// fields), with both values, or false when none does.
static bool config_diff(const fk_config *a, const fk_config *b, char *key, char *va, char *vb, size_t n) {
    fk_arch xa = fk_config_arch(a), xb = fk_config_arch(b);
    if (xa != xb) { snprintf(key, n, "model_type"); snprintf(va, n, "%s", fk_arch_name(xa)); snprintf(vb, n, "%s", fk_arch_name(xb)); return true; }
    int64_t l;
    const fk_config_field *f = fk_config_diff(a, b, &l);
    if (!f) return false;
    if (l >= 0) snprintf(key, n, "%s of layer %lld", f->label, (long long)l);
    else snprintf(key, n, "%s", f->label);
    double x = fk_config_field_value(a, f, l), y = fk_config_field_value(b, f, l);
    if (f->type == FK_CF_F32) { snprintf(va, n, "%g", x); snprintf(vb, n, "%g", y); }
    else { snprintf(va, n, "%.0f", x); snprintf(vb, n, "%.0f", y); }  // sizes: exact in a double (validated below 2^41)
    return true;
}

// Every input against the first: config, tensor names, shapes and kinds.
static fk_status check_compatible(const merge_input *in, int m) {
    char key[96], va[96], vb[96], sa[96], sb[96];
    const merge_input *a = &in[0];
    int64_t na = 0;
    for (int s = 0; s < a->f.n; s++) na += a->f.st[s].n_tensors;
    for (int k = 1; k < m; k++) {
        const merge_input *b = &in[k];
        if (config_diff(&a->cfg, &b->cfg, key, va, vb, sizeof key))
            return fk_error(FK_ERR_FORMAT, "%s: config.json %s is %s but %s has %s; merged models must share one architecture and shape",
                            b->dir, key, vb, a->dir, va);
        for (int s = 0; s < a->f.n; s++)
            for (int i = 0; i < a->f.st[s].n_tensors; i++) {
                const fk_st_tensor *ta = &a->f.st[s].tensors[i], *tb = input_find(b, ta->name);
                if (!tb) return fk_error(FK_ERR_FORMAT, "%s: tensor %s is missing (%s has it)", b->dir, ta->name, a->dir);
                shape_str(ta, sa, sizeof sa);
                shape_str(tb, sb, sizeof sb);
                if (strcmp(sa, sb) != 0 || ta->ndim != tb->ndim)
                    return fk_error(FK_ERR_FORMAT, "%s: tensor %s has shape [%s] but %s has [%s]", b->dir, ta->name, sb, a->dir, sa);
                if (is_float(ta->dtype) != is_float(tb->dtype) || (!is_float(ta->dtype) && ta->dtype != tb->dtype))
                    return fk_error(FK_ERR_FORMAT, "%s: tensor %s has dtype %s but %s has %s", b->dir, ta->name,
                                    fk_dtype_name(tb->dtype), a->dir, fk_dtype_name(ta->dtype));
            }
        int64_t nb = 0;
        for (int s = 0; s < b->f.n; s++) nb += b->f.st[s].n_tensors;
        if (nb != na)
            for (int s = 0; s < b->f.n; s++)
                for (int i = 0; i < b->f.st[s].n_tensors; i++)
                    if (!input_find(a, b->f.st[s].tensors[i].name))
                        return fk_error(FK_ERR_FORMAT, "%s: tensor %s is not in %s", b->dir, b->f.st[s].tensors[i].name, a->dir);
    }
    return FK_OK;
}

// Whether two optional files have the same bytes (both absent counts as the same).
static bool same_file(const char *pa, const char *pb) {
    bool ea = fk_path_exists(pa), eb = fk_path_exists(pb);
    if (!ea || !eb) return ea == eb;
    char *x = NULL, *y = NULL;
    size_t nx = 0, ny = 0;
    bool eq = fk_read_file(pa, &x, &nx) == FK_OK && fk_read_file(pb, &y, &ny) == FK_OK && nx == ny && memcmp(x, y, nx) == 0;
    free(x); free(y);
    return eq;
}

// The inputs share one tokenizer: all have tokenizer.json or none has; the files are identical,
// or they load to tokenizers with the same fingerprint (same encodings, other formatting).
static fk_status check_tokenizers(const char *const *dirs, int m) {
    char *p0 = fk_path_join(dirs[0], "tokenizer.json"), *c0 = fk_path_join(dirs[0], "tokenizer_config.json");
    bool has0 = fk_path_exists(p0);
    fk_status st = FK_OK;
    for (int k = 1; k < m && st == FK_OK; k++) {
        char *pk = fk_path_join(dirs[k], "tokenizer.json"), *ck = fk_path_join(dirs[k], "tokenizer_config.json");
        bool hask = fk_path_exists(pk);
        if (has0 != hask) {
            st = fk_error(FK_ERR_FORMAT, "%s %s tokenizer.json but %s %s; merged models must share one tokenizer",
                          dirs[k], hask ? "has" : "has no", dirs[0], has0 ? "has one" : "has none");
        } else if (has0 && !(same_file(p0, pk) && same_file(c0, ck))) {
            fk_tokenizer *ta = NULL, *tb = NULL;
            st = fk_tok_load(dirs[0], &ta);
            if (st == FK_OK) st = fk_tok_load(dirs[k], &tb);
            if (st != FK_OK)
                fk_error_context(st, "%s/tokenizer.json differs from %s/tokenizer.json and cannot be compared", dirs[k], dirs[0]);
            else if (fk_tok_fingerprint(ta) != fk_tok_fingerprint(tb))
                st = fk_error(FK_ERR_FORMAT, "%s/tokenizer.json differs from %s/tokenizer.json (fingerprint %016llx, expected %016llx); "
                              "merged models must share one tokenizer", dirs[k], dirs[0],
                              (unsigned long long)fk_tok_fingerprint(tb), (unsigned long long)fk_tok_fingerprint(ta));
            fk_tok_free(ta);
            fk_tok_free(tb);
        }
        free(pk); free(ck);
    }
    free(p0); free(c0);
    return st;
}

// out_dir must not be one of the inputs (their files are being read while it is written).
static fk_status check_out_dir(const char *out_dir, const char *const *dirs, int m) {
    char *ro = realpath(out_dir, NULL);
    fk_status st = FK_OK;
    for (int k = 0; k < m && ro && st == FK_OK; k++) {
        char *rk = realpath(dirs[k], NULL);
        if (rk && strcmp(ro, rk) == 0)
            st = fk_error(FK_ERR_ARG, "merge: the output folder %s is one of the inputs (%s); write the merge to a new folder", out_dir, dirs[k]);
        free(rk);
    }
    free(ro);
    return st;
}

// ------------------------------------------------------------------ streaming writer

// The start of the output file (fk_st_header): float tensors in out_dtype, others as they are,
// in the first input's order; the metadata names the method, the base and the models.
static fk_status output_header(const merge_input *a, const fk_merge_opts *o, const char *const *dirs, int n,
                               const char *base_dir, char **hdr, size_t *len) {
    cJSON *meta = cJSON_CreateObject();
    cJSON_AddStringToObject(meta, "format", "pt");
    cJSON_AddStringToObject(meta, "fusekit_merge", fk_merge_method_name(o->method));
    if (base_dir) cJSON_AddStringToObject(meta, "fusekit_merge_base", base_dir);
    cJSON *models = cJSON_CreateArray();
    for (int i = 0; i < n; i++) cJSON_AddItemToArray(models, cJSON_CreateString(dirs[i]));
    char *models_txt = cJSON_PrintUnformatted(models);
    cJSON_Delete(models);
    if (models_txt) cJSON_AddStringToObject(meta, "fusekit_merge_models", models_txt);  // metadata values are strings
    free(models_txt);
    char *meta_txt = cJSON_PrintUnformatted(meta);
    cJSON_Delete(meta);
    int count = 0;
    for (int s = 0; s < a->f.n; s++) count += a->f.st[s].n_tensors;
    fk_st_entry *e = calloc((size_t)count + 1, sizeof *e);
    fk_status st = meta_txt && e ? FK_OK : fk_error(FK_ERR_NOMEM, "out of memory");
    for (int s = 0, k = 0; s < a->f.n && st == FK_OK; s++)
        for (int i = 0; i < a->f.st[s].n_tensors; i++, k++) {
            const fk_st_tensor *t = &a->f.st[s].tensors[i];
            e[k].name = t->name;
            e[k].dtype = is_float(t->dtype) ? o->out_dtype : t->dtype;
            e[k].ndim = t->ndim;
            memcpy(e[k].shape, t->shape, sizeof e[k].shape);
        }
    if (st == FK_OK) st = fk_st_header(e, count, meta_txt, hdr, len);
    free(e);
    free(meta_txt);
    return st;
}

// Drops the pages of a tensor from this process's resident set (they stay in the page cache),
// so reading every input once costs one tensor's worth of memory, not the models'.
static void release_pages(const fk_st_tensor *t) {
    long page = sysconf(_SC_PAGESIZE);
    if (page <= 0 || t->nbytes == 0) return;
    uintptr_t b = (uintptr_t)t->data & ~(uintptr_t)(page - 1), e = (uintptr_t)t->data + t->nbytes;
    madvise((void *)b, e - b, MADV_DONTNEED);
}

// A tensor as f32: the mapping itself when it is aligned f32, else converted into *buf.
static fk_status tensor_f32(const merge_input *in, const fk_st_tensor *t, float **buf, int64_t *cap, const float **out) {
    if (t->dtype == FK_DT_F32 && (uintptr_t)t->data % _Alignof(float) == 0) {
        *out = t->data;
    } else {
        if (t->numel > *cap) {
            float *g = realloc(*buf, (size_t)t->numel * sizeof(float));
            if (!g) return fk_error(FK_ERR_NOMEM, "out of memory converting %s/%s (%lld values)", in->dir, t->name, (long long)t->numel);
            *buf = g;
            *cap = t->numel;
        }
        fk_status st = fk_st_to_f32(t, *buf);
        if (st != FK_OK) return fk_error_context(st, "%s", in->dir);
        *out = *buf;
    }
    for (int64_t j = 0; j < t->numel; j++)
        if (!isfinite((*out)[j]))
            return fk_error(FK_ERR_NUMERIC, "%s: tensor %s[%lld] is not finite", in->dir, t->name, (long long)j);
    return FK_OK;
}

static fk_status copy_if_present(const char *from_dir, const char *to_dir, const char *name) {
    char *src = fk_path_join(from_dir, name), *dst = fk_path_join(to_dir, name);
    fk_status st = FK_OK;
    if (fk_path_exists(src)) {
        char *data = NULL;
        size_t n = 0;
        st = fk_read_file(src, &data, &n);
        if (st == FK_OK) st = fk_write_file_atomic(dst, data, n);
        free(data);
    }
    free(src); free(dst);
    return st;
}

// The first model's config.json with torch_dtype set to the output's.
static fk_status write_config(const char *from_dir, const char *to_dir, fk_dtype dt) {
    char *src = fk_path_join(from_dir, "config.json"), *dst = fk_path_join(to_dir, "config.json"), *text = NULL;
    fk_status st = fk_read_file(src, &text, NULL);
    cJSON *root = NULL;
    if (st == FK_OK) st = fk_json_parse(src, text, strlen(text), &root);
    if (st == FK_OK && !cJSON_IsObject(root)) st = fk_error(FK_ERR_FORMAT, "%s: not a JSON object", src);
    if (st == FK_OK) {
        cJSON_DeleteItemFromObjectCaseSensitive(root, "torch_dtype");
        cJSON_AddStringToObject(root, "torch_dtype", dt == FK_DT_F16 ? "float16" : dt == FK_DT_BF16 ? "bfloat16" : "float32");
        char *out = cJSON_Print(root);
        st = out ? fk_write_file_atomic(dst, out, strlen(out)) : fk_error(FK_ERR_NOMEM, "out of memory");
        free(out);
    }
    cJSON_Delete(root);
    free(text); free(src); free(dst);
    return st;
}

// ------------------------------------------------------------------ driver

// The arguments fk_merge refuses before it opens anything, with the reason.
static fk_status check_args(const fk_merge_opts *o, const char *const *model_dirs, const float *weights, int n,
                            const char *base_dir, const char *out_dir) {
    FK_TRY(check_opts(o));
    if (n < 1 || !model_dirs) return fk_error(FK_ERR_ARG, "merge: needs at least one --model");
    if (!out_dir) return fk_error(FK_ERR_ARG, "merge: needs an output folder");
    if (fk_merge_needs_base(o->method) && !base_dir)
        return fk_error(FK_ERR_ARG, "merge: method %s needs a base model (--base DIR): task vectors are differences from it",
                        fk_merge_method_name(o->method));
    if (!fk_merge_needs_base(o->method) && base_dir)
        return fk_error(FK_ERR_ARG, "merge: method %s does not use a base model (got %s)", fk_merge_method_name(o->method), base_dir);
    if (o->method == FK_MERGE_LINEAR && o->normalize) {
        double ws = 0;
        for (int i = 0; i < n; i++) ws += weights ? weights[i] : 1.0;
        if (fabs(ws) < 1e-12) return fk_error(FK_ERR_ARG, "merge: the weights sum to 0, so they cannot be normalised (use --no-normalize)");
    }
    return FK_OK;
}

// Streams the merged tensors into f, one at a time in the first input's order: the inputs'
// copies (mapped or converted), the result, its bytes. in: the n models, then the base when
// has_base (m inputs in all).
static fk_status write_tensors(const fk_merge_opts *o, const merge_input *in, int m, int n, bool has_base, const float *weights,
                               fk_afile *f) {
    const float **x = calloc((size_t)m, sizeof *x);
    const fk_st_tensor **tk = calloc((size_t)m, sizeof *tk);
    float **bufs = calloc((size_t)m, sizeof *bufs);
    int64_t *caps = calloc((size_t)m, sizeof *caps);
    float *out = NULL;
    int64_t out_cap = 0;
    fk_status st = x && tk && bufs && caps ? FK_OK : fk_error(FK_ERR_NOMEM, "out of memory");
    for (int s = 0; s < in[0].f.n && st == FK_OK; s++)
        for (int i = 0; i < in[0].f.st[s].n_tensors && st == FK_OK; i++) {
            const fk_st_tensor *t0 = &in[0].f.st[s].tensors[i];
            for (int k = 0; k < m; k++) tk[k] = k == 0 ? t0 : input_find(&in[k], t0->name);
            if (!is_float(t0->dtype)) {  // buffers: copied from the base, or the first model
                const fk_st_tensor *src = tk[has_base ? n : 0];
                st = fk_afile_write(f, src->data, src->nbytes);
            } else {
                for (int k = 0; k < m && st == FK_OK; k++) st = tensor_f32(&in[k], tk[k], &bufs[k], &caps[k], &x[k]);
                if (st == FK_OK && t0->numel > out_cap) {
                    float *g = realloc(out, (size_t)t0->numel * sizeof *out);
                    if (!g) st = fk_error(FK_ERR_NOMEM, "out of memory for tensor %s (%lld values)", t0->name, (long long)t0->numel);
                    else { out = g; out_cap = t0->numel; }
                }
                if (st == FK_OK) {
                    st = fk_merge_tensor(o, x, has_base ? x[n] : NULL, weights, n, t0->numel, out);
                    if (st != FK_OK) fk_error_context(st, "tensor %s", t0->name);
                }
                if (st == FK_OK && o->out_dtype != FK_DT_F32) {
                    uint16_t *h = (uint16_t *)out;  // in place: element j is written after it is read
                    for (int64_t j = 0; j < t0->numel; j++)
                        h[j] = o->out_dtype == FK_DT_F16 ? fk_f32_to_f16(out[j]) : fk_f32_to_bf16(out[j]);
                }
                if (st == FK_OK) st = fk_afile_write(f, out, (size_t)t0->numel * fk_dtype_size(o->out_dtype));
            }
            for (int k = 0; k < m; k++) if (tk[k]) release_pages(tk[k]);
        }
    for (int k = 0; bufs && k < m; k++) free(bufs[k]);
    free(out); free(x); free(tk); free(bufs); free(caps);
    return st;
}

fk_status fk_merge(const fk_merge_opts *o, const char *const *model_dirs, const float *weights, int n,
                   const char *base_dir, const char *out_dir) {
    FK_TRY(check_args(o, model_dirs, weights, n, base_dir, out_dir));
    int m = n + (base_dir ? 1 : 0);  // inputs: the models, then the base
    const char **dirs = calloc((size_t)m, sizeof *dirs);
    merge_input *in = calloc((size_t)m, sizeof *in);
    if (!dirs || !in) { free(dirs); free(in); return fk_error(FK_ERR_NOMEM, "out of memory"); }
    for (int k = 0; k < n; k++) dirs[k] = model_dirs[k];
    if (base_dir) dirs[n] = base_dir;
    fk_status st = FK_OK;
    int opened = 0;
    while (opened < m && st == FK_OK) {
        st = input_open(&in[opened], dirs[opened]);
        if (st == FK_OK) opened++;
    }
    if (st == FK_OK) st = check_compatible(in, m);
    if (st == FK_OK) st = check_tokenizers(dirs, m);
    if (st == FK_OK) st = fk_mkdir_p(out_dir);
    if (st == FK_OK) st = check_out_dir(out_dir, dirs, m);

    size_t hlen = 0;
    char *hdr = NULL;
    if (st == FK_OK) st = output_header(&in[0], o, model_dirs, n, base_dir, &hdr, &hlen);
    char *path = fk_path_join(out_dir, "model.safetensors");
    fk_afile f;
    bool file_open = false;
    if (st == FK_OK) {
        st = fk_afile_open(&f, path);
        file_open = st == FK_OK;
    }
    if (st == FK_OK) st = fk_afile_write(&f, hdr, hlen);
    if (st == FK_OK) st = write_tensors(o, in, m, n, base_dir != NULL, weights, &f);
    if (file_open) {
        if (st == FK_OK) st = fk_afile_commit(&f);
        else fk_afile_abort(&f);
    }
    if (st == FK_OK) st = write_config(model_dirs[0], out_dir, o->out_dtype);
    const char *extra[] = {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json"};
    for (size_t e = 0; e < sizeof extra / sizeof extra[0] && st == FK_OK; e++) st = copy_if_present(model_dirs[0], out_dir, extra[e]);

    for (int k = 0; k < opened; k++) input_close(&in[k]);
    free(hdr); free(path);
    free(dirs); free(in);
    return st;
}
