"""ftprop-export: write an ftprop-train checkpoint's model as an ONNX or a torch.export file.

    ftprop-export runs/RUN/best.pt --format onnx        # -> runs/RUN/best.onnx
    ftprop-export runs/RUN/best.pt --format pt2 --out model.pt2

The model is rebuilt from the checkpoint's config (architecture, nonlinearity, the dataset's
channels, size and classes) in standard memory mode, loads the checkpoint's weights and is
exported in eval mode: its Step/Staircase units are written with standard operators (sign(0) =
-1 and the staircase thresholds kept exactly), so the file runs without ftprop_cuda, e.g. in
onnxruntime. The batch dimension is dynamic. The file is serialised in memory and written under
a temporary name, then renamed: it appears whole or not at all, and it is never one of the
inputs. The written file is then checked against PyTorch on real images (the run's test set,
or --check-batch): agreement of the predicted classes and the largest logit difference.
"""
from __future__ import annotations

import argparse
import errno
import io
import os
import re
import signal
import sys
import warnings

from .runs.names import BEST_FILE, LAST_FILE

PROG = "ftprop-export"
FORMATS = ("onnx", "pt2")
CHECK_IMAGES = 256  # test images the written file is checked on, by default
PROTOBUF_LIMIT = 1 << 30  # above this many bytes of weights, ONNX keeps them in FILE.data


class UsageError(Exception):
    """A problem with the arguments, the checkpoint or the output: one line, exit status 2."""


class Terminated(Exception):
    """SIGTERM arrived: raised so that the temporary file is removed on the way out."""


def model_from_checkpoint(ckpt: dict, path: str = "checkpoint"):
    """(model in eval mode with the checkpoint's weights, dataset info) from a loaded checkpoint.
    The model is built in standard memory mode (no lean-mode hooks), so that torch.jit.trace,
    torch.export and torch.onnx.export see plain modules."""
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
                            backend=cfg.get("backend", "auto"), memory="standard")
        model.load_state_dict(ckpt["model"])
    except KeyError as exc:
        raise UsageError(f"cannot export {path}: its config has no {exc} entry") from None
    except (ValueError, TypeError, RuntimeError) as exc:
        raise UsageError(f"cannot export {path}: the model cannot be rebuilt: "
                         f"{_load_failure(exc)}") from None
    return model.eval(), info


def _load_failure(exc):
    """The cause of a failed rebuild in one line: load_state_dict's first line ("Error(s) in
    loading state_dict for X:") says nothing, its next lines say what."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    text = lines[0]
    if text.endswith(":") and len(lines) > 1:
        text += " " + " ".join(lines[1:3])
    return text[:300]


def _serialise(model, example, fmt):
    """The exported file's bytes, or the ONNXProgram when the weights need an external file."""
    import torch

    batch = torch.export.Dim("batch", min=1)
    with warnings.catch_warnings():
        # the exporters' progress notes and deprecation warnings are not the user's concern
        warnings.simplefilter("ignore")
        if fmt == "pt2":
            program = torch.export.export(model, (example,), dynamic_shapes=({0: batch},))
            buffer = io.BytesIO()  # in memory: a full disk cannot abort the C++ zip writer
            torch.export.save(program, buffer)
            return buffer.getvalue()
        program = torch.onnx.export(model, (example,), None, input_names=["images"],
                                    output_names=["logits"], dynamic_shapes=({0: batch},),
                                    verbose=False)
        size = sum(p.numel() * p.element_size() for p in model.state_dict().values())
        return program if size > PROTOBUF_LIMIT else program.model_proto.SerializeToString()


def _write_bytes(path, data, chunk=1 << 20):
    with open(path, "wb") as f:
        for start in range(0, len(data), chunk):
            f.write(data[start:start + chunk])
        f.flush()
        os.fsync(f.fileno())


