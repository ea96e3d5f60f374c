"""The boundary grids of docs/spec.md and the comparisons the self-test (and the test suite)
holds the kernels to.

The grids put z at and around every threshold, window edge and special value of the spec's
step and staircase tables, and g at both signs, zero, tiny, infinite and NaN values. The
comparisons return a message describing the first differences, or None when they agree:

- forward passes: bitwise (NaN in the same places);
- backward passes: within BACKWARD_TOL of the reference (both sides compute in the op-math type
  and round once, so half precision differs by about an ulp of the output, float32 by a few ulp
  of tanh/exp; docs/spec.md, "Precision"), NaN exactly where the reference has NaN;
- save="compact" backward passes of the smooth rules: within the slope code's bound of
  docs/spec.md ("The compact slope code": s_max / 508 of the incoming factor, s_max / 254 for
  slopes below s_max / 508), against the reference run in the op-math type.
"""
import math

import torch

DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
DTYPE_NAMES = {torch.float16: "float16", torch.bfloat16: "bfloat16", torch.float32: "float32",
               torch.float64: "float64"}

BACKWARD_TOL = {
    torch.float16: dict(rtol=2e-3, atol=1e-5),
    torch.bfloat16: dict(rtol=1.6e-2, atol=1e-5),
    torch.float32: dict(rtol=1e-5, atol=1e-6),
    torch.float64: dict(rtol=1e-12, atol=1e-14),
}

INT_VIEW = {torch.float16: torch.int16, torch.bfloat16: torch.int16,
            torch.float32: torch.int32, torch.float64: torch.int64}

INF, NAN = math.inf, math.nan
# z at and around every threshold, window edge and special value of docs/spec.md's step table.
Z_STEP = [0.0, -0.0, 1.0, -1.0, 2.0, -2.0, 0.5, -0.5, 1.5, -1.5, 1e-30, -1e-30, 0.999, 1.001,
          -0.999, -1.001, 1.999, 2.001, 9.0, -9.0, 30.0, -30.0, 65000.0, INF, -INF, NAN]
G_BOUNDARY = [0.0, -0.0, 1.0, -1.0, 0.25, -3.0, 1e-30, INF, -INF, NAN]
# (steps K, lo, hi): the paper's K = 3 on [0, 1], K = 5, K = 2, shifted and narrow ranges, a
# bound of -0.0, and K = 300 (no count code fits a byte: z is kept).
STAIR_CONFIGS = [(3, 0.0, 1.0), (5, 0.0, 1.0), (2, -1.0, 1.0), (4, -0.5, 2.5), (7, 0.1, 0.35),
                 (3, -0.0, 1.0), (300, 0.0, 1.0)]


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


def _examples(mask, actual, expected, count=3):
    idx = mask.reshape(-1).nonzero()[:count].flatten().tolist()
    return (f"e.g. at {idx}: {actual.reshape(-1)[idx].tolist()} vs "
            f"{expected.reshape(-1)[idx].tolist()}")


def _same_meta(actual, expected):
    if actual.shape != expected.shape or actual.dtype != expected.dtype:
        return (f"shape/dtype {tuple(actual.shape)} {actual.dtype} vs "
                f"{tuple(expected.shape)} {expected.dtype}")
    return None


def bits_differ(actual, expected):
    """None when actual and expected have the same shape, dtype, NaN positions and bits
    elsewhere; else what differs."""
    wrong = _same_meta(actual, expected)
    if wrong:
        return wrong
    a = actual.detach().cpu().contiguous()
    e = expected.detach().cpu().contiguous()
    nan_a, nan_e = torch.isnan(a), torch.isnan(e)
    if not torch.equal(nan_a, nan_e):
        return f"NaN in other places, {_examples(nan_a != nan_e, a, e)}"
    diff = (a.view(INT_VIEW[a.dtype]) != e.view(INT_VIEW[e.dtype])) & ~nan_a
    if diff.any():
        return f"{int(diff.sum())} elements differ bitwise, {_examples(diff, a, e)}"
    return None


def not_close(actual, expected):
    """None when actual is within BACKWARD_TOL of expected (NaN where it has NaN, infinities
    equal); else what differs."""
    wrong = _same_meta(actual, expected)
    if wrong:
        return wrong
    a, e = actual.detach().cpu().double(), expected.detach().cpu().double()
    tol = BACKWARD_TOL[actual.dtype]
    return _outside(a, e, tol["rtol"] * e.abs() + tol["atol"])


def _outside(a, e, bound):
    """None when a matches e: NaN exactly where e has NaN, e's infinities exactly, |a - e| <=
    bound elsewhere."""
    nan_a, nan_e = torch.isnan(a), torch.isnan(e)
    inf_e = torch.isinf(e)
    finite = ~nan_e & ~inf_e
    ok = torch.where(nan_e, nan_a, torch.where(inf_e, a == e,
                                               finite & torch.isfinite(a)
                                               & ((a - e).abs() <= bound)))
    if not ok.all():
        return f"{int((~ok).sum())} of {ok.numel()} outside the tolerance, {_examples(~ok, a, e)}"
    return None


def compact_not_close(actual, exact, slope, scale, s_max):
    """save='compact' of a smooth rule against `exact`, the reference's backward computed in the
    op-math type (where the kernel computes the slope it codes; `slope` likewise, `scale` the
    incoming factor |g| or 1 / B): within docs/spec.md's bound of the slope code (s_max / 508
    times the factor, s_max / 254 for slopes in (0, s_max / 508)), plus the output dtype's
    rounding. None when within."""
    a = actual.detach().cpu().double()
    e = exact.detach().to(actual.dtype).cpu().double()  # rounded once to the output dtype
    slope, scale = slope.detach().cpu().double(), scale.detach().cpu().double()
    tiny = (slope > 0) & (slope < s_max / 508)
    eps = torch.finfo(actual.dtype).eps
    step = torch.where(tiny, s_max / 254, s_max / 508) + 4 * torch.finfo(torch.float32).eps
    spacing = torch.finfo(actual.dtype).smallest_normal * eps  # the subnormal spacing
    # the output's own rounding to its dtype: relative to the larger of the two magnitudes
    magnitude = torch.where(torch.isfinite(a), torch.maximum(a.abs(), e.abs()), e.abs())
    bound = step * scale + eps * magnitude.nan_to_num(0.0) + spacing
    return _outside(a, e, bound)
