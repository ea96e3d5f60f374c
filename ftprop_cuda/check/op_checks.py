"""The ops' checks on one device: a one-element call of every compiled op, the kernels against
the reference on docs/spec.md's boundary grids (every rule, dtype, `values`, `grad_scale` and
`save` mode), and the odd layouts (non-contiguous, channels-last, offset storage, empty)."""
import itertools

import torch

from ..ops import extension, functional, reference, rules
from . import grids
from .results import CheckFailed, expect

SAVES = functional.SAVE_MODES
# every operator of the library with the arguments of a one-element call on `device`
OPS = ("step", "staircase", "_step_backward", "_staircase_backward", "_step_saved",
       "_staircase_saved", "_step_backward_saved", "_staircase_backward_saved",
       "_pool_offsets_pack", "_pool_offsets_unpack", "_pool_offsets_backward",
       "_max_pool_offsets", "_batch_norm_rebuild", "_level_code_pack", "_level_code_unpack")


def dispatch_key(device):
    return "CUDA" if torch.device(device).type == "cuda" else "CPU"


def kernel_ops(device):
    """The library's ops that have a compiled kernel for this device."""
    key = dispatch_key(device)
    return [op for op in OPS if extension.has_kernel(f"ftprop_cuda::{op}", key)]


def _op_args(op, device):
    """A one-element call's arguments of op."""
    z = torch.tensor([0.5], device=device)
    g = torch.tensor([1.0], device=device)
    pool = (1, [1, 1], [1, 1], [0, 0], [1, 1], 1)
    calls = {
        "step": lambda: (z, "soft_hinge", False, True),
        "staircase": lambda: (z, 3, 0.0, 1.0, "soft_hinge", True),
        "_step_backward": lambda: (g, z, "soft_hinge", False, True),
        "_staircase_backward": lambda: (g, z, 3, 0.0, 1.0, "soft_hinge", True),
        "_step_saved": lambda: (z, "sste", False, True),
        "_staircase_saved": lambda: (z, 3, 0.0, 1.0, "saturated_hinge", True),
        "_step_backward_saved": lambda: (
            g, torch.ops.ftprop_cuda._step_saved(z, "sste", False, True)[1], "sste", False, True),
        "_staircase_backward_saved": lambda: (
            g, torch.ops.ftprop_cuda._staircase_saved(z, 3, 0.0, 1.0, "saturated_hinge", True)[1],
            3, 0.0, 1.0, "saturated_hinge", True),
        "_pool_offsets_pack": lambda: (torch.zeros(1, 1, 1, 1, dtype=torch.long, device=device),
                                       *pool),
        "_pool_offsets_unpack": lambda: (torch.zeros(1, dtype=torch.uint8, device=device),
                                         [1, 1, 1, 1], *pool),
        "_pool_offsets_backward": lambda: (torch.ones(1, 1, 1, 1, device=device),
                                           torch.zeros(1, dtype=torch.uint8, device=device),
                                           [1, 1, 1, 1], *pool),
        "_max_pool_offsets": lambda: (torch.ones(1, 1, 1, 1, device=device), *pool[1:]),
        "_batch_norm_rebuild": lambda: (torch.ones(1, 1, device=device),
                                        torch.zeros(1, device=device),
                                        torch.ones(1, device=device), None, None),
        "_level_code_pack": lambda: (torch.tensor([1.0], device=device),
                                     torch.tensor([-1.0, 1.0], device=device)),
        "_level_code_unpack": lambda: (torch.tensor([[1], [0]], dtype=torch.uint8, device=device),
                                       torch.tensor([-1.0, 1.0, float("nan")], device=device), 1),
    }
    return calls[op]()


