"""The kernels against the reference: every rule, values, gradient mode, dtype and device, on
random inputs and on the boundaries of docs/spec.md; forward bit-exact, backward within
tolerance."""
import pytest
import torch

import ftprop_cuda
from ftprop_cuda.ops import reference as ref
from ftprop_cuda.ops import rules

from conftest import cpu_and_cuda
from helpers import (DTYPES, G_BOUNDARY, Z_STEP, assert_backward_close,
                     assert_same_bits, grid, staircase_boundary)

STAIR_CONFIGS = [(3, 0.0, 1.0), (5, 0.0, 1.0), (2, -1.0, 1.0), (4, -0.5, 2.5), (7, 0.1, 0.35),
                 (3, -0.0, 1.0)]

SHAPES = [(), (0,), (0, 3), (1,), (7,), (5, 33), (4, 3, 17)]


def _make(shape, layout, dtype, device, scale=2.0, seed=0):
    """A random tensor of `shape` in the given memory layout (the values are what matter)."""
    gen = torch.Generator().manual_seed(seed)

    def rand(s):
        return (torch.randn(s, generator=gen, dtype=torch.float64) * scale).to(device, dtype)

    if layout == "contiguous":
        return rand(shape)
    if layout == "transposed":
        return rand(tuple(reversed(shape))).permute(*reversed(range(len(shape))))
    if layout == "strided":  # every other row of a bigger buffer
        return rand((2 * shape[0],) + tuple(shape[1:]))[::2]
    if layout == "expanded":  # stride 0 along the last dimension
        return rand(tuple(shape[:-1]) + (1,)).expand(shape)
    raise ValueError(layout)


def _step_kernel_grad(z, g, rule, values, grad_scale, save="auto"):
    z = z.detach().requires_grad_(True)
    y = ftprop_cuda.step(z, rule, values, grad_scale, backend="kernel", save=save)
    (dz,) = torch.autograd.grad(y, z, g)
    return y.detach(), dz


def _stair_kernel_grad(z, g, steps, lo, hi, rule, grad_scale, save="auto"):
    z = z.detach().requires_grad_(True)
    y = ftprop_cuda.staircase(z, steps, lo, hi, rule, grad_scale, backend="kernel", save=save)
    (dz,) = torch.autograd.grad(y, z, g)
    return y.detach(), dz


# ---------------------------------------------------------------------------------------------
# Step
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("device", cpu_and_cuda())
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("grad_scale", [True, False])
@pytest.mark.parametrize("values", ["pm1", "01"])
@pytest.mark.parametrize("rule", rules.STEP_RULES)
@pytest.mark.parametrize("save", ["auto", "z"])  # auto: a bit-packed code for interval rules
def test_step_boundaries(save, rule, values, grad_scale, dtype, device):
    z, g = grid(Z_STEP, G_BOUNDARY, dtype, device)
    y, dz = _step_kernel_grad(z, g, rule, values, grad_scale, save)
    assert_same_bits(y, ref.step_forward(z, values))
    assert_backward_close(dz, ref.step_backward(g, z, rule, values, grad_scale))
    # A 2-D batch so that B = z.shape[0] != numel in the unweighted mode.
    z2, g2 = z.reshape(len(Z_STEP), -1), g.reshape(len(Z_STEP), -1)
    _, dz2 = _step_kernel_grad(z2, g2, rule, values, grad_scale, save)
    assert_backward_close(dz2, ref.step_backward(g2, z2, rule, values, grad_scale))


@pytest.mark.parametrize("device", cpu_and_cuda())
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("grad_scale", [True, False])
@pytest.mark.parametrize("values", ["pm1", "01"])
@pytest.mark.parametrize("rule", rules.STEP_RULES)
@pytest.mark.parametrize("save", ["auto", "z"])
def test_step_random(save, rule, values, grad_scale, dtype, device):
    for seed, shape in enumerate(SHAPES):
        z = _make(shape, "contiguous", dtype, device, seed=seed)
        g = _make(shape, "contiguous", dtype, device, scale=1.0, seed=seed + 100)
        y, dz = _step_kernel_grad(z, g, rule, values, grad_scale, save)
        assert_same_bits(y, ref.step_forward(z, values))
        assert_backward_close(dz, ref.step_backward(g, z, rule, values, grad_scale))


