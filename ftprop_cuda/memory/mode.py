"""The lean forward: a torch-function mode that records how to rebuild what the layers save, and
saved-tensor hooks that keep a small token instead of the tensor and rebuild it in the backward.

Recipes (recorded while the forward runs): a unit's output (announced by the ops through
ftprop_cuda.ops.observers), a training-mode batch norm's output, a residual sum of two recorded
tensors, and a 2-D max-pool's indices and input.
"""
import contextlib

import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from ..ops.observers import UnitObserver, observing
from .batch_norm import kept_statistics
from .batch_norm import rebuild as batch_norm_rebuild
from .codes import staircase_output_code, step_output_code
from .pool import (LeanMaxPool2d, PoolIndices, ShapeOnly, codec_available, pool_backward_available,
                   pool_may_escape, pool_offset_bits, pool_params)
from .records import Entry, Kept, Rebuild, Registry, Source


def has_tangent(x):
    """Whether x is a dual tensor of forward-mode AD (lean's max-pool has no jvp: stand aside)."""
    if getattr(fwAD, "_current_level", -1) < 0:
        return False
    return fwAD.unpack_dual(x).tangent is not None


def _autocast_state(device_type):
    """(device type, enabled, dtype): a recomputation runs under the forward's autocast state
    (the backward usually runs outside the autocast region)."""
    try:
        return device_type, torch.is_autocast_enabled(device_type), \
            torch.get_autocast_dtype(device_type)
    except (RuntimeError, TypeError):  # a device type autocast does not know
        return device_type, False, None


def _autocast(device_type, enabled, dtype):
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type, dtype=dtype, enabled=True)


_ADD = {torch.Tensor.add, torch.Tensor.__add__, torch.Tensor.__radd__, torch.add}
_IADD = {torch.Tensor.add_, torch.Tensor.__iadd__}
_RECORDED = _ADD | _IADD | {F.batch_norm, F.max_pool2d}
_BATCH_NORM_ARGS = ("input", "running_mean", "running_var", "weight", "bias", "training",
                    "momentum", "eps")


def _record_batch_norm(ctx, func, args, kwargs):
    """A training-mode batch norm: its output is rebuilt from its input, parameters and, where
    batch_norm.py's one-pass formula applies, the batch statistics its backward keeps."""
    out = func(*args, **kwargs)
    a = dict(zip(_BATCH_NORM_ARGS, args))
    a.update(kwargs)
    if a.get("training", False) and out.requires_grad and isinstance(out, torch.Tensor):
        x, w, b = a["input"], a.get("weight"), a.get("bias")
        params = [p for p in (w, b) if p is not None]
        sources = (Source(ctx, x),) + tuple(Source(ctx, p) for p in params)
        autocast = _autocast_state(x.device.type)
        stats = kept_statistics(out, x, w, b, autocast[1])
        if stats is not None:  # one pass over x from the statistics the node keeps anyway
            ctx.register(out, Entry(out, "batch-norm output rebuilt from its kept statistics",
                                    sources + tuple(Source(ctx, t) for t in stats),
                                    _one_pass(w is not None, b is not None), layer=ctx.module))
            return out
        ctx.register(out, Entry(out, "batch-norm output recomputed", sources,
                                _full_recompute(a, w is not None, b is not None, autocast),
                                layer=ctx.module))
    return out


def _weight_bias(values, has_w, has_b):
    """(weight, bias, the rest) from a batch norm's source values after its input: the weight
    and the bias come first where the call had them."""
    k = int(has_w) + int(has_b)
    it = iter(values[:k])
    return (next(it) if has_w else None), (next(it) if has_b else None), values[k:]


def _one_pass(has_w, has_b):
    """The output from the batch norm's input, parameters and kept statistics (batch_norm.py)."""
    def rebuild(xv, *rest):
        wv, bv, (mean, invstd) = _weight_bias(rest, has_w, has_b)
        return batch_norm_rebuild(xv, mean, invstd, wv, bv)
    return rebuild


