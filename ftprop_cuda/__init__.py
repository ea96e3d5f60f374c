"""ftprop_cuda: hard-threshold units trained with feasible target propagation (FTPROP-MB).

    import ftprop_cuda
    y = ftprop_cuda.step(z, rule="soft_hinge")          # sign forward, FTP-SH backward
    q = ftprop_cuda.staircase(z, steps=3)               # 2-bit quantized ReLU
    model = torch.nn.Sequential(torch.nn.Linear(784, 100), ftprop_cuda.Step(), ...)

The names below are loaded on first use (PEP 562), so that `import ftprop_cuda.train` and the
other torch-free modules (presets, the registries) do not pay for importing torch.
"""
import importlib

__version__ = "0.1.0"

# public name -> the submodule that defines it
_LAZY = {
    "step": ".functional",
    "staircase": ".functional",
    "Step": ".nn",
    "Staircase": ".nn",
    "STEP_RULES": ".rules",
    "STAIRCASE_RULES": ".rules",
    "convert": ".conversion",
    "lean": ".memory",
    "lean_memory": ".memory",
    "lean_report": ".memory",
    "is_lean": ".memory",
}
_SUBMODULES = ("reference", "functional", "nn", "_ops")


def build_info() -> dict:
    """What this install was built with: which kernels exist and against which torch/CUDA."""
    import torch

    from . import _ops

    cuda = "cuda" in _ops.KERNEL_DEVICES
    return {
        "version": __version__,
        "extension_loaded": _ops.LOADED,
        "extension_error": _ops.EXT_ERROR,
        "cpu_kernels": "cpu" in _ops.KERNEL_DEVICES,
        "cuda_kernels": cuda,
        "cuda_version": torch.version.cuda if cuda else None,
        "torch": torch.__version__,
    }


def __getattr__(name):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
    elif name in _SUBMODULES:
        value = importlib.import_module("." + name, __name__)
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
