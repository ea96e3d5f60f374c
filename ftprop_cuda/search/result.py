"""What a search (or an exhaustive enumeration) returns, JSON-able through to_json()."""
from dataclasses import dataclass, field

import numpy as np

from .network import build_model, model_outputs, predict


def history_entry(step, start, best, current, lp_calls, seconds):
    """One step of the history: the best score so far and the current beam head's."""
    return {"step": int(step), "start": int(start), "score": float(best.score),
            "violations": int(sum(best.violations)), "loss": float(best.loss),
            "current_score": float(current.score), "lp_calls": int(lp_calls),
            "seconds": float(seconds)}


def certificate(state):
    """Per layer, per unit: separable, hinge loss and the smallest margin t z of its fit. When
    every unit is separable, every margin is >= 1: the weights certify the targets."""
    return [[{"separable": bool(f.separable), "loss": float(f.loss),
              "min_margin": float(f.min_margin), "lp_calls": int(f.lp_calls)}
             for f in layer] for layer in state.fits]


@dataclass
class SearchResult:
    """feasible: every unit reproduces its targets (the training set is fitted exactly).
    targets: the hidden targets, one m x n_l +-1 array per hidden layer; weights: [(W, b)];
    score, violations (per layer), loss; history: one entry per step (history_entry);
    stopped: 'feasible', 'steps', 'lp_calls', 'seconds', 'restarts' or 'exhaustive'."""
    feasible: bool
    targets: list
    weights: list
    score: float
    violations: list
    loss: float
    certificate: list
    history: list
    stopped: str
    starts: int
    steps: int
    lp_calls: int
    seconds: float
    rule: str = "soft_hinge"
    backend: str = "auto"
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_state(cls, state, problem, history, **kw):
        return cls(feasible=state.feasible, targets=[t.copy() for t in state.targets],
                   weights=state.weights(), score=float(state.score),
                   violations=list(state.violations), loss=float(state.loss),
                   certificate=certificate(state), history=history,
                   lp_calls=int(problem.lp_calls), **kw)

    def model(self, dtype=None):
        """The network as an ordinary nn.Module: Linear, Step (the package's), ..., Linear."""
        return build_model(self.weights, self.rule, self.backend, dtype)

    def accuracy(self, X, labels):
        """The model's accuracy on (X, labels): labels +-1 for one output, classes otherwise."""
        _, z = model_outputs(self.model(), X)
        return float(np.mean(predict(z) == np.asarray(labels)))

    def to_json(self):
        """A dict of plain lists and numbers (json.dumps accepts it)."""
        return {
            "feasible": self.feasible,
            "targets": [t.astype(int).tolist() for t in self.targets],
            "weights": [{"W": W.tolist(), "b": b.tolist()} for W, b in self.weights],
            "score": self.score, "violations": self.violations, "loss": self.loss,
            "certificate": self.certificate, "history": self.history, "stopped": self.stopped,
            "starts": self.starts, "steps": self.steps, "lp_calls": self.lp_calls,
            "seconds": self.seconds, "rule": self.rule, "backend": self.backend,
            **self.extra,
        }
