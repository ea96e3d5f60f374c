"""ftprop-export: write an ftprop-train checkpoint's model as an ONNX or a torch.export file.

    ftprop-export runs/RUN/best.pt --format onnx        # -> runs/RUN/best.onnx
    ftprop-export runs/RUN/best.pt --format pt2 --out model.pt2

The model is rebuilt from the checkpoint's config (architecture, nonlinearity, the dataset's
channels, size and classes), loads the checkpoint's weights and is exported in eval mode:
its Step/Staircase units are written with standard operators (sign(0) = -1 and the staircase
thresholds kept exactly), so the file runs without ftprop_cuda, e.g. in onnxruntime.
The batch dimension is dynamic.
"""
from __future__ import annotations

import argparse
import os
import sys
import warnings

from .runs.names import BEST_FILE, LAST_FILE

PROG = "ftprop-export"
FORMATS = ("onnx", "pt2")


class UsageError(Exception):
    """A problem with the arguments or the checkpoint: one line, exit status 2."""


def model_from_checkpoint(ckpt: dict, path: str = "checkpoint"):
    """(model in eval mode with the checkpoint's weights, dataset info) from a loaded checkpoint."""
    from .data import dataset_info
    from .models import build_model

    cfg = ckpt.get("config")
    if not isinstance(cfg, dict) or "model" not in ckpt:
        raise UsageError(f"cannot export {path}: it holds no 'config' and 'model' to rebuild from")
    try:
        info = dataset_info(cfg["dataset"])
        model = build_model(cfg["arch"], cfg["nonlin"], cfg["rule"], cfg["grad_scale"],
                            num_classes=info.num_classes, in_channels=info.in_channels,
                            image_size=info.image_size, bn=cfg["bn"],
                            backend=cfg.get("backend", "auto"))
        model.load_state_dict(ckpt["model"])
    except KeyError as exc:
        raise UsageError(f"cannot export {path}: its config has no {exc} entry") from None
    except (ValueError, TypeError, RuntimeError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise UsageError(f"cannot export {path}: the model cannot be rebuilt: {first}") from None
    return model.eval(), info


def export_model(model, example, fmt: str, out: str) -> None:
    """Writes model (eval mode) for inputs shaped like `example`, batch dimension dynamic."""
    import torch

    batch = torch.export.Dim("batch", min=1)
    with warnings.catch_warnings():
        # the exporters' progress notes and deprecation warnings are not the user's concern
        warnings.simplefilter("ignore")
        if fmt == "pt2":
            program = torch.export.export(model, (example,), dynamic_shapes=({0: batch},))
            torch.export.save(program, out)
        else:
            # one self-contained file unless the weights pass protobuf's 2 GB limit
            size = sum(p.numel() * p.element_size() for p in model.state_dict().values())
            torch.onnx.export(model, (example,), out, input_names=["images"],
                              output_names=["logits"], dynamic_shapes=({0: batch},),
                              external_data=size > 1 << 30, verbose=False)


def _check_onnx(model, example, out):
    """Max |ONNX - PyTorch| on the example, or None when onnxruntime is not installed."""
    try:
        import onnxruntime
    except ImportError:
        return None
    import torch

    session = onnxruntime.InferenceSession(out, providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: example.numpy()})[0]
    with torch.no_grad():
        want = model(example)
    return float((torch.from_numpy(got) - want).abs().max())


def _parser():
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint",
                   help=f"a checkpoint ftprop-train wrote ({BEST_FILE} or {LAST_FILE})")
    p.add_argument("--format", required=True, choices=FORMATS,
                   help="onnx (runs in onnxruntime) or pt2 (torch.export.save)")
    p.add_argument("--out", help="the file to write (default: beside the checkpoint, "
                                 "its name with .onnx or .pt2)")
    return p


def run(args) -> str:
    if not os.path.isfile(args.checkpoint):
        why = "not a file" if os.path.exists(args.checkpoint) else "no such file"
        raise UsageError(f"cannot read checkpoint {args.checkpoint}: {why}")
    out = args.out or os.path.splitext(args.checkpoint)[0] + "." + args.format
    folder = os.path.dirname(os.path.abspath(out))
    if os.path.isdir(out) or not os.path.isdir(folder) or not os.access(folder, os.W_OK):
        raise UsageError(f"--out {out}: not a writable file path")

    import torch

    from .runs import RunIOError, load_checkpoint
    from .train.config import CONFIG_TYPES

    try:
        ckpt = load_checkpoint(args.checkpoint, CONFIG_TYPES, need_optimizer=False)
    except RunIOError as exc:
        raise UsageError(str(exc)) from None
    model, info = model_from_checkpoint(ckpt, args.checkpoint)
    generator = torch.Generator().manual_seed(0)
    example = torch.randn(2, info.in_channels, info.image_size, info.image_size,
                          generator=generator)
    try:
        export_model(model, example, args.format, out)
    except ImportError as exc:
        raise UsageError(f"export to {args.format} needs a missing package ({exc}); install "
                         "onnx and onnxscript (and onnxruntime to check the file)") from None
    except Exception as exc:  # an exporter's failure is reported, not dumped
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise UsageError(f"export to {args.format} failed: {type(exc).__name__}: {first}")
    line = (f"wrote {out} ({args.format}; input N x {info.in_channels} x {info.image_size} x "
            f"{info.image_size}, {info.num_classes} logits; epoch {ckpt.get('epoch')})")
    if args.format == "onnx":
        diff = _check_onnx(model, example, out)
        if diff is not None:
            line += f"; onnxruntime vs PyTorch: max |diff| {diff:.3g}"
    return line


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    try:
        print(run(args))
    except UsageError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
