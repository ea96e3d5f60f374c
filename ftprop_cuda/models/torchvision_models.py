"""Any torchvision classification model, built by name (no weights) and converted to units.

    model, lines = build_torchvision("resnet18", nonlin="step", num_classes=10, in_channels=1,
                                     image_size=28)

What is adapted to the data is said in the returned lines: the first convolution's input
channels, the class count (torchvision's num_classes), and, for images smaller than the model
can take, an Upsample in front of it. Upsampling rather than changing strides keeps the
architecture torchvision's: the smallest working size is found by a dry forward.
"""
from __future__ import annotations

import numbers

import torch

from .activations import ThresholdReLU
from .conversion import convert
from .units import NONLINS, check_unit_args, is_hard_threshold

# Sizes tried, in order, when the data's images are too small for the model.
UPSAMPLE_SIZES = (32, 64, 75, 96, 128, 160, 224, 299)


def _torchvision():
    try:
        import torchvision
    except ImportError as exc:
        raise ValueError(f"arch torchvision:NAME needs torchvision, which failed to import "
                         f"({exc}); install the torchvision that matches your torch") from None
    return torchvision


def classification_models() -> list:
    """The names torchvision's classification builders answer to."""
    tv = _torchvision()
    return sorted(tv.models.list_models(module=tv.models))


def _first_conv(model):
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Conv2d):
            return name, module
    return None, None


def _replace(model, name, new):
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attr, new)


def _adapt_channels(model, in_channels, lines):
    name, conv = _first_conv(model)
    if conv is None:
        raise ValueError("the model has no Conv2d to adapt to the input channels")
    if conv.in_channels == in_channels:
        return
    if conv.groups != 1:
        raise ValueError(f"cannot adapt {name} (groups={conv.groups}) to {in_channels} channels")
    new = torch.nn.Conv2d(in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                          conv.padding, conv.dilation, bias=conv.bias is not None,
                          padding_mode=conv.padding_mode)
    _replace(model, name, new)
    lines.append(f"first convolution {name}: {conv.in_channels} -> {in_channels} input channels")


def _forward_fails(model, in_channels, size):
    """None if a 1-image batch of size x size goes through the model, else the error's line."""
    x = torch.zeros(1, in_channels, size, size)
    was_training = model.training
    model.eval()  # batch norm cannot take a 1-image batch in training mode
    try:
        with torch.no_grad():
            model(x)
        return None
    except (RuntimeError, ValueError) as exc:
        return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
    finally:
        model.train(was_training)


def build_torchvision(name: str, nonlin: str = "step", rule: str = "soft_hinge",
                      grad_scale: bool = True, backend: str = "auto", num_classes: int = 10,
                      in_channels: int = 3, image_size: int = 224
                      ) -> tuple[torch.nn.Module, list]:
    """torchvision's `name` (weights=None) fitted to the data and converted; (model, lines).

    nonlin is one of the trainer's NONLINS: the hard-threshold ones convert the model's
    ReLU-like activation modules (ftprop_cuda.convert), 'threshrelu' puts ThresholdReLU in
    their place, 'relu' keeps torchvision's own activations.
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a torchvision model name; got {type(name).__name__}")
    check_unit_args(nonlin, rule, grad_scale, backend)
    for arg, value in (("num_classes", num_classes), ("in_channels", in_channels),
                       ("image_size", image_size)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise ValueError(f"{arg} must be a positive integer; got {value!r}")
    tv = _torchvision()
    known = classification_models()
    if name not in known:
        raise ValueError(f"torchvision model must be one of torchvision's classification models "
                         f"({', '.join(known[:6])}, ... {len(known)} in all); got {name!r}")
    kwargs = {"weights": None, "num_classes": num_classes}
    if name in ("googlenet", "inception_v3"):
        kwargs["aux_logits"] = False  # the trainer wants one logits tensor per batch
    model = tv.models.get_model(name, **kwargs)
    lines = [f"torchvision {name} (no pretrained weights), classifier for {num_classes} classes"]
    _adapt_channels(model, in_channels, lines)

    why = _forward_fails(model, in_channels, image_size)
    if why is not None:
        for size in UPSAMPLE_SIZES:
            if size <= image_size:
                continue
            wrapped = torch.nn.Sequential(
                torch.nn.Upsample(size=(size, size), mode="bilinear", align_corners=False), model)
            if _forward_fails(wrapped, in_channels, image_size) is None:
                lines.append(f"input upsampled (bilinear) from {image_size}x{image_size} to "
                             f"{size}x{size}: at {image_size}x{image_size} the model fails ({why})")
                model = wrapped
                break
        else:
            raise ValueError(f"torchvision {name} cannot take {image_size}x{image_size} images, "
                             f"even upsampled to {UPSAMPLE_SIZES[-1]}: {why}")

    if is_hard_threshold(nonlin):
        model, report = convert(model, nonlin, rule, grad_scale, backend, inplace=True)
        lines += report.lines()
    elif nonlin == "threshrelu":
        model, report = convert(model, "step", inplace=True, check_functional=False)
        for r in report.replaced:
            for n in r.names:
                _replace(model, n, ThresholdReLU())
        lines.append(f"{len(report.replaced)} activation module(s) replaced by ThresholdReLU")
    else:
        lines.append("activations: torchvision's own (nonlin relu)")
    return model, lines


__all__ = ["build_torchvision", "classification_models", "NONLINS"]
