"""A training run's pieces (network, wrapped model, optimizer, scheduler, loaders, history, best
epoch), built fresh or restored from a checkpoint, and the checkpoints they are saved to."""
import os

from ..runs import (CHECKPOINT_FORMAT, RunIOError, rng_state, save_checkpoint, seed_everything,
                    set_rng_state, write_metrics)
from ..runs.names import BEST_FILE, CURVES_FILE, LAST_FILE
from .errors import PROG, UsageError
from .loop import epoch_metrics, make_loader
from .optim import make_optimizer, make_scheduler
from .outputs import plot_curves


def build_net(cfg, info, say):
    """The config's network for the data set's images and classes; notes go to say()."""
    from ..models import build_model_with_notes

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


MAX_CAUSE = 600  # characters of a load_state_dict error kept in the one-line message


def load_state(module, state, what, path):
    """module.load_state_dict(state), a mismatch reported as a UsageError naming the file."""
    try:
        module.load_state_dict(state)
    except (RuntimeError, ValueError, KeyError, TypeError, IndexError) as exc:
        # torch's message is a heading line and the causes below it: all of it, on one line
        text = " ".join(str(exc).split()) or type(exc).__name__
        if len(text) > MAX_CAUSE:
            text = text[:MAX_CAUSE - 3].rstrip() + "..."
        raise UsageError(f"checkpoint {path} does not fit this {what}: {text}")


def _has_batch_norm(net):
    import torch
    return any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in net.modules())


def _wrap(net, cfg, d):
    """The model the loop runs: net, under DDP with several processes, compiled with --compile."""
    import torch

    model = net
    lean_compile = cfg["compile"] and cfg.get("memory", "lean") == "lean"
    # compiled on the CPU, both memory modes store the convolution weights channels-last (no
    # compiled copies kept; the same layout, so they train alike), before DDP records layouts
    if cfg["compile"] and d.device.type == "cpu":
        from ..memory import params_channels_last
        params_channels_last(net)
    if d.world > 1:
        model = torch.nn.parallel.DistributedDataParallel(
            net, device_ids=[d.device.index] if d.device.type == "cuda" else None)
    if cfg["compile"]:
        if lean_compile:  # a graph that keeps less for the backward
            from ..memory import compile_lean
            model = compile_lean(model)
        else:
            model = torch.compile(model)
    return model


class TrainState:
    """The pieces of a training run: network, wrapped model, optimizer, scheduler, loaders,
    history and best epoch, restored from a checkpoint when resuming."""

    def __init__(self, cfg, args, ckpt, d, say, train_set, test_set, info):
        seed_everything(cfg["seed"])
        self.net = build_net(cfg, info, say).to(d.device)
        self.optimizer = make_optimizer(cfg, self.net.parameters())
        self.scheduler = make_scheduler(cfg, self.optimizer)
        self.start, self.history, self.best = 1, [], None
        self.invocations = list(ckpt.get("invocations", [])) if ckpt is not None else []
        if ckpt is not None:
            self._restore(cfg, args.resume, ckpt, d, say)
        elif d.rank:
            seed_everything(cfg["seed"] + d.rank)  # distinct dropout/augmentation streams
        from .diagnostics import Diagnostics
        self.diagnostics = Diagnostics(self.net) if cfg["diagnostics"] else None
        if self.diagnostics is not None and not self.diagnostics.units:
            say(f"{PROG}: note: --diagnostics: nonlin {cfg['nonlin']} has no hard-threshold units")
        self.model = _wrap(self.net, cfg, d)
        self._make_loaders(cfg, d, say, train_set, test_set)

    def _make_loaders(self, cfg, d, say, train_set, test_set):
        per_rank = cfg["batch_size"] // d.world
        drop = _has_batch_norm(self.net)
        self.train_loader, self.train_sampler = make_loader(
            train_set, per_rank, True, cfg["seed"], d, cfg["workers"], drop_single=drop)
        if drop and len(self.train_sampler) % per_rank == 1:
            say(f"{PROG}: note: the last training batch of each epoch would hold one example, "
                "which batch norm cannot train on: it is left out")
        self.test_loader, _ = make_loader(test_set, cfg["test_batch_size"], False, cfg["seed"], d,
                                          cfg["workers"])

    def _restore(self, cfg, path, ckpt, d, say):
        load_state(self.net, ckpt["model"], "model", path)
        load_state(self.optimizer, ckpt["optimizer"], "optimizer", path)
        load_state(self.scheduler, ckpt["scheduler"], "scheduler", path)
        self.start, self.history = ckpt["epoch"] + 1, list(ckpt["history"])
        self.best = ckpt.get("best")
        rng = ckpt["rng"]
        if len(rng) == d.world:
            try:
                set_rng_state(rng[d.rank], path)
            except RunIOError as exc:
                raise UsageError(str(exc))
        else:
            say(f"{PROG}: note: checkpoint written by {len(rng)} processes, resuming with "
                f"{d.world}: random streams are reseeded")
            seed_everything((cfg["seed"] * 1000 + ckpt["epoch"] * 10 + d.rank) % 2**63)

    def record(self, epoch, lr, sums, d, top5):
        rec = {"epoch": epoch, "lr": lr, **epoch_metrics(sums[:4], "train"),
               **epoch_metrics(sums[4:], "test")}
        del rec["train_top5"]
        if not top5:
            del rec["test_top5"]
        if self.diagnostics is not None:
            rec["diagnostics"] = self.diagnostics.summary(lambda t: d.all_reduce(t).cpu())
        return rec

    def rng_states(self, d):
        import torch.distributed as dist

        rng = rng_state()
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
            save_checkpoint(os.path.join(out, BEST_FILE), state)
        save_checkpoint(os.path.join(out, LAST_FILE), {
            **state, "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "rng": rng})
        # the metrics last: a run whose metrics.jsonl holds its final epoch has every file
        # written (a resume completes the curves and metrics of a run stopped before them)
        plot_curves(os.path.join(out, CURVES_FILE), self.history)
        write_metrics(out, self.history)
