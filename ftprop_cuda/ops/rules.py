"""The rule registry: one record per (unit family, rule), read by every other layer.

Imports nothing but the standard library, so that a command line can list and check rule names
before it imports torch. The layer losses are written with tensor methods only for the same
reason; they take op-math tensors (docs/spec.md, "Precision").

Adding a rule: a record here, its slope in reference.py (step_slope / staircase_backward), its
per-element math and its entry in the C++ rule list (csrc), and its rows in docs/spec.md.
tests/test_rule_registry.py checks through the compiled ops that the C++ list agrees.
"""
from dataclasses import dataclass
from typing import Callable, Optional, Union

FAMILIES = ("step", "staircase")
LECUN_A = 1.7519

# The compact code of the smooth rules' slope: levels 0..254 of [0, slope_max], 255 for NaN.
COMPACT_LEVELS = 254


def _count_code_bits(steps):
    """saturated_hinge staircase: the threshold count c(u) in 0..K plus one value for NaN."""
    for bits in (2, 4, 8):
        if steps + 2 <= 1 << bits:
            return bits
    return None  # past 254 steps no code fits in a byte: z is saved instead


@dataclass(frozen=True)
class Rule:
    """One rule of one unit family.

    estimator: not a loss, so the backward ignores grad_scale and always scales by g.
    smooth: the slope varies continuously with z (saved as z, or as the 8-bit compact code with
      save='compact'); otherwise it only depends on which interval z lies in (a lossless code).
    bits: bits per element of the saved-state code, or a function of steps for the staircase's
      threshold count (see code_bits).
    slope_max: the rule's largest slope, the top level of the compact code.
    loss: the layer loss L whose |g|-weighted z-derivative is the backward, or None for the
      estimators that are no loss. Step: loss(z, t); staircase: loss(z, t, steps, lo, hi).
    """

    name: str
    family: str
    estimator: bool
    smooth: bool
    bits: Union[int, Callable[[int], Optional[int]]]
    slope_max: float
    loss: Optional[Callable]

    def code_bits(self, steps=None):
        """Bits per element of the saved-state code, or None where z must be saved."""
        return self.bits(steps) if callable(self.bits) else self.bits

    @property
    def has_layer_loss(self):
        return self.loss is not None


# ---- Layer losses (op-math tensors in, tensor out) -------------------------------------------
# ste is the weighted linear loss -t z in both families (docs/spec.md, "Identities").
def _linear_loss(z, t, *unit):
    return -t * z


def _step_soft_hinge(z, t):
    return (-t * z).tanh() + 1


def _step_saturated_hinge(z, t):
    return (1 - t * z).clamp(0, 2)


def _step_hinge(z, t):
    return (1 - t * z).clamp(min=0)


def _step_perceptron(z, t):
    return (-t * z).clamp(min=0)


def _step_sigmoid(z, t):
    return (-2 * t * z).sigmoid()


def _step_lecun_tanh(z, t):
    return LECUN_A * (-2 * t * z / 3).tanh() + 1


def _u(z, lo, hi):
    # divide by a 0-dim tensor, as reference.staircase_u does (a Python divisor can become a
    # multiplication by the reciprocal on CUDA)
    return (z - lo) / z.new_tensor(hi - lo)


# The staircase losses are written in u = (z - lo) / (hi - lo); their z-derivatives, weighted by
# |g|, are the staircase slopes of docs/spec.md.
def _stair_soft_hinge(z, t, steps, lo, hi):
    return ((hi - lo) / 2) * ((-t * (2 * _u(z, lo, hi) - 1)).tanh() + 1)


def _stair_saturated_hinge(z, t, steps, lo, hi):
    # one saturated hinge (margin 1, truncation 2, in units of K - 1) per threshold j / (K - 1),
    # j = 0..K-1, summed and scaled so that dL/dz = -t c(u) / (K (hi - lo))
    v = _u(z, lo, hi) * (steps - 1)
    j = z.new_tensor(range(steps)).view(-1, *([1] * z.dim()))
    per_threshold = (1 - t * (v - j) / (steps - 1)).clamp(0, 2)
    return ((hi - lo) / steps) * per_threshold.sum(0)


_SLOPE_MAX_LECUN = LECUN_A * 2 / 3

# Order matters: it is the order of STEP_RULES / STAIRCASE_RULES and of the C++ enums.
RULES = (
    Rule("ste", "step", True, False, 0, 1.0, _linear_loss),
    Rule("sste", "step", True, False, 1, 1.0, None),
    Rule("ramp", "step", True, True, 8, 1.0, None),
    Rule("soft_hinge", "step", False, True, 8, 1.0, _step_soft_hinge),
    Rule("saturated_hinge", "step", False, False, 2, 1.0, _step_saturated_hinge),
    Rule("hinge", "step", False, False, 2, 1.0, _step_hinge),
    Rule("perceptron", "step", False, False, 2, 1.0, _step_perceptron),
    Rule("sigmoid", "step", False, True, 8, 0.5, _step_sigmoid),
    Rule("lecun_tanh", "step", False, True, 8, _SLOPE_MAX_LECUN, _step_lecun_tanh),
    Rule("ste", "staircase", True, False, 0, 1.0, _linear_loss),
    Rule("sste", "staircase", True, False, 1, 1.0, None),
    Rule("soft_hinge", "staircase", False, True, 8, 1.0, _stair_soft_hinge),
    Rule("saturated_hinge", "staircase", False, False, _count_code_bits, 1.0,
         _stair_saturated_hinge),
)

_BY_KEY = {(r.family, r.name): r for r in RULES}


def rules_of(family):
    """The records of one unit family, in registry order."""
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {', '.join(map(repr, FAMILIES))}; got {family!r}")
    return tuple(r for r in RULES if r.family == family)


STEP_RULES = tuple(r.name for r in rules_of("step"))
STAIRCASE_RULES = tuple(r.name for r in rules_of("staircase"))
# Every rule name of either family, step order first (the command line's --rule choices).
ALL_RULES = tuple(dict.fromkeys(STEP_RULES + STAIRCASE_RULES))
ESTIMATOR_RULES = frozenset(r.name for r in RULES if r.estimator)
SMOOTH_STEP_RULES = frozenset(r.name for r in rules_of("step") if r.smooth)
SMOOTH_STAIRCASE_RULES = frozenset(r.name for r in rules_of("staircase") if r.smooth)


def get(family, name):
    """The record of rule `name` for `family`; ValueError listing the family's rules if none."""
    record = _BY_KEY.get((family, name))
    if record is None:
        accepted = [r.name for r in rules_of(family)]  # rules_of raises for an unknown family
        raise ValueError(f"{family} rule must be one of {', '.join(map(repr, accepted))}; "
                         f"got {name!r}")
    return record


def step_code_bits(name):
    """Bits per element of the step unit's saved-state code."""
    return get("step", name).code_bits()


def staircase_code_bits(name, steps):
    """Bits per element of the staircase's saved-state code, or None where z must be saved."""
    return get("staircase", name).code_bits(steps)


def has_layer_loss(family, name):
    """Whether the rule is a layer loss (ste counts as the linear loss; sste and ramp are not)."""
    return get(family, name).has_layer_loss


__all__ = [
    "Rule", "RULES", "FAMILIES", "LECUN_A", "COMPACT_LEVELS",
    "STEP_RULES", "STAIRCASE_RULES", "ALL_RULES", "ESTIMATOR_RULES",
    "SMOOTH_STEP_RULES", "SMOOTH_STAIRCASE_RULES",
    "rules_of", "get", "step_code_bits", "staircase_code_bits", "has_layer_loss",
]
