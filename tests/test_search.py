"""ftprop_cuda.search: the LP certificate, exhaustive optima, the search on parity and planted
problems, the tie to FTPROP-MB, determinism, budgets and argument errors."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

pytest.importorskip("scipy")

import ftprop_cuda  # noqa: E402
from ftprop_cuda.ops import extension  # noqa: E402
from ftprop_cuda.search import moves  # noqa: E402
from ftprop_cuda.search.exhaustive import count_sets, exhaustive  # noqa: E402
from ftprop_cuda.search.fit import fit_lbfgs, fit_lp, fit_perceptron, fit_unit  # noqa: E402
from ftprop_cuda.search.network import model_outputs  # noqa: E402
from ftprop_cuda.search.search import search, start_weights  # noqa: E402
from ftprop_cuda.search.tasks import all_patterns, parity, planted  # noqa: E402

XOR_X = np.array([[-1.0, -1.0], [-1.0, 1.0], [1.0, -1.0], [1.0, 1.0]])
XOR_Y = np.array([-1.0, 1.0, 1.0, -1.0])


def test_lp_certificate_on_separable_data():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((30, 4))
    t = np.where(X @ rng.standard_normal(4) + 0.3 > 0, 1.0, -1.0)
    fit = fit_lp(X, t)
    assert fit.loss == 0.0 and fit.separable
    assert np.all(t * (X @ fit.w + fit.b) >= 1.0)  # the weights certify every target
    assert fit.min_margin >= 1.0
    for method in ("perceptron", "lbfgs_hinge", "lbfgs_logistic"):
        other = fit_unit(X, t, method)
        assert other.separable and other.loss == 0.0 and other.min_margin >= 1.0


def test_lp_xor_without_hidden_layer_has_positive_loss():
    fit = fit_lp(XOR_X, XOR_Y)
    assert fit.loss > 0.5 and not fit.separable
    assert fit.violated.sum() >= 1
    assert not fit_perceptron(XOR_X, XOR_Y).separable
    assert not fit_lbfgs(XOR_X, XOR_Y).separable


def test_xor_exhaustive_infeasible_with_one_hidden_unit_feasible_with_two():
    one = exhaustive(XOR_X, XOR_Y, [1])
    assert not one.feasible and one.stopped == "exhaustive"
    assert one.extra["evaluated"] == count_sets(4, (1,)) == 8
    two = exhaustive(XOR_X, XOR_Y, [2])
    assert two.feasible and two.score == 0.0


def _assert_reproduces(result, X, Y):
    model = result.model()
    assert any(isinstance(m, ftprop_cuda.Step) for m in model)
    hidden, z = model_outputs(model, X)
    for h, t in zip(hidden, result.targets):
        np.testing.assert_array_equal(h, t)
    np.testing.assert_array_equal(np.where(z > 0, 1.0, -1.0), np.asarray(Y).reshape(z.shape))


@pytest.mark.parametrize("seed", range(5))
def test_parity3_h3_feasible_and_reproduced_by_the_model(seed):
    task = parity(3)
    result = search(task.X, task.Y, task.hidden, seed=seed, lp_calls=3000)
    assert result.feasible, (seed, result.violations)
    assert all(u["separable"] for layer in result.certificate for u in layer)
    _assert_reproduces(result, task.X, task.Y)


@pytest.mark.parametrize("seed", range(5))
def test_planted_recovery_from_5_flips(seed):
    task = planted(n=10, hidden=3, m=200, seed=seed, flips=5)
    result = search(task.X, task.Y, task.hidden, seed=seed, lp_calls=400,
                    start_targets=task.teacher_targets)
    assert result.feasible, (seed, result.violations)
    _assert_reproduces(result, task.X, task.Y)


def _small_problems():
    rng = np.random.default_rng(5)
    cube = all_patterns(3)
    rows = rng.permutation(8)[:5]
    yield XOR_X, XOR_Y, (1,)                      # 4 x 1, infeasible
    yield XOR_X, XOR_Y, (3,)                      # 4 x 3, feasible
    yield cube[rows], np.prod(cube[rows], axis=1), (1,)   # 5 x 1, parity labels
    yield cube[rows], rng.choice([-1.0, 1.0], 5), (2,)    # 5 x 2, random labels


@pytest.mark.parametrize("case", range(4))
def test_search_reaches_the_exhaustive_optimum(case):
    X, Y, hidden = list(_small_problems())[case]
    assert X.shape[0] * sum(hidden) <= 16
    best = exhaustive(X, Y, hidden)
    found = search(X, Y, hidden, seed=0, lp_calls=4000, restarts=40, patience=10)
    assert found.score == pytest.approx(best.score, abs=1e-6), (found.score, best.score)
    assert found.score >= best.score - 1e-6


def _autograd_targets(X, Y, weights, rule, backend):
    """FTPROP-MB's hidden targets -sign(g) with g from autograd through ftprop_cuda.step."""
    (W1, b1), (W2, b2) = weights
    z1 = torch.from_numpy(X) @ torch.from_numpy(W1).T + torch.from_numpy(b1)
    h = ftprop_cuda.step(z1.requires_grad_(True), rule=rule, backend=backend)
    h.retain_grad()
    z2 = h @ torch.from_numpy(W2).T + torch.from_numpy(b2)
    torch.clamp(1 - torch.from_numpy(Y) * z2, min=0).sum().backward()
    return h.detach().numpy(), h.grad.numpy(), z2.detach().numpy()


