"""Run folders: creation (unique when not named), the lock a run holds on its folder, and the
rule that a folder holding a run is written only by that run (or after an explicit overwrite)."""
import datetime
import errno
import fcntl
import os
import socket

from .errors import RunIOError
from .files import remove_stale_temps
from .names import LAST_FILE, LOCK_FILE, RUN_FILES, TENSORBOARD_PREFIX


def usable_folder(path):
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
    usable_folder(parent)
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
        self.path = os.path.join(folder, LOCK_FILE)
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


def run_files(folder):
    """The files in folder that make it hold a run (config, metrics, checkpoints, curves,
    TensorBoard events), sorted; [] for a missing or empty folder or one of unrelated files."""
    try:
        entries = os.listdir(folder)
    except OSError:
        return []
    return sorted(e for e in entries
                  if (e in RUN_FILES or e.startswith(TENSORBOARD_PREFIX))
                  and os.path.isfile(os.path.join(folder, e)))


def _claim(path, continuing, overwrite):
    """Under the lock: refuses a folder that holds another run (unless overwrite, which removes
    that run's files), then removes the temporary files killed writers left."""
    found = run_files(path)
    if found and not continuing:
        if not overwrite:
            hint = (f"continue it with --resume {os.path.join(path, LAST_FILE)}, or "
                    if LAST_FILE in found else "")
            raise RunIOError(f"--out {path} already holds a run ({', '.join(found)}): "
                             f"{hint}replace it with --overwrite, or choose another --out")
        for name in found:
            os.remove(os.path.join(path, name))
    remove_stale_temps(path)


def open_run_folder(out, default_parent, default_name, continuing=False, overwrite=False):
    """The locked run folder: `out` when given (checked writable), else a fresh unique folder
    default_parent/default_name. Returns (path, RunLock); raises RunIOError in one line.

    A folder that already holds a run (run_files) is refused, unless continuing (it is the
    folder of the run being resumed) or overwrite (that run's files are removed first, under
    the lock). Unrelated files are left alone. Stale temporary files are removed."""
    if out is not None:
        usable_folder(out)
        path = out
    else:
        path = create_unique_folder(default_parent, default_name)
    lock = RunLock(path)
    try:
        _claim(path, continuing, overwrite)
    except OSError as exc:
        lock.release()
        raise RunIOError(f"--out {path}: cannot clear the folder ({exc.strerror})")
    except BaseException:
        lock.release()
        raise
    return path, lock
