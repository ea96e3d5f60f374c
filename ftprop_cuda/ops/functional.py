"""The public ops: argument checks, then the compiled kernel or the reference.

Each unit call whose z requires a gradient is announced to the observer registered in
observers.py, if any (lean memory mode is one).
"""
import math
import numbers

import torch
import torch.autograd.forward_ad as _fwad

from . import cuda_arch, extension, reference, transforms
from .observers import STATE as _OBSERVERS
from .reference import STEP_VALUES
from .rules import (SMOOTH_STAIRCASE_RULES, SMOOTH_STEP_RULES, STAIRCASE_RULES, STEP_RULES,
                    staircase_code_bits, step_code_bits)

BACKENDS = ("auto", "kernel", "reference")
DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)

# What the forward saves for the backward (save="auto" | "z" | "compact"). Code bits and which
# rules are smooth come from the registry (rules.py); the C++ rule list must agree with it
# (tests/test_rule_registry.py).
SAVE_MODES = ("auto", "z", "compact")


def saves_code(smooth, bits, save):
    """Whether the forward saves a code (True) or z itself (False)."""
    if save == "z" or bits is None:
        return False
    return save == "compact" or not smooth


def step_saves_code(rule, save):
    return saves_code(rule in SMOOTH_STEP_RULES, step_code_bits(rule), save)


def staircase_saves_code(rule, steps, save):
    return saves_code(rule in SMOOTH_STAIRCASE_RULES, staircase_code_bits(rule, steps), save)


def check_choice(name, value, accepted):
    if not isinstance(value, str) or value not in accepted:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, accepted))}; got {value!r}")
    return value


def check_bool(name, value):
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False; got {value!r} ({type(value).__name__})")
    return value


_REAL = (numbers.Real, torch.SymFloat, torch.SymInt)
# The largest step count: K and the counts c(u) in 0..K must be exact in float32, the op-math
# type of the half types and of float32.
MAX_STEPS = 2**24


def _short(value):
    """value as text, cut in the middle when it is long (an integer like 10**400)."""
    text = f"{value}"  # not repr: torch.compile cannot take the repr of a symbolic integer
    return text if len(text) <= 40 else f"{text[:20]}...{text[-8:]} ({len(text)} characters)"


def check_staircase_args(steps, lo, hi):
    """Validates steps, lo, hi; returns (steps, float(lo), float(hi))."""
    if isinstance(steps, bool) or not isinstance(steps, (numbers.Integral, torch.SymInt)):
        raise TypeError(f"steps must be an integer >= 2; got {steps!r} ({type(steps).__name__})")
    if not 2 <= steps <= MAX_STEPS:
        raise ValueError(
            f"steps must be an integer >= 2 and <= 2**24 = {MAX_STEPS} (the largest count exact "
            f"in float32); got {_short(steps)}"
        )
    bounds = []
    for name, value in (("lo", lo), ("hi", hi)):
        if isinstance(value, bool) or not isinstance(value, _REAL):
            raise TypeError(f"{name} must be a finite real number; got {value!r}")
        # a comparison, not math.isfinite: under torch.compile(dynamic=True) a Python float
        # argument arrives as a symbolic float, which math.isfinite cannot take
        if not -math.inf < value < math.inf:
            raise ValueError(f"{name} must be a finite real number; got {value!r}")
        try:
            value = float(value)
        except OverflowError:  # an integer beyond the float64 range
            raise ValueError(
                f"{name} must be a finite real number within the float64 range; got {_short(value)}"
            ) from None
        bounds.append(value + 0.0)  # + 0.0 turns -0.0 into 0.0: one zero, one result
    lo, hi = bounds
    if not lo < hi:
        raise ValueError(f"lo must be smaller than hi; got lo={lo!r}, hi={hi!r}")
    return int(steps), lo, hi


def _overflow_bound(dtype):
    """The smallest magnitude that rounds to infinity in dtype (max + half its last step)."""
    info = torch.finfo(dtype)
    return math.ldexp(2.0 - info.eps / 2, math.frexp(info.max)[1] - 1)


# float64 is left out: a Python float is float64, so a finite one is finite there.
_OVERFLOW = {dtype: _overflow_bound(dtype) for dtype in (torch.float16, torch.bfloat16,
                                                         torch.float32)}


