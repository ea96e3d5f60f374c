"""ftprop_cuda: hard-threshold units trained with feasible target propagation (FTPROP-MB).

    import ftprop_cuda
    y = ftprop_cuda.step(z, rule="soft_hinge")          # sign forward, FTP-SH backward
    q = ftprop_cuda.staircase(z, steps=3)               # 2-bit quantized ReLU
    model = torch.nn.Sequential(torch.nn.Linear(784, 100), ftprop_cuda.Step(), ...)

The names below are loaded on first use (PEP 562), so that `import ftprop_cuda.train` and the
other torch-free modules (presets, the registries) do not pay for importing torch.
"""
import importlib

from .ops.version import __version__

# public name -> the submodule that defines it
_LAZY = {
    "step": ".ops.functional",
    "staircase": ".ops.functional",
    "Step": ".ops.nn",
    "Staircase": ".ops.nn",
    "STEP_RULES": ".ops.rules",
    "STAIRCASE_RULES": ".ops.rules",
    "build_info": ".ops.extension",
    "convert": ".models.conversion",
    "lean": ".memory",
    "lean_memory": ".memory",
    "lean_report": ".memory",
    "is_lean": ".memory",
    "verify_lean": ".memory",
}
# submodule attribute -> the module it names
_SUBMODULES = {
    "reference": ".ops.reference",
    "rules": ".ops.rules",
    "functional": ".ops.functional",
    "nn": ".ops.nn",
}


def __getattr__(name):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(_SUBMODULES[name], __name__)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY) | set(_SUBMODULES))


__all__ = [
    "step",
    "staircase",
    "Step",
    "Staircase",
    "STEP_RULES",
    "STAIRCASE_RULES",
    "build_info",
    "convert",
    "reference",
]
