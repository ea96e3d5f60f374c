"""ftprop-train: train hard-threshold networks with FTPROP-MB, the STE family and baselines.

    ftprop-train                                   # convnet4, sign units, FTP-SH, on mnist5k
    ftprop-train --preset convnet4-step-ftpsh --data-root data/cifar10
    torchrun --nproc-per-node 4 -m ftprop_cuda.train --preset resnet18-qrelu-ftpsh --data-root /imagenet

Settings are resolved in this order: built-in defaults, then --preset, then (for --resume and
--eval) the checkpoint's config, then the flags given on the command line. The output
directory gets config.json, metrics.jsonl (one JSON object per epoch), last.pt, best.pt,
curves.png and TensorBoard events. Bad arguments end with one line on stderr and exit code 2.
"""
import argparse
import contextlib
import json
import math
import os
import pickle
import random
import sys
import time

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from . import build_info
from .data import DATASETS, DataError, load_dataset
from .diagnostics import Diagnostics
from .models import ALL_RULES, ARCHS, NONLINS, build_model, check_unit_args, is_hard_threshold
from .presets import PRESETS, format_presets, get_preset

PROG = "ftprop-train"
LOSSES = ("crossent", "hinge", "sqhinge", "trunc_hinge")
OPTIMIZERS = ("sgd", "adam", "rmsprop")
BACKENDS = ("auto", "kernel", "reference")
DEVICES = ("auto", "cpu", "cuda")
CHECKPOINT_FORMAT = "ftprop_cuda.train/1"

# The no-argument run: the paper's convnet4 settings (Adam, lr 2.5e-4, wd 5e-4, batch 64, no BN)
# on the embedded 5k MNIST digits, for a few epochs so that it ends in minutes on two CPU cores.
DEFAULTS = dict(
    arch="convnet4", nonlin="step", rule="soft_hinge", grad_scale=True, bn=None,
    dataset="mnist5k", data_root=None, download=False, train_limit=None, test_limit=None,
    epochs=3, batch_size=64, test_batch_size=256,
    opt="adam", lr=2.5e-4, momentum=0.9, weight_decay=5e-4, lr_decay=0.1, lr_decay_epochs=[],
    loss="crossent", seed=1, backend="auto", device="auto", workers=None,
    compile=False, amp=False, diagnostics=False,
)
# bn=None means the architecture's own default: the paper trains convnet4 without batch norm.
ARCH_DEFAULT_BN = {"convnet4": False, "convnet8": True, "alexnet": True, "resnet18": True,
                   "resnet18_cifar": True}
# What a --resume may change (the rest defines the run being continued); --eval also the data.
RESUME_MUTABLE = {"epochs", "data_root", "download", "workers", "backend", "device", "compile",
                  "amp", "diagnostics", "test_batch_size"}
EVAL_MUTABLE = RESUME_MUTABLE | {"dataset", "test_limit"}


