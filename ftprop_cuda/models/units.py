"""The hidden nonlinearities the paper's experiments compare, built by name."""
import torch

from .. import functional as F
from ..nn import Staircase, Step
from ..rules import ALL_RULES
from .nonlins import HARD_THRESHOLD, NONLINS, is_hard_threshold, rules_for

_MODULES = {"step": Step, "staircase": Staircase}


class ThresholdReLU(torch.nn.Module):
    """ReLU clamped at 1 (the full-precision counterpart of a 0..1 staircase)."""

    def forward(self, x):
        # relu then clamp, not clamp(0, 1): the derivative at exactly 0 is then 0, as ReLU's
        return torch.relu(x).clamp(max=1.0)


def supported_rules(nonlin):
    """The rules a nonlinearity accepts (all rule names for the full-precision ones, which ignore it)."""
    F.check_choice("nonlin", nonlin, NONLINS)
    return rules_for(nonlin)


def check_unit_args(nonlin, rule, grad_scale=True, backend="auto"):
    """Raises ValueError naming the argument for an unknown nonlin/rule or an unsupported pair."""
    F.check_choice("nonlin", nonlin, NONLINS)
    F.check_choice("rule", rule, ALL_RULES)
    F.check_bool("grad_scale", grad_scale)
    F.check_choice("backend", backend, F.BACKENDS)
    accepted = supported_rules(nonlin)
    if rule not in accepted:
        raise ValueError(
            f"rule {rule!r} is not supported by nonlin {nonlin!r}; it accepts: "
            f"{', '.join(accepted)}"
        )


def make_unit(nonlin, rule="soft_hinge", grad_scale=True, backend="auto"):
    """A fresh module for one hidden activation."""
    check_unit_args(nonlin, rule, grad_scale, backend)
    if nonlin == "relu":
        return torch.nn.ReLU()
    if nonlin == "threshrelu":
        return ThresholdReLU()
    family, fixed = HARD_THRESHOLD[nonlin]
    return _MODULES[family](rule=rule, grad_scale=grad_scale, backend=backend, **fixed)