@pytest.mark.parametrize("device", cpu_and_cuda())
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("layout", ["transposed", "strided", "expanded"])
@pytest.mark.parametrize("rule", ["soft_hinge", "saturated_hinge", "ramp"])
def test_step_non_contiguous(rule, layout, dtype, device):
    shape = (6, 5, 9)
    z = _make(shape, layout, dtype, device, seed=1)
    g = _make(shape, "transposed" if layout != "transposed" else "strided", dtype, device,
              scale=1.0, seed=2)
    assert not z.is_contiguous() and not g.is_contiguous()
    y, dz = _step_kernel_grad(z, g, rule, "pm1", False)
    yc, dzc = _step_kernel_grad(z.contiguous(), g.contiguous(), rule, "pm1", False)
    assert_same_bits(y, yc)
    assert_same_bits(dz, dzc)
    assert_backward_close(dz, ref.step_backward(g, z, rule, "pm1", False))


# ---------------------------------------------------------------------------------------------
# Staircase
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("device", cpu_and_cuda())
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("grad_scale", [True, False])
@pytest.mark.parametrize("rule", rules.STAIRCASE_RULES)
@pytest.mark.parametrize("steps,lo,hi", STAIR_CONFIGS)
@pytest.mark.parametrize("save", ["auto", "z"])
def test_staircase_boundaries(save, steps, lo, hi, rule, grad_scale, dtype, device):
    z, g = grid(staircase_boundary(steps, lo, hi), G_BOUNDARY, dtype, device)
    y, dz = _stair_kernel_grad(z, g, steps, lo, hi, rule, grad_scale, save)
    assert_same_bits(y, ref.staircase_forward(z, steps, lo, hi))
    assert_backward_close(dz, ref.staircase_backward(g, z, steps, lo, hi, rule, grad_scale))
    z2, g2 = z.reshape(-1, len(G_BOUNDARY)), g.reshape(-1, len(G_BOUNDARY))
    _, dz2 = _stair_kernel_grad(z2, g2, steps, lo, hi, rule, grad_scale, save)
    assert_backward_close(dz2, ref.staircase_backward(g2, z2, steps, lo, hi, rule, grad_scale))


@pytest.mark.parametrize("device", cpu_and_cuda())
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("grad_scale", [True, False])
@pytest.mark.parametrize("rule", rules.STAIRCASE_RULES)
@pytest.mark.parametrize("save", ["auto", "z"])
def test_staircase_random(save, rule, grad_scale, dtype, device):
    configs = STAIR_CONFIGS + [(300, 0.0, 1.0)]  # K > 254: no count code, z is saved
    for seed, shape in enumerate(SHAPES):
        steps, lo, hi = configs[seed % len(configs)]
        z = _make(shape, "contiguous", dtype, device, scale=hi - lo, seed=seed) + (lo + hi) / 2
        g = _make(shape, "contiguous", dtype, device, scale=1.0, seed=seed + 100)
        y, dz = _stair_kernel_grad(z, g, steps, lo, hi, rule, grad_scale, save)
        assert_same_bits(y, ref.staircase_forward(z, steps, lo, hi))
        assert_backward_close(dz, ref.staircase_backward(g, z, steps, lo, hi, rule, grad_scale))


@pytest.mark.parametrize("device", cpu_and_cuda())
@pytest.mark.parametrize("layout", ["transposed", "strided", "expanded"])
@pytest.mark.parametrize("rule", ["soft_hinge", "saturated_hinge"])
def test_staircase_non_contiguous(rule, layout, device):
    shape = (6, 5, 9)
    z = _make(shape, layout, torch.float32, device, scale=0.7, seed=3) + 0.5
    g = _make(shape, "strided", torch.float32, device, scale=1.0, seed=4)
    y, dz = _stair_kernel_grad(z, g, 3, 0.0, 1.0, rule, True)
    yc, dzc = _stair_kernel_grad(z.contiguous(), g.contiguous(), 3, 0.0, 1.0, rule, True)
    assert_same_bits(y, yc)
    assert_same_bits(dz, dzc)


