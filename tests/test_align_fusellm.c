// The FuseLLM-faithful alignment (FK_ALIGN_FUSELLM, FK_VMAP_FUSELLM*) against FuseLLM's own
// functions: tests/data/fusellm_align/<src>--<tgt>.txt, written by
// tools/ref/make_fusellm_align_golden.py (others.py's dtw and transform_step_logits,
// vocab_mapping.py's find_best_mapping, run on fusekit's tokenizations of real text). Every
// aligned source range, every use-the-source decision (hard and soft) and every mapped id must
// be identical (tolerance: none). The same figures for fusekit's own modes (dtw, offsets,
// mined) are printed beside them, not asserted: they differ from FuseLLM by design. Plus exact
// hand-checked cases of the token strings, the code-point distance and the special case.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "fusekit/align.h"
#include "fuse/align_internal.h"
#include "test_util.h"

#define GOLD FK_TEST_DATA "/fusellm_align"
#define TOKDIR FK_SHARED_DATA "/tokenizers"

static const char *PAIRS[] = {"mpt--llama-spm", "phi-3--llama-spm", "llama-spm--gpt-2", "falcon--gpt-2", "starcoder--llama-spm",
                              "gpt-2--deepseek-llm", "demo-A--demo-B", "demo-C--demo-B"};

static fk_tokenizer *load_named(const char *name) {
    char path[512];
    if (strncmp(name, "demo-", 5) == 0) snprintf(path, sizeof path, "%s/demo/%s", GOLD, name + 5);
    else snprintf(path, sizeof path, "%s/ggml-vocab-%s.gguf", TOKDIR, name);
    fk_tokenizer *t = NULL;
    if (fk_tok_load(path, &t) != FK_OK) fail_msg("%s: %s", path, fk_last_error());
    return t;
}

// ---------------------------------------------------------------- golden files
typedef struct {
    int64_t ns, nt;
    int32_t *sids, *tids;
    int64_t *sbeg, *tbeg, *lo, *hi;
    uint8_t *hard, *soft;
} gseq;

// The numbers after `key` on line *p (advanced past it) into out (n of them).
static void read_row(char **p, const char *key, int64_t n, int64_t *out) {
    size_t kl = strlen(key);
    if (strncmp(*p, key, kl) != 0 || (*p)[kl] != ' ') fail_msg("golden: expected a line '%s', got '%.40s'", key, *p);
    char *s = *p + kl;
    for (int64_t i = 0; i < n; i++) out[i] = strtoll(s, &s, 10);
    if (*s != '\n') fail_msg("golden: line '%s' has more than %lld numbers", key, (long long)n);
    *p = s + 1;
}

static void read_seq(char **p, gseq *g) {
    if (sscanf(*p, "seq %*s %lld %lld", (long long *)&g->ns, (long long *)&g->nt) != 2) fail_msg("golden: bad seq line");
    *p = strchr(*p, '\n') + 1;
    int64_t ns = g->ns, nt = g->nt, *tmp = malloc(sizeof *tmp * (size_t)(ns > nt ? ns + 1 : nt + 1));
    g->sids = malloc(sizeof(int32_t) * (size_t)ns);
    g->tids = malloc(sizeof(int32_t) * (size_t)nt);
    g->sbeg = malloc(sizeof(int64_t) * (size_t)(ns + 1));
    g->tbeg = malloc(sizeof(int64_t) * (size_t)(nt + 1));
    g->lo = malloc(sizeof(int64_t) * (size_t)nt);
    g->hi = malloc(sizeof(int64_t) * (size_t)nt);
    g->hard = malloc((size_t)nt);
    g->soft = malloc((size_t)nt);
    read_row(p, "sids", ns, tmp);
    for (int64_t i = 0; i < ns; i++) g->sids[i] = (int32_t)tmp[i];
    read_row(p, "sbeg", ns + 1, g->sbeg);
    read_row(p, "tids", nt, tmp);
    for (int64_t i = 0; i < nt; i++) g->tids[i] = (int32_t)tmp[i];
    read_row(p, "tbeg", nt + 1, g->tbeg);
    read_row(p, "lo", nt, g->lo);
    read_row(p, "hi", nt, g->hi);
    read_row(p, "hard", nt, tmp);
    for (int64_t i = 0; i < nt; i++) g->hard[i] = (uint8_t)tmp[i];
    read_row(p, "soft", nt, tmp);
    for (int64_t i = 0; i < nt; i++) g->soft[i] = (uint8_t)tmp[i];
    free(tmp);
}

