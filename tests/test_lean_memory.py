"""Lean memory mode (ftprop_cuda.lean, build_model(memory=...)): bitwise the standard path,
less kept for the backward, clear errors where it cannot rebuild."""
import concurrent.futures
import copy
import math
import os
import sys

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import ftprop_cuda
from ftprop_cuda.memory import codes as lean_codes
from ftprop_cuda.memory import pool as lean_pool
from ftprop_cuda.ops import extension
from ftprop_cuda.models import build_model
from ftprop_cuda.models.units import HARD_THRESHOLD

from conftest import cpu_and_cuda
from helpers import DTYPES, assert_same_bits, staircase_boundary

needs_kernel = pytest.mark.skipif("cpu" not in extension.KERNEL_DEVICES, reason="no CPU kernel")

# small inputs that keep every layer of each network (the architectures' smallest sizes)
ARCH_INPUT = {"convnet4": 12, "convnet8": 20, "alexnet": 67, "resnet18": 32,
              "resnet18_cifar": 8}
# one rule per family of saved state: z kept (smooth), a 1-bit interval code, a t-dependent
# 2-bit code (step) or a threshold count (staircase), nothing kept (ste)
RULES = {"step": ("soft_hinge", "sste", "saturated_hinge", "ste"),
         "staircase": ("soft_hinge", "sste", "saturated_hinge", "ste")}


def _cases():
    for arch in ARCH_INPUT:
        for nonlin in ("step", "step01", "qrelu", "qrelu5", "relu", "threshrelu"):
            family = HARD_THRESHOLD.get(nonlin, (None,))[0]
            for rule in RULES.get(family, (None,)):
                yield arch, nonlin, rule


def _step(model, x, y, seed=7):
    torch.manual_seed(seed)  # the same dropout masks
    out = model(x)
    loss = F.cross_entropy(out, y)
    loss.backward()
    return out.detach(), loss.detach()


def _assert_same_step(standard, lean, x, y):
    out_s, loss_s = _step(standard, x, y)
    out_l, loss_l = _step(lean, x, y)
    assert_same_bits(out_l, out_s)
    assert_same_bits(loss_l, loss_s)
    for (name, p_s), p_l in zip(standard.named_parameters(), lean.parameters()):
        assert p_s.grad is not None, name
        assert_same_bits(p_l.grad, p_s.grad)
    # the batch norms' running statistics saw one update each, the same
    for (name, b_s), b_l in zip(standard.named_buffers(), lean.buffers()):
        assert torch.equal(b_s, b_l), name


@needs_kernel
@pytest.mark.parametrize("arch,nonlin,rule", list(_cases()))
def test_lean_gradients_are_bitwise_the_standard_ones(arch, nonlin, rule):
    size = ARCH_INPUT[arch]
    torch.manual_seed(0)
    standard = build_model(arch, nonlin=nonlin, rule=rule, num_classes=5, in_channels=3,
                           image_size=size, backend="kernel", memory="standard")
    lean = copy.deepcopy(standard)
    ftprop_cuda.lean(lean)
    assert ftprop_cuda.is_lean(lean) and not ftprop_cuda.is_lean(standard)
    # only the model carries hooks (the units and layers stay hook-free)
    assert all(not m._forward_hooks and not m._forward_pre_hooks
               for m in lean.modules() if m is not lean)
    x = torch.randn(3, 3, size, size)
    y = torch.tensor([0, 3, 4])
    _assert_same_step(standard, lean, x, y)
    if nonlin not in ("relu", "threshrelu"):
        report = ftprop_cuda.lean_report(lean)
        assert "rebuilt" in report or "code" in report or "recomputed" in report, report


@needs_kernel
@pytest.mark.parametrize("bn", [False, True])
def test_build_model_memory_argument(bn):
    torch.manual_seed(0)
    lean = build_model("convnet4", image_size=16, bn=bn)  # lean is the default
    standard = build_model("convnet4", image_size=16, bn=bn, memory="standard")
    assert ftprop_cuda.is_lean(lean) and not ftprop_cuda.is_lean(standard)
    standard.load_state_dict(lean.state_dict())  # the same parameters and buffers
    assert list(lean.state_dict()) == list(standard.state_dict())
    x, y = torch.randn(4, 3, 16, 16), torch.tensor([1, 2, 3, 4])
    _assert_same_step(standard, lean, x, y)
    with pytest.raises(ValueError, match="memory must be one of 'lean', 'standard'"):
        build_model("convnet4", memory="small")


