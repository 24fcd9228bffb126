#!/usr/bin/env python3
# Summary of bench/run.sh's runs (JSON lines from fk_peak, fk_bench and torch_bench.py):
# per (config, mode, contender) the median tokens/s over the rounds, MFU against the measured
# peak of the contender's precision (fp32_peak or bf16_peak from fk_peak, same threads) and the
# median peak RSS; the ratios fusekit / PyTorch that issue 20 names (fusekit bf16 against
# PyTorch 2 bf16 autocast, fusekit fp32 against PyTorch 2 and 1.x fp32); then a markdown table.
# Standard library only. Usage: side_by_side.py [--threads N] RUNS.jsonl
import json
import statistics
import sys


def contender(r):
    if r["impl"] == "fusekit":
        path = r.get("precision", "")
        if not path.startswith("bf16"):
            return "fusekit fp32"
        # FUSEKIT_ATTN_AMX=0 keeps attention's products fp32 (an A/B contender): its path does not
        # name attention; main() tells it from the plain bf16 runs of the same machine
        return "fusekit bf16" if "attention on" in path else "fusekit bf16 attn-fp32"
    major = r.get("torch", "?").split(".")[0]
    return f"pytorch {major} " + ("bf16" if r.get("autocast") == "bf16" else "fp32")


def main(argv):
    threads = None
    if len(argv) > 2 and argv[1] == "--threads":
        threads, argv = argv[2], [argv[0]] + argv[3:]
    runs, peaks = {}, {}
    for line in open(argv[1]):
        if not line.startswith("{"):
            continue
        r = json.loads(line)
        if r.get("bench") in ("fp32_peak", "bf16_peak"):
            peaks[r["bench"][:4]] = r.get("gflops") or None
        elif "impl" in r:
            runs.setdefault((r["config"], r["mode"], contender(r)), []).append(r)
    # where no bf16 run has attention's own kernel (a CPU without it), the bf16 runs are the plain ones
    if not any(k[2] == "fusekit bf16" for k in runs):
        for k in [k for k in runs if k[2] == "fusekit bf16 attn-fp32"]:
            runs[(k[0], k[1], "fusekit bf16")] = runs.pop(k)
    order = ["fusekit fp32", "fusekit bf16", "fusekit bf16 attn-fp32", "pytorch 1 fp32", "pytorch 2 fp32", "pytorch 2 bf16"]
    med = {}
    for (c, m, who), rs in runs.items():
        tps = statistics.median(r["tokens_per_s"] for r in rs)
        gf = statistics.median(r["gflops"] for r in rs)
        peak = peaks.get("bf16" if "bf16" in who else "fp32")
        row = {"summary": "median", "config": c, "mode": m, "contender": who, "runs": len(rs),
               "tokens_per_s": round(tps, 1), "per_round": [round(r["tokens_per_s"], 1) for r in rs],
               "gflops": round(gf, 1), "mfu": round(gf / peak, 3) if peak else None,
               "peak_rss_mb": round(statistics.median(r["peak_rss_mb"] for r in rs), 1), "threads": threads}
        if who.startswith("fusekit"):
            row["path"] = rs[0].get("precision")
        med[(c, m, who)] = row
    keys = sorted(med, key=lambda k: (k[0], k[1], order.index(k[2]) if k[2] in order else 99))
    for k in keys:
        print(json.dumps(med[k]))
    pairs = [("fusekit bf16", "pytorch 2 bf16"), ("fusekit fp32", "pytorch 2 fp32"), ("fusekit fp32", "pytorch 1 fp32"),
             ("fusekit bf16", "fusekit bf16 attn-fp32")]
    ratios = {}
    for c, m in sorted({(k[0], k[1]) for k in med}):
        for a, b in pairs:
            if (c, m, a) in med and (c, m, b) in med:
                x, y = med[(c, m, a)], med[(c, m, b)]
                ratios[(c, m, a, b)] = x["tokens_per_s"] / y["tokens_per_s"]
                print(json.dumps({"ratio": f"{a} / {b}", "config": c, "mode": m,
                                  "speedup": round(x["tokens_per_s"] / y["tokens_per_s"], 3),
                                  "rss_ratio": round(x["peak_rss_mb"] / y["peak_rss_mb"], 3)}))
    # the markdown table: tokens/s (MFU) per contender, then the ratios
    present = [w for w in order if any(k[2] == w for k in med)]
    head = "| config, mode | " + " | ".join(present) + " | fusekit bf16 / pytorch 2 bf16 | RSS fusekit bf16 / pytorch 2 bf16 |"
    print(head)
    print("|" + "---|" * (len(present) + 3))
    for c, m in sorted({(k[0], k[1]) for k in med}):
        cells = []
        for w in present:
            x = med.get((c, m, w))
            cells.append("" if not x else f"{x['tokens_per_s']:,.0f}" + (f" ({100 * x['mfu']:.0f}%)" if x["mfu"] else ""))
        ra = ratios.get((c, m, "fusekit bf16", "pytorch 2 bf16"))
        a, b = med.get((c, m, "fusekit bf16")), med.get((c, m, "pytorch 2 bf16"))
        rss = f"{a['peak_rss_mb'] / b['peak_rss_mb']:.2f}" if a and b else ""
        ratio = f"{ra:.2f}" if ra else ""
        print(f"| {c} {m} | {' | '.join(cells)} | {ratio} | {rss} |")
    pk = ", ".join(f"{k} {v:,.0f} GFLOP/s" for k, v in sorted(peaks.items()) if v)
    print(f"peaks ({threads} threads): {pk}")


if __name__ == "__main__":
    main(sys.argv)
