"""Lean memory mode: the same training step, keeping far less for the backward pass.

    model = ftprop_cuda.lean(model)          # one line, any model with Step/Staircase units
    print(ftprop_cuda.lean_report(model))    # after a training forward: what was made lean

Between a training forward and its backward, autograd keeps the tensors each layer saved. In a
hard-threshold network most of them are cheap to rebuild exactly, and lean mode rebuilds them in
the backward instead of keeping them (docs/spec.md, "Lean memory mode"):

* a unit's output, saved by the next layer (conv, linear, batch norm, pooling, ...), is rebuilt
  from the unit's kept z with the same kernel, or, where the unit keeps only a code, from a
  code of the output (2 bits for a step unit, ceil(log2(K + 2)) for a K-step staircase:
  each level, and NaN);
* a training-mode batch norm's output, kept by the unit after it (directly or through a
  residual add), is recomputed from the batch norm's own kept input;
* a 2-D max-pool keeps neither its input (its backward reads only the input's shape) nor int64
  indices: their window-local offsets, in 1, 2, 4 or 8 bits each (2 for a 2x2 window, 4 for 3x3).

Every rebuilt tensor is bitwise the one the standard path keeps, so the forward and every
gradient are bitwise identical. Anything lean mode does not recognise is kept as usual. It works
in eager mode; under torch.compile the compiler chooses what to keep, and it stands aside.
Second derivatives (create_graph=True) through a rebuilt tensor raise: the rebuilt tensor has no
history to differentiate.
"""
import contextlib
import functools
import math
import threading
import weakref

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_leaves

__all__ = ["lean", "lean_memory", "lean_report", "is_lean"]

_STATE = threading.local()


def _current():
    return getattr(_STATE, "ctx", None)


# ---------------------------------------------------------------------------------------------
# Bit packing of small codes (bit planes: exact for any width, device-agnostic torch ops)
# ---------------------------------------------------------------------------------------------
_BIT_WEIGHTS = {}


def _weights(device):
    w = _BIT_WEIGHTS.get(device)
    if w is None:
        w = _BIT_WEIGHTS[device] = torch.tensor([1, 2, 4, 8, 16, 32, 64, 128], dtype=torch.uint8,
                                                device=device)
    return w


def code_bits(states):
    """Bits per element for a code with `states` values."""
    return max(1, math.ceil(math.log2(states)))


def pack_codes(codes, bits):
    """codes: integer tensor with values in [0, 2**bits); returns the packed uint8 planes."""
    flat = codes.reshape(-1)
    n = flat.numel()
    pad = (-n) % 8
    if pad:
        flat = torch.cat([flat, flat.new_zeros(pad)])
    flat = flat.to(torch.int32 if bits > 8 else torch.uint8).view(-1, 8)
    w = _weights(flat.device)
    planes = []
    for j in range(bits):
        plane = ((flat >> j) & 1).to(torch.uint8)
        planes.append((plane * w).sum(dim=1, dtype=torch.uint8))
    return torch.stack(planes) if planes else flat.new_zeros((0, 0), dtype=torch.uint8)


def unpack_codes(planes, n, dtype=torch.int64):
    """The inverse of pack_codes: a flat tensor of n codes."""
    bits = planes.shape[0]
    w = _weights(planes.device)
    out = None
    for j in range(bits):
        plane = ((planes[j].unsqueeze(1) & w) != 0).view(-1)[:n].to(dtype)
        out = plane if j == 0 else out | (plane << j)
    return out


