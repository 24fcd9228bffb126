#!/bin/sh
# llama.cpp for the comparisons in bench/ (issues 15 and 20), at development time only: builds
# llama-perplexity, llama-bench and llama-quantize from the llama-cpp-python sdist on PyPI (its
# vendor/llama.cpp; nothing of it is committed), then writes a BF16 and a Q8_0 copy of each GGUF
# file given (llama-quantize --allow-requantize: the file's weights decoded, then stored again),
# so that one model is measured at bf16, Q8_0 and its own quantization.
#
# usage: sh bench/llama_cpp.sh DIR [FILE.gguf...]
#   DIR/llama.cpp/build/bin/   the tools          DIR/NAME-BF16.gguf, DIR/NAME-Q8_0.gguf   the copies
# env:   LLAMA_CPP_PYTHON (0.3.36: the sdist's version)  SDIST (a downloaded sdist, else pip download)
#        NATIVE (0: see below; 1 builds with GGML_NATIVE)
# Built without -march=native but with every x86 extension ggml has a switch for (up to AVX512-BF16
# and VNNI) that this CPU has: on the Xeon with AMX this project measures on, GGML_NATIVE turns on ggml's AMX-INT8
# kernels and llama-perplexity (0.3.36) dies with SIGILL in tinygemm_kernel_amx<block_q8_0> (1 and
# 2 threads, Q8_0 and Q4_K_M files; BF16 files, which that path does not take, run).
# Needs cmake, g++ and pip (Debian: cmake, g++, python3-pip).
set -e
DIR=$1; shift
VER=${LLAMA_CPP_PYTHON:-0.3.36}
mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)
B="$DIR/llama.cpp/build/bin"
if [ ! -x "$B/llama-perplexity" ] || [ ! -x "$B/llama-bench" ] || [ ! -x "$B/llama-quantize" ]; then
  S=${SDIST:-}
  if [ -z "$S" ]; then
    pip download --no-deps --no-binary :all: -d "$DIR" "llama-cpp-python==$VER" >&2
    S="$DIR/llama_cpp_python-$VER.tar.gz"
  fi
  rm -rf "$DIR/src" && mkdir -p "$DIR/src"
  tar xzf "$S" -C "$DIR/src"
  rm -rf "$DIR/llama.cpp" && mv "$DIR/src/llama_cpp_python-$VER/vendor/llama.cpp" "$DIR/llama.cpp" && rm -rf "$DIR/src"
  if [ "${NATIVE:-0}" = 1 ]; then
    flags="-DGGML_NATIVE=ON"
  else
    # each of ggml's x86 switches on exactly where /proc/cpuinfo lists the extension (AMD's Zen 4
    # has AVX512-VNNI but not AVX-VNNI: a build with every switch on dies with SIGILL there)
    has() { grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' | grep -qx "$1" && echo ON || echo OFF; }
    flags="-DGGML_NATIVE=OFF -DGGML_AVX=$(has avx) -DGGML_AVX2=$(has avx2) -DGGML_FMA=$(has fma) -DGGML_F16C=$(has f16c)
           -DGGML_BMI2=$(has bmi2) -DGGML_AVX512=$(has avx512f) -DGGML_AVX512_VBMI=$(has avx512vbmi)
           -DGGML_AVX512_VNNI=$(has avx512_vnni) -DGGML_AVX512_BF16=$(has avx512_bf16) -DGGML_AVX_VNNI=$(has avx_vnni)"
  fi
  # shellcheck disable=SC2086
  cmake -S "$DIR/llama.cpp" -B "$DIR/llama.cpp/build" -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF $flags >&2
  cmake --build "$DIR/llama.cpp/build" -j "$(nproc)" --target llama-perplexity llama-bench llama-quantize >&2
fi
for F in "$@"; do
  name=$(basename "$F" .gguf)
  for t in BF16 Q8_0; do
    out="$DIR/$name-$t.gguf"
    if [ ! -s "$out" ]; then
      "$B/llama-quantize" --allow-requantize "$F" "$out.tmp" "$t" > "$DIR/$name-$t.log" 2>&1 || { cat "$DIR/$name-$t.log" >&2; exit 1; }
      mv "$out.tmp" "$out"
    fi
    echo "$out"
  done
done
echo "LLAMA_PERPLEXITY=$B/llama-perplexity"
