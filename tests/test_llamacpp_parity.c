// Perplexity parity with llama.cpp for each model family fusekit exports to GGUF (issue 18):
// tests/data/gguf/llamacpp_ppl/<family>/ is a small model of the family (the family's own
// transformers class, trained a few steps by fusekit with a fusekit-trained tokenizer) and
// llama_cpp.json the perplexity llama.cpp's llama-perplexity gave on eval.txt for the model's
// F32 GGUF export, made by tools/ref/make_llamacpp_ppl.py (llama.cpp is not needed here).
// fusekit's llama-perplexity protocol (fk_eval_llama_ppl, what `fusekit eval --protocol
// llama-perplexity` runs) on the folder must give the same chunks and a perplexity within
// 1e-4 relative of llama.cpp's (its figure is printed to 4 decimals); the export must be the
// recorded GGUF architecture and import back to the same perplexity (1e-6 relative: F32).
// A family folder may also hold convert_hf_to_gguf.gguf, llama.cpp's own converter's file of
// it (qwen3: tools/ref/compare_convert_hf_to_gguf.py, which found it tensor for tensor equal to
// fusekit's export): importing it must give the folder's weights bit for bit and the same
// perplexity with the file's own tokenizer.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <cjson/cJSON.h>
#include <dirent.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fusekit/fusekit.h"
#include "test_util.h"

#define PPL_DIR FK_TEST_DATA "/gguf/llamacpp_ppl"
#define REL_LLAMA_CPP 1e-4
#define REL_ROUND_TRIP 1e-6

// The protocol on one model and its tokenizer, over eval.txt less its final newline (as
// llama.cpp reads -f and `fusekit eval` follows); *chunks gets the chunk count.
static double llama_ppl(fk_model *m, const fk_tokenizer *tok, int n_ctx, int64_t *chunks) {
    fk_tok_out o = {0};
    size_t n = 0;
    char *text = slurp(PPL_DIR "/eval.txt", &n);
    if (n > 0 && text[n - 1] == '\n') n--;
    CHECK(fk_tok_encode(tok, text, n, FK_ENC_ADD_SPECIAL, &o));
    free(text);
    int32_t bos = fk_tok_adds_bos(tok) ? fk_tok_bos(tok) : -1;
    fk_eval_result r;
    CHECK(fk_eval_llama_ppl(m, o.ids, o.n, n_ctx, bos, 4, (int64_t)n, &r));
    *chunks = o.n / n_ctx;
    fk_tok_out_free(&o);
    return r.ppl;
}

static double num(const cJSON *j, const char *key, const char *file) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, key);
    if (!cJSON_IsNumber(v)) fail_msg("%s: no number %s", file, key);
    return v->valuedouble;
}

// One family's folder against its llama_cpp.json.
static void check_family(const char *name) {
    char dir[512], path[600];
    snprintf(dir, sizeof dir, "%s/%s", PPL_DIR, name);
    snprintf(path, sizeof path, "%s/llama_cpp.json", dir);
    size_t n;
    char *text = slurp(path, &n);
    cJSON *j = cJSON_Parse(text);
    if (!j) fail_msg("%s: not JSON", path);
    int n_ctx = (int)num(j, "n_ctx", path);
    int64_t want_chunks = (int64_t)num(j, "chunks", path);
    double want = num(cJSON_GetObjectItemCaseSensitive(j, "llama_cpp"), "f32", path);
    const char *want_arch = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(j, "gguf_arch"));
    assert_non_null(want_arch);

    fk_model m, g;
    fk_tokenizer *tok = NULL, *gtok = NULL;
    CHECK(fk_model_load(dir, 0, &m, &tok));
    assert_non_null(tok);
    int64_t chunks;
    double ppl = llama_ppl(&m, tok, n_ctx, &chunks);
    print_message("%-8s %-7s chunks %3lld  fusekit %.6f  llama.cpp %.4f  rel %+.2e\n", name, want_arch, (long long)chunks, ppl,
                  want, ppl / want - 1);
    assert_int_equal(chunks, want_chunks);
    if (fabs(ppl / want - 1) > REL_LLAMA_CPP) fail_msg("%s: fusekit %.6f, llama.cpp %.4f", name, ppl, want);

    const char *arch = NULL;
    CHECK(fk_gguf_model_arch(&m.cfg, &arch));
    assert_string_equal(arch, want_arch);
    CHECK(fk_gguf_export(&m, tok, tpath("m.gguf"), FK_DT_F32, NULL, NULL));
    CHECK(fk_gguf_import(tpath("m.gguf"), &g, &gtok));
    double ppl_g = llama_ppl(&g, gtok, n_ctx, &chunks);
    assert_int_equal(chunks, want_chunks);
    if (fabs(ppl_g / ppl - 1) > REL_ROUND_TRIP) fail_msg("%s: folder %.6f, its GGUF export %.6f", name, ppl, ppl_g);
    fk_model_free(&g);
    fk_tok_free(gtok);

    snprintf(path, sizeof path, "%s/convert_hf_to_gguf.gguf", dir);
    struct stat st;
    if (stat(path, &st) == 0) {
        CHECK(fk_gguf_import(path, &g, &gtok));
        assert_int_equal(g.n_floats, m.n_floats);
        assert_memory_equal(g.w, m.w, (size_t)m.n_floats * sizeof(float));
        double ppl_c = llama_ppl(&g, gtok, n_ctx, &chunks);
        assert_int_equal(chunks, want_chunks);
        if (fabs(ppl_c / ppl - 1) > REL_ROUND_TRIP) fail_msg("%s: folder %.6f, the converter's file %.6f", name, ppl, ppl_c);
        print_message("%-8s convert_hf_to_gguf.py's file: the same weights, perplexity %.6f\n", name, ppl_c);
        fk_model_free(&g);
        fk_tok_free(gtok);
    }
    fk_model_free(&m);
    fk_tok_free(tok);
    cJSON_Delete(j);
    free(text);
}

static int by_name(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

// Every family folder present (tools/ref/make_llamacpp_ppl.py adds one per family).
static void test_families(void **s) {
    (void)s;
    DIR *d = opendir(PPL_DIR);
    assert_non_null(d);
    char *names[64];
    int k = 0;
    for (struct dirent *e; (e = readdir(d)) && k < 64;) {
        char p[600];
        struct stat st;
        snprintf(p, sizeof p, "%s/%s/llama_cpp.json", PPL_DIR, e->d_name);
        if (e->d_name[0] != '.' && stat(p, &st) == 0) names[k++] = strdup(e->d_name);
    }
    closedir(d);
    assert_true(k >= 7);  // gpt2, llama, qwen2, qwen3, gemma, gemma2, gemma3 at least
    qsort(names, (size_t)k, sizeof names[0], by_name);
    for (int i = 0; i < k; i++) {
        check_family(names[i]);
        free(names[i]);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_families),
    };
    return cmocka_run_group_tests(tests, tmpdir_setup, tmpdir_teardown);
}