# ---------------------------------------------------------------------------------------------
# Rebuildable tensors
# ---------------------------------------------------------------------------------------------
class _Entry:
    """A tensor produced in the forward that the backward can rebuild bitwise.

    build() returns a fresh tensor with the recorded geometry. The entry holds only a weak
    reference to the tensor itself; what it needs to rebuild it is kept elsewhere anyway (a
    batch norm's input, a unit's z) or is a small code.
    """

    __slots__ = ("ref", "version", "geometry", "dtype", "device", "how", "inputs", "fn",
                 "code", "code_fn", "uses", "cache", "__weakref__")

    def __init__(self, t, how, inputs=(), fn=None, code_fn=None):
        self.ref = weakref.ref(t)
        self.version = t._version
        self.geometry = (tuple(t.shape), tuple(t.stride()))
        self.dtype, self.device = t.dtype, t.device
        self.how = how
        self.inputs = inputs  # _Source objects
        self.fn = fn          # fn(*input values) -> tensor (under no_grad)
        self.code = None      # (planes, decode) once packed
        self.code_fn = code_fn
        self.uses = 0
        self.cache = None

    def alive_as(self, t):
        base = self.ref()
        return (base is not None and t._version == self.version and base._version == self.version
                and t.dtype == self.dtype)

    def prepare(self):
        """Called when a saved tensor is about to depend on this entry (at pack time)."""
        if self.fn is None and self.code is None:  # a code built from the live tensor, once
            base = self.ref()
            self.code = self.code_fn(base)
            self.code_fn = None
        self.uses += 1

    def build(self):
        if self.cache is not None:
            value = self.cache
        else:
            if self.fn is not None:
                with torch.no_grad():
                    value = self.fn(*(s.value() for s in self.inputs))
            else:
                planes, decode = self.code
                value = decode(planes)
            size, stride = self.geometry
            if tuple(value.stride()) != stride:
                value = torch.empty_strided(size, stride, dtype=self.dtype,
                                            device=self.device).copy_(value)
        self.uses -= 1
        self.cache = value if self.uses > 0 else None
        return value


class _Source:
    """An input of a recipe: another entry, or a tensor that is kept anyway (version-checked)."""

    __slots__ = ("entry", "tensor", "version")

    def __init__(self, ctx, t):
        self.entry = ctx.lookup(t)
        if self.entry is not None and t.shape == self.entry.geometry[0] \
                and tuple(t.stride()) == self.entry.geometry[1]:
            self.entry.uses += 1
            self.tensor = None
        else:
            self.entry, self.tensor, self.version = None, t.detach(), t._version

    def value(self):
        if self.entry is not None:
            return self.entry.build()
        if self.tensor._version != self.version:
            raise RuntimeError(
                "ftprop_cuda lean memory mode: a tensor it recomputes from was modified in place "
                "between the forward and the backward; use memory='standard' for this model")
        return self.tensor

    def free(self):
        """Whether depending on this source keeps nothing beyond what is kept anyway."""
        return self.entry is not None


class _Rebuild:
    __slots__ = ("entry", "size", "stride", "offset", "requires_grad")

    def __init__(self, entry, t):
        self.entry = entry
        self.size, self.stride, self.offset = t.size(), t.stride(), t.storage_offset()
        self.requires_grad = t.requires_grad


class _ShapeOnly:
    """A max-pool's input: its backward reads the shape and layout, never the values."""

    __slots__ = ("size", "stride", "dtype", "device")

    def __init__(self, t):
        self.size, self.stride, self.dtype, self.device = t.size(), t.stride(), t.dtype, t.device


def _no_double_backward():
    return RuntimeError(
        "ftprop_cuda lean memory mode: no second derivatives (create_graph=True) through a "
        "tensor it rebuilt in the backward; train this model with memory='standard' "
        "(ftprop_cuda.lean(model, enabled=False)) to differentiate twice")


