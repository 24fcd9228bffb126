// Tokenizer files: GGUF metadata and Hugging Face tokenizer.json / tokenizer_config.json.
#include "tok/tok_internal.h"
#include "fusekit/chat.h"

#include <cjson/cJSON.h>
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>


// The GPT-2 pattern as Hugging Face's ByteLevel pre-tokenizer applies it (use_regex).
#define HF_BYTELEVEL_RE "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)"
static const char *const hf_bytelevel_re = HF_BYTELEVEL_RE;

// Hugging Face's spellings of presets whose llama.cpp form differs; they run as the preset.
// Llama 3's and Qwen2's are the same regexes spelled otherwise. Falcon's tokenizer.json runs
// Digits and the three-digit split after ByteLevel, on the byte-mapped text; llama.cpp's falcon
// preset leaves Digits out and runs on the text: the same tokens with Falcon's vocabulary (the
// corpora and llama.cpp's vectors against the tokenizers package, tests/real/test_real_tok.c).
static const char *const hf_falcon[] = {"[\\p{P}\\$\\+<=>\\^~\\|`]+", HF_BYTELEVEL_RE, "\\p{N}+", "[0-9][0-9][0-9]", NULL};
static const char *const hf_llama3[] = {"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+", NULL};
static const char *const hf_qwen2[] = {"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+", NULL};
static const struct { const char *name; const char *const *patterns; } hf_aliases[] = {
    {"llama-bpe", hf_llama3}, {"qwen2", hf_qwen2}, {"falcon", hf_falcon},
};

static bool same_patterns(const char *const *p, const char *const *pats, int n) {
    int m = 0;
    while (p[m]) m++;
    if (m != n) return false;
    for (int i = 0; i < n; i++)
        if (strcmp(p[i], pats[i]) != 0) return false;
    return true;
}

// The preset whose patterns equal these, or NULL.
static const char *preset_of(const char *const *pats, int n) {
    for (int k = 0; fk_tok_pre_names[k]; k++)
        if (same_patterns(fk_pretok_preset(fk_tok_pre_names[k]), pats, n)) return fk_tok_pre_names[k];
    for (size_t k = 0; k < sizeof hf_aliases / sizeof hf_aliases[0]; k++)
        if (same_patterns(hf_aliases[k].patterns, pats, n)) return hf_aliases[k].name;
    return NULL;
}

// Resolves "a b" merge strings (or pairs) to id pairs through a temporary piece map.
static fk_status merges_to_ids(const char *where, const char *const *pieces, const uint32_t *lens, int32_t n_vocab,
                               const char *const *left, const uint32_t *llen, const char *const *right,
                               const uint32_t *rlen, int32_t n_merges, int32_t (*out)[2]) {
    fk_strmap m;
    FK_TRY(fk_strmap_init(&m, n_vocab));
    fk_status st = FK_OK;
    for (int32_t i = n_vocab - 1; i >= 0 && st == FK_OK; i--) st = fk_strmap_put(&m, pieces[i], lens[i], i);
    for (int32_t r = 0; r < n_merges && st == FK_OK; r++) {
        out[r][0] = fk_strmap_get(&m, left[r], llen[r]);
        out[r][1] = fk_strmap_get(&m, right[r], rlen[r]);
        if (out[r][0] < 0 || out[r][1] < 0)
            st = fk_error(FK_ERR_FORMAT, "%s: merge %d ('%.*s' '%.*s'): '%.*s' is not in the vocabulary", where, r, (int)llen[r],
                          left[r], (int)rlen[r], right[r], out[r][0] < 0 ? (int)llen[r] : (int)rlen[r],
                          out[r][0] < 0 ? left[r] : right[r]);
    }
    fk_strmap_free(&m);
    return st;
}

// Splits merge strings "a b" at their single separating space.
static fk_status split_merges(const char *where, const char *const *strs, const uint64_t *lens, int32_t n, const char **left,
                              uint32_t *llen, const char **right, uint32_t *rlen) {
    for (int32_t r = 0; r < n; r++) {
        const char *sp = memchr(strs[r], ' ', lens[r]);
        if (!sp || sp == strs[r] || (uint64_t)(sp - strs[r]) + 1 >= lens[r])
            return fk_error(FK_ERR_FORMAT, "%s: merge %d '%.*s' is not two tokens separated by a space", where, r, (int)lens[r], strs[r]);
        left[r] = strs[r];
        llen[r] = (uint32_t)(sp - strs[r]);
        right[r] = sp + 1;
        rlen[r] = (uint32_t)(lens[r] - llen[r] - 1);
    }
    return FK_OK;
}

// What a loader gathers before fk_tok_build copies it: the spec and the arrays it points
// to (pieces point into the file or the JSON tree), and the merges' halves while they are
// resolved to ids.
typedef struct {
    fk_tok_spec s;
    const char **pieces;
    uint32_t *lens;
    float *scores;
    uint8_t *types;
    const char **ml, **mr;  // merge r's halves and their lengths
    uint32_t *mll, *mrl;
    int32_t (*merges)[2];
    char pre_buf[64];
} tok_parts;

static void tok_parts_free(tok_parts *p) {
    free(p->pieces); free(p->lens); free(p->scores); free(p->types);
    free(p->ml); free(p->mr); free(p->mll); free(p->mrl); free(p->merges);
}

// Room for the halves and ids of nm merges (at least one, so 0 merges is no failure).
static fk_status tok_parts_merges(tok_parts *p, size_t nm, const char *path) {
    size_t m = nm ? nm : 1;
    p->ml = malloc(sizeof *p->ml * m); p->mr = malloc(sizeof *p->mr * m);
    p->mll = malloc(sizeof *p->mll * m); p->mrl = malloc(sizeof *p->mrl * m);
    p->merges = malloc(sizeof *p->merges * m);
    if (!p->ml || !p->mr || !p->mll || !p->mrl || !p->merges) return fk_error(FK_ERR_NOMEM, "out of memory loading %s", path);
    return FK_OK;
}

// Builds the tokenizer from the gathered parts; an error names the file.
static fk_status tok_parts_build(tok_parts *p, int32_t n, const char *path, fk_tokenizer **out) {
    p->s.n_vocab = n;
    p->s.pieces = p->pieces;
    p->s.piece_lens = p->lens;
    p->s.scores = p->scores;
    p->s.types = p->types;
    fk_status st = fk_tok_build(&p->s, out);
    if (st != FK_OK) fk_error_context(st, "%s", path);
    return st;
}

// ---------------------------------------------------------------- GGUF
// A per-token array (token_type, scores): absent (*kv NULL), or an array of n numbers;
// integers only when `integers`. Anything else is an error naming the file and the key.
static fk_status per_token_arr(const fk_gguf *g, const char *path, const char *key, bool integers, uint64_t n, const fk_gguf_kv **kv) {
    *kv = fk_gguf_find(g, key);
    if (!*kv) return FK_OK;
    fk_gguf_type e = (*kv)->elem_type;
    bool is_i = e == FK_GGUF_U8 || e == FK_GGUF_I8 || e == FK_GGUF_U16 || e == FK_GGUF_I16 || e == FK_GGUF_U32 ||
                e == FK_GGUF_I32 || e == FK_GGUF_U64 || e == FK_GGUF_I64;
    bool ok = (*kv)->type == FK_GGUF_ARRAY && (is_i || (!integers && (e == FK_GGUF_F32 || e == FK_GGUF_F64)));
    const char *want = integers ? "integers" : "numbers";
    if (!ok) {
        if ((*kv)->type == FK_GGUF_ARRAY)
            return fk_error(FK_ERR_FORMAT, "%s: key '%s' is an array of %s, expected an array of %s (one per token)", path, key,
                            fk_gguf_type_name(e), want);
        return fk_error(FK_ERR_FORMAT, "%s: key '%s' has type %s, expected an array of %s (one per token)", path, key,
                        fk_gguf_type_name((*kv)->type), want);
    }
    if ((*kv)->count != n)
        return fk_error(FK_ERR_FORMAT, "%s: key '%s' has %llu entries but 'tokenizer.ggml.tokens' has %llu tokens", path, key,
                        (unsigned long long)(*kv)->count, (unsigned long long)n);
    return FK_OK;
}

