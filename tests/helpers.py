"""Comparison helpers and boundary-value tables shared by the op tests."""
import torch

# The dtypes, tolerances and boundary grids are the package's (ftprop_cuda/check/grids.py), which
# `python -m ftprop_cuda --check` holds the kernels to on the user's machine. Backward
# tolerances: both sides compute in float32 (float64 for float64) and round once, so low
# precision differs by at most about one unit in the last place of the output; float32 allows
# for a few ulp of tanh/exp implementations and the cancellation in 1 - tanh(z)^2 near saturation.
from ftprop_cuda.check.grids import (BACKWARD_TOL, DTYPES, G_BOUNDARY, INF, INT_VIEW,  # noqa: F401
                                     NAN, Z_STEP, grid, staircase_boundary)


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
