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