class _Custom(nn.Module):
    """A user's model: residual add of two batch norms before a unit, pooling after a unit,
    an in-place add, a 1-D pool lean mode leaves alone, a staircase unit."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(8)
        self.act1 = ftprop_cuda.Step()
        self.pool = nn.MaxPool2d(3, 2, padding=1)
        self.conv3 = nn.Conv2d(8, 8, 3, padding=1)
        self.bn3 = nn.BatchNorm2d(8)
        self.act2 = ftprop_cuda.Staircase(steps=5, rule="sste")
        self.fc = nn.Linear(8 * 4, 5)

    def forward(self, x):
        a = self.bn1(self.conv1(x))
        z = self.bn2(self.conv2(a)) + a
        h = self.pool(self.act1(z))
        u = self.bn3(self.conv3(h))
        u += h
        h = F.max_pool1d(self.act2(u).flatten(2), 4)
        return self.fc(h.flatten(1)[:, :32])


@needs_kernel
def test_custom_model_in_one_line_and_its_report():
    torch.manual_seed(0)
    standard = _Custom()
    lean = ftprop_cuda.lean(copy.deepcopy(standard))
    x, y = torch.randn(2, 3, 8, 8), torch.tensor([0, 4])
    _assert_same_step(standard, lean, x, y)
    report = ftprop_cuda.lean_report(lean)
    assert "residual sum recomputed" in report  # act1 keeps bn2(.) + a as a recipe
    assert "pool: max-pool keeps 4-bit window offsets, read by its backward" in report
    assert "unit output kept as a code" in report  # the staircase's sste keeps only a code
    ftprop_cuda.lean(lean, enabled=False)  # back to standard: no hooks left
    assert not ftprop_cuda.is_lean(lean)
    assert ftprop_cuda.lean_report(lean) == "lean memory mode is off for this model"
    assert not lean._forward_pre_hooks and not lean._forward_hooks


def test_lean_rejects_bad_arguments():
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        ftprop_cuda.lean("convnet4")
    with pytest.raises(TypeError, match="enabled must be True or False"):
        ftprop_cuda.lean(nn.Linear(2, 2), enabled="yes")


@needs_kernel
def test_second_derivative_through_a_rebuilt_tensor_raises():
    model = ftprop_cuda.lean(nn.Sequential(nn.Linear(4, 6), ftprop_cuda.Step(), nn.Linear(6, 2)))
    x = torch.randn(3, 4, requires_grad=True)
    loss = model(x).square().sum()
    with pytest.raises(RuntimeError, match="no second derivatives.*memory='standard'"):
        torch.autograd.grad(loss, x, create_graph=True)
    # a plain backward of the same model works
    model(x).square().sum().backward()


@needs_kernel
def test_in_place_change_of_a_recompute_source_raises_not_a_wrong_gradient():
    bn = nn.BatchNorm1d(6)
    model = ftprop_cuda.lean(nn.Sequential(nn.Linear(4, 6), bn, ftprop_cuda.Step(),
                                           nn.Linear(6, 2)))
    x = torch.randn(5, 4)
    captured = {}
    handle = model[0].register_forward_hook(lambda m, a, out: captured.update(out=out))
    loss = model(x).sum()
    handle.remove()
    with torch.no_grad():
        captured["out"].add_(1.0)  # the batch norm's input, from which z is recomputed
    with pytest.raises(RuntimeError, match="modified"):
        loss.backward()


@needs_kernel
def test_unit_output_changed_in_place_is_kept_as_is():
    """y.mul_(2) after a unit: no longer a unit output; lean mode must keep it, not rebuild it."""
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.act, self.fc2 = nn.Linear(4, 6), ftprop_cuda.Step(), nn.Linear(6, 2)

        def forward(self, x):
            return self.fc2(self.act(self.fc1(x)).mul_(2))

    torch.manual_seed(0)
    standard = M()
    lean = ftprop_cuda.lean(copy.deepcopy(standard))
    x, y = torch.randn(3, 4), torch.tensor([0, 1, 1])
    _assert_same_step(standard, lean, x, y)


@needs_kernel
def test_eval_no_grad_compile_and_transforms_are_left_alone():
    model = ftprop_cuda.lean(nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6),
                                           ftprop_cuda.Step(), nn.Linear(6, 2)))
    x = torch.randn(5, 4)
    with torch.no_grad():
        model(x)
    model.eval()
    model(x).sum().backward()
    model = ftprop_cuda.lean(nn.Sequential(nn.Linear(4, 6), ftprop_cuda.Step(), nn.Linear(6, 2)))
    params = dict(model.named_parameters())
    grads = torch.func.grad(lambda p: torch.func.functional_call(model, p, (x,)).sum())(params)
    assert set(grads) == set(params)
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    compiled(x).sum().backward()


# ---------------------------------------------------------------------------------------------
# The codes: exact round trips on boundary values, every dtype
# ---------------------------------------------------------------------------------------------
def _specials(dtype):
    info = torch.finfo(dtype)
    return [0.0, -0.0, 1.0, -1.0, 0.5, info.tiny, -info.tiny, info.max, -info.max, math.inf,
            -math.inf, math.nan]


@pytest.mark.parametrize("device", cpu_and_cuda())
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("values", ["pm1", "01"])
def test_step_output_code_round_trip(device, dtype, values):
    z = torch.tensor(_specials(dtype) + [2.0, -2.0, 1e-30], dtype=torch.float64)
    z = torch.cat([z, torch.randn(1000, dtype=torch.float64)]).to(dtype).to(device)
    y = ftprop_cuda.reference.step_forward(z, values)
    planes, decode = lean_codes.step_output_code(0.0 if values == "01" else -1.0)(y)
    assert planes.numel() == 2 * math.ceil(z.numel() / 8)  # 2 bits per element
    assert_same_bits(decode(planes), y)


@pytest.mark.parametrize("device", cpu_and_cuda())
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("steps,lo,hi", [(2, 0.0, 1.0), (3, 0.0, 1.0), (5, -1.0, 3.0),
                                         (7, 0.0, 1.0), (15, -2.0, 0.5)])
def test_staircase_output_code_round_trip(device, dtype, steps, lo, hi):
    zs = staircase_boundary(steps, lo, hi) + _specials(dtype)
    z = torch.tensor(zs, dtype=torch.float64)
    z = torch.cat([z, torch.randn(999, dtype=torch.float64) * (hi - lo) + lo])
    z = z.to(dtype).to(device)
    y = ftprop_cuda.reference.staircase_forward(z, steps, lo, hi)
    # the levels table is what the forward produces, value for value
    levels = lean_codes.staircase_levels(steps, lo, hi, dtype, device)
    assert set(y[~torch.isnan(y)].tolist()) <= set(levels.tolist())
    planes, decode = lean_codes.staircase_output_code(steps, lo, hi)(y)
    assert planes.shape[0] == lean_codes.code_bits(steps + 2)
    assert_same_bits(decode(planes), y)


@pytest.mark.parametrize("device", cpu_and_cuda())
def test_codes_of_non_contiguous_and_empty_outputs(device):
    y = ftprop_cuda.reference.step_forward(torch.randn(6, 5, device=device)).t()
    planes, decode = lean_codes.step_output_code(-1.0)(y)
    out = decode(planes)
    assert out.stride() == y.stride()
    assert_same_bits(out, y)
    empty = torch.empty(0, 3, device=device)
    planes, decode = lean_codes.step_output_code(-1.0)(empty)
    assert decode(planes).shape == (0, 3)


@pytest.mark.parametrize("bits", [1, 2, 3, 5, 8, 12])
def test_pack_codes_round_trip(bits):
    codes = torch.randint(0, 2**bits, (1001,))
    planes = lean_codes.pack_codes(codes, bits)
    assert planes.shape == (bits, 126)
    assert torch.equal(lean_codes.unpack_codes(planes, 1001), codes)


# The compiled level-code loops (CPU) write the layout pack_codes writes, bit for bit, and read
# it back; the torch-op path (other devices) is the oracle. Sizes around a group of 8.
needs_level_codec = pytest.mark.skipif(not lean_codes.level_codec(torch.device("cpu")),
                                       reason="no compiled level-code loops")


@needs_level_codec
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("count", [1, 2, 4, 6, 7, 8, 32, 33, 100, 256, 511])
@pytest.mark.parametrize("n", [0, 1, 7, 8, 9, 64, 1001, 40003])
def test_level_codec_matches_torch_codes(dtype, count, n):
    gen = torch.Generator().manual_seed(count * 100003 + n)
    # ascending distinct levels, exact in every dtype (integers of at most 8 significant bits)
    levels = (torch.randperm(513, generator=gen)[:count].sort().values - 256).to(dtype)
    codes = torch.randint(0, count + 1, (n,), generator=gen)
    table = torch.cat([levels, levels.new_full((1,), math.nan)])
    y = table[codes]
    planes = torch.ops.ftprop_cuda._level_code_pack(y, levels)
    assert planes.dtype == torch.uint8
    bits = lean_codes.code_bits(count + 1)
    assert torch.equal(planes, lean_codes.pack_codes(codes, bits).view(bits, -1))
    out = torch.ops.ftprop_cuda._level_code_unpack(planes, table, n)
    assert_same_bits(out, y)


@needs_level_codec
def test_level_codec_odd_inputs():
    levels = torch.tensor([-1.0, 1.0])
    y = torch.tensor([[1.0, -1.0, math.nan], [-1.0, 1.0, 1.0]]).t()  # non-contiguous
    planes = torch.ops.ftprop_cuda._level_code_pack(y, levels)
    table = torch.tensor([-1.0, 1.0, math.nan])
    assert_same_bits(torch.ops.ftprop_cuda._level_code_unpack(planes, table, 6),
                     y.reshape(-1))
    # a damaged code (3, past the 3-entry table) reads the table's last entry, never memory
    damaged = torch.tensor([[0b1], [0b1]], dtype=torch.uint8)
    assert torch.isnan(torch.ops.ftprop_cuda._level_code_unpack(damaged, table, 1)).all()
    with pytest.raises(RuntimeError, match="levels must have y's dtype"):
        torch.ops.ftprop_cuda._level_code_pack(y, levels.double())
    with pytest.raises(RuntimeError, match="levels must be a 1-D tensor"):
        torch.ops.ftprop_cuda._level_code_pack(y, torch.zeros(512))
    with pytest.raises(RuntimeError, match="y must be floating point"):
        torch.ops.ftprop_cuda._level_code_pack(torch.zeros(3, dtype=torch.int32),
                                               torch.zeros(2, dtype=torch.int32))
    with pytest.raises(RuntimeError, match="planes has 1 bytes per plane"):
        torch.ops.ftprop_cuda._level_code_unpack(planes, table, 100)
    with pytest.raises(RuntimeError, match="2 planes for a table of 5 values"):
        torch.ops.ftprop_cuda._level_code_unpack(planes, torch.zeros(5), 6)


def test_output_codes_without_the_loops(monkeypatch):
    """The torch-op path (every device but the CPU) gives the same codes and values."""
    y = ftprop_cuda.reference.staircase_forward(torch.randn(3, 7, 5) * 2, 5, -1.0, 1.0)
    y[0, 0, 0] = math.nan
    for code_fn in (lean_codes.staircase_output_code(5, -1.0, 1.0),):
        planes, decode = code_fn(y)
        monkeypatch.setattr(lean_codes, "level_codec", lambda *args: False)
        planes_torch, decode_torch = code_fn(y)
        assert torch.equal(planes.view(planes_torch.shape), planes_torch)
        assert_same_bits(decode_torch(planes_torch), y)
        monkeypatch.undo()
        assert_same_bits(decode(planes), y)


POOLS = [  # kernel, stride, padding, dilation, ceil_mode
    ((2, 2), (2, 2), (0, 0), (1, 1), False),
    ((3, 3), (2, 2), (1, 1), (1, 1), False),
    ((3, 3), (2, 2), (1, 1), (1, 1), True),
    ((3, 2), (1, 2), (1, 0), (2, 1), False),
    ((1, 1), (1, 1), (0, 0), (1, 1), False),
    ((4, 4), (3, 3), (2, 2), (1, 1), True),
]


@pytest.mark.parametrize("device", cpu_and_cuda())
@pytest.mark.parametrize("pool", POOLS)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "3d"])
def test_pool_offsets_round_trip(device, pool, layout):
    if device not in extension.KERNEL_DEVICES:
        pytest.skip(f"no kernels for {device}")
    kernel, stride, padding, dilation, ceil_mode = pool
    x = torch.randn(3, 4, 11, 9, device=device)
    x[0, 0] = -math.inf  # whole windows of -inf, of NaN, of ties
    x[0, 1, :4] = math.nan
    x[1, 2] = 0.0
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    elif layout == "3d":
        x = x[0]
    _, idx = F.max_pool2d(x, kernel, stride, padding, dilation, ceil_mode, return_indices=True)
    # CUDA channels-last: all -inf windows get index 0, outside them (the spare code)
    bits = lean_pool.offset_bits(kernel, lean_pool.pool_may_escape(x))
    token = lean_pool.PoolIndices(idx, x.shape[-1], (kernel, stride, padding, dilation), bits)
    assert token.packed.numel() * 8 >= idx.numel() * bits
    out = token.unpack()
    assert out.stride() == idx.stride()
    assert torch.equal(out, idx)


def _offsets_oracle(idx, in_w, kernel, stride, padding, dilation, bits):
    """pool_offsets.h's layout from its definition, with torch ops: offset kh * KW + kw of each
    element's maximum in its window, 8 / bits offsets per byte, element k of a byte at bit
    k * bits."""
    out_h, out_w = idx.shape[-2:]
    oh = torch.arange(out_h).view(-1, 1)
    ow = torch.arange(out_w).view(1, -1)
    top = oh * stride[0] - padding[0]
    left = ow * stride[1] - padding[1]
    ih, iw = idx // in_w, idx % in_w
    kh, kw = (ih - top) // dilation[0], (iw - left) // dilation[1]
    assert bool(((ih - top) % dilation[0] == 0).all() and ((iw - left) % dilation[1] == 0).all())
    off = (kh * kernel[1] + kw).reshape(-1)
    per = 8 // bits
    off = torch.cat([off, off.new_zeros((-off.numel()) % per)]).view(-1, per)
    return (off << (torch.arange(per) * bits)).sum(1).to(torch.uint8)


@needs_kernel
@pytest.mark.parametrize("pool", POOLS)
@pytest.mark.parametrize("shape", [(5, 7, 37, 29), (2, 3, 64, 64), (1, 2, 6, 1500)])
def test_pool_offsets_layout_across_blocks(pool, shape):
    """Inputs of several of the CPU loop's 4096-element blocks, rows straddling blocks: the bytes
    are the layout pool_offsets.h defines (the CUDA kernels write it element by element)."""
    kernel, stride, padding, dilation, ceil_mode = pool
    torch.manual_seed(sum(shape))
    x = torch.randn(shape)
    x[0, 0, :2] = math.nan
    _, idx = F.max_pool2d(x, kernel, stride, padding, dilation, ceil_mode, return_indices=True)
    bits = lean_pool.offset_bits(kernel)
    args = (x.shape[-1], list(kernel), list(stride), list(padding), list(dilation), bits)
    packed = torch.ops.ftprop_cuda._pool_offsets_pack(idx, *args)
    assert torch.equal(packed, _offsets_oracle(idx, x.shape[-1], kernel, stride, padding,
                                               dilation, bits))
    assert torch.equal(torch.ops.ftprop_cuda._pool_offsets_unpack(packed, list(idx.shape),
                                                                  *args), idx)


needs_pool_backward = pytest.mark.skipif(
    not lean_pool.pool_backward_available(torch.zeros(1)),
    reason="no compiled max-pool backward from offsets")


@needs_pool_backward
@pytest.mark.parametrize("pool", POOLS)
@pytest.mark.parametrize("layout", ["contiguous", "3d", "strided_grad"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_pool_backward_from_offsets_is_atens(pool, layout, dtype):
    """Bitwise ATen's max-pool backward from the int64 indices, overlapping windows included
    (several gradients summed into one input), in every dtype."""
    kernel, stride, padding, dilation, ceil_mode = pool
    torch.manual_seed(7)
    x = torch.randn(3, 5, 13, 10).round().to(dtype)  # rounded: many ties
    x[0, 0] = -math.inf
    x[0, 1, :4] = math.nan
    x[1, 2] = 0.0
    if layout == "3d":
        x = x[1]
    x.requires_grad_(True)
    out, idx = F.max_pool2d(x, kernel, stride, padding, dilation, ceil_mode, return_indices=True)
    grad = torch.randn(out.shape).to(dtype)
    if layout == "strided_grad":  # a gradient in another layout than the output's
        grad = torch.randn(out.shape[::-1]).to(dtype).permute(*reversed(range(out.dim())))
    expected = torch.ops.aten.max_pool2d_with_indices_backward(
        grad, x, list(kernel), list(stride), list(padding), list(dilation), ceil_mode, idx)
    bits = lean_pool.offset_bits(kernel)
    args = (x.shape[-1], list(kernel), list(stride), list(padding), list(dilation), bits)
    packed = torch.ops.ftprop_cuda._pool_offsets_pack(idx, *args)
    got = torch.ops.ftprop_cuda._pool_offsets_backward(grad, packed, list(x.shape), *args)
    assert got.stride() == expected.stride()
    assert_same_bits(got, expected)
    # the autograd Function lean mode uses: ATen's output, the same input gradient
    lean_out = lean_pool.LeanMaxPool2d.apply(x, kernel, stride, padding, dilation, ceil_mode, bits)
    assert_same_bits(lean_out.detach(), out.detach())
    (lean_grad,) = torch.autograd.grad(lean_out, x, grad)
    assert_same_bits(lean_grad, expected)


needs_one_pass_pool = pytest.mark.skipif(
    not extension.has_cpu_kernel("_max_pool_offsets"), reason="no compiled one-pass max-pool")

ONE_PASS_POOLS = [  # kernel, stride, padding: floor mode, no dilation (one_pass_available)
    ((2, 2), (2, 2), (0, 0)), ((3, 3), (2, 2), (1, 1)), ((3, 3), (1, 1), (1, 1)),
    ((2, 3), (1, 2), (1, 0)), ((1, 1), (1, 1), (0, 0)), ((3, 2), (3, 1), (0, 1)),
    ((4, 4), (3, 3), (2, 2)), ((5, 5), (1, 1), (2, 2)), ((2, 2), (3, 3), (1, 0)),
]


@needs_one_pass_pool
@pytest.mark.parametrize("pool", ONE_PASS_POOLS)
@pytest.mark.parametrize("shape", [(3, 5, 13, 10), (5, 1, 1), (2, 3, 2, 7), (1, 1, 4, 4)])
@pytest.mark.parametrize("dtype", DTYPES)
def test_one_pass_max_pool_is_atens(pool, shape, dtype):
    """The one-pass forward (output and offsets at once): ATen's output bits and the offsets
    of ATen's indices, with ties, NaN (also several per window), -inf windows, -0.0, padding,
    overlapping windows and windows that do not tile the input; and through LeanMaxPool2d the
    whole forward and backward bitwise ATen's."""
    kernel, stride, padding = pool
    if any(shape[-2 + d] + 2 * padding[d] < kernel[d] for d in range(2)):
        pytest.skip("window larger than the padded input (ATen refuses it)")
    if lean_pool.pool_offset_bits(kernel, (1, 1), shape[-1]) is None:
        pytest.skip("window rows overlap in the flat index: lean keeps the int64 indices")
    torch.manual_seed(11)
    x = torch.randn(shape).mul(2).round().to(dtype)
    flat = x.view(-1)
    flat[::5] = math.nan
    flat[1::9] = -math.inf
    flat[2::13] = -0.0
    if x.dim() == 4 and x.shape[1] > 2:
        x[0, 1] = -math.inf  # a whole plane of -inf: every window keeps its first position
        x[0, 2] = math.nan
    args = (x.shape[-1], list(kernel), list(stride), list(padding), [1, 1],
            lean_pool.offset_bits(kernel))
    assert lean_pool.one_pass_available(x, kernel, stride, padding, (1, 1), False)
    out, idx = torch.ops.aten.max_pool2d_with_indices(x, list(kernel), list(stride),
                                                      list(padding), [1, 1], False)
    got, packed = torch.ops.ftprop_cuda._max_pool_offsets(x, *args[1:])
    assert_same_bits(got, out)
    assert torch.equal(packed, torch.ops.ftprop_cuda._pool_offsets_pack(idx, *args))
    xg = x.clone().requires_grad_(True)
    lean_out = lean_pool.LeanMaxPool2d.apply(xg, kernel, stride, padding, (1, 1), False, args[-1])
    assert_same_bits(lean_out.detach(), out)
    grad = torch.randn(out.shape).to(dtype)
    grad.view(-1)[::3] = -0.0  # ATen's backward adds onto zeros: -0.0 comes back as +0.0
    expected = torch.ops.aten.max_pool2d_with_indices_backward(
        grad, x, list(kernel), list(stride), list(padding), [1, 1], False, idx)
    (lean_grad,) = torch.autograd.grad(lean_out, xg, grad)
    assert_same_bits(lean_grad, expected)


