"""Tensors past 2^31 elements on the GPU, for the kernels that test_ops.py's
test_cuda_64bit_indexing does not reach (it runs the forward map and the fused backward): the
code-writing forward (Encode), the backward from the code (Decode), and the max-pool offset
codec's pack and unpack (csrc/cuda/pool_kernels.h). The tail of each tensor differs from its
head, so an index that wraps at 2^31 shows. Skipped without a GPU or without the memory each
test states; no time here (CUDA only).
"""
import pytest
import torch

import ftprop_cuda  # noqa: F401
from ftprop_cuda.ops import extension

pytestmark = pytest.mark.needs_cuda

N = (1 << 31) + 17


def _need(gib):
    if "cuda" not in extension.KERNEL_DEVICES:
        pytest.skip("no CUDA kernels built")
    free, _ = torch.cuda.mem_get_info()
    if free < gib * (1 << 30):
        pytest.skip(f"needs about {gib} GiB of free GPU memory, {free / (1 << 30):.0f} free")


def test_saved_state_kernels_past_2_31():
    """_step_saved (Encode) and _step_backward_saved (Decode) on 2^31 + 17 float16 elements:
    the last 17 are 2.0 (outside sste's window: gradient 0), the rest -0.5 (gradient g)."""
    _need(20)
    z = torch.full((N,), -0.5, dtype=torch.float16, device="cuda")
    z[-17:] = 2.0
    y, code = torch.ops.ftprop_cuda._step_saved(z, "sste", False, True)
    assert y[-17:].eq(1).all().item() and y[-40:-17].eq(-1).all().item()
    assert y[:5].eq(-1).all().item()
    del y
    g = torch.ones_like(z)
    del z
    dz = torch.ops.ftprop_cuda._step_backward_saved(g, code, "sste", False, True)
    assert dz[-17:].eq(0).all().item() and dz[-40:-17].eq(1).all().item()
    assert dz[:5].eq(1).all().item()


def test_pool_codec_past_2_31():
    """Pack and unpack of 2^31 + 4096 int64 indices of a 2x2, stride-2 pool (offsets varying
    with the plane and the position), the last one index 0 outside its window (the escape
    code): they come back exactly."""
    _need(72)
    out_h = out_w = 64
    in_w = 2 * out_w
    planes = (1 << 31) // (out_h * out_w) + 1
    dev = "cuda"
    oh = torch.arange(out_h, device=dev).view(1, 1, out_h, 1)
    ow = torch.arange(out_w, device=dev).view(1, 1, 1, out_w)
    offset = torch.arange(planes, device=dev).view(planes, 1, 1, 1) + oh + ow
    offset.remainder_(4)
    delta = torch.tensor([0, 1, in_w, in_w + 1], device=dev)
    idx = delta[offset]
    del offset
    idx.add_(oh * 2 * in_w + ow * 2)
    idx[-1, 0, -1, -1] = 0
    assert idx.numel() > 1 << 31
    args = (in_w, [2, 2], [2, 2], [0, 0], [1, 1], 4)
    packed = torch.ops.ftprop_cuda._pool_offsets_pack(idx, *args)
    out = torch.ops.ftprop_cuda._pool_offsets_unpack(packed, list(idx.shape), *args)
    del packed
    assert out[-1, 0, -1, -1].item() == 0
    assert torch.equal(out, idx)
