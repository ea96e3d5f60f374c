"""The exact optimum of the search's score over all hidden target sets, for tiny problems
(examples x hidden units <= MAX_BITS).

Two symmetries keep every score: negating a hidden unit's whole target column (negate its
weights and the weights reading it) and permuting a layer's units. So only one column of each
pair +-c (the one with a +1 first) is enumerated, and a layer's columns as a multiset (sorted,
repeats allowed): every target set has the score of one enumerated set.
"""
import itertools
import time

import numpy as np

from .result import SearchResult
from .state import Problem

MAX_BITS = 20


def canonical_columns(m):
    """The 2^(m-1) +-1 columns of length m whose first entry is +1."""
    rest = itertools.product([-1.0, 1.0], repeat=m - 1)
    return [np.array((1.0,) + r) for r in rest]


def count_sets(m, hidden):
    """How many target sets exhaustive() evaluates."""
    from math import comb

    c = 2 ** (m - 1)
    total = 1
    for h in hidden:
        total *= comb(c + h - 1, h)
    return total


def _layer_sets(m, h):
    columns = canonical_columns(m)
    for combo in itertools.combinations_with_replacement(range(len(columns)), h):
        yield np.stack([columns[i] for i in combo], axis=1)


def exhaustive(X, Y, hidden, fit="lp", rule="soft_hinge", backend="auto"):
    """Every hidden target set (up to the symmetries above) of the network X -> hidden -> Y;
    returns the SearchResult of the smallest score (violations x BIG + hinge loss), the first
    found among equals. extra['evaluated'] counts the sets. Raises ValueError when examples x
    hidden units > MAX_BITS."""
    hidden = tuple(int(h) for h in hidden)
    problem = Problem(X, Y, hidden, fit)
    bits = problem.m * sum(hidden)
    if not hidden or min(hidden) < 1 or bits > MAX_BITS:
        raise ValueError(f"exhaustive mode takes examples x hidden units <= {MAX_BITS} and "
                         f"hidden widths >= 1; got {problem.m} x {sum(hidden)} = {bits}")
    t0 = time.perf_counter()
    best, evaluated = None, 0
    for targets in itertools.product(*(list(_layer_sets(problem.m, h)) for h in hidden)):
        state = problem.evaluate(targets)
        evaluated += 1
        if best is None or state.score < best.score:
            best = state
    result = SearchResult.from_state(best, problem, [], stopped="exhaustive", starts=0,
                                     steps=0, seconds=time.perf_counter() - t0, rule=rule,
                                     backend=backend)
    result.extra["evaluated"] = evaluated
    return result