// The tokenizer kind named by tokenizer.ggml.model.
static fk_status gguf_kind(const fk_gguf *g, const char *path, fk_tok_kind *kind) {
    fk_gguf_str model;
    FK_TRY(fk_gguf_get_str(g, "tokenizer.ggml.model", &model));
    if (model.n == 4 && memcmp(model.s, "gpt2", 4) == 0) *kind = FK_TOK_BPE;
    else if (model.n == 5 && memcmp(model.s, "llama", 5) == 0) *kind = FK_TOK_SPM;
    else
        return fk_error(FK_ERR_UNSUPPORTED, "%s: key 'tokenizer.ggml.model' is '%.*s'; fusekit reads 'gpt2' (byte-level BPE) and 'llama' (SentencePiece BPE)",
                        path, (int)model.n, model.s);
    return FK_OK;
}

// The token strings (1..INT32_MAX of them, each at most INT32_MAX bytes).
static fk_status gguf_tokens(const fk_gguf *g, const char *path, const fk_gguf_str **toks, uint64_t *n_tok) {
    FK_TRY(fk_gguf_get_arr(g, "tokenizer.ggml.tokens", FK_GGUF_STRING, (const void **)toks, n_tok));
    if (*n_tok == 0 || *n_tok > INT32_MAX)
        return fk_error(FK_ERR_FORMAT, "%s: key 'tokenizer.ggml.tokens' holds %llu tokens, expected 1..%d", path, (unsigned long long)*n_tok, INT32_MAX);
    for (uint64_t i = 0; i < *n_tok; i++)
        if ((*toks)[i].n > INT32_MAX)
            return fk_error(FK_ERR_FORMAT, "%s: key 'tokenizer.ggml.tokens': token %llu is %llu bytes long, expected at most %d", path,
                            (unsigned long long)i, (unsigned long long)(*toks)[i].n, INT32_MAX);
    return FK_OK;
}

// Pieces, types (1..6) and scores (finite floats) of the n tokens; absent arrays leave
// normal types and no scores.
static fk_status gguf_pieces(tok_parts *p, const fk_gguf_str *toks, int32_t n, const fk_gguf_kv *tt_kv, const fk_gguf_kv *sc_kv,
                             const char *path) {
    p->pieces = malloc(sizeof *p->pieces * (size_t)n);
    p->lens = malloc(sizeof *p->lens * (size_t)n);
    p->types = malloc((size_t)n);
    if (!p->pieces || !p->lens || !p->types) return fk_error(FK_ERR_NOMEM, "out of memory loading %s", path);
    for (int32_t i = 0; i < n; i++) {
        p->pieces[i] = toks[i].s;
        p->lens[i] = (uint32_t)toks[i].n;
        p->types[i] = FK_TT_NORMAL;
    }
    for (int32_t i = 0; tt_kv && i < n; i++) {
        int64_t v = fk_gguf_arr_i64(tt_kv, (uint64_t)i);
        if (v < 1 || v > 6) return fk_error(FK_ERR_FORMAT, "%s: key 'tokenizer.ggml.token_type': token %d has type %lld, expected 1..6", path, i, (long long)v);
        p->types[i] = (uint8_t)v;
    }
    if (!sc_kv) return FK_OK;
    p->scores = malloc(sizeof *p->scores * (size_t)n);
    if (!p->scores) return fk_error(FK_ERR_NOMEM, "out of memory loading %s", path);
    for (int32_t i = 0; i < n; i++) {
        double v = fk_gguf_arr_f64(sc_kv, (uint64_t)i);
        if (v != v || (isfinite(v) && fabs(v) > FLT_MAX))  // NaN, or an f64 beyond float (the cast would be undefined)
            return fk_error(FK_ERR_FORMAT, "%s: key 'tokenizer.ggml.scores': token %d has score %g, expected a float", path, i, v);
        p->scores[i] = (float)v;
    }
    return FK_OK;
}

// Byte-level BPE: the merges ("a b" strings) as id pairs, and the pre-tokenizer preset.
static fk_status gguf_bpe(tok_parts *p, const fk_gguf *g, int32_t n, const char *path) {
    const fk_gguf_str *ms;
    uint64_t nm;
    FK_TRY(fk_gguf_get_arr(g, "tokenizer.ggml.merges", FK_GGUF_STRING, (const void **)&ms, &nm));
    if (nm > INT32_MAX) return fk_error(FK_ERR_FORMAT, "%s: too many merges", path);
    FK_TRY(tok_parts_merges(p, nm, path));
    size_t m = nm ? nm : 1;
    const char **mstr = malloc(sizeof *mstr * m);
    uint64_t *mlen = malloc(sizeof *mlen * m);
    fk_status st = mstr && mlen ? FK_OK : fk_error(FK_ERR_NOMEM, "out of memory loading %s", path);
    for (uint64_t r = 0; st == FK_OK && r < nm; r++) { mstr[r] = ms[r].s; mlen[r] = ms[r].n; }
    char where[512];
    snprintf(where, sizeof where, "%s: key 'tokenizer.ggml.merges'", path);
    if (st == FK_OK) st = split_merges(where, mstr, mlen, (int32_t)nm, p->ml, p->mll, p->mr, p->mrl);
    free(mstr);
    free(mlen);
    FK_TRY(st);
    FK_TRY(merges_to_ids(where, p->pieces, p->lens, n, p->ml, p->mll, p->mr, p->mrl, (int32_t)nm, p->merges));
    p->s.n_merges = (int32_t)nm;
    p->s.merges = (const int32_t (*)[2])p->merges;
    fk_gguf_str pre = {"default", 7};
    if (fk_gguf_find(g, "tokenizer.ggml.pre")) FK_TRY(fk_gguf_get_str(g, "tokenizer.ggml.pre", &pre));
    // bytes outside printable ASCII (a NUL would cut the name short) become '?': no preset has them
    size_t pn = pre.n < 63 ? (size_t)pre.n : 63;
    for (size_t i = 0; i < pn; i++) p->pre_buf[i] = pre.s[i] >= 0x20 && pre.s[i] < 0x7f ? pre.s[i] : '?';
    p->pre_buf[pn] = 0;
    if (!fk_pretok_preset(p->pre_buf))
        return fk_error(FK_ERR_UNSUPPORTED, "%s: key 'tokenizer.ggml.pre' is '%s'%s, a pre-tokenizer fusekit does not know", path, p->pre_buf,
                        pre.n > 63 ? " (cut at 63 bytes)" : "");
    p->s.pre = p->pre_buf;
    p->s.ignore_merges = strcmp(p->pre_buf, "llama-bpe") == 0 || strcmp(p->pre_buf, "llama3") == 0 || strcmp(p->pre_buf, "llama-v3") == 0;
    return FK_OK;
}

static const char *const gguf_id_keys[4] = {"tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id",
                                            "tokenizer.ggml.unknown_token_id", "tokenizer.ggml.padding_token_id"};

// Special ids (each inside the vocabulary of n) and the add_* flags, where the file sets them.
static fk_status gguf_specials(fk_tok_spec *s, const fk_gguf *g, int32_t n, const char *path) {
    int32_t *ids[4] = {&s->bos, &s->eos, &s->unk, &s->pad};
    for (int k = 0; k < 4; k++) {
        if (!fk_gguf_find(g, gguf_id_keys[k])) continue;
        uint64_t v;
        FK_TRY(fk_gguf_get_u64(g, gguf_id_keys[k], &v));
        if (v >= (uint64_t)n) return fk_error(FK_ERR_FORMAT, "%s: key '%s' is %llu, outside the vocabulary of %d", path, gguf_id_keys[k], (unsigned long long)v, n);
        *ids[k] = (int32_t)v;
    }
    static const char *const flag_keys[3] = {"tokenizer.ggml.add_bos_token", "tokenizer.ggml.add_eos_token",
                                             "tokenizer.ggml.add_space_prefix"};
    bool *flags[3] = {&s->add_bos, &s->add_eos, &s->add_space_prefix};
    for (int k = 0; k < 3; k++)
        if (fk_gguf_find(g, flag_keys[k])) FK_TRY(fk_gguf_get_bool(g, flag_keys[k], flags[k]));
    return FK_OK;
}

