// Statistics for replicated results (module eval): mean and sample standard deviation over
// seeds, Student's t quantile, and the paired difference of two runs' figures with its
// t interval (fused - baseline over the same seeds).
#ifndef FUSEKIT_STATS_H
#define FUSEKIT_STATS_H

#include "fusekit/base.h"

// Mean of x[0..n) and its sample standard deviation (divisor n - 1); sd 0 for n < 2, mean 0
// for n < 1.
void fk_stats_mean_sd(const double *x, int n, double *mean, double *sd);

// The p quantile of Student's t distribution with df degrees of freedom (0 < p < 1, df >= 1):
// the t with P(T <= t) = p, e.g. 0.975 for a two-sided 95% interval. Found by inverting the
// distribution function, which is the regularised incomplete beta function evaluated by its
// continued fraction; within 1e-9 relative of the exact value for df 1..1000 and p in
// [1e-6, 1 - 1e-6] (tests/test_stats.c against mpmath). NaN for p or df out of range.
double fk_stats_t_quantile(double p, int df);

// The distribution function of Student's t with df degrees of freedom: P(T <= t).
double fk_stats_t_cdf(double t, int df);

// The paired comparison of a and b over n pairs (a[i] and b[i] measured on the same seed):
// the mean of d[i] = a[i] - b[i] and its `level` (e.g. 0.95) two-sided t interval
// mean_diff -+ t_{(1+level)/2, n-1} * sd(d) / sqrt(n). n >= 2 and 0 < level < 1, else FK_ERR_ARG.
fk_status fk_stats_paired_ci(const double *a, const double *b, int n, double level, double *mean_diff, double *lo,
                             double *hi);

#endif
