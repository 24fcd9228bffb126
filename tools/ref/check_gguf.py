#!/usr/bin/env python3
"""Independent check of a GGUF file with the `gguf` PyPI package (llama.cpp's gguf-py).

Parses the file with gguf.GGUFReader -- no fusekit code involved -- and prints every
key with its type and a value summary and every tensor with its ggml type, shape
(ggml order, dims[0] fastest), byte count, offset and a SHA-256 of its data.
Exits 1 when the package cannot parse the file.

Run:  tools/ref/.venv/bin/python tools/ref/check_gguf.py FILE.gguf [--json] [--max N]
  --json   print one JSON object instead: {"version", "alignment", "kv": {key: {"type",
           "elem_type", "value"}}, "tensors": [{"name", "type", "shape", "n_bytes",
           "offset", "sha256", "values"}]} with full values (strings as text, bytes that
           are not UTF-8 as \\udcXX surrogates; f32/f16/bf16 tensor values as floats)
  --max N  array elements shown per key in the text listing (default 8)
"""

import argparse
import hashlib
import json
import sys

import numpy as np

try:
    from gguf import GGUFReader, GGUFValueType, GGMLQuantizationType
except ImportError as e:  # pragma: no cover
    sys.exit(f"check_gguf: the gguf package is missing ({e}); pip install gguf into tools/ref/.venv")


def text(part):
    return bytes(part.tobytes()).decode("utf-8", errors="surrogateescape")


def elem_type(f):
    """Element type of an array, from its header (parts: key length, key, type, elem type, count, ...);
    f.types lacks it when the array is empty."""
    return GGUFValueType(int(f.parts[3][0])) if f.types[0] == GGUFValueType.ARRAY else f.types[0]


def field_value(f):
    """The field's value as Python objects: scalars, str, or lists of them (None: nested array)."""
    t = f.types[0]
    if t == GGUFValueType.STRING:
        return text(f.parts[-1])
    if t != GGUFValueType.ARRAY:
        return f.parts[-1].tolist()[0]
    if elem_type(f) == GGUFValueType.ARRAY:  # gguf-py flattens nested arrays; not summarised
        return None
    if elem_type(f) == GGUFValueType.STRING:
        return [text(f.parts[i]) for i in f.data]
    return [v for i in f.data for v in f.parts[i].tolist()]


def type_str(f):
    t = f.types[0]
    if t == GGUFValueType.ARRAY:
        return "[" + (",".join(x.name for x in f.types[1:]) or elem_type(f).name) + "]"
    return t.name


def summary(v, n):
    if isinstance(v, list):
        shown = ", ".join(repr(x) for x in v[:n])
        return f"[{shown}{', ...' if len(v) > n else ''}] ({len(v)} elements)"
    return repr(v)


def tensor_values(t):
    if t.tensor_type == GGMLQuantizationType.F32:
        return np.asarray(t.data, dtype=np.float32).ravel().tolist()
    if t.tensor_type == GGMLQuantizationType.F16:
        return np.asarray(t.data, dtype=np.float16).astype(np.float32).ravel().tolist()
    if t.tensor_type == GGMLQuantizationType.BF16:
        raw = np.frombuffer(np.asarray(t.data).tobytes(), dtype="<u2").astype(np.uint32) << 16
        return raw.view(np.float32).tolist()
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("path")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--max", type=int, default=8)
    args = ap.parse_args()
    try:
        r = GGUFReader(args.path)
        fields = [(k, f, field_value(f)) for k, f in r.fields.items()]
        tensors = []
        for t in r.tensors:
            raw = np.asarray(t.data).tobytes()
            tensors.append({"name": t.name, "type": t.tensor_type.name, "shape": [int(x) for x in t.shape],
                            "n_bytes": int(t.n_bytes), "offset": int(t.data_offset),
                            "sha256": hashlib.sha256(raw).hexdigest(), "values": tensor_values(t)})
    except Exception as e:  # any parse failure is a failed check
        print(f"check_gguf: {args.path}: gguf cannot parse the file: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    version = fields[0][2]
    if args.json:
        kv = {k: {"type": f.types[0].name, "elem_type": elem_type(f).name, "value": v}
              for k, f, v in fields if not k.startswith("GGUF.")}
        json.dump({"version": version, "alignment": int(r.alignment), "data_offset": int(r.data_offset),
                   "kv": kv, "tensors": tensors}, sys.stdout, indent=1)
        print()
        return 0
    print(f"{args.path}: GGUF v{version}, {len(fields) - 3} keys, {len(tensors)} tensors, "
          f"alignment {r.alignment}, data at {r.data_offset}")
    for k, f, v in fields:
        if k.startswith("GGUF."):
            continue
        print(f"  {k}: {type_str(f)} = {summary(v, args.max) if v is not None else '(nested array)'}")
    for t in tensors:
        print(f"  tensor {t['name']}: {t['type']} shape {t['shape']} ({t['n_bytes']} bytes at {t['offset']}) "
              f"sha256 {t['sha256'][:16]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