fk_status fk_tok_load_gguf(const fk_gguf *g, fk_tokenizer **out) {
    *out = NULL;
    const char *path = g->path ? g->path : "gguf";
    tok_parts p = {.s = {.bos = -1, .eos = -1, .unk = -1, .pad = -1}};
    FK_TRY(gguf_kind(g, path, &p.s.kind));
    const fk_gguf_str *toks;
    uint64_t n_tok;
    FK_TRY(gguf_tokens(g, path, &toks, &n_tok));
    // the per-token arrays are checked before anything is allocated
    const fk_gguf_kv *tt_kv, *sc_kv;
    FK_TRY(per_token_arr(g, path, "tokenizer.ggml.token_type", true, n_tok, &tt_kv));
    FK_TRY(per_token_arr(g, path, "tokenizer.ggml.scores", false, n_tok, &sc_kv));
    int32_t n = (int32_t)n_tok;
    fk_status st = gguf_pieces(&p, toks, n, tt_kv, sc_kv, path);
    if (st == FK_OK && p.s.kind == FK_TOK_BPE) {
        st = gguf_bpe(&p, g, n, path);
    } else if (st == FK_OK) {
        p.s.add_space_prefix = true;
        p.s.byte_fallback = false;
        for (int32_t i = 0; i < n; i++) p.s.byte_fallback |= p.types[i] == FK_TT_BYTE;
        p.s.add_bos = true;
    }
    if (st == FK_OK) st = gguf_specials(&p.s, g, n, path);
    if (st == FK_OK) st = tok_parts_build(&p, n, path, out);
    tok_parts_free(&p);
    if (st == FK_OK && fk_gguf_find(g, "tokenizer.chat_template")) {
        fk_gguf_str ct;
        char *c = NULL;
        st = fk_gguf_get_str(g, "tokenizer.chat_template", &ct);
        if (st == FK_OK && ct.n > FK_CHAT_MAX_TEMPLATE)
            st = fk_error(FK_ERR_FORMAT, "%s: key 'tokenizer.chat_template' is %llu bytes, more than %d", path, (unsigned long long)ct.n, FK_CHAT_MAX_TEMPLATE);
        if (st == FK_OK && !(c = strndup(ct.s, (size_t)ct.n))) st = fk_error(FK_ERR_NOMEM, "out of memory");
        if (st == FK_OK) st = fk_tok_set_chat_template(*out, c);
        free(c);
        if (st != FK_OK) { fk_tok_free(*out); *out = NULL; }
    }
    return st;
}

fk_status fk_tok_to_gguf(const fk_tokenizer *t, fk_gguf_writer *w) {
    int32_t n = fk_tok_vocab_size(t);
    fk_tok_settings c;
    fk_tok_settings_of(t, &c);
    const int32_t ids[4] = {c.bos, c.eos, c.unk, c.pad};
    fk_tok_kind kind = fk_tok_kind_of(t);
    const char *pre = fk_tok_pre(t);
    if (kind != FK_TOK_SPM && kind != FK_TOK_BYTES && !*pre && c.pre->n > 0)
        return fk_error(FK_ERR_UNSUPPORTED, "tokenizer: its pre-tokenizer regexes match none of llama.cpp's named presets, so GGUF cannot name it");
    FK_TRY(fk_gguf_set_str(w, "tokenizer.ggml.model", kind == FK_TOK_SPM ? "llama" : "gpt2", kind == FK_TOK_SPM ? 5 : 4));
    const char *pre_out = kind == FK_TOK_SPM ? "default" : *pre ? pre : "gpt-2";
    if (kind == FK_TOK_BYTES) pre_out = "gpt-2";  // no merges: any regex gives the same bytes
    if (strcmp(pre_out, "gpt2") == 0) pre_out = "gpt-2";
    if (strcmp(pre_out, "llama3") == 0 || strcmp(pre_out, "llama-v3") == 0) pre_out = "llama-bpe";
    // llama.cpp ignores merges for "llama-bpe" and not for "dbrx", the same regex (OLMo 2)
    if (strcmp(pre_out, "llama-bpe") == 0 && !c.ignore_merges) pre_out = "dbrx";
    if (strcmp(pre_out, "dbrx") == 0 && c.ignore_merges) pre_out = "llama-bpe";
    FK_TRY(fk_gguf_set_str(w, "tokenizer.ggml.pre", pre_out, strlen(pre_out)));
    const char **pieces = malloc(sizeof *pieces * (size_t)n);
    uint64_t *lens = malloc(sizeof *lens * (size_t)n);
    float *scores = malloc(sizeof *scores * (size_t)n);
    int32_t *types = malloc(sizeof *types * (size_t)n);
    fk_status st = FK_OK;
    if (!pieces || !lens || !scores || !types) st = fk_error(FK_ERR_NOMEM, "out of memory writing GGUF tokenizer");
    for (int32_t i = 0; st == FK_OK && i < n; i++) {
        uint32_t l;
        pieces[i] = fk_tok_piece(t, i, &l);
        lens[i] = l;
        scores[i] = fk_tok_score(t, i);
        types[i] = fk_tok_type(t, i);
    }
    if (st == FK_OK && kind == FK_TOK_SPM && !c.score_mode) {
        // Merges decide; llama.cpp merges by score: the piece made by merge r scores -r.
        const int32_t (*mg)[2] = c.merges;
        for (int32_t i = 0; i < n; i++) scores[i] = types[i] == FK_TT_NORMAL ? -1e9f : 0.0f;
        for (int32_t r = fk_tok_n_merges(t) - 1; r >= 0; r--) {
            uint32_t la, lb;
            const char *a = fk_tok_piece(t, mg[r][0], &la), *b = fk_tok_piece(t, mg[r][1], &lb);
            char *cat = malloc((size_t)la + lb + 1);
            if (!cat) { st = fk_error(FK_ERR_NOMEM, "out of memory"); break; }
            memcpy(cat, a, la);
            memcpy(cat + la, b, lb);
            int32_t res = fk_tok_find(t, cat, (size_t)la + lb);
            free(cat);
            if (res >= 0) scores[res] = (float)-r;
        }
    }
    if (st == FK_OK) st = fk_gguf_set_arr_str(w, "tokenizer.ggml.tokens", pieces, lens, (uint64_t)n);
    if (st == FK_OK && kind == FK_TOK_SPM) st = fk_gguf_set_arr(w, "tokenizer.ggml.scores", FK_GGUF_F32, scores, (uint64_t)n);
    if (st == FK_OK) st = fk_gguf_set_arr(w, "tokenizer.ggml.token_type", FK_GGUF_I32, types, (uint64_t)n);
    if (st == FK_OK && kind != FK_TOK_SPM) {
        int32_t nm = fk_tok_n_merges(t);
        const int32_t (*mg)[2] = c.merges;
        char **ms = calloc((size_t)(nm ? nm : 1), sizeof *ms);
        uint64_t *ml = malloc(sizeof *ml * (size_t)(nm ? nm : 1));
        if (!ms || !ml) st = fk_error(FK_ERR_NOMEM, "out of memory writing merges");
        for (int32_t r = 0; st == FK_OK && r < nm; r++) {
            uint32_t la, lb;
            const char *a = fk_tok_piece(t, mg[r][0], &la), *b = fk_tok_piece(t, mg[r][1], &lb);
            ms[r] = malloc((size_t)la + lb + 2);
            if (!ms[r]) { st = fk_error(FK_ERR_NOMEM, "out of memory writing merges"); break; }
            memcpy(ms[r], a, la);
            ms[r][la] = ' ';
            memcpy(ms[r] + la + 1, b, lb);
            ml[r] = (uint64_t)la + lb + 1;
        }
        if (st == FK_OK) st = fk_gguf_set_arr_str(w, "tokenizer.ggml.merges", (const char *const *)ms, ml, (uint64_t)nm);
        for (int32_t r = 0; ms && r < nm; r++) free(ms[r]);
        free(ms);
        free(ml);
    }
    for (int k = 0; st == FK_OK && k < 4; k++)
        if (ids[k] >= 0) st = fk_gguf_set_u32(w, gguf_id_keys[k], (uint32_t)ids[k]);
    if (st == FK_OK) st = fk_gguf_set_bool(w, "tokenizer.ggml.add_bos_token", c.add_bos);
    if (st == FK_OK) st = fk_gguf_set_bool(w, "tokenizer.ggml.add_eos_token", c.add_eos);
    if (st == FK_OK && kind == FK_TOK_SPM) st = fk_gguf_set_bool(w, "tokenizer.ggml.add_space_prefix", c.add_space_prefix);
    const char *ct = fk_tok_chat_template(t);
    if (st == FK_OK && ct) st = fk_gguf_set_str(w, "tokenizer.chat_template", ct, strlen(ct));
    free(pieces); free(lens); free(scores); free(types);
    return st;
}