class UsageError(Exception):
    """A bad argument or an unusable input: reported in one line, exit code 2."""


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------
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
    m.add_argument("--arch", choices=ARCHS, default=S, help="network (default: convnet4)")
    m.add_argument("--nonlin", choices=NONLINS, default=S,
                   help="hidden unit: step (+-1), step01, qrelu (2-bit), qrelu5, relu, threshrelu "
                        "(default: step)")
    m.add_argument("--rule", choices=ALL_RULES, default=S,
                   help="targetprop rule of the hard-threshold units (default: soft_hinge = FTP-SH)")
    m.add_argument("--grad-scale", action=argparse.BooleanOptionalAction, default=S,
                   help="weight each unit's loss by |grad| (FTPROP-MB, default); --no-grad-scale: "
                        "unweighted mode")
    m.add_argument("--bn", action=argparse.BooleanOptionalAction, default=S,
                   help="batch norm (default: the architecture's: off for convnet4, on otherwise)")
    m.add_argument("--backend", choices=BACKENDS, default=S, help="ops backend (default: auto)")
    d = p.add_argument_group("data")
    d.add_argument("--dataset", choices=DATASETS, default=S, help="(default: mnist5k)")
    d.add_argument("--data-root", default=S, metavar="DIR",
                   help="dataset folder (default: data/<dataset>; fashion_mnist: "
                        "/usr/share/datasets/fashion-mnist)")
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
                   help="output folder (default: runs/<time>-<dataset>-<arch>-<nonlin>; with "
                        "--resume: the checkpoint's folder)")
    r.add_argument("--resume", metavar="PATH", help="continue training from a last.pt")
    r.add_argument("--eval", metavar="PATH", help="evaluate a checkpoint on the test set and exit")
    r.add_argument("--device", choices=DEVICES, default=S, help="(default: cuda when available)")
    r.add_argument("--compile", action="store_true", default=S, help="wrap the model in torch.compile")
    r.add_argument("--amp", action="store_true", default=S, help="bf16 autocast (CUDA only)")
    r.add_argument("--diagnostics", action="store_true", default=S,
                   help="log per-layer target statistics of the hard-threshold units")
    r.add_argument("--no-tensorboard", dest="tensorboard", action="store_false",
                   help="do not write TensorBoard events")
    r.add_argument("--quiet", action="store_true",
                   help="no progress bars or per-epoch lines, only the final line")
    return p


def _flatten_epochs(value):
    # nargs="*" with a list-valued type gives a list of lists
    return sorted({e for part in value for e in (part if isinstance(part, list) else [part])})


def resolve_config(args, checkpoint=None):
    """The run's config dict from defaults, preset, checkpoint and explicit flags."""
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
            if key not in mutable and value != saved.get(key):
                raise UsageError(
                    f"--{key.replace('_', '-')} cannot be changed with {flag} "
                    f"(the checkpoint's run used {saved.get(key)!r})"
                )
    cfg.update(explicit)
    if cfg["bn"] is None:
        cfg["bn"] = ARCH_DEFAULT_BN[cfg["arch"]]
    try:
        check_unit_args(cfg["nonlin"], cfg["rule"], cfg["grad_scale"], cfg["backend"])
    except ValueError as exc:
        raise UsageError(str(exc))
    if cfg["arch"] in ("resnet18", "resnet18_cifar") and not cfg["bn"]:
        raise UsageError(f"--no-bn is not supported for --arch {cfg['arch']} (ResNets need batch norm)")
    return cfg


# ---------------------------------------------------------------------------------------------
# Checkpoints and files
# ---------------------------------------------------------------------------------------------
def _atomic(path, write):
    """Runs write(tmp_path) and renames the result over path, so readers never see a partial file."""
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _write_text(path, text):
    def write(tmp):
        with open(tmp, "w") as f:
            f.write(text)
    _atomic(path, write)


def save_checkpoint(path, state):
    _atomic(path, lambda tmp: torch.save(state, tmp))


def load_checkpoint(path, need_optimizer):
    if not os.path.isfile(path):
        why = "not a file" if os.path.exists(path) else "no such file"
        raise UsageError(f"cannot read checkpoint {path}: {why}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise UsageError(f"cannot read checkpoint {path}: not a checkpoint that {PROG} wrote "
                         f"(unpickling failed: {str(exc).split('.')[0].strip()[:120]})")
    except Exception as exc:  # any other failure to load also means "not a usable checkpoint"
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        raise UsageError(f"cannot read checkpoint {path}: {type(exc).__name__} {first}".rstrip())
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise UsageError(f"cannot read checkpoint {path}: not an {PROG} checkpoint")
    if need_optimizer and "optimizer" not in ckpt:
        raise UsageError(f"cannot resume from {path}: it holds no optimizer state "
                         "(best.pt keeps only the model; resume from last.pt)")
    return ckpt


def _rng_state():
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python": random.getstate(),
        "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
    }


