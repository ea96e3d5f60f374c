"""Max-pool indices outside their window (issue 23, item 2): ATen's channels-last CUDA max-pool
gives an all -inf window index 0, the plane's first position, usually outside the window. The
offset codec keeps such an index as a spare code (csrc/pool_offsets.h) where memory/pool.py
decides the device and layout can produce one.

The CPU kernels never produce such an index, so these tests build the indices as the CUDA
kernel does: ATen's CPU indices with every all -inf window's index set to 0. (The emulated CUDA
codec runs the same cases in test_cuda_emulation.py.) About 2 s here.
"""
import math

import pytest
import torch
import torch.nn.functional as F

from ftprop_cuda.memory import pool as lean_pool
from ftprop_cuda.ops import extension

from conftest import cpu_and_cuda

POOLS = [  # kernel, stride, padding, dilation, ceil_mode
    ((2, 2), (2, 2), (0, 0), (1, 1), False),
    ((3, 3), (2, 2), (1, 1), (1, 1), True),
    ((3, 2), (1, 2), (1, 0), (2, 1), False),
    ((1, 1), (1, 1), (0, 0), (1, 1), False),
    ((4, 4), (3, 3), (2, 2), (1, 1), True),
]


def _codec_or_skip():
    if not extension.has_cpu_kernel("_pool_offsets_pack", "_pool_offsets_unpack",
                                    "_pool_offsets_backward"):
        pytest.skip("the compiled extension ftprop_cuda._C is not available")


def _input(device="cpu"):
    x = torch.randn(2, 3, 11, 9, device=device)
    x[0, 0] = -math.inf  # a whole plane of -inf: every window all -inf
    x[1, 1, 4:, 3:] = -math.inf  # all -inf windows away from the plane's first position
    x[1, 2, :3] = math.nan
    return x


def cuda_like_indices(x, pool):
    """ATen's indices of a max-pool of x, with index 0 for every all -inf window, as ATen's
    channels-last CUDA kernel returns them."""
    kernel, stride, padding, dilation, ceil_mode = pool
    _, idx = F.max_pool2d(x, kernel, stride, padding, dilation, ceil_mode, return_indices=True)
    # every position -inf: the window's max of -[x == -inf] is -1 (padding counts as -inf there)
    all_inf = F.max_pool2d(-(x == -math.inf).to(x.dtype), kernel, stride, padding, dilation,
                           ceil_mode) == -1
    return idx.masked_fill(all_inf, 0), all_inf


def _outside(idx, in_w, pool):
    """Which indices lie outside their own window."""
    kernel, stride, padding, dilation, _ = pool
    oh = torch.arange(idx.shape[-2]).view(-1, 1)
    ow = torch.arange(idx.shape[-1]).view(1, -1)
    ih, iw = idx // in_w, idx % in_w
    kh = ih - (oh * stride[0] - padding[0])
    kw = iw - (ow * stride[1] - padding[1])
    inside = (kh >= 0) & (kh % dilation[0] == 0) & (kh // dilation[0] < kernel[0]) & \
        (kw >= 0) & (kw % dilation[1] == 0) & (kw // dilation[1] < kernel[1])
    return ~inside


def _token(idx, x, pool, bits):
    kernel, stride, padding, dilation, _ = pool
    return lean_pool.PoolIndices(idx, x.shape[-1], (kernel, stride, padding, dilation), bits)


@pytest.mark.parametrize("pool", POOLS)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_index_zero_outside_its_window_round_trips(pool, layout):
    _codec_or_skip()
    x = _input()
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    idx, all_inf = cuda_like_indices(x, pool)
    outside = _outside(idx, x.shape[-1], pool)
    assert all_inf.any() and outside.any()  # the case is there
    assert bool((idx[outside] == 0).all())
    bits = lean_pool.offset_bits(pool[0], escape=True)
    token = _token(idx, x, pool, bits)
    assert torch.equal(token.unpack(), idx)


@pytest.mark.parametrize("pool", POOLS[:2])
def test_without_the_spare_code_the_index_is_lost(pool):
    """What the spare code is for: a window that fills its code's range (2x2 in 2 bits, 3x3 in
    4 bits does not: 9 < 16, it has a spare code anyway) cannot keep index 0 outside it."""
    _codec_or_skip()
    x = _input()
    idx, _ = cuda_like_indices(x, pool)
    bits = lean_pool.offset_bits(pool[0])
    kernel = pool[0]
    token = _token(idx, x, pool, bits)
    if kernel[0] * kernel[1] == 1 << bits:
        assert not torch.equal(token.unpack(), idx)
    else:
        assert torch.equal(token.unpack(), idx)


def test_bits_with_a_spare_code():
    assert [lean_pool.offset_bits(k) for k in ((1, 1), (2, 2), (3, 3), (4, 4), (16, 16))] == \
        [1, 2, 4, 4, 8]
    assert [lean_pool.offset_bits(k, escape=True) for k in ((1, 1), (2, 2), (3, 3), (4, 4))] == \
        [1, 4, 4, 8]
    assert lean_pool.offset_bits((16, 16), escape=True) is None  # 257 codes: keep int64
    assert lean_pool.pool_offset_bits((2, 2), (1, 1), 9, escape=True) == 4


@pytest.mark.parametrize("device", cpu_and_cuda())
def test_which_inputs_may_escape(device):
    x = _input(device)
    cuda = device == "cuda"
    assert lean_pool.pool_may_escape(x.contiguous(memory_format=torch.channels_last)) == cuda
    assert lean_pool.pool_may_escape(x[:, :, ::2]) == cuda  # non-dense: ATen may take either
    assert not lean_pool.pool_may_escape(x)  # NCHW contiguous: the NCHW kernel
    assert not lean_pool.pool_may_escape(x[0])  # 3-D


@pytest.mark.parametrize("pool", POOLS)
def test_backward_from_offsets_reads_the_spare_code(pool):
    """The CPU backward from offsets sends an escaped element's gradient to index 0, as ATen's
    backward does from the int64 indices."""
    _codec_or_skip()
    kernel, stride, padding, dilation, ceil_mode = pool
    x = _input()
    idx, _ = cuda_like_indices(x, pool)
    bits = lean_pool.offset_bits(kernel, escape=True)
    token = _token(idx, x, pool, bits)
    grad = torch.randn(idx.shape)
    expected = torch.ops.aten.max_pool2d_with_indices_backward(
        grad, x, list(kernel), list(stride), list(padding), list(dilation), ceil_mode, idx)
    actual = torch.ops.ftprop_cuda._pool_offsets_backward(
        grad, token.packed, list(x.shape), x.shape[-1], list(kernel), list(stride),
        list(padding), list(dilation), bits)
    assert torch.equal(actual, expected)


@pytest.mark.needs_cuda
@pytest.mark.parametrize("pool", POOLS)
def test_cuda_channels_last_all_inf_windows(pool):
    """On a GPU: ATen's own channels-last indices, packed as lean mode decides, come back
    exactly (the case of issue 23's item 2)."""
    if "cuda" not in extension.KERNEL_DEVICES:
        pytest.skip("no CUDA kernels built")
    kernel, stride, padding, dilation, ceil_mode = pool
    x = _input("cuda").contiguous(memory_format=torch.channels_last)
    _, idx = F.max_pool2d(x, kernel, stride, padding, dilation, ceil_mode, return_indices=True)
    bits = lean_pool.pool_offset_bits(kernel, dilation, x.shape[-1], lean_pool.pool_may_escape(x))
    token = _token(idx, x, pool, bits)
    assert torch.equal(token.unpack(), idx)
