"""The networks of the paper's experiments, each with its hidden nonlinearity as a parameter.

    model = build_model("convnet4", nonlin="step", rule="soft_hinge", num_classes=10,
                        in_channels=1, image_size=28)

    registry.py            Architecture records (ARCHITECTURES, ARCHS, architecture) and the
                           factory (build_model, build_model_with_notes, MEMORY_MODES)
    units.py               the nonlinearity names (NONLINS) and make_unit; no torch on import
    activations.py         ThresholdReLU
    convnets.py, alexnet.py, resnet.py   the paper's networks
    torchvision_models.py  `torchvision:NAME`: any torchvision classifier, converted
    conversion.py          convert(): units in place of any model's ReLU-like modules

The names below are loaded on first use (PEP 562): importing this package does not import
torch, and neither do the registry and the unit names.
"""
import importlib

# public name -> the submodule that defines it
_LAZY = {
    "TORCHVISION_PREFIX": ".registry", "Architecture": ".registry",
    "ARCHITECTURES": ".registry", "ARCHS": ".registry", "architecture": ".registry",
    "MEMORY_MODES": ".registry", "build_model": ".registry",
    "build_model_with_notes": ".registry",
    "NONLINS": ".units", "ALL_RULES": ".units", "make_unit": ".units",
    "supported_rules": ".units", "is_hard_threshold": ".units", "check_unit_args": ".units",
    "ThresholdReLU": ".activations", "ConvNet4": ".convnets", "ConvNet8": ".convnets",
    "AlexNet": ".alexnet", "ResNet18": ".resnet",
}


def __getattr__(name):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "ARCHS", "ARCHITECTURES", "Architecture", "MEMORY_MODES", "architecture", "NONLINS", "ALL_RULES",
    "build_model", "build_model_with_notes", "make_unit", "supported_rules", "is_hard_threshold",
    "ThresholdReLU", "ConvNet4", "ConvNet8", "AlexNet", "ResNet18",
]
