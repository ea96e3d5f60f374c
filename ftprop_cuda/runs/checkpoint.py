"""Checkpoints: atomic saving, loading with a one-line reason when it fails (the zip members'
CRCs are verified first, so a damaged file is never loaded), and validation of the keys and
types a trainer checkpoint holds. torch is imported by the functions that need it, after the
file is found.
"""
import numbers
import os
import zipfile
import zlib

from .errors import RunIOError
from .files import atomic
from .names import BEST_FILE, LAST_FILE

CHECKPOINT_FORMAT = "ftprop_cuda.train/1"
RNG_KEYS = {"torch", "cuda", "python", "numpy"}


def save_checkpoint(path, state):
    import torch

    def write(tmp):
        # through a Python file: a full disk surfaces as OSError(ENOSPC), not as a C++ "enforce
        # fail" (atomic names the file and the cause)
        with open(tmp, "wb") as f:
            torch.save(state, f)
    atomic(path, write)


def _zip_fault(path):
    """Why the checkpoint's zip archive is damaged (a member failing its CRC-32 check, or an
    unreadable member), or None when every member reads back whole."""
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                try:
                    with archive.open(info) as member:
                        while member.read(1 << 20):
                            pass
                except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as exc:
                    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                    crc = "CRC" in first
                    return (f"member {info.filename!r} " + ("fails its CRC-32 check"
                            if crc else f"cannot be read ({first or type(exc).__name__})")
                            + ": the file is damaged")
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        return f"the file is damaged ({str(exc).strip() or type(exc).__name__})"
    return None


def _describe_load_failure(path, exc):
    if os.path.getsize(path) == 0:
        return "the file is empty (0 bytes)"
    if not zipfile.is_zipfile(path):
        with open(path, "rb") as f:
            zip_start = f.read(4) == b"PK\x03\x04"
        if zip_start:
            return "the file is truncated or damaged (its zip archive has no central directory)"
        return "not a checkpoint file (torch.save writes a zip archive; this is not one)"
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    first = first.split(". ")[0].rstrip(".")
    return f"torch.load failed: {type(exc).__name__}" + (f": {first}" if first else "")


def _check_type(path, where, value, types, expected):
    types = types if isinstance(types, tuple) else (types,)
    # bool is an int to Python but never a valid count or rate here
    if isinstance(value, bool) and bool not in types:
        ok = False
    else:
        ok = isinstance(value, types)
    if not ok:
        raise RunIOError(f"cannot read checkpoint {path}: {where} is "
                         f"{type(value).__name__} {value!r:.40}, expected {expected}")


def _require(path, ckpt, key, types, expected):
    if key not in ckpt:
        raise RunIOError(f"cannot read checkpoint {path}: key {key!r} is missing")
    _check_type(path, f"{key!r}", ckpt[key], types, expected)
    return ckpt[key]


def _validate_config(path, ckpt, config_types):
    config = _require(path, ckpt, "config", dict, "a dict")
    for key, (types, expected) in config_types.items():
        if key not in config:
            raise RunIOError(f"cannot read checkpoint {path}: config key {key!r} is missing")
        _check_type(path, f"config {key!r}", config[key], types, expected)


def _validate_model_and_history(path, ckpt):
    import torch

    epoch = _require(path, ckpt, "epoch", int, "an integer")
    if epoch < 1:
        raise RunIOError(f"cannot read checkpoint {path}: 'epoch' is {epoch}, expected >= 1")
    model = _require(path, ckpt, "model", dict, "a state dict")
    if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in model.items()):
        raise RunIOError(f"cannot read checkpoint {path}: 'model' is not a state dict of tensors")
    history = _require(path, ckpt, "history", list, "a list of epoch records")
    if len(history) != epoch or not all(isinstance(h, dict) for h in history):
        raise RunIOError(f"cannot read checkpoint {path}: 'history' does not hold {epoch} "
                         "epoch records")
    best = ckpt.get("best")
    if best is not None and not (isinstance(best, dict) and isinstance(best.get("epoch"), int)
                                 and isinstance(best.get("test_top1"), numbers.Real)):
        raise RunIOError(f"cannot read checkpoint {path}: 'best' is not an epoch record")


def _validate_training_state(path, ckpt):
    if "optimizer" not in ckpt:
        raise RunIOError(f"cannot resume from {path}: it holds no optimizer state "
                         f"({BEST_FILE} keeps only the model; resume from {LAST_FILE})")
    _require(path, ckpt, "optimizer", dict, "an optimizer state dict")
    _require(path, ckpt, "scheduler", dict, "a scheduler state dict")
    rng = _require(path, ckpt, "rng", list, "a list of per-process random states")
    if not rng or not all(isinstance(r, dict) and RNG_KEYS <= set(r) for r in rng):
        raise RunIOError(f"cannot read checkpoint {path}: 'rng' does not hold the random "
                         "states (torch, cuda, python, numpy) of each process")


def validate_checkpoint(path, ckpt, config_types, need_optimizer):
    """Checks the keys of a loaded checkpoint and their types; RunIOError names the first fault.
    config_types maps each config key to (accepted types, description)."""
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise RunIOError(f"cannot read checkpoint {path}: not an ftprop-train checkpoint "
                         f"(no format marker {CHECKPOINT_FORMAT!r})")
    _validate_config(path, ckpt, config_types)
    _validate_model_and_history(path, ckpt)
    if need_optimizer:
        _validate_training_state(path, ckpt)


def load_checkpoint(path, config_types, need_optimizer):
    """A checkpoint the trainer wrote, verified (zip CRCs) and validated; RunIOError naming the
    file and the fault."""
    if not os.path.isfile(path):
        why = "not a file" if os.path.exists(path) else "no such file"
        raise RunIOError(f"cannot read checkpoint {path}: {why}")
    if zipfile.is_zipfile(path):
        fault = _zip_fault(path)
        if fault is not None:
            raise RunIOError(f"cannot read checkpoint {path}: {fault}")
    import torch

    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any failure to load means "not a usable checkpoint"
        raise RunIOError(f"cannot read checkpoint {path}: {_describe_load_failure(path, exc)}")
    validate_checkpoint(path, ckpt, config_types, need_optimizer)
    return ckpt
