#!/bin/sh
# Every example in every command's help parses: each "examples:" line of fusekit CMD --help (and
# of each subcommand's help) is run with FUSEKIT_PARSE_ONLY=1, which reads and checks the options
# (names, values, ranges, the rows whose help says required) and stops before any work; every
# command the program lists has two examples. A bad line makes the test fail naming it.
# Usage: sh tests/test_help_examples.sh PATH/TO/fusekit
set -u
F=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
fail() { echo "test_help_examples: FAIL: $*" >&2; exit 1; }
n=0
check() {  # the help of "$@"
  ex=$("$F" "$@" --help | awk '/^examples:$/ { c = 1; next } c && /^  fusekit / { sub(/^  /, ""); print }')
  [ "$(printf '%s\n' "$ex" | grep -c '^fusekit ')" -ge 2 ] || fail "fusekit $* --help has fewer than two examples"
  printf '%s\n' "$ex" | while IFS= read -r line; do
    out=$(eval "FUSEKIT_PARSE_ONLY=1 \"$F\" ${line#fusekit }" 2>&1) ||
      { echo "test_help_examples: FAIL: '$line' does not parse: $out" >&2; exit 1; }
  done || exit 1
  n=$((n + 1))
}
# a line that does not parse is caught (the check can fail)
FUSEKIT_PARSE_ONLY=1 "$F" prune --model m --data d --method flap --budget 1.5 -o o > /dev/null 2>&1 && fail "a bad --budget parsed"
FUSEKIT_PARSE_ONLY=1 "$F" prune --data d --method flap -o o > /dev/null 2>&1 && fail "a missing --model parsed"
for v in $("$F" --help | awk '/^commands:/ { c = 1; next } c && /^  [a-z]/ { print $1 }'); do
  subs=$("$F" "$v" --help | awk '/^subcommands:/ { c = 1; next } c && /^  [a-z]/ { print $1 }')
  if [ -n "$subs" ]; then
    for s in $subs; do
      case "$v $s" in "data info") continue ;; esac  # a positional FILE only
      check "$v" "$s"
    done
  else
    check "$v"
  fi
done
echo "test_help_examples: passed (every command's examples parse)"