def check_staircase_range(z, steps, lo, hi):
    """Bounds whose arithmetic overflows z's dtype would give infinite or NaN outputs.

    lo and hi must be finite in z's dtype (they are output levels) and hi - lo, B (hi - lo) and
    K B (hi - lo) finite in its op-math dtype (float32 for the half types and float32, float64
    for float64), the widths the forward and the unweighted backward divide by. Only Python
    numbers are compared, so this runs under torch.compile (and symbolically with dynamic shapes).
    """
    limit = _OVERFLOW.get(z.dtype)
    if limit is not None:
        for name, value in (("lo", lo), ("hi", hi)):
            if not -limit < value < limit:
                raise ValueError(
                    f"{name} must be finite in z's dtype {z.dtype} (largest finite value "
                    f"{torch.finfo(z.dtype).max:g}); got lo={lo!r}, hi={hi!r}"
                )
    op = reference.opmath_dtype(z.dtype)
    limit = _OVERFLOW.get(op, math.inf)
    batch = reference.batch_size(z)
    for what, value in (("hi - lo", hi - lo), ("B * (hi - lo)", batch * (hi - lo)),
                        ("K * B * (hi - lo)", steps * batch * (hi - lo))):
        if not value < limit:
            factors = {"hi - lo": "", "B * (hi - lo)": f" with B = z.shape[0] = {batch}"}.get(
                what, f" with K = steps = {steps}, B = z.shape[0] = {batch}")
            raise ValueError(
                f"lo and hi are too far apart for z's dtype {z.dtype}: {what}{factors} overflows "
                f"{op}, the dtype its arithmetic runs in; got lo={lo!r}, hi={hi!r}"
            )


def _check_input(z):
    if not isinstance(z, torch.Tensor):
        raise TypeError(f"z must be a torch.Tensor; got {type(z).__name__}")
    if z.layout != torch.strided:
        raise TypeError(
            f"z must be a dense tensor (layout torch.strided); got layout {z.layout}: "
            "call .to_dense() first"
        )
    if z.dtype not in DTYPES:
        raise TypeError(
            f"z must be a floating-point tensor (float16, bfloat16, float32 or float64); "
            f"got dtype {z.dtype}"
        )
    # forward-mode AD: the kernels' autograd formula is reverse-mode only, and without this
    # check a dual input would come out with no tangent and no error
    if not torch.compiler.is_compiling() and _fwad._current_level >= 0 \
            and _fwad.unpack_dual(z).tangent is not None:
        raise NotImplementedError(
            "ftprop_cuda: forward-mode AD (a dual tensor z) is not supported: the units define a "
            "surrogate gradient for reverse mode only (backward, torch.autograd.grad, torch.func.grad)"
        )


def _use_kernel(z, backend):
    check_choice("backend", backend, BACKENDS)
    if backend == "reference":
        return False
    available = z.device.type in extension.KERNEL_DEVICES
    if backend == "kernel" and not available:
        why = (
            f"the compiled extension failed to load ({extension.EXT_ERROR})"
            if not extension.LOADED
            else f"kernels were built for: {', '.join(sorted(extension.KERNEL_DEVICES)) or 'none'}"
        )
        raise ValueError(
            f"backend='kernel' has no kernel for device '{z.device.type}': {why}; "
            "use backend='auto' or 'reference'"
        )
    if z.device.type == "cuda" and not torch.compiler.is_compiling():
        cuda_arch.on_cuda_call(z.device, available)  # once per device: can this card run it?
    return available


def _needs_grad(z):
    return z.requires_grad and torch.is_grad_enabled()


def exporting() -> bool:
    """Whether torch.export, torch.onnx.export or torch.jit.trace is recording the forward."""
    return bool(torch.compiler.is_exporting() or torch.onnx.is_in_onnx_export()
                or torch.jit.is_tracing())


def step_export(z, values):
    # aten ops only, so that every exporter can write it (ONNX has no sign(0) = -1 op)
    return reference.step_forward(z, values)


def staircase_export(z, steps, lo, hi):
    y = reference.staircase_forward(z, steps, lo, hi)
    # ONNX Clip need not keep NaN, and the ONNX optimizer folds "0 + q" to q, which lets a -0.0
    # through; the kernels give NaN and +0.0 there, and every other output is unchanged
    y = torch.where(y == 0, torch.zeros_like(y), y)
    return torch.where(torch.isnan(z), z, y)


def _decompose_under_compile(z, family):
    """Inside torch.compile (not export): run the unit as aten ops (the reference's
    autograd.Function) so the compiler can fuse it with its neighbours and recompute instead of
    saving; eager mode keeps the hand-written kernels. The step forward is a comparison and a
    select, exact in any fused code; the staircase forward's lo + q (hi - lo) could be contracted
    into a fused multiply-add by a GPU compiler, so a staircase is decomposed on the CPU only
    (inductor's C++ code is compiled with -ffp-contract=off) and stays the kernel op elsewhere."""
    if not torch.compiler.is_compiling() or torch.compiler.is_exporting():
        return False
    return family == "step" or z.device.type == "cpu"


def _export_path(z, backend):
    """Under an exporter: True for the aten-only forward, False for the (non-saving) kernel op.

    The op keeps the FTPROP backward in a traced graph; ONNX cannot write it, and a saved code's
    padding bits are not reproducible (jit.trace's check would reject the trace). The choice
    does not depend on requires_grad: jit.trace checks its trace again under no_grad.
    """
    return torch.onnx.is_in_onnx_export() or not _use_kernel(z, backend)


