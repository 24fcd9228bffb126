// Frozen models in their stored precision (issue 20): a model folder's F16/BF16 matrices, single
// file or sharded, and a GGUF file's F16/BF16 matrices, read where the files map them. Loaded
// frozen (FK_LOAD_FROZEN) a model gives the logits of the same file decoded to f32 — the decoded
// load is itself checked against transformers' logits (tests/data/golden, test_hf), and the frozen
// one is checked against them here too — while its own weight memory holds only the f32 norms:
// fk_model_weight_bytes, the library's accounting, equals the stored bytes plus 4 bytes per
// norm weight, less than the file.
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <cmocka.h>

#include "fusekit/gguf_model.h"
#include "fusekit/hf.h"
#include "fusekit/model.h"
#include "fusekit/model_load.h"
#include "fusekit/safetensors.h"
#include "test_util.h"

// Logits: frozen vs decoded, relative to the largest |logit| (the two differ only in the order of
// the float sums inside the products); against transformers' goldens as test_hf (TOL_LOGITS there).
#define TOL_SAME 1e-5
#define TOL_GOLDEN 1e-4

static char *golden_dir(const char *name) {
    static char buf[512];
    snprintf(buf, sizeof buf, "%s/golden/%s", FK_TEST_DATA, name);
    return buf;
}

// The golden's inputs (B rows of T + 1 ids: the first T are the inputs) and logits.
typedef struct {
    fk_safetensors g;
    int B, T;
    int32_t x[256];
    const float *logits;
} golden;

static void golden_open(golden *gd, const char *dir) {
    char path[600];
    snprintf(path, sizeof path, "%s/golden.safetensors", dir);
    CHECK(fk_st_open(&gd->g, path));
    const fk_st_tensor *tok = fk_st_find(&gd->g, "tokens"), *lg = fk_st_find(&gd->g, "logits");
    assert_non_null(tok);
    assert_non_null(lg);
    gd->B = (int)tok->shape[0];
    gd->T = (int)tok->shape[1] - 1;
    assert_true(gd->B * gd->T <= 256);
    const int32_t *t = tok->data;
    for (int b = 0; b < gd->B; b++)
        for (int i = 0; i < gd->T; i++) gd->x[b * gd->T + i] = t[b * (gd->T + 1) + i];
    gd->logits = lg->data;
}

// The largest |a - b| over n values, and the largest |a| into *amax.
static double max_diff(const float *a, const float *b, int64_t n, double *amax) {
    double d = 0, m = 0;
    for (int64_t i = 0; i < n; i++) {
        d = fmax(d, fabs((double)a[i] - b[i]));
        m = fmax(m, fabs((double)a[i]));
    }
    if (amax) *amax = m;
    return d;
}

// Bytes of the norm weights (the f32 tensors a frozen load copies) and of the matrices at 2 bytes.
static void split_bytes(const fk_model *m, size_t *norms, size_t *mats) {
    *norms = *mats = 0;
    for (int i = 0; i < m->n_params; i++) {
        const fk_param *p = &m->params[i];
        if (fk_param_storable(p->kind)) *mats += (size_t)p->numel * 2;
        else *norms += (size_t)p->numel * 4;
    }
}

static size_t file_size(const char *path) {
    struct stat sb;
    assert_int_equal(stat(path, &sb), 0);
    return (size_t)sb.st_size;
}

