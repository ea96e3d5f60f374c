"""ftprop-train: train hard-threshold networks with FTPROP-MB, the STE family and baselines.

    ftprop-train                                   # convnet4, sign units, FTP-SH, on mnist5k
    ftprop-train --preset convnet4-step-ftpsh --data-root data/cifar10
    torchrun --nproc-per-node 4 -m ftprop_cuda.train --preset resnet18-qrelu-ftpsh --data-root /imagenet

Settings are resolved in this order: built-in defaults, then --preset, then (for --resume and
--eval) the checkpoint's config, then the flags given on the command line. The output
directory gets config.json, metrics.jsonl (one JSON object per epoch), last.pt, best.pt,
curves.png and TensorBoard events; a run holds a lock on it. Exit codes: 0 done; 2 bad
arguments or unusable files (one line on stderr); 3 the training loss stopped being finite;
4 a distributed collective failed; 130 SIGINT; 143 SIGTERM.
"""
import argparse
import contextlib
import json
import math
import os
import signal
import sys
import time

from . import runio
from .data import DATASETS, DataError, dataset_info
from .models import ARCHS, TORCHVISION_PREFIX, architecture
from .presets import PRESETS, format_presets, get_preset

PROG = "ftprop-train"
LOSSES = ("crossent", "hinge", "sqhinge", "trunc_hinge")
OPTIMIZERS = ("sgd", "adam", "rmsprop")
DEVICES = ("auto", "cpu", "cuda")
CHECKPOINT_FORMAT = runio.CHECKPOINT_FORMAT
EXIT_USAGE, EXIT_DIVERGED, EXIT_DISTRIBUTED, EXIT_SIGINT, EXIT_SIGTERM = 2, 3, 4, 130, 143

# The no-argument run: the paper's convnet4 settings (Adam, lr 2.5e-4, wd 5e-4, batch 64, no BN)
# on the embedded 5k MNIST digits, for a few epochs so that it ends in minutes on two CPU cores.
# bn=None means the architecture's own default (models.ARCHITECTURES).
DEFAULTS = dict(
    arch="convnet4", nonlin="step", rule="soft_hinge", grad_scale=True, bn=None,
    dataset="mnist5k", data_root=None, download=False, train_limit=None, test_limit=None,
    epochs=3, batch_size=64, test_batch_size=256,
    opt="adam", lr=2.5e-4, momentum=0.9, weight_decay=5e-4, lr_decay=0.1, lr_decay_epochs=[],
    loss="crossent", seed=1, backend="auto", device="auto", workers=None,
    compile=False, amp=False, diagnostics=False, memory="lean",
)
# What a resumed or evaluated checkpoint's config must hold: key -> (types, description).
_NONE, _NUM = type(None), (int, float)
CONFIG_TYPES = {
    **{k: (str, "a name") for k in ("arch", "nonlin", "dataset", "opt", "loss", "backend",
                                    "device")},
    "rule": ((str, _NONE), "a rule name or null"), "bn": (bool, "true or false"),
    "data_root": ((str, _NONE), "a path or null"),
    **{k: (bool, "true or false") for k in ("grad_scale", "download", "compile", "amp",
                                            "diagnostics")},
    **{k: ((int, _NONE), "an integer or null") for k in ("train_limit", "test_limit", "workers")},
    **{k: (int, "an integer") for k in ("epochs", "batch_size", "test_batch_size", "seed")},
    **{k: (_NUM, "a number") for k in ("lr", "momentum", "weight_decay", "lr_decay")},
    "lr_decay_epochs": (list, "a list of epochs"),
}
# What a --resume may change (the rest defines the run being continued); --eval also the data.
RESUME_MUTABLE = {"epochs", "data_root", "download", "workers", "backend", "device", "compile",
                  "amp", "diagnostics", "test_batch_size", "memory"}
EVAL_MUTABLE = RESUME_MUTABLE | {"dataset", "test_limit"}


class UsageError(Exception):
    """A bad argument or an unusable input: reported in one line, exit code 2."""


class Diverged(Exception):
    """The training loss stopped being finite: the run stops, exit code 3."""


class Terminated(BaseException):
    """SIGTERM arrived (Slurm, Kubernetes): handled like SIGINT, exit code 143. A BaseException,
    as KeyboardInterrupt, so that no `except Exception` on the way swallows it."""


