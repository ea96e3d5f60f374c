"""The C++ side of the ops: the checks that protect direct torch.ops.ftprop_cuda calls, the compact
code at g = +-inf, and outputs in the input's memory format. (Its rule lists against the Python
registry: tests/test_rule_registry.py.)"""
import math

import pytest
import torch

from ftprop_cuda.ops import extension
from ftprop_cuda.ops import reference as ref
from ftprop_cuda.ops import rules

from helpers import assert_backward_close, assert_same_bits

ops = torch.ops.ftprop_cuda

pytestmark = pytest.mark.skipif("cpu" not in extension.KERNEL_DEVICES, reason="no CPU kernel built")


# ---- Staircase scalars the arithmetic type cannot hold -------------------------------------------
def _staircase_calls(z, steps, lo, hi):
    """Every staircase op on (z, steps, lo, hi), as thunks."""
    g = torch.ones_like(z)
    rule = "saturated_hinge"
    code = torch.zeros((z.numel() * 4 + 7) // 8, dtype=torch.uint8)
    return [
        lambda: ops.staircase(z, steps, lo, hi, rule, True),
        lambda: ops._staircase_backward(g, z, steps, lo, hi, rule, False),
        lambda: ops._staircase_saved(z, steps, lo, hi, rule, True),
        lambda: ops._staircase_backward_saved(g, code, steps, lo, hi, rule, False),
    ]


@pytest.mark.parametrize("dtype,lo,hi,words", [
    (torch.float32, -3.4e38, 3.4e38, ["hi - lo", "float32", "-3.4e+38", "3.4e+38"]),
    (torch.float32, 0.0, 1e39, ["finite in the input's dtype float32", "1e+39"]),
    (torch.float32, -1e39, 0.0, ["finite in the input's dtype float32", "-1e+39"]),
    # B = 4, K = 3: hi - lo fits but B*(hi - lo) does not; then only K*B*(hi - lo) overflows
    (torch.float32, 0.0, 2e38, [", B*(hi - lo)=inf", "B=4"]),
    (torch.float32, 0.0, 5e37, ["K*B*(hi - lo)=inf", "K=3"]),
    (torch.float32, 0.0, 1e-50, ["hi - lo=0"]),  # rounds to 0 in float32
    (torch.float16, 0.0, 70000.0, ["finite in the input's dtype float16", "70000"]),
    (torch.bfloat16, -1e39, 1.0, ["finite in the input's dtype bfloat16"]),
])
def test_staircase_bounds_that_overflow_are_rejected(dtype, lo, hi, words):
    """Before these checks the output was all NaN, with no error."""
    z = torch.zeros(4, 3, dtype=dtype)
    for call in _staircase_calls(z, 3, lo, hi):
        with pytest.raises(ValueError) as info:
            call()
        message = str(info.value)
        for word in ["'lo'", "'hi'"] + words:
            assert word in message, message


@pytest.mark.parametrize("dtype,lo,hi", [
    (torch.float16, -60000.0, 60000.0),
    (torch.float32, -1e37, 1e37),
    (torch.float64, -3.4e38, 3.4e38),
    (torch.float64, 1e-300, 2e-300),
])
def test_staircase_wide_bounds_that_fit_still_work(dtype, lo, hi):
    z = torch.linspace(-1, 1, 12, dtype=torch.float64).reshape(4, 3).mul(hi).to(dtype)
    y = ops.staircase(z, 3, lo, hi, "soft_hinge", True)
    assert torch.isfinite(y).all()
    assert_same_bits(y, ref.staircase_forward(z, 3, lo, hi))


def test_staircase_steps_limit():
    z = torch.randn(5)
    limit = 1 << 24
    assert ops.staircase(z, limit, 0.0, 1.0, "sste", True).shape == z.shape
    for call in _staircase_calls(z, limit + 1, 0.0, 1.0):
        with pytest.raises(ValueError, match=r"'steps' must be an integer in \[2, 2\*\*24\]"):
            call()


# ---- save="compact" at g = +-inf -----------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("rule", ["soft_hinge", "sigmoid", "lecun_tanh", "ramp"])
def test_compact_code_keeps_inf_times_a_tiny_slope(rule, dtype):
    """A tiny nonzero slope times g = +-inf is +-inf in the reference; the 8-bit code must not
    round that slope to 0 (inf * 0 = NaN). Only an exactly zero slope gives NaN."""
    zs = [0.0, 1.0, 1.9, 1.999, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 10.0, 12.0, 15.0, 20.0, 40.0,
          60.0, 200.0, 400.0, math.inf]
    zs = zs + [-z for z in zs]
    z = torch.tensor(zs, dtype=dtype).repeat_interleave(2)
    g = torch.tensor([math.inf, -math.inf], dtype=dtype).repeat(len(zs))
    y, code = ops._step_saved(z, rule, False, True)
    dz = ops._step_backward_saved(g, code, rule, False, True)
    exact = ref.step_backward(g, z, rule, "pm1", True)
    differ = torch.isnan(dz) != torch.isnan(exact)
    assert not differ.any(), z[differ]
    assert torch.equal(dz[torch.isinf(exact)], exact[torch.isinf(exact)])
    assert torch.isinf(exact).any() and torch.isnan(exact).any()  # both cases are exercised


def test_staircase_compact_code_keeps_inf_times_a_tiny_slope():
    z = torch.tensor([-8.0, -5.0, -3.0, 0.5, 4.0, 6.0, 9.0, 30.0]).repeat_interleave(2)
    g = torch.tensor([math.inf, -math.inf]).repeat(8)
    _, code = ops._staircase_saved(z, 3, 0.0, 1.0, "soft_hinge", True)
    dz = ops._staircase_backward_saved(g, code, 3, 0.0, 1.0, "soft_hinge", True)
    exact = ref.staircase_backward(g, z, 3, 0.0, 1.0, "soft_hinge", True)
    assert torch.equal(torch.isnan(dz), torch.isnan(exact))
    assert torch.equal(dz[torch.isinf(exact)], exact[torch.isinf(exact)])
    assert torch.isinf(exact).any()


# ---- Outputs keep the input's memory format ------------------------------------------------------
def _layouts():
    gen = torch.Generator().manual_seed(3)
    base = torch.randn(4, 6, 5, 7, generator=gen) * 1.5
    base3d = torch.randn(2, 3, 4, 5, 6, generator=gen) * 1.5
    return {
        "channels_last": base.to(memory_format=torch.channels_last),
        "channels_last_3d": base3d.to(memory_format=torch.channels_last_3d),
        "transposed": (torch.randn(9, 13, generator=gen) * 1.5).t(),
        "permuted": base.permute(2, 0, 3, 1),
        "size1_dims": torch.randn(4, 1, 5, 1, generator=gen).to(memory_format=torch.channels_last),
    }


LAYOUTS = _layouts()


def _stair(z):
    return ops.staircase(z, 4, -1.0, 2.0, "soft_hinge", True)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.float64])
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_forward_keeps_the_memory_format(layout, dtype):
    z = LAYOUTS[layout].to(dtype)
    for y, expected in [
        (ops.step(z, "sste", False, True), ref.step_forward(z)),
        (ops._step_saved(z, "hinge", True, True)[0], ref.step_forward(z, "01")),
        (_stair(z), ref.staircase_forward(z, 4, -1.0, 2.0)),
        (ops._staircase_saved(z, 4, -1.0, 2.0, "saturated_hinge", True)[0],
         ref.staircase_forward(z, 4, -1.0, 2.0)),
    ]:
        assert y.stride() == z.stride(), (y.stride(), z.stride())
        assert_same_bits(y, expected)


