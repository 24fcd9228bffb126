// Shared by the tests that run a golden folder's tokens (tools/ref/make_golden.py and
// make_rope_golden.py write golden.safetensors: tokens (B, T+1) int32, logits (B, T, V) f32, loss (1,)).
#ifndef FK_TEST_GOLDEN_H
#define FK_TEST_GOLDEN_H
#include <math.h>
#include <stdlib.h>

#include "fusekit/model.h"
#include "fusekit/safetensors.h"
#include "test_util.h"

// Runs the tokens of dir/golden.safetensors through m: the max abs logit error, and the loss's
// relative error in *loss_rel.
static inline double golden_run(fk_model *m, const char *dir, double *loss_rel) {
    char path[1100];
    snprintf(path, sizeof path, "%.1000s/golden.safetensors", dir);
    fk_safetensors g;
    CHECK(fk_st_open(&g, path));
    const fk_st_tensor *tok = fk_st_find(&g, "tokens"), *lg = fk_st_find(&g, "logits"), *ls = fk_st_find(&g, "loss");
    assert_non_null(tok); assert_non_null(lg); assert_non_null(ls);
    int B = (int)tok->shape[0], T = (int)tok->shape[1] - 1;
    assert_int_equal(lg->numel, (int64_t)B * T * m->cfg.vocab_size);
    int32_t *x = malloc((size_t)(B * T) * sizeof(int32_t)), *y = malloc((size_t)(B * T) * sizeof(int32_t));
    const int32_t *t = tok->data;
    for (int b = 0; b < B; b++)
        for (int i = 0; i < T; i++) { x[b * T + i] = t[b * (T + 1) + i]; y[b * T + i] = t[b * (T + 1) + i + 1]; }
    float loss;
    CHECK(fk_model_forward(m, x, y, B, T, false, &loss));
    const float *got = fk_model_logits(m), *want = lg->data;
    double err = 0;
    for (int64_t i = 0; i < lg->numel; i++) err = fmax(err, fabs((double)got[i] - want[i]));
    float ref = ((const float *)ls->data)[0];
    *loss_rel = fabs(loss - ref) / fabs(ref);
    free(x); free(y);
    fk_st_close(&g);
    return err;
}
#endif
