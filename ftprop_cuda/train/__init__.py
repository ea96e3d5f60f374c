"""ftprop-train: train hard-threshold networks with FTPROP-MB, the STE family and baselines.

    ftprop-train                                   # convnet4, sign units, FTP-SH, on mnist5k
    ftprop-train --preset convnet4-step-ftpsh --data-root data/cifar10
    torchrun --nproc-per-node 4 -m ftprop_cuda.train --preset resnet18-qrelu-ftpsh --data-root /imagenet

Settings are resolved in this order: built-in defaults, then --preset, then (for --resume and
--eval) the checkpoint's config, then the flags given on the command line. The output
directory gets config.json, metrics.jsonl (one JSON object per epoch), last.pt, best.pt,
curves.png and TensorBoard events; a run holds a lock on it, and a folder holding another run
is refused (--overwrite replaces it). Exit codes: 0 done; 2 bad arguments, unusable or
unwritable files (one line on stderr); 3 a loss or metric stopped being finite;
4 a distributed collective failed; 130 SIGINT; 143 SIGTERM.

    command.py      main: the entry point and its exit codes; program: the command
    cli.py          build_parser, one builder per argument group (torch-free)
    config.py       DEFAULTS, CONFIG_TYPES, RESUME_MUTABLE, EVAL_MUTABLE, resolve_config
    presets.py      the paper's experiments as --preset settings
    distributed.py  Dist, init_distributed (torchrun)
    optim.py        output_loss, make_optimizer, make_scheduler
    loop.py         run_epoch, make_loader, epoch_metrics
    state.py        TrainState: the run's pieces, restored from and saved to checkpoints
    outputs.py      run folder name, config.json, curves, TensorBoard, the epoch line
    session.py      train, evaluate
    diagnostics.py  per-layer statistics of the hard-threshold units (--diagnostics)
    errors.py       PROG, exit codes, UsageError, Diverged, Terminated

The names below are loaded on first use (PEP 562): importing this package, parsing the flags
and reporting a bad one do not import torch.
"""
import importlib

# public name -> the submodule that defines it
_LAZY = {
    "main": ".command",
    "build_parser": ".cli",
    **dict.fromkeys(("PROG", "EXIT_USAGE", "EXIT_DIVERGED", "EXIT_DISTRIBUTED", "EXIT_SIGINT",
                     "EXIT_SIGTERM", "UsageError", "Diverged", "Terminated"), ".errors"),
    **dict.fromkeys(("LOSSES", "OPTIMIZERS", "DEVICES", "DEFAULTS", "CONFIG_TYPES",
                     "RESUME_MUTABLE", "EVAL_MUTABLE", "CHECKPOINT_FORMAT", "resolve_config"),
                    ".config"),
    **dict.fromkeys(("PRESETS", "get_preset", "format_presets"), ".presets"),
    **dict.fromkeys(("output_loss", "make_optimizer", "make_scheduler"), ".optim"),
    **dict.fromkeys(("run_epoch", "make_loader", "epoch_metrics"), ".loop"),
    **dict.fromkeys(("Dist", "init_distributed"), ".distributed"),
    **dict.fromkeys(("TrainState", "build_net"), ".state"),
    **dict.fromkeys(("train", "evaluate"), ".session"),
    "Diagnostics": ".diagnostics",
}


def __getattr__(name):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name], __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


__all__ = sorted(_LAZY)
