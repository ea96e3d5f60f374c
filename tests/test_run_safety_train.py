"""ftprop-train keeps every run (issue 24, the training half): a kill at any write is finished by
--resume bitwise; a folder holding a run is never written by another; temporary files never
outlive a kill; damaged checkpoints, full disks, empty paths and out-of-range numbers are one
line each. Kills are injected at named writes by the FTPROP_KILL_AT hook (runs/faults.py) in
trainings forked from a pre-imported server (run_safety.py)."""
import errno
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from ftprop_cuda import runs
from ftprop_cuda.runs import faults
from ftprop_cuda.runs.names import RUN_FILES

from run_safety import (TINY, assert_complete, epoch_records, one_error_line, temp_files,
                        train_child, write_points)
from test_train import run


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted tiny training, and the list of the atomic writes it made."""
    base = tmp_path_factory.mktemp("reference")
    out, trace = base / "run", base / "writes.txt"
    code, log = train_child([*TINY, "--out", str(out)], base / "log.txt", trace=trace)
    assert code == 0, log
    return out, write_points(trace)


def recover(folder, log):
    """What a user (or the sweep) does after a kill: resume from last.pt when there is one,
    else start the run again over what the killed one left (--overwrite)."""
    last = folder / "last.pt"
    if last.exists():
        argv = ["--resume", str(last), "--quiet", "--no-tensorboard"]
    else:
        argv = [*TINY, "--out", str(folder), "--overwrite"]
    code, text = train_child(argv, log)
    assert code == 0, text
    return text


def test_the_trace_lists_every_run_file(reference):
    _, points = reference
    names = [name for name, _ in points]
    assert set(names) == set(RUN_FILES), names
    assert names.count("last.pt") == names.count("metrics.jsonl") == 2
    assert names.index("last.pt") < names.index("metrics.jsonl")


def kill_points(points, sig):
    """(name, occurrence, phase) of each kill: every write of the traced run with
    FTPROP_KILL_LOOP=full, else the last write of each file (the final epoch's, and config.json).
    SIGTERM is handled at the next bytecode, so after a rename it is a SIGTERM between writes,
    which the "written" phase of the next write covers."""
    phases = faults.PHASES if sig == "KILL" else ("written",)
    if os.environ.get("FTPROP_KILL_LOOP") != "full":
        last = {}
        for name, n in points:
            last[name] = n
        points = [(name, n) for name, n in points if last[name] == n]
    return [(name, n, phase) for name, n in points for phase in phases]


@pytest.mark.parametrize("sig", ["KILL", "TERM"])
def test_a_kill_at_every_write_is_finished_by_resume(reference, tmp_path, sig):
    ref, points = reference
    for name, n, phase in kill_points(points, sig):
        folder, log = tmp_path / f"{name}-{n}-{phase}", tmp_path / "log.txt"
        code, text = train_child([*TINY, "--out", str(folder)], log,
                                 kill=faults.kill_spec(name, n, phase, sig))
        where = f"{sig} at {name} #{n} {phase}"
        if sig == "KILL":
            assert code == -9, (where, text)
            left = temp_files(folder)
            if phase == "written":  # the kill left the temporary file, whole but not renamed
                assert len(left) == 1 and left[0].startswith(f"{name}.tmp"), (where, left)
            else:
                assert left == [], (where, left)
        else:  # SIGTERM: the trainer stops cleanly and removes its temporary file
            assert code == 143, (where, text)
            assert text.strip().splitlines()[-1] == "ftprop-train: terminated (SIGTERM)"
            assert temp_files(folder) == [], where
        recover(folder, log)
        assert_complete(folder, ref, 2)


# ---------------------------------------------------------------------------------------------
# D4: a kill between the final last.pt and its metrics
# ---------------------------------------------------------------------------------------------
def test_resume_completes_a_run_killed_after_its_final_checkpoint(reference, tmp_path):
    ref, _ = reference
    folder, log = tmp_path / "run", tmp_path / "log.txt"
    code, _ = train_child([*TINY, "--out", str(folder)], log,
                          kill=faults.kill_spec("last.pt", 2, "renamed", "KILL"))
    assert code == -9
    assert [r["epoch"] for r in epoch_records(folder)] == [1]  # stranded before the fix
    text = recover(folder, log)
    assert "metrics.jsonl and curves.png completed" in text, text
    assert_complete(folder, ref, 2)
    before = (folder / "metrics.jsonl").read_bytes()
    code, stdout, stderr = run(["--resume", str(folder / "last.pt")])
    assert code == 0 and stdout == "" and "nothing to do" in stderr, stderr
    assert (folder / "metrics.jsonl").read_bytes() == before


# ---------------------------------------------------------------------------------------------
# D1: a folder holding a run is written only by its resume or --overwrite
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def one_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("one")
    code, _, stderr = run([*ONE, "--out", str(out)])
    assert code == 0, stderr
    return out


ONE = [*TINY[:-1], "1"]  # TINY with --epochs 1


def snapshot(folder):
    return {e: (folder / e).read_bytes() for e in os.listdir(folder) if e != ".lock"}


def test_out_refuses_a_folder_holding_a_run(one_run, tmp_path):
    folder = tmp_path / "held"
    shutil.copytree(one_run, folder)
    before = snapshot(folder)
    code, _, stderr = run([*ONE, "--seed", "7", "--out", str(folder)])
    assert code == 2 and one_error_line(stderr), stderr
    assert f"--out {folder} already holds a run" in stderr
    assert "--resume" in stderr and "--overwrite" in stderr
    assert snapshot(folder) == before
    # a resume of another run into it is refused too
    code, _, stderr = run(["--resume", str(one_run / "last.pt"), "--epochs", "2",
                           "--out", str(folder)])
    assert code == 2 and "already holds a run" in stderr and snapshot(folder) == before
    # only config.json (a run killed in its first epoch) still counts
    only = tmp_path / "config-only"
    only.mkdir()
    (only / "config.json").write_bytes(before["config.json"])
    code, _, stderr = run([*ONE, "--out", str(only)])
    assert code == 2 and "already holds a run (config.json)" in stderr, stderr
    assert "--resume" not in stderr  # nothing to resume from


def test_overwrite_replaces_the_run_and_keeps_unrelated_files(one_run, tmp_path):
    folder = tmp_path / "held"
    shutil.copytree(one_run, folder)
    (folder / "events.out.tfevents.1.host").write_text("old events")
    (folder / "notes.txt").write_text("mine")
    code, _, stderr = run([*TINY, "--seed", "7", "--out", str(folder), "--overwrite"])
    assert code == 0, stderr
    assert not (folder / "events.out.tfevents.1.host").exists()
    assert (folder / "notes.txt").read_text() == "mine"
    assert [r["epoch"] for r in epoch_records(folder)] == [1, 2]
    assert json.loads((folder / "config.json").read_text())["seed"] == 7


@pytest.mark.parametrize("content", ["empty", "unrelated", "lock_only"])
def test_out_accepts_a_folder_without_a_run(tmp_path, content):
    folder = tmp_path / "f"
    folder.mkdir()
    if content == "unrelated":
        (folder / "notes.txt").write_text("mine")
        (folder / "data").mkdir()
    if content == "lock_only":  # a run killed before it wrote anything
        (folder / ".lock").write_text("pid 1 on host x\n")
    code, _, stderr = run([*ONE, "--out", str(folder)])
    assert code == 0, stderr
    if content == "unrelated":
        assert (folder / "notes.txt").read_text() == "mine"


def test_overwrite_is_refused_where_it_makes_no_sense(one_run):
    before = snapshot(one_run)
    last = str(one_run / "last.pt")
    for argv, message in (
            (["--resume", last, "--epochs", "2", "--overwrite"], "would remove the run"),
            (["--eval", last, "--overwrite"], "--overwrite cannot be combined with --eval")):
        code, _, stderr = run(argv)
        assert code == 2 and one_error_line(stderr) and message in stderr, stderr
    assert snapshot(one_run) == before


# ---------------------------------------------------------------------------------------------
# D5: temporary files of dead writers are removed at the next start of the run
# ---------------------------------------------------------------------------------------------
def test_stale_temporary_files_are_removed(one_run, tmp_path):
    folder = tmp_path / "run"
    shutil.copytree(one_run, folder)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = [f"last.pt.tmp{dead.pid}", f"best.pt.tmp{os.getpid()}",  # run files: all stale
             f"sweep-run.json.tmp{dead.pid}"]
    kept = [f"sweep-run.json.tmp{os.getpid()}", "notes.tmp12"]  # a live writer's; not ours
    for name in stale + kept:
        (folder / name).write_bytes(b"partial")
    code, _, stderr = run(["--resume", str(folder / "last.pt"), "--epochs", "2"])
    assert code == 0, stderr
    assert sorted(e for e in os.listdir(folder) if ".tmp" in e) == sorted(kept)
    assert runs.remove_stale_temps(str(folder), locked=()) == []  # the live one stays


# ---------------------------------------------------------------------------------------------
# D6: damaged checkpoints are caught by the zip members' CRCs
# ---------------------------------------------------------------------------------------------
def test_zeroed_bytes_in_a_checkpoint_are_caught(one_run, tmp_path):
    whole = bytearray((one_run / "last.pt").read_bytes())
    middle = len(whole) // 2
    whole[middle:middle + 4096] = bytes(4096)
    path = tmp_path / "zeroed.pt"
    path.write_bytes(bytes(whole))
    for flag in ("--resume", "--eval"):
        code, _, stderr = run([flag, str(path), "--out", str(tmp_path / "o")] if flag ==
                              "--resume" else [flag, str(path)])
        assert code == 2 and one_error_line(stderr), stderr
        assert str(path) in stderr and "fails its CRC-32 check" in stderr
        assert "member '" in stderr
    assert not (tmp_path / "o").exists() or not os.listdir(tmp_path / "o")


# ---------------------------------------------------------------------------------------------
# D9: a full disk during a write: one line naming the file and ENOSPC, nothing lost
# ---------------------------------------------------------------------------------------------
def _full_disk_after(monkeypatch, name, count):
    """Makes the count-th write of a file named name fail as a full disk does: torch.save and
    text writes go through Python files, whose write raises OSError(ENOSPC)."""
    real_open, seen = open, []

    class Full:
        def __init__(self, f):
            self.f = f

        def write(self, data):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        def __getattr__(self, attr):
            return getattr(self.f, attr)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

    def fake_open(file, mode="r", *args, **kw):
        f = real_open(file, mode, *args, **kw)
        if "w" in mode and os.path.basename(str(file)).startswith(name + ".tmp"):
            seen.append(file)
            if len(seen) == count:
                return Full(f)
        return f
    monkeypatch.setattr("builtins.open", fake_open)


@pytest.mark.parametrize("name", ["last.pt", "metrics.jsonl"])
def test_a_full_disk_is_one_line_naming_the_file(tmp_path, monkeypatch, name):
    out = tmp_path / "run"
    _full_disk_after(monkeypatch, name, 2)
    code, _, stderr = run([*TINY, "--out", str(out)])
    monkeypatch.undo()
    assert code == 2 and one_error_line(stderr), stderr
    assert f"cannot write {out / name}: No space left on device (ENOSPC)" in stderr
    assert temp_files(out) == []
    assert [r["epoch"] for r in epoch_records(out)] == [1]
    assert torch.load(out / "last.pt", weights_only=True)["epoch"] == (1 if name == "last.pt"
                                                                       else 2)


# ---------------------------------------------------------------------------------------------
# D10, D11, D18: empty paths, numbers out of range, abbreviations, causes, fast typos
# ---------------------------------------------------------------------------------------------
BAD_FLAGS = {
    "resume_empty": (["--resume", ""], "argument --resume: expected a path, got an empty"),
    "eval_empty": (["--eval", ""], "argument --eval: expected a path"),
    "out_empty": (["--out", ""], "argument --out: expected a path"),
    "data_root_empty": (["--data-root", ""], "argument --data-root: expected a path"),
    "seed_huge": (["--seed", "99999999999999999999999"], "--seed: expected an integer from 0"),
    "seed_2_63": (["--seed", str(2**63)], "--seed: expected an integer from 0 to 2**63-1"),
    "seed_negative": (["--seed", "-1"], "--seed: expected an integer from 0"),
    "epochs_huge": (["--epochs", "99999999999999999999"], "--epochs: expected an integer"),
    "batch_huge": (["--batch-size", str(2**63)], "--batch-size: expected an integer"),
    "workers_huge": (["--workers", "100000"], "--workers: expected an integer from 0 to"),
    "timeout_huge": (["--dist-timeout", "1e300"], "--dist-timeout: expected a number"),
    "abbreviation": (["--epoch", "1"], "unrecognized arguments: --epoch 1"),
}


@pytest.mark.parametrize("name", list(BAD_FLAGS))
def test_bad_flags_are_one_line_before_any_folder(tmp_path, monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    argv, message = BAD_FLAGS[name]
    code, stdout, stderr = run([*ONE, *argv])
    assert code == 2 and stdout == "" and one_error_line(stderr), stderr
    assert message in stderr, stderr
    assert os.listdir(tmp_path) == []  # no run folder, no default runs/


def test_the_largest_seed_trains(tmp_path):
    code, _, stderr = run([*ONE, "--seed", str(2**63 - 1), "--out", str(tmp_path)])
    assert code == 0, stderr
    assert json.loads((tmp_path / "config.json").read_text())["seed"] == 2**63 - 1


def test_path_typos_fail_before_torch_is_imported(tmp_path):
    script = ("import sys\nimport ftprop_cuda.train as t\n"
              "codes = [t.main(a) for a in (['--resume', 'nope/last.pt'], ['--eval', 'nope.pt'],"
              " ['--out', ''], ['--epoch', '1'])]\n"
              "assert codes == [2] * 4, codes\nassert 'torch' not in sys.modules\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("ftprop-train: error:") == 4
    assert "cannot read checkpoint nope/last.pt: no such file" in proc.stderr


def test_a_state_dict_mismatch_names_its_cause(one_run, tmp_path):
    ckpt = torch.load(one_run / "last.pt", weights_only=True)
    key = next(iter(ckpt["model"]))
    ckpt["model"][key] = torch.zeros(3)
    path = tmp_path / "shape.pt"
    torch.save(ckpt, path)
    code, _, stderr = run(["--eval", str(path)])
    assert code == 2 and one_error_line(stderr), stderr
    assert f"size mismatch for {key}" in stderr and "torch.Size([3])" in stderr, stderr


@pytest.mark.parametrize("opt", ["adam", "sgd"])
def test_a_huge_learning_rate_stops_with_exit_3(tmp_path, opt):
    code, _, stderr = run([*ONE, "--lr", "1e38", "--opt", opt, "--out", str(tmp_path)])
    assert code == 3 and one_error_line(stderr) and "is not finite at epoch 1" in stderr, stderr
    assert not (tmp_path / "metrics.jsonl").exists() and not (tmp_path / "last.pt").exists()
    code, _, stderr = run([*ONE, "--lr", "1e308", "--opt", opt, "--out", str(tmp_path)])
    assert code == 2 and "--lr: expected a number > 0 and <= 3.40282e+38" in stderr, stderr