// ---------------------------------------------------------------- tokenizer.json
typedef struct {
    const char *path;
    const char **pats;
    int n_pats, cap_pats;
    bool bytelevel, metaspace, prepend, replace_space, metaspace_prefix, metaspace_first, nfc;
} hf_pre;

static fk_status add_pat(hf_pre *h, const char *p) {
    if (h->n_pats == h->cap_pats) {
        int cap = h->cap_pats ? h->cap_pats * 2 : 8;
        const char **g = realloc(h->pats, sizeof *g * (size_t)cap);
        if (!g) return fk_error(FK_ERR_NOMEM, "out of memory");
        h->pats = g;
        h->cap_pats = cap;
    }
    h->pats[h->n_pats++] = p;
    return FK_OK;
}

static const char *jstr(const cJSON *o, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static bool jbool(const cJSON *o, const char *key, bool def) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsBool(v) ? cJSON_IsTrue(v) : def;
}

static fk_status walk_pre(hf_pre *h, const cJSON *node, const char *where) {
    if (!node || cJSON_IsNull(node)) return FK_OK;
    const char *type = jstr(node, "type");
    if (!type) return fk_error(FK_ERR_FORMAT, "%s: %s has no \"type\"", h->path, where);
    if (strcmp(type, "Sequence") == 0) {
        const cJSON *items = cJSON_GetObjectItemCaseSensitive(node, "pretokenizers");
        const cJSON *it;
        cJSON_ArrayForEach(it, items) FK_TRY(walk_pre(h, it, where));
        return FK_OK;
    }
    if (strcmp(type, "ByteLevel") == 0) {
        h->bytelevel = true;
        if (jbool(node, "add_prefix_space", false))
            return fk_error(FK_ERR_UNSUPPORTED, "%s: %s ByteLevel with add_prefix_space true is not supported", h->path, where);
        if (jbool(node, "use_regex", true)) return add_pat(h, hf_bytelevel_re);
        return FK_OK;
    }
    if (strcmp(type, "Split") == 0) {
        const cJSON *pat = cJSON_GetObjectItemCaseSensitive(node, "pattern");
        const char *re = jstr(pat, "Regex");
        const char *behavior = jstr(node, "behavior");
        // Gemma: a split on " " after the normalizer made every space a "▁" splits nothing
        if (!re && h->replace_space && jstr(pat, "String") && strcmp(jstr(pat, "String"), " ") == 0) return FK_OK;
        if (!re) return fk_error(FK_ERR_UNSUPPORTED, "%s: %s Split needs a \"Regex\" pattern", h->path, where);
        bool invert = jbool(node, "invert", false);
        // Removed with invert keeps the matches and drops the text between them (OLMo 2's tokenizer.json):
        // Isolated for a regex that matches every character, as Llama 3's and Qwen2's do
        if (behavior && strcmp(behavior, "Removed") == 0 && invert && (strcmp(re, hf_llama3[0]) == 0 || strcmp(re, hf_qwen2[0]) == 0))
            return add_pat(h, re);
        if (!behavior || strcmp(behavior, "Isolated") != 0 || invert)
            return fk_error(FK_ERR_UNSUPPORTED,
                            "%s: %s Split with behavior '%s'%s is not supported (Isolated; Removed with invert only for Llama 3's or "
                            "Qwen2's regex, which match every character)",
                            h->path, where, behavior ? behavior : "(none)", invert ? " and invert" : "");
        return add_pat(h, re);
    }
    // Hugging Face's is_punc: ASCII punctuation (symbols included) and Unicode's P classes
    if (strcmp(type, "Punctuation") == 0) {
        const char *behavior = jstr(node, "behavior");
        if (behavior && strcmp(behavior, "Contiguous") == 0) return add_pat(h, "[\\p{P}\\$\\+<=>\\^~\\|`]+");
        if (!behavior || strcmp(behavior, "Isolated") == 0) return add_pat(h, "[\\p{P}\\$\\+<=>\\^~\\|`]");
        return fk_error(FK_ERR_UNSUPPORTED, "%s: %s Punctuation with behavior '%s' is not supported (Isolated or Contiguous)", h->path, where, behavior);
    }
    if (strcmp(type, "Digits") == 0) return add_pat(h, jbool(node, "individual_digits", false) ? "\\p{N}" : "\\p{N}+");
    if (strcmp(type, "Metaspace") == 0) {
        h->metaspace = true;
        const char *scheme = jstr(node, "prepend_scheme"), *rep = jstr(node, "replacement");
        if (rep && strcmp(rep, "\xE2\x96\x81") != 0)
            return fk_error(FK_ERR_UNSUPPORTED, "%s: %s Metaspace with replacement '%s' is not supported (\"▁\" only)", h->path, where, rep);
        if (jbool(node, "split", true))
            return fk_error(FK_ERR_UNSUPPORTED, "%s: %s Metaspace with split true is not supported (split false, as Llama and Mistral use)", h->path, where);
        if (scheme && strcmp(scheme, "always") == 0)
            return fk_error(FK_ERR_UNSUPPORTED, "%s: %s Metaspace with prepend_scheme 'always' is not supported ('first' or 'never')", h->path, where);
        h->metaspace_prefix = scheme ? strcmp(scheme, "never") != 0 : jbool(node, "add_prefix_space", true);
        h->metaspace_first = h->metaspace_prefix;
        return FK_OK;
    }
    return fk_error(FK_ERR_UNSUPPORTED, "%s: %s of type '%s' is not supported", h->path, where, type);
}

static fk_status walk_norm(hf_pre *h, const cJSON *node) {
    if (!node || cJSON_IsNull(node)) return FK_OK;
    const char *type = jstr(node, "type");
    if (!type) return fk_error(FK_ERR_FORMAT, "%s: \"normalizer\" has no \"type\"", h->path);
    if (strcmp(type, "Sequence") == 0) {
        const cJSON *it;
        cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(node, "normalizers")) FK_TRY(walk_norm(h, it));
        return FK_OK;
    }
    if (strcmp(type, "NFC") == 0) {
        h->nfc = true;
        return FK_OK;
    }
    if (strcmp(type, "Prepend") == 0 && jstr(node, "prepend") && strcmp(jstr(node, "prepend"), "\xE2\x96\x81") == 0) {
        h->prepend = true;
        return FK_OK;
    }
    if (strcmp(type, "Replace") == 0) {
        const char *from = jstr(cJSON_GetObjectItemCaseSensitive(node, "pattern"), "String"), *to = jstr(node, "content");
        if (from && to && strcmp(from, " ") == 0 && strcmp(to, "\xE2\x96\x81") == 0) {
            h->replace_space = true;
            return FK_OK;
        }
    }
    return fk_error(FK_ERR_UNSUPPORTED, "%s: normalizer '%s' is not supported (fusekit handles NFC and the SentencePiece \"▁\" Prepend/Replace only)",
                    h->path, type);
}

// A token named in tokenizer_config.json: "text" or {"content": "text"}.
static const char *config_token(const cJSON *cfg, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(cfg, key);
    if (cJSON_IsString(v)) return v->valuestring;
    return jstr(v, "content");
}

static cJSON *read_json(const char *path, fk_status *st) {
    char *text;
    size_t n;
    *st = fk_read_file(path, &text, &n);
    if (*st != FK_OK) return NULL;
    cJSON *root = NULL;
    *st = fk_json_parse(path, text, n, &root);
    free(text);
    return root;
}