def _set_rng_state(state):
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))


def _seed_everything(seed):
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)


def plot_curves(path, history):
    """Loss and top-1 per epoch, train and test, in one PNG (matplotlib, no pyplot state)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.ticker import MaxNLocator
    except ImportError:
        return
    epochs = [h["epoch"] for h in history]
    fig = Figure(figsize=(10, 4))
    FigureCanvasAgg(fig)
    for ax, key, label in ((fig.add_subplot(1, 2, 1), "loss", "loss"),
                           (fig.add_subplot(1, 2, 2), "top1", "top-1 (%)")):
        for split, style in (("train", "-o"), ("test", "-s")):
            ax.plot(epochs, [h[f"{split}_{key}"] for h in history], style, label=split, ms=3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    _atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))


class _TensorBoard:
    """TensorBoard scalars when the tensorboard package is installed; a no-op otherwise."""

    def __init__(self, out, enabled, purge_step):
        self.writer = None
        if not enabled:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            return
        self.writer = SummaryWriter(out, purge_step=purge_step)

    def log(self, record):
        if self.writer is None:
            return
        step = record["epoch"]
        for key, value in record.items():
            if key != "epoch" and isinstance(value, (int, float)):
                split, _, name = key.partition("_")
                self.writer.add_scalar(f"{split}/{name}" if name else key, value, step)
        for layer, stats in record.get("diagnostics", {}).items():
            for field, value in stats.items():
                if value is not None:
                    self.writer.add_scalar(f"diagnostics/{layer}/{field}", value, step)
        self.writer.flush()

    def close(self):
        if self.writer is not None:
            self.writer.close()


# ---------------------------------------------------------------------------------------------
# Training pieces
# ---------------------------------------------------------------------------------------------
def _one_hot_pm1(target, n):
    return F.one_hot(target, n).mul(2).sub(1).to(torch.float32)


def output_loss(name):
    """The loss on the network's output: cross-entropy or a multiclass hinge (released code)."""
    if name == "crossent":
        return F.cross_entropy

    def margins(out, target):
        return 1 - _one_hot_pm1(target, out.shape[1]) * out

    if name == "hinge":
        return lambda out, target: margins(out, target).clamp(min=0).sum(1).mean()
    if name == "sqhinge":
        return lambda out, target: margins(out, target).clamp(min=0).pow(2).sum(1).mean()
    if name == "trunc_hinge":
        return lambda out, target: margins(out, target).clamp(0, 2).sum(1).mean()
    raise UsageError(f"loss must be one of {', '.join(LOSSES)}; got {name!r}")


def make_optimizer(cfg, params):
    if cfg["opt"] == "sgd":
        return torch.optim.SGD(params, lr=cfg["lr"], momentum=cfg["momentum"],
                               weight_decay=cfg["weight_decay"])
    if cfg["opt"] == "adam":
        return torch.optim.Adam(params, lr=cfg["lr"], weight_decay=cfg["weight_decay"])
    # RMSprop without momentum, as the released code
    return torch.optim.RMSprop(params, lr=cfg["lr"], weight_decay=cfg["weight_decay"])


def make_scheduler(cfg, optimizer):
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

    def all_reduce(self, tensor):
        if self.world > 1:
            tensor = tensor.to(self.device)
            dist.all_reduce(tensor)
        return tensor


def _init_distributed(cfg):
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
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return _Dist(world, rank, device)


def _loader(dataset, batch, shuffle, seed, d, workers):
    """A DataLoader over this rank's share: shuffled by a seeded DistributedSampler (set_epoch),
    or, for testing, every world-th example starting at the rank (no padding, exact sums)."""
    if shuffle:
        sampler = torch.utils.data.DistributedSampler(
            dataset, num_replicas=d.world, rank=d.rank, shuffle=True, seed=seed)
    else:
        sampler = list(range(d.rank, len(dataset), d.world))
    if isinstance(dataset, torch.utils.data.TensorDataset):
        # in memory: index whole batches at once instead of collating examples one by one
        batches = torch.utils.data.BatchSampler(sampler, batch, drop_last=False)
        return torch.utils.data.DataLoader(dataset, sampler=batches, batch_size=None), sampler
    if workers is None:
        workers = min(8, os.cpu_count() or 1)
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch, sampler=sampler, num_workers=workers,
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


