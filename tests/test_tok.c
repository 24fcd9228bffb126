// Tokenizers against real vocabularies: llama.cpp's GGUF test vectors (exact ids),
// tokenizer.json round trips on the corpora, decode(encode(x)) == x, offsets that tile
// the input, invalid UTF-8, empty input, malformed files.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "fusekit/tokenizer.h"
#include "tok/tok_internal.h"
#include "test_util.h"

#define TOKDIR FK_SHARED_DATA "/tokenizers"
#define CORPORA FK_SHARED_DATA "/corpora"

static const char *const vocabs[] = {"gpt-2", "mpt", "falcon", "starcoder", "refact", "deepseek-llm", "deepseek-coder",
                                     "llama-spm", "phi-3"};
#define N_VOCABS (int)(sizeof vocabs / sizeof vocabs[0])
static const char *const corpora[] = {"wikitext2/test.txt", "shakespeare/input.txt", "linux/train.txt"};

static bool have_shared(void) {
    if (fk_path_exists(TOKDIR)) return true;
    print_message("../shared/data is absent: tokenizer tests on real vocabularies skipped\n");
    return false;
}

static fk_tokenizer *load_vocab(const char *name) {
    char path[512];
    snprintf(path, sizeof path, "%s/ggml-vocab-%s.gguf", TOKDIR, name);
    fk_tokenizer *t = NULL;
    fk_status st = fk_tok_load(path, &t);
    if (st != FK_OK) fail_msg("%s: %s", path, fk_last_error());
    return t;
}

static char *read_all(const char *path, size_t *n) {
    char *buf;
    if (fk_read_file(path, &buf, n) != FK_OK) fail_msg("%s", fk_last_error());
    return buf;
}

// Spans tile [0, n): contiguous, ordered, covering everything.
static void assert_tiles(const fk_tok_out *o, size_t n, const char *what) {
    int64_t at = 0;
    for (int64_t i = 0; i < o->n; i++) {
        if (o->begin[i] != at || o->end[i] < o->begin[i])
            fail_msg("%s: token %lld spans [%lld, %lld), expected to start at %lld", what, (long long)i, (long long)o->begin[i],
                     (long long)o->end[i], (long long)at);
        at = o->end[i];
    }
    if (at != (int64_t)n) fail_msg("%s: spans end at %lld, input has %zu bytes", what, (long long)at, n);
}

static void test_vectors(void **state) {
    (void)state;
    if (!have_shared()) skip();
    for (int v = 0; v < N_VOCABS; v++) {
        fk_tokenizer *t = load_vocab(vocabs[v]);
        char path[512];
        size_t ni, no;
        snprintf(path, sizeof path, "%s/ggml-vocab-%s.gguf.inp", TOKDIR, vocabs[v]);
        char *inp = read_all(path, &ni);
        snprintf(path, sizeof path, "%s/ggml-vocab-%s.gguf.out", TOKDIR, vocabs[v]);
        char *outp = read_all(path, &no);
        const char *sep = "\n__ggml_vocab_test__\n";
        char *s = inp, *line = outp;
        int cases = 0, bad = 0;
        fk_tok_out o = {0};
        for (;;) {
            char *e = strstr(s, sep);
            if (!e) break;
            char *eol = strchr(line, '\n');
            assert_non_null(eol);
            *eol = 0;
            fk_tok_out_clear(&o);
            assert_int_equal(fk_tok_encode(t, s, (size_t)(e - s), 0, &o), FK_OK);
            assert_tiles(&o, (size_t)(e - s), vocabs[v]);
            // Expected ids, space separated.
            int64_t k = 0;
            bool ok = true;
            for (char *p = line; *p;) {
                while (*p == ' ') p++;
                if (!*p) break;
                long id = strtol(p, &p, 10);
                if (k >= o.n || o.ids[k] != id) ok = false;
                k++;
            }
            if (k != o.n) ok = false;
            if (!ok) {
                bad++;
                char got[4096];
                size_t g = 0;
                for (int64_t i = 0; i < o.n && g + 16 < sizeof got; i++) g += (size_t)snprintf(got + g, sizeof got - g, " %d", o.ids[i]);
                got[g] = 0;
                print_message("%s case %d '%.*s'\n  expected%s\n  got     %s\n", vocabs[v], cases, (int)(e - s), s, line, got);
            }
            cases++;
            s = e + strlen(sep);
            line = eol + 1;
        }
        if (bad || cases != 46) fail_msg("%s: %d of %d vectors differ", vocabs[v], bad, cases);
        fk_tok_out_free(&o);
        free(inp);
        free(outp);
        fk_tok_free(t);
    }
}