static void gseq_free(gseq *g) {
    free(g->sids); free(g->tids); free(g->sbeg); free(g->tbeg); free(g->lo); free(g->hi); free(g->hard); free(g->soft);
}

// Target tokens whose aligned source range is FuseLLM's, and whose use-the-source decision is `use`'s.
typedef struct { int64_t n, pairs, uses; } agree;

static void compare(const fk_alignment *a, const gseq *g, const uint8_t *use, agree *r, int64_t *first_bad) {
    for (int64_t j = 0; j < g->nt; j++) {
        bool same = a->lo[j] == g->lo[j] && a->hi[j] == g->hi[j];
        bool same_use = a->one_to_one[j] == use[j];
        r->pairs += same;
        r->uses += same_use;
        if ((!same || !same_use) && *first_bad < 0) *first_bad = j;
    }
    r->n += g->nt;
}

static double pct(int64_t a, int64_t n) { return n ? 100.0 * (double)a / (double)n : 100.0; }

// One pair's file: FuseLLM's alignment pairs, decisions and map against every mode.
static void check_pair(const char *pair) {
    char path[512], src[64], tgt[64];
    snprintf(path, sizeof path, "%s/%s.txt", GOLD, pair);
    size_t n;
    char *text = NULL;
    CHECK(fk_read_file(path, &text, &n));
    char *p = text;
    if (sscanf(p, "pair %63s %63s", src, tgt) != 2) fail_msg("%s: no pair line", path);
    p = strchr(p, '\n') + 1;
    fk_tokenizer *S = load_named(src), *T = load_named(tgt);
    int32_t *vm = NULL, *vm_exact = NULL, *vm_mined = NULL;
    CHECK(fk_vmap_build(S, T, FK_VMAP_FUSELLM, &vm));
    CHECK(fk_vmap_build(S, T, FK_VMAP_FUSELLM_EXACT, &vm_exact));
    CHECK(fk_vmap_build(S, T, FK_VMAP_MINED, &vm_mined));
    agree hard = {0}, soft = {0}, dtw = {0}, offs = {0};
    while (strncmp(p, "seq ", 4) == 0) {
        gseq g;
        read_seq(&p, &g);
        fk_tokseq s = {g.ns, g.sids, g.sbeg}, t = {g.nt, g.tids, g.tbeg};
        fk_alignment a;
        int64_t bad = -1;
        CHECK(fk_align_tokens(S, &s, T, &t, FK_ALIGN_FUSELLM, vm_exact, &a));  // hard: the exact string map
        compare(&a, &g, g.hard, &hard, &bad);
        if (bad >= 0)
            fail_msg("%s: hard, target token %lld: fusekit [%lld, %lld) use %d, FuseLLM [%lld, %lld) use %d", pair, (long long)bad,
                     (long long)a.lo[bad], (long long)a.hi[bad], a.one_to_one[bad], (long long)g.lo[bad], (long long)g.hi[bad],
                     g.hard[bad]);
        fk_alignment_free(&a);
        CHECK(fk_align_tokens(S, &s, T, &t, FK_ALIGN_FUSELLM, vm, &a));  // soft: MinED
        compare(&a, &g, g.soft, &soft, &bad);
        if (bad >= 0)
            fail_msg("%s: soft, target token %lld: fusekit use %d, FuseLLM %d", pair, (long long)bad, a.one_to_one[bad], g.soft[bad]);
        fk_alignment_free(&a);
        // fusekit's own modes beside it (not asserted)
        CHECK(fk_align_tokens(S, &s, T, &t, FK_ALIGN_DTW, NULL, &a));
        compare(&a, &g, g.hard, &dtw, &bad);
        fk_alignment_free(&a);
        CHECK(fk_align_tokens(S, &s, T, &t, FK_ALIGN_OFFSETS, NULL, &a));
        compare(&a, &g, g.hard, &offs, &bad);
        fk_alignment_free(&a);
        gseq_free(&g);
    }
    int64_t maps = 0, same = 0, same_mined = 0, tied = 0;
    for (int32_t sid, tid, ties; sscanf(p, "map %d %d %d", &sid, &tid, &ties) == 3; p = strchr(p, '\n') + 1) {
        if (sid < 0 || sid >= fk_tok_vocab_size(S)) fail_msg("%s: map line source id %d", pair, sid);
        if (vm[sid] != tid) fail_msg("%s: source token %d maps to %d, FuseLLM's find_best_mapping to %d", pair, sid, vm[sid], tid);
        maps++;
        same += vm[sid] == tid;
        same_mined += vm_mined[sid] == tid;
        tied += ties > 1;
    }
    assert_true(maps > 100);
    assert_true(*p == 0);
    print_message("%-22s %5lld target tokens: fusellm pairs %.2f%% decisions hard %.2f%% soft %.2f%% | dtw pairs %.2f%% decisions %.2f%% | "
                  "offsets pairs %.2f%% decisions %.2f%% || %lld mapped ids (%lld tied): fusellm %.2f%%, mined %.2f%%\n",
                  pair, (long long)hard.n, pct(hard.pairs, hard.n), pct(hard.uses, hard.n), pct(soft.uses, soft.n), pct(dtw.pairs, dtw.n),
                  pct(dtw.uses, dtw.n), pct(offs.pairs, offs.n), pct(offs.uses, offs.n), (long long)maps, (long long)tied,
                  pct(same, maps), pct(same_mined, maps));
    free(vm);
    free(vm_exact);
    free(vm_mined);
    fk_tok_free(S);
    fk_tok_free(T);
    free(text);
}

