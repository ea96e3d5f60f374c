"""The two things a run does: train (epochs, checkpoints, metrics) and evaluate a checkpoint."""
import math
import sys
import time

from ..runs.names import LAST_FILE
from . import optim
from .errors import PROG, Diverged
from .lean_check import check_lean
from .loop import amp_context, epoch_metrics, make_loader, run_epoch
from .outputs import TensorBoard, format_record, open_output_folder, write_config
from .state import TrainState, build_net, load_state


def _announce(cfg, d, s, out, train_set, test_set, say):
    say(f"{PROG}: {cfg['arch']} / {cfg['nonlin']}"
        + (f" / {cfg['rule']}" if cfg["rule"] is not None else "")
        + f" on {cfg['dataset']} ({len(train_set)} train, {len(test_set)} test), "
        f"{d.device}{f' x{d.world}' if d.world > 1 else ''}, epochs {s.start}.."
        f"{cfg['epochs']} -> {out}")


def _train_epoch(epoch, cfg, s, d, amp, loss_fn, bar, top5):
    """One epoch of training and testing: its record (not yet in the history)."""
    import torch

    began, lr = time.perf_counter(), s.optimizer.param_groups[0]["lr"]
    s.train_sampler.set_epoch(epoch)
    if s.diagnostics is not None:
        s.diagnostics.reset()
    try:
        tr = run_epoch(s.model, s.train_loader, loss_fn, d, amp, s.optimizer, bar,
                       f"epoch {epoch}/{cfg['epochs']}")
    except Diverged as exc:
        kept = f"; {LAST_FILE} keeps epoch {epoch - 1}" if epoch > 1 else ""
        raise Diverged(f"the training loss is not finite at epoch {epoch}, {exc}: "
                       f"stopped (lower --lr?){kept}")
    except RuntimeError as exc:
        if "without overflow" not in str(exc):  # the optimizer's float arithmetic overflowed
            raise
        kept = f"; {LAST_FILE} keeps epoch {epoch - 1}" if epoch > 1 else ""
        raise Diverged(f"the optimizer's update is not finite at epoch {epoch} (a rate "
                       f"beyond float32's range): stopped (lower --lr?){kept}")
    s.scheduler.step()
    te = run_epoch(s.model, s.test_loader, loss_fn, d, amp)
    rec = s.record(epoch, lr, d.all_reduce(torch.cat([tr, te])).cpu(), d, top5)
    _check_finite(rec, epoch)
    return rec, began


def _check_finite(rec, epoch):
    """Diverged when any number of the epoch's record (test loss included) is not finite: the
    epoch is not saved, so the files keep the previous one."""
    bad = [k for k, v in rec.items() if isinstance(v, float) and not math.isfinite(v)]
    if bad:
        kept = f"; {LAST_FILE} keeps epoch {epoch - 1}" if epoch > 1 else ""
        raise Diverged(f"the {bad[0].replace('_', ' ')} is not finite at epoch {epoch}: "
                       f"stopped (lower --lr?){kept}")


def train(cfg, args, ckpt, d, say):
    """The training loop; returns the exit code."""
    from ..data import load_dataset

    show = d.main and not args.quiet
    out, lock = open_output_folder(cfg, args) if d.main else (None, None)
    board = s = None
    try:
        train_set, test_set, info = load_dataset(cfg["dataset"], cfg["data_root"],
                                                 cfg["download"], cfg["train_limit"],
                                                 cfg["test_limit"])
        s = TrainState(cfg, args, ckpt, d, say, train_set, test_set, info)
        amp, loss_fn = amp_context(cfg, d.device, say), optim.output_loss(cfg["loss"])
        check_lean(s, cfg, d, amp, loss_fn, say)
        if d.main:
            write_config(out, cfg, args, d, s, train_set, test_set)
            board = TensorBoard(out, args.tensorboard, s.start)
            if show:
                _announce(cfg, d, s, out, train_set, test_set, say)
        for epoch in range(s.start, cfg["epochs"] + 1):
            rec, began = _train_epoch(epoch, cfg, s, d, amp, loss_fn,
                                      show and sys.stderr.isatty(), info.top5)
            rng = s.rng_states(d)
            rec["seconds"] = round(time.perf_counter() - began, 3)
            s.history.append(rec)
            if d.main:
                s.save(out, cfg, rec, rng)
                board.log(rec)
                if show:
                    print(format_record(rec, cfg["epochs"]), flush=True)
    finally:
        _close(board, s, lock)
    if d.main:
        last, best = s.history[-1], s.best
        print(f"final test top-1 {last['test_top1']:.2f}% after epoch {last['epoch']} "
              f"(best {best['test_top1']:.2f}% at epoch {best['epoch']}); outputs in {out}",
              flush=True)
    return 0


def _close(board, s, lock):
    if board is not None:
        board.close()
    if s is not None and s.diagnostics is not None:
        s.diagnostics.remove()
    if lock is not None:
        lock.release()


def evaluate(cfg, args, ckpt, d, say):
    """Tests a checkpoint's model on the test set and prints one line; returns the exit code."""
    from ..data import load_dataset

    train_set, test_set, info = load_dataset(cfg["dataset"], cfg["data_root"], cfg["download"],
                                             1, cfg["test_limit"])
    del train_set
    net = build_net(cfg, info, say).to(d.device)
    load_state(net, ckpt["model"], "model", args.eval)
    model = net
    if cfg["compile"]:
        import torch
        model = torch.compile(net)
    loader, _ = make_loader(test_set, cfg["test_batch_size"], False, cfg["seed"], d,
                            cfg["workers"])
    sums = d.all_reduce(run_epoch(model, loader, optim.output_loss(cfg["loss"]), d,
                                  amp_context(cfg, d.device, say))).cpu()
    m = epoch_metrics(sums, "test")
    if d.main:
        line = (f"eval {args.eval} (epoch {ckpt['epoch']}) on {cfg['dataset']} "
                f"({len(test_set)} examples): test loss {m['test_loss']:.4f}")
        if info.top5:
            line += f", test top-5 {m['test_top5']:.2f}%"
        print(line + f", test top-1 {m['test_top1']:.2f}%", flush=True)
    return 0
