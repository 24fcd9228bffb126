// The alignment report (fk_align_report_compute, fusekit align): exact counts on two tiny
// byte-level BPE tokenizers whose encodings, alignment and vocabulary map are worked out by
// hand below; the readable token texts; the same counts through `fusekit align`'s JSON; the
// verb on trained tokenizers of the demo's kinds (BPE and SentencePiece-style); fuse writing
// the report beside its stores; and bad input (no tokenizer, empty text, a shard, -o taken).
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <cjson/cJSON.h>

#include "fusekit/fusekit.h"
#include "test_util.h"

// ---------------------------------------------------------------- the hand-made pair
// Target T (GPT-2 pre-tokenizer; merges in rank order a+b, Ġ+ab, Ġ+c):
//   0 a  1 b  2 c  3 Ġ  4 ab  5 Ġab  6 Ġc  7 <|endoftext|> (control, BOS)  8 Ċ  9 Ã©  10 ÿ  11 backslash
// Source S (merges b+c, Ġ+a, a+b):
//   0 a  1 b  2 c  3 Ġ  4 bc  5 Ġa  6 ab  7 <s> (control, BOS)
// TEXT "ab abc c abc a", pre-tokens "ab" " abc" " c" " abc" " a":
//   T: ab | Ġab c | Ġc | Ġab c | Ġ a           8 tokens, spans 0-2 2-5 5-6 6-8 8-11 11-12 12-13 13-14
//   S: ab | Ġa bc | Ġ c | Ġa bc | Ġa           8 tokens, spans 0-2 2-4 4-6 6-7 7-8 8-10 10-12 12-14
// Offsets alignment (shared boundaries 0 2 6 8 12 14):
//   ab = ab: one to one. [2,6): the region's DTW over "ab" "c" (T) and "a" "bc" (S), costs
//   ed(a,ab)=1 ed(a,c)=1 ed(bc,ab)=2 ed(bc,c)=1: the diagonal, Ġab -> Ġa and c -> bc, one
//   source token each (many to one). [6,8): Ġc -> Ġ c (one to many). [8,12) as [2,6).
//   [12,14): Ġ and a -> Ġa (many to one). So 1:1 1, 1:n 1, n:1 6, none 0.
// Vocabulary map, mined: a b c Ġ ab exact; <s> -> T's BOS (special); bc -> b (distance 1,
// tied with c and Ġc: the lowest id), Ġa -> a (distance 1, lowest id): fallback.
// On the text S's tokens: ab Ġ c exact (3 tokens), Ġa x3 and bc x2 fallback (5).
static const char TEXT[] = "ab abc c abc a";

static fk_tokenizer *bpe(const char *const *pieces, int n, const int32_t (*merges)[2], int n_merges, int32_t bos) {
    uint32_t lens[16];
    uint8_t types[16];
    for (int i = 0; i < n; i++) {
        lens[i] = (uint32_t)strlen(pieces[i]);
        types[i] = i == bos ? FK_TT_CONTROL : FK_TT_NORMAL;
    }
    fk_tok_spec s = {.kind = FK_TOK_BPE, .n_vocab = n, .pieces = pieces, .piece_lens = lens, .types = types, .n_merges = n_merges,
                     .merges = merges, .pre = "gpt-2", .bos = bos, .eos = -1, .unk = -1, .pad = -1};
    fk_tokenizer *t = NULL;
    CHECK(fk_tok_build(&s, &t));
    return t;
}

static fk_tokenizer *tok_T(void) {
    static const char *const p[] = {"a", "b", "c", "\xC4\xA0", "ab", "\xC4\xA0" "ab", "\xC4\xA0" "c", "<|endoftext|>",
                                    "\xC4\x8A", "\xC3\x83\xC2\xA9", "\xC3\xBF", "\\"};
    static const int32_t m[][2] = {{0, 1}, {3, 4}, {3, 2}};
    return bpe(p, 12, m, 3, 7);
}

