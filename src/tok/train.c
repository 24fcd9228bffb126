// Byte-level BPE training: the GPT-2 recipe, as Hugging Face tokenizers' BpeTrainer does it.
//
// 1. Every text is pre-tokenized on its own (a piece never spans two texts) and the
//    distinct pieces ("words") are counted. Keys point into the caller's texts.
// 2. Each word becomes a sequence of byte-token ids. For every adjacent pair of ids we keep
//    its count (sum over words of occurrences x word frequency) and the words it occurs in.
// 3. A max-heap of (count, left, right) with lazy deletion gives the next merge: the
//    highest count, ties to the smallest (left, right). Merging visits only the words that
//    hold the pair, rewrites them left to right without overlap ("a a a" -> "aa a") and
//    adjusts the counts of the neighbouring pairs; every pair whose count changed is pushed
//    again with its new count, so an entry is current exactly when its count equals the
//    pair's count.
// Nothing depends on hash iteration order or addresses: words are numbered in order of
// first appearance, word lists are appended in visiting order, ties break on ids.
//
// SentencePiece-style BPE (kind FK_TOK_SPM) replaces steps 1-2: each text is normalised as
// the encoder does ("▁" before it, every space a "▁") and cut into words before every "▁",
// around runs of newlines and (split_digits) around every digit; the normalised words are
// copied into an arena. The base symbols are the characters of the text (the most frequent
// up to character_coverage) after the specials and the 256 <0xNN> byte tokens; characters
// left out and invalid bytes are byte tokens, and no pair holding an id below the first
// character is ever counted, so byte tokens and specials never merge. Because no word holds
// a "▁" after its start, no piece does either: the encoder may then merge chunk by chunk.
#include "tok/tok_internal.h"

#include <stdlib.h>
#include <string.h>

// ---------------------------------------------------------------- growable arrays
static bool grow(void **p, int64_t *cap, int64_t need, size_t elem) {
    if (need <= *cap) return true;
    int64_t c = *cap ? *cap : 16;
    while (c < need) c *= 2;
    void *q = realloc(*p, (size_t)c * elem);
    if (!q) return false;
    *p = q;
    *cap = c;
    return true;
}
#define GROW(arr, cap, need) grow((void **)&(arr), &(cap), (need), sizeof *(arr))

// ---------------------------------------------------------------- state
typedef struct { int64_t count; uint64_t key; } heap_ent;  // key = left << 32 | right

typedef struct { int32_t *w; int32_t n, cap; } word_list;

typedef struct {
    // words
    fk_strmap map;
    const char **wkey;
    uint32_t *wklen;
    int64_t *freq, *off;
    int32_t *len, *sym;
    uint32_t *stamp;     // the last merge (1-based) that visited the word
    int64_t n_words, cap_wkey, cap_freq, cap_wklen, n_pieces;
    // pairs
    uint64_t *pkey;
    int64_t *pcnt;
    word_list *pw;
    uint32_t *pdirty;    // the last merge (1-based) that changed the pair's count
    int64_t n_pairs, cap_pairs, cap_pcnt, cap_pw, cap_pdirty;
    int32_t *slot;       // open addressing: pair index or -1
    uint64_t mask;
    int32_t *dirty;
    int64_t n_dirty, cap_dirty;
    // heap
    heap_ent *heap;
    int64_t n_heap, cap_heap;
    int32_t min_id;      // pairs holding a smaller id are never counted (SPM: specials and byte tokens)
    bool nomem;
    // SPM: the normalised words, in blocks that never move
    char **blk;
    int64_t n_blk, cap_blk;
    size_t blk_used, blk_size;
    char *scratch;       // the word being normalised
    int64_t scratch_len, cap_scratch;
} trainer;

static void trainer_free(trainer *t) {
    fk_strmap_free(&t->map);
    free(t->wkey); free(t->wklen); free(t->freq); free(t->off); free(t->len); free(t->sym); free(t->stamp);
    for (int64_t i = 0; i < t->n_pairs; i++) free(t->pw[i].w);
    free(t->pkey); free(t->pcnt); free(t->pw); free(t->pdirty); free(t->slot); free(t->dirty); free(t->heap);
    for (int64_t i = 0; i < t->n_blk; i++) free(t->blk[i]);
    free(t->blk); free(t->scratch);
    memset(t, 0, sizeof *t);
}

// ---------------------------------------------------------------- word counting
// A stable copy of k[0, n) in the arena; NULL when out of memory.
static const char *arena_copy(trainer *t, const char *k, size_t n) {
    if (t->n_blk == 0 || t->blk_used + n > t->blk_size) {
        size_t size = n > (1u << 20) ? n : (1u << 20);
        if (!GROW(t->blk, t->cap_blk, t->n_blk + 1)) return NULL;
        char *b = malloc(size ? size : 1);
        if (!b) return NULL;
        t->blk[t->n_blk++] = b;
        t->blk_used = 0;
        t->blk_size = size;
    }
    char *p = t->blk[t->n_blk - 1] + t->blk_used;
    memcpy(p, k, n);
    t->blk_used += n;
    return p;
}

