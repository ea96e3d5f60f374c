"""A search state: the hidden targets of every layer, each unit fitted to them, and the score.

Layer l's input is X for l = 0 and the targets of hidden layer l - 1 above that; its units'
targets are the hidden targets of layer l, or Y for the output layer. A unit's violations are
the examples its fitted weights get wrong (sign(z) != t); the state's score is

    score = (violations, all units of all layers) x BIG + (hinge losses, all units)

so that fewer violated constraints always wins and the hinge loss breaks ties. A state with no
violation is feasible: the network's forward pass reproduces every target.
"""
from dataclasses import dataclass

import numpy as np

from .fit import fit_unit

BIG = 1e6
CACHE_LIMIT = 500_000


@dataclass(frozen=True)
class State:
    """targets: tuple of m x n_l arrays (+-1 float64); `fits[l][j]` the UnitFit of unit j."""
    targets: tuple
    fits: tuple
    violations: tuple
    loss: float

    @property
    def score(self) -> float:
        return sum(self.violations) * BIG + self.loss

    @property
    def feasible(self) -> bool:
        return sum(self.violations) == 0

    @property
    def key(self) -> bytes:
        return b"".join(t.tobytes() for t in self.targets)

    def weights(self):
        """The fitted network as [(W, b)] per layer."""
        return [(np.stack([f.w for f in layer]), np.array([f.b for f in layer]))
                for layer in self.fits]


class Problem:
    """The training set (X, Y), the hidden widths, and the fit method, with a cache of unit fits
    (keyed by the layer, its input targets and the unit's target column) and the LP-call count.
    """

    def __init__(self, X, Y, hidden, fit="lp"):
        self.X = np.ascontiguousarray(X, dtype=np.float64)
        Y = np.asarray(Y, dtype=np.float64)
        self.Y = np.ascontiguousarray(Y[:, None] if Y.ndim == 1 else Y)
        self.hidden = tuple(int(h) for h in hidden)
        self.fit = fit
        self.cache = {}
        self.lp_calls = 0
        self.fit_calls = 0

    @property
    def m(self):
        return self.X.shape[0]

    @property
    def units(self):
        """Units in all (hidden and output): the most LP calls one state can take."""
        return sum(self.hidden) + self.Y.shape[1]

    @property
    def sizes(self):
        return (self.X.shape[1], *self.hidden, self.Y.shape[1])

    def unit_fit(self, layer, inputs, input_key, column, warm=None):
        key = (layer, input_key, column.tobytes())
        fit = self.cache.get(key)
        if fit is None:
            fit = fit_unit(inputs, column, self.fit, warm)
            self.lp_calls += fit.lp_calls
            self.fit_calls += 1
            if len(self.cache) >= CACHE_LIMIT:
                self.cache.clear()
            self.cache[key] = fit
        return fit

    def evaluate(self, targets, parent=None):
        """The State of the hidden targets (a sequence of m x n_l +-1 arrays)."""
        targets = tuple(np.ascontiguousarray(t, dtype=np.float64) for t in targets)
        if tuple(t.shape[1] for t in targets) != self.hidden or \
                any(t.shape[0] != self.m for t in targets):
            raise ValueError(f"targets must be {len(self.hidden)} arrays of {self.m} x "
                             f"{list(self.hidden)}; got {[t.shape for t in targets]}")
        fits, violations, loss = [], [], 0.0
        outs = targets + (self.Y,)
        for layer, out in enumerate(outs):
            inputs = self.X if layer == 0 else targets[layer - 1]
            input_key = b"" if layer == 0 else inputs.tobytes()
            row = []
            for j in range(out.shape[1]):
                warm = None
                if parent is not None:
                    f = parent.fits[layer][j]
                    warm = (f.w, f.b)
                row.append(self.unit_fit(layer, inputs, input_key, out[:, j], warm))
            fits.append(tuple(row))
            violations.append(int(sum(int(f.violated.sum()) for f in row)))
            loss += sum(f.loss for f in row)
        return State(targets=targets, fits=tuple(fits), violations=tuple(violations),
                     loss=float(loss))
