#!/usr/bin/env python3
"""Golden values of the span objective (docs/fusion.md §6, ALM's chunk likelihood matching)
for tests/test_span.c, written from the definition with PyTorch autograd for the derivatives.

Per case: a window of n positions (position j predicts token off+j+1), the shared-end flags
ends[0..n] of tokens off..off+n, the student's nats nll[j] on its labels, S teachers' ce[k][j],
the fusion rule (mince|avgce, sequence|token, tau) and the temperature. Chunks are the runs
of positions between two consecutive shared boundaries (boundary b sits before position b;
ends[b] says whether it is shared). The teacher chunk log-likelihood is
log sum_k w_k exp(-sum_{j in c} ce[k][j]), w from MinCE/AvgCE on the window's or the chunk's
mean ce; the loss per chunk is the binary cross-entropy of Bernoulli(exp(t/temp - eps)) against
Bernoulli(exp(s/temp - eps)), s = -sum nll over the chunk; summed over chunks. Outputs: each
position's chunk (-1 outside any whole chunk), tl per chunk, the loss, d loss / d nll[j].

Usage: tools/ref/.venv/bin/python tools/ref/make_span_golden.py tests/data/span/golden.json
"""
import json
import sys

import torch

EPS = 1e-6


def chunks_of(ends):
    n = len(ends) - 1
    bounds = [b for b in range(n + 1) if ends[b]]
    chunk = [-1] * n
    spans = []
    for a, b in zip(bounds, bounds[1:]):
        for j in range(a, b):
            chunk[j] = len(spans)
        spans.append((a, b))
    return chunk, spans


def weights(ce, kind, tau):
    ce = torch.tensor(ce, dtype=torch.float64)
    if kind == "mince":
        w = torch.zeros_like(ce)
        w[int(torch.argmin(ce))] = 1  # argmin returns the first minimum
        return w
    return torch.softmax(-ce / tau, 0)


def case(rng, n, S, kind, level, tau, temp, all_shared=False):
    ends = [1] * (n + 1) if all_shared else [int(x) for x in (torch.rand(n + 1, generator=rng) < 0.45)]
    nll = (torch.rand(n, generator=rng, dtype=torch.float64) * 3).tolist()
    ce = [(torch.rand(n, generator=rng, dtype=torch.float64) * 3).tolist() for _ in range(S)]
    nll = [float(torch.tensor(v, dtype=torch.float32)) for v in nll]  # the C side holds float32
    ce = [[float(torch.tensor(v, dtype=torch.float32)) for v in row] for row in ce]
    chunk, spans = chunks_of(ends)
    seq_ce = [sum(ce[k]) / n for k in range(S)]
    tl = []
    for a, b in spans:
        nats = [sum(ce[k][a:b]) for k in range(S)]
        cek = seq_ce if level == "sequence" else [x / (b - a) for x in nats]
        w = weights(cek, kind, tau)
        tl.append(float(torch.log(sum(w[k] * torch.exp(torch.tensor(-nats[k], dtype=torch.float64)) for k in range(S)))))
    x = torch.tensor(nll, dtype=torch.float64, requires_grad=True)
    loss = torch.zeros((), dtype=torch.float64)
    for c, (a, b) in enumerate(spans):
        t = min(tl[c], 0.0)
        s = torch.clamp(-x[a:b].sum(), max=0.0)
        p = torch.exp(torch.tensor(t / temp - EPS, dtype=torch.float64))
        lq = s / temp - EPS
        loss = loss - (p * lq + (1 - p) * torch.log(-torch.expm1(lq)))
    loss.backward()
    return {"n": n, "S": S, "kind": kind, "level": level, "tau": tau, "temp": temp, "ends": ends, "nll": nll, "ce": ce,
            "chunk": chunk, "tl": tl, "loss": float(loss.detach()), "g": x.grad.tolist()}


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "tests/data/span/golden.json"
    rng = torch.Generator().manual_seed(19)
    cases = [
        case(rng, 12, 1, "mince", "sequence", 1.0, 1.0),
        case(rng, 16, 2, "mince", "sequence", 1.0, 100.0),
        case(rng, 16, 2, "mince", "token", 1.0, 10.0),
        case(rng, 20, 3, "avgce", "sequence", 0.5, 1.0),
        case(rng, 20, 3, "avgce", "token", 2.0, 100.0),
        case(rng, 9, 2, "avgce", "token", 1.0, 3.0, all_shared=True),
    ]
    with open(out, "w") as f:
        json.dump({"generator": "tools/ref/make_span_golden.py", "torch": torch.__version__, "eps": EPS, "cases": cases}, f, indent=1)


if __name__ == "__main__":
    main()
