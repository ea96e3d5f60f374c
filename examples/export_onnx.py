"""Export a model with hard-threshold units to ONNX and run it in onnxruntime.

    pip install onnx onnxscript onnxruntime
    python examples/export_onnx.py --out model.onnx
    python examples/export_onnx.py --smoke           # small, for the test suite

In eval mode the units export as standard operators (Greater/Where for Step, Div/Ceil/Clip
for Staircase), keeping sign(0) = -1 and the staircase's thresholds exactly, so the file runs
without ftprop_cuda. A trainer checkpoint exports with `ftprop-export CHECKPOINT --format onnx`.
"""
import argparse
import os
import tempfile

import numpy as np
import onnxruntime
import torch

import ftprop_cuda


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", help="where to write the ONNX file (default: a temporary one)")
    parser.add_argument("--smoke", action="store_true", help="small model, for the test suite")
    args = parser.parse_args()
    torch.manual_seed(0)
    width = 16 if args.smoke else 256
    model = torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(64, width), ftprop_cuda.Step(),
        torch.nn.Linear(width, width), ftprop_cuda.Staircase(steps=3),
        torch.nn.Linear(width, 10)).eval()
    x = torch.randn(8, 1, 8, 8)

    with tempfile.TemporaryDirectory() as tmp:
        path = args.out or os.path.join(tmp, "model.onnx")
        batch = torch.export.Dim("batch", min=1)
        torch.onnx.export(model, (x,), path, input_names=["images"], output_names=["logits"],
                          dynamic_shapes=({0: batch},))
        session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
        x = torch.randn(5, 1, 8, 8)  # another batch size: the batch dimension is dynamic
        got = session.run(None, {"images": x.numpy()})[0]
        with torch.no_grad():
            want = model(x).numpy()
        print(f"wrote {path}; onnxruntime vs PyTorch, max |diff|: {np.abs(got - want).max():.3g}")
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


if __name__ == "__main__":
    main()
