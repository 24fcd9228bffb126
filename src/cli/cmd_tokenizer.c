// fusekit tokenizer train|encode|decode|info|convert, and fusekit tokenize (text -> shard).
#include "cli.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void print_json(cJSON *j) { cli_json_print(j, stdout, NULL); }

// Reads a text file; a token shard is refused (its ids are not text to encode).
static fk_status read_text(const char *path, char **buf, size_t *n) {
    if (fk_data_is_shard(path))
        return fk_error(FK_ERR_ARG, "%s is a token shard, not text (fusekit data info %s describes it)", path, path);
    return fk_read_file(path, buf, n);
}

// Reads every file of the list; the buffers stay alive until free_texts.
static fk_status read_texts(const cli_list *files, char **texts, size_t *lens) {
    for (int i = 0; i < files->n; i++) {
        fk_status st = read_text(files->v[i], &texts[i], &lens[i]);
        if (st != FK_OK) {
            for (int k = 0; k < i; k++) free(texts[k]);
            return st;
        }
    }
    return FK_OK;
}

// Reads standard input whole into a NUL-terminated buffer.
static fk_status read_stdin(char **buf, size_t *n) {
    size_t cap = 1 << 16, got;
    *n = 0;
    *buf = malloc(cap + 1);
    while (*buf && (got = fread(*buf + *n, 1, cap - *n, stdin)) > 0)
        if ((*n += got) == cap) {
            char *g = realloc(*buf, (cap *= 2) + 1);
            if (!g) free(*buf);
            *buf = g;
        }
    if (!*buf) return fk_error(FK_ERR_NOMEM, "out of memory reading standard input");
    (*buf)[*n] = 0;
    return FK_OK;
}

static void train_progress(void *ctx, int32_t done, int32_t target) {
    (void)ctx;
    fprintf(stderr, "\rmerges %d/%d   ", done, target);
    if (done == target) fputc('\n', stderr);
    fflush(stderr);
}

// -o DIR of a tokenizer: the folder may exist (a model's folder); the tokenizer.json in it is
// replaced only with --force. The folder is created and checked writable before any work.
static int check_tok_dir(const char *cmd, const char *dir, bool force, const char *const *inputs, int n) {
    char *tj = *dir ? fk_path_join(dir, "tokenizer.json") : NULL;
    cli_out_spec os = {"-o", tj ? tj : dir, force, false};
    int rc = cli_check_output(cmd, &os, inputs, n);
    free(tj);
    return rc;
}

void cli_tok_train_args_init(cli_tok_train_args *a) {
    // the library's options, with the command's defaults (the library has none for the vocabulary)
    *a = (cli_tok_train_args){.o = {.vocab_size = 8192, .pre = "gpt-2", .character_coverage = 1.0, .min_frequency = 2}};
}

int cli_tok_train_rows(cli_tok_train_args *a, cli_opt *rows) {
    const cli_opt r[] = {
        {"--data", OPT_LIST, &a->data, "training text file (repeat for several; required)", false, NULL},
        {"--vocab", OPT_I32, &a->o.vocab_size, "vocabulary size including bytes and specials", false, "[256,16777216]"},
        {"--kind", OPT_CHOICE, &a->kind, "byte-level BPE (GPT-2 style) or SentencePiece-style BPE (Llama 2 style)", false, "bpe|spm"},
        {"--pre", OPT_STR, &a->o.pre, "bpe: pre-tokenizer preset: gpt-2, llama-bpe, qwen2, starcoder, ...", false, NULL},
        {"--special", OPT_LIST, &a->specials,
         "special (control) token; repeatable (bpe: default <|endoftext|>, used as BOS and EOS; "
         "spm: extra ones after <unk> <s> </s>, which it always has)", false, NULL},
        {"--split-digits", OPT_FLAG, &a->o.split_digits, "spm: every digit is a token of its own (as Llama)", false, NULL},
        {"--character-coverage", OPT_FLOAT, &a->o.character_coverage, "spm: share of character occurrences given a token, the rest "
         "fall back to bytes (1: all)", false, "(0,1]"},
        {"--min-frequency", OPT_INT, &a->o.min_frequency, "never merge a pair seen fewer times", false, "[1,)"},
        {"--max-bytes", OPT_INT, &a->max_bytes, "use at most this many bytes of each file, 0 = all", false, "[0,)"},
        CLI_ROW_OUT(&a->out, "output folder: tokenizer.json, tokenizer_config.json (required)"),
        {"--force", OPT_FLAG, &a->out.force, "replace the tokenizer.json of an existing -o", false, NULL},
        CLI_ROWS_END,
    };
    _Static_assert(sizeof r / sizeof *r <= CLI_TOK_TRAIN_ROWS, "CLI_TOK_TRAIN_ROWS holds the table");
    memcpy(rows, r, sizeof r);
    return (int)(sizeof r / sizeof *r) - 1;
}

