"""The output loss, the optimizer and the learning-rate schedule of a run's config."""
from .config import LOSSES
from .errors import UsageError


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