static fk_tokenizer *tok_S(void) {
    static const char *const p[] = {"a", "b", "c", "\xC4\xA0", "bc", "\xC4\xA0" "a", "ab", "<s>"};
    static const int32_t m[][2] = {{1, 2}, {3, 0}, {0, 1}};
    return bpe(p, 8, m, 3, 7);
}

static fk_align_report report_of(fk_vmap_mode vmap, int top) {
    fk_tokenizer *T = tok_T(), *S = tok_S();
    fk_align_opts o;
    fk_align_opts_default(&o);
    o.vmap = vmap;
    fk_align_report r;
    CHECK(fk_align_report_compute(S, T, TEXT, strlen(TEXT), &o, top, &r));
    fk_tok_free(T);
    fk_tok_free(S);
    return r;
}

static void test_hand_counts(void **s) {
    (void)s;
    fk_align_report r = report_of(FK_VMAP_MINED, 10);
    assert_int_equal(r.bytes, 14);
    assert_int_equal(r.tgt_tokens, 8);
    assert_int_equal(r.src_tokens, 8);
    assert_int_equal(r.one_to_one, 1);
    assert_int_equal(r.one_to_many, 1);
    assert_int_equal(r.many_to_one, 6);
    assert_int_equal(r.unaligned, 0);
    assert_int_equal(r.src_vocab, 8);
    assert_int_equal(r.tgt_vocab, 12);
    const int64_t ids[FK_MAP_CLASSES] = {5, 1, 2, 0}, text[FK_MAP_CLASSES] = {3, 0, 5, 0};
    for (int k = 0; k < FK_MAP_CLASSES; k++) {
        assert_int_equal(r.vocab[k], ids[k]);
        assert_int_equal(r.text[k], text[k]);
    }
    // Ġa (3 on the text) -> a, then bc (2) -> b
    assert_int_equal(r.n_mismatch, 2);
    assert_int_equal(r.mismatch[0].count, 3);
    assert_int_equal(r.mismatch[0].src, 5);
    assert_int_equal(r.mismatch[0].tgt, 0);
    assert_int_equal(r.mismatch[1].count, 2);
    assert_int_equal(r.mismatch[1].src, 4);
    assert_int_equal(r.mismatch[1].tgt, 1);
    char line[400];
    fk_align_report_line(&r, line, sizeof line);
    assert_non_null(strstr(line, "1:1 12.5% of target tokens (1:n 12.5%, n:1 75.0%, none 0.0%)"));
    assert_non_null(strstr(line, "exact 62.5% of ids, 37.5% of the text's tokens"));
    assert_non_null(strstr(line, "1.75 vs 1.75 bytes per token"));
    fk_align_report_free(&r);
}

// The other maps: exact drops Ġa and bc (unmapped, still listed as mismatches); prefix sends
// Ġa to Ġ (the longest target token starting " a") and bc to b; top cuts the list.
static void test_vmap_modes(void **s) {
    (void)s;
    fk_align_report r = report_of(FK_VMAP_EXACT, 10);
    const int64_t ids[FK_MAP_CLASSES] = {5, 1, 0, 2}, text[FK_MAP_CLASSES] = {3, 0, 0, 5};
    for (int k = 0; k < FK_MAP_CLASSES; k++) {
        assert_int_equal(r.vocab[k], ids[k]);
        assert_int_equal(r.text[k], text[k]);
    }
    assert_int_equal(r.one_to_one, 1);  // the alignment does not depend on the map
    assert_int_equal(r.n_mismatch, 2);
    assert_int_equal(r.mismatch[0].tgt, -1);
    assert_int_equal(r.mismatch[1].tgt, -1);
    fk_align_report_free(&r);
    r = report_of(FK_VMAP_PREFIX, 1);
    assert_int_equal(r.vocab[FK_MAP_FALLBACK], 2);
    assert_int_equal(r.n_mismatch, 1);
    assert_int_equal(r.mismatch[0].src, 5);
    assert_int_equal(r.mismatch[0].tgt, 3);
    fk_align_report_free(&r);
    r = report_of(FK_VMAP_MINED, 0);
    assert_int_equal(r.n_mismatch, 0);
    fk_align_report_free(&r);
}

