"""Small codes of unit outputs: bit-plane packing and the level codes of step/staircase outputs.

A unit's output takes only a few values (two levels for a step unit, K + 1 for a K-step
staircase, and NaN), so lean mode can keep their index in a few bits and decode it bitwise.
"""
import math

import torch

from ..ops.extension import has_cpu_kernel
from ..ops.reference import opmath_dtype

# ---- Bit packing of small codes (bit planes: exact for any width, device-agnostic torch ops) --
_BIT_WEIGHTS = {}


def _weights(device):
    w = _BIT_WEIGHTS.get(device)
    if w is None:
        # 1 << j, made on the device (no host-to-device copy)
        ones = torch.ones(8, dtype=torch.uint8, device=device)
        w = _BIT_WEIGHTS[device] = ones << torch.arange(8, dtype=torch.uint8, device=device)
    return w


def code_bits(states):
    """Bits per element for a code with `states` values."""
    return max(1, math.ceil(math.log2(states)))


def pack_codes(codes, bits):
    """codes: integer tensor with values in [0, 2**bits); returns the packed uint8 planes."""
    flat = codes.reshape(-1)
    n = flat.numel()
    pad = (-n) % 8
    if pad:
        flat = torch.cat([flat, flat.new_zeros(pad)])
    flat = flat.to(torch.int32 if bits > 8 else torch.uint8).view(-1, 8)
    w = _weights(flat.device)
    planes = []
    for j in range(bits):
        plane = ((flat >> j) & 1).to(torch.uint8)
        planes.append((plane * w).sum(dim=1, dtype=torch.uint8))
    return torch.stack(planes) if planes else flat.new_zeros((0, 0), dtype=torch.uint8)


def unpack_codes(planes, n, dtype=torch.int64):
    """The inverse of pack_codes: a flat tensor of n codes."""
    bits = planes.shape[0]
    w = _weights(planes.device)
    out = None
    for j in range(bits):
        plane = ((planes[j].unsqueeze(1) & w) != 0).view(-1)[:n].to(dtype)
        out = plane if j == 0 else out | (plane << j)
    return out


# ---- Unit outputs as level codes ---------------------------------------------------------------
MAX_CODEC_LEVELS = 511  # the compiled loops' limit (csrc/cpu/level_codes.cpp, kMaxLevels)


def level_codec(device, levels=2):
    """Whether the compiled level-code loops serve `levels` levels on this device (CPU, at most
    MAX_CODEC_LEVELS levels; else torch ops, exact for any count)."""
    return device.type == "cpu" and levels <= MAX_CODEC_LEVELS \
        and has_cpu_kernel("_level_code_pack", "_level_code_unpack")


def _row_major(shape, stride):
    """Whether strides `stride` lay out `shape` densely in row-major order."""
    expected = 1
    for size, st in zip(reversed(shape), reversed(stride)):
        if size != 1 and st != expected:
            return False
        expected *= size
    return True


def _decoder(table, shape, stride):
    def decode(planes):
        n = math.prod(shape)
        if level_codec(table.device, table.numel() - 1):
            flat = torch.ops.ftprop_cuda._level_code_unpack(planes, table, n)
            if _row_major(shape, stride):
                return flat.as_strided(shape, stride)
            values = flat.view(shape)
        else:
            values = table[unpack_codes(planes, n)].view(shape)
        out = torch.empty_strided(shape, stride, dtype=table.dtype, device=table.device)
        return out.copy_(values)
    return decode


def _level_code(y, levels, torch_codes):
    """(planes, decode) of y, whose values are all in `levels` (ascending) or NaN.

    torch_codes(y): the level indices computed with torch ops, for devices without the loops.
    """
    table = torch.cat([levels, levels.new_full((1,), math.nan)])
    if level_codec(y.device, levels.numel()):
        planes = torch.ops.ftprop_cuda._level_code_pack(y, levels)
    else:
        planes = pack_codes(torch_codes(y), code_bits(levels.numel() + 1))
    return planes, _decoder(table, tuple(y.shape), tuple(y.stride()))


_STEP_LEVELS = {}


def _step_levels(values_low, dtype, device):
    """[values_low, 1] of a dtype on a device, made once (on the device: no host-to-device copy
    and no synchronisation in the steps that use it) and then reused."""
    key = (values_low, dtype, device)
    levels = _STEP_LEVELS.get(key)
    if levels is None:
        levels = torch.full((2,), 1.0, dtype=dtype, device=device)
        levels[0] = values_low
        _STEP_LEVELS[key] = levels
    return levels


def step_output_code(values_low):
    """code_fn for a step unit's output: 0 = low, 1 = high, 2 = NaN (2 bits)."""
    def code_fn(y):
        levels = _step_levels(values_low, y.dtype, y.device)
        return _level_code(y, levels, lambda v: torch.where(
            torch.isnan(v), 2, (v > 0).to(torch.uint8)).to(torch.uint8))
    return code_fn


def staircase_levels(steps, lo, hi, dtype, device):
    """The K + 1 output levels, computed as the forward computes them (reference.py)."""
    op = opmath_dtype(dtype)
    c = torch.arange(steps + 1, dtype=op, device=device)
    q = c / torch.full((), float(steps), dtype=op, device=device)  # a tensor, as reference.py
    return (lo + q * (hi - lo)).to(dtype)


def staircase_output_code(steps, lo, hi):
    """code_fn for a staircase's output: the level index, K + 1 for NaN."""
    def code_fn(y):
        levels = staircase_levels(steps, lo, hi, y.dtype, y.device)

        def torch_codes(v):
            wide = torch.float64 if v.dtype == torch.float64 else torch.float32
            flat = v.reshape(-1)
            codes = torch.searchsorted(levels.to(wide), flat.to(wide))
            return torch.where(torch.isnan(flat), steps + 1, codes)

        return _level_code(y, levels, torch_codes)
    return code_fn
