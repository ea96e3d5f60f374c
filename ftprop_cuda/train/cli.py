"""ftprop-train's argument parser, one builder per argument group (torch-free: a bad flag is
reported before torch is imported)."""
import argparse
import math

from ..data import DATASETS, dataset_info
from ..models import ARCHS, TORCHVISION_PREFIX, architecture
from ..runs.names import DEFAULT_PARENT, LAST_FILE
from .config import DEVICES, LOSSES, OPTIMIZERS
from .errors import PROG, UsageError
from .presets import PRESETS

DESCRIPTION = "train hard-threshold networks with FTPROP-MB, the STE family and baselines."


class LazyChoices:
    """argparse choices whose names live in modules that import torch: loaded only when the
    flag is given (or --help lists them)."""

    def __init__(self, load):
        self._load = load

    def __contains__(self, value):
        return value in self._load()

    def __iter__(self):
        return iter(self._load())


def _rule_names():
    from ..ops.rules import ALL_RULES  # the torch-free rule registry
    return ALL_RULES


def _nonlin_names():
    from ..models.units import NONLINS
    return NONLINS


def _backend_names():
    from ..ops.functional import BACKENDS
    return BACKENDS


def _arch(text):
    try:
        architecture(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid choice: {text!r} (choose from {', '.join(ARCHS)} or "
            f"{TORCHVISION_PREFIX}NAME)")
    return text


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(message)


# Bounds of the integer flags: beyond them a value is a typo, or overflows torch's 64-bit seeds
MAX_EPOCHS = 10**6
MAX_COUNT = 2**63 - 1
MAX_SEED = 2**63 - 1  # torch.manual_seed takes 64 bits; the samplers add the epoch to it
MAX_WORKERS = 1024
MAX_DIST_TIMEOUT = 7 * 24 * 3600.0
MAX_RATE = 3.4028234663852886e38  # float32's largest: the weights' optimizer arithmetic


def _int_in(low, high, what):
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or not low <= value <= high:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value
    return parse


_positive_int = _int_in(1, MAX_COUNT, "an integer from 1 to 2**63-1")
_nonneg_int = _int_in(0, MAX_WORKERS, f"an integer from 0 to {MAX_WORKERS}")
_epochs = _int_in(1, MAX_EPOCHS, f"an integer from 1 to {MAX_EPOCHS}")
_seed = _int_in(0, MAX_SEED, "an integer from 0 to 2**63-1 (9223372036854775807)")


def _path(text):
    """A path argument: an empty string is an error, not "not given"."""
    if not text:
        raise argparse.ArgumentTypeError("expected a path, got an empty string")
    return text


def _float_at_least(low, strict, high=math.inf):
    def parse(text):
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}")
        if not math.isfinite(value) or value < low or (strict and value == low) or value > high:
            upto = f" and <= {high:g}" if math.isfinite(high) else ""
            raise argparse.ArgumentTypeError(
                f"expected a number {'>' if strict else '>='} {low:g}{upto}, got {text!r}")
        return value
    return parse


def _epoch_list(text):
    out = []
    for part in text.replace(",", " ").split():
        out.append(_epochs(part))
    return out


# Config flags default to "not given" (SUPPRESS), so that presets can fill them in.
S = argparse.SUPPRESS


def _add_model_args(p):
    m = p.add_argument_group("model")
    m.add_argument("--arch", type=_arch, default=S, metavar="ARCH",
                   help=f"network: {', '.join(ARCHS)}, or {TORCHVISION_PREFIX}NAME "
                        "(default: convnet4)")
    m.add_argument("--nonlin", choices=LazyChoices(_nonlin_names), default=S, metavar="NONLIN",
                   help="hidden unit: step (+-1), step01, qrelu (2-bit), qrelu5, relu, threshrelu "
                        "(default: step)")
    m.add_argument("--rule", choices=LazyChoices(_rule_names), default=S, metavar="RULE",
                   help="targetprop rule of the hard-threshold units (default: soft_hinge = "
                        "FTP-SH); relu and threshrelu have none")
    m.add_argument("--grad-scale", action=argparse.BooleanOptionalAction, default=S,
                   help="weight each unit's loss by |grad| (FTPROP-MB, default); --no-grad-scale: "
                        "unweighted mode")
    m.add_argument("--bn", action=argparse.BooleanOptionalAction, default=S,
                   help="batch norm (default: the architecture's: off for convnet4, on otherwise)")
    m.add_argument("--backend", choices=LazyChoices(_backend_names), default=S,
                   metavar="BACKEND", help="ops backend: auto, kernel, reference (default: auto)")
    m.add_argument("--memory", choices=("lean", "standard"), default=S,
                   help="what a training forward keeps for the backward: lean (default) rebuilds "
                        "unit outputs, batch-norm outputs and max-pool indices in the backward, "
                        "with bitwise-identical results; standard keeps what each layer saves")
    m.add_argument("--verify-lean", action=argparse.BooleanOptionalAction, default=S,
                   help="in lean mode, check on the first batch that it is bitwise the standard "
                        "path (default); if not, train this run standard with a warning")