// Counts one occurrence of the word k[0, n); copy: k is not stable, a new word is copied.
static fk_status count_word(trainer *t, const char *k, size_t len, bool copy) {
    if (len > INT32_MAX) return fk_error(FK_ERR_ARG, "pre-token of %zu bytes is too long to train on", len);
    uint32_t n = (uint32_t)len;
    t->n_pieces++;
    int32_t id = fk_strmap_get(&t->map, k, n);
    if (id < 0) {
        if (copy && !(k = arena_copy(t, k, n))) return fk_error(FK_ERR_NOMEM, "out of memory storing %lld distinct words", (long long)t->n_words);
        if (t->n_words >= INT32_MAX) return fk_error(FK_ERR_ARG, "more than %d distinct pre-tokens", INT32_MAX);
        int64_t need = t->n_words + 1;
        if (!GROW(t->wkey, t->cap_wkey, need) || !GROW(t->wklen, t->cap_wklen, need) || !GROW(t->freq, t->cap_freq, need))
            return fk_error(FK_ERR_NOMEM, "out of memory counting %lld distinct pre-tokens", (long long)need);
        id = (int32_t)t->n_words++;
        FK_TRY(fk_strmap_put(&t->map, k, n, id));
        t->wkey[id] = k;
        t->wklen[id] = n;
        t->freq[id] = 0;
    }
    t->freq[id]++;
    return FK_OK;
}

static fk_status on_piece(void *ctx, const char *text, size_t begin, size_t end) {
    return count_word(ctx, text + begin, end - begin, false);
}

// SPM words: the scratch word is counted and emptied.
static fk_status flush_word(trainer *t) {
    fk_status st = t->scratch_len > 0 ? count_word(t, t->scratch, (size_t)t->scratch_len, true) : FK_OK;
    t->scratch_len = 0;
    return st;
}

static fk_status scratch_put(trainer *t, const char *p, size_t n) {
    if (!GROW(t->scratch, t->cap_scratch, t->scratch_len + (int64_t)n))
        return fk_error(FK_ERR_NOMEM, "out of memory: word of %lld bytes", (long long)t->scratch_len);
    memcpy(t->scratch + t->scratch_len, p, n);
    t->scratch_len += (int64_t)n;
    return FK_OK;
}

static const char MARKER[3] = {(char)0xE2, (char)0x96, (char)0x81};  // U+2581 "▁"

// Normalises text[0, n) as the SPM encoder does ("▁" first, every space a "▁"; a "▁" in
// the text is one too) and counts its words: each "▁" starts one, a run of newlines is one,
// and with split_digits so is every digit.
static fk_status spm_words(trainer *t, const char *text, size_t n, bool split_digits) {
    t->scratch_len = 0;
    FK_TRY(scratch_put(t, MARKER, 3));
    for (size_t i = 0; i < n; i++) {
        char c = text[i];
        bool marker = c == MARKER[0] && i + 2 < n && text[i + 1] == MARKER[1] && text[i + 2] == MARKER[2];
        if (c == ' ' || marker) {
            FK_TRY(flush_word(t));
            FK_TRY(scratch_put(t, MARKER, 3));
            if (marker) i += 2;
        } else if (c == '\n' || (split_digits && c >= '0' && c <= '9')) {
            FK_TRY(flush_word(t));
            size_t j = i + 1;
            if (c == '\n') while (j < n && text[j] == '\n') j++;
            FK_TRY(count_word(t, text + i, j - i, true));
            i = j - 1;
        } else {
            FK_TRY(scratch_put(t, &c, 1));
        }
    }
    return flush_word(t);
}

// ---------------------------------------------------------------- pairs
static uint64_t pair_key(int32_t a, int32_t b) { return (uint64_t)(uint32_t)a << 32 | (uint32_t)b; }

static int32_t pair_find(const trainer *t, uint64_t key) {
    uint64_t i = fk_hash64(key) & t->mask;
    for (;; i = (i + 1) & t->mask) {
        int32_t p = t->slot[i];
        if (p < 0 || t->pkey[p] == key) return p;
    }
}

static bool rehash(trainer *t, uint64_t cap) {
    int32_t *s = malloc(cap * sizeof *s);
    if (!s) return false;
    memset(s, 0xFF, cap * sizeof *s);
    free(t->slot);
    t->slot = s;
    t->mask = cap - 1;
    for (int64_t p = 0; p < t->n_pairs; p++) {
        uint64_t i = fk_hash64(t->pkey[p]) & t->mask;
        while (t->slot[i] >= 0) i = (i + 1) & t->mask;
        t->slot[i] = (int32_t)p;
    }
    return true;
}

