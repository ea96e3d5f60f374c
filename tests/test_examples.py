"""The scripts in examples/ run at smoke size."""
import os
import subprocess
import sys

import pytest

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")


def run_example(name, *args):
    result = subprocess.run([sys.executable, os.path.join(EXAMPLES, name), "--smoke", *args],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def test_custom_model():
    out = run_example("custom_model.py")
    assert out.startswith("epoch 1: last batch loss") and "test top-1" in out


def test_convert_torchvision():
    pytest.importorskip("torchvision")
    out = run_example("convert_torchvision.py", "--nonlin", "qrelu")
    assert "replaced 9 activation module(s)" in out and "Staircase(steps=3" in out
    assert "step 2: loss" in out


def test_export_onnx(tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    out = run_example("export_onnx.py", "--out", str(tmp_path / "m.onnx"))
    assert f"wrote {tmp_path / 'm.onnx'}" in out and os.path.isfile(tmp_path / "m.onnx")


def test_fallback_advice_names_a_shadowing_source_folder(tmp_path):
    """A checkout without the compiled _C in front of a compiled install: the warning's advice
    says the source folder shadows the install (not a misleading 'reinstall')."""
    import ftprop_cuda
    from ftprop_cuda.ops.extension import load_failure_advice

    installed = os.path.dirname(os.path.abspath(ftprop_cuda.__file__))
    if not any(name.startswith("_C") for name in os.listdir(installed)):
        pytest.skip("this ftprop_cuda has no compiled extension to be shadowed")
    source = tmp_path / "checkout" / "ftprop_cuda"
    source.mkdir(parents=True)
    advice = load_failure_advice(str(source), [str(source.parent), os.path.dirname(installed)])
    assert advice.startswith(f"the source folder {source} shadows the installed package "
                             f"{installed}")
    assert "`pip install --no-build-isolation -e .` or run from another folder" in advice
    alone = load_failure_advice(str(source), [str(source.parent)])
    assert alone.startswith(f"{source} holds no compiled extension; build it with")
    assert load_failure_advice(installed, []).startswith("reinstall with")
