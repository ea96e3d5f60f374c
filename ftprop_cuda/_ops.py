"""Loads the compiled operator library and registers its Python-side metadata.

The C++ side (csrc/ops.cpp) owns the schemas and the kernels; here live the fake (meta)
implementations that torch.compile traces with, and the autograd formulas. If the extension
cannot be loaded, the package warns with the original error and falls back to the reference;
FTPROP_REQUIRE_EXT=1 makes that an error instead (CI sets it).
"""
import glob
import os
import sys
import warnings

import torch


EXT_ERROR = None


def _compiled(folder):
    return any(glob.glob(os.path.join(folder, pattern)) for pattern in ("_C*.so", "_C*.pyd"))


def _load_failure_advice(here, path):
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


try:
    from . import _C  # noqa: F401  (loading the library registers torch.ops.ftprop_cuda.*)
except ImportError as exc:  # pragma: no cover - exercised only on broken installs
    if os.environ.get("FTPROP_REQUIRE_EXT", "0") == "1":
        raise
    EXT_ERROR = f"{type(exc).__name__}: {exc}"
    _advice = _load_failure_advice(os.path.dirname(os.path.abspath(__file__)), sys.path)
    warnings.warn(
        f"ftprop_cuda: the compiled extension failed to load ({EXT_ERROR}): {_advice}. "
        "Falling back to the pure-PyTorch reference.",
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


# What the forward saves for the backward (save="auto" | "z" | "compact"); the C++ side has the
# same tables (csrc/ftprop.h: step_code_bits, stair_code_bits).
SAVE_MODES = ("auto", "z", "compact")
_SMOOTH_STEP_RULES = frozenset({"soft_hinge", "sigmoid", "lecun_tanh", "ramp"})
_SMOOTH_STAIRCASE_RULES = frozenset({"soft_hinge"})


def step_code_bits(rule):
    """Bits per element of the step unit's saved-state code."""
    if rule == "ste":
        return 0
    if rule == "sste":
        return 1
    if rule in ("saturated_hinge", "hinge", "perceptron"):
        return 2
    return 8  # smooth rules: the 8-bit slope code of save="compact"


def staircase_code_bits(rule, steps):
    """Bits per element of the staircase's saved-state code, or None where z must be saved."""
    if rule == "ste":
        return 0
    if rule == "sste":
        return 1
    if rule == "soft_hinge":
        return 8
    # saturated_hinge: the count c(u) in 0..K, and one more value for NaN
    for bits in (2, 4, 8):
        if steps + 2 <= 1 << bits:
            return bits
    return None


def saves_code(smooth, bits, save):
    """Whether the forward saves a code (True) or z itself (False)."""
    if save == "z" or bits is None:
        return False
    return save == "compact" or not smooth


def step_saves_code(rule, save):
    return saves_code(rule in _SMOOTH_STEP_RULES, step_code_bits(rule), save)


def staircase_saves_code(rule, steps, save):
    return saves_code(rule in _SMOOTH_STAIRCASE_RULES, staircase_code_bits(rule, steps), save)


def _code_like(z, bits):
    return z.new_empty(((z.numel() * bits + 7) // 8,), dtype=torch.uint8)


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

    @torch.library.register_fake("ftprop_cuda::_step_saved")
    def _step_saved_fake(z, rule, zero_one, grad_scale):
        return _empty_like_contiguous(z), _code_like(z, step_code_bits(rule))

    @torch.library.register_fake("ftprop_cuda::_staircase_saved")
    def _staircase_saved_fake(z, steps, lo, hi, rule, grad_scale):
        bits = staircase_code_bits(rule, steps)
        torch._check(bits is not None, lambda: f"no saved-state code for {rule} with {steps} steps")
        return _empty_like_contiguous(z), _code_like(z, bits)

    @torch.library.register_fake("ftprop_cuda::_step_backward_saved")
    def _step_backward_saved_fake(grad, state, rule, zero_one, grad_scale):
        return _empty_like_contiguous(grad)

    @torch.library.register_fake("ftprop_cuda::_staircase_backward_saved")
    def _staircase_backward_saved_fake(grad, state, steps, lo, hi, rule, grad_scale):
        return _empty_like_contiguous(grad)

    # The forward keeps only z for the backward (not the output as well), or only a code of z.
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

    # The code output never has a gradient; without set_materialize_grads(False) autograd would
    # fill a zero tensor the size of the code for it on every backward (measured: 0.8 ms per call
    # for sste at 2^24, more for the 8-bit compact codes).
    def _step_saved_setup_context(ctx, inputs, output):
        _, ctx.rule, ctx.zero_one, ctx.grad_scale = inputs
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(output[1])

    def _step_saved_backward(ctx, grad, _grad_state):
        if grad is None:  # grads are not materialised (see above)
            return None, None, None, None
        if step_code_bits(ctx.rule) == 0:  # ste: dz = g
            return grad, None, None, None
        (state,) = ctx.saved_tensors
        dz = torch.ops.ftprop_cuda._step_backward_saved(
            grad, state, ctx.rule, ctx.zero_one, ctx.grad_scale
        )
        return dz, None, None, None

    def _staircase_saved_setup_context(ctx, inputs, output):
        _, ctx.steps, ctx.lo, ctx.hi, ctx.rule, ctx.grad_scale = inputs
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(output[1])

    def _staircase_saved_backward(ctx, grad, _grad_state):
        if grad is None:
            return None, None, None, None, None, None
        if ctx.rule == "ste":
            return grad, None, None, None, None, None
        (state,) = ctx.saved_tensors
        dz = torch.ops.ftprop_cuda._staircase_backward_saved(
            grad, state, ctx.steps, ctx.lo, ctx.hi, ctx.rule, ctx.grad_scale
        )
        return dz, None, None, None, None, None

    torch.library.register_autograd(
        "ftprop_cuda::step", _step_backward, setup_context=_step_setup_context
    )
    torch.library.register_autograd(
        "ftprop_cuda::_step_saved", _step_saved_backward, setup_context=_step_saved_setup_context
    )
    torch.library.register_autograd(
        "ftprop_cuda::_staircase_saved",
        _staircase_saved_backward,
        setup_context=_staircase_saved_setup_context,
    )
    torch.library.register_autograd(
        "ftprop_cuda::staircase", _staircase_backward, setup_context=_staircase_setup_context
    )