@needs_one_pass_pool
def test_one_pass_max_pool_stands_aside_and_refuses():
    x = torch.randn(2, 3, 8, 8)
    ok = lean_pool.one_pass_available
    assert ok(x, (2, 2), (2, 2), (0, 0), (1, 1), False)
    assert not ok(x, (2, 2), (2, 2), (0, 0), (1, 1), True)       # ceil mode: ATen + pack
    assert not ok(x, (2, 2), (2, 2), (0, 0), (2, 1), False)      # dilation
    assert not ok(x, (2, 2), (2, 2), (2, 0), (1, 1), False)      # padding over half the window
    assert not ok(x, (9, 2), (2, 2), (0, 0), (1, 1), False)      # window over the input
    assert not ok(x[:0], (2, 2), (2, 2), (0, 0), (1, 1), False)  # no elements
    assert not ok(torch.randn(2, 0, 8, 8), (2, 2), (2, 2), (0, 0), (1, 1), False)
    with pytest.raises(RuntimeError, match="padding at most half the kernel"):
        torch.ops.ftprop_cuda._max_pool_offsets(x, [2, 2], [2, 2], [2, 2], [1, 1], 2)
    with pytest.raises(RuntimeError, match="larger than the padded input"):
        torch.ops.ftprop_cuda._max_pool_offsets(x, [9, 9], [1, 1], [0, 0], [1, 1], 8)
    with pytest.raises(RuntimeError, match="contiguous 3-D or 4-D floating"):
        torch.ops.ftprop_cuda._max_pool_offsets(x.transpose(2, 3), [2, 2], [2, 2], [0, 0],
                                                [1, 1], 2)
    with pytest.raises(RuntimeError, match="needs more than"):
        torch.ops.ftprop_cuda._max_pool_offsets(x, [3, 3], [2, 2], [0, 0], [1, 1], 2)
    # the same errors as ATen's own max-pool where the one-pass path steps aside
    model = nn.Sequential(nn.MaxPool2d(2, 2, padding=2))
    xr = x.clone().requires_grad_(True)
    with pytest.raises(RuntimeError, match="pad should be"):
        model(xr)
    with pytest.raises(RuntimeError, match="pad should be"):
        with ftprop_cuda.memory.lean_memory():
            model(xr)


