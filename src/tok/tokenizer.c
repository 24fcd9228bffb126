// fk_tokenizer: building, encoding with byte spans, decoding.
#include "tok/tok_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define SPM_MAX_NOSPLIT 16

struct fk_tokenizer {
    fk_tok_kind kind;
    int32_t n_vocab;
    char *blob;        // all pieces, back to back
    uint64_t *off;     // piece i is blob[off[i] .. off[i] + len[i])
    uint32_t *len;
    float *scores;
    uint8_t *types;
    fk_strmap map;     // piece -> lowest id with that piece
    int32_t n_merges;
    int32_t (*merges)[2];
    uint64_t *pair_key;  // open-addressing map (left, right) -> rank, result; key 0 = empty
    int32_t *pair_rank, *pair_res;
    uint64_t pair_mask;
    int32_t byte_tok[256];  // BPE: token of each byte's code point; SPM: its <0xNN> token; -1 if none
    fk_pretok pre;
    int32_t bos, eos, unk, pad;
    bool add_bos, add_eos, add_space_prefix, byte_fallback, ignore_merges, score_mode;
    bool nfc;                // Unicode NFC before anything else
    char *chat_template;     // the model's chat template (chat.h), NULL when none: not part of the fingerprint
    bool prefix_after_added; // SPM: the dummy prefix also follows each added token (else only the text's start)
    bool spm_split;          // SPM: merges never cross a point before a "▁" that follows a character
                             // other than ▁ and other than the nosplit ones
    int n_nosplit;
    uint32_t nosplit[SPM_MAX_NOSPLIT];  // the characters c such that some piece holds "c▁" (Gemma: ">")
    // Tokens matched in raw text (user-defined always; control and unknown when parsing
    // specials): a byte trie, node 0 the root. Per node the lowest id of each kind that ends
    // there (-1: none); edges in an open-addressing map (node * 256 + byte + 1 -> child).
    int32_t n_nodes;
    int32_t *node_user, *node_any;
    uint64_t *edge_key;
    int32_t *edge_child;
    uint64_t edge_mask;
    uint8_t first_byte[256];  // 1: some added token starts with this byte
    uint64_t fp;
};

static const char *piece(const fk_tokenizer *t, int32_t id) { return t->blob + t->off[id]; }

void fk_tok_free(fk_tokenizer *t) {
    if (!t) return;
    free(t->chat_template);
    free(t->blob);
    free(t->off);
    free(t->len);
    free(t->scores);
    free(t->types);
    fk_strmap_free(&t->map);
    free(t->merges);
    free(t->pair_key);
    free(t->pair_rank);
    free(t->pair_res);
    fk_pretok_free(&t->pre);
    free(t->node_user);
    free(t->node_any);
    free(t->edge_key);
    free(t->edge_child);
    free(t);
}

static uint64_t pair_slot(const fk_tokenizer *t, int32_t a, int32_t b) {
    uint64_t key = ((uint64_t)(uint32_t)a << 32 | (uint32_t)b) + 1;
    uint64_t i = fk_hash64(key) & t->pair_mask;
    while (t->pair_key[i] && t->pair_key[i] != key) i = (i + 1) & t->pair_mask;
    return i;
}

// Rank and result of merging (a, b), or rank -1.
static int32_t pair_find(const fk_tokenizer *t, int32_t a, int32_t b, int32_t *res) {
    if (!t->pair_key || a < 0 || b < 0) return -1;
    uint64_t i = pair_slot(t, a, b);
    if (!t->pair_key[i]) return -1;
    *res = t->pair_res[i];
    return t->pair_rank[i];
}

static bool is_added_type(int type) { return type == FK_TT_USER_DEFINED || type == FK_TT_CONTROL || type == FK_TT_UNKNOWN; }

static uint64_t edge_slot(const fk_tokenizer *t, uint64_t key) {
    uint64_t i = fk_hash64(key) & t->edge_mask;
    while (t->edge_key[i] && t->edge_key[i] != key) i = (i + 1) & t->edge_mask;
    return i;
}

// The child of node on byte b, or -1.
static int32_t trie_child(const fk_tokenizer *t, int32_t node, unsigned char b) {
    uint64_t i = edge_slot(t, (uint64_t)node * 256 + b + 1);
    return t->edge_key[i] ? t->edge_child[i] : -1;
}

// The trie of the added tokens (those of an added type with a non-empty piece).
static fk_status build_trie(fk_tokenizer *t) {
    uint64_t bytes = 0;
    for (int32_t i = 0; i < t->n_vocab; i++)
        if (is_added_type(t->types[i])) bytes += t->len[i];
    if (bytes > (uint64_t)INT32_MAX / 2) return fk_error(FK_ERR_FORMAT, "tokenizer: added tokens hold %llu bytes", (unsigned long long)bytes);
    uint64_t cap = 16;
    while (cap < 2 * bytes + 2) cap <<= 1;
    t->node_user = malloc(sizeof(int32_t) * (size_t)(bytes + 1));
    t->node_any = malloc(sizeof(int32_t) * (size_t)(bytes + 1));
    t->edge_key = calloc(cap, sizeof *t->edge_key);
    t->edge_child = malloc(sizeof(int32_t) * cap);
    if (!t->node_user || !t->node_any || !t->edge_key || !t->edge_child) return fk_error(FK_ERR_NOMEM, "out of memory building a tokenizer");
    t->edge_mask = cap - 1;
    t->n_nodes = 1;
    t->node_user[0] = t->node_any[0] = -1;
    for (int32_t id = 0; id < t->n_vocab; id++) {
        if (!is_added_type(t->types[id]) || t->len[id] == 0) continue;
        const unsigned char *p = (const unsigned char *)piece(t, id);
        int32_t node = 0;
        for (uint32_t k = 0; k < t->len[id]; k++) {
            uint64_t key = (uint64_t)node * 256 + p[k] + 1, i = edge_slot(t, key);
            if (!t->edge_key[i]) {
                t->edge_key[i] = key;
                t->edge_child[i] = t->n_nodes;
                t->node_user[t->n_nodes] = t->node_any[t->n_nodes] = -1;
                t->n_nodes++;
            }
            node = t->edge_child[i];
        }
        if (t->node_any[node] < 0) t->node_any[node] = id;  // ids ascend: the lowest id of a piece wins
        if (t->types[id] == FK_TT_USER_DEFINED && t->node_user[node] < 0) t->node_user[node] = id;
        t->first_byte[p[0]] = 1;
    }
    return FK_OK;
}