// Loads `path` decoded and frozen and checks the frozen model: stored matrices, the weight memory
// (fk_model_weight_bytes == matrices at 2 bytes + f32 norms, below file_bytes), every row as the
// decoded load has it, and the logits of gd's inputs equal to the decoded load's and transformers'.
static void check_frozen(const char *path, size_t file_bytes, const golden *gd, int want_stored) {
    fk_model d, f;
    CHECK(fk_model_load(path, 0, &d, NULL));
    CHECK(fk_model_load(path, FK_LOAD_FROZEN, &f, NULL));
    assert_false(fk_model_is_frozen(&d));
    assert_true(fk_model_is_frozen(&f));
    assert_int_equal(f.n_stored, want_stored);
    size_t norms, mats;
    split_bytes(&f, &norms, &mats);
    assert_int_equal(fk_model_weight_bytes(&f), mats + norms);
    assert_true(fk_model_weight_bytes(&f) < file_bytes);
    assert_int_equal(fk_model_weight_bytes(&d), mats * 2 + norms);
    // the f16/bf16 -> f32 conversion is exact: every row, one at a time, bit for bit the decoded one
    float *row = malloc((size_t)(d.cfg.d_model > d.cfg.vocab_size ? d.cfg.d_model : d.cfg.vocab_size) * 64 * sizeof(float));
    assert_non_null(row);
    for (int i = 0; i < d.n_params; i++) {
        const fk_param *p = &d.params[i];
        int64_t R = p->ndim == 2 ? p->shape[0] : 1, C = p->numel / R;
        for (int64_t r = 0; r < R; r++) {
            CHECK(fk_model_read_rows(&f, i, r, 1, row));
            if (memcmp(row, d.w + p->offset + r * C, (size_t)C * sizeof(float)) != 0) fail_msg("%s: row %lld of %s differs", path, (long long)r, p->name);
        }
    }
    free(row);
    int64_t n = (int64_t)gd->B * gd->T * d.cfg.vocab_size;
    CHECK(fk_model_forward(&d, gd->x, NULL, gd->B, gd->T, false, NULL));
    CHECK(fk_model_forward(&f, gd->x, NULL, gd->B, gd->T, false, NULL));
    double amax, same = max_diff(fk_model_logits(&d), fk_model_logits(&f), n, &amax);
    if (!(same <= TOL_SAME * fmax(1.0, amax))) fail_msg("%s: frozen logits differ from the decoded load's by %.3g", path, same);
    double gold = gd->logits ? max_diff(fk_model_logits(&f), gd->logits, n, NULL) : 0;
    if (!(gold < TOL_GOLDEN)) fail_msg("%s: frozen logits differ from transformers' by %.3g", path, gold);
    fk_model_free(&d);
    fk_model_free(&f);
}

// A Llama with 2 layers: q, k, v, o, gate, up and down of each layer, the embedding and the head.
enum { LLAMA_STORED = 2 * 7 + 2 };

static void test_folder_bf16_f16(void **s) {
    (void)s;
    const char *names[] = {"llama_bf16", "llama_f16"};
    for (int i = 0; i < 2; i++) {
        golden gd;
        golden_open(&gd, golden_dir(names[i]));
        char st[600];
        snprintf(st, sizeof st, "%s/model.safetensors", golden_dir(names[i]));
        check_frozen(golden_dir(names[i]), file_size(st), &gd, LLAMA_STORED);
        fk_st_close(&gd.g);
    }
}

// Copies the golden folder `name` into dst with its tensors split over n shards named by
// model.safetensors.index.json (as transformers writes large models); `poison`: a tensor whose
// element 3 becomes NaN (NULL: none).
static void write_sharded(const char *name, const char *dst, int n, const char *poison) {
    char path[600];
    fk_safetensors src;
    snprintf(path, sizeof path, "%s/model.safetensors", golden_dir(name));
    CHECK(fk_st_open(&src, path));
    assert_int_equal(mkdir(dst, 0755), 0);
    fk_st_entry *e = calloc((size_t)src.n_tensors, sizeof *e);
    unsigned char **copies = calloc((size_t)src.n_tensors, sizeof *copies);
    assert_non_null(e);
    assert_non_null(copies);
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dst);
    FILE *idx = fopen(path, "w");
    assert_non_null(idx);
    fprintf(idx, "{\"metadata\": {}, \"weight_map\": {");
    for (int i = 0; i < src.n_tensors; i++) {
        const fk_st_tensor *t = &src.tensors[i];
        e[i] = (fk_st_entry){.name = t->name, .dtype = t->dtype, .ndim = t->ndim, .data = t->data};
        memcpy(e[i].shape, t->shape, sizeof e[i].shape);
        if (poison && strcmp(t->name, poison) == 0) {
            copies[i] = malloc(t->nbytes);
            assert_non_null(copies[i]);
            memcpy(copies[i], t->data, t->nbytes);
            copies[i][7] = 0x7f;  // element 3 of a little-endian 16-bit tensor: exponent all ones, mantissa set
            copies[i][6] = 0xc1;
            e[i].data = copies[i];
        }
        fprintf(idx, "%s\"%s\": \"model-%05d-of-%05d.safetensors\"", i ? ", " : "", t->name, i * n / src.n_tensors + 1, n);
    }
    fprintf(idx, "}}\n");
    fclose(idx);
    for (int k = 0; k < n; k++) {
        int i0 = (k * src.n_tensors + n - 1) / n, i1 = ((k + 1) * src.n_tensors + n - 1) / n;
        snprintf(path, sizeof path, "%s/model-%05d-of-%05d.safetensors", dst, k + 1, n);
        CHECK(fk_st_write(path, e + i0, i1 - i0, NULL));
    }
    char *cfg;
    snprintf(path, sizeof path, "%s/config.json", golden_dir(name));
    CHECK(fk_read_file(path, &cfg, NULL));
    snprintf(path, sizeof path, "%s/config.json", dst);
    CHECK(fk_write_file_atomic(path, cfg, strlen(cfg)));
    free(cfg);
    for (int i = 0; i < src.n_tensors; i++) free(copies[i]);
    free(copies);
    free(e);
    fk_st_close(&src);
}

