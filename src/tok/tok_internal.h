// Internals shared by the tokenizer, its loaders and the trainer.
#ifndef FUSEKIT_TOK_INTERNAL_H
#define FUSEKIT_TOK_INTERNAL_H

#include "fusekit/tokenizer.h"

// ---------------------------------------------------------------- pre-tokenizer
// A sequence of PCRE2 regexes (UTF, Unicode properties, JIT). Each regex splits every
// piece the previous one produced into its matches and the stretches between them
// (Hugging Face Split with behaviour "Isolated"). Invalid UTF-8 bytes are pieces of
// their own and never reach the regexes.
typedef struct {
    int n;
    char **src;     // the patterns as given
    void **code;    // pcre2_code_8 *
    char *name;     // preset name, "" when custom
} fk_pretok;

// The preset's patterns (NULL-terminated static list), or NULL for an unknown name.
const char *const *fk_pretok_preset(const char *name);
fk_status fk_pretok_init(fk_pretok *p, const char *name, const char *const *patterns, int n);
void fk_pretok_free(fk_pretok *p);

// Calls fn for every piece of text[0, n) in order; pieces tile the text. fn returning
// non-zero stops the split (the value is returned as the status).
typedef fk_status (*fk_piece_fn)(void *ctx, const char *text, size_t begin, size_t end);
fk_status fk_pretok_split(const fk_pretok *p, const char *text, size_t n, fk_piece_fn fn, void *ctx);

// ---------------------------------------------------------------- normalizer
// Unicode NFC of text[0, n) (ICU). Where it differs from the text: *out (malloc'd, *len bytes)
// and src[j], the source offset of output byte j (src[*len] = n; every byte of a rewritten
// chunk maps to the chunk's start); else *out = NULL. Invalid UTF-8 is left as it is.
fk_status fk_nfc(const char *text, size_t n, char **out, int64_t **src, size_t *len);

// ---------------------------------------------------------------- a built tokenizer's settings
// What the savers (tokenizer.json, GGUF) and the tests read back from a tokenizer.
typedef struct {
    int32_t bos, eos, unk, pad;  // -1 when absent
    bool add_bos, add_eos, add_space_prefix, byte_fallback, ignore_merges;
    bool prefix_first_only;      // SPM: the dummy prefix only at the text's start
    bool score_mode;             // SPM merging by score (no merges list)
    bool nfc;                    // Unicode NFC before anything else
    const int32_t (*merges)[2];  // fk_tok_n_merges of them, in rank order
    const fk_pretok *pre;
} fk_tok_settings;
void fk_tok_settings_of(const fk_tokenizer *t, fk_tok_settings *s);

// ---------------------------------------------------------------- byte-level mapping
// GPT-2's map of the 256 byte values to printable code points, and back.
uint32_t fk_byte_to_cp(uint8_t b);
int fk_cp_to_byte(uint32_t cp);  // -1 when cp is not in the map
// UTF-8: encodes cp into out (up to 4 bytes), returns the byte count.
int fk_utf8_put(uint32_t cp, char *out);
// Length of the valid UTF-8 sequence starting at s[0] (of at most n bytes), 0 if invalid.
int fk_utf8_valid_len(const unsigned char *s, size_t n);

// ---------------------------------------------------------------- binary heap
// The sift steps of a binary heap of T whose first out is the least by `before` (a strict
// order), written once for the encoder's merge queue and the trainer's pair queue.
// name##_sift_up(h, i, e): puts e in the hole at i, moving the parents that e comes before down.
// name##_sift_down(h, n, i, e): puts e in the hole at i of a heap of n, moving up the least
// child while it comes before e (on a tie between children, the left one).
#define FK_HEAP_DEFINE(name, T, before)                                      \
    static inline void name##_sift_up(T *h, int64_t i, T e) {                \
        while (i > 0) {                                                      \
            int64_t p = (i - 1) / 2;                                         \
            if (!before(&e, &h[p])) break;                                   \
            h[i] = h[p];                                                     \
            i = p;                                                           \
        }                                                                    \
        h[i] = e;                                                            \
    }                                                                        \
    static inline void name##_sift_down(T *h, int64_t n, int64_t i, T e) {   \
        for (;;) {                                                           \
            int64_t l = 2 * i + 1, r = l + 1, s = i;                         \
            const T *best = &e;                                              \
            if (l < n && before(&h[l], best)) { s = l; best = &h[l]; }       \
            if (r < n && before(&h[r], best)) s = r;                         \
            if (s == i) break;                                               \
            h[i] = h[s];                                                     \
            i = s;                                                           \
        }                                                                    \
        h[i] = e;                                                            \
    }

// ---------------------------------------------------------------- string hash map
// Open-addressing map from byte strings (owned by the caller, must outlive the map) to int32.
typedef struct {
    const char **keys;
    uint32_t *lens;
    int32_t *vals;
    uint64_t mask;  // capacity - 1 (a power of two)
    int64_t count;
} fk_strmap;
fk_status fk_strmap_init(fk_strmap *m, int64_t expected);
void fk_strmap_free(fk_strmap *m);
// Inserts or replaces; the key pointer is stored, not copied.
fk_status fk_strmap_put(fk_strmap *m, const char *key, uint32_t len, int32_t val);
int32_t fk_strmap_get(const fk_strmap *m, const char *key, uint32_t len);  // -1 when absent

#endif
