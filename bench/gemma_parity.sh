#!/bin/sh
# Gemma 3 against llama.cpp on the real gemma-3-270m-q4_k_m.gguf (issue 15, item 4). Prints JSON
# lines (bench/last_gemma_parity.jsonl holds the last run):
#   gemma_tok   per corpus: fusekit's tokenizer (the file's 262,144-piece vocabulary) against
#               llama-tokenize (--no-bos --no-parse-special): ids equal, fusekit's MB/s, the
#               tokenizer's load time (fusekit tokenizer info) and llama-tokenize's wall time
#               (load, encode and printing)
#   gemma_ppl   llama.cpp's perplexity protocol (same text, context, threads): fusekit eval
#               --protocol llama-perplexity on the Q4_K_M file, llama-perplexity on the same
#               file, and llama-perplexity on fusekit's F32 export of it (what fusekit computes,
#               run by llama.cpp: llama.cpp's quantized matmuls round the activations to 8 bits,
#               the F32 file does not); fusekit's tokens/s and llama-perplexity's (context / its
#               "seconds per pass" of the first chunk)
#   gemma_greedy  a greedy continuation from fusekit (Q4_K_M file) and from llama-simple on the
#               Q4_K_M file and on the F32 export, and whether they agree
#
# usage: LLAMA_BIN=DIR sh bench/gemma_parity.sh BUILD GEMMA_GGUF TEXT CTX CORPUS...
#   LLAMA_BIN: a folder with llama.cpp's llama-tokenize, llama-perplexity and llama-simple (not a
#   dependency of fusekit; build them yourself). THREADS (default 2).
set -e
BUILD=$1; G=$2; TEXT=$3; CTX=$4; shift 4
F="$BUILD/fusekit"
L=${LLAMA_BIN:?set LLAMA_BIN to the folder holding llama.cpp\'s binaries}
TH=${THREADS:-2}
D=$(mktemp -d)
trap 'rm -rf "$D"' EXIT
now() { python3 -c 'import time; print(time.time())'; }

T0=$(now); "$F" tokenizer info --tokenizer "$G" > /dev/null; T1=$(now)
for C in "$@"; do
  "$F" tokenize --tokenizer "$G" --data "$C" -o "$D/c.tok" > "$D/tok.json"
  "$F" tokenizer encode --tokenizer "$G" --file "$C" | tr -s ' \n' '\n\n' | grep . > "$D/f.ids"
  A=$(now)
  "$L/llama-tokenize" -m "$G" -f "$C" --ids --no-bos --no-escape --no-parse-special --log-disable 2>/dev/null > "$D/l.raw"
  B=$(now)
  tr -d '[]' < "$D/l.raw" | tr -s ', \n' '\n\n\n' | grep . > "$D/l.ids"
  EQ=$(cmp -s "$D/f.ids" "$D/l.ids" && echo true || echo false)
  python3 - "$C" "$(cat "$D/tok.json")" "$EQ" "$T0" "$T1" "$A" "$B" <<'PY'
import json, sys
c, tok, eq, t0, t1, a, b = sys.argv[1:8]
tok = json.loads(tok)
print(json.dumps({"bench": "gemma_tok", "corpus": c, "bytes": tok["bytes"], "tokens": tok["tokens"], "ids_equal_llama_cpp": eq == "true",
                  "mb_per_s_fusekit": round(tok["mb_per_s"], 2), "load_s_fusekit": round(float(t1) - float(t0), 3),
                  "wall_s_llama_tokenize": round(float(b) - float(a), 3)}))
PY
done

"$F" export --model "$G" --gguf "$D/f32.gguf" --type f32 > /dev/null
FK=$("$F" eval --model "$G" --data "$TEXT" --protocol llama-perplexity --seq "$CTX" --threads "$TH" | tail -1)
"$L/llama-perplexity" -m "$G" -f "$TEXT" -c "$CTX" -b "$CTX" -t "$TH" > "$D/lq.txt" 2>&1
"$L/llama-perplexity" -m "$D/f32.gguf" -f "$TEXT" -c "$CTX" -b "$CTX" -t "$TH" > "$D/lf.txt" 2>&1
LQ=$(grep -o 'Final estimate: PPL = [0-9.]*' "$D/lq.txt" | grep -o '[0-9.]*$')
LF=$(grep -o 'Final estimate: PPL = [0-9.]*' "$D/lf.txt" | grep -o '[0-9.]*$')
SQ=$(grep -o '[0-9.]* seconds per pass' "$D/lq.txt" | grep -o '^[0-9.]*' || true)
python3 - "$FK" "$LQ" "$LF" "$TH" "${SQ:-0}" <<'PY'
import json, sys
fk, lq, lf, th, spp = sys.argv[1:6]
fk = json.loads(fk)
print(json.dumps({"bench": "gemma_ppl", "n_ctx": fk["n_ctx"], "chunks": fk["chunks"], "threads": int(th), "ppl_fusekit_q4_k_m": fk["ppl"],
                  "ppl_llama_cpp_q4_k_m": float(lq), "ppl_llama_cpp_fusekit_f32_export": float(lf),
                  "rel_diff_q4_k_m": round(float(lq) / fk["ppl"] - 1, 7), "rel_diff_f32_export": round(float(lf) / fk["ppl"] - 1, 7),
                  "tokens_per_s_fusekit": fk["tokens_per_s"], "tokens_per_s_llama_cpp_q4_k_m": round(fk["n_ctx"] / float(spp), 1) if float(spp) else None}))
PY

P="The capital of France is"
"$F" generate --model "$G" --prompt "$P" --greedy -n 24 --threads "$TH" 2>/dev/null > "$D/g.txt"
"$L/llama-simple" -m "$G" -n 24 "$P" 2>/dev/null | sed 's/^<bos>//' > "$D/sq.txt"
"$L/llama-simple" -m "$D/f32.gguf" -n 24 "$P" 2>/dev/null | sed 's/^<bos>//' > "$D/sf.txt"
python3 - "$D/g.txt" "$D/sq.txt" "$D/sf.txt" <<'PY'
import json, sys
g, q, f = (open(p, encoding="utf-8").read().strip() for p in sys.argv[1:4])
print(json.dumps({"bench": "gemma_greedy", "new_tokens": 24, "fusekit": g, "llama_cpp_q4_k_m": q, "llama_cpp_fusekit_f32_export": f,
                  "equal_q4_k_m": g == q, "equal_f32_export": g == f}, ensure_ascii=False))
PY
