"""Atomic writes, JSON without NaN, the per-epoch records of a run folder, and the removal of
temporary files a killed writer left.

Every file the trainer, the sweep and its report write goes through atomic(): readers never see
a partial file, the temporary file is removed when writing fails or SIGINT/SIGTERM arrive, and
one that SIGKILL left behind is removed by remove_stale_temps at the next start of the run.
"""
import errno
import json
import math
import os
import re
import signal

from . import faults
from .errors import RunIOError
from .names import ATOMIC_FILES, METRICS_FILE, RUN_FILES

_TEMP = re.compile(r"^(?P<name>.+)\.tmp(?P<pid>[0-9]+)$")
_STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}


def temp_name(path):
    """The temporary file atomic() writes path through: path.tmp<pid>."""
    return f"{path}.tmp{os.getpid()}"


def _os_error(exc):
    """The OSError that caused exc (itself, or one in its __cause__/__context__ chain)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, OSError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def write_failure(path, exc):
    """One line saying why path could not be written (the errno's name when there is one), or
    None when exc was not caused by the operating system."""
    err = _os_error(exc)
    if err is None:
        return None
    why = err.strerror or str(err) or type(err).__name__
    if err.errno in errno.errorcode:
        why += f" ({errno.errorcode[err.errno]})"
    return f"cannot write {path}: {why}"


def _sync(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove_quietly(tmp):
    """Removes tmp with SIGINT/SIGTERM held back, so that a second signal cannot leave it."""
    masked = hasattr(signal, "pthread_sigmask")
    old = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS) if masked else None
    try:
        if os.path.lexists(tmp):
            os.remove(tmp)
    finally:
        if masked:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)


def atomic(path, write):
    """Runs write(tmp_path), flushes the result to disk and renames it over path, so readers
    never see a partial file. The temporary file is removed on any exception, the trainer's
    SIGINT/SIGTERM included. A failure of the operating system (a full disk, say) is raised as
    RunIOError naming the file and the cause in one line."""
    tmp = temp_name(path)
    try:
        write(tmp)
        _sync(tmp)
        faults.at_write(path, "written")
        os.replace(tmp, path)
    except Exception as exc:  # SIGINT/SIGTERM (BaseException) pass through untouched
        message = write_failure(path, exc)
        if message is None:
            raise
        raise RunIOError(message) from exc
    finally:
        _remove_quietly(tmp)
    faults.at_write(path, "renamed")


def _pid_alive(pid):
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: another user's live process
        return True
    return True


def remove_stale_temps(folder, names=ATOMIC_FILES, locked=RUN_FILES):
    """Removes the temporary files NAME.tmp<pid> (NAME in names) that killed writers left in
    folder: those of a process no longer alive, and, since the caller holds the run's lock,
    every one of a name in locked (only the lock's holder writes those). Returns the names."""
    removed = []
    try:
        entries = os.listdir(folder)
    except OSError:
        return removed
    for entry in sorted(entries):
        match = _TEMP.match(entry)
        if match is None or match["name"] not in names:
            continue
        if match["name"] in locked or not _pid_alive(int(match["pid"])):
            try:
                os.remove(os.path.join(folder, entry))
                removed.append(entry)
            except FileNotFoundError:
                pass
    return removed


def write_text(path, text):
    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
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


def metrics_text(history):
    """The text of a run's metrics file: one strict JSON object per epoch record."""
    return "".join(dumps(h) + "\n" for h in history)


def write_metrics(folder, history):
    """The run's metrics file: one strict JSON object per epoch record."""
    write_text(os.path.join(folder, METRICS_FILE), metrics_text(history))
