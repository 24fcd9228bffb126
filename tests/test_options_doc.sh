#!/bin/sh
# docs/options.md is what tools/gen_options_doc.sh prints for this build's program: an option
# added, renamed or documented differently without regenerating it fails here, with the diff.
# Usage: sh tests/test_options_doc.sh PATH/TO/fusekit
set -u
D=$(cd "$(dirname "$0")/.." && pwd)
T=$(mktemp)
trap 'rm -f "$T"' EXIT
sh "$D/tools/gen_options_doc.sh" "$1" > "$T" || { echo "test_options_doc: tools/gen_options_doc.sh failed"; exit 1; }
if ! diff -u "$D/docs/options.md" "$T"; then
  echo "test_options_doc: docs/options.md is out of date: sh tools/gen_options_doc.sh build/fusekit > docs/options.md"
  exit 1
fi
echo "test_options_doc: docs/options.md matches the program's help ($(grep -c '^## ' "$T") commands)"
