// Hostile input files (issue 16): each is crafted here, byte by byte, into the temporary folder,
// and must be refused with the right status and a message that names the file and the field,
// before any allocation sized by a declared number. Special files (a FIFO, a directory,
// /dev/zero) are refused at once instead of blocking or reading forever.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "fusekit/fusekit.h"
#include "test_util.h"

// Fails unless st is `want` and the message holds every non-NULL needle.
static void expect_msg(fk_status st, fk_status want, const char *a, const char *b) {
    const char *msg = fk_last_error();
    if (st != want) fail_msg("status %s, expected %s: %s", fk_status_name(st), fk_status_name(want), msg);
    if (a && !strstr(msg, a)) fail_msg("message lacks \"%s\": %s", a, msg);
    if (b && !strstr(msg, b)) fail_msg("message lacks \"%s\": %s", b, msg);
}

static void put32(unsigned char *p, uint32_t v) { for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i)); }
static void put64(unsigned char *p, uint64_t v) { for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i)); }

// CRC-32 as zlib computes it (reflected polynomial 0xEDB88320), bit by bit.
static uint32_t crc32_ref(const unsigned char *p, size_t n) {
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++) c = c & 1 ? (c >> 1) ^ 0xEDB88320u : c >> 1;
    }
    return ~c;
}

// ------------------------------------------------------------------ special files

static void test_special_files(void **state) {
    (void)state;
    char *fifo = tpath("pipe");
    assert_int_equal(mkfifo(fifo, 0600), 0);
    char *buf = NULL;
    size_t n;
    // no writer ever opens the FIFO: a blocking open would hang here
    expect_msg(fk_read_file(fifo, &buf, &n), FK_ERR_IO, fifo, "FIFO");
    assert_null(buf);
    fk_mmap m;
    expect_msg(fk_mmap_open(&m, fifo), FK_ERR_IO, fifo, "FIFO");
    assert_false(fk_data_is_shard(fifo));
    fk_token_data d;
    expect_msg(fk_data_load(fifo, &d), FK_ERR_IO, fifo, "FIFO");
    expect_msg(fk_read_file(tmpdir, &buf, &n), FK_ERR_IO, tmpdir, "directory");
    expect_msg(fk_read_file("/dev/zero", &buf, &n), FK_ERR_IO, "/dev/zero", "character device");
    expect_msg(fk_mmap_open(&m, "/dev/zero"), FK_ERR_IO, "/dev/zero", "character device");
    fk_safetensors st;
    expect_msg(fk_st_open(&st, fifo), FK_ERR_IO, fifo, "FIFO");
}

// ------------------------------------------------------------------ deeply nested JSON

static void test_json_depth(void **state) {
    (void)state;
    size_t depth = 100000;
    char *deep = malloc(2 * depth + 1);
    for (size_t i = 0; i < depth; i++) { deep[i] = '['; deep[depth + i] = ']'; }
    deep[2 * depth] = 0;
    char *p = tpath("deep.json");
    spit(p, deep, 2 * depth);
    struct cJSON *root = NULL;
    expect_msg(fk_json_read(p, &root), FK_ERR_FORMAT, p, "JSON nested deeper than 512 levels");
    // a '[' inside a string is not nesting
    char *s = malloc(depth + 16);
    s[0] = '"';
    memset(s + 1, '[', depth);
    strcpy(s + 1 + depth, "\"");
    CHECK(fk_json_parse("string.json", s, strlen(s), &root));
    assert_true(cJSON_IsString(root));
    cJSON_Delete(root);
    free(s);
    // the readers of JSON files say the same
    char *cfg = tpath("cfg/config.json");
    CHECK(fk_mkdir_p(tpath("cfg")));
    spit(cfg, deep, 2 * depth);
    fk_config c;
    expect_msg(fk_hf_config_parse(deep, cfg, &c), FK_ERR_FORMAT, cfg, "nested deeper");
    fk_tokenizer *t = NULL;
    char *tj = tpath("tokenizer.json");
    spit(tj, deep, 2 * depth);
    expect_msg(fk_tok_load_json(tj, &t), FK_ERR_FORMAT, tj, "nested deeper");
    // a safetensors header nested deeply
    unsigned char *f = malloc(8 + 2 * depth);
    put64(f, 2 * depth);
    memcpy(f + 8, deep, 2 * depth);
    char *sp = tpath("deep.safetensors");
    spit(sp, f, 8 + 2 * depth);
    fk_safetensors st;
    expect_msg(fk_st_open(&st, sp), FK_ERR_FORMAT, sp, "nested deeper");
    free(f);
    free(deep);
}

