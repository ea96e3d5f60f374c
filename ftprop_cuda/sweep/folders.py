"""A sweep folder's runs: where each lives (DIR/NAME/seed-S), whether it is finished, its
summary, and the provenance a sweep records (machine, commit, time)."""
import datetime
import os
import platform
import subprocess

from ..runs import read_json, read_metrics
from ..runs.names import CONFIG_FILE, LAST_FILE, SEED_PREFIX

# The folder holding the ftprop_cuda package (a source checkout's root, or site-packages).
SOURCE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

__all__ = ["SOURCE_ROOT", "run_folder", "seed_folders", "run_state", "summarise_run",
           "machine_info", "git_commit", "now", "read_json", "read_metrics"]


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


def run_state(folder, want_epochs=None):
    """'finished', 'interrupted' or 'fresh', read from the files ftprop-train writes.

    Finished: metrics.jsonl has the epoch that config.json asks for (and, when the grid names
    its epoch count, that count is not larger). Interrupted: otherwise, when last.pt exists."""
    config = read_json(os.path.join(folder, CONFIG_FILE))
    epochs = config.get("epochs") if isinstance(config, dict) else None
    if isinstance(epochs, int):
        done = any(rec.get("epoch") == epochs for rec in read_metrics(folder))
        if done and (want_epochs is None or want_epochs <= epochs):
            return "finished"
    if os.path.isfile(os.path.join(folder, LAST_FILE)):
        return "interrupted"
    return "fresh"


def summarise_run(records):
    """best/final test top-1 and the (first) epoch of the best, from the epoch records."""
    records = sorted(records, key=lambda r: r["epoch"])
    best = max(records, key=lambda r: r["test_top1"])  # max keeps the first of equal values
    return {"best_top1": best["test_top1"], "best_epoch": best["epoch"],
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