// The tokenizer trained on the files and written to -o, with one JSON line. *a is left as given.
int cli_tok_train_exec(cli_tok_train_args *a) {
    if (!a->data.n || !a->out.path) { fprintf(stderr, "fusekit tokenizer train: error: --data and --out are required\n"); return 2; }
    int rc = check_tok_dir("tokenizer train", a->out.path, a->out.force, a->data.v, a->data.n);
    if (rc != 0) return rc;
    bool spm = a->kind == 1;
    const char *bpe_only = a->pre_given ? "--pre" : NULL;
    const char *spm_only = a->o.split_digits ? "--split-digits" : a->coverage_given ? "--character-coverage" : NULL;
    if (spm ? bpe_only != NULL : spm_only != NULL) {
        fprintf(stderr, "fusekit tokenizer train: error: %s applies to --kind %s only\n", spm ? bpe_only : spm_only, spm ? "bpe" : "spm");
        return 2;
    }
    cli_list specials = a->specials;
    if (!specials.n && !spm) specials.v[specials.n++] = "<|endoftext|>";
    char *texts[CLI_LIST_MAX];
    size_t lens[CLI_LIST_MAX];
    fk_status st = read_texts(&a->data, texts, lens);
    if (st != FK_OK) return cli_fail("tokenizer train", st);
    for (int i = 0; i < a->data.n; i++)
        if (a->max_bytes > 0 && lens[i] > (size_t)a->max_bytes) lens[i] = (size_t)a->max_bytes;
    fk_tok_train_opts o = a->o;
    o.kind = spm ? FK_TOK_SPM : FK_TOK_BPE;
    if (spm) o.pre = NULL;
    else o.character_coverage = 0;
    o.specials = specials.v;
    o.n_specials = specials.n;
    o.progress = isatty(2) ? train_progress : NULL;
    fk_tokenizer *t = NULL;
    fk_tok_train_stats stats = {0};
    double t0 = fk_time_s();
    st = fk_tok_train(&o, (const char *const *)texts, lens, a->data.n, &t, &stats);
    double dt = fk_time_s() - t0;
    if (st == FK_OK) st = fk_tok_save_hf(t, a->out.path);
    if (st == FK_OK) {
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "out", a->out.path);
        cJSON_AddStringToObject(j, "kind", spm ? "spm" : "bpe");
        cJSON_AddNumberToObject(j, "vocab", fk_tok_vocab_size(t));
        cJSON_AddNumberToObject(j, "merges", fk_tok_n_merges(t));
        cJSON_AddNumberToObject(j, "bytes", (double)stats.bytes);
        cJSON_AddNumberToObject(j, "words", (double)stats.words);
        cJSON_AddNumberToObject(j, "unique_words", (double)stats.unique_words);
        cJSON_AddNumberToObject(j, "seconds", dt);
        char fp[20];
        snprintf(fp, sizeof fp, "%016llx", (unsigned long long)fk_tok_fingerprint(t));
        cJSON_AddStringToObject(j, "fingerprint", fp);
        print_json(j);
    }
    for (int i = 0; i < a->data.n; i++) free(texts[i]);
    fk_tok_free(t);
    return st == FK_OK ? 0 : cli_fail("tokenizer train", st);
}