// tokenizer.json written by fusekit loads back and encodes every corpus identically; the
// spans tile each corpus and decode(encode(x)) == x for every vocabulary.
static void test_json_roundtrip(void **state) {
    (void)state;
    if (!have_shared()) skip();
    for (int v = 0; v < N_VOCABS; v++) {
        fk_tokenizer *t = load_vocab(vocabs[v]);
        char dir[512];
        snprintf(dir, sizeof dir, "%s/json-%s", tmpdir, vocabs[v]);
        if (fk_tok_save_hf(t, dir) != FK_OK) fail_msg("%s: %s", vocabs[v], fk_last_error());
        fk_tokenizer *u = NULL;
        if (fk_tok_load(dir, &u) != FK_OK) fail_msg("%s: %s", vocabs[v], fk_last_error());
        assert_int_equal(fk_tok_vocab_size(u), fk_tok_vocab_size(t));
        assert_int_equal(fk_tok_bos(u), fk_tok_bos(t));
        assert_int_equal(fk_tok_eos(u), fk_tok_eos(t));
        for (int c = 0; c < 3; c++) {
            char path[512];
            size_t n;
            snprintf(path, sizeof path, "%s/%s", CORPORA, corpora[c]);
            char *text = read_all(path, &n);
            fk_tok_out a = {0}, b = {0};
            assert_int_equal(fk_tok_encode(t, text, n, 0, &a), FK_OK);
            assert_int_equal(fk_tok_encode(u, text, n, 0, &b), FK_OK);
            assert_tiles(&a, n, path);
            char *back;
            size_t nb;
            assert_int_equal(fk_tok_decode(t, a.ids, a.n, 0, &back, &nb), FK_OK);
            if (nb != n || memcmp(back, text, n) != 0) fail_msg("%s on %s: decode(encode(x)) != x", vocabs[v], corpora[c]);
            free(back);
            int64_t diff = -1;
            for (int64_t i = 0; i < a.n && i < b.n && diff < 0; i++)
                if (a.ids[i] != b.ids[i]) diff = i;
            if (diff < 0 && a.n != b.n) diff = a.n < b.n ? a.n : b.n;
            if (diff >= 0)
                fail_msg("%s on %s: tokenizer.json encodes differently from token %lld (byte %lld): %d vs %d", vocabs[v], corpora[c],
                         (long long)diff, (long long)(diff < a.n ? a.begin[diff] : -1), diff < a.n ? a.ids[diff] : -1,
                         diff < b.n ? b.ids[diff] : -1);
            fk_tok_out_free(&a);
            fk_tok_out_free(&b);
            free(text);
        }
        fk_tok_free(u);
        fk_tok_free(t);
    }
}

// GGUF metadata written by fusekit loads back with the same encodings.
static void test_gguf_roundtrip(void **state) {
    (void)state;
    if (!have_shared()) skip();
    const char *text = "Hello, y'all! How are you \xF0\x9F\x98\x81 ?\xE6\x88\x91 3333 \n\n  \t x";
    for (int v = 0; v < N_VOCABS; v++) {
        fk_tokenizer *t = load_vocab(vocabs[v]);
        fk_gguf_writer *w = fk_gguf_writer_new();
        assert_non_null(w);
        assert_int_equal(fk_tok_to_gguf(t, w), FK_OK);
        char path[512];
        snprintf(path, sizeof path, "%s/%s.gguf", tmpdir, vocabs[v]);
        assert_int_equal(fk_gguf_writer_write(w, path), FK_OK);
        fk_gguf_writer_free(w);
        fk_tokenizer *u = NULL;
        if (fk_tok_load(path, &u) != FK_OK) fail_msg("%s: %s", vocabs[v], fk_last_error());
        assert_int_equal(fk_tok_fingerprint(u), fk_tok_fingerprint(t));
        fk_tok_out a = {0}, b = {0};
        assert_int_equal(fk_tok_encode(t, text, strlen(text), FK_ENC_ADD_SPECIAL, &a), FK_OK);
        assert_int_equal(fk_tok_encode(u, text, strlen(text), FK_ENC_ADD_SPECIAL, &b), FK_OK);
        assert_int_equal(a.n, b.n);
        assert_memory_equal(a.ids, b.ids, sizeof(int32_t) * (size_t)a.n);
        fk_tok_out_free(&a);
        fk_tok_out_free(&b);
        fk_tok_free(u);
        fk_tok_free(t);
    }
}

