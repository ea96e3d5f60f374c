"""What the forward keeps for the backward: bit-packed codes instead of z for the rules whose
slope only depends on an interval of z, z for the smooth rules, and the optional 8-bit code."""
import weakref

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import ftprop_cuda
from ftprop_cuda.ops import reference as ref
from ftprop_cuda.ops import rules

from conftest import cpu_and_cuda
from helpers import assert_backward_close


def _saved_bytes(fn, z):
    """Bytes of the distinct storages autograd saves while running fn(z)."""
    storages = {}

    def pack(t):
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y = fn(z)
    return sum(storages.values()), y


N = 1 << 20


@pytest.mark.parametrize("device", cpu_and_cuda())
@pytest.mark.parametrize("op,bytes_per_element", [
    (lambda z: ftprop_cuda.step(z, "ste"), 0.0),
    (lambda z: ftprop_cuda.step(z, "sste"), 1 / 8),
    (lambda z: ftprop_cuda.step(z, "sste", values="01"), 1 / 8),
    (lambda z: ftprop_cuda.step(z, "saturated_hinge"), 1 / 4),
    (lambda z: ftprop_cuda.step(z, "hinge", grad_scale=False), 1 / 4),
    (lambda z: ftprop_cuda.step(z, "perceptron"), 1 / 4),
    (lambda z: ftprop_cuda.step(z, "soft_hinge"), 4.0),  # smooth: z (float32) by default
    (lambda z: ftprop_cuda.step(z, "soft_hinge", save="compact"), 1.0),
    (lambda z: ftprop_cuda.step(z, "sste", save="z"), 4.0),
    (lambda z: ftprop_cuda.staircase(z, 3, rule="ste"), 0.0),
    (lambda z: ftprop_cuda.staircase(z, 3, rule="sste"), 1 / 8),
    (lambda z: ftprop_cuda.staircase(z, 2, rule="saturated_hinge"), 1 / 4),
    (lambda z: ftprop_cuda.staircase(z, 3, rule="saturated_hinge"), 1 / 2),
    (lambda z: ftprop_cuda.staircase(z, 5, rule="saturated_hinge"), 1 / 2),
    (lambda z: ftprop_cuda.staircase(z, 100, rule="saturated_hinge"), 1.0),
    (lambda z: ftprop_cuda.staircase(z, 3, rule="soft_hinge", save="compact"), 1.0),
], ids=["ste", "sste", "sste01", "sat_hinge", "hinge", "perceptron", "soft_hinge",
        "soft_hinge_compact", "sste_save_z", "stair_ste", "stair_sste", "stair_sat2",
        "stair_sat3", "stair_sat5", "stair_sat100", "stair_soft_compact"])
def test_bytes_saved_for_backward(op, bytes_per_element, device):
    z = torch.randn(N, device=device, requires_grad=True)
    nbytes, y = _saved_bytes(op, z)
    # O(1) slack only: no hidden copy of z or y may be kept
    assert nbytes <= bytes_per_element * N + 64, nbytes / N
    assert nbytes >= bytes_per_element * N, nbytes / N
    y.sum().backward()
    assert z.grad is not None and z.grad.shape == z.shape


@pytest.mark.parametrize("device", cpu_and_cuda())
def test_input_can_be_freed_with_a_packed_code(device):
    lin = torch.nn.Linear(64, 64).to(device)
    x = torch.randn(32, 64, device=device)
    z = lin(x)
    ref_z = weakref.ref(z)
    y = ftprop_cuda.step(z, "sste")
    del z  # the graph must not keep the pre-activation alive
    assert ref_z() is None
    y.sum().backward()
    assert lin.weight.grad is not None


class _AtenOps(TorchDispatchMode):
    """Records the aten ops that run under it."""

    def __init__(self):
        super().__init__()
        self.names = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.append(str(func.overloadpacket.__name__))
        return func(*args, **(kwargs or {}))


