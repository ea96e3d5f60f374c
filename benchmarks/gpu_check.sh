#!/usr/bin/env bash
# The GPU check: run on a GPU machine from the repository root (torch with CUDA, nvcc, ninja and
# pytest installed there, no package registry needed). Builds the extension in place against
# that torch, then, in this order:
#   1. `python -m ftprop_cuda --check`: the self-test on every GPU (check.log, check.json)
#   2. every CUDA-marked test (`pytest -m needs_cuda tests/`, and the FTPROP_EXPECT_CUDA build
#      test) (tests.log)
#   3. the benchmarks, each writing its JSON and Markdown before its plot (a missing matplotlib
#      skips the plot only): bench_train.{json,md}, bench_ops.{json,md,png}
# and writes everything under $OUT (default ./gpu_out), with env.txt and build.log.
# Usage: OUT=/some/dir bash benchmarks/gpu_check.sh [--quick]
#
# The build compiles for the visible GPU (setup.py's choice when TORCH_CUDA_ARCH_LIST is unset);
# set TORCH_CUDA_ARCH_LIST to override it.
#
# It keeps to a time budget, GPU_CHECK_BUDGET seconds (default 540: the device tool stops a
# command at 600 s, and what a stopped command left under $OUT still comes back). After the
# build, each stage gets at most its cap and what is left of the budget: the self-test 120 s,
# the CUDA tests 180 s, bench_train 150 s, bench_ops the rest. A stage cut short says so, and
# the benchmarks leave a JSON of every configuration they finished (marked partial;
# `--from-json` renders it). A failing stage does not stop the later ones; the exit status is 1
# when any stage failed.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu_out}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
# exported before any stage: each stage runs in its own bash and reads $OUT from the environment
export OUT PYTHONUNBUFFERED=1 FORCE_CUDA=1
export MAX_JOBS=${MAX_JOBS:-$(nproc)}
BUDGET=${GPU_CHECK_BUDGET:-540}
status=0
started=$SECONDS

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

stage "self-test" 120 '
  python3 -m ftprop_cuda --check 2>&1 | tee "$OUT/check.log"
  rc=$?
  python3 -m ftprop_cuda --check --json > "$OUT/check.json" 2> "$OUT/check_json.err" || true
  exit $rc'

stage "CUDA tests" 180 '
  rc=0
  FTPROP_REQUIRE_EXT=1 FTPROP_EXPECT_CUDA=1 python3 -m pytest -q -rs -m needs_cuda tests 2>&1 \
    | tee "$OUT/tests.log" | tail -n 40 || rc=1
  FTPROP_REQUIRE_EXT=1 FTPROP_EXPECT_CUDA=1 python3 -m pytest -q -rs \
    tests/test_api.py::test_cuda_kernels_were_compiled 2>&1 | tee -a "$OUT/tests.log" \
    | tail -n 5 || rc=1
  exit $rc'

if [ "${1:-}" = "--quick" ]; then bench_args="--smoke"; else bench_args=""; fi
export bench_args
# a whole training step first (the unit of work that matters), then the ops alone
stage "bench_train" 150 'python3 benchmarks/bench_train.py --device cuda --out "$OUT" $bench_args 2>&1 | tail -n 30'
stage "bench_ops" 100000 'python3 benchmarks/bench_ops.py --device cuda --out "$OUT" $bench_args 2>&1 | tail -n 60'
echo "gpu_check: exit status $status after $(( SECONDS - started ))s"
exit $status
