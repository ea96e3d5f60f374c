"""Smoke test of the benchmark scripts: both run with --smoke and write sane JSON, Markdown, PNG.

The two scripts run concurrently in subprocesses (their timings are meaningless here; the point
is that every variant passes its correctness check and every output is written).
"""
import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(REPO, "benchmarks")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _has_models():
    try:
        import ftprop_cuda.models  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.fixture(scope="module")
def smoke_runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    doc = out / "doc" / "performance.md"
    cmds = {"ops": [sys.executable, os.path.join(BENCH, "bench_ops.py"), "--smoke",
                    "--out", str(out), "--markdown", str(doc)]}
    if _has_models():
        cmds["train"] = [sys.executable, os.path.join(BENCH, "bench_train.py"), "--smoke",
                         "--out", str(out), "--markdown", str(out / "doc" / "train.md")]
    env = dict(os.environ, MPLBACKEND="Agg")
    procs = {k: subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                 env=env, cwd=str(out)) for k, c in cmds.items()}
    results = {}
    for k, p in procs.items():
        text, _ = p.communicate(timeout=300)
        results[k] = (p.returncode, text)
    return out, results


def _check_outputs(out, stem):
    with open(out / f"{stem}.json") as f:
        data = json.load(f)
    env = data["environment"]
    for key in ("device_name", "cpu_model", "cpu_count", "torch", "torch_cuda", "date_utc",
                "THP_MEM_ALLOC_ENABLE"):
        assert key in env, key
    assert data["failures"] == []
    assert data["rows"] and all(r["status"] == "ok" for r in data["rows"])
    assert all(r["median_s"] > 0 for r in data["rows"])
    md = (out / f"{stem}.md").read_text()
    assert env["torch"] in md and env["date_utc"] in md
    assert md.count("|---|") >= 1
    png = (out / f"{stem}.png").read_bytes()
    assert png.startswith(PNG_MAGIC) and len(png) > 10_000
    return data, md


def test_bench_ops_smoke(smoke_runs):
    out, results = smoke_runs
    rc, text = results["ops"]
    assert rc == 0, text[-4000:]
    data, md = _check_outputs(out, "bench_ops_cpu_smoke")
    variants = {r["variant"] for r in data["rows"]}
    assert variants == {"ref", "ref_compiled", "kernel", "kernel_compiled"}
    assert {r["pass"] for r in data["rows"]} == {"fwd", "bwd", "fwdbwd"}
    assert {r["op"] for r in data["rows"]} == {"step", "staircase"}
    for r in data["rows"]:
        assert r["gbps"] > 0 and r["pct_copy"] > 0 and r["pct_fresh_copy"] > 0
        # at least a bit per element is kept for backward, at most z and y in float64
        assert 0.1 <= r["saved_bytes_per_elem"] <= 16, r
    assert data["copies"] and all(c["copy_gbps"] > 0 and c["fresh_copy_gbps"] > 0
                                  and c["fresh_fill_s"] > 0
                                  for c in data["copies"])
    assert "fresh fill ms" in md and "kernel / 2 fresh fills" in md
    doc = (out / "doc" / "performance.md").read_text()
    assert "<!-- BEGIN bench_ops cpu_smoke -->" in doc and "<!-- END bench_ops cpu_smoke -->" in doc
    assert (out / "doc" / "img" / "bench_ops_cpu_smoke.png").exists()


@pytest.mark.skipif(not _has_models(), reason="ftprop_cuda.models is not there yet")
def test_bench_train_smoke(smoke_runs):
    out, results = smoke_runs
    rc, text = results["train"]
    assert rc == 0, text[-4000:]
    data, md = _check_outputs(out, "bench_train_cpu_smoke")
    assert {r["variant"] for r in data["rows"]} == {"ref", "kernel", "kernel_lean"}
    for r in data["rows"]:
        assert r["held_bytes"] is not None and (r["held_bytes"] > 0 or r["variant"] == "kernel_lean")
        assert r["grad_rel_l2_err"] <= 1e-3
    assert "bench_train cpu_smoke" in (out / "doc" / "train.md").read_text()