def test_reference_keeps_channels_last_too():
    z = LAYOUTS["channels_last"]
    assert ref.step_forward(z).stride() == ops.step(z, "sste", False, True).stride()


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("grad_layout", ["like_z", "contiguous", "other"])
def test_backward_from_z_in_any_layout(layout, grad_layout):
    z = LAYOUTS[layout]
    gen = torch.Generator().manual_seed(4)
    g = torch.randn(z.shape, generator=gen)
    g = {"like_z": torch.empty_like(z).copy_(g), "contiguous": g,
         "other": g.transpose(0, -1).contiguous().transpose(0, -1)}[grad_layout]
    for rule in ("soft_hinge", "saturated_hinge", "ramp"):
        for grad_scale in (True, False):
            dz = ops._step_backward(g, z, rule, False, grad_scale)
            assert dz.stride() == z.stride()
            assert_backward_close(dz, ref.step_backward(g, z, rule, "pm1", grad_scale))
    for rule in ("soft_hinge", "saturated_hinge"):
        dz = ops._staircase_backward(g, z, 4, -1.0, 2.0, rule, False)
        assert dz.stride() == z.stride()
        assert_backward_close(dz, ref.staircase_backward(g, z, 4, -1.0, 2.0, rule, False))


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_backward_from_a_code_in_any_layout(layout):
    """The code is written in z's memory order; the backward reads grad laid out like y."""
    z = LAYOUTS[layout]
    gen = torch.Generator().manual_seed(5)
    g = torch.empty_like(z).copy_(torch.randn(z.shape, generator=gen))
    for rule in ("sste", "hinge", "sigmoid"):
        y, code = ops._step_saved(z, rule, False, True)
        dz = ops._step_backward_saved(g, code, rule, False, True)
        assert y.stride() == dz.stride() == z.stride()
        exact = ref.step_backward(g, z, rule, "pm1", True)
        if rule == "sigmoid":  # the 8-bit code: within its bound
            assert ((dz - exact).abs() <= g.abs() * rules.get("step", rule).slope_max / 254 + 1e-7).all()
        else:
            assert_backward_close(dz, exact)
    y, code = ops._staircase_saved(z, 5, -1.0, 2.0, "saturated_hinge", True)
    dz = ops._staircase_backward_saved(g, code, 5, -1.0, 2.0, "saturated_hinge", False)
    assert dz.stride() == z.stride()
    assert_backward_close(dz, ref.staircase_backward(g, z, 5, -1.0, 2.0, "saturated_hinge", False))


