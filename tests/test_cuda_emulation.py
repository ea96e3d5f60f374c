"""The CUDA kernel bodies run on the CPU, emulated, and compared bit for bit with the CPU kernels.

csrc/cuda/kernels.h holds the bodies of the four CUDA kernels (map1, map2, encode, decode) as
templates that take their grid indices from a thread context; nvcc builds them behind one
__global__ entry (csrc/cuda/launch.cuh), and this test builds the same header with the host C++
compiler (csrc/emu/, registered as torch.ops.ftprop_emu.*, once per test session). The emulated
launcher runs every (block, thread) of a grid in turn, so the emulation exercises, unchanged:
the host code of every op (argument checks, dtype and rule dispatch: elementwise_ops.h), the
grid formula (blocks from the item count and the SM count, here with fake SM counts so that the
grid-stride loops iterate), the 64-bit indexing and grid-stride loops, the code packing (one
thread per code byte, the CPU's planar layout: the codes must be byte-identical to the CPU's) and
a write log proving every output element and code byte written exactly once per launch.

What it does not cover:
- concurrency: threads run one after another, so races, warp divergence and memory ordering are
  not exercised (the write log shows no two threads store to one place, which is what makes the
  kernels race-free);
- streams, the device guard (a stand-in that only checks the device type and counts) and the
  launch-error checks;
- CUDA's own tanhf/expf/tanh/exp and its half/bfloat16 conversions: the host build uses the CPU's
  exp/tanh approximations and c10's conversions, so the smooth rules' backward on a real GPU may
  differ from these results by the last few bits (the forward does not call them);
- nvcc's code generation itself (--fmad=false, register pressure, unrolling).

The max-pool offset codec of csrc/cuda/pool_offsets.cu runs here too: its host code and kernel
bodies (csrc/cuda/pool_kernels.h) on the emulated launcher, and the CUDA-only device functions
of csrc/pool_offsets.h (offset_of_delta, pool_offset_of, pool_index_of, through pack_pool_byte
and unpack_pool_index) one by one, against the CPU codec and a Python oracle.
"""
import math
import pathlib

import pytest
import torch

import ftprop_cuda  # noqa: F401  (loads the CPU kernels: torch.ops.ftprop_cuda.*)

from helpers import G_BOUNDARY, Z_STEP, assert_same_bits, staircase_boundary
from test_pool_escape import POOLS, cuda_like_indices

CSRC = pathlib.Path(__file__).resolve().parent.parent / "csrc"
# The CPU kernels' floating-point flags (setup.py): no contraction into fused multiply-adds, so
# both builds round every operation alike.
CXX_FLAGS = ["-O2", "-ffp-contract=off", "-fno-trapping-math", "-fno-math-errno"]

STEP_RULES = ("ste", "sste", "ramp", "soft_hinge", "saturated_hinge", "hinge", "perceptron",
              "sigmoid", "lecun_tanh")
STAIR_RULES = ("ste", "sste", "soft_hinge", "saturated_hinge")
DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
# Odd sizes around the 512-element code blocks and the 256-thread blocks, as 2-D shapes so that
# the batch B (shape[0]) of the unweighted mode is not n.
SHAPES = ((1,), (7,), (7, 73), (27, 19), (17, 241))
# (blocks, threads, sms): blocks 0 is the real grid formula with `sms` SMs (1 SM: at most 8
# blocks of 256 threads, so 4097 elements take 3 passes; 132: an H100's, one pass).
GRIDS = {"real_1sm": (0, 0, 1), "real_132sm": (0, 0, 132), "1x32": (1, 32, 1), "3x7": (3, 7, 1)}


def _cpu_ops_or_skip():
    if not hasattr(torch.ops.ftprop_cuda, "_step_saved"):
        pytest.skip("the compiled extension ftprop_cuda._C is not available")
    return torch.ops.ftprop_cuda


@pytest.fixture(scope="session")
def emu(request, tmp_path_factory):
    _cpu_ops_or_skip()
    if not (CSRC / "emu" / "ops.cpp").exists():
        pytest.skip("the C++ sources (csrc/) are not next to the tests")
    from torch.utils import cpp_extension

    cache = getattr(request.config, "cache", None)
    build = cache.mkdir("ftprop_emu_build") if cache is not None else (
        tmp_path_factory.mktemp("ftprop_emu_build"))
    cpp_extension.load(name="ftprop_emu", sources=[str(CSRC / "emu" / "ops.cpp")],
                       extra_cflags=CXX_FLAGS, build_directory=str(build),
                       is_python_module=False, verbose=False)
    return torch.ops.ftprop_emu