static int tok_train(int argc, char **argv) {
    cli_tok_train_args a;
    cli_tok_train_args_init(&a);
    cli_opt rows[CLI_TOK_TRAIN_ROWS];
    cli_tok_train_rows(&a, rows);
    int rc = cli_parse_verb(argc, argv, rows,
                       "usage: fusekit tokenizer train --data FILE [--data FILE ...] --vocab N -o DIR [options]\n\n"
                       "Trains a byte-level BPE tokenizer (--kind bpe) or a SentencePiece-style BPE tokenizer with byte\n"
                       "fallback (--kind spm: <unk> <s> </s>, <0x00>..<0xFF>, the characters, then merges; \"▁\" for spaces).\n"
                       "Deterministic: the same files and options give the same tokenizer.");
    if (rc >= 0) return rc;
    a.pre_given = cli_was_set(rows, "--pre");
    a.coverage_given = cli_was_set(rows, "--character-coverage");
    return cli_tok_train_exec(&a);
}

// The --tokenizer row of the subcommands that read a tokenizer.
#define TOK_ROW(p) {"--tokenizer", OPT_STR, p, "a .gguf file, tokenizer.json, or a folder holding one (required)", false, NULL}

// --tokenizer (required) loaded for the subcommand cmd. Returns 0, or the exit code after
// printing the error.
static int open_tok(const char *cmd, const char *path, fk_tokenizer **t) {
    int rc = cli_require(cmd, "--tokenizer", 1, path);
    if (rc != 0) return rc;
    fk_status st = fk_tok_load(path, t);
    return st == FK_OK ? 0 : cli_fail(cmd, st);
}

static int tok_encode(int argc, char **argv) {
    const char *tok = NULL, *text = NULL, *file = NULL;
    bool add = false, parse = false, offsets = false, json = false;
    cli_opt opts[] = {
        TOK_ROW(&tok),
        {"--text", OPT_STR, &text, "text to encode", false, NULL},
        {"--file", OPT_STR, &file, "file to encode (default: standard input)", false, NULL},
        {"--add-special", OPT_FLAG, &add, "add BOS/EOS as the tokenizer's configuration says", false, NULL},
        {"--parse-special", OPT_FLAG, &parse, "control tokens written in the text become their ids", false, NULL},
        {"--offsets", OPT_FLAG, &offsets, "one line per token: id, byte span, piece", false, NULL},
        {"--json", OPT_FLAG, &json, "one JSON object: ids and byte spans", false, NULL},
        CLI_ROWS_END,
    };
    int rc = cli_parse_verb(argc, argv, opts, "usage: fusekit tokenizer encode --tokenizer T [--text TEXT | --file FILE] [options]\n\n"
                                         "Prints the token ids, space separated.");
    if (rc >= 0) return rc;
    fk_tokenizer *t;
    if ((rc = open_tok("tokenizer encode", tok, &t)) != 0) return rc;
    fk_status st = FK_OK;
    char *buf = NULL;
    size_t n = 0;
    if (text) {
        n = strlen(text);
    } else if (file) {
        st = read_text(file, &buf, &n);
    } else {
        st = read_stdin(&buf, &n);
    }
    fk_tok_out o = {0};
    const char *src = text ? text : buf;
    if (st == FK_OK) st = fk_tok_encode(t, src, n, (add ? FK_ENC_ADD_SPECIAL : 0) | (parse ? FK_ENC_PARSE_SPECIAL : 0), &o);
    if (st == FK_OK && json) {
        cJSON *j = cJSON_CreateObject();
        cJSON *ids = cJSON_AddArrayToObject(j, "ids"), *sp = cJSON_AddArrayToObject(j, "offsets");
        for (int64_t i = 0; i < o.n; i++) {
            cJSON_AddItemToArray(ids, cJSON_CreateNumber(o.ids[i]));
            cJSON *pair = cJSON_CreateArray();
            cJSON_AddItemToArray(pair, cJSON_CreateNumber((double)o.begin[i]));
            cJSON_AddItemToArray(pair, cJSON_CreateNumber((double)o.end[i]));
            cJSON_AddItemToArray(sp, pair);
        }
        print_json(j);
    } else if (st == FK_OK && offsets) {
        for (int64_t i = 0; i < o.n; i++) {
            uint32_t l;
            const char *p = fk_tok_piece(t, o.ids[i], &l);
            printf("%d\t%lld\t%lld\t%.*s\n", o.ids[i], (long long)o.begin[i], (long long)o.end[i], (int)l, p);
        }
    } else if (st == FK_OK) {
        for (int64_t i = 0; i < o.n; i++) printf(i ? " %d" : "%d", o.ids[i]);
        printf("\n");
    }
    free(buf);
    fk_tok_out_free(&o);
    fk_tok_free(t);
    return st == FK_OK ? 0 : cli_fail("tokenizer encode", st);
}