static void test_invalid_utf8_and_empty(void **state) {
    (void)state;
    fk_tokenizer *ts[3] = {NULL, NULL, NULL};
    assert_int_equal(fk_tok_new_bytes(&ts[0]), FK_OK);
    int nt = 1;
    if (fk_path_exists(TOKDIR)) {
        ts[1] = load_vocab("gpt-2");
        ts[2] = load_vocab("llama-spm");
        nt = 3;
    }
    const char bad[] = "ok \xFF\xFE broken \xC3 end \xE2\x82 x \xED\xA0\x80 surrogate \xF4\x90\x80\x80 high \xC0\xAF overlong";
    for (int k = 0; k < nt; k++) {
        fk_tok_out o = {0};
        assert_int_equal(fk_tok_encode(ts[k], "", 0, 0, &o), FK_OK);
        assert_int_equal(o.n, 0);
        char *back;
        size_t nb;
        assert_int_equal(fk_tok_decode(ts[k], o.ids, 0, 0, &back, &nb), FK_OK);
        assert_int_equal(nb, 0);
        free(back);
        assert_int_equal(fk_tok_encode(ts[k], bad, sizeof bad - 1, 0, &o), FK_OK);
        assert_tiles(&o, sizeof bad - 1, "invalid utf-8");
        assert_int_equal(fk_tok_decode(ts[k], o.ids, o.n, 0, &back, &nb), FK_OK);
        assert_int_equal(nb, sizeof bad - 1);
        assert_memory_equal(back, bad, nb);
        free(back);
        fk_tok_out_free(&o);
        fk_tok_free(ts[k]);
    }
}

// BOS/EOS per configuration, special-token parsing on and off, ids and pieces.
static void test_specials(void **state) {
    (void)state;
    if (!have_shared()) skip();
    fk_tokenizer *t = load_vocab("llama-spm");
    fk_tok_out o = {0};
    const char *txt = "<s>Hi";
    assert_int_equal(fk_tok_encode(t, txt, strlen(txt), FK_ENC_ADD_SPECIAL, &o), FK_OK);
    assert_int_equal(o.ids[0], 1);  // BOS added, "<s>" in the text stays text
    assert_true(o.n > 3);
    assert_int_equal(o.begin[0], 0);
    assert_int_equal(o.end[0], 0);
    fk_tok_out_clear(&o);
    assert_int_equal(fk_tok_encode(t, txt, strlen(txt), FK_ENC_PARSE_SPECIAL, &o), FK_OK);
    assert_int_equal(o.ids[0], 1);  // "<s>" parsed as the control token
    assert_int_equal(o.end[0], 3);
    char *back;
    size_t nb;
    assert_int_equal(fk_tok_decode(t, o.ids, o.n, FK_DEC_SKIP_SPECIAL, &back, &nb), FK_OK);
    assert_string_equal(back, "Hi");  // as Hugging Face's Strip decoder: the first space goes
    free(back);
    assert_int_equal(fk_tok_decode(t, o.ids, o.n, 0, &back, &nb), FK_OK);
    assert_string_equal(back, "<s>Hi");  // decode(encode(x)) == x
    free(back);
    assert_int_equal(fk_tok_find(t, "\xE2\x96\x81Hello", 8), 15043);
    uint32_t l;
    const char *p = fk_tok_piece(t, 15043, &l);
    assert_int_equal(l, 8);
    assert_memory_equal(p, "\xE2\x96\x81Hello", 8);
    char buf[16];
    assert_int_equal(fk_tok_token_bytes(t, 15043, buf, sizeof buf), 6);
    assert_memory_equal(buf, " Hello", 6);
    assert_int_equal(fk_tok_token_bytes(t, fk_tok_find(t, "<0x0A>", 6), buf, sizeof buf), 1);
    assert_int_equal(buf[0], '\n');
    fk_tok_out_free(&o);
    fk_tok_free(t);

    // the dummy prefix after an added token goes again on decoding
    t = load_vocab("phi-3");
    txt = "a</s>b <s> c";
    fk_tok_out_clear(&o);
    assert_int_equal(fk_tok_encode(t, txt, strlen(txt), FK_ENC_PARSE_SPECIAL, &o), FK_OK);
    assert_int_equal(fk_tok_decode(t, o.ids, o.n, 0, &back, &nb), FK_OK);
    assert_string_equal(back, txt);
    free(back);
    fk_tok_free(t);

    t = load_vocab("gpt-2");
    txt = "a<|endoftext|>b";
    assert_int_equal(fk_tok_encode(t, txt, strlen(txt), 0, &o), FK_OK);
    assert_true(o.n > 3);  // written out as text
    fk_tok_out_clear(&o);
    assert_int_equal(fk_tok_encode(t, txt, strlen(txt), FK_ENC_PARSE_SPECIAL, &o), FK_OK);
    assert_int_equal(o.n, 3);
    assert_int_equal(o.ids[1], 50256);
    assert_int_equal(o.begin[1], 1);
    assert_int_equal(o.end[1], 14);
    fk_tok_out_free(&o);
    fk_tok_free(t);
}

