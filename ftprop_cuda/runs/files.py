"""Atomic writes, JSON without NaN, and the per-epoch records of a run folder.

Every file the trainer, the sweep and its report write goes through atomic(): readers never see
a partial file, and the temporary file is removed when writing fails.
"""
import json
import math
import os

from .names import METRICS_FILE


def atomic(path, write):
    """Runs write(tmp_path) and renames the result over path, so readers never see a partial file.
    The temporary file is removed on any exception, the trainer's SIGINT/SIGTERM included."""
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_text(path, text):
    def write(tmp):
        with open(tmp, "w") as f:
            f.write(text)
    atomic(path, write)


def json_safe(value):
    """value with every non-finite float replaced by None (JSON has no NaN or infinity)."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def dumps(value, **kw):
    """json.dumps that never writes NaN or Infinity (strict JSON; non-finite numbers as null)."""
    return json.dumps(json_safe(value), allow_nan=False, **kw)


def write_json(path, value, strict=False, **kw):
    """value as JSON indented by 2 with a final newline, written atomically; strict: through
    dumps (non-finite numbers as null), else json.dumps as it is."""
    write_text(path, (dumps if strict else json.dumps)(value, indent=2, **kw) + "\n")


def read_json(path):
    """The JSON value in path, or None when the file is missing or not JSON."""
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def read_metrics(folder):
    """The epoch records of a run folder's metrics file (a torn last line, if any, is ignored)."""
    records = []
    try:
        with open(os.path.join(folder, METRICS_FILE)) as f:
            for line in f:
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue
                if isinstance(rec, dict) and "epoch" in rec:
                    records.append(rec)
    except OSError:
        pass
    return records


def write_metrics(folder, history):
    """The run's metrics file: one strict JSON object per epoch record."""
    write_text(os.path.join(folder, METRICS_FILE), "".join(dumps(h) + "\n" for h in history))
