"""ftprop-train keeps every run (issue 24, the training half): a kill at any write is finished by
--resume bitwise; a folder holding a run is never written by another; temporary files never
outlive a kill; damaged checkpoints, full disks, empty paths and out-of-range numbers are one
line each. Kills are injected at named writes by the FTPROP_KILL_AT hook (runs/faults.py) in
trainings forked from a pre-imported server (run_safety.py)."""
import os

import pytest

from ftprop_cuda.runs import faults
from ftprop_cuda.runs.names import RUN_FILES

from run_safety import TINY, assert_complete, temp_files, train_child, write_points


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


@pytest.mark.parametrize("sig", ["KILL", "TERM"])
def test_a_kill_at_every_write_is_finished_by_resume(reference, tmp_path, sig):
    ref, points = reference
    # SIGTERM is handled at the next bytecode: after a rename it is a SIGTERM between writes,
    # which the "written" phase of the next write covers
    phases = faults.PHASES if sig == "KILL" else ("written",)
    for name, n in points:
        for phase in phases:
            folder, log = tmp_path / f"{name}-{n}-{phase}", tmp_path / "log.txt"
            code, text = train_child([*TINY, "--out", str(folder)], log,
                                     kill=faults.kill_spec(name, n, phase, sig))
            where = f"{sig} at {name} #{n} {phase}"
            if sig == "KILL":
                assert code == -9, (where, text)
                left = temp_files(folder)
                assert left == ([f"{name}.tmp{left[0].rsplit('.tmp', 1)[1]}"]
                                if phase == "written" else []), (where, left)
            else:  # SIGTERM: the trainer stops cleanly and removes its temporary file
                assert code == 143, (where, text)
                assert text.strip().splitlines()[-1] == "ftprop-train: terminated (SIGTERM)"
                assert temp_files(folder) == [], where
            recover(folder, log)
            assert_complete(folder, ref, 2)
