"""The oracle itself, against small hand-computed tables and the identities of docs/spec.md."""
import math

import pytest
import torch

from ftprop_cuda.ops import reference as ref
from ftprop_cuda.ops import rules

nan, inf = math.nan, math.inf


def T(values, dtype=torch.float64):
    return torch.tensor(values, dtype=dtype)


def assert_eq(actual, expected):
    torch.testing.assert_close(actual, T(expected, actual.dtype), equal_nan=True, rtol=0, atol=1e-15)


def test_target_table():
    assert_eq(ref.target(T([2.0, -3.0, 0.0, -0.0, nan, inf, -inf])), [-1, 1, 0, 0, 0, -1, 1])


@pytest.mark.parametrize("values,expected", [("pm1", [-1, -1, -1, 1, nan, 1, -1, 1]),
                                             ("01", [0, 0, 0, 1, nan, 1, 0, 1])])
def test_step_forward_table(values, expected):
    z = T([-1.0, -0.0, 0.0, 1e-300, nan, inf, -inf, 3.0])
    assert_eq(ref.step_forward(z, values), expected)


# (rule, values, z, slope at t = -1, i.e. g > 0), computed by hand from docs/spec.md's table.
SLOPE_TABLE = [
    ("ste", "pm1", [-5.0, 0.0, 5.0], [1, 1, 1]),
    ("sste", "pm1", [-1.5, -1.0, 0.0, 1.0, 1.5], [0, 1, 1, 1, 0]),
    ("sste", "01", [-0.5, 0.0, 1.0, 1.5], [0, 1, 1, 0]),
    ("ramp", "pm1", [-2.5, -1.5, -1.0, 0.0, 1.25, 2.0], [0, 0.5, 1, 1, 0.75, 0]),
    ("ramp", "01", [-1.0, -0.5, 0.0, 1.0, 1.5, 2.0], [0, 0.5, 1, 1, 0.5, 0]),
    # t = -1: window -1 < -z <= 1, i.e. -1 <= z < 1
    ("saturated_hinge", "pm1", [-1.5, -1.0, 0.0, 0.999, 1.0], [0, 1, 1, 1, 0]),
    ("hinge", "pm1", [-1.5, -1.0, 5.0], [0, 1, 1]),  # -z <= 1
    ("perceptron", "pm1", [-0.1, 0.0, 3.0], [0, 1, 1]),  # -z <= 0
    ("soft_hinge", "pm1", [0.0, 1.0], [1.0, 1 - math.tanh(1.0) ** 2]),
    ("sigmoid", "pm1", [0.0], [0.5]),  # 2 p (1 - p) with p = 1/2
    ("lecun_tanh", "pm1", [0.0], [1.7519 * 2 / 3]),
]


@pytest.mark.parametrize("rule,values,zs,slopes", SLOPE_TABLE)
def test_step_slope_table(rule, values, zs, slopes):
    z = T(zs)
    assert_eq(ref.step_slope(z, -torch.ones_like(z), rule, values), slopes)
    # weighted backward with g = 0.5 > 0 is 0.5 * slope
    assert_eq(ref.step_backward(torch.full_like(z, 0.5), z, rule, values, True),
              [0.5 * s for s in slopes])


def test_step_unweighted_table():
    # B = 4 rows; g > 0 gives t = -1, so dz = -t * s / B = s / 4.
    z = T([[0.0], [0.5], [-3.0], [2.0]])
    g = T([[2.0], [-1.0], [0.0], [7.0]])
    dz = ref.step_backward(g, z, "soft_hinge", "pm1", False)
    s = [1.0, 1 - math.tanh(0.5) ** 2, 1 - math.tanh(-3.0) ** 2, 1 - math.tanh(2.0) ** 2]
    assert_eq(dz.flatten(), [s[0] / 4, -s[1] / 4, 0.0, s[3] / 4])
    # the estimators ignore grad_scale
    assert_eq(ref.step_backward(g, z, "sste", "pm1", False).flatten(), [2.0, -1.0, 0.0, 0.0])
    # 0-dim: B = 1
    assert_eq(ref.step_backward(T(3.0), T(0.0), "hinge", "pm1", False), -(-1.0) * 1.0)


def test_nan_and_inf_propagate_as_ieee():
    z = T([0.0, 0.0, 5.0, nan])
    g = T([inf, nan, inf, 1.0])
    # sste: [|z| <= 1] is 1, 1, 0, 0 -> inf*1, nan*1, inf*0 = nan, 1*0 = 0
    assert_eq(ref.step_backward(g, z, "sste"), [inf, nan, nan, 0.0])


def test_staircase_forward_table():
    # K = 3 on [0, 1]: levels 0, 1/3, 2/3, 1; thresholds at u = 0, 0.5, 1 (strictly exceeded).
    z = T([-0.1, 0.0, 1e-3, 0.5, 0.5001, 1.0, 1.01, 2.0, nan, inf, -inf])
    assert_eq(ref.staircase_forward(z, 3, 0.0, 1.0),
              [0, 0, 1 / 3, 1 / 3, 2 / 3, 2 / 3, 1, 1, nan, 1, 0])
    # K = 2 on [-1, 1]: levels -1, 0, 1; thresholds at u = 0, 1 (z = -1, 1)
    assert_eq(ref.staircase_forward(T([-1.0, -0.9, 1.0, 1.1]), 2, -1.0, 1.0), [-1, 0, 0, 1])