static void write_text(const char *path, const char *s) { assert_int_equal(fk_write_file_atomic(path, s, strlen(s)), FK_OK); }

static void expect_error(const char *path, fk_status want, const char *needle) {
    fk_tokenizer *t = NULL;
    fk_status st = fk_tok_load(path, &t);
    if (st == FK_OK) fail_msg("%s loaded, expected an error mentioning '%s'", path, needle);
    assert_int_equal(st, want);
    if (!strstr(fk_last_error(), needle)) fail_msg("error '%s' does not mention '%s'", fk_last_error(), needle);
    assert_null(t);
}

static void test_malformed(void **state) {
    (void)state;
    char p[512];
    snprintf(p, sizeof p, "%s/missing.json", tmpdir);
    expect_error(p, FK_ERR_IO, "missing.json");
    snprintf(p, sizeof p, "%s/nofolder", tmpdir);
    expect_error(p, FK_ERR_IO, "no tokenizer here");
    static const struct { const char *json; fk_status st; const char *needle; } bad[] = {
        {"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1}, \"merges\": [\"a b\"]}, \"pre_tokenizer\": {\"type\": \"ByteLevel\"}",
         FK_ERR_FORMAT, "not valid JSON"},
        {"{\"model\": {\"type\": \"Unigram\", \"vocab\": []}}", FK_ERR_UNSUPPORTED, "Unigram"},
        {"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1}, \"merges\": [\"a b\"]}, \"pre_tokenizer\": {\"type\": \"ByteLevel\"}}",
         FK_ERR_FORMAT, "'ab', which is not in the vocabulary"},
        {"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 2}, \"merges\": []}, \"pre_tokenizer\": {\"type\": \"ByteLevel\"}}",
         FK_ERR_FORMAT, "ids run to 2 but there are only 2 tokens"},
        {"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 2000000000}}, \"pre_tokenizer\": {\"type\": \"ByteLevel\"}}",
         FK_ERR_FORMAT, "only 1 tokens"},  // refused before anything of that size is allocated
        {"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}, \"pre_tokenizer\": {\"type\": \"Metaspace\", \"split\": true}}",
         FK_ERR_UNSUPPORTED, "split true"},
        {"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1}, \"merges\": [\"a c\"]}, \"pre_tokenizer\": {\"type\": \"ByteLevel\"}}",
         FK_ERR_FORMAT, "'c' is not in the vocabulary"},
        {"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}, \"pre_tokenizer\": {\"type\": \"Split\", \"pattern\": "
         "{\"Regex\": \"(unclosed\"}, \"behavior\": \"Isolated\", \"invert\": false}, \"decoder\": {\"type\": \"ByteLevel\"}}",
         FK_ERR_FORMAT, "(unclosed"},
        {"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}, \"normalizer\": {\"type\": \"NFKC\"}, \"decoder\": {\"type\": \"ByteLevel\"}}",
         FK_ERR_UNSUPPORTED, "NFKC"},
        {"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": \"x\"}, \"merges\": []}}", FK_ERR_FORMAT, "model.vocab['a']"},
        {"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}, \"pre_tokenizer\": {\"type\": \"Sequence\", \"pretokenizers\": "
         "[{\"type\": \"Punctuation\", \"behavior\": \"Removed\"}, {\"type\": \"ByteLevel\"}]}}", FK_ERR_UNSUPPORTED, "Punctuation with behavior 'Removed'"},
        {"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": [], \"byte_fallback\": true}, \"normalizer\": {\"type\": \"NFC\"}}",
         FK_ERR_UNSUPPORTED, "'NFC' with a SentencePiece-style tokenizer"},
        // Removed with invert drops the text between matches: read only for regexes matching every character
        {"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}, \"pre_tokenizer\": {\"type\": \"Split\", \"pattern\": "
         "{\"Regex\": \"[a-z]+\"}, \"behavior\": \"Removed\", \"invert\": true}, \"decoder\": {\"type\": \"ByteLevel\"}}",
         FK_ERR_UNSUPPORTED, "Split with behavior 'Removed' and invert is not supported"},
    };
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        snprintf(p, sizeof p, "%s/bad%zu.json", tmpdir, k);
        write_text(p, bad[k].json);
        expect_error(p, bad[k].st, bad[k].needle);
    }
    // GGUF: a file without tokenizer keys, and one with an unknown model.
    fk_gguf_writer *w = fk_gguf_writer_new();
    assert_int_equal(fk_gguf_set_str(w, "general.name", "x", 1), FK_OK);
    snprintf(p, sizeof p, "%s/notok.gguf", tmpdir);
    assert_int_equal(fk_gguf_writer_write(w, p), FK_OK);
    expect_error(p, FK_ERR_FORMAT, "tokenizer.ggml.model");
    assert_int_equal(fk_gguf_set_str(w, "tokenizer.ggml.model", "bert", 4), FK_OK);
    snprintf(p, sizeof p, "%s/bert.gguf", tmpdir);
    assert_int_equal(fk_gguf_writer_write(w, p), FK_OK);
    expect_error(p, FK_ERR_UNSUPPORTED, "'bert'");
    assert_int_equal(fk_gguf_set_str(w, "tokenizer.ggml.model", "gpt2", 4), FK_OK);
    const char *toks[] = {"a", "b"};
    uint64_t lens[] = {1, 1};
    assert_int_equal(fk_gguf_set_arr_str(w, "tokenizer.ggml.tokens", toks, lens, 2), FK_OK);
    const char *merges[] = {"ab"};
    uint64_t mlens[] = {2};
    assert_int_equal(fk_gguf_set_arr_str(w, "tokenizer.ggml.merges", merges, mlens, 1), FK_OK);
    snprintf(p, sizeof p, "%s/badmerge.gguf", tmpdir);
    assert_int_equal(fk_gguf_writer_write(w, p), FK_OK);
    expect_error(p, FK_ERR_FORMAT, "merge 0 'ab' is not two tokens");
    fk_gguf_writer_free(w);
}

