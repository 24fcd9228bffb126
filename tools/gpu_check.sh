#!/bin/sh
# The device checks of the CUDA engine, in one run on a machine with a GPU (issue 23): the
# engine's tests against the CPU engine (test_gpu), fusekit's GPU bench, PyTorch on the same
# shapes. Reads .devcarry/pack.tar.xz (tools/gpu_pack.sh); writes logs under $OUT (or /tmp/gpu_out).
#   sh tools/gpu_check.sh [tests|bench|all]
set -u
WHAT=${1:-all}
O=${OUT:-/tmp/gpu_out}
mkdir -p "$O" /tmp/fk
nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version,clocks.sm --format=csv 2>&1 | tee "$O/gpu.txt"
tar -xJf .devcarry/pack.tar.xz -C /tmp/fk || exit 1
CUBLAS=$(ls -d /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib 2>/dev/null | tr '\n' ':')
PYLIB=$(python3 -c 'import nvidia.cublas, os; print(os.path.join(list(nvidia.cublas.__path__)[0], "lib"))' 2>/dev/null || true)
export LD_LIBRARY_PATH="/tmp/fk/pack/lib:${CUBLAS}${PYLIB}"
P=/tmp/fk/pack
if [ "$WHAT" != bench ]; then
  echo "== test_gpu"
  timeout 300 "$P/test_gpu" > "$O/test_gpu.log" 2>&1; rc=$?
  cat "$O/test_gpu.log" | tail -40
  echo "test_gpu rc=$rc"
  if [ $rc -ne 0 ] && [ $rc -ne 77 ]; then
    echo "== test_gpu again, each kernel synchronised (FUSEKIT_CUDA_SYNC=1)"
    FUSEKIT_CUDA_SYNC=1 timeout 120 "$P/test_gpu" > "$O/test_gpu_sync.log" 2>&1
    tail -20 "$O/test_gpu_sync.log"
  fi
  echo "== test_gpu_cli"
  timeout 300 sh tests/test_gpu_cli.sh "$P/fusekit" "$P/fk_store_diff" > "$O/test_gpu_cli.log" 2>&1; rc=$?
  tail -25 "$O/test_gpu_cli.log"
  echo "test_gpu_cli rc=$rc"
fi
if [ "$WHAT" != tests ]; then
  echo "== fusekit GPU bench"
  for c in gpt2-124m llama-1b; do
    for m in train infer; do
      timeout 120 "$P/fk_gpu_bench" --config $c --mode $m --steps ${STEPS:-10} 2>&1 | tee -a "$O/bench.jsonl"
      [ "${TORCH:-1}" = 1 ] && timeout 150 python3 bench/torch_bench.py --device cuda --config $c --mode $m --autocast bf16 --steps ${STEPS:-10} 2>&1 | tail -3 | tee -a "$O/bench.jsonl"
    done
  done
  if [ "${TORCH:-1}" = 1 ] && [ "${COMPILE:-1}" = 1 ]; then
    timeout 240 python3 bench/torch_bench.py --device cuda --config gpt2-124m --mode train --autocast bf16 --compile --steps ${STEPS:-10} 2>&1 | tail -3 | tee -a "$O/bench.jsonl"
  fi
fi
