"""Loads the compiled operator library (ftprop_cuda._C) and says what it provides.

The C++ side (csrc/ops.cpp) owns the schemas and the kernels; the Python-side metadata (the fake
implementations torch.compile traces with, the autograd formulas, the torch.func rules) is
registered right after loading, from fake.py, autograd.py and transforms.py. If the extension
cannot be loaded, the package warns with the original error and falls back to the reference;
FTPROP_REQUIRE_EXT=1 makes that an error instead (CI sets it).
"""
import functools
import glob
import importlib
import os
import sys
import warnings

import torch

from . import cuda_arch
from .version import __version__

EXT_ERROR = None
# the package folder, where _C lives (this module is in its ops/ subfolder)
PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _compiled(folder):
    return any(glob.glob(os.path.join(folder, pattern)) for pattern in ("_C*.so", "_C*.pyd"))


def load_failure_advice(here, path):
    """Why _C did not load from the package folder `here`, as far as the files on the import
    path tell, and what to do about it."""
    compiled_here = _compiled(here)
    elsewhere = None
    if not compiled_here:  # a source checkout in front of an installed, compiled package?
        folders = (os.path.abspath(os.path.join(p or os.getcwd(), "ftprop_cuda")) for p in path)
        elsewhere = next((f for f in folders if f != here and _compiled(f)), None)
    if elsewhere is not None:
        return (f"the source folder {here} shadows the installed package {elsewhere} (Python "
                "imports the one in the current folder or PYTHONPATH first); build in place with "
                "`pip install --no-build-isolation -e .` or run from another folder")
    if not compiled_here:
        return (f"{here} holds no compiled extension; build it with "
                "`pip install --no-build-isolation .` (or `-e .` in a source checkout)")
    return "reinstall with `pip install --no-build-isolation .` against the torch you run"


try:  # loading the library registers torch.ops.ftprop_cuda.*
    importlib.import_module(".._C", __package__)
except ImportError as exc:  # pragma: no cover - exercised only on broken installs
    if os.environ.get("FTPROP_REQUIRE_EXT", "0") == "1":
        raise
    EXT_ERROR = f"{type(exc).__name__}: {exc}"
    warnings.warn(
        f"ftprop_cuda: the compiled extension failed to load ({EXT_ERROR}): "
        f"{load_failure_advice(PACKAGE_DIR, sys.path)}. "
        "Falling back to the pure-PyTorch reference.",
        RuntimeWarning,
        stacklevel=2,
    )

LOADED = EXT_ERROR is None


def has_kernel(op, dispatch_key):
    """Whether op ('ftprop_cuda::...') has a compiled kernel for dispatch_key ('CPU', 'CUDA')."""
    return LOADED and torch._C._dispatch_has_kernel_for_dispatch_key(op, dispatch_key)


@functools.lru_cache(maxsize=None)
def has_cpu_kernel(*ops):
    """Whether every op named (ftprop_cuda::...) has a compiled CPU kernel (checked once)."""
    return all(has_kernel(f"ftprop_cuda::{op}", "CPU") for op in ops)


# Device types with a compiled kernel, fixed at import (a frozenset torch.compile can read).
KERNEL_DEVICES = frozenset(
    dev
    for dev, key in (("cpu", "CPU"), ("cuda", "CUDA"))
    if has_kernel("ftprop_cuda::step", key) and has_kernel("ftprop_cuda::staircase", key)
)


def build_info() -> dict:
    """What this install was built with: which kernels exist and against which torch/CUDA.

    cuda_archs: the architectures the CUDA kernels were compiled for, as the compiler saw them
    (['sm_80', ..., 'compute_90'], [] without CUDA kernels); cpu_kernel_level: the instruction
    set of the CPU loops in use ('avx512', 'avx2', 'baseline'). Both None when unknown (no
    compiled library, or one built before it reported them). See ops/cuda_arch.py.
    """
    cuda = "cuda" in KERNEL_DEVICES
    return {
        "version": __version__,
        "extension_loaded": LOADED,
        "extension_error": EXT_ERROR,
        "cpu_kernels": "cpu" in KERNEL_DEVICES,
        "cuda_kernels": cuda,
        "cuda_version": torch.version.cuda if cuda else None,
        "torch": torch.__version__,
        "cuda_archs": cuda_arch.compiled_archs() if LOADED else None,
        "cpu_kernel_level": cuda_arch.cpu_kernel_level() if LOADED else None,
    }


if LOADED:  # the ops' Python-side metadata, registered once with the library
    from . import autograd, fake, transforms

    fake.register()
    transforms.register()
    autograd.register()
