"""ftprop-sweep under kills, races and bad inputs (issue 24: D2, D3, D12-D15, D18, the kill loop).

Real sweeps of a tiny grid (digits, 64 images, 2 epochs, one thread per trainer). A hook loaded
by every process of a sweep (tests/sweep_safety.py) lands SIGKILL or SIGTERM on the sweep while
a named temporary file exists, so each temp file of a sweep and of its trainers is hit exactly.
"""
import json
import os
import re
import signal
import subprocess
import sys

import pytest

from ftprop_cuda import sweep
from ftprop_cuda.sweep.folders import read_records

from sweep_safety import (alive, comparable, hook_env, in_process, run_cli, sweep_cmd,
                          temp_files, wait_until)

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="flock, PR_SET_PDEATHSIG and /proc")

COMMON = """
[common]
dataset = "digits"
train_limit = 64
epochs = 2
lr = 1e-3
"""
GRID = "seeds = [1, 2]\n" + COMMON + '[configs.a]\nnonlin = "step"\n[configs.b]\nnonlin = "relu"\n'
ONE = "seeds = [1]\n" + COMMON + '[configs.a]\nnonlin = "step"\n'
RUNS = [(name, seed) for seed in (1, 2) for name in ("a", "b")]
# every temporary file of a sweep: its own (grid.json, sweep-run.json), then its trainer's
KINDS = ["grid.json", "sweep-run.json", "config.json", "best.pt", "last.pt", "metrics.jsonl",
         "curves.png"]


def _env(tmp_path, **kw):
    env = hook_env(tmp_path, **kw)
    env["OMP_NUM_THREADS"] = "1"  # the same arithmetic in every trainer
    return env


@pytest.fixture(scope="module")
def two_sweeps(tmp_path_factory):
    """Two `ftprop-sweep run` of one grid on one folder at the same time."""
    tmp = tmp_path_factory.mktemp("two")
    (tmp / "grid.toml").write_text(GRID)
    out = str(tmp / "out")
    argv = sweep_cmd("run", str(tmp / "grid.toml"), "--out", out)
    env = _env(tmp)
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=env, cwd=tmp) for _ in range(2)]
    outputs = [p.communicate(timeout=1200) for p in procs]
    results = [(p.returncode, *o) for p, o in zip(procs, outputs)]
    return out, results


@pytest.mark.slow
def test_two_sweeps_on_one_folder_train_each_run_once(two_sweeps):
    out, results = two_sweeps
    for code, stdout, stderr in results:
        assert code == 0, stdout + stderr
        assert "FAILED" not in stdout
    trained = [line for _, stdout, _ in results for line in stdout.splitlines() if ": best " in line]
    for name, seed in RUNS:
        folder = sweep.run_folder(out, name, seed)
        assert sweep.run_state(folder) == "finished"
        attempts = json.load(open(os.path.join(folder, "sweep-run.json")))["attempts"]
        assert len(attempts) == 1, (name, seed, attempts)
        assert len(json.load(open(os.path.join(folder, "config.json")))["invocations"]) == 1
        assert sum(f"] {name} seed {seed}: best" in line for line in trained) == 1
    assert temp_files(out) == []


def _round(tmp_path, out, grid, kind, sig, number):
    """One sweep killed by sig on `kind`'s temporary file; returns the log of the hook."""
    log = tmp_path / f"kill-{number}.log"
    env = _env(tmp_path, kill=(kind, sig), log=log)
    code, stdout, stderr = run_cli(sweep_cmd("run", grid, "--out", out), env=env, cwd=tmp_path)
    assert log.exists(), f"no {kind} was written: {stdout}{stderr}"
    pid, who, temp = log.read_text().split()
    assert os.path.basename(temp).startswith(kind + ".tmp")
    assert code == (-signal.SIGKILL if sig == signal.SIGKILL else 128 + sig), stdout + stderr
    assert "FAILED" not in stdout
    if who == "trainer":  # no orphan: the trainer ends with its sweep
        assert wait_until(lambda: not alive(int(pid)), 20), f"trainer {pid} outlived the sweep"
    return stdout


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["kill", "term"])
def test_kill_at_every_temp_file_then_rerun(two_sweeps, tmp_path, sig):
    """SIGKILL / SIGTERM of the sweep on each temporary file in turn, each time followed at
    once by the same command: the run ends with bitwise the metrics of the uninterrupted sweep
    (two_sweeps' a seed 1), no temporary file and no trainer left, the logs of every attempt
    kept."""
    reference, _ = two_sweeps
    grid = tmp_path / "one.toml"
    grid.write_text(ONE)
    out = str(tmp_path / "out")
    for number, kind in enumerate(KINDS):
        _round(tmp_path, out, str(grid), kind, sig, number)
    code, stdout, stderr = run_cli(sweep_cmd("run", str(grid), "--out", out),
                                   env=_env(tmp_path), cwd=tmp_path)
    assert code == 0 and "FAILED" not in stdout, stdout + stderr
    folder = sweep.run_folder(out, "a", 1)
    assert sweep.run_state(folder) == "finished"
    want = read_records(sweep.run_folder(reference, "a", 1))
    assert comparable(read_records(folder)) == comparable(want)
    assert temp_files(out) == []
    attempts = json.load(open(os.path.join(folder, "sweep-run.json")))["attempts"]
    log = open(os.path.join(folder, "sweep-stderr.txt")).read()
    assert len(attempts) >= log.count("==> ftprop-sweep attempt") >= 5  # no log truncated
    stopped = "terminated (SIGTERM)" if sig == signal.SIGKILL else "interrupted"
    assert log.count(f"ftprop-train: {stopped}") >= 5  # one per trainer the loop stopped


