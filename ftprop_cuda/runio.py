"""ftprop-train's files: the run folder and its lock, atomic writes, JSON without NaN,
checkpoints and their validation, random-number state, the curves plot and TensorBoard.

Importing this module does not import torch; the functions that need it import it.
"""
import datetime
import errno
import fcntl
import json
import math
import numbers
import os
import socket
import zipfile

CHECKPOINT_FORMAT = "ftprop_cuda.train/1"
LOCK_NAME = ".lock"


class RunIOError(Exception):
    """A run folder or checkpoint cannot be used: reported in one line (the trainer exits 2)."""


# ---------------------------------------------------------------------------------------------
# Atomic writes and JSON
# ---------------------------------------------------------------------------------------------
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


# ---------------------------------------------------------------------------------------------
# Run folder and its lock
# ---------------------------------------------------------------------------------------------
def _usable_folder(path):
    """Creates path (and parents) if needed and checks that files can be created in it."""
    try:
        os.makedirs(path, exist_ok=True)
    except FileExistsError:
        raise RunIOError(f"--out {path}: exists and is not a folder")
    except NotADirectoryError:
        raise RunIOError(f"--out {path}: a part of the path is a file, not a folder")
    except OSError as exc:
        raise RunIOError(f"--out {path}: cannot create the folder ({exc.strerror})")
    if not os.path.isdir(path):
        raise RunIOError(f"--out {path}: exists and is not a folder")
    if not os.access(path, os.W_OK | os.X_OK):
        raise RunIOError(f"--out {path}: the folder is not writable")


def create_unique_folder(parent, name):
    """parent/name, or parent/name-2, -3, ... when taken: created atomically (os.mkdir), so two
    runs started in the same second never share a folder."""
    _usable_folder(parent)
    for n in range(1, 10000):
        path = os.path.join(parent, name if n == 1 else f"{name}-{n}")
        try:
            os.mkdir(path)
            return path
        except FileExistsError:
            continue
        except OSError as exc:
            raise RunIOError(f"cannot create run folder {path} ({exc.strerror})")
    raise RunIOError(f"cannot create run folder {os.path.join(parent, name)}: 9999 taken")


class RunLock:
    """An exclusive lock (fcntl.flock) on a run folder's .lock file, held while the run lives.

    The file says who holds it (pid, host, start time), so a second run on the folder can name
    the holder. The kernel releases the lock when the process ends, however it ends."""

    def __init__(self, folder):
        self.folder = folder
        self.path = os.path.join(folder, LOCK_NAME)
        try:
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise RunIOError(f"--out {folder}: cannot create files there ({exc.strerror})")
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = os.pread(self.fd, 4096, 0).decode("utf-8", "replace").strip() or "unknown"
            os.close(self.fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise RunIOError(f"run folder {folder} is in use by another run ({holder}); "
                                 "wait for it to end or choose another --out")
            raise RunIOError(f"run folder {folder}: cannot lock {self.path} ({exc.strerror})")
        started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, f"pid {os.getpid()} on host {socket.gethostname()}, "
                           f"started {started}\n".encode(), 0)

    def release(self):
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor drops the flock
            self.fd = None


def open_run_folder(out, default_parent, default_name):
    """The locked run folder: `out` when given (checked writable), else a fresh unique folder
    default_parent/default_name. Returns (path, RunLock); raises RunIOError in one line."""
    if out:
        _usable_folder(out)
        path = out
    else:
        path = create_unique_folder(default_parent, default_name)
    return path, RunLock(path)


# ---------------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------------
def save_checkpoint(path, state):
    import torch

    atomic(path, lambda tmp: torch.save(state, tmp))


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


