// Probe files (JSON lines of multiple-choice items) scored by a tiny byte-level model.
#include "fusekit/model.h"
#include "fusekit/probes.h"
#include "fuzz_util.h"

static fk_model model;
static int ready;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!ready) {
        fk_config c;
        fk_config_gpt2(&c, 256, 16, 1, 2, 32);
        if (fk_model_init(&model, &c) != FK_OK) { fprintf(stderr, "fuzz_probes: %s\n", fk_last_error()); abort(); }
        fk_model_init_weights(&model, 7);
        ready = 1;
    }
    fk_probe_result r;
    memset(&r, 0, sizeof r);
    if (fk_probes_eval(&model, NULL, fz_file(data, size), 16, &r) == FK_OK) fk_probe_result_free(&r);
    return 0;
}
