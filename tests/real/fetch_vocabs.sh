#!/usr/bin/env bash
# Fetches llama.cpp's test vocabularies (models/ggml-vocab-NAME.gguf, with the .inp/.out test
# vectors) from PyPI: they ship in the llama-cpp-python sdist under vendor/llama.cpp/models.
# Only the seven the tests use are unpacked, into ${FK_REAL_CACHE:-$HOME/.cache/fusekit-real}/vocabs.
#
# Usage: tests/real/fetch_vocabs.sh    prints FK_REAL_VOCABS=<folder> on stdout
#                                      (eval "$(tests/real/fetch_vocabs.sh)"); progress on stderr
# Idempotent: a folder holding every vocabulary the tests need is not fetched again. Extra pip
# options (an index, a proxy): FK_REAL_PIP_ARGS. Needs python3 with pip.
set -euo pipefail

CACHE=${FK_REAL_CACHE:-$HOME/.cache/fusekit-real}
PKG=llama-cpp-python==0.3.36
SDIST=llama_cpp_python-0.3.36.tar.gz
NAMES="llama-bpe qwen2 gpt-neox mpt falcon starcoder gpt-2"
OUT=$CACHE/vocabs

say() { echo "fetch_vocabs: $*" >&2; }
die() { echo "fetch_vocabs: error: $*" >&2; exit 1; }

complete() {
    for n in $NAMES; do [ -f "$OUT/ggml-vocab-$n.gguf" ] || return 1; done
}

if complete; then
    say "$OUT: present"
else
    PY=$(command -v python3 || true)
    [ -n "$PY" ] || die "python3 is missing: it runs pip"
    "$PY" -m pip --version >/dev/null 2>&1 || die "pip is missing (Debian: apt-get install python3-pip)"
    mkdir -p "$CACHE/sdist" "$OUT"
    if [ ! -f "$CACHE/sdist/$SDIST" ]; then
        say "pip download $PKG (sdist, about 77 MB)"
        # shellcheck disable=SC2086
        "$PY" -m pip download --no-deps --no-binary :all: --disable-pip-version-check -q -d "$CACHE/sdist" \
            ${FK_REAL_PIP_ARGS:-} "$PKG" >&2 || die "pip download $PKG failed (network, or an index: set FK_REAL_PIP_ARGS)"
    fi
    [ -f "$CACHE/sdist/$SDIST" ] || die "no $CACHE/sdist/$SDIST after pip download"
    # python's tarfile: only the vocabulary files, flattened into $OUT
    "$PY" - "$CACHE/sdist/$SDIST" "$OUT" $NAMES <<'EOF' || die "cannot unpack the vocabularies from $CACHE/sdist/$SDIST"
import os, sys, tarfile
src, out, names = sys.argv[1], sys.argv[2], sys.argv[3:]
want = {f"ggml-vocab-{n}.gguf{x}" for n in names for x in ("", ".inp", ".out")}
with tarfile.open(src) as t:
    for m in t.getmembers():
        base = os.path.basename(m.name)
        if m.isfile() and "/vendor/llama.cpp/models/" in m.name and base in want:
            data = t.extractfile(m).read()
            with open(os.path.join(out, base + ".tmp"), "wb") as f:
                f.write(data)
            os.replace(os.path.join(out, base + ".tmp"), os.path.join(out, base))
EOF
    complete || die "the sdist lacks some of: $NAMES"
    say "$OUT: unpacked from $SDIST"
fi
echo "FK_REAL_VOCABS=$OUT"
