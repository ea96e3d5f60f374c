"""The paper's architectures: layer layout, unit placement, argument checks."""
import pytest
import torch

import ftprop_cuda
from ftprop_cuda.models import ARCHS, NONLINS, ThresholdReLU, build_model

# (arch, image size) pairs small enough for CPU tests; alexnet/resnet18 use ImageNet's 224
SIZES = {"convnet4": 28, "convnet8": 32, "alexnet": 224, "resnet18": 224, "resnet18_cifar": 32}
# hidden activations per architecture (resnet18: stem + 2 per basic block x 8 blocks)
N_UNITS = {"convnet4": 3, "convnet8": 7, "alexnet": 7, "resnet18": 17, "resnet18_cifar": 17}


def units(model, cls):
    return [m for m in model.modules() if isinstance(m, cls)]


def test_exported_names():
    assert ARCHS == ("convnet4", "convnet8", "alexnet", "resnet18", "resnet18_cifar")
    assert NONLINS == ("step", "step01", "qrelu", "qrelu5", "relu", "threshrelu")


@pytest.mark.parametrize("arch", ARCHS)
def test_forward_backward_and_unit_count(arch):
    torch.manual_seed(0)
    size = SIZES[arch]
    model = build_model(arch, "step", "soft_hinge", num_classes=7, in_channels=3, image_size=size)
    assert len(units(model, ftprop_cuda.Step)) == N_UNITS[arch]
    model.train()
    out = model(torch.randn(2, 3, size, size))
    assert out.shape == (2, 7)
    out.square().sum().backward()
    first = next(model.parameters())
    # the surrogate gradient reaches the first layer through every hard-threshold unit
    assert first.grad is not None and first.grad.abs().sum() > 0


@pytest.mark.parametrize("nonlin,cls,attrs", [
    ("step", ftprop_cuda.Step, {"values": "pm1"}),
    ("step01", ftprop_cuda.Step, {"values": "01"}),
    ("qrelu", ftprop_cuda.Staircase, {"steps": 3, "lo": 0.0, "hi": 1.0}),
    ("qrelu5", ftprop_cuda.Staircase, {"steps": 5}),
    ("relu", torch.nn.ReLU, {}),
    ("threshrelu", ThresholdReLU, {}),
])
def test_nonlin_names_build_the_right_units(nonlin, cls, attrs):
    rule = "sste"
    model = build_model("convnet8", nonlin, rule, grad_scale=False, backend="reference")
    found = units(model, cls)
    assert len(found) == N_UNITS["convnet8"]
    for unit in found:
        for key, value in attrs.items():
            assert getattr(unit, key) == value
        if cls in (ftprop_cuda.Step, ftprop_cuda.Staircase):
            assert (unit.rule, unit.grad_scale, unit.backend) == (rule, False, "reference")
    others = {ftprop_cuda.Step, ftprop_cuda.Staircase, torch.nn.ReLU, ThresholdReLU} - {cls}
    assert not any(units(model, c) for c in others)


def test_threshrelu_values_and_gradient():
    x = torch.tensor([-1.0, 0.0, 0.5, 0.75, 1.0, 2.0], requires_grad=True)
    y = ThresholdReLU()(x)
    assert y.tolist() == [0.0, 0.0, 0.5, 0.75, 1.0, 1.0]
    y.sum().backward()
    assert x.grad.tolist()[:4] == [0.0, 0.0, 1.0, 1.0] and x.grad[5] == 0


def test_convnet4_layout():
    layers = build_model("convnet4", bn=True, in_channels=1, image_size=28).layers
    kinds = [type(m).__name__ for m in layers]
    assert kinds == ["Conv2d", "MaxPool2d", "Step", "Conv2d", "MaxPool2d", "Step", "BatchNorm2d",
                     "Flatten", "Linear", "Step", "BatchNorm1d", "Linear"]
    assert (layers.conv1.kernel_size, layers.conv1.padding, layers.conv1.out_channels) == ((5, 5), (3, 3), 32)
    assert (layers.conv2.kernel_size, layers.conv2.padding, layers.conv2.out_channels) == ((5, 5), (2, 2), 64)
    assert layers.fc1.in_features == 7 * 7 * 64 and layers.fc1.out_features == 1024
    no_bn = build_model("convnet4", bn=False, image_size=32).layers
    assert not units(no_bn, torch.nn.modules.batchnorm._BatchNorm)
    assert no_bn.fc1.in_features == 8 * 8 * 64