# ---------------------------------------------------------------------------------------------
# Command line (torch-free: a bad flag is reported before torch is imported)
# ---------------------------------------------------------------------------------------------
class _LazyChoices:
    """argparse choices whose names live in modules that import torch: loaded only when the
    flag is given (or --help lists them)."""

    def __init__(self, load):
        self._load = load

    def __contains__(self, value):
        return value in self._load()

    def __iter__(self):
        return iter(self._load())


def _rule_names():
    from .rules import ALL_RULES  # the torch-free rule registry
    return ALL_RULES


def _nonlin_names():
    from .models.nonlins import NONLINS
    return NONLINS


def _backend_names():
    from .functional import BACKENDS
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


def _int_at_least(low, what):
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < low:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value
    return parse


_positive_int = _int_at_least(1, "a positive integer")
_nonneg_int = _int_at_least(0, "an integer >= 0")


def _float_at_least(low, strict):
    def parse(text):
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}")
        if not math.isfinite(value) or value < low or (strict and value == low):
            raise argparse.ArgumentTypeError(
                f"expected a number {'>' if strict else '>='} {low:g}, got {text!r}")
        return value
    return parse


def _epoch_list(text):
    out = []
    for part in text.replace(",", " ").split():
        out.append(_positive_int(part))
    return out