// The index of pair (a, b), created with count 0 when new; -1 when out of memory.
static int32_t pair_get(trainer *t, int32_t a, int32_t b) {
    uint64_t key = pair_key(a, b);
    int32_t p = pair_find(t, key);
    if (p >= 0) return p;
    if (t->n_pairs >= INT32_MAX - 1) return -1;
    int64_t need = t->n_pairs + 1;
    if (!GROW(t->pkey, t->cap_pairs, need) || !GROW(t->pcnt, t->cap_pcnt, need) || !GROW(t->pw, t->cap_pw, need) ||
        !GROW(t->pdirty, t->cap_pdirty, need))
        return -1;
    if ((uint64_t)need * 2 > t->mask + 1 && !rehash(t, (t->mask + 1) * 2)) return -1;
    p = (int32_t)t->n_pairs++;
    t->pkey[p] = key;
    t->pcnt[p] = 0;
    t->pw[p] = (word_list){0};
    t->pdirty[p] = 0;
    uint64_t i = fk_hash64(key) & t->mask;
    while (t->slot[i] >= 0) i = (i + 1) & t->mask;
    t->slot[i] = p;
    return p;
}

// Adds delta to the count of (a, b) for word w; an increase records w in the pair's list.
static void pair_add(trainer *t, int32_t a, int32_t b, int64_t delta, int32_t w, uint32_t merge) {
    if (a < t->min_id || b < t->min_id) return;
    int32_t p = pair_get(t, a, b);
    if (p < 0) { t->nomem = true; return; }
    t->pcnt[p] += delta;
    if (delta > 0) {
        word_list *l = &t->pw[p];
        if (l->n == 0 || l->w[l->n - 1] != w) {
            if (l->n == l->cap) {
                int32_t c = l->cap ? (l->cap < INT32_MAX / 2 ? l->cap * 2 : INT32_MAX) : 4;
                int32_t *q = c > l->n ? realloc(l->w, (size_t)c * sizeof *q) : NULL;
                if (!q) { t->nomem = true; return; }
                l->w = q;
                l->cap = c;
            }
            l->w[l->n++] = w;
        }
    }
    if (merge && t->pdirty[p] != merge) {
        t->pdirty[p] = merge;
        if (!GROW(t->dirty, t->cap_dirty, t->n_dirty + 1)) { t->nomem = true; return; }
        t->dirty[t->n_dirty++] = p;
    }
}

// ---------------------------------------------------------------- heap
// a before b: higher count, then smaller (left, right).
static bool heap_before(const heap_ent *a, const heap_ent *b) {
    return a->count != b->count ? a->count > b->count : a->key < b->key;
}

FK_HEAP_DEFINE(pair_heap, heap_ent, heap_before)

static bool heap_push(trainer *t, int64_t count, uint64_t key) {
    if (!GROW(t->heap, t->cap_heap, t->n_heap + 1)) return false;
    pair_heap_sift_up(t->heap, t->n_heap++, (heap_ent){count, key});
    return true;
}

static void heap_pop(trainer *t) {
    t->n_heap--;
    if (t->n_heap > 0) pair_heap_sift_down(t->heap, t->n_heap, 0, t->heap[t->n_heap]);
}

// One entry per pair with a positive count (drops the stale ones).
static void heap_rebuild(trainer *t) {
    t->n_heap = 0;
    for (int64_t p = 0; p < t->n_pairs; p++)
        if (t->pcnt[p] > 0) t->heap[t->n_heap++] = (heap_ent){t->pcnt[p], t->pkey[p]};
    for (int64_t i = t->n_heap / 2 - 1; i >= 0; i--) pair_heap_sift_down(t->heap, t->n_heap, i, t->heap[i]);
}

// ---------------------------------------------------------------- merging
// Rewrites word w with every non-overlapping (a, b), left to right, as c.
static void merge_word(trainer *t, int32_t w, int32_t a, int32_t b, int32_t c, uint32_t merge) {
    int32_t *s = t->sym + t->off[w];
    int32_t n = t->len[w], o = 0;
    int64_t f = t->freq[w];
    for (int32_t i = 0; i < n;) {
        if (i + 1 < n && s[i] == a && s[i + 1] == b) {
            if (o > 0) {
                pair_add(t, s[o - 1], a, -f, w, merge);
                pair_add(t, s[o - 1], c, f, w, merge);
            }
            if (i + 2 < n) {
                pair_add(t, b, s[i + 2], -f, w, merge);
                pair_add(t, c, s[i + 2], f, w, merge);
            }
            s[o++] = c;
            i += 2;
        } else {
            s[o++] = s[i++];
        }
    }
    t->len[w] = o;
}

// ---------------------------------------------------------------- vocabulary
typedef struct {
    char **piece;        // owned (the specials are copied too)
    uint32_t *plen;
    int64_t n, cap, cap_len;
} vocab;

static bool vocab_add(vocab *v, const char *s, uint32_t n) {
    if (!GROW(v->piece, v->cap, v->n + 1) || !GROW(v->plen, v->cap_len, v->n + 1)) return false;
    char *p = malloc((size_t)n + 1);
    if (!p) return false;
    memcpy(p, s, n);
    p[n] = 0;
    v->piece[v->n] = p;
    v->plen[v->n++] = n;
    return true;
}

