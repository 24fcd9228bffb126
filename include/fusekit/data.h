// Token data: token shards (header + uint16/uint32 ids) or raw text read as bytes
// (the 256-symbol byte tokenizer), held in memory as int32 ids.
#ifndef FUSEKIT_DATA_H
#define FUSEKIT_DATA_H

#include "fusekit/base.h"
#include "fusekit/tokenizer.h"

#define FK_SHARD_MAGIC "FKTOKSHD"
#define FK_SHARD_VERSION 1
#define FK_SHARD_HEADER_BYTES 64
#define FK_SHARD_MAX_VOCAB (1 << 24)  // the largest model vocabulary fusekit accepts (config.c)

// Shard header, little-endian, 64 bytes:
//   0  magic "FKTOKSHD"        8  u32 version (1)      12 u32 bytes per id (2 or 4)
//   16 u32 vocab size          20 u32 reserved         24 u64 number of ids
//   32 u64 text bytes covered  40 u64 tokenizer fingerprint   48..63 reserved (zero)
typedef struct {
    int32_t *ids;
    int64_t n;
    int64_t vocab_size;      // ids are < vocab_size
    int64_t text_bytes;      // bytes of text the ids encode (bits per byte needs it)
    uint64_t tokenizer_fp;   // 0 for raw bytes
    bool bos_first;          // the tokenizer adds BOS (Llama 2, Gemma): evaluation windows start with bos_id
    int32_t bos_id;
    char *path;
} fk_token_data;

// Whether the file starts with the token shard magic (false when it cannot be read).
bool fk_data_is_shard(const char *path);
// Loads a token shard, or any other file as raw bytes (vocab 256).
fk_status fk_data_load(const char *path, fk_token_data *d);
// Loads token data for tokenizer t: a token shard, which must have been written with t
// (same fingerprint) unless it records none, or any other file as text encoded with t
// (no BOS/EOS added, special tokens not parsed). t NULL behaves as fk_data_load. When t adds
// BOS, bos_first and bos_id say so: the ids stay the text's, evaluation puts BOS before each window.
fk_status fk_data_load_tok(const char *path, const fk_tokenizer *t, fk_token_data *d);
// Loads a text file as bytes (vocab 256) regardless of its contents.
fk_status fk_data_load_bytes(const char *path, fk_token_data *d);
// A copy of ids [from, to) as a new dataset (text bytes prorated).
fk_status fk_data_slice(const fk_token_data *d, int64_t from, int64_t to, fk_token_data *out);
void fk_data_free(fk_token_data *d);
// The evaluation windows over token data (fk_eval_windowing) are in eval.h.
// A tokenizer of n_tokens tokens for a model of `rows` embedding rows: more tokens than rows is
// refused, and so are fewer unless the gap is padding (Qwen2.5: 151665 tokens, 151936 rows;
// Phi-3: 32011, 32064), at most FK_VOCAB_PAD_MAX rows and at most 1% of them, 2% when the
// rows are a multiple of FK_VOCAB_PAD_ALIGN (Phi-2, CodeGen: 50295 tokens, 51200 rows, 1.8%).
// FK_ERR_ARG stating the rule; callers add the files' names.
#define FK_VOCAB_PAD_MAX 1024
#define FK_VOCAB_PAD_ALIGN 64
fk_status fk_vocab_check(int64_t n_tokens, int64_t rows);
// Writes a shard atomically; ids must be < vocab_size.
fk_status fk_shard_write(const char *path, const int32_t *ids, int64_t n, int64_t vocab_size, int64_t text_bytes,
                         uint64_t tokenizer_fp);

#endif