// Parses space/comma/newline separated ids.
static fk_status parse_ids(const char *s, int32_t vocab, int32_t **ids, int64_t *n) {
    size_t cap = strlen(s) / 2 + 2;
    *ids = malloc(cap * sizeof(int32_t));
    *n = 0;
    if (!*ids) return fk_error(FK_ERR_NOMEM, "out of memory");
    for (const char *p = s;;) {
        while (*p == ' ' || *p == ',' || *p == '\t' || *p == '\n' || *p == '\r') p++;
        if (!*p) break;
        char *end;
        long long v = strtoll(p, &end, 10);
        if (end == p || v < 0 || v >= vocab) {
            free(*ids);
            *ids = NULL;
            return fk_error(FK_ERR_ARG, "'%.20s' is not a token id in [0, %d)", p, vocab);
        }
        (*ids)[(*n)++] = (int32_t)v;
        p = end;
    }
    return FK_OK;
}

static int tok_decode(int argc, char **argv) {
    const char *tok = NULL, *ids_s = NULL, *file = NULL;
    bool skip = false;
    cli_opt opts[] = {
        TOK_ROW(&tok),
        {"--ids", OPT_STR, &ids_s, "token ids, space or comma separated", false, NULL},
        {"--file", OPT_STR, &file, "file of token ids (default: standard input)", false, NULL},
        {"--skip-special", OPT_FLAG, &skip, "leave control tokens (BOS, EOS, ...) out", false, NULL},
        CLI_ROWS_END,
    };
    int rc = cli_parse_verb(argc, argv, opts, "usage: fusekit tokenizer decode --tokenizer T [--ids IDS | --file FILE] [--skip-special]");
    if (rc >= 0) return rc;
    fk_tokenizer *t;
    if ((rc = open_tok("tokenizer decode", tok, &t)) != 0) return rc;
    fk_status st = FK_OK;
    char *buf = NULL;
    size_t n = 0;
    if (!ids_s) {
        st = file ? fk_read_file(file, &buf, &n) : read_stdin(&buf, &n);
    }
    int32_t *ids = NULL;
    int64_t k = 0;
    char *text = NULL;
    size_t tl = 0;
    if (st == FK_OK) st = parse_ids(ids_s ? ids_s : buf, fk_tok_vocab_size(t), &ids, &k);
    if (st == FK_OK) st = fk_tok_decode(t, ids, k, skip ? FK_DEC_SKIP_SPECIAL : 0, &text, &tl);
    if (st == FK_OK) fwrite(text, 1, tl, stdout);
    free(text);
    free(ids);
    free(buf);
    fk_tok_free(t);
    return st == FK_OK ? 0 : cli_fail("tokenizer decode", st);
}

static const char *kind_name(fk_tok_kind k) { return k == FK_TOK_BPE ? "byte-level BPE" : k == FK_TOK_SPM ? "SentencePiece BPE" : "bytes"; }