// The demo's tokenizers (small vocabularies: the fast tier).
static void test_demo_pairs(void **state) {
    (void)state;
    for (size_t k = 0; k < sizeof PAIRS / sizeof *PAIRS; k++)
        if (strncmp(PAIRS[k], "demo-", 5) == 0) check_pair(PAIRS[k]);
}

// Real vocabularies (whole-vocabulary maps of 32k-100k tokens: test_align_fusellm_real, slow tier).
static void test_real_pairs(void **state) {
    (void)state;
    if (!fk_path_exists(TOKDIR)) {
        print_message("../shared/data is absent: FuseLLM alignment goldens of real tokenizers skipped\n");
        return;
    }
    for (size_t k = 0; k < sizeof PAIRS / sizeof *PAIRS; k++)
        if (strncmp(PAIRS[k], "demo-", 5) != 0) check_pair(PAIRS[k]);
}

// ---------------------------------------------------------------- hand-checked cases
static fk_tokenizer *tiny(fk_tok_kind kind, const char *const *pieces, int n) {
    uint32_t lens[64];
    for (int i = 0; i < n; i++) lens[i] = (uint32_t)strlen(pieces[i]);
    fk_tok_spec sp = {.kind = kind, .n_vocab = n, .pieces = pieces, .piece_lens = lens, .bos = -1, .eos = -1, .unk = -1, .pad = -1};
    fk_tokenizer *t = NULL;
    CHECK(fk_tok_build(&sp, &t));
    return t;
}

