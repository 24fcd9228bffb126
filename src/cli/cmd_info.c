// fusekit info: config, parameter counts and memory of a model folder.
#include "cli.h"

#include <stdlib.h>
#include <string.h>

int cmd_info(int argc, char **argv) {
    cli_model_opts mo = {0};
    cli_data_opts sz = {.batch = 8};  // the training-memory estimate's batch and sequence
    bool json = false;
    cli_opt opts[] = {
        CLI_ROW_MODEL(&mo, "model folder or .gguf file (required)"),
        CLI_ROW_BATCH(&sz, "batch for the training-memory estimate"),
        CLI_ROW_SEQ(&sz, "sequence length for the estimate (default: the context)"),
        {"--json", OPT_FLAG, &json, "print one JSON object", false, NULL},
        CLI_ROWS_END,
    };
    int rc = cli_parse_verb(argc, argv, opts, "usage: fusekit info --model DIR|FILE.gguf [--json]");
    if (rc >= 0) return rc;
    if ((rc = cli_require("info", "--model", 1, mo.path)) != 0) return rc;
    const char *model = mo.path;
    int64_t batch = sz.batch, seq = sz.seq;
    fk_model m;
    fk_status st = fk_model_load(model, FK_LOAD_FROZEN, &m, NULL);
    if (st != FK_OK) return cli_fail("info", st);
    const fk_config *c = &m.cfg;
    // the file's own type (config.json model_type, GGUF general.architecture) and the model_type fusekit
    // saves the model as (fk_config_arch: another row's when that row computes it, or fusekit)
    char own[64];
    bool gguf;
    if ((st = fk_model_file_type(model, own, sizeof own, &gguf)) != FK_OK) { fk_model_free(&m); return cli_fail("info", st); }
    const char *saved = fk_arch_name(fk_config_arch(c));
    int64_t T = seq > 0 ? seq : c->max_seq;
    // weights + gradients + two AdamW moments + activations of one training micro-batch
    size_t weights = (size_t)m.n_floats * 4;
    size_t train_bytes = 4 * weights + fk_model_activation_bytes(&m, (int)batch, (int)T, true);
    int64_t n = fk_model_num_params(&m), emb = c->vocab_size * c->d_model * (c->tied ? 1 : 2);
    char desc[512];
    fk_config_describe(c, desc, sizeof desc);
    int64_t ffn = fk_model_count_params(&m, FK_PARAMS_FFN, FK_PARAMS_ANY_LAYER);
    // the KV cache holds keys and values of every layer: 2 * n_layer * n_kv_head * head_dim floats per token
    int64_t kv_bytes = 2 * c->n_layer * c->n_kv_head * c->head_dim * 4;
    if (json) {
        cJSON *j = cJSON_CreateObject();
        // a GGUF file has no model_type: the one fusekit reads it as (its text line names the architecture),
        // so that a folder and its export print the same object
        cJSON_AddStringToObject(j, "model_type", gguf ? saved : own);
        cli_json_int(j, "params", n);
        cli_json_int(j, "embedding_params", emb);
        cli_json_int(j, "ffn_params", ffn);
        cli_json_int(j, "matmul_params", fk_model_num_matmul_params(&m));
        cli_json_int(j, "n_layer", c->n_layer);
        cli_json_num(j, "weights_mb_f32", "%.2f", weights / 1048576.0);
        cli_json_int(j, "kv_bytes_per_token", kv_bytes);
        cli_json_num(j, "train_mb", "%.1f", train_bytes / 1048576.0);
        cli_json_int(j, "train_batch", batch);
        cli_json_int(j, "train_seq", T);
        cJSON_AddStringToObject(j, "saved_as", saved);  // the model_type fusekit writes it as
        cli_json_print(j, stdout, NULL);
    } else {
        if (gguf) printf("model:        %s (GGUF architecture %s; saved as model_type %s)\n", model, own, saved);
        else if (strcmp(own, saved) != 0) printf("model:        %s (model_type %s; saved as model_type %s, which computes it)\n", model, own, saved);
        else printf("model:        %s (model_type %s)\n", model, own);
        printf("config:       %s\n", desc);
        printf("parameters:   %lld (%.2fM); embeddings and head %lld; FFN %lld; in matrix multiplies %lld\n", (long long)n, n / 1e6,
               (long long)emb, (long long)ffn, (long long)fk_model_num_matmul_params(&m));
        printf("per layer:    ");
        for (int64_t l = 0; l < c->n_layer; l++)
            printf("%s%lld", l ? " " : "", (long long)fk_model_count_params(&m, FK_PARAMS_BLOCKS, (int)l));
        printf("\nmemory:       weights %.1f MiB (f32), %.1f MiB (bf16); training at batch %lld x %lld: %.1f MiB "
               "(weights, gradients, AdamW moments, activations)\n",
               weights / 1048576.0, weights / 2097152.0, (long long)batch, (long long)T, train_bytes / 1048576.0);
        printf("KV cache:     %lld bytes per token (f32)\n", (long long)kv_bytes);
        printf("tensors:\n");
        for (int i = 0; i < m.n_params; i++) {
            const fk_param *p = &m.params[i];
            if (p->ndim == 2) printf("  %-32s [%lld, %lld]\n", p->name, (long long)p->shape[0], (long long)p->shape[1]);
            else printf("  %-32s [%lld]\n", p->name, (long long)p->shape[0]);
        }
    }
    fk_model_free(&m);
    return 0;
}
