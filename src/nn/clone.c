// fk_model_clone: the one way to copy a model (its config, a fresh table, the arena's bytes,
// which rows are padding).
#include "fusekit/model.h"

#include <string.h>

fk_status fk_model_clone(fk_model *dst, const fk_model *src) {
    if (fk_model_is_frozen(src))
        return fk_error(FK_ERR_ARG, "copy: the model reads its matrices as stored in its file (loaded frozen); load it decoded to copy it");
    FK_TRY(fk_model_init(dst, &src->cfg));
    memcpy(dst->w, src->w, (size_t)src->n_floats * sizeof(float));
    dst->vocab_real = src->vocab_real;
    return FK_OK;
}
