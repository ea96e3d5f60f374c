"""Who may work on a run folder: a sweep's claim, the trainer's lock, and leftovers of killed
writers.

A sweep claims a run (an exclusive flock on NAME/seed-S/.sweep-lock) before it looks at the run's
state and holds the claim until the run's trainer has ended, so two sweeps on one folder never
train a run twice: the second skips what the first holds. The kernel drops the claim when the
sweep ends, however it ends. A trainer's own lock (.lock) is held by a live trainer, e.g. one
still stopping after its sweep was killed: the sweep waits a while for it, then skips the run.
"""
import errno
import fcntl
import os
import re
import time

from ..runs.names import LOCK_FILE

CLAIM_FILE = ".sweep-lock"
TRAINER_WAIT_S = 60  # how long a run's trainer lock may stay taken before the run is skipped
TEMP_RE = re.compile(r"\.tmp(\d+)\Z")  # runs.files.atomic's temporary names: FILE.tmp<pid>

__all__ = ["CLAIM_FILE", "TRAINER_WAIT_S", "Claim", "trainer_holder", "wait_for_trainer",
           "remove_stale_temps"]


def _try_flock(fd):
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False
        raise


class Claim:
    """A sweep's exclusive claim on one run folder; take() returns None when another holds it."""

    def __init__(self, fd):
        self.fd = fd

    @classmethod
    def take(cls, folder):
        fd = os.open(os.path.join(folder, CLAIM_FILE), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC,
                     0o644)
        if _try_flock(fd):
            return cls(fd)
        os.close(fd)
        return None

    def release(self):
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor drops the flock
            self.fd = None


def trainer_holder(folder):
    """None when no live trainer holds the run's lock, else what its lock file says."""
    try:
        fd = os.open(os.path.join(folder, LOCK_FILE), os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        if _try_flock(fd):
            return None  # closing below releases it at once
        return os.pread(fd, 4096, 0).decode("utf-8", "replace").strip() or "unknown"
    finally:
        os.close(fd)


def wait_for_trainer(folder, wait_s=TRAINER_WAIT_S, poll_s=0.2):
    """trainer_holder, waiting up to wait_s for a holder to end; None once the lock is free."""
    deadline = time.monotonic() + wait_s
    while True:
        holder = trainer_holder(folder)
        if holder is None or time.monotonic() >= deadline:
            return holder
        time.sleep(poll_s)


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temps(folder):
    """Removes the FILE.tmp<pid> files in folder whose writer is no longer alive (what a kill -9
    leaves of an atomic write); returns their names."""
    removed = []
    try:
        entries = os.listdir(folder)
    except OSError:
        return removed
    for entry in sorted(entries):
        m = TEMP_RE.search(entry)
        if m and int(m.group(1)) != os.getpid() and not _alive(int(m.group(1))):
            try:
                os.remove(os.path.join(folder, entry))
                removed.append(entry)
            except FileNotFoundError:
                pass
            except IsADirectoryError:
                continue
    return removed
