#!/usr/bin/python3
"""PyTorch reference side of the fusekit CPU speed benchmark.

Builds small GPT-2 and Llama style decoder-only transformers in plain
torch.nn and measures training-step and prefill (forward-only) throughput
on random token batches.  See bench/README.md for the settings and for the
FLOP accounting, which the fusekit benchmark uses too.

    python3 bench/torch_bench.py [--config S|M|M-llama|all]
                                 [--mode train|infer|all] [--steps N]

GPU mode (--device cuda) times the two full-size shapes that fusekit's CUDA
engine is measured on (bench/fk_gpu_bench.c), in this process, with
scaled_dot_product_attention, optionally bf16 autocast and torch.compile:

    python3 bench/torch_bench.py --device cuda [--config gpt2-124m|llama-1b|all]
                                 [--mode train|infer|all] [--steps N]
                                 [--autocast bf16] [--compile]

The driver runs every (config, mode) pair in its own subprocess, so that the
peak RSS reported for a run belongs to that run alone, and gives each child
PyTorch's fastest setting found on the reference machine (child_env below:
OpenMP OpenBLAS, 2 threads, glibc malloc tuning, ATen AVX-512 kernels).
One JSON line per run goes to stdout; everything else goes to stderr.
"""

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time

OPENBLAS_OPENMP_DIR = "/usr/lib/x86_64-linux-gnu/openblas-openmp"
DEFAULT_THREADS = 2

# name -> model shape.  "llama" variants use RMSNorm, RoPE, SwiGLU, no biases
# and an untied LM head (tied with tied=True); "gpt2" variants use LayerNorm
# with bias, learned positions, a 4*d tanh-GELU MLP, biases everywhere and a
# tied LM head.  head_dim is d_model / n_head throughout.
CONFIGS = {
    "S": dict(arch="gpt2", vocab=8192, ctx=256, d_model=256, n_layer=4,
              n_head=4, batch=8),
    "M": dict(arch="gpt2", vocab=8192, ctx=512, d_model=512, n_layer=8,
              n_head=8, batch=8),
    "M-llama": dict(arch="llama", vocab=8192, ctx=512, d_model=512, n_layer=8,
                    n_head=8, n_kv_head=8, ffn_hidden=1376, batch=8,
                    rope_theta=10000.0),
    # GPU shapes (--device cuda; the same ones as bench/fk_gpu_bench.c).
    # GPT-2 small: 768 wide, 12 layers, 12 heads of 64, MLP 3072, tied.
    "gpt2-124m": dict(arch="gpt2", vocab=50257, ctx=1024, d_model=768,
                      n_layer=12, n_head=12, batch=16),
    # Llama 3.2 1B: 2048 wide, 16 layers, 32 heads of 64, 8 KV heads,
    # SwiGLU 8192, RoPE theta 500000 (without the llama3 long-context
    # frequency rescaling, which does not change the cost), tied LM head.
    "llama-1b": dict(arch="llama", vocab=128256, ctx=1024, d_model=2048,
                     n_layer=16, n_head=32, n_kv_head=8, ffn_hidden=8192,
                     batch=8, rope_theta=500000.0, tied=True),
}
# "all" on the CPU (the default device) runs CONFIG_ORDER only; "all" with
# --device cuda runs GPU_CONFIG_ORDER.
CONFIG_ORDER = ["S", "M", "M-llama"]
GPU_CONFIG_ORDER = ["gpt2-124m", "llama-1b"]
MODE_ORDER = ["train", "infer"]

# Timed steps per run (after 2 untimed warm-up steps), picked so that each
# run takes roughly 20-40 s on the 2-core reference machine.
DEFAULT_STEPS = {
    ("S", "train"): 50, ("S", "infer"): 160,
    ("M", "train"): 6, ("M", "infer"): 16,
    ("M-llama", "train"): 5, ("M-llama", "infer"): 16,
    # The GPU shapes on the CPU take minutes per step; a token run only.
    ("gpt2-124m", "train"): 2, ("gpt2-124m", "infer"): 2,
    ("llama-1b", "train"): 2, ("llama-1b", "infer"): 2,
}
WARMUP_STEPS = 2
# --device cuda: timed steps per run unless --steps, and untimed warm-up
# steps (one more than on the CPU: cuBLAS/cuDNN handles, allocator growth and,
# with --compile, compilation of the forward and the backward).
CUDA_DEFAULT_STEPS = {"train": 20, "infer": 50}
CUDA_WARMUP_STEPS = 3
# Dense bf16 peak of an H100/H200 SXM (datasheet, TFLOP/s), the MFU
# denominator; the same default as bench/fk_gpu_bench.c --peak.
PEAK_TFLOPS = 989.0

