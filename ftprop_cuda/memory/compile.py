"""Lean mode under torch.compile: compile_lean and params_channels_last.

Under torch.compile the graph's partitioner decides what the forward keeps. With a memory
budget below 1 it keeps less and recomputes cheap operations in the backward instead; the
budget is read when a graph is compiled, so the wrapper below holds it around every call.
On the CPU, inductor's layout pass runs a convolutional graph in channels-last and converts
the weights to channels-last copies on every call; the backward keeps those copies alive
beside the parameters (resnet18: 45 MiB, whatever the batch). Storing the model's 4-D parameters
channels-last (same values, other strides) lets the graph use them as they are; but that changes
the user's model (its eager convolutions may then round differently), so it is an explicit
opt-in: params_channels_last(model) before compiling, or compile_lean(model,
channels_last=True). On a GPU inductor may choose either layout, so they stay as given.
"""
import torch
from torch.utils._pytree import tree_leaves

LEAN_COMPILE_BUDGET = 0.65


def _any_off_cpu(tree):
    return any(isinstance(t, torch.Tensor) and t.device.type != "cpu"
               for t in tree_leaves(tree))


class LeanCompiled(torch.nn.Module):
    """model compiled with a lean activation-memory budget (see compile_lean)."""

    def __init__(self, model, budget, compile_kwargs, channels_last=False):
        super().__init__()
        self.module = model
        self.budget = budget
        self._compiled = torch.compile(self._forward, **compile_kwargs)
        self._layout_done = not channels_last

    def _forward(self, *args, **kwargs):  # its own code object: its own compiled graphs
        return self.module(*args, **kwargs)

    def forward(self, *args, **kwargs):
        import torch._functorch.config as functorch_config

        if not self._layout_done:
            self._layout_done = True
            # DistributedDataParallel has laid out its gradient buckets by the parameters'
            # strides already: convert before wrapping (params_channels_last), not here.
            if not isinstance(self.module, torch.nn.parallel.DistributedDataParallel) and \
                    not _any_off_cpu((args, kwargs)):
                params_channels_last(self.module)
        with functorch_config.patch(activation_memory_budget=self.budget):
            return self._compiled(*args, **kwargs)


def params_channels_last(model):
    """Stores model's 4-D CPU parameters channels-last, in place (values unchanged).

    compile_lean(model, channels_last=True) does this on its first CPU call; call it yourself
    before wrapping the model in DistributedDataParallel (whose gradient buckets follow the
    parameters' strides at wrapping) and compile the wrapper with compile_lean. Eager
    convolutions of the converted model may round differently from the original's: convert the
    models you compare alike (the trainer does, for --compile in either memory mode)."""
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 4 and p.device.type == "cpu" and p.layout == torch.strided \
                    and not p.is_contiguous(memory_format=torch.channels_last):
                p.data = p.data.contiguous(memory_format=torch.channels_last)


def compile_lean(model, budget=None, channels_last=False, **compile_kwargs):
    """torch.compile(model, **compile_kwargs) keeping less for the backward.

    The compiled graph's partitioner gets an activation-memory budget (default
    LEAN_COMPILE_BUDGET, a fraction of what it would keep with no budget) and recomputes cheap
    operations in the backward to stay within it. The model is not changed. channels_last=True
    (an opt-in): on its first call with CPU inputs it stores the model's 4-D parameters
    (convolution weights) channels-last, in place: the values are unchanged, and the compiled
    graph no longer keeps a channels-last copy of every weight for the backward (a
    DistributedDataParallel model is left as it is: call params_channels_last on the inner model
    before wrapping it). Returns a module whose forward calls the compiled model; parameters
    and state_dict are model's, under the prefix 'module.'.
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}")
    budget = LEAN_COMPILE_BUDGET if budget is None else budget
    if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not 0 < budget <= 1:
        raise ValueError(f"budget must be a number in (0, 1]; got {budget!r}")
    if not isinstance(channels_last, bool):
        raise TypeError(f"channels_last must be True or False; got {channels_last!r}")
    return LeanCompiled(model, float(budget), compile_kwargs, channels_last)
