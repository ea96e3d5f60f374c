"""Per-layer diagnostics: hand-computed values, and the loss being the one the backward uses."""
import math

import pytest
import torch

import ftprop_cuda
from ftprop_cuda import reference as R
from ftprop_cuda import rules
from ftprop_cuda.models import build_model
from ftprop_cuda.train.diagnostics import Diagnostics, window_and_loss


def run_layer(unit, z, upstream):
    """Forward z through unit, send `upstream` back as the gradient of its output."""
    model = torch.nn.Sequential(unit)
    diag = Diagnostics(model)
    z = z.clone().requires_grad_(True)
    (model(z) * upstream).sum().backward()
    stats = diag.summary()
    diag.remove()
    return stats["0"], z.grad


Z = torch.tensor([[-2.0, -0.5, 0.5, 2.0]])
G = torch.tensor([[1.0, -1.0, 0.0, 1.0]])  # targets t = -sign(g) = [-1, +1, 0, -1]


def test_step_saturated_hinge_by_hand():
    stats, _ = run_layer(ftprop_cuda.Step(rule="saturated_hinge"), Z, G)
    # outputs y = [-1, -1, 1, 1]; t z = [2, -0.5, 0, -2]
    assert stats["has_target"] == 0.75            # 3 of 4 units have t != 0
    assert stats["disagree"] == 0.5               # unit 1 (t=+1, y=-1) and unit 3 (t=-1, y=+1)
    assert stats["in_window"] == 0.5              # -1 < t z <= 1 for units 1 and 2
    # L = min(2, max(0, 1 - t z)) = [0, 1.5, 1, 2], weighted by |g| = [1, 1, 0, 1]
    assert stats["loss"] == pytest.approx((0 + 1.5 + 0 + 2) / 4)


def test_step_soft_hinge_and_sste_by_hand():
    stats, _ = run_layer(ftprop_cuda.Step(rule="soft_hinge"), Z, G)
    expected = (math.tanh(-2) + 1 + math.tanh(0.5) + 1 + math.tanh(2) + 1) / 4
    assert stats["loss"] == pytest.approx(expected, rel=1e-6)
    assert stats["in_window"] == 1.0
    stats, _ = run_layer(ftprop_cuda.Step(rule="sste"), Z, G)
    assert stats["loss"] is None                  # an estimator, not a loss
    assert stats["in_window"] == 0.5              # |z| <= 1 for units 1 and 2


def test_step01_disagreement():
    z = torch.tensor([[-0.5, 0.5, 0.5, -0.5]])
    g = torch.tensor([[-1.0, -1.0, 1.0, 1.0]])    # t = [+1, +1, -1, -1]; y = [0, 1, 1, 0]
    stats, _ = run_layer(ftprop_cuda.Step(rule="hinge", values="01"), z, g)
    assert stats["has_target"] == 1.0
    assert stats["disagree"] == 0.5               # units 0 (wants 1, is 0) and 2 (wants 0, is 1)


def test_staircase_by_hand():
    # K=3 levels 0, 1/3, 2/3, 1 on [0, 1]; sste window is 0 <= u <= 1
    z = torch.tensor([[-0.5, 0.0, 0.25, 1.0, 1.5, 0.75]])
    g = torch.tensor([[-1.0, 1.0, -2.0, -1.0, 1.0, 0.0]])  # t = [+1, -1, +1, +1, -1, 0]
    stats, _ = run_layer(ftprop_cuda.Staircase(steps=3, rule="sste"), z, g)
    # y = [0, 0, 1/3, 2/3, 1, 2/3]: t=+1 below the top: units 0, 2, 3; t=-1 above the
    # bottom: unit 4 (unit 1 already sits at the bottom, unit 5 has no target)
    assert stats["has_target"] == pytest.approx(5 / 6)
    assert stats["disagree"] == pytest.approx(4 / 6)
    assert stats["in_window"] == pytest.approx(4 / 6)
    assert stats["loss"] is None


def test_unweighted_mode_weights_by_one_over_batch():
    z = Z.repeat(2, 1)
    g = G.repeat(2, 1) * 5.0                       # magnitudes must not matter unweighted
    stats, _ = run_layer(ftprop_cuda.Step(rule="saturated_hinge", grad_scale=False), z, g)
    # per row: [t != 0] * L = [0, 1.5, 0, 2] (unit 0 has t=-1, tz=2 -> L=0), divided by B = 2
    assert stats["loss"] == pytest.approx(2 * (1.5 + 2) / 2 / 8)


STEP_CASES = [(rule, values, scale) for rule in rules.STEP_RULES
              if rules.has_layer_loss("step", rule)
              for values in ("pm1", "01") for scale in (True, False)]
STAIR_CASES = [(rule, k, scale) for rule in rules.STAIRCASE_RULES
               if rules.has_layer_loss("staircase", rule)
               for k in (3, 5) for scale in (True, False)]


def _loss_gradient_matches_backward(unit, z, g):
    """d/dz of sum(w * L(z, t)) (the diagnostics' loss) equals the unit's backward."""
    zz = z.clone().requires_grad_(True)
    unit(zz).backward(g)
    t = R.target(g)
    zd = z.clone().requires_grad_(True)
    _, loss = window_and_loss(unit, zd, t)
    weighted = unit.grad_scale or unit.rule in rules.ESTIMATOR_RULES
    width = 1.0 if isinstance(unit, ftprop_cuda.Step) else unit.hi - unit.lo
    w = g.abs() if weighted else (t != 0).double() / (z.shape[0] * width)
    (w * loss).sum().backward()
    torch.testing.assert_close(zd.grad, zz.grad, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("rule,values,scale", STEP_CASES)
def test_step_loss_is_the_backwards_loss(rule, values, scale):
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(8, 50, dtype=torch.float64, generator=gen) * 2
    g = torch.randn(8, 50, dtype=torch.float64, generator=gen) * (torch.rand(8, 50, generator=gen) > 0.2)
    _loss_gradient_matches_backward(ftprop_cuda.Step(rule, values, scale, backend="reference"), z, g)


@pytest.mark.parametrize("rule,steps,scale", STAIR_CASES)
def test_staircase_loss_is_the_backwards_loss(rule, steps, scale):
    gen = torch.Generator().manual_seed(1)
    z = torch.rand(8, 50, dtype=torch.float64, generator=gen) * 3 - 1.5
    g = torch.randn(8, 50, dtype=torch.float64, generator=gen) * (torch.rand(8, 50, generator=gen) > 0.2)
    unit = ftprop_cuda.Staircase(steps, -0.5, 1.5, rule, scale, backend="reference")
    _loss_gradient_matches_backward(unit, z, g)


def test_free_when_off_and_nothing_recorded_without_grad():
    model = build_model("convnet4", in_channels=1, image_size=8)
    units = [m for m in model.modules() if isinstance(m, ftprop_cuda.Step)]
    assert not any(u._forward_hooks for u in units)
    diag = Diagnostics(model)
    assert all(u._forward_hooks for u in units)
    with torch.no_grad():
        model(torch.randn(4, 1, 8, 8))
    assert diag.summary() == {}
    diag.remove()
    assert not any(u._forward_hooks for u in units)


def test_gradients_unchanged_by_diagnostics():
    z = torch.randn(4, 30)
    g = torch.randn(4, 30)
    unit = ftprop_cuda.Step(rule="soft_hinge")
    plain = z.clone().requires_grad_(True)
    unit(plain).backward(g)
    _, dz = run_layer(unit, z, g)
    assert torch.equal(dz, plain.grad)
