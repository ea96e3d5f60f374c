"""Target search in the shape of FTPROP's Algorithm 1, for small sign networks, full batch.

Start from hidden targets (FTPROP-MB's own -sign(g), the forward outputs, random, or given);
fit every unit to its targets (fit.py); while a layer is infeasible, propose changes of the
targets below it and its own (moves.py), refit, and keep the best `beam` new states by score
(violations x BIG + hinge loss). States already visited are tabu; with probability `noise` a
random proposal takes the beam's last place (WalkSAT's noise move). With no better state for
`patience` steps the search backtracks to the best state of this start, then restarts from new
targets. It stops at a feasible state (score 0) or at a budget: steps, LP calls, seconds or
restarts. A budget reached is a result (stopped tells which), not an error.
"""
import time

import numpy as np

from . import moves as mv
from .fit import FITS
from .network import forward_outputs, ftprop_targets, init_weights
from .result import SearchResult, history_entry
from .state import Problem

INITS = ("ftprop", "forward", "random")


def start_weights(sizes, seed, start):
    """The random weights of start number `start` (0 = the first) for a seed."""
    return init_weights(tuple(sizes), np.random.default_rng((int(seed), int(start), 1)))


def initial_targets(problem, init, seed, start, rule="soft_hinge", backend="auto"):
    """Hidden targets to start from: 'ftprop' (-sign(g), FTPROP-MB's targets, of random
    weights), 'forward' (their forward outputs) or 'random' (uniform +-1)."""
    if init == "random":
        rng = np.random.default_rng((int(seed), int(start), 2))
        return tuple(rng.choice([-1.0, 1.0], size=(problem.m, h)) for h in problem.hidden)
    weights = start_weights(problem.sizes, seed, start)
    if init == "ftprop":
        return tuple(ftprop_targets(problem.X, problem.Y, weights, rule, backend)[0])
    return tuple(forward_outputs(problem.X, weights, rule, backend)[0])


def _check_int(name, value, low, allow_none=False):
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        none = " or None" if allow_none else ""
        raise ValueError(f"{name} must be an integer >= {low}{none}; got {value!r}")
    return int(value)


def check_args(init, fit, steps, lp_calls, seconds, restarts, beam, candidates, noise, patience):
    if init not in INITS:
        raise ValueError(f"init must be one of {', '.join(map(repr, INITS))}; got {init!r}")
    if fit not in FITS:
        raise ValueError(f"fit must be one of {', '.join(map(repr, FITS))}; got {fit!r}")
    _check_int("steps", steps, 0, allow_none=True)
    _check_int("lp_calls", lp_calls, 0, allow_none=True)
    _check_int("restarts", restarts, 1)
    _check_int("beam", beam, 1)
    _check_int("candidates", candidates, 1)
    _check_int("patience", patience, 1)
    if seconds is not None and (isinstance(seconds, bool) or not isinstance(
            seconds, (int, float)) or not seconds >= 0 or seconds == float("inf")):
        raise ValueError(f"seconds must be a finite number >= 0 or None; got {seconds!r}")
    if isinstance(noise, bool) or not isinstance(noise, (int, float)) or not 0 <= noise <= 1:
        raise ValueError(f"noise must be a number in [0, 1]; got {noise!r}")


class _Run:
    """The budgets and the record of one search call."""

    def __init__(self, problem, steps, lp_calls, seconds, progress):
        self.problem, self.max_steps, self.max_lp, self.max_seconds = (
            problem, steps, lp_calls, seconds)
        self.t0 = time.perf_counter()
        self.steps = 0
        self.best = None
        self.history = []
        self.bar = _progress_bar(steps) if progress else None

    def exhausted(self, evaluating=False):
        """The budget reached, or None. evaluating: about to evaluate a state, which may take
        one LP call per unit: the LP budget then needs room for all of them."""
        if self.max_steps is not None and self.steps >= self.max_steps and not evaluating:
            return "steps"
        room = self.problem.units if evaluating else 1
        if self.max_lp is not None and self.problem.lp_calls + room > self.max_lp:
            return "lp_calls"
        if self.max_seconds is not None and time.perf_counter() - self.t0 >= self.max_seconds:
            return "seconds"
        return None

    def offer(self, state):
        if self.best is None or state.score < self.best.score:
            self.best = state

    def record(self, start, current):
        self.history.append(history_entry(
            self.steps, start, self.best, current, self.problem.lp_calls,
            time.perf_counter() - self.t0))
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(violations=sum(self.best.violations), lp=self.problem.lp_calls)