class _NoGrad(torch.autograd.Function):
    """Identity forward whose backward gives its input no gradient (None)."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return None


@pytest.mark.parametrize("device", cpu_and_cuda())
@pytest.mark.parametrize("op", [
    lambda z: ftprop_cuda.step(z, "sste"),
    lambda z: ftprop_cuda.step(z, "soft_hinge", save="compact"),
    lambda z: ftprop_cuda.staircase(z, 3, rule="saturated_hinge"),
], ids=["sste", "soft_hinge_compact", "stair_sat3"])
def test_backward_from_a_code_fills_nothing(op, device):
    # The code output has no gradient: autograd must not build a zero tensor for it (it did, the
    # size of the code, on every backward).
    z = torch.randn(4096, device=device, requires_grad=True)
    g = torch.randn(4096, device=device)
    y = op(z)
    with _AtenOps() as seen:
        (dz,) = torch.autograd.grad(y, z, g)
    assert not {"zeros", "zeros_like", "zero_", "fill_", "new_zeros"} & set(seen.names), seen.names
    assert dz.shape == z.shape
    # without materialised grads, a function above that returns None for y hands the backward
    # None, not zeros: it must pass None on (it raised a TypeError in the op before the guard)
    y2 = op(z)
    (dz2,) = torch.autograd.grad((_NoGrad.apply(y2) + z).sum(), z)
    assert dz2.eq(1).all()


@pytest.mark.parametrize("device", cpu_and_cuda())
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.float64])
@pytest.mark.parametrize("grad_scale", [True, False])
@pytest.mark.parametrize("rule", [r for r in rules.STEP_RULES if r in rules.SMOOTH_STEP_RULES])
def test_compact_code_error_bound(rule, grad_scale, dtype, device):
    """save='compact': |slope error| <= s_max / 508, so |dz error| <= |g| s_max / 508 (weighted)
    or s_max / (508 B) (unweighted), plus the dtype's own rounding; except slopes in
    (0, s_max / 508), which decode to s_max / 254 (error < s_max / 254) so as to stay nonzero."""
    gen = torch.Generator().manual_seed(0)
    z = (torch.randn(64, 257, generator=gen) * 2).to(device, dtype)
    z[0, :4] = torch.tensor([0.0, float("nan"), float("inf"), -1.0])
    z[1, :4] = torch.tensor([20.0, -20.0, 400.0, -400.0])  # tiny slopes of slowly saturating rules
    g = torch.randn(64, 257, generator=gen).to(device, dtype)
    zr = z.clone().requires_grad_(True)
    y = ftprop_cuda.step(zr, rule, grad_scale=grad_scale, backend="kernel", save="compact")
    (dz,) = torch.autograd.grad(y, zr, g)
    exact = ref.step_backward(g.double(), z.double(), rule, "pm1", grad_scale)
    s_max = rules.get("step", rule).slope_max
    scale = g.double().abs() if (grad_scale or rule in rules.ESTIMATOR_RULES) else 1.0 / z.shape[0]
    slope = ref.step_slope(z.double(), ref.target(g.double()), rule)
    tiny = (slope > 0) & (slope < s_max / 508)
    assert tiny.any()  # the exception is exercised
    bound = torch.where(tiny, scale * s_max / 254, scale * s_max / 508)
    bound = bound + torch.finfo(dtype).eps * exact.abs() + 1e-7
    err = (dz.double() - exact).abs()
    nan = torch.isnan(exact)
    assert torch.equal(torch.isnan(dz), nan)
    assert (err[~nan] <= bound[~nan]).all(), (err - bound).max()
    # the code is really approximate: not all slopes come out exact
    assert (err[~nan] > 0).any()


@pytest.mark.parametrize("device", cpu_and_cuda())
@pytest.mark.parametrize("grad_scale", [True, False])
def test_staircase_compact_code_error_bound(grad_scale, device):
    gen = torch.Generator().manual_seed(1)
    z = (torch.rand(32, 300, generator=gen) * 1.6 - 0.3).to(device)
    g = torch.randn(32, 300, generator=gen).to(device)
    zr = z.clone().requires_grad_(True)
    y = ftprop_cuda.staircase(zr, 3, rule="soft_hinge", grad_scale=grad_scale, save="compact")
    (dz,) = torch.autograd.grad(y, zr, g)
    exact = ref.staircase_backward(g.double(), z.double(), 3, 0.0, 1.0, "soft_hinge", grad_scale)
    scale = g.double().abs() if grad_scale else 1.0 / z.shape[0]
    assert ((dz.double() - exact).abs() <= scale / 508 + 1e-6).all()


@pytest.mark.parametrize("device", cpu_and_cuda())
@pytest.mark.parametrize("n", [1, 3, 7, 8, 9, 511, 512, 513, 4099, 70001])
def test_codes_at_block_and_byte_edges(n, device):
    """Lengths around the code's byte and block boundaries decode to the reference."""
    gen = torch.Generator().manual_seed(n)
    z = (torch.randn(n, generator=gen) * 1.5).to(device)
    g = torch.randn(n, generator=gen).to(device)
    for rule in ("sste", "saturated_hinge", "hinge"):
        zr = z.clone().requires_grad_(True)
        (dz,) = torch.autograd.grad(ftprop_cuda.step(zr, rule), zr, g)
        assert_backward_close(dz, ref.step_backward(g, z, rule))
    for steps in (2, 3, 5, 20):
        zr = (z * 0.5 + 0.5).requires_grad_(True)
        y = ftprop_cuda.staircase(zr, steps, rule="saturated_hinge")
        (dz,) = torch.autograd.grad(y, zr, g)
        assert_backward_close(dz, ref.staircase_backward(g, zr.detach(), steps, 0.0, 1.0,
                                                          "saturated_hinge"))


