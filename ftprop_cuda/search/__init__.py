"""ftprop_cuda.search: FTPROP with explicit target search (the paper's Algorithm 1) for small
sign networks, full batch; an exhaustive mode for tiny problems; ftprop-search on the command
line. Names load on first use, so that the command line checks its arguments before importing
torch or scipy.
"""
import importlib

_LAZY = {
    "search": ".search",
    "start_weights": ".search",
    "initial_targets": ".search",
    "exhaustive": ".exhaustive",
    "SearchResult": ".result",
    "Problem": ".state",
    "State": ".state",
    "fit_unit": ".fit",
    "fit_lp": ".fit",
    "make_task": ".tasks",
    "main": ".cli",
}


def __getattr__(name):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


__all__ = sorted(_LAZY)
