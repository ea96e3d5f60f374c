"""benchmarks/gpu_check.sh, run on the CPU with fakes: a copy of the script in a scratch
checkout, `python3`, `nvidia-smi` and `nvcc` replaced by scripts that log their calls. It
builds, runs the self-test first, then every CUDA-marked test, then the benchmarks; writes its
logs under $OUT even when the caller did not export OUT; keeps going after a failing stage and
exits 1. And benchmarks/common.py writes results before plots. About 2 s."""
import json
import os
import shutil
import stat
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "benchmarks", "gpu_check.sh")

FAKE_PYTHON = r"""#!/usr/bin/env bash
echo "$* ARCH=${TORCH_CUDA_ARCH_LIST-unset} OUT=${OUT-unset}" >> "$FAKE_LOG"
case "$*" in
  *"-m pip install"*) echo "[ftprop_cuda build] fake build" ;;
  *"-m ftprop_cuda --check --json"*) echo '{"check_passed": true}' ;;
  *"-m ftprop_cuda --check"*) echo "PASS    cuda:0  fake check"; exit "${FAKE_CHECK_RC:-0}" ;;
  *"-m pytest"*) echo "3 passed in 0.1s" ;;
  *) echo "fake python3 $*" ;;
esac
exit 0
"""


def _executable(path, text):
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


@pytest.fixture
def fake_checkout(tmp_path):
    repo = tmp_path / "repo"
    (repo / "benchmarks").mkdir(parents=True)
    shutil.copy(SCRIPT, repo / "benchmarks" / "gpu_check.sh")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _executable(bin_dir / "python3", FAKE_PYTHON)
    _executable(bin_dir / "nvidia-smi", "#!/usr/bin/env bash\necho 'name\nFake GPU'\n")
    _executable(bin_dir / "nvcc", "#!/usr/bin/env bash\necho 'Cuda compilation tools'\n")
    return repo, bin_dir, tmp_path / "calls.log"


def _run(fake_checkout, **env):
    repo, bin_dir, log = fake_checkout
    environ = {k: v for k, v in os.environ.items() if k not in ("OUT", "TORCH_CUDA_ARCH_LIST")}
    environ.update(PATH=f"{bin_dir}{os.pathsep}{environ['PATH']}", FAKE_LOG=str(log),
                   GPU_CHECK_BUDGET="300", **env)
    proc = subprocess.run(["bash", str(repo / "benchmarks" / "gpu_check.sh")], cwd=str(log.parent),
                          env=environ, capture_output=True, text=True, timeout=120)
    return proc, log.read_text().splitlines()


def _stage_order(calls):
    marks = ("-m pip install", "-m ftprop_cuda --check", "-m pytest -q -rs -m needs_cuda",
             "bench_train.py", "bench_ops.py")
    return [next(i for i, c in enumerate(calls) if mark in c) for mark in marks]


def test_stages_in_order_and_logs_under_out(fake_checkout):
    repo, _, _ = fake_checkout
    proc, calls = _run(fake_checkout)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    order = _stage_order(calls)
    assert order == sorted(order), calls
    out = repo / "gpu_out"
    # OUT was not exported by the caller, and still every stage saw it
    assert "3 passed" in (out / "tests.log").read_text()
    assert "fake check" in (out / "check.log").read_text()
    assert json.loads((out / "check.json").read_text()) == {"check_passed": True}
    assert all(f"OUT={out}" in c for c in calls if "pytest" in c or "bench_" in c), calls
    # the build compiles for the visible card: no architecture forced on it
    assert "ARCH=unset" in next(c for c in calls if "pip install" in c)
    assert any("test_cuda_kernels_were_compiled" in c for c in calls)


def test_a_failing_self_test_fails_the_run_but_not_the_later_stages(fake_checkout):
    proc, calls = _run(fake_checkout, FAKE_CHECK_RC="1")
    assert proc.returncode == 1
    assert any("bench_ops.py" in c for c in calls) and any("needs_cuda" in c for c in calls)


def test_caller_arch_list_and_out_are_kept(fake_checkout, tmp_path):
    out = tmp_path / "elsewhere"
    proc, calls = _run(fake_checkout, TORCH_CUDA_ARCH_LIST="8.6", OUT=str(out))
    assert proc.returncode == 0
    assert "ARCH=8.6" in next(c for c in calls if "pip install" in c)
    assert (out / "tests.log").exists() and (out / "env.txt").exists()


# ---- benchmarks/common.py: results before plots ------------------------------------------------
@pytest.fixture
def common():
    sys.path.insert(0, os.path.join(REPO, "benchmarks"))
    try:
        import common as module
    finally:
        sys.path.remove(os.path.join(REPO, "benchmarks"))
    return module


def _markdown(result, plot):
    return f"# {result['name']}\n" + (f"![plot]({plot})\n" if plot else "")


def test_results_are_written_before_the_plot(common, tmp_path):
    written = []

    def plot(result, png):
        written.extend(sorted(os.listdir(tmp_path)))
        raise ImportError("No module named 'matplotlib'")

    lines = []
    common.write_outputs({"name": "r"}, "bench_x", "cpu", str(tmp_path), _markdown, plot,
                         log=lines.append)
    assert written == ["bench_x_cpu.json", "bench_x_cpu.md"]
    assert not (tmp_path / "bench_x_cpu.png").exists()
    assert (tmp_path / "bench_x_cpu.md").read_text() == "# r\n"
    assert any("plot skipped" in line and "matplotlib" in line for line in lines)


def test_a_drawn_plot_is_linked(common, tmp_path):
    def plot(result, png):
        with open(png, "wb") as f:
            f.write(b"png")

    common.write_outputs({"name": "r"}, "bench_x", "cpu", str(tmp_path), _markdown, plot,
                         log=lambda line: None)
    assert "![plot](bench_x_cpu.png)" in (tmp_path / "bench_x_cpu.md").read_text()
    assert sorted(os.listdir(tmp_path)) == ["bench_x_cpu.json", "bench_x_cpu.md",
                                            "bench_x_cpu.png"]


def test_other_plot_errors_stay_loud(common, tmp_path):
    def plot(result, png):
        raise ValueError("bad data")

    with pytest.raises(ValueError):
        common.write_outputs({"name": "r"}, "bench_x", "cpu", str(tmp_path), _markdown, plot,
                             log=lambda line: None)
    assert (tmp_path / "bench_x_cpu.json").exists()