def step(z: torch.Tensor, rule: str = "soft_hinge", values: str = "pm1", grad_scale: bool = True,
         backend: str = "auto", save: str = "auto") -> torch.Tensor:
    """Hard-threshold step unit with an FTPROP surrogate backward.

    Forward: +1 where z > 0 else -1 (values='pm1'; sign(0) = -1), or 1/0 (values='01').
    Backward: the target t = -sign(grad) and the rule's layer-loss slope, weighted by |grad|
    (grad_scale=True, FTPROP-MB) or normalised by the batch size (grad_scale=False).
    rule is one of STEP_RULES; backend is 'auto', 'kernel' or 'reference'.
    save (kernel backend) chooses what the forward keeps for the backward: 'auto' keeps a
    lossless bit-packed code of z for the rules whose slope only depends on an interval of z
    (ste: nothing, sste: 1 bit, saturated_hinge/hinge/perceptron: 2 bits) and z itself for the
    smooth rules; 'z' always keeps z; 'compact' also keeps an 8-bit code of the smooth rules'
    slope (absolute slope error at most s_max / 508, or s_max / 254 for slopes below s_max / 508,
    which never round to 0; s_max the rule's largest slope; see
    docs/spec.md, "Saved state").
    Second derivatives (create_graph=True, torch.func transforms) equal the reference's; with
    save='compact' a smooth rule has no z to differentiate its slope by, and raises instead.
    """
    _check_input(z)
    check_choice("rule", rule, STEP_RULES)
    check_choice("values", values, STEP_VALUES)
    check_bool("grad_scale", grad_scale)
    check_choice("save", save, SAVE_MODES)
    if exporting():
        if _export_path(z, backend):
            return step_export(z, values)
        return torch.ops.ftprop_cuda.step(z, rule, values == "01", grad_scale)
    if _use_kernel(z, backend) and not _decompose_under_compile(z, "step"):
        zero_one = values == "01"
        save_code = _needs_grad(z) and step_saves_code(rule, save)
        if transforms.transforms_active():
            return transforms.step_under_transform(z, rule, zero_one, grad_scale, save_code)
        if save_code:
            y = torch.ops.ftprop_cuda._step_saved(z, rule, zero_one, grad_scale)[0]
        else:
            y = torch.ops.ftprop_cuda.step(z, rule, zero_one, grad_scale)
        observer = _OBSERVERS.observer
        if observer is not None and _needs_grad(z):
            observer.step_unit(
                z, y, lambda zz: torch.ops.ftprop_cuda.step(zz, rule, zero_one, False),
                zero_one, kept_z=not save_code)
        return y
    y = reference.step(z, rule, values, grad_scale)
    observer = _OBSERVERS.observer
    if observer is not None and _needs_grad(z):
        observer.step_unit(z, y, None, values == "01", kept_z=False)
    return y


def staircase(z: torch.Tensor, steps: int = 3, lo: float = 0.0, hi: float = 1.0,
              rule: str = "soft_hinge", grad_scale: bool = True, backend: str = "auto",
              save: str = "auto") -> torch.Tensor:
    """Staircase (quantized ReLU) unit with steps + 1 levels on [lo, hi] (K = steps).

    Forward: y = lo + q (hi - lo), q = clamp(ceil(u (K - 1)), 0, K) / K, u = (z - lo) / (hi - lo).
    Backward: the rule's surrogate (STAIRCASE_RULES), weighted or batch-normalised as for step.
    save: as for step (sste: 1 bit; saturated_hinge: the threshold count in 2, 4 or 8 bits;
    soft_hinge: z, or its 8-bit slope code with save='compact', which has no second derivative).
    lo and hi must keep the levels finite in z's dtype and the widths hi - lo, B (hi - lo) and
    K B (hi - lo) finite in its op-math dtype (see check_staircase_range).
    """
    _check_input(z)
    steps, lo, hi = check_staircase_args(steps, lo, hi)
    check_staircase_range(z, steps, lo, hi)
    check_choice("rule", rule, STAIRCASE_RULES)
    check_bool("grad_scale", grad_scale)
    check_choice("save", save, SAVE_MODES)
    if exporting():
        if _export_path(z, backend):
            return staircase_export(z, steps, lo, hi)
        return torch.ops.ftprop_cuda.staircase(z, steps, lo, hi, rule, grad_scale)
    if _use_kernel(z, backend) and not _decompose_under_compile(z, "staircase"):
        save_code = _needs_grad(z) and staircase_saves_code(rule, steps, save)
        if transforms.transforms_active():
            return transforms.staircase_under_transform(z, steps, lo, hi, rule, grad_scale,
                                                        save_code)
        if save_code:
            y = torch.ops.ftprop_cuda._staircase_saved(z, steps, lo, hi, rule, grad_scale)[0]
        else:
            y = torch.ops.ftprop_cuda.staircase(z, steps, lo, hi, rule, grad_scale)
        observer = _OBSERVERS.observer
        if observer is not None and _needs_grad(z):
            observer.staircase_unit(
                z, y, lambda zz: torch.ops.ftprop_cuda.staircase(zz, steps, lo, hi, rule, False),
                steps, lo, hi, kept_z=not save_code)
        return y
    y = reference.staircase(z, steps, lo, hi, rule, grad_scale)
    observer = _OBSERVERS.observer
    if observer is not None and _needs_grad(z):
        observer.staircase_unit(z, y, None, steps, lo, hi, kept_z=False)
    return y