def test_code_bits_tables():
    expected = {"ste": 0, "sste": 1, "ramp": 8, "soft_hinge": 8, "saturated_hinge": 2,
                "hinge": 2, "perceptron": 2, "sigmoid": 8, "lecun_tanh": 8}
    assert {r: rules.step_code_bits(r) for r in expected} == expected
    assert rules.staircase_code_bits("saturated_hinge", 2) == 2
    assert rules.staircase_code_bits("saturated_hinge", 3) == 4
    assert rules.staircase_code_bits("saturated_hinge", 14) == 4
    assert rules.staircase_code_bits("saturated_hinge", 15) == 8
    assert rules.staircase_code_bits("saturated_hinge", 254) == 8
    assert rules.staircase_code_bits("saturated_hinge", 255) is None


@pytest.mark.parametrize("device", cpu_and_cuda())
@pytest.mark.parametrize("requires_grad", [False, True])
def test_opcheck_saved_ops(requires_grad, device):
    z = torch.randn(5, 7, device=device, requires_grad=requires_grad)
    g = torch.randn(5, 7, device=device)
    torch.library.opcheck(torch.ops.ftprop_cuda._step_saved.default, (z, "hinge", False, True))
    torch.library.opcheck(torch.ops.ftprop_cuda._staircase_saved.default,
                          (z, 3, 0.0, 1.0, "saturated_hinge", False))
    if not requires_grad:
        _, code = torch.ops.ftprop_cuda._step_saved(z, "sste", True, True)
        torch.library.opcheck(torch.ops.ftprop_cuda._step_backward_saved.default,
                              (g, code, "sste", True, True))
        _, code = torch.ops.ftprop_cuda._staircase_saved(z, 5, -1.0, 1.0, "saturated_hinge", True)
        torch.library.opcheck(torch.ops.ftprop_cuda._staircase_backward_saved.default,
                              (g, code, 5, -1.0, 1.0, "saturated_hinge", False))


def test_saved_ops_check_the_code():
    g = torch.randn(10)
    with pytest.raises(ValueError, match="'state' must hold 2 bytes"):
        torch.ops.ftprop_cuda._step_backward_saved(g, torch.zeros(3, dtype=torch.uint8), "sste",
                                                   False, True)
    with pytest.raises(TypeError, match="'state' must be uint8"):
        torch.ops.ftprop_cuda._step_backward_saved(g, torch.zeros(2), "sste", False, True)
    with pytest.raises(ValueError, match="save"):
        ftprop_cuda.step(g, save="packed")
