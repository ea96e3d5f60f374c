"""Codes are the same bytes on every backend (docs/spec.md, "Layout"): the saved-state codes a
device's forward makes are the spec's layout, and decode on the CPU to the device's backward;
lean mode's level codes (memory/codes.py) and max-pool offsets (memory/pool.py) made on the
device decode on the CPU, and the CPU's on the device."""
import math

import torch
import torch.nn.functional as F

from ..memory import codes as level_codes
from ..memory import pool as lean_pool
from ..ops import reference
from . import grids
from .results import CheckFailed, expect

BLOCK = 512  # elements per planar block of a saved-state code (docs/spec.md, "Layout")
N = 3 * BLOCK + 64  # three whole blocks and a short one, with no padding bits


def pack_planar(values, bits):
    """docs/spec.md's layout from its definition: blocks of 512 elements, each packed planar
    (element j + k W of a block at bits [k b, (k + 1) b) of its byte j). values: 1-D int64,
    length a multiple of 8 / bits within each block."""
    per = 8 // bits
    out = []
    for start in range(0, values.numel(), BLOCK):
        block = values[start:start + BLOCK]
        planes = block.view(per, -1)
        out.append(sum(planes[k] << (k * bits) for k in range(per)))
    return torch.cat(out).to(torch.uint8)


def _code_inputs():
    """z over [-2.5, 2.5] with the thresholds, zeros and specials placed in it."""
    z = torch.linspace(-2.5, 2.5, N, dtype=torch.float64)
    z[::97] = torch.tensor([-1.0, 1.0, 0.0, -0.0, math.nan, math.inf, -math.inf, 0.5, -0.5,
                            1.5, -1.5, 2.0, -2.0, 1e-30, -1e-30, 0.25, 0.75])[:len(z[::97])]
    return z.float()


def _step_codes(z):
    """(rule, bits, code values) of the lossless step codes, from the spec's table."""
    nan = torch.isnan(z)
    sste = (z.abs() <= 1).long()
    sat = ((-1 <= z) & (z < 1)).long() | (((-1 < z) & (z <= 1)).long() << 1)
    hinge = (z >= -1).long() | ((z <= 1).long() << 1)
    perceptron = (z >= 0).long() | ((z <= 0).long() << 1)
    return [("sste", 1, sste), ("saturated_hinge", 2, sat), ("hinge", 2, hinge),
            ("perceptron", 2, perceptron)], nan


def saved_codes(device):
    """The step and staircase codes made on `device` are the spec's bytes; a code made on the
    device and read on the CPU (and back) gives the backward of the side that made it."""
    z = _code_inputs()
    g = torch.linspace(-3, 3, N)
    table, _ = _step_codes(z)
    for rule, bits, values in table:
        _, code = torch.ops.ftprop_cuda._step_saved(z.to(device), rule, False, True)
        expect(None if torch.equal(code.cpu(), pack_planar(values, bits)) else
               "bytes differ from docs/spec.md's layout", f"step {rule} code")
        _cross_decode(code, g, device, f"step {rule}", lambda gg, cc: torch.ops.ftprop_cuda.
                      _step_backward_saved(gg, cc, rule, False, True))
    u = reference.staircase_u(z.double(), 0.0, 1.0)
    count = reference.staircase_count(u, 3)
    count = torch.where(torch.isnan(count), 4.0, count).long()  # K + 1 for NaN
    _, code = torch.ops.ftprop_cuda._staircase_saved(z.to(device), 3, 0.0, 1.0,
                                                     "saturated_hinge", True)
    expect(None if torch.equal(code.cpu(), pack_planar(count, 4)) else
           "bytes differ from docs/spec.md's layout", "staircase saturated_hinge count code")
    _cross_decode(code, g, device, "staircase saturated_hinge",
                  lambda gg, cc: torch.ops.ftprop_cuda._staircase_backward_saved(
                      gg, cc, 3, 0.0, 1.0, "saturated_hinge", True))
    return f"{len(table) + 1} codes of {N} elements: spec layout, decoded across devices"


def _cross_decode(code, g, device, what, backward):
    here = backward(g.to(device), code)
    on_cpu = backward(g, code.cpu())
    expect(grids.bits_differ(on_cpu, here.cpu()), f"{what}: the code decoded on the CPU")
    back = backward(g.to(device), code.cpu().to(device))
    expect(grids.bits_differ(back, here), f"{what}: the code back on {device}")


def level_codes_across(device):
    """Lean mode's unit-output codes made on the device decode on the CPU, and back."""
    gen = torch.Generator().manual_seed(5)
    z = torch.randn(7, 9, 11, generator=gen) * 1.5
    z[0, 0, :3] = torch.tensor([math.nan, 0.0, math.inf])
    cases = [("step", level_codes.step_output_code(-1.0), reference.step_forward(z)),
             ("staircase K=5", level_codes.staircase_output_code(5, -1.0, 1.0),
              reference.staircase_forward(z, 5, -1.0, 1.0))]
    for name, code_fn, y in cases:
        planes_dev, decode_dev = code_fn(y.to(device))
        planes_cpu, decode_cpu = code_fn(y)
        if not torch.equal(planes_dev.cpu().reshape(-1), planes_cpu.reshape(-1)):
            raise CheckFailed(f"{name}: the device's code bytes differ from the CPU's")
        expect(grids.bits_differ(decode_cpu(planes_dev.cpu().view(planes_cpu.shape)), y),
               f"{name}: the device's code decoded on the CPU")
        expect(grids.bits_differ(decode_dev(planes_cpu.to(device).view(planes_dev.shape)),
                                 y.to(device)), f"{name}: the CPU's code decoded on {device}")
    return f"{len(cases)} unit-output codes"


def pool_offsets_across(device):
    """Max-pool indices as window offsets: packed on the device, unpacked on the CPU (and
    back), for contiguous and channels-last inputs, with windows of -inf and of NaN."""
    if not lean_pool.codec_available(torch.device(device)):
        raise CheckFailed(f"no compiled offset codec for {device}")
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(2, 3, 11, 9, generator=gen)
    x[0, 0] = -math.inf  # all -inf windows: ATen's channels-last CUDA kernel gives index 0
    x[1, 1, :3] = math.nan
    x = x.to(device)
    params = ((3, 3), (2, 2), (1, 1), (1, 1))
    bits = lean_pool.offset_bits(params[0])
    for layout in ("contiguous", "channels-last"):
        xs = x if layout == "contiguous" else x.contiguous(memory_format=torch.channels_last)
        _, idx = F.max_pool2d(xs, *params, return_indices=True)
        token = lean_pool.PoolIndices(idx, xs.shape[-1], params, bits)
        on_cpu = torch.ops.ftprop_cuda._pool_offsets_unpack(
            token.packed.cpu(), list(idx.shape), *token.args)
        if not torch.equal(on_cpu, idx.cpu().contiguous()):
            raise CheckFailed(f"{layout}: offsets packed on {device} unpack to other indices "
                              "on the CPU")
        cpu_token = lean_pool.PoolIndices(idx.cpu(), xs.shape[-1], params, bits)
        if not torch.equal(cpu_token.packed, token.packed.cpu()):
            raise CheckFailed(f"{layout}: the packed bytes differ between {device} and the CPU")
    return "3x3 windows, stride 2, padding 1, -inf and NaN windows: contiguous and channels-last"
