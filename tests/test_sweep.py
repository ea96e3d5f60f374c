"""ftprop-sweep: grid validation, sharded and resumable runs on `digits`, and the report's numbers.

The runs are real ftprop-train processes on 200 digits for one epoch (a few seconds each, mostly
start-up); the report is checked on a hand-made sweep folder whose statistics are computed here.
"""
import contextlib
import io
import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest

from ftprop_cuda import sweep
from ftprop_cuda.sweep.stats import paired_difference, t_quantile, verdict

SWEEP = [sys.executable, "-m", "ftprop_cuda.sweep"]

TINY = """
seeds = [1, 2]
[common]
dataset = "digits"
train_limit = 200
epochs = 1
lr = 1e-3
[configs.sign]
nonlin = "step"
rule = "soft_hinge"
[configs.relu]
nonlin = "relu"
"""
RUNS = {("sign", 1), ("relu", 1), ("sign", 2), ("relu", 2)}


def main(argv):
    """sweep.main(argv) in this process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = sweep.main(argv)
    return code, out.getvalue(), err.getvalue()


def write(path, text):
    path.write_text(text)
    return str(path)


def finished_runs(out):
    return {(name, seed) for name in ("sign", "relu") for seed in (1, 2)
            if sweep.run_state(sweep.run_folder(out, name, seed)) == "finished"}


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
    """The tiny grid run as two shards, one after the other, two runs at a time."""
    tmp = tmp_path_factory.mktemp("sweep")
    grid = write(tmp / "tiny.toml", TINY)
    out = str(tmp / "out")
    # in this process (the runs are subprocesses either way): saves a torch import per sweep
    first = main(["run", grid, "--out", out, "--shard", "1/2", "--jobs", "2"])
    after_first = finished_runs(out)
    second = main(["run", grid, "--out", out, "--shard", "2/2", "--jobs", "2"])
    return grid, out, first, after_first, second


@pytest.mark.slow
def test_shards_partition_the_runs(sharded):
    grid, out, first, after_first, second = sharded
    assert first[0] == 0, first[2]
    assert second[0] == 0, second[2]
    # seed-major order (sign 1, relu 1, sign 2, relu 2): shard 1/2 takes the 1st and 3rd
    assert after_first == {("sign", 1), ("sign", 2)}
    assert finished_runs(out) == RUNS
    for name, seed in RUNS:
        folder = sweep.run_folder(out, name, seed)
        config = json.load(open(os.path.join(folder, "config.json")))
        assert config["seed"] == seed and config["nonlin"] == ("step" if name == "sign" else "relu")
        assert config["train_limit"] == 200 and config["lr"] == 1e-3
        assert [r["epoch"] for r in sweep.read_metrics(folder)] == [1]
        # --jobs 2: each trainer gets half the cores as torch threads
        attempt = json.load(open(os.path.join(folder, "sweep-run.json")))["attempts"][-1]
        cores = len(os.sched_getaffinity(0))
        assert attempt["omp_threads"] == os.environ.get("OMP_NUM_THREADS", str(max(1, cores // 2)))


@pytest.mark.slow
def test_one_progress_line_per_finished_run(sharded):
    _, _, first, _, second = sharded
    for (_, stdout, _), runs in ((first, {("sign", 1), ("sign", 2)}),
                                 (second, {("relu", 1), ("relu", 2)})):
        lines = [line for line in stdout.splitlines() if "] " in line and "best" in line]
        assert len(lines) == 2, stdout
        for name, seed in runs:
            assert sum(f"] {name} seed {seed}: best " in line and "final" in line and "min" in line
                       for line in lines) == 1


@pytest.mark.slow
def test_second_invocation_runs_nothing(sharded):
    grid, out, *_ = sharded
    stamps = {run: os.path.getmtime(os.path.join(sweep.run_folder(out, *run), "metrics.jsonl"))
              for run in RUNS}
    code, stdout, stderr = main(["run", grid, "--out", out])
    assert code == 0, stderr
    assert "4 finished, 0 to resume, 0 to start" in stdout
    assert stamps == {run: os.path.getmtime(os.path.join(sweep.run_folder(out, *run),
                                                         "metrics.jsonl")) for run in RUNS}


@pytest.mark.slow
def test_report_of_a_real_sweep(sharded):
    _, out, *_ = sharded
    code, stdout, stderr = main(["report", out, "--baseline", "relu"])
    assert code == 0, stderr
    stats = {s["name"]: s for s in json.load(open(os.path.join(out, "report.json")))}
    assert set(stats) == {"sign", "relu"}
    for name in stats:
        finals = [sweep.read_metrics(sweep.run_folder(out, name, s))[-1]["test_top1"]
                  for s in (1, 2)]
        assert stats[name]["seeds"] == [1, 2]
        assert stats[name]["final_top1_mean"] == pytest.approx(sum(finals) / 2)
    text = open(os.path.join(out, "report.md")).read()
    assert "Against the baseline `relu`" in text and "digits" in text


def _children(pid):
    kids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                kids.append(int(entry))
    return kids


def _wait_for(condition, proc, what):
    deadline = time.monotonic() + 300
    while not condition():
        assert proc.poll() is None and time.monotonic() < deadline, f"no {what} appeared"
        time.sleep(0.05)


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds children through /proc")
def test_kill_terminate_resume_and_a_failing_run(tmp_path):
    # "sign" is killed (SIGKILL, sweep and trainer), resumed and stopped with SIGTERM, then
    # resumed to the end after "broken", which passes the grid check but fails at start
    # (alexnet needs larger images): the sweep reports it and goes on.
    grid = write(tmp_path / "grid.toml", """
