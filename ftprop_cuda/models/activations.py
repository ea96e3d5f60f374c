"""The full-precision activation of the experiments that torch lacks (models/units.py names it)."""
import torch


class ThresholdReLU(torch.nn.Module):
    """ReLU clamped at 1 (the full-precision counterpart of a 0..1 staircase)."""

    def forward(self, x):
        # relu then clamp, not clamp(0, 1): the derivative at exactly 0 is then 0, as ReLU's
        return torch.relu(x).clamp(max=1.0)


__all__ = ["ThresholdReLU"]
