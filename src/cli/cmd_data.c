// fusekit data: the embedded synthetic corpus (data synth) and token data headers (data info).
#include "cli.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

void cli_synth_args_init(cli_synth_args *a) {
    memset(a, 0, sizeof *a);
    fk_synth_opts_default(&a->o);
}

int cli_synth_rows(cli_synth_args *a, cli_opt *rows) {
    const cli_opt r[] = {
        CLI_ROW_OUT(&a->out, "output folder (required)"),
        CLI_ROW_FORCE(&a->out),
        {"--seed", OPT_INT, (int64_t *)&a->o.seed, "random seed: the same seed and sizes give identical files", false, "[0,)"},
        {"--bytes", OPT_INT, &a->o.bytes_per_domain, "bytes of each domain's train split", false, "[1,1000000000]"},
        {"--heldout-bytes", OPT_INT, &a->o.heldout_bytes, "bytes of each valid and test split (default: --bytes / 10)", false, "[0,1000000000]"},
        {"--probes", OPT_INT, &a->o.probes_per_domain, "multiple-choice items per domain (facts at most 600)", false, "[1,100000]"},
        CLI_ROWS_END,
    };
    _Static_assert(sizeof r / sizeof *r <= CLI_SYNTH_ROWS, "CLI_SYNTH_ROWS holds the table");
    memcpy(rows, r, sizeof r);
    return (int)(sizeof r / sizeof *r) - 1;
}

int cli_synth_exec(cli_synth_args *a) {
    int rc;
    if ((rc = cli_require("data synth", "-o", 1, a->out.path)) != 0) return rc;
    cli_out_spec os = {"-o", a->out.path, a->out.force, false};
    if ((rc = cli_check_output("data synth", &os, NULL, 0)) != 0) return rc;
    fk_synth_stats s;
    double t0 = fk_time_s();
    cli_outdir od;  // written under a temporary name, renamed when complete
    fk_status st = cli_outdir_begin(a->out.path, &od);
    if (st == FK_OK) st = cli_outdir_end(&od, fk_synth_write(od.tmp, &a->o, &s));
    if (st != FK_OK) return cli_fail("data synth", st);
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "dir", a->out.path);
    char seed[24];
    snprintf(seed, sizeof seed, "%llu", (unsigned long long)a->o.seed);
    cJSON_AddRawToObject(j, "seed", seed);
    cJSON_AddItemToObject(j, "domains", cJSON_CreateStringArray(fk_synth_domains, FK_SYNTH_N_DOMAINS));
    cli_json_int(j, "files", s.files);
    cli_json_int(j, "bytes", s.bytes);
    cli_json_int(j, "train_bytes", s.train_bytes);
    cli_json_int(j, "probes", s.probes);
    cli_json_num(j, "seconds", "%.2f", fk_time_s() - t0);
    cli_json_print(j, stdout, NULL);
    return 0;
}

static int data_synth(int argc, char **argv) {
    cli_synth_args a;
    cli_synth_args_init(&a);
    cli_opt rows[CLI_SYNTH_ROWS];
    cli_synth_rows(&a, rows);
    int rc = cli_parse_verb(argc, argv, rows,
                       "usage: fusekit data synth -o DIR [--seed N] [--bytes N]\n\n"
                       "Writes four domains (arith, facts, grammar, records), each as train.txt, valid.txt,\n"
                       "test.txt and probes.jsonl (multiple-choice items from held-out material), the mixed\n"
                       "corpus mix/{train,valid,test}.txt and manifest.json. Prints one JSON line.");
    return rc >= 0 ? rc : cli_synth_exec(&a);
}

// fusekit data info FILE: a token shard's header (the tokenizer fingerprint as 16 hex digits,
// as `tokenizer info` prints it) after the whole shard is checked, or a text file's size.
static int data_info(int argc, char **argv) {
    if (argc != 2 || argv[1][0] == '-') {
        bool help = argc == 2 && (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0);
        fprintf(help ? stdout : stderr, "usage: fusekit data info FILE\n\nA token shard's vocabulary, token count, text bytes and "
                "tokenizer fingerprint (checked whole), or a text file's size. Prints one JSON line.\n");
        return help ? 0 : 2;
    }
    fk_token_data d;
    bool shard = fk_data_is_shard(argv[1]);
    fk_status st = fk_data_load(argv[1], &d);
    if (st != FK_OK) return cli_fail("data info", st);
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "file", argv[1]);
    cJSON_AddStringToObject(j, "kind", shard ? "token shard" : "text (raw bytes)");
    cJSON_AddNumberToObject(j, "vocab", (double)d.vocab_size);
    cJSON_AddNumberToObject(j, shard ? "tokens" : "bytes", (double)d.n);
    if (shard) {
        char fp[20];
        snprintf(fp, sizeof fp, "%016llx", (unsigned long long)d.tokenizer_fp);
        cJSON_AddNumberToObject(j, "text_bytes", (double)d.text_bytes);
        cJSON_AddStringToObject(j, "tokenizer_fingerprint", fp);
    }
    cli_json_print(j, stdout, NULL);
    fk_data_free(&d);
    return 0;
}

int cmd_data(int argc, char **argv) {
    static const cli_sub subs[] = {
        {"synth", data_synth, "write the synthetic multi-domain corpus with held-out splits and task probes"},
        {"info", data_info, "a token shard's header (vocabulary, tokens, text bytes, tokenizer fingerprint)"},
    };
    return cli_subcommand("data", "", subs, (int)(sizeof subs / sizeof subs[0]), argc, argv);
}
