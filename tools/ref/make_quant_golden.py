#!/usr/bin/env python3
"""Golden files for fusekit's ggml dequantization (tests/test_quants.c).

Every value comes from the PyPI `gguf` package (gguf.quants.quantize / dequantize,
gguf.GGUFReader, gguf.GGUFWriter); nothing here reads fusekit's C code.

Writes into --out (default tests/data/quants):
  <TYPE>.bin   for F32 F16 BF16 Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 Q2_K Q3_K Q4_K Q5_K Q6_K Q8_K IQ4_NL IQ4_XS:
               cases of (raw rows, dequantized rows):
               - "quantized": random float rows quantized by gguf.quants.quantize (types the
                 package can quantize), then dequantized by the package;
               - "random": random block bytes whose half-float scale fields are random finite
                 halves (normals and subnormals), dequantized by the package;
               - "real:<file>:<tensor>": the first blocks of the first and last rows of one
                 tensor of that type in each real GGUF file (--real-dir), dequantized by the package.
               Q8_K: the package has no Q8_K dequantizer (ggml uses Q8_K only for activations);
               its reference is ggml's formula y = d * q written out in numpy here.
  tiny_llama_quant.gguf  a 2-layer random llama model (d_model 256) written by gguf.GGUFWriter
               with one ggml type per matrix, covering every type above except Q8_K;
  tiny_llama_quant.ref   per tensor: name, element count, FNV-1a 64 of the package's
               dequantization (float32 little-endian bytes, ggml row order) and the first value.

<TYPE>.bin layout (little-endian): "FKQG", u32 version 1, u32 ggml type, u32 case count; per case:
u32 name length, name, u32 rows, u32 elements per row, u64 bytes per row, rows * bytes per row raw
bytes, rows * elements float32 values.

Usage: /work/cache/venv/bin/python tools/ref/make_quant_golden.py [--out DIR] [--real-dir DIR | --no-real]
Deterministic: fixed seeds; the same package version gives byte-identical files.
"""
import argparse
import importlib.metadata
import os
import struct
import sys

import numpy as np
import gguf
from gguf import GGMLQuantizationType as Q
from gguf.constants import GGML_QUANT_SIZES

TYPES = ["F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K",
         "Q8_K", "IQ4_NL", "IQ4_XS"]
CAN_QUANTIZE = {"F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0"}
# Byte offsets of the half-float scale fields inside a block (ggml-common.h).
HALF_FIELDS = {
    "Q4_0": [0], "Q4_1": [0, 2], "Q5_0": [0], "Q5_1": [0, 2], "Q8_0": [0],
    "Q2_K": [80, 82], "Q3_K": [108], "Q4_K": [0, 2], "Q5_K": [0, 2], "Q6_K": [208],
    "IQ4_NL": [0], "IQ4_XS": [0],
}
REAL_FILES = ["SmolLM2-135M-Instruct.Q4_1.gguf", "gemma-3-270m-q4_k_m.gguf"]
MAX_REAL_ELEMS = 512  # elements kept from each real row


def dequant(raw, tname):
    """The package's dequantization of raw rows (uint8, rows x bytes) -> float32 rows."""
    qt = Q[tname]
    if tname == "Q8_K":  # ggml's dequantize_row_q8_K: y = d * q (f32 d, int8 q[256], int16 bsums[16])
        rows, nbytes = raw.shape
        blocks = raw.reshape(-1, 292)
        d = blocks[:, :4].copy().view(np.float32)
        q = blocks[:, 4:260].copy().view(np.int8).astype(np.float32)
        return (d * q).reshape(rows, -1).astype(np.float32)
    out = gguf.quants.dequantize(np.ascontiguousarray(raw), qt)
    return np.ascontiguousarray(out, dtype=np.float32).reshape(raw.shape[0], -1)


def random_halves(rng, n):
    """n random finite IEEE halves (any sign, normal or subnormal, zero included)."""
    h = rng.integers(0, 1 << 16, size=n, dtype=np.uint32).astype(np.uint16)
    bad = (h & 0x7C00) == 0x7C00
    h[bad] &= 0xBFFF  # exponent 31 -> 15: finite
    return h