// The code point of the UTF-8 character that ends at p[end] (exclusive), looking back at most to
// p[0]; a byte that is not valid UTF-8 gets 0x80000000 | byte.
static uint32_t char_before(const unsigned char *p, size_t end) {
    size_t j = end - 1;
    while (j > 0 && end - j < 4 && (p[j] & 0xC0) == 0x80) j--;
    int cl = fk_utf8_valid_len(p + j, end - j);
    if (cl != (int)(end - j)) return 0x80000000u | p[end - 1];
    uint32_t cp = cl == 1 ? p[j] : cl == 2 ? (p[j] & 0x1Fu) << 6 | (p[j + 1] & 0x3F)
                : cl == 3 ? (p[j] & 0x0Fu) << 12 | (p[j + 1] & 0x3Fu) << 6 | (p[j + 2] & 0x3F)
                          : (p[j] & 0x07u) << 18 | (p[j + 1] & 0x3Fu) << 12 | (p[j + 2] & 0x3Fu) << 6 | (p[j + 3] & 0x3F);
    return cp;
}

static bool is_nosplit(const fk_tokenizer *t, uint32_t cp) {
    for (int k = 0; k < t->n_nosplit; k++)
        if (t->nosplit[k] == cp) return true;
    return false;
}

static fk_tokenizer *tok_alloc(void) { return calloc(1, sizeof(fk_tokenizer)); }

// Copies the pieces into one blob with their scores and types, and maps each spelling to its
// first id; *total is the blob's length.
static fk_status tok_copy_pieces(fk_tokenizer *t, const fk_tok_spec *s, uint64_t *total) {
    int32_t n = t->n_vocab;
    uint64_t sum = 0;
    for (int32_t i = 0; i < n; i++) sum += s->piece_lens[i];
    t->blob = malloc(sum + 1);
    t->off = malloc(sizeof *t->off * (size_t)n);
    t->len = malloc(sizeof *t->len * (size_t)n);
    t->scores = calloc((size_t)n, sizeof *t->scores);
    t->types = malloc((size_t)n);
    if (!t->blob || !t->off || !t->len || !t->scores || !t->types) return fk_error(FK_ERR_NOMEM, "out of memory building a tokenizer");
    sum = 0;
    for (int32_t i = 0; i < n; i++) {
        memcpy(t->blob + sum, s->pieces[i], s->piece_lens[i]);
        t->off[i] = sum;
        t->len[i] = s->piece_lens[i];
        sum += s->piece_lens[i];
        t->scores[i] = s->scores ? s->scores[i] : 0.0f;
        t->types[i] = s->types ? s->types[i] : FK_TT_NORMAL;
        if (t->types[i] < FK_TT_NORMAL || t->types[i] > FK_TT_BYTE)
            return fk_error(FK_ERR_FORMAT, "tokenizer: token %d has type %d, expected 1..6", i, t->types[i]);
    }
    *total = sum;
    FK_TRY(fk_strmap_init(&t->map, n));
    for (int32_t i = 0; i < n; i++)
        if (fk_strmap_get(&t->map, piece(t, i), t->len[i]) < 0) FK_TRY(fk_strmap_put(&t->map, piece(t, i), t->len[i], i));
    return FK_OK;
}

// Merges: the pair map gives rank and result of every mergeable pair.
static fk_status tok_build_merges(fk_tokenizer *t, const fk_tok_spec *s) {
    int32_t n = t->n_vocab;
    fk_status st = FK_OK;
    t->n_merges = s->n_merges;
    t->merges = malloc(sizeof *t->merges * (size_t)s->n_merges);
    uint64_t cap = 16;
    while (cap < (uint64_t)s->n_merges * 2) cap <<= 1;
    t->pair_key = calloc(cap, sizeof *t->pair_key);
    t->pair_rank = malloc(cap * sizeof *t->pair_rank);
    t->pair_res = malloc(cap * sizeof *t->pair_res);
    t->pair_mask = cap - 1;
    char *tmp = NULL;
    size_t tmp_cap = 0;
    if (!t->merges || !t->pair_key || !t->pair_rank || !t->pair_res) return fk_error(FK_ERR_NOMEM, "out of memory for %d merges", s->n_merges);
    for (int32_t r = 0; r < s->n_merges; r++) {
        int32_t a = s->merges[r][0], b = s->merges[r][1];
        if (a < 0 || a >= n || b < 0 || b >= n) { st = fk_error(FK_ERR_FORMAT, "tokenizer: merge %d refers to token %d, vocabulary has %d", r, a < 0 || a >= n ? a : b, n); break; }
        size_t l = (size_t)t->len[a] + t->len[b];
        if (l > tmp_cap) {
            char *g = realloc(tmp, tmp_cap = l * 2);
            if (!g) { st = fk_error(FK_ERR_NOMEM, "out of memory"); break; }
            tmp = g;
        }
        memcpy(tmp, piece(t, a), t->len[a]);
        memcpy(tmp + t->len[a], piece(t, b), t->len[b]);
        int32_t res = fk_strmap_get(&t->map, tmp, (uint32_t)l);
        if (res < 0) {
            st = fk_error(FK_ERR_FORMAT, "tokenizer: merge %d ('%.*s' + '%.*s') makes '%.*s', which is not in the vocabulary", r,
                          (int)t->len[a], piece(t, a), (int)t->len[b], piece(t, b), (int)l, tmp);
            break;
        }
        t->merges[r][0] = a;
        t->merges[r][1] = b;
        uint64_t i = pair_slot(t, a, b);
        if (t->pair_key[i]) continue;  // a repeated merge keeps its first rank
        t->pair_key[i] = ((uint64_t)(uint32_t)a << 32 | (uint32_t)b) + 1;
        t->pair_rank[i] = r;
        t->pair_res[i] = res;
    }
    free(tmp);
    return st;
}