static void vocab_free(vocab *v) {
    for (int64_t i = 0; i < v->n; i++) free(v->piece[i]);
    free(v->piece);
    free(v->plen);
    memset(v, 0, sizeof *v);
}

// ---------------------------------------------------------------- training
static const char *const SPM_SPECIALS[3] = {"<unk>", "<s>", "</s>"};

// The control tokens in id order: SPM has <unk>, <s>, </s> before the caller's.
static int n_specials_of(const fk_tok_train_opts *o) { return o->n_specials + (o->kind == FK_TOK_SPM ? 3 : 0); }
static const char *special_name(const fk_tok_train_opts *o, int i) {
    if (o->kind != FK_TOK_SPM) return o->specials[i];
    return i < 3 ? SPM_SPECIALS[i] : o->specials[i - 3];
}

static fk_status check_opts(const fk_tok_train_opts *o, const char *const *texts, const size_t *lens, int n_texts,
                            fk_tokenizer **out) {
    if (!o) return fk_error(FK_ERR_ARG, "tokenizer training: no options");
    if (!out) return fk_error(FK_ERR_ARG, "tokenizer training: no output pointer");
    if (n_texts < 0) return fk_error(FK_ERR_ARG, "tokenizer training: negative text count %d", n_texts);
    if (n_texts > 0 && !texts) return fk_error(FK_ERR_ARG, "tokenizer training: %d texts but no text array", n_texts);
    for (int i = 0; i < n_texts; i++)
        if (!texts[i] && (!lens || lens[i] > 0)) return fk_error(FK_ERR_ARG, "tokenizer training: text %d is NULL", i);
    if (o->kind != FK_TOK_BYTES && o->kind != FK_TOK_BPE && o->kind != FK_TOK_SPM)
        return fk_error(FK_ERR_ARG, "tokenizer training: kind %d is neither FK_TOK_BPE nor FK_TOK_SPM", (int)o->kind);
    const bool spm = o->kind == FK_TOK_SPM;
    if (o->n_specials < 0) return fk_error(FK_ERR_ARG, "tokenizer training: negative special token count %d", o->n_specials);
    if (o->n_specials > 0 && !o->specials)
        return fk_error(FK_ERR_ARG, "tokenizer training: %d special tokens but no special token array", o->n_specials);
    for (int i = 0; i < o->n_specials; i++)
        if (!o->specials[i] || !o->specials[i][0])
            return fk_error(FK_ERR_ARG, "tokenizer training: special token %d is empty", i);
    const int n_spec = n_specials_of(o);
    for (int i = 0; i < n_spec; i++)
        for (int j = 0; j < i; j++)
            if (strcmp(special_name(o, i), special_name(o, j)) == 0) {
                if (spm && j < 3)
                    return fk_error(FK_ERR_ARG, "tokenizer training: special token '%s': SPM training has <unk>, <s> and </s> already",
                                    special_name(o, i));
                return fk_error(FK_ERR_ARG, "tokenizer training: special token '%s' given twice (%d and %d)", special_name(o, i),
                                j - (spm ? 3 : 0), i - (spm ? 3 : 0));
            }
    if (o->vocab_size < 256 + (int64_t)n_spec)
        return fk_error(FK_ERR_ARG, "tokenizer training: vocab_size %d is smaller than the 256 byte tokens plus %d special tokens",
                        o->vocab_size, n_spec);
    if (o->min_frequency < 0)
        return fk_error(FK_ERR_ARG, "tokenizer training: min_frequency %lld is negative", (long long)o->min_frequency);
    if (spm) {
        if (o->pre)
            return fk_error(FK_ERR_ARG, "tokenizer training: a pre-tokenizer preset ('%s') applies to byte-level BPE only "
                                        "(SPM training splits words at spaces)", o->pre);
        if (!(o->character_coverage >= 0 && o->character_coverage <= 1))
            return fk_error(FK_ERR_ARG, "tokenizer training: character_coverage %g is outside (0, 1]", o->character_coverage);
        return FK_OK;
    }
    if (o->split_digits)
        return fk_error(FK_ERR_ARG, "tokenizer training: split_digits applies to SPM training only "
                                    "(byte-level BPE splits digits with its pre-tokenizer)");
    if (o->character_coverage != 0)
        return fk_error(FK_ERR_ARG, "tokenizer training: character_coverage applies to SPM training only");
    const char *pre = o->pre ? o->pre : "gpt-2";
    if (!fk_pretok_preset(pre)) return fk_error(FK_ERR_ARG, "tokenizer training: unknown pre-tokenizer preset '%s'", pre);
    return FK_OK;
}

// ---------------------------------------------------------------- SPM characters
typedef struct { const char *k; uint32_t n; int64_t count; } char_count;