def random_rows(rng, tname, rows, n):
    """Random block bytes with finite half scales (Q8_K: finite f32 d)."""
    bs, ts = GGML_QUANT_SIZES[Q[tname]]
    nb = n // bs
    raw = rng.integers(0, 256, size=(rows * nb, ts), dtype=np.uint16).astype(np.uint8)
    if tname in HALF_FIELDS:
        for off in HALF_FIELDS[tname]:
            raw[:, off:off + 2] = random_halves(rng, rows * nb).view(np.uint8).reshape(-1, 2)
    elif tname == "Q8_K":
        d = (rng.standard_normal(rows * nb) * 10.0 ** rng.integers(-6, 3, rows * nb)).astype(np.float32)
        raw[:, 0:4] = d.view(np.uint8).reshape(-1, 4)
    elif tname == "F16":  # every class of half: normals, subnormals, zeros, infinities, NaNs
        special = np.array([0x0000, 0x8000, 0x0001, 0x83FF, 0x7BFF, 0xFBFF, 0x7C00, 0xFC00, 0x7E00, 0x7C01, 0x3C00], np.uint16)
        h = rng.integers(0, 1 << 16, size=rows * n, dtype=np.uint32).astype(np.uint16)
        h[:len(special)] = special
        raw = h.view(np.uint8).reshape(rows * nb, ts)
    elif tname == "BF16":
        special = np.array([0x0000, 0x8000, 0x0001, 0x7F80, 0xFF80, 0x7FC0, 0x7F81, 0x3F80], np.uint16)
        h = rng.integers(0, 1 << 16, size=rows * n, dtype=np.uint32).astype(np.uint16)
        h[:len(special)] = special
        raw = h.view(np.uint8).reshape(rows * nb, ts)
    elif tname == "F32":
        f = rng.integers(0, 1 << 32, size=rows * n, dtype=np.uint64).astype(np.uint32)
        f[:4] = [0x7F800000, 0xFF800000, 0x7FC00001, 0x00000001]
        raw = f.view(np.uint8).reshape(rows * nb, ts)
    return np.ascontiguousarray(raw.reshape(rows, nb * ts))


def float_rows(rng, rows, n):
    """Weights of several shapes: normal, wide range with outliers, zeros, constant, tiny."""
    x = np.empty((rows, n), np.float32)
    x[0] = rng.standard_normal(n) * 0.02
    x[1] = rng.standard_normal(n) * 3.0
    x[1, rng.integers(0, n, 8)] *= 40.0
    x[2] = 0.0
    x[2, 5] = -1.5
    x[3] = 0.25
    x[4] = rng.uniform(-1e-4, 1e-4, n)
    x[5] = rng.standard_normal(n) * np.exp(rng.uniform(-8, 4, n))
    return x


def quantize(x, tname):
    qt = Q[tname]
    if tname == "F32":
        return np.ascontiguousarray(x.astype(np.float32)).view(np.uint8)
    q = gguf.quants.quantize(x, qt)
    return np.ascontiguousarray(q).view(np.uint8).reshape(x.shape[0], -1)


_readers = {}


