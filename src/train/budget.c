// Compute budgets of controls: the replay run's steps at equal FLOPs (fusekit/train.h).
#include <math.h>

#include "fusekit/train.h"

int64_t fk_replay_steps(int64_t steps, double extra_flops, double train_flops_per_token, int64_t tokens_per_step) {
    double per_step = train_flops_per_token * (double)tokens_per_step;
    if (!(extra_flops > 0) || !(per_step > 0)) return steps;
    return steps + (int64_t)ceil(extra_flops / per_step);
}