@needs_pool_backward
def test_pool_backward_reads_the_last_offset_and_refuses_a_foreign_one():
    """Offset 3 of 2x2 windows (every byte 0xFF) sends each gradient to its window's last
    position; code 15 of a 3x3 window (4 bits, 9 positions) is outside it and raises."""
    g = torch.ones(1, 2, 3, 3)
    packed = torch.full((5,), 0xFF, dtype=torch.uint8)
    got = torch.ops.ftprop_cuda._pool_offsets_backward(g, packed, [1, 2, 6, 6], 6, [2, 2],
                                                       [2, 2], [0, 0], [1, 1], 2)
    assert got.sum() == 18 and bool((got[..., 1::2, 1::2] == 1).all())
    packed3 = torch.full((5,), 0xFF, dtype=torch.uint8)
    with pytest.raises(RuntimeError, match="outside its window or the input"):
        torch.ops.ftprop_cuda._pool_offsets_backward(torch.ones(1, 1, 3, 3), packed3,
                                                     [1, 1, 9, 9], 9, [3, 3], [3, 3], [0, 0],
                                                     [1, 1], 4)


@needs_pool_backward
def test_pool_backward_from_offsets_errors():
    x = torch.randn(1, 2, 6, 6, requires_grad=True)
    args = (6, [2, 2], [2, 2], [0, 0], [1, 1], 2)
    out = lean_pool.LeanMaxPool2d.apply(x, (2, 2), (2, 2), (0, 0), (1, 1), False, 2)
    g = torch.ones_like(out)
    with pytest.raises(RuntimeError, match="no second derivatives"):
        torch.autograd.grad(out, x, g, create_graph=True)
    out = lean_pool.LeanMaxPool2d.apply(x, (2, 2), (2, 2), (0, 0), (1, 1), False, 2)
    out.backward(g)
    with pytest.raises(RuntimeError, match="backward through the graph a second time"):
        out.backward(g)
    # offsets that point outside the input (a 2x2 window's offset 3 at a 5x5 input's last row
    # and column, with 3x3 outputs) are caught, never written
    packed = torch.full((5,), 0xFF, dtype=torch.uint8)
    with pytest.raises(RuntimeError, match="outside its window or the input"):
        torch.ops.ftprop_cuda._pool_offsets_backward(torch.ones(1, 2, 3, 3), packed,
                                                     [1, 2, 5, 5], 5, [2, 2], [2, 2], [0, 0],
                                                     [1, 1], 2)
    with pytest.raises(RuntimeError, match="in_w \\(5\\) must be the input's width"):
        torch.ops.ftprop_cuda._pool_offsets_backward(g, packed, [1, 2, 6, 6], 5, *args[1:])
    with pytest.raises(RuntimeError, match="packed has 3 bytes, expected 5"):
        torch.ops.ftprop_cuda._pool_offsets_backward(g, torch.zeros(3, dtype=torch.uint8),
                                                     [1, 2, 6, 6], *args)


