"""2-D max-pooling in lean mode: int64 indices kept as window-local offsets of 1, 2, 4 or 8 bits
(csrc/pool_offsets.h), and a max-pool Function whose backward reads the offsets directly."""
import torch

from ..ops.extension import KERNEL_DEVICES, LOADED, has_cpu_kernel
from .records import modified_in_place, no_double_backward, same_bits, watch


def check_version(saved, version, size, dtype, layer):
    """Standard autograd's in-place check of a max-pool input lean did not keep (saved: its
    watch)."""
    if saved._version != version:
        raise modified_in_place(size, dtype, version, saved._version,
                                f"the input of max-pool {layer or '(unnamed)'!r} (not kept) was "
                                "changed in place after the forward")


def _pair(v):
    """(v, v) for a number or a one-element sequence (ATen accepts both), else tuple(v)."""
    if isinstance(v, (tuple, list)):
        return (v[0], v[0]) if len(v) == 1 else tuple(v)
    return (v, v)


def pool_params(args, kwargs):
    """(input, kernel, stride, padding, dilation, ceil_mode) of an F.max_pool2d call."""
    names = ("input", "kernel_size", "stride", "padding", "dilation", "ceil_mode")
    vals = dict(zip(names, args))
    vals.update({k: v for k, v in kwargs.items() if k in names})
    kernel = _pair(vals["kernel_size"])
    stride = vals.get("stride")
    stride = kernel if stride is None or stride == [] or stride == () else _pair(stride)
    return vals["input"], kernel, stride, _pair(vals.get("padding", 0)), \
        _pair(vals.get("dilation", 1)), bool(vals.get("ceil_mode", False))


def offset_bits(kernel, escape=False):
    """Bits per window offset (1, 2, 4 or 8), or None for windows of more than 256 elements;
    with `escape`, one code more than the window's positions (csrc/pool_offsets.h: the spare
    code for index 0 outside the window)."""
    codes = kernel[0] * kernel[1] + bool(escape)
    return next((b for b in (1, 2, 4, 8) if codes <= 1 << b), None)


def pool_may_escape(x):
    """Whether ATen's max-pool of x can return an index outside its window: its channels-last
    CUDA kernel starts each window's index at 0 and moves it only for a value > -inf or NaN, so
    an all -inf window keeps index 0 wherever the window lies. The CPU kernels and the CUDA
    NCHW kernel start at a position inside the window. A 4-D CUDA input counts unless it is
    surely taken as NCHW (contiguous, and not channels-last contiguous as well: ATen picks the
    kernel from the strides, suggest_memory_format)."""
    if x.device.type != "cuda" or x.dim() != 4:
        return False
    return not (x.is_contiguous() and not x.is_contiguous(memory_format=torch.channels_last))


def pool_offset_bits(kernel, dilation, in_w, escape=False):
    """Bits per stored offset of a max-pool's window, or None where the indices stay int64
    (windows over 256 codes, or whose rows overlap in the flat index). `escape`: the window
    needs the spare code (pool_may_escape)."""
    bits = offset_bits(kernel, escape)
    rows_apart = (kernel[1] - 1) * dilation[1] < dilation[0] * in_w
    return bits if rows_apart else None


def codec_available(device):
    """Whether the compiled offset codec serves this device."""
    return LOADED and device.type in KERNEL_DEVICES


def pool_backward_available(x):
    """Whether LeanMaxPool2d serves this input: a contiguous floating-point CPU tensor, with the
    compiled backward from offsets loaded."""
    return x.device.type == "cpu" and x.is_floating_point() and x.is_contiguous() \
        and has_cpu_kernel("_pool_offsets_pack", "_pool_offsets_backward")


_PROBED = {}  # dtype -> whether _max_pool_offsets gave ATen's bits in this process


