"""One pass over a data set (training or testing), its loaders, and the metrics it sums."""
import contextlib
import os
import sys

from .errors import PROG, Diverged


def make_loader(dataset, batch, shuffle, seed, d, workers, drop_single=False):
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
                finite = d.finite_check(loss)  # answered after the backward is queued
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if not finite():
                    raise Diverged(f"step {step + 1} of {len(loader)}")
                optimizer.step()
            with torch.no_grad():
                top1, top5 = _topk_correct(out, y, (1, 5))
                n = y.numel()
                count = torch.full((), float(n), dtype=torch.float64, device=d.device)
                sums += torch.stack([loss.detach().double() * n, top1.double(), top5.double(), count])
            if bar and step % 20 == 0:
                items.set_postfix(loss=f"{loss.item():.4f}")
    return sums


def epoch_metrics(sums, prefix):
    """{prefix_loss, prefix_top1, prefix_top5} from run_epoch's sums (accuracies in %)."""
    loss, top1, top5, n = sums.tolist()
    n = max(n, 1.0)
    return {f"{prefix}_loss": loss / n, f"{prefix}_top1": 100.0 * top1 / n,
            f"{prefix}_top5": 100.0 * top5 / n}


def amp_context(cfg, device, say):
    """A context-manager factory: bf16 autocast with --amp on CUDA, else nothing."""
    import torch

    if cfg["amp"] and device.type != "cuda":
        say(f"{PROG}: note: --amp uses bf16 autocast on CUDA only; running in float32 on the CPU")
    if cfg["amp"] and device.type == "cuda":
        return lambda: torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext
