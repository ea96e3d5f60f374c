"""The autograd formulas of the compiled ops (registered by extension.py once _C has loaded).

The forward keeps only z for the backward (not the output as well), or only a code of z
(save='auto' | 'z' | 'compact'; which rules keep which code comes from the registry, rules.py).

Second derivatives. The surrogate backward dz = F(g, z) is g s(z, t) (weighted) or -t s(z, t) / B
(normalised), with t = -sign(g) piecewise constant in g. A plain backward runs the kernel alone;
when a graph is being built (create_graph=True or a torch.func transform: grad mode is on in the
backward) the kernel runs inside one of the Functions below. Where z was kept, their backward
differentiates the reference's F, so second derivatives are the reference's by construction and
a new rule needs no formula here. Where only a code was kept (interval rules: ds/dz = 0), dF/dg
is the decoded slope. Step rules with a two-window code: their slope depends on t (docs/spec.md,
"Saved state").
"""
import torch

from . import reference as _ref
from . import rules
from .rules import SMOOTH_STAIRCASE_RULES, SMOOTH_STEP_RULES, staircase_code_bits, step_code_bits

T_DEPENDENT_STEP_RULES = frozenset(r.name for r in rules.rules_of("step") if r.code_bits() == 2)


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


class StepBackward(torch.autograd.Function):
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


class StaircaseBackward(torch.autograd.Function):
    """The z-saving staircase's kernel backward with its derivatives."""

    generate_vmap_rule = True

    @staticmethod
    def forward(grad, z, steps, lo, hi, rule, grad_scale):
        return torch.ops.ftprop_cuda._staircase_backward(grad, z, steps, lo, hi, rule, grad_scale)

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


class StepBackwardSaved(torch.autograd.Function):
    """The saved-code step backward (interval rules: s' = 0) with its derivative in g."""

    generate_vmap_rule = True

    @staticmethod
    def forward(grad, state, rule, zero_one, grad_scale):
        return torch.ops.ftprop_cuda._step_backward_saved(grad, state, rule, zero_one, grad_scale)

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
        if ctx.rule in T_DEPENDENT_STEP_RULES:  # g 0 or NaN: t = 0, and s(z, 0) = 1
            slope = torch.where((grad == 0) | grad.isnan(), torch.ones_like(slope), slope)
        return _chain(gg, slope, grad), None, None, None, None


class StaircaseBackwardSaved(torch.autograd.Function):
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


# ---- The z-saving forward ops ----------------------------------------------------------------
def step_setup_context(ctx, inputs, output):
    z, ctx.rule, ctx.zero_one, ctx.grad_scale = inputs
    ctx.save_for_backward(z)


def step_backward(ctx, grad):
    (z,) = ctx.saved_tensors
    args = (grad, z, ctx.rule, ctx.zero_one, ctx.grad_scale)
    if torch.is_grad_enabled():  # a graph is being built: the differentiable form
        return StepBackward.apply(*args), None, None, None
    return torch.ops.ftprop_cuda._step_backward(*args), None, None, None


def staircase_setup_context(ctx, inputs, output):
    z, ctx.steps, ctx.lo, ctx.hi, ctx.rule, ctx.grad_scale = inputs
    ctx.save_for_backward(z)


def staircase_backward(ctx, grad):
    (z,) = ctx.saved_tensors
    args = (grad, z, ctx.steps, ctx.lo, ctx.hi, ctx.rule, ctx.grad_scale)
    if torch.is_grad_enabled():
        dz = StaircaseBackward.apply(*args)
    else:
        dz = torch.ops.ftprop_cuda._staircase_backward(*args)
    return dz, None, None, None, None, None


# ---- The code-saving forward ops -------------------------------------------------------------
# The code output never has a gradient; without set_materialize_grads(False) autograd would
# fill a zero tensor the size of the code for it on every backward (measured: 0.8 ms per call
# for sste at 2^24, more for the 8-bit compact codes).
def step_saved_setup_context(ctx, inputs, output):
    _, ctx.rule, ctx.zero_one, ctx.grad_scale = inputs
    ctx.set_materialize_grads(False)
    ctx.out_strides = output[0].stride()
    ctx.save_for_backward(output[1])


def step_saved_backward(ctx, grad, _grad_state):
    if grad is None:  # grads are not materialised (see above)
        return None, None, None, None
    if step_code_bits(ctx.rule) == 0:  # ste: dz = g
        return grad, None, None, None
    (state,) = ctx.saved_tensors
    args = (_as_output_layout(grad, ctx.out_strides), state, ctx.rule, ctx.zero_one,
            ctx.grad_scale)
    if not torch.is_grad_enabled():
        return torch.ops.ftprop_cuda._step_backward_saved(*args), None, None, None
    if ctx.rule in SMOOTH_STEP_RULES:
        raise _no_second_derivative("step", ctx.rule)
    return StepBackwardSaved.apply(*args), None, None, None


def staircase_saved_setup_context(ctx, inputs, output):
    _, ctx.steps, ctx.lo, ctx.hi, ctx.rule, ctx.grad_scale = inputs
    ctx.set_materialize_grads(False)
    ctx.out_strides = output[0].stride()
    ctx.save_for_backward(output[1])


def staircase_saved_backward(ctx, grad, _grad_state):
    if grad is None:
        return None, None, None, None, None, None
    if staircase_code_bits(ctx.rule, ctx.steps) == 0:  # ste: dz = g
        return grad, None, None, None, None, None
    (state,) = ctx.saved_tensors
    args = (_as_output_layout(grad, ctx.out_strides), state, ctx.steps, ctx.lo, ctx.hi,
            ctx.rule, ctx.grad_scale)
    if not torch.is_grad_enabled():
        dz = torch.ops.ftprop_cuda._staircase_backward_saved(*args)
    elif ctx.rule in SMOOTH_STAIRCASE_RULES:
        raise _no_second_derivative("staircase", ctx.rule)
    else:
        dz = StaircaseBackwardSaved.apply(*args)
    return dz, None, None, None, None, None


def register():
    """Registers the formulas above with their ops (called once, after the library has loaded)."""
    torch.library.register_autograd(
        "ftprop_cuda::step", step_backward, setup_context=step_setup_context
    )
    torch.library.register_autograd(
        "ftprop_cuda::_step_saved", step_saved_backward, setup_context=step_saved_setup_context
    )
    torch.library.register_autograd(
        "ftprop_cuda::_staircase_saved",
        staircase_saved_backward,
        setup_context=staircase_saved_setup_context,
    )
    torch.library.register_autograd(
        "ftprop_cuda::staircase", staircase_backward, setup_context=staircase_setup_context
    )