@pytest.mark.parametrize("grad_layout", ["like_y", "contiguous"])
@pytest.mark.parametrize("save", ["z", "auto"])
def test_autograd_through_channels_last(save, grad_layout):
    import ftprop_cuda

    z = LAYOUTS["channels_last"].clone().requires_grad_(True)
    g = torch.randn(z.shape, generator=torch.Generator().manual_seed(6))
    if grad_layout == "like_y":
        g = torch.empty_like(z).copy_(g)
    for rule in ("sste", "saturated_hinge"):
        y = ftprop_cuda.step(z, rule, backend="kernel", save=save)
        assert y.is_contiguous(memory_format=torch.channels_last)
        (dz,) = torch.autograd.grad(y, z, g)
        assert_backward_close(dz, ref.step_backward(g, z.detach(), rule))
        y = ftprop_cuda.staircase(z, 3, rule=rule, backend="kernel", save=save)
        assert y.is_contiguous(memory_format=torch.channels_last)
        (dz,) = torch.autograd.grad(y, z, g)
        assert_backward_close(dz, ref.staircase_backward(g, z.detach(), 3, 0.0, 1.0, rule))


def test_input_that_is_not_dense_gets_empty_likes_layout():
    base = LAYOUTS["channels_last"]
    for z in (base[:, :, ::2], base[..., 1:4], LAYOUTS["transposed"][::2]):
        assert not z.is_contiguous()
        y = ops.step(z, "sste", False, True)
        assert y.stride() == torch.empty_like(z).stride()
        assert_same_bits(y, ref.step_forward(z))
        g = torch.randn(z.shape)
        dz = ops._step_backward(g, z, "soft_hinge", False, True)
        assert dz.stride() == torch.empty_like(z).stride()
        assert_backward_close(dz, ref.step_backward(g, z, "soft_hinge"))


def test_opcheck_channels_last():
    z = LAYOUTS["channels_last"]
    g = torch.empty_like(z).normal_()
    g_contiguous = g.contiguous()
    torch.library.opcheck(ops.step.default, (z, "sste", False, True))
    torch.library.opcheck(ops.staircase.default, (z, 3, 0.0, 1.0, "soft_hinge", True))
    torch.library.opcheck(ops._step_backward.default, (g_contiguous, z, "soft_hinge", False, True))
    torch.library.opcheck(ops._staircase_backward.default,
                          (g_contiguous, z, 3, 0.0, 1.0, "saturated_hinge", False))
    torch.library.opcheck(ops._step_saved.default, (z, "hinge", False, True))
    torch.library.opcheck(ops._staircase_saved.default, (z, 3, 0.0, 1.0, "saturated_hinge", True))
    _, code = ops._step_saved(z, "sste", False, True)
    torch.library.opcheck(ops._step_backward_saved.default, (g, code, "sste", False, True))
    zr = z.clone().requires_grad_(True)
    torch.library.opcheck(ops.step.default, (zr, "soft_hinge", False, True))
    torch.library.opcheck(ops._step_saved.default, (zr, "hinge", False, True))
