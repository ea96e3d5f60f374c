"""The layers of the lean-mode fuzzer's random programs (tests/lean_fuzz_programs.py builds them).

Plain torch.nn layers are used as they are; the modules here are the user-style glue between them
(residual adds in their in-place and out-of-place spellings, concatenation, views and slices,
checkpointed blocks, autocast regions, functional pools with tuple arguments, a learnable scale).
Every module's repr says everything needed to rebuild it, so that a model's repr describes it.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint


class Seq(nn.Sequential):
    """A block of the program (nn.Sequential, named so that reprs read as a program)."""


class Residual(nn.Module):
    """x combined with body(x) by one spelling of a residual add.

    add: x + f(x); radd: f(x) + x; torch_add: torch.add(f(x), x); iadd: y = f(x); y += x;
    add_: f(x).add_(x); x_iadd: x = x * 1 then x += f(x) (the pre-add tensor changed in place);
    clone_iadd: y = x.clone(); y += f(x); detach: x + f(x).detach(); mixed_add: (x + f(x) in
    another float dtype), cast back; mixed_iadd: y = f(x); y += x in another dtype (rounded to
    y's dtype)."""

    MODES = ("add", "radd", "torch_add", "iadd", "add_", "x_iadd", "clone_iadd", "detach",
             "mixed_add", "mixed_iadd")

    def __init__(self, body, mode):
        super().__init__()
        self.body, self.mode = body, mode

    def forward(self, x):
        if self.mode == "x_iadd":
            x = x * 1
            x += self.body(x)
            return x
        if self.mode == "clone_iadd":
            y = x.clone()
            y += self.body(x)
            return y
        y = self.body(x)
        if self.mode.startswith("mixed"):
            other = torch.float32 if x.dtype != torch.float32 else torch.float64
            if self.mode == "mixed_add":
                return (x + y.to(other)).to(x.dtype)
            y += x.to(other)
            return y
        if self.mode == "add":
            return x + y
        if self.mode == "detach":
            return x + y.detach()
        if self.mode == "radd":
            return y + x
        if self.mode == "torch_add":
            return torch.add(y, x)
        if self.mode == "iadd":
            y += x
            return y
        return y.add_(x)

    def extra_repr(self):
        return f"mode={self.mode!r}"


class TwoBranch(nn.Module):
    """a(x) + b(x): two consumers of x, their outputs summed."""

    def __init__(self, a, b):
        super().__init__()
        self.a, self.b = a, b

    def forward(self, x):
        return self.a(x) + self.b(x)


class Concat(nn.Module):
    """torch.cat([x, body(x)], dim) (or the other order)."""

    def __init__(self, body, dim, first):
        super().__init__()
        self.body, self.dim, self.first = body, dim, first

    def forward(self, x):
        y = self.body(x)
        return torch.cat([x, y] if self.first else [y, x], self.dim)

    def extra_repr(self):
        return f"dim={self.dim}, x_first={self.first}"


class Checkpointed(nn.Module):
    """torch.utils.checkpoint.checkpoint(body, x, use_reentrant=...)."""

    def __init__(self, body, reentrant):
        super().__init__()
        self.body, self.reentrant = body, reentrant

    def forward(self, x):
        return checkpoint(self.body, x, use_reentrant=self.reentrant)

    def extra_repr(self):
        return f"use_reentrant={self.reentrant}"


class Autocast(nn.Module):
    """body(x) under torch.autocast(cpu, bf16); the result cast back to the model's dtype."""

    def __init__(self, body, dtype):
        super().__init__()
        self.body, self.dtype = body, dtype

    def forward(self, x):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = self.body(x)
        return y.to(self.dtype)

    def extra_repr(self):
        return f"autocast=('cpu', torch.bfloat16), back_to={self.dtype}"


class View(nn.Module):
    """A view, reshape or slice of x (kind and its arguments; see forward)."""

    def __init__(self, kind, arg=None):
        super().__init__()
        self.kind, self.arg = kind, arg

    def forward(self, x):
        k, a = self.kind, self.arg
        if k == "flatten":
            return x.flatten(1)
        if k == "view":  # x.view(N, *a)
            return x.view(x.shape[0], *a)
        if k == "reshape":
            return x.reshape(x.shape[0], *a)
        if k == "slice":  # (dim, start, stop, step)
            dim, start, stop, step = a
            index = [slice(None)] * x.dim()
            index[dim] = slice(start, stop, step)
            return x[tuple(index)]
        if k == "narrow":  # (dim, start, length)
            return x.narrow(*a)
        if k == "transpose":  # the last two dimensions (a non-contiguous view)
            return x.transpose(-1, -2)
        if k == "channels_last":
            return x.contiguous(memory_format=torch.channels_last)
        if k == "contiguous":
            return x.contiguous()
        raise ValueError(f"unknown view kind {k!r}")

    def extra_repr(self):
        return f"{self.kind!r}, {self.arg!r}"


class Scale(nn.Module):
    """x * w (or w * x) with a learnable per-channel w: mul saves both of its inputs."""

    def __init__(self, shape, left):
        super().__init__()
        self.w = nn.Parameter(torch.rand(shape) + 0.5)
        self.left = left

    def forward(self, x):
        return self.w * x if self.left else x * self.w

    def extra_repr(self):
        return f"shape={tuple(self.w.shape)}, w_left={self.left}"


class FunctionalPool(nn.Module):
    """F.max_pool{1,2}d / F.avg_pool{1,2}d called with the given keyword arguments (tuples
    included), as a user's forward would call them."""

    def __init__(self, fn_name, kwargs):
        super().__init__()
        self.fn_name, self.kwargs = fn_name, dict(kwargs)

    def forward(self, x):
        return getattr(F, self.fn_name)(x, **self.kwargs)

    def extra_repr(self):
        return f"F.{self.fn_name}, {self.kwargs!r}"


class Act(nn.Module):
    """A standard activation by name (relu, tanh, sigmoid, hardtanh: in place or not;
    softmax over dimension 1, square x * x)."""

    def __init__(self, name, inplace):
        super().__init__()
        self.name, self.inplace = name, inplace

    def forward(self, x):
        if self.name == "relu":
            return F.relu(x, inplace=self.inplace)
        if self.name == "hardtanh":
            return F.hardtanh(x, inplace=self.inplace)
        if self.name == "softmax":
            return x.softmax(1)
        if self.name == "square":
            return x * x
        if self.name == "tanh":
            return x.tanh_() if self.inplace else x.tanh()
        return x.sigmoid_() if self.inplace else x.sigmoid()

    def extra_repr(self):
        return f"{self.name!r}, inplace={self.inplace}"


class Frozen(nn.Module):
    """body kept in eval mode whatever the model's mode (a frozen batch norm, as in fine-tuning)."""

    def __init__(self, body):
        super().__init__()
        self.body = body.eval()

    def train(self, mode=True):
        super().train(mode)
        self.body.eval()
        return self

    def forward(self, x):
        return self.body(x)


class Tied(nn.Module):
    """body applied `times` times in one forward (tied weights, a module used twice)."""

    def __init__(self, body, times):
        super().__init__()
        self.body, self.times = body, times

    def forward(self, x):
        for _ in range(self.times):
            x = self.body(x)
        return x

    def extra_repr(self):
        return f"times={self.times}"


class GradHook(nn.Module):
    """Identity with a tensor hook scaling the gradient by 0.5 (exact), as users clip/scale."""

    def forward(self, x):
        if x.requires_grad:
            x = x.view_as(x)
            x.register_hook(lambda g: g * 0.5)
        return x


class Shift(nn.Module):
    """x + b with a learnable per-channel b, out of place or in place (x.add_(b))."""

    def __init__(self, shape, inplace):
        super().__init__()
        self.b = nn.Parameter(torch.rand(shape) - 0.5)
        self.inplace = inplace

    def forward(self, x):
        return x.add_(self.b) if self.inplace else x + self.b

    def extra_repr(self):
        return f"shape={tuple(self.b.shape)}, inplace={self.inplace}"


class Upsample(nn.Module):
    """F.interpolate(x, scale_factor=2, mode=...)."""

    def __init__(self, mode):
        super().__init__()
        self.mode = mode

    def forward(self, x):
        return F.interpolate(x, scale_factor=2, mode=self.mode)

    def extra_repr(self):
        return f"mode={self.mode!r}"


class BackwardHooked(nn.Module):
    """body with a full backward hook (register_full_backward_hook) halving its input's
    gradient, as gradient-scaling or logging code does."""

    def __init__(self, body):
        super().__init__()
        self.body = body
        self.body.register_full_backward_hook(_halve_grad_input)

    def forward(self, x):
        return self.body(x)


def _halve_grad_input(module, grad_input, grad_output):
    return tuple(None if g is None else g * 0.5 for g in grad_input)