def _add_data_args(p):
    d = p.add_argument_group("data")
    d.add_argument("--dataset", choices=DATASETS, default=S, help="(default: mnist5k)")
    d.add_argument("--data-root", type=_path, default=S, metavar="DIR",
                   help="dataset folder (default: data/<dataset>; fashion_mnist: "
                        f"{dataset_info('fashion_mnist').root()})")
    d.add_argument("--download", action="store_true", default=S,
                   help="let torchvision download mnist/cifar10/cifar100/svhn when missing")
    d.add_argument("--train-limit", type=_positive_int, default=S, metavar="N",
                   help="train on a fixed random subset of N examples (smoke runs)")
    d.add_argument("--test-limit", type=_positive_int, default=S, metavar="N",
                   help="test on a fixed random subset of N examples")
    d.add_argument("--workers", type=_nonneg_int, default=S,
                   help="data-loading processes (default: 0 for in-memory sets, else up to 8)")


def _add_optimisation_args(p):
    o = p.add_argument_group("optimisation")
    o.add_argument("--epochs", type=_epochs, default=S, help=f"(default: 3; at most {MAX_EPOCHS})")
    o.add_argument("--batch-size", type=_positive_int, default=S,
                   help="global batch size, split across processes (default: 64)")
    o.add_argument("--test-batch-size", type=_positive_int, default=S, help="(default: 256)")
    o.add_argument("--opt", choices=OPTIMIZERS, default=S, help="(default: adam)")
    o.add_argument("--lr", type=_float_at_least(0, True, MAX_RATE), default=S,
                   help="(default: 2.5e-4)")
    o.add_argument("--momentum", type=_float_at_least(0, False, MAX_RATE), default=S,
                   help="SGD momentum (default: 0.9)")
    o.add_argument("--weight-decay", type=_float_at_least(0, False, MAX_RATE), default=S,
                   help="L2 weight decay (default: 5e-4)")
    o.add_argument("--lr-decay", type=_float_at_least(0, True, MAX_RATE), default=S,
                   help="factor applied at each of --lr-decay-epochs (default: 0.1)")
    o.add_argument("--lr-decay-epochs", type=_epoch_list, nargs="*", default=S, metavar="E",
                   help="1-based epochs at whose start the rate is multiplied by --lr-decay")
    o.add_argument("--loss", choices=LOSSES, default=S, help="output loss (default: crossent)")
    o.add_argument("--seed", type=_seed, default=S, help="0 to 2**63-1 (default: 1)")


def _add_run_args(p):
    r = p.add_argument_group("run")
    r.add_argument("--preset", metavar="NAME", help="a paper experiment (see --list-presets)")
    r.add_argument("--list-presets", action="store_true", help="print the presets and exit")
    r.add_argument("--out", type=_path, metavar="DIR",
                   help="output folder, locked while the run lives (default: a new folder "
                        f"{DEFAULT_PARENT}/<time>-<dataset>-<arch>-<nonlin>[-N]; with --resume: "
                        "the checkpoint's folder); a folder that holds another run is refused")
    r.add_argument("--overwrite", action="store_true",
                   help="let --out replace the run a folder holds (its config, metrics, "
                        "checkpoints, curves and events are removed first)")
    r.add_argument("--resume", type=_path, metavar="PATH",
                   help=f"continue training from a {LAST_FILE}")
    r.add_argument("--eval", type=_path, metavar="PATH",
                   help="evaluate a checkpoint on the test set and exit")
    r.add_argument("--device", choices=DEVICES, default=S, help="(default: cuda when available)")
    r.add_argument("--compile", action="store_true", default=S, help="wrap the model in torch.compile")
    r.add_argument("--amp", action="store_true", default=S, help="bf16 autocast (CUDA only)")
    r.add_argument("--diagnostics", action="store_true", default=S,
                   help="log per-layer target statistics of the hard-threshold units")
    r.add_argument("--dist-timeout", type=_float_at_least(0, True, MAX_DIST_TIMEOUT),
                   default=300.0,
                   metavar="SECONDS", help="with torchrun: how long a collective waits for a "
                   "silent process before the run fails with exit code 4 (default: 300)")
    r.add_argument("--no-tensorboard", dest="tensorboard", action="store_false",
                   help="do not write TensorBoard events")
    r.add_argument("--quiet", action="store_true",
                   help="no progress bars or per-epoch lines, only the final line")


def build_parser():
    """ftprop-train's parser; its errors raise UsageError instead of exiting."""
    p = _Parser(prog=PROG, description=DESCRIPTION, allow_abbrev=False,
                formatter_class=argparse.RawDescriptionHelpFormatter,
                epilog="Presets (--list-presets for the table): " + ", ".join(PRESETS))
    _add_model_args(p)
    _add_data_args(p)
    _add_optimisation_args(p)
    _add_run_args(p)
    return p
