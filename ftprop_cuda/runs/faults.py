"""Fault injection at atomic writes, for the kill tests (and anyone checking recovery by hand).

Two environment variables, read at each atomic write (unset, as in normal use, each costs one
lookup):

    FTPROP_KILL_AT="NAME:N:PHASE:SIGNAL"  sends SIGNAL (KILL, TERM or INT) to this process at
        the N-th atomic write (counted from 1, per process) of a file whose base name is NAME,
        at PHASE "written" (the temporary file NAME.tmp<pid> is whole, not yet renamed) or
        "renamed" (the file is in place and nothing after it has run yet).
    FTPROP_TRACE_WRITES=FILE  appends the base name of each file written atomically to FILE,
        one per line: the list of write points a kill test walks through.
"""
import os
import signal

KILL_ENV = "FTPROP_KILL_AT"
TRACE_ENV = "FTPROP_TRACE_WRITES"
PHASES = ("written", "renamed")
SIGNALS = {"KILL": signal.SIGKILL, "TERM": signal.SIGTERM, "INT": signal.SIGINT}

_counts = {}


def kill_spec(name, occurrence, phase, sig):
    """The FTPROP_KILL_AT value for a kill at that write."""
    if phase not in PHASES or sig not in SIGNALS:
        raise ValueError(f"phase must be one of {PHASES} and sig one of {tuple(SIGNALS)}")
    return f"{name}:{occurrence}:{phase}:{sig}"


def _parse(spec):
    name, occurrence, phase, sig = spec.rsplit(":", 3)
    if phase not in PHASES or sig not in SIGNALS:
        raise ValueError(f"{KILL_ENV}={spec!r}: expected NAME:N:PHASE:SIGNAL with PHASE in "
                         f"{PHASES} and SIGNAL in {tuple(SIGNALS)}")
    return name, int(occurrence), phase, SIGNALS[sig]


def at_write(path, phase):
    """Called by atomic() at each phase of each write; acts only when the variables are set."""
    spec, trace = os.environ.get(KILL_ENV), os.environ.get(TRACE_ENV)
    if not spec and not trace:
        return
    name = os.path.basename(path)
    if phase == "written":
        _counts[name] = _counts.get(name, 0) + 1
        if trace:
            with open(trace, "a") as f:
                f.write(name + "\n")
    if spec:
        want, occurrence, at, sig = _parse(spec)
        if (want, occurrence, at) == (name, _counts.get(name, 0), phase):
            os.kill(os.getpid(), sig)  # a Python handler (SIGTERM, SIGINT) runs right after