// More frequent first, ties by code point (UTF-8 byte order is code point order).
static int cmp_chars(const void *x, const void *y) {
    const char_count *a = x, *b = y;
    if (a->count != b->count) return a->count > b->count ? -1 : 1;
    int c = memcmp(a->k, b->k, a->n < b->n ? a->n : b->n);
    return c ? c : (a->n > b->n) - (a->n < b->n);
}

// The length of the character at k[0, n) that may be a token of its own; 0 when it is a
// byte token (invalid UTF-8, and NUL, which tokenizer.json cannot hold in a string).
static int char_len(const unsigned char *k, size_t n) { return k[0] ? fk_utf8_valid_len(k, n) : 0; }

// The characters of the words by frequency, as SentencePiece picks them: while the share
// of occurrences covered is below coverage (0: 1, all); "▁" always, even unseen. Keys point
// into the words.
static fk_status spm_chars(const trainer *t, double coverage, char_count **out, int64_t *n_out) {
    *out = NULL;
    *n_out = 0;
    fk_strmap m = {0};
    char_count *c = NULL;
    int64_t n = 0, cap = 0, total = 0;
    fk_status st = fk_strmap_init(&m, 1024);
    for (int64_t w = 0; st == FK_OK && w < t->n_words; w++) {
        const unsigned char *k = (const unsigned char *)t->wkey[w];
        for (uint32_t i = 0; st == FK_OK && i < t->wklen[w];) {
            int cl = char_len(k + i, t->wklen[w] - i);
            if (cl == 0) { i++; continue; }
            int32_t id = fk_strmap_get(&m, (const char *)k + i, (uint32_t)cl);
            if (id < 0) {
                if (!GROW(c, cap, n + 1)) { st = fk_error(FK_ERR_NOMEM, "out of memory counting characters"); break; }
                c[n] = (char_count){(const char *)k + i, (uint32_t)cl, 0};
                id = (int32_t)n++;
                st = fk_strmap_put(&m, c[id].k, c[id].n, id);
            }
            c[id].count += t->freq[w];
            total += t->freq[w];
            i += (uint32_t)cl;
        }
    }
    // "▁" is always a token, even unseen: else spaces would decode as byte tokens, to "▁"
    if (st == FK_OK && fk_strmap_get(&m, MARKER, 3) < 0) {
        if (GROW(c, cap, n + 1)) c[n++] = (char_count){MARKER, 3, 0};
        else st = fk_error(FK_ERR_NOMEM, "out of memory counting characters");
    }
    fk_strmap_free(&m);
    if (st != FK_OK) { free(c); return st; }
    if (n > 1) qsort(c, (size_t)n, sizeof *c, cmp_chars);
    const double cov = coverage > 0 ? coverage : 1.0;
    int64_t kept = 0, acc = 0;
    for (int64_t i = 0; i < n; i++) {
        bool marker = c[i].n == 3 && memcmp(c[i].k, MARKER, 3) == 0;
        if (!marker && (double)acc >= cov * (double)total) continue;
        acc += c[i].count;
        c[kept++] = c[i];
    }
    *out = c;
    *n_out = kept;
    return FK_OK;
}

// ---------------------------------------------------------------- the run
// One training run: the trainer, the vocabulary being built with its lookup maps, and the
// merges; the steps below fill it in order.
typedef struct {
    const fk_tok_train_opts *o;
    bool spm;
    const char *pre;         // BPE: the pre-tokenizer preset
    int32_t n_spec, n_base;  // specials; specials + byte tokens (SPM: + characters)
    trainer t;
    vocab v;
    fk_strmap pieces;        // spelling -> id, every token
    fk_strmap spec_map;      // spellings no merge may make: the specials (SPM: and byte tokens)
    int32_t byte_id[256];
    char_count *chars;       // SPM: the characters kept
    int64_t n_chars;
    float *scores;           // SPM: the pieces' scores
    int32_t (*merges)[2];
    int64_t cap_merges;
    int32_t n_merges;
    char *buf;               // the spelling of the pair being merged
    size_t cap_buf;
} run;

static fk_status run_nomem(const run *r) {
    return fk_error(FK_ERR_NOMEM, "tokenizer training: out of memory (%lld distinct pre-tokens, %lld pairs)",
                    (long long)r->t.n_words, (long long)r->t.n_pairs);
}

static void run_free(run *r) {
    free(r->scores);
    free(r->chars);
    free(r->merges);
    free(r->buf);
    fk_strmap_free(&r->pieces);
    fk_strmap_free(&r->spec_map);
    vocab_free(&r->v);
    trainer_free(&r->t);
}