// The byte tokenizer: id = byte, and it saves as a tokenizer.json that loads back equal.
static void test_bytes(void **state) {
    (void)state;
    fk_tokenizer *t;
    assert_int_equal(fk_tok_new_bytes(&t), FK_OK);
    assert_int_equal(fk_tok_vocab_size(t), 256);
    const char s[] = "Az \n\xFF";
    fk_tok_out o = {0};
    assert_int_equal(fk_tok_encode(t, s, 5, FK_ENC_ADD_SPECIAL, &o), FK_OK);
    assert_int_equal(o.n, 5);
    for (int i = 0; i < 5; i++) assert_int_equal(o.ids[i], (unsigned char)s[i]);
    char dir[512];
    snprintf(dir, sizeof dir, "%s/bytes", tmpdir);
    assert_int_equal(fk_tok_save_hf(t, dir), FK_OK);
    fk_tokenizer *u;
    assert_int_equal(fk_tok_load(dir, &u), FK_OK);
    fk_tok_out b = {0};
    assert_int_equal(fk_tok_encode(u, s, 5, FK_ENC_ADD_SPECIAL, &b), FK_OK);
    assert_int_equal(b.n, 5);
    assert_memory_equal(b.ids, o.ids, 5 * sizeof(int32_t));
    fk_tok_out_free(&o);
    fk_tok_out_free(&b);
    fk_tok_free(t);
    fk_tok_free(u);
}