def _full_recompute(a, has_w, has_b, autocast):
    """The same batch-norm call on the same input; its running statistics go to throw-away
    copies (they only receive the update; the output uses the batch statistics)."""
    rm, rv = a.get("running_mean"), a.get("running_var")
    momentum, eps = a.get("momentum", 0.1), a.get("eps", 1e-5)
    dummy_rm = None if rm is None else rm.detach().clone()
    dummy_rv = None if rv is None else rv.detach().clone()

    def recompute(xv, *pv):
        wv, bv, _ = _weight_bias(pv, has_w, has_b)
        with torch.no_grad(), _autocast(*autocast):
            return F.batch_norm(xv, dummy_rm, dummy_rv, wv, bv, True, momentum, eps)
    return recompute


def _record_max_pool(ctx, func, args, kwargs):
    """A 2-D max-pool: the lean Function, or the offsets codec for its indices (see pack)."""
    if kwargs.get("return_indices") or (len(args) > 6 and args[6]):
        return func(*args, **kwargs)
    x, kernel, stride, padding, dilation, ceil_mode = pool_params(args, kwargs)
    if x.dim() not in (3, 4) or not x.requires_grad or has_tangent(x):
        return func(*args, **kwargs)
    bits = pool_offset_bits(kernel, dilation, x.shape[-1], pool_may_escape(x))
    if bits is not None and pool_backward_available(x):
        ctx.note(f"max-pool keeps {bits}-bit window offsets, read by its backward "
                 "(no input, no indices)")
        return LeanMaxPool2d.apply(x, kernel, stride, padding, dilation, ceil_mode, bits,
                                   ctx.module)
    ctx.pool = (x, (kernel, stride, padding, dilation), bits)
    try:
        return func(*args, **kwargs)
    finally:
        ctx.pool = None


def _record_add(ctx, func, args, kwargs):
    """The sum of two recorded tensors (a residual add): recomputed from them."""
    if len(args) != 2 or kwargs or not all(isinstance(a, torch.Tensor) for a in args):
        return func(*args, **kwargs)
    a, b = args
    if a.dtype != b.dtype or a.device != b.device:  # a promoted sum, rounded back in place
        return func(*args, **kwargs)
    ea, eb = ctx.lookup(a), ctx.lookup(b)
    if ea is None or eb is None:
        return func(*args, **kwargs)
    sa, sb = Source(ctx, a), Source(ctx, b)
    out = func(*args, **kwargs)
    if sa.free() and sb.free() and out.requires_grad and out.dtype == a.dtype:
        autocast = _autocast_state(a.device.type)

        def recompute(av, bv):
            with torch.no_grad(), _autocast(*autocast):
                return av + bv

        ctx.register(out, Entry(out, "residual sum recomputed", (sa, sb), recompute,
                                layer=ctx.module))
    else:  # release the uses taken above
        for s in (sa, sb):
            if s.entry is not None:
                s.entry.uses -= 1
    return out


