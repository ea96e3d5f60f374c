"""What a run writes besides checkpoints: its folder (named, locked, never another run's),
config.json, the curves plot, TensorBoard scalars, the per-epoch line, and the completion of a
run stopped between its final checkpoint and its metrics."""
import datetime
import json
import os
import sys
import time

from ..models import TORCHVISION_PREFIX
from ..runs import (RunIOError, atomic, dumps, metrics_text, open_run_folder, write_json,
                    write_text)
from ..runs.names import CONFIG_FILE, CURVES_FILE, DEFAULT_PARENT, METRICS_FILE
from .errors import PROG, UsageError


def timestamp():
    return time.strftime("%Y%m%d-%H%M%S")


def default_name(cfg):
    """The name of a run folder made without --out: time, dataset, arch, nonlin (and rule)."""
    name = f"{timestamp()}-{cfg['dataset']}-{cfg['arch']}-{cfg['nonlin']}"
    if cfg["rule"] is not None:
        name += f"-{cfg['rule']}" + ("" if cfg["grad_scale"] else "-unweighted")
    return name.replace(TORCHVISION_PREFIX, "tv-")


def checkpoint_folder(args):
    """The folder of the checkpoint being resumed (None without --resume)."""
    return os.path.dirname(os.path.abspath(args.resume)) if args.resume is not None else None


def continues_in_place(args):
    """Whether the run writes into the folder of the checkpoint it resumes (its own run)."""
    own = checkpoint_folder(args)
    return own is not None and (args.out is None or
                                os.path.realpath(args.out) == os.path.realpath(own))


def open_output_folder(cfg, args):
    """The locked output folder, checked before any data is loaded: (path, RunLock). A folder
    that holds another run is refused unless --overwrite; stale temporary files are removed."""
    out = args.out if args.out is not None else checkpoint_folder(args)
    try:
        return open_run_folder(out, DEFAULT_PARENT, default_name(cfg),
                               continuing=continues_in_place(args), overwrite=args.overwrite)
    except RunIOError as exc:
        raise UsageError(str(exc))


def complete_finished(cfg, args, ckpt, say):
    """A resume with nothing left to train. When it resumes in place and a kill came between the
    final epoch's last.pt and its metrics, writes the curves and metrics.jsonl from the
    checkpoint's history (bitwise what the run would have written); else writes nothing."""
    epoch = ckpt["epoch"]
    done = (f"{PROG}: nothing to do: checkpoint {args.resume} is already at epoch {epoch} = "
            f"--epochs; pass --epochs N > {epoch} to train on")
    if not continues_in_place(args):
        say(done)
        return 0
    out, lock = open_output_folder(cfg, args)
    try:
        text = metrics_text(ckpt["history"])
        try:
            with open(os.path.join(out, METRICS_FILE), encoding="utf-8") as f:
                complete = f.read() == text
        except (OSError, ValueError):
            complete = False
        if complete:
            say(done)
            return 0
        plot_curves(os.path.join(out, CURVES_FILE), ckpt["history"])
        write_text(os.path.join(out, METRICS_FILE), text)
        say(f"{PROG}: checkpoint {args.resume} is at epoch {epoch} = --epochs, but the run was "
            f"stopped before writing its metrics: {METRICS_FILE} and {CURVES_FILE} completed")
        return 0
    finally:
        lock.release()


def write_config(out, cfg, args, d, s, train_set, test_set):
    """config.json: the settings and every invocation of the run (the first command line and
    each resume's), the latest also as "runtime"."""
    from ..ops import build_info

    runtime = {"preset": args.preset, "resumed_from": args.resume, "argv": sys.argv[1:],
               "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
               "start_epoch": s.start, "device": str(d.device), "world_size": d.world,
               "build": build_info(), "train_examples": len(train_set),
               "test_examples": len(test_set)}
    # plain JSON types only: checkpoints are read back with torch.load(weights_only=True)
    runtime = json.loads(dumps(runtime, default=str))
    s.invocations.append(runtime)
    write_json(os.path.join(out, CONFIG_FILE),
               {**cfg, "runtime": runtime, "invocations": s.invocations}, strict=True, default=str)


def format_record(rec, epochs):
    """The line printed after each epoch."""
    line = (f"epoch {rec['epoch']}/{epochs}  lr {rec['lr']:.3g}  "
            f"train loss {rec['train_loss']:.4f} top-1 {rec['train_top1']:.2f}%  "
            f"test loss {rec['test_loss']:.4f} top-1 {rec['test_top1']:.2f}%")
    if "test_top5" in rec:
        line += f" top-5 {rec['test_top5']:.2f}%"
    return line + f"  ({rec['seconds']:.1f} s)"


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
    atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))


class TensorBoard:
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
