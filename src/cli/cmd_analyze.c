// fusekit analyze: streaming redundancy statistics of a model over a calibration text.
#include "cli.h"
#include "fusekit/analyze.h"

#include <math.h>

// An MoE layer's line: its experts' load range and its most similar pair of experts.
static void add_experts(cJSON *j, const fk_analysis *a, int l) {
    int64_t E = a->experts[l], bi = 0, bj = 1;
    double lo = 1, hi = 0;
    for (int64_t e = 0; e < E; e++) { lo = fmin(lo, a->expert_load[l][e]); hi = fmax(hi, a->expert_load[l][e]); }
    for (int64_t e = 0; e < E; e++)
        for (int64_t f = e + 1; f < E; f++)
            if (a->expert_sim[l][e * E + f] > a->expert_sim[l][bi * E + bj]) { bi = e; bj = f; }
    cli_json_int(j, "experts", E);
    cli_json_num(j, "expert_load_min", "%.4f", lo);
    cli_json_num(j, "expert_load_max", "%.4f", hi);
    if (E > 1) {
        cJSON *pair = cJSON_AddArrayToObject(j, "most_similar_experts");
        cJSON_AddItemToArray(pair, cJSON_CreateNumber((double)bi));
        cJSON_AddItemToArray(pair, cJSON_CreateNumber((double)bj));
        cli_json_num(j, "most_similar_cosine", "%.4f", a->expert_sim[l][bi * E + bj]);
    }
}

int cmd_analyze(int argc, char **argv) {
    cli_model_opts mo = {.flags = FK_LOAD_FROZEN};
    cli_data_opts dt = {.batch = 4, .max_tokens = 65536};
    cli_out_opts out = {0};
    int64_t max_n = 4, threads = 0;
    bool quiet = false;
    cli_opt opts[] = {
        CLI_ROW_MODEL(&mo, "model folder or .gguf file (required)"),
        CLI_ROW_DATA(&dt, "calibration text or token shard (required)"),
        CLI_ROW_OUT(&out, "output folder: analysis.json, analysis.html, stats.safetensors (required)"),
        CLI_ROW_TOKENIZER(&mo),
        CLI_ROW_SEQ(&dt, "window length (default: the model's context)"),
        CLI_ROW_BATCH(&dt, "windows per forward pass"),
        CLI_ROW_MAX_TOKENS(&dt, "positions analysed at most, 0 = all"),
        {"--max-n", OPT_INT, &max_n, "angular distance d(l, l+n) for n = 1..max-n, at most the layers", false, "[1,256]"},
        CLI_ROW_THREADS(&threads),
        {"--quiet", OPT_FLAG, &quiet, "no progress line on stderr (there is none when stderr is not a terminal)", false, NULL},
        CLI_ROW_FORCE(&out),
        CLI_ROWS_END,
    };
    int rc = cli_parse_verb(argc, argv, opts,
                       "usage: fusekit analyze --model DIR|FILE.gguf --data FILE -o OUT [options]\n\n"
                       "Per layer: Block Influence, angular distances, linear CKA to the next layer (residual stream);\n"
                       "FFN activation means and Gram matrix; attention heads' contribution energy and similarity.\n"
                       "Writes OUT/analysis.json, OUT/analysis.html (charts, opens offline) and OUT/stats.safetensors;\n"
                       "prints one JSON line per layer.");
    if (rc >= 0) return rc;
    if ((rc = cli_require("analyze", "--model, --data and --out", 3, mo.path, dt.path, out.path)) != 0) return rc;
    const char *model = mo.path, *data = dt.path, *tokenizer = mo.tokenizer;
    int64_t seq = dt.seq, batch = dt.batch, max_tokens = dt.max_tokens;
    const char *ins[] = {model, data, tokenizer};
    cli_out_spec os = {"-o", out.path, out.force, false};
    if ((rc = cli_check_output("analyze", &os, ins, 3)) != 0) return rc;
    cli_set_threads(threads);
    fk_model m;
    fk_tokenizer *tok = NULL;
    fk_token_data d = {0};
    fk_status st = cli_model_open(&mo, &m, &tok);
    if (st != FK_OK) return cli_fail("analyze", st);
    st = fk_data_load_tok(data, tok, &d);
    fk_tok_free(tok);
    fk_analysis a;
    if (max_n > m.cfg.n_layer) max_n = m.cfg.n_layer;
    double t0 = fk_time_s();
    cli_progress_begin("analyze", quiet, "windows");
    if (st == FK_OK) st = fk_analyze(&m, &d, (int)(seq > 0 ? seq : m.cfg.max_seq), (int)batch, max_tokens, (int)max_n, &a);
    cli_progress_end();
    if (st == FK_OK) {
        a.model_path = model;
        a.data_path = data;
        cli_outdir od;  // written under a temporary name, renamed when complete; under mpirun by rank 0
        bool lead = fk_dp_rank() == 0;
        if (lead) st = cli_outdir_begin(out.path, &od);
        if (lead && st == FK_OK) st = cli_outdir_end(&od, fk_analysis_save(&a, od.tmp));
        for (int l = 0; st == FK_OK && l < a.n_layer; l++) {
            cJSON *j = cJSON_CreateObject();
            cli_json_int(j, "layer", l);
            cli_json_num(j, "block_influence", "%.6f", a.bi[l]);
            cli_json_num(j, "angular_next", "%.6f", a.angular[(int64_t)l * a.max_n]);
            cli_json_num(j, "cka_next", "%.6f", a.cka[l]);
            cli_json_int(j, "ffn", a.ffn[l]);
            if (a.experts && a.experts[l] > 0) add_experts(j, &a, l);
            cli_json_print(j, stdout, NULL);
        }
        if (st == FK_OK && lead)
            fprintf(stderr, "analysed %lld positions in %.1f s; wrote %s/analysis.json, analysis.html and stats.safetensors\n", (long long)a.tokens,
                    fk_time_s() - t0, out.path);
        fk_analysis_free(&a);
    }
    fk_data_free(&d);
    fk_model_free(&m);
    return st == FK_OK ? 0 : cli_fail("analyze", st);
}