LR = 3e-4
WEIGHT_DECAY = 0.1
GRAD_CLIP = 1.0
NORM_EPS = 1e-5


# --------------------------------------------------------------------------
# FLOP accounting (shared with the fusekit benchmark; keep in sync)
# --------------------------------------------------------------------------

def matmul_weights(cfg):
    """N_mm: weights that take part in matrix multiplies.

    Per layer: attention q, k, v, o projections plus the MLP matrices; plus
    the LM head V*d (counted even when it is tied to the embedding).
    Embedding lookup, position embeddings, norms and biases are excluded.
    """
    d = cfg["d_model"]
    if cfg["arch"] == "gpt2":
        attn = 4 * d * d
        mlp = 2 * d * (4 * d)
    else:
        head_dim = d // cfg["n_head"]
        kv = cfg["n_kv_head"] * head_dim
        attn = d * d + 2 * d * kv + d * d
        mlp = 3 * d * cfg["ffn_hidden"]
    return cfg["n_layer"] * (attn + mlp) + cfg["vocab"] * d


def flops_per_token(cfg, mode):
    # Attention scores QK^T and the weighted sum PV over the causal half:
    # 2 matmuls * 2 flops * T/2 * d per layer.
    attn_fwd = 2 * cfg["n_layer"] * cfg["ctx"] * cfg["d_model"]
    fwd = 2 * matmul_weights(cfg) + attn_fwd
    return 3 * fwd if mode == "train" else fwd


# --------------------------------------------------------------------------
# Models (imported lazily so the driver does not need torch)
# --------------------------------------------------------------------------

def palm_flops_per_token(cfg, mode):
    """Model FLOPs per token for MFU, the PaLM paper's formula (appendix B):
    training 6*N + 12*L*H*Q*T, with N the matmul weights (matmul_weights,
    LM head included), L layers, H*Q = heads * head_dim (= d_model here) and
    T the context; the attention term counts the full, not causal, T x T
    scores.  Forward only (infer) is a third of it: 2*N + 4*L*H*Q*T.
    fusekit's fk_model_flops_per_token computes the same numbers."""
    fwd = (2 * matmul_weights(cfg)
           + 4 * cfg["n_layer"] * cfg["d_model"] * cfg["ctx"])
    return 3 * fwd if mode == "train" else fwd


