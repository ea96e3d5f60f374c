"""Tasks for the search and its benchmark: parity-n, a planted teacher-student problem, CHIR's
symmetry and contiguity problems, and few-shot digits (the package's bundled digits set).

A Task holds X (m x n float64), Y (m x K, +-1), labels (+-1 for K = 1, classes otherwise), the
hidden widths, and optionally a test set and a teacher's hidden targets.
"""
import itertools
from dataclasses import dataclass

import numpy as np


@dataclass
class Task:
    name: str
    X: np.ndarray
    Y: np.ndarray
    labels: np.ndarray
    hidden: tuple
    X_test: np.ndarray = None
    labels_test: np.ndarray = None
    teacher_targets: tuple = None


def all_patterns(n):
    """All 2^n patterns in {-1, +1}^n (rows, in binary order)."""
    return np.array(list(itertools.product([-1.0, 1.0], repeat=n)))


def _binary(name, X, y, hidden):
    y = np.asarray(y, dtype=np.float64)
    return Task(name, X, y[:, None], y, tuple(hidden))


def parity(n, hidden=None):
    """parity-n: all 2^n patterns, label the product of the inputs (+1: an even count of -1)."""
    X = all_patterns(n)
    hidden = hidden or n
    return _binary(f"parity{n}_h{hidden}", X, np.prod(X, axis=1), (hidden,))


def symmetry(n=6, hidden=2):
    """CHIR's symmetry task: all 2^n patterns, +1 when the pattern reads the same reversed."""
    X = all_patterns(n)
    y = np.where(np.all(X == X[:, ::-1], axis=1), 1.0, -1.0)
    return _binary(f"symmetry{n}_h{hidden}", X, y, (hidden,))


def clumps(x):
    """The number of contiguous runs of +1 in a pattern."""
    x = np.asarray(x) > 0
    return int(x[0]) + int(np.sum(x[1:] & ~x[:-1]))


def contiguity(n=6, hidden=6):
    """CHIR's contiguity task ('2 versus 3 clumps'): the patterns with 2 or 3 runs of +1, +1 when
    there are 3."""
    X = all_patterns(n)
    counts = np.array([clumps(x) for x in X])
    keep = (counts == 2) | (counts == 3)
    return _binary(f"contiguity{n}_h{hidden}", X[keep], np.where(counts[keep] == 3, 1.0, -1.0),
                   (hidden,))


def planted(n=10, hidden=3, m=200, seed=0, flips=0):
    """A teacher n-hidden-1 sign network on m random +-1 inputs; the task's teacher_targets are
    its hidden outputs with `flips` bits flipped at random (the start of a recovery)."""
    rng = np.random.default_rng((int(seed), 7))
    X = rng.choice([-1.0, 1.0], size=(m, n))
    W1 = rng.standard_normal((hidden, n))
    b1 = rng.standard_normal(hidden) * 0.5
    T = np.where(X @ W1.T + b1 > 0, 1.0, -1.0)
    w2 = rng.choice([-1.0, 1.0], size=hidden)
    # an odd number of +-1 inputs with +-1 weights never sums to 0; an even one gets a bias
    b2 = 0.0 if hidden % 2 else 0.5
    y = np.where(T @ w2 + b2 > 0, 1.0, -1.0)
    start = T.copy()
    if flips:
        idx = rng.choice(T.size, size=int(flips), replace=False)
        start.ravel()[idx] *= -1
    task = _binary(f"planted_n{n}_h{hidden}_k{flips}", X, y, (hidden,))
    task.teacher_targets = (start,)
    return task


def digits(per_class, seed=0, hidden=16):
    """Few-shot digits: per_class training examples of each class from the package's digits
    set (8x8, 64 inputs), tested on its whole held-out split; 10 one-vs-rest +-1 outputs."""
    from ..data.embedded import load_digits

    train, test = load_digits()
    x, y = train.tensors[0].reshape(len(train), -1).numpy(), train.tensors[1].numpy()
    rng = np.random.default_rng((int(seed), 11))
    rows = np.concatenate([rng.permutation(np.flatnonzero(y == c))[:per_class]
                           for c in range(10)])
    X, labels = x[rows].astype(np.float64), y[rows]
    Y = np.where(labels[:, None] == np.arange(10)[None, :], 1.0, -1.0)
    xt = test.tensors[0].reshape(len(test), -1).numpy().astype(np.float64)
    return Task(f"digits_{per_class}shot_h{hidden}", X, Y, labels, (hidden,), xt,
                test.tensors[1].numpy())


TASKS = ("parity", "symmetry", "contiguity", "planted", "digits")


def make_task(name, n=None, hidden=None, seed=0, flips=0, per_class=1, m=200):
    """A task by name (one of TASKS)."""
    if name == "parity":
        return parity(n or 4, hidden)
    if name == "symmetry":
        return symmetry(n or 6, hidden or 2)
    if name == "contiguity":
        return contiguity(n or 6, hidden or 6)
    if name == "planted":
        return planted(n or 10, hidden or 3, m, seed, flips)
    if name == "digits":
        return digits(per_class, seed, hidden or 16)
    raise ValueError(f"task must be one of {', '.join(map(repr, TASKS))}; got {name!r}")
