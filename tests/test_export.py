"""Exporting models with units: ONNX in onnxruntime, torch.export, jit.trace; ftprop-export."""
import contextlib
import io
import os
import subprocess
import sys
import warnings

import pytest
import torch

import ftprop_cuda
from ftprop_cuda import Staircase, Step, export
from ftprop_cuda.ops.extension import KERNEL_DEVICES

onnxruntime = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")  # torch.onnx.export's exporter needs it

UNITS = {
    "step": lambda: Step(),
    "step01": lambda: Step(values="01"),
    "qrelu": lambda: Staircase(steps=3),
    "stair5": lambda: Staircase(steps=5, lo=-1.0, hi=2.5),
}


def hard_inputs(unit, rows=64, cols=32):
    """Random values plus exact zeros, NaN, infinities, the thresholds and their neighbours."""
    x = torch.randn(rows, cols, generator=torch.Generator().manual_seed(1)) * 2
    x[0, :7] = torch.tensor([0.0, -0.0, float("nan"), float("inf"), -float("inf"), 1e-45, -1e-45])
    if isinstance(unit, Staircase):
        k, lo, hi = unit.steps, unit.lo, unit.hi
        th = torch.tensor([lo + (hi - lo) * i / (k - 1) for i in range(k)])
        x[1, :k] = th
        x[2, :k] = torch.nextafter(th, torch.tensor(float("inf")))
        x[3, :k] = torch.nextafter(th, torch.tensor(-float("inf")))
    return x


def onnx_run(model, x, path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with contextlib.redirect_stdout(io.StringIO()):
            torch.onnx.export(model, (x,), path, verbose=False)
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0])


def same_bits(a, b):
    return a.shape == b.shape and torch.equal(a.view(torch.int32), b.view(torch.int32))


def ops_in(graph_text):
    """Whether a jit graph or an exported program's code calls an ftprop_cuda op."""
    return "ftprop_cuda::" in graph_text or "ops.ftprop_cuda." in graph_text


@pytest.mark.parametrize("kind", UNITS)
def test_onnx_unit_outputs_bit_for_bit(kind, tmp_path):
    unit = UNITS[kind]()
    x = hard_inputs(unit)
    kernel = unit.train()(x)  # eager training forward: the compiled kernel
    got = onnx_run(torch.nn.Sequential(unit).eval(), x, str(tmp_path / "unit.onnx"))
    assert torch.equal(torch.isnan(got), torch.isnan(kernel))
    assert same_bits(got.nan_to_num(7.0), kernel.nan_to_num(7.0))
    assert torch.isnan(got[0, 2]) and (got[0, 0] == got[0, 1])
    if kind == "step":
        assert got[0, 0] == -1 and got[0, 1] == -1  # sign(0) = -1, not ONNX Sign's 0
    import onnx
    assert "Sign" not in {n.op_type for n in onnx.load(str(tmp_path / "unit.onnx")).graph.node}


def small_model():
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), Step(rule="saturated_hinge"),
        torch.nn.Conv2d(4, 4, 3), Staircase(steps=3, rule="sste"), torch.nn.Flatten(),
        torch.nn.Linear(4 * 4 * 4, 5), Step(values="01"), torch.nn.Linear(5, 3))


def test_onnx_model_matches_pytorch(tmp_path):
    model = small_model().eval()
    x = torch.randn(6, 1, 8, 8)
    with torch.no_grad():
        want = model(x)
    got = onnx_run(model, x, str(tmp_path / "m.onnx"))
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_torch_export_round_trip(tmp_path):
    model = small_model().eval()
    x = torch.randn(6, 1, 8, 8)
    program = torch.export.export(model, (x,))
    assert not ops_in(program.graph_module.code)  # aten only: runs without ftprop_cuda
    torch.export.save(program, str(tmp_path / "m.pt2"))
    loaded = torch.export.load(str(tmp_path / "m.pt2"))
    with torch.no_grad():
        assert torch.equal(loaded.module()(x), model(x))


def test_jit_trace_eval_is_aten_only(tmp_path):
    model = small_model().eval()
    x = torch.randn(6, 1, 8, 8)
    traced = torch.jit.trace(model, x)
    assert not ops_in(str(traced.inlined_graph))
    traced.save(str(tmp_path / "m.pt"))
    loaded = torch.jit.load(str(tmp_path / "m.pt"))
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


