"""ftprop_cuda: hard-threshold units trained with feasible target propagation (FTPROP-MB).

    import ftprop_cuda
    y = ftprop_cuda.step(z, rule="soft_hinge")          # sign forward, FTP-SH backward
    q = ftprop_cuda.staircase(z, steps=3)               # 2-bit quantized ReLU
    model = torch.nn.Sequential(torch.nn.Linear(784, 100), ftprop_cuda.Step(), ...)
"""
import torch

from . import _ops, reference
from .convert import convert
from .functional import staircase, step
from .nn import Staircase, Step
from .reference import STAIRCASE_RULES, STEP_RULES

__version__ = "0.1.0"


def build_info() -> dict:
    """What this install was built with: which kernels exist and against which torch/CUDA."""
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