# ---------------------------------------------------------------------------------------------
# Low precision: the kernel's error against a float64 oracle is at most twice the reference's
# own error in the same dtype (plus half an ulp of slack for values that round either way).
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("device", cpu_and_cuda())
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("op,rule", [("step", "soft_hinge"), ("step", "sigmoid"),
                                     ("step", "lecun_tanh"), ("step", "ramp"),
                                     ("staircase", "soft_hinge"),
                                     ("staircase", "saturated_hinge")])
def test_low_precision_error_bound(op, rule, dtype, device):
    z = _make((4096,), "contiguous", dtype, device, seed=7)
    g = _make((4096,), "contiguous", dtype, device, scale=1.0, seed=8)
    if op == "step":
        _, dz = _step_kernel_grad(z, g, rule, "pm1", True)
        oracle = ref.step_backward(g.double(), z.double(), rule, "pm1", True)
        own = ref.step_backward(g, z, rule, "pm1", True)
    else:
        _, dz = _stair_kernel_grad(z, g, 3, 0.0, 1.0, rule, True)
        oracle = ref.staircase_backward(g.double(), z.double(), 3, 0.0, 1.0, rule, True)
        own = ref.staircase_backward(g, z, 3, 0.0, 1.0, rule, True)
    eps = torch.finfo(dtype).eps
    err_kernel = (dz.double() - oracle).abs().max().item()
    err_ref = (own.double() - oracle).abs().max().item()
    assert err_kernel <= 2 * err_ref + eps * oracle.abs().max().item() * 0.5, (err_kernel, err_ref)


@pytest.mark.parametrize("device", cpu_and_cuda())
@pytest.mark.parametrize("grad_scale", [True, False])
@pytest.mark.parametrize("op,rule", [("step", "soft_hinge"), ("step", "sigmoid"),
                                     ("step", "lecun_tanh"), ("staircase", "soft_hinge")])
def test_smooth_rules_dense_grid(op, rule, grad_scale, device):
    """The CPU kernels' own exp and tanh over their whole range: z on a dense float32 grid from
    -100 to 100 (every exp argument from underflow to overflow, the tanh saturation near |z| = 9,
    the sigmoid's one-sided saturation). With g = 1, the usual tolerance against the reference;
    with larger random g, against a float64 oracle: at most 4 float32 eps of |g| * s_max (the
    slope 1 - tanh^2 cancels; the float32 reference itself is off by up to 1.5 eps there)."""
    z = torch.cat([torch.linspace(-100.0, 100.0, 400001), torch.linspace(-12.0, 12.0, 480001)])
    gen = torch.Generator().manual_seed(3)
    eps = torch.finfo(torch.float32).eps
    s_max = rules.get(op, rule).slope_max
    for g, usual_tolerance in ((torch.ones_like(z), True),
                               (torch.randn(z.shape, generator=gen) * 4, False)):
        z_d, g_d = z.to(device), g.to(device)
        if op == "step":
            _, dz = _step_kernel_grad(z_d, g_d, rule, "pm1", grad_scale)
            exact = ref.step_backward(g.double(), z.double(), rule, "pm1", grad_scale)
        else:
            _, dz = _stair_kernel_grad(z_d, g_d, 3, -1.0, 2.0, rule, grad_scale)
            exact = ref.staircase_backward(g.double(), z.double(), 3, -1.0, 2.0, rule, grad_scale)
        dz = dz.cpu().double()
        if usual_tolerance:
            assert_backward_close(dz.float(), exact.float())
        scale = g.double().abs() * s_max if grad_scale else s_max / z.shape[0]
        err = (dz - exact).abs()
        bad = err > 4 * eps * scale
        assert not bad.any(), (f"{int(bad.sum())} elements, e.g. z = {z[bad][:3].tolist()}: "
                               f"{dz[bad][:3].tolist()} vs {exact[bad][:3].tolist()}")