def validate_checkpoint(path, ckpt, config_types, need_optimizer):
    """Checks the keys of a loaded checkpoint and their types; RunIOError names the first fault.
    config_types maps each config key to (accepted types, description)."""
    import torch

    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise RunIOError(f"cannot read checkpoint {path}: not an ftprop-train checkpoint "
                         f"(no format marker {CHECKPOINT_FORMAT!r})")
    config = _require(path, ckpt, "config", dict, "a dict")
    for key, (types, expected) in config_types.items():
        if key not in config:
            raise RunIOError(f"cannot read checkpoint {path}: config key {key!r} is missing")
        _check_type(path, f"config {key!r}", config[key], types, expected)
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
    if not need_optimizer:
        return
    if "optimizer" not in ckpt:
        raise RunIOError(f"cannot resume from {path}: it holds no optimizer state "
                         "(best.pt keeps only the model; resume from last.pt)")
    _require(path, ckpt, "optimizer", dict, "an optimizer state dict")
    _require(path, ckpt, "scheduler", dict, "a scheduler state dict")
    rng = _require(path, ckpt, "rng", list, "a list of per-process random states")
    if not rng or not all(isinstance(r, dict) and {"torch", "cuda", "python", "numpy"} <= set(r)
                          for r in rng):
        raise RunIOError(f"cannot read checkpoint {path}: 'rng' does not hold the random "
                         "states (torch, cuda, python, numpy) of each process")


def load_checkpoint(path, config_types, need_optimizer):
    """A checkpoint the trainer wrote, validated; RunIOError naming the file and the fault."""
    import torch

    if not os.path.isfile(path):
        why = "not a file" if os.path.exists(path) else "no such file"
        raise RunIOError(f"cannot read checkpoint {path}: {why}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any failure to load means "not a usable checkpoint"
        raise RunIOError(f"cannot read checkpoint {path}: {_describe_load_failure(path, exc)}")
    validate_checkpoint(path, ckpt, config_types, need_optimizer)
    return ckpt


# ---------------------------------------------------------------------------------------------
# Random-number state
# ---------------------------------------------------------------------------------------------
def rng_state():
    import random

    import numpy as np
    import torch

    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python": random.getstate(),
        "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
    }


def set_rng_state(state, path):
    import random

    import numpy as np
    import torch

    try:
        torch.set_rng_state(state["torch"])
        if state["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))
        name, keys, pos, has_gauss, cached = state["numpy"]
        np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    except (TypeError, ValueError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RunIOError(f"cannot read checkpoint {path}: its random state is damaged ({first})")


def seed_everything(seed):
    import random

    import numpy as np
    import torch

    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)


# ---------------------------------------------------------------------------------------------
# Curves and TensorBoard
# ---------------------------------------------------------------------------------------------
def plot_curves(path, history):
    """Loss and top-1 per epoch, train and test, in one PNG (matplotlib, no pyplot state)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.ticker import MaxNLocator
    except ImportError:
        return
    epochs = [h["epoch"] for h in history]
    fig = Figure(figsize=(10, 4))
    FigureCanvasAgg(fig)
    for ax, key, label in ((fig.add_subplot(1, 2, 1), "loss", "loss"),
                           (fig.add_subplot(1, 2, 2), "top1", "top-1 (%)")):
        for split, style in (("train", "-o"), ("test", "-s")):
            ax.plot(epochs, [h[f"{split}_{key}"] for h in history], style, label=split, ms=3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))


class TensorBoard:
    """TensorBoard scalars when the tensorboard package is installed; a no-op otherwise."""

    def __init__(self, out, enabled, purge_step):
        self.writer = None
        if not enabled:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            return
        self.writer = SummaryWriter(out, purge_step=purge_step)

    def log(self, record):
        if self.writer is None:
            return
        step = record["epoch"]
        for key, value in record.items():
            if key != "epoch" and isinstance(value, (int, float)):
                split, _, name = key.partition("_")
                self.writer.add_scalar(f"{split}/{name}" if name else key, value, step)
        for layer, stats in record.get("diagnostics", {}).items():
            for field, value in stats.items():
                if value is not None:
                    self.writer.add_scalar(f"diagnostics/{layer}/{field}", value, step)
        self.writer.flush()

    def close(self):
        if self.writer is not None:
            self.writer.close()
