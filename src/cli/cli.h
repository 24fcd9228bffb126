// Shared pieces of the fusekit command-line program: option tables and printing.
#ifndef FK_CLI_H
#define FK_CLI_H

#include "fusekit/fusekit.h"

#include <cjson/cJSON.h>
#include <stdio.h>

// Option rows: every verb parses through one table of rows. A row is the option's names, its
// value kind, a pointer into the options struct the value lands in (the library's fk_*_opts
// where one exists, filled by its fk_*_defaults first; else a small CLI struct), the allowed
// values, and help text. --help prints each row with its default read through the pointer, so
// a default is written once: where the struct is initialised. A row whose help says "default"
// in words (a value worked out later, "default: the model's context") prints no value.
typedef enum {
    OPT_STR,     // const char **
    OPT_INT,     // int64_t *
    OPT_FLOAT,   // double *
    OPT_FLAG,    // bool *
    OPT_LIST,    // cli_list *: a repeatable option's values
    OPT_I32,     // int *
    OPT_F32,     // float *
    OPT_CHOICE,  // int * (CLI_ENUM(p) for an enum): the position of the name given among those in
                 // range, "mince|avgce" (matched ignoring case); the enum's values are those positions
    OPT_GROUP,   // no value (ptr NULL): a heading, CLI_ROW_GROUP; the rows after it are another verb's
                 // (fuse takes train's): --help prints the heading, their errors name that verb
} opt_type;

// A repeatable option's values, in order (OPT_LIST; ptr points to a cli_list): the library's
// list of paths, so that a row fills a job's list (fk_train_job.teachers) directly.
#define CLI_LIST_MAX FK_PATH_LIST_MAX
typedef fk_path_list cli_list;

typedef struct {
    const char *name;     // "--steps"; a second spelling may follow after '|': "-o|--out"
    opt_type type;
    void *ptr;            // as opt_type says
    const char *help;
    bool set;             // filled by cli_parse
    // Numeric kinds: the allowed values, "[lo,hi]" with '(' or ')' for an open end and an
    // empty bound for none: "(0,1]", "[1,)", "[0,4096]". Every numeric option has one.
    // OPT_CHOICE: the names allowed, "gpt2|llama".
    const char *range;
} cli_opt;

// An enum field as an OPT_CHOICE pointer (checked to be an int's size).
#define CLI_ENUM(p) ((void)sizeof(char[sizeof *(p) == sizeof(int) ? 1 : -1]), (int *)(p))

// The dtypes a model is written in, as an OPT_CHOICE over fk_dtype.
#define CLI_DTYPES "f32|f16|bf16"
_Static_assert(FK_DT_F32 == 0 && FK_DT_F16 == 1 && FK_DT_BF16 == 2, "CLI_DTYPES names fk_dtype's first values in order");

// Shared option groups: rows that several verbs put in their tables, over the CLI structs below.
// A verb initialises the struct (its defaults) and lists the rows it takes.
typedef struct {
    const char *path, *tokenizer;  // --model, --tokenizer
    unsigned flags;                // FK_LOAD_*: FK_LOAD_FROZEN to run the model, 0 to write its weights
} cli_model_opts;
typedef struct {
    const char *path;              // --data: a text file or a token shard
    int64_t seq, batch, max_tokens;
} cli_data_opts;
typedef struct {
    const char *path;              // -o
    bool force;
} cli_out_opts;

#define CLI_ROW_MODEL(mo, help) {"--model", OPT_STR, &(mo)->path, help, false, NULL}
#define CLI_ROW_TOKENIZER(mo)                                                                                  \
    {"--tokenizer", OPT_STR, &(mo)->tokenizer,                                                                 \
     "tokenizer (default: the model's: tokenizer.json, or the GGUF's metadata; bytes for vocab 256)", false, NULL}
