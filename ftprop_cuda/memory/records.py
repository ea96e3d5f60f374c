"""What lean mode records in the forward: rebuildable tensors (entries), the inputs of their
recipes (sources), the tokens saved in place of a tensor (rebuilds), and the registry that finds
an entry by its tensor's storage."""
import weakref

import torch


def no_double_backward():
    return RuntimeError(
        "ftprop_cuda lean memory mode: no second derivatives (create_graph=True) through a "
        "tensor it rebuilt in the backward; train this model with memory='standard' "
        "(ftprop_cuda.lean(model, enabled=False)) to differentiate twice")


def watch(t):
    """A handle on t's version counter that keeps none of its memory: a detached alias (it shares
    the counter) whose storage is replaced by an empty one. Every in-place change of t or of any
    view of it, after t itself is gone too, shows in its _version."""
    alias = t.detach()
    try:
        alias.data = t.new_empty(0)
    except RuntimeError:  # a tensor type without an empty storage of its own: keep the alias
        pass
    return alias


def modified_in_place(size, dtype, version, now, detail):
    """Standard autograd's error for a saved tensor changed in place, with lean's detail."""
    return RuntimeError(
        "one of the variables needed for gradient computation has been modified by an inplace "
        f"operation: [{dtype} {list(size)}] is at version {now}; expected version {version} "
        f"instead. ftprop_cuda lean memory mode: {detail} (standard autograd raises the same "
        "error; a change made through .data or outside autograd cannot be seen)")


def rebuilt_detail(made_by, saved_by):
    return (f"the output of layer {made_by or '(unnamed)'!r}, saved by layer "
            f"{saved_by or '(unnamed)'!r}, is rebuilt for the backward and was changed in place "
            "after it was saved")


class Kept:
    """A saved tensor lean keeps as it is, with its version: under saved-tensor hooks autograd
    no longer checks it, so the unpack does (standard's error where it was changed in place)."""

    __slots__ = ("tensor", "version", "layer")

    def __init__(self, t, layer=None):
        self.tensor, self.version, self.layer = t, t._version, layer

    def unpack(self):
        t = self.tensor
        if t._version != self.version:
            raise modified_in_place(t.shape, t.dtype, self.version, t._version,
                                    f"a tensor saved by layer {self.layer or '(unnamed)'!r} "
                                    "was changed in place after it was saved")
        return t


class Entry:
    """A tensor produced in the forward that the backward can rebuild bitwise.

    build() returns a fresh tensor with the recorded geometry. The entry holds only a weak
    reference to the tensor itself; what it needs to rebuild it is kept elsewhere anyway (a
    batch norm's input, a unit's z) or is a small code.
    """

    __slots__ = ("ref", "version", "geometry", "dtype", "device", "how", "inputs", "fn",
                 "code", "code_fn", "uses", "cache", "layer", "__weakref__")

    def __init__(self, t, how, inputs=(), fn=None, code_fn=None, layer=None):
        self.ref = weakref.ref(t)
        self.version = t._version
        self.geometry = (tuple(t.shape), tuple(t.stride()))
        self.dtype, self.device = t.dtype, t.device
        self.how = how
        self.inputs = inputs  # Source objects
        self.fn = fn          # fn(*input values) -> tensor (under no_grad)
        self.code = None      # (planes, decode) once packed
        self.code_fn = code_fn
        self.uses = 0
        self.cache = None
        self.layer = layer    # the module that made the tensor, for error messages

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


class Source:
    """An input of a recipe: another entry, or a tensor that is kept anyway (version-checked)."""

    __slots__ = ("entry", "tensor", "version")

    def __init__(self, registry, t):
        self.entry = registry.lookup(t)
        if self.entry is not None and t.shape == self.entry.geometry[0] \
                and tuple(t.stride()) == self.entry.geometry[1]:
            # a code is taken now, while t holds the values the recipe reads (a residual add in
            # place changes them next)
            self.entry.prepare()
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


class Rebuild:
    """Saved in place of a view of an entry's tensor: the view's geometry over the rebuilt one,
    and its version (standard autograd's check: changed in place since, the unpack raises)."""

    __slots__ = ("entry", "size", "stride", "offset", "requires_grad", "version", "watch",
                 "layer")

    def __init__(self, entry, t, layer=None):
        self.entry = entry
        self.size, self.stride, self.offset = t.size(), t.stride(), t.storage_offset()
        self.requires_grad = t.requires_grad
        self.version, self.watch, self.layer = t._version, watch(t), layer

    def unpack(self):
        if self.watch._version != self.version:
            raise modified_in_place(self.size, self.entry.dtype, self.version,
                                    self.watch._version,
                                    rebuilt_detail(self.entry.layer, self.layer))
        if torch.is_grad_enabled() and self.requires_grad:
            raise no_double_backward()
        base = self.entry.build()
        return base.as_strided(self.size, self.stride, self.offset)


class Registry:
    """The entries of one lean forward, by their tensor's storage, and its report notes."""

    def __init__(self, report=None):
        self.entries = {}
        self.report = report  # dict name -> list of notes, or None
        self.module = None    # the name of the module being called, for the report

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


def same_bits(a, b):
    """Bitwise equality of two tensors (NaN payloads included), or of two Nones."""
    if a is None or b is None:
        return a is None and b is None
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    a, b = a.detach().reshape(-1).contiguous(), b.detach().reshape(-1).contiguous()
    if a.dtype == torch.bool or a.element_size() == 1:
        return torch.equal(a, b)
    return torch.equal(a.view(torch.uint8), b.view(torch.uint8))