// The vocabulary size: one past the largest id in model.vocab and added_tokens, checked to
// leave no gaps before anything is allocated.
static fk_status json_vocab_size(const cJSON *vocab, const cJSON *added, const char *path, int64_t *n_out) {
    int64_t n = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, vocab) {
        if (!cJSON_IsNumber(it) || it->valuedouble < 0 || it->valuedouble >= INT32_MAX || it->valuedouble != (double)(int64_t)it->valuedouble)
            return fk_error(FK_ERR_FORMAT, "%s: model.vocab['%s'] must be a non-negative integer id", path, it->string);
        if ((int64_t)it->valuedouble + 1 > n) n = (int64_t)it->valuedouble + 1;
    }
    cJSON_ArrayForEach(it, added) {
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(it, "id");
        if (!cJSON_IsNumber(id) || id->valuedouble < 0 || id->valuedouble >= INT32_MAX || !jstr(it, "content"))
            return fk_error(FK_ERR_FORMAT, "%s: added_tokens entries need an integer \"id\" and a string \"content\"", path);
        if ((int64_t)id->valuedouble + 1 > n) n = (int64_t)id->valuedouble + 1;
    }
    if (n == 0) return fk_error(FK_ERR_FORMAT, "%s: empty vocabulary", path);
    if (n > (int64_t)cJSON_GetArraySize(vocab) + cJSON_GetArraySize(added))
        return fk_error(FK_ERR_FORMAT, "%s: ids run to %lld but there are only %d tokens (ids must be 0..n-1 without gaps)", path,
                        (long long)n - 1, cJSON_GetArraySize(vocab) + cJSON_GetArraySize(added));
    *n_out = n;
    return FK_OK;
}

// Pieces and types of the n tokens: model.vocab, then added_tokens (special: control, else
// user-defined); every id from 0 to n-1 must have its token.
static fk_status json_pieces(tok_parts *p, const cJSON *vocab, const cJSON *added, int64_t n, const char *path) {
    p->pieces = calloc((size_t)n, sizeof *p->pieces);
    p->lens = calloc((size_t)n, sizeof *p->lens);
    p->types = malloc((size_t)n);
    if (!p->pieces || !p->lens || !p->types) return fk_error(FK_ERR_NOMEM, "out of memory loading %s", path);
    memset(p->types, FK_TT_NORMAL, (size_t)n);
    const cJSON *it;
    cJSON_ArrayForEach(it, vocab) {
        int32_t id = (int32_t)it->valuedouble;
        if (p->pieces[id]) return fk_error(FK_ERR_FORMAT, "%s: id %d appears twice in model.vocab ('%s' and '%s')", path, id, p->pieces[id], it->string);
        p->pieces[id] = it->string;
        p->lens[id] = (uint32_t)strlen(it->string);
    }
    cJSON_ArrayForEach(it, added) {
        int32_t id = (int32_t)cJSON_GetObjectItemCaseSensitive(it, "id")->valuedouble;
        const char *content = jstr(it, "content");
        if (p->pieces[id] && strcmp(p->pieces[id], content) != 0)
            return fk_error(FK_ERR_FORMAT, "%s: added token %d '%s' differs from model.vocab's '%s'", path, id, content, p->pieces[id]);
        p->pieces[id] = content;
        p->lens[id] = (uint32_t)strlen(content);
        p->types[id] = jbool(it, "special", false) ? FK_TT_CONTROL : FK_TT_USER_DEFINED;
    }
    for (int64_t i = 0; i < n; i++)
        if (!p->pieces[i]) return fk_error(FK_ERR_FORMAT, "%s: no token has id %lld (ids must be 0..%lld without gaps)", path, (long long)i, (long long)n - 1);
    return FK_OK;
}

// Byte-level or SentencePiece-style, from the normalizer, pre-tokenizer, decoder and
// byte_fallback (h: what the walks found); SPM: its prefix settings and byte tokens.
static fk_status json_kind(tok_parts *p, hf_pre *h, const cJSON *root, const cJSON *model, int64_t n, const char *path) {
    FK_TRY(walk_norm(h, cJSON_GetObjectItemCaseSensitive(root, "normalizer")));
    FK_TRY(walk_pre(h, cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer"), "pre_tokenizer"));
    const cJSON *dec = cJSON_GetObjectItemCaseSensitive(root, "decoder");
    bool byte_fallback = jbool(model, "byte_fallback", false);
    fk_tok_spec *s = &p->s;
    if (h->bytelevel || (jstr(dec, "type") && strcmp(jstr(dec, "type"), "ByteLevel") == 0)) {
        s->kind = FK_TOK_BPE;
        if (h->metaspace || h->prepend || h->replace_space) return fk_error(FK_ERR_UNSUPPORTED, "%s: mixes byte-level and SentencePiece-style pieces", path);
        s->nfc = h->nfc;
    } else if (h->metaspace || h->replace_space || byte_fallback) {
        s->kind = FK_TOK_SPM;
        if (h->n_pats > 0) return fk_error(FK_ERR_UNSUPPORTED, "%s: SentencePiece-style tokenizer with regex pre-tokenizers is not supported", path);
        if (h->nfc) return fk_error(FK_ERR_UNSUPPORTED, "%s: normalizer 'NFC' with a SentencePiece-style tokenizer is not supported (byte-level BPE only)", path);
        s->add_space_prefix = h->metaspace ? h->metaspace_prefix : h->prepend;
        s->prefix_first_only = h->metaspace && h->metaspace_first;
        s->byte_fallback = byte_fallback;
        for (int64_t i = 0; i < n; i++)
            if (byte_fallback && p->lens[i] == 6 && memcmp(p->pieces[i], "<0x", 3) == 0 && p->pieces[i][5] == '>' && p->types[i] == FK_TT_NORMAL)
                p->types[i] = FK_TT_BYTE;
    } else {
        return fk_error(FK_ERR_UNSUPPORTED, "%s: a BPE model that is neither byte-level (ByteLevel pre-tokenizer/decoder) nor SentencePiece-style (\"▁\", byte_fallback)", path);
    }
    s->ignore_merges = jbool(model, "ignore_merges", false);
    return FK_OK;
}

// model.merges ("a b" strings or ["a", "b"] pairs) as id pairs.
static fk_status json_merges(tok_parts *p, const cJSON *jmerges, int64_t n, const char *path) {
    int32_t nm = cJSON_GetArraySize(jmerges);
    FK_TRY(tok_parts_merges(p, nm > 0 ? (size_t)nm : 0, path));
    char where[300];
    snprintf(where, sizeof where, "%s: model.merges", path);
    int32_t r = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, jmerges) {
        if (cJSON_IsString(it)) {
            const char *one = it->valuestring;
            uint64_t l = strlen(one);
            FK_TRY(split_merges(where, &one, &l, 1, &p->ml[r], &p->mll[r], &p->mr[r], &p->mrl[r]));
        } else if (cJSON_IsArray(it) && cJSON_GetArraySize(it) == 2 && cJSON_IsString(cJSON_GetArrayItem(it, 0)) && cJSON_IsString(cJSON_GetArrayItem(it, 1))) {
            p->ml[r] = cJSON_GetArrayItem(it, 0)->valuestring;
            p->mr[r] = cJSON_GetArrayItem(it, 1)->valuestring;
            p->mll[r] = (uint32_t)strlen(p->ml[r]);
            p->mrl[r] = (uint32_t)strlen(p->mr[r]);
        } else {
            return fk_error(FK_ERR_FORMAT, "%s: model.merges[%d] must be \"a b\" or [\"a\", \"b\"]", path, r);
        }
        r++;
    }
    FK_TRY(merges_to_ids(where, p->pieces, p->lens, (int32_t)n, p->ml, p->mll, p->mr, p->mrl, nm, p->merges));
    p->s.n_merges = nm;
    p->s.merges = (const int32_t (*)[2])p->merges;
    return FK_OK;
}

// tokenizer_config.json beside path, or NULL where there is none (*st: a read error).
static cJSON *json_config_beside(const char *path, fk_status *st) {
    *st = FK_OK;
    char *dir = strdup(path);
    if (!dir) { *st = fk_error(FK_ERR_NOMEM, "out of memory"); return NULL; }
    char *slash = strrchr(dir, '/');
    if (slash) *slash = 0;
    char *cfg_path = fk_path_join(slash ? dir : ".", "tokenizer_config.json");
    free(dir);
    cJSON *cfg = NULL;
    if (cfg_path && fk_path_exists(cfg_path)) cfg = read_json(cfg_path, st);
    free(cfg_path);
    return cfg;
}

// The post-processor's template says what an encoding starts and ends with; without one,
// tokenizer_config.json's add_bos_token / add_eos_token.
static fk_status json_template(fk_tok_spec *s, const cJSON *root, const cJSON *cfg, const fk_strmap *map, const char *path) {
    const cJSON *pp = cJSON_GetObjectItemCaseSensitive(root, "post_processor");
    const cJSON *single = NULL, *it;
    if (jstr(pp, "type") && strcmp(jstr(pp, "type"), "TemplateProcessing") == 0) single = cJSON_GetObjectItemCaseSensitive(pp, "single");
    else if (jstr(pp, "type") && strcmp(jstr(pp, "type"), "Sequence") == 0) {
        cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(pp, "processors"))
            if (jstr(it, "type") && strcmp(jstr(it, "type"), "TemplateProcessing") == 0) single = cJSON_GetObjectItemCaseSensitive(it, "single");
    }
    if (!single) {
        if (cfg) {
            s->add_bos = jbool(cfg, "add_bos_token", false);
            s->add_eos = jbool(cfg, "add_eos_token", false);
        }
        return FK_OK;
    }
    int k = 0, nsingle = cJSON_GetArraySize(single);
    cJSON_ArrayForEach(it, single) {
        const char *sp = jstr(cJSON_GetObjectItemCaseSensitive(it, "SpecialToken"), "id");
        if (sp) {
            int32_t id = fk_strmap_get(map, sp, (uint32_t)strlen(sp));
            if (id < 0) return fk_error(FK_ERR_FORMAT, "%s: post_processor names token '%s', which is not in the vocabulary", path, sp);
            if (k == 0) { s->add_bos = true; s->bos = id; }
            else if (k == nsingle - 1) { s->add_eos = true; s->eos = id; }
        }
        k++;
    }
    return FK_OK;
}