def run_epoch(model, loader, loss_fn, device, amp, optimizer=None, bar=False, desc=""):
    """Trains (with an optimizer) or evaluates; returns float64 sums [loss, top1, top5, count]."""
    training = optimizer is not None
    model.train(training)
    sums = torch.zeros(4, dtype=torch.float64, device=device)
    items = _progress(loader, desc, bar)
    with torch.set_grad_enabled(training):
        for step, (x, y) in enumerate(items):
            x = x.to(device, non_blocking=True)
            y = y.to(device, non_blocking=True)
            with amp():
                out = model(x)
            loss = loss_fn(out.float(), y)
            if training:
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            with torch.no_grad():
                top1, top5 = _topk_correct(out, y, (1, 5))
                n = y.numel()
                sums += torch.stack([loss.detach().double() * n, top1.double(), top5.double(),
                                     torch.tensor(float(n), dtype=torch.float64, device=device)])
            if bar and step % 20 == 0:
                items.set_postfix(loss=f"{loss.item():.4f}")
    return sums


def _metrics(sums, prefix):
    loss, top1, top5, n = sums.tolist()
    n = max(n, 1.0)
    return {f"{prefix}_loss": loss / n, f"{prefix}_top1": 100.0 * top1 / n,
            f"{prefix}_top5": 100.0 * top5 / n}


def _amp_context(cfg, device, say):
    if cfg["amp"] and device.type != "cuda":
        say(f"{PROG}: note: --amp uses bf16 autocast on CUDA only; running in float32 on the CPU")
    if cfg["amp"] and device.type == "cuda":
        return lambda: torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext


def _build(cfg, info):
    try:
        return build_model(cfg["arch"], cfg["nonlin"], cfg["rule"], cfg["grad_scale"],
                           num_classes=info.num_classes, in_channels=info.in_channels,
                           image_size=info.image_size, bn=cfg["bn"], backend=cfg["backend"])
    except ValueError as exc:
        raise UsageError(f"{exc} (dataset {info.name}: {info.in_channels}x{info.image_size}x"
                         f"{info.image_size} images)")


def _load_state(module, state, what, path):
    try:
        module.load_state_dict(state)
    except (RuntimeError, ValueError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0]
        raise UsageError(f"checkpoint {path} does not fit this {what}: {first}")


def _fmt_record(rec, epochs):
    line = (f"epoch {rec['epoch']}/{epochs}  lr {rec['lr']:.3g}  "
            f"train loss {rec['train_loss']:.4f} top-1 {rec['train_top1']:.2f}%  "
            f"test loss {rec['test_loss']:.4f} top-1 {rec['test_top1']:.2f}%")
    if "test_top5" in rec:
        line += f" top-5 {rec['test_top5']:.2f}%"
    return line + f"  ({rec['seconds']:.1f} s)"


def _default_out(cfg):
    name = f"{time.strftime('%Y%m%d-%H%M%S')}-{cfg['dataset']}-{cfg['arch']}-{cfg['nonlin']}"
    if is_hard_threshold(cfg["nonlin"]):
        name += f"-{cfg['rule']}" + ("" if cfg["grad_scale"] else "-unweighted")
    return os.path.join("runs", name)