def one_element_calls(device):
    """The public ops through autograd, then every compiled op called directly, on one element."""
    z = torch.tensor([0.5], device=device, requires_grad=True)
    y = functional.step(z, backend="kernel") + functional.staircase(z, backend="kernel")
    y.sum().backward()
    zd = z.detach()
    expect(grids.bits_differ(y.detach(), reference.step_forward(zd)
                             + reference.staircase_forward(zd)), "public ops")
    if not torch.isfinite(z.grad).all():
        raise CheckFailed(f"gradient {z.grad.tolist()}")
    ops = kernel_ops(device)
    for op in ops:
        out = getattr(torch.ops.ftprop_cuda, op)(*_op_args(op, device))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if t.device != torch.device(device):
                raise CheckFailed(f"{op} returned a tensor on {t.device}")
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)
    others = [op for op in OPS if op not in ops]
    return f"{len(ops)} ops" + (f" (CPU only, not here: {', '.join(others)})" if others else "")


def _kernel_grad(fn, z, g, **kwargs):
    z = z.detach().requires_grad_(True)
    y = fn(z, backend="kernel", **kwargs)
    (dz,) = torch.autograd.grad(y, z, g)
    return y.detach(), dz


def _approximate(family, rule, steps, save):
    """Whether save keeps the smooth rule's 8-bit slope code (the only lossy saved state)."""
    if save != "compact":
        return False
    if family == "step":
        return rule in rules.SMOOTH_STEP_RULES and rules.step_code_bits(rule) is not None
    return rule in rules.SMOOTH_STAIRCASE_RULES and \
        rules.staircase_code_bits(rule, steps) is not None


def _compact_problem(dz, z, g, backward, s_max, factor):
    """The compact code's bound, against the reference's backward in the op-math type."""
    op = reference.opmath_dtype(z.dtype)
    zo, go = z.to(op), g.to(op)
    exact = backward(go, zo)
    slope = backward(torch.ones_like(zo), zo, weighted=True)
    scale = go.abs() if factor is None else torch.full_like(zo, factor)
    return grids.compact_not_close(dz, exact, slope, scale, s_max)


def _step_case(device, rule, dtype, values, grad_scale, save):
    z, g = grids.grid(grids.Z_STEP, grids.G_BOUNDARY, dtype, device)
    z, g = z.reshape(len(grids.Z_STEP), -1), g.reshape(len(grids.Z_STEP), -1)  # B != numel
    y, dz = _kernel_grad(functional.step, z, g, rule=rule, values=values,
                         grad_scale=grad_scale, save=save)
    expect(grids.bits_differ(y, reference.step_forward(z, values)), "forward")
    if _approximate("step", rule, None, save):
        weighted = grad_scale or rule in rules.ESTIMATOR_RULES
        return _compact_problem(
            dz, z, g, lambda gg, zz, weighted=grad_scale: reference.step_backward(
                gg, zz, rule, values, weighted),
            rules.get("step", rule).slope_max, None if weighted else 1.0 / z.shape[0])
    return grids.not_close(dz, reference.step_backward(g, z, rule, values, grad_scale))


def _staircase_case(device, rule, config, dtype, grad_scale, save):
    steps, lo, hi = config
    zs = grids.staircase_boundary(steps, lo, hi)
    z, g = grids.grid(zs, grids.G_BOUNDARY, dtype, device)
    z, g = z.reshape(len(zs), -1), g.reshape(len(zs), -1)
    y, dz = _kernel_grad(functional.staircase, z, g, steps=steps, lo=lo, hi=hi, rule=rule,
                         grad_scale=grad_scale, save=save)
    expect(grids.bits_differ(y, reference.staircase_forward(z, steps, lo, hi)), "forward")
    if _approximate("staircase", rule, steps, save):
        weighted = grad_scale or rule in rules.ESTIMATOR_RULES
        return _compact_problem(
            dz, z, g, lambda gg, zz, weighted=grad_scale: reference.staircase_backward(
                gg, zz, steps, lo, hi, rule, weighted),
            rules.get("staircase", rule).slope_max,
            None if weighted else 1.0 / (z.shape[0] * (hi - lo)))
    return grids.not_close(dz, reference.staircase_backward(g, z, steps, lo, hi, rule,
                                                            grad_scale))