class LeanContext(Registry, UnitObserver, TorchFunctionMode):
    """One lean forward: the torch-function mode recording recipes, the unit observer, and the
    saved-tensor hooks (pack, unpack) using what was recorded."""

    def __init__(self, report=None):
        Registry.__init__(self, report)
        TorchFunctionMode.__init__(self)
        self.pool = None  # (input, params, offset bits) while a max-pool runs

    # units (announced by ftprop_cuda.ops.functional) -------------------------------------
    def unit(self, z, y, forward, code_fn, kept_z):
        """y = forward(z) of a unit; kept_z: the unit's backward keeps z itself."""
        if not y.requires_grad or y.storage_offset() != 0 or not self.hooks_on_top():
            return
        if kept_z:
            entry = Entry(y, "unit output rebuilt from z", (Source(self, z),), forward,
                          layer=self.module)
        else:
            entry = Entry(y, "unit output kept as a code", code_fn=code_fn, layer=self.module)
        self.register(y, entry)

    def step_unit(self, z, y, rebuild, zero_one, kept_z):
        self.unit(z, y, rebuild, step_output_code(0.0 if zero_one else -1.0), kept_z)

    def staircase_unit(self, z, y, rebuild, steps, lo, hi, kept_z):
        self.unit(z, y, rebuild, staircase_output_code(steps, lo, hi), kept_z)

    # torch-function mode ------------------------------------------------------------------
    def hooks_on_top(self):
        """Whether lean's saved-tensor hooks are the innermost ones: inside a region with its
        own hooks (a non-reentrant checkpoint, save_on_cpu, a user's pack) lean records
        nothing, and the tensors saved there go to those hooks as in the standard path."""
        top = torch._C._autograd._top_saved_tensors_default_hooks(False)
        return top is not None and top[0] == self.pack

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func not in _RECORDED or not self.hooks_on_top():
            return func(*args, **kwargs)
        if func is F.batch_norm:
            return _record_batch_norm(self, func, args, kwargs)
        if func is F.max_pool2d:
            return _record_max_pool(self, func, args, kwargs)
        if func in _ADD or func in _IADD:
            return _record_add(self, func, args, kwargs)
        return func(*args, **kwargs)

    # saved-tensor hooks -------------------------------------------------------------------
    def _pack_pool(self, t):
        """The token of a tensor a running max-pool saves, or None if it is none of its own."""
        x, params, bits = self.pool
        if t.dtype == torch.int64 and t.dim() == x.dim() and bits is not None \
                and codec_available(t.device):
            self.note(f"max-pool indices kept as {bits}-bit window offsets")
            return PoolIndices(t, x.shape[-1], params, bits)
        if t.shape == x.shape and t.untyped_storage().data_ptr() == \
                x.untyped_storage().data_ptr():
            self.note("max-pool input not kept (its backward reads only the shape)")
            return ShapeOnly(t, self.module)
        return None

    def pack(self, t):
        if self.pool is not None:
            token = self._pack_pool(t)
            if token is not None:
                return token
        entry = self.lookup(t)
        if entry is None:
            return Kept(t, self.module)
        entry.prepare()
        self.note(entry.how)
        return Rebuild(entry, t, self.module)

    @staticmethod
    def unpack(packed):
        if isinstance(packed, torch.Tensor):
            return packed
        return packed.unpack()  # Kept, Rebuild, PoolIndices or ShapeOnly


def stands_aside():
    """Whether a forward starting now runs as in the standard mode: under torch.compile,
    torch.jit.trace, torch.func transforms or forward-mode AD, where grad mode is off, inside
    saved-tensor hooks someone else set (a checkpoint, save_on_cpu, allow_mutation_on_saved_
    tensors, a nested lean forward's are its own) or where they are disabled."""
    if torch.compiler.is_compiling() or torch.jit.is_tracing() or not torch.is_grad_enabled():
        return True
    if torch._C._are_functorch_transforms_active() or getattr(fwAD, "_current_level", -1) >= 0:
        return True
    if not torch._C._autograd._saved_tensors_hooks_is_enabled():
        return True
    top = torch._C._autograd._top_saved_tensors_default_hooks(False)
    return top is not None and not isinstance(getattr(top[0], "__self__", None), LeanContext)


@contextlib.contextmanager
def lean_memory(report=None):
    """Runs a training forward in lean memory mode (see ftprop_cuda.memory).

    A no-op where it stands aside (see stands_aside): the forward is then the standard one.
    report: a dict to receive, per module, what was made lean.
    """
    if stands_aside():
        yield None
        return
    ctx = LeanContext(report)
    try:
        with observing(ctx), torch.autograd.graph.saved_tensors_hooks(ctx.pack, ctx.unpack), ctx:
            yield ctx
    finally:
        ctx.entries.clear()