#define CLI_ROW_DATA(dt, help) {"--data", OPT_STR, &(dt)->path, help, false, NULL}
#define CLI_ROW_SEQ(dt, help) {"--seq", OPT_INT, &(dt)->seq, help, false, "[0,1048576]"}
#define CLI_ROW_BATCH(dt, help) {"--batch", OPT_INT, &(dt)->batch, help, false, "[1,65536]"}
#define CLI_ROW_MAX_TOKENS(dt, help) {"--max-tokens", OPT_INT, &(dt)->max_tokens, help, false, "[0,)"}
#define CLI_ROW_THREADS(p) \
    {"--threads", OPT_INT, p, "threads, 0 = OMP_NUM_THREADS when set, else one per physical core", false, "[0,4096]"}
// --precision over an fk_precision (OPT_CHOICE: the names in the enum's order)
#define CLI_PRECISION_HELP                                                                                         \
    "matrix products: fp32; bf16 operands with fp32 accumulation (oneDNN on CPUs with AVX512-BF16, emulated and "  \
    "slower elsewhere); auto: bf16 where oneDNN runs it on AMX tiles or an AMD CPU's AVX512-BF16 (runs 1.6-2x "   \
    "faster there), fp32 elsewhere"
// Training's --precision (fp32|bf16|auto) and the frozen-model verbs' (eval, extract, generate,
// chat), which also take int8.
#define CLI_ROW_PRECISION(p) {"--precision", OPT_CHOICE, CLI_ENUM(p), CLI_PRECISION_HELP, false, "fp32|bf16|auto"}
#define CLI_ROW_PRECISION_FROZEN(p)                                                                                \
    {"--precision", OPT_CHOICE, CLI_ENUM(p),                                                                       \
     CLI_PRECISION_HELP "; int8: as auto, and a batch's products with quantized (GGUF) weights take 8-bit "        \
     "activations per 32 as llama.cpp's do (AVX512-VNNI where the build has it)",                                 \
     false, "fp32|bf16|auto|int8"}
_Static_assert(FK_PRECISION_FP32 == 0 && FK_PRECISION_BF16 == 1 && FK_PRECISION_AUTO == 2 && FK_PRECISION_INT8 == 3,
               "CLI_ROW_PRECISION names fk_precision in order");
#define CLI_ROW_OUT(oo, help) {"-o|--out", OPT_STR, &(oo)->path, help, false, NULL}
#define CLI_ROW_FORCE(oo) {"--force", OPT_FLAG, &(oo)->force, "replace an existing -o (when the new one is complete)", false, NULL}
// --align and --vmap into an fk_align_opts; `what` (a string literal) says what is aligned.
#define CLI_ROWS_ALIGN(ao, what)                                                                                             \
    {"--align", OPT_CHOICE, CLI_ENUM(&(ao)->mode),                                                                         \
     "token alignment for " what " (fusellm: FuseLLM's dtw on its token strings, Ġ/Ċ and ▁ forms)", false, "offsets|dtw|fusellm"}, \
    {"--vmap", OPT_CHOICE, CLI_ENUM(&(ao)->vmap),                                                                          \
     "vocabulary map for " what " (fusellm / fusellm-exact: FuseLLM's MinED / exact match on its token strings; approx: the " \
     "first token of the target's encoding of the source token)", false, "mined|exact|prefix|fusellm|fusellm-exact|approx"}
#define CLI_ROWS_END {NULL, 0, NULL, NULL, false, NULL}
// The heading before another verb's rows in a table: verb is its name ("train").
#define CLI_ROW_GROUP(verb) {verb, OPT_GROUP, NULL, "fusekit " verb " options", false, NULL}

