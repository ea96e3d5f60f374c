"""`python -m ftprop_cuda` (ftprop_cuda/check/): the info screen, the self-test and its exit
status, the benchmark, --json, bad flags; the checks themselves can fail (injected faults), and
a machine without a GPU or without kernels is reported as such, not as a pass. GPUs are faked
where only the logic is tested. About 20 s on 2 idle CPU cores (one full --check run; 40 s
when the machine is shared)."""
import contextlib
import io
import json
import math
import subprocess
import sys
import types

import pytest
import torch

from ftprop_cuda.check import bench, cli, grids, info, op_checks, results, selftest
from ftprop_cuda.ops import cuda_arch, extension, reference

needs_cpu_kernel = pytest.mark.skipif("cpu" not in extension.KERNEL_DEVICES,
                                      reason="no compiled CPU kernels")


@pytest.fixture(scope="module")
def full_check():
    """One in-process `--check --json` run: (exit code, document)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cli.main(["--check", "--json"])
    return code, json.loads(out.getvalue())


def test_info_screen_runs_as_a_module(tmp_path):
    # outside the source tree: `-m` imports from the working directory first, and a repository
    # built without -e (as CI builds it) has no compiled _C in its ftprop_cuda/
    proc = subprocess.run([sys.executable, "-m", "ftprop_cuda"], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    for part in ("ftprop_cuda 0.1.0", "torch " + torch.__version__, "CUDA architectures:",
                 "CPU kernel level:", "torch threads", "GPUs"):
        assert part in text, text


@needs_cpu_kernel
def test_full_check_on_this_machine(full_check):
    code, doc = full_check
    checks = doc["checks"]
    assert code == (0 if doc["check_passed"] else 1)
    assert code == 0, [c for c in checks if c["status"] != "pass"]
    names = {c["name"] for c in checks if c["device"] == "cpu"}
    assert "one-element call of every op" in names
    assert {f"step {r}: kernel = reference on the boundary grid" for r in
            ("ste", "soft_hinge", "lecun_tanh")} <= names
    assert any("channels-last" in n for n in names) and any("offset" in n for n in names)
    if not torch.cuda.is_available():  # said plainly, and not a failure
        skipped = [c for c in checks if c["status"] == "skip"]
        assert any("did not run: no GPU visible" in c["detail"] for c in skipped)
    assert set(doc) >= {"info", "checks", "check_summary"}


def test_bad_flag_exits_2_with_one_line(capsys):
    with pytest.raises(SystemExit) as info_:
        cli.main(["--bogus"])
    assert info_.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--bogus" in err


def test_json_alone_is_one_document(capsys):
    assert cli.main(["--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["info"]["torch"] == torch.__version__ and "checks" not in doc


@needs_cpu_kernel
def test_bench_rows_against_a_copy(monkeypatch, capsys):
    monkeypatch.setitem(bench.SIZES, "cpu", 1 << 12)
    monkeypatch.setitem(bench.REPEATS, "cpu", 2)
    monkeypatch.setattr(selftest, "devices", lambda: ["cpu"])
    assert cli.main(["--bench", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["bench"]
    assert rows[0]["op"].startswith("copy") and rows[0]["percent_of_copy"] == 100.0
    assert len(rows) == 6 and all(r["gb_s"] > 0 and r["ms"] > 0 for r in rows)


@needs_cpu_kernel
@pytest.mark.parametrize("fault", ["forward", "backward"])
def test_a_wrong_kernel_fails_its_check(monkeypatch, fault):
    """The checks can fail: a reference that disagrees by one value (the forward) or by 1 %
    (the backward) makes the kernel's boundary check fail, naming the case."""
    if fault == "forward":
        real = reference.step_forward
        def shifted(z, values="pm1"):
            y = real(z, values)
            return y.reshape(-1).roll(1).reshape(y.shape)

        monkeypatch.setattr(reference, "step_forward", shifted)
    else:
        real = reference.step_backward
        monkeypatch.setattr(reference, "step_backward", lambda *a: real(*a) * 1.01)
    check = results.run("x", "cpu", op_checks.step_boundaries, "cpu", "soft_hinge")
    assert check.status == "fail" and "cases differ from the reference" in check.detail
    assert fault in check.detail or "outside the tolerance" in check.detail


def test_no_extension_means_kernel_checks_not_run(monkeypatch):
    monkeypatch.setattr(extension, "LOADED", False)
    monkeypatch.setattr(extension, "EXT_ERROR", "ImportError: injected")
    seen = []
    checks = selftest.run_device("cpu", seen.append)
    assert [c.status for c in checks] == ["not run"] and seen == checks
    assert "did not load" in checks[0].detail
    assert results.summary(checks)[0] == 1  # not a pass


def test_gpu_without_cuda_kernels_is_not_a_pass(monkeypatch):
    monkeypatch.setattr(extension, "KERNEL_DEVICES", frozenset({"cpu"}))
    checks = selftest.run_device("cuda:0", lambda c: None)
    assert checks[0].status == "not run" and "no CUDA kernels" in checks[0].detail


