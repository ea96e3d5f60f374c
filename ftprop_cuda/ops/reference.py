"""Pure-PyTorch reference of every op: the tests' oracle and the fallback without the extension.

Written for clarity, one formula per line, in the order of docs/spec.md; the rule names and
their properties come from the registry (ftprop_cuda/ops/rules.py), the slopes are written here.
Two details keep the forward pass bit-identical to the kernels on every device:

* float16/bfloat16 inputs are upcast once to float32 (their "op-math" type), every step runs
  there, and the result is rounded once to the input dtype;
* divisions by a constant divide by a 0-dim *tensor* of the op-math dtype, not by a Python
  number: with a Python number PyTorch's CUDA kernels multiply by the reciprocal instead, which
  can differ from a true division in the last bit.
"""

import torch

from . import rules
from .rules import ESTIMATOR_RULES, LECUN_A, STAIRCASE_RULES, STEP_RULES

STEP_VALUES = ("pm1", "01")


def opmath_dtype(dtype):
    """The dtype arithmetic runs in: float32 for float16/bfloat16/float32, float64 for float64."""
    return torch.float64 if dtype == torch.float64 else torch.float32


_FLOAT32_MAX = torch.finfo(torch.float32).max


def _const(value, like):
    """value as a 0-dim tensor of like's dtype and device, rounded as torch.tensor rounds it, but
    filled on the device (torch.full: no host-to-device copy, no synchronisation, capturable in
    a CUDA graph). torch.full refuses a finite value past float32's range where torch.tensor
    rounds it (to the largest float32 or to inf): such a value is rounded on the CPU first."""
    if like.dtype == torch.float32 and abs(value) > _FLOAT32_MAX:
        value = torch.tensor(value, dtype=torch.float32).item()
    return torch.full((), value, dtype=like.dtype, device=like.device)


def batch_size(z):
    """B of docs/spec.md: z.shape[0], or 1 for a 0-dim tensor."""
    return z.shape[0] if z.dim() > 0 else 1


def _ind(cond, like):
    """[cond] as 1.0/0.0 in like's dtype (a comparison with NaN is false)."""
    return cond.to(like.dtype)


def target(g):
    """t = -sign(g): -1 where g > 0, +1 where g < 0, 0 where g is 0 or NaN (no opinion)."""
    return _ind(g < 0, g) - _ind(g > 0, g)


# ---------------------------------------------------------------------------------------------
# Step units
# ---------------------------------------------------------------------------------------------
def step_forward(z, values="pm1"):
    """y = +1 where z > 0, else -1 (values='pm1') or 0 (values='01'); NaN stays NaN."""
    zf = z.to(opmath_dtype(z.dtype))
    low = 0.0 if values == "01" else -1.0
    y = torch.where(zf > 0, torch.ones_like(zf), torch.full_like(zf, low))
    y = torch.where(torch.isnan(zf), zf, y)
    return y.to(z.dtype)


def step_slope(z, t, rule, values="pm1"):
    """s(z, t) of docs/spec.md's step table (op-math tensors in, op-math tensor out)."""
    if rule == "ste":
        return torch.ones_like(z)
    if rule == "sste":
        if values == "01":
            return _ind((z >= 0) & (z <= 1), z)
        return _ind(z.abs() <= 1, z)
    if rule == "ramp":
        if values == "01":
            r = torch.zeros_like(z)
            r = torch.where((z > -1) & (z < 0), z + 1, r)
            r = torch.where((z > 1) & (z < 2), 2 - z, r)
            return torch.where((z >= 0) & (z <= 1), torch.ones_like(z), r)
        a = z.abs()
        r = torch.where((a > 1) & (a < 2), 2 - a, torch.zeros_like(z))
        return torch.where(a <= 1, torch.ones_like(z), r)
    if rule == "soft_hinge":
        return 1 - torch.tanh(z) ** 2
    if rule == "saturated_hinge":
        tz = t * z
        return _ind((tz > -1) & (tz <= 1), z)
    if rule == "hinge":
        return _ind(t * z <= 1, z)
    if rule == "perceptron":
        return _ind(t * z <= 0, z)
    if rule == "sigmoid":
        p = torch.sigmoid(2 * z)
        return 2 * p * (1 - p)
    if rule == "lecun_tanh":
        th = torch.tanh(2 * z / _const(3.0, z))
        return LECUN_A * (2.0 / 3.0) * (1 - th**2)
    raise ValueError(f"rule must be one of {STEP_RULES}, got {rule!r}")


def step_backward(g, z, rule="soft_hinge", values="pm1", grad_scale=True):
    """dz for a step unit: weighted g * s(z, t), or unweighted -t * s(z, t) / B."""
    op = opmath_dtype(z.dtype)
    gf, zf = g.to(op), z.to(op)
    t = target(gf)
    s = step_slope(zf, t, rule, values)
    if grad_scale or rule in ESTIMATOR_RULES:
        dz = gf * s
    else:
        dz = -t * s / _const(float(batch_size(z)), zf)
    return dz.to(z.dtype)


def step_loss(z, t, rule):
    """Per-unit layer loss L(z, t) of docs/spec.md's step table (None for the estimator rules)."""
    record = rules.get("step", rule)
    return None if record.estimator else record.loss(z, t)


