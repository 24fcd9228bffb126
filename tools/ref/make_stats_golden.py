"""Golden values for tests/test_stats.c: Student's t quantiles from mpmath (50 digits: the
distribution function as mpmath's regularised incomplete beta, inverted by mpmath.findroot),
and means, sample sds and paired 95% intervals from Python's statistics module with those
quantiles. Independent of fusekit's C code. Writes tests/data/stats/t_quantiles.txt and
tests/data/stats/paired.txt.

    tools/ref/.venv/bin/python tools/ref/make_stats_golden.py
"""
import os
import random
import statistics

import mpmath as mp

mp.mp.dps = 50
OUT = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "data", "stats")


def t_cdf(t, df):
    x = df / (df + t * t)
    tail = mp.betainc(mp.mpf(df) / 2, mp.mpf(1) / 2, 0, x, regularized=True) / 2
    return 1 - tail if t >= 0 else tail


def t_ppf(p, df):
    p = mp.mpf(p)
    if p == mp.mpf(1) / 2:
        return mp.mpf(0)
    # a start from the normal quantile, then the root of the cdf
    z = mp.sqrt(2) * mp.erfinv(2 * p - 1)
    start = z if df > 4 else (mp.tan(mp.pi * (p - mp.mpf(1) / 2)) if df == 1 else z * 2)
    return mp.findroot(lambda t: t_cdf(t, df) - p, start, tol=mp.mpf(10) ** -40)


def main():
    os.makedirs(OUT, exist_ok=True)
    dfs = [1, 2, 3, 4, 5, 6, 7, 9, 10, 15, 20, 29, 30, 50, 99, 100, 250, 500, 999, 1000]
    ps = ["0.975", "0.995", "0.95", "0.9", "0.6", "0.5", "0.025", "0.999999", "0.000001", "0.75"]
    with open(os.path.join(OUT, "t_quantiles.txt"), "w") as f:
        f.write("# df p t  (Student t quantile, mpmath %s, 50 digits)\n" % mp.__version__)
        for df in dfs:
            for p in ps:
                t = t_ppf(p, df)
                assert abs(t_cdf(t, df) - mp.mpf(p)) < mp.mpf(10) ** -35, (df, p)
                f.write("%d %s %s\n" % (df, p, mp.nstr(t, 20, min_fixed=-30, max_fixed=30)))
    rng = random.Random(19)
    with open(os.path.join(OUT, "paired.txt"), "w") as f:
        f.write("# n level mean_a sd_a mean_diff lo hi | a[0..n) | b[0..n)  (statistics module + mpmath t)\n")
        for n in [2, 3, 5, 8]:
            for level in ["0.95", "0.9"]:
                a = [round(rng.uniform(1.5, 2.5), 6) for _ in range(n)]
                b = [round(x + rng.uniform(-0.05, 0.02), 6) for x in a]
                d = [x - y for x, y in zip(a, b)]
                m, sd = statistics.mean(d), statistics.stdev(d)
                t = float(t_ppf((1 + mp.mpf(level)) / 2, n - 1))
                half = t * sd / n ** 0.5
                f.write("%d %s %.17g %.17g %.17g %.17g %.17g | %s | %s\n" % (
                    n, level, statistics.mean(a), statistics.stdev(a), m, m - half, m + half,
                    " ".join(repr(x) for x in a), " ".join(repr(x) for x in b)))


if __name__ == "__main__":
    main()