def build_parser():
    S = argparse.SUPPRESS  # config flags default to "not given", so presets can fill them in
    p = _Parser(prog=PROG, description=__doc__.split("\n")[0].split(": ", 1)[1],
                formatter_class=argparse.RawDescriptionHelpFormatter,
                epilog="Presets (--list-presets for the table): " + ", ".join(PRESETS))
    m = p.add_argument_group("model")
    m.add_argument("--arch", type=_arch, default=S, metavar="ARCH",
                   help=f"network: {', '.join(ARCHS)}, or {TORCHVISION_PREFIX}NAME "
                        "(default: convnet4)")
    m.add_argument("--nonlin", choices=_LazyChoices(_nonlin_names), default=S, metavar="NONLIN",
                   help="hidden unit: step (+-1), step01, qrelu (2-bit), qrelu5, relu, threshrelu "
                        "(default: step)")
    m.add_argument("--rule", choices=_LazyChoices(_rule_names), default=S, metavar="RULE",
                   help="targetprop rule of the hard-threshold units (default: soft_hinge = "
                        "FTP-SH); relu and threshrelu have none")
    m.add_argument("--grad-scale", action=argparse.BooleanOptionalAction, default=S,
                   help="weight each unit's loss by |grad| (FTPROP-MB, default); --no-grad-scale: "
                        "unweighted mode")
    m.add_argument("--bn", action=argparse.BooleanOptionalAction, default=S,
                   help="batch norm (default: the architecture's: off for convnet4, on otherwise)")
    m.add_argument("--backend", choices=_LazyChoices(_backend_names), default=S,
                   metavar="BACKEND", help="ops backend: auto, kernel, reference (default: auto)")
    m.add_argument("--memory", choices=("lean", "standard"), default=S,
                   help="what a training forward keeps for the backward: lean (default) rebuilds "
                        "unit outputs, batch-norm outputs and max-pool indices in the backward, "
                        "with bitwise-identical results; standard keeps what each layer saves")
    d = p.add_argument_group("data")
    d.add_argument("--dataset", choices=DATASETS, default=S, help="(default: mnist5k)")
    d.add_argument("--data-root", default=S, metavar="DIR",
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
    o = p.add_argument_group("optimisation")
    o.add_argument("--epochs", type=_positive_int, default=S, help="(default: 3)")
    o.add_argument("--batch-size", type=_positive_int, default=S,
                   help="global batch size, split across processes (default: 64)")
    o.add_argument("--test-batch-size", type=_positive_int, default=S, help="(default: 256)")
    o.add_argument("--opt", choices=OPTIMIZERS, default=S, help="(default: adam)")
    o.add_argument("--lr", type=_float_at_least(0, True), default=S, help="(default: 2.5e-4)")
    o.add_argument("--momentum", type=_float_at_least(0, False), default=S,
                   help="SGD momentum (default: 0.9)")
    o.add_argument("--weight-decay", type=_float_at_least(0, False), default=S,
                   help="L2 weight decay (default: 5e-4)")
    o.add_argument("--lr-decay", type=_float_at_least(0, True), default=S,
                   help="factor applied at each of --lr-decay-epochs (default: 0.1)")
    o.add_argument("--lr-decay-epochs", type=_epoch_list, nargs="*", default=S, metavar="E",
                   help="1-based epochs at whose start the rate is multiplied by --lr-decay")
    o.add_argument("--loss", choices=LOSSES, default=S, help="output loss (default: crossent)")
    o.add_argument("--seed", type=int, default=S, help="(default: 1)")
    r = p.add_argument_group("run")
    r.add_argument("--preset", metavar="NAME", help="a paper experiment (see --list-presets)")
    r.add_argument("--list-presets", action="store_true", help="print the presets and exit")
    r.add_argument("--out", metavar="DIR",
                   help="output folder, locked while the run lives (default: a new folder "
                        "runs/<time>-<dataset>-<arch>-<nonlin>[-N]; with --resume: the "
                        "checkpoint's folder)")
    r.add_argument("--resume", metavar="PATH", help="continue training from a last.pt")
    r.add_argument("--eval", metavar="PATH", help="evaluate a checkpoint on the test set and exit")
    r.add_argument("--device", choices=DEVICES, default=S, help="(default: cuda when available)")
    r.add_argument("--compile", action="store_true", default=S, help="wrap the model in torch.compile")
    r.add_argument("--amp", action="store_true", default=S, help="bf16 autocast (CUDA only)")
    r.add_argument("--diagnostics", action="store_true", default=S,
                   help="log per-layer target statistics of the hard-threshold units")
    r.add_argument("--dist-timeout", type=_float_at_least(0, True), default=300.0,
                   metavar="SECONDS", help="with torchrun: how long a collective waits for a "
                   "silent process before the run fails with exit code 4 (default: 300)")
    r.add_argument("--no-tensorboard", dest="tensorboard", action="store_false",
                   help="do not write TensorBoard events")
    r.add_argument("--quiet", action="store_true",
                   help="no progress bars or per-epoch lines, only the final line")
    return p


def _flatten_epochs(value):
    # nargs="*" with a list-valued type gives a list of lists
    return sorted({e for part in value for e in (part if isinstance(part, list) else [part])})


def _is_hard_threshold(nonlin):
    from .models.nonlins import is_hard_threshold
    return is_hard_threshold(nonlin)


def resolve_config(args, checkpoint=None, notes=None):
    """The run's config dict from defaults, preset, checkpoint and explicit flags.
    Lines the user should read (not errors) are appended to `notes` when given."""
    explicit = {k: v for k, v in vars(args).items() if k in DEFAULTS}
    if "lr_decay_epochs" in explicit:
        explicit["lr_decay_epochs"] = _flatten_epochs(explicit["lr_decay_epochs"])
    cfg = dict(DEFAULTS)
    if args.preset is not None:
        if checkpoint is not None:
            raise UsageError("--preset cannot be combined with --resume or --eval "
                             "(the checkpoint holds the run's settings)")
        try:
            cfg.update(get_preset(args.preset))
        except ValueError as exc:
            raise UsageError(str(exc))
    if checkpoint is not None:
        saved = checkpoint["config"]
        cfg.update({k: v for k, v in saved.items() if k in DEFAULTS})
        mutable = EVAL_MUTABLE if args.eval else RESUME_MUTABLE
        flag = "--eval" if args.eval else "--resume"
        for key, value in explicit.items():
            if key not in mutable and value != saved.get(key) \
                    and not (key == "rule" and saved.get(key) is None):
                raise UsageError(
                    f"--{key.replace('_', '-')} cannot be changed with {flag} "
                    f"(the checkpoint's run used {saved.get(key)!r})"
                )
    cfg.update(explicit)
    try:
        record = architecture(cfg["arch"])
    except ValueError as exc:
        raise UsageError(str(exc))
    if cfg["bn"] is None:
        cfg["bn"] = record.default_bn
    if record.needs_bn and not cfg["bn"]:
        raise UsageError(f"--no-bn is not supported for --arch {cfg['arch']} (it needs batch norm)")
    if cfg["rule"] is not None:
        try:
            from .models.units import check_unit_args
            check_unit_args(cfg["nonlin"], cfg["rule"], cfg["grad_scale"], cfg["backend"])
        except ValueError as exc:
            raise UsageError(str(exc))
    if not _is_hard_threshold(cfg["nonlin"]):
        # full-precision units have no targetprop rule: config.json says so instead of a name
        if "rule" in explicit and notes is not None:
            notes.append(f"{PROG}: note: --rule {explicit['rule']} has no effect with --nonlin "
                         f"{cfg['nonlin']} (no hard-threshold units); the config records rule null")
        cfg["rule"] = None
    if checkpoint is not None and not args.eval and checkpoint["epoch"] > cfg["epochs"]:
        raise UsageError(f"checkpoint {args.resume} is at epoch {checkpoint['epoch']}: --epochs "
                         f"must be > {checkpoint['epoch']} to continue (got {cfg['epochs']})")
    return cfg


# ---------------------------------------------------------------------------------------------
# Training pieces
# ---------------------------------------------------------------------------------------------
def output_loss(name):
    """The loss on the network's output: cross-entropy or a multiclass hinge (released code)."""
    import torch.nn.functional as F

    if name == "crossent":
        return F.cross_entropy

    def margins(out, target):
        return 1 - (F.one_hot(target, out.shape[1]).mul(2).sub(1).float() * out)

    if name == "hinge":
        return lambda out, target: margins(out, target).clamp(min=0).sum(1).mean()
    if name == "sqhinge":
        return lambda out, target: margins(out, target).clamp(min=0).pow(2).sum(1).mean()
    if name == "trunc_hinge":
        return lambda out, target: margins(out, target).clamp(0, 2).sum(1).mean()
    raise UsageError(f"loss must be one of {', '.join(LOSSES)}; got {name!r}")


def make_optimizer(cfg, params):
    import torch

    if cfg["opt"] == "sgd":
        return torch.optim.SGD(params, lr=cfg["lr"], momentum=cfg["momentum"],
                               weight_decay=cfg["weight_decay"])
    if cfg["opt"] == "adam":
        return torch.optim.Adam(params, lr=cfg["lr"], weight_decay=cfg["weight_decay"])
    # RMSprop without momentum, as the released code
    return torch.optim.RMSprop(params, lr=cfg["lr"], weight_decay=cfg["weight_decay"])


def make_scheduler(cfg, optimizer):
    import torch

    # Epoch e (1-based) runs after e - 1 scheduler steps, so a decay "at the start of epoch m"
    # is a MultiStepLR milestone at m - 1.
    return torch.optim.lr_scheduler.MultiStepLR(
        optimizer, milestones=[m - 1 for m in cfg["lr_decay_epochs"]], gamma=cfg["lr_decay"])


class _Dist:
    def __init__(self, world, rank, device):
        self.world, self.rank, self.device = world, rank, device

    @property
    def main(self):
        return self.rank == 0

    def all_reduce(self, tensor, op=None):
        if self.world > 1:
            import torch.distributed as dist

            tensor = tensor.to(self.device)
            dist.all_reduce(tensor, op=op or dist.ReduceOp.SUM)
        return tensor

    def finite(self, loss):
        """Whether every process's loss is finite (one flag reduced per step under DDP, so that
        all processes stop at the same step)."""
        import torch
        import torch.distributed as dist

        if self.world == 1:
            return bool(torch.isfinite(loss))
        bad = (~torch.isfinite(loss.detach())).to(torch.int32).reshape(1)
        return not bool(self.all_reduce(bad, dist.ReduceOp.MAX))


def _init_distributed(cfg, timeout_s):
    import datetime

    import torch
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if cfg["device"] == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device is available")
    use_cuda = cfg["device"] == "cuda" or (cfg["device"] == "auto" and torch.cuda.is_available())
    if use_cuda:
        if local_rank >= torch.cuda.device_count():
            raise UsageError(f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} GPUs")
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    if cfg["batch_size"] % world:
        raise UsageError(f"--batch-size {cfg['batch_size']} must be divisible by the number of "
                         f"processes ({world})")
    if world > 1:
        # without a timeout a stopped peer leaves the others waiting in a collective forever
        dist.init_process_group("nccl" if use_cuda else "gloo",
                                timeout=datetime.timedelta(seconds=timeout_s))
    return _Dist(world, rank, device)


def _loader(dataset, batch, shuffle, seed, d, workers, drop_single=False):
    """A DataLoader over this rank's share: shuffled by a seeded DistributedSampler (set_epoch),
    or, for testing, every world-th example starting at the rank (no padding, exact sums).
    drop_single drops a last batch of one example (batch norm cannot train on it)."""
    import torch

    if shuffle:
        sampler = torch.utils.data.DistributedSampler(
            dataset, num_replicas=d.world, rank=d.rank, shuffle=True, seed=seed)
    else:
        sampler = list(range(d.rank, len(dataset), d.world))
    drop_last = drop_single and len(sampler) % batch == 1
    if isinstance(dataset, torch.utils.data.TensorDataset):
        # in memory: index whole batches at once instead of collating examples one by one
        batches = torch.utils.data.BatchSampler(sampler, batch, drop_last=drop_last)
        return torch.utils.data.DataLoader(dataset, sampler=batches, batch_size=None), sampler
    if workers is None:
        workers = min(8, os.cpu_count() or 1)
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch, sampler=sampler, num_workers=workers, drop_last=drop_last,
        pin_memory=d.device.type == "cuda", persistent_workers=workers > 0), sampler


