// Tokenizers: byte-level BPE (GPT-2, GPT-NeoX/MPT, Falcon, StarCoder, Refact, DeepSeek,
// Llama 3, Qwen2), SentencePiece-style BPE (Llama 2, Mistral, Phi-3: "▁" word markers,
// byte fallback <0xNN>, dummy prefix), and the 256-symbol raw byte tokenizer. Loaded from
// a Hugging Face tokenizer.json (+ tokenizer_config.json) or GGUF metadata, saved to both.
//
// Encoding reports, for every token, the byte span [begin, end) of the input it covers.
// The spans of one encode call tile the input: they are contiguous, in order, and cover
// it exactly. Tokens that cover no input (BOS/EOS, a lone dummy-prefix "▁") have
// begin == end. A tokenizer is immutable after loading; encode and decode may run on
// several threads at once.
#ifndef FUSEKIT_TOKENIZER_H
#define FUSEKIT_TOKENIZER_H

#include "fusekit/base.h"
#include "fusekit/gguf.h"

typedef enum {
    FK_TOK_BYTES = 0,  // raw bytes: id = byte value, vocab 256
    FK_TOK_BPE = 1,    // byte-level BPE: bytes mapped to printable code points, merges by rank
    FK_TOK_SPM = 2,    // SentencePiece-style BPE on characters with "▁" and byte fallback
} fk_tok_kind;

// Token types, numbered as GGUF's tokenizer.ggml.token_type.
enum {
    FK_TT_NORMAL = 1,
    FK_TT_UNKNOWN = 2,
    FK_TT_CONTROL = 3,       // special tokens (BOS, EOS, <|endoftext|>): matched in text only when parsing specials
    FK_TT_USER_DEFINED = 4,  // added tokens: always matched in text (leftmost-longest, before BPE:
                             // Hugging Face's rule; llama.cpp matches the longest token first anywhere,
                             // which differs only where a suffix of one added token starts a longer
                             // one, e.g. "ab" and "bcd" in "abcd"; not in Gemma's set, whose only
                             // overlaps are runs of one character, where both rules agree)
    FK_TT_UNUSED = 5,
    FK_TT_BYTE = 6,          // <0xNN> byte-fallback tokens
};

typedef struct fk_tokenizer fk_tokenizer;

// Everything a tokenizer is made of. Loaders and the trainer fill one and call fk_tok_build.
typedef struct {
    fk_tok_kind kind;
    int32_t n_vocab;
    // Token strings as the vocabulary stores them: byte-level BPE in its printable
    // code-point form ("Ġthe"), SentencePiece with "▁" for spaces and "<0x0A>" for bytes.
    const char *const *pieces;
    const uint32_t *piece_lens;
    const float *scores;           // NULL: none (SPM then merges by rank)
    const uint8_t *types;          // NULL: all FK_TT_NORMAL
    // Merges in rank order, each a pair of token ids whose concatenation is a token.
    // SPM with scores and no merges merges by score (SentencePiece / llama.cpp).
    int32_t n_merges;
    const int32_t (*merges)[2];
    // Pre-tokenizer (BPE): a preset name ("gpt-2", "llama-bpe", ... see fk_tok_pre_names),
    // or explicit regex patterns applied in sequence (each splits the pieces of the previous).
    const char *pre;
    const char *const *patterns;
    int n_patterns;
    int32_t bos, eos, unk, pad;    // -1 when absent
    bool add_bos, add_eos;
    bool add_space_prefix;         // SPM: "▁" before the text, and after each added token...
    bool prefix_first_only;        // ...unless this is set (Metaspace prepend_scheme "first")
    bool byte_fallback;            // SPM: unknown characters become <0xNN> tokens
    bool ignore_merges;            // BPE: a pre-token that is itself a token is not split (Llama 3)
    bool nfc;                      // BPE: Unicode NFC first (tokenizer.json's NFC normalizer:
                                   // Qwen2, GPT-NeoX); GGUF has no such key, llama.cpp never does it
} fk_tok_spec;