@pytest.mark.skipif("cpu" not in KERNEL_DEVICES, reason="needs the CPU kernels")
def test_jit_trace_train_mode_keeps_the_ftprop_backward():
    """Units whose forward saves a code (saturated_hinge, sste) trace in train mode: the trace
    records the op that saves z, and its backward is the eager model's."""
    model = small_model().train()
    x = torch.randn(6, 1, 8, 8)
    traced = torch.jit.trace(model, x)  # check_trace is on: it reruns and compares
    assert ops_in(str(traced.inlined_graph))
    eager = small_model().train()
    traced(x).square().sum().backward()
    eager(x).square().sum().backward()
    for a, b in zip(model.parameters(), eager.parameters()):
        assert torch.equal(a.grad, b.grad)


def test_functional_ops_export_with_aten_under_onnx(tmp_path):
    class Functional(torch.nn.Module):
        def forward(self, x):
            return ftprop_cuda.staircase(ftprop_cuda.step(x) * x, steps=5)

    x = hard_inputs(Step())
    got = onnx_run(Functional(), x, str(tmp_path / "f.onnx"))
    want = Functional()(x)
    assert same_bits(got.nan_to_num(7.0), want.nan_to_num(7.0))


@pytest.mark.skipif("cpu" not in KERNEL_DEVICES, reason="needs the CPU kernels")
def test_eager_training_still_runs_the_kernel_with_a_saved_code():
    assert not ftprop_cuda.functional.exporting()
    z = torch.randn(8, requires_grad=True)
    assert "ftprop_cuda__step_saved" in type(Step(rule="sste")(z).grad_fn).__name__
    assert "ftprop_cuda__staircase_saved" in type(Staircase(rule="sste").eval()(z).grad_fn).__name__


# ---------------------------------------------------------------------------------------------
# ftprop-export
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    subprocess.run([sys.executable, "-m", "ftprop_cuda.train", "--dataset", "digits",
                    "--train-limit", "200", "--epochs", "1", "--arch", "convnet4",
                    "--nonlin", "qrelu", "--out", str(out), "--no-tensorboard", "--quiet"],
                   check=True, capture_output=True, timeout=300,
                   cwd=out)  # outside the source tree: `-m` imports from the working directory
    return os.path.join(out, "best.pt")


def cli(*argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = export.main(list(argv))
    return code, out.getvalue(), err.getvalue()


def test_cli_onnx_beside_the_checkpoint(checkpoint):
    code, out, err = cli(checkpoint, "--format", "onnx")
    assert code == 0, err
    path = checkpoint[:-3] + ".onnx"
    assert out.startswith(f"wrote {path} (onnx; input N x 1 x 8 x 8, 10 logits")
    assert os.path.isfile(path) and not os.path.exists(path + ".data")
    ckpt = torch.load(checkpoint, weights_only=True)
    model, _ = export.model_from_checkpoint(ckpt)
    x = torch.randn(7, 1, 8, 8)  # another batch size than the export's example
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    got = torch.from_numpy(session.run(None, {"images": x.numpy()})[0])
    with torch.no_grad():
        torch.testing.assert_close(got, model(x), rtol=1e-4, atol=1e-4)


def test_cli_pt2(checkpoint, tmp_path):
    path = str(tmp_path / "model.pt2")
    code, out, err = cli(checkpoint, "--format", "pt2", "--out", path)
    assert code == 0, err
    ckpt = torch.load(checkpoint, weights_only=True)
    model, _ = export.model_from_checkpoint(ckpt)
    x = torch.randn(3, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(torch.export.load(path).module()(x), model(x))


def test_cli_errors_are_one_line(tmp_path, checkpoint):
    text = tmp_path / "notes.txt"
    text.write_text("not a checkpoint\n")
    no_config = tmp_path / "bare.pt"
    torch.save({"format": "ftprop_cuda.train/1", "model": {}}, str(no_config))
    cases = [
        ((str(tmp_path / "missing.pt"), "--format", "onnx"), "no such file"),
        ((str(text), "--format", "onnx"), "cannot read checkpoint"),
        ((str(no_config), "--format", "pt2"), "key 'config' is missing"),
        ((checkpoint, "--format", "onnx", "--out", str(text / "x.onnx")), "not a writable"),
    ]
    for argv, message in cases:
        code, out, err = cli(*argv)
        assert code == 2 and out == ""
        assert err.count("\n") == 1 and err.startswith("ftprop-export: error: ") and message in err
    code, out, err = cli(checkpoint, "--format", "tflite")  # argparse's errors: one line too
    assert code == 2 and out == "" and err.count("\n") == 1 and "invalid choice: 'tflite'" in err
