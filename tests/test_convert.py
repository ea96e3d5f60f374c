"""ftprop_cuda.convert on torchvision models and small ones; build_torchvision."""
import copy

import pytest
import torch

import ftprop_cuda
from ftprop_cuda import Staircase, Step
from ftprop_cuda.models.conversion import DEFAULT_TYPES, convert

torchvision = pytest.importorskip("torchvision")
from ftprop_cuda.models.torchvision_models import build_torchvision  # noqa: E402

TORCHVISION = ("resnet18", "vgg11_bn", "mobilenet_v2")


def relu_like(model):
    return [n for n, m in model.named_modules() if isinstance(m, DEFAULT_TYPES)]


def hand_converted(model, make):
    """Every ReLU-like module replaced by setattr, one unit per module object."""
    model = copy.deepcopy(model)
    units = {}
    for _, parent in list(model.named_modules()):
        for attr, child in list(parent.named_children()):
            if isinstance(child, DEFAULT_TYPES):
                setattr(parent, attr, units.setdefault(id(child), make()))
    return model


@pytest.mark.parametrize("name", TORCHVISION)
def test_torchvision_models_convert_and_train(name):
    torch.manual_seed(0)
    original = torchvision.models.get_model(name, weights=None, num_classes=3)
    before = relu_like(original)
    assert before
    model, report = convert(original, nonlin="step", rule="saturated_hinge")
    assert relu_like(model) == []
    assert relu_like(original) == before  # inplace=False converted a copy
    assert sorted(n for r in report.replaced for n in r.names) == sorted(before)
    assert report.functional_check == "checked with torch.fx: none found"
    units = [m for m in model.modules() if isinstance(m, Step)]
    assert len(units) == len(report.replaced) and all(u.rule == "saturated_hinge" for u in units)

    x = torch.randn(2, 3, 32, 32)
    hand = hand_converted(original, lambda: Step(rule="saturated_hinge"))
    with torch.no_grad():
        assert torch.equal(model.eval()(x), hand.eval()(x))

    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    first = next(p for p in model.parameters() if p.dim() == 4)
    start = first.detach().clone()
    loss = torch.nn.functional.cross_entropy(model(x), torch.tensor([0, 2]))
    loss.backward()
    assert torch.isfinite(loss)
    assert first.grad is not None and first.grad.abs().sum() > 0
    optimizer.step()
    assert not torch.equal(first.detach(), start)


def test_resnet_block_relu_is_one_shared_unit_used_twice():
    model, report = convert(torchvision.models.resnet18(weights=None, num_classes=2))
    block = report.replaced[1]
    assert block.names == ["layer1.0.relu"] and block.calls == 2
    assert "used at 2 places: one unit, shared" in str(block)
    assert isinstance(model.layer1[0].relu, Step)


class Small(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = torch.nn.Linear(4, 6)
        self.act = torch.nn.ReLU()
        self.alias = self.act  # the same module object under two names
        self.fc2 = torch.nn.Linear(6, 6)
        self.head = torch.nn.Sequential(torch.nn.Linear(6, 3), torch.nn.LeakyReLU(0.1),
                                        torch.nn.SiLU())

    def forward(self, x):
        h = self.alias(self.fc1(x))
        h = torch.nn.functional.relu(self.fc2(self.act(h)))
        return self.head(h).relu()


def test_shared_module_functional_calls_and_left_alone():
    model, report = convert(Small(), nonlin="qrelu", rule="sste", save="z", inplace=True)
    assert model.act is model.alias and isinstance(model.act, Staircase)
    assert (model.act.steps, model.act.rule, model.act.save) == (3, "sste", "z")
    assert report.replaced[0].names == ["act", "alias"]
    assert [u.split(":")[1].strip() for u in report.unconverted] == ["relu(...)",
                                                                     "Tensor.relu()"]
    assert [name for name, _ in report.left_alone] == ["head.2"]  # SiLU is not replaced
    text = str(report)
    assert "not converted (2 functional calls" in text and "head.2: SiLU()" in text


def test_types_and_name_filters():
    model, report = convert(Small(), types=(torch.nn.SiLU,), nonlin="step01")
    assert isinstance(model.head[2], Step) and model.head[2].values == "01"
    assert isinstance(model.act, torch.nn.ReLU)
    model, _ = convert(Small(), include=r"^head\.")
    assert isinstance(model.head[1], Step) and isinstance(model.act, torch.nn.ReLU)
    model, report = convert(Small(), exclude=lambda name: name == "alias")
    assert isinstance(model.act, torch.nn.ReLU)  # excluded under one of its names
    assert isinstance(model.head[1], Step)
    assert any(name == "act, alias" for name, _ in report.left_alone)


def test_untraceable_model_is_reported_unchecked():
    class Branchy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.act = torch.nn.ReLU()

        def forward(self, x):
            return self.act(x) if x.sum() > 0 else x  # data-dependent: fx cannot trace it

    _, report = convert(Branchy())
    assert report.functional_check.startswith("unchecked: torch.fx could not trace")


def test_bad_arguments():
    with pytest.raises(ValueError, match="nonlin must be one of"):
        convert(Small(), nonlin="relu")
    with pytest.raises(ValueError, match="rule must be one of"):
        convert(Small(), rule="nope")
    with pytest.raises(TypeError, match="types must be"):
        convert(Small(), types=(int,))
    with pytest.raises(ValueError, match="include must be a regular expression"):
        convert(Small(), include="(")
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        convert("resnet18")
    with pytest.raises(TypeError, match="inplace"):
        convert(Small(), inplace="yes")


def test_convert_is_exported_at_top_level():
    assert ftprop_cuda.convert is convert


def test_build_torchvision_on_mnist_sized_images():
    torch.manual_seed(0)
    model, lines = build_torchvision("resnet18", "step", num_classes=10, in_channels=1,
                                     image_size=28)
    assert "first convolution conv1: 3 -> 1 input channels" in lines
    assert not any("upsampled" in line for line in lines)
    assert relu_like(model) == []
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)

    model, lines = build_torchvision("vgg11_bn", "qrelu", num_classes=4, in_channels=1,
                                     image_size=28)
    assert any(line.startswith("input upsampled (bilinear) from 28x28 to 32x32") for line in lines)
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 4)

    model, lines = build_torchvision("mobilenet_v2", "relu", num_classes=5, in_channels=3,
                                     image_size=32)
    assert "activations: torchvision's own (nonlin relu)" in lines
    assert relu_like(model)


def test_build_torchvision_bad_arguments():
    with pytest.raises(ValueError, match="one of torchvision's classification models"):
        build_torchvision("resnet1800")
    with pytest.raises(ValueError, match="in_channels must be a positive integer"):
        build_torchvision("resnet18", in_channels=0)
    with pytest.raises(ValueError, match="rule 'soft_hinge' is not supported|nonlin must be"):
        build_torchvision("resnet18", nonlin="sign")