@pytest.mark.parametrize("size,pad0,last_kernel", [(32, 2, 4), (40, 0, 5)])
def test_convnet8_matches_dorefa_svhn_net(size, pad0, last_kernel):
    layers = build_model("convnet8", image_size=size).layers
    assert layers.conv0.padding == (pad0, pad0) and layers.conv0.out_channels == 48
    assert layers.conv6.kernel_size == (last_kernel, last_kernel)
    assert [getattr(layers, f"conv{i}").out_channels for i in range(7)] == [48, 64, 64, 128, 128, 128, 512]
    assert [getattr(layers, f"conv{i}").padding[0] for i in range(1, 6)] == [1, 1, 0, 1, 0]
    bns = units(layers, torch.nn.BatchNorm2d)
    assert len(bns) == 6 and all(bn.eps == 1e-4 for bn in bns)
    assert isinstance(layers.dropout, torch.nn.Dropout2d)
    assert layers.conv1.bias is None  # conv before BN has no bias
    kinds = [type(m).__name__ for m in layers]
    assert kinds == ["Conv2d", "MaxPool2d", "Step",
                     "Conv2d", "BatchNorm2d", "Step",
                     "Conv2d", "BatchNorm2d", "MaxPool2d", "Step",
                     "Conv2d", "BatchNorm2d", "Step",
                     "Conv2d", "BatchNorm2d", "Step",
                     "Conv2d", "BatchNorm2d", "Step",
                     "Dropout2d", "Conv2d", "BatchNorm2d", "Step",
                     "Flatten", "Linear"]


def test_alexnet_is_the_dorefa_variant():
    model = build_model("alexnet", num_classes=1000, image_size=224)
    layers = model.layers
    assert layers.conv0.kernel_size == (12, 12) and layers.conv0.stride == (4, 4)
    assert layers.fc0.in_features == 256 * 6 * 6
    assert [getattr(layers, f"conv{i}").out_channels for i in range(5)] == [96, 256, 384, 384, 256]
    bns = units(model, torch.nn.modules.batchnorm._BatchNorm)
    assert len(bns) == 6 and all(bn.eps == 1e-4 for bn in bns)
    assert layers.fc2.out_features == 1000


def test_resnet18_has_torchvision_layout():
    torchvision = pytest.importorskip("torchvision")
    ours = build_model("resnet18", num_classes=1000, image_size=224)
    theirs = torchvision.models.resnet18(weights=None)
    assert {k: v.shape for k, v in ours.state_dict().items()} == \
           {k: v.shape for k, v in theirs.state_dict().items()}
    cifar = build_model("resnet18_cifar", num_classes=10)
    assert cifar.conv1.kernel_size == (3, 3) and isinstance(cifar.maxpool, torch.nn.Identity)


@pytest.mark.parametrize("kwargs,name", [
    (dict(arch="vgg"), "arch"),
    (dict(arch="convnet4", nonlin="tanh"), "nonlin"),
    (dict(arch="convnet4", rule="nope"), "rule"),
    (dict(arch="convnet4", nonlin="qrelu", rule="hinge"), "rule"),
    (dict(arch="convnet4", nonlin="qrelu5", rule="ramp"), "rule"),
    (dict(arch="convnet4", backend="gpu"), "backend"),
    (dict(arch="convnet4", num_classes=0), "num_classes"),
    (dict(arch="convnet4", image_size=1), "image_size"),
    (dict(arch="alexnet", image_size=32), "image_size"),
    (dict(arch="resnet18", bn=False), "bn"),
])
def test_bad_arguments_raise_value_error_naming_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=name):
        build_model(**kwargs)


def test_relu_ignores_rule_but_accepts_every_known_rule():
    for rule in ftprop_cuda.STEP_RULES + ftprop_cuda.STAIRCASE_RULES:
        assert units(build_model("convnet4", "relu", rule), torch.nn.ReLU)
