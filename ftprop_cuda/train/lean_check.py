"""The trainer's check of lean memory mode on its first batch (ftprop_cuda.memory.verify_lean):
bitwise the standard path, or this run trains in the standard mode, with one warning naming the
layer that differs. --no-verify-lean skips it."""
from .errors import PROG


def check_lean(s, cfg, d, amp, loss_fn, say):
    """Runs verify_lean on the run's network and first training batch where the memory mode is
    lean (eager: under --compile lean mode stands aside); on a difference turns lean mode off for
    this run. Returns the VerifyResult, or None where nothing was checked."""
    import torch

    from ..memory import is_lean, lean, verify_lean

    if not cfg.get("verify_lean", True) or cfg["compile"] or not is_lean(s.net):
        return None
    cpu_rng = torch.get_rng_state()  # iterating a loader draws a seed: leave the run's RNG alone
    try:
        s.train_sampler.set_epoch(s.start)
        x, y = next(iter(s.train_loader))
    finally:
        torch.set_rng_state(cpu_rng)
    batch = (x.to(d.device), y.to(d.device))
    result = verify_lean(s.net, batch, lambda out, target: loss_fn(out.float(), target), amp)
    if not result and result.what != "standard error":  # else training meets that error itself
        lean(s.net, enabled=False)
        say(f"{PROG}: warning: {result}; this run trains in the standard memory mode "
            "(--memory standard; --no-verify-lean skips this check)")
    return result
