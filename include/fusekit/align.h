// Alignment between two tokenizations of one text (fusion.md §2), between two vocabularies
// (MinED, §3), and of a source's next-token distributions onto the target's positions (§4).
//
// Setting: one text, tokenized by a source S and a target T. A token sequence gives, per
// token, its id and its byte span; begin has n + 1 entries and token i covers the bytes
// [begin[i], begin[i + 1]) of the text. The spans tile the text: a token may be empty
// (begin[i] == begin[i + 1]: BOS/EOS, SentencePiece's lone dummy-prefix "▁"). Both sequences
// must cover the same bytes (equal begin[0] and begin[n]).
//
// Token alignment modes:
// - FK_ALIGN_OFFSETS (default). The two span lists are walked together. Tokens with identical
//   spans align 1:1, in linear time. Between two consecutive shared boundaries where the
//   tokenizations disagree ("a region", typically one word), the region's tokens are aligned
//   by the DTW below (and are never 1:1). Empty tokens sitting on a shared boundary are paired
//   front to front, 1:1 (source BOS with target BOS, ...); surplus empty source tokens align to no target token,
//   surplus empty target tokens get an empty source range. A region of more than
//   FK_ALIGN_MAX_CELLS token pairs (pathological text) aligns by byte overlap instead: each
//   target token to the source tokens overlapping its bytes.
// - FK_ALIGN_DTW reproduces FuseLLM's alignment (src/utils/others.py, dtw and
//   transform_step_logits): dynamic time warping over token strings, source tokens as rows,
//   target tokens as columns, cost(i, j) = Levenshtein distance between the two tokens'
//   texts with the word-start markers removed, D[i,j] = c(i,j) + min(D[i-1,j], D[i,j-1],
//   D[i-1,j-1]), backtracked from the last cell with ties broken diagonal first, then a
//   source step, then a target step. Token texts are taken in byte space:
//   fk_tok_token_bytes with every space removed. The reference removes every "▁" (Llama)
//   or "Ġ" (GPT-NeoX) from the vocabulary strings; both stand for exactly the space byte,
//   so removing spaces is the same thing, and it makes "<0x0A>" and "Ċ" both "\n" (the
//   reference compares those strings as they are) and measures distances in bytes (the
//   reference in code points). The reference aligns each training sequence on its own;
//   over a whole corpus fusekit cuts windows of FK_ALIGN_DTW_WINDOW target tokens, each
//   extended to the next boundary both tokenizations share (so both sides of a window cover
//   the same bytes; after another FK_ALIGN_DTW_WINDOW tokens without one it cuts anyway), and
//   runs the DTW on each window (one of more than FK_ALIGN_MAX_CELLS token pairs aligns by
//   byte overlap, as above).
// - FK_ALIGN_FUSELLM (FuseLLM-faithful, "--align fusellm"): the DTW mode's windows and DTW, on
//   FuseLLM's own token strings: each token's vocabulary string as transformers'
//   convert_ids_to_tokens gives it (fk_tok_piece: byte-level BPE in GPT-2's byte-to-unicode
//   form, "Ġ" a space, "Ċ" a newline, "ĉ" a tab; SentencePiece "▁" and "<0x0A>" byte tokens;
//   special tokens their text), every word marker of the token's kind removed ("▁" for
//   SentencePiece, "Ġ" for byte-level BPE and the byte tokenizer, where FuseLLM keys it by
//   tokenizer class), edit distances over code points (as its editdistance.eval on str).
//   one_to_one is FuseLLM's test (transform_step_logits) exactly: hi - lo == 1 and the source
//   string with its marker replaced by the target's equals the target string (at the
//   sequence's first target token a byte-level source string gets the target's marker when
//   the target string has one: its special case "for mpt"), or vmap[source id] == target id
//   (its "soft" mode).
//
// one_to_one[j] is 1 when target token j and source token lo[j] align one to one and agree:
// - offsets mode: identical byte spans (then hi - lo == 1 and no other target token's range
//   holds that source token);
// - DTW mode: the reference's test for using the source distribution, exactly: hi - lo == 1
//   and the tokens' texts are equal (bytes, spaces kept, each token's dummy-prefix space
//   dropped: the reference's marker replacement plus its special case for a
//   sequence-initial "▁"), or, with a vocabulary map, vmap[source id] == target id (the
//   reference's "soft" mode). As in the reference, the source token may also be aligned to
//   a neighbouring target token. The DTW's costs are not normalised by length, so it often
//   hangs a short fragment on the neighbour of a matching pair ("ir" "q" "/" against "irq"
//   "/" puts "q" with "/", and the pair "/" "/" is right), but it also aligns runs of equal
//   tokens many to one (three target "\t" against one source "\t": all three count as one
//   to one, two of them at the wrong byte). bench/fk_align_bench reports both effects: 0.2-6%
//   of the DTW mode's 1:1 pairs have different spans, and asking for exclusivity would drop
//   0.05-10% of all positions. The offsets mode has neither problem.
#ifndef FUSEKIT_ALIGN_H
#define FUSEKIT_ALIGN_H

