// The CUDA engine's entry points in a build without it (-DFK_CUDA=OFF, the default): each says so.
#include "fusekit/gpu.h"

#include <string.h>

fk_status fk_device_parse(const char *s, fk_device *out) {
    if (s && strcmp(s, "cpu") == 0) { *out = FK_DEVICE_CPU; return FK_OK; }
    if (s && strcmp(s, "cuda") == 0) { *out = FK_DEVICE_CUDA; return FK_OK; }
    return fk_error(FK_ERR_ARG, "--device must be cpu or cuda, not '%s'", s ? s : "");
}
const char *fk_device_name(fk_device d) { return d == FK_DEVICE_CUDA ? "cuda" : "cpu"; }
bool fk_gpu_built(void) { return false; }

#define NONE fk_error(FK_ERR_UNSUPPORTED, "this fusekit was built without the CUDA engine: rebuild with cmake -DFK_CUDA=ON (make cuda)")
fk_status fk_gpu_describe(char *buf, size_t n) { (void)buf; (void)n; return NONE; }
fk_status fk_gpu_supports(const fk_config *c) { (void)c; return NONE; }
fk_status fk_gpu_bytes(const fk_model *m, int B, int T, bool train, size_t *bytes) { *bytes = 0; return NONE; }
fk_status fk_gpu_open(fk_gpu **g, fk_model *m, int B, int T, bool train) { *g = NULL; return NONE; }
void fk_gpu_close(fk_gpu *g) { (void)g; }
fk_status fk_gpu_forward(fk_gpu *g, const int32_t *tokens, const int32_t *targets, int B, int T, float *loss, float *token_losses,
                         float *logits) { return NONE; }
fk_status fk_gpu_train_step(fk_gpu *g, const int32_t *tokens, const int32_t *targets, const fk_sparse_dist *teacher, float lambda,
                            int B, int T, float grad_scale, float *loss, float *fusion_loss) { return NONE; }
fk_status fk_gpu_topk(fk_gpu *g, const int32_t *tokens, const int32_t *labels, int B, int T, int k, int32_t *ids, float *logp,
                      float *ce) { return NONE; }
void fk_gpu_zero_grads(fk_gpu *g) { (void)g; }
fk_status fk_gpu_grad_norm(fk_gpu *g, double *norm) { return NONE; }
fk_status fk_gpu_adamw(fk_gpu *g, int64_t t, float lr, float beta1, float beta2, float eps, float weight_decay, float grad_scale) {
    return NONE;
}
fk_status fk_gpu_get_weights(fk_gpu *g, float *w) { return NONE; }
fk_status fk_gpu_set_weights(fk_gpu *g, const float *w) { return NONE; }
fk_status fk_gpu_get_grads(fk_gpu *g, float *grad) { return NONE; }
fk_status fk_gpu_get_moments(fk_gpu *g, float *m, float *v) { return NONE; }
fk_status fk_gpu_set_moments(fk_gpu *g, const float *m, const float *v) { return NONE; }
size_t fk_gpu_held_bytes(const fk_gpu *g) { (void)g; return 0; }
