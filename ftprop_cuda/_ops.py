"""Loads the compiled operator library and registers its Python-side metadata.

The C++ side (csrc/ops.cpp) owns the schemas and the kernels; here live the fake (meta)
implementations that torch.compile traces with, and the autograd formulas. If the extension
cannot be loaded, the package warns with the original error and falls back to the reference;
FTPROP_REQUIRE_EXT=1 makes that an error instead (CI sets it).
"""
import os
import warnings

import torch


EXT_ERROR = None
try:
    from . import _C  # noqa: F401  (loading the library registers torch.ops.ftprop_cuda.*)
except ImportError as exc:  # pragma: no cover - exercised only on broken installs
    if os.environ.get("FTPROP_REQUIRE_EXT", "0") == "1":
        raise
    EXT_ERROR = f"{type(exc).__name__}: {exc}"
    warnings.warn(
        "ftprop_cuda: the compiled extension failed to load, falling back to the pure-PyTorch "
        f"reference ({EXT_ERROR}). Reinstall with `pip install --no-build-isolation .` against "
        "the torch you run.",
        RuntimeWarning,
        stacklevel=2,
    )

LOADED = EXT_ERROR is None


def _has_kernel(op, dispatch_key):
    return LOADED and torch._C._dispatch_has_kernel_for_dispatch_key(op, dispatch_key)


# Device types with a compiled kernel, fixed at import (a frozenset torch.compile can read).
KERNEL_DEVICES = frozenset(
    dev
    for dev, key in (("cpu", "CPU"), ("cuda", "CUDA"))
    if _has_kernel("ftprop_cuda::step", key) and _has_kernel("ftprop_cuda::staircase", key)
)


def _empty_like_contiguous(z):
    return z.new_empty(z.shape)


if LOADED:

    @torch.library.register_fake("ftprop_cuda::step")
    def _step_fake(z, rule, zero_one, grad_scale):
        return _empty_like_contiguous(z)

    @torch.library.register_fake("ftprop_cuda::staircase")
    def _staircase_fake(z, steps, lo, hi, rule, grad_scale):
        return _empty_like_contiguous(z)

    @torch.library.register_fake("ftprop_cuda::_step_backward")
    def _step_backward_fake(grad, z, rule, zero_one, grad_scale):
        torch._check(grad.shape == z.shape, lambda: "grad and z must have the same shape")
        return _empty_like_contiguous(z)

    @torch.library.register_fake("ftprop_cuda::_staircase_backward")
    def _staircase_backward_fake(grad, z, steps, lo, hi, rule, grad_scale):
        torch._check(grad.shape == z.shape, lambda: "grad and z must have the same shape")
        return _empty_like_contiguous(z)

    # The forward keeps only z for the backward (not the output as well).
    def _step_setup_context(ctx, inputs, output):
        z, ctx.rule, ctx.zero_one, ctx.grad_scale = inputs
        ctx.save_for_backward(z)

    def _step_backward(ctx, grad):
        (z,) = ctx.saved_tensors
        dz = torch.ops.ftprop_cuda._step_backward(grad, z, ctx.rule, ctx.zero_one, ctx.grad_scale)
        return dz, None, None, None

    def _staircase_setup_context(ctx, inputs, output):
        z, ctx.steps, ctx.lo, ctx.hi, ctx.rule, ctx.grad_scale = inputs
        ctx.save_for_backward(z)

    def _staircase_backward(ctx, grad):
        (z,) = ctx.saved_tensors
        dz = torch.ops.ftprop_cuda._staircase_backward(
            grad, z, ctx.steps, ctx.lo, ctx.hi, ctx.rule, ctx.grad_scale
        )
        return dz, None, None, None, None, None

    torch.library.register_autograd(
        "ftprop_cuda::step", _step_backward, setup_context=_step_setup_context
    )
    torch.library.register_autograd(
        "ftprop_cuda::staircase", _staircase_backward, setup_context=_staircase_setup_context
    )