// A BPE vocabulary whose GGUF names no pre-tokenizer gets llama.cpp's default regexes,
// which split "don't" as Ġdon ' t (the GPT-2 preset gives Ġdon 't).
// t's byte-level vocabulary and merges with another pre-tokenizer preset and ignore_merges.
static fk_tokenizer *rebuild(const fk_tokenizer *t, const char *pre, bool ignore_merges) {
    int32_t n = fk_tok_vocab_size(t);
    const char **pieces = malloc(sizeof *pieces * (size_t)n);
    uint32_t *lens = malloc(sizeof *lens * (size_t)n);
    for (int32_t i = 0; i < n; i++) pieces[i] = fk_tok_piece(t, i, &lens[i]);
    fk_tok_settings set;
    fk_tok_settings_of(t, &set);
    fk_tok_spec s = {.kind = FK_TOK_BPE, .n_vocab = n, .pieces = pieces, .piece_lens = lens, .n_merges = fk_tok_n_merges(t),
                     .merges = set.merges, .pre = pre, .ignore_merges = ignore_merges, .bos = -1, .eos = -1, .unk = -1, .pad = -1};
    fk_tokenizer *u;
    assert_int_equal(fk_tok_build(&s, &u), FK_OK);
    free(pieces);
    free(lens);
    return u;
}

static void test_default_pre(void **state) {
    (void)state;
    if (!have_shared()) skip();
    fk_tokenizer *t = load_vocab("gpt-2");
    const char *pre[] = {"default", "gpt-2"};
    for (int k = 0; k < 2; k++) {
        fk_tokenizer *u = rebuild(t, pre[k], false);
        fk_tok_out o = {0};
        assert_int_equal(fk_tok_encode(u, " don't", 6, 0, &o), FK_OK);
        assert_int_equal(o.n, k == 0 ? 3 : 2);
        assert_int_equal(o.ids[0], fk_tok_find(u, "\xC4\xA0" "don", 5));
        assert_int_equal(o.ids[1], fk_tok_find(u, k == 0 ? "'" : "'t", k == 0 ? 1 : 2));
        fk_tok_out_free(&o);
        fk_tok_free(u);
    }
    fk_tok_free(t);
}

// tokenizer.json's NFC normalizer (Qwen2, GPT-NeoX): text in NFD encodes as its NFC form,
// which Unicode defines ("e" U+0301 is U+00E9, Hangul jamo compose to one syllable, "x" U+0323
// U+0307 is U+1E8B U+0323: the second mark composes past the first), with
// spans that still tile the text as given; without the normalizer the NFD text encodes otherwise.
static void test_nfc(void **state) {
    (void)state;
    if (!have_shared()) skip();
    fk_tokenizer *t = load_vocab("gpt-2");
    char dir[512], path[600];
    snprintf(dir, sizeof dir, "%s/nfc", tmpdir);
    assert_int_equal(fk_tok_save_hf(t, dir), FK_OK);
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    size_t n;
    char *js = read_all(path, &n);
    cJSON *root = cJSON_Parse(js);
    assert_non_null(root);
    cJSON *norm = cJSON_CreateObject();
    cJSON_AddStringToObject(norm, "type", "NFC");
    cJSON_ReplaceItemInObjectCaseSensitive(root, "normalizer", norm);
    char *out = cJSON_PrintUnformatted(root);
    write_text(path, out);
    free(out);
    cJSON_Delete(root);
    free(js);
    fk_tokenizer *u = NULL;
    if (fk_tok_load(dir, &u) != FK_OK) fail_msg("%s", fk_last_error());
    assert_true(fk_tok_fingerprint(u) != fk_tok_fingerprint(t));
    const char nfd[] = "Caf" "e\xCC\x81 \xE1\x84\x92\xE1\x85\xA1\xE1\x86\xAB x\xCC\xA3\xCC\x87", nfcs[] = "Caf\xC3\xA9 \xED\x95\x9C \xE1\xBA\x8B\xCC\xA3";
    fk_tok_out a = {0}, b = {0}, c = {0};
    assert_int_equal(fk_tok_encode(u, nfd, sizeof nfd - 1, 0, &a), FK_OK);
    assert_int_equal(fk_tok_encode(t, nfcs, sizeof nfcs - 1, 0, &b), FK_OK);
    assert_int_equal(fk_tok_encode(t, nfd, sizeof nfd - 1, 0, &c), FK_OK);
    assert_int_equal(a.n, b.n);
    assert_memory_equal(a.ids, b.ids, sizeof *a.ids * (size_t)a.n);
    assert_tiles(&a, sizeof nfd - 1, "nfc");
    assert_true(c.n != a.n || memcmp(c.ids, a.ids, sizeof *a.ids * (size_t)a.n) != 0);
    char *back;  // decoding gives the NFC text
    size_t nb;
    assert_int_equal(fk_tok_decode(u, a.ids, a.n, 0, &back, &nb), FK_OK);
    assert_int_equal(nb, sizeof nfcs - 1);
    assert_memory_equal(back, nfcs, nb);
    free(back);
    // saved again, the normalizer stays
    snprintf(dir, sizeof dir, "%s/nfc2", tmpdir);
    assert_int_equal(fk_tok_save_hf(u, dir), FK_OK);
    fk_tokenizer *v = NULL;
    assert_int_equal(fk_tok_load(dir, &v), FK_OK);
    assert_int_equal(fk_tok_fingerprint(v), fk_tok_fingerprint(u));
    fk_tok_out_free(&a);
    fk_tok_out_free(&b);
    fk_tok_out_free(&c);
    fk_tok_free(v);
    fk_tok_free(u);
    fk_tok_free(t);
}

