#!/bin/sh
# make install's result, checked from a temporary prefix: cmake --install BUILD --prefix TMP (what
# make install PREFIX=TMP runs) puts the program, libfusekit.a, the headers, fusekit.pc, the man
# page and bash/zsh completion in place; a program compiled against the installed library with
# pkg-config runs and computes; the man page renders without a troff warning and has a section for
# every command the program lists; the completion scripts complete commands, subcommands, options
# and option choices as the program's help states them.
# Usage: sh tests/test_install.sh BUILD_DIR SOURCE_DIR
set -u
B=$1 S=$2
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
fail() { echo "test_install: FAIL: $*" >&2; exit 1; }
ok() { echo "test_install: ok: $*"; }

cmake --install "$B" --prefix "$T/p" > "$T/install.log" 2>&1 || { cat "$T/install.log"; fail "cmake --install"; }
P=$T/p
LIBDIR=$(dirname "$(find "$P" -name libfusekit.a)")
for f in bin/fusekit include/fusekit/fusekit.h include/fusekit/model.h share/man/man1/fusekit.1 \
         share/bash-completion/completions/fusekit share/zsh/site-functions/_fusekit; do
  [ -e "$P/$f" ] || fail "$f not installed"
done
[ -f "$LIBDIR/libfusekit.a" ] && [ -f "$LIBDIR/pkgconfig/fusekit.pc" ] || fail "library or fusekit.pc not installed"
V=$("$P/bin/fusekit" --version) || fail "installed fusekit --version"
[ "$V" = "$("$B/fusekit" --version)" ] || fail "installed program says '$V'"
ok "installed files; $V"

# a program of one's own against the installed library (the pkg-config file is relocatable)
cat > "$T/prog.c" <<'C'
#include "fusekit/fusekit.h"
#include <stdio.h>
#include <string.h>
int main(void) {
    fk_precision p;
    if (fk_precision_parse("auto", &p) != FK_OK || strcmp(fk_precision_name(p), "auto") != 0) return 1;
    if (fk_precision_parse("fp16", &p) == FK_OK || !strstr(fk_last_error(), "fp16")) return 2;
    fk_config c;
    fk_config_llama(&c, 256, 64, 2, 4, 2, 176, 64);
    fk_model m;
    if (fk_model_init(&m, &c) != FK_OK) return 3;
    printf("%lld\n", (long long)fk_model_num_params(&m));
    fk_model_free(&m);
    return 0;
}
C
export PKG_CONFIG_PATH="$LIBDIR/pkgconfig"
FLAGS=$(pkg-config --cflags --libs fusekit) || fail "pkg-config --cflags --libs fusekit"
cc -std=c11 "$T/prog.c" $FLAGS -o "$T/prog" 2> "$T/cc.log" || { cat "$T/cc.log"; fail "compiling against the installed library"; }
N=$("$T/prog") || fail "the program linked against the installed library exited $?"
# the same model's parameter count from the build tree's program (fusekit info on a config)
[ "$N" -gt 0 ] || fail "parameter count '$N'"
ok "pkg-config build and run ($N parameters)"

# the man page: no troff warnings (groff -ww, -k for UTF-8), a section per command
if command -v groff > /dev/null; then
  W=$(groff -k -man -Tutf8 -ww -z "$P/share/man/man1/fusekit.1" 2>&1)
  [ -z "$W" ] || fail "troff warnings: $W"
  groff -k -man -Tutf8 "$P/share/man/man1/fusekit.1" 2>/dev/null | sed 's/.\x08//g' > "$T/man.txt"
  for v in $("$B/fusekit" --help | awk '/^commands:/ { c = 1; next } c && /^  [a-z]/ { print $1 }'); do
    grep -q "^   fusekit $v\$" "$T/man.txt" || fail "man page has no section for $v"
  done
  grep -q -- '--method NAME' "$T/man.txt" || fail "man page lacks prune's options"
  grep -q '^   fusekit tokenizer train$' "$T/man.txt" || fail "man page lacks tokenizer train"
  ok "man page renders cleanly, every command has its section"
else
  echo "test_install: skipped the man page rendering: no groff (Debian: groff-base)"
fi

# bash completion (the installed script, against the installed program)
cat > "$T/comp.bash" <<'SH'
PATH=$1/bin:$PATH
source "$1/share/bash-completion/completions/fusekit"
c() { COMP_WORDS=("$@"); COMP_CWORD=$((${#COMP_WORDS[@]} - 1)); _fusekit; echo "${COMPREPLY[*]}"; }
expect() { got=$(c "${@:2}"); [ "$got" = "$1" ] || { echo "completing '${*:2}': got '$got', expected '$1'"; exit 1; }; }
expect "prune" fusekit pru
expect "--method" fusekit prune --me
expect "magnitude flap shortgpt experts" fusekit prune --method ''
expect "train encode decode info convert" fusekit tokenizer ''
expect "bpe spm" fusekit tokenizer train --kind ''
expect "fp32 bf16 auto" fusekit train --precision ''
expect "" fusekit train --steps ''
expect "" fusekit train --lr ''
expect "" fusekit generate --prompt ''
expect "approx" fusekit fuse --vmap a
mkdir -p "$2/dir" && : > "$2/dir/model.gguf"
expect "$2/dir/model.gguf" fusekit eval --model "$2/dir/mo"
expect "--force" fusekit prune --for
SH
command -v bash > /dev/null || fail "no bash"
bash "$T/comp.bash" "$P" "$T" || fail "bash completion"
ok "bash completion"

# zsh completion, where zsh is installed: compadd and _files stubbed to print what they are given
if command -v zsh > /dev/null; then
  cat > "$T/comp.zsh" <<'SH'
path=($1/bin $path)
compadd() { if [[ $1 == -a ]]; then print -r -- ${(P)2}; else print -r -- "$@"; fi }
_files() { print -r -- FILES }
source $1/share/zsh/site-functions/_fusekit 2>/dev/null
c() { words=("$@"); CURRENT=${#words}; PREFIX=${words[-1]}; _fusekit }
expect() { local got; got=$(c "${@:2}" | tr '\n' ' ' | sed 's/ $//'); [[ $got == ${~1} ]] || { print "zsh completing '${@:2}': got '$got', expected '$1'"; exit 1 } }
expect "*prune*" fusekit pru
expect "magnitude flap shortgpt experts" fusekit prune --method ''
expect "train encode decode info convert" fusekit tokenizer ''
expect "bpe spm" fusekit tokenizer train --kind ''
expect "fp32 bf16 auto" fusekit train --precision ''
expect "" fusekit train --steps ''
expect "FILES" fusekit eval --model ''
expect "FILES" fusekit run --set X=1 -o ''
expect "" fusekit generate --prompt ''
expect "*--method*" fusekit prune --
SH
  zsh -f "$T/comp.zsh" "$P" || fail "zsh completion"
  ok "zsh completion"
else
  echo "test_install: skipped zsh completion: no zsh"
fi
echo "test_install: passed"