// SPM: merged symbols are pieces, so no symbol crosses a point between a character c and a
// "▁" unless some piece holds "c▁": the characters that do are collected (a few at most,
// else no splitting).
static void tok_find_nosplit(fk_tokenizer *t) {
    t->spm_split = true;
    for (int32_t i = 0; i < t->n_vocab && t->spm_split; i++) {
        const unsigned char *p = (const unsigned char *)piece(t, i);
        for (uint32_t k = 1; k + 2 < t->len[i]; k++) {
            if (!(p[k] == 0xE2 && p[k + 1] == 0x96 && p[k + 2] == 0x81) || (k >= 3 && p[k - 3] == 0xE2 && p[k - 2] == 0x96 && p[k - 1] == 0x81))
                continue;
            uint32_t cp = char_before(p, k);
            if (is_nosplit(t, cp)) continue;
            if (t->n_nosplit == SPM_MAX_NOSPLIT) { t->spm_split = false; break; }
            t->nosplit[t->n_nosplit++] = cp;
        }
    }
}

// The token of each byte (SPM: <0xNN>; BPE: the byte's mapped character) and the pre-tokenizer.
static fk_status tok_bytes_and_pretok(fk_tokenizer *t, const fk_tok_spec *s) {
    for (int b = 0; b < 256; b++) {
        char buf[8];
        int l;
        if (s->kind == FK_TOK_SPM) l = snprintf(buf, sizeof buf, "<0x%02X>", b);
        else l = fk_utf8_put(fk_byte_to_cp((uint8_t)b), buf);
        t->byte_tok[b] = s->kind == FK_TOK_BYTES ? b : fk_strmap_get(&t->map, buf, (uint32_t)l);
    }
    if (s->kind != FK_TOK_BPE) return fk_pretok_init(&t->pre, "", NULL, 0);
    if (s->patterns && s->n_patterns > 0) return fk_pretok_init(&t->pre, s->pre ? s->pre : "", s->patterns, s->n_patterns);
    if (s->pre && *s->pre) return fk_pretok_init(&t->pre, s->pre, NULL, 0);
    return fk_pretok_init(&t->pre, "", NULL, 0);
}

// Special ids (checked against the vocabulary; negative ones become -1) and encoding flags.
static fk_status tok_set_specials(fk_tokenizer *t, const fk_tok_spec *s) {
    int32_t n = t->n_vocab;
    t->bos = s->bos; t->eos = s->eos; t->unk = s->unk; t->pad = s->pad;
    int32_t *ids[] = {&t->bos, &t->eos, &t->unk, &t->pad};
    for (int k = 0; k < 4; k++)
        if (*ids[k] >= n) return fk_error(FK_ERR_FORMAT, "tokenizer: special token id %d outside the vocabulary of %d", *ids[k], n);
        else if (*ids[k] < 0) *ids[k] = -1;
    t->add_bos = s->add_bos && t->bos >= 0;
    t->add_eos = s->add_eos && t->eos >= 0;
    t->add_space_prefix = s->add_space_prefix;
    t->prefix_after_added = !s->prefix_first_only;
    t->byte_fallback = s->byte_fallback;
    t->ignore_merges = s->ignore_merges;
    t->nfc = s->nfc;
    return FK_OK;
}

// Fingerprint of everything that decides encodings (total: the blob's length); never 0.
static uint64_t tok_fingerprint(const fk_tokenizer *t, uint64_t total) {
    int32_t n = t->n_vocab;
    uint64_t h = fk_fnv1a64(&t->kind, sizeof t->kind, 0);
    h = fk_fnv1a64(&n, sizeof n, h);
    h = fk_fnv1a64(t->blob, total, h);
    h = fk_fnv1a64(t->len, sizeof *t->len * (size_t)n, h);
    h = fk_fnv1a64(t->types, (size_t)n, h);
    if (t->score_mode) h = fk_fnv1a64(t->scores, sizeof *t->scores * (size_t)n, h);
    if (t->n_merges) h = fk_fnv1a64(t->merges, sizeof *t->merges * (size_t)t->n_merges, h);
    for (int i = 0; i < t->pre.n; i++) h = fk_fnv1a64(t->pre.src[i], strlen(t->pre.src[i]) + 1, h);
    bool flags[] = {t->add_bos, t->add_eos, t->add_space_prefix, t->byte_fallback, t->ignore_merges, t->prefix_after_added};
    h = fk_fnv1a64(flags, sizeof flags, h);
    h = fk_fnv1a64(&t->bos, sizeof t->bos, h);
    h = fk_fnv1a64(&t->eos, sizeof t->eos, h);
    h = fk_fnv1a64(&t->unk, sizeof t->unk, h);
    if (t->nfc) h = fk_fnv1a64("nfc", 3, h);  // only when set: the fingerprints before it stay
    return h ? h : 1;
}

