#!/usr/bin/env python3
"""ULD (Universal Logit Distillation, Boizard et al. 2024, arXiv 2402.12030) golden values
for tests/test_ops.c test_uld_golden: random student logits and sparse teacher rows, the
distance computed as the paper does (softmax, sort both distributions decreasing, pad the
shorter with zeros, sum of absolute differences), in float64 with torch. Rows whose teacher
mass falls short of 1 (fusekit's --teacher-tail rows) match the two remaining masses as one
lumped entry, |R - r|, as docs/fusion.md §6 defines. Independent of the fusekit C code.

Writes tests/data/uld/golden.txt:
  line 1: N V
  then per row: target, k, the k teacher (id, p) pairs, the V logits, the expected distance.
Run from the repository root: tools/ref/.venv/bin/python tools/ref/make_uld_golden.py
"""
import torch

torch.manual_seed(19)
N, V = 6, 40
lines = [f"{N} {V}"]
for i in range(N):
    logits = torch.randn(V, dtype=torch.float64) * (1.0 + i)
    k = [5, 1, 8, 0, 3, 12][i]          # 0: an empty row, the one-hot [1]
    tail = i in (2, 5)                   # rows that leave mass to the rest
    ids = torch.randperm(V)[:k]
    p = torch.rand(k, dtype=torch.float64) + 0.05
    p = p / p.sum() * (0.8 if tail else 1.0)
    s = torch.softmax(logits, 0).sort(descending=True).values
    t = p.sort(descending=True).values if k > 0 else torch.ones(1, dtype=torch.float64)
    kk = t.numel()
    if tail:   # the top k ranks, then the two rests as one entry
        d = (s[:kk] - t).abs().sum() + ((1 - s[:kk].sum()) - (1 - t.sum())).abs()
    else:      # the paper's: the teacher padded with zeros to the student's V
        tp = torch.cat([t, torch.zeros(V - kk, dtype=torch.float64)])
        d = (s - tp).abs().sum()
    target = int(torch.randint(V, (1,)))
    pairs = " ".join(f"{int(a)} {float(b):.17g}" for a, b in zip(ids, p))
    lines.append(f"{target} {k} {pairs}".rstrip())
    lines.append(" ".join(f"{float(x):.17g}" for x in logits))
    lines.append(f"{float(d):.17g}")
open("tests/data/uld/golden.txt", "w").write("\n".join(lines) + "\n")
print("wrote tests/data/uld/golden.txt")