static void test_token_text(void **s) {
    (void)s;
    fk_tokenizer *T = tok_T();
    char b[64];
    assert_string_equal(fk_align_token_text(T, 5, b, sizeof b), " ab");
    assert_string_equal(fk_align_token_text(T, 8, b, sizeof b), "\\n");
    assert_string_equal(fk_align_token_text(T, 9, b, sizeof b), "\xC3\xA9");  // é, valid UTF-8
    assert_string_equal(fk_align_token_text(T, 10, b, sizeof b), "\\xFF");   // a lone byte
    assert_string_equal(fk_align_token_text(T, 11, b, sizeof b), "\\\\");
    assert_string_equal(fk_align_token_text(T, 7, b, sizeof b), "<|endoftext|>");
    assert_string_equal(fk_align_token_text(T, 5, b, 6), " a...");  // cut to fit 6 bytes with the NUL
    fk_tok_free(T);
}

static void test_bad_input(void **s) {
    (void)s;
    fk_tokenizer *T = tok_T(), *S = tok_S();
    fk_align_opts o;
    fk_align_opts_default(&o);
    fk_align_report r;
    assert_int_equal(fk_align_report_compute(S, T, "", 0, &o, 10, &r), FK_ERR_ARG);
    assert_non_null(strstr(fk_last_error(), "empty"));
    assert_int_equal(fk_align_report_compute(S, T, TEXT, strlen(TEXT), &o, -1, &r), FK_ERR_ARG);
    fk_tok_free(T);
    fk_tok_free(S);
}

// ---------------------------------------------------------------- the verb

static cJSON *read_json(const char *path) {
    cJSON *j = NULL;
    CHECK(fk_json_read(path, &j));
    return j;
}

static double jget(const cJSON *o, const char *a, const char *b, const char *c) {
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(o, a);
    if (b) x = cJSON_GetObjectItemCaseSensitive(x, b);
    if (c) x = cJSON_GetObjectItemCaseSensitive(x, c);
    if (!cJSON_IsNumber(x)) fail_msg("no number at %s.%s.%s", a, b ? b : "", c ? c : "");
    return x->valuedouble;
}

// The hand-made pair through `fusekit align`: the same counts in align_report.json, the table.
static void test_cli_hand(void **s) {
    (void)s;
    fk_tokenizer *T = tok_T(), *S = tok_S();
    CHECK(fk_tok_save_hf(T, tpath("hT")));
    CHECK(fk_tok_save_hf(S, tpath("hS")));
    fk_tok_free(T);
    fk_tok_free(S);
    spit(tpath("hand.txt"), TEXT, strlen(TEXT));
    char *out;
    int rc = run(&out, "%s align --target %s --source %s --data %s -o %s", FK_CLI, tpath("hT"), tpath("hS"), tpath("hand.txt"), tpath("hrep"));
    if (rc != 0) fail_msg("align failed:\n%s", out);
    assert_non_null(strstr(out, "12.5%"));
    assert_non_null(strstr(out, "\" a\" (5) -> \"a\" (0)"));
    free(out);
    cJSON *j = read_json(tpath("hrep/align_report.json"));
    assert_int_equal((int)jget(j, "target_tokens", NULL, NULL), 8);
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(j, "align")->valuestring, "offsets");
    const cJSON *src = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(j, "sources"), 0);
    assert_int_equal((int)jget(src, "target_tokens", "one_to_one", "count"), 1);
    assert_int_equal((int)jget(src, "target_tokens", "one_to_many", "count"), 1);
    assert_int_equal((int)jget(src, "target_tokens", "many_to_one", "count"), 6);
    assert_int_equal((int)jget(src, "vocab_map_ids", "special", "count"), 1);
    assert_int_equal((int)jget(src, "vocab_map_text", "fallback", "count"), 5);
    const cJSON *m = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(src, "top_mismatches"), 0);
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(m, "source_text")->valuestring, " a");
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(m, "target_text")->valuestring, "a");
    cJSON_Delete(j);
    size_t n;
    char *html = slurp(tpath("hrep/align_report.html"), &n);
    assert_non_null(strstr(html, "Target tokens by alignment"));
    assert_non_null(strstr(html, "on the text (%)"));
    free(html);
    // -o exists: refused without --force; --vmap exact through the option
    RUN_FAILS(2, "-o", "%s align --target %s --source %s --data %s -o %s", FK_CLI, tpath("hT"), tpath("hS"), tpath("hand.txt"), tpath("hrep"));
    RUN_OK("%s align --target %s --source %s --data %s --vmap exact -o %s --force", FK_CLI, tpath("hT"), tpath("hS"), tpath("hand.txt"),
           tpath("hrep"));
    j = read_json(tpath("hrep/align_report.json"));
    src = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(j, "sources"), 0);
    assert_int_equal((int)jget(src, "vocab_map_text", "unmapped", "count"), 5);
    cJSON_Delete(j);
}

