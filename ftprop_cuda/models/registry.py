"""The architecture registry and the model factory: the paper's networks, each with its hidden
nonlinearity as a parameter.

    model = build_model("convnet4", nonlin="step", rule="soft_hinge", num_classes=10,
                        in_channels=1, image_size=28)

Every architecture is one record of ARCHITECTURES (builder, batch-norm default, whether batch
norm is required, smallest image, description); `torchvision:NAME` names a torchvision model
(models/torchvision_models.py). Every builder gets a UnitSpec (models/units.py) that makes a
fresh unit when called. Importing this module does not import torch: the records and names are
plain data and the builders import the network classes when called.
"""
import dataclasses
import functools
import numbers

TORCHVISION_PREFIX = "torchvision:"


@dataclasses.dataclass(frozen=True)
class Architecture:
    """One architecture: build(unit, num_classes, in_channels, image_size, bn) -> (model, notes),
    where unit() makes a fresh hidden activation (a units.UnitSpec from build_model)."""
    name: str
    build: object
    default_bn: bool
    needs_bn: bool
    min_image_size: int
    description: str


def _convnet4(unit, num_classes, in_channels, image_size, bn):
    from .convnets import ConvNet4
    return ConvNet4(unit, num_classes=num_classes, in_channels=in_channels,
                    image_size=image_size, bn=bn), []


def _convnet8(unit, num_classes, in_channels, image_size, bn):
    from .convnets import ConvNet8
    return ConvNet8(unit, num_classes=num_classes, in_channels=in_channels,
                    image_size=image_size, bn=bn), []


def _alexnet(unit, num_classes, in_channels, image_size, bn):
    from .alexnet import AlexNet
    return AlexNet(unit, num_classes=num_classes, in_channels=in_channels,
                   image_size=image_size, bn=bn), []


def _resnet18(cifar_stem, unit, num_classes, in_channels, image_size, bn):
    from .resnet import ResNet18
    return ResNet18(unit, cifar_stem=cifar_stem, num_classes=num_classes,
                    in_channels=in_channels), []


def _torchvision(name, unit, num_classes, in_channels, image_size, bn):
    try:
        from . import torchvision_models
    except ImportError as exc:
        raise ValueError(f"arch {TORCHVISION_PREFIX}{name}: torchvision models are not "
                         f"available in this install ({exc})")
    # torchvision's models are converted by unit name rather than built around a factory
    return torchvision_models.build_torchvision(
        name, unit.nonlin, unit.rule, unit.grad_scale, unit.backend, num_classes=num_classes,
        in_channels=in_channels, image_size=image_size)


# The paper trains convnet4 without batch norm; its other networks use it, and the ResNets'
# residual blocks are defined with it.
ARCHITECTURES = {a.name: a for a in (
    Architecture("convnet4", _convnet4, False, False, 4,
                 "4-layer convnet of the paper (CIFAR-10, MNIST-size inputs)"),
    Architecture("convnet8", _convnet8, True, False, 20,
                 "8-layer convnet of the paper (CIFAR-10, SVHN)"),
    Architecture("alexnet", _alexnet, True, False, 67,
                 "AlexNet, DoReFa variant (ImageNet)"),
    Architecture("resnet18", functools.partial(_resnet18, False), True, True, 32,
                 "ResNet-18 with the ImageNet stem"),
    Architecture("resnet18_cifar", functools.partial(_resnet18, True), True, True, 8,
                 "ResNet-18 with a 3x3 stem for 32x32 images"),
)}
ARCHS = tuple(ARCHITECTURES)


def architecture(arch):
    """The record of a built-in architecture or of `torchvision:NAME`; ValueError otherwise."""
    if isinstance(arch, str) and arch in ARCHITECTURES:
        return ARCHITECTURES[arch]
    if isinstance(arch, str) and arch.startswith(TORCHVISION_PREFIX) \
            and len(arch) > len(TORCHVISION_PREFIX):
        name = arch[len(TORCHVISION_PREFIX):]
        # torchvision networks bring their own normalisation layers; the unit replaces their ReLUs
        return Architecture(arch, functools.partial(_torchvision, name), True, False, 1,
                            f"torchvision's {name}")
    raise ValueError(f"arch must be one of {', '.join(ARCHS)} or {TORCHVISION_PREFIX}NAME; "
                     f"got {arch!r}")


def _check_positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer; got {value!r}")


# What a training forward keeps for the backward: "lean" rebuilds unit outputs, batch-norm
# outputs and max-pool indices in the backward, bitwise (ftprop_cuda.memory.lean); "standard"
# keeps what every layer saves.
MEMORY_MODES = ("lean", "standard")


def build_model_with_notes(arch, nonlin="step", rule="soft_hinge", grad_scale=True,
                           num_classes=10, in_channels=3, image_size=32, bn=True, backend="auto",
                           memory="lean"):
    """build_model's network and a list of lines about how it was built (empty for most)."""
    from ..ops import functional as F
    from .units import UnitSpec, check_unit_args, is_hard_threshold

    record = architecture(arch)
    if rule is None and not is_hard_threshold(nonlin):
        rule = "soft_hinge"  # full-precision units have no rule; make_unit ignores this one
    check_unit_args(nonlin, rule, grad_scale, backend)
    _check_positive_int("num_classes", num_classes)
    _check_positive_int("in_channels", in_channels)
    _check_positive_int("image_size", image_size)
    F.check_bool("bn", bn)
    F.check_choice("memory", memory, MEMORY_MODES)
    if record.needs_bn and not bn:
        raise ValueError(f"bn=False is not supported for arch {arch!r}: it needs batch norm")
    if image_size < record.min_image_size:
        raise ValueError(f"image_size must be at least {record.min_image_size} for {arch}; "
                         f"got {image_size}")
    unit = UnitSpec(nonlin, rule, grad_scale, backend)
    model, notes = record.build(unit, num_classes, in_channels, image_size, bn)
    if memory == "lean":
        from ..memory import lean
        lean(model)
    return model, notes


def build_model(arch, nonlin="step", rule="soft_hinge", grad_scale=True, num_classes=10,
                in_channels=3, image_size=32, bn=True, backend="auto", memory="lean"):
    """One of ARCHS (or `torchvision:NAME`) with every hidden activation a fresh `nonlin` unit.

    rule and grad_scale set the hard-threshold units' backward (rule names of docs/spec.md;
    ignored by 'relu' and 'threshrelu', for which rule may be None); backend is the ops'
    backend. memory: 'lean' (default) keeps far less for the backward with bitwise-identical
    results (ftprop_cuda.lean), 'standard' keeps what each layer saves. Raises ValueError
    naming the bad argument.
    """
    return build_model_with_notes(arch, nonlin, rule, grad_scale, num_classes, in_channels,
                                  image_size, bn, backend, memory)[0]


__all__ = ["TORCHVISION_PREFIX", "Architecture", "ARCHITECTURES", "ARCHS", "architecture",
           "MEMORY_MODES", "build_model_with_notes", "build_model"]
