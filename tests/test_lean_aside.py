"""Issue 22: where lean mode stands aside (torch.jit.trace, forward-mode AD, enclosing
saved-tensor hooks and checkpoints, disabled hooks) and the patterns next to the findings (threads,
views, two consumers, nested lean, tied modules, retain_graph, dtype moves, no_grad forwards):
each compared bitwise with the standard path through lean_harness. ~50 s on a loaded CPU."""
import threading
import time

import pytest
import torch
import torch.autograd.forward_ad as fwAD
import torch.nn as nn
from torch.utils.checkpoint import checkpoint

import ftprop_cuda
from ftprop_cuda.ops import extension

from lean_harness import backward_sum, compare, twins

needs_kernel = pytest.mark.skipif("cpu" not in extension.KERNEL_DEVICES, reason="no CPU kernel")


class ConvNet(nn.Module):
    """conv -> bn -> unit -> max-pool -> linear: every kind of tensor lean rebuilds or codes."""

    def __init__(self, rule="sste", inner=None):
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.act = ftprop_cuda.Step(rule)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(4 * 3 * 3, 3)
        self.inner = inner  # wraps the pool: inner(pool, h)

    def forward(self, x):
        h = self.act(self.bn(self.conv(x)))
        h = self.pool(h) if self.inner is None else self.inner(self.pool, h)
        return self.fc(h.flatten(1))


def _x():
    return torch.randn(3, 2, 6, 6, requires_grad=True)


def _train(model):
    x = _x()
    return backward_sum(model(x), x)


# ---- enclosing saved-tensor hooks and checkpoints -----------------------------------------------
def test_non_reentrant_checkpoint_of_a_lean_max_pool():
    inner = lambda pool, h: checkpoint(pool, h, use_reentrant=False)  # noqa: E731
    assert compare(lambda: ConvNet(inner=inner), _train) is None


@pytest.mark.parametrize("reentrant", [False, True])
def test_checkpoint_of_a_whole_lean_model_still_checkpoints(reentrant):
    calls = []

    def step(model):
        model.conv.register_forward_hook(lambda *a: calls.append(1))
        x = _x()
        return backward_sum(checkpoint(model, x, use_reentrant=reentrant), x)

    assert compare(ConvNet, step) is None
    assert len(calls) == 4  # standard, then lean: a forward and a recompute each


def test_enclosing_saved_tensor_hooks_see_every_tensor():
    def step(model):
        seen = []

        def pack(t):
            seen.append((tuple(t.shape), t.dtype))
            return t.to(torch.bfloat16), t.dtype  # a user's lossy pack

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda p: p[0].to(p[1])):
            x = _x()
            out = model(x)
        model.seen = seen
        return backward_sum(out, x)

    standard, lean = twins(ConvNet)
    assert compare(None, step, models=(standard, lean)) is None
    assert lean.seen == standard.seen


def test_save_on_cpu_and_disabled_hooks_behave_as_standard():
    def step(model):
        x = _x()
        with torch.autograd.graph.save_on_cpu():
            out = model(x)
        with torch.autograd.graph.disable_saved_tensors_hooks("no hooks here"):
            out = out + model(x)
        return backward_sum(out, x)

    assert compare(ConvNet, step) is None


def test_allow_mutation_on_saved_tensors():
    def step(model):
        with torch.autograd.graph.allow_mutation_on_saved_tensors():
            x = _x()
            model.keep = []
            out = model(x)
            out.mul_(2)
            return backward_sum(out, x)

    assert compare(ConvNet, step) is None


# ---- tracing, forward-mode AD, threads ----------------------------------------------------------
@needs_kernel
def test_jit_trace_of_a_lean_model():
    standard, lean = twins(ConvNet)
    x = _x().detach()
    traced_s = torch.jit.trace(standard, x, check_trace=True)
    traced_l = torch.jit.trace(lean, x, check_trace=True)
    assert compare(None, _train, models=(traced_s, traced_l)) is None


