# Replication statistics for the bench scripts (bench/fold_results.sh, fuse_real.sh,
# fusellm_real.sh): mean and sample sd over seeds, and the paired difference of two methods over
# the same seeds with its two-sided t interval. Imported by the scripts' Python (sys.path gets
# bench/); Python's standard library only. The library's own statistics are src/eval/stats.c
# (fusekit/stats.h); this is the bench side, used where no fusekit verb prints them.
import math
import statistics


def mean_sd(xs):
    """Mean and sample standard deviation (divisor n - 1; 0 for one value)."""
    return statistics.mean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def _t_cdf(t, df):
    # P(T <= t) for Student's t: the density integrated from 0 by Simpson's rule (2000 panels;
    # the density is smooth, so this is exact to ~1e-12 for the |t| < 100 the quantile visits)
    c = math.exp(math.lgamma((df + 1) / 2) - math.lgamma(df / 2)) / math.sqrt(df * math.pi)
    f = lambda x: c * (1 + x * x / df) ** (-(df + 1) / 2)
    n, h = 2000, abs(t) / 2000
    s = f(0) + f(abs(t)) + sum((4 if i % 2 else 2) * f(i * h) for i in range(1, n))
    half = s * h / 3
    return 0.5 + half if t >= 0 else 0.5 - half


def t_quantile(p, df):
    """The p quantile of Student's t with df degrees of freedom (bisection on the CDF)."""
    lo, hi = 0.0, 1000.0
    for _ in range(100):
        mid = (lo + hi) / 2
        if _t_cdf(mid, df) < p: lo = mid
        else: hi = mid
    return (lo + hi) / 2 if p >= 0.5 else -t_quantile(1 - p, df)


def paired(a, b, level=0.95):
    """Paired difference a - b (a[i], b[i] from the same seed): mean, sd, and the two-sided
    `level` t interval mean -+ t_{(1+level)/2, n-1} sd / sqrt(n); None for fewer than 2 pairs."""
    d = [x - y for x, y in zip(a, b)]
    if len(d) < 2: return None
    m, sd = mean_sd(d)
    w = t_quantile((1 + level) / 2, len(d) - 1) * sd / math.sqrt(len(d))
    return {"mean": m, "sd": sd, "n": len(d), "lo": m - w, "hi": m + w, "diffs": d}


if __name__ == "__main__":  # self-check against the textbook t table
    for df, want in ((1, 12.7062047), (2, 4.3026527), (4, 2.7764451), (10, 2.2281389)):
        got = t_quantile(0.975, df)
        assert abs(got - want) < 1e-6, (df, got, want)
    print("stats.py: t quantiles match the table")