#include "fusekit/tokenizer.h"

typedef struct {
    int64_t n;             // tokens
    const int32_t *ids;    // n
    const int64_t *begin;  // n + 1: token i covers bytes [begin[i], begin[i + 1])
} fk_tokseq;

// A token sequence over an encoder's output: *begin (malloc'd, n + 1 entries, the caller
// frees it) is filled from o's spans, which must tile a text.
fk_status fk_tokseq_from_out(const fk_tok_out *o, fk_tokseq *seq, int64_t **begin);

typedef enum { FK_ALIGN_OFFSETS = 0, FK_ALIGN_DTW = 1, FK_ALIGN_FUSELLM = 2 } fk_align_mode;

#define FK_ALIGN_DTW_WINDOW 512
#define FK_ALIGN_MAX_CELLS ((int64_t)1 << 22)

typedef struct {
    int64_t n;           // target tokens
    int64_t *lo, *hi;    // target token j is aligned to source tokens [lo[j], hi[j]): lo and hi are non-decreasing
                         // in j; the range is empty only for an empty target token
    uint8_t *one_to_one; // see above
} fk_alignment;

// Aligns tgt to src (see the modes above). vmap (source id -> target id, or NULL) is used by
// the DTW mode's agreement test only. out is overwritten; free it with fk_alignment_free.
fk_status fk_align_tokens(const fk_tokenizer *src_tok, const fk_tokseq *src, const fk_tokenizer *tgt_tok, const fk_tokseq *tgt,
                          fk_align_mode mode, const int32_t *vmap, fk_alignment *out);
void fk_alignment_free(fk_alignment *a);
// "offsets" / "dtw" / "fusellm".
fk_status fk_align_parse_mode(const char *name, fk_align_mode *mode);
const char *fk_align_mode_name(fk_align_mode mode);

// Levenshtein distance between two byte strings (bit-parallel, Myers/Hyyrö, when the
// shorter one has at most 64 bytes; dynamic programming otherwise).
int64_t fk_edit_distance(const void *a, size_t na, const void *b, size_t nb);

// ---------------------------------------------------------------- vocabulary maps (MinED)
// map[v] for every source id v: a target id, or -1. Tokens are compared by the bytes they
// stand for (fk_tok_token_bytes: "Ġ" and "▁" are both a space, <0x41> is the byte 0x41,
// special tokens are their text), so the two vocabularies' conventions agree.
// - Source BOS, EOS and unknown token map to the target's BOS, EOS and unknown token when the
//   target has one (the unknown token is the first of type FK_TT_UNKNOWN).
// - Exact: the target token with the same bytes; when several have them, a normal token
//   before a byte token, before a user-defined one, before the rest (control, unknown,
//   unused); then the lowest id.
// - FK_VMAP_EXACT: -1 for every other source token.
// - FK_VMAP_MINED (default): the target token of type normal, byte or user-defined (tokens
//   that text can produce) at minimum Levenshtein distance over bytes; ties go to the lowest
//   target id. -1 only when the target has no such token.
// Deterministic, and the same for any thread count (OpenMP over source ids).
// - FK_VMAP_PREFIX (fusekit's own): after an exact miss, the longest target token whose bytes
//   start the source token's bytes (normal before byte before user-defined, as above) — the
//   token the target would predict first when the source predicts v — else MinED.
// - FK_VMAP_FUSELLM ("fusellm", FuseLLM-faithful: vocab_mapping.py's "default" map, used by
//   its "soft" alignment): over token strings as FK_ALIGN_FUSELLM forms them, the source
//   string with its word marker replaced by the target's; the target token with that string,
//   else the target token (any type: FuseLLM searches the whole vocabulary, special tokens
//   included, and maps BOS/EOS like any other token) at minimum edit distance over code
//   points, ties to the lowest id (FuseLLM's min() keeps the first in get_vocab() order: id
//   order for the slow LlamaTokenizer it loads, a hash order that varies between runs for
//   fast tokenizers).
// - FK_VMAP_FUSELLM_EXACT ("fusellm-exact", its "hard" mode): the exact string match only, -1
//   for every other source token.
// - FK_VMAP_APPROX ("approx", from the tokenizers alone, as token-level ensembles such as GaC
//   and UniTE project one vocabulary onto another): the source token's bytes re-tokenized by
//   the target tokenizer, context-free (fk_tok_encode with FK_ENC_NO_PREFIX: no BOS/EOS, no
//   SentencePiece dummy prefix, control tokens' text not parsed), and the FIRST target token of
//   that encoding: the target's next token when the source's next token is v, so v's probability
//   goes where the target would put it (many-to-one: the fusion adds the probabilities of the
//   source ids that share a target id). BOS, EOS and unknown map as above; other control and
//   unused source tokens, and tokens whose encoding fails, is empty or starts with the target's
//   unknown token, map to -1. No exact-match step: the tokenizer's own first token wins even
//   where a target token has the same bytes (BPE may never produce that token).
typedef enum {
    FK_VMAP_MINED = 0, FK_VMAP_EXACT = 1, FK_VMAP_PREFIX = 2, FK_VMAP_FUSELLM = 3, FK_VMAP_FUSELLM_EXACT = 4, FK_VMAP_APPROX = 5
} fk_vmap_mode;

