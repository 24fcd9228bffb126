// Statistics for replicated results: mean and sample sd, Student's t distribution function
// and quantile (through the regularised incomplete beta function), paired t intervals.
#include <math.h>

#include "fusekit/stats.h"

void fk_stats_mean_sd(const double *x, int n, double *mean, double *sd) {
    double m = 0, ss = 0;
    for (int i = 0; i < n; i++) m += x[i];
    m = n > 0 ? m / n : 0;
    for (int i = 0; i < n; i++) ss += (x[i] - m) * (x[i] - m);  // two passes: no cancellation
    *mean = m;
    *sd = n >= 2 ? sqrt(ss / (n - 1)) : 0;
}

// The continued fraction of the incomplete beta function (modified Lentz's method), valid for
// x < (a + 1) / (a + b + 2), where it converges quickly.
static double beta_cf(double a, double b, double x) {
    const double tiny = 1e-300;
    double c = 1, d = 1 - (a + b) * x / (a + 1);
    if (fabs(d) < tiny) d = tiny;
    d = 1 / d;
    double h = d;
    for (int m = 1; m <= 10000; m++) {
        double m2 = 2.0 * m;
        double num = m * (b - m) * x / ((a + m2 - 1) * (a + m2));  // even step d_{2m}
        d = 1 + num * d;
        c = 1 + num / c;
        if (fabs(d) < tiny) d = tiny;
        if (fabs(c) < tiny) c = tiny;
        d = 1 / d;
        h *= d * c;
        num = -(a + m) * (a + b + m) * x / ((a + m2) * (a + m2 + 1));  // odd step d_{2m+1}
        d = 1 + num * d;
        c = 1 + num / c;
        if (fabs(d) < tiny) d = tiny;
        if (fabs(c) < tiny) c = tiny;
        d = 1 / d;
        double del = d * c;
        h *= del;
        if (fabs(del - 1) < 1e-16) break;
    }
    return h;
}

// The regularised incomplete beta function I_x(a, b), 0 <= x <= 1.
static double beta_inc(double a, double b, double x) {
    if (x <= 0) return 0;
    if (x >= 1) return 1;
    double lfront = lgamma(a + b) - lgamma(a) - lgamma(b) + a * log(x) + b * log1p(-x);
    if (x < (a + 1) / (a + b + 2)) return exp(lfront) * beta_cf(a, b, x) / a;
    return 1 - exp(lfront) * beta_cf(b, a, 1 - x) / b;  // the symmetry I_x(a,b) = 1 - I_{1-x}(b,a)
}

// P(|T| > |t|) / 2 for t's upper tail: I_{df/(df+t^2)}(df/2, 1/2) / 2. For large |t|, df/(df+t^2)
// is computed so that it keeps its relative precision.
static double t_tail(double t, int df) {
    double x = df / (df + t * t);
    return 0.5 * beta_inc(0.5 * df, 0.5, x);
}

double fk_stats_t_cdf(double t, int df) {
    if (df < 1 || isnan(t)) return NAN;
    double tail = t_tail(t, df);
    return t >= 0 ? 1 - tail : tail;
}

// The t density with df degrees of freedom, for Newton's steps.
static double t_pdf(double t, int df) {
    double v = df;
    double lc = lgamma(0.5 * (v + 1)) - lgamma(0.5 * v) - 0.5 * log(v * M_PI);
    return exp(lc - 0.5 * (v + 1) * log1p(t * t / v));
}

double fk_stats_t_quantile(double p, int df) {
    if (!(p > 0 && p < 1) || df < 1) return NAN;
    if (p == 0.5) return 0;
    // Solve the upper tail q = min(p, 1-p) for t > 0, then give t the sign of p - 1/2.
    double q = p < 0.5 ? p : 1 - p;
    // Bracket: the tail falls as t grows; double hi until it is below q.
    double lo = 0, hi = 1;
    while (t_tail(hi, df) > q && hi < 1e300) {
        lo = hi;
        hi *= 2;
    }
    // Newton's method on the tail, kept inside the bracket (bisection when a step leaves it).
    double t = 0.5 * (lo + hi);
    for (int it = 0; it < 200; it++) {
        double f = t_tail(t, df) - q;  // decreasing in t
        if (f > 0) lo = t; else hi = t;
        double step = f / t_pdf(t, df);  // d tail / dt = -pdf
        double next = t + step;
        if (!(next > lo && next < hi)) next = 0.5 * (lo + hi);
        if (fabs(next - t) <= 1e-15 * fabs(next) || hi - lo <= 1e-15 * hi) {
            t = next;
            break;
        }
        t = next;
    }
    return p < 0.5 ? -t : t;
}

fk_status fk_stats_paired_ci(const double *a, const double *b, int n, double level, double *mean_diff, double *lo,
                             double *hi) {
    if (n < 2) return fk_error(FK_ERR_ARG, "paired interval: %d pair(s); at least 2 are needed", n);
    if (!(level > 0 && level < 1)) return fk_error(FK_ERR_ARG, "paired interval: level %g is not in (0, 1)", level);
    double m = 0, ss = 0;  // mean and sd of d[i] = a[i] - b[i], in two passes as fk_stats_mean_sd
    for (int i = 0; i < n; i++) m += a[i] - b[i];
    m /= n;
    for (int i = 0; i < n; i++) ss += (a[i] - b[i] - m) * (a[i] - b[i] - m);
    double sd = sqrt(ss / (n - 1));
    double half = fk_stats_t_quantile(0.5 * (1 + level), n - 1) * sd / sqrt((double)n);
    *mean_diff = m;
    *lo = m - half;
    *hi = m + half;
    return FK_OK;
}
