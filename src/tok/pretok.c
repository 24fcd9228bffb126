// Pre-tokenizer regexes (PCRE2), GPT-2's byte map, UTF-8 helpers, a string hash map.
#include "tok/tok_internal.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stdlib.h>
#include <string.h>

// ---------------------------------------------------------------- presets
// The pre-tokenizer regexes of each model family, as llama.cpp names them in GGUF's
// tokenizer.ggml.pre and as the families' tokenizer.json files define them.
#define GPT2_RE "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)"
#define LLAMA3_RE(NUM)                                                                                  \
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|" NUM \
    "| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"

static const char *const pre_gpt2[] = {GPT2_RE, NULL};
static const char *const pre_llama3[] = {LLAMA3_RE("\\p{N}{1,3}"), NULL};
static const char *const pre_qwen2[] = {LLAMA3_RE("\\p{N}"), NULL};
static const char *const pre_starcoder[] = {"\\p{N}", GPT2_RE, NULL};
static const char *const pre_falcon[] = {"[\\p{P}\\$\\+<=>\\^~\\|`]+", GPT2_RE, "[0-9][0-9][0-9]", NULL};
static const char *const pre_deepseek_coder[] = {"[\\r\\n]", "\\s?\\p{L}+", "\\s?\\p{P}+", "[一-龥ࠀ-一가-퟿]+", "\\p{N}", NULL};
// Code points with singleton canonical decompositions are escaped (\x{...}) so that no
// editor or tool normalising this file to NFC can change the class.
static const char *const pre_deepseek_llm[] = {
    "[\\r\\n]",
    "\\s?[A-Za-zµÀ-ÖØ-öø-ƺƼ-ƿǄ-ʓʕ-ʯͰ-ͳͶͷͻ-ͽͿΆΈ-ΊΌΎ-ΡΣ-ϵϷ-ҁҊ-ԯԱ-ՖႠ-ჅᎠ-Ᏽᏸ-ᏽᲐ-ᲺᲽ-Ჿᴀ-ᴫᵫ-ᵷᵹ-ᶚḀ-ἕἘ-Ἕἠ-ὅὈ-Ὅὐ-ὗὙὛὝὟ-\\x{1F7D}ᾀ-ᾴᾶ-ᾼ\\x{1FBE}"
    "ῂ-ῄῆ-ῌῐ-\\x{1FD3}ῖ-\\x{1FDB}ῠ-Ῥῲ-ῴῶ-ῼℂℇℊ-ℓℕℙ-ℝℤ\\x{2126}ℨ\\x{212A}-ℭℯ-ℴℹℼ-ℿⅅ-ⅉⅎↃↄⰀ-ⱻⱾ-ⳤⳫ-ⳮⳲⳳꙀ-ꙭꚀ-ꚛꜢ-ꝯꝱ-ꞇꞋ-ꞎꭰ-ꮿﬀ-ﬆﬓ-ﬗＡ-Ｚａ-ｚ𐐀-𐑏𐒰-𐓓"
    "𐓘-𐓻𐲀-𐲲𐳀-𐳲𑢠-𑣟𞤀-𞥃]+",
    "\\s?[!-/:-~！-／：-～‘-‟　-。]+",
    "\\s+$",
    "[一-龥ࠀ-一가-퟿]+",
    "\\p{N}+",
    NULL};
// llama.cpp's regexes for a BPE vocabulary whose pre-tokenizer is "default" or unnamed.
static const char *const pre_default[] = {"[\\p{P}\\$\\+<=>\\^~\\|]+", GPT2_RE, "\\p{N}+", "[0-9][0-9][0-9]", NULL};
static const char *const pre_none[] = {NULL};

static const struct {
    const char *name;
    const char *const *patterns;
} presets[] = {
    {"gpt-2", pre_gpt2},       {"gpt2", pre_gpt2},           {"mpt", pre_gpt2},
    {"olmo", pre_gpt2},        {"starcoder", pre_starcoder}, {"refact", pre_starcoder},
    {"smollm", pre_starcoder}, {"falcon", pre_falcon},       {"deepseek-llm", pre_deepseek_llm},
    {"deepseek-coder", pre_deepseek_coder}, {"llama-bpe", pre_llama3}, {"llama3", pre_llama3},
    {"llama-v3", pre_llama3},  {"default", pre_default},   {"qwen2", pre_qwen2},         {"none", pre_none},
    // llama.cpp's names for the same regexes: OLMo 2 ("dbrx": Llama 3's regex, merges not
    // ignored), Phi-2 / CodeGen (GPT-2's), StableLM 2 (Qwen2's)
    {"dbrx", pre_llama3},      {"phi-2", pre_gpt2},          {"stablelm2", pre_qwen2},
};

const char *const fk_tok_pre_names[] = {"gpt-2", "mpt", "olmo", "starcoder", "refact", "smollm", "falcon",
                                        "deepseek-llm", "deepseek-coder", "llama-bpe", "default", "qwen2", "dbrx",
                                        "phi-2", "stablelm2", NULL};

