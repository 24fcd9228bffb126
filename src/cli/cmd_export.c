// fusekit export / import: model folders <-> GGUF files for llama.cpp.
#include "cli.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static long long file_size(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 ? (long long)sb.st_size : -1;
}

// What export and import print: one JSON line.
typedef struct {
    const char *path;                  // what was written
    const char *arch_key, *arch;       // "arch" (export) or "model_type" (import), and its value
    const char *type;                  // the dtype written (export), or NULL
    int64_t tensors;
    long long bytes;                   // the GGUF file's size
    bool tokenizer;
    double t0;                         // when the verb started
    double gelu_diff;                  // export --gelu-approx: the largest logit change (< 0: not printed)
} conversion;

static int print_conversion(const conversion *c) {
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "path", c->path);
    cJSON_AddStringToObject(j, c->arch_key, c->arch);
    if (c->type) cJSON_AddStringToObject(j, "type", c->type);
    cli_json_int(j, "tensors", c->tensors);
    cli_json_int(j, "bytes", c->bytes);
    cJSON_AddBoolToObject(j, "tokenizer", c->tokenizer);
    if (c->gelu_diff >= 0) cli_json_num(j, "gelu_approx_max_logit_diff", "%.3g", c->gelu_diff);
    cli_json_num(j, "seconds", "%.3f", fk_time_s() - c->t0);
    cli_json_print(j, stdout, NULL);
    return 0;
}

int cmd_export(int argc, char **argv) {
    cli_model_opts mo = {0};
    cli_out_opts out = {0};
    const char *name = NULL;
    fk_dtype type = FK_DT_F32;
    bool no_tok = false, gelu_approx = false;
    cli_opt opts[] = {
        CLI_ROW_MODEL(&mo, "model folder or .gguf file (required)"),
        {"--gguf", OPT_STR, &out.path, "output GGUF file (required)", false, NULL},
        {"--type", OPT_CHOICE, CLI_ENUM(&type), "matrices (1-D tensors stay f32)", false, CLI_DTYPES},
        {"--tokenizer", OPT_STR, &mo.tokenizer, "tokenizer to embed (default: the model's own: tokenizer.json or the GGUF's metadata)", false, NULL},
        {"--no-tokenizer", OPT_FLAG, &no_tok, "write no tokenizer keys (llama.cpp cannot load such a file)", false, NULL},
        {"--name", OPT_STR, &name, "general.name (default: the folder's name)", false, NULL},
        {"--gelu-approx", OPT_FLAG, &gelu_approx, "write an exact-GELU model with the tanh GELU llama.cpp computes (refused "
         "without), printing the largest logit change on a 64-token probe", false, NULL},
        {"--force", OPT_FLAG, &out.force, "replace an existing --gguf (when the new one is complete)", false, NULL},
        CLI_ROWS_END,
    };
    int rc = cli_parse_verb(argc, argv, opts,
                       "usage: fusekit export --model DIR --gguf OUT.gguf [--type f32|f16|bf16] [--no-tokenizer] [--gelu-approx]\n\n"
                       "Writes a model (a folder or a .gguf file) as a GGUF v3 file for llama.cpp (architecture llama, deci\n"
                       "for per-layer widths, gpt2, gemma/gemma2/gemma3, qwen3, starcoder2, phi3,\n"
                       "gptneox, phi2, stablelm, mpt, falcon or olmo2; mixtures of experts as llama (Mixtral), qwen2moe,\n"
                       "qwen3moe or olmoe), with the tokenizer's tokenizer.ggml.* keys.\n"
                       "llama.cpp computes the tanh GELU: a model with exact (erf) GELU (GPT-NeoX/Pythia, MPT, Falcon,\n"
                       "GPT-2 \"gelu\") is refused unless --gelu-approx, which writes it with the tanh GELU and reports\n"
                       "gelu_approx_max_logit_diff, the largest logit change that makes on a 64-token probe.");
    if (rc >= 0) return rc;
    if ((rc = cli_require("export", "--model and --gguf", 2, mo.path, out.path)) != 0) return rc;
    const char *model = mo.path, *tok_path = mo.tokenizer;
    const char *ins[] = {model, tok_path};
    cli_out_spec os = {"--gguf", out.path, out.force, false};
    if ((rc = cli_check_output("export", &os, ins, 2)) != 0) return rc;
    double t0 = fk_time_s();
    fk_model m;
    fk_tokenizer *tok = NULL;
    fk_status st = cli_model_open(&mo, &m, no_tok ? NULL : &tok);  // written out: decoded weights (flags 0)
    if (st != FK_OK) return cli_fail("export", st);
    if (!no_tok && !tok) {
        st = fk_error(FK_ERR_ARG, "%s has no tokenizer (tokenizer.json, or the GGUF's tokenizer.ggml.* keys; and is not a 256-token byte model): "
                      "pass --tokenizer T, or --no-tokenizer to write the weights alone (llama.cpp needs the tokenizer to load the file)", model);
        fk_model_free(&m);
        return cli_fail("export", st);
    }
    char nm[256];
    if (name) snprintf(nm, sizeof nm, "%s", name);
    else cli_model_name(model, nm, sizeof nm);
    double gelu_diff = -1;
    if (gelu_approx) st = fk_model_gelu_to_tanh(&m, 64, &gelu_diff);
    fk_gguf_export_stats s;
    if (st == FK_OK) st = fk_gguf_export(&m, tok, out.path, type, nm, &s);
    bool has_tok = tok != NULL;
    fk_tok_free(tok);
    fk_model_free(&m);
    if (st != FK_OK) return cli_fail("export", st);
    conversion c = {out.path, "arch", s.arch, fk_dtype_name(type), s.n_tensors, file_size(out.path), has_tok, t0, gelu_diff};
    return print_conversion(&c);
}

