"""Convex fits of one unit: given a layer's input targets A (m x n) and one unit's target column
t (m values in {-1, +1}), find weights w and a bias b with t_i (w . a_i + b) >= 1.

- fit_lp: the exact hinge LP (scipy's HiGHS): minimise sum_i xi_i subject to
  t_i (w . a_i + b) >= 1 - xi_i, xi_i >= 0. Its optimum is 0 exactly when the unit's problem is
  linearly separable, and then (w, b) is the certificate: every margin is >= 1.
- fit_perceptron: the batch perceptron (fast, exact when it separates: its weights are scaled so
  that the smallest margin is 1, loss 0), warm-started from given weights.
- fit_lbfgs: hinge (squared) or logistic loss by L-BFGS, warm-started.

Every fit returns a UnitFit: weights, bias, the hinge loss sum_i max(0, 1 - t_i z_i) of those
weights, the violated examples (sign(z_i) != t_i with sign(0) = -1, the step's convention) and
the pre-activations z.
"""
from dataclasses import dataclass

import numpy as np

FITS = ("lp", "perceptron", "lbfgs_hinge", "lbfgs_logistic")
# the LP's optimum below this is 0: HiGHS's default feasibility tolerance is 1e-7 per row
LOSS_TOL = 1e-6


@dataclass(frozen=True)
class UnitFit:
    """One unit's fit: z = A @ w + b; violated marks sign(z) != t (sign(0) = -1)."""
    w: np.ndarray
    b: float
    loss: float
    violated: np.ndarray
    z: np.ndarray
    t: np.ndarray
    lp_calls: int

    @property
    def separable(self) -> bool:
        """True when the fit reproduces every target (the problem is separable)."""
        return not self.violated.any()

    @property
    def min_margin(self) -> float:
        """The smallest t_i z_i (>= 1 - tolerance for an LP certificate)."""
        return float(np.min(self.signed)) if self.z.size else float("inf")

    @property
    def signed(self) -> np.ndarray:
        """The margins t_i z_i."""
        return self.z * self.t


def sign(z):
    """The step's forward: +1 where z > 0, else -1 (float64)."""
    return np.where(np.asarray(z) > 0, 1.0, -1.0)


def hinge(tz):
    return np.maximum(0.0, 1.0 - tz)


def _check(A, t):
    A = np.asarray(A, dtype=np.float64)
    t = np.asarray(t, dtype=np.float64)
    if A.ndim != 2 or t.shape != (A.shape[0],):
        raise ValueError(f"A must be m x n and t m values; got A {A.shape}, t {t.shape}")
    if not np.all(np.abs(t) == 1):
        raise ValueError("t must hold only -1 and +1")
    return A, t


def _result(A, t, w, b, lp_calls, loss=None):
    z = A @ w + b
    tz = t * z
    if loss is None:
        loss = float(hinge(tz).sum())
    return UnitFit(w=w, b=float(b), loss=float(loss), violated=sign(z) != t, z=z, t=t,
                   lp_calls=lp_calls)


SOLVERS = ("auto", "direct", "linprog")


def _linprog(A, t):
    from scipy.optimize import linprog

    m, n = A.shape
    c = np.concatenate([np.zeros(n + 1), np.ones(m)])
    a_ub = np.hstack([-(t[:, None] * A), -t[:, None], -np.eye(m)])
    bounds = [(None, None)] * (n + 1) + [(0, None)] * m
    res = linprog(c, A_ub=a_ub, b_ub=-np.ones(m), bounds=bounds, method="highs")
    if res.status != 0:
        raise RuntimeError(f"HiGHS failed on a hinge LP ({m} x {n}): {res.message}")
    return res.x[:n].copy(), float(res.x[n]), float(res.fun)