@needs_kernel
def test_channels_last_pool_keeps_the_indices_path():
    """A channels-last input takes the offset codec with ATen's backward (unpacked indices):
    still bitwise the standard path."""
    torch.manual_seed(3)
    standard = nn.Sequential(nn.Conv2d(3, 4, 3), nn.MaxPool2d(2), ftprop_cuda.Step(),
                             nn.Flatten(), nn.Linear(4 * 3 * 3, 5))
    standard = standard.to(memory_format=torch.channels_last)
    lean = ftprop_cuda.lean(copy.deepcopy(standard))
    x = torch.randn(2, 3, 8, 8).contiguous(memory_format=torch.channels_last)
    _assert_same_step(standard, lean, x, torch.tensor([1, 3]))
    report = ftprop_cuda.lean_report(lean)
    assert "max-pool indices kept as 2-bit window offsets" in report


@needs_kernel
def test_pool_offsets_op_checks():
    idx = torch.zeros(1, 1, 2, 2, dtype=torch.int64)
    with pytest.raises(RuntimeError, match="bits must be 1, 2, 4 or 8"):
        torch.ops.ftprop_cuda._pool_offsets_pack(idx, 4, [2, 2], [2, 2], [0, 0], [1, 1], 3)
    with pytest.raises(RuntimeError, match="needs more than 2 bits"):
        torch.ops.ftprop_cuda._pool_offsets_pack(idx, 4, [3, 3], [2, 2], [0, 0], [1, 1], 2)
    with pytest.raises(RuntimeError, match="indices must be int64"):
        torch.ops.ftprop_cuda._pool_offsets_pack(idx.float(), 4, [2, 2], [2, 2], [0, 0], [1, 1], 2)
    with pytest.raises(RuntimeError, match="expected 1"):
        torch.ops.ftprop_cuda._pool_offsets_unpack(torch.zeros(3, dtype=torch.uint8),
                                                   [1, 1, 2, 2], 4, [2, 2], [2, 2], [0, 0],
                                                   [1, 1], 2)