# ---------------------------------------------------------------------------------------------
# A trainer ends with its parent (ftprop_cuda.runs.parent), by prctl and by polling
# ---------------------------------------------------------------------------------------------
PARENT = """
import os, subprocess, sys
child = subprocess.Popen([sys.executable, "-c", sys.argv[1], str(os.getpid()), sys.argv[2]])
print(child.pid, flush=True)
child.wait()
"""
CHILD = """
import sys, time
from ftprop_cuda.runs.parent import end_with_parent
print(end_with_parent(int(sys.argv[1]), use_prctl=sys.argv[2] == "prctl", poll_s=0.05),
      flush=True)
time.sleep(120)
"""


@pytest.mark.parametrize("how", ["prctl", "poll"])
def test_child_ends_with_its_killed_parent(how, tmp_path):
    env = _env(tmp_path)
    parent = subprocess.Popen([sys.executable, "-c", PARENT, CHILD, how], env=env,
                              stdout=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        child = int(parent.stdout.readline())
        assert parent.stdout.readline().strip() == how  # the child is armed
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        assert wait_until(lambda: not alive(child), 30), "the child outlived its parent"
    finally:
        if parent.poll() is None:
            parent.kill()


def test_runs_parent_runs_a_module_as_main(tmp_path):
    wrap = [sys.executable, "-m", "ftprop_cuda.runs.parent", str(os.getpid())]
    code, stdout, _ = run_cli(wrap + ["platform"], env=_env(tmp_path), cwd=tmp_path)
    assert code == 0 and stdout.strip()
    code, _, stderr = run_cli(wrap + ["json.tool", str(tmp_path / "missing.json")],
                              env=_env(tmp_path), cwd=tmp_path)
    assert code == 2 and "missing.json" in stderr  # the module's exit code passes through
    code, _, stderr = run_cli([sys.executable, "-m", "ftprop_cuda.runs.parent", "x"],
                              env=_env(tmp_path), cwd=tmp_path)
    assert code == 2 and "usage" in stderr


# ---------------------------------------------------------------------------------------------
# Reading results: damaged metrics files, odd values, Markdown cells, outputs that fail
# ---------------------------------------------------------------------------------------------
def _run(folder, lines, epochs=3, attempts=None, raw=None):
    os.makedirs(folder)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump({"epochs": epochs, "runtime": "odd"}, f)
    with open(os.path.join(folder, "metrics.jsonl"), "wb") as f:
        f.write(raw if raw is not None else "".join(line + "\n" for line in lines).encode())
    if attempts is not None:
        with open(os.path.join(folder, "sweep-run.json"), "w") as f:
            json.dump({"attempts": attempts}, f)


def _line(epoch, top1):
    return json.dumps({"epoch": epoch, "test_top1": top1, "seconds": 1.0})


def test_a_corrupt_middle_line_is_named_and_its_run_left_out(tmp_path):
    root = tmp_path / "sweep"
    good = [_line(1, 50.0), _line(2, 60.0), _line(3, 55.0)]
    _run(str(root / "a" / "seed-1"), good)
    _run(str(root / "a" / "seed-2"), [good[0], '{"epoch": 2, "test_top1": 9', good[2]])
    _run(str(root / "a" / "seed-3"), [], raw=("\n".join(good) + '\n{"epoch": 4, "te').encode())
    code, stdout, stderr = in_process(sweep.main, ["report", str(root)])
    assert code == 0, stderr
    where = os.path.join(str(root), "a", "seed-2", "metrics.jsonl") + " line 2"
    assert f"warning: a seed 2 left out: {where}: not a JSON object" in stderr
    stats = json.load(open(root / "report.json"))[0]
    assert stats["seeds"] == [1, 3]  # the torn last line of seed 3 is what a kill leaves: fine
    assert stats["best_top1_mean"] == 60.0 and stats["best_epoch_mean"] == 2.0
    assert where in (root / "report.md").read_text()
    # the sweep does not train a damaged run either: it names it and leaves it alone
    (root / "grid.toml").write_text("seeds = [2]\n[configs.a]\nepochs = 3\n")
    code, stdout, stderr = run_cli(sweep_cmd("run", str(root / "grid.toml"), "--out", str(root)),
                                   env=_env(tmp_path))
    assert code == 1 and f"damaged, not run: {where}" in stderr, stdout + stderr
    assert "1 damaged" in stdout


def test_report_survives_null_nan_odd_types_and_bad_bytes(tmp_path):
    root = tmp_path / "sweep"
    for seed, top in ((1, [50.0, 60.0]), (2, [52.0, 61.0])):
        _run(str(root / "base" / f"seed-{seed}"), [_line(e, t) for e, t in enumerate(top, 1)],
             epochs=2, attempts=[{"machine": "not a dict", "commit": 3}, "odd"])
    _run(str(root / "odd" / "seed-1"), [_line(1, 50.0), _line(2, None)], epochs=2,
         attempts=5)  # the trainer writes a non-finite number as null
    _run(str(root / "odd" / "seed-2"), ['{"epoch": 1, "test_top1": NaN}',
                                        '{"epoch": 2, "test_top1": NaN}'], epochs=2)
    _run(str(root / "bad" / "seed-1"), [_line(1, 5.0), '{"epoch": 2, "test_top1": "high"}'],
         epochs=2)
    _run(str(root / "bad" / "seed-2"), [], epochs=2, raw=b'{"epoch": 1, "test_top1": 1}\n\xff\n')
    _run(str(root / "bad" / "seed-3"), ['{"epoch": 1}'], epochs=1)
    (root / "grid.json").write_text(json.dumps({"seeds": [1, 2], "configs": {
        "base": {}, "odd": {}, "bad": {}}, "claims": {"c": {
            "a": "odd", "b": "base", "direction": "equal", "text": "t"}}}))
    code, stdout, stderr = in_process(sweep.main, ["report", str(root)])
    assert code == 0, stderr
    assert "'test_top1' is 'high', expected a number or null" in stderr
    assert "line 2: not UTF-8 text" in stderr and "'test_top1' is missing" in stderr
    text = (root / "report.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    stats = {s["name"]: s for s in json.loads(text)}
    assert stats["odd"]["n"] == 2 and stats["odd"]["final_top1_mean"] is None
    assert stats["odd"]["best_top1_mean"] == 50.0 and stats["bad"]["n"] == 0
    md = (root / "report.md").read_text()
    assert not re.search(r"\bnan\b", md, re.IGNORECASE)
    claims = json.load(open(root / "report-claims.json"))
    assert claims["c"]["verdict"].startswith("not testable (0 shared seeds")
    # D14: |a - b| in a cell is escaped; the claims row keeps its nine cells
    row = [line for line in md.splitlines() if line.startswith("| c |")][0]
    assert "\\|a - b\\| < 1 pp" in row
    cells = [c for c in row.replace("\\|", "").split("|")[1:-1]]
    assert len(cells) == 9 and "not testable" in cells[-1]


def test_outputs_that_cannot_be_written_are_one_line(tmp_path, monkeypatch):
    root = tmp_path / "sweep"
    _run(str(root / "a" / "seed-1"), [_line(1, 50.0)], epochs=1)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    grid = tmp_path / "g.json"
    grid.write_text('{"seeds": [1], "configs": {"a": {"nonlin": "relu"}}}')
    for argv, message in (
            (["run", str(grid), "--out", str(blocker)], "exists and is not a folder"),
            (["run", str(grid), "--out", ""], "--out must name a folder"),
            (["report", str(root), "--out", str(blocker / "r.md")], "cannot create"),
            (["report", str(root), "--out", str(tmp_path)], "is a folder"),
            (["report", str(root), "--out", ""], "--out must name a file")):
        code, stdout, stderr = in_process(sweep.main, argv)
        assert code == 2 and stderr.count("\n") == 1 and message in stderr, (argv, stderr)
    import ftprop_cuda.sweep.report as report

    def full(path, value, **kw):
        raise OSError(28, "No space left on device", path)
    monkeypatch.setattr(report, "write_json", full)
    code, stdout, stderr = in_process(sweep.main, ["report", str(root)])
    assert code == 2 and stderr.count("\n") == 1
    assert f"cannot write {root / 'report.json'}: No space left on device" in stderr


def test_abbreviations_and_typos_fail_at_once(tmp_path):
    grid = tmp_path / "g.json"
    grid.write_text('{"seeds": [1], "configs": {"a": {"nonlin": "relu"}}}')
    for argv in (["run", str(grid), "--ou", str(tmp_path / "o")],
                 ["run", str(grid), "--out", str(tmp_path / "o"), "--dry"],
                 ["report", str(tmp_path), "--base", "a"]):
        code, _, stderr = in_process(sweep.main, argv)
        assert code == 2 and "unrecognized arguments" in stderr and stderr.count("\n") == 1
    # a path typo fails before torch is imported
    probe = ("import sys; from ftprop_cuda.sweep import main; code = main(sys.argv[1:]); "
             "print(code, 'torch' in sys.modules)")
    for argv in (["run", str(tmp_path / "missing.toml"), "--out", str(tmp_path / "o")],
                 ["report", str(tmp_path / "missing")]):
        code, stdout, stderr = run_cli([sys.executable, "-c", probe, *argv], env=_env(tmp_path),
                                       cwd=tmp_path)
        assert stdout.split() == ["2", "False"] and stderr.count("\n") == 1, stderr