# ---------------------------------------------------------------------------------------------
# Max-pool indices as window-local offsets
# ---------------------------------------------------------------------------------------------
def _pair(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def _pool_params(args, kwargs):
    names = ("input", "kernel_size", "stride", "padding", "dilation", "ceil_mode")
    vals = dict(zip(names, args))
    vals.update({k: v for k, v in kwargs.items() if k in names})
    kernel = _pair(vals["kernel_size"])
    stride = vals.get("stride")
    stride = kernel if stride is None or stride == [] or stride == () else _pair(stride)
    return vals["input"], kernel, stride, _pair(vals.get("padding", 0)), \
        _pair(vals.get("dilation", 1)), bool(vals.get("ceil_mode", False))


def _offset_bits(kernel):
    """Bits per window offset (1, 2, 4 or 8), or None for windows of more than 256 elements."""
    window = kernel[0] * kernel[1]
    return next((b for b in (1, 2, 4, 8) if window <= 1 << b), None)


def _pool_offset_bits(kernel, dilation, in_w):
    """Bits per stored offset of a max-pool's window, or None where the indices stay int64
    (windows over 256 positions, or whose rows overlap in the flat index)."""
    bits = _offset_bits(kernel)
    rows_apart = (kernel[1] - 1) * dilation[1] < dilation[0] * in_w
    return bits if rows_apart else None


def _codec_available(device):
    from . import _ops
    return _ops.LOADED and device.type in _ops.KERNEL_DEVICES


@functools.lru_cache(maxsize=None)
def _has_cpu_kernel(*ops):
    """Whether every op named (ftprop_cuda::...) has a compiled CPU kernel (checked once)."""
    from . import _ops
    return all(_ops._has_kernel(f"ftprop_cuda::{op}", "CPU") for op in ops)


def _pool_backward_available(x):
    """Whether _LeanMaxPool2d serves this input: a contiguous floating-point CPU tensor, with the
    compiled backward from offsets loaded."""
    return x.device.type == "cpu" and x.is_floating_point() and x.is_contiguous() \
        and _has_cpu_kernel("_pool_offsets_pack", "_pool_offsets_backward")


class _LeanMaxPool2d(torch.autograd.Function):
    """A 2-D max-pool (contiguous CPU input) that keeps only its window offsets, and whose
    backward reads them directly: neither its input nor int64 indices are kept or rebuilt. The
    forward is ATen's; the backward sums the gradients in ATen's order and arithmetic, so both
    are bitwise the standard path's (csrc/cpu/pool_offsets.cpp)."""

    @staticmethod
    def forward(ctx, x, kernel, stride, padding, dilation, ceil_mode, bits):
        out, idx = torch.ops.aten.max_pool2d_with_indices.default(
            x, list(kernel), list(stride), list(padding), list(dilation), ceil_mode)
        ctx.args = (x.shape[-1], list(kernel), list(stride), list(padding), list(dilation), bits)
        ctx.input_size = list(x.shape)
        ctx.save_for_backward(torch.ops.ftprop_cuda._pool_offsets_pack(idx, *ctx.args))
        return out

    @staticmethod
    def backward(ctx, grad):
        if torch.is_grad_enabled():
            raise _no_double_backward()
        packed, = ctx.saved_tensors
        return (torch.ops.ftprop_cuda._pool_offsets_backward(grad, packed, ctx.input_size,
                                                             *ctx.args),
                None, None, None, None, None, None)


class _PoolIndices:
    """A max-pool's int64 indices as window-local offsets (csrc/pool_offsets.h)."""

    __slots__ = ("packed", "size", "stride", "args")

    def __init__(self, t, in_w, params, bits):
        kernel, stride, padding, dilation = params
        self.args = (in_w, list(kernel), list(stride), list(padding), list(dilation), bits)
        self.size, self.stride = t.size(), t.stride()
        self.packed = torch.ops.ftprop_cuda._pool_offsets_pack(t, *self.args)

    def unpack(self):
        idx = torch.ops.ftprop_cuda._pool_offsets_unpack(self.packed, list(self.size), *self.args)
        if tuple(idx.stride()) == tuple(self.stride):
            return idx
        return torch.empty_strided(self.size, self.stride, dtype=idx.dtype,
                                   device=idx.device).copy_(idx)


# ---------------------------------------------------------------------------------------------
# The context: a torch-function mode that records recipes, and saved-tensor hooks that use them
# ---------------------------------------------------------------------------------------------
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


class _Context(TorchFunctionMode):
    def __init__(self, report=None):
        super().__init__()
        self.entries = {}
        self.pool = None  # (input, params, offset bits) while a max-pool runs
        self.report = report  # dict name -> list of notes, or None
        self.module = None

    # registry ----------------------------------------------------------------------------
    def lookup(self, t):
        if not isinstance(t, torch.Tensor) or t.layout != torch.strided or t.is_nested:
            return None
        try:
            ptr = t.untyped_storage().data_ptr()
        except (RuntimeError, NotImplementedError):
            return None
        entry = self.entries.get(ptr)
        return entry if entry is not None and entry.alive_as(t) else None

    def register(self, t, entry):
        if t.storage_offset() != 0 or t.numel() == 0:
            return None
        self.entries[t.untyped_storage().data_ptr()] = entry
        return entry

    def note(self, what):
        if self.report is not None:
            self.report.setdefault(self.module or "(model)", []).append(what)

    # units (called from ftprop_cuda.functional) ---------------------------------------------
    def unit(self, z, y, forward, code_fn, kept_z):
        """y = forward(z) of a unit; kept_z: the unit's backward keeps z itself."""
        if not y.requires_grad or y.storage_offset() != 0:
            return
        if kept_z:
            src = _Source(self, z)
            entry = _Entry(y, "unit output rebuilt from z", (src,), forward)
        else:
            entry = _Entry(y, "unit output kept as a code", code_fn=code_fn)
        self.register(y, entry)

    # torch-function mode ------------------------------------------------------------------
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.batch_norm:
            return self._batch_norm(func, args, kwargs)
        if func is F.max_pool2d:
            return self._max_pool(func, args, kwargs)
        if func in _ADD or func in _IADD:
            return self._add(func, args, kwargs)
        return func(*args, **kwargs)

    def _batch_norm(self, func, args, kwargs):
        out = func(*args, **kwargs)
        names = ("input", "running_mean", "running_var", "weight", "bias", "training",
                 "momentum", "eps")
        a = dict(zip(names, args))
        a.update(kwargs)
        if a.get("training", False) and out.requires_grad and isinstance(out, torch.Tensor):
            x, rm, rv = a["input"], a.get("running_mean"), a.get("running_var")
            w, b = a.get("weight"), a.get("bias")
            momentum, eps = a.get("momentum", 0.1), a.get("eps", 1e-5)
            # the same call on the same input: running statistics go to throw-away copies
            # (they only receive the update; the output uses the batch statistics)
            dummy_rm = None if rm is None else rm.detach().clone()
            dummy_rv = None if rv is None else rv.detach().clone()
            params = [p for p in (w, b) if p is not None]
            sources = (_Source(self, x),) + tuple(_Source(self, p) for p in params)

            autocast = _autocast_state(x.device.type)

            def recompute(xv, *pv, _w=w is not None, _b=b is not None):
                it = iter(pv)
                wv = next(it) if _w else None
                bv = next(it) if _b else None
                with torch.no_grad(), _autocast(*autocast):
                    return F.batch_norm(xv, dummy_rm, dummy_rv, wv, bv, True, momentum, eps)

            self.register(out, _Entry(out, "batch-norm output recomputed", sources, recompute))
        return out

    def _max_pool(self, func, args, kwargs):
        if kwargs.get("return_indices") or (len(args) > 6 and args[6]):
            return func(*args, **kwargs)
        x, kernel, stride, padding, dilation, ceil_mode = _pool_params(args, kwargs)
        if x.dim() not in (3, 4) or not x.requires_grad:
            return func(*args, **kwargs)
        bits = _pool_offset_bits(kernel, dilation, x.shape[-1])
        if bits is not None and _pool_backward_available(x):
            self.note(f"max-pool keeps {bits}-bit window offsets, read by its backward "
                      "(no input, no indices)")
            return _LeanMaxPool2d.apply(x, kernel, stride, padding, dilation, ceil_mode, bits)
        self.pool = (x, (kernel, stride, padding, dilation), bits)
        try:
            return func(*args, **kwargs)
        finally:
            self.pool = None

    def _add(self, func, args, kwargs):
        if len(args) != 2 or kwargs or not all(isinstance(a, torch.Tensor) for a in args):
            return func(*args, **kwargs)
        a, b = args
        ea, eb = self.lookup(a), self.lookup(b)
        if ea is None or eb is None:
            return func(*args, **kwargs)
        sa, sb = _Source(self, a), _Source(self, b)
        out = func(*args, **kwargs)
        if sa.free() and sb.free() and out.requires_grad and out.dtype == a.dtype:
            autocast = _autocast_state(a.device.type)

            def recompute(av, bv):
                with torch.no_grad(), _autocast(*autocast):
                    return av + bv

            self.register(out, _Entry(out, "residual sum recomputed", (sa, sb), recompute))
        else:  # release the uses taken above
            for s in (sa, sb):
                if s.entry is not None:
                    s.entry.uses -= 1
        return out

    # saved-tensor hooks -------------------------------------------------------------------
    def pack(self, t):
        if self.pool is not None:
            x, params, bits = self.pool
            if t.dtype == torch.int64 and t.dim() == x.dim() and bits is not None \
                    and _codec_available(t.device):
                self.note(f"max-pool indices kept as {bits}-bit window offsets")
                return _PoolIndices(t, x.shape[-1], params, bits)
            if t.shape == x.shape and t.untyped_storage().data_ptr() == \
                    x.untyped_storage().data_ptr():
                self.note("max-pool input not kept (its backward reads only the shape)")
                return _ShapeOnly(t)
        entry = self.lookup(t)
        if entry is None:
            return t
        entry.prepare()
        self.note(entry.how)
        return _Rebuild(entry, t)

    @staticmethod
    def unpack(packed):
        if isinstance(packed, torch.Tensor):
            return packed
        if isinstance(packed, _Rebuild):
            if torch.is_grad_enabled() and packed.requires_grad:
                raise _no_double_backward()
            base = packed.entry.build()
            return base.as_strided(packed.size, packed.stride, packed.offset)
        if isinstance(packed, _ShapeOnly):
            return torch.empty_strided(packed.size, packed.stride, dtype=packed.dtype,
                                       device=packed.device)
        return packed.unpack()


@contextlib.contextmanager
def lean_memory(report=None):
    """Runs a training forward in lean memory mode (see the module docstring).

    A no-op under torch.compile, under torch.func transforms and where grad mode is off.
    report: a dict to receive, per module, what was made lean.
    """
    if (torch.compiler.is_compiling() or not torch.is_grad_enabled()
            or torch._C._are_functorch_transforms_active()):
        yield None
        return
    ctx = _Context(report)
    prev = _current()
    _STATE.ctx = ctx
    try:
        with torch.autograd.graph.saved_tensors_hooks(ctx.pack, ctx.unpack), ctx:
            yield ctx
    finally:
        _STATE.ctx = prev
        ctx.entries.clear()


# ---------------------------------------------------------------------------------------------
# Unit outputs: the rebuild from z, and the output codes
# ---------------------------------------------------------------------------------------------
def _level_codec(device):
    """Whether the compiled level-code loops serve this device (CPU; elsewhere torch ops)."""
    return device.type == "cpu" and _has_cpu_kernel("_level_code_pack", "_level_code_unpack")


def _row_major(shape, stride):
    """Whether strides `stride` lay out `shape` densely in row-major order."""
    expected = 1
    for size, st in zip(reversed(shape), reversed(stride)):
        if size != 1 and st != expected:
            return False
        expected *= size
    return True


def _decoder(table, shape, stride):
    def decode(planes):
        n = math.prod(shape)
        if _level_codec(table.device):
            flat = torch.ops.ftprop_cuda._level_code_unpack(planes, table, n)
            if _row_major(shape, stride):
                return flat.as_strided(shape, stride)
            values = flat.view(shape)
        else:
            values = table[unpack_codes(planes, n)].view(shape)
        out = torch.empty_strided(shape, stride, dtype=table.dtype, device=table.device)
        return out.copy_(values)
    return decode


def _level_code(y, levels, torch_codes):
    """(planes, decode) of y, whose values are all in `levels` (ascending) or NaN.

    torch_codes(y): the level indices computed with torch ops, for devices without the loops.
    """
    table = torch.cat([levels, levels.new_full((1,), math.nan)])
    if _level_codec(y.device):
        planes = torch.ops.ftprop_cuda._level_code_pack(y, levels)
    else:
        planes = pack_codes(torch_codes(y), code_bits(levels.numel() + 1))
    return planes, _decoder(table, tuple(y.shape), tuple(y.stride()))


def step_output_code(values_low):
    """code_fn for a step unit's output: 0 = low, 1 = high, 2 = NaN (2 bits)."""
    def code_fn(y):
        levels = torch.tensor([values_low, 1.0], dtype=y.dtype, device=y.device)
        return _level_code(y, levels, lambda v: torch.where(
            torch.isnan(v), 2, (v > 0).to(torch.uint8)).to(torch.uint8))
    return code_fn


def staircase_levels(steps, lo, hi, dtype, device):
    """The K + 1 output levels, computed as the forward computes them (reference.py)."""
    from .reference import opmath_dtype
    op = opmath_dtype(dtype)
    c = torch.arange(steps + 1, dtype=op, device=device)
    q = c / torch.tensor(float(steps), dtype=op, device=device)
    return (lo + q * (hi - lo)).to(dtype)


def staircase_output_code(steps, lo, hi):
    """code_fn for a staircase's output: the level index, K + 1 for NaN."""
    def code_fn(y):
        levels = staircase_levels(steps, lo, hi, y.dtype, y.device)

        def torch_codes(v):
            wide = torch.float64 if v.dtype == torch.float64 else torch.float32
            flat = v.reshape(-1)
            codes = torch.searchsorted(levels.to(wide), flat.to(wide))
            return torch.where(torch.isnan(flat), steps + 1, codes)

        return _level_code(y, levels, torch_codes)
    return code_fn


def note_unit(z, y, forward, code_fn, kept_z):
    """Called by the ops after a unit's forward while lean mode records."""
    ctx = _current()
    if ctx is not None:
        ctx.unit(z, y, forward, code_fn, kept_z)


# ---------------------------------------------------------------------------------------------
# The one-line model API
# ---------------------------------------------------------------------------------------------
class _LeanHooks:
    """Forward hooks that run a module's training forward under lean_memory().

    Only the model itself carries hooks. While a lean forward runs, two global module hooks
    (removed when it ends) keep the name of the module being called, for lean_report."""

    def __init__(self, model):
        self.names = {m: n or "(model)" for n, m in model.named_modules()}
        self.handles = []
        self.stack = None
        self.depth = 0
        self.report = {}
        self.ctx = None
        self.calls = []  # the modules being called, innermost last

    def enter(self, module, args):
        if torch.compiler.is_compiling():
            return
        if self.depth == 0:
            stack = contextlib.ExitStack()
            report = {}
            ctx = stack.enter_context(lean_memory(report))
            if ctx is None:
                stack.close()
            else:
                from torch.nn.modules import module as nn_module
                stack.callback(nn_module.register_module_forward_pre_hook(self.sub_enter).remove)
                stack.callback(nn_module.register_module_forward_hook(
                    self.sub_exit, always_call=True).remove)
                self.stack, self.ctx, self.report, self.calls = stack, ctx, report, []
        self.depth += 1

    def exit(self, module, args, output):
        if torch.compiler.is_compiling():
            return
        self.depth -= 1
        if self.depth == 0 and self.stack is not None:
            stack, self.stack, self.ctx = self.stack, None, None
            stack.close()

    def sub_enter(self, module, args):
        if self.ctx is not None:
            self.calls.append(self.names.get(module))
            self.ctx.module = next((n for n in reversed(self.calls) if n), None)

    def sub_exit(self, module, args, output):
        if self.ctx is not None and self.calls:
            self.calls.pop()
            self.ctx.module = next((n for n in reversed(self.calls) if n), None)

    def install(self, model):
        self.handles.append(model.register_forward_pre_hook(self.enter))
        self.handles.append(model.register_forward_hook(self.exit, always_call=True))

    def remove(self):
        for h in self.handles:
            h.remove()
        self.handles = []


def lean(model, enabled=True):
    """Puts model in lean memory mode (enabled=False: back to the standard mode); returns it.

    Parameters, buffers, state_dict and outputs are unchanged; only what a training forward
    keeps for the backward is. lean_report(model) says, after a forward, which layers kept less.
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}")
    if not isinstance(enabled, bool):
        raise TypeError(f"enabled must be True or False; got {enabled!r}")
    hooks = getattr(model, "_ftprop_lean", None)
    if hooks is not None:
        hooks.remove()
        del model._ftprop_lean
    if enabled:
        hooks = _LeanHooks(model)
        hooks.install(model)
        model._ftprop_lean = hooks
    return model


def is_lean(model):
    return getattr(model, "_ftprop_lean", None) is not None


def lean_report(model):
    """What the last training forward of a lean model kept less of, per layer (a string)."""
    hooks = getattr(model, "_ftprop_lean", None)
    if hooks is None:
        return "lean memory mode is off for this model"
    if not hooks.report:
        return "no training forward in lean memory mode yet (or nothing could be made lean)"
    lines = []
    for name, notes in hooks.report.items():
        seen = list(dict.fromkeys(notes))
        lines.append(f"{name}: " + "; ".join(seen))
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Under torch.compile
# ---------------------------------------------------------------------------------------------
# Under torch.compile the graph's partitioner decides what the forward keeps. With a memory
# budget below 1 it keeps less and recomputes cheap operations in the backward instead; the
# budget is read when a graph is compiled, so the wrapper below holds it around every call.
# On the CPU, inductor's layout pass runs a convolutional graph in channels-last and converts
# the weights to channels-last copies on every call; the backward keeps those copies alive
# beside the parameters (resnet18: 45 MiB, whatever the batch). So before its first CPU call the
# wrapper stores the model's 4-D parameters channels-last (same values, other strides) and the
# graph uses them as they are. On a GPU inductor may choose either layout, so they stay as given.
LEAN_COMPILE_BUDGET = 0.65


def _any_off_cpu(tree):
    return any(isinstance(t, torch.Tensor) and t.device.type != "cpu"
               for t in tree_leaves(tree))


class _LeanCompiled(torch.nn.Module):
    """model compiled with a lean activation-memory budget (see compile_lean)."""

    def __init__(self, model, budget, compile_kwargs):
        super().__init__()
        self.module = model
        self.budget = budget
        self._compiled = torch.compile(self._forward, **compile_kwargs)
        self._layout_done = False

    def _forward(self, *args, **kwargs):  # its own code object: its own compiled graphs
        return self.module(*args, **kwargs)

    def forward(self, *args, **kwargs):
        import torch._functorch.config as functorch_config

        if not self._layout_done:
            self._layout_done = True
            # DistributedDataParallel has laid out its gradient buckets by the parameters'
            # strides already: convert before wrapping (params_channels_last), not here.
            if not isinstance(self.module, torch.nn.parallel.DistributedDataParallel) and \
                    not _any_off_cpu((args, kwargs)):
                params_channels_last(self.module)
        with functorch_config.patch(activation_memory_budget=self.budget):
            return self._compiled(*args, **kwargs)


def params_channels_last(model):
    """Stores model's 4-D CPU parameters channels-last, in place (values unchanged).

    compile_lean does this on its first CPU call; call it yourself before wrapping the model in
    DistributedDataParallel (whose gradient buckets follow the parameters' strides at wrapping)
    and compile the wrapper with compile_lean."""
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 4 and p.device.type == "cpu" and p.layout == torch.strided \
                    and not p.is_contiguous(memory_format=torch.channels_last):
                p.data = p.data.contiguous(memory_format=torch.channels_last)


def compile_lean(model, budget=None, **compile_kwargs):
    """torch.compile(model, **compile_kwargs) keeping less for the backward.

    The compiled graph's partitioner gets an activation-memory budget (default
    LEAN_COMPILE_BUDGET, a fraction of what it would keep with no budget) and recomputes cheap
    operations in the backward to stay within it. On its first call with CPU inputs it stores
    the model's 4-D parameters (convolution weights) channels-last, in place: the values are
    unchanged, and the compiled graph no longer keeps a channels-last copy of every weight for
    the backward (a DistributedDataParallel model is left as it is: call params_channels_last
    on the inner model before wrapping it). Returns a module whose forward calls the compiled
    model; parameters and state_dict are model's, under the prefix 'module.'.
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}")
    budget = LEAN_COMPILE_BUDGET if budget is None else budget
    if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not 0 < budget <= 1:
        raise ValueError(f"budget must be a number in (0, 1]; got {budget!r}")
    return _LeanCompiled(model, float(budget), compile_kwargs)
