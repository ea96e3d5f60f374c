"""A child process that ends when its parent ends, however the parent ends (kill -9 included).

    python -m ftprop_cuda.runs.parent PARENT_PID MODULE [ARGS...]

runs `python -m MODULE ARGS...` in this very process after end_with_parent(PARENT_PID): on
Linux the kernel sends SIGTERM the moment the parent dies (prctl PR_SET_PDEATHSIG, through
ctypes); elsewhere, or when prctl is unavailable, a daemon thread polls the parent's pid and
sends SIGTERM itself. ftprop-sweep starts its trainers this way, so killing a sweep with any
signal ends its trainers too (SIGTERM: they stop cleanly and remove their temporary files).
Nothing here imports torch or the rest of the package.
"""
import ctypes
import ctypes.util
import os
import runpy
import signal
import sys
import threading
import time

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
POLL_S = 0.5  # how often the polling fallback looks at the parent

__all__ = ["end_with_parent", "parent_alive", "POLL_S"]


def _prctl():
    """libc's prctl, or None off Linux or when it cannot be found."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return libc.prctl
    except (OSError, AttributeError):
        return None


def parent_alive(parent_pid):
    """Whether this process is still the child of parent_pid (an orphan is re-parented)."""
    return os.getppid() == parent_pid


def _poll(parent_pid, sig, poll_s):
    while parent_alive(parent_pid):
        time.sleep(poll_s)
    os.kill(os.getpid(), sig)


def end_with_parent(parent_pid, sig=signal.SIGTERM, poll_s=POLL_S, use_prctl=True):
    """Arranges for this process to receive `sig` when parent_pid ends; returns how ('prctl' or
    'poll'). A parent that ended before the arrangement was made is noticed too: the signal is
    sent at once."""
    prctl = _prctl() if use_prctl else None
    if prctl is not None and prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0:
        how = "prctl"
    else:
        threading.Thread(target=_poll, args=(parent_pid, sig, poll_s), daemon=True,
                         name="end-with-parent").start()
        how = "poll"
    if not parent_alive(parent_pid):
        os.kill(os.getpid(), sig)
    return how


def _main(argv):
    if len(argv) < 2 or not argv[0].isdigit():
        print("usage: python -m ftprop_cuda.runs.parent PARENT_PID MODULE [ARGS...]",
              file=sys.stderr)
        return 2
    end_with_parent(int(argv[0]))
    sys.argv = [argv[1], *argv[2:]]
    runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
