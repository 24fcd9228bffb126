// Internal: the float instantiation of the ops (see ops_impl.h).
#ifndef FK_NN_OPS_H
#define FK_NN_OPS_H
#include <stdint.h>
#define real float
#define FK_OP(name) fk_##name
#define FK_GEMM cblas_sgemm
#include "nn/ops_impl.h"
#undef real
#undef FK_OP
#undef FK_GEMM
#endif
