"""Comparison helpers and boundary-value tables shared by the op tests."""
import math

import torch

DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)

# Backward tolerances against the reference, per dtype. Both sides compute in float32 (float64
# for float64) and round once, so low precision differs by at most about one unit in the last
# place of the output; float32 allows for a few ulp of tanh/exp implementations and the
# cancellation in 1 - tanh(z)^2 near saturation.
BACKWARD_TOL = {
    torch.float16: dict(rtol=2e-3, atol=1e-5),
    torch.bfloat16: dict(rtol=1.6e-2, atol=1e-5),
    torch.float32: dict(rtol=1e-5, atol=1e-6),
    torch.float64: dict(rtol=1e-12, atol=1e-14),
}

INT_VIEW = {
    torch.float16: torch.int16,
    torch.bfloat16: torch.int16,
    torch.float32: torch.int32,
    torch.float64: torch.int64,
}

INF, NAN = math.inf, math.nan
# z at and around every threshold, window edge and special value of docs/spec.md's step table.
Z_STEP = [0.0, -0.0, 1.0, -1.0, 2.0, -2.0, 0.5, -0.5, 1.5, -1.5, 1e-30, -1e-30, 0.999, 1.001,
          -0.999, -1.001, 1.999, 2.001, 9.0, -9.0, 30.0, -30.0, 65000.0, INF, -INF, NAN]
G_BOUNDARY = [0.0, -0.0, 1.0, -1.0, 0.25, -3.0, 1e-30, INF, -INF, NAN]


def staircase_boundary(steps, lo, hi):
    """z at every threshold and level of a staircase, a hair either side, and specials."""
    width = hi - lo
    us = [j / (steps - 1) for j in range(steps)] + [j / steps for j in range(steps + 1)]
    us += [-1.0, -0.5, 1.5, 2.0, 3.0, -1.0 / (steps - 1), 1.0 + 1.0 / (steps - 1)]
    zs = []
    for u in us:
        z = lo + u * width
        zs += [z, math.nextafter(z, INF), math.nextafter(z, -INF)]
    return zs + [0.0, -0.0, 1.0, -1.0, 2.0, -2.0, 100.0, -100.0, INF, -INF, NAN]


def grid(zs, gs, dtype, device):
    """All (z, g) pairs as two 1-D tensors."""
    z = torch.tensor(zs, dtype=torch.float64).repeat_interleave(len(gs))
    g = torch.tensor(gs, dtype=torch.float64).repeat(len(zs))
    return z.to(dtype=dtype, device=device), g.to(dtype=dtype, device=device)


def assert_same_bits(actual, expected):
    """Exact equality: same shape and dtype, NaN in the same places, identical bits elsewhere."""
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    assert actual.dtype == expected.dtype, (actual.dtype, expected.dtype)
    a, e = actual.detach().cpu().contiguous(), expected.detach().cpu().contiguous()
    nan_a, nan_e = torch.isnan(a), torch.isnan(e)
    assert torch.equal(nan_a, nan_e), "NaN positions differ"
    ia, ie = a.view(INT_VIEW[a.dtype]), e.view(INT_VIEW[e.dtype])
    diff = (ia != ie) & ~nan_a
    if diff.any():
        idx = diff.nonzero()[:5].flatten().tolist()
        raise AssertionError(
            f"{int(diff.sum())} elements differ bitwise, e.g. at {idx}: "
            f"{a.flatten()[idx].tolist()} vs {e.flatten()[idx].tolist()}"
        )


def assert_backward_close(actual, expected):
    assert actual.shape == expected.shape and actual.dtype == expected.dtype
    torch.testing.assert_close(actual.cpu(), expected.cpu(), equal_nan=True,
                               **BACKWARD_TOL[actual.dtype])
