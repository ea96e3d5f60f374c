#!/usr/bin/env bash
# The GPU check: run on the H100 machine from the repository root (torch 2.11.0+cu130, nvcc,
# ninja and pytest installed there, no package registry). Builds the extension in place against
# that torch, runs the CUDA tests and the benchmarks, and writes everything under $OUT:
#   env.txt  build.log  tests.log  bench_ops.{json,md,png}  bench_train.{json,md}
# Usage: OUT=/some/dir bash benchmarks/gpu_check.sh [--quick]
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu_out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0} FORCE_CUDA=1
export MAX_JOBS=${MAX_JOBS:-$(nproc)}
status=0

{
  date -u +"date: %Y-%m-%dT%H:%M:%SZ"
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
  python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"
  nvcc --version | tail -n 2
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

echo "== build"
if ! python3 -m pip install --no-build-isolation --no-deps -v -e . > "$OUT/build.log" 2>&1; then
  tail -n 60 "$OUT/build.log"
  echo "BUILD FAILED"
  exit 1
fi
grep "\[ftprop_cuda build\]" "$OUT/build.log" | sort -u

echo "== CUDA tests"
FTPROP_REQUIRE_EXT=1 FTPROP_EXPECT_CUDA=1 python3 -m pytest -q -rs \
  tests/test_ops.py tests/test_api.py tests/test_reference.py 2>&1 | tee "$OUT/tests.log" | tail -n 25
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
# lean memory mode's codes and max-pool offset codec on the GPU (their CUDA-parametrised cases)
FTPROP_REQUIRE_EXT=1 python3 -m pytest -q -rs tests/test_lean_memory.py -k cuda 2>&1 \
  | tee -a "$OUT/tests.log" | tail -n 10
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

echo "== benchmarks"
if [ "${1:-}" = "--quick" ]; then bench_args=(--smoke); else bench_args=(); fi
if [ -f benchmarks/bench_ops.py ]; then
  python3 benchmarks/bench_ops.py --device cuda --out "$OUT" "${bench_args[@]}" 2>&1 | tail -n 60
  [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
fi
if [ -f benchmarks/bench_train.py ]; then
  python3 benchmarks/bench_train.py --device cuda --out "$OUT" "${bench_args[@]}" 2>&1 | tail -n 30
  [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
fi
echo "gpu_check: exit status $status"
exit $status
