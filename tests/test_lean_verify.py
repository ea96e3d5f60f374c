"""Issue 22, item 3: verify_lean (one step standard and lean, compared bitwise, everything
restored) and the trainer's first-batch check (--verify-lean / --no-verify-lean). ~90 s on a
loaded 2-core CPU (five short digits runs)."""
import contextlib
import io
import os

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import ftprop_cuda
from ftprop_cuda.memory import records, verify_lean

from helpers import assert_same_bits


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.act = ftprop_cuda.Step("sste")
        self.pool = nn.MaxPool2d(2)
        self.drop = nn.Dropout(0.3)
        self.fc = nn.Linear(36, 3)

    def forward(self, x):
        return self.fc(self.act(self.pool(self.bn(self.conv(self.drop(x))))).flatten(1))


def _batch():
    return torch.randn(4, 2, 6, 6), torch.tensor([0, 1, 2, 1])


def _snapshot(model):
    return ([p.detach().clone() for p in model.parameters()],
            [None if p.grad is None else p.grad.clone() for p in model.parameters()],
            [b.clone() for b in model.buffers()], torch.get_rng_state())


def _assert_snapshot(model, snap):
    params, grads, buffers, rng = snap
    for p, v, g in zip(model.parameters(), params, grads):
        assert_same_bits(p.detach(), v)
        assert (p.grad is None) == (g is None)
        if g is not None:
            assert_same_bits(p.grad, g)
    for b, v in zip(model.buffers(), buffers):
        assert torch.equal(b, v)
    assert torch.equal(torch.get_rng_state(), rng)


@pytest.mark.parametrize("lean_first", [True, False])
def test_verify_lean_is_equal_and_restores_everything(lean_first):
    torch.manual_seed(0)
    model = Net()
    if lean_first:
        ftprop_cuda.lean(model)
    x, y = _batch()
    F.cross_entropy(model(x), y).backward()  # gradients to keep
    model.eval()
    snap = _snapshot(model)
    result = verify_lean(model, (x, y), F.cross_entropy)
    assert result and result.equal and result.layer is None, result
    assert "bitwise" in str(result)
    _assert_snapshot(model, snap)
    assert not model.training and ftprop_cuda.is_lean(model) == lean_first
    assert ftprop_cuda.lean.verify is verify_lean and ftprop_cuda.verify_lean is verify_lean


def test_verify_lean_names_the_layer_that_differs(monkeypatch):
    unpack = records.Rebuild.unpack
    monkeypatch.setattr(records.Rebuild, "unpack", lambda self: unpack(self) + 1)
    torch.manual_seed(0)
    model, batch = Net(), _batch()
    snap = _snapshot(model)
    result = verify_lean(model, batch, F.cross_entropy)
    assert not result
    # the unit's output, the linear's input, is rebuilt: the linear's weight gradient differs
    assert (result.layer, result.what) == ("fc", "parameter gradient"), result
    assert "'fc'" in str(result)
    _assert_snapshot(model, snap)
    assert not ftprop_cuda.is_lean(model)


def test_verify_lean_reports_lean_errors_and_standard_errors(monkeypatch):
    def fail(self):
        raise RuntimeError("rebuild failed")

    monkeypatch.setattr(records.Rebuild, "unpack", fail)
    torch.manual_seed(0)
    model = Net()
    result = verify_lean(model, _batch(), F.cross_entropy)
    assert not result and result.what == "error" and "rebuild failed" in str(result)
    monkeypatch.undo()
    result = verify_lean(model, torch.randn(4, 3, 6, 6), lambda out: out.sum())
    assert not result and result.what == "standard error"
    assert isinstance(result.error, RuntimeError)
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        verify_lean(lambda x: x, _batch(), F.cross_entropy)
    with pytest.raises(TypeError, match="loss_fn must be callable"):
        verify_lean(model, _batch(), "crossent")


def _train(argv):
    from ftprop_cuda import train

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = train.main(["--no-tensorboard", "--quiet", "--dataset", "digits", "--epochs", "1",
                           "--train-limit", "64", "--test-limit", "32", "--batch-size", "32",
                           "--device", "cpu", *argv])
    return code, err.getvalue()


def test_trainer_verifies_lean_and_falls_back_to_standard(tmp_path, monkeypatch):
    ckpts = {}
    for name, flags in (("std", ["--memory", "standard"]), ("lean", []),
                        ("off", ["--no-verify-lean"])):
        code, err = _train(flags + ["--out", str(tmp_path / name)])
        assert code == 0 and "warning" not in err, err
        ckpts[name] = torch.load(tmp_path / name / "last.pt", weights_only=False)
    for name in ("lean", "off"):
        for k, v in ckpts["std"]["model"].items():
            assert torch.equal(ckpts[name]["model"][k], v), (name, k)
    assert ckpts["off"]["config"]["verify_lean"] is False
    # a lean mode that differs: one warning naming the layer, and the run trains standard
    unpack = records.Rebuild.unpack
    monkeypatch.setattr(records.Rebuild, "unpack", lambda self: unpack(self) + 1)
    code, err = _train(["--out", str(tmp_path / "bad")])
    assert code == 0 and err.count("warning") == 1 and "layer" in err, err
    bad = torch.load(tmp_path / "bad" / "last.pt", weights_only=False)
    for k, v in ckpts["std"]["model"].items():
        assert torch.equal(bad["model"][k], v), k
    # an older checkpoint's config without the key resumes
    old = ckpts["lean"]
    del old["config"]["verify_lean"]
    path = os.path.join(tmp_path, "lean", "last.pt")
    torch.save(old, path)
    code, err = _train(["--resume", path, "--epochs", "2"])
    assert code == 0, err