// Parses argv against the table (terminated by CLI_ROWS_END). Returns 0 to go on, 1 when help
// was printed, 2 on a bad argument (message printed: "fusekit <cmd>: error: --lr must be > 0 and
// <= 1 (got -1)", the command taken from the usage line).
int cli_parse(int argc, char **argv, cli_opt *opts, const char *usage);
// fusekit run (src/cli/cmd_run.c) validates a recipe's steps through the verbs' own parses:
// while cli_parse_hook is set, a parse that succeeds returns what the hook returns (1: the verb
// stops as after --help, nothing run), the hook given the parsed rows.
extern int (*cli_parse_hook)(const cli_opt *opts, const char *cmd);
// Edit distance of two option names, their leading '-'s and anything from '=' or '|' left out;
// and the largest distance "did you mean" suggests for a word (1 up to 2 letters, 2 up to 8, else 3).
int cli_name_distance(const char *a, const char *b);
int cli_near_limit(const char *word);
// cli_parse's outcome as the verb's exit code when it should stop (help: 0, error: 2), else -1.
int cli_parse_verb(int argc, char **argv, cli_opt *opts, const char *usage);
// One numeric value outside an option table (a pass-through option such as fuse's -k): parsed,
// checked against range (the table's syntax). Returns 0, or 2 after printing the error.
int cli_parse_int(const char *cmd, const char *opt, const char *v, const char *range, int64_t *out);
int cli_parse_float(const char *cmd, const char *opt, const char *v, const char *range, double *out);

// An output path checked before any work is done: not empty, not one of the inputs (the same
// file or folder, or a folder holding one), absent unless `force` (exists_ok: a verb that
// resumes into it), and its folder created and writable (a file is created there and removed).
// inputs may hold NULLs. Returns 0, or the exit code after printing the error (2: a bad argument,
// 1: the place cannot be written).
typedef struct {
    const char *opt;      // "-o", "--gguf"
    const char *path;
    bool force, exists_ok;
} cli_out_spec;
int cli_check_output(const char *cmd, const cli_out_spec *o, const char *const *inputs, int n_inputs);

// A folder output written under a temporary name beside it (OUT.tmp-PID-XXXXXX) and renamed
// when complete; an existing OUT (--force) is replaced only then. Commit or abort exactly once.
// (cli_check_output first removes what killed runs left: temporaries of dead PIDs, and puts back
// an OUT.old-PID that nothing replaced.)
typedef struct {
    char *path;           // the final name
    char *tmp;            // where to write
} cli_outdir;
fk_status cli_outdir_begin(const char *path, cli_outdir *d);
fk_status cli_outdir_commit(cli_outdir *d);
void cli_outdir_abort(cli_outdir *d);  // removes the temporary folder and all in it
// Commits when st is FK_OK, else aborts (nothing when begin failed); returns the outcome.
fk_status cli_outdir_end(cli_outdir *d, fk_status st);

bool cli_was_set(const cli_opt *opts, const char *name);
// "fusekit <cmd>: error: <what> is required" (2) unless every one of n paths is given; what
// names them ("--model and --data").
int cli_require(const char *cmd, const char *what, int n, ...);
// Prints "fusekit <cmd>: error: <message>" and returns the exit code 1.
int cli_fail(const char *cmd, fk_status st);
void cli_set_threads(int64_t threads);
// Sets the matrix-product precision; under bf16 says on stderr which path runs ("fusekit <cmd>: ...").
void cli_set_precision(const char *cmd, fk_precision p);
// The progress line of a long loop over windows, on a terminal only (and not with quiet):
// "fusekit <cmd>: 120/480 <what> (25%), 3,210 tok/s, ETA 0:42", redrawn at most 4 times a second
// through fk_eval_set_progress; cli_progress_end clears it.
void cli_progress_begin(const char *cmd, bool quiet, const char *what);
void cli_progress_end(void);
void cli_progress_clear(void);  // clears the line (if shown) before other output; it is redrawn on the next report

// A command or subcommand: its name, its function (argv[0] is its name) and its help line. The
// program's commands (fusekit.c) and the verbs with subcommands (tokenizer, data) are tables of these.
typedef struct {
    const char *name;
    int (*fn)(int argc, char **argv);
    const char *help;
} cli_sub;
// The row of subs (n rows) named name, or NULL.
const cli_sub *cli_find_sub(const cli_sub *subs, int n, const char *name);
// A verb with subcommands: runs the one argv[1] names; else prints "usage: fusekit <verb>
// <subcommand> [options]\n\n<intro>subcommands:\n" and a line each (to stdout for -h / --help,
// returning 0; else to stderr after "fusekit <verb>: unknown subcommand 'x'" when one was given,
// returning 2). intro is "" or paragraphs ending in "\n\n".
int cli_subcommand(const char *verb, const char *intro, const cli_sub *subs, int n, int argc, char **argv);

