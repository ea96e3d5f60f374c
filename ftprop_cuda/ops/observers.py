"""The observer hook: step() and staircase() announce each unit call to whoever registered.

Lean memory mode (ftprop_cuda.memory) registers itself here while a lean forward runs; the ops
never import it. One observer per thread at a time (a nested registration replaces the outer
one until it ends). The ops read STATE.observer on every unit call: a plain attribute read,
None when nobody observes, and announce only calls whose z requires a gradient.
"""
import contextlib
import threading


class UnitObserver:
    """What an observer implements. `rebuild(z)` recomputes y from z with the unit's forward
    kernel, or is None (the reference path: y is not rebuilt from z); `kept_z`: the unit's
    backward keeps z itself (else only a code of z, or nothing)."""

    def step_unit(self, z, y, rebuild, zero_one, kept_z):
        """y = step(z): values 0/1 (zero_one) or -1/+1."""

    def staircase_unit(self, z, y, rebuild, steps, lo, hi, kept_z):
        """y = staircase(z, steps, lo, hi)."""


class _State(threading.local):
    observer = None  # a class attribute: every thread starts with no observer


STATE = _State()


def current():
    """The observer registered in this thread, or None."""
    return STATE.observer


@contextlib.contextmanager
def observing(observer):
    """Registers observer for this thread while the block runs (the previous one after it)."""
    prev = STATE.observer
    STATE.observer = observer
    try:
        yield observer
    finally:
        STATE.observer = prev