// BOS/EOS/UNK/PAD: tokenizer_config.json beside (UNK: else model.unk_token), then the
// post-processor's template.
static fk_status json_specials(tok_parts *p, const cJSON *root, const cJSON *model, int64_t n, const char *path) {
    fk_status st;
    cJSON *cfg = json_config_beside(path, &st);
    if (st != FK_OK) return st;
    fk_strmap map;
    if ((st = fk_strmap_init(&map, n)) != FK_OK) { cJSON_Delete(cfg); return st; }
    for (int64_t i = n - 1; i >= 0 && st == FK_OK; i--) st = fk_strmap_put(&map, p->pieces[i], p->lens[i], (int32_t)i);
    const char *names[4] = {"bos_token", "eos_token", "unk_token", "pad_token"};
    fk_tok_spec *s = &p->s;
    int32_t *ids[4] = {&s->bos, &s->eos, &s->unk, &s->pad};
    for (int k = 0; k < 4 && st == FK_OK; k++) {
        const char *tok = cfg ? config_token(cfg, names[k]) : NULL;
        if (k == 2 && !tok) tok = jstr(model, "unk_token");
        if (tok) *ids[k] = fk_strmap_get(&map, tok, (uint32_t)strlen(tok));
        if (tok && *ids[k] < 0) st = fk_error(FK_ERR_FORMAT, "%s: %s '%s' is not in the vocabulary", path, names[k], tok);
    }
    // SentencePiece's unknown piece is an added token in tokenizer.json; its type is "unknown"
    // (as GGUF and sentencepiece have it), so a save / load round trip keeps the fingerprint.
    if (st == FK_OK && s->kind == FK_TOK_SPM && s->unk >= 0 && p->types[s->unk] == FK_TT_CONTROL) p->types[s->unk] = FK_TT_UNKNOWN;
    if (st == FK_OK) st = json_template(s, root, cfg, &map, path);
    fk_strmap_free(&map);
    cJSON_Delete(cfg);
    return st;
}

// The BPE model's checks, then the steps above in order.
static fk_status json_parts(tok_parts *p, hf_pre *h, const cJSON *root, const char *path, int64_t *n) {
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    const char *mtype = jstr(model, "type");
    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab");
    const cJSON *added = cJSON_GetObjectItemCaseSensitive(root, "added_tokens");
    if (!model) return fk_error(FK_ERR_FORMAT, "%s: no \"model\" object", path);
    if (!mtype || strcmp(mtype, "BPE") != 0)
        return fk_error(FK_ERR_UNSUPPORTED, "%s: model.type is '%s'; fusekit reads BPE tokenizers (byte-level or SentencePiece-style)", path, mtype ? mtype : "(missing)");
    if (!cJSON_IsObject(vocab)) return fk_error(FK_ERR_FORMAT, "%s: model.vocab must be an object of token: id", path);
    FK_TRY(json_vocab_size(vocab, added, path, n));
    FK_TRY(json_pieces(p, vocab, added, *n, path));
    FK_TRY(json_kind(p, h, root, model, *n, path));
    FK_TRY(json_merges(p, cJSON_GetObjectItemCaseSensitive(model, "merges"), *n, path));
    FK_TRY(json_specials(p, root, model, *n, path));
    // Named presets stay named (GGUF needs the name); anything else runs as given.
    const char *preset = h->n_pats ? preset_of(h->pats, h->n_pats) : NULL;
    if (p->s.kind == FK_TOK_BPE) {
        if (preset) p->s.pre = preset;
        else { p->s.patterns = h->pats; p->s.n_patterns = h->n_pats; }
    }
    return FK_OK;
}

fk_status fk_tok_load_json(const char *path, fk_tokenizer **out) {
    *out = NULL;
    fk_status st;
    cJSON *root = read_json(path, &st);
    if (!root) return st;
    hf_pre h = {.path = path};
    tok_parts p = {.s = {.bos = -1, .eos = -1, .unk = -1, .pad = -1}};
    int64_t n = 0;
    st = json_parts(&p, &h, root, path, &n);
    if (st == FK_OK) st = tok_parts_build(&p, (int32_t)n, path, out);
    cJSON_Delete(root);
    tok_parts_free(&p);
    free(h.pats);
    char *tmpl = NULL;
    if (st == FK_OK) st = fk_chat_template_find(path, NULL, &tmpl, NULL);  // the files beside tokenizer.json
    if (st == FK_OK && tmpl) st = fk_tok_set_chat_template(*out, tmpl);
    free(tmpl);
    if (st != FK_OK && *out) { fk_tok_free(*out); *out = NULL; }
    return st;
}

fk_status fk_tok_load(const char *path, fk_tokenizer **out) {
    *out = NULL;
    size_t l = strlen(path);
    if (l >= 5 && strcmp(path + l - 5, ".gguf") == 0) {
        fk_gguf g;
        FK_TRY(fk_gguf_open(path, &g));
        fk_status st = fk_tok_load_gguf(&g, out);
        fk_gguf_close(&g);
        return st;
    }
    if (l >= 5 && strcmp(path + l - 5, ".json") == 0) return fk_tok_load_json(path, out);
    char *json = fk_path_join(path, "tokenizer.json");
    if (!json) return fk_error(FK_ERR_NOMEM, "out of memory");
    fk_status st;
    if (fk_path_exists(json)) st = fk_tok_load_json(json, out);
    else st = fk_error(FK_ERR_IO, "%s: no tokenizer here (expected a .gguf file, a tokenizer.json, or a folder holding tokenizer.json)", path);
    free(json);
    return st;
}

// ---------------------------------------------------------------- saving tokenizer.json
static cJSON *jstrn(const char *s, uint32_t n) {
    char *c = malloc((size_t)n + 1);
    if (!c) return NULL;
    memcpy(c, s, n);
    c[n] = 0;
    cJSON *j = cJSON_CreateString(c);
    free(c);
    return j;
}

// SentencePiece merges for a score-ranked vocabulary, built the way Hugging Face converts
// sentencepiece models: every split of every piece into two pieces, ordered by the
// merged piece's score (descending), then by the two halves' ids.
typedef struct { float score; int32_t res, a, b; } spm_merge;
static int cmp_spm_merge(const void *x, const void *y) {
    const spm_merge *p = x, *q = y;
    if (p->score != q->score) return p->score > q->score ? -1 : 1;
    if (p->res != q->res) return p->res < q->res ? -1 : 1;
    if (p->a != q->a) return p->a < q->a ? -1 : 1;
    return p->b < q->b ? -1 : p->b > q->b;
}