fk_status fk_tok_build(const fk_tok_spec *spec, fk_tokenizer **out);
fk_status fk_tok_new_bytes(fk_tokenizer **out);
// Loads from a GGUF file, a tokenizer.json, or a folder holding tokenizer.json
// (tokenizer_config.json beside it supplies BOS/EOS and add_bos/add_eos).
fk_status fk_tok_load(const char *path, fk_tokenizer **out);
fk_status fk_tok_load_gguf(const fk_gguf *g, fk_tokenizer **out);
fk_status fk_tok_load_json(const char *json_path, fk_tokenizer **out);
// Writes tokenizer.json, tokenizer_config.json and special_tokens_map.json into dir (atomically).
fk_status fk_tok_save_hf(const fk_tokenizer *t, const char *dir);
// Adds the tokenizer.ggml.* keys.
fk_status fk_tok_to_gguf(const fk_tokenizer *t, fk_gguf_writer *w);
void fk_tok_free(fk_tokenizer *t);

// The preset names the GGUF "tokenizer.ggml.pre" key may carry, NULL-terminated.
extern const char *const fk_tok_pre_names[];

fk_tok_kind fk_tok_kind_of(const fk_tokenizer *t);
int32_t fk_tok_vocab_size(const fk_tokenizer *t);
const char *fk_tok_pre(const fk_tokenizer *t);  // preset name, "" for custom patterns or none
// The chat template the tokenizer's files carry (GGUF tokenizer.chat_template; beside a
// tokenizer.json: chat_template.jinja, tokenizer_config.json's chat_template, chat_template.json),
// NULL when none; saved with it (tokenizer_config.json, GGUF). Not part of the fingerprint.
const char *fk_tok_chat_template(const fk_tokenizer *t);
fk_status fk_tok_set_chat_template(fk_tokenizer *t, const char *tmpl);  // a copy; NULL removes it
int32_t fk_tok_bos(const fk_tokenizer *t);
bool fk_tok_adds_bos(const fk_tokenizer *t);   // encoding with FK_ENC_ADD_SPECIAL puts BOS first
int32_t fk_tok_eos(const fk_tokenizer *t);
int32_t fk_tok_n_merges(const fk_tokenizer *t);
// A fingerprint of everything that decides encodings (token shards and stores record it).
uint64_t fk_tok_fingerprint(const fk_tokenizer *t);
// The vocabulary string of a token (not NUL-terminated), its type and score.
const char *fk_tok_piece(const fk_tokenizer *t, int32_t id, uint32_t *len);
int fk_tok_type(const fk_tokenizer *t, int32_t id);
float fk_tok_score(const fk_tokenizer *t, int32_t id);
// The id of a vocabulary string, or -1.
int32_t fk_tok_find(const fk_tokenizer *t, const char *piece, size_t len);
// The bytes a token stands for in text (byte-level pieces unmapped, "▁" as a space,
// <0xNN> as one byte, added and special tokens as their text). Returns the byte count,
// writing at most cap bytes.
size_t fk_tok_token_bytes(const fk_tokenizer *t, int32_t id, char *buf, size_t cap);

// ---------------------------------------------------------------- encode / decode
enum {
    FK_ENC_ADD_SPECIAL = 1,    // BOS/EOS as the tokenizer's configuration says
    FK_ENC_PARSE_SPECIAL = 2,  // control tokens written in the text become their ids
    FK_ENC_NO_PREFIX = 4,      // SPM: no dummy-prefix "▁" (the text continues a word: fk_vmap_build's approx map)
};

// Growable output of encode; zero-initialise, reuse across calls, free with fk_tok_out_free.
typedef struct {
    int32_t *ids;
    int64_t *begin, *end;  // byte span of each token in the input
    int64_t n, cap;
} fk_tok_out;
void fk_tok_out_clear(fk_tok_out *o);
void fk_tok_out_free(fk_tok_out *o);
// Appends one token (e.g. an EOS between documents).
fk_status fk_tok_out_push(fk_tok_out *o, int32_t id, int64_t begin, int64_t end);

