#!/bin/sh
# Perplexity parity with llama.cpp (issue 7): each model folder is exported to GGUF, scored by
# llama.cpp's llama-perplexity and by `fusekit eval --protocol llama-perplexity` on the same
# text with the same context; prints one JSON line per model and dtype.
#
# usage: LLAMA_PERPLEXITY=/path/to/llama-perplexity sh bench/llama_ppl.sh BUILD TEXT CTX MODEL_DIR...
# (llama.cpp is not a dependency of fusekit: build its llama-perplexity target yourself.)
set -e
BUILD=$1; TEXT=$2; CTX=$3; shift 3
F="$BUILD/fusekit"
LP=${LLAMA_PERPLEXITY:?set LLAMA_PERPLEXITY to llama.cpp\'s llama-perplexity binary}
D=$(mktemp -d)
trap 'rm -rf "$D"' EXIT
for M in "$@"; do
  for T in ${TYPES:-f32 f16}; do
    "$F" export --model "$M" --gguf "$D/m.gguf" --type "$T" --force > "$D/export.json"
    FK=$("$F" eval --model "$M" --data "$TEXT" --protocol llama-perplexity --seq "$CTX" | tail -1)
    "$LP" -m "$D/m.gguf" -f "$TEXT" -c "$CTX" -b "$CTX" -t "${THREADS:-2}" > "$D/lp.txt" 2>&1 || { cat "$D/lp.txt" >&2; exit 1; }
    LPV=$(grep -o 'Final estimate: PPL = [0-9.]*' "$D/lp.txt" | grep -o '[0-9.]*$')
    CH=$(grep -o 'calculating perplexity over [0-9]* chunks' "$D/lp.txt" | grep -o '[0-9][0-9]*')
    ARCH=$(grep -o '"arch":"[a-z0-9]*"' "$D/export.json" | head -1 | cut -d'"' -f4)
    python3 - "$M" "$T" "$ARCH" "$FK" "$LPV" "$CH" <<'PY'
import json, sys
m, t, arch, fk, lp, ch = sys.argv[1:7]
fk = json.loads(fk)
print(json.dumps({"bench": "llama_ppl", "model": m, "gguf_type": t, "arch": arch, "n_ctx": fk["n_ctx"],
                  "chunks_fusekit": fk["chunks"], "chunks_llama_cpp": int(ch), "ppl_fusekit": fk["ppl"],
                  "ppl_llama_cpp": float(lp), "rel_diff": round(float(lp) / fk["ppl"] - 1, 7)}))
PY
  done
done
