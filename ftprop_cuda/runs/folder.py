"""Run folders: creation (unique when not named) and the lock a run holds on its folder."""
import datetime
import errno
import fcntl
import os
import socket

from .errors import RunIOError
from .names import LOCK_FILE


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


def open_run_folder(out, default_parent, default_name):
    """The locked run folder: `out` when given (checked writable), else a fresh unique folder
    default_parent/default_name. Returns (path, RunLock); raises RunIOError in one line."""
    if out:
        usable_folder(out)
        path = out
    else:
        path = create_unique_folder(default_parent, default_name)
    return path, RunLock(path)