// The demo's corpus and tokenizers: the target SentencePiece-style BPE 512 (the demo's B), the
// sources byte-level BPE 384 with Qwen2's pre-tokenizer (A) and 768 with GPT-2's (C).
static void demo_tokenizers(void) {
    static bool done;
    if (done) return;
    done = true;
    RUN_OK("%s data synth -o %s --bytes 20000", FK_CLI, tpath("syn"));
    RUN_OK("%s tokenizer train --pre qwen2 --data %s/mix/train.txt --vocab 384 -o %s", FK_CLI, tpath("syn"), tpath("tA"));
    RUN_OK("%s tokenizer train --pre gpt-2 --data %s/mix/train.txt --vocab 768 -o %s", FK_CLI, tpath("syn"), tpath("tC"));
    RUN_OK("%s tokenizer train --kind spm --data %s/mix/train.txt --vocab 512 -o %s", FK_CLI, tpath("syn"), tpath("tT"));
}

// Two sources: the shares of each sum to 1, the target as its own source aligns one to one
// everywhere with every id exact.
static void test_cli_trained(void **s) {
    (void)s;
    demo_tokenizers();
    char *out;
    int rc = run(&out, "%s align --target %s --source %s --source %s %s --data %s/mix/valid.txt -o %s --top 5 --threads 1", FK_CLI, tpath("tT"),
                 tpath("tA"), tpath("tC"), tpath("tT"), tpath("syn"), tpath("rep"));
    if (rc != 0) fail_msg("align failed:\n%s", out);
    free(out);
    cJSON *j = read_json(tpath("rep/align_report.json"));
    const cJSON *srcs = cJSON_GetObjectItemCaseSensitive(j, "sources");
    assert_int_equal(cJSON_GetArraySize(srcs), 3);
    for (int i = 0; i < 3; i++) {
        const cJSON *q = cJSON_GetArrayItem(srcs, i);
        double a = 0, v = 0, t = 0;
        const char *al[] = {"one_to_one", "one_to_many", "many_to_one", "unaligned"}, *mc[] = {"exact", "special", "fallback", "unmapped"};
        for (int k = 0; k < 4; k++) {
            a += jget(q, "target_tokens", al[k], "count");
            v += jget(q, "vocab_map_ids", mc[k], "count");
            t += jget(q, "vocab_map_text", mc[k], "count");
        }
        assert_int_equal((int64_t)a, (int64_t)jget(j, "target_tokens", NULL, NULL));
        assert_int_equal((int64_t)v, (int64_t)jget(q, "vocab", NULL, NULL));
        assert_int_equal((int64_t)t, (int64_t)jget(q, "tokens", NULL, NULL));
        assert_true(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(q, "top_mismatches")) <= 5);
        if (i < 2) assert_true(jget(q, "target_tokens", "one_to_one", "share") < 1);
    }
    const cJSON *self = cJSON_GetArrayItem(srcs, 2);
    assert_true(jget(self, "target_tokens", "one_to_one", "share") == 1);
    assert_true(jget(self, "vocab_map_ids", "exact", "share") == 1);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(self, "top_mismatches")), 0);
    cJSON_Delete(j);
}

