"""Fake (meta) implementations of the compiled ops: the output shapes and layouts that
torch.compile and torch.export trace with. Registered by extension.py once _C has loaded."""
import torch

from .rules import staircase_code_bits, step_code_bits


def empty_like_kernel(z):
    """The kernels' output layout: z's strides where z is dense and non-overlapping (the memory
    format is kept), else empty_like's dense strides in z's dimension order (elementwise_ops.h)."""
    return torch.empty_like(z)


def _code_like(z, bits):
    return z.new_empty(((z.numel() * bits + 7) // 8,), dtype=torch.uint8)


def step_fake(z, rule, zero_one, grad_scale):
    return empty_like_kernel(z)


def staircase_fake(z, steps, lo, hi, rule, grad_scale):
    return empty_like_kernel(z)


def step_backward_fake(grad, z, rule, zero_one, grad_scale):
    torch._check(grad.shape == z.shape, lambda: "grad and z must have the same shape")
    return empty_like_kernel(z)


def staircase_backward_fake(grad, z, steps, lo, hi, rule, grad_scale):
    torch._check(grad.shape == z.shape, lambda: "grad and z must have the same shape")
    return empty_like_kernel(z)


def step_saved_fake(z, rule, zero_one, grad_scale):
    return empty_like_kernel(z), _code_like(z, step_code_bits(rule))


def staircase_saved_fake(z, steps, lo, hi, rule, grad_scale):
    bits = staircase_code_bits(rule, steps)
    torch._check(bits is not None, lambda: f"no saved-state code for {rule} with {steps} steps")
    return empty_like_kernel(z), _code_like(z, bits)


def step_backward_saved_fake(grad, state, rule, zero_one, grad_scale):
    return empty_like_kernel(grad)


def staircase_backward_saved_fake(grad, state, steps, lo, hi, rule, grad_scale):
    return empty_like_kernel(grad)


# The max-pool offset codec of lean memory mode (ftprop_cuda.memory, csrc/pool_offsets.h).
def pool_offsets_pack_fake(indices, in_w, kernel, stride, padding, dilation, bits):
    per = 8 // bits
    return indices.new_empty(((indices.numel() + per - 1) // per,), dtype=torch.uint8)


def pool_offsets_unpack_fake(packed, size, in_w, kernel, stride, padding, dilation, bits):
    return packed.new_empty(size, dtype=torch.int64)


def pool_offsets_backward_fake(grad, packed, input_size, in_w, kernel, stride, padding,
                               dilation, bits):
    return grad.new_empty(input_size)


def max_pool_offsets_fake(input, kernel, stride, padding, dilation, bits):
    size = list(input.shape)
    for d in range(2):
        span = dilation[d] * (kernel[d] - 1) + 1
        size[-2 + d] = (size[-2 + d] + 2 * padding[d] - span) // stride[d] + 1
    out = input.new_empty(size)
    per = 8 // bits
    return out, input.new_empty(((out.numel() + per - 1) // per,), dtype=torch.uint8)


def batch_norm_rebuild_fake(input, mean, invstd, weight, bias):
    return torch.empty_like(input)


FAKES = {
    "step": step_fake,
    "staircase": staircase_fake,
    "_step_backward": step_backward_fake,
    "_staircase_backward": staircase_backward_fake,
    "_step_saved": step_saved_fake,
    "_staircase_saved": staircase_saved_fake,
    "_step_backward_saved": step_backward_saved_fake,
    "_staircase_backward_saved": staircase_backward_saved_fake,
    "_pool_offsets_pack": pool_offsets_pack_fake,
    "_pool_offsets_unpack": pool_offsets_unpack_fake,
    "_pool_offsets_backward": pool_offsets_backward_fake,
    "_max_pool_offsets": max_pool_offsets_fake,
    "_batch_norm_rebuild": batch_norm_rebuild_fake,
}


def register():
    """Registers every fake above with its op (called once, after the library has loaded)."""
    for op, fake in FAKES.items():
        torch.library.register_fake(f"ftprop_cuda::{op}")(fake)
