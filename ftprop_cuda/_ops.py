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

from . import reference as _ref
from . import rules


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


def _empty_like_kernel(z):
    """The kernels' output layout: z's strides where z is dense and non-overlapping (the memory
    format is kept), else empty_like's dense strides in z's dimension order (elementwise_ops.h)."""
    return torch.empty_like(z)


# What the forward saves for the backward (save="auto" | "z" | "compact"). Code bits and which
# rules are smooth come from the registry (rules.py); the C++ rule list must agree with it
# (tests/test_rule_registry.py).
SAVE_MODES = ("auto", "z", "compact")
_SMOOTH_STEP_RULES = rules.SMOOTH_STEP_RULES
_SMOOTH_STAIRCASE_RULES = rules.SMOOTH_STAIRCASE_RULES
step_code_bits = rules.step_code_bits
staircase_code_bits = rules.staircase_code_bits


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
        return _empty_like_kernel(z)

    @torch.library.register_fake("ftprop_cuda::staircase")
    def _staircase_fake(z, steps, lo, hi, rule, grad_scale):
        return _empty_like_kernel(z)

    @torch.library.register_fake("ftprop_cuda::_step_backward")
    def _step_backward_fake(grad, z, rule, zero_one, grad_scale):
        torch._check(grad.shape == z.shape, lambda: "grad and z must have the same shape")
        return _empty_like_kernel(z)

    @torch.library.register_fake("ftprop_cuda::_staircase_backward")
    def _staircase_backward_fake(grad, z, steps, lo, hi, rule, grad_scale):
        torch._check(grad.shape == z.shape, lambda: "grad and z must have the same shape")
        return _empty_like_kernel(z)

    @torch.library.register_fake("ftprop_cuda::_step_saved")
    def _step_saved_fake(z, rule, zero_one, grad_scale):
        return _empty_like_kernel(z), _code_like(z, step_code_bits(rule))

    @torch.library.register_fake("ftprop_cuda::_staircase_saved")
    def _staircase_saved_fake(z, steps, lo, hi, rule, grad_scale):
        bits = staircase_code_bits(rule, steps)
        torch._check(bits is not None, lambda: f"no saved-state code for {rule} with {steps} steps")
        return _empty_like_kernel(z), _code_like(z, bits)

    @torch.library.register_fake("ftprop_cuda::_step_backward_saved")
    def _step_backward_saved_fake(grad, state, rule, zero_one, grad_scale):
        return _empty_like_kernel(grad)

    @torch.library.register_fake("ftprop_cuda::_staircase_backward_saved")
    def _staircase_backward_saved_fake(grad, state, steps, lo, hi, rule, grad_scale):
        return _empty_like_kernel(grad)

    # The max-pool offset codec of lean memory mode (memory.py, csrc/pool_offsets.h).
    @torch.library.register_fake("ftprop_cuda::_pool_offsets_pack")
    def _pool_offsets_pack_fake(indices, in_w, kernel, stride, padding, dilation, bits):
        per = 8 // bits
        return indices.new_empty(((indices.numel() + per - 1) // per,), dtype=torch.uint8)

    @torch.library.register_fake("ftprop_cuda::_pool_offsets_unpack")
    def _pool_offsets_unpack_fake(packed, size, in_w, kernel, stride, padding, dilation, bits):
        return packed.new_empty(size, dtype=torch.int64)

    @torch.library.register_fake("ftprop_cuda::_pool_offsets_backward")
    def _pool_offsets_backward_fake(grad, packed, input_size, in_w, kernel, stride, padding,
                                    dilation, bits):
        return grad.new_empty(input_size)

    # Second derivatives. The surrogate backward dz = F(g, z) is g s(z, t) (weighted) or
    # -t s(z, t) / B (normalised), with t = -sign(g) piecewise constant in g. A plain backward
    # runs the kernel alone; when a graph is being built (create_graph=True or a torch.func
    # transform: grad mode is on in the backward) the kernel runs inside one of the Functions
    # below. Where z was kept, their backward differentiates the reference's F, so second
    # derivatives are the reference's by construction and a new rule needs no formula here.
    # Where only a code was kept (interval rules: ds/dz = 0), dF/dg is the decoded slope.
    # Step rules with a two-window code: their slope depends on t (docs/spec.md, "Saved state").
    _T_DEPENDENT_STEP_RULES = frozenset(
        r.name for r in rules.rules_of("step") if r.code_bits() == 2)

    def _reference_vjp(reference_backward, gg, grad, z, needs):
        """gg times the derivatives of the reference's surrogate backward in (grad, z).

        torch.func.vjp rather than autograd.grad: it also runs inside torch.func transforms."""
        _, vjp_fn = torch.func.vjp(reference_backward, grad, z)
        return tuple(d if need else None for d, need in zip(vjp_fn(gg), needs))

    def _chain(gg, slope, like):
        """gg * slope in op-math, rounded to like's dtype (the reference's casts)."""
        return (gg.to(slope.dtype) * slope).to(like.dtype)

    def _decoded_slope(grad, backward_saved):
        """s(z, t(g)) from a code: the weighted saved-code backward of sign(g) is sign(g) s."""
        op = _ref.opmath_dtype(grad.dtype)
        sign = torch.where(grad < 0, -torch.ones_like(grad, dtype=op),
                           torch.ones_like(grad, dtype=op))
        return sign * backward_saved(sign)

    class _StepBackward(torch.autograd.Function):
        """The z-saving step's kernel backward with its derivatives (used under create_graph)."""

        generate_vmap_rule = True

        @staticmethod
        def forward(grad, z, rule, zero_one, grad_scale):
            return torch.ops.ftprop_cuda._step_backward(grad, z, rule, zero_one, grad_scale)

        @staticmethod
        def setup_context(ctx, inputs, output):
            grad, z, *ctx.args = inputs
            ctx.save_for_backward(grad, z)

        @staticmethod
        def backward(ctx, gg):
            grad, z = ctx.saved_tensors
            rule, zero_one, grad_scale = ctx.args
            values = "01" if zero_one else "pm1"
            d_g, d_z = _reference_vjp(
                lambda g, zz: _ref.step_backward(g, zz, rule, values, grad_scale),
                gg, grad, z, ctx.needs_input_grad[:2])
            return d_g, d_z, None, None, None

    class _StaircaseBackward(torch.autograd.Function):
        """The z-saving staircase's kernel backward with its derivatives."""

        generate_vmap_rule = True

        @staticmethod
        def forward(grad, z, steps, lo, hi, rule, grad_scale):
            return torch.ops.ftprop_cuda._staircase_backward(grad, z, steps, lo, hi, rule,
                                                              grad_scale)

        @staticmethod
        def setup_context(ctx, inputs, output):
            grad, z, *ctx.args = inputs
            ctx.save_for_backward(grad, z)

        @staticmethod
        def backward(ctx, gg):
            grad, z = ctx.saved_tensors
            d_g, d_z = _reference_vjp(
                lambda g, zz: _ref.staircase_backward(g, zz, *ctx.args),
                gg, grad, z, ctx.needs_input_grad[:2])
            return d_g, d_z, None, None, None, None, None

    class _StepBackwardSaved(torch.autograd.Function):
        """The saved-code step backward (interval rules: s' = 0) with its derivative in g."""

        generate_vmap_rule = True

        @staticmethod
        def forward(grad, state, rule, zero_one, grad_scale):
            return torch.ops.ftprop_cuda._step_backward_saved(grad, state, rule, zero_one,
                                                              grad_scale)

        @staticmethod
        def setup_context(ctx, inputs, output):
            grad, state, ctx.rule, ctx.zero_one, ctx.grad_scale = inputs
            ctx.save_for_backward(grad, state)

        @staticmethod
        def backward(ctx, gg):
            if not (ctx.grad_scale or ctx.rule in _ref.ESTIMATOR_RULES):
                return None, None, None, None, None  # -t s / B: constant in g and in z
            grad, state = ctx.saved_tensors
            slope = _decoded_slope(grad, lambda g: torch.ops.ftprop_cuda._step_backward_saved(
                g, state, ctx.rule, ctx.zero_one, True))
            if ctx.rule in _T_DEPENDENT_STEP_RULES:  # g 0 or NaN: t = 0, and s(z, 0) = 1
                slope = torch.where((grad == 0) | grad.isnan(), torch.ones_like(slope), slope)
            return _chain(gg, slope, grad), None, None, None, None

    class _StaircaseBackwardSaved(torch.autograd.Function):
        """The saved-code staircase backward (sste, saturated_hinge) with its derivative in g."""

        generate_vmap_rule = True

        @staticmethod
        def forward(grad, state, steps, lo, hi, rule, grad_scale):
            return torch.ops.ftprop_cuda._staircase_backward_saved(grad, state, steps, lo, hi,
                                                                   rule, grad_scale)

        @staticmethod
        def setup_context(ctx, inputs, output):
            grad, state, *ctx.args = inputs
            ctx.save_for_backward(grad, state)

        @staticmethod
        def backward(ctx, gg):
            steps, lo, hi, rule, grad_scale = ctx.args
            if not (grad_scale or rules.get("staircase", rule).estimator):
                return (None,) * 7  # the normalised -t c / (K B (hi - lo)): constant in g
            grad, state = ctx.saved_tensors
            slope = _decoded_slope(grad, lambda g: torch.ops.ftprop_cuda._staircase_backward_saved(
                g, state, steps, lo, hi, rule, True))
            return (_chain(gg, slope, grad),) + (None,) * 6

    def _no_second_derivative(name, rule):
        return RuntimeError(
            f"ftprop_cuda.{name}: no second derivative through save='compact' with rule "
            f"'{rule}': the forward kept only an 8-bit code of the slope, not z, so the slope's "
            "derivative in z cannot be formed (create_graph=True or a torch.func transform asked "
            "for one); use save='auto' or save='z'"
        )

    def _as_output_layout(grad, strides):
        """grad laid out like the forward output, whose memory order the saved code follows."""
        if grad.stride() == strides:
            return grad
        out = torch.empty_strided(grad.shape, strides, dtype=grad.dtype, device=grad.device)
        return out.copy_(grad)

    # The forward keeps only z for the backward (not the output as well), or only a code of z.
    def _step_setup_context(ctx, inputs, output):
        z, ctx.rule, ctx.zero_one, ctx.grad_scale = inputs
        ctx.save_for_backward(z)

    def _step_backward(ctx, grad):
        (z,) = ctx.saved_tensors
        args = (grad, z, ctx.rule, ctx.zero_one, ctx.grad_scale)
        if torch.is_grad_enabled():  # a graph is being built: the differentiable form
            return _StepBackward.apply(*args), None, None, None
        return torch.ops.ftprop_cuda._step_backward(*args), None, None, None

    def _staircase_setup_context(ctx, inputs, output):
        z, ctx.steps, ctx.lo, ctx.hi, ctx.rule, ctx.grad_scale = inputs
        ctx.save_for_backward(z)

    def _staircase_backward(ctx, grad):
        (z,) = ctx.saved_tensors
        args = (grad, z, ctx.steps, ctx.lo, ctx.hi, ctx.rule, ctx.grad_scale)
        if torch.is_grad_enabled():
            dz = _StaircaseBackward.apply(*args)
        else:
            dz = torch.ops.ftprop_cuda._staircase_backward(*args)
        return dz, None, None, None, None, None

    # The code output never has a gradient; without set_materialize_grads(False) autograd would
    # fill a zero tensor the size of the code for it on every backward (measured: 0.8 ms per call
    # for sste at 2^24, more for the 8-bit compact codes).
    def _step_saved_setup_context(ctx, inputs, output):
        _, ctx.rule, ctx.zero_one, ctx.grad_scale = inputs
        ctx.set_materialize_grads(False)
        ctx.out_strides = output[0].stride()
        ctx.save_for_backward(output[1])

    def _step_saved_backward(ctx, grad, _grad_state):
        if grad is None:  # grads are not materialised (see above)
            return None, None, None, None
        if step_code_bits(ctx.rule) == 0:  # ste: dz = g
            return grad, None, None, None
        (state,) = ctx.saved_tensors
        args = (_as_output_layout(grad, ctx.out_strides), state, ctx.rule, ctx.zero_one,
                ctx.grad_scale)
        if not torch.is_grad_enabled():
            return torch.ops.ftprop_cuda._step_backward_saved(*args), None, None, None
        if ctx.rule in _SMOOTH_STEP_RULES:
            raise _no_second_derivative("step", ctx.rule)
        return _StepBackwardSaved.apply(*args), None, None, None

    def _staircase_saved_setup_context(ctx, inputs, output):
        _, ctx.steps, ctx.lo, ctx.hi, ctx.rule, ctx.grad_scale = inputs
        ctx.set_materialize_grads(False)
        ctx.out_strides = output[0].stride()
        ctx.save_for_backward(output[1])

    def _staircase_saved_backward(ctx, grad, _grad_state):
        if grad is None:
            return None, None, None, None, None, None
        if staircase_code_bits(ctx.rule, ctx.steps) == 0:  # ste: dz = g
            return grad, None, None, None, None, None
        (state,) = ctx.saved_tensors
        args = (_as_output_layout(grad, ctx.out_strides), state, ctx.steps, ctx.lo, ctx.hi,
                ctx.rule, ctx.grad_scale)
        if not torch.is_grad_enabled():
            dz = torch.ops.ftprop_cuda._staircase_backward_saved(*args)
        elif ctx.rule in _SMOOTH_STAIRCASE_RULES:
            raise _no_second_derivative("staircase", ctx.rule)
        else:
            dz = _StaircaseBackwardSaved.apply(*args)
        return dz, None, None, None, None, None

    # torch.func transforms refuse the autograd.Function that register_autograd generates (it has
    # no setup_context), so under a transform the kernels run through these Functions instead,
    # with the same setup_context and backward. vmap batches the two forward ops directly (their
    # output is elementwise in z); the code-saving and backward ops use torch's per-slice
    # fallback: a code's packing and the normalised backward's B depend on the slice's shape.
    def _elementwise_vmap(op):
        def batched(info, in_dims, z, *args):
            return op(z, *args), in_dims[0]

        return batched

    torch.library.register_vmap("ftprop_cuda::step", _elementwise_vmap(torch.ops.ftprop_cuda.step))
    torch.library.register_vmap("ftprop_cuda::staircase",
                                _elementwise_vmap(torch.ops.ftprop_cuda.staircase))

    def _transform_function(name, plain_op, saved_op, plain, saved):
        """An autograd.Function (it has a setup_context, which torch.func requires) running one
        unit's forward op, or its code-saving twin when the last argument says so, with the
        setup_context and backward registered for that op below. plain and saved are
        (setup_context, backward) pairs."""

        def forward(*args):
            *op_args, save_code = args
            return (saved_op if save_code else plain_op)(*op_args)

        def setup_context(ctx, inputs, output):
            ctx.save_code = inputs[-1]
            if ctx.save_code:
                ctx.mark_non_differentiable(output[1])
                saved[0](ctx, inputs[:-1], output)
            else:
                plain[0](ctx, inputs[:-1], output)

        def backward(ctx, grad, *_grad_state):
            if ctx.save_code:
                return *saved[1](ctx, grad, None), None
            return *plain[1](ctx, grad), None

        return type(name, (torch.autograd.Function,), {
            "generate_vmap_rule": True, "forward": staticmethod(forward),
            "setup_context": staticmethod(setup_context), "backward": staticmethod(backward)})

    _FuncStep = _transform_function(
        "_FuncStep", torch.ops.ftprop_cuda.step, torch.ops.ftprop_cuda._step_saved,
        (_step_setup_context, _step_backward), (_step_saved_setup_context, _step_saved_backward))
    _FuncStaircase = _transform_function(
        "_FuncStaircase", torch.ops.ftprop_cuda.staircase, torch.ops.ftprop_cuda._staircase_saved,
        (_staircase_setup_context, _staircase_backward),
        (_staircase_saved_setup_context, _staircase_saved_backward))

    def transforms_active():
        """Whether a torch.func transform (grad, vjp, jacrev, vmap, ...) is running."""
        return not torch.compiler.is_compiling() and torch._C._are_functorch_transforms_active()

    def step_under_transform(z, rule, zero_one, grad_scale, save_code):
        out = _FuncStep.apply(z, rule, zero_one, grad_scale, save_code)
        return out[0] if save_code else out

    def staircase_under_transform(z, steps, lo, hi, rule, grad_scale, save_code):
        out = _FuncStaircase.apply(z, steps, lo, hi, rule, grad_scale, save_code)
        return out[0] if save_code else out

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