def test_staircase_count_table():
    # K = 3: c(u) counts the thresholds {0, 0.5, 1} within one margin (1/(K-1) = 0.5 ... in
    # units of K - 1) of u; values worked out by hand from cl(v + 2) - cl(v - 2), v = 2u.
    u = T([-1.0, -0.5, 0.0, 0.25, 1.0, 1.5, 2.0, 2.6])
    assert_eq(ref.staircase_count(u, 3), [0, 1, 2, 3, 3, 2, 1, 0])


def test_staircase_backward_tables():
    z = T([[-0.5], [0.25], [0.9], [1.5]])
    g = T([[1.0], [1.0], [-2.0], [1.0]])
    assert_eq(ref.staircase_backward(g, z, 3, 0.0, 1.0, "sste").flatten(), [0, 1, -2, 0])
    assert_eq(ref.staircase_backward(g, z, 3, 0.0, 1.0, "ste").flatten(), [1, 1, -2, 1])
    # saturated hinge, weighted: g * c(u) / K with c = 1, 3, 3, 2
    assert_eq(ref.staircase_backward(g, z, 3, 0.0, 1.0, "saturated_hinge").flatten(),
              [1 / 3, 1, -2, 2 / 3])
    # unweighted: -t * c / (K * B * (hi - lo)) with B = 4, hi - lo = 2 on [0, 2]
    zz = z * 2
    assert_eq(ref.staircase_backward(g, zz, 3, 0.0, 2.0, "saturated_hinge", False).flatten(),
              [1 / 24, 3 / 24, -3 / 24, 2 / 24])
    # soft hinge at u = 0.5 is the top of the bump: slope 1
    assert_eq(ref.staircase_backward(T([3.0]), T([0.5]), 3, 0.0, 1.0, "soft_hinge"), [3.0])


# ---------------------------------------------------------------------------------------------
# The identities of docs/spec.md, on random inputs
# ---------------------------------------------------------------------------------------------
def _rand(seed, n=10000):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, generator=gen, dtype=torch.float64) * 2


def test_saturated_hinge_equals_sste_away_from_pm1():
    z, g = _rand(0), _rand(1)
    assert not (z.abs() == 1).any()
    torch.testing.assert_close(ref.step_backward(g, z, "saturated_hinge"),
                               ref.step_backward(g, z, "sste"), rtol=0, atol=0)
    # ... and differs exactly at z = +-1 for one of the signs of g
    edge = T([1.0, -1.0])
    assert not torch.equal(ref.step_backward(T([1.0, -1.0]), edge, "saturated_hinge"),
                           ref.step_backward(T([1.0, -1.0]), edge, "sste"))


def test_soft_hinge_is_backprop_through_tanh():
    z, g = _rand(2).requires_grad_(True), _rand(3)
    torch.tanh(z).backward(g)
    torch.testing.assert_close(ref.step_backward(g, z.detach(), "soft_hinge"), z.grad)


def test_ste_is_weighted_linear_loss():
    z, g = _rand(4), _rand(5)
    t = ref.target(g)
    # d/dz (-t z) = -t, weighted by |g|
    torch.testing.assert_close(ref.step_backward(g, z, "ste"), g.abs() * -t, rtol=0, atol=0)


@pytest.mark.parametrize("rule", [r.name for r in rules.rules_of("step") if not r.estimator])
def test_weighted_gradient_is_abs_g_times_loss_derivative(rule):
    """dz = |g| * dL/dz for every loss rule, with dL/dz from autograd of step_loss."""
    z = (_rand(6, 2000) * 1.3).requires_grad_(True)
    g = _rand(7, 2000)
    t = ref.target(g)
    ref.step_loss(z, t, rule).backward(g.abs())
    mask = (z.detach().abs() - 1).abs() > 1e-9  # kinks of the piecewise losses
    torch.testing.assert_close(ref.step_backward(g, z.detach(), rule)[mask], z.grad[mask])


@pytest.mark.parametrize("rule", [r for r in rules.STAIRCASE_RULES
                                  if rules.has_layer_loss("staircase", r)])
@pytest.mark.parametrize("steps,lo,hi", [(3, 0.0, 1.0), (5, -0.5, 1.5)])
def test_staircase_weighted_gradient_is_abs_g_times_loss_derivative(rule, steps, lo, hi):
    """The same for the staircase losses (ste: the linear loss -t z), with dL/dz from autograd."""
    z = (_rand(8, 2000) * (hi - lo) / 2 + (lo + hi) / 2).requires_grad_(True)
    g = _rand(9, 2000)
    t = ref.target(g)
    ref.staircase_loss(z, t, steps, lo, hi, rule).backward(g.abs())
    dz = ref.staircase_backward(g, z.detach(), steps, lo, hi, rule)
    v = (z.detach() - lo) / (hi - lo) * (steps - 1)
    mask = ((v - v.round()).abs() > 1e-9)  # kinks of the saturated hinges at every threshold
    torch.testing.assert_close(dz[mask], z.grad[mask])


def test_staircase_loss_is_none_for_sste():
    z = T([0.5])
    assert ref.staircase_loss(z, ref.target(z), 3, 0.0, 1.0, "sste") is None