def _probe(dtype):
    """Whether the one-pass max-pool gives ATen's output bits and the offsets of ATen's indices
    for this dtype here: random values with ties, NaN and -inf, several window geometries
    (padding, overlapping windows, unequal strides, sizes the windows do not tile)."""
    gen = torch.Generator().manual_seed(20261204)
    x = torch.randint(-3, 4, (2, 3, 9, 11), generator=gen).to(dtype)
    x.view(-1)[::7] = float("nan")
    x.view(-1)[3::11] = float("-inf")
    x[1, 2] = float("-inf")
    x = torch.cat([x, torch.randn(2, 3, 9, 11, generator=gen).to(dtype)])
    for k, s, p in (((2, 2), (2, 2), (0, 0)), ((3, 3), (2, 2), (1, 1)), ((3, 3), (1, 1), (1, 1)),
                    ((2, 3), (1, 2), (1, 0)), ((1, 1), (1, 1), (0, 0)), ((3, 2), (3, 1), (0, 1))):
        for t in (x, x[0]):
            out, idx = torch.ops.aten.max_pool2d_with_indices.default(t, list(k), list(s),
                                                                     list(p), [1, 1], False)
            bits = offset_bits(k)
            args = (t.shape[-1], list(k), list(s), list(p), [1, 1], bits)
            got, packed = torch.ops.ftprop_cuda._max_pool_offsets(t, *args[1:])
            if not (same_bits(got, out) and torch.equal(
                    packed, torch.ops.ftprop_cuda._pool_offsets_pack(idx, *args))):
                return False
    return True


def one_pass_available(x, kernel, stride, padding, dilation, ceil_mode):
    """Whether the compiled one-pass max-pool (output and window offsets at once, no int64
    indices) serves this call: floor mode, no dilation, a geometry ATen accepts, every dimension
    but the batch non-empty, and a probe in this process has found it bitwise ATen's for the
    dtype. Otherwise ATen's max-pool runs and its indices are packed."""
    if ceil_mode or tuple(dilation) != (1, 1) or x.numel() == 0:
        return False
    if not has_cpu_kernel("_max_pool_offsets"):
        return False
    for d in range(2):
        if not (kernel[d] > 0 and stride[d] > 0 and 0 <= padding[d] <= kernel[d] // 2
                and x.shape[-2 + d] + 2 * padding[d] >= kernel[d]):
            return False
    if x.dtype not in _PROBED:
        try:
            with torch.no_grad():
                _PROBED[x.dtype] = _probe(x.dtype)
        except (RuntimeError, TypeError):
            _PROBED[x.dtype] = False
    return _PROBED[x.dtype]


class LeanMaxPool2d(torch.autograd.Function):
    """A 2-D max-pool (contiguous CPU input) that keeps only its window offsets, and whose
    backward reads them directly: neither its input nor int64 indices are kept or rebuilt. The
    forward is ATen's; the backward sums the gradients in ATen's order and arithmetic, so both
    are bitwise the standard path's (csrc/cpu/pool_offsets.cpp)."""

    @staticmethod
    def forward(ctx, x, kernel, stride, padding, dilation, ceil_mode, bits, layer=None):
        ctx.args = (x.shape[-1], list(kernel), list(stride), list(padding), list(dilation), bits)
        ctx.input_size = list(x.shape)
        ctx.watch = (watch(x), x._version, x.dtype, layer)
        if one_pass_available(x, kernel, stride, padding, dilation, ceil_mode):
            out, packed = torch.ops.ftprop_cuda._max_pool_offsets(x, *ctx.args[1:])
        else:
            out, idx = torch.ops.aten.max_pool2d_with_indices.default(
                x, list(kernel), list(stride), list(padding), list(dilation), ceil_mode)
            packed = torch.ops.ftprop_cuda._pool_offsets_pack(idx, *ctx.args)
        ctx.save_for_backward(packed)
        return out

    @staticmethod
    def backward(ctx, grad):
        if torch.is_grad_enabled():
            raise no_double_backward()
        packed, = ctx.saved_tensors
        saved, version, dtype, layer = ctx.watch
        check_version(saved, version, ctx.input_size, dtype, layer)
        return (torch.ops.ftprop_cuda._pool_offsets_backward(grad, packed, ctx.input_size,
                                                             *ctx.args),
                None, None, None, None, None, None, None)


class PoolIndices:
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


class ShapeOnly:
    """A max-pool's input: its backward reads the shape and layout, never the values."""

    __slots__ = ("size", "stride", "dtype", "device", "watch", "version", "layer")

    def __init__(self, t, layer=None):
        self.size, self.stride, self.dtype, self.device = t.size(), t.stride(), t.dtype, t.device
        self.watch, self.version, self.layer = watch(t), t._version, layer

    def unpack(self):
        check_version(self.watch, self.version, self.size, self.dtype, self.layer)
        return torch.empty_strided(self.size, self.stride, dtype=self.dtype, device=self.device)