// Encodes text (any bytes: invalid UTF-8 is tokenized byte by byte) and appends to out.
// decode(encode(x)) == x for every x when the vocabulary has a token for each byte (GPT-2,
// Llama 3, Qwen2, fusekit-trained and byte-fallback vocabularies), with one exception that
// matches Hugging Face and llama.cpp: SentencePiece reads a literal "▁" in the text as a
// space. Vocabularies missing some byte tokens (MPT, StarCoder, Refact: bytes C0, C1, F5-FF
// become the unknown token; Falcon: encoding such a byte is an error naming it) cannot
// round-trip those bytes.
fk_status fk_tok_encode(const fk_tokenizer *t, const char *text, size_t n, unsigned flags, fk_tok_out *out);
// Encodes the file at `path` as fk_tok_encode does (an error names the file). *n_bytes gets
// its size; *text, when text is not NULL, its bytes (free them; untouched on error).
fk_status fk_tok_encode_file(const fk_tokenizer *t, const char *path, unsigned flags, fk_tok_out *out, size_t *n_bytes, char **text);

enum {
    FK_DEC_SKIP_SPECIAL = 1,  // leave control tokens (BOS, EOS, ...) out
    FK_DEC_KEEP_PREFIX = 2,   // SPM: keep the space the dummy prefix became
};
// Decodes ids into a malloc'd NUL-terminated buffer (*len bytes, may hold NUL bytes).
fk_status fk_tok_decode(const fk_tokenizer *t, const int32_t *ids, int64_t n, unsigned flags, char **text, size_t *len);

// ---------------------------------------------------------------- training
// Two kinds train:
// - FK_TOK_BPE (also kind 0): byte-level BPE (GPT-2). Ids: the specials, the 256 byte
//   tokens, the merges.
// - FK_TOK_SPM: SentencePiece-style BPE (Llama 2). The text is normalised as the encoder
//   does (a "▁" before it, every space a "▁"); words start at each "▁", runs of newlines
//   and (split_digits) single digits are words of their own. Ids: 0 "<unk>", 1 "<s>" (BOS),
//   2 "</s>" (EOS), then the extra specials (control tokens), the 256 byte-fallback tokens
//   "<0x00>".."<0xFF>", the characters of the text by frequency (descending, ties by code
//   point) up to character_coverage, then the merged pieces. Characters left out and
//   invalid UTF-8 bytes become byte tokens, which never merge. vocab_size must hold all
//   of that before any merge. Scores: specials and bytes 0, the piece of merge r -r, the
//   characters below every merged piece. No BOS/EOS is added when encoding.
typedef struct {
    int32_t vocab_size;        // total, including the 256 byte tokens and the specials
    fk_tok_kind kind;          // FK_TOK_BPE (also when 0) or FK_TOK_SPM
    const char *pre;           // BPE: pre-tokenizer preset (default "gpt-2"); SPM: must be NULL
    // BPE: control tokens, ids 0..n-1 before the 256 byte tokens (e.g. "<|endoftext|>").
    // SPM: extra control tokens after <unk>, <s>, </s> (none by default).
    const char *const *specials;
    int n_specials;
    bool split_digits;         // SPM: every digit is its own piece (Llama)
    double character_coverage; // SPM: share of character occurrences covered, (0, 1]; 0 means 1 (all)
    int64_t min_frequency;     // a pair seen fewer times is never merged (default 2)
    // Called now and then with the merges done so far; may be NULL.
    void (*progress)(void *ctx, int32_t merges_done, int32_t merges_target);
    void *progress_ctx;
} fk_tok_train_opts;

typedef struct {
    int64_t bytes, words, unique_words;
    int32_t merges;
    double seconds_pretokenize, seconds_merge;
} fk_tok_train_stats;

// Trains a byte-level or SentencePiece-style BPE tokenizer on the given texts (each split
// on its own, so no piece spans two texts). Deterministic: the same texts and options give the same
// tokenizer. lens NULL: the texts are NUL-terminated. stats may be NULL.
fk_status fk_tok_train(const fk_tok_train_opts *o, const char *const *texts, const size_t *lens, int n_texts,
                       fk_tokenizer **out, fk_tok_train_stats *stats);

#endif