@needs_kernel
@pytest.mark.parametrize("pool", POOLS)
def test_max_pool_in_lean_mode_gives_the_standard_gradient(pool):
    kernel, stride, padding, dilation, ceil_mode = pool
    torch.manual_seed(0)
    standard = nn.Sequential(nn.Conv2d(2, 3, 3), nn.MaxPool2d(kernel, stride, padding, dilation,
                                                              ceil_mode=ceil_mode),
                             ftprop_cuda.Step(), nn.Flatten(), nn.LazyLinear(2))
    x, y = torch.randn(2, 2, 12, 10), torch.tensor([0, 1])
    standard(x)  # materialise the lazy layer
    lean = ftprop_cuda.lean(copy.deepcopy(standard))
    _assert_same_step(standard, lean, x, y)


# ---------------------------------------------------------------------------------------------
# Bytes held for the backward: the targets, measured as bench_train measures them
# ---------------------------------------------------------------------------------------------
BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")
# (arch, nonlin, rule, bench_train's CPU batch) -> the largest lean / standard ratio allowed
TARGETS = {
    ("convnet4", "step", "soft_hinge", 64): 0.20,
    ("convnet4", "step", "sste", 64): 0.07,
    ("convnet8", "step", "soft_hinge", 128): 0.45,
    ("resnet18", "step", "soft_hinge", 8): 0.45,
    ("resnet18", "qrelu5", "sste", 8): 0.60,
}