fk_status fk_tok_build(const fk_tok_spec *s, fk_tokenizer **out) {
    *out = NULL;
    if (s->n_vocab <= 0) return fk_error(FK_ERR_ARG, "tokenizer: empty vocabulary");
    if (s->kind != FK_TOK_BPE && s->kind != FK_TOK_SPM && s->kind != FK_TOK_BYTES)
        return fk_error(FK_ERR_ARG, "tokenizer: unknown kind %d", (int)s->kind);
    fk_tokenizer *t = tok_alloc();
    if (!t) return fk_error(FK_ERR_NOMEM, "out of memory building a tokenizer");
    t->n_vocab = s->n_vocab;
    t->kind = s->kind;
    uint64_t total = 0;
    fk_status st = tok_copy_pieces(t, s, &total);
    if (st == FK_OK && s->n_merges > 0) st = tok_build_merges(t, s);
    if (st != FK_OK) goto fail;
    t->score_mode = s->kind == FK_TOK_SPM && s->n_merges == 0;
    if (s->kind == FK_TOK_SPM) tok_find_nosplit(t);
    if ((st = tok_bytes_and_pretok(t, s)) != FK_OK) goto fail;
    if ((st = tok_set_specials(t, s)) != FK_OK) goto fail;
    // Tokens matched in the raw text before anything else.
    if ((st = build_trie(t)) != FK_OK) goto fail;
    t->fp = tok_fingerprint(t, total);
    *out = t;
    return FK_OK;
fail:
    fk_tok_free(t);
    return st;
}

fk_status fk_tok_new_bytes(fk_tokenizer **out) {
    // The byte tokenizer is byte-level BPE with 256 tokens in byte order and no merges,
    // so it saves as an ordinary tokenizer.json; encoding takes a shortcut.
    char buf[256][4];
    const char *pieces[256];
    uint32_t lens[256];
    for (int b = 0; b < 256; b++) {
        lens[b] = (uint32_t)fk_utf8_put(fk_byte_to_cp((uint8_t)b), buf[b]);
        pieces[b] = buf[b];
    }
    fk_tok_spec s = {.kind = FK_TOK_BYTES, .n_vocab = 256, .pieces = pieces, .piece_lens = lens,
                     .bos = -1, .eos = -1, .unk = -1, .pad = -1};
    return fk_tok_build(&s, out);
}

// ---------------------------------------------------------------- accessors
fk_tok_kind fk_tok_kind_of(const fk_tokenizer *t) { return t->kind; }
int32_t fk_tok_vocab_size(const fk_tokenizer *t) { return t->n_vocab; }
const char *fk_tok_pre(const fk_tokenizer *t) { return t->pre.name ? t->pre.name : ""; }
int32_t fk_tok_bos(const fk_tokenizer *t) { return t->bos; }
bool fk_tok_adds_bos(const fk_tokenizer *t) { return t->add_bos; }
int32_t fk_tok_eos(const fk_tokenizer *t) { return t->eos; }
int32_t fk_tok_n_merges(const fk_tokenizer *t) { return t->n_merges; }
uint64_t fk_tok_fingerprint(const fk_tokenizer *t) { return t->fp; }

const char *fk_tok_piece(const fk_tokenizer *t, int32_t id, uint32_t *len) {
    if (id < 0 || id >= t->n_vocab) { *len = 0; return ""; }
    *len = t->len[id];
    return piece(t, id);
}
int fk_tok_type(const fk_tokenizer *t, int32_t id) { return id >= 0 && id < t->n_vocab ? t->types[id] : 0; }
float fk_tok_score(const fk_tokenizer *t, int32_t id) { return id >= 0 && id < t->n_vocab ? t->scores[id] : 0.0f; }
int32_t fk_tok_find(const fk_tokenizer *t, const char *p, size_t len) { return fk_strmap_get(&t->map, p, (uint32_t)len); }

void fk_tok_settings_of(const fk_tokenizer *t, fk_tok_settings *s) {
    *s = (fk_tok_settings){t->bos, t->eos, t->unk, t->pad, t->add_bos, t->add_eos, t->add_space_prefix, t->byte_fallback,
                           t->ignore_merges, !t->prefix_after_added, t->score_mode, t->nfc, (const int32_t (*)[2])t->merges, &t->pre};
}

// ---------------------------------------------------------------- output buffer
void fk_tok_out_clear(fk_tok_out *o) { o->n = 0; }
void fk_tok_out_free(fk_tok_out *o) {
    free(o->ids);
    free(o->begin);
    free(o->end);
    memset(o, 0, sizeof *o);
}

fk_status fk_tok_out_push(fk_tok_out *o, int32_t id, int64_t b, int64_t e) {
    if (o->n == o->cap) {
        int64_t cap = o->cap ? o->cap * 2 : 256;
        int32_t *ids = realloc(o->ids, sizeof *ids * (size_t)cap);
        if (ids) o->ids = ids;
        int64_t *bb = realloc(o->begin, sizeof *bb * (size_t)cap);
        if (bb) o->begin = bb;
        int64_t *ee = realloc(o->end, sizeof *ee * (size_t)cap);
        if (ee) o->end = ee;
        if (!ids || !bb || !ee) return fk_error(FK_ERR_NOMEM, "out of memory encoding (%lld tokens)", (long long)o->n);
        o->cap = cap;
    }
    o->ids[o->n] = id;
    o->begin[o->n] = b;
    o->end[o->n] = e;
    o->n++;
    return FK_OK;
}

// ---------------------------------------------------------------- merging
// Symbols of one word in a doubly linked list; candidate pairs in a binary heap ordered
// by priority (lower first: merge rank, or minus the merged piece's score), then position.
typedef struct {
    int32_t id;          // token id, -1 when the symbol is not a token
    int32_t prev, next;  // -1 at the ends
    uint32_t start, len; // bytes in the word buffer; len 0 once merged away
} sym;

typedef struct {
    double prio;
    int32_t left;   // symbol index
    uint32_t size;  // bytes of the merged pair when pushed (stale check)
    int32_t res;    // merged token
} cand;

typedef struct {
    sym *syms;
    cand *heap;
    int64_t nh, caph, caps;
} merger;

static bool cand_less(const cand *a, const cand *b) {
    return a->prio < b->prio || (a->prio == b->prio && a->left < b->left);
}
FK_HEAP_DEFINE(cand_heap, cand, cand_less)

static fk_status heap_push(merger *m, cand c) {
    if (m->nh == m->caph) {
        int64_t cap = m->caph ? m->caph * 2 : 64;
        cand *h = realloc(m->heap, sizeof *h * (size_t)cap);
        if (!h) return fk_error(FK_ERR_NOMEM, "out of memory encoding");
        m->heap = h;
        m->caph = cap;
    }
    cand_heap_sift_up(m->heap, m->nh++, c);
    return FK_OK;
}