static void test_strings_and_distance(void **state) {
    (void)state;
    // SentencePiece: "▁" dropped, "<0x0A>" kept as it is; byte-level: "Ġ" dropped, "Ċ" kept
    static const char *sp[] = {"<unk>", "\xE2\x96\x81the", "<0x0A>", "\xC3\xA9t\xC3\xA9", "\xE2\x96\x81\xE2\x96\x81"};
    static const char *bp[] = {"\xC4\xA0the", "\xC4\x8A", "\xC3\x83\xC2\xA9", "the", "\xC4\xA0\xC4\xA0x"};
    fk_tokenizer *S = tiny(FK_TOK_SPM, sp, 5), *B = tiny(FK_TOK_BPE, bp, 5);
    uint32_t buf[16];
    assert_int_equal(fk_fusellm_token(S, 1, buf, 16), 3);
    assert_int_equal(buf[0], 't');
    assert_int_equal(fk_fusellm_token(S, 2, buf, 16), 6);  // "<0x0A>"
    assert_int_equal(fk_fusellm_token(S, 3, buf, 16), 3);  // "été": 3 code points
    assert_int_equal(buf[0], 0xE9);
    assert_int_equal(fk_fusellm_token(S, 4, buf, 16), 0);
    assert_int_equal(fk_fusellm_token(B, 1, buf, 16), 1);  // "Ċ"
    assert_int_equal(buf[0], 0x10A);
    assert_int_equal(fk_fusellm_token(B, 4, buf, 16), 1);
    // code-point distances, by hand: "été" vs "Ã©" (é in GPT-2's byte form) = 3; "<0x0A>" vs "Ċ" = 6
    uint32_t a[16], b[16];
    size_t na = fk_fusellm_token(S, 3, a, 16), nb = fk_fusellm_token(B, 2, b, 16);
    assert_int_equal(fk_cp_distance(NULL, a, na, b, nb, INT64_MAX - 1), 3);
    fk_cpeq *q = calloc(1, sizeof *q);
    assert_true(fk_cpeq_set(q, a, na));
    assert_int_equal(fk_cp_distance(q, a, na, b, nb, INT64_MAX - 1), 3);
    fk_cpeq_clear(q, a, na);
    na = fk_fusellm_token(S, 2, a, 16);
    nb = fk_fusellm_token(B, 1, b, 16);
    assert_true(fk_cpeq_set(q, a, na));
    assert_int_equal(fk_cp_distance(q, a, na, b, nb, INT64_MAX - 1), 6);
    assert_int_equal(fk_cp_distance(q, a, na, b, nb, 2), 3);  // bounded: > 2
    fk_cpeq_clear(q, a, na);
    for (int i = 0; i < 512; i++) assert_int_equal(q->lo[i], 0);  // cleared for the next pattern
    // hashed code points (>= 512) in the pattern: "▁▁x" style strings against each other
    uint32_t h1[] = {0x2581, 0x4E2D, 'a', 0x2581}, h2[] = {0x4E2D, 0x2581, 'a'};
    assert_true(fk_cpeq_set(q, h1, 4));
    assert_int_equal(fk_cp_distance(q, h1, 4, h2, 3, INT64_MAX - 1), fk_cp_distance(NULL, h1, 4, h2, 3, INT64_MAX - 1));
    assert_int_equal(fk_cp_distance(NULL, h1, 4, h2, 3, INT64_MAX - 1), 3);  // (editdistance.eval: 3)
    fk_cpeq_clear(q, h1, 4);
    for (int i = 0; i < 128; i++) assert_int_equal(q->val[i], 0);
    free(q);
    // agreement: "Ġthe" (byte-level source) equals "▁the" (SentencePiece target); "the" only as
    // the first token (the special case) ; a SentencePiece source never gets the marker added
    assert_true(fk_fusellm_agree(B, 0, S, 1, false, NULL));
    assert_false(fk_fusellm_agree(B, 3, S, 1, false, NULL));
    assert_true(fk_fusellm_agree(B, 3, S, 1, true, NULL));
    assert_false(fk_fusellm_agree(S, 1, B, 3, true, NULL));
    // soft: the map decides; at the first token the prefixed string's token ("Ġthe" = id 0) is looked up
    int32_t map[5] = {1, -1, -1, 4, -1};
    assert_true(fk_fusellm_agree(B, 3, S, 4, false, map));
    assert_false(fk_fusellm_agree(B, 3, S, 4, true, map));
    // the vocabulary map: "Ġthe" -> "▁the" exactly; "the" -> "▁the" (distance 1, before "<0x0A>"
    // ...); "Ċ" -> nearest by code points; "ĠĠx" -> "▁▁" (1 substitution: "▁▁" vs "▁▁x" = 1)
    int32_t *m = NULL;
    CHECK(fk_vmap_build(B, S, FK_VMAP_FUSELLM, &m));
    assert_int_equal(m[0], 1);
    assert_int_equal(m[3], 1);
    assert_int_equal(m[4], 4);
    free(m);
    CHECK(fk_vmap_build(B, S, FK_VMAP_FUSELLM_EXACT, &m));
    assert_int_equal(m[0], 1);
    assert_int_equal(m[3], -1);
    free(m);
    fk_align_mode am;
    fk_vmap_mode vmode;
    CHECK(fk_align_parse_mode("fusellm", &am));
    assert_int_equal(am, FK_ALIGN_FUSELLM);
    assert_string_equal(fk_align_mode_name(am), "fusellm");
    CHECK(fk_vmap_parse_mode("fusellm-exact", &vmode));
    assert_string_equal(fk_vmap_mode_name(vmode), "fusellm-exact");
    assert_int_equal(fk_vmap_parse_mode("fuse", &vmode), FK_ERR_ARG);
    fk_tok_free(S);
    fk_tok_free(B);
}

int main(int argc, char **argv) {
    const struct CMUnitTest fast[] = {
        cmocka_unit_test(test_strings_and_distance),
        cmocka_unit_test(test_demo_pairs),
    };
    const struct CMUnitTest real[] = {cmocka_unit_test(test_real_pairs)};
    if (argc > 1 && strcmp(argv[1], "--real") == 0) return cmocka_run_group_tests(real, NULL, NULL);
    return cmocka_run_group_tests(fast, NULL, NULL);
}
