// config.json (Hugging Face): parsed, validated and described; a valid config is written back
// as config.json and parsed again (the same config must come out), and a small one is
// allocated as a model and runs one forward.
#include "fusekit/hf.h"
#include "fusekit/model.h"
#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *json = fz_str(data, size);
    fk_config c;
    memset(&c, 0, sizeof c);
    fk_status st = fk_hf_config_parse(json, "fuzz/config.json", &c);
    free(json);
    if (st != FK_OK) return 0;
    char desc[512];
    fk_config_describe(&c, desc, sizeof desc);
    if (fk_config_validate(&c) != FK_OK) return 0;
    char *again = fk_hf_config_json(&c);
    if (!again) abort();
    fk_config c2;
    memset(&c2, 0, sizeof c2);
    if (fk_hf_config_parse(again, "fuzz/again.json", &c2) != FK_OK) {
        fprintf(stderr, "a valid config does not parse back: %s\n%s\n", fk_last_error(), again);
        abort();
    }
    free(again);
    // a rough parameter count in double (no overflow): only small models are built
    double d = (double)c.d_model, ffn = 0;
    for (int64_t l = 0; l < c.n_layer && l < FK_MAX_LAYERS; l++) ffn += (double)c.ffn[l];
    double params = 2.0 * (double)c.vocab_size * d + (double)c.n_layer * 4.0 * d * (double)(c.n_head * c.head_dim + d) + 3.0 * d * ffn;
    if (params > 4e6 || c.max_seq < 4) return 0;
    fk_model m;
    if (fk_model_init(&m, &c) != FK_OK) return 0;
    fk_model_init_weights(&m, 1);
    int32_t x[4], y[4];
    for (int i = 0; i < 4; i++) { x[i] = (int32_t)(i % c.vocab_size); y[i] = (int32_t)((i + 1) % c.vocab_size); }
    float loss;
    (void)fk_model_forward(&m, x, y, 1, 4, false, &loss);
    fk_model_free(&m);
    return 0;
}
