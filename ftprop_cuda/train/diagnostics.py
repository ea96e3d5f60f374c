"""Per-layer diagnostics of hard-threshold units, gathered alongside the backward pass.

For every Step/Staircase module, each training batch contributes (z = the unit's input, y = its
output, g = the gradient arriving at y, t = -sign(g) the target of docs/spec.md):

  has_target  fraction of units with t != 0
  disagree    fraction whose target asks for a move the output can still make: t > 0 below the
              top level, or t < 0 above the bottom level (for a step unit: t != 0 and t != y's
              side, i.e. the target disagrees with the current output)
  in_window   fraction where the rule's slope s(z, t) is non-zero (the unit passes a gradient)
  loss        mean over units of w * L(z, t): the layer loss whose gradient the backward pass
              applies, with w = |g| in the weighted mode (grad_scale=True, and always for ste)
              and w = [t != 0] / B in the unweighted one (/ (B (hi - lo)) for a staircase, as
              the contract's unweighted staircase slope); None for the rules that are
              not losses (sste, ramp); ste counts as the linear loss -t z. The losses are
              the registry's (ftprop_cuda/ops/rules.py)

All four are fractions/means over every unit of every training example of the epoch. Nothing
is registered unless a Diagnostics object is created, so the feature costs nothing when off.
"""
import math

import torch

from ..ops import reference as R
from ..ops import rules
from ..ops.nn import Staircase, Step

FIELDS = ("has_target", "disagree", "in_window", "loss")


def hard_threshold_units(model):
    """(name, module) of every Step/Staircase module in model."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, (Step, Staircase))]


def _level_range(unit):
    if isinstance(unit, Step):
        return (0.0 if unit.values == "01" else -1.0), 1.0
    return unit.lo, unit.hi


def _family(unit):
    return "step" if isinstance(unit, Step) else "staircase"


def has_layer_loss(unit):
    """Whether the unit's rule is a loss (the estimators sste and ramp are not)."""
    return rules.has_layer_loss(_family(unit), unit.rule)


def window_and_loss(unit, z, t):
    """(in_window bool tensor, per-unit loss L(z, t) or None) for one unit module (op-math z, t)."""
    loss = rules.get(_family(unit), unit.rule).loss
    if isinstance(unit, Step):
        in_window = R.step_slope(z, t, unit.rule, unit.values) != 0
        return in_window, None if loss is None else loss(z, t)
    # a staircase's slope does not depend on t: the weighted backward of g = 1 is the slope
    k, lo, hi = unit.steps, unit.lo, unit.hi
    in_window = R.staircase_backward(torch.ones_like(z), z, k, lo, hi, unit.rule) != 0
    return in_window, None if loss is None else loss(z, t, k, lo, hi)


class Diagnostics:
    """Registers hooks on model's hard-threshold units and accumulates the FIELDS per layer.

    diag = Diagnostics(model); ...train...; stats = diag.summary(); diag.reset()
    summary(all_reduce=fn) lets a distributed run sum the raw counts across ranks first.
    """

    def __init__(self, model):
        self.units = hard_threshold_units(model)
        self._sums = {}
        self._handles = [m.register_forward_hook(self._forward_hook(name))
                         for name, m in self.units]

    def _forward_hook(self, name):
        def hook(module, inputs, output):
            if not (torch.is_grad_enabled() and output.requires_grad):
                return
            z, y = inputs[0].detach(), output.detach()
            output.register_hook(lambda g: self._record(name, module, z, y, g))
        return hook

    @torch.no_grad()
    def _record(self, name, unit, z, y, g):
        op = R.opmath_dtype(z.dtype)
        zf, yf, gf = z.to(op), y.to(op), g.to(op)
        t = R.target(gf)
        lo, hi = _level_range(unit)
        in_window, loss = window_and_loss(unit, zf, t)
        if loss is not None:
            # the estimator rules ignore grad_scale: their backward always scales by g
            weighted = unit.grad_scale or unit.rule in rules.ESTIMATOR_RULES
            if weighted:
                weight = gf.abs()
            else:
                # the unweighted staircase slope carries 1 / (hi - lo) from the rescaling to u
                scale = R.batch_size(z) * (1.0 if isinstance(unit, Step) else unit.hi - unit.lo)
                weight = (t != 0).to(op) / scale
            loss_sum = (weight * loss).sum()
        else:
            loss_sum = torch.zeros((), dtype=op, device=z.device)
        disagree = ((t > 0) & (yf < hi)) | ((t < 0) & (yf > lo))
        row = torch.stack([
            torch.full((), float(z.numel()), dtype=op, device=z.device),
            (t != 0).sum().to(op), disagree.sum().to(op), in_window.sum().to(op), loss_sum,
        ]).to(torch.float64)
        if name in self._sums:
            self._sums[name] += row
        else:
            self._sums[name] = row
        return None  # leave the gradient unchanged

    def reset(self):
        self._sums = {}

    def summary(self, all_reduce=None):
        """{layer name: {field: value}}; value None where undefined. Empty if nothing recorded."""
        if not self.units:
            return {}
        device = next(iter(self._sums.values())).device if self._sums else torch.device("cpu")
        table = torch.stack([self._sums.get(name, torch.zeros(5, dtype=torch.float64, device=device))
                             for name, _ in self.units])
        if all_reduce is not None:
            table = all_reduce(table)
        out = {}
        for (name, unit), (count, has, disagree, window, loss) in zip(self.units, table.tolist()):
            if count == 0:
                continue
            mean_loss = loss / count if has_layer_loss(unit) else None
            out[name] = {
                "has_target": has / count,
                "disagree": disagree / count,
                "in_window": window / count,
                "loss": mean_loss if mean_loss is None or math.isfinite(mean_loss) else None,
            }
        return out

    def remove(self):
        for handle in self._handles:
            handle.remove()
        self._handles = []


__all__ = ["Diagnostics", "FIELDS", "hard_threshold_units", "has_layer_loss", "window_and_loss"]
