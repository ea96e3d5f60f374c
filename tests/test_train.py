"""ftprop-train end to end: short runs that learn, outputs, resume, DDP, presets, bad arguments."""
import contextlib
import io
import json
import os
import subprocess
import sys

import pytest
import torch

from ftprop_cuda import data, train
from ftprop_cuda.models import build_model
from ftprop_cuda.train.presets import PRESETS

FASHION_INSTALLED = all(os.path.isfile(os.path.join(data.FASHION_MNIST_DIR, f))
                        for f in data.FASHION_MNIST_FILES)


def run(argv):
    """main(argv) in this process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = train.main(argv)
    return code, out.getvalue(), err.getvalue()


def metrics(folder):
    with open(os.path.join(folder, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def without_timing(records):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in records]


def fast(*extra):
    return ["--no-tensorboard", "--quiet", *extra]


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("digits"))
    code, stdout, stderr = run(["--dataset", "digits", "--epochs", "2", "--lr", "1e-3",
                                "--diagnostics", "--out", out])
    assert code == 0, stderr
    return out, stdout


def test_defaults_are_the_main_job():
    cfg = train.resolve_config(train.build_parser().parse_args([]))
    assert (cfg["arch"], cfg["nonlin"], cfg["rule"], cfg["dataset"]) == \
           ("convnet4", "step", "soft_hinge", "mnist5k")
    assert (cfg["opt"], cfg["lr"], cfg["batch_size"], cfg["grad_scale"], cfg["bn"]) == \
           ("adam", 2.5e-4, 64, True, False)


def test_mnist5k_default_setup_learns(tmp_path):
    # the no-argument configuration, shortened to one epoch on half the training split
    code, stdout, stderr = run(fast("--epochs", "1", "--train-limit", "2000", "--lr", "1e-3",
                                    "--out", str(tmp_path)))
    assert code == 0, stderr
    (rec,) = metrics(tmp_path)
    assert rec["test_top1"] > 75, rec          # chance is 10 %
    assert stdout.strip().splitlines()[-1].startswith("final test top-1")


def test_digits_learns_and_writes_every_output(digits_run):
    out, stdout = digits_run
    records = metrics(out)
    assert [r["epoch"] for r in records] == [1, 2]
    for key in ("epoch", "lr", "train_loss", "train_top1", "test_loss", "test_top1", "seconds"):
        assert all(key in r for r in records), key
    assert records[-1]["test_top1"] > 80, records   # chance is 10 %
    assert records[-1]["train_loss"] < records[0]["train_loss"]
    lines = stdout.strip().splitlines()
    assert lines[-1].startswith(f"final test top-1 {records[-1]['test_top1']:.2f}%")
    assert sum(line.startswith("epoch ") for line in lines) == 2
    config = json.load(open(os.path.join(out, "config.json")))
    assert config["dataset"] == "digits" and config["runtime"]["world_size"] == 1
    with open(os.path.join(out, "curves.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    best = torch.load(os.path.join(out, "best.pt"), weights_only=True)
    assert best["epoch"] == max(records, key=lambda r: r["test_top1"])["epoch"]
    assert "optimizer" not in best
    last = torch.load(os.path.join(out, "last.pt"), weights_only=True)
    assert last["epoch"] == 2 and {"optimizer", "scheduler", "rng"} <= set(last)
    assert not [f for f in os.listdir(out) if ".tmp" in f]
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        return
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(out))


def test_diagnostics_recorded_per_layer_in_unit_range(digits_run):
    for rec in metrics(digits_run[0]):
        diag = rec["diagnostics"]
        assert set(diag) == {"layers.act1", "layers.act2", "layers.act3"}
        for stats in diag.values():
            for field in ("has_target", "disagree", "in_window"):
                assert 0.0 <= stats[field] <= 1.0
            assert stats["disagree"] <= stats["has_target"]
            assert stats["loss"] >= 0.0


def test_eval_reproduces_the_last_test_accuracy(digits_run):
    out, _ = digits_run
    code, stdout, stderr = run(["--eval", os.path.join(out, "last.pt")])
    assert code == 0, stderr
    assert stdout.strip().endswith(f"test top-1 {metrics(out)[-1]['test_top1']:.2f}%")


def test_resume_equals_uninterrupted(tmp_path):
    # lr decay after the break, Adam state and diagnostics all have to carry over exactly
    common = fast("--dataset", "digits", "--train-limit", "640", "--lr", "1e-3",
                  "--lr-decay-epochs", "3", "--batch-size", "32", "--diagnostics")
    full, part = str(tmp_path / "full"), str(tmp_path / "part")
    assert run(common + ["--epochs", "3", "--out", full])[0] == 0
    assert run(common + ["--epochs", "2", "--out", part])[0] == 0
    code, _, stderr = run(["--resume", os.path.join(part, "last.pt"), "--epochs", "3", "--quiet",
                           "--no-tensorboard"])
    assert code == 0, stderr
    resumed = metrics(part)
    assert [r["epoch"] for r in resumed] == [1, 2, 3]
    assert resumed[2]["lr"] == pytest.approx(1e-4)
    assert without_timing(resumed) == without_timing(metrics(full))


def test_memory_modes_train_identically_and_resume_across(tmp_path):
    """--memory lean (the default) and standard give the same run bit for bit (metrics and
    weights); a standard run resumes in lean mode and continues exactly."""
    common = fast("--dataset", "digits", "--train-limit", "320", "--batch-size", "32",
                  "--arch", "convnet4", "--bn", "--seed", "3")
    lean, std, part = (str(tmp_path / n) for n in ("lean", "standard", "part"))
    assert run(common + ["--epochs", "2", "--out", lean])[0] == 0
    assert run(common + ["--epochs", "2", "--memory", "standard", "--out", std])[0] == 0
    assert without_timing(metrics(lean)) == without_timing(metrics(std))
    a = torch.load(os.path.join(lean, "last.pt"), weights_only=False)["model"]
    b = torch.load(os.path.join(std, "last.pt"), weights_only=False)["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert run(common + ["--epochs", "1", "--memory", "standard", "--out", part])[0] == 0
    code, _, stderr = run(["--resume", os.path.join(part, "last.pt"), "--epochs", "2",
                           "--memory", "lean", "--quiet", "--no-tensorboard"])
    assert code == 0, stderr
    assert without_timing(metrics(part)) == without_timing(metrics(std))


@pytest.mark.skipif(not FASHION_INSTALLED,
                    reason="Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")
def test_fashion_mnist_learns(tmp_path):
    code, _, stderr = run(fast("--dataset", "fashion_mnist", "--epochs", "1", "--lr", "1e-3",
                               "--train-limit", "2000", "--test-limit", "500",
                               "--out", str(tmp_path)))
    assert code == 0, stderr
    assert metrics(tmp_path)[0]["test_top1"] > 50   # chance is 10 %


@pytest.mark.slow
def test_two_process_gloo_ddp(tmp_path):
    out = str(tmp_path / "ddp")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         "-m", "ftprop_cuda.train", "--dataset", "digits", "--epochs", "1", "--lr", "1e-3",
         "--batch-size", "32", "--diagnostics", "--no-tensorboard", "--device", "cpu",
         "--out", out],
        capture_output=True, text=True, env=env, timeout=300,
        cwd=tmp_path)  # not the repository root, whose ftprop_cuda/ has no compiled _C
    assert proc.returncode == 0, proc.stderr[-3000:]
    finals = [l for l in proc.stdout.splitlines() if l.startswith("final test top-1")]
    assert len(finals) == 1                       # only rank 0 reports and writes
    config = json.load(open(os.path.join(out, "config.json")))
    assert config["runtime"]["world_size"] == 2
    (rec,) = metrics(out)
    assert rec["test_top1"] > 50 and 0 <= rec["diagnostics"]["layers.act1"]["has_target"] <= 1
    # the ranks' test shards were summed: one process scoring the whole test set agrees
    code, stdout, stderr = run(["--eval", os.path.join(out, "last.pt")])
    assert code == 0, stderr
    assert stdout.strip().endswith(f"test top-1 {rec['test_top1']:.2f}%")


def test_presets_reproduce_the_released_commands():
    assert len(PRESETS) == 24
    p = train.resolve_config(train.build_parser().parse_args(["--preset", "convnet4-step-ftpsh"]))
    assert (p["dataset"], p["nonlin"], p["rule"], p["bn"], p["opt"], p["lr"], p["weight_decay"],
            p["batch_size"], p["epochs"], p["lr_decay_epochs"]) == \
           ("cifar10", "step", "soft_hinge", False, "adam", 2.5e-4, 5e-4, 64, 300, [200, 250])
    assert PRESETS["convnet8-step-sste"]["nonlin"] == "step"          # not the README's slip
    assert PRESETS["resnet18-qrelu-ftpsh"]["nonlin"] == "qrelu5"
    assert PRESETS["alexnet-qrelu-sste"]["nonlin"] == "qrelu"
    assert [PRESETS[f"alexnet-{v}"]["weight_decay"] for v in ("step-sste", "qrelu-sste", "relu")] \
        == [5e-6, 5e-5, 5e-4]
    assert (PRESETS["resnet18-relu"]["opt"], PRESETS["resnet18-relu"]["lr"],
            PRESETS["resnet18-relu"]["batch_size"]) == ("sgd", 0.1, 256)
    # explicit flags win over the preset
    args = train.build_parser().parse_args(["--preset", "convnet8-relu", "--epochs", "2", "--no-bn"])
    cfg = train.resolve_config(args)
    assert (cfg["epochs"], cfg["bn"], cfg["lr"]) == (2, False, 1e-3)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(PRESETS))
def test_preset_builds_its_model(name):
    cfg = train.resolve_config(train.build_parser().parse_args(["--preset", name]))
    info = data.dataset_info(cfg["dataset"])
    torch.manual_seed(0)
    model = build_model(cfg["arch"], cfg["nonlin"], cfg["rule"], cfg["grad_scale"],
                        num_classes=info.num_classes, in_channels=info.in_channels,
                        image_size=info.image_size, bn=cfg["bn"], backend=cfg["backend"])
    with torch.no_grad():
        out = model(torch.randn(2, info.in_channels, info.image_size, info.image_size))
    assert out.shape == (2, info.num_classes) and torch.isfinite(out).all()


def test_list_presets():
    code, stdout, _ = run(["--list-presets"])
    assert code == 0
    assert all(name in stdout for name in PRESETS)


def test_quiet_prints_only_the_final_line(tmp_path):
    code, stdout, stderr = run(["--quiet", "--no-tensorboard", "--dataset", "digits",
                                "--epochs", "1", "--train-limit", "200", "--out", str(tmp_path)])
    assert code == 0 and stderr == ""
    assert len(stdout.strip().splitlines()) == 1


@pytest.fixture(scope="module")
def checkpoints(digits_run, tmp_path_factory):
    folder = tmp_path_factory.mktemp("ckpt")
    garbage = folder / "garbage.pt"
    garbage.write_bytes(os.urandom(256))
    return {"last": os.path.join(digits_run[0], "last.pt"),
            "best": os.path.join(digits_run[0], "best.pt"), "garbage": str(garbage)}


BAD = [
    (["--arch", "vgg16"], "--arch"),
    (["--dataset", "mnist1m"], "--dataset"),
    (["--rule", "nope"], "--rule"),
    (["--nonlin", "qrelu", "--rule", "hinge"], "rule 'hinge' is not supported by nonlin 'qrelu'"),
    (["--arch", "resnet18", "--no-bn"], "--no-bn"),
    (["--arch", "alexnet", "--dataset", "digits"], "image_size"),
    (["--epochs", "0"], "--epochs"),
    (["--lr", "-0.1"], "--lr"),
    (["--lr-decay-epochs", "ten"], "--lr-decay-epochs"),
    (["--preset", "convnet9"], "preset must be one of"),
    (["--dataset", "cifar10", "--data-root", "/nonexistent/cifar"], "data_batch_1"),
    (["--dataset", "fashion_mnist", "--data-root", "/nonexistent/fm"], "apt-get install"),
    (["--resume", "/nonexistent/last.pt"], "cannot read checkpoint"),
    (["--resume", "{garbage}"], "cannot read checkpoint"),
    (["--eval", "{garbage}"], "cannot read checkpoint"),
    (["--resume", "{best}"], "no optimizer state"),
    (["--resume", "{last}", "--lr", "0.5"], "--lr cannot be changed"),
    (["--resume", "{last}", "--preset", "convnet4-relu"], "--preset cannot be combined"),
    (["--bogus-flag"], "unrecognized arguments"),
]


@pytest.mark.parametrize("argv,message", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_arguments_exit_2_with_one_line(argv, message, checkpoints, tmp_path):
    argv = [a.format(**checkpoints) for a in argv] + ["--out", str(tmp_path / "o")]
    code, stdout, stderr = run(argv)
    assert code == 2
    assert stderr.count("\n") == 1 and stderr.startswith("ftprop-train: error: "), stderr
    assert message in stderr
    assert not os.path.exists(tmp_path / "o" / "metrics.jsonl")


def test_cli_process_exit_code_and_no_traceback(tmp_path):
    for argv in (["--arch", "vgg16"], ["--resume", str(tmp_path / "missing.pt")]):
        proc = subprocess.run([sys.executable, "-m", "ftprop_cuda.train", *argv],
                              capture_output=True, text=True, timeout=120, cwd=tmp_path)
        assert proc.returncode == 2
        assert "Traceback" not in proc.stderr
        assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("ftprop-train: error:")


@pytest.mark.slow
def test_compiled_lean_training_stores_conv_weights_channels_last(tmp_path):
    """--compile in lean mode (compile_lean): trains, the CPU convolution weights are stored
    channels-last (so the compiled graph keeps no copies of them), and the checkpoint evaluates
    and resumes in an eager process like any other."""
    torch._dynamo.reset()
    out = str(tmp_path / "c")
    code, _, stderr = run(fast("--dataset", "digits", "--arch", "convnet4", "--epochs", "1",
                               "--train-limit", "128", "--test-limit", "128", "--compile",
                               "--device", "cpu", "--out", out))
    assert code == 0, stderr
    ckpt = torch.load(os.path.join(out, "last.pt"), map_location="cpu", weights_only=False)
    w = ckpt["model"]["layers.conv2.weight"]
    assert w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous()
    (rec,) = metrics(out)
    code, stdout, stderr = run(["--eval", os.path.join(out, "last.pt")])
    assert code == 0, stderr
    assert stdout.strip().endswith(f"test top-1 {rec['test_top1']:.2f}%")
    code, _, stderr = run(fast("--resume", os.path.join(out, "last.pt"), "--epochs", "2"))
    assert code == 0, stderr
    assert len(metrics(out)) == 2
