// fusekit data: the embedded synthetic corpus (data synth) and token data headers (data info).
#include "cli.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

static int data_synth(int argc, char **argv) {
    const char *out = NULL;
    bool force = false;
    fk_synth_opts o;
    fk_synth_opts_default(&o);
    int64_t seed = (int64_t)o.seed, bytes = o.bytes_per_domain, heldout = 0, probes = o.probes_per_domain;
    cli_opt opts[] = {
        {"-o|--out", OPT_STR, &out, "output folder (required)", false, NULL},
        {"--force", OPT_FLAG, &force, "replace an existing -o (when the new one is complete)", false, NULL},
        {"--seed", OPT_INT, &seed, "random seed: the same seed and sizes give identical files (default 1)", false, "[0,)"},
        {"--bytes", OPT_INT, &bytes, "bytes of each domain's train split (default 120000)", false, "[1,1000000000]"},
        {"--heldout-bytes", OPT_INT, &heldout, "bytes of each valid and test split (default: --bytes / 10)", false, "[0,1000000000]"},
        {"--probes", OPT_INT, &probes, "multiple-choice items per domain (default 250; facts at most 600)", false, "[1,100000]"},
        {NULL, 0, NULL, NULL, false, NULL},
    };
    int rc = cli_parse(argc, argv, opts,
                       "usage: fusekit data synth -o DIR [--seed N] [--bytes N]\n\n"
                       "Writes four domains (arith, facts, grammar, records), each as train.txt, valid.txt,\n"
                       "test.txt and probes.jsonl (multiple-choice items from held-out material), the mixed\n"
                       "corpus mix/{train,valid,test}.txt and manifest.json. Prints one JSON line.");
    if (rc) return rc == 1 ? 0 : 2;
    if (!out) { fprintf(stderr, "fusekit data synth: error: -o is required\n"); return 2; }
    if (bytes <= 0 || heldout < 0 || probes <= 0) {
        fprintf(stderr, "fusekit data synth: error: --bytes and --probes must be positive, --heldout-bytes not negative\n");
        return 2;
    }
    o.seed = (uint64_t)seed;
    o.bytes_per_domain = bytes;
    o.heldout_bytes = heldout;  // 0: bytes / 10
    o.probes_per_domain = probes;
    cli_out_spec os = {"-o", out, force, false};
    if ((rc = cli_check_output("data synth", &os, NULL, 0)) != 0) return rc;
    fk_synth_stats s;
    double t0 = fk_time_s();
    cli_outdir od;  // written under a temporary name, renamed when complete
    fk_status st = cli_outdir_begin(out, &od);
    if (st == FK_OK) st = cli_outdir_end(&od, fk_synth_write(od.tmp, &o, &s));
    if (st != FK_OK) return cli_fail("data synth", st);
    printf("{\"dir\":\"%s\",\"seed\":%llu,\"domains\":[", out, (unsigned long long)o.seed);
    for (int d = 0; d < FK_SYNTH_N_DOMAINS; d++) printf("%s\"%s\"", d ? "," : "", fk_synth_domains[d]);
    printf("],\"files\":%lld,\"bytes\":%lld,\"train_bytes\":%lld,\"probes\":%lld,\"seconds\":%.2f}\n", (long long)s.files,
           (long long)s.bytes, (long long)s.train_bytes, (long long)s.probes, fk_time_s() - t0);
    return 0;
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
    char *s = cJSON_PrintUnformatted(j);
    if (s) printf("%s\n", s);
    free(s);
    cJSON_Delete(j);
    fk_data_free(&d);
    return 0;
}

int cmd_data(int argc, char **argv) {
    static const struct { const char *name; int (*fn)(int, char **); const char *help; } subs[] = {
        {"synth", data_synth, "write the synthetic multi-domain corpus with held-out splits and task probes"},
        {"info", data_info, "a token shard's header (vocabulary, tokens, text bytes, tokenizer fingerprint)"},
    };
    if (argc >= 2)
        for (size_t i = 0; i < sizeof subs / sizeof subs[0]; i++)
            if (strcmp(argv[1], subs[i].name) == 0) return subs[i].fn(argc - 1, argv + 1);
    bool help = argc >= 2 && (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0);
    if (argc >= 2 && !help) fprintf(stderr, "fusekit data: unknown subcommand '%s'\n", argv[1]);
    FILE *f = help ? stdout : stderr;
    fprintf(f, "usage: fusekit data <subcommand> [options]\n\nsubcommands:\n");
    for (size_t i = 0; i < sizeof subs / sizeof subs[0]; i++) fprintf(f, "  %-8s %s\n", subs[i].name, subs[i].help);
    return help ? 0 : 2;
}
