#!/bin/sh
# Every fusekit command the README and docs/*.md show in a code block parses: each line (joined
# over trailing backslashes; a leading "$ " or "build/" and a trailing "# comment" taken off) is
# run with FUSEKIT_PARSE_ONLY=1, which reads and checks the options (names, values, ranges,
# required rows) and stops before any work, so a renamed or removed option, or a value out of
# range, in the documentation fails the suite. Lines that elide options with "..." are skipped
# (and counted); a recipe run (fusekit run) is checked by test_recipe instead.
# Usage: sh tests/test_docs_commands.sh PATH/TO/fusekit DOC.md...
set -u
F=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
shift
n=0 skipped=0 bad=0
FK_REAL_SMOLLM2=smollm2.gguf FK_REAL_GEMMA3=gemma3.gguf  # the real-model paths the README's commands name
tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
for doc in "$@"; do
  awk '/^```/ { inb = !inb; next }
       inb { line = cont ? cont " " $0 : $0; cont = "";
             if (line ~ /\\$/) { sub(/\\$/, "", line); cont = line; next }
             if (line ~ /(^|\$ |build\/)fusekit [a-z]/) print line }' "$doc" > "$tmp"
  while IFS= read -r line; do
    cmd=$(printf '%s\n' "$line" | sed -e 's/^\$ //' -e 's/^build\///' -e 's/[[:space:]]*#[^"]*$//')
    case "$cmd" in
      *...*) skipped=$((skipped + 1)); continue ;;
      "fusekit run "*) skipped=$((skipped + 1)); continue ;;
      "fusekit "*) ;;
      *) continue ;;  # a pipe into fusekit etc.: its own line is checked where it stands alone
    esac
    out=$(eval "FUSEKIT_PARSE_ONLY=1 \"$F\" ${cmd#fusekit }" 2>&1) ||
      { echo "test_docs_commands: FAIL: $doc: '$cmd' does not parse: $out" >&2; bad=$((bad + 1)); }
    n=$((n + 1))
  done < "$tmp"
done
[ "$bad" -eq 0 ] || exit 1
[ "$n" -ge 10 ] || { echo "test_docs_commands: only $n commands found" >&2; exit 1; }
# the check can fail: an option no verb has
FUSEKIT_PARSE_ONLY=1 "$F" train --data d -o o --no-such-option > /dev/null 2>&1 && { echo "test_docs_commands: a bad option parsed" >&2; exit 1; }
echo "test_docs_commands: passed ($n documented commands parse; $skipped with elided options or recipes skipped)"