static cand heap_pop(merger *m) {
    cand top = m->heap[0], last = m->heap[--m->nh];
    if (m->nh > 0) cand_heap_sift_down(m->heap, m->nh, 0, last);
    return top;
}

// Pushes the pair (a, next of a) if it may merge.
static fk_status try_pair(const fk_tokenizer *t, merger *m, const char *w, int32_t a) {
    if (a < 0) return FK_OK;
    int32_t b = m->syms[a].next;
    if (b < 0) return FK_OK;
    const sym *x = &m->syms[a], *y = &m->syms[b];
    cand c = {0, a, x->len + y->len, -1};
    if (t->score_mode) {
        c.res = fk_strmap_get(&t->map, w + x->start, c.size);
        if (c.res < 0) return FK_OK;
        c.prio = -(double)t->scores[c.res];
    } else {
        int32_t rank = pair_find(t, x->id, y->id, &c.res);
        if (rank < 0) return FK_OK;
        c.prio = rank;
    }
    return heap_push(m, c);
}

// Merges the symbols m->syms[0..n) of word w until no pair applies.
static fk_status merge_word(const fk_tokenizer *t, merger *m, const char *w, int32_t n) {
    m->nh = 0;
    for (int32_t i = 0; i + 1 < n; i++) FK_TRY(try_pair(t, m, w, i));
    while (m->nh > 0) {
        cand c = heap_pop(m);
        sym *x = &m->syms[c.left];
        if (x->len == 0 || x->next < 0) continue;
        sym *y = &m->syms[x->next];
        if (x->len + y->len != c.size) continue;  // one side changed since the pair was pushed
        x->id = c.res;
        x->len += y->len;
        y->len = 0;
        x->next = y->next;
        if (y->next >= 0) m->syms[y->next].prev = c.left;
        FK_TRY(try_pair(t, m, w, x->prev));
        FK_TRY(try_pair(t, m, w, c.left));
    }
    return FK_OK;
}

static fk_status merger_reserve(merger *m, int64_t n) {
    if (n <= m->caps) return FK_OK;
    sym *s = realloc(m->syms, sizeof *s * (size_t)n);
    if (!s) return fk_error(FK_ERR_NOMEM, "out of memory encoding");
    m->syms = s;
    m->caps = n;
    return FK_OK;
}

// ---------------------------------------------------------------- word cache
// Text repeats its words: the tokens of each word (pre-token, or SPM chunk) are kept,
// ids with their offsets relative to the word's start. Keys point into the text.
typedef struct {
    fk_strmap map;
    int32_t *ids;
    uint32_t *rel;
    int64_t n, cap;
    int64_t *at;  // entry k: tokens at[2k] .. at[2k] + at[2k + 1]
    int64_t entries, entries_cap;
} word_cache;

#define CACHE_MAX_WORD 256
#define CACHE_MAX_TOKENS (1 << 22)

static void cache_free(word_cache *c) {
    fk_strmap_free(&c->map);
    free(c->ids);
    free(c->rel);
    free(c->at);
    memset(c, 0, sizeof *c);
}

static fk_status cache_store(word_cache *c, const char *w, size_t n, const int32_t *ids, const int64_t *pos, int64_t base, int64_t k) {
    if (c->n + k > CACHE_MAX_TOKENS || n > CACHE_MAX_WORD) return FK_OK;  // full: the rest goes uncached
    if (c->n + k > c->cap) {
        int64_t cap = c->cap ? c->cap * 2 : 4096;
        while (cap < c->n + k) cap *= 2;
        int32_t *g = realloc(c->ids, sizeof *g * (size_t)cap);
        if (g) c->ids = g;
        uint32_t *r = realloc(c->rel, sizeof *r * (size_t)cap);
        if (r) c->rel = r;
        if (!g || !r) return fk_error(FK_ERR_NOMEM, "out of memory encoding");
        c->cap = cap;
    }
    if (c->entries == c->entries_cap) {
        int64_t cap = c->entries_cap ? c->entries_cap * 2 : 1024;
        int64_t *at = realloc(c->at, sizeof *at * 2 * (size_t)cap);
        if (!at) return fk_error(FK_ERR_NOMEM, "out of memory encoding");
        c->at = at;
        c->entries_cap = cap;
    }
    for (int64_t i = 0; i < k; i++) {
        c->ids[c->n + i] = ids[i];
        c->rel[c->n + i] = (uint32_t)(pos[i] - base);
    }
    c->at[2 * c->entries] = c->n;
    c->at[2 * c->entries + 1] = k;
    c->n += k;
    return fk_strmap_put(&c->map, w, (uint32_t)n, (int32_t)c->entries++);
}

// ---------------------------------------------------------------- byte-level BPE
typedef struct {
    const fk_tokenizer *t;
    fk_tok_out *out;
    int64_t base;  // offset of the fragment being split in the caller's text
    merger m;
    char *mapped;  // a word in its code-point form (ignore_merges lookups)
    size_t mapped_cap;
    word_cache cache;
    bool use_cache;
    fk_tok_out chunk;  // SPM: one chunk's tokens, begin = offset in the chunk (end unused)
} bpe_ctx;

