"""The hidden nonlinearities the paper's experiments compare, built by name."""
import torch

from .. import functional as F
from ..nn import Staircase, Step
from ..rules import ALL_RULES, STAIRCASE_RULES, STEP_RULES

NONLINS = ("step", "step01", "qrelu", "qrelu5", "relu", "threshrelu")

# name -> (module class, constructor kwargs fixed by the name)
_HARD_THRESHOLD = {
    "step": (Step, {"values": "pm1"}),      # sign, +-1 (the paper's "step11")
    "step01": (Step, {"values": "01"}),     # Heaviside, 0/1
    "qrelu": (Staircase, {"steps": 3}),     # 2-bit quantized ReLU (released code: "staircase3")
    "qrelu5": (Staircase, {"steps": 5}),    # 6-level quantized ReLU (released code: "staircase"), ResNet-18
}


class ThresholdReLU(torch.nn.Module):
    """ReLU clamped at 1 (the full-precision counterpart of a 0..1 staircase)."""

    def forward(self, x):
        # relu then clamp, not clamp(0, 1): the derivative at exactly 0 is then 0, as ReLU's
        return torch.relu(x).clamp(max=1.0)


def is_hard_threshold(nonlin):
    return nonlin in _HARD_THRESHOLD


def supported_rules(nonlin):
    """The rules a nonlinearity accepts (all rule names for the full-precision ones, which ignore it)."""
    F.check_choice("nonlin", nonlin, NONLINS)
    if nonlin not in _HARD_THRESHOLD:
        return ALL_RULES
    cls, _ = _HARD_THRESHOLD[nonlin]
    return STEP_RULES if cls is Step else STAIRCASE_RULES


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
    cls, fixed = _HARD_THRESHOLD[nonlin]
    return cls(rule=rule, grad_scale=grad_scale, backend=backend, **fixed)
