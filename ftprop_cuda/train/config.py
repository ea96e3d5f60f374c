"""The run's settings: the defaults, what a checkpoint's config must hold, and resolve_config,
which merges defaults, --preset, the checkpoint's config and the flags given (torch-free)."""
from ..models import architecture
from ..models.units import check_unit_args, is_hard_threshold
from ..runs.checkpoint import CHECKPOINT_FORMAT  # noqa: F401  (what a checkpoint is marked with)
from .errors import PROG, UsageError
from .presets import get_preset

LOSSES = ("crossent", "hinge", "sqhinge", "trunc_hinge")
OPTIMIZERS = ("sgd", "adam", "rmsprop")
DEVICES = ("auto", "cpu", "cuda")

# The no-argument run: the paper's convnet4 settings (Adam, lr 2.5e-4, wd 5e-4, batch 64, no BN)
# on the embedded 5k MNIST digits, for a few epochs so that it ends in minutes on two CPU cores.
# bn=None means the architecture's own default (models.ARCHITECTURES).
DEFAULTS = dict(
    arch="convnet4", nonlin="step", rule="soft_hinge", grad_scale=True, bn=None,
    dataset="mnist5k", data_root=None, download=False, train_limit=None, test_limit=None,
    epochs=3, batch_size=64, test_batch_size=256,
    opt="adam", lr=2.5e-4, momentum=0.9, weight_decay=5e-4, lr_decay=0.1, lr_decay_epochs=[],
    loss="crossent", seed=1, backend="auto", device="auto", workers=None,
    compile=False, amp=False, diagnostics=False, memory="lean", verify_lean=True,
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
                  "amp", "diagnostics", "test_batch_size", "memory", "verify_lean"}
EVAL_MUTABLE = RESUME_MUTABLE | {"dataset", "test_limit"}


def flatten_epochs(value):
    # nargs="*" with a list-valued type gives a list of lists
    return sorted({e for part in value for e in (part if isinstance(part, list) else [part])})


def _explicit(args):
    """The config flags given on the command line."""
    explicit = {k: v for k, v in vars(args).items() if k in DEFAULTS}
    if "lr_decay_epochs" in explicit:
        explicit["lr_decay_epochs"] = flatten_epochs(explicit["lr_decay_epochs"])
    return explicit


def _apply_preset(cfg, name, checkpoint):
    if checkpoint is not None:
        raise UsageError("--preset cannot be combined with --resume or --eval "
                         "(the checkpoint holds the run's settings)")
    try:
        cfg.update(get_preset(name))
    except ValueError as exc:
        raise UsageError(str(exc))


def _apply_checkpoint(cfg, checkpoint, explicit, evaluating):
    """The checkpoint's settings, refusing flags that would change what defines its run."""
    saved = checkpoint["config"]
    cfg.update({k: v for k, v in saved.items() if k in DEFAULTS})
    mutable = EVAL_MUTABLE if evaluating else RESUME_MUTABLE
    flag = "--eval" if evaluating else "--resume"
    for key, value in explicit.items():
        if key not in mutable and value != saved.get(key) \
                and not (key == "rule" and saved.get(key) is None):
            raise UsageError(
                f"--{key.replace('_', '-')} cannot be changed with {flag} "
                f"(the checkpoint's run used {saved.get(key)!r})"
            )


def _check_arch(cfg):
    try:
        record = architecture(cfg["arch"])
    except ValueError as exc:
        raise UsageError(str(exc))
    if cfg["bn"] is None:
        cfg["bn"] = record.default_bn
    if record.needs_bn and not cfg["bn"]:
        raise UsageError(f"--no-bn is not supported for --arch {cfg['arch']} (it needs batch norm)")


def _check_units(cfg, explicit, notes):
    if cfg["rule"] is not None:
        try:
            check_unit_args(cfg["nonlin"], cfg["rule"], cfg["grad_scale"], cfg["backend"])
        except ValueError as exc:
            raise UsageError(str(exc))
    if not is_hard_threshold(cfg["nonlin"]):
        # full-precision units have no targetprop rule: config.json says so instead of a name
        if "rule" in explicit and notes is not None:
            notes.append(f"{PROG}: note: --rule {explicit['rule']} has no effect with --nonlin "
                         f"{cfg['nonlin']} (no hard-threshold units); the config records rule null")
        cfg["rule"] = None


def resolve_config(args, checkpoint=None, notes=None):
    """The run's config dict from defaults, preset, checkpoint and explicit flags.
    Lines the user should read (not errors) are appended to `notes` when given."""
    explicit = _explicit(args)
    cfg = dict(DEFAULTS)
    if args.preset is not None:
        _apply_preset(cfg, args.preset, checkpoint)
    if checkpoint is not None:
        _apply_checkpoint(cfg, checkpoint, explicit, bool(args.eval))
    cfg.update(explicit)
    _check_arch(cfg)
    _check_units(cfg, explicit, notes)
    if checkpoint is not None and not args.eval and checkpoint["epoch"] > cfg["epochs"]:
        raise UsageError(f"checkpoint {args.resume} is at epoch {checkpoint['epoch']}: --epochs "
                         f"must be > {checkpoint['epoch']} to continue (got {cfg['epochs']})")
    return cfg
