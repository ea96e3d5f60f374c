"""Generic run-file I/O: the file names of a run folder, atomic writes, strict JSON, the run
folder and its lock, checkpoints and their validation, random-number state.

    names.py       the run-folder and sweep-folder file names (config.json, metrics.jsonl, ...)
    files.py       atomic(), write_text, write_json, dumps (no NaN), read_json, read/write_metrics,
                   remove_stale_temps (what a SIGKILL left), write_failure
    folder.py      usable_folder, create_unique_folder, RunLock, run_files, open_run_folder
    checkpoint.py  CHECKPOINT_FORMAT, save_checkpoint, load_checkpoint (zip CRCs verified),
                   validate_checkpoint
    faults.py      the kill hook of the recovery tests (FTPROP_KILL_AT, FTPROP_TRACE_WRITES)
    rng.py         rng_state, set_rng_state, seed_everything
    errors.py      RunIOError

The names below are loaded on first use (PEP 562). Nothing here imports torch on import, and
nothing imports the rest of the package.
"""
import importlib

# public name -> the submodule that defines it
_LAZY = {
    "RunIOError": ".errors",
    **dict.fromkeys(("atomic", "write_text", "json_safe", "dumps", "write_json", "read_json",
                     "read_metrics", "write_metrics", "metrics_text", "temp_name",
                     "remove_stale_temps", "write_failure"), ".files"),
    **dict.fromkeys(("usable_folder", "create_unique_folder", "RunLock", "run_files",
                     "open_run_folder"), ".folder"),
    **dict.fromkeys(("CHECKPOINT_FORMAT", "save_checkpoint", "load_checkpoint",
                     "validate_checkpoint"), ".checkpoint"),
    **dict.fromkeys(("rng_state", "set_rng_state", "seed_everything"), ".rng"),
}


def __getattr__(name):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name], __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


__all__ = sorted(_LAZY)