static int tok_info(int argc, char **argv) {
    const char *tok = NULL;
    cli_opt opts[] = {
        TOK_ROW(&tok),
        CLI_ROWS_END,
    };
    int rc = cli_parse_verb(argc, argv, opts, "usage: fusekit tokenizer info --tokenizer T\n\nPrints one JSON object.");
    if (rc >= 0) return rc;
    fk_tokenizer *t;
    if ((rc = open_tok("tokenizer info", tok, &t)) != 0) return rc;
    static const char *const type_names[] = {"", "normal", "unknown", "control", "user_defined", "unused", "byte"};
    int64_t counts[7] = {0};
    for (int32_t i = 0; i < fk_tok_vocab_size(t); i++) counts[fk_tok_type(t, i)]++;
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "tokenizer", tok);
    cJSON_AddStringToObject(j, "kind", kind_name(fk_tok_kind_of(t)));
    cJSON_AddNumberToObject(j, "vocab", fk_tok_vocab_size(t));
    cJSON_AddNumberToObject(j, "merges", fk_tok_n_merges(t));
    cJSON_AddStringToObject(j, "pre", fk_tok_pre(t));
    cJSON *types = cJSON_AddObjectToObject(j, "token_types");
    for (int k = 1; k <= 6; k++)
        if (counts[k]) cJSON_AddNumberToObject(types, type_names[k], (double)counts[k]);
    int32_t ids[2] = {fk_tok_bos(t), fk_tok_eos(t)};
    const char *names[2] = {"bos", "eos"};
    for (int k = 0; k < 2; k++) {
        if (ids[k] < 0) { cJSON_AddNullToObject(j, names[k]); continue; }
        uint32_t l;
        const char *p = fk_tok_piece(t, ids[k], &l);
        char *c = strndup(p, l);
        cJSON *o = cJSON_AddObjectToObject(j, names[k]);
        cJSON_AddNumberToObject(o, "id", ids[k]);
        cJSON_AddStringToObject(o, "text", c ? c : "");
        free(c);
    }
    char fp[20];
    snprintf(fp, sizeof fp, "%016llx", (unsigned long long)fk_tok_fingerprint(t));
    cJSON_AddStringToObject(j, "fingerprint", fp);
    print_json(j);
    fk_tok_free(t);
    return 0;
}

static int tok_convert(int argc, char **argv) {
    const char *tok = NULL, *out = NULL, *gguf = NULL;
    bool force = false;
    cli_opt opts[] = {
        TOK_ROW(&tok),
        {"-o|--out", OPT_STR, &out, "write tokenizer.json, tokenizer_config.json, special_tokens_map.json here", false, NULL},
        {"--gguf", OPT_STR, &gguf, "write a GGUF file holding the tokenizer metadata", false, NULL},
        {"--force", OPT_FLAG, &force, "replace an existing --gguf, or the tokenizer.json in -o", false, NULL},
        CLI_ROWS_END,
    };
    int rc = cli_parse_verb(argc, argv, opts, "usage: fusekit tokenizer convert --tokenizer T (-o DIR | --gguf FILE)");
    if (rc >= 0) return rc;
    if (!tok || (!out && !gguf)) { fprintf(stderr, "fusekit tokenizer convert: error: --tokenizer and -o or --gguf are required\n"); return 2; }
    if (out && (rc = check_tok_dir("tokenizer convert", out, force, &tok, 1)) != 0) return rc;
    cli_out_spec gs = {"--gguf", gguf, force, false};
    if (gguf && (rc = cli_check_output("tokenizer convert", &gs, &tok, 1)) != 0) return rc;
    fk_tokenizer *t;
    if ((rc = open_tok("tokenizer convert", tok, &t)) != 0) return rc;
    fk_status st = out ? fk_tok_save_hf(t, out) : FK_OK;
    if (st == FK_OK && gguf) {
        fk_gguf_writer *w = fk_gguf_writer_new();
        st = w ? fk_tok_to_gguf(t, w) : fk_error(FK_ERR_NOMEM, "out of memory");
        if (st == FK_OK) st = fk_gguf_writer_write(w, gguf);
        fk_gguf_writer_free(w);
    }
    fk_tok_free(t);
    return st == FK_OK ? 0 : cli_fail("tokenizer convert", st);
}

int cmd_tokenizer(int argc, char **argv) {
    static const cli_sub subs[] = {
        {"train", tok_train, "train a byte-level or SentencePiece-style BPE tokenizer on text files"},
        {"encode", tok_encode, "text to token ids (with byte spans on request)"},
        {"decode", tok_decode, "token ids to text"},
        {"info", tok_info, "kind, vocabulary, merges, special tokens, fingerprint"},
        {"convert", tok_convert, "save a tokenizer as tokenizer.json or GGUF metadata"},
    };
    return cli_subcommand("tokenizer", "Tokenizers load from a .gguf file, a tokenizer.json, or a folder holding tokenizer.json.\n\n", subs,
                          (int)(sizeof subs / sizeof subs[0]), argc, argv);
}