seeds = [3]
[common]
dataset = "digits"
train_limit = 200
lr = 1e-3
[configs.sign]
epochs = 8
""")
    out = str(tmp_path / "out")
    folder = sweep.run_folder(out, "sign", 3)
    argv = SWEEP + ["run", grid, "--out", out]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, cwd=tmp_path)  # outside the source tree
    try:
        # metrics.jsonl is written after last.pt (and the curves): wait for its first epoch
        _wait_for(lambda: len(sweep.read_metrics(folder)) >= 1, proc, "first epoch")
        kids = _children(proc.pid)
        os.kill(proc.pid, signal.SIGKILL)
        for kid in kids:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(kid, signal.SIGKILL)  # each child leads its own process group
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
    killed = sweep.read_metrics(folder)
    assert 1 <= len(killed) < 8
    assert sweep.run_state(folder) == "interrupted"

    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, cwd=tmp_path)  # outside the source tree
    try:
        _wait_for(lambda: len(sweep.read_metrics(folder)) > len(killed), proc, "new epoch")
        kids = _children(proc.pid)
        os.kill(proc.pid, signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    assert proc.returncode == 128 + signal.SIGTERM, stdout + stderr
    assert "ftprop-sweep: interrupted" in stderr and "resume" in stderr
    assert kids and not any(os.path.exists(f"/proc/{kid}") for kid in kids)
    assert "ftprop-train: interrupted" in open(os.path.join(folder, "sweep-stderr.txt")).read()
    stopped = sweep.read_metrics(folder)
    assert len(killed) < len(stopped) < 8
    assert [r["train_loss"] for r in stopped[:len(killed)]] == [r["train_loss"] for r in killed]

    # the grid gains a configuration ahead of "sign" (seed-major order: broken runs first)
    grid = write(tmp_path / "grid.toml", open(grid).read().replace(
        "[configs.sign]", '[configs.broken]\narch = "alexnet"\n[configs.sign]'))
    code, stdout, stderr = main(["run", grid, "--out", out, "--jobs", "2"])
    assert code == 1, stdout + stderr
    assert "1 to resume, 1 to start" in stdout
    failure = [line for line in stdout.splitlines() if "broken seed 3: FAILED" in line]
    assert len(failure) == 1 and "exit code 2" in failure[0]
    assert "ftprop-train: error:" in failure[0] and "image_size" in failure[0]
    assert "sign seed 3: best" in stdout
    assert f"resumed after epoch {stopped[-1]['epoch']}" in stdout
    assert "1 run(s) done, 1 failed" in stdout
    after = sweep.read_metrics(folder)
    assert [r["epoch"] for r in after] == list(range(1, 9))
    config = json.load(open(os.path.join(folder, "config.json")))
    assert config["runtime"]["resumed_from"] == os.path.join(folder, "last.pt")
    # the epochs before each stop are kept, not rerun
    assert [r["train_loss"] for r in after[:len(stopped)]] == [r["train_loss"] for r in stopped]
    assert len(json.load(open(os.path.join(folder, "sweep-run.json")))["attempts"]) == 3


# ---------------------------------------------------------------------------------------------
# Bad grids: one line, exit code 2, nothing run
# ---------------------------------------------------------------------------------------------
GOOD_CONFIG = '[configs.a]\nnonlin = "step"\n'


@pytest.mark.parametrize("text, message", [
    (GOOD_CONFIG, "seeds must be a non-empty list"),
    ("seeds = []\n" + GOOD_CONFIG, "seeds must be a non-empty list"),
    ("seeds = [1, 1]\n" + GOOD_CONFIG, "lists a seed twice"),
    ("seeds = [1]\n", "no configurations"),
    ("seeds = [1]\n[configs.a]\nbatchsize = 3\n", "unknown flag 'batchsize'"),
    ("seeds = [1]\n[common]\nnonlinear = 'step'\n" + GOOD_CONFIG, "common: unknown flag"),
    ("seeds = [1]\n[configs.a]\nlr = -1.0\n", "configs.a: ftprop-train rejects it: argument --lr"),
    ("seeds = [1]\n[configs.a]\nnonlin = 'sigmoidal'\n", "invalid choice: 'sigmoidal'"),
    ("seeds = [1]\n[configs.a]\nlr = true\n", "lr takes a number or a string"),
    ("seeds = [1]\n[configs.a]\nbn = 'yes'\n", "bn is a switch and takes true or false"),
    ("seeds = [1]\n[configs.a]\nepochs = [1, 2]\n", "epochs takes one value"),
    ("seeds = [1]\n[configs.a]\nseed = 4\n", "'seed' cannot be set in a grid"),
    ("seeds = [1, 99999999999999999999999]\n" + GOOD_CONFIG,
     "ftprop-train rejects seed 99999999999999999999999"),
    ("seeds = [-1]\n" + GOOD_CONFIG, "argument --seed: expected an integer from 0 to 2**63-1"),
    ("seeds = [1]\n[configs.a]\nbatch-size = 8\nbatch_size = 8\n", "given twice"),
    ("seeds = [1]\n[configs.a]\npreset = 'convnet5-step'\n", "unknown preset 'convnet5-step'"),
    ("seeds = [1]\n" + GOOD_CONFIG + GOOD_CONFIG, "not valid TOML"),
    ("seeds = [1]\n" + GOOD_CONFIG + '[configs.A]\nnonlin = "relu"\n',
     "duplicate configuration name 'A'"),
    ("seeds = [1]\n[configs.'a b']\nnonlin = 'relu'\n", "not a usable folder name"),
    ("seeds = [1]\nbaseline = 'z'\n" + GOOD_CONFIG, "baseline = 'z' is not a configuration"),
    ("seeds = [1]\n" + GOOD_CONFIG + "[claims.c]\na = 'a'\nb = 'q'\ndirection = 'greater'\n"
     "text = 't'\n", "claims.c: b = 'q' is not a configuration"),
    ("seeds = [1]\n" + GOOD_CONFIG + "[claims.c]\na = 'a'\nb = 'a'\ndirection = 'up'\n"
     "text = 't'\n", "direction = 'up'"),
    ("seed = [1]\n" + GOOD_CONFIG, "unknown top-level key 'seed'"),
])
def test_bad_grid_is_rejected_before_anything_runs(tmp_path, text, message):
    grid = write(tmp_path / "bad.toml", text)
    out = tmp_path / "out"
    code, stdout, stderr = main(["run", grid, "--out", str(out)])
    assert code == 2 and stdout == ""
    assert stderr.startswith("ftprop-sweep: error: ") and stderr.count("\n") == 1, stderr
    assert message in stderr, stderr
    assert not out.exists()


def test_bad_json_grid_and_arguments(tmp_path):
    grid = write(tmp_path / "dup.json", '{"seeds": [1], "configs": {"a": {}, "a": {}}}')
    code, _, stderr = main(["run", grid, "--out", str(tmp_path / "o")])
    assert code == 2 and "duplicate key 'a'" in stderr
    good = write(tmp_path / "good.json", '{"seeds": [1], "configs": {"a": {"nonlin": "relu"}}}')
    for argv, message in ((["--shard", "3/2"], "--shard expects i/n"),
                          (["--shard", "x"], "--shard expects i/n"),
                          (["--jobs", "0"], "--jobs expects a positive integer")):
        code, _, stderr = main(["run", good, "--out", str(tmp_path / "o"), *argv])
        assert code == 2 and message in stderr and stderr.count("\n") == 1, stderr
    code, _, stderr = main(["run", str(tmp_path / "missing.toml"), "--out", str(tmp_path / "o")])
    assert code == 2 and "cannot read grid file" in stderr
    assert not (tmp_path / "o").exists()


def test_child_environment(monkeypatch):
    monkeypatch.delenv("PYTHONPATH", raising=False)
    env = sweep.child_env("3", "1")
    assert env["OMP_NUM_THREADS"] == "3" and env["CUDA_VISIBLE_DEVICES"] == "1"
    # the trainer imports the package running the sweep, never a source folder in the cwd
    assert env["PYTHONSAFEPATH"] == "1"
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(sweep.__file__))))
    assert root in env.get("PYTHONPATH", "").split(os.pathsep) or root in sys.path[1:]
    assert "CUDA_VISIBLE_DEVICES" not in sweep.child_env("1", None) or \
        "CUDA_VISIBLE_DEVICES" in os.environ


def test_grid_values_become_train_flags(tmp_path):
    grid = sweep.load_grid(write(tmp_path / "g.toml", """