// 1. Pre-tokenizes (SPM: normalises and splits) every text and counts the words; *bytes:
//    the bytes read.
static fk_status count_words(run *r, const char *const *texts, const size_t *lens, int n_texts, int64_t *bytes) {
    trainer *t = &r->t;
    fk_pretok pt = {0};
    fk_status st = r->spm ? FK_OK : fk_pretok_init(&pt, r->pre, NULL, 0);
    if (st == FK_OK) st = fk_strmap_init(&t->map, 1 << 16);
    for (int i = 0; st == FK_OK && i < n_texts; i++) {
        size_t n = lens ? lens[i] : strlen(texts[i]);
        *bytes += (int64_t)n;
        if (n) st = r->spm ? spm_words(t, texts[i], n, r->o->split_digits) : fk_pretok_split(&pt, texts[i], n, on_piece, t);
    }
    fk_pretok_free(&pt);
    fk_strmap_free(&t->map);  // the word keys stay in t->wkey
    return st;
}

// 2. The base vocabulary: specials, then the byte tokens (BPE: by ascending mapped code
//    point; SPM: <0x00>..<0xFF>).
static fk_status base_vocab(run *r) {
    const fk_tok_train_opts *o = r->o;
    vocab *v = &r->v;
    uint32_t cps[256];
    for (int b = 0; b < 256; b++) cps[b] = (r->spm ? (uint32_t)b : fk_byte_to_cp((uint8_t)b)) << 8 | (uint32_t)b;
    for (int i = 1; i < 256; i++) {  // insertion sort: 256 entries
        uint32_t x = cps[i];
        int j = i;
        for (; j > 0 && cps[j - 1] > x; j--) cps[j] = cps[j - 1];
        cps[j] = x;
    }
    for (int i = 0; i < r->n_spec; i++)
        if (!vocab_add(v, special_name(o, i), (uint32_t)strlen(special_name(o, i)))) return run_nomem(r);
    FK_TRY(fk_strmap_init(&r->pieces, o->vocab_size));
    for (int i = 0; i < 256; i++) {
        char u[8];
        int n = r->spm ? snprintf(u, sizeof u, "<0x%02X>", cps[i] & 0xFF) : fk_utf8_put(cps[i] >> 8, u);
        r->byte_id[cps[i] & 0xFF] = r->n_spec + i;
        if (!vocab_add(v, u, (uint32_t)n)) return run_nomem(r);
        FK_TRY(fk_strmap_put(&r->pieces, v->piece[v->n - 1], (uint32_t)n, r->n_spec + i));
    }
    // A special spelled like a byte token would take that byte's place in the vocabulary.
    // No merge may spell a special (encoding would make the control token) or, in SPM, a
    // byte token.
    FK_TRY(fk_strmap_init(&r->spec_map, r->n_base));
    for (int i = 0; i < r->n_spec; i++) {
        if (fk_strmap_get(&r->pieces, v->piece[i], v->plen[i]) >= 0)
            return fk_error(FK_ERR_ARG, "tokenizer training: special token '%s' is spelled like the byte token of one byte", v->piece[i]);
        FK_TRY(fk_strmap_put(&r->spec_map, v->piece[i], v->plen[i], i));
    }
    for (int i = r->n_spec; r->spm && i < r->n_base; i++) FK_TRY(fk_strmap_put(&r->spec_map, v->piece[i], v->plen[i], i));
    return FK_OK;
}

// 2, SPM: the characters of the text (the most frequent, up to character_coverage) join
//    the base vocabulary after the byte tokens.
static fk_status spm_base_chars(run *r) {
    const fk_tok_train_opts *o = r->o;
    FK_TRY(spm_chars(&r->t, o->character_coverage, &r->chars, &r->n_chars));
    if (r->n_base + r->n_chars > o->vocab_size)
        return fk_error(FK_ERR_ARG, "tokenizer training: vocab_size %d is too small: the %d special tokens, 256 byte tokens and "
                        "%lld characters of the text need %lld (raise vocab_size or lower character_coverage)",
                        o->vocab_size, r->n_spec, (long long)r->n_chars, (long long)(r->n_base + r->n_chars));
    for (int64_t i = 0; i < r->n_chars; i++) {
        const char_count *ch = &r->chars[i];
        if (fk_strmap_get(&r->spec_map, ch->k, ch->n) >= 0)
            return fk_error(FK_ERR_ARG, "tokenizer training: special token '%.*s' is spelled like a character of the text", (int)ch->n, ch->k);
        if (!vocab_add(&r->v, ch->k, ch->n)) return run_nomem(r);
        FK_TRY(fk_strmap_put(&r->pieces, r->v.piece[r->v.n - 1], ch->n, (int32_t)(r->v.n - 1)));
    }
    r->t.min_id = r->n_base;  // specials and byte tokens never merge
    r->n_base += (int32_t)r->n_chars;
    if (!(r->scores = calloc((size_t)o->vocab_size, sizeof *r->scores))) return run_nomem(r);
    return FK_OK;
}