// The same bf16 weights in 3 shards: the same stored matrices and logits as the single file.
static void test_folder_sharded(void **s) {
    (void)s;
    char *dir = tpath("bf16_sharded");
    write_sharded("llama_bf16", dir, 3, NULL);
    size_t bytes = 0;
    for (int k = 1; k <= 3; k++) {
        char p[600];
        snprintf(p, sizeof p, "%s/model-%05d-of-00003.safetensors", dir, k);
        bytes += file_size(p);
    }
    golden gd;
    golden_open(&gd, golden_dir("llama_bf16"));
    check_frozen(dir, bytes, &gd, LLAMA_STORED);
    // bit for bit the single file's frozen logits: the same rows, multiplied the same way
    fk_model a, b;
    CHECK(fk_model_load(golden_dir("llama_bf16"), FK_LOAD_FROZEN, &a, NULL));
    CHECK(fk_model_load(dir, FK_LOAD_FROZEN, &b, NULL));
    CHECK(fk_model_forward(&a, gd.x, NULL, gd.B, gd.T, false, NULL));
    CHECK(fk_model_forward(&b, gd.x, NULL, gd.B, gd.T, false, NULL));
    assert_memory_equal(fk_model_logits(&a), fk_model_logits(&b), (size_t)gd.B * gd.T * a.cfg.vocab_size * sizeof(float));
    fk_model_free(&a);
    fk_model_free(&b);
    fk_st_close(&gd.g);
}

// A NaN in a matrix read in place is refused when the folder is opened, naming file and tensor.
static void test_folder_nan(void **s) {
    (void)s;
    char *dir = tpath("bf16_nan");
    write_sharded("llama_bf16", dir, 2, "model.layers.1.mlp.up_proj.weight");
    fk_model m;
    assert_int_equal(fk_model_load(dir, FK_LOAD_FROZEN, &m, NULL), FK_ERR_NUMERIC);
    assert_non_null(strstr(fk_last_error(), "model.layers.1.mlp.up_proj.weight"));
    assert_non_null(strstr(fk_last_error(), "non-finite"));
    assert_non_null(strstr(fk_last_error(), ".safetensors"));
}

// An F32 folder has nothing to keep in its stored type: a frozen load is the decoded one.
static void test_folder_f32_decoded(void **s) {
    (void)s;
    fk_model m;
    CHECK(fk_model_load(golden_dir("llama_sharded"), FK_LOAD_FROZEN, &m, NULL));
    assert_false(fk_model_is_frozen(&m));
    fk_model_free(&m);
}

// GGUF files with BF16 and F16 matrices (fusekit's export of the bf16 golden): frozen as decoded.
static void test_gguf_bf16_f16(void **s) {
    (void)s;
    fk_model m;
    CHECK(fk_model_load(golden_dir("llama_bf16"), 0, &m, NULL));
    const fk_dtype types[] = {FK_DT_BF16, FK_DT_F16};
    const char *names[] = {"bf16.gguf", "f16.gguf"};
    golden gd;
    golden_open(&gd, golden_dir("llama_bf16"));
    for (int i = 0; i < 2; i++) {
        char *path = tpath(names[i]);
        CHECK(fk_gguf_export(&m, NULL, path, types[i], NULL, NULL));
        // llama.cpp's GGUF keeps q/k rows interleaved per head: those are stored with rope_hd set.
        // F16 holds bf16's 8-bit significands but not its smallest exponents: the golden's logits
        // (transformers on the bf16 weights) are the reference only for BF16.
        const float *lg = gd.logits;
        if (types[i] != FK_DT_BF16) gd.logits = NULL;
        check_frozen(path, file_size(path), &gd, LLAMA_STORED);
        gd.logits = lg;
    }
    fk_st_close(&gd.g);
    fk_model_free(&m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_folder_bf16_f16), cmocka_unit_test(test_folder_sharded), cmocka_unit_test(test_folder_nan),
        cmocka_unit_test(test_folder_f32_decoded), cmocka_unit_test(test_gguf_bf16_f16),
    };
    return cmocka_run_group_tests(tests, tmpdir_setup, tmpdir_teardown);
}