@needs_kernel
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_lean_held_bytes_meet_the_targets():
    sys.path.insert(0, BENCH)
    try:
        import held_memory
    finally:
        sys.path.remove(BENCH)
    jobs = [(key, variant) for key in TARGETS for variant in ("kernel", "kernel_lean")]
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        futures = {job: pool.submit(held_memory.held_bytes, job[0][0], job[1], job[0][1],
                                    job[0][2], job[0][3]) for job in jobs}
        held = {job: f.result()["held_bytes"] for job, f in futures.items()}
    lines = []
    for key, limit in TARGETS.items():
        standard, lean = held[(key, "kernel")], held[(key, "kernel_lean")]
        assert standard > 1 << 20, (key, standard)  # the measurement saw the activations
        lines.append(f"{key}: {lean / 2**20:.2f} / {standard / 2**20:.2f} MiB = "
                     f"{lean / standard:.3f} (target <= {limit})")
    print("\n".join(lines))
    for key, limit in TARGETS.items():
        assert held[(key, "kernel_lean")] <= limit * held[(key, "kernel")], "\n".join(lines)


@needs_kernel
def test_lean_under_cpu_autocast_matches_standard():
    """Under autocast (bfloat16 convolutions feeding batch norms and units) lean mode still
    gives the standard gradients bit for bit: rebuilt unit outputs keep their dtype and the
    recomputed batch norms see the same inputs (and run under the forward's autocast state)."""
    torch.manual_seed(0)
    standard = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), ftprop_cuda.Step(),
                             nn.Conv2d(4, 4, 3), nn.BatchNorm2d(4), ftprop_cuda.Step(),
                             nn.Flatten(), nn.LazyLinear(3))
    x, y = torch.randn(2, 3, 9, 9), torch.tensor([0, 2])
    standard(x)
    lean = ftprop_cuda.lean(copy.deepcopy(standard))
    grads = []
    for model in (standard, lean):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = F.cross_entropy(model(x), y)
        loss.backward()
        grads.append([p.grad for p in model.parameters()])
    for a, b in zip(*grads):
        assert_same_bits(b, a)