def _topk_correct(out, target, ks):
    top = out.topk(min(max(ks), out.shape[1]), dim=1).indices
    hits = top == target.unsqueeze(1)
    return [hits[:, :k].any(1).sum() for k in ks]


def _progress(iterable, desc, enabled):
    if not enabled:
        return iterable
    from tqdm import tqdm
    return tqdm(iterable, desc=desc, leave=False, dynamic_ncols=True, file=sys.stderr)


def run_epoch(model, loader, loss_fn, d, amp, optimizer=None, bar=False, desc=""):
    """Trains (with an optimizer) or evaluates; returns float64 sums [loss, top1, top5, count].
    Training raises Diverged at the first step whose loss is not finite, before that step
    updates the weights."""
    import torch

    training = optimizer is not None
    model.train(training)
    sums = torch.zeros(4, dtype=torch.float64, device=d.device)
    items = _progress(loader, desc, bar)
    with torch.set_grad_enabled(training):
        for step, (x, y) in enumerate(items):
            x = x.to(d.device, non_blocking=True)
            y = y.to(d.device, non_blocking=True)
            with amp():
                out = model(x)
            loss = loss_fn(out.float(), y)
            if training:
                if not d.finite(loss):
                    raise Diverged(f"step {step + 1} of {len(loader)}")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            with torch.no_grad():
                top1, top5 = _topk_correct(out, y, (1, 5))
                n = y.numel()
                sums += torch.stack([loss.detach().double() * n, top1.double(), top5.double(),
                                     torch.tensor(float(n), dtype=torch.float64, device=d.device)])
            if bar and step % 20 == 0:
                items.set_postfix(loss=f"{loss.item():.4f}")
    return sums