// 3. Words as symbol ids (byte tokens; SPM: characters, else byte tokens) and the initial
//    pair counts, with the heap over them.
static fk_status words_to_symbols(run *r) {
    trainer *t = &r->t;
    int64_t n_sym = 0;
    for (int64_t w = 0; w < t->n_words; w++) n_sym += t->wklen[w];
    t->off = malloc((size_t)(t->n_words + 1) * sizeof *t->off);
    t->len = malloc((size_t)(t->n_words + 1) * sizeof *t->len);
    t->stamp = calloc((size_t)(t->n_words + 1), sizeof *t->stamp);
    t->sym = malloc((size_t)(n_sym + 1) * sizeof *t->sym);
    if (!t->off || !t->len || !t->stamp || !t->sym || !rehash(t, 1 << 16)) return run_nomem(r);
    n_sym = 0;
    for (int64_t w = 0; w < t->n_words; w++) {
        const unsigned char *k = (const unsigned char *)t->wkey[w];
        t->off[w] = n_sym;
        for (uint32_t i = 0; i < t->wklen[w];) {
            // SPM: a character left out (or an invalid byte) is its byte tokens
            int cl = r->spm ? char_len(k + i, t->wklen[w] - i) : 0;
            int32_t id = cl > 0 ? fk_strmap_get(&r->pieces, (const char *)k + i, (uint32_t)cl) : -1;
            if (id >= t->min_id) {
                t->sym[n_sym++] = id;
                i += (uint32_t)cl;
            } else {
                for (uint32_t e = i + (cl > 0 ? (uint32_t)cl : 1); i < e; i++) t->sym[n_sym++] = r->byte_id[k[i]];
            }
        }
        t->len[w] = (int32_t)(n_sym - t->off[w]);
        const int32_t *s = t->sym + t->off[w];
        for (int32_t i = 0; i + 1 < t->len[w]; i++) pair_add(t, s[i], s[i + 1], t->freq[w], (int32_t)w, 0);
        if (t->nomem) return run_nomem(r);
    }
    free(t->wkey); t->wkey = NULL;
    free(t->wklen); t->wklen = NULL;
    if (!GROW(t->heap, t->cap_heap, t->n_pairs + 1)) return run_nomem(r);
    heap_rebuild(t);
    return FK_OK;
}

// The next pair to merge: the heap's top, skipping stale entries and pairs that would spell
// a special. *p: its index, or -1 when no pair is frequent enough; r->buf[0, *n) holds the
// new token's spelling (the concatenation of *a and *b).
static fk_status next_pair(run *r, int64_t min_freq, int32_t *p, int32_t *a, int32_t *b, size_t *n) {
    trainer *t = &r->t;
    const vocab *v = &r->v;
    *p = -1;
    while (t->n_heap > 0) {
        heap_ent top = t->heap[0];
        int32_t q = pair_find(t, top.key);
        if (q < 0 || t->pcnt[q] != top.count) { heap_pop(t); continue; }  // stale: the current count has its own entry
        if (top.count < min_freq) return FK_OK;
        heap_pop(t);
        *a = (int32_t)(top.key >> 32);
        *b = (int32_t)(top.key & 0xFFFFFFFFu);
        *n = (size_t)v->plen[*a] + v->plen[*b];
        if (*n > UINT32_MAX) return fk_error(FK_ERR_ARG, "tokenizer training: token of %zu bytes is too long", *n);
        if (*n > r->cap_buf) {
            char *g = realloc(r->buf, *n);
            if (!g) return run_nomem(r);
            r->buf = g;
            r->cap_buf = *n;
        }
        memcpy(r->buf, v->piece[*a], v->plen[*a]);
        memcpy(r->buf + v->plen[*a], v->piece[*b], v->plen[*b]);
        // a pair spelling a special token (SPM: or a byte token) is never merged
        if (r->spec_map.count > 0 && fk_strmap_get(&r->spec_map, r->buf, (uint32_t)*n) >= 0) continue;
        *p = q;
        return FK_OK;
    }
    return FK_OK;
}

// Merges pair p = (a, b) into token c in every word holding it; the pairs whose counts
// changed are pushed again.
static fk_status apply_merge(run *r, int32_t p, int32_t a, int32_t b, int32_t c) {
    trainer *t = &r->t;
    // the list is detached first (pair_add may grow the tables)
    word_list l = t->pw[p];
    t->pw[p] = (word_list){0};
    uint32_t merge = (uint32_t)r->n_merges;
    t->n_dirty = 0;
    for (int32_t i = 0; i < l.n; i++) {
        int32_t w = l.w[i];
        if (t->stamp[w] == merge) continue;
        t->stamp[w] = merge;
        merge_word(t, w, a, b, c, merge);
    }
    free(l.w);
    if (t->nomem) return run_nomem(r);
    t->pcnt[p] = 0;  // every occurrence is merged
    for (int64_t i = 0; i < t->n_dirty; i++) {
        int32_t q = t->dirty[i];
        if (t->pcnt[q] > 0 && !heap_push(t, t->pcnt[q], t->pkey[q])) return run_nomem(r);
    }
    if (t->n_heap > 2 * t->n_pairs + (1 << 20)) heap_rebuild(t);
    return FK_OK;
}