# ---------------------------------------------------------------------------------------------
# CUDA only: grid-stride loop, device guard, 64-bit indexing
# ---------------------------------------------------------------------------------------------
@pytest.mark.needs_cuda
@pytest.mark.parametrize("rule", ["soft_hinge", "sste"])
def test_cuda_larger_than_one_grid(rule):
    n = (1 << 22) + 3  # far more than SMs * 8 blocks * 256 threads
    z = torch.randn(n, device="cuda") * 2
    g = torch.randn(n, device="cuda")
    y, dz = _step_kernel_grad(z, g, rule, "pm1", True)
    assert_same_bits(y, ref.step_forward(z))
    assert_backward_close(dz, ref.step_backward(g, z, rule))
    ys, dzs = _stair_kernel_grad(z, g, 3, 0.0, 1.0, "saturated_hinge", True)
    assert_same_bits(ys, ref.staircase_forward(z, 3, 0.0, 1.0))
    assert_backward_close(dzs, ref.staircase_backward(g, z, 3, 0.0, 1.0, "saturated_hinge"))


@pytest.mark.needs_cuda
@pytest.mark.parametrize("op", ["step", "staircase"])
def test_cuda_device_guard(op):
    """A tensor on the second GPU while the first is current: every kernel (forward, backward,
    saved-state forward and backward) must run on the tensor's device."""
    if torch.cuda.device_count() < 2:
        pytest.skip(f"needs two GPUs, {torch.cuda.device_count()} visible: a tensor on a device "
                    "that is not the current one is the case this test is about")
    assert torch.cuda.current_device() == 0
    z = torch.randn(1000, device="cuda:1", requires_grad=True)
    g = torch.randn(1000, device="cuda:1")
    if op == "step":
        y = ftprop_cuda.step(z, backend="kernel")
        expected = ref.step_forward(z.detach())
        y_saved, state = torch.ops.ftprop_cuda._step_saved(z.detach(), "sste", False, True)
        back = torch.ops.ftprop_cuda._step_backward_saved(g, state, "sste", False, True)
        back_ref = ref.step_backward(g, z.detach(), "sste")
    else:
        y = ftprop_cuda.staircase(z, steps=3, lo=0.0, hi=1.0, backend="kernel")
        expected = ref.staircase_forward(z.detach(), 3, 0.0, 1.0)
        y_saved, state = torch.ops.ftprop_cuda._staircase_saved(z.detach(), 3, 0.0, 1.0,
                                                                "saturated_hinge", True)
        back = torch.ops.ftprop_cuda._staircase_backward_saved(g, state, 3, 0.0, 1.0,
                                                               "saturated_hinge", True)
        back_ref = ref.staircase_backward(g, z.detach(), 3, 0.0, 1.0, "saturated_hinge")
    y.backward(g)
    assert y.device == z.device and z.grad.device == z.device and state.device == z.device
    assert_same_bits(y, expected)
    assert_same_bits(y_saved, expected)
    assert_backward_close(back, back_ref)
    assert torch.cuda.current_device() == 0


@pytest.mark.needs_cuda
def test_cuda_64bit_indexing():
    n = (1 << 31) + 17  # past int32 indexing
    free, _ = torch.cuda.mem_get_info()
    if free < 3 * n * 2:
        pytest.skip("needs about 13 GB of free GPU memory")
    z = torch.full((n,), -0.5, dtype=torch.float16, device="cuda")
    z[-17:] = 0.5
    y = ftprop_cuda.step(z, backend="kernel")
    assert y[-17:].eq(1).all().item() and y[-40:-17].eq(-1).all().item()
    del y
    g = torch.ones_like(z)
    dz = torch.ops.ftprop_cuda._step_backward(g, z, "sste", False, True)
    assert dz[-17:].eq(1).all().item()