def _metrics(sums, prefix):
    loss, top1, top5, n = sums.tolist()
    n = max(n, 1.0)
    return {f"{prefix}_loss": loss / n, f"{prefix}_top1": 100.0 * top1 / n,
            f"{prefix}_top5": 100.0 * top5 / n}


def _amp_context(cfg, device, say):
    import torch

    if cfg["amp"] and device.type != "cuda":
        say(f"{PROG}: note: --amp uses bf16 autocast on CUDA only; running in float32 on the CPU")
    if cfg["amp"] and device.type == "cuda":
        return lambda: torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext


def _build(cfg, info, say):
    from .models import build_model_with_notes

    try:
        net, notes = build_model_with_notes(
            cfg["arch"], cfg["nonlin"], cfg["rule"], cfg["grad_scale"],
            num_classes=info.num_classes, in_channels=info.in_channels,
            image_size=info.image_size, bn=cfg["bn"], backend=cfg["backend"],
            memory=cfg.get("memory", "lean"))
    except ValueError as exc:
        raise UsageError(f"{exc} (dataset {info.name}: {info.in_channels}x{info.image_size}x"
                         f"{info.image_size} images)")
    for line in notes:
        say(f"{PROG}: note: {line}")
    return net


def _load_state(module, state, what, path):
    try:
        module.load_state_dict(state)
    except (RuntimeError, ValueError, KeyError, TypeError, IndexError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UsageError(f"checkpoint {path} does not fit this {what}: {first}")


def _fmt_record(rec, epochs):
    line = (f"epoch {rec['epoch']}/{epochs}  lr {rec['lr']:.3g}  "
            f"train loss {rec['train_loss']:.4f} top-1 {rec['train_top1']:.2f}%  "
            f"test loss {rec['test_loss']:.4f} top-1 {rec['test_top1']:.2f}%")
    if "test_top5" in rec:
        line += f" top-5 {rec['test_top5']:.2f}%"
    return line + f"  ({rec['seconds']:.1f} s)"


def _timestamp():
    return time.strftime("%Y%m%d-%H%M%S")


def _default_name(cfg):
    name = f"{_timestamp()}-{cfg['dataset']}-{cfg['arch']}-{cfg['nonlin']}"
    if cfg["rule"] is not None:
        name += f"-{cfg['rule']}" + ("" if cfg["grad_scale"] else "-unweighted")
    return name.replace(TORCHVISION_PREFIX, "tv-")


def _open_run_folder(cfg, args):
    """The locked output folder, checked before any data is loaded."""
    out = args.out or (os.path.dirname(os.path.abspath(args.resume)) if args.resume else None)
    try:
        return runio.open_run_folder(out, "runs", _default_name(cfg))
    except runio.RunIOError as exc:
        raise UsageError(str(exc))


def _has_batch_norm(net):
    import torch
    return any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in net.modules())