// 4. Merges the most frequent pair until the vocabulary is full or no pair is frequent
//    enough; the new token is the concatenation, or the token already spelled that way.
static fk_status merge_pairs(run *r) {
    const fk_tok_train_opts *o = r->o;
    const int64_t min_freq = o->min_frequency > 0 ? o->min_frequency : 2;
    const int32_t target = o->vocab_size - r->n_base;
    while (r->v.n < o->vocab_size) {
        int32_t p, a = 0, b = 0;
        size_t n = 0;
        FK_TRY(next_pair(r, min_freq, &p, &a, &b, &n));
        if (p < 0) break;
        int32_t c = fk_strmap_get(&r->pieces, r->buf, (uint32_t)n);
        if (c < 0) {
            if (!vocab_add(&r->v, r->buf, (uint32_t)n)) return run_nomem(r);
            c = (int32_t)(r->v.n - 1);
            FK_TRY(fk_strmap_put(&r->pieces, r->v.piece[c], (uint32_t)n, c));
            if (r->scores) r->scores[c] = -(float)r->n_merges;  // SentencePiece: the piece of merge r scores -r
        }
        if (!GROW(r->merges, r->cap_merges, r->n_merges + 1)) return run_nomem(r);
        r->merges[r->n_merges][0] = a;
        r->merges[r->n_merges][1] = b;
        r->n_merges++;
        FK_TRY(apply_merge(r, p, a, b, c));
        if (o->progress && r->n_merges % 100 == 0) o->progress(o->progress_ctx, r->n_merges, target);
    }
    if (o->progress && r->n_merges % 100 != 0) o->progress(o->progress_ctx, r->n_merges, target);
    return FK_OK;
}

// 5. The trained tokenizer: byte-level BPE, or SPM with Llama 2's settings.
static fk_status build_trained(run *r, fk_tokenizer **out) {
    const int32_t n_spec = r->n_spec;
    uint8_t *types = malloc((size_t)r->v.n);
    if (!types) return run_nomem(r);
    for (int64_t i = 0; i < r->v.n; i++) types[i] = i < n_spec ? FK_TT_CONTROL : FK_TT_NORMAL;
    fk_tok_spec spec = {0};
    spec.kind = FK_TOK_BPE;
    spec.n_vocab = (int32_t)r->v.n;
    spec.pieces = (const char *const *)r->v.piece;
    spec.piece_lens = r->v.plen;
    spec.types = types;
    spec.n_merges = r->n_merges;
    spec.merges = (const int32_t (*)[2])r->merges;
    spec.pre = r->pre;
    spec.bos = spec.eos = n_spec > 0 ? 0 : -1;
    spec.unk = spec.pad = -1;
    if (r->spm) {  // Llama 2's settings, without BOS on encoding (training texts are raw text)
        types[0] = FK_TT_UNKNOWN;
        for (int32_t i = n_spec; i < n_spec + 256; i++) types[i] = FK_TT_BYTE;
        for (int64_t i = 0; i < r->n_chars; i++) r->scores[r->t.min_id + i] = -(float)(r->n_merges + i);  // below every merge
        spec.kind = FK_TOK_SPM;
        spec.scores = r->scores;
        spec.unk = 0;
        spec.bos = 1;
        spec.eos = 2;
        spec.add_space_prefix = true;
        spec.byte_fallback = true;
    }
    fk_status st = fk_tok_build(&spec, out);
    if (st != FK_OK) fk_error_context(st, "tokenizer training: building the trained tokenizer");
    free(types);
    return st;
}

fk_status fk_tok_train(const fk_tok_train_opts *o, const char *const *texts, const size_t *lens, int n_texts,
                       fk_tokenizer **out, fk_tok_train_stats *stats) {
    if (out) *out = NULL;
    if (stats) memset(stats, 0, sizeof *stats);
    FK_TRY(check_opts(o, texts, lens, n_texts, out));
    run r = {.o = o, .spm = o->kind == FK_TOK_SPM};
    r.pre = r.spm ? NULL : o->pre ? o->pre : "gpt-2";
    r.n_spec = n_specials_of(o);
    r.n_base = 256 + r.n_spec;  // SPM: and the characters, in step 2
    double t0 = fk_time_s();
    int64_t bytes = 0;
    fk_status st = count_words(&r, texts, lens, n_texts, &bytes);
    double t1 = fk_time_s();
    if (stats) {
        stats->bytes = bytes;
        stats->words = r.t.n_pieces;
        stats->unique_words = r.t.n_words;
        stats->seconds_pretokenize = t1 - t0;
    }
    if (st == FK_OK) st = base_vocab(&r);
    if (st == FK_OK && r.spm) st = spm_base_chars(&r);
    if (st == FK_OK) st = words_to_symbols(&r);
    if (st == FK_OK) st = merge_pairs(&r);
    if (st == FK_OK) {
        st = build_trained(&r, out);
        if (stats) {
            stats->merges = r.n_merges;
            stats->seconds_merge = fk_time_s() - t1;
        }
    }
    run_free(&r);
    return st;
}