static fk_status spm_merges(const fk_tokenizer *t, spm_merge **out, int64_t *count) {
    int32_t n = fk_tok_vocab_size(t);
    int64_t cap = 1024, k = 0;
    spm_merge *m = malloc(sizeof *m * (size_t)cap);
    if (!m) return fk_error(FK_ERR_NOMEM, "out of memory");
    for (int32_t id = 0; id < n; id++) {
        if (fk_tok_type(t, id) != FK_TT_NORMAL) continue;
        uint32_t len;
        const char *p = fk_tok_piece(t, id, &len);
        const unsigned char *u = (const unsigned char *)p;
        for (uint32_t cut = 1; cut < len; cut++) {
            if ((u[cut] & 0xC0) == 0x80) continue;  // split between characters only
            int32_t a = fk_tok_find(t, p, cut), b = fk_tok_find(t, p + cut, len - cut);
            if (a < 0 || b < 0 || fk_tok_type(t, a) != FK_TT_NORMAL || fk_tok_type(t, b) != FK_TT_NORMAL) continue;
            if (k == cap) {
                spm_merge *g = realloc(m, sizeof *m * (size_t)(cap *= 2));
                if (!g) { free(m); return fk_error(FK_ERR_NOMEM, "out of memory"); }
                m = g;
            }
            m[k++] = (spm_merge){fk_tok_score(t, id), id, a, b};
        }
    }
    qsort(m, (size_t)k, sizeof *m, cmp_spm_merge);
    *out = m;
    *count = k;
    return FK_OK;
}

static cJSON *json_merge(const fk_tokenizer *t, int32_t a, int32_t b) {
    uint32_t la, lb;
    const char *pa = fk_tok_piece(t, a, &la), *pb = fk_tok_piece(t, b, &lb);
    if (!memchr(pa, ' ', la) && !memchr(pb, ' ', lb)) {
        char *c = malloc((size_t)la + lb + 2);
        if (!c) return NULL;
        memcpy(c, pa, la);
        c[la] = ' ';
        memcpy(c + la + 1, pb, lb);
        c[la + lb + 1] = 0;
        cJSON *j = cJSON_CreateString(c);
        free(c);
        return j;
    }
    cJSON *arr = cJSON_CreateArray();
    cJSON_AddItemToArray(arr, jstrn(pa, la));
    cJSON_AddItemToArray(arr, jstrn(pb, lb));
    return arr;
}

static cJSON *token_ref(const fk_tokenizer *t, int32_t id) {
    uint32_t l;
    const char *p = fk_tok_piece(t, id, &l);
    return jstrn(p, l);
}

static cJSON *template_processing(const fk_tokenizer *t, bool bos, bool eos) {
    cJSON *pp = cJSON_CreateObject();
    cJSON_AddStringToObject(pp, "type", "TemplateProcessing");
    const char *seqs[2] = {"A", "B"};
    const char *names[2] = {"single", "pair"};
    for (int k = 0; k < 2; k++) {
        cJSON *arr = cJSON_AddArrayToObject(pp, names[k]);
        for (int s = 0; s <= k; s++) {
            if (bos) {
                cJSON *o = cJSON_CreateObject(), *sp = cJSON_AddObjectToObject(o, "SpecialToken");
                cJSON_AddItemToObject(sp, "id", token_ref(t, fk_tok_bos(t)));
                cJSON_AddNumberToObject(sp, "type_id", s);
                cJSON_AddItemToArray(arr, o);
            }
            cJSON *o = cJSON_CreateObject(), *sq = cJSON_AddObjectToObject(o, "Sequence");
            cJSON_AddStringToObject(sq, "id", seqs[s]);
            cJSON_AddNumberToObject(sq, "type_id", s);
            cJSON_AddItemToArray(arr, o);
            if (eos) {
                cJSON *e = cJSON_CreateObject(), *sp = cJSON_AddObjectToObject(e, "SpecialToken");
                cJSON_AddItemToObject(sp, "id", token_ref(t, fk_tok_eos(t)));
                cJSON_AddNumberToObject(sp, "type_id", s);
                cJSON_AddItemToArray(arr, e);
            }
        }
    }
    cJSON *specials = cJSON_AddObjectToObject(pp, "special_tokens");
    int32_t ids[2] = {fk_tok_bos(t), fk_tok_eos(t)};
    bool use[2] = {bos, eos};
    for (int k = 0; k < 2; k++) {
        if (!use[k] || (k == 1 && bos && ids[1] == ids[0])) continue;
        uint32_t l;
        const char *p = fk_tok_piece(t, ids[k], &l);
        cJSON *name = jstrn(p, l);
        cJSON *o = cJSON_CreateObject();
        cJSON_AddItemToObject(o, "id", token_ref(t, ids[k]));
        cJSON *idsa = cJSON_AddArrayToObject(o, "ids");
        cJSON_AddItemToArray(idsa, cJSON_CreateNumber(ids[k]));
        cJSON *toks = cJSON_AddArrayToObject(o, "tokens");
        cJSON_AddItemToArray(toks, token_ref(t, ids[k]));
        cJSON_AddItemToObject(specials, name->valuestring, o);
        cJSON_Delete(name);
    }
    return pp;
}

// A Replace step (normalizer or decoder): the string `from` becomes `to`.
static cJSON *json_replace(const char *from, const char *to) {
    cJSON *r = cJSON_CreateObject();
    cJSON_AddStringToObject(r, "type", "Replace");
    cJSON_AddStringToObject(cJSON_AddObjectToObject(r, "pattern"), "String", from);
    cJSON_AddStringToObject(r, "content", to);
    return r;
}

// added_tokens: the control, user-defined and unknown tokens.
static void json_added_tokens(cJSON *root, const fk_tokenizer *t) {
    cJSON *added = cJSON_AddArrayToObject(root, "added_tokens");
    for (int32_t i = 0; i < fk_tok_vocab_size(t); i++) {
        int ty = fk_tok_type(t, i);
        if (ty != FK_TT_CONTROL && ty != FK_TT_USER_DEFINED && ty != FK_TT_UNKNOWN) continue;
        cJSON *o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "id", i);
        cJSON_AddItemToObject(o, "content", token_ref(t, i));
        cJSON_AddBoolToObject(o, "single_word", false);
        cJSON_AddBoolToObject(o, "lstrip", false);
        cJSON_AddBoolToObject(o, "rstrip", false);
        cJSON_AddBoolToObject(o, "normalized", false);
        cJSON_AddBoolToObject(o, "special", ty != FK_TT_USER_DEFINED);
        cJSON_AddItemToArray(added, o);
    }
}

// normalizer and pre_tokenizer: SPM's "▁" prefix and spaces (Metaspace when the prefix is
// at the start only), or byte-level BPE's regex splits then ByteLevel.
static void json_normalizer_pre(cJSON *root, const fk_tokenizer *t, const fk_tok_settings *c, bool spm) {
    if (spm && c->prefix_first_only) {  // the prefix at the start only: Metaspace, prepend_scheme "first"
        cJSON_AddNullToObject(root, "normalizer");
        cJSON *pre = cJSON_AddObjectToObject(root, "pre_tokenizer");
        cJSON_AddStringToObject(pre, "type", "Metaspace");
        cJSON_AddStringToObject(pre, "replacement", "\xE2\x96\x81");
        cJSON_AddStringToObject(pre, "prepend_scheme", "first");
        cJSON_AddBoolToObject(pre, "split", false);
    } else if (spm) {
        cJSON *norm = cJSON_AddObjectToObject(root, "normalizer");
        cJSON_AddStringToObject(norm, "type", "Sequence");
        cJSON *list = cJSON_AddArrayToObject(norm, "normalizers");
        if (c->add_space_prefix) {
            cJSON *p = cJSON_CreateObject();
            cJSON_AddStringToObject(p, "type", "Prepend");
            cJSON_AddStringToObject(p, "prepend", "\xE2\x96\x81");
            cJSON_AddItemToArray(list, p);
        }
        cJSON_AddItemToArray(list, json_replace(" ", "\xE2\x96\x81"));
        cJSON_AddNullToObject(root, "pre_tokenizer");
    } else {
        if (c->nfc) cJSON_AddStringToObject(cJSON_AddObjectToObject(root, "normalizer"), "type", "NFC");
        else cJSON_AddNullToObject(root, "normalizer");
        cJSON *pre = cJSON_AddObjectToObject(root, "pre_tokenizer");
        cJSON_AddStringToObject(pre, "type", "Sequence");
        cJSON *list = cJSON_AddArrayToObject(pre, "pretokenizers");
        const fk_pretok *pt = c->pre;
        for (int i = 0; fk_tok_kind_of(t) == FK_TOK_BPE && i < pt->n; i++) {
            cJSON *sp = cJSON_CreateObject();
            cJSON_AddStringToObject(sp, "type", "Split");
            cJSON_AddStringToObject(cJSON_AddObjectToObject(sp, "pattern"), "Regex", pt->src[i]);
            cJSON_AddStringToObject(sp, "behavior", "Isolated");
            cJSON_AddBoolToObject(sp, "invert", false);
            cJSON_AddItemToArray(list, sp);
        }
        cJSON *bl = cJSON_CreateObject();
        cJSON_AddStringToObject(bl, "type", "ByteLevel");
        cJSON_AddBoolToObject(bl, "add_prefix_space", false);
        cJSON_AddBoolToObject(bl, "trim_offsets", true);
        cJSON_AddBoolToObject(bl, "use_regex", false);
        cJSON_AddItemToArray(list, bl);
    }
}