// GGUF's name for Llama 3's regex follows ignore_merges as llama.cpp reads it: "llama-bpe"
// ignores merges, "dbrx" (OLMo 2) does not; the new names Phi-2 and StableLM 2 files carry load.
static void test_pre_names(void **state) {
    (void)state;
    if (!have_shared()) skip();
    fk_tokenizer *t = load_vocab("gpt-2");
    static const struct { const char *pre; bool ignore; const char *gguf; } cases[] = {
        {"llama-bpe", true, "llama-bpe"}, {"llama-bpe", false, "dbrx"}, {"dbrx", false, "dbrx"}, {"dbrx", true, "llama-bpe"},
        {"phi-2", false, "phi-2"}, {"stablelm2", false, "stablelm2"},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        fk_tokenizer *u = rebuild(t, cases[k].pre, cases[k].ignore), *v;
        fk_gguf_writer *w = fk_gguf_writer_new();
        assert_int_equal(fk_tok_to_gguf(u, w), FK_OK);
        char path[512];
        snprintf(path, sizeof path, "%s/pre%zu.gguf", tmpdir, k);
        assert_int_equal(fk_gguf_writer_write(w, path), FK_OK);
        fk_gguf_writer_free(w);
        fk_gguf g;
        assert_int_equal(fk_gguf_open(path, &g), FK_OK);
        fk_gguf_str pre;
        assert_int_equal(fk_gguf_get_str(&g, "tokenizer.ggml.pre", &pre), FK_OK);
        if (pre.n != strlen(cases[k].gguf) || memcmp(pre.s, cases[k].gguf, pre.n) != 0)
            fail_msg("%s, ignore_merges %d: GGUF names '%.*s', expected '%s'", cases[k].pre, cases[k].ignore, (int)pre.n, pre.s, cases[k].gguf);
        fk_gguf_close(&g);
        assert_int_equal(fk_tok_load(path, &v), FK_OK);
        assert_int_equal(fk_tok_fingerprint(v), fk_tok_fingerprint(u));
        fk_tok_free(v);
        fk_tok_free(u);
    }
    fk_tok_free(t);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_vectors),
        cmocka_unit_test(test_json_roundtrip),
        cmocka_unit_test(test_gguf_roundtrip),
        cmocka_unit_test(test_invalid_utf8_and_empty),
        cmocka_unit_test(test_specials),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_bytes),
        cmocka_unit_test(test_default_pre),
        cmocka_unit_test(test_nfc),
        cmocka_unit_test(test_pre_names),
    };
    return cmocka_run_group_tests(tests, tmpdir_setup, tmpdir_teardown);
}
