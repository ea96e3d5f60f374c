"""The networks of the paper's experiments, each with its hidden nonlinearity as a parameter.

    model = build_model("convnet4", nonlin="step", rule="soft_hinge", num_classes=10,
                        in_channels=1, image_size=28)
"""
import functools
import numbers

from .. import functional as F
from .alexnet import AlexNet
from .convnets import ConvNet4, ConvNet8
from .resnet import ResNet18
from .units import ALL_RULES, NONLINS, ThresholdReLU, check_unit_args, is_hard_threshold, make_unit
from .units import supported_rules

ARCHS = ("convnet4", "convnet8", "alexnet", "resnet18", "resnet18_cifar")


def _check_positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer; got {value!r}")


def build_model(arch, nonlin="step", rule="soft_hinge", grad_scale=True, num_classes=10,
                in_channels=3, image_size=32, bn=True, backend="auto"):
    """One of ARCHS with every hidden activation a fresh `nonlin` unit (one of NONLINS).

    rule and grad_scale set the hard-threshold units' backward (SPEC names; ignored by 'relu'
    and 'threshrelu'); backend is the ops' backend. Raises ValueError naming the bad argument.
    """
    F.check_choice("arch", arch, ARCHS)
    check_unit_args(nonlin, rule, grad_scale, backend)
    _check_positive_int("num_classes", num_classes)
    _check_positive_int("in_channels", in_channels)
    _check_positive_int("image_size", image_size)
    F.check_bool("bn", bn)
    unit = functools.partial(make_unit, nonlin, rule, grad_scale, backend)
    kw = dict(num_classes=num_classes, in_channels=in_channels)
    if arch == "convnet4":
        return ConvNet4(unit, image_size=image_size, bn=bn, **kw)
    if arch == "convnet8":
        return ConvNet8(unit, image_size=image_size, bn=bn, **kw)
    if arch == "alexnet":
        return AlexNet(unit, image_size=image_size, bn=bn, **kw)
    if not bn:
        raise ValueError(f"bn=False is not supported for arch {arch!r}: ResNets need batch norm")
    if arch == "resnet18_cifar" and image_size < 8:
        raise ValueError(f"image_size must be at least 8 for resnet18_cifar; got {image_size}")
    if arch == "resnet18" and image_size < 32:
        raise ValueError(f"image_size must be at least 32 for resnet18; got {image_size}")
    return ResNet18(unit, cifar_stem=arch == "resnet18_cifar", **kw)


__all__ = [
    "ARCHS", "NONLINS", "ALL_RULES", "build_model", "make_unit", "supported_rules",
    "is_hard_threshold", "ThresholdReLU", "ConvNet4", "ConvNet8", "AlexNet", "ResNet18",
]