const char *const *fk_pretok_preset(const char *name) {
    for (size_t i = 0; i < sizeof presets / sizeof presets[0]; i++)
        if (strcmp(presets[i].name, name) == 0) return presets[i].patterns;
    return NULL;
}

void fk_pretok_free(fk_pretok *p) {
    for (int i = 0; i < p->n; i++) {
        free(p->src[i]);
        pcre2_code_free(p->code[i]);
    }
    free(p->src);
    free(p->code);
    free(p->name);
    memset(p, 0, sizeof *p);
}

fk_status fk_pretok_init(fk_pretok *p, const char *name, const char *const *patterns, int n) {
    memset(p, 0, sizeof *p);
    if (name && *name && !patterns) {
        patterns = fk_pretok_preset(name);
        if (!patterns) return fk_error(FK_ERR_UNSUPPORTED, "unknown pre-tokenizer '%s'", name);
        for (n = 0; patterns[n]; n++) {}
    }
    p->name = strdup(name ? name : "");
    p->src = calloc(n ? n : 1, sizeof *p->src);
    p->code = calloc(n ? n : 1, sizeof *p->code);
    if (!p->name || !p->src || !p->code) {
        fk_pretok_free(p);
        return fk_error(FK_ERR_NOMEM, "out of memory compiling the pre-tokenizer");
    }
    for (int i = 0; i < n; i++) {
        int err;
        PCRE2_SIZE off;
        pcre2_code *re = pcre2_compile((PCRE2_SPTR)patterns[i], PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP, &err,
                                       &off, NULL);
        if (!re) {
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(err, msg, sizeof msg);
            fk_status st = fk_error(FK_ERR_FORMAT, "pre-tokenizer regex %d '%s': %s at offset %zu", i, patterns[i],
                                    (char *)msg, (size_t)off);
            fk_pretok_free(p);
            return st;
        }
        pcre2_jit_compile(re, PCRE2_JIT_COMPLETE);  // falls back to the interpreter when JIT is unavailable
        p->code[i] = re;
        p->src[i] = strdup(patterns[i]);
        p->n = i + 1;
        if (!p->src[i]) {
            fk_pretok_free(p);
            return fk_error(FK_ERR_NOMEM, "out of memory compiling the pre-tokenizer");
        }
    }
    return FK_OK;
}

// Splits [begin, end) with regex k, recursing into regex k+1 for every piece.
typedef struct {
    const fk_pretok *p;
    const char *text;
    fk_piece_fn fn;
    void *ctx;
    pcre2_match_data *md;
} split_ctx;

static fk_status split_level(split_ctx *c, int k, size_t begin, size_t end) {
    if (begin == end) return FK_OK;
    if (k == c->p->n) return c->fn(c->ctx, c->text, begin, end);
    pcre2_code *re = c->p->code[k];
    size_t pos = begin, last = begin;
    const PCRE2_SPTR subj = (PCRE2_SPTR)c->text + begin;
    size_t len = end - begin;
    while (pos < end) {
        int rc = pcre2_match(re, subj, len, pos - begin, PCRE2_NO_UTF_CHECK, c->md, NULL);
        if (rc == PCRE2_ERROR_NOMATCH) break;
        if (rc < 0) {
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(rc, msg, sizeof msg);
            return fk_error(FK_ERR_FORMAT, "pre-tokenizer regex '%s' failed at byte %zu: %s", c->p->src[k], pos, (char *)msg);
        }
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(c->md);
        size_t ms = begin + ov[0], me = begin + ov[1];
        if (me == ms) {  // empty match: step over one character
            pos = ms + 1;
            while (pos < end && ((unsigned char)c->text[pos] & 0xC0) == 0x80) pos++;
            continue;
        }
        FK_TRY(split_level(c, k + 1, last, ms));
        FK_TRY(split_level(c, k + 1, ms, me));
        last = pos = me;
    }
    return split_level(c, k + 1, last, end);
}