seeds = [1]
[common]
batch_size = 32
lr-decay-epochs = [3, 5]
[configs.a]
no-grad-scale = true
bn = false
batch-size = 16
download = false
lr = 2.5e-4
"""))
    _, options = sweep.train_options()
    assert grid.args("a", options) == ["--batch-size", "16", "--lr-decay-epochs", "3", "5",
                                       "--no-grad-scale", "--no-bn", "--lr", "0.00025"]


# ---------------------------------------------------------------------------------------------
# Statistics and the report, on a hand-made sweep folder
# ---------------------------------------------------------------------------------------------
def test_t_quantile():
    # two-sided 95 % points of Student's t (standard tables)
    for df, value in ((1, 12.7062047362), (2, 4.30265272975), (4, 2.77644510520),
                      (10, 2.22813885196), (30, 2.04227245630)):
        assert t_quantile(0.975, df) == pytest.approx(value, rel=1e-8)
    assert t_quantile(0.025, 4) == pytest.approx(-2.77644510520, rel=1e-8)
    scipy_stats = pytest.importorskip("scipy.stats")
    for df in (1, 3, 7, 50):
        for p in (0.6, 0.9, 0.995):
            assert t_quantile(p, df) == pytest.approx(scipy_stats.t.ppf(p, df), rel=1e-8)


def test_verdicts():
    def diff(lo, hi):
        return {"lo": lo, "hi": hi}
    assert verdict(diff(0.1, 2), "greater", 0) == "holds"
    assert verdict(diff(-2, -0.1), "greater", 0) == "contradicted"
    assert verdict(diff(-1, 1), "greater", 0) == "not distinguishable at this scale"
    assert verdict(diff(-2, -0.1), "less", 0) == "holds"
    assert verdict(diff(-0.5, 0.5), "equal", 1) == "holds"
    assert verdict(diff(1.5, 3), "equal", 1) == "contradicted"
    assert verdict(diff(0.5, 3), "equal", 1) == "not distinguishable at this scale"
    assert verdict(diff(-0.9, 3), "not_worse", 1) == "holds"
    assert verdict(diff(-3, -1.5), "not_worse", 1) == "contradicted"
    assert verdict({"lo": None, "hi": None, "n": 1}, "greater", 0).startswith("not testable (1 ")


# test top-1 per epoch for seeds 1, 2, 3 (3 epochs each)
FAKE = {
    "base": {1: [50.0, 60.0, 58.0], 2: [52.0, 61.0, 62.0], 3: [49.0, 57.0, 59.0]},
    "better": {1: [55.0, 63.0, 60.0], 2: [56.0, 64.0, 65.0], 3: [50.0, 61.5, 61.5]},
    "same": {1: [50.0, 59.0, 59.0], 2: [51.0, 60.0, 61.0], 3: [48.0, 58.0, 59.5]},
}


def _fake_run(folder, curve, epochs):
    os.makedirs(folder)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump({"epochs": epochs, "backend": "auto", "runtime": {
            "device": "cpu", "build": {"version": "0.1.0", "torch": "x", "cuda_kernels": False,
                                       "extension_loaded": True}}}, f)
    with open(os.path.join(folder, "metrics.jsonl"), "w") as f:
        for e, top1 in enumerate(curve, 1):
            f.write(json.dumps({"epoch": e, "test_top1": top1, "seconds": 2.0 * e}) + "\n")


def _stats(values):
    n = len(values)
    mean = sum(values) / n
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))


def test_report_numbers_on_a_handmade_folder(tmp_path):
    root = tmp_path / "fake"
    for name, seeds in FAKE.items():
        for seed, curve in seeds.items():
            _fake_run(str(root / name / f"seed-{seed}"), curve, 3)
    _fake_run(str(root / "better" / "seed-4"), [70.0, 80.0], 3)  # unfinished: left out
    grid = {"title": "fake", "seeds": [1, 2, 3, 4], "common": {"epochs": 3},
            "configs": {"base": {}, "better": {}, "same": {}}, "baseline": "base", "claims": {
                "better-wins": {"a": "better", "b": "base", "direction": "greater",
                                "text": "better is better"},
                "better-loses": {"a": "better", "b": "base", "direction": "less", "text": "t"},
                "same-equal": {"a": "same", "b": "base", "direction": "equal", "margin": 3.0,
                               "metric": "best", "text": "same is the same"},
                "same-greater": {"a": "same", "b": "base", "direction": "greater", "text": "t"}}}
    (root / "grid.json").write_text(json.dumps(grid))
    md = tmp_path / "doc" / "study.md"
    code, stdout, stderr = main(["report", str(root), "--out", str(md)])
    assert code == 0, stderr

    stats = {s["name"]: s for s in json.load(open(root / "report.json"))}
    assert list(stats) == ["base", "better", "same"]
    for name, seeds in FAKE.items():
        s = stats[name]
        assert s["seeds"] == [1, 2, 3]
        best_mean, best_std = _stats([max(c) for c in seeds.values()])
        final_mean, final_std = _stats([c[-1] for c in seeds.values()])
        assert s["best_top1_mean"] == pytest.approx(best_mean)
        assert s["best_top1_std"] == pytest.approx(best_std)
        assert s["final_top1_mean"] == pytest.approx(final_mean)
        assert s["final_top1_std"] == pytest.approx(final_std)
        assert s["best_epoch_mean"] == pytest.approx(
            sum(c.index(max(c)) + 1 for c in seeds.values()) / 3)
        assert s["epoch_seconds_mean"] == pytest.approx(4.0)
        assert s["test_top1_curve"]["mean"] == pytest.approx(
            [sum(c[e] for c in seeds.values()) / 3 for e in range(3)])
    assert stats["better"]["unfinished"] == [{"seed": 4, "epochs_done": 2, "epochs": 3}]

    # better - base, final: 2, 3, 2.5 -> mean 2.5, sd 0.5, interval 2.5 -+ t(0.975, 2) 0.5 / sqrt 3
    half = 4.30265272975 * 0.5 / math.sqrt(3)
    vs = stats["better"]["vs_baseline"]
    assert vs["final_diff_mean"] == pytest.approx(2.5)
    assert (vs["final_diff_lo"], vs["final_diff_hi"]) == pytest.approx((2.5 - half, 2.5 + half))
    claims = json.load(open(root / "report-claims.json"))
    assert claims["better-wins"]["verdict"] == "holds"
    assert claims["better-loses"]["verdict"] == "contradicted"
    # same - base, best: -1, -1, 0.5 -> mean -0.5, sd sqrt(0.75); within the 3-point margin?
    sd = math.sqrt(((-0.5) ** 2 + (-0.5) ** 2 + 1.0 ** 2) / 2)
    half = 4.30265272975 * sd / math.sqrt(3)
    assert claims["same-equal"]["diff"]["mean"] == pytest.approx(-0.5)
    assert (claims["same-equal"]["diff"]["lo"], claims["same-equal"]["diff"]["hi"]) == \
        pytest.approx((-0.5 - half, -0.5 + half))
    assert claims["same-equal"]["verdict"] == ("holds" if half + 0.5 < 3 else
                                               "not distinguishable at this scale")
    assert claims["same-greater"]["verdict"] == "not distinguishable at this scale"

    text = md.read_text()
    best_mean, best_std = _stats([63, 65, 61.5])
    assert f"| better | - | 3 | {best_mean:.2f} ± {best_std:.2f}" in text
    assert "| better-wins | better | base | final | a > b | 3 | +2.50 |" in text
    assert "**contradicted**" in text and "better seed 4 (2/3 epochs)" in text
    assert "Device: cpu; ops backend: auto (kernel)" in text
    assert "![test top-1 per epoch](study.png)" in text
    with open(tmp_path / "doc" / "study.png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"

    # a baseline that is not a configuration: one line, exit 2
    code, _, stderr = main(["report", str(root), "--baseline", "nope"])
    assert code == 2 and "--baseline 'nope' is not a configuration" in stderr


def test_paired_difference_uses_shared_seeds_only():
    d = paired_difference({1: 10.0, 2: 12.0, 3: 11.0}, {2: 10.0, 3: 10.0, 4: 99.0})
    assert d["seeds"] == [2, 3] and d["mean"] == pytest.approx(1.5)
    half = 12.7062047362 * math.sqrt(0.5) / math.sqrt(2)
    assert (d["lo"], d["hi"]) == pytest.approx((1.5 - half, 1.5 + half))
    one = paired_difference({1: 10.0}, {1: 9.0})
    assert one["n"] == 1 and one["lo"] is None
