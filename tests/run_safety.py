"""Helpers of the run-safety tests: trainings in child processes that can be killed at a named
atomic write (the FTPROP_KILL_AT hook of ftprop_cuda.runs.faults), and checks of a run folder.

The children are forked from a multiprocessing fork server that has imported torch and the
trainer but run nothing (so a child starts in a fraction of a second and no OpenMP pool is
forked): a kill test needs a few dozen trainings.
"""
import json
import multiprocessing
import os
import re
import sys

import torch  # noqa: F401  (imported once, in the fork server)
import torch._dynamo  # noqa: F401  (torch.optim imports it on first use: seconds)

import ftprop_cuda.train.session  # noqa: F401
import ftprop_cuda.train.state  # noqa: F401
from ftprop_cuda import runs, train
from ftprop_cuda.runs import faults
from ftprop_cuda.runs.names import RUN_FILES

try:  # the digits data set and the curves plot: imported here, not in every child
    import matplotlib.backends.backend_agg  # noqa: F401
    import matplotlib.figure  # noqa: F401
    import sklearn.datasets  # noqa: F401
except ImportError:
    pass

# the smallest training that exercises every write: two epochs (a middle and a final one)
TINY = ["--no-tensorboard", "--quiet", "--dataset", "digits", "--train-limit", "32",
        "--test-limit", "32", "--batch-size", "32", "--lr", "1e-3", "--epochs", "2"]
TEMP = re.compile(r"\.tmp[0-9]+$")

_context = None


def _fork_server():
    global _context
    if _context is None:
        _context = multiprocessing.get_context("forkserver")
        _context.set_forkserver_preload([__name__])
    return _context


def _child(argv, env, log):
    os.environ.update(env)
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    try:
        code = train.main(argv)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code)


def train_child(argv, log, kill=None, trace=None, timeout=300):
    """ftprop-train argv in a child process: (exit code, its stdout and stderr). kill: a
    faults.kill_spec; trace: a file that receives the names of the files written. A child
    ended by a signal has the negative signal number as its code."""
    env = {}
    if kill is not None:
        env[faults.KILL_ENV] = kill
    if trace is not None:
        env[faults.TRACE_ENV] = str(trace)
    proc = _fork_server().Process(target=_child, args=(list(argv), env, str(log)))
    proc.start()
    proc.join(timeout)
    if proc.exitcode is None:
        proc.kill()
        proc.join()
        raise AssertionError(f"ftprop-train {argv} did not end within {timeout} s")
    with open(log) as f:
        return proc.exitcode, f.read()


def write_points(trace):
    """[(name, occurrence)] of each atomic write listed in a trace file, in order."""
    seen, points = {}, []
    with open(trace) as f:
        for name in f.read().split():
            seen[name] = seen.get(name, 0) + 1
            points.append((name, seen[name]))
    return points


def temp_files(folder):
    return sorted(e for e in os.listdir(folder) if TEMP.search(e))


def epoch_records(folder):
    """metrics.jsonl's records without their timings (parsed strictly: no NaN tokens)."""
    def reject(token):
        raise ValueError(f"not JSON: {token}")
    with open(os.path.join(folder, "metrics.jsonl"), encoding="utf-8") as f:
        records = [json.loads(line, parse_constant=reject) for line in f]
    return [{k: v for k, v in r.items() if k != "seconds"} for r in records]


def assert_complete(folder, reference, epochs):
    """folder holds a whole run: every run file, no temporary file, last.pt at the final
    epoch, and metrics bitwise those of the uninterrupted reference (timings aside)."""
    assert temp_files(folder) == [], temp_files(folder)
    assert set(RUN_FILES) <= set(os.listdir(folder)), os.listdir(folder)
    assert epoch_records(folder) == epoch_records(reference)
    ckpt = runs.load_checkpoint(os.path.join(folder, "last.pt"), train.CONFIG_TYPES, True)
    assert ckpt["epoch"] == epochs
    assert [r["epoch"] for r in epoch_records(folder)] == list(range(1, epochs + 1))


def one_error_line(text):
    return text.count("\n") == 1 and text.startswith("ftprop-train: error: ")