int fk_utf8_valid_len(const unsigned char *s, size_t n) {
    unsigned c = s[0];
    if (c < 0x80) return 1;
    int len;
    uint32_t cp, min;
    if (c >= 0xC2 && c <= 0xDF) { len = 2; cp = c & 0x1F; min = 0x80; }
    else if (c >= 0xE0 && c <= 0xEF) { len = 3; cp = c & 0x0F; min = 0x800; }
    else if (c >= 0xF0 && c <= 0xF4) { len = 4; cp = c & 0x07; min = 0x10000; }
    else return 0;
    if ((size_t)len > n) return 0;
    for (int i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80) return 0;
        cp = cp << 6 | (s[i] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
    return len;
}

fk_status fk_pretok_split(const fk_pretok *p, const char *text, size_t n, fk_piece_fn fn, void *ctx) {
    split_ctx c = {p, text, fn, ctx, NULL};
    if (p->n > 0) {
        c.md = pcre2_match_data_create(4, NULL);
        if (!c.md) return fk_error(FK_ERR_NOMEM, "out of memory in the pre-tokenizer");
    }
    // Valid UTF-8 runs go through the regexes; each invalid byte is a piece of its own.
    fk_status st = FK_OK;
    const unsigned char *u = (const unsigned char *)text;
    size_t run = 0, i = 0;
    while (st == FK_OK && i < n) {
        if (u[i] < 0x80) { i++; continue; }
        int l = fk_utf8_valid_len(u + i, n - i);
        if (l > 0) { i += (size_t)l; continue; }
        st = split_level(&c, 0, run, i);
        if (st == FK_OK) st = fn(ctx, text, i, i + 1);
        run = ++i;
    }
    if (st == FK_OK) st = split_level(&c, 0, run, n);
    if (c.md) pcre2_match_data_free(c.md);
    return st;
}

// ---------------------------------------------------------------- byte map
// GPT-2 keeps the printable bytes ('!'..'~', '¡'..'¬', '®'..'ÿ') as their own code points
// and maps the other 68 bytes, in order, to U+0100 onwards.
static int printable(unsigned b) { return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE); }

uint32_t fk_byte_to_cp(uint8_t b) {
    if (printable(b)) return b;
    uint32_t k = 0;
    for (unsigned i = 0; i < b; i++) k += !printable(i);
    return 0x100 + k;
}

int fk_cp_to_byte(uint32_t cp) {
    if (cp < 0x100) return printable(cp) ? (int)cp : -1;
    if (cp >= 0x100 + 68) return -1;
    uint32_t k = cp - 0x100;
    for (unsigned b = 0; b < 256; b++)
        if (!printable(b) && k-- == 0) return (int)b;
    return -1;
}

int fk_utf8_put(uint32_t cp, char *out) {
    unsigned char *o = (unsigned char *)out;
    if (cp < 0x80) { o[0] = (unsigned char)cp; return 1; }
    if (cp < 0x800) { o[0] = (unsigned char)(0xC0 | cp >> 6); o[1] = (unsigned char)(0x80 | (cp & 0x3F)); return 2; }
    if (cp < 0x10000) {
        o[0] = (unsigned char)(0xE0 | cp >> 12);
        o[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (unsigned char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (unsigned char)(0xF0 | cp >> 18);
    o[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (unsigned char)(0x80 | (cp & 0x3F));
    return 4;
}

// ---------------------------------------------------------------- string map
static uint64_t str_hash(const char *s, uint32_t n) { return fk_hash64(fk_fnv1a64(s, n, 0)); }

fk_status fk_strmap_init(fk_strmap *m, int64_t expected) {
    memset(m, 0, sizeof *m);
    uint64_t cap = 16;
    while (cap < (uint64_t)expected * 2) cap <<= 1;
    m->keys = calloc(cap, sizeof *m->keys);
    m->lens = calloc(cap, sizeof *m->lens);
    m->vals = calloc(cap, sizeof *m->vals);
    m->mask = cap - 1;
    if (!m->keys || !m->lens || !m->vals) {
        fk_strmap_free(m);
        return fk_error(FK_ERR_NOMEM, "out of memory for a hash map of %lld entries", (long long)expected);
    }
    return FK_OK;
}

void fk_strmap_free(fk_strmap *m) {
    free(m->keys);
    free(m->lens);
    free(m->vals);
    memset(m, 0, sizeof *m);
}

static uint64_t slot_of(const fk_strmap *m, const char *key, uint32_t len) {
    uint64_t i = str_hash(key, len) & m->mask;
    while (m->keys[i] && !(m->lens[i] == len && memcmp(m->keys[i], key, len) == 0)) i = (i + 1) & m->mask;
    return i;
}

fk_status fk_strmap_put(fk_strmap *m, const char *key, uint32_t len, int32_t val) {
    if ((uint64_t)(m->count + 1) * 2 > m->mask + 1) {
        fk_strmap bigger;
        FK_TRY(fk_strmap_init(&bigger, (int64_t)(m->mask + 1)));
        for (uint64_t i = 0; i <= m->mask; i++)
            if (m->keys[i]) {
                uint64_t j = slot_of(&bigger, m->keys[i], m->lens[i]);
                bigger.keys[j] = m->keys[i];
                bigger.lens[j] = m->lens[i];
                bigger.vals[j] = m->vals[i];
            }
        bigger.count = m->count;
        fk_strmap_free(m);
        *m = bigger;
    }
    uint64_t i = slot_of(m, key, len);
    if (!m->keys[i]) m->count++;
    m->keys[i] = key ? key : "";
    m->lens[i] = len;
    m->vals[i] = val;
    return FK_OK;
}

int32_t fk_strmap_get(const fk_strmap *m, const char *key, uint32_t len) {
    if (!m->keys) return -1;
    uint64_t i = slot_of(m, key, len);
    return m->keys[i] ? m->vals[i] : -1;
}