// *map is malloc'd with fk_tok_vocab_size(src) entries.
fk_status fk_vmap_build(const fk_tokenizer *src, const fk_tokenizer *tgt, fk_vmap_mode mode, int32_t **map);
// The same, cached in cache_dir (created when missing) as the file fk_vmap_cache_path names,
// keyed by both tokenizer fingerprints and the mode. A file that is missing, malformed, fails
// its checksum or was made for other tokenizers, another mode or another version of the
// algorithm is rebuilt and written atomically.
fk_status fk_vmap_load_or_build(const fk_tokenizer *src, const fk_tokenizer *tgt, fk_vmap_mode mode, const char *cache_dir,
                                int32_t **map);
// "<cache_dir>/vmap-<src fingerprint>-<tgt fingerprint>-<mode>.bin" (malloc'd; NULL when out of memory).
char *fk_vmap_cache_path(const fk_tokenizer *src, const fk_tokenizer *tgt, fk_vmap_mode mode, const char *cache_dir);
// "mined" / "exact" / "prefix" / "fusellm" / "fusellm-exact" / "approx".
fk_status fk_vmap_parse_mode(const char *name, fk_vmap_mode *mode);
const char *fk_vmap_mode_name(fk_vmap_mode mode);

// ---------------------------------------------------------------- distributions
// The source's data, per source position i = 0 .. src->n - 2 (position i predicts source
// token i + 1): cnt[i] <= k entries of ids/logp (row-major, stride k, sorted by logp
// descending) and ce[i], the source's cross-entropy (nats) of its true next token.
//
// The result, per target position j = 0 .. tgt->n - 2 (position j predicts target token j + 1):
// - when one_to_one[j] (and lo[j] <= src->n - 2): the source's entries at position
//   i = lo[j] mapped through vmap. With spans that agree, source position i then predicts a
//   token that starts at the byte where target token j + 1 starts: the two distributions
//   predict the same next byte from the same prefix. Source ids that map to the same target
//   id have their probabilities ADDED (the reference keeps the largest one); ids that map to
//   -1 are dropped; the log-probabilities are as the source gave them (not renormalised);
//   entries are sorted by probability descending, ties by id.
// - otherwise count 0: a one-hot on the true next target token j + 1 (the reference put its
//   one-hot on the current token, an off-by-one; fusekit uses the next one).
// - ce[j]: the source's nats for the bytes of target token j + 1. Source position i's ce
//   (predicting source token i + 1, bytes [b0, b1)) is spread over the target positions whose
//   predicted token overlaps [b0, b1), in proportion to the overlapping bytes; the ce of an
//   empty source token goes to the target token holding its byte (the last target token when
//   it sits at the end). Bytes of target token 0 are predicted by no target position, so ce
//   that falls on them is dropped. Sums of ce over runs of target positions are then the
//   source's nats for those bytes: comparable across sources (MinCE, AvgCE).
typedef struct {
    int64_t n;       // target positions = target tokens - 1
    int k;           // capacity per position
    uint8_t *count;  // n: entries at each position (0 = one-hot on the true next target token)
    int32_t *ids;    // n * k target ids, sorted by probability descending, distinct
    float *logp;     // n * k
    float *ce;       // n
} fk_aligned_dist;

// vmap NULL: the two vocabularies are the same (ids kept). out is overwritten; free it with
// fk_aligned_dist_free.
fk_status fk_align_dists(const fk_alignment *a, const fk_tokseq *src, const fk_tokseq *tgt, const int32_t *vmap, int k,
                         const uint8_t *cnt, const int32_t *ids, const float *logp, const float *ce, fk_aligned_dist *out);
void fk_aligned_dist_free(fk_aligned_dist *d);

#endif
