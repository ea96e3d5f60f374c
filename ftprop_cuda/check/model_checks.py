"""Model-level checks on one device: a training step of a small network with step and staircase
units is bitwise the same with and without lean memory mode (contiguous and channels-last), and
under bf16 autocast; on CUDA also with no host synchronisation, captured in a CUDA graph, and on
a second GPU."""
import contextlib
import copy
import warnings

import torch
import torch.nn.functional as F
from torch import nn

from ..memory import lean
from ..ops import reference
from ..ops.nn import Staircase, Step
from . import grids
from .results import CheckFailed, expect

BATCH, CLASSES, SIZE = 4, 5, 16


def small_model(device, backend="kernel", seed=0):
    """Conv/batch-norm/pool layers around a step, a staircase and an sste unit (the three
    kinds of saved state: z, a count code, a 1-bit code), in train mode."""
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), Step(rule="soft_hinge", backend=backend),
        nn.MaxPool2d(2), nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8),
        Staircase(steps=3, rule="saturated_hinge", backend=backend), nn.MaxPool2d(2),
        nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), Step(rule="sste", backend=backend),
        nn.Flatten(), nn.Linear(8 * (SIZE // 4) ** 2, CLASSES))
    return model.to(device).train()


def batch(device, channels_last=False):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(BATCH, 3, SIZE, SIZE, generator=gen).to(device)
    y = torch.randint(0, CLASSES, (BATCH,), generator=gen).to(device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, y


@contextlib.contextmanager
def deterministic():
    """Deterministic algorithms (warn only) and cuDNN flags, restored afterwards."""
    saved = (torch.are_deterministic_algorithms_enabled(),
             torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            yield
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved[2:]


def train_step(model, x, y, autocast_dtype=None):
    """Forward, loss, backward; returns (output, loss) detached."""
    device_type = x.device.type
    context = (torch.autocast(device_type, dtype=autocast_dtype) if autocast_dtype
               else contextlib.nullcontext())
    with context:
        out = model(x)
        loss = F.cross_entropy(out, y)
    loss.backward()
    return out.detach(), loss.detach()


def same_step(a, b, x, y, autocast_dtype=None, what="lean vs standard"):
    """Raises CheckFailed unless one step of a and of b gives the same bits: output, loss,
    every gradient and every buffer."""
    out_a, loss_a = train_step(a, x, y, autocast_dtype)
    out_b, loss_b = train_step(b, x, y, autocast_dtype)
    expect(grids.bits_differ(out_b, out_a), f"{what}: output")
    expect(grids.bits_differ(loss_b, loss_a), f"{what}: loss")
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        if pa.grad is None or pb.grad is None:
            raise CheckFailed(f"{what}: no gradient for {name}")
        expect(grids.bits_differ(pb.grad, pa.grad), f"{what}: gradient of {name}")
    for (name, ba), bb in zip(a.named_buffers(), b.buffers()):
        if not torch.equal(ba, bb):
            raise CheckFailed(f"{what}: buffer {name}")


def lean_equals_standard(device, channels_last):
    """One training step, lean mode against the standard mode, bitwise."""
    with deterministic():
        standard = small_model(device)
        if channels_last:
            standard = standard.to(memory_format=torch.channels_last)
        lean_model = lean(copy.deepcopy(standard))
        x, y = batch(device, channels_last)
        same_step(standard, lean_model, x, y)
    return "output, loss, every gradient and buffer bitwise equal"


def autocast_step(device):
    """A bf16 autocast step: lean = standard bitwise, and the kernels' forward (so the loss) is
    the reference's bit for bit, their gradients finite."""
    with deterministic():
        standard = small_model(device)
        lean_model = lean(copy.deepcopy(standard))
        x, y = batch(device)
        same_step(standard, lean_model, x, y, torch.bfloat16)
        ref_model = small_model(device, backend="reference")  # the same seed, same weights
        kernel_model = small_model(device)
        _, loss_k = train_step(kernel_model, x, y, torch.bfloat16)
        _, loss_r = train_step(ref_model, x, y, torch.bfloat16)
        expect(grids.bits_differ(loss_k, loss_r), "kernel vs reference loss under autocast")
        for name, p in kernel_model.named_parameters():
            if not torch.isfinite(p.grad).all():
                raise CheckFailed(f"gradient of {name} not finite under autocast")
    return "lean = standard bitwise, loss = reference's, gradients finite"


def sync_free_step(device):
    """A training step (standard and lean) under torch.cuda.set_sync_debug_mode('error'): any
    host synchronisation raises."""
    models = [small_model(device), lean(small_model(device))]
    x, y = batch(device)
    for model in models:  # a first step outside the mode: lazy initialisation may sync
        train_step(model, x, y)
        model.zero_grad(set_to_none=True)
    torch.cuda.synchronize(device)
    previous = torch.cuda.get_sync_debug_mode()
    try:
        for name, model in zip(("standard", "lean"), models):
            torch.cuda.set_sync_debug_mode("error")
            try:
                train_step(model, x, y)
            except RuntimeError as exc:
                raise CheckFailed(f"{name} step synchronised with the host: {exc}") from None
            finally:
                torch.cuda.set_sync_debug_mode(previous)
    finally:
        torch.cuda.set_sync_debug_mode(previous)
    return "standard and lean steps: no host synchronisation"


def graph_step(device):
    """A forward+backward captured in a CUDA graph and replayed on new data gives eager mode's
    loss and gradients."""
    with deterministic(), torch.cuda.device(device):
        model = small_model(device)
        x, y = batch(device)
        static_x, static_y = x.clone(), y.clone()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                model.zero_grad(set_to_none=True)
                train_step(model, static_x, static_y)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        model.zero_grad(set_to_none=True)
        with torch.cuda.graph(graph):
            out = model(static_x)
            static_loss = F.cross_entropy(out, static_y)
            static_loss.backward()
        eager = copy.deepcopy(model)
        static_x.copy_(x * 0.5 + 0.25)
        graph.replay()
        eager.zero_grad(set_to_none=True)
        _, loss = train_step(eager, static_x.clone(), static_y)
        expect(grids.not_close(static_loss.detach(), loss), "replayed loss")
        for (name, p), q in zip(model.named_parameters(), eager.parameters()):
            expect(grids.not_close(p.grad, q.grad), f"replayed gradient of {name}")
    return "captured, replayed on new data: loss and gradients = eager's"


def second_device(device):
    """Ops on a GPU other than the current one: outputs and gradients stay there and equal
    the reference's; a lean step there equals the standard one."""
    with torch.cuda.device(0):
        z = torch.linspace(-2, 2, 1001, device=device).requires_grad_(True)
        for fn, ref in ((Step(backend="kernel"), reference.step_forward),
                        (Staircase(backend="kernel"), reference.staircase_forward)):
            out = fn(z)
            out.backward(torch.ones_like(out))
            if out.device != z.device or z.grad.device != z.device:
                raise CheckFailed(f"{type(fn).__name__}: output on {out.device}, gradient on "
                                  f"{z.grad.device}, input on {z.device}")
            expect(grids.bits_differ(out.detach(), ref(z.detach())), type(fn).__name__)
            z.grad = None
        lean_equals_standard(device, channels_last=False)
    return f"with cuda:0 current: ops and a lean step on {device}"