@pytest.mark.parametrize("rule", ["soft_hinge", "ste"])
def test_zero_steps_give_ftprop_mb_targets(rule):
    task = parity(4)
    result = search(task.X, task.Y, task.hidden, seed=3, steps=0, rule=rule)
    assert result.steps == 0 and result.stopped == "steps"
    h, g, _ = _autograd_targets(task.X, task.Y, start_weights((4, 4, 1), 3, 0), rule, "auto")
    assert np.count_nonzero(g) > 0
    expected = np.where(g != 0, -np.sign(g), h)
    np.testing.assert_array_equal(result.targets[0], expected)


def test_first_order_term_of_the_exact_flip_delta_is_minus_2_t_g():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((12, 3))
    Y = rng.choice([-1.0, 1.0], size=(12, 2))
    weights = [(rng.standard_normal((4, 3)), rng.standard_normal(4)),
               (0.05 * rng.standard_normal((2, 4)), 0.05 * rng.standard_normal(2))]
    h, g, z2 = _autograd_targets(X, Y, weights, "soft_hinge", "auto")
    W2 = weights[1][0]
    np.testing.assert_allclose(moves.hinge_grad(W2, z2, Y), g, rtol=1e-12, atol=1e-12)
    dloss, dviol = moves.flip_deltas(h, W2, z2, Y)
    # small output weights: every |y z| stays below 1 after a flip, the loss is linear there
    np.testing.assert_allclose(dloss, moves.first_order(h, g), rtol=1e-10, atol=1e-12)
    # large ones cross the hinge's kink: the exact delta differs from the first-order term
    big = 30 * W2
    z_big = h @ big.T + weights[1][1]
    exact, _ = moves.flip_deltas(h, big, z_big, Y)
    assert not np.allclose(exact, moves.first_order(h, moves.hinge_grad(big, z_big, Y)))
    # and it is the loss of the flipped targets, computed directly
    i, j = 3, 2
    flipped = h.copy()
    flipped[i, j] *= -1
    direct = np.maximum(0, 1 - Y * (flipped @ big.T + weights[1][1])).sum() - \
        np.maximum(0, 1 - Y * z_big).sum()
    assert exact[i, j] == pytest.approx(direct, abs=1e-9)


def _history(result):
    return [{k: v for k, v in e.items() if k != "seconds"} for e in result.history]


def test_same_seed_same_targets_and_history():
    task = parity(4)
    runs = [search(task.X, task.Y, task.hidden, seed=2, lp_calls=150) for _ in range(2)]
    for a, b in zip(runs[0].targets, runs[1].targets):
        assert a.tobytes() == b.tobytes()
    assert _history(runs[0]) == _history(runs[1]) and len(runs[0].history) > 1
    other = search(task.X, task.Y, task.hidden, seed=3, lp_calls=150)
    assert _history(other) != _history(runs[0])


@pytest.mark.parametrize("backend", [
    "auto",
    pytest.param("kernel", marks=pytest.mark.skipif(
        "cpu" not in extension.KERNEL_DEVICES, reason="no compiled CPU kernel")),
])
def test_backends_give_the_same_targets(backend):
    task = parity(3)
    ref = search(task.X, task.Y, task.hidden, seed=1, lp_calls=300, backend="reference")
    other = search(task.X, task.Y, task.hidden, seed=1, lp_calls=300, backend=backend)
    for a, b in zip(ref.targets, other.targets):
        assert a.tobytes() == b.tobytes()
    assert _history(ref) == _history(other)


def test_budgets_are_results():
    task = parity(4, hidden=1)  # infeasible: the search never stops on its own
    by_steps = search(task.X, task.Y, task.hidden, seed=0, steps=7, progress=True)
    assert by_steps.stopped == "steps" and by_steps.steps == 7 and not by_steps.feasible
    assert len(by_steps.history) >= 8
    by_lp = search(task.X, task.Y, task.hidden, seed=0, lp_calls=40)
    assert by_lp.stopped == "lp_calls" and by_lp.lp_calls <= 40
    by_time = search(task.X, task.Y, task.hidden, seed=0, seconds=0.3)
    assert by_time.stopped == "seconds" and by_time.seconds < 0.3 + 5.0
    by_starts = search(task.X, task.Y, task.hidden, seed=0, restarts=2, patience=2)
    assert by_starts.stopped == "restarts" and by_starts.starts == 2
    json.dumps(by_starts.to_json(), allow_nan=False)


