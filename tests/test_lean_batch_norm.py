"""Lean mode's one-pass batch-norm rebuild (ftprop_cuda/memory/batch_norm.py,
csrc/cpu/batch_norm.cpp): bitwise F.batch_norm where it is used, the whole batch norm again
where it is not (another dtype or layout, autocast, a failed probe), and loud on bad input."""
import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import ftprop_cuda
from ftprop_cuda.memory import batch_norm as lean_bn
from ftprop_cuda.ops import extension

from helpers import assert_same_bits

needs_op = pytest.mark.skipif(not extension.has_cpu_kernel("_batch_norm_rebuild"),
                              reason="no compiled batch-norm rebuild")

SHAPES = [(64, 10), (7, 3), (4, 7, 3), (2, 3, 1, 1), (3, 5, 7, 7), (2, 4, 8, 9),
          (8, 16, 17, 3), (1, 2, 3, 33), (2, 3, 2, 3, 5), (2, 1, 1, 1)]


@needs_op
def test_probe_passes_here():
    """On this build the one pass is F.batch_norm's arithmetic (if this fails, lean mode still
    trains exactly, with the whole batch norm recomputed, and this test says so)."""
    assert lean_bn.probe()


@needs_op
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("affine", ["both", "weight", "bias", "none"])
@pytest.mark.parametrize("values", ["normal", "offset", "special"])
def test_rebuild_is_batch_norm(shape, affine, values):
    torch.manual_seed(sum(shape) + len(affine))
    x = torch.randn(shape)
    if values == "offset":  # large mean, tiny variance: where rounding differs first
        x = x * 1e-3 + 1e4
    elif values == "special" and x.numel():
        x.view(-1)[::7] = 0.0
        x.view(-1)[1::11] = -0.0
        x.view(-1)[2::13] = 1.0
    c = shape[1]
    w = torch.randn(c) if affine in ("both", "weight") else None
    b = torch.randn(c) * 3 if affine in ("both", "bias") else None
    out, mean, invstd = torch.native_batch_norm(x, w, b, None, None, True, 0.1, 1e-5)
    expected = F.batch_norm(x, None, None, w, b, True, 0.1, 1e-5)
    assert_same_bits(out, expected)
    assert_same_bits(lean_bn.rebuild(x, mean, invstd, w, b), expected)


@needs_op
def test_rebuild_refuses_bad_input():
    x = torch.randn(2, 3, 4, 4)
    m, s = torch.zeros(3), torch.ones(3)
    op = torch.ops.ftprop_cuda._batch_norm_rebuild
    with pytest.raises(RuntimeError, match="input must be a contiguous float32 CPU tensor"):
        op(x.double(), m, s, None, None)
    with pytest.raises(RuntimeError, match="input must be a contiguous float32 CPU tensor"):
        op(x.transpose(1, 3), m, s, None, None)
    with pytest.raises(RuntimeError, match="mean must be a contiguous float32 CPU vector"):
        op(x, torch.zeros(4), s, None, None)
    with pytest.raises(RuntimeError, match="invstd must be"):
        op(x, m, s.double(), None, None)
    with pytest.raises(RuntimeError, match="weight must be"):
        op(x, m, s, torch.ones(2), None)
    with pytest.raises(RuntimeError, match="bias must be"):
        op(x, m, s, None, torch.ones(3, 2)[:, 0])


class _Net(nn.Module):
    def __init__(self, affine=True, dims=2):
        super().__init__()
        conv = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[dims]
        bn = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}[dims]
        self.conv = conv(3, 6, 3, padding=1)
        self.bn = bn(6, affine=affine)
        self.act = ftprop_cuda.Step(rule="soft_hinge")
        self.fc = nn.Linear(6, 4)
        self.bn1d = nn.BatchNorm1d(4)
        self.act2 = ftprop_cuda.Step(rule="soft_hinge")

    def forward(self, x):
        h = self.act(self.bn(self.conv(x)))
        h = h.flatten(2).mean(-1)
        return self.act2(self.bn1d(self.fc(h))).sum(-1)


def _step(model, x):
    out = model(x)
    out.square().sum().backward()
    return out.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}, \
        {n: b.clone() for n, b in model.named_buffers()}


def _compare(model, x):
    std = copy.deepcopy(model)
    lean = ftprop_cuda.lean(copy.deepcopy(model))
    a, b = _step(std, x), _step(lean, x)
    for u, v in zip(a, b):
        if isinstance(u, dict):
            assert u.keys() == v.keys()
            for k in u:
                if u[k].is_floating_point():
                    assert_same_bits(v[k], u[k])
                else:
                    assert torch.equal(v[k], u[k]), k
        else:
            assert_same_bits(v, u)
    return ftprop_cuda.lean_report(lean)


@needs_op
@pytest.mark.parametrize("dims", [1, 2, 3])
@pytest.mark.parametrize("affine", [True, False])
def test_lean_with_one_pass_is_bitwise_standard(dims, affine):
    torch.manual_seed(dims)
    x = torch.randn(5, 3, *(6,) * dims)
    report = _compare(_Net(affine, dims), x)
    assert "batch-norm output rebuilt from its kept statistics" in report


@pytest.mark.parametrize("case", ["failed_probe", "float64", "channels_last", "autocast"])
def test_lean_recomputes_the_whole_batch_norm_elsewhere(case, monkeypatch):
    """Where the one pass does not apply the whole batch norm runs again: still bitwise."""
    torch.manual_seed(3)
    model, x = _Net(), torch.randn(4, 3, 7, 7)
    if case == "failed_probe":
        monkeypatch.setattr(lean_bn, "_PROBE", False)
    elif case == "float64":
        model, x = model.double(), x.double()
    elif case == "channels_last":
        model, x = model.to(memory_format=torch.channels_last), \
            x.contiguous(memory_format=torch.channels_last)
    if case == "autocast":
        with torch.autocast("cpu", dtype=torch.bfloat16):
            report = _compare(model, x)
    else:
        report = _compare(model, x)
    lines = dict(line.split(": ", 1) for line in report.splitlines())
    # "act" saves the conv batch norm's output (4-D: channels-last there), "act2" the 1-D one
    assert "rebuilt from its kept statistics" not in lines.get("act", "")
    if case != "autocast":
        assert "batch-norm output recomputed" in lines["act"]
    if case in ("failed_probe", "float64"):
        assert "rebuilt from its kept statistics" not in lines.get("act2", "")


def test_probe_failure_is_remembered(monkeypatch):
    """A probe that raises counts as failed (the whole batch norm is recomputed), once."""
    calls = []

    def broken():
        calls.append(1)
        raise RuntimeError("no such kernel")

    monkeypatch.setattr(lean_bn, "_PROBE", None)
    monkeypatch.setattr(lean_bn, "_probe_once", broken)
    monkeypatch.setattr(lean_bn, "has_cpu_kernel", lambda *ops: True)
    assert lean_bn.probe() is False and lean_bn.probe() is False
    assert calls == [1]