def _run_cases(cases, run_case):
    """Runs every case; raises CheckFailed naming the failing ones (the first few in full)."""
    failed = []
    for case in cases:
        try:
            problem = run_case(*case)
        except CheckFailed as exc:  # the forward differed: the case's message
            problem = str(exc)
        if problem is not None:
            failed.append((case, problem))
    if failed:
        shown = "; ".join(f"{_case_text(c)}: {p}" for c, p in failed[:2])
        raise CheckFailed(f"{len(failed)} of {len(cases)} cases differ from the reference: "
                          f"{shown}")
    return len(cases)


def _case_text(case):
    return ", ".join(grids.DTYPE_NAMES.get(v, repr(v)) if isinstance(v, torch.dtype) else repr(v)
                     for v in case)


def step_boundaries(device, rule):
    """Kernel = reference on the step boundary grid: every dtype, values, grad_scale, save."""
    cases = list(itertools.product(grids.DTYPES, functional.STEP_VALUES, (True, False), SAVES))
    n = _run_cases(cases, lambda *c: _step_case(device, rule, *c))
    return f"{n} cases (dtype x values x grad_scale x save): forward bitwise, backward close"


def staircase_boundaries(device, rule):
    """Kernel = reference on the staircase boundary grids of every configuration."""
    cases = list(itertools.product(grids.STAIR_CONFIGS, grids.DTYPES, (True, False), SAVES))
    n = _run_cases(cases, lambda *c: _staircase_case(device, rule, *c))
    return (f"{n} cases ((K, lo, hi) x dtype x grad_scale x save): forward bitwise, "
            "backward close")


def layout_inputs(device):
    """z in the layouts the kernels must handle: name -> tensor (values from a fixed seed)."""
    gen = torch.Generator().manual_seed(23)
    base = torch.randn(4, 3, 5, 6, generator=gen, dtype=torch.float64).mul(2).float()
    spare = torch.randn(base.numel() + 7, generator=gen).to(device)
    base = base.to(device)
    return {
        "non-contiguous (permuted)": base.permute(0, 3, 1, 2),
        "non-contiguous (strided)": base[:, :, ::2],
        "channels-last": base.contiguous(memory_format=torch.channels_last),
        "offset storage": spare[7:].view(base.shape),
        "empty": torch.empty(0, 3, device=device),
        "empty channels-last": torch.empty(0, 3, 4, 4, device=device).contiguous(
            memory_format=torch.channels_last),
    }


LAYOUT_OPS = (
    ("step soft_hinge (z kept)", functional.step, dict(rule="soft_hinge")),
    ("step sste (1-bit code)", functional.step, dict(rule="sste")),
    ("staircase saturated_hinge (count code)", functional.staircase,
     dict(steps=3, rule="saturated_hinge")),
)


def layout(device, name):
    """One layout: each op's output and gradient are the bits of its contiguous copy's, the
    forward the reference's, and a dense input's output keeps the input's strides."""
    z = layout_inputs(device)[name]
    g = torch.linspace(-2, 2, z.numel(), device=device).reshape(z.shape)
    for label, fn, kwargs in LAYOUT_OPS:
        y, dz = _kernel_grad(fn, z, g, **kwargs)
        yc, dzc = _kernel_grad(fn, z.contiguous(), g.contiguous(), **kwargs)
        expect(grids.bits_differ(y, yc), f"{label}: forward vs contiguous copy")
        expect(grids.bits_differ(dz, dzc), f"{label}: backward vs contiguous copy")
        ref = (reference.step_forward(z) if fn is functional.step else
               reference.staircase_forward(z, kwargs["steps"], 0.0, 1.0))
        expect(grids.bits_differ(y, ref), f"{label}: forward vs reference")
        dense = z.is_contiguous() or z.is_contiguous(memory_format=torch.channels_last)
        if dense and z.numel() and y.stride() != z.stride():
            raise CheckFailed(f"{label}: output strides {y.stride()} for input strides "
                              f"{z.stride()}")
    return f"{len(LAYOUT_OPS)} ops, shape {tuple(z.shape)}, strides {z.stride()}"