int cmd_import(int argc, char **argv) {
    const char *in = NULL;
    cli_out_opts out = {0};
    fk_dtype dtype = FK_DT_F32;
    cli_opt opts[] = {
        {"--gguf", OPT_STR, &in, "input GGUF file (required)", false, NULL},
        CLI_ROW_OUT(&out, "output model folder (required)"),
        {"--dtype", OPT_CHOICE, CLI_ENUM(&dtype), "model.safetensors weights", false, CLI_DTYPES},
        CLI_ROW_FORCE(&out),
        CLI_ROWS_END,
    };
    int rc = cli_parse_verb(argc, argv, opts,
                       "usage: fusekit import --gguf IN.gguf -o DIR [--dtype f32|f16|bf16]\n\n"
                       "Reads a llama, deci, gpt2, gemma, gemma2, gemma3, qwen2, qwen3, starcoder2, phi3, gptneox, phi2, stablelm, mpt, falcon, olmo2, qwen2moe, qwen3moe or olmoe\n"
                       "GGUF file (llama with experts: Mixtral, 3-D or older per-expert tensors) into a model\n"
                       "folder, decoding its tensors (F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K..Q6_K, Q8_K, IQ4_NL,\n"
                       "IQ4_XS) to --dtype (config.json, model.safetensors, tokenizer.json when the file has a tokenizer).");
    if (rc >= 0) return rc;
    if ((rc = cli_require("import", "--gguf and -o", 2, in, out.path)) != 0) return rc;
    cli_out_spec os = {"-o", out.path, out.force, false};
    if ((rc = cli_check_output("import", &os, &in, 1)) != 0) return rc;
    double t0 = fk_time_s();
    fk_model m;
    fk_tokenizer *tok = NULL;
    fk_status st = fk_gguf_import(in, &m, &tok);
    if (st != FK_OK) return cli_fail("import", st);
    int64_t n_tensors = 0;
    fk_gguf g;
    if (fk_gguf_open(in, &g) == FK_OK) { n_tensors = g.n_tensors; fk_gguf_close(&g); }
    cli_outdir od;  // written under a temporary name, renamed when complete
    st = cli_outdir_begin(out.path, &od);
    if (st == FK_OK) {
        fk_status ws = fk_hf_save(&m, od.tmp, dtype);
        if (ws == FK_OK && tok) ws = fk_tok_save_hf(tok, od.tmp);
        st = cli_outdir_end(&od, ws);
    }
    const char *arch = fk_arch_name(fk_config_arch(&m.cfg));
    bool has_tok = tok != NULL;
    fk_tok_free(tok);
    fk_model_free(&m);
    if (st != FK_OK) return cli_fail("import", st);
    conversion c = {out.path, "model_type", arch, NULL, n_tensors, file_size(in), has_tok, t0, -1};
    return print_conversion(&c);
}
