"""A sweep folder's runs: where each lives (DIR/NAME/seed-S), their epoch records read and
checked line by line, whether a run is finished, its summary, and the provenance a sweep records
(machine, commit, time)."""
import datetime
import json
import math
import numbers
import os
import platform
import subprocess

from ..runs import read_json
from ..runs.names import CONFIG_FILE, LAST_FILE, METRICS_FILE, SEED_PREFIX
from .errors import SweepError

# The folder holding the ftprop_cuda package (a source checkout's root, or site-packages).
SOURCE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

__all__ = ["SOURCE_ROOT", "RecordsError", "run_folder", "seed_folders", "read_records",
           "read_metrics", "run_status", "run_state", "summarise_run", "machine_info",
           "git_commit", "now", "read_json"]


class RecordsError(SweepError):
    """A metrics file that cannot be trusted: the message names the file and the line."""


def run_folder(out, name, seed):
    return os.path.join(out, name, f"{SEED_PREFIX}{seed}")


def seed_folders(folder):
    """(seed, path) of a configuration folder's seed-S run folders, by seed."""
    out = []
    try:
        entries = os.listdir(folder)
    except OSError:
        return out
    for entry in entries:
        if entry.startswith(SEED_PREFIX) and os.path.isdir(os.path.join(folder, entry)):
            try:
                out.append((int(entry[len(SEED_PREFIX):]), os.path.join(folder, entry)))
            except ValueError:
                continue
    return sorted(out)


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _number_or_none(value):
    """A finite number as float, None for null or a non-finite number; ValueError otherwise."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError
    return float(value) if math.isfinite(value) else None


def _record(raw, previous):
    """One metrics line as a checked epoch record; ValueError saying what is wrong."""
    try:
        rec = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ValueError("not UTF-8 text")
    except ValueError:
        raise ValueError("not a JSON object")
    if not isinstance(rec, dict):
        raise ValueError("not a JSON object")
    if not _is_int(rec.get("epoch")) or rec["epoch"] < 1:
        raise ValueError(f"'epoch' is {rec.get('epoch')!r}, expected an integer >= 1")
    if previous is not None and rec["epoch"] <= previous:
        raise ValueError(f"epoch {rec['epoch']} follows epoch {previous}")
    if "test_top1" not in rec:
        raise ValueError("'test_top1' is missing")
    for key in ("test_top1", "seconds"):
        try:
            rec[key] = _number_or_none(rec.get(key))
        except ValueError:
            raise ValueError(f"{key!r} is {rec[key]!r:.40}, expected a number or null")
    return rec


def read_records(folder):
    """The epoch records of a run's metrics file, checked line by line ([] when it is missing).

    Only a torn last line (no final newline: a writer killed mid-line) is left out quietly; any
    other line that is not an epoch record raises RecordsError naming the file and the line.
    A non-finite or null number reads as None."""
    path = os.path.join(folder, METRICS_FILE)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise RecordsError(f"cannot read {path}: {exc.strerror or exc}")
    lines = data.split(b"\n")
    torn = lines.pop()  # b"" when the file ends with a newline
    records = []
    for number, raw in enumerate(lines + ([torn] if torn.strip() else []), 1):
        if not raw.strip():
            continue
        try:
            records.append(_record(raw, records[-1]["epoch"] if records else None))
        except ValueError as exc:
            if number > len(lines):
                break  # a torn last line: expected after a kill
            raise RecordsError(f"{path} line {number}: {exc}") from None
    return records


def read_metrics(folder):
    """read_records, with a damaged file read as no records (for a quick look)."""
    try:
        return read_records(folder)
    except RecordsError:
        return []


def run_status(folder, want_epochs=None):
    """(state, problem): state is 'finished', 'interrupted', 'fresh' or 'damaged' (problem then
    says where), read from the files ftprop-train writes.

    Finished: metrics.jsonl has the epoch that config.json asks for (and, when the grid names
    its epoch count, that count is not larger). Interrupted: otherwise, when last.pt exists."""
    try:
        records = read_records(folder)
    except RecordsError as exc:
        return "damaged", str(exc)
    config = read_json(os.path.join(folder, CONFIG_FILE))
    epochs = config.get("epochs") if isinstance(config, dict) else None
    if _is_int(epochs):
        done = any(rec["epoch"] == epochs for rec in records)
        if done and (want_epochs is None or want_epochs <= epochs):
            return "finished", None
    if os.path.isfile(os.path.join(folder, LAST_FILE)):
        return "interrupted", None
    return "fresh", None


def run_state(folder, want_epochs=None):
    """run_status's state alone."""
    return run_status(folder, want_epochs)[0]


def summarise_run(records):
    """best/final test top-1 and the (first) epoch of the best, from the epoch records; a
    value that is not finite (None) is never the best, and a final one stays None."""
    records = sorted(records, key=lambda r: r["epoch"])
    finite = [r for r in records if r["test_top1"] is not None]
    best = max(finite, key=lambda r: r["test_top1"]) if finite else None  # first of equals
    return {"best_top1": best["test_top1"] if best else None,
            "best_epoch": best["epoch"] if best else None,
            "final_top1": records[-1]["test_top1"], "epochs": records[-1]["epoch"]}


def machine_info():
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"platform": platform.platform(), "cpu": cpu, "cores": os.cpu_count(),
            "python": platform.python_version()}


def git_commit():
    """HEAD of the repository holding this package (with '+dirty' for local edits), or None."""
    try:
        head = subprocess.run(["git", "-C", SOURCE_ROOT, "rev-parse", "HEAD"],
                              capture_output=True, text=True, timeout=20)
        if head.returncode:
            return None
        dirty = subprocess.run(["git", "-C", SOURCE_ROOT, "status", "--porcelain",
                                "--untracked-files=no"], capture_output=True, text=True, timeout=20)
        return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def now():
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
