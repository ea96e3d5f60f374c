"""The hidden nonlinearities by name: the one list of names, what each one is, and make_unit,
the one factory of their modules.

Importing this module does not import torch (the command line checks --nonlin before it
imports torch): make_unit imports the unit classes when called, and ThresholdReLU
(models/activations.py) is loaded on first use (PEP 562).
"""
import dataclasses
import importlib

from ..ops.rules import ALL_RULES, STAIRCASE_RULES, STEP_RULES

# hard-threshold name -> (unit family of ops/rules.py, constructor kwargs fixed by the name)
HARD_THRESHOLD = {
    "step": ("step", {"values": "pm1"}),      # sign, +-1 (the paper's "step11")
    "step01": ("step", {"values": "01"}),     # Heaviside, 0/1
    "qrelu": ("staircase", {"steps": 3}),     # 2-bit quantized ReLU (released code: "staircase3")
    "qrelu5": ("staircase", {"steps": 5}),    # 6-level quantized ReLU (released code: "staircase"), ResNet-18
}
# The full-precision baselines: torch's ReLU and ThresholdReLU (ReLU clamped at 1).
FULL_PRECISION = ("relu", "threshrelu")
# Every name a hidden activation can be given (build_model's and the trainer's --nonlin).
NONLINS = tuple(HARD_THRESHOLD) + FULL_PRECISION


def is_hard_threshold(nonlin):
    return nonlin in HARD_THRESHOLD


def rules_for(nonlin):
    """The rule names a known nonlinearity accepts (all names for the full-precision ones)."""
    if nonlin not in HARD_THRESHOLD:
        return ALL_RULES
    return STEP_RULES if HARD_THRESHOLD[nonlin][0] == "step" else STAIRCASE_RULES


def supported_rules(nonlin):
    """The rules a nonlinearity accepts (all rule names for the full-precision ones, which ignore it)."""
    from ..ops import functional as F

    F.check_choice("nonlin", nonlin, NONLINS)
    return rules_for(nonlin)


def check_unit_args(nonlin, rule, grad_scale=True, backend="auto"):
    """Raises ValueError naming the argument for an unknown nonlin/rule or an unsupported pair."""
    from ..ops import functional as F

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


def make_unit(nonlin, rule="soft_hinge", grad_scale=True, backend="auto", save="auto"):
    """A fresh module for one hidden activation named by one of NONLINS.

    A hard-threshold name gives a Step or Staircase unit with the name's fixed arguments; the
    unit checks rule, grad_scale, backend and save (ValueError/TypeError naming the argument).
    'relu' and 'threshrelu' give torch's ReLU and ThresholdReLU, after check_unit_args: they
    ignore the unit arguments.
    """
    from ..ops import functional as F

    F.check_choice("nonlin", nonlin, NONLINS)
    if nonlin in HARD_THRESHOLD:
        from ..ops.nn import Staircase, Step

        family, fixed = HARD_THRESHOLD[nonlin]
        unit_class = Step if family == "step" else Staircase
        return unit_class(rule=rule, grad_scale=grad_scale, backend=backend, save=save, **fixed)
    check_unit_args(nonlin, rule, grad_scale, backend)
    if nonlin == "relu":
        import torch

        return torch.nn.ReLU()
    from .activations import ThresholdReLU

    return ThresholdReLU()


@dataclasses.dataclass(frozen=True)
class UnitSpec:
    """What every hidden activation of a network is: calling the spec makes a fresh unit.

    The architectures' builders call it once per activation; builders that convert a ready
    network (torchvision's) read its fields instead.
    """
    nonlin: str
    rule: str = "soft_hinge"
    grad_scale: bool = True
    backend: str = "auto"

    def __call__(self):
        return make_unit(self.nonlin, self.rule, self.grad_scale, self.backend)


# torch-backed names, loaded on first use (PEP 562)
_LAZY = {"ThresholdReLU": ".activations"}


def __getattr__(name):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __package__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


__all__ = ["NONLINS", "HARD_THRESHOLD", "FULL_PRECISION", "ALL_RULES", "is_hard_threshold",
           "rules_for", "supported_rules", "check_unit_args", "make_unit", "UnitSpec",
           "ThresholdReLU"]
