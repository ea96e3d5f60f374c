"""Presets that reproduce each experiment of the paper (Friesen & Domingos, ICLR 2018).

Source of every value: the "Running the experiments" commands of the authors' README
(github.com/afriesen/ftprop, README.md), with the defaults of its train.py for what a command
leaves out (batch size 64; lr decay 0.1; momentum 0.9, unused by Adam). Names map as:
--nonlin step11 -> step, staircase3 -> qrelu (K=3), staircase -> qrelu5 (K=5, which the README
labels "3-bit" for ResNet-18); --tp-rule SoftHinge -> soft_hinge (FTP-SH), SSTE -> sste;
--use-bn -> bn. Deliberate differences from those commands:

* convnet8 "Step activation" commands pass --nonlin=staircase3, a copy-paste slip (they are
  identical to the qReLU commands); the sign presets here use `step`, as the paper's table does.
* convnet4 commands do not pass --use-bn, so its presets train without batch norm.
* ImageNet: the README pre-resized images to 256x256 and used random 224 crops; ftprop-train
  uses random-resized crops for training and resize-256/centre-crop-224 for testing.
* The released code's epochs are 1-based and the rate is multiplied by lr_decay at the start
  of each epoch listed; ftprop-train counts epochs the same way.
"""

_VARIANTS = (
    # suffix, nonlin (qrelu is replaced per arch below), rule, short description
    ("step-ftpsh", "step", "soft_hinge", "sign units, FTP-SH"),
    ("step-sste", "step", "sste", "sign units, saturated STE"),
    ("qrelu-ftpsh", "qrelu", "soft_hinge", "quantized ReLU, FTP-SH"),
    ("qrelu-sste", "qrelu", "sste", "quantized ReLU, saturated STE"),
    ("relu", "relu", "soft_hinge", "ReLU (full-precision baseline)"),
    ("threshrelu", "threshrelu", "soft_hinge", "ReLU clamped at 1 (full-precision baseline)"),
)

# Per-architecture settings shared by its six commands in the README.
_ARCH_SETTINGS = {
    "convnet4": dict(dataset="cifar10", bn=False, opt="adam", lr=2.5e-4, momentum=0.9,
                     lr_decay=0.1, lr_decay_epochs=[200, 250], epochs=300, batch_size=64,
                     loss="crossent"),
    "convnet8": dict(dataset="cifar10", bn=True, opt="adam", lr=1e-3, momentum=0.9,
                     lr_decay=0.1, lr_decay_epochs=[200, 250], epochs=300, batch_size=64,
                     loss="crossent"),
    "alexnet": dict(dataset="imagenet", bn=True, opt="adam", lr=1e-4, momentum=0.9,
                    lr_decay=0.1, lr_decay_epochs=[56, 64], epochs=80, batch_size=128,
                    loss="crossent"),
    "resnet18": dict(dataset="imagenet", bn=True, opt="sgd", lr=0.1, momentum=0.9,
                     lr_decay=0.1, lr_decay_epochs=[30, 60], epochs=90, batch_size=256,
                     loss="crossent"),
}
# Weight decay differs between the commands of one architecture: (step, qrelu, full precision).
_WEIGHT_DECAY = {
    "convnet4": (5e-4, 5e-4, 5e-4),
    "convnet8": (5e-4, 5e-4, 5e-4),
    "alexnet": (5e-6, 5e-5, 5e-4),
    "resnet18": (5e-7, 1e-5, 1e-4),
}
# The staircase each architecture's qReLU commands use.
_QRELU = {"convnet4": "qrelu", "convnet8": "qrelu", "alexnet": "qrelu", "resnet18": "qrelu5"}


def _build():
    presets = {}
    for arch, settings in _ARCH_SETTINGS.items():
        for suffix, nonlin, rule, what in _VARIANTS:
            kind = 0 if nonlin == "step" else 1 if nonlin == "qrelu" else 2
            if nonlin == "qrelu":
                nonlin = _QRELU[arch]
            presets[f"{arch}-{suffix}"] = dict(
                settings, arch=arch, nonlin=nonlin, rule=rule, grad_scale=True,
                weight_decay=_WEIGHT_DECAY[arch][kind], description=what,
                lr_decay_epochs=list(settings["lr_decay_epochs"]),
            )
    return presets


PRESETS = _build()


def get_preset(name):
    """The config overrides of a preset (a fresh dict; 'description' is not a config key)."""
    if name not in PRESETS:
        raise ValueError(f"preset must be one of {', '.join(PRESETS)}; got {name!r}")
    preset = dict(PRESETS[name])
    preset.pop("description")
    preset["lr_decay_epochs"] = list(preset["lr_decay_epochs"])
    return preset


def format_presets():
    """A plain-text table of all presets (what --list-presets prints)."""
    head = ("preset", "dataset", "arch", "nonlin", "rule", "bn", "opt", "lr", "wd", "batch",
            "epochs", "decay at")
    rows = [head]
    for name, p in PRESETS.items():
        full_precision = p["nonlin"] in ("relu", "threshrelu")
        rows.append((name, p["dataset"], p["arch"], p["nonlin"], "-" if full_precision else p["rule"],
                     "yes" if p["bn"] else "no", p["opt"], f"{p['lr']:g}", f"{p['weight_decay']:g}",
                     str(p["batch_size"]), str(p["epochs"]),
                     ",".join(map(str, p["lr_decay_epochs"]))))
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


__all__ = ["PRESETS", "get_preset", "format_presets"]
