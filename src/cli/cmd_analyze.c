// fusekit analyze: streaming redundancy statistics of a model over a calibration text.
#include "cli.h"
#include "fusekit/analyze.h"

#include <math.h>

int cmd_analyze(int argc, char **argv) {
    const char *model = NULL, *data = NULL, *out = NULL, *tokenizer = NULL;
    int64_t seq = 0, batch = 4, max_tokens = 65536, max_n = 4, threads = 0;
    bool force = false;
    cli_opt opts[] = {
        {"--model", OPT_STR, &model, "model folder or .gguf file (required)", false, NULL},
        {"--data", OPT_STR, &data, "calibration text or token shard (required)", false, NULL},
        {"-o|--out", OPT_STR, &out, "output folder: analysis.json, analysis.html, stats.safetensors (required)", false, NULL},
        {"--tokenizer", OPT_STR, &tokenizer, "tokenizer for text (default: the model's own: tokenizer.json or the GGUF's metadata)", false, NULL},
        {"--seq", OPT_INT, &seq, "window length (default: the model's context)", false, "[0,1048576]"},
        {"--batch", OPT_INT, &batch, "windows per forward pass (default 4)", false, "[1,65536]"},
        {"--max-tokens", OPT_INT, &max_tokens, "positions analysed at most, 0 = all (default 65536)", false, "[0,)"},
        {"--max-n", OPT_INT, &max_n, "angular distance d(l, l+n) for n = 1..max-n (default 4, at most the layers)", false, "[1,256]"},
        {"--threads", OPT_INT, &threads, "threads (default: all cores)", false, "[0,4096]"},
        {"--force", OPT_FLAG, &force, "replace an existing -o (when the new one is complete)", false, NULL},
        {NULL, 0, NULL, NULL, false, NULL},
    };
    int rc = cli_parse(argc, argv, opts,
                       "usage: fusekit analyze --model DIR|FILE.gguf --data TEXT -o OUT [options]\n\n"
                       "Per layer: Block Influence, angular distances, linear CKA to the next layer (residual stream);\n"
                       "FFN activation means and Gram matrix; attention heads' contribution energy and similarity.\n"
                       "Writes OUT/analysis.json, OUT/analysis.html (charts, opens offline) and OUT/stats.safetensors;\n"
                       "prints one JSON line per layer.");
    if (rc) return rc == 1 ? 0 : 2;
    if (!model || !data || !out) { fprintf(stderr, "fusekit analyze: error: --model, --data and --out are required\n"); return 2; }
    const char *ins[] = {model, data, tokenizer};
    cli_out_spec os = {"-o", out, force, false};
    if ((rc = cli_check_output("analyze", &os, ins, 3)) != 0) return rc;
    cli_set_threads(threads);
    fk_model m;
    fk_tokenizer *tok = NULL;
    fk_token_data d = {0};
    fk_status st = cli_load_model(model, tokenizer, FK_LOAD_FROZEN, &m, &tok);
    if (st != FK_OK) return cli_fail("analyze", st);
    st = fk_data_load_tok(data, tok, &d);
    fk_tok_free(tok);
    fk_analysis a;
    if (max_n > m.cfg.n_layer) max_n = m.cfg.n_layer;
    double t0 = fk_time_s();
    if (st == FK_OK) st = fk_analyze(&m, &d, (int)(seq > 0 ? seq : m.cfg.max_seq), (int)batch, max_tokens, (int)max_n, &a);
    if (st == FK_OK) {
        cli_outdir od;  // written under a temporary name, renamed when complete
        st = cli_outdir_begin(out, &od);
        if (st == FK_OK) st = cli_outdir_end(&od, fk_analysis_save(&a, od.tmp));
        for (int l = 0; st == FK_OK && l < a.n_layer; l++)
            printf("{\"layer\":%d,\"block_influence\":%.6f,\"angular_next\":%.6f,\"cka_next\":%.6f,\"ffn\":%lld}\n", l, a.bi[l],
                   a.angular[(int64_t)l * a.max_n], a.cka[l], (long long)a.ffn[l]);
        if (st == FK_OK)
            fprintf(stderr, "analysed %lld positions in %.1f s; wrote %s/analysis.json, analysis.html and stats.safetensors\n", (long long)a.tokens,
                    fk_time_s() - t0, out);
        fk_analysis_free(&a);
    }
    fk_data_free(&d);
    fk_model_free(&m);
    return st == FK_OK ? 0 : cli_fail("analyze", st);
}