// ------------------------------------------------------------------ safetensors

// A safetensors file with this header (padded to 8) and `data` zero bytes after it.
static char *st_file(const char *name, const char *header, size_t data) {
    size_t hl = strlen(header), pl = (hl + 7) & ~(size_t)7;
    unsigned char *b = calloc(1, 8 + pl + data);
    put64(b, pl);
    memcpy(b + 8, header, hl);
    memset(b + 8 + hl, ' ', pl - hl);
    char *p = tpath(name);
    spit(p, b, 8 + pl + data);
    free(b);
    return p;
}

static void test_safetensors(void **state) {
    (void)state;
    fk_safetensors st;
    char *p = st_file("ok.safetensors", "{\"__metadata__\":{\"format\":\"pt\"},\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8);
    CHECK(fk_st_open(&st, p));
    assert_int_equal(st.n_tensors, 1);
    fk_st_close(&st);
    // a second __metadata__ (the first's printed JSON leaked)
    p = st_file("meta2.safetensors", "{\"__metadata__\":{\"a\":\"b\"},\"__metadata__\":{\"c\":\"d\"},"
                "\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8);
    expect_msg(fk_st_open(&st, p), FK_ERR_FORMAT, p, "\"__metadata__\" more than once");
    // a tensor name twice: lookups would see the first, the second's bytes would be ignored
    p = st_file("dup.safetensors", "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                "\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8);
    expect_msg(fk_st_open(&st, p), FK_ERR_FORMAT, p, "\"w\" more than once");
    // header length past the file (2^40), and past the 100 MB cap
    unsigned char h[16] = {0};
    put64(h, (uint64_t)1 << 40);
    p = tpath("hlen.safetensors");
    spit(p, h, 16);
    expect_msg(fk_st_open(&st, p), FK_ERR_FORMAT, p, "header length");
    // a shape whose element count overflows int64
    p = st_file("shape.safetensors", "{\"w\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,4294967296],\"data_offsets\":[0,8]}}", 8);
    expect_msg(fk_st_open(&st, p), FK_ERR_FORMAT, p, "tensor w: shape is too large");
    // fractional shape entries and offsets
    p = st_file("frac.safetensors", "{\"w\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,8]}}", 8);
    expect_msg(fk_st_open(&st, p), FK_ERR_FORMAT, p, "tensor w: shape entry 0");
    p = st_file("frac2.safetensors", "{\"w\":{\"dtype\":\"U8\",\"shape\":[3],\"data_offsets\":[0.5,3.5]}}", 8);
    expect_msg(fk_st_open(&st, p), FK_ERR_FORMAT, p, "tensor w: bad data_offsets");
    // offsets past the data, and a byte count that disagrees with shape x dtype
    p = st_file("past.safetensors", "{\"w\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", 8);
    expect_msg(fk_st_open(&st, p), FK_ERR_FORMAT, p, "tensor w needs data bytes up to 16");
    p = st_file("span.safetensors", "{\"w\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8);
    expect_msg(fk_st_open(&st, p), FK_ERR_FORMAT, p, "tensor w: shape has 3 elements");
    p = st_file("overlap.safetensors", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8);
    expect_msg(fk_st_open(&st, p), FK_ERR_FORMAT, p, "tensors a and b overlap");
    p = st_file("dtype.safetensors", "{\"w\":{\"dtype\":\"F8\",\"shape\":[8],\"data_offsets\":[0,8]}}", 8);
    expect_msg(fk_st_open(&st, p), FK_ERR_FORMAT, p, "tensor w: missing or unknown dtype F8");
}

// ------------------------------------------------------------------ token shards

// A shard header (version 1) with these fields, followed by `ids_bytes` zero bytes.
static char *shard_file(const char *name, uint32_t width, uint32_t vocab, uint64_t n, uint64_t text_bytes, uint64_t fp,
                        size_t ids_bytes, const void *ids) {
    unsigned char *b = calloc(1, 64 + ids_bytes);
    memcpy(b, "FKTOKSHD", 8);
    put32(b + 8, 1);
    put32(b + 12, width);
    put32(b + 16, vocab);
    put64(b + 24, n);
    put64(b + 32, text_bytes);
    put64(b + 40, fp);
    if (ids) memcpy(b + 64, ids, ids_bytes);
    char *p = tpath(name);
    spit(p, b, 64 + ids_bytes);
    free(b);
    return p;
}

static void test_shards(void **state) {
    (void)state;
    fk_token_data d;
    uint16_t ids[4] = {1, 2, 3, 255};
    char *p = shard_file("ok.bin", 2, 256, 4, 4, 0, sizeof ids, ids);
    CHECK(fk_data_load(p, &d));
    assert_int_equal(d.n, 4);
    assert_int_equal(d.ids[3], 255);
    fk_data_free(&d);
    // a count far past the file (2^62 ids: the product with the width would wrap)
    p = shard_file("huge.bin", 4, 256, (uint64_t)1 << 62, 4, 0, 8, NULL);
    expect_msg(fk_data_load(p, &d), FK_ERR_FORMAT, p, "number of ids 4611686018427387904");
    p = shard_file("width.bin", 3, 256, 2, 4, 0, 6, NULL);
    expect_msg(fk_data_load(p, &d), FK_ERR_FORMAT, p, "3 bytes per id, expected 2 or 4");
    p = shard_file("vocab0.bin", 2, 0, 2, 4, 0, 4, NULL);
    expect_msg(fk_data_load(p, &d), FK_ERR_FORMAT, p, "vocabulary size 0");
    p = shard_file("vocabhuge.bin", 4, 0xFFFFFFFFu, 2, 4, 0, 8, NULL);
    expect_msg(fk_data_load(p, &d), FK_ERR_FORMAT, p, "vocabulary size 4294967295");
    uint16_t big[2] = {5, 300};
    p = shard_file("id.bin", 2, 256, 2, 4, 0, sizeof big, big);
    expect_msg(fk_data_load(p, &d), FK_ERR_FORMAT, p, "id 300 at index 1 is outside the vocabulary");
    p = shard_file("text.bin", 2, 256, 4, (uint64_t)1 << 63, 0, sizeof ids, ids);
    expect_msg(fk_data_load(p, &d), FK_ERR_FORMAT, p, "text bytes");
    // a shard whose ids need more memory than there is (FK_MEM_LIMIT_MB 1: 1 MiB)
    size_t big_n = 1 << 19;
    uint16_t *many = calloc(big_n, 2);
    p = shard_file("many.bin", 2, 256, big_n, big_n, 0, big_n * 2, many);
    free(many);
    setenv("FK_MEM_LIMIT_MB", "1", 1);
    expect_msg(fk_data_load(p, &d), FK_ERR_NOMEM, p, "needs 2.1 MB, 1.0 MB available");
    unsetenv("FK_MEM_LIMIT_MB");
    // shard vs tokenizer: one without a fingerprint, of another vocabulary, is not the byte tokenizer's
    fk_tokenizer *bytes = NULL;
    CHECK(fk_tok_new_bytes(&bytes));
    p = shard_file("other.bin", 2, 300, 4, 4, 0, sizeof ids, ids);
    expect_msg(fk_data_load_tok(p, bytes, &d), FK_ERR_ARG, p, "vocabulary size 300, but the tokenizer has 256");
    p = shard_file("fp.bin", 2, 256, 4, 4, 0x1234, sizeof ids, ids);
    expect_msg(fk_data_load_tok(p, bytes, &d), FK_ERR_ARG, p, "another tokenizer");
    // the CLI prints a shard's fingerprint as the 16 hex digits `tokenizer info` prints
    p = shard_file("fp64.bin", 2, 256, 4, 4, 0xF234567890ABCDEFull, sizeof ids, ids);
    char *out;
    assert_int_equal(run(&out, "%s data info %s", FK_CLI, p), 0);
    if (!strstr(out, "\"tokenizer_fingerprint\":\"f234567890abcdef\"")) fail_msg("%s", out);
    free(out);
    // extraction needs text: a shard given as the corpus is refused, not read as bytes of text
    fk_config c;
    fk_config_gpt2(&c, 256, 8, 1, 2, 32);
    fk_model m;
    CHECK(fk_model_init(&m, &c));
    fk_model_init_weights(&m, 1);
    p = shard_file("corpus.bin", 2, 256, 4, 4, 0, sizeof ids, ids);
    fk_extract_opts o;
    fk_extract_defaults(&o);
    o.seq = 8;
    expect_msg(fk_extract(&m, bytes, p, &o, tpath("x.fkd"), true, NULL, NULL), FK_ERR_ARG, p, "token shard, not text");
    fk_model_free(&m);
    fk_tok_free(bytes);
}

// ------------------------------------------------------------------ distribution stores

// A valid store: vocab 50, k 2, seq 16, 10 tokens (one sequence of 9 positions).
static char *good_store(void) {
    int32_t tok[10];
    int64_t begin[11];
    for (int i = 0; i < 10; i++) { tok[i] = (i * 7) % 50; begin[i] = i; }
    begin[10] = 10;
    fk_store_header h = {.flags = 0, .k = 2, .seq = 16, .vocab_size = 50, .n_tokens = 10, .corpus_bytes = 10};
    char *p = tpath("good.fkd");
    fk_store_writer *w;
    int64_t done;
    CHECK(fk_store_writer_open(p, &h, tok, begin, true, &w, &done));
    uint8_t count[9];
    int32_t ids[18];
    float logp[18], ce[9];
    for (int t = 0; t < 9; t++) {
        count[t] = 2;
        ids[2 * t] = tok[t + 1];
        ids[2 * t + 1] = (tok[t + 1] + 1) % 50;
        logp[2 * t] = -0.5f;
        logp[2 * t + 1] = -1.5f;
        ce[t] = 0.5f;
    }
    fk_store_seq q = {.first = 0, .n = 9, .k = 2, .count = count, .ids = ids, .logp = logp, .ce = ce, .mean_ce = 0.5};
    CHECK(fk_store_write_seq(w, &q));
    CHECK(fk_store_writer_finish(w));
    return p;
}

// Vocabulary 50000, 2000 random tokens (a long tokenization), k 1: each position holds the true
// next token with probability ~1 (a short record).
static char *big_tok_store(void) {
    enum { N = 2000 };
    static int32_t tok[N];
    static int64_t begin[N + 1];
    uint64_t x = 12345;
    for (int i = 0; i < N; i++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        tok[i] = (int32_t)((x >> 33) % 50000);
        begin[i] = i;
    }
    begin[N] = N;
    fk_store_header h = {.flags = 0, .k = 1, .seq = 4096, .vocab_size = 50000, .n_tokens = N, .corpus_bytes = N};
    char *p = tpath("bigtok.fkd");
    fk_store_writer *w;
    int64_t done;
    CHECK(fk_store_writer_open(p, &h, tok, begin, true, &w, &done));
    static uint8_t count[N - 1];
    static int32_t ids[N - 1];
    static float logp[N - 1], ce[N - 1];
    for (int t = 0; t < N - 1; t++) { count[t] = 1; ids[t] = tok[t + 1]; logp[t] = 0; ce[t] = 0; }
    fk_store_seq q = {.first = 0, .n = N - 1, .k = 1, .count = count, .ids = ids, .logp = logp, .ce = ce, .mean_ce = 0};
    CHECK(fk_store_write_seq(w, &q));
    CHECK(fk_store_writer_finish(w));
    return p;
}

// A copy of the store with one header field replaced and both header checksums (the header's own
// and the footer's copy) recomputed, as an attacker would.
static char *patched_store(const char *good, const char *name, size_t off, int width, uint64_t v) {
    size_t n;
    unsigned char *b = (unsigned char *)slurp(good, &n);
    if (width == 4) put32(b + off, (uint32_t)v); else put64(b + off, v);
    put32(b + 124, crc32_ref(b, 124));
    put32(b + n - 32 + 20, crc32_ref(b, 128));
    char *p = tpath(name);
    spit(p, b, n);
    free(b);
    return p;
}

// Opens the store in a child whose address space is capped at 256 MB above its size now: a
// declared size must be refused by checking it, not by an allocation that fails (or succeeds).
// Returns the child's status; its message goes to *msg.
static fk_status open_capped(const char *path, char *msg, size_t cap) {
    int fd[2];
    assert_int_equal(pipe(fd), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(fd[0]);
        long pages = 0;
        FILE *f = fopen("/proc/self/statm", "r");
        if (!f || fscanf(f, "%ld", &pages) != 1) _exit(100);
        fclose(f);
        struct rlimit r = {(rlim_t)pages * (rlim_t)sysconf(_SC_PAGESIZE) + ((rlim_t)256 << 20), RLIM_INFINITY};
        r.rlim_max = r.rlim_cur;
        if (setrlimit(RLIMIT_AS, &r) != 0) _exit(101);
        setenv("FK_MEM_LIMIT_MB", "64", 1);  // what fk_mem_check sees as available
        fk_store *s = NULL;
        fk_status st = fk_store_open(path, &s);
        const char *m = fk_last_error();
        if (write(fd[1], m, strlen(m)) < 0) _exit(102);
        fk_store_close(s);
        _exit((int)st);
    }
    close(fd[1]);
    ssize_t got = read(fd[0], msg, cap - 1);
    msg[got > 0 ? got : 0] = 0;
    close(fd[0]);
    int ws = 0;
    assert_int_equal(waitpid(pid, &ws, 0), pid);
    if (!WIFEXITED(ws)) fail_msg("the child died (signal %d): %s", WIFSIGNALED(ws) ? WTERMSIG(ws) : 0, msg);
    return (fk_status)WEXITSTATUS(ws);
}

static void expect_capped(const char *path, fk_status want, const char *a, const char *b) {
    char msg[2048];
    fk_status st = open_capped(path, msg, sizeof msg);
    if (st != want) fail_msg("status %d, expected %s: %s", (int)st, fk_status_name(want), msg);
    if (!strstr(msg, path)) fail_msg("message lacks the file %s: %s", path, msg);
    if (a && !strstr(msg, a)) fail_msg("message lacks \"%s\": %s", a, msg);
    if (b && !strstr(msg, b)) fail_msg("message lacks \"%s\": %s", b, msg);
}

static void test_store(void **state) {
    (void)state;
    char *good = good_store();
    char msg[2048];
    assert_int_equal(open_capped(good, msg, sizeof msg), FK_OK);
    // vocabulary 2^26: the id model would take 1.5 GB before anything failed
    expect_capped(patched_store(good, "vocab.fkd", 24, 8, (uint64_t)1 << 26), FK_ERR_FORMAT, "vocab_size is 67108864", "1..16777216");
    // sequence length 2^31 - 1, so that one sequence still covers 2^31 - 10 tokens (25 GB of spans)
    char *p = patched_store(good, "seq.fkd", 20, 4, 0x7FFFFFFF);
    expect_capped(p, FK_ERR_FORMAT, "seq (sequence length) is 2147483647", NULL);
    // 2^24 - 5 tokens in one sequence of 2^24 (200 MB of ids and spans) from a few bytes of tokenization
    size_t n;
    unsigned char *b = (unsigned char *)slurp(good, &n);
    put32(b + 20, 1u << 24);
    put64(b + 32, (1u << 24) - 5);
    put32(b + 124, crc32_ref(b, 124));
    put32(b + n - 32 + 20, crc32_ref(b, 128));
    p = tpath("ntok.fkd");
    spit(p, b, n);
    free(b);
    expect_capped(p, FK_ERR_FORMAT, "n_tokens is 16777211", "tokenization section");
    // a store whose tokenization (random ids) is long and whose record (the true next token, sure)
    // is short: as many tokens as the tokenization could hold, in one sequence, are more positions
    // than the record's bytes can encode (positions x k arrays would be allocated for them)
    p = big_tok_store();
    b = (unsigned char *)slurp(p, &n);
    uint64_t tok_payload = 0;
    for (int i = 7; i >= 0; i--) tok_payload = tok_payload << 8 | b[88 + i];
    uint64_t n_tok = (tok_payload - 16) * 118 + 1;
    put32(b + 20, (uint32_t)n_tok);
    put64(b + 32, n_tok);
    put32(b + 124, crc32_ref(b, 124));
    put32(b + n - 32 + 20, crc32_ref(b, 128));
    p = tpath("positions.fkd");
    spit(p, b, n);
    free(b);
    expect_capped(p, FK_ERR_FORMAT, "record 0 holds", "positions by the header");
    expect_capped(patched_store(good, "corpus.fkd", 40, 8, (uint64_t)1 << 62), FK_ERR_FORMAT, "corpus_bytes", NULL);
    expect_capped(patched_store(good, "k.fkd", 16, 4, 1000), FK_ERR_FORMAT, "k is 1000", NULL);
    // a vocabulary within the cap whose id model (48 bytes an entry: 2^22 x 48 = 201.3 MB) needs more
    // memory than there is (64 MiB = 67.1 MB here)
    expect_capped(patched_store(good, "mem.fkd", 24, 8, (uint64_t)1 << 22), FK_ERR_NOMEM, "vocab_size 4194304", "needs 201.3 MB, 67.1 MB available");
}

// ------------------------------------------------------------------ tokenizer vs model vocabulary

// A gpt2 model folder of `vocab` rows and the byte tokenizer (256 tokens) in its own folder.
static void vocab_model(const char *dir, int64_t vocab) {
    fk_config c;
    fk_config_gpt2(&c, vocab, 8, 1, 2, 16);
    fk_model m;
    CHECK(fk_model_init(&m, &c));
    fk_model_init_weights(&m, 1);
    CHECK(fk_hf_save(&m, dir, FK_DT_F32));
    fk_model_free(&m);
}

static void test_tokenizer_vocab(void **state) {
    (void)state;
    fk_tokenizer *t = NULL;
    CHECK(fk_tok_new_bytes(&t));
    CHECK(fk_tok_save_hf(t, tpath("bytes_tok")));
    fk_tok_free(t);
    spit(tpath("text.txt"), "hello hostile world\n", 20);
    // 2000 rows for 256 tokens: 1744 rows without a token is not padding
    vocab_model(tpath("v2000"), 2000);
    RUN_FAILS(1, "1744 rows would have no token", "%s eval --model %s --tokenizer %s --data %s", FK_CLI, tpath("v2000"), tpath("bytes_tok"),
              tpath("text.txt"));
    RUN_FAILS(1, "1744 rows would have no token", "%s train --init %s --tokenizer %s --data %s -o %s --steps 1", FK_CLI, tpath("v2000"),
              tpath("bytes_tok"), tpath("text.txt"), tpath("trained"));
    // 300 rows: 44 is more than 1% of the vocabulary
    vocab_model(tpath("v300"), 300);
    RUN_FAILS(1, "at most 1% of the vocabulary", "%s eval --model %s --tokenizer %s --data %s", FK_CLI, tpath("v300"), tpath("bytes_tok"),
              tpath("text.txt"));
    // 258 rows for 256 tokens: padding, accepted
    vocab_model(tpath("v258"), 258);
    RUN_OK("%s eval --model %s --tokenizer %s --data %s", FK_CLI, tpath("v258"), tpath("bytes_tok"), tpath("text.txt"));
}

// ------------------------------------------------------------------ store vs model

// A teacher store of another model (vocabulary 300, ids up to 299) on a text encoded with the byte
// tokenizer, fed to a model of 256 rows: refused at open, naming the store and the model.
static void test_store_vs_model(void **state) {
    (void)state;
    fk_tokenizer *bytes = NULL;
    CHECK(fk_tok_new_bytes(&bytes));
    const char *text = "hello hostile world\n";
    char *tp = tpath("corpus.txt");
    spit(tp, text, 20);
    fk_token_data d;
    CHECK(fk_data_load_tok(tp, bytes, &d));
    assert_int_equal(d.n, 20);
    int64_t begin[21];
    for (int i = 0; i <= 20; i++) begin[i] = i;
    fk_store_header h = {.flags = 0, .k = 2, .seq = 32, .vocab_size = 300, .n_tokens = 20, .corpus_bytes = 20,
                         .tokenizer_fp = fk_tok_fingerprint(bytes)};
    char *sp = tpath("other_model.fkd");
    fk_store_writer *w;
    int64_t done;
    CHECK(fk_store_writer_open(sp, &h, d.ids, begin, true, &w, &done));
    uint8_t count[19];
    int32_t ids[38];
    float logp[38], ce[19];
    for (int t = 0; t < 19; t++) {
        count[t] = 2;
        ids[2 * t] = d.ids[t + 1];
        ids[2 * t + 1] = 299;
        logp[2 * t] = -0.1f;
        logp[2 * t + 1] = -2.5f;
        ce[t] = 0.1f;
    }
    fk_store_seq q = {.first = 0, .n = 19, .k = 2, .count = count, .ids = ids, .logp = logp, .ce = ce, .mean_ce = 0.1};
    CHECK(fk_store_write_seq(w, &q));
    CHECK(fk_store_writer_finish(w));
    fk_fusion_opts fo;
    fk_fusion_defaults(&fo);
    const char *paths[1] = {sp};
    fk_teacher_set *set = NULL;
    CHECK(fk_teacher_set_open(paths, 1, &fo, &d, &set));
    expect_msg(fk_teacher_set_check_model(set, 256, "student-dir"), FK_ERR_ARG, sp, "student-dir");
    expect_msg(fk_teacher_set_check_model(set, 256, "student-dir"), FK_ERR_ARG, "id 299", "vocabulary 300");
    CHECK(fk_teacher_set_check_model(set, 300, "bigger"));
    fk_teacher_set_close(set);
    fk_data_free(&d);
    fk_tok_free(bytes);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_special_files),
        cmocka_unit_test(test_json_depth),
        cmocka_unit_test(test_safetensors),
        cmocka_unit_test(test_shards),
        cmocka_unit_test(test_store),
        cmocka_unit_test(test_tokenizer_vocab),
        cmocka_unit_test(test_store_vs_model),
    };
    return cmocka_run_group_tests(tests, tmpdir_setup, tmpdir_teardown);
}