def test_failed_first_call_stops_the_device(monkeypatch):
    def broken(device):
        raise RuntimeError("no kernel image is available for execution on the device")

    monkeypatch.setattr(op_checks, "one_element_calls", broken)
    monkeypatch.setattr(selftest, "device_checks", lambda device: [
        ("one-element call of every op", op_checks.one_element_calls, (device,)),
        ("later", lambda d: None, ("cpu",))])
    checks = selftest.run_device("cpu", lambda c: None)
    assert [c.status for c in checks] == ["fail", "not run"]
    assert "no kernel image" in checks[0].detail


def test_cuda_checks_listed_per_gpu():
    names = [n for n, _, _ in selftest.device_checks("cuda:0")]
    assert any("set_sync_debug_mode" in n for n in names)
    assert any("CUDA graph" in n for n in names)
    assert not any("CUDA graph" in n for n, _, _ in selftest.device_checks("cpu"))


def test_summary_statuses():
    ok = results.Check("a", "cpu", "pass")
    assert results.summary([ok, results.Check("b", "cuda", "skip")])[0] == 0
    assert results.summary([ok, results.Check("b", "cpu", "fail")])[0] == 1
    assert results.summary([ok, results.Check("b", "cpu", "not run")]) == (
        1, "FAILED: 2 checks (1 pass, 1 not run)")
    assert results.run("c", "cpu", lambda: 1 / 0).status == "fail"


def _fake_props(name, major, minor):
    return types.SimpleNamespace(name=name, major=major, minor=minor, total_memory=80 * 2**30)


def test_info_lists_each_gpu_and_its_coverage(monkeypatch):
    cards = [_fake_props("NVIDIA A10", 8, 6), _fake_props("NVIDIA H100", 9, 0),
             _fake_props("NVIDIA B200", 10, 0)]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: len(cards))
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: cards[i])
    monkeypatch.setattr(cuda_arch, "arch_list_text", lambda: "sm_90,compute_90")
    monkeypatch.setattr(extension, "LOADED", True)
    data = info.collect()
    assert [d["covered"] for d in data["devices"]] == [False, True, True]
    lines = "\n".join(info.format_info(data))
    assert "CUDA architectures: sm_90, compute_90" in lines
    assert 'NOT COVERED: rebuild with TORCH_CUDA_ARCH_LIST="8.6"' in lines
    assert "covered (sm_90, native code)" in lines
    assert "covered (compute_90, PTX, JIT-compiled at first use)" in lines
    monkeypatch.setattr(cuda_arch, "arch_list_text", lambda: None)
    assert all(d["covered"] is None for d in info.collect()["devices"])


def test_git_commit_is_best_effort(tmp_path, monkeypatch):
    assert info.git_commit(str(tmp_path / "ftprop_cuda")) is None  # no checkout
    (tmp_path / ".git").mkdir()

    def no_git(*args, **kwargs):
        raise OSError("git: not found")

    monkeypatch.setattr(subprocess, "run", no_git)
    assert info.git_commit(str(tmp_path / "ftprop_cuda")) is None


def test_comparisons_catch_what_they_must():
    a = torch.tensor([0.0, 1.0, math.nan])
    assert grids.bits_differ(a, a.clone()) is None
    assert "differ bitwise" in grids.bits_differ(torch.tensor([-0.0, 1.0, math.nan]), a)
    assert "NaN" in grids.bits_differ(torch.tensor([0.0, 1.0, 2.0]), a)
    assert grids.not_close(a * (1 + 1e-7), a) is None
    assert grids.not_close(torch.tensor([0.0, math.inf, math.nan]), a) is not None
    assert grids.not_close(torch.tensor([0.0, 1.001, math.nan]), a) is not None
    # compact: s_max / 508 of |g| allowed, twice that not
    exact, slope, scale = torch.tensor([0.5]), torch.tensor([0.5]), torch.tensor([1.0])
    assert grids.compact_not_close(exact + 0.9 / 508, exact, slope, scale, 1.0) is None
    assert grids.compact_not_close(exact + 2 / 508, exact, slope, scale, 1.0) is not None


@needs_cpu_kernel
@pytest.mark.parametrize("syncs", [False, True])
def test_sync_check_logic_with_a_fake_debug_mode(monkeypatch, syncs):
    """The CUDA sync check, its logic on the CPU: the mode is 'error' around each step and
    restored after, and a step that synchronises (simulated) fails the check, naming it."""
    from ftprop_cuda.check import model_checks

    mode = {"now": 0, "set": []}
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: None)
    monkeypatch.setattr(torch.cuda, "get_sync_debug_mode", lambda: mode["now"])

    def set_mode(value):
        mode["now"] = value
        mode["set"].append(value)

    monkeypatch.setattr(torch.cuda, "set_sync_debug_mode", set_mode)
    real_step = model_checks.train_step

    def step(model, x, y, autocast_dtype=None):
        if syncs and mode["now"] == "error":
            raise RuntimeError("called a synchronizing CUDA operation")
        return real_step(model, x, y, autocast_dtype)

    monkeypatch.setattr(model_checks, "train_step", step)
    check = results.run("sync", "cpu", model_checks.sync_free_step, "cpu")
    assert mode["now"] == 0  # restored
    if syncs:
        assert check.status == "fail" and "standard step synchronised" in check.detail
    else:
        assert check.status == "pass", check.detail
        assert mode["set"] == ["error", 0, "error", 0, 0]
