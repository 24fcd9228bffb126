#!/bin/sh
# Packs a CUDA build's test and bench programs with the shared libraries they need from this
# machine's Debian packages (not the CUDA ones: the GPU machine has its own toolkit) into
# .devcarry/pack.tar.xz, for tools/gpu_check.sh on a machine that has a GPU but not these packages.
#   sh tools/gpu_pack.sh [build-cuda]
set -eu
B=${1:-build-cuda}
rm -rf .devcarry && mkdir -p .devcarry/pack/lib
cp "$B/tests/test_gpu" "$B/fk_gpu_bench" "$B/fusekit" "$B/fk_store_diff" .devcarry/pack/
for p in .devcarry/pack/*; do
  [ -f "$p" ] || continue
  ldd "$p" | awk '/=> \// {print $3}' | grep -v -e '/cuda' -e 'libc\.so' -e 'libm\.so' -e libpthread -e 'librt\.' -e 'libdl\.' -e libstdc -e libgcc_s \
    | while read -r l; do cp -L "$l" .devcarry/pack/lib/; done
done
tar -C .devcarry -cJf .devcarry/pack.tar.xz pack
rm -rf .devcarry/pack
ls -la .devcarry/pack.tar.xz