def staircase_loss(z, t, steps, lo, hi, rule):
    """Per-unit layer loss of a staircase (op-math z, t), written in u; None for sste.

    Its |g|-weighted z-derivative is the staircase backward; ste is the linear loss -t z.
    """
    record = rules.get("staircase", rule)
    return record.loss(z, t, steps, lo, hi) if record.has_layer_loss else None


# ---------------------------------------------------------------------------------------------
# Staircase units
# ---------------------------------------------------------------------------------------------
def staircase_u(z, lo, hi):
    """u = (z - lo) / (hi - lo), in z's dtype (call with op-math z)."""
    return (z - lo) / _const(hi - lo, z)


def staircase_forward(z, steps=3, lo=0.0, hi=1.0):
    """y = lo + q (hi - lo), q = min(max(ceil(u (K - 1)), 0), K) / K; NaN stays NaN."""
    lo = float(lo) + 0.0  # a bound of -0.0 is the bound 0.0 (as in ftprop_cuda.staircase)
    zf = z.to(opmath_dtype(z.dtype))
    u = staircase_u(zf, lo, hi)
    q = torch.clamp(torch.ceil(u * (steps - 1)), 0, steps) / _const(float(steps), zf)
    y = lo + q * (hi - lo)
    return y.to(z.dtype)


def staircase_count(u, steps):
    """c(u) = cl(v + m) - cl(v - m), v = u (K - 1), m = K - 1, cl(x) = ceil(clamp(x, 0, K))."""
    v = u * (steps - 1)
    m = steps - 1
    return torch.ceil(torch.clamp(v + m, 0, steps)) - torch.ceil(torch.clamp(v - m, 0, steps))


def staircase_backward(g, z, steps=3, lo=0.0, hi=1.0, rule="soft_hinge", grad_scale=True):
    """dz for a staircase unit, per docs/spec.md's staircase table."""
    op = opmath_dtype(z.dtype)
    gf, zf = g.to(op), z.to(op)
    if rule == "ste":
        return gf.to(z.dtype)
    u = staircase_u(zf, lo, hi)
    if rule == "sste":
        return (gf * _ind((u >= 0) & (u <= 1), u)).to(z.dtype)
    t = target(gf)
    width_b = float(batch_size(z)) * (hi - lo)
    if rule == "soft_hinge":
        s = 1 - torch.tanh(2 * u - 1) ** 2
        dz = gf * s if grad_scale else -t * s / _const(width_b, zf)
    elif rule == "saturated_hinge":
        c = staircase_count(u, steps)
        if grad_scale:
            dz = gf * c / _const(float(steps), zf)
        else:
            dz = -t * c / _const(steps * width_b, zf)
    else:
        raise ValueError(f"rule must be one of {STAIRCASE_RULES}, got {rule!r}")
    return dz.to(z.dtype)


# ---------------------------------------------------------------------------------------------
# Differentiable wrappers (the fallback path): forward as above, backward = the surrogate.
# ---------------------------------------------------------------------------------------------
class _StepFunction(torch.autograd.Function):
    generate_vmap_rule = True  # torch.func.vmap batches forward and backward as written

    @staticmethod
    def forward(z, rule, values, grad_scale):
        return step_forward(z, values)

    @staticmethod
    def setup_context(ctx, inputs, output):
        z, ctx.rule, ctx.values, ctx.grad_scale = inputs
        ctx.save_for_backward(z)

    @staticmethod
    def backward(ctx, grad):
        (z,) = ctx.saved_tensors
        return step_backward(grad, z, ctx.rule, ctx.values, ctx.grad_scale), None, None, None


class _StaircaseFunction(torch.autograd.Function):
    generate_vmap_rule = True  # torch.func.vmap batches forward and backward as written

    @staticmethod
    def forward(z, steps, lo, hi, rule, grad_scale):
        return staircase_forward(z, steps, lo, hi)

    @staticmethod
    def setup_context(ctx, inputs, output):
        z, ctx.steps, ctx.lo, ctx.hi, ctx.rule, ctx.grad_scale = inputs
        ctx.save_for_backward(z)

    @staticmethod
    def backward(ctx, grad):
        (z,) = ctx.saved_tensors
        dz = staircase_backward(grad, z, ctx.steps, ctx.lo, ctx.hi, ctx.rule, ctx.grad_scale)
        return dz, None, None, None, None, None


def step(z, rule="soft_hinge", values="pm1", grad_scale=True):
    """Differentiable step unit in plain PyTorch (no argument checks: see ftprop_cuda.step)."""
    return _StepFunction.apply(z, rule, values, grad_scale)


def staircase(z, steps=3, lo=0.0, hi=1.0, rule="soft_hinge", grad_scale=True):
    """Differentiable staircase unit in plain PyTorch (no argument checks)."""
    return _StaircaseFunction.apply(z, steps, float(lo), float(hi), rule, grad_scale)


__all__ = [
    "STEP_RULES", "STAIRCASE_RULES", "STEP_VALUES", "ESTIMATOR_RULES",
    "target", "batch_size", "opmath_dtype",
    "step_forward", "step_slope", "step_backward", "step_loss", "step",
    "staircase_u", "staircase_forward", "staircase_count", "staircase_backward", "staircase_loss",
    "staircase",
]
