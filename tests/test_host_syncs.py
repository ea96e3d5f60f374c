"""No host round trip in a training step (issue 23, item 3): constants are made on the device
(torch.full, not torch.tensor: no host-to-device copy, which on CUDA also synchronises), no value
is read back (item, tolist, bool) in the forward, backward or optimizer step, and the trainer's
divergence check waits for one flag only after the backward is queued. On the CPU the calls
are counted; on a GPU the step runs under torch.cuda.set_sync_debug_mode("error"). About 3 s.
"""
import contextlib
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import ftprop_cuda
from ftprop_cuda.ops import reference as ref
from ftprop_cuda.train.distributed import Dist
from ftprop_cuda.train.errors import Diverged
from ftprop_cuda.train.loop import run_epoch

from conftest import cpu_and_cuda

DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
VALUES = (3.0, 1 / 3, 0.1, 70000.0, 2.0 ** 24 + 1, 1e39, -1e39, 3.4028235e38 * (1 + 2 ** -25),
          math.inf, -math.inf, math.nan)


def _bits(t):
    return t.view({1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[t.itemsize])


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_const_rounds_as_torch_tensor(dtype):
    """reference._const fills on the device with the value rounded as torch.tensor rounds it,
    past float32's range included (torch.full alone refuses those)."""
    like = torch.empty(0, dtype=dtype)
    for v in VALUES:
        assert torch.equal(_bits(ref._const(v, like)), _bits(torch.tensor(v, dtype=dtype))), v


class _Counter:
    """Counts the calls that copy host values to a device or read device values back."""

    NAMES = (("torch", torch, "tensor"), ("torch", torch, "as_tensor"),
             ("Tensor", torch.Tensor, "item"), ("Tensor", torch.Tensor, "tolist"),
             ("Tensor", torch.Tensor, "__bool__"))

    def __init__(self, monkeypatch):
        self.calls = []
        for label, owner, name in self.NAMES:
            original = getattr(owner, name)
            monkeypatch.setattr(owner, name, self._wrap(f"{label}.{name}", original))

    def _wrap(self, label, original):
        def counted(*args, **kwargs):
            self.calls.append(label)
            return original(*args, **kwargs)
        return counted


def _model(backend, device):
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8),
        ftprop_cuda.Step(rule="saturated_hinge", backend=backend), nn.MaxPool2d(2),
        nn.Conv2d(8, 8, 3, padding=1),
        ftprop_cuda.Staircase(steps=3, rule="sste", backend=backend), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(8 * 4 * 4, 10),
        ftprop_cuda.Step(rule="soft_hinge", values="01", backend=backend), nn.Linear(10, 5),
    ).to(device)
    return model


def _train_step(model, opt, x, y):
    opt.zero_grad(set_to_none=True)
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    return loss


def _steps(backend, memory, device):
    model = _model(backend, device)
    if memory == "lean":
        ftprop_cuda.lean(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x = torch.randn(6, 3, 16, 16, device=device)
    x[0, :, :4, :4] = -math.inf  # all -inf pooling windows
    y = torch.randint(0, 5, (6,), device=device)
    _train_step(model, opt, x, y)  # first step: optimizer state, caches per device and dtype
    return lambda: _train_step(model, opt, x, y)


@pytest.mark.parametrize("memory", ["standard", "lean"])
@pytest.mark.parametrize("backend", ["reference", "auto"])
def test_no_host_values_in_a_step(monkeypatch, backend, memory):
    step = _steps(backend, memory, "cpu")
    counter = _Counter(monkeypatch)
    step()
    assert counter.calls == []


def _loader(n, bad_at=None, device="cpu"):
    gen = torch.Generator().manual_seed(0)
    batches = []
    for k in range(n):
        x = torch.randn(4, 6, generator=gen)
        if k == bad_at:
            x[0, 0] = math.nan
        batches.append((x.to(device), torch.randint(0, 3, (4,), generator=gen).to(device)))
    return batches


@pytest.mark.parametrize("device", cpu_and_cuda())
def test_divergence_stops_before_the_update(device):
    """The loss check answered after the backward is queued still stops the run at the first
    non-finite loss, with the same message, before that step changes the weights."""
    torch.manual_seed(0)
    model = nn.Linear(6, 3).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    d = Dist(1, 0, torch.device(device))
    run_epoch(model, _loader(2, device=device), F.cross_entropy, d, contextlib.nullcontext, opt)
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(Diverged, match="^step 2 of 3$"):
        run_epoch(model, _loader(3, bad_at=1, device=device), F.cross_entropy, d,
                  contextlib.nullcontext, opt)
    after = list(model.parameters())
    # step 1 of the epoch trained, step 2 did not: compare with a run stopped after step 1
    torch.manual_seed(0)
    check = nn.Linear(6, 3).to(device)
    check.load_state_dict(dict(zip(("weight", "bias"), before)))
    check_opt = torch.optim.SGD(check.parameters(), lr=0.1)
    run_epoch(check, _loader(3, device=device)[:1], F.cross_entropy, d, contextlib.nullcontext,
              check_opt)
    for p, q in zip(after, check.parameters()):
        assert torch.equal(p.detach(), q.detach())


@pytest.mark.needs_cuda
@pytest.mark.parametrize("memory", ["standard", "lean"])
@pytest.mark.parametrize("backend", ["reference", "auto"])
def test_cuda_step_makes_no_synchronisation(backend, memory):
    step = _steps(backend, memory, "cuda")
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        step()
    finally:
        torch.cuda.set_sync_debug_mode(0)


@pytest.mark.needs_cuda
def test_cuda_trainer_epoch_makes_no_synchronisation():
    """run_epoch on batches already on the GPU: the divergence check waits on an event, not a
    stream synchronisation."""
    model = nn.Linear(6, 3).cuda()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    d = Dist(1, 0, torch.device("cuda"))
    loader = _loader(3, device="cuda")
    run_epoch(model, loader, F.cross_entropy, d, contextlib.nullcontext, opt)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        sums = run_epoch(model, loader, F.cross_entropy, d, contextlib.nullcontext, opt)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert sums[3].item() == 12