// decoder: SPM's "▁" back to spaces, byte fallback, fuse and (with the prefix) one leading
// space stripped; else ByteLevel.
static void json_decoder(cJSON *root, const fk_tok_settings *c, bool spm) {
    cJSON *dec = cJSON_AddObjectToObject(root, "decoder");
    if (!spm) {
        cJSON_AddStringToObject(dec, "type", "ByteLevel");
        cJSON_AddBoolToObject(dec, "add_prefix_space", true);
        cJSON_AddBoolToObject(dec, "trim_offsets", true);
        cJSON_AddBoolToObject(dec, "use_regex", true);
        return;
    }
    cJSON_AddStringToObject(dec, "type", "Sequence");
    cJSON *list = cJSON_AddArrayToObject(dec, "decoders");
    cJSON_AddItemToArray(list, json_replace("\xE2\x96\x81", " "));
    cJSON *bf = cJSON_CreateObject();
    cJSON_AddStringToObject(bf, "type", "ByteFallback");
    cJSON_AddItemToArray(list, bf);
    cJSON *fu = cJSON_CreateObject();
    cJSON_AddStringToObject(fu, "type", "Fuse");
    cJSON_AddItemToArray(list, fu);
    if (c->add_space_prefix) {
        cJSON *s = cJSON_CreateObject();
        cJSON_AddStringToObject(s, "type", "Strip");
        cJSON_AddStringToObject(s, "content", " ");
        cJSON_AddNumberToObject(s, "start", 1);
        cJSON_AddNumberToObject(s, "stop", 0);
        cJSON_AddItemToArray(list, s);
    }
}

// model: BPE with its settings, the vocabulary (a repeated token cannot be held) and the
// merges (SPM scored without merges: the merges Hugging Face's converter derives).
static fk_status json_model(cJSON *root, const fk_tokenizer *t, const fk_tok_settings *c, bool spm) {
    cJSON *model = cJSON_AddObjectToObject(root, "model");
    cJSON_AddStringToObject(model, "type", "BPE");
    cJSON_AddNullToObject(model, "dropout");
    if (c->unk >= 0) cJSON_AddItemToObject(model, "unk_token", token_ref(t, c->unk));
    else cJSON_AddNullToObject(model, "unk_token");
    cJSON_AddNullToObject(model, "continuing_subword_prefix");
    cJSON_AddNullToObject(model, "end_of_word_suffix");
    cJSON_AddBoolToObject(model, "fuse_unk", spm);
    cJSON_AddBoolToObject(model, "byte_fallback", spm && c->byte_fallback);
    cJSON_AddBoolToObject(model, "ignore_merges", c->ignore_merges);
    cJSON *vocab = cJSON_AddObjectToObject(model, "vocab");
    for (int32_t i = 0; i < fk_tok_vocab_size(t); i++) {
        uint32_t l;
        const char *p = fk_tok_piece(t, i, &l);
        if (fk_tok_find(t, p, l) != i)
            return fk_error(FK_ERR_UNSUPPORTED, "tokenizer: token %d '%.*s' repeats token %d; tokenizer.json cannot hold a repeated token", i, (int)l, p, fk_tok_find(t, p, l));
        cJSON *name = jstrn(p, l);
        cJSON_AddNumberToObject(vocab, name->valuestring, i);
        cJSON_Delete(name);
    }
    cJSON *merges = cJSON_AddArrayToObject(model, "merges");
    if (spm && c->score_mode) {
        spm_merge *m = NULL;
        int64_t k = 0;
        FK_TRY(spm_merges(t, &m, &k));
        for (int64_t i = 0; i < k; i++) cJSON_AddItemToArray(merges, json_merge(t, m[i].a, m[i].b));
        free(m);
    } else {
        const int32_t (*mg)[2] = c->merges;
        for (int32_t r = 0; r < fk_tok_n_merges(t); r++) cJSON_AddItemToArray(merges, json_merge(t, mg[r][0], mg[r][1]));
    }
    return FK_OK;
}

static cJSON *tokenizer_json(const fk_tokenizer *t, fk_status *st) {
    fk_tok_settings c;
    fk_tok_settings_of(t, &c);
    bool spm = fk_tok_kind_of(t) == FK_TOK_SPM;
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "version", "1.0");
    cJSON_AddNullToObject(root, "truncation");
    cJSON_AddNullToObject(root, "padding");
    json_added_tokens(root, t);
    json_normalizer_pre(root, t, &c, spm);
    if (c.add_bos || c.add_eos) cJSON_AddItemToObject(root, "post_processor", template_processing(t, c.add_bos, c.add_eos));
    else cJSON_AddNullToObject(root, "post_processor");
    json_decoder(root, &c, spm);
    *st = json_model(root, t, &c, spm);
    if (*st == FK_OK) return root;
    cJSON_Delete(root);
    return NULL;
}

static fk_status write_json(const char *dir, const char *name, cJSON *j) {
    char *text = cJSON_PrintUnformatted(j);
    char *path = fk_path_join(dir, name);
    fk_status st = text && path ? fk_write_file_atomic(path, text, strlen(text)) : fk_error(FK_ERR_NOMEM, "out of memory writing %s", name);
    free(text);
    free(path);
    return st;
}

fk_status fk_tok_save_hf(const fk_tokenizer *t, const char *dir) {
    FK_TRY(fk_mkdir_p(dir));
    fk_status st;
    cJSON *tj = tokenizer_json(t, &st);
    if (!tj) return st;
    st = write_json(dir, "tokenizer.json", tj);
    cJSON_Delete(tj);
    if (st != FK_OK) return st;
    fk_tok_settings c;
    fk_tok_settings_of(t, &c);
    const int32_t ids[4] = {c.bos, c.eos, c.unk, c.pad};
    cJSON *cfg = cJSON_CreateObject(), *map = cJSON_CreateObject();
    cJSON_AddBoolToObject(cfg, "add_bos_token", c.add_bos);
    cJSON_AddBoolToObject(cfg, "add_eos_token", c.add_eos);
    const char *names[4] = {"bos_token", "eos_token", "unk_token", "pad_token"};
    for (int k = 0; k < 4; k++)
        if (ids[k] >= 0) {
            cJSON_AddItemToObject(cfg, names[k], token_ref(t, ids[k]));
            cJSON_AddItemToObject(map, names[k], token_ref(t, ids[k]));
        }
    cJSON_AddBoolToObject(cfg, "clean_up_tokenization_spaces", false);
    cJSON_AddNumberToObject(cfg, "model_max_length", 1e30);
    cJSON_AddStringToObject(cfg, "tokenizer_class", "PreTrainedTokenizerFast");
    if (fk_tok_chat_template(t)) cJSON_AddStringToObject(cfg, "chat_template", fk_tok_chat_template(t));
    st = write_json(dir, "tokenizer_config.json", cfg);
    if (st == FK_OK) st = write_json(dir, "special_tokens_map.json", map);
    cJSON_Delete(cfg);
    cJSON_Delete(map);
    return st;
}
