// Shared pieces of the fusekit command-line program: option tables and printing.
#ifndef FK_CLI_H
#define FK_CLI_H

#include "fusekit/fusekit.h"

typedef enum { OPT_STR, OPT_INT, OPT_FLOAT, OPT_FLAG, OPT_LIST } opt_type;

// A repeatable option's values, in order (OPT_LIST; ptr points to a cli_list).
#define CLI_LIST_MAX 64
typedef struct {
    const char *v[CLI_LIST_MAX];
    int n;
} cli_list;

typedef struct {
    const char *name;     // "--steps"; a second spelling may follow after '|': "-o|--out"
    opt_type type;
    void *ptr;            // const char **, int64_t *, double *, bool *, cli_list *
    const char *help;
    bool set;             // filled by cli_parse
} cli_opt;

// Parses argv against the table (terminated by a NULL name). Returns 0 to go on, 1 when help
// was printed, 2 on a bad argument (message printed).
int cli_parse(int argc, char **argv, cli_opt *opts, const char *usage);
bool cli_was_set(const cli_opt *opts, const char *name);
// Prints "fusekit <cmd>: error: <message>" and returns the exit code 1.
int cli_fail(const char *cmd, fk_status st);
void cli_set_threads(int64_t threads);

int cmd_train(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_generate(int argc, char **argv);
int cmd_info(int argc, char **argv);
int cmd_tokenizer(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_extract(int argc, char **argv);
int cmd_merge(int argc, char **argv);
int cmd_fuse(int argc, char **argv);
int cmd_analyze(int argc, char **argv);
int cmd_fold(int argc, char **argv);
int cmd_heal(int argc, char **argv);
int cmd_prune(int argc, char **argv);
int cmd_data(int argc, char **argv);
int cmd_demo(int argc, char **argv);
int cmd_export(int argc, char **argv);
int cmd_import(int argc, char **argv);

// Extracts (or finds cached) the top-k store of a model folder on a text into store_dir, named
// after the folder and the model's fingerprint, with its tokenizer beside it; *path gets the
// file (free it). tty: show progress.
fk_status cli_extract_store(const char *model_dir, const char *data, const char *store_dir, int k, bool tty, char **path);

// The tokenizer a model (a folder or a .gguf file) uses: `path` when given, else the model's own
// (the folder's tokenizer.json, the GGUF's tokenizer.ggml.* keys), else the byte tokenizer when
// the vocabulary has 256 tokens, else NULL (ids only). vocab < 0: not checked against the model.
fk_status cli_model_tokenizer(const char *model_dir, const char *path, int64_t vocab, fk_tokenizer **t);

// Loads a model from a folder or a .gguf file (fk_model_load; flags FK_LOAD_*) and, unless tok is
// NULL, its tokenizer as cli_model_tokenizer chooses it (`tok_path` first). On failure nothing
// is left allocated.
fk_status cli_load_model(const char *path, const char *tok_path, unsigned flags, fk_model *m, fk_tokenizer **tok);

// Gives the heap's free pages back to the system (after tokenizer JSON is parsed or written).
void cli_trim_heap(void);
// Writes *tok beside a store (fk_store_save_tokenizer) and makes *tok the tokenizer as it reads
// back from there. A tokenizer from GGUF metadata can read back from tokenizer.json with another
// fingerprint (SentencePiece pieces merge by rank there, by score in GGUF; the same ids), and a
// store must record the fingerprint of the tokenizer kept beside it.
fk_status cli_store_tokenizer(const char *store_path, fk_tokenizer **tok);

// The name a model path goes by in file names: its last component without a trailing '/' or
// ".gguf" (written into out, n bytes).
void cli_model_name(const char *path, char *out, size_t n);

#endif