def _write_external(program, tmp, out):
    """An ONNX file whose weights live in OUT.data: saved under OUT's own name in a private
    folder (the file refers to its data file by name), the data file renamed into place, then
    the model file to tmp (atomic() renames it to out)."""
    import shutil

    folder = f"{out}.dir{os.getpid()}"
    os.mkdir(folder)
    try:
        inner = os.path.join(folder, os.path.basename(out))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program.save(inner, external_data=True)
        if os.path.exists(inner + ".data"):
            os.replace(inner + ".data", out + ".data")
        os.replace(inner, tmp)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def export_model(model, example, fmt: str, out: str) -> None:
    """Writes model (eval mode) for inputs shaped like `example`, batch dimension dynamic,
    atomically: out appears whole or not at all (the temporary file is removed on failure)."""
    from .runs import atomic

    data = _serialise(model, example, fmt)
    if isinstance(data, bytes):
        atomic(out, lambda tmp: _write_bytes(tmp, data))
    else:
        atomic(out, lambda tmp: _write_external(data, tmp, out))


def _remove_stale_temps(out):
    """OUT.tmp<pid> files (and OUT.dir<pid> folders) of exports that were killed (pid gone)."""
    import shutil

    folder, name = os.path.split(os.path.abspath(out))
    for entry in os.listdir(folder):
        rest = entry[len(name):] if entry.startswith(name) else ""
        m = re.fullmatch(r"\.(tmp|dir)(\d+)", rest)
        if not m or int(m.group(2)) == os.getpid():
            continue
        try:
            os.kill(int(m.group(2)), 0)
        except ProcessLookupError:
            path = os.path.join(folder, entry)
            if os.path.isdir(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                os.remove(path)
        except PermissionError:
            pass


def _same_file(a, b):
    if os.path.abspath(a) == os.path.abspath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _check_paths(args):
    """The output path, checked before torch is imported: inputs exist, the output is a
    writable file path and none of the inputs."""
    if not args.checkpoint:
        raise UsageError("the checkpoint path is empty")
    if not os.path.isfile(args.checkpoint):
        why = "not a file" if os.path.exists(args.checkpoint) else "no such file"
        raise UsageError(f"cannot read checkpoint {args.checkpoint}: {why}")
    if args.check_batch is not None and not os.path.isfile(args.check_batch):
        why = "not a file" if os.path.exists(args.check_batch) else "no such file"
        raise UsageError(f"--check-batch {args.check_batch}: {why}")
    if args.out is not None and not args.out:
        raise UsageError("--out must name a file (got an empty string)")
    out = args.out or os.path.splitext(args.checkpoint)[0] + "." + args.format
    folder = os.path.dirname(os.path.abspath(out))
    if os.path.isdir(out) or not os.path.isdir(folder) or not os.access(folder, os.W_OK):
        raise UsageError(f"--out {out}: not a writable file path")
    inputs = [("the checkpoint", args.checkpoint)]
    if args.check_batch:
        inputs.append(("--check-batch", args.check_batch))
    for what, path in inputs:
        for written in (out, out + ".data"):
            if _same_file(written, path):
                raise UsageError(f"--out {out}: would overwrite {what} {path}; choose another "
                                 "file")
    return out


def _test_batch(cfg, n):
    """Up to n images of the run's test set, or (None, why) when it cannot be loaded."""
    import torch

    from .data import DataError, load_dataset

    try:
        _, test_set, _ = load_dataset(cfg["dataset"], cfg.get("data_root"), False, 1, n)
    except (DataError, ValueError, OSError) as exc:
        return None, f"the {cfg['dataset']} test set cannot be loaded ({exc})"
    images = torch.stack([test_set[i][0] for i in range(min(n, len(test_set)))])
    return images, f"{len(images)} {cfg['dataset']} test images"


def _file_batch(path, info):
    """The images of --check-batch (a tensor saved by torch.save, or a .npy array)."""
    import torch

    try:
        if path.endswith(".npy"):
            import numpy as np
            images = torch.from_numpy(np.load(path, allow_pickle=False))
        else:
            images = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any failure to read means "not a usable batch"
        raise UsageError(f"--check-batch {path}: cannot read it ({type(exc).__name__})") from None
    want = (info.in_channels, info.image_size, info.image_size)
    if (not isinstance(images, torch.Tensor) or images.dim() != 4
            or tuple(images.shape[1:]) != want or images.shape[0] < 1):
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise UsageError(f"--check-batch {path}: expected a tensor N x {' x '.join(map(str, want))}"
                         f", got {shape}")
    return images.float(), f"{len(images)} images of {path}"


def _run_file(fmt, out, images):
    """The logits of the written file on images: onnxruntime or torch.export.load; None when
    onnxruntime is not installed."""
    import torch

    if fmt == "pt2":
        with torch.no_grad():
            return torch.export.load(out).module()(images)
    try:
        import onnxruntime
    except ImportError:
        return None
    session = onnxruntime.InferenceSession(out, providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: images.numpy()})[0]
    return torch.from_numpy(got)