static fk_status bpe_piece(void *ctx, const char *text, size_t begin, size_t end) {
    bpe_ctx *c = ctx;
    const fk_tokenizer *t = c->t;
    const char *w = text + begin;
    size_t n = end - begin;
    if (c->use_cache && n <= CACHE_MAX_WORD) {
        int32_t e = fk_strmap_get(&c->cache.map, w, (uint32_t)n);
        if (e >= 0) {
            int64_t at = c->cache.at[2 * e], k = c->cache.at[2 * e + 1];
            for (int64_t i = 0; i < k; i++) {
                int64_t b = c->base + (int64_t)begin + c->cache.rel[at + i];
                int64_t en = c->base + (i + 1 < k ? (int64_t)begin + c->cache.rel[at + i + 1] : (int64_t)end);
                FK_TRY(fk_tok_out_push(c->out, c->cache.ids[at + i], b, en));
            }
            return FK_OK;
        }
    }
    int64_t from = c->out->n;
    if (t->ignore_merges) {
        if (n * 4 > c->mapped_cap) {
            char *g = realloc(c->mapped, c->mapped_cap = n * 4 + 16);
            if (!g) return fk_error(FK_ERR_NOMEM, "out of memory encoding");
            c->mapped = g;
        }
        size_t l = 0;
        for (size_t i = 0; i < n; i++) l += (size_t)fk_utf8_put(fk_byte_to_cp((uint8_t)w[i]), c->mapped + l);
        int32_t id = fk_strmap_get(&t->map, c->mapped, (uint32_t)l);
        if (id >= 0) {
            FK_TRY(fk_tok_out_push(c->out, id, c->base + (int64_t)begin, c->base + (int64_t)end));
            goto done;
        }
    }
    FK_TRY(merger_reserve(&c->m, (int64_t)n));
    for (size_t i = 0; i < n; i++) {
        int32_t id = t->byte_tok[(unsigned char)w[i]];
        c->m.syms[i] = (sym){id, (int32_t)i - 1, i + 1 < n ? (int32_t)i + 1 : -1, (uint32_t)i, 1};
    }
    FK_TRY(merge_word(t, &c->m, w, (int32_t)n));
    for (int32_t i = 0; i >= 0; i = c->m.syms[i].next) {
        const sym *s = &c->m.syms[i];
        int32_t id = s->id;
        if (id < 0) id = t->unk;
        if (id < 0)
            return fk_error(FK_ERR_FORMAT, "byte 0x%02X at offset %zu has no token in this vocabulary and there is no unknown token",
                            (unsigned char)w[s->start], (size_t)c->base + begin + s->start);
        FK_TRY(fk_tok_out_push(c->out, id, c->base + (int64_t)(begin + s->start), c->base + (int64_t)(begin + s->start + s->len)));
    }
done:
    if (c->use_cache) FK_TRY(cache_store(&c->cache, w, n, c->out->ids + from, c->out->begin + from, c->out->begin[from], c->out->n - from));
    return FK_OK;
}

// ---------------------------------------------------------------- SentencePiece-style
typedef struct {
    char *buf;       // normalized text of one fragment
    int64_t *src;    // source offset of each normalized byte, and one past the end
    size_t cap;
} spm_buf;

// Tokens of the normalized bytes w[0, l) into c->chunk, with their offsets in w.
static fk_status spm_chunk(bpe_ctx *c, const char *w, size_t l, int64_t at_src) {
    const fk_tokenizer *t = c->t;
    merger *m = &c->m;
    FK_TRY(merger_reserve(m, (int64_t)l));
    int32_t ns = 0;
    const unsigned char *u = (const unsigned char *)w;
    for (size_t i = 0; i < l;) {  // symbols are characters; an invalid byte is one of its own
        int cl = fk_utf8_valid_len(u + i, l - i);
        if (cl == 0) cl = 1;
        m->syms[ns] = (sym){fk_strmap_get(&t->map, w + i, (uint32_t)cl), ns - 1, -1, (uint32_t)i, (uint32_t)cl};
        if (ns > 0) m->syms[ns - 1].next = ns;
        ns++;
        i += (size_t)cl;
    }
    FK_TRY(merge_word(t, m, w, ns));
    for (int32_t i = 0; i >= 0; i = m->syms[i].next) {
        const sym *s = &m->syms[i];
        size_t a = s->start, b = s->start + s->len;
        int32_t id = s->id;
        if (t->score_mode && id < 0) id = fk_strmap_get(&t->map, w + a, s->len);
        if (id >= 0) {
            FK_TRY(fk_tok_out_push(&c->chunk, id, (int64_t)a, (int64_t)a));
            continue;
        }
        for (size_t j = a; j < b; j++) {
            int32_t bt = t->byte_fallback ? t->byte_tok[u[j]] : -1;
            if (bt < 0) bt = t->unk;
            if (bt < 0) return fk_error(FK_ERR_FORMAT, "character at offset %lld has no token and no byte fallback", (long long)at_src);
            FK_TRY(fk_tok_out_push(&c->chunk, bt, (int64_t)j, (int64_t)j));
            if (bt == t->unk && !t->byte_fallback) break;  // one unknown token for the whole character
        }
    }
    return FK_OK;
}

static bool is_marker(const char *p) {
    return (unsigned char)p[0] == 0xE2 && (unsigned char)p[1] == 0x96 && (unsigned char)p[2] == 0x81;
}