def real_cases(real_dir, tname):
    cases = []
    for fname in REAL_FILES:
        if fname not in _readers:  # opening one reads the whole vocabulary: once per file
            _readers[fname] = gguf.GGUFReader(os.path.join(real_dir, fname))
        r = _readers[fname]
        for t in r.tensors:
            if t.tensor_type.name != tname or len(t.shape) < 2:
                continue
            bs, ts = GGML_QUANT_SIZES[t.tensor_type]
            n = int(t.shape[0])
            keep = min(n, max(bs, MAX_REAL_ELEMS // bs * bs))
            data = np.ascontiguousarray(t.data)
            rows_all = data.reshape(-1, data.shape[-1]).view(np.uint8)  # (rows, bytes per row)
            pick = [0, rows_all.shape[0] - 1]
            raw = np.ascontiguousarray(rows_all[pick, : keep // bs * ts])
            cases.append((f"real:{fname}:{t.name}", raw))
            break  # one tensor of this type per file
    return cases


def write_type(path, tname, cases):
    with open(path, "wb") as f:
        f.write(b"FKQG" + struct.pack("<III", 1, int(Q[tname]), len(cases)))
        for name, raw in cases:
            vals = dequant(raw, tname)
            rows, nbytes = raw.shape
            n = vals.shape[1]
            bs, ts = GGML_QUANT_SIZES[Q[tname]] if tname != "Q8_K" else (256, 292)
            assert nbytes == n // bs * ts and vals.dtype == np.float32
            nm = name.encode()
            f.write(struct.pack("<I", len(nm)) + nm + struct.pack("<IIQ", rows, n, nbytes))
            f.write(raw.tobytes())
            f.write(vals.astype("<f4").tobytes())


# ------------------------------------------------------------------ the tiny quantized model

def fnv1a64(b):
    h = 0xCBF29CE484222325
    for c in b:
        h ^= c
        h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def tiny_model(out_dir, rng):
    d, L, ffn, hd, V = 256, 2, 32, 32, 16
    mats = {  # name: (rows, row length, type)
        "token_embd.weight": (V, d, "Q8_0"),
        "output.weight": (V, d, "Q6_K"),
        "blk.0.attn_q.weight": (hd, d, "Q2_K"), "blk.0.attn_k.weight": (hd, d, "Q3_K"), "blk.0.attn_v.weight": (hd, d, "Q4_K"),
        "blk.0.attn_output.weight": (d, hd, "Q4_0"), "blk.0.ffn_gate.weight": (ffn, d, "Q5_K"),
        "blk.0.ffn_up.weight": (ffn, d, "IQ4_XS"), "blk.0.ffn_down.weight": (d, ffn, "Q4_1"),
        "blk.1.attn_q.weight": (hd, d, "Q5_0"), "blk.1.attn_k.weight": (hd, d, "F16"), "blk.1.attn_v.weight": (hd, d, "BF16"),
        "blk.1.attn_output.weight": (d, hd, "IQ4_NL"), "blk.1.ffn_gate.weight": (ffn, d, "Q6_K"),
        "blk.1.ffn_up.weight": (ffn, d, "Q5_1"), "blk.1.ffn_down.weight": (d, ffn, "Q8_0"),
    }
    path = os.path.join(out_dir, "tiny_llama_quant.gguf")
    w = gguf.GGUFWriter(path, "llama")
    w.add_name("tiny quantized llama (tools/ref/make_quant_golden.py)")
    w.add_uint32("llama.vocab_size", V)
    w.add_uint32("llama.context_length", 64)
    w.add_uint32("llama.embedding_length", d)
    w.add_uint32("llama.block_count", L)
    w.add_uint32("llama.feed_forward_length", ffn)
    w.add_uint32("llama.attention.head_count", 1)
    w.add_uint32("llama.attention.head_count_kv", 1)
    w.add_uint32("llama.attention.key_length", hd)
    w.add_uint32("llama.attention.value_length", hd)
    w.add_uint32("llama.rope.dimension_count", hd)
    w.add_float32("llama.rope.freq_base", 10000.0)
    w.add_float32("llama.attention.layer_norm_rms_epsilon", 1e-5)
    ref = []
    names = ["token_embd.weight"]
    for i in range(L):
        names += [f"blk.{i}.attn_norm.weight"] + [f"blk.{i}.{k}.weight" for k in
                                                 ["attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm", "ffn_gate", "ffn_up", "ffn_down"]]
    names += ["output_norm.weight", "output.weight"]
    for name in names:
        if name.endswith("norm.weight"):
            v = (1.0 + 0.1 * rng.standard_normal(d)).astype(np.float32)
            w.add_tensor(name, v)
            ref.append((name, v))
            continue
        rows, n, tname = mats[name]
        if tname in CAN_QUANTIZE:
            raw = quantize((rng.standard_normal((rows, n)) * 0.05).astype(np.float32), tname)
        else:  # random blocks with model-like scales
            bs, ts = GGML_QUANT_SIZES[Q[tname]]
            raw = rng.integers(0, 256, size=(rows * n // bs, ts), dtype=np.uint16).astype(np.uint8)
            for off in HALF_FIELDS[tname]:
                raw[:, off:off + 2] = rng.uniform(1e-3, 1e-2, len(raw)).astype(np.float16).view(np.uint8).reshape(-1, 2)
            raw = raw.reshape(rows, -1)
        w.add_tensor(name, raw, raw_dtype=Q[tname])
        ref.append((name, dequant(raw, tname)))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with open(os.path.join(out_dir, "tiny_llama_quant.ref"), "w") as f:
        f.write("# name elements fnv1a64(float32 LE bytes of gguf.quants.dequantize, ggml row order) first_value\n")
        for name, v in ref:
            v = np.ascontiguousarray(v, dtype="<f4")
            f.write(f"{name} {v.size} {fnv1a64(v.tobytes()):016x} {float(v.flat[0]).hex()}\n")
    return path


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="tests/data/quants")
    ap.add_argument("--real-dir", default="/work/cache/real/models")
    ap.add_argument("--no-real", action="store_true", help="skip the rows cut from the real files")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    if not a.no_real:
        for f in REAL_FILES:
            if not os.path.exists(os.path.join(a.real_dir, f)):
                sys.exit(f"{os.path.join(a.real_dir, f)} is missing (pass --real-dir DIR or --no-real)")
    total = 0
    for k, tname in enumerate(TYPES):
        rng = np.random.default_rng(1000 + k)
        bs = GGML_QUANT_SIZES[Q[tname]][0] if tname != "Q8_K" else 256
        n = 256 if bs <= 32 else 512
        cases = []
        if tname in CAN_QUANTIZE:
            cases.append(("quantized", quantize(float_rows(rng, 6, n), tname)))
        cases.append(("random", random_rows(rng, tname, 3, n)))
        if not a.no_real:
            cases += real_cases(a.real_dir, tname)
        path = os.path.join(a.out, f"{tname}.bin")
        write_type(path, tname, cases)
        total += os.path.getsize(path)
        print(f"{tname:7s} {len(cases)} cases: {', '.join(c[0] for c in cases)} ({os.path.getsize(path)} bytes)")
    p = tiny_model(a.out, np.random.default_rng(7))
    total += os.path.getsize(p) + os.path.getsize(p.replace(".gguf", ".ref"))
    print(f"tiny model: {p} ({os.path.getsize(p)} bytes); total {total} bytes; gguf {importlib.metadata.version('gguf')}")


if __name__ == "__main__":
    main()