int cmd_train(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_generate(int argc, char **argv);
int cmd_chat(int argc, char **argv);
int cmd_info(int argc, char **argv);
int cmd_tokenizer(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_extract(int argc, char **argv);
int cmd_merge(int argc, char **argv);
int cmd_fuse(int argc, char **argv);
int cmd_align(int argc, char **argv);
int cmd_analyze(int argc, char **argv);
int cmd_fold(int argc, char **argv);
int cmd_heal(int argc, char **argv);
int cmd_prune(int argc, char **argv);
int cmd_data(int argc, char **argv);
int cmd_demo(int argc, char **argv);
int cmd_export(int argc, char **argv);
int cmd_import(int argc, char **argv);

// ---- The verbs that run a job (fusekit/job.h), callable with their options struct (the demo
// runs them so). Each has cli_X_args (its options: the library's job and what only the command
// line has), cli_X_args_init (every default), cli_X_rows (fills the option table over the
// struct, CLI_ROWS_END included, room CLI_X_ROWS; returns the row count without the end) and
// cli_X_exec (checks the output and the job, runs it, prints; returns the exit code). cmd_X is
// init, rows, the parse (cli_parse_job for the training verbs: it sets the given bits), the
// required options, exec. A caller that fills a struct itself sets job.given (FK_GIVEN_*) for
// what a resume must take from it.

// fusekit train
typedef struct {
    fk_train_job job;
    int64_t threads;
} cli_train_args;
#define CLI_TRAIN_ROWS 58
void cli_train_args_init(cli_train_args *a);
int cli_train_rows(cli_train_args *a, cli_opt *rows);
int cli_train_exec(cli_train_args *a);
// job->given from the rows set by cli_parse (fk_train_given_bit of each).
void cli_train_given(const cli_opt *rows, fk_train_job *job);
// Train's rows over job and threads into rows, leaving out the options named in except
// (NULL-terminated, or NULL), CLI_ROWS_END included; returns the row count without the end.
int cli_train_job_rows(fk_train_job *job, int64_t *threads, const char *const *except, cli_opt *rows);
// A verb's own n rows, then CLI_ROW_GROUP("train") and train's rows (cli_train_job_rows) into
// rows; returns the row count without the end.
int cli_rows_then_train(const cli_opt *own, int n, fk_train_job *job, int64_t *threads, const char *const *except, cli_opt *rows);
// "fusekit <verb>: error: --init is set by <verb> itself (<hint>)" (2) when argv gives one of
// the train options the verb sets itself (sets, NULL-terminated); else 0.
int cli_refuse_set(const char *verb, int argc, char **argv, const char *const *sets, const char *hint);
// The parse of a verb that runs a training job (train, fuse, heal): refuses the train options
// the verb sets itself (sets, NULL-terminated, or NULL; hint as cli_refuse_set), parses argv
// against rows (cli_parse_verb), and sets train->given from the rows given. Returns -1 to go
// on, else the exit code. The verb then checks its required options and calls its exec.
int cli_parse_job(const char *verb, int argc, char **argv, cli_opt *rows, const char *usage, const char *const *sets, const char *hint,
                  fk_train_job *train);
// The train options heal sets itself (left out of its table and of fold's healing options).
extern const char *const cli_heal_sets[];
// What a verb that runs a job (train, fuse, heal) hands cli_job_exec.
typedef fk_status (*cli_job_run)(const void *job, const fk_job_hooks *h, fk_train_job_result *r);
typedef struct {
    const char *verb;              // "fuse"
    cli_job_run run;               // an adapter of fk_train_job_run, fk_fuse_run or fk_heal_run
    const void *job;               // what run takes
    fk_train_job *train;           // the job's training part: its -o, and the test faults' hook
    const char *const *inputs;     // the paths -o must not overwrite (NULLs skipped)
    int n_inputs;
    int64_t threads;
    bool again;                    // an interrupted run resumes by running the same command again (else --resume)
} cli_job_spec;
// Checks -o (an existing one resumes: cli_check_output with exists_ok), then runs the job with
// the program's hooks: notes and the tty progress to stderr, metrics lines to stdout, Ctrl-C and
// SIGTERM to stop and save. Prints what the job refused ("fusekit <verb>: error: ...", 2), a
// failure (1), or where it was interrupted (the checkpoint under -o) and how to resume ("run
// the same command again", or "... with --resume"; 130 / 143). Returns the exit code.
// Test-only (tests/test_faults.c): with FK_TEST_KILL_AT=checkpoint-write[:STEP] set, the run
// kills itself with SIGKILL while a checkpoint (of STEP, or any) is half written.
int cli_job_exec(const cli_job_spec *s);

// report.html in dir (src/cli/report.c): the command line (cli_set_command_line, from main), the
// inputs with their size and SHA-256, the summary's fields, the FFN widths per layer of before
// and after (fold, prune; may be NULL), and dir/metrics.jsonl's curves and the newest
// checkpoint's trainer options where they exist. Written atomically.
void cli_set_command_line(int argc, char **argv);
fk_status cli_report_write(const char *dir, const char *verb, const char *const *inputs, int n_inputs, const cJSON *summary,
                           const fk_model *before, const fk_model *after);
// cli_report_write with a section of the caller's own (HTML, after the widths; NULL: none).
fk_status cli_report_write_ex(const char *dir, const char *verb, const char *const *inputs, int n_inputs, const cJSON *summary,
                              const fk_model *before, const fk_model *after, const char *extra_html);

// fusekit fuse: fuse's rows, then train's (CLI_ROW_GROUP("train")) without those fuse sets
// itself (--init, --teacher, --tokenizer, --align-cache).
typedef struct {
    fk_fuse_job job;
    int64_t threads;
} cli_fuse_args;
#define CLI_FUSE_ROWS 66
void cli_fuse_args_init(cli_fuse_args *a);
int cli_fuse_rows(cli_fuse_args *a, cli_opt *rows);
int cli_fuse_exec(cli_fuse_args *a);

// fusekit heal: heal's rows, then train's without those heal sets itself (--init, --teacher,
// --tokenizer, --align-cache, --resume, --resume-from); lambda 0.5 and lr 1e-4 by default.
typedef struct {
    fk_heal_job job;
    int64_t threads;
} cli_heal_args;
#define CLI_HEAL_ROWS 64
void cli_heal_args_init(cli_heal_args *a);
int cli_heal_rows(cli_heal_args *a, cli_opt *rows);
int cli_heal_exec(cli_heal_args *a);

// fusekit fold: fold's own rows; the options after "--" are train's rows over heal (healing
// with --rounds / --heal-steps; heal.job has heal's defaults, --heal-lambda sets its lambda).
typedef struct {
    const char *model, *data, *out, *tokenizer, *heal_data;
    const char *scope, *method, *select, *ops;  // the names as given (checked by exec)
    double budget, min_width, ridge;
    int64_t round, rounds, heal_steps, seq, batch, max_tokens, probe_windows, threads;
    bool plan_only, uniform, edges, force;
    bool heal_only;          // --heal-only: the healed-original control (no folding, the same healing)
    cli_train_args heal;
} cli_fold_args;
#define CLI_FOLD_ROWS 28
void cli_fold_args_init(cli_fold_args *a);
int cli_fold_rows(cli_fold_args *a, cli_opt *rows);
int cli_fold_exec(cli_fold_args *a);

// Model loading as the library does it (fusekit/job.h), under the names the verbs use:
// cli_model_tokenizer is fk_model_tokenizer, cli_load_model fk_model_load_tok (on failure
// nothing is left allocated), cli_trim_heap fk_heap_trim, cli_store_tokenizer
// fk_store_keep_tokenizer, cli_model_name fk_model_name.
fk_status cli_model_tokenizer(const char *model_dir, const char *path, int64_t vocab, fk_tokenizer **t);
fk_status cli_load_model(const char *path, const char *tok_path, unsigned flags, fk_model *m, fk_tokenizer **tok);
// cli_load_model for the model group's rows: mo->path with mo->tokenizer and mo->flags.
fk_status cli_model_open(const cli_model_opts *mo, fk_model *m, fk_tokenizer **tok);
void cli_trim_heap(void);
fk_status cli_store_tokenizer(const char *store_path, fk_tokenizer **tok);
void cli_model_name(const char *path, char *out, size_t n);

// Ctrl-C and SIGTERM in the verbs that run long and resume (train, extract, fuse, heal, fold
// --rounds; src/cli/cmd_train.c): the first signal sets cli_stop_signal, which the running loop
// polls (the job hooks' stop) to finish its step, save and return; a second exits at once with
// 128 + signal (what is saved is complete under its final name: files and checkpoints are
// renamed into place).
// cli_stop_begin installs the handlers (nested calls count; the outermost clears the flag),
// cli_stop_end restores the previous ones; cli_stop_code is 130 (SIGINT) or 143 (SIGTERM).
extern volatile sig_atomic_t cli_stop_signal;
void cli_stop_begin(void);
void cli_stop_end(void);
int cli_stop_code(void);

// JSON output (one line per object, built through cJSON: strings escaped). Numbers keep the
// printf formats the outputs have always had ("%.6f"); a number that is not finite is null.
void cli_json_num(cJSON *o, const char *key, const char *fmt, double v);
void cli_json_int(cJSON *o, const char *key, int64_t v);
// Prints o on one line to f (and to f2 unless NULL), then deletes it.
void cli_json_print(cJSON *o, FILE *f, FILE *f2);

// ---- Option rows rendered back into a command line (src/cli/render.c: the demo's commands.sh),
// and two more verbs callable with their options struct, split as the job verbs above are.

// Writes s as one shell word: in single quotes, a quote inside written '\''.
void cli_render_word(FILE *f, const char *s);
// Writes " 'name' 'value'" (the name's first spelling) for each row whose value differs from the
// same row of defaults, a table the same rows function built over a default-initialised struct:
// a list each of its values, a set flag its name, a choice its name from the range, a number
// the shortest text that parses back to it; a heading (OPT_GROUP) nothing. cli_parse of what is
// written gives the same values (a flag cleared from a set default has no spelling: left out).
void cli_render_rows(FILE *f, const cli_opt *rows, const cli_opt *defaults);
// "fusekit 'data' 'synth'" (each word of verb quoted) and the rows as cli_render_rows writes
// them: one command line, without its newline.
void cli_render(FILE *f, const char *verb, const cli_opt *rows, const cli_opt *defaults);
// Sets each row's `set` as cli_parse would on the line cli_render_rows writes: the rows whose
// values differ from defaults (a caller that fills a struct itself, then cli_train_given).
void cli_rows_mark_set(cli_opt *rows, const cli_opt *defaults);
// A numeric or choice row's value as cli_render_rows writes it ("" for other kinds).
void cli_row_value_text(const cli_opt *o, char *out, size_t n);
// fusekit run RECIPE (src/cli/cmd_run.c: recipe files)
int cmd_run(int argc, char **argv);

// fusekit data synth
typedef struct {
    fk_synth_opts o;
    cli_out_opts out;
} cli_synth_args;
#define CLI_SYNTH_ROWS 7
void cli_synth_args_init(cli_synth_args *a);
int cli_synth_rows(cli_synth_args *a, cli_opt *rows);
int cli_synth_exec(cli_synth_args *a);

// fusekit tokenizer train
typedef struct {
    fk_tok_train_opts o;           // kind, pre, specials and progress are set by exec from the fields below
    cli_list data, specials;
    cli_out_opts out;
    int64_t max_bytes;
    int kind;                      // the position in "bpe|spm"
    bool pre_given, coverage_given;  // --pre, --character-coverage given: each applies to one kind
} cli_tok_train_args;
#define CLI_TOK_TRAIN_ROWS 12
void cli_tok_train_args_init(cli_tok_train_args *a);
int cli_tok_train_rows(cli_tok_train_args *a, cli_opt *rows);
int cli_tok_train_exec(cli_tok_train_args *a);

#endif
