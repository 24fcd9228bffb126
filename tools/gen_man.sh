#!/bin/sh
# Writes fusekit(1), the man page, on stdout from the program's own help: `fusekit --help` for the
# command list, `fusekit CMD --help` for each command and `fusekit CMD SUB --help` for the
# subcommands of tokenizer and data, so the page says what the binary it was built with does.
# Usage: sh tools/gen_man.sh PATH/TO/fusekit > fusekit.1   (run by the build; installed by make install)
set -eu
F=${1:?usage: gen_man.sh PATH/TO/fusekit}
# a sanitizer build's program runs here too: its leak report is not this script's business
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0"
# help text as literal troff: backslashes escaped, '.' and "'" at a line's start neutralised,
# '-' as \- (an ASCII minus in every output device, so options can be copied)
esc() { sed -e 's/\\/\\e/g' -e "s/^\\([.']\\)/\\\\\\&\\1/" -e 's/-/\\-/g'; }
verbs() { "$F" --help | awk '/^commands:/ { c = 1; next } c && /^  [a-z]/ { print $1 }'; }
subs() { "$F" "$1" --help | awk '/^subcommands:/ { c = 1; next } c && /^  [a-z]/ { print $1 }'; }
block() {  # title, then the command line whose help it shows
  t=$1; shift
  printf '.SS "%s"\n.nf\n' "$t"
  "$@" --help 2>&1 | esc
  printf '.fi\n'
}
VERSION=$("$F" --version | awk '{ print $2 }')
cat <<HEAD
.TH FUSEKIT 1 "" "fusekit $VERSION" "User Commands"
.SH NAME
fusekit \\- knowledge fusion and redundancy folding for causal language models
.SH SYNOPSIS
.B fusekit
.I command
.RI [ options ]
.br
.B fusekit
.I command
.B \\-\\-help
.SH DESCRIPTION
fusekit fuses the knowledge of several pre\\-trained causal language models, with different
tokenizers and architectures, into one target model (FuseLLM's method), analyses the redundancy
inside a model and folds it away, healing what folding costs. It trains, evaluates, generates
with, imports and exports models itself (Hugging Face folders and GGUF files), without Python.
Results go to stdout as JSON lines; notes, progress and errors to stderr ("fusekit CMD: error: ...",
exit status 1; 2 for a usage error). Outputs are written under a temporary name and renamed when
complete; an existing output is replaced only with \\-\\-force.
.SH COMMANDS
.nf
HEAD
"$F" --help | awk '/^commands:/ { c = 1; next } c' | esc
printf '.fi\n'
for v in $(verbs); do
  block "fusekit $v" "$F" "$v"
  case "$v" in tokenizer|data) for s in $(subs "$v"); do block "fusekit $v $s" "$F" "$v" "$s"; done ;; esac
done
cat <<'TAIL'
.SH ENVIRONMENT
.TP
.B OMP_NUM_THREADS
threads when \-\-threads is 0 or not given; unset: one per physical core.
.TP
.B FUSEKIT_BF16_EMULATE
1: bf16 matrix products emulated (rounded operands through fp32 sgemm) instead of oneDNN.
.TP
.B ONEDNN_MAX_CPU_ISA
caps the instruction set oneDNN may use; AVX512_CORE_BF16 keeps it off AMX tiles, and
\-\-precision auto then computes in fp32.
.TP
.B FUSEKIT_PARSE_ONLY
1: a command reads and checks its options (names, values, ranges, the required ones) and exits 0
without doing anything; 2 and the error otherwise.
.TP
.B OPENBLAS_CORETYPE
OpenBLAS's kernels; when unset, fusekit selects the ones for the CPU itself.
.SH FILES
Model folders: config.json, model.safetensors (or shards with model.safetensors.index.json),
tokenizer.json, tokenizer_config.json; GGUF files; distribution stores (.fkd); token shards;
trainer_state.json and optimizer.safetensors in checkpoint\-N folders; recipe.resolved.yaml in
the output folders of fusekit run.
.SH EXIT STATUS
0 on success, 1 on an error, 2 on a usage error (unknown command or option, bad value).
.SH SEE ALSO
The README and docs/ of the fusekit source tree; llama.cpp(1), mergekit.
TAIL