static fk_status spm_fragment(bpe_ctx *c, spm_buf *sb, const char *text, size_t begin, size_t end, bool prefix) {
    const fk_tokenizer *t = c->t;
    size_t need = (end - begin) * 3 + 4;
    if (need > sb->cap) {
        char *b = realloc(sb->buf, need);
        if (b) sb->buf = b;
        int64_t *s = realloc(sb->src, sizeof *s * (need + 1));
        if (s) sb->src = s;
        if (!b || !s) return fk_error(FK_ERR_NOMEM, "out of memory encoding");
        sb->cap = need;
    }
    static const char marker[3] = {(char)0xE2, (char)0x96, (char)0x81};  // U+2581 "▁"
    size_t l = 0;
    if (prefix) {
        for (int k = 0; k < 3; k++) { sb->buf[l] = marker[k]; sb->src[l++] = (int64_t)begin; }
    }
    for (size_t i = begin; i < end; i++) {
        if (text[i] == ' ') {
            for (int k = 0; k < 3; k++) { sb->buf[l] = marker[k]; sb->src[l++] = (int64_t)i; }
        } else {
            sb->buf[l] = text[i];
            sb->src[l++] = (int64_t)i;
        }
    }
    sb->src[l] = (int64_t)end;
    // Chunks: where no piece can cross (before a "▁" that follows another character), the
    // text is merged chunk by chunk, with the same result as merging it whole.
    for (size_t a = 0; a < l;) {
        size_t b = l;
        if (t->spm_split) {
            for (b = a + 1; b + 3 <= l; b++) {
                const char *p = memchr(sb->buf + b, 0xE2, l - b);
                if (!p) { b = l; break; }
                b = (size_t)(p - sb->buf);
                if (b + 3 <= l && is_marker(p) && !(b >= 3 && is_marker(p - 3)) &&
                    !(t->n_nosplit && is_nosplit(t, char_before((const unsigned char *)sb->buf, b))))
                    break;
            }
            if (b > l || b + 3 > l) b = l;
        }
        const char *w = sb->buf + a;
        size_t n = b - a;
        // The cache is keyed by the chunk's original text, which outlives the call (the
        // normalized buffer is rewritten per fragment); a chunk holding the dummy prefix
        // is not the image of its text alone and is not cached.
        bool cacheable = c->use_cache && !(prefix && a == 0);
        const char *key = text + sb->src[a];
        size_t key_len = (size_t)(sb->src[b] - sb->src[a]);
        int32_t e = cacheable && key_len <= CACHE_MAX_WORD ? fk_strmap_get(&c->cache.map, key, (uint32_t)key_len) : -1;
        const int32_t *ids;
        int64_t k, at = 0;
        if (e >= 0) {
            at = c->cache.at[2 * e];
            k = c->cache.at[2 * e + 1];
            ids = c->cache.ids + at;
        } else {
            fk_tok_out_clear(&c->chunk);
            FK_TRY(spm_chunk(c, w, n, sb->src[a]));
            if (cacheable) FK_TRY(cache_store(&c->cache, key, key_len, c->chunk.ids, c->chunk.begin, 0, c->chunk.n));
            ids = c->chunk.ids;
            k = c->chunk.n;
        }
        for (int64_t i = 0; i < k; i++) {
            int64_t r0 = e >= 0 ? c->cache.rel[at + i] : c->chunk.begin[i];
            int64_t r1 = i + 1 < k ? (e >= 0 ? c->cache.rel[at + i + 1] : c->chunk.begin[i + 1]) : (int64_t)n;
            FK_TRY(fk_tok_out_push(c->out, ids[i], sb->src[a + (size_t)r0], sb->src[a + (size_t)r1]));
        }
        a = b;
    }
    return FK_OK;
}

// ---------------------------------------------------------------- encode
// The added or special token starting at text[i], longest first, or -1.
static int32_t match_added(const fk_tokenizer *t, const char *text, size_t n, size_t i, bool specials) {
    if (!t->first_byte[(unsigned char)text[i]]) return -1;
    int32_t node = 0, best = -1;
    for (size_t j = i; j < n; j++) {
        node = trie_child(t, node, (unsigned char)text[j]);
        if (node < 0) break;
        int32_t id = specials ? t->node_any[node] : t->node_user[node];
        if (id >= 0) best = id;
    }
    return best;
}

// The tokens of text[0, n) (no BOS/EOS) appended to out.
static fk_status encode_text(const fk_tokenizer *t, const char *text, size_t n, unsigned flags, fk_tok_out *out) {
    fk_status st = FK_OK;
    bool specials = flags & FK_ENC_PARSE_SPECIAL, space_prefix = t->add_space_prefix && !(flags & FK_ENC_NO_PREFIX);
    if (t->kind == FK_TOK_BYTES) {
        for (size_t i = 0; i < n && st == FK_OK; i++) st = fk_tok_out_push(out, (unsigned char)text[i], (int64_t)i, (int64_t)i + 1);
    } else {
        bpe_ctx bc = {.t = t, .out = out, .use_cache = n >= 4096};
        spm_buf sb = {0};
        if (bc.use_cache) st = fk_strmap_init(&bc.cache.map, 1 << 14);
        bool prev_special = true;
        size_t seg = 0;
        bool any_added = t->n_nodes > 1;
        for (size_t i = 0; st == FK_OK && i <= n; i++) {
            int32_t id = -1;
            if (i < n && any_added) {
                id = match_added(t, text, n, i, specials);
                if (id < 0) continue;
            } else if (i < n) {
                i = n - 1;  // no added tokens: one fragment
                continue;
            }
            if (seg < i) {  // the raw text before the match (or the end)
                if (t->kind == FK_TOK_BPE) {
                    bc.base = (int64_t)seg;
                    st = fk_pretok_split(&t->pre, text + seg, i - seg, bpe_piece, &bc);
                }
                else st = spm_fragment(&bc, &sb, text, seg, i, space_prefix && prev_special && (seg == 0 || t->prefix_after_added));
                prev_special = false;
            }
            if (st == FK_OK && id >= 0) {
                st = fk_tok_out_push(out, id, (int64_t)i, (int64_t)(i + t->len[id]));
                prev_special = true;
                i += t->len[id] - 1;
                seg = i + 1;
            }
        }
        free(bc.m.syms);
        free(bc.m.heap);
        free(bc.mapped);
        cache_free(&bc.cache);
        fk_tok_out_free(&bc.chunk);
        free(sb.buf);
        free(sb.src);
    }
    return st;
}

fk_status fk_tok_encode(const fk_tokenizer *t, const char *text, size_t n, unsigned flags, fk_tok_out *out) {
    bool add = flags & FK_ENC_ADD_SPECIAL;
    if (add && t->add_bos) FK_TRY(fk_tok_out_push(out, t->bos, 0, 0));
    char *norm = NULL;
    int64_t *src = NULL;
    size_t nn = 0;
    fk_status st = t->nfc ? fk_nfc(text, n, &norm, &src, &nn) : FK_OK;
    if (st == FK_OK && norm) {  // spans in the normalized text, mapped back to the caller's
        int64_t k0 = out->n;
        st = encode_text(t, norm, nn, flags, out);
        for (int64_t k = k0; st == FK_OK && k < out->n; k++) {
            out->begin[k] = src[out->begin[k]];
            out->end[k] = src[out->end[k]];
        }
    } else if (st == FK_OK) {
        st = encode_text(t, text, n, flags, out);
    }
    free(norm);
    free(src);
    if (st == FK_OK && add && t->add_eos) st = fk_tok_out_push(out, t->eos, (int64_t)n, (int64_t)n);
    return st;
}

