// fusekit export / import: model folders <-> GGUF files for llama.cpp.
#include "cli.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

// Prints s as a JSON string.
static void json_str(const char *s) {
    putchar('"');
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\') printf("\\%c", *p);
        else if (*p < 0x20) printf("\\u%04x", *p);
        else putchar(*p);
    }
    putchar('"');
}

static long long file_size(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 ? (long long)sb.st_size : -1;
}

static int parse_type(const char *cmd, const char *opt, const char *s, fk_dtype *t) {
    if (strcmp(s, "f32") == 0 || strcmp(s, "F32") == 0) *t = FK_DT_F32;
    else if (strcmp(s, "f16") == 0 || strcmp(s, "F16") == 0) *t = FK_DT_F16;
    else if (strcmp(s, "bf16") == 0 || strcmp(s, "BF16") == 0) *t = FK_DT_BF16;
    else { fprintf(stderr, "fusekit %s: error: %s %s is not one of f32, f16, bf16\n", cmd, opt, s); return 2; }
    return 0;
}

int cmd_export(int argc, char **argv) {
    const char *model = NULL, *out = NULL, *type_s = "f32", *tok_path = NULL, *name = NULL;
    bool no_tok = false, force = false;
    cli_opt opts[] = {
        {"--model", OPT_STR, &model, "model folder or .gguf file (required)", false, NULL},
        {"--gguf", OPT_STR, &out, "output GGUF file (required)", false, NULL},
        {"--type", OPT_STR, &type_s, "f32 | f16 | bf16: matrices (1-D tensors stay f32) (f32)", false, NULL},
        {"--tokenizer", OPT_STR, &tok_path, "tokenizer to embed (default: the model's own: tokenizer.json or the GGUF's metadata)", false, NULL},
        {"--no-tokenizer", OPT_FLAG, &no_tok, "write no tokenizer keys (llama.cpp cannot load such a file)", false, NULL},
        {"--name", OPT_STR, &name, "general.name (default: the folder's name)", false, NULL},
        {"--force", OPT_FLAG, &force, "replace an existing --gguf (when the new one is complete)", false, NULL},
        {NULL, 0, NULL, NULL, false, NULL},
    };
    int rc = cli_parse(argc, argv, opts,
                       "usage: fusekit export --model DIR --gguf OUT.gguf [--type f32|f16|bf16] [--no-tokenizer]\n\n"
                       "Writes a model (a folder or a .gguf file) as a GGUF v3 file for llama.cpp (architecture llama, deci\n"
                       "for per-layer widths, gpt2, or gemma/gemma2/gemma3), with the tokenizer's tokenizer.ggml.* keys.");
    if (rc) return rc == 1 ? 0 : 2;
    if (!model || !out) { fprintf(stderr, "fusekit export: error: --model and --gguf are required\n"); return 2; }
    fk_dtype type;
    if (parse_type("export", "--type", type_s, &type)) return 2;
    const char *ins[] = {model, tok_path};
    cli_out_spec os = {"--gguf", out, force, false};
    if ((rc = cli_check_output("export", &os, ins, 2)) != 0) return rc;
    double t0 = fk_time_s();
    fk_model m;
    fk_tokenizer *tok = NULL;
    fk_status st = cli_load_model(model, tok_path, 0, &m, no_tok ? NULL : &tok);  // written out: decoded weights
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
    fk_gguf_export_stats s;
    st = fk_gguf_export(&m, tok, out, type, nm, &s);
    bool has_tok = tok != NULL;
    fk_tok_free(tok);
    fk_model_free(&m);
    if (st != FK_OK) return cli_fail("export", st);
    printf("{\"path\":");
    json_str(out);
    printf(",\"arch\":\"%s\",\"type\":\"%s\",\"tensors\":%lld,\"bytes\":%lld,\"tokenizer\":%s,\"seconds\":%.3f}\n", s.arch,
           fk_dtype_name(type), (long long)s.n_tensors, file_size(out), has_tok ? "true" : "false", fk_time_s() - t0);
    return 0;
}

int cmd_import(int argc, char **argv) {
    const char *in = NULL, *out = NULL, *dtype_s = "f32";
    bool force = false;
    cli_opt opts[] = {
        {"--gguf", OPT_STR, &in, "input GGUF file (required)", false, NULL},
        {"-o|--out", OPT_STR, &out, "output model folder (required)", false, NULL},
        {"--dtype", OPT_STR, &dtype_s, "f32 | f16 | bf16: model.safetensors weights (f32)", false, NULL},
        {"--force", OPT_FLAG, &force, "replace an existing -o (when the new one is complete)", false, NULL},
        {NULL, 0, NULL, NULL, false, NULL},
    };
    int rc = cli_parse(argc, argv, opts,
                       "usage: fusekit import --gguf IN.gguf -o DIR [--dtype f32|f16|bf16]\n\n"
                       "Reads a llama, deci, gpt2, gemma, gemma2 or gemma3 GGUF file into a model folder, decoding its tensors\n"
                       "(F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K..Q6_K, Q8_K, IQ4_NL, IQ4_XS) to --dtype\n"
                       "(config.json, model.safetensors, tokenizer.json when the file has a tokenizer).");
    if (rc) return rc == 1 ? 0 : 2;
    if (!in || !out) { fprintf(stderr, "fusekit import: error: --gguf and -o are required\n"); return 2; }
    fk_dtype dtype;
    if (parse_type("import", "--dtype", dtype_s, &dtype)) return 2;
    cli_out_spec os = {"-o", out, force, false};
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
    st = cli_outdir_begin(out, &od);
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
    printf("{\"path\":");
    json_str(out);
    printf(",\"model_type\":\"%s\",\"tensors\":%lld,\"bytes\":%lld,\"tokenizer\":%s,\"seconds\":%.3f}\n", arch, (long long)n_tensors,
           file_size(in), has_tok ? "true" : "false", fk_time_s() - t0);
    return 0;
}
