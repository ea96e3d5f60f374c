"""Issue 22, item 4: compile_lean leaves the user's model as it was (the channels-last layout of
its parameters is an explicit opt-in), and ftprop-train --compile trains bitwise alike in both
memory modes (they store the weights in the same layout). The first test ~10 s; the trainer
one (marked slow: two inductor compiles) a few minutes on a loaded CPU."""
import os

import pytest
import torch

import ftprop_cuda
from ftprop_cuda.memory import compile_lean
from ftprop_cuda.ops import extension

from helpers import assert_same_bits

needs_kernel = pytest.mark.skipif("cpu" not in extension.KERNEL_DEVICES, reason="no CPU kernel")


def _net():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.MaxPool2d(2),
                               ftprop_cuda.Step("sste"), torch.nn.Flatten(),
                               torch.nn.Linear(36, 3))


def _eager_grads(model, x):
    model.zero_grad()
    model(x).square().sum().backward()
    return [p.grad.clone() for p in model.parameters()]


@needs_kernel
def test_compile_lean_does_not_change_the_model():
    torch._dynamo.reset()
    model, x = _net(), torch.randn(5, 3, 8, 8)
    strides = [p.stride() for p in model.parameters()]
    before = _eager_grads(model, x)
    compiled = compile_lean(model, backend="aot_eager")
    compiled(x).square().sum().backward()
    assert [p.stride() for p in model.parameters()] == strides
    for a, b in zip(_eager_grads(model, x), before):
        assert_same_bits(a, b)
    # the opt-in stores the convolution weight channels-last, values unchanged
    torch._dynamo.reset()
    compile_lean(model, backend="aot_eager", channels_last=True)(x)
    assert model[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(model[0].weight, _net()[0].weight)
    with pytest.raises(TypeError, match="channels_last must be True or False"):
        compile_lean(model, channels_last="yes")


@needs_kernel
@pytest.mark.slow
def test_trainer_compiled_lean_and_standard_train_alike(tmp_path):
    from ftprop_cuda import train

    states = {}
    for memory in ("lean", "standard"):
        torch._dynamo.reset()
        out = str(tmp_path / memory)
        code = train.main(["--no-tensorboard", "--quiet", "--dataset", "digits", "--arch",
                           "convnet4", "--epochs", "1", "--train-limit", "96", "--test-limit",
                           "32", "--batch-size", "32", "--compile", "--device", "cpu",
                           "--memory", memory, "--out", out])
        assert code == 0
        states[memory] = torch.load(os.path.join(out, "last.pt"), map_location="cpu",
                                    weights_only=False)["model"]
    assert states["lean"].keys() == states["standard"].keys()
    for name, value in states["standard"].items():
        if value.is_floating_point():
            assert_same_bits(states["lean"][name], value)
        else:
            assert torch.equal(states["lean"][name], value), name