@pytest.mark.parametrize("kwargs, words", [
    ({"init": "zeros"}, "init must be one of"),
    ({"fit": "simplex"}, "fit must be one of"),
    ({"steps": -1}, "steps must be an integer >= 0"),
    ({"beam": 0}, "beam must be an integer >= 1"),
    ({"noise": 2.0}, "noise must be a number in [0, 1]"),
    ({"seconds": float("nan")}, "seconds must be a finite number"),
])
def test_bad_arguments_name_the_argument(kwargs, words):
    task = parity(3)
    with pytest.raises(ValueError, match=None) as info:
        search(task.X, task.Y, task.hidden, **kwargs)
    assert words in str(info.value) and "\n" not in str(info.value)


def test_bad_shapes_and_sizes():
    with pytest.raises(ValueError, match="hidden must be"):
        search(XOR_X, XOR_Y, [0])
    with pytest.raises(ValueError, match="exhaustive mode takes"):
        exhaustive(all_patterns(3), np.ones(8), [3])
    with pytest.raises(ValueError, match="t must hold only"):
        fit_lp(XOR_X, np.zeros(4))


def _cli(*args):
    code = ("import sys; from ftprop_cuda.search.cli import main; rc = main(sys.argv[1:]); "
            "heavy = [m for m in ('torch', 'scipy') if m in sys.modules]; "
            "print('IMPORTED', heavy); sys.exit(rc)")
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          timeout=120, cwd=os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("args", [["nope"], ["parity", "--n", "x"], ["parity", "--beam", "0"],
                                  ["parity", "--seconds", "inf"], ["parity", "--out", "a.txt"]])
def test_cli_argument_errors_are_one_line_before_torch(args):
    proc = _cli(*args)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "ftprop-search: error:" in proc.stderr
    assert "IMPORTED []" in proc.stdout


def test_cli_runs_and_writes_json(tmp_path, capsys):
    from ftprop_cuda.search.cli import main

    out = tmp_path / "r.json"
    assert main(["parity", "--n", "3", "--lp-calls", "3000", "--out", str(out)]) == 0
    assert "parity3_h3: feasible=True" in capsys.readouterr().out
    data = json.loads(out.read_text())
    assert data["feasible"] and data["task"] == "parity3_h3" and data["history"]
    assert main(["parity", "--n", "2", "--hidden", "1", "--exhaustive"]) == 0
    assert "feasible=False" in capsys.readouterr().out


def test_tasks():
    from ftprop_cuda.search.tasks import clumps, contiguity, make_task, symmetry

    sym = symmetry(6, 2)
    assert sym.X.shape == (64, 6) and int((sym.labels > 0).sum()) == 8  # 2^3 palindromes
    con = contiguity(6, 6)
    assert all(clumps(x) in (2, 3) for x in con.X)
    assert clumps([1, -1, 1, 1, -1, 1]) == 3 and clumps([-1, 1, 1, -1, -1, -1]) == 1
    assert set(con.labels) == {-1.0, 1.0}
    p = planted(n=10, hidden=3, m=50, seed=0, flips=7)
    teacher = planted(n=10, hidden=3, m=50, seed=0).teacher_targets[0]
    assert int((p.teacher_targets[0] != teacher).sum()) == 7
    result = search(p.X, p.Y, p.hidden, steps=0, start_targets=(teacher,))
    assert result.feasible  # the teacher's own targets are feasible: the task is planted
    with pytest.raises(ValueError, match="task must be one of"):
        make_task("mnist")


def test_digits_few_shot_task():
    pytest.importorskip("sklearn")
    from ftprop_cuda.search.tasks import digits

    task = digits(1, seed=0)
    assert task.X.shape == (10, 64) and sorted(task.labels.tolist()) == list(range(10))
    assert task.Y.shape == (10, 10) and task.X_test.shape[1] == 64
    result = search(task.X, task.Y, task.hidden, seed=0, lp_calls=2000)
    assert result.feasible
    assert 0.0 <= result.accuracy(task.X_test, task.labels_test) <= 1.0


def test_direct_highs_and_linprog_solve_the_same_lp():
    from ftprop_cuda.search import highs

    if not highs.available():
        pytest.skip("no direct HiGHS module")
    rng = np.random.default_rng(4)
    for m, n in [(16, 4), (40, 7), (9, 2)]:
        A = rng.choice([-1.0, 1.0], size=(m, n)) if n != 7 else rng.standard_normal((m, n))
        t = rng.choice([-1.0, 1.0], size=m)
        a, b = fit_lp(A, t, solver="direct"), fit_lp(A, t, solver="linprog")
        assert a.loss == pytest.approx(b.loss, abs=1e-7)
        assert a.separable == b.separable
    with pytest.raises(ValueError, match="solver must be one of"):
        fit_lp(XOR_X, XOR_Y, solver="glpk")