fk_status fk_tok_encode_file(const fk_tokenizer *t, const char *path, unsigned flags, fk_tok_out *out, size_t *n_bytes, char **text) {
    char *buf;
    size_t n;
    FK_TRY(fk_read_file(path, &buf, &n));
    fk_status st = fk_tok_encode(t, buf, n, flags, out);
    if (st != FK_OK || !text) free(buf);
    else *text = buf;
    if (st != FK_OK) return fk_error_context(st, "%s", path);
    if (n_bytes) *n_bytes = n;
    return FK_OK;
}

// ---------------------------------------------------------------- decode
static int hexval(char c) {
    return c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

size_t fk_tok_token_bytes(const fk_tokenizer *t, int32_t id, char *buf, size_t cap) {
    if (id < 0 || id >= t->n_vocab) return 0;
    const char *p = piece(t, id);
    uint32_t len = t->len[id];
    size_t o = 0;
#define PUT(ch) do { if (o < cap) buf[o] = (char)(ch); o++; } while (0)
    int type = t->types[id];
    if (t->kind == FK_TOK_BYTES) {
        PUT(id);
    } else if (type == FK_TT_CONTROL || type == FK_TT_USER_DEFINED || type == FK_TT_UNKNOWN) {
        for (uint32_t i = 0; i < len; i++) PUT(p[i]);
    } else if (t->kind == FK_TOK_SPM && type == FK_TT_BYTE && len == 6 && memcmp(p, "<0x", 3) == 0 && p[5] == '>' &&
               hexval(p[3]) >= 0 && hexval(p[4]) >= 0) {
        PUT(hexval(p[3]) * 16 + hexval(p[4]));
    } else if (t->kind == FK_TOK_SPM) {
        for (uint32_t i = 0; i < len; i++) {
            if (i + 2 < len && (unsigned char)p[i] == 0xE2 && (unsigned char)p[i + 1] == 0x96 && (unsigned char)p[i + 2] == 0x81) {
                PUT(' ');
                i += 2;
            } else {
                PUT(p[i]);
            }
        }
    } else {  // byte-level: every code point stands for one byte
        const unsigned char *u = (const unsigned char *)p;
        for (uint32_t i = 0; i < len;) {
            int cl = fk_utf8_valid_len(u + i, len - i);
            if (cl == 0) { PUT(u[i]); i++; continue; }
            uint32_t cp = cl == 1 ? u[i] : cl == 2 ? (u[i] & 0x1Fu) << 6 | (u[i + 1] & 0x3F)
                        : cl == 3 ? (u[i] & 0x0Fu) << 12 | (u[i + 1] & 0x3Fu) << 6 | (u[i + 2] & 0x3F)
                                  : (u[i] & 0x07u) << 18 | (u[i + 1] & 0x3Fu) << 12 | (u[i + 2] & 0x3Fu) << 6 | (u[i + 3] & 0x3F);
            int b = fk_cp_to_byte(cp);
            if (b >= 0) PUT(b);
            else for (int k = 0; k < cl; k++) PUT(u[i + k]);
            i += (uint32_t)cl;
        }
    }
#undef PUT
    return o;
}

fk_status fk_tok_decode(const fk_tokenizer *t, const int32_t *ids, int64_t n, unsigned flags, char **text, size_t *len) {
    size_t cap = 64, o = 0;
    char *buf = malloc(cap);
    if (!buf) return fk_error(FK_ERR_NOMEM, "out of memory decoding");
    bool first = true;
    for (int64_t i = 0; i < n; i++) {
        int32_t id = ids[i];
        if (id < 0 || id >= t->n_vocab) {
            free(buf);
            return fk_error(FK_ERR_ARG, "cannot decode token %d at position %lld: the vocabulary has %d tokens", id, (long long)i, t->n_vocab);
        }
        int ty = t->types[id];
        bool control = ty == FK_TT_CONTROL && t->kind != FK_TOK_BYTES;
        // SPM encoding puts a dummy prefix at the start and after every added token
        bool added = t->kind != FK_TOK_BYTES && (ty == FK_TT_CONTROL || ty == FK_TT_USER_DEFINED || ty == FK_TT_UNKNOWN);
        if (added) first = t->prefix_after_added;
        if (control && (flags & FK_DEC_SKIP_SPECIAL)) continue;
        size_t k;
        while ((k = fk_tok_token_bytes(t, id, buf + o, cap - o - 1)) > cap - o - 1) {
            char *g = realloc(buf, cap *= 2);
            if (!g) { free(buf); return fk_error(FK_ERR_NOMEM, "out of memory decoding"); }
            buf = g;
        }
        // The dummy prefix: the first text token after it starts with the space it added.
        if (first && !added && t->kind == FK_TOK_SPM && t->add_space_prefix && !(flags & FK_DEC_KEEP_PREFIX) && k > 0 && buf[o] == ' ') {
            memmove(buf + o, buf + o + 1, k - 1);
            k--;
        }
        if (!added) first = false;
        o += k;
    }
    buf[o] = 0;
    *text = buf;
    *len = o;
    return FK_OK;
}

const char *fk_tok_chat_template(const fk_tokenizer *t) { return t ? t->chat_template : NULL; }

fk_status fk_tok_set_chat_template(fk_tokenizer *t, const char *tmpl) {
    char *c = NULL;
    if (tmpl && !(c = strdup(tmpl))) return fk_error(FK_ERR_NOMEM, "out of memory");
    free(t->chat_template);
    t->chat_template = c;
    return FK_OK;
}