static void test_cli_bad_input(void **s) {
    (void)s;
    demo_tokenizers();
    const char *F = FK_CLI;
    RUN_FAILS(2, "--target, --source and --data are required", "%s align --target %s --data %s/mix/valid.txt", F, tpath("tT"), tpath("syn"));
    CHECK(fk_mkdir_p(tpath("notok")));
    RUN_FAILS(1, "--source", "%s align --target %s --source %s --data %s/mix/valid.txt", F, tpath("tT"), tpath("notok"), tpath("syn"));
    RUN_FAILS(1, "no-such", "%s align --target %s/no-such --source %s --data %s/mix/valid.txt", F, tpath("tT"), tpath("tA"), tpath("syn"));
    spit(tpath("empty.txt"), "", 0);
    RUN_FAILS(1, "empty", "%s align --target %s --source %s --data %s", F, tpath("tT"), tpath("tA"), tpath("empty.txt"));
    RUN_FAILS(1, "no-such.txt", "%s align --target %s --source %s --data %s", F, tpath("tT"), tpath("tA"), tpath("no-such.txt"));
    RUN_FAILS(2, "--vmap", "%s align --target %s --source %s --data %s/mix/valid.txt --vmap nearest", F, tpath("tT"), tpath("tA"), tpath("syn"));
    RUN_FAILS(2, "--top", "%s align --target %s --source %s --data %s/mix/valid.txt --top -1", F, tpath("tT"), tpath("tA"), tpath("syn"));
}

// fuse writes the report beside its stores and notes a line per source before extracting.
static void test_fuse_writes_report(void **s) {
    (void)s;
    demo_tokenizers();
    const char *F = FK_CLI, *shape = "--d-model 16 --layers 1 --heads 2 --ctx 32 --batch 4 --eval-every 0 --log-every 1000 --val-frac 0";
    RUN_OK("%s train --data %s/mix/valid.txt --tokenizer %s -o %s --arch llama %s --steps 2", F, tpath("syn"), tpath("tT"), tpath("mT"), shape);
    RUN_OK("%s train --data %s/mix/valid.txt --tokenizer %s -o %s --arch gpt2 %s --steps 2", F, tpath("syn"), tpath("tA"), tpath("mA"), shape);
    char *out;
    int rc = run(&out, "%s fuse --target %s --source %s --data %s/mix/valid.txt -o %s --steps 1 %s", F, tpath("mT"), tpath("mA"), tpath("syn"),
                 tpath("fz"), shape);
    if (rc != 0) fail_msg("fuse failed:\n%s", out);
    const char *note = strstr(out, "alignment of "), *store = strstr(out, "store ");
    if (!note || !store || note > store) fail_msg("no alignment line before the extraction:\n%s", out);
    free(out);
    cJSON *j = read_json(tpath("fz/stores/align_report.json"));
    const cJSON *srcs = cJSON_GetObjectItemCaseSensitive(j, "sources");
    assert_int_equal(cJSON_GetArraySize(srcs), 1);  // the target, its own source, is left out
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(srcs, 0), "source")->valuestring, tpath("mA"));
    cJSON_Delete(j);
    assert_true(fk_path_exists(tpath("fz/stores/align_report.html")));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hand_counts), cmocka_unit_test(test_vmap_modes), cmocka_unit_test(test_token_text),
        cmocka_unit_test(test_bad_input), cmocka_unit_test(test_cli_hand), cmocka_unit_test(test_cli_trained),
        cmocka_unit_test(test_cli_bad_input), cmocka_unit_test(test_fuse_writes_report),
    };
    return cmocka_run_group_tests(tests, tmpdir_setup, tmpdir_teardown);
}
