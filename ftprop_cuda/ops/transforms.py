"""The compiled ops under torch.func transforms (grad, vjp, jacrev, vmap, ...).

torch.func transforms refuse the autograd.Function that register_autograd generates (it has no
setup_context), so under a transform the kernels run through the Functions below instead, with
the same setup_context and backward (autograd.py). vmap batches the two forward ops directly
(their output is elementwise in z); the code-saving and backward ops use torch's per-slice
fallback: a code's packing and the normalised backward's B depend on the slice's shape.
"""
import torch

from . import autograd


def _elementwise_vmap(op):
    def batched(info, in_dims, z, *args):
        return op(z, *args), in_dims[0]

    return batched


def _transform_function(name, plain_op, saved_op, plain, saved):
    """An autograd.Function (it has a setup_context, which torch.func requires) running one
    unit's forward op (torch.ops.ftprop_cuda.<plain_op>), or its code-saving twin (<saved_op>)
    when the last argument says so, with the setup_context and backward registered for that op.
    plain and saved are (setup_context, backward) pairs."""

    def forward(*args):
        *op_args, save_code = args
        return getattr(torch.ops.ftprop_cuda, saved_op if save_code else plain_op)(*op_args)

    def setup_context(ctx, inputs, output):
        ctx.save_code = inputs[-1]
        if ctx.save_code:
            ctx.mark_non_differentiable(output[1])
            saved[0](ctx, inputs[:-1], output)
        else:
            plain[0](ctx, inputs[:-1], output)

    def backward(ctx, grad, *_grad_state):
        if ctx.save_code:
            return *saved[1](ctx, grad, None), None
        return *plain[1](ctx, grad), None

    return type(name, (torch.autograd.Function,), {
        "generate_vmap_rule": True, "forward": staticmethod(forward),
        "setup_context": staticmethod(setup_context), "backward": staticmethod(backward)})


FuncStep = _transform_function(
    "FuncStep", "step", "_step_saved",
    (autograd.step_setup_context, autograd.step_backward),
    (autograd.step_saved_setup_context, autograd.step_saved_backward))
FuncStaircase = _transform_function(
    "FuncStaircase", "staircase", "_staircase_saved",
    (autograd.staircase_setup_context, autograd.staircase_backward),
    (autograd.staircase_saved_setup_context, autograd.staircase_saved_backward))


def transforms_active():
    """Whether a torch.func transform (grad, vjp, jacrev, vmap, ...) is running."""
    return not torch.compiler.is_compiling() and torch._C._are_functorch_transforms_active()


def step_under_transform(z, rule, zero_one, grad_scale, save_code):
    out = FuncStep.apply(z, rule, zero_one, grad_scale, save_code)
    return out[0] if save_code else out


def staircase_under_transform(z, steps, lo, hi, rule, grad_scale, save_code):
    out = FuncStaircase.apply(z, steps, lo, hi, rule, grad_scale, save_code)
    return out[0] if save_code else out


def register():
    """vmap rules of the two forward ops (called once, after the library has loaded)."""
    torch.library.register_vmap("ftprop_cuda::step", _elementwise_vmap(torch.ops.ftprop_cuda.step))
    torch.library.register_vmap("ftprop_cuda::staircase",
                                _elementwise_vmap(torch.ops.ftprop_cuda.staircase))
