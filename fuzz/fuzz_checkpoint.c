// A checkpoint's trainer_state.json (step, training options): written into a folder that holds
// nothing else, so loading stops at the missing model once the JSON has been read.
#include "fusekit/train.h"
#include "fuzz_util.h"

static char dir[64];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!dir[0]) {
        snprintf(dir, sizeof dir, "/tmp/fk_fuzz_ckpt_XXXXXX");
        if (!mkdtemp(dir)) { perror("mkdtemp"); abort(); }
    }
    char path[128];
    snprintf(path, sizeof path, "%s/trainer_state.json", dir);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(data, 1, size, f) != size || fclose(f) != 0) abort();
    fk_model m;
    fk_adamw opt;
    fk_train_opts o;
    fk_train_defaults(&o);
    if (fk_checkpoint_load(dir, &m, &opt, &o) == FK_OK) abort();   // no model in the folder
    return 0;
}
