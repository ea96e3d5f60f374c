#!/usr/bin/env bash
# The GPU check: run on the H100 machine from the repository root (torch 2.11.0+cu130, nvcc,
# ninja and pytest installed there, no package registry). Builds the extension in place against
# that torch, runs the CUDA tests and the benchmarks, and writes everything under $OUT:
#   env.txt  build.log  tests.log  bench_ops.{json,md,png}  bench_train.{json,md}
# Usage: OUT=/some/dir bash benchmarks/gpu_check.sh [--quick]
#
# It keeps to a time budget, GPU_CHECK_BUDGET seconds (default 540: the device tool stops a
# command at 600 s, and what a stopped command left under $OUT still comes back). After the
# build, each stage gets at most its cap and what is left of the budget: the CUDA tests 180 s,
# bench_train 200 s, bench_ops the rest. A stage cut short says so, and the benchmarks leave a
# JSON of every configuration they finished (marked partial; `--from-json` renders it).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu_out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0} FORCE_CUDA=1
export MAX_JOBS=${MAX_JOBS:-$(nproc)}
BUDGET=${GPU_CHECK_BUDGET:-540}
status=0
started=$SECONDS

# stage NAME CAP COMMAND...: runs COMMAND (a bash -c string) for at most CAP seconds and what is
# left of the budget; a stage with under 30 s left is skipped.
stage() {
  local name=$1 cap=$2 cmd=$3
  local left=$(( BUDGET - (SECONDS - started) ))
  (( left > cap )) && left=$cap
  if (( left < 30 )); then
    echo "== $name: SKIPPED, ${left}s left of the ${BUDGET}s budget"
    status=1
    return
  fi
  echo "== $name (at most ${left}s)"
  timeout -k 10 "$left" bash -c "set -o pipefail; $cmd"
  local rc=$?
  if (( rc == 124 || rc == 137 )); then
    echo "== $name: STOPPED at its ${left}s limit (finished configurations are under \$OUT)"
    status=1
  elif (( rc != 0 )); then
    status=1
  fi
}

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

stage "CUDA tests" 180 '
  rc=0
  FTPROP_REQUIRE_EXT=1 FTPROP_EXPECT_CUDA=1 python3 -m pytest -q -rs \
    tests/test_ops.py tests/test_api.py tests/test_reference.py 2>&1 \
    | tee "$OUT/tests.log" | tail -n 25 || rc=1
  # lean memory mode: its codes, the max-pool offset codec, bitwise lean = standard (CUDA cases)
  FTPROP_REQUIRE_EXT=1 python3 -m pytest -q -rs tests/test_lean_memory.py -k cuda 2>&1 \
    | tee -a "$OUT/tests.log" | tail -n 10 || rc=1
  exit $rc'

if [ "${1:-}" = "--quick" ]; then bench_args="--smoke"; else bench_args=""; fi
export OUT bench_args
# a whole training step first (the unit of work that matters), then the ops alone
stage "bench_train" 200 'python3 benchmarks/bench_train.py --device cuda --out "$OUT" $bench_args 2>&1 | tail -n 30'
stage "bench_ops" 100000 'python3 benchmarks/bench_ops.py --device cuda --out "$OUT" $bench_args 2>&1 | tail -n 60'
echo "gpu_check: exit status $status after $(( SECONDS - started ))s"
exit $status
