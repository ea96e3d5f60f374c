"""Processes under torchrun: the device of this rank, the process group, and the collectives
the loop needs (sums of metrics, one finite-loss flag per step)."""
import os

from .errors import UsageError


class Dist:
    """This process's place in the run: world size, rank, device."""

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

    def finite_check(self, loss):
        """Starts finite(loss) and returns a callable giving its answer. With one process on
        CUDA, the flag is copied to pinned host memory behind the loss on the stream and the
        callable waits for that copy alone (a CUDA event): the caller queues the backward pass in
        between, so the GPU does not idle while the host waits, and no stream or device
        synchronisation is made. Elsewhere the answer is computed at once (under DDP: one
        synchronising all-reduce per step, which all processes need to stop together)."""
        import torch

        if self.world > 1 or loss.device.type != "cuda":
            answer = self.finite(loss)
            return lambda: answer
        host = torch.empty((), dtype=torch.bool, pin_memory=True)
        host.copy_(torch.isfinite(loss.detach()), non_blocking=True)
        copied = torch.cuda.Event()
        copied.record()

        def answer():
            copied.synchronize()
            return bool(host)
        return answer


def _device(cfg, local_rank):
    import torch

    if cfg["device"] == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device is available")
    use_cuda = cfg["device"] == "cuda" or (cfg["device"] == "auto" and torch.cuda.is_available())
    if not use_cuda:
        return torch.device("cpu")
    if local_rank >= torch.cuda.device_count():
        raise UsageError(f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} GPUs")
    torch.cuda.set_device(local_rank)
    return torch.device("cuda", local_rank)


def init_distributed(cfg, timeout_s):
    """This process's Dist from torchrun's environment (one process without it); joins the
    process group when there are several."""
    import datetime

    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = _device(cfg, local_rank)
    if cfg["batch_size"] % world:
        raise UsageError(f"--batch-size {cfg['batch_size']} must be divisible by the number of "
                         f"processes ({world})")
    if world > 1:
        # without a timeout a stopped peer leaves the others waiting in a collective forever
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                timeout=datetime.timedelta(seconds=timeout_s))
    return Dist(world, rank, device)


def is_dist_error(exc):
    """Whether a RuntimeError is a failed collective (a peer stopped answering or ended)."""
    import torch.distributed as dist

    return isinstance(exc, dist.DistError) or "timed out" in str(exc).lower() \
        or "connection closed" in str(exc).lower()


def shut_down(d):
    """Leaves the process group, when this process joined one."""
    if d is not None and d.world > 1:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