def test_markdown_sections_are_replaced_in_place(tmp_path):
    sys.path.insert(0, BENCH)
    try:
        import common
    finally:
        sys.path.remove(BENCH)
    doc = tmp_path / "perf.md"
    doc.write_text("# Title\n\nintro\n")
    common.update_markdown(str(doc), "a", "first A")
    common.update_markdown(str(doc), "b", "first B")
    common.update_markdown(str(doc), "a", "second A")
    text = doc.read_text()
    assert text.startswith("# Title\n\nintro\n")
    assert "second A" in text and "first A" not in text and "first B" in text
    assert text.index("second A") < text.index("first B")
    assert common.parse_sizes("16-20:2,10") == [1 << 16, 1 << 18, 1 << 20, 1 << 10]


@pytest.mark.skipif(not _has_models(), reason="needs ftprop_cuda.models")
def test_bench_copies_times_every_copy_and_rejects_bad_flags():
    script = os.path.join(BENCH, "bench_copies.py")
    run = subprocess.run([sys.executable, script, "--arch", "convnet4", "--batch", "2",
                          "--variants", "ref,kernel_lean", "--copies", "2", "--min-time", "0.05"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    lines = [ln for ln in run.stdout.splitlines() if "ms/step" in ln]
    assert [ln.split()[0] + ln.split()[1] for ln in lines] == \
        ["ref#1", "ref#2", "kernel_lean#1", "kernel_lean#2"]
    assert lines[0].split()[4] == "x1.000"
    for bad, msg in ((["--variants", "kernel,fast"], "--variants: unknown ['fast']"),
                     (["--copies", "0"], "--copies expects a positive integer"),
                     (["--min-time", "-1"], "--min-time expects a positive number")):
        r = subprocess.run([sys.executable, script] + bad, capture_output=True, text=True,
                           timeout=120)
        assert r.returncode == 2 and msg in r.stderr, r.stderr


def test_a_stopped_run_leaves_its_finished_rows(tmp_path, monkeypatch):
    """A benchmark cut short (the GPU check's time limit, a lost machine) still leaves a JSON of
    every configuration it finished, marked partial, that --from-json renders as such."""
    sys.path.insert(0, BENCH)
    try:
        import bench_ops
    finally:
        sys.path.remove(BENCH)
    real = bench_ops.bench_config

    def stopped_at_the_staircase(args, variants, copies, op, *rest):
        if op == "staircase":
            raise KeyboardInterrupt  # what a time limit's signal does to the run, in effect
        return real(args, variants, copies, op, *rest)

    monkeypatch.setattr(bench_ops, "bench_config", stopped_at_the_staircase)
    argv = ["--smoke", "--variants", "ref,kernel", "--out", str(tmp_path), "--tag", "cut",
            "--no-plot"]
    with pytest.raises(KeyboardInterrupt):
        bench_ops.main(argv)
    with open(tmp_path / "bench_ops_cut.json") as f:
        data = json.load(f)
    assert data["partial"] is True
    assert data["rows"] and {r["op"] for r in data["rows"]} == {"step"}
    assert all(r["status"] == "ok" for r in data["rows"])
    monkeypatch.setattr(bench_ops, "bench_config", real)
    assert bench_ops.main(["--from-json", str(tmp_path / "bench_ops_cut.json"), "--out",
                           str(tmp_path / "again"), "--no-plot"]) == 0
    md = (tmp_path / "again" / "bench_ops_cut.md").read_text()
    assert "**Partial result:**" in md
    # a run that finishes replaces the snapshot with the whole result
    assert bench_ops.main(argv) == 0
    with open(tmp_path / "bench_ops_cut.json") as f:
        assert "partial" not in json.load(f)
