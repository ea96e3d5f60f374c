"""The hinge LP handed to HiGHS directly, without scipy.optimize.linprog's argument parsing
(which costs several times the solve on the search's small problems).

HiGHS's own Python module is used when installed (`highspy`), else the copy scipy bundles
(`scipy.optimize._highspy._core`, the one linprog itself calls). When neither can be loaded,
available() is False and fit.py uses linprog. Both give the same LP; the tests compare them.
"""
import numpy as np

_STATE = {"core": None, "tried": False}


def _core():
    if not _STATE["tried"]:
        _STATE["tried"] = True
        try:
            import highspy as core
            core.Highs  # noqa: B018 (the class the solve needs)
            _STATE["core"] = (core, core.Highs)
        except (ImportError, AttributeError):
            try:
                from scipy.optimize._highspy import _core as core
                _STATE["core"] = (core, core._Highs)
            except (ImportError, AttributeError):
                _STATE["core"] = None
    return _STATE["core"]


def available():
    """Whether a direct HiGHS module could be loaded."""
    return _core() is not None


def hinge_lp(A, t):
    """min sum xi s.t. t_i (a_i . w + b) + xi_i >= 1, xi >= 0 (w, b free).

    Returns (w, b, objective) or raises RuntimeError when HiGHS does not report an optimum."""
    core, highs_class = _core()
    m, n = A.shape
    M = np.hstack([t[:, None] * A, t[:, None]])
    rows, cols = np.nonzero(M.T)  # column-wise: the columns of M in order, their rows sorted
    counts = np.bincount(rows, minlength=n + 1)
    start = np.concatenate([[0], np.cumsum(counts), np.cumsum(counts)[-1] + 1 + np.arange(m)])
    index = np.concatenate([cols, np.arange(m)]).astype(np.int32)
    value = np.concatenate([M.T[rows, cols], np.ones(m)])
    lp = core.HighsLp()
    ncol = n + 1 + m
    lp.num_col_, lp.num_row_ = ncol, m
    lp.a_matrix_.num_col_, lp.a_matrix_.num_row_ = ncol, m
    lp.a_matrix_.format_ = core.MatrixFormat.kColwise
    lp.a_matrix_.start_ = start.astype(np.int32)
    lp.a_matrix_.index_ = index
    lp.a_matrix_.value_ = value
    inf = core.kHighsInf
    lp.col_cost_ = np.concatenate([np.zeros(n + 1), np.ones(m)])
    lp.col_lower_ = np.concatenate([np.full(n + 1, -inf), np.zeros(m)])
    lp.col_upper_ = np.full(ncol, inf)
    lp.row_lower_ = np.ones(m)
    lp.row_upper_ = np.full(m, inf)
    highs = highs_class()
    highs.setOptionValue("output_flag", False)
    highs.passModel(lp)
    highs.run()
    if highs.getModelStatus() != core.HighsModelStatus.kOptimal:
        raise RuntimeError(f"HiGHS failed on a hinge LP ({m} x {n}): "
                           f"{highs.modelStatusToString(highs.getModelStatus())}")
    x = np.array(highs.getSolution().col_value)
    return x[:n].copy(), float(x[n]), float(highs.getInfo().objective_function_value)
