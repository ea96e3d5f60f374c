"""nn.Module wrappers of the ops, for dropping hard-threshold units into a model."""
import torch

from . import functional as F
from .reference import STEP_VALUES
from .rules import STAIRCASE_RULES, STEP_RULES


class Step(torch.nn.Module):
    """Step unit: sign (values='pm1') or Heaviside (values='01') forward, FTPROP backward."""

    def __init__(self, rule: str = "soft_hinge", values: str = "pm1", grad_scale: bool = True,
                 backend: str = "auto", save: str = "auto") -> None:
        super().__init__()
        self.rule = F.check_choice("rule", rule, STEP_RULES)
        self.values = F.check_choice("values", values, STEP_VALUES)
        self.grad_scale = F.check_bool("grad_scale", grad_scale)
        self.backend = F.check_choice("backend", backend, F.BACKENDS)
        self.save = F.check_choice("save", save, F.SAVE_MODES)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if not self.training and F.exporting():  # an eval model exports with aten ops only
            return F.step_export(z, self.values)
        return F.step(z, self.rule, self.values, self.grad_scale, self.backend, self.save)

    def extra_repr(self):
        return (
            f"rule={self.rule!r}, values={self.values!r}, grad_scale={self.grad_scale}, "
            f"backend={self.backend!r}, save={self.save!r}"
        )


class Staircase(torch.nn.Module):
    """Staircase (quantized ReLU) unit with steps + 1 levels on [lo, hi], FTPROP backward."""

    def __init__(self, steps: int = 3, lo: float = 0.0, hi: float = 1.0,
                 rule: str = "soft_hinge", grad_scale: bool = True, backend: str = "auto",
                 save: str = "auto") -> None:
        super().__init__()
        self.steps, self.lo, self.hi = F.check_staircase_args(steps, lo, hi)
        self.rule = F.check_choice("rule", rule, STAIRCASE_RULES)
        self.grad_scale = F.check_bool("grad_scale", grad_scale)
        self.backend = F.check_choice("backend", backend, F.BACKENDS)
        self.save = F.check_choice("save", save, F.SAVE_MODES)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if not self.training and F.exporting():
            return F.staircase_export(z, self.steps, self.lo, self.hi)
        return F.staircase(z, self.steps, self.lo, self.hi, self.rule, self.grad_scale,
                           self.backend, self.save)

    def extra_repr(self):
        return (
            f"steps={self.steps}, lo={self.lo}, hi={self.hi}, rule={self.rule!r}, "
            f"grad_scale={self.grad_scale}, backend={self.backend!r}, save={self.save!r}"
        )