def train(cfg, args, ckpt, d):
    say = (lambda msg: print(msg, file=sys.stderr, flush=True)) if d.main else (lambda msg: None)
    show = d.main and not args.quiet
    bars = show and sys.stderr.isatty()
    train_set, test_set, info = load_dataset(cfg["dataset"], cfg["data_root"], cfg["download"],
                                             cfg["train_limit"], cfg["test_limit"])
    report_top5 = info.num_classes >= 100

    _seed_everything(cfg["seed"])
    net = _build(cfg, info).to(d.device)
    optimizer = make_optimizer(cfg, net.parameters())
    scheduler = make_scheduler(cfg, optimizer)
    start, history, best = 1, [], None
    if ckpt is not None:
        _load_state(net, ckpt["model"], "model", args.resume)
        _load_state(optimizer, ckpt["optimizer"], "optimizer", args.resume)
        _load_state(scheduler, ckpt["scheduler"], "scheduler", args.resume)
        start, history, best = ckpt["epoch"] + 1, list(ckpt["history"]), ckpt.get("best")
        rng = ckpt["rng"]
        if len(rng) == d.world:
            _set_rng_state(rng[d.rank])
        else:
            say(f"{PROG}: note: checkpoint written by {len(rng)} processes, resuming with "
                f"{d.world}: random streams are reseeded")
            _seed_everything(cfg["seed"] * 1000 + ckpt["epoch"] * 10 + d.rank)
    elif d.rank:
        _seed_everything(cfg["seed"] + d.rank)  # distinct dropout/augmentation streams per rank

    diagnostics = Diagnostics(net) if cfg["diagnostics"] else None
    if diagnostics is not None and not diagnostics.units:
        say(f"{PROG}: note: --diagnostics: nonlin {cfg['nonlin']} has no hard-threshold units")
    model = net
    if d.world > 1:
        model = torch.nn.parallel.DistributedDataParallel(
            net, device_ids=[d.device.index] if d.device.type == "cuda" else None)
    if cfg["compile"]:
        model = torch.compile(model)
    amp = _amp_context(cfg, d.device, say)
    loss_fn = output_loss(cfg["loss"])
    per_rank = cfg["batch_size"] // d.world
    train_loader, train_sampler = _loader(train_set, per_rank, True, cfg["seed"], d, cfg["workers"])
    test_loader, _ = _loader(test_set, cfg["test_batch_size"], False, cfg["seed"], d,
                             cfg["workers"])

    out = args.out or (os.path.dirname(os.path.abspath(args.resume)) if args.resume
                       else _default_out(cfg))
    board = None
    if d.main:
        os.makedirs(out, exist_ok=True)
        runtime = {"preset": args.preset, "resumed_from": args.resume, "argv": sys.argv[1:],
                   "device": str(d.device), "world_size": d.world, "build": build_info(),
                   "train_examples": len(train_set), "test_examples": len(test_set)}
        _write_text(os.path.join(out, "config.json"),
                    json.dumps({**cfg, "runtime": runtime}, indent=2, default=str) + "\n")
        board = _TensorBoard(out, args.tensorboard, start)
        if show:
            say(f"{PROG}: {cfg['arch']} / {cfg['nonlin']}"
                + (f" / {cfg['rule']}" if is_hard_threshold(cfg["nonlin"]) else "")
                + f" on {cfg['dataset']} ({len(train_set)} train, {len(test_set)} test), "
                f"{d.device}{f' x{d.world}' if d.world > 1 else ''}, epochs {start}..{cfg['epochs']}"
                f" -> {out}")

    try:
        for epoch in range(start, cfg["epochs"] + 1):
            began = time.perf_counter()
            lr = optimizer.param_groups[0]["lr"]
            train_sampler.set_epoch(epoch)
            if diagnostics is not None:
                diagnostics.reset()
            tr = run_epoch(model, train_loader, loss_fn, d.device, amp, optimizer, bars,
                           f"epoch {epoch}/{cfg['epochs']}")
            scheduler.step()
            te = run_epoch(model, test_loader, loss_fn, d.device, amp)
            sums = d.all_reduce(torch.cat([tr, te])).cpu()
            rec = {"epoch": epoch, "lr": lr, **_metrics(sums[:4], "train"),
                   **_metrics(sums[4:], "test")}
            del rec["train_top5"]
            if not report_top5:
                del rec["test_top5"]
            if diagnostics is not None:
                rec["diagnostics"] = diagnostics.summary(lambda t: d.all_reduce(t).cpu())
            rng = _rng_state()
            if d.world > 1:
                gathered = [None] * d.world
                dist.all_gather_object(gathered, rng)
                rng = gathered
            else:
                rng = [rng]
            rec["seconds"] = round(time.perf_counter() - began, 3)
            history.append(rec)
            if d.main:
                is_best = best is None or rec["test_top1"] > best["test_top1"]
                if is_best:
                    best = {"epoch": epoch, "test_top1": rec["test_top1"]}
                state = {"format": CHECKPOINT_FORMAT, "config": cfg, "epoch": epoch,
                         "model": net.state_dict(), "history": history, "best": best}
                if is_best:
                    save_checkpoint(os.path.join(out, "best.pt"), state)
                save_checkpoint(os.path.join(out, "last.pt"), {
                    **state, "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(), "rng": rng})
                _write_text(os.path.join(out, "metrics.jsonl"),
                            "".join(json.dumps(h) + "\n" for h in history))
                plot_curves(os.path.join(out, "curves.png"), history)
                board.log(rec)
                if show:
                    print(_fmt_record(rec, cfg["epochs"]), flush=True)
    finally:
        if board is not None:
            board.close()
        if diagnostics is not None:
            diagnostics.remove()
    if d.main:
        if history:
            last = history[-1]
            print(f"final test top-1 {last['test_top1']:.2f}% after epoch {last['epoch']} "
                  f"(best {best['test_top1']:.2f}% at epoch {best['epoch']}); outputs in {out}",
                  flush=True)
        else:
            print("final test top-1: no epoch was run", flush=True)
    return 0


def evaluate(cfg, args, ckpt, d):
    train_set, test_set, info = load_dataset(cfg["dataset"], cfg["data_root"], cfg["download"],
                                             1, cfg["test_limit"])
    del train_set
    net = _build(cfg, info).to(d.device)
    _load_state(net, ckpt["model"], "model", args.eval)
    model = torch.compile(net) if cfg["compile"] else net
    say = (lambda msg: print(msg, file=sys.stderr, flush=True)) if d.main else (lambda msg: None)
    loader, _ = _loader(test_set, cfg["test_batch_size"], False, cfg["seed"], d, cfg["workers"])
    sums = d.all_reduce(run_epoch(model, loader, output_loss(cfg["loss"]), d.device,
                                  _amp_context(cfg, d.device, say))).cpu()
    m = _metrics(sums, "test")
    if d.main:
        line = (f"eval {args.eval} (epoch {ckpt['epoch']}) on {cfg['dataset']} "
                f"({len(test_set)} examples): test loss {m['test_loss']:.4f}")
        if info.num_classes >= 100:
            line += f", test top-5 {m['test_top5']:.2f}%"
        print(line + f", test top-1 {m['test_top1']:.2f}%", flush=True)
    return 0


def main(argv=None):
    """Entry point of ftprop-train; returns the exit code (2 for bad arguments)."""
    d = None
    try:
        args = build_parser().parse_args(argv)
        if args.list_presets:
            print(format_presets())
            return 0
        if args.resume and args.eval:
            raise UsageError("--resume and --eval cannot be combined")
        ckpt = None
        if args.resume or args.eval:
            ckpt = load_checkpoint(args.resume or args.eval, need_optimizer=bool(args.resume))
        cfg = resolve_config(args, ckpt)
        d = _init_distributed(cfg)
        return (evaluate if args.eval else train)(cfg, args, ckpt, d)
    except (UsageError, DataError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr, flush=True)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr, flush=True)
        return 130
    finally:
        if d is not None and d.world > 1 and dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