class _State:
    """The pieces of a training run: network, wrapped model, optimizer, scheduler, loaders,
    history and best epoch, restored from a checkpoint when resuming."""

    def __init__(self, cfg, args, ckpt, d, say, train_set, test_set, info):
        import torch

        runio.seed_everything(cfg["seed"])
        self.net = _build(cfg, info, say).to(d.device)
        self.optimizer = make_optimizer(cfg, self.net.parameters())
        self.scheduler = make_scheduler(cfg, self.optimizer)
        self.start, self.history, self.best = 1, [], None
        self.invocations = list(ckpt.get("invocations", [])) if ckpt is not None else []
        if ckpt is not None:
            self._restore(cfg, args.resume, ckpt, d, say)
        elif d.rank:
            runio.seed_everything(cfg["seed"] + d.rank)  # distinct dropout/augmentation streams
        from .diagnostics import Diagnostics
        self.diagnostics = Diagnostics(self.net) if cfg["diagnostics"] else None
        if self.diagnostics is not None and not self.diagnostics.units:
            say(f"{PROG}: note: --diagnostics: nonlin {cfg['nonlin']} has no hard-threshold units")
        self.model = self.net
        lean_compile = cfg["compile"] and cfg.get("memory", "lean") == "lean"
        if lean_compile and d.device.type == "cpu":  # before DDP records the parameters' layout
            from .memory import params_channels_last
            params_channels_last(self.net)
        if d.world > 1:
            self.model = torch.nn.parallel.DistributedDataParallel(
                self.net, device_ids=[d.device.index] if d.device.type == "cuda" else None)
        if cfg["compile"]:
            if lean_compile:  # a graph that keeps less for the backward
                from .memory import compile_lean
                self.model = compile_lean(self.model)
            else:
                self.model = torch.compile(self.model)
        per_rank = cfg["batch_size"] // d.world
        drop = _has_batch_norm(self.net)
        self.train_loader, self.train_sampler = _loader(train_set, per_rank, True, cfg["seed"], d,
                                                        cfg["workers"], drop_single=drop)
        if drop and len(self.train_sampler) % per_rank == 1:
            say(f"{PROG}: note: the last training batch of each epoch would hold one example, "
                "which batch norm cannot train on: it is left out")
        self.test_loader, _ = _loader(test_set, cfg["test_batch_size"], False, cfg["seed"], d,
                                      cfg["workers"])

    def _restore(self, cfg, path, ckpt, d, say):
        _load_state(self.net, ckpt["model"], "model", path)
        _load_state(self.optimizer, ckpt["optimizer"], "optimizer", path)
        _load_state(self.scheduler, ckpt["scheduler"], "scheduler", path)
        self.start, self.history = ckpt["epoch"] + 1, list(ckpt["history"])
        self.best = ckpt.get("best")
        rng = ckpt["rng"]
        if len(rng) == d.world:
            try:
                runio.set_rng_state(rng[d.rank], path)
            except runio.RunIOError as exc:
                raise UsageError(str(exc))
        else:
            say(f"{PROG}: note: checkpoint written by {len(rng)} processes, resuming with "
                f"{d.world}: random streams are reseeded")
            runio.seed_everything(cfg["seed"] * 1000 + ckpt["epoch"] * 10 + d.rank)

    def record(self, epoch, lr, sums, d, top5):
        rec = {"epoch": epoch, "lr": lr, **_metrics(sums[:4], "train"),
               **_metrics(sums[4:], "test")}
        del rec["train_top5"]
        if not top5:
            del rec["test_top5"]
        if self.diagnostics is not None:
            rec["diagnostics"] = self.diagnostics.summary(lambda t: d.all_reduce(t).cpu())
        return rec

    def rng_states(self, d):
        import torch.distributed as dist

        rng = runio.rng_state()
        if d.world == 1:
            return [rng]
        gathered = [None] * d.world
        dist.all_gather_object(gathered, rng)
        return gathered

    def save(self, out, cfg, rec, rng):
        """Writes the epoch's checkpoints (best.pt when it is the best so far), metrics, curves."""
        epoch = rec["epoch"]
        is_best = self.best is None or rec["test_top1"] > self.best["test_top1"]
        if is_best:
            self.best = {"epoch": epoch, "test_top1": rec["test_top1"]}
        state = {"format": CHECKPOINT_FORMAT, "config": cfg, "epoch": epoch,
                 "model": self.net.state_dict(), "history": self.history, "best": self.best,
                 "invocations": self.invocations}
        if is_best:
            runio.save_checkpoint(os.path.join(out, "best.pt"), state)
        runio.save_checkpoint(os.path.join(out, "last.pt"), {
            **state, "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "rng": rng})
        runio.write_text(os.path.join(out, "metrics.jsonl"),
                         "".join(runio.dumps(h) + "\n" for h in self.history))
        runio.plot_curves(os.path.join(out, "curves.png"), self.history)


def _write_config(out, cfg, args, d, s, train_set, test_set):
    """config.json: the settings and every invocation of the run (the first command line and
    each resume's), the latest also as "runtime"."""
    import datetime

    from . import build_info

    runtime = {"preset": args.preset, "resumed_from": args.resume, "argv": sys.argv[1:],
               "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
               "start_epoch": s.start, "device": str(d.device), "world_size": d.world,
               "build": build_info(), "train_examples": len(train_set),
               "test_examples": len(test_set)}
    # plain JSON types only: checkpoints are read back with torch.load(weights_only=True)
    runtime = json.loads(runio.dumps(runtime, default=str))
    s.invocations.append(runtime)
    runio.write_text(os.path.join(out, "config.json"), runio.dumps(
        {**cfg, "runtime": runtime, "invocations": s.invocations}, indent=2, default=str) + "\n")


def train(cfg, args, ckpt, d, say):
    """The training loop; returns the exit code."""
    import torch

    from .data import load_dataset

    show = d.main and not args.quiet
    out, lock = _open_run_folder(cfg, args) if d.main else (None, None)
    board = s = None
    try:
        train_set, test_set, info = load_dataset(cfg["dataset"], cfg["data_root"],
                                                 cfg["download"], cfg["train_limit"],
                                                 cfg["test_limit"])
        s = _State(cfg, args, ckpt, d, say, train_set, test_set, info)
        amp, loss_fn = _amp_context(cfg, d.device, say), output_loss(cfg["loss"])
        if d.main:
            _write_config(out, cfg, args, d, s, train_set, test_set)
            board = runio.TensorBoard(out, args.tensorboard, s.start)
            if show:
                say(f"{PROG}: {cfg['arch']} / {cfg['nonlin']}"
                    + (f" / {cfg['rule']}" if cfg["rule"] is not None else "")
                    + f" on {cfg['dataset']} ({len(train_set)} train, {len(test_set)} test), "
                    f"{d.device}{f' x{d.world}' if d.world > 1 else ''}, epochs {s.start}.."
                    f"{cfg['epochs']} -> {out}")
        for epoch in range(s.start, cfg["epochs"] + 1):
            began, lr = time.perf_counter(), s.optimizer.param_groups[0]["lr"]
            s.train_sampler.set_epoch(epoch)
            if s.diagnostics is not None:
                s.diagnostics.reset()
            try:
                tr = run_epoch(s.model, s.train_loader, loss_fn, d, amp, s.optimizer,
                               show and sys.stderr.isatty(), f"epoch {epoch}/{cfg['epochs']}")
            except Diverged as exc:
                kept = f"; last.pt keeps epoch {epoch - 1}" if epoch > 1 else ""
                raise Diverged(f"the training loss is not finite at epoch {epoch}, {exc}: "
                               f"stopped (lower --lr?){kept}")
            s.scheduler.step()
            te = run_epoch(s.model, s.test_loader, loss_fn, d, amp)
            rec = s.record(epoch, lr, d.all_reduce(torch.cat([tr, te])).cpu(), d, info.top5)
            rng = s.rng_states(d)
            rec["seconds"] = round(time.perf_counter() - began, 3)
            s.history.append(rec)
            if d.main:
                s.save(out, cfg, rec, rng)
                board.log(rec)
                if show:
                    print(_fmt_record(rec, cfg["epochs"]), flush=True)
    finally:
        if board is not None:
            board.close()
        if s is not None and s.diagnostics is not None:
            s.diagnostics.remove()
        if lock is not None:
            lock.release()
    if d.main:
        last, best = s.history[-1], s.best
        print(f"final test top-1 {last['test_top1']:.2f}% after epoch {last['epoch']} "
              f"(best {best['test_top1']:.2f}% at epoch {best['epoch']}); outputs in {out}",
              flush=True)
    return 0


def evaluate(cfg, args, ckpt, d, say):
    from .data import load_dataset

    train_set, test_set, info = load_dataset(cfg["dataset"], cfg["data_root"], cfg["download"],
                                             1, cfg["test_limit"])
    del train_set
    net = _build(cfg, info, say).to(d.device)
    _load_state(net, ckpt["model"], "model", args.eval)
    model = net
    if cfg["compile"]:
        import torch
        model = torch.compile(net)
    loader, _ = _loader(test_set, cfg["test_batch_size"], False, cfg["seed"], d, cfg["workers"])
    sums = d.all_reduce(run_epoch(model, loader, output_loss(cfg["loss"]), d,
                                  _amp_context(cfg, d.device, say))).cpu()
    m = _metrics(sums, "test")
    if d.main:
        line = (f"eval {args.eval} (epoch {ckpt['epoch']}) on {cfg['dataset']} "
                f"({len(test_set)} examples): test loss {m['test_loss']:.4f}")
        if info.top5:
            line += f", test top-5 {m['test_top5']:.2f}%"
        print(line + f", test top-1 {m['test_top1']:.2f}%", flush=True)
    return 0


def _load_checkpoint(path, need_optimizer):
    try:
        return runio.load_checkpoint(path, CONFIG_TYPES, need_optimizer)
    except runio.RunIOError as exc:
        raise UsageError(str(exc))


def _on_sigterm(signum, frame):
    raise Terminated()


def main(argv=None):
    """Entry point of ftprop-train; returns the exit code (see the module docstring)."""
    d = None
    rank0 = os.environ.get("RANK", "0") == "0"
    say = (lambda msg: print(msg, file=sys.stderr, flush=True)) if rank0 else (lambda msg: None)
    try:
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    except ValueError:  # not the main thread: signals stay as they are
        previous = None
    try:
        args = build_parser().parse_args(argv)
        if args.list_presets:
            print(format_presets())
            return 0
        if args.resume and args.eval:
            raise UsageError("--resume and --eval cannot be combined")
        if not (args.resume or args.eval):
            notes = []
            cfg = resolve_config(args, None, notes)  # before torch: bad flags are reported fast
        ckpt = None
        if args.resume or args.eval:
            ckpt = _load_checkpoint(args.resume or args.eval, need_optimizer=bool(args.resume))
            notes = []
            cfg = resolve_config(args, ckpt, notes)
        for line in notes:
            say(line)
        if args.resume and ckpt["epoch"] == cfg["epochs"]:
            # a finished run resumed again (a re-run sweep, say): nothing to train, nothing written
            say(f"{PROG}: nothing to do: checkpoint {args.resume} is already at epoch "
                f"{ckpt['epoch']} = --epochs; pass --epochs N > {ckpt['epoch']} to train on")
            return 0
        d = _init_distributed(cfg, args.dist_timeout)
        return (evaluate if args.eval else train)(cfg, args, ckpt, d, say)
    except (UsageError, DataError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr, flush=True)
        return EXIT_USAGE
    except Diverged as exc:
        say(f"{PROG}: error: {exc}")
        return EXIT_DIVERGED
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr, flush=True)
        return EXIT_SIGINT
    except Terminated:
        print(f"{PROG}: terminated (SIGTERM)", file=sys.stderr, flush=True)
        return EXIT_SIGTERM
    except RuntimeError as exc:
        if d is None or d.world == 1 or not _is_dist_error(exc):
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"{PROG}: error: rank {d.rank}: a collective with the other processes failed "
              f"(a process stopped answering within --dist-timeout {args.dist_timeout:g} s, or "
              f"ended): {first}", file=sys.stderr, flush=True)
        return EXIT_DISTRIBUTED
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        if d is not None and d.world > 1:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()


def _is_dist_error(exc):
    import torch.distributed as dist

    return isinstance(exc, dist.DistError) or "timed out" in str(exc).lower() \
        or "connection closed" in str(exc).lower()


if __name__ == "__main__":
    sys.exit(main())