def _progress_bar(total):
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc="search", leave=False)


def _expand(run, beam, visited, k, rng, first=False):
    """Evaluate the proposals of every beam state not visited before; None at a budget.
    first: stop at the first proposal better than the beam's best (first improvement)."""
    new = []
    for state in beam:
        for move in mv.generate(state, k, rng):
            targets = mv.apply(state.targets, move)
            key = b"".join(t.tobytes() for t in targets)
            if key in visited:
                continue
            if run.exhausted(evaluating=True) is not None:
                return None
            visited.add(key)
            child = run.problem.evaluate(targets, parent=state)
            run.offer(child)
            new.append(child)
            if first and child.score < beam[0].score:
                return new
    return new


def _one_start(run, state, start, beam_width, k, noise, patience, rng, first=False):
    """Search from one start; returns the budget reached, 'feasible' or None (start over)."""
    beam, visited = [state], {state.key}
    best_here, stall, backtracked = state, 0, False
    while True:
        if run.best.feasible:
            return "feasible"
        reason = run.exhausted()
        if reason is not None:
            return reason
        new = _expand(run, beam, visited, k, rng, first)
        if new is None:
            return run.exhausted(evaluating=True)
        run.steps += 1
        order = sorted(range(len(new)), key=lambda i: new[i].score)  # stable: ties by order
        beam = [new[i] for i in order[:beam_width]]
        if new and noise > 0 and rng.random() < noise:
            beam[-1] = new[int(rng.integers(len(new)))]
        if beam and beam[0].score < best_here.score:
            best_here, stall = beam[0], 0
        else:
            stall += 1
        run.record(start, beam[0] if beam else best_here)
        if not beam or stall >= patience:
            if backtracked or not beam:
                return None
            beam, stall, backtracked = [best_here], 0, True  # backtrack once, then restart


def search(X, Y, hidden, *, seed=0, steps=2000, lp_calls=None, seconds=None, restarts=20,
           beam=1, candidates=3, init="ftprop", fit="lp", rule="soft_hinge", backend="auto",
           noise=0.1, patience=None, first=True, start_targets=None, progress=False):
    """Searches hidden targets of the sign network X -> hidden... -> Y (Y: m labels in +-1 or
    an m x K +-1 matrix, one-vs-rest) that make every unit's problem linearly separable.

    Budgets: steps (beam expansions), lp_calls, seconds (None: no limit), restarts (starts in
    all). start_targets: the first start's hidden targets (e.g. a teacher's, or those of a
    network trained with FTPROP-MB: polish); later starts use init. rule and backend are those
    of the package's step used for the initial targets and of the returned model's Step units.
    Returns a SearchResult.
    """
    hidden = tuple(hidden)
    if patience is None:
        patience = max(16, int(np.asarray(X).shape[0]) // 2)
    check_args(init, fit, steps, lp_calls, seconds, restarts, beam, candidates, noise, patience)
    if not hidden or any(isinstance(h, bool) or not isinstance(h, (int, np.integer)) or h < 1
                         for h in hidden):
        raise ValueError(f"hidden must be a non-empty list of widths >= 1; got {list(hidden)!r}")
    problem = Problem(X, Y, hidden, fit)
    run = _Run(problem, steps, lp_calls, seconds, progress)
    rng = np.random.default_rng((int(seed), 0, 3))
    stopped, start = "restarts", 0
    for start in range(restarts):
        if start > 0 and run.exhausted(evaluating=True) is not None:
            stopped = run.exhausted(evaluating=True)
            break
        targets = start_targets if start == 0 and start_targets is not None else \
            initial_targets(problem, init, seed, start, rule, backend)
        state = problem.evaluate(targets)
        run.offer(state)
        run.record(start, state)
        reason = _one_start(run, state, start, beam, candidates, noise, patience, rng, first)
        if reason is not None:
            stopped = reason
            break
    if run.bar is not None:
        run.bar.close()
    return SearchResult.from_state(run.best, problem, run.history, stopped=stopped,
                                   starts=start + 1, steps=run.steps,
                                   seconds=time.perf_counter() - run.t0, rule=rule,
                                   backend=backend)