def self_check(model, fmt, out, images):
    """(predictions that agree, images, largest |logit difference|) of the written file against
    the PyTorch model, or None when the file cannot be run here (no onnxruntime)."""
    import torch

    got = _run_file(fmt, out, images)
    if got is None:
        return None
    with torch.no_grad():
        want = model(images)
    agree = int((got.argmax(1) == want.argmax(1)).sum())
    return agree, len(images), float((got - want).abs().max())


def _check_line(model, ckpt, info, args, out):
    if args.no_check:
        return "self-check off (--no-check)"
    if args.check_batch:
        images, what = _file_batch(args.check_batch, info)
    else:
        images, what = _test_batch(ckpt["config"], args.check_images)
    if images is None:
        return f"self-check skipped: {what}; pass --check-batch FILE"
    result = self_check(model, args.format, out, images)
    if result is None:
        return "self-check skipped: onnxruntime is not installed"
    agree, n, diff = result
    return (f"self-check on {what}: predictions agree on {agree}/{n}, largest logit "
            f"difference {diff:.3g}")


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(message)


def _parser():
    p = _Parser(prog=PROG, description=__doc__.split("\n\n")[0], allow_abbrev=False,
                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", nargs="?",
                   help=f"a checkpoint ftprop-train wrote ({BEST_FILE} or {LAST_FILE})")
    p.add_argument("--format", choices=FORMATS,
                   help="onnx (runs in onnxruntime) or pt2 (torch.export.save); required")
    p.add_argument("--out", help="the file to write (default: beside the checkpoint, "
                                 "its name with .onnx or .pt2); never one of the inputs")
    p.add_argument("--check-batch", metavar="FILE",
                   help="check the written file on these images (a tensor N x C x H x W saved "
                        "by torch.save, or a .npy array) instead of the run's test set")
    p.add_argument("--check-images", type=int, default=CHECK_IMAGES, metavar="N",
                   help=f"test images to check the written file on (default {CHECK_IMAGES})")
    p.add_argument("--no-check", action="store_true", help="skip the self-check")
    return p


def parse_args(argv=None):
    """The arguments; an unknown flag is named before any missing argument (UsageError)."""
    p = _parser()
    args, extra = p.parse_known_args(argv)
    if extra:
        raise UsageError(f"unrecognized arguments: {' '.join(extra)}")
    missing = [name for name, value in (("CHECKPOINT", args.checkpoint),
                                        ("--format", args.format)) if value is None]
    if missing:
        raise UsageError(f"the following arguments are required: {', '.join(missing)}")
    if args.check_images < 1:
        raise UsageError(f"--check-images expects a positive integer, got {args.check_images}")
    return args


def run(args) -> str:
    out = _check_paths(args)

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
    _remove_stale_temps(out)
    try:
        export_model(model, example, args.format, out)
    except ImportError as exc:
        raise UsageError(f"export to {args.format} needs a missing package ({exc}); install "
                         "onnx and onnxscript (and onnxruntime to check the file)") from None
    except OSError as exc:
        name = errno.errorcode.get(exc.errno, "")
        raise UsageError(f"cannot write {out}: {exc.strerror or exc}"
                         + (f" ({name})" if name else "") + "; nothing was written") from None
    except Exception as exc:  # an exporter's failure is reported, not dumped
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise UsageError(f"export to {args.format} failed: {type(exc).__name__}: {first}")
    line = (f"wrote {out} ({args.format}; input N x {info.in_channels} x {info.image_size} x "
            f"{info.image_size}, {info.num_classes} logits; epoch {ckpt.get('epoch')})")
    return line + "; " + _check_line(model, ckpt, info, args, out)


def _on_sigterm(signum, frame):
    raise Terminated()


def main(argv=None) -> int:
    try:
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    except ValueError:  # not the main thread
        previous = None
    try:
        print(run(parse_args(argv)))
    except UsageError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except Terminated:
        print(f"{PROG}: terminated (SIGTERM)", file=sys.stderr)
        return 143
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return 0


if __name__ == "__main__":
    sys.exit(main())
