"""The networks and batches every training benchmark uses: the paper's architectures on
synthetic batches of the paper's shapes, each variant (reference / kernel, standard / lean,
eager / compiled) built from the same initial weights.

Shared by bench_train.py, bench_copies.py and held_memory.py (which measures in a child
process), so none of them imports another benchmark script for its models.
"""
import copy

import torch
import torch.nn.functional as F

# arch -> (in_channels, image_size, num_classes, paper batch size, dataset)
SHAPES = {
    "convnet4": (3, 32, 10, 64, "CIFAR-10"),
    "convnet8": (3, 32, 10, 128, "CIFAR-10"),
    "resnet18": (3, 224, 1000, 256, "ImageNet"),
    "resnet18_cifar": (3, 32, 10, 128, "CIFAR-10"),
    "alexnet": (3, 224, 1000, 256, "ImageNet"),
}
CPU_BATCH = {"resnet18": 8, "alexnet": 32}  # 2 slow cores: smaller ImageNet batches by default


def arch_bn(arch, args):
    """Batch norm as the paper trains the network (convnet4 without), unless --bn/--no-bn."""
    from ftprop_cuda.models import architecture

    bn = getattr(args, "bn", None)
    return architecture(arch).default_bn if bn is None else bn


def initial_state(arch, args):
    """The weights every variant of arch starts from (seed 0)."""
    from ftprop_cuda.models import build_model

    in_ch, size, classes, _, _ = SHAPES[arch]
    torch.manual_seed(0)
    return copy.deepcopy(build_model(arch, nonlin=args.nonlin, rule=args.rule,
                                     num_classes=classes, in_channels=in_ch, image_size=size,
                                     bn=arch_bn(arch, args), backend="reference",
                                     memory="standard").state_dict())


def build(arch, variant, args, state):
    from ftprop_cuda.models import build_model

    in_ch, size, classes, _, _ = SHAPES[arch]
    backend = "reference" if variant.startswith("ref") else "kernel"
    memory = "lean" if "lean" in variant else "standard"
    model = build_model(arch, nonlin=args.nonlin, rule=args.rule, num_classes=classes,
                        in_channels=in_ch, image_size=size, bn=arch_bn(arch, args),
                        backend=backend, memory=memory)
    model.load_state_dict(state)
    model.to(args.device).train()
    fwd = model
    if variant.endswith("compiled"):
        from ftprop_cuda.memory import compile_lean, params_channels_last
        if torch.device(args.device).type == "cpu":
            # as the trainer does with --compile on the CPU, in both memory modes: convolution
            # weights stored channels-last, so the compiled graph keeps no channels-last copy
            params_channels_last(model)
        fwd = compile_lean(model) if memory == "lean" else torch.compile(model)
    if args.optimizer == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=1e-2, momentum=0.9)
    return model, fwd, opt


def make_batch(arch, batch, device, seed=0):
    in_ch, size, classes, paper_batch, _ = SHAPES[arch]
    if batch is None:
        batch = CPU_BATCH.get(arch, paper_batch) if torch.device(device).type == "cpu" \
            else paper_batch
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, in_ch, size, size, generator=gen)
    y = torch.randint(0, classes, (batch,), generator=gen)
    return x.to(device), y.to(device)


def make_train_step(fwd, opt, x, y):
    """One timed training step: zero_grad, forward, cross-entropy, backward, optimizer step."""
    def train_step():
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(fwd(x), y).backward()
        opt.step()
    return train_step