def test_forward_mode_ad_through_a_lean_max_pool():
    def step(model):
        x = _x().detach()
        tangent = torch.randn_like(x)
        with fwAD.dual_level():
            out = model(fwAD.make_dual(x, tangent))
            primal, jvp = fwAD.unpack_dual(out)
        return primal.detach(), jvp

    standard, lean = twins(ConvNet)
    standard.act = lean.act = nn.ReLU()  # a unit with a jvp: the max-pool is the part under test
    assert compare(None, step, models=(standard, lean)) is None


def test_two_threads_on_one_lean_model():
    barrier, started = threading.Barrier(2), threading.Event()

    def inner(pool, h):  # both threads are inside the model's forward at once; t0 entered
        name = threading.current_thread().name  # first and leaves first
        if name == "t0":
            started.set()
        barrier.wait()
        if name == "t1":
            time.sleep(0.2)
        return pool(h)

    standard, lean = twins(lambda: ConvNet(inner=inner))
    xs = [_x() for _ in range(2)]
    results, errors, leftover = {}, [], []

    def work(model, i):
        try:
            if i == 1:
                started.wait()
            out = model(xs[i])
            leftover.append(torch._C._autograd._top_saved_tensors_default_hooks(False))
            results[model, i] = torch.autograd.grad(out.sum(),
                                                    list(model.parameters()) + [xs[i]])
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
            barrier.abort()

    for model in (lean, standard):
        started.clear()
        threads = [threading.Thread(target=work, args=(model, i), name=f"t{i}")
                   for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not errors, errors
    assert leftover == [None] * 4  # no thread is left with lean's hooks pushed
    for i in range(2):
        for a, b in zip(results[lean, i], results[standard, i]):
            assert torch.equal(a, b)


# ---- patterns next to the findings --------------------------------------------------------------
def test_views_and_slices_of_unit_outputs():
    class Views(ConvNet):
        def forward(self, x):
            h = self.act(self.bn(self.conv(x)))
            a = h[:, :2].permute(0, 1, 3, 2) * h[:, 2:]
            b = h.transpose(2, 3)[..., 1:5:2].reshape(3, -1)
            return self.fc(self.pool(a.repeat(1, 2, 1, 1)).flatten(1)) + b.sum(1, keepdim=True)

    assert compare(Views, _train) is None


def test_a_tensor_saved_by_two_consumers_and_retain_graph():
    class Two(ConvNet):
        def forward(self, x):
            h = self.act(self.bn(self.conv(x)))
            return self.fc(self.pool(h).flatten(1)) * self.fc(self.pool(h * h).flatten(1))

    def step(model):
        x = _x()
        out = model(x)
        out.sum().backward(retain_graph=True)
        out.sum().backward(retain_graph=True)
        return backward_sum(out, x)

    assert compare(Two, step) is None


def test_nested_lean_and_tied_modules():
    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.block = ftprop_cuda.lean(ConvNet())
            self.fc = nn.Linear(3, 3)
            self.act = ftprop_cuda.Step("sste")

        def forward(self, x):
            h = self.act(self.fc(self.block(x)))
            return self.fc(self.act(self.fc(h)))  # fc and act used twice

    assert compare(Tied, _train) is None


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_model_dtype_changed_after_wrapping(dtype):
    def step(model):
        model.to(dtype)
        x = _x().detach().to(dtype).requires_grad_()
        return backward_sum(model(x), x)

    assert compare(ConvNet, step) is None


def test_no_grad_and_inference_forwards_between_training_ones():
    def step(model):
        x = _x()
        first = model(x)
        with torch.no_grad():
            mid = model(x)
        with torch.inference_mode():
            late = model(x.detach())
        second = model(x * 2)
        out = first * second
        return backward_sum(out, x) + (mid, late.clone())

    assert compare(ConvNet, step) is None