int cmd_tokenize(int argc, char **argv) {
    cli_list data = {0};
    const char *tok = NULL, *out = NULL;
    bool add = false, sep = false, force = false;
    cli_opt opts[] = {
        {"--tokenizer", OPT_STR, &tok, "a .gguf file, tokenizer.json, or a model folder holding one (required)", false, NULL},
        {"--data", OPT_LIST, &data, "text file; repeat for several, concatenated in order (required)", false, NULL},
        {"-o|--out", OPT_STR, &out, "token shard to write (required)", false, NULL},
        {"--add-special", OPT_FLAG, &add, "add BOS/EOS to each file as the tokenizer's configuration says", false, NULL},
        {"--sep-eos", OPT_FLAG, &sep, "put the EOS token after each file", false, NULL},
        {"--force", OPT_FLAG, &force, "replace an existing -o", false, NULL},
        CLI_ROWS_END,
    };
    int rc = cli_parse_verb(argc, argv, opts,
                       "usage: fusekit tokenize --tokenizer T --data FILE [--data FILE ...] -o OUT [options]\n\n"
                       "Writes a token shard (header with vocabulary size, text bytes and the tokenizer's fingerprint;\n"
                       "then uint16 or uint32 ids) that fusekit train, eval and extract read.");
    if (rc >= 0) return rc;
    if (!tok || !data.n || !out) { fprintf(stderr, "fusekit tokenize: error: --tokenizer, --data and --out are required\n"); return 2; }
    {
        const char *ins[CLI_LIST_MAX + 1];
        for (int i = 0; i < data.n; i++) ins[i] = data.v[i];
        ins[data.n] = tok;
        cli_out_spec os = {"-o", out, force, false};
        if ((rc = cli_check_output("tokenize", &os, ins, data.n + 1)) != 0) return rc;
    }
    fk_tokenizer *t;
    fk_status st = fk_tok_load(tok, &t);
    if (st != FK_OK) return cli_fail("tokenize", st);
    if (sep && fk_tok_eos(t) < 0) {
        fk_tok_free(t);
        return cli_fail("tokenize", fk_error(FK_ERR_ARG, "--sep-eos: the tokenizer %s has no EOS token", tok));
    }
    fk_tok_out o = {0};
    int64_t bytes = 0;
    double t0 = fk_time_s();
    bool tty = isatty(2);
    for (int i = 0; i < data.n && st == FK_OK; i++) {
        char *buf;
        size_t n;
        st = read_text(data.v[i], &buf, &n);
        if (st != FK_OK) break;
        st = fk_tok_encode(t, buf, n, add ? FK_ENC_ADD_SPECIAL : 0, &o);
        if (st != FK_OK) fk_error_context(st, "%s", data.v[i]);
        if (st == FK_OK && sep) st = fk_tok_out_push(&o, fk_tok_eos(t), (int64_t)n, (int64_t)n);
        bytes += (int64_t)n;
        free(buf);
        if (tty) {
            double dt = fk_time_s() - t0;
            fprintf(stderr, "\r%s: %lld tokens, %.1f MB, %.1f MB/s   \n", data.v[i], (long long)o.n, bytes / 1e6, bytes / 1e6 / (dt > 0 ? dt : 1e-9));
        }
    }
    double dt = fk_time_s() - t0;
    if (st == FK_OK) st = fk_shard_write(out, o.ids, o.n, fk_tok_vocab_size(t), bytes, fk_tok_fingerprint(t));
    if (st == FK_OK) {
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "out", out);
        cJSON_AddNumberToObject(j, "tokens", (double)o.n);
        cJSON_AddNumberToObject(j, "bytes", (double)bytes);
        cJSON_AddNumberToObject(j, "tokens_per_byte", bytes ? (double)o.n / (double)bytes : 0);
        cJSON_AddNumberToObject(j, "vocab", fk_tok_vocab_size(t));
        cJSON_AddNumberToObject(j, "mb_per_s", dt > 0 ? bytes / 1e6 / dt : 0);
        print_json(j);
    }
    fk_tok_out_free(&o);
    fk_tok_free(t);
    return st == FK_OK ? 0 : cli_fail("tokenize", st);
}
