"""Candidate changes of the hidden targets.

A move is (layer, rows, column): flip the targets of hidden layer `layer`, unit `column`, on the
examples `rows`. The generators, for the topmost layer that still has violations:

- accept: set a violated hidden unit's targets to what it actually produces on its violated
  examples (that unit becomes feasible; the layer above sees the change);
- exact: every single-bit flip of the layer's input targets and of its own targets, ranked by
  the exact change of the score with all weights fixed (flip_deltas);
- gradient: flips where the target is not FTPROP-MB's own target -sign(g), ranked by |g|
  (g the gradient of the layer above's hinge loss at the targets, hinge_grad);
- disturbance: on the examples the layer above gets wrong, the bit of the least confident unit
  below (smallest |z|): Madaline's minimal disturbance.
"""
import numpy as np

from .fit import hinge, sign
from .state import BIG


def hinge_grad(W, z, y):
    """g = d/dT sum_{i,k} max(0, 1 - y_ik z_ik) for z = T W^T + b (a subgradient: 0 at the
    kink, as autograd's clamp gives); W n_out x n_in, z and y m x n_out. Returns m x n_in."""
    active = (y * z < 1).astype(np.float64)
    return (-(y * active)) @ W


def first_order(T, g):
    """The first-order term of a bit flip's loss change: T_ij -> -T_ij moves the input by
    -2 T_ij, so the change is -2 T_ij g_ij."""
    return -2.0 * T * g


def flip_deltas(T, W, z, y):
    """The exact change of the layer above's hinge loss and of its violation count when one bit
    T_ij is flipped with the weights W fixed: z_i. -> z_i. - 2 T_ij W_.j. Computed one column
    at a time (m x n_out memory, never m x n_in x n_out). Returns (dloss, dviol), m x n_in."""
    m, n_in = T.shape
    dloss = np.empty((m, n_in))
    dviol = np.empty((m, n_in))
    base_loss = hinge(y * z).sum(1)
    base_viol = (sign(z) != y).sum(1)
    for j in range(n_in):
        z2 = z - 2.0 * T[:, j:j + 1] * W[None, :, j]
        dloss[:, j] = hinge(y * z2).sum(1) - base_loss
        dviol[:, j] = (sign(z2) != y).sum(1) - base_viol
    return dloss, dviol


def self_deltas(fits, T):
    """The change of a layer's own hinge loss and violations when its target T_ij is flipped
    with its weights fixed (fits: the layer's UnitFits). Returns (dloss, dviol), m x n."""
    z = np.stack([f.z for f in fits], axis=1)
    dloss = hinge(-T * z) - hinge(T * z)
    wrong = sign(z) != T
    return dloss, np.where(wrong, -1.0, 1.0)


def _layer_view(state, layer):
    """(T, W, z, y) of the layer above hidden layer `layer`."""
    above = state.fits[layer + 1]
    W = np.stack([f.w for f in above])
    z = np.stack([f.z for f in above], axis=1)
    y = np.stack([f.t for f in above], axis=1)
    return state.targets[layer], W, z, y


def exact_scores(state, layer):
    """The exact score change (violations x BIG + hinge) of every bit of hidden layer `layer`,
    all weights fixed: the layer above's change plus the layer's own."""
    T, W, z, y = _layer_view(state, layer)
    dloss, dviol = flip_deltas(T, W, z, y)
    sloss, sviol = self_deltas(state.fits[layer], T)
    return (dviol + sviol) * BIG + dloss + sloss


def _top(values, k, rng_order):
    """Indices (flat) of the k smallest values; ties broken by a fixed random order."""
    flat = values.ravel()
    order = np.lexsort((rng_order[:flat.size], flat))
    return order[:k]


def accept_moves(state, layer):
    moves = []
    for j, f in enumerate(state.fits[layer]):
        rows = np.flatnonzero(f.violated)
        if rows.size:
            moves.append((layer, tuple(int(r) for r in rows), j))
    return moves


def flip_moves(state, layer, k, rng):
    """Up to k single-bit flips of each kind (exact, gradient, disturbance) in hidden layer
    `layer`, in that order, no bit twice."""
    T, W, z, y = _layer_view(state, layer)
    n = T.shape[1]
    tie = rng.permutation(T.size)
    picks = list(_top(exact_scores(state, layer), k, tie))
    g = hinge_grad(W, z, y)
    wrong = (g != 0) & (T != -np.sign(g))
    order = _top(np.where(wrong, -np.abs(g), np.inf), k, tie)
    picks += [int(i) for i in order if wrong.ravel()[i]]
    bad_rows = np.flatnonzero((sign(z) != y).any(1))
    if bad_rows.size:
        low = np.abs(np.stack([f.z for f in state.fits[layer]], axis=1))
        mask = np.full(T.shape, np.inf)
        mask[bad_rows] = low[bad_rows]
        order = _top(mask, k, tie)
        picks += [int(i) for i in order if np.isfinite(mask.ravel()[i])]
    seen, moves = set(), []
    for i in picks:
        if int(i) not in seen:
            seen.add(int(i))
            moves.append((layer, (int(i) // n,), int(i) % n))
    return moves


def generate(state, k, rng):
    """Candidate moves for a state: for the topmost layer with violations, accept moves on it
    (if hidden) and flips of the hidden targets below it and of its own."""
    n_hidden = len(state.targets)
    top = max(l for l, v in enumerate(state.violations) if v) if not state.feasible else None
    if top is None or n_hidden == 0:
        return []
    moves = []
    if top < n_hidden:
        moves += accept_moves(state, top)
        moves += flip_moves(state, top, k, rng)
    if top >= 1:
        moves += flip_moves(state, top - 1, k, rng)
    return moves


def apply(targets, move):
    """New targets with the move's bits flipped (the others shared, unchanged)."""
    layer, rows, column = move
    out = list(targets)
    t = targets[layer].copy()
    idx = np.asarray(rows)
    t[idx, column] = -t[idx, column]
    out[layer] = t
    return tuple(out)