def fit_lp(A, t, solver="auto"):
    """The exact hinge LP (HiGHS); loss 0 (<= LOSS_TOL, reported as 0) iff separable.

    solver: 'linprog' (scipy.optimize.linprog, method='highs'), 'direct' (HiGHS without
    linprog's parsing, highs.py: the same LP, several times faster on small problems) or
    'auto' (direct when it loads, else linprog)."""
    from . import highs

    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {', '.join(map(repr, SOLVERS))}; got {solver!r}")
    A, t = _check(A, t)
    direct = solver == "direct" or (solver == "auto" and highs.available())
    w, b, loss = highs.hinge_lp(A, t) if direct else _linprog(A, t)
    z = A @ w + b
    if loss <= LOSS_TOL and np.all(t * z > 0):
        w, b = _scaled(A, t, w, b)  # margins within the tolerance of 1: make them >= 1 exactly
        loss = 0.0
    return _result(A, t, w, b, 1, loss=loss)


def _scaled(A, t, w, b):
    """Separating weights scaled so that the smallest margin is at least 1."""
    smallest = float(np.min(t * (A @ w + b)))
    scale = 1.0 / smallest
    w, b = w * scale, b * scale
    # rounding can leave a margin a hair below 1; one more relative nudge settles it
    smallest = float(np.min(t * (A @ w + b)))
    if smallest < 1.0:
        w, b = w * (1.0 / smallest) * (1 + 1e-12), b * (1.0 / smallest) * (1 + 1e-12)
    return w, b


def fit_perceptron(A, t, w0=None, b0=0.0, epochs=100):
    """Batch perceptron from (w0, b0); exact (loss 0, margins >= 1) when it separates."""
    A, t = _check(A, t)
    w = np.zeros(A.shape[1]) if w0 is None else np.array(w0, dtype=np.float64)
    b = float(b0)
    for _ in range(epochs):
        wrong = t * (A @ w + b) <= 0
        if not wrong.any():
            w, b = _scaled(A, t, w, b)
            return _result(A, t, w, b, 0, loss=0.0)
        w = w + (t[wrong, None] * A[wrong]).sum(0)
        b = b + float(t[wrong].sum())
    return _result(A, t, w, b, 0)


def fit_lbfgs(A, t, loss="hinge", w0=None, b0=0.0, iters=50, l2=1e-4):
    """Squared-hinge or logistic loss by L-BFGS (torch, float64), warm-started from (w0, b0)."""
    import torch

    A, t = _check(A, t)
    if loss not in ("hinge", "logistic"):
        raise ValueError(f"loss must be 'hinge' or 'logistic'; got {loss!r}")
    a, tt = torch.from_numpy(A), torch.from_numpy(t)
    w0 = np.zeros(A.shape[1]) if w0 is None else np.asarray(w0, dtype=np.float64)
    p = torch.tensor(np.concatenate([w0, [b0]]), requires_grad=True)
    opt = torch.optim.LBFGS([p], max_iter=iters, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        margin = tt * (a @ p[:-1] + p[-1])
        if loss == "hinge":
            value = torch.clamp(1 - margin, min=0).pow(2).sum()
        else:
            value = torch.nn.functional.softplus(-margin).sum()
        value = value + l2 * p[:-1].pow(2).sum()
        value.backward()
        return value

    opt.step(closure)
    w, b = p.detach()[:-1].numpy().copy(), float(p.detach()[-1])
    if np.all(t * (A @ w + b) > 0):
        w, b = _scaled(A, t, w, b)
        return _result(A, t, w, b, 0, loss=0.0)
    return _result(A, t, w, b, 0)


def fit_unit(A, t, method="lp", warm=None):
    """One unit's fit by method (one of FITS); warm = (w, b) for the iterative methods."""
    if method not in FITS:
        raise ValueError(f"fit must be one of {', '.join(map(repr, FITS))}; got {method!r}")
    if method == "lp":
        return fit_lp(A, t)
    w0, b0 = warm if warm is not None else (None, 0.0)
    if method == "perceptron":
        return fit_perceptron(A, t, w0, b0)
    return fit_lbfgs(A, t, method.split("_")[1], w0, b0)