def _configure(emu, grid, log_writes=True, reported_grid=0):
    blocks, threads, sms = GRIDS[grid] if isinstance(grid, str) else grid
    emu.configure(blocks, threads, sms, reported_grid, log_writes)


def _inputs(shape, specials, dtype, seed):
    """z and g of `shape`: the special values (each at least once when there is room) mixed with
    random ones, in a seeded random order."""
    n = math.prod(shape)
    gen = torch.Generator().manual_seed(seed)
    zs = torch.tensor(specials, dtype=torch.float64)
    gs = torch.tensor(G_BOUNDARY, dtype=torch.float64)
    z = torch.cat([zs, torch.randn(max(n - len(zs), 0), generator=gen, dtype=torch.float64) * 2])
    g = torch.cat([gs.repeat(n // (4 * len(gs)) + 1),
                   torch.randn(n, generator=gen, dtype=torch.float64)])[:n]
    z = z[torch.randperm(len(z), generator=gen)][:n]
    g = g[torch.randperm(n, generator=gen)]
    return z.reshape(shape).to(dtype), g.reshape(shape).to(dtype)


def _assert_codes_equal(actual, expected):
    assert actual.dtype == expected.dtype == torch.uint8 and actual.shape == expected.shape
    wrong = (actual != expected).nonzero().flatten()
    assert wrong.numel() == 0, f"{wrong.numel()} code bytes differ, first at {wrong[:5].tolist()}"


def _check_step(emu, cpu, z, g, rule, zero_one, grad_scale):
    assert_same_bits(emu.step(z, rule, zero_one, grad_scale), cpu.step(z, rule, zero_one, grad_scale))
    assert_same_bits(emu._step_backward(g, z, rule, zero_one, grad_scale),
                     cpu._step_backward(g, z, rule, zero_one, grad_scale))
    y_e, code_e = emu._step_saved(z, rule, zero_one, grad_scale)
    y_c, code_c = cpu._step_saved(z, rule, zero_one, grad_scale)
    assert_same_bits(y_e, y_c)
    _assert_codes_equal(code_e, code_c)
    expected = cpu._step_backward_saved(g, code_c, rule, zero_one, grad_scale)
    assert_same_bits(emu._step_backward_saved(g, code_e, rule, zero_one, grad_scale), expected)
    # a code moved across devices decodes alike
    assert_same_bits(emu._step_backward_saved(g, code_c, rule, zero_one, grad_scale), expected)
    assert_same_bits(cpu._step_backward_saved(g, code_e, rule, zero_one, grad_scale), expected)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("rule", STEP_RULES)
def test_step_kernels_match_cpu_bit_for_bit(emu, rule, dtype):
    cpu = _cpu_ops_or_skip()
    for grid in GRIDS:
        _configure(emu, grid)
        for k, shape in enumerate(SHAPES):
            z, g = _inputs(shape, Z_STEP, dtype, seed=k)
            for zero_one in (False, True):
                for grad_scale in (True, False):
                    _check_step(emu, cpu, z, g, rule, zero_one, grad_scale)
        launches, *_, writes, guards = emu.stats()
        assert launches > 0 and writes > 0 and guards > 0


# saturated_hinge's count code takes 2 bits for 2 steps, 4 bits for 3 and 5, 8 bits for 17.
STAIRS = [(2, 0.0, 1.0), (3, -1.5, 2.5), (5, 0.0, 1.0), (17, -1.5, 2.5)]


def _check_stair(emu, cpu, z, g, steps, lo, hi, rule, grad_scale):
    args = (steps, lo, hi, rule, grad_scale)
    assert_same_bits(emu.staircase(z, *args), cpu.staircase(z, *args))
    assert_same_bits(emu._staircase_backward(g, z, *args), cpu._staircase_backward(g, z, *args))
    y_e, code_e = emu._staircase_saved(z, *args)
    y_c, code_c = cpu._staircase_saved(z, *args)
    assert_same_bits(y_e, y_c)
    _assert_codes_equal(code_e, code_c)
    expected = cpu._staircase_backward_saved(g, code_c, *args)
    assert_same_bits(emu._staircase_backward_saved(g, code_e, *args), expected)
    assert_same_bits(emu._staircase_backward_saved(g, code_c, *args), expected)
    assert_same_bits(cpu._staircase_backward_saved(g, code_e, *args), expected)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("rule", STAIR_RULES)
def test_staircase_kernels_match_cpu_bit_for_bit(emu, rule, dtype):
    cpu = _cpu_ops_or_skip()
    for grid in ("real_1sm", "1x32", "3x7"):
        _configure(emu, grid)
        for steps, lo, hi in STAIRS:
            for k, shape in enumerate(SHAPES):
                z, g = _inputs(shape, staircase_boundary(steps, lo, hi), dtype, seed=k)
                for grad_scale in (True, False):
                    _check_stair(emu, cpu, z, g, steps, lo, hi, rule, grad_scale)


@pytest.mark.parametrize("grid,n,passes", [
    ("real_1sm", 4097, 3),      # 8 blocks x 256 threads cover 2048 elements per pass
    ("real_132sm", 4097, 1),    # 17 blocks
    ("1x32", 513, 17),
])
def test_grid_stride_loops_iterate(emu, grid, n, passes):
    _configure(emu, grid)
    z = torch.randn(n)
    emu.step(z, "sste", False, True)
    launches, items, blocks, threads, max_passes, writes, _ = emu.stats()
    assert (launches, items, max_passes, writes) == (1, n, passes, n)
    if grid == "real_1sm":
        assert (blocks, threads) == (8, 256)


@pytest.mark.parametrize("bits_rule", ["sste", "saturated_hinge", "soft_hinge"])
def test_each_code_byte_written_once_when_a_block_holds_several_code_blocks(emu, bits_rule):
    # 1 block of 7 threads: each thread packs bytes of several 512-element code blocks
    _configure(emu, (1, 7, 1))
    z = torch.randn(3 * 512 + 5)
    y, code = emu._step_saved(z, bits_rule, False, True)
    y_c, code_c = torch.ops.ftprop_cuda._step_saved(z, bits_rule, False, True)
    _assert_codes_equal(code, code_c)
    assert emu.stats()[5] == z.numel() + code.numel()


@pytest.mark.parametrize("reported,message", [(2, "written 2 times"), (4, "written 0 times")])
def test_write_log_catches_a_wrong_grid(emu, reported, message):
    # The threads are told a gridDim that is not the grid's: their strides overlap or leave gaps.
    _configure(emu, (3, 32, 1), reported_grid=reported)
    with pytest.raises(RuntimeError, match=message):
        emu.step(torch.randn(1000), "sste", False, True)
    with pytest.raises(RuntimeError, match=message):
        emu._step_saved(torch.randn(1000), "hinge", False, True)


def test_device_guard_comes_after_the_checks(emu):
    """A tensor of another device reports the op's own message, not the guard's (CUDA: "CUDAGuardImpl
    initialized with non-CUDA DeviceType"); the emulated guard fails on any non-CPU device."""
    _configure(emu, "real_1sm")
    z = torch.randn(8)
    meta = torch.empty(8, device="meta")
    code = emu._step_saved(z, "sste", False, True)[1]
    stair_code = emu._staircase_saved(z, 3, 0.0, 1.0, "sste", True)[1]
    guards = emu.stats()[6]
    assert guards == 2
    cases = [
        (lambda: emu._step_backward(meta, z, "sste", False, True), "'grad' is on meta"),
        (lambda: emu._step_backward(z, meta, "sste", False, True), "'grad' is on cpu"),
        (lambda: emu._staircase_backward(meta, z, 3, 0.0, 1.0, "sste", True), "'grad' is on meta"),
        (lambda: emu._step_backward_saved(meta, code, "sste", False, True), "'state' is on cpu"),
        (lambda: emu._staircase_backward_saved(meta, stair_code, 3, 0.0, 1.0, "sste", True),
         "'state' is on cpu"),
        # a bad argument is reported before the guard is built, too
        (lambda: emu.step(z, "tanh", False, True), "unknown rule 'tanh'"),
        (lambda: emu.staircase(z, 1, 0.0, 1.0, "sste", True), "'steps' must be"),
    ]
    for call, message in cases:
        with pytest.raises((RuntimeError, ValueError), match=message):
            call()
    assert emu.stats()[6] == guards
    with pytest.raises(RuntimeError, match="emulated device guard initialized with non-CPU"):
        emu.step(meta, "sste", False, True)


def test_empty_tensors_launch_nothing(emu):
    _configure(emu, "real_1sm")
    z = torch.empty(0, 3)
    assert emu.step(z, "sste", False, True).shape == (0, 3)
    y, code = emu._step_saved(z, "hinge", False, True)
    assert y.shape == (0, 3) and code.shape == (0,)
    assert emu.stats()[0] == 0



# ---- the max-pool offset codec of csrc/cuda/pool_offsets.cu --------------------------------------
def _pool_case(pool, layout, seed=0):
    """(x, CUDA-like indices, codec args) for a pool: indices as ATen's channels-last CUDA kernel
    returns them (index 0 for all -inf windows), on a 3-D, contiguous or channels-last input."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 3, 11, 9, generator=gen)
    x[0, 0] = -math.inf
    x[1, 1, 4:, 3:] = -math.inf
    x[1, 2, :3] = math.nan
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    elif layout == "3d":
        x = x[1]
    idx, _ = cuda_like_indices(x, pool)
    kernel, stride, padding, dilation, _ = pool
    bits = next(b for b in (1, 2, 4, 8) if kernel[0] * kernel[1] + 1 <= 1 << b)
    return x, idx, (x.shape[-1], list(kernel), list(stride), list(padding), list(dilation), bits)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "3d"])
@pytest.mark.parametrize("pool", POOLS)
def test_pool_codec_matches_cpu(emu, pool, layout):
    """pool_offsets.cu's pack and unpack: bytes identical to the CPU codec's, indices back
    exactly (index 0 outside its window included), every byte and index written once."""
    cpu = _cpu_ops_or_skip()
    _, idx, args = _pool_case(pool, layout)
    for grid in ("real_1sm", "1x32", "3x7"):
        _configure(emu, grid)
        packed = emu._pool_offsets_pack(idx, *args)
        _assert_codes_equal(packed, cpu._pool_offsets_pack(idx, *args))
        out = emu._pool_offsets_unpack(packed, list(idx.shape), *args)
        assert torch.equal(out, idx.contiguous())
        assert torch.equal(cpu._pool_offsets_unpack(packed, list(idx.shape), *args), out)
        launches, *_, writes, guards = emu.stats()
        assert launches == 2 and writes == packed.numel() + idx.numel() and guards == 2


def _oracle_offset(d, kernel, dilation, in_w):
    """offset_of_delta by division: d = kh * dH * in_w + kw * dW."""
    kh, rem = divmod(d, dilation[0] * in_w)
    return kh * kernel[1] + rem // dilation[1]


def _clamped_offset(d, kernel, dilation, in_w):
    """offset_of_delta's answer by its definition: kh and kw counted by comparisons (outside the
    window they clamp into it)."""
    row = dilation[0] * in_w
    kh = sum(d >= j * row for j in range(1, kernel[0]))
    rem = d - kh * row
    kw = sum(rem >= j * dilation[1] for j in range(1, kernel[1]))
    return kh * kernel[1] + kw


def _delta(offset, kernel, dilation, in_w):
    kh, kw = divmod(offset, kernel[1])
    return kh * dilation[0] * in_w + kw * dilation[1]


@pytest.mark.parametrize("pool", POOLS)
def test_pool_codec_device_functions(emu, pool):
    """offset_of_delta, pool_offset_of and pool_index_of, as the CUDA kernels call them, on
    every position of every window, and on index 0 for every window (the escape code where the
    window does not hold it)."""
    kernel, stride, padding, dilation, _ = pool
    in_w, size = 9, [2, 5, 4]
    bits = next(b for b in (1, 2, 4, 8) if kernel[0] * kernel[1] + 1 <= 1 << b)
    escape = kernel[0] * kernel[1]
    rows, expected, escapes = [], [], 0
    for e in range(size[1] * size[2]):
        oh, ow = divmod(e, size[2])
        origin = (oh * stride[0] - padding[0]) * in_w + ow * stride[1] - padding[1]
        for offset in range(kernel[0] * kernel[1]):
            d = _delta(offset, kernel, dilation, in_w)
            rows += [d, origin + d, e, offset]
            expected += [offset, offset, origin + d]
        # index 0: inside the window exactly when the clamped offset's delta is -origin
        clamped = _clamped_offset(-origin, kernel, dilation, in_w)
        inside = _delta(clamped, kernel, dilation, in_w) == -origin
        escapes += not inside
        rows += [-origin, 0, e, escape]
        expected += [clamped, clamped if inside else escape, 0]
    assert escapes > 0
    got = emu.pool_codec_functions(size, in_w, list(kernel), list(stride), list(padding),
                                   list(dilation), bits, rows)
    assert got == expected


def test_pool_codec_checks_before_the_guard(emu):
    _configure(emu, "real_1sm")
    idx = torch.zeros(1, 2, 2, dtype=torch.int64)
    args = (4, [2, 2], [2, 2], [0, 0], [1, 1])
    with pytest.raises(RuntimeError, match="bits must be 1, 2, 4 or 8"):
        emu._pool_offsets_pack(idx, *args, 3)
    with pytest.raises(RuntimeError, match="indices must be int64"):
        emu._pool_offsets_pack(idx.float(), *args, 4)
    with pytest.raises(RuntimeError, match="packed has 3 bytes, expected 2"):
        emu._pool_offsets_unpack(torch.zeros(3, dtype=torch.uint8), [1, 2, 2], *args, 4)
    assert emu.stats()[6] == 1  # only the unpack got as far as its guard (then the size check)
    with pytest.raises(RuntimeError, match="emulated device guard"):
        emu._pool_offsets_pack(idx.to("meta"), *args, 4)