def build_model(cfg, attn_chunks, sdpa=False):
    """sdpa=True (--device cuda): attention is
    F.scaled_dot_product_attention(is_causal=True), i.e. whatever fused
    kernel (flash, cuDNN, memory-efficient) PyTorch picks; otherwise the
    explicit CPU formulation below."""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    T = cfg["ctx"]
    causal = torch.full((T, T), float("-inf")).triu(1)  # additive mask

    def causal_attention(q, k, v):
        """softmax(q k^T / sqrt(hd) + causal mask) v.

        q, k, v: (B, H, T, hd) -> (B, T, H*hd).  Queries are processed in
        `attn_chunks` row blocks; block c only multiplies against keys
        0..end(c), so the all-masked upper-right blocks are never computed.
        With attn_chunks=1 this is the plain full-matrix formulation.
        The mask is added inside the QK^T GEMM (baddbmm), which was the
        fastest variant measured (see README).
        """
        B, H, _, hd = q.shape
        if sdpa:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            return y.transpose(1, 2).reshape(B, T, H * hd)
        q = q.reshape(B * H, T, hd)
        k = k.reshape(B * H, T, hd)
        v = v.reshape(B * H, T, hd)
        scale = 1.0 / math.sqrt(hd)
        step = max(1, T // max(1, attn_chunks))
        outs = []
        for r0 in range(0, T, step):
            r1 = min(r0 + step, T)
            s = torch.baddbmm(causal[r0:r1, :r1], q[:, r0:r1],
                              k[:, :r1].transpose(1, 2), alpha=scale)
            outs.append(torch.bmm(torch.softmax(s, dim=-1), v[:, :r1]))
        y = outs[0] if len(outs) == 1 else torch.cat(outs, dim=1)
        return y.view(B, H, T, hd).transpose(1, 2).reshape(B, T, H * hd)

    def init_weights(module):
        for m in module.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, mean=0.0, std=0.02)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)

    # ---------------------------- GPT-2 style ----------------------------

    class GPT2Attention(nn.Module):
        def __init__(self, d, n_head):
            super().__init__()
            self.n_head = n_head
            self.c_attn = nn.Linear(d, 3 * d)  # q, k, v stacked
            self.c_proj = nn.Linear(d, d)

        def forward(self, x):
            B, T_, d = x.shape
            hd = d // self.n_head
            qkv = self.c_attn(x).view(B, T_, 3, self.n_head, hd)
            q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each (B, H, T, hd)
            return self.c_proj(causal_attention(q, k, v))

    class GPT2MLP(nn.Module):
        def __init__(self, d):
            super().__init__()
            self.c_fc = nn.Linear(d, 4 * d)
            self.c_proj = nn.Linear(4 * d, d)

        def forward(self, x):
            return self.c_proj(F.gelu(self.c_fc(x), approximate="tanh"))

    class GPT2Block(nn.Module):
        def __init__(self, d, n_head):
            super().__init__()
            self.ln_1 = nn.LayerNorm(d, eps=NORM_EPS)
            self.attn = GPT2Attention(d, n_head)
            self.ln_2 = nn.LayerNorm(d, eps=NORM_EPS)
            self.mlp = GPT2MLP(d)

        def forward(self, x):
            x = x + self.attn(self.ln_1(x))
            return x + self.mlp(self.ln_2(x))

    class GPT2(nn.Module):
        def __init__(self, c):
            super().__init__()
            d = c["d_model"]
            self.wte = nn.Embedding(c["vocab"], d)
            self.wpe = nn.Embedding(c["ctx"], d)
            self.h = nn.ModuleList(GPT2Block(d, c["n_head"])
                                   for _ in range(c["n_layer"]))
            self.ln_f = nn.LayerNorm(d, eps=NORM_EPS)
            self.lm_head = nn.Linear(d, c["vocab"], bias=False)
            init_weights(self)
            self.lm_head.weight = self.wte.weight  # tied

        def forward(self, idx):
            pos = torch.arange(idx.shape[1], device=idx.device)
            x = self.wte(idx) + self.wpe(pos)
            for block in self.h:
                x = block(x)
            return self.lm_head(self.ln_f(x))

    # ---------------------------- Llama style ----------------------------

    class RMSNorm(nn.Module):
        def __init__(self, d, eps):
            super().__init__()
            self.eps = eps
            self.weight = nn.Parameter(torch.ones(d))

        def forward(self, x):
            rms = torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
            return self.weight * (x * rms)

    def rotate_half(x):
        half = x.shape[-1] // 2
        return torch.cat((-x[..., half:], x[..., :half]), dim=-1)

    class LlamaAttention(nn.Module):
        def __init__(self, c):
            super().__init__()
            d = c["d_model"]
            self.n_head = c["n_head"]
            self.n_kv = c["n_kv_head"]
            self.hd = d // self.n_head
            kv = self.n_kv * self.hd
            # q_proj, k_proj, v_proj stacked into one GEMM (same math).
            self.qkv_proj = nn.Linear(d, d + 2 * kv, bias=False)
            self.o_proj = nn.Linear(d, d, bias=False)

        def forward(self, x, cos, sin):
            B, T_, d = x.shape
            hd, H, Hkv = self.hd, self.n_head, self.n_kv
            q, k, v = self.qkv_proj(x).split([H * hd, Hkv * hd, Hkv * hd],
                                             dim=-1)
            q = q.view(B, T_, H, hd).transpose(1, 2)
            k = k.view(B, T_, Hkv, hd).transpose(1, 2)
            v = v.view(B, T_, Hkv, hd).transpose(1, 2)
            q = q * cos + rotate_half(q) * sin
            k = k * cos + rotate_half(k) * sin
            if Hkv != H:  # grouped-query attention (llama-1b, not M-llama)
                k = k.repeat_interleave(H // Hkv, dim=1)
                v = v.repeat_interleave(H // Hkv, dim=1)
            return self.o_proj(causal_attention(q, k, v))

    class LlamaMLP(nn.Module):
        def __init__(self, d, hidden):
            super().__init__()
            self.hidden = hidden
            # gate_proj and up_proj stacked into one GEMM (same math).
            self.gate_up_proj = nn.Linear(d, 2 * hidden, bias=False)
            self.down_proj = nn.Linear(hidden, d, bias=False)

        def forward(self, x):
            gate, up = self.gate_up_proj(x).split(self.hidden, dim=-1)
            return self.down_proj(F.silu(gate) * up)

    class LlamaBlock(nn.Module):
        def __init__(self, c):
            super().__init__()
            d = c["d_model"]
            self.input_layernorm = RMSNorm(d, NORM_EPS)
            self.self_attn = LlamaAttention(c)
            self.post_attention_layernorm = RMSNorm(d, NORM_EPS)
            self.mlp = LlamaMLP(d, c["ffn_hidden"])

        def forward(self, x, cos, sin):
            x = x + self.self_attn(self.input_layernorm(x), cos, sin)
            return x + self.mlp(self.post_attention_layernorm(x))

    class Llama(nn.Module):
        def __init__(self, c):
            super().__init__()
            d = c["d_model"]
            hd = d // c["n_head"]
            self.embed_tokens = nn.Embedding(c["vocab"], d)
            self.layers = nn.ModuleList(LlamaBlock(c)
                                        for _ in range(c["n_layer"]))
            self.norm = RMSNorm(d, NORM_EPS)
            self.lm_head = nn.Linear(d, c["vocab"], bias=False)
            init_weights(self)
            if c.get("tied"):  # llama-1b; untied otherwise (M-llama)
                self.lm_head.weight = self.embed_tokens.weight
            # RoPE tables, rotate-half convention: angle(t, i) = t * theta^(-2i/hd)
            inv_freq = 1.0 / (c["rope_theta"] **
                              (torch.arange(0, hd, 2, dtype=torch.float32) / hd))
            angles = torch.outer(torch.arange(c["ctx"], dtype=torch.float32),
                                 inv_freq)
            angles = torch.cat((angles, angles), dim=-1)  # (T, hd)
            self.register_buffer("cos", angles.cos(), persistent=False)
            self.register_buffer("sin", angles.sin(), persistent=False)

        def forward(self, idx):
            T_ = idx.shape[1]
            cos, sin = self.cos[:T_], self.sin[:T_]
            x = self.embed_tokens(idx)
            for layer in self.layers:
                x = layer(x, cos, sin)
            return self.lm_head(self.norm(x))

    return GPT2(cfg) if cfg["arch"] == "gpt2" else Llama(cfg)


# --------------------------------------------------------------------------
# Worker: one (config, mode) measurement in this process
# --------------------------------------------------------------------------

def loaded_blas():
    """Path of the BLAS/OpenBLAS library mapped into this process."""
    libs = set()
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                path = line.split()[-1]
                if "blas" in os.path.basename(path).lower():
                    libs.add(os.path.realpath(path))
    except OSError:
        pass
    return ",".join(sorted(libs))


def cpu_seconds():
    """(busy CPU seconds of the whole machine, CPU seconds of this process).

    The difference over the timed loop is CPU time that other processes
    took while we were being measured.
    """
    busy = float("nan")
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
        # user nice system idle iowait irq softirq steal ...
        busy = (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        pass
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return busy, ru.ru_utime + ru.ru_stime


def cpu_capability(torch):
    """The SIMD level ATen dispatches its own (non-BLAS) kernels to."""
    for line in torch.__config__.show().splitlines():
        if "CPU capability usage:" in line:
            return line.split(":", 1)[1].strip()
    return ""


def run_worker(args):
    """One (config, mode) measurement in this process.  On the CPU it is the
    driver's subprocess; with --device cuda run_cuda calls it directly."""
    import torch
    import torch.nn.functional as F

    cuda = args.device == "cuda"
    if not cuda:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = CONFIGS[args.config]
    B, T, V = cfg["batch"], cfg["ctx"], cfg["vocab"]
    if cuda:
        # Parameters (and the RoPE tables) made and initialised on the GPU.
        with torch.device("cuda"):
            model = build_model(cfg, args.attn_chunks, sdpa=True)
    else:
        model = build_model(cfg, args.attn_chunks)
    n_params = sum(p.numel() for p in model.parameters())
    if args.steps:
        steps = args.steps
    elif cuda:
        steps = CUDA_DEFAULT_STEPS[args.mode]
    else:
        steps = DEFAULT_STEPS[(args.config, args.mode)]
    warmup = CUDA_WARMUP_STEPS if cuda else WARMUP_STEPS

    # --autocast bf16: torch.autocast on the CPU (bf16 matmuls, fp32 weights and optimizer), the
    # counterpart of fusekit's --precision bf16; none (default): fp32 throughout.  On the GPU the
    # same with torch.autocast("cuda", dtype=torch.bfloat16).
    import contextlib

    def autocast():
        if args.autocast == "bf16":
            return torch.autocast(args.device, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    # --compile: torch.compile (default mode) of the model; compilation
    # happens on the first call, inside the warm-up steps below, which fall
    # back to the eager model if it raises.  `fwd` is what the steps call.
    fwd = model
    compiled = False
    if args.compile:
        import torch._dynamo
        torch._dynamo.reset()  # nothing cached from an earlier in-process run
        fwd = torch.compile(model)
        compiled = True

    # A few random (B, T+1) token batches, made up front and cycled:
    # inputs are [:, :-1], next-token targets are [:, 1:].
    gen = torch.Generator().manual_seed(1234)
    batches = [torch.randint(0, V, (B, T + 1), generator=gen)
               for _ in range(4)]
    if cuda:
        batches = [b.to("cuda") for b in batches]

    if args.mode == "train":
        model.train()
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=LR, weight_decay=WEIGHT_DECAY,
                                foreach=args.foreach)

        def step(i):
            tok = batches[i % len(batches)]
            x, y = tok[:, :-1], tok[:, 1:]
            opt.zero_grad(set_to_none=True)
            with autocast():
                logits = fwd(x)
                loss = F.cross_entropy(logits.reshape(-1, V), y.reshape(-1))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, GRAD_CLIP)
            opt.step()
            # On the GPU no .item() (a host sync) inside the timed loop.
            return loss.detach() if cuda else loss.item()
    else:
        model.eval()

        def step(i):
            tok = batches[i % len(batches)]
            with torch.no_grad(), autocast():
                logits = fwd(tok[:, :-1])
            return logits[0, 0, 0].detach() if cuda else float(logits[0, 0, 0])

    compile_error = None
    if compiled:
        try:
            for i in range(warmup):
                last = step(i)
            if cuda:
                torch.cuda.synchronize()
        except Exception as e:  # compilation (or its first run) failed
            compile_error = f"{type(e).__name__}: {e}"
            print(json.dumps({
                "impl": "pytorch", "config": args.config, "mode": args.mode,
                "device": args.device, "compile": False,
                "compile_error": compile_error[:4000],
                "note": "torch.compile failed; timing the eager model"}),
                flush=True)
            import torch._dynamo
            torch._dynamo.reset()
            fwd = model
            compiled = False
            if cuda:
                torch.cuda.synchronize()
                torch.cuda.empty_cache()
    if not compiled:
        for i in range(warmup):
            last = step(i)

    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        events = [(torch.cuda.Event(enable_timing=True),
                   torch.cuda.Event(enable_timing=True)) for _ in range(steps)]
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for i in range(steps):
            events[i][0].record()
            last = step(warmup + i)
            events[i][1].record()
        torch.cuda.synchronize()  # all queued GPU work done before the clock
        seconds = time.perf_counter() - t0
        last = float(last)
        step_times = sorted(a.elapsed_time(b) / 1e3 for a, b in events)
        result = cuda_result(args, torch, cfg, model, n_params, steps, warmup,
                             seconds, step_times, compiled, compile_error)
        print(f"[{args.config}/{args.mode}] last loss/logit {last:.4f}",
              file=sys.stderr)
        print(json.dumps(result), flush=True)
        return

    step_times = []
    busy0, self0 = cpu_seconds()
    t0 = time.perf_counter()
    for i in range(steps):
        ts = time.perf_counter()
        last = step(warmup + i)
        step_times.append(time.perf_counter() - ts)
    seconds = time.perf_counter() - t0
    busy1, self1 = cpu_seconds()
    ncpu = os.cpu_count() or 1
    foreign = max(0.0, ((busy1 - busy0) - (self1 - self0)) / (seconds * ncpu))
    step_times.sort()

    tokens_per_s = B * T * steps / seconds
    fpt = flops_per_token(cfg, args.mode)
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    result = {
        "impl": "pytorch",
        "config": args.config,
        "mode": args.mode,
        "batch": B,
        "ctx": T,
        "tokens_per_s": round(tokens_per_s, 1),
        "gflops": round(tokens_per_s * fpt / 1e9, 2),
        "peak_rss_mb": round(peak_kib / 1024, 1),
        "steps": steps,
        "seconds": round(seconds, 3),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "params": n_params,
        "n_mm": matmul_weights(cfg),
        "flops_per_token": fpt,
        # Per-step times, to spot interference from other load: if
        # seconds/steps is far above the median, rerun.
        "step_s_min": round(step_times[0], 4),
        "step_s_median": round(step_times[len(step_times) // 2], 4),
        # Share of the machine's CPU time that other processes used during
        # the timed steps; above a few percent the figure is disturbed.
        "other_cpu_frac": round(foreign, 3),
        "attn_chunks": args.attn_chunks,
        "autocast": args.autocast,
        "cpu_capability": cpu_capability(torch),
        "blas": loaded_blas(),
    }
    if args.compile:  # the default CPU line stays exactly as it was
        result["device"] = args.device
        result["compile"] = compiled
        if compile_error is not None:
            result["compile_error"] = compile_error[:4000]
    print(f"[{args.config}/{args.mode}] last loss/logit {last:.4f}",
          file=sys.stderr)
    print(json.dumps(result), flush=True)


def cuda_result(args, torch, cfg, model, n_params, steps, warmup, seconds,
                step_times, compiled, compile_error):
    """The JSON line of a --device cuda run: the CPU line's fields that mean
    something on a GPU, plus device, compile, gpu and mfu."""
    B, T = cfg["batch"], cfg["ctx"]
    tokens_per_s = B * T * steps / seconds
    fpt = flops_per_token(cfg, args.mode)
    # MFU: PaLM model FLOPs (train 6*N + 12*L*d*T per token, infer
    # 2*N + 4*L*d*T; see palm_flops_per_token) times tokens/s over the dense
    # bf16 peak (989 TFLOP/s for H100/H200 SXM), also for --autocast none.
    palm = palm_flops_per_token(cfg, args.mode)
    result = {
        "impl": "pytorch",
        "config": args.config,
        "mode": args.mode,
        "batch": B,
        "ctx": T,
        "tokens_per_s": round(tokens_per_s, 1),
        "gflops": round(tokens_per_s * fpt / 1e9, 2),
        "peak_rss_mb": round(
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "steps": steps,
        "seconds": round(seconds, 3),
        "torch": torch.__version__,
        "params": n_params,
        "n_mm": matmul_weights(cfg),
        "flops_per_token": fpt,
        # GPU time per step from CUDA events around each step.
        "step_s_min": round(step_times[0], 4),
        "step_s_median": round(step_times[len(step_times) // 2], 4),
        "autocast": args.autocast,
        "device": args.device,
        "compile": compiled,
        "gpu": torch.cuda.get_device_name(),
        "cuda": torch.version.cuda,
        "attn": "sdpa",
        "warmup_steps": warmup,
        "palm_flops_per_token": palm,
        "tflops": round(tokens_per_s * palm / 1e12, 2),
        "peak_tflops": args.peak,
        "mfu": round(tokens_per_s * palm / (args.peak * 1e12), 4),
        "peak_gpu_mem_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1),
        "gpu_reserved_mb": round(torch.cuda.memory_reserved() / 2**20, 1),
    }
    if compile_error is not None:
        result["compile_error"] = compile_error[:4000]
    return result


def run_cuda(args):
    """--device cuda: every (config, mode) in this process, one after the
    other (no subprocesses, no thread or allocator settings)."""
    try:
        import torch
    except ImportError as e:
        print(json.dumps({"impl": "pytorch", "device": "cuda",
                          "error": f"cannot import torch: {e}"}), flush=True)
        return 2
    if not torch.cuda.is_available():
        print(json.dumps({
            "impl": "pytorch", "device": "cuda", "torch": torch.__version__,
            "error": "--device cuda, but torch.cuda.is_available() is False "
                     f"(torch {torch.__version__}, built for CUDA "
                     f"{torch.version.cuda}): no usable NVIDIA GPU/driver"}),
            flush=True)
        return 2
    configs = GPU_CONFIG_ORDER if args.config == "all" else [args.config]
    modes = MODE_ORDER if args.mode == "all" else [args.mode]
    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}"
          f", CUDA {torch.version.cuda}", file=sys.stderr)
    import gc
    t_start = time.perf_counter()
    failed = 0
    for config in configs:
        for mode in modes:
            run_args = argparse.Namespace(**vars(args))
            run_args.config, run_args.mode = config, mode
            t0 = time.perf_counter()
            try:
                run_worker(run_args)
            except Exception as e:  # e.g. out of memory; go on with the next
                failed += 1
                print(json.dumps({"impl": "pytorch", "config": config,
                                  "mode": mode, "device": "cuda",
                                  "error": f"{type(e).__name__}: {e}"[:4000]}),
                      flush=True)
            gc.collect()
            torch.cuda.empty_cache()
            print(f"[{config}/{mode}] wall {time.perf_counter() - t0:.1f} s",
                  file=sys.stderr)
    print(f"total wall time {time.perf_counter() - t_start:.1f} s",
          file=sys.stderr)
    return 1 if failed else 0


# --------------------------------------------------------------------------
# Driver: one subprocess per (config, mode)
# --------------------------------------------------------------------------

def cpu_has_avx512():
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((l.split(":", 1)[1].split() for l in f
                          if l.startswith("flags")), [])
    except OSError:
        return False
    return all(x in flags for x in ("avx512f", "avx512bw", "avx512vl",
                                    "avx512dq"))


# glibc malloc: never hand big blocks to mmap and never trim the heap, so the
# large activation/gradient buffers freed each step are reused instead of
# being unmapped and page-faulted (zeroed) back in on the next step.
MALLOC_TUNABLES = ("glibc.malloc.mmap_max=0:"
                   "glibc.malloc.trim_threshold=68719476736")


def child_env(args):
    """Environment for the measured subprocesses ("PyTorch's best setting";
    see README for the experiments behind each item)."""
    env = dict(os.environ)
    threads = args.threads
    if not args.no_blas_path and os.path.isdir(OPENBLAS_OPENMP_DIR):
        old = env.get("LD_LIBRARY_PATH")
        env["LD_LIBRARY_PATH"] = OPENBLAS_OPENMP_DIR + (":" + old if old else "")
    # OpenMP OpenBLAS runs its GEMMs on torch's own OpenMP (libgomp) pool;
    # one thread per core and nothing oversubscribes.
    env["OMP_NUM_THREADS"] = str(threads)
    env["OPENBLAS_NUM_THREADS"] = str(threads)
    if not args.no_malloc_tuning:
        old = env.get("GLIBC_TUNABLES")
        env["GLIBC_TUNABLES"] = MALLOC_TUNABLES + (":" + old if old else "")
    # Debian's torch 1.13 picks its AVX2 kernels on this CPU although the
    # AVX-512 ones are built in; ask for them (elementwise ops, softmax,
    # norms, optimizer).  GEMMs go to OpenBLAS, which detects AVX-512 itself.
    if not args.no_avx512 and "ATEN_CPU_CAPABILITY" not in env \
            and cpu_has_avx512():
        env["ATEN_CPU_CAPABILITY"] = "avx512"
    return env


def run_driver(args):
    configs = CONFIG_ORDER if args.config == "all" else [args.config]
    modes = MODE_ORDER if args.mode == "all" else [args.mode]
    env = child_env(args)
    print("child environment: " + " ".join(
        f"{k}={env[k]}" for k in ("LD_LIBRARY_PATH", "OMP_NUM_THREADS",
                                   "OPENBLAS_NUM_THREADS", "GLIBC_TUNABLES",
                                   "ATEN_CPU_CAPABILITY") if k in env),
          file=sys.stderr)
    t_start = time.perf_counter()
    failed = 0
    for config in configs:
        for mode in modes:
            cmd = [sys.executable, os.path.abspath(__file__), "--worker",
                   "--config", config, "--mode", mode,
                   "--threads", str(args.threads),
                   "--attn-chunks", str(args.attn_chunks),
                   "--autocast", args.autocast]
            if args.steps:
                cmd += ["--steps", str(args.steps)]
            if not args.foreach:
                cmd += ["--no-foreach"]
            if args.compile:
                cmd += ["--compile"]
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE,
                                  text=True)
            sys.stdout.write(proc.stdout)
            sys.stdout.flush()
            for line in proc.stdout.splitlines():
                try:
                    other = json.loads(line).get("other_cpu_frac", 0.0)
                except ValueError:
                    continue
                if other > 0.05:
                    print(f"[{config}/{mode}] WARNING: other processes used "
                          f"{100 * other:.0f}% of the CPU during the timed "
                          "steps; this figure is disturbed, rerun it",
                          file=sys.stderr)
            print(f"[{config}/{mode}] subprocess wall {time.perf_counter() - t0:.1f} s",
                  file=sys.stderr)
            if proc.returncode != 0:
                failed += 1
                print(f"[{config}/{mode}] FAILED (exit {proc.returncode})",
                      file=sys.stderr)
    print(f"total wall time {time.perf_counter() - t_start:.1f} s",
          file=sys.stderr)
    return 1 if failed else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="all",
                    choices=CONFIG_ORDER + GPU_CONFIG_ORDER + ["all"],
                    help="all: %s on the CPU, %s with --device cuda"
                    % (",".join(CONFIG_ORDER), ",".join(GPU_CONFIG_ORDER)))
    ap.add_argument("--mode", default="all", choices=MODE_ORDER + ["all"])
    ap.add_argument("--steps", type=int, default=0,
                    help="timed steps per run (default: per-config table; "
                    "cuda: %d train, %d infer)" % (CUDA_DEFAULT_STEPS["train"],
                                                  CUDA_DEFAULT_STEPS["infer"]))
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                    help="cuda: model and data on the GPU, "
                    "scaled_dot_product_attention, all runs in this process")
    ap.add_argument("--compile", action="store_true",
                    help="torch.compile the model (default mode); falls back "
                    "to eager, with a JSON line saying so, if it fails")
    ap.add_argument("--peak", type=float, default=PEAK_TFLOPS,
                    help="cuda: peak TFLOP/s for mfu (default %(default)g, "
                    "dense bf16 H100/H200 SXM)")
    ap.add_argument("--threads", type=int, default=DEFAULT_THREADS,
                    help=argparse.SUPPRESS)
    ap.add_argument("--attn-chunks", type=int, default=4,
                    help=argparse.SUPPRESS)  # 1 = plain full-matrix attention
    ap.add_argument("--autocast", default="none", choices=["none", "bf16"],
                    help="bf16: torch.autocast on the device (bf16 matmuls, fp32 master weights)")
    ap.add_argument("--no-foreach", dest="foreach", action="store_false",
                    help=argparse.SUPPRESS)
    ap.add_argument("--no-blas-path", action="store_true",
                    help=argparse.SUPPRESS)
    ap.add_argument("--no-malloc-tuning", action="store_true",
                    help=argparse.SUPPRESS)
    ap.add_argument("--no-avx512", action="store_true",
                    help=argparse.SUPPRESS)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.device == "cuda":
        return run_cuda(args)
    if args.worker:
        if args.config == "all" or args.mode == "all":
            ap.error("--worker needs one --config and one --mode")
        run_worker(args)
        return 0
    return run_driver(args)


if __name__ == "__main__":
    sys.exit(main())
