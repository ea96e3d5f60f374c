"""ftprop-train under faults: divergence, shared or unwritable run folders, SIGTERM, resume
limits, a batch-norm batch of one, damaged checkpoints, a silent DDP peer, torch-free parsing."""
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch

from ftprop_cuda import data, runs, train
from ftprop_cuda.train import optim, outputs

from test_train import fast, metrics, run

SMALL = ["--dataset", "digits", "--train-limit", "200", "--batch-size", "32", "--lr", "1e-3"]


def strict_json_lines(path):
    """The records of a .jsonl file, failing on NaN/Infinity (which JSON does not have)."""
    def reject(token):
        raise ValueError(f"not JSON: {token}")
    with open(path) as f:
        return [json.loads(line, parse_constant=reject) for line in f]


def one_error_line(stderr):
    return stderr.count("\n") == 1 and stderr.startswith("ftprop-train: error: ")


@pytest.fixture(scope="module")
def one_epoch(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("one"))
    code, _, stderr = run(fast(*SMALL, "--epochs", "1", "--out", out))
    assert code == 0, stderr
    return out


# ---------------------------------------------------------------------------------------------
# Torch-free parsing (issue 14, item 14)
# ---------------------------------------------------------------------------------------------
def test_import_and_bad_flags_do_not_import_torch(tmp_path):
    script = ("import sys\nimport ftprop_cuda.train as t\nassert 'torch' not in sys.modules\n"
              "codes = [t.main(a) for a in (['--arch', 'vgg16'], ['--epochs', '0'], ['--bogus'],"
              " ['--preset', 'convnet9'], ['--arch', 'resnet18', '--no-bn'])]\n"
              "assert codes == [2] * 5, codes\nassert 'torch' not in sys.modules\n"
              "import ftprop_cuda\nassert 'torch' not in sys.modules\n"
              "assert ftprop_cuda.Step.__name__ == 'Step' and callable(ftprop_cuda.step)\n"
              "from ftprop_cuda import Staircase, STEP_RULES, build_info, reference\n"
              "assert set(ftprop_cuda.__all__) <= set(dir(ftprop_cuda))\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("ftprop-train: error:") == 5


# ---------------------------------------------------------------------------------------------
# Divergence and JSON (item 3)
# ---------------------------------------------------------------------------------------------
def test_diverging_run_stops_with_exit_3(tmp_path):
    out = str(tmp_path / "nan")
    code, _, stderr = run(fast("--dataset", "digits", "--train-limit", "200", "--opt", "sgd",
                               "--lr", "1e20", "--epochs", "3", "--out", out))
    assert code == train.EXIT_DIVERGED == 3
    assert one_error_line(stderr) and "not finite at epoch 1, step" in stderr, stderr
    assert not os.path.exists(os.path.join(out, "last.pt"))
    assert not os.path.exists(os.path.join(out, "metrics.jsonl"))


def test_divergence_keeps_the_last_good_checkpoint(one_epoch, tmp_path, monkeypatch):
    folder = str(tmp_path / "resumed")
    os.makedirs(folder)
    for name in ("last.pt", "metrics.jsonl"):
        with open(os.path.join(one_epoch, name), "rb") as src, \
                open(os.path.join(folder, name), "wb") as dst:
            dst.write(src.read())
    before = open(os.path.join(folder, "last.pt"), "rb").read()
    real = optim.output_loss
    calls = []

    def nan_at_third_step(name):
        loss = real(name)

        def patched(out, target):
            calls.append(1)
            value = loss(out, target)
            return value * float("nan") if len(calls) == 3 else value
        return patched

    monkeypatch.setattr(optim, "output_loss", nan_at_third_step)
    # --no-verify-lean: the lean check's two passes on the first batch would be calls 1 and 2
    code, _, stderr = run(fast("--resume", os.path.join(folder, "last.pt"), "--epochs", "2",
                               "--no-verify-lean"))
    assert code == 3 and one_error_line(stderr), stderr
    assert "epoch 2, step 3 of 7" in stderr and "last.pt keeps epoch 1" in stderr
    assert open(os.path.join(folder, "last.pt"), "rb").read() == before
    assert [r["epoch"] for r in metrics(folder)] == [1]


def test_metrics_never_hold_nan_or_infinity(tmp_path, monkeypatch):
    real = optim.output_loss

    def infinite_test_loss(name):
        loss = real(name)
        return lambda out, target: loss(out, target) if torch.is_grad_enabled() \
            else loss(out, target) * float("inf")

    monkeypatch.setattr(optim, "output_loss", infinite_test_loss)
    # every number of an epoch is checked (issue 24, D18): an infinite test loss stops the run
    # with exit 3 before the epoch is saved, as a non-finite training loss does
    code, _, stderr = run(fast(*SMALL, "--epochs", "2", "--out", str(tmp_path)))
    assert code == 3 and one_error_line(stderr), stderr
    assert "the test loss is not finite at epoch 1: stopped" in stderr
    assert not (tmp_path / "metrics.jsonl").exists() and not (tmp_path / "last.pt").exists()
    assert runs.dumps({"a": [float("nan"), -float("inf"), 1.5]}) == '{"a": [null, null, 1.5]}'


# ---------------------------------------------------------------------------------------------
# Run folders (item 5), unwritable --out (item 9)
# ---------------------------------------------------------------------------------------------
def test_default_folders_are_unique_within_a_second(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(outputs, "timestamp", lambda: "20260101-000000")
    finals = []
    for _ in range(2):
        code, stdout, stderr = run(fast(*SMALL, "--epochs", "1", "--train-limit", "64"))
        assert code == 0, stderr
        finals.append(stdout.strip().rsplit("outputs in ", 1)[1])
    assert finals[0] != finals[1]
    assert sorted(os.listdir("runs")) == sorted(os.path.basename(f) for f in finals)
    for folder in finals:
        assert len(metrics(folder)) == 1


def test_a_live_run_folder_is_locked(tmp_path):
    held = runs.RunLock(str(tmp_path))  # this process holds it, as a live run would
    try:
        code, _, stderr = run(fast(*SMALL, "--epochs", "1", "--out", str(tmp_path)))
    finally:
        held.release()
    assert code == 2 and one_error_line(stderr), stderr
    assert "is in use by another run" in stderr and f"pid {os.getpid()}" in stderr
    assert not os.path.exists(tmp_path / "metrics.jsonl")
    code, _, stderr = run(fast(*SMALL, "--epochs", "1", "--out", str(tmp_path)))
    assert code == 0, stderr  # released: the folder is usable again


def test_lock_is_held_across_processes(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from ftprop_cuda import runs; "
         f"runs.RunLock({str(tmp_path)!r}); print('locked', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(runs.RunIOError, match=f"pid {holder.pid} on host "
                           f"{socket.gethostname()}"):
            runs.RunLock(str(tmp_path))
    finally:
        holder.kill()
        holder.wait()
    runs.RunLock(str(tmp_path)).release()  # the kernel dropped the dead holder's lock


@pytest.mark.parametrize("kind", ["file", "under_file"])
def test_unwritable_out_exits_2_before_loading_data(tmp_path, monkeypatch, kind):
    plain = tmp_path / "plain"
    plain.write_text("x")
    out = plain if kind == "file" else plain / "sub"
    loaded = []
    monkeypatch.setattr(data, "load_dataset", lambda *a, **k: loaded.append(a))
    code, _, stderr = run(fast(*SMALL, "--out", str(out)))
    assert code == 2 and one_error_line(stderr), stderr
    assert f"--out {out}" in stderr and not loaded


# ---------------------------------------------------------------------------------------------
# SIGTERM (item 6)
# ---------------------------------------------------------------------------------------------
def test_sigterm_is_handled_like_sigint(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "ftprop_cuda.train", "--dataset", "digits", "--epochs", "1000",
         "--lr", "1e-3", "--no-tensorboard", "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        line = proc.stdout.readline()
        assert line.startswith("epoch 1/"), line + proc.stderr.read()
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == train.EXIT_SIGTERM == 143
    assert stderr.strip().splitlines()[-1] == "ftprop-train: terminated (SIGTERM)"
    assert "Traceback" not in stderr
    assert not [f for f in os.listdir(out) if ".tmp" in f]
    ckpt = torch.load(out / "last.pt", weights_only=True)
    assert ckpt["epoch"] >= 1


# ---------------------------------------------------------------------------------------------
# Resume limits and invocations (item 7)
# ---------------------------------------------------------------------------------------------
def test_resume_epochs_and_invocations(one_epoch, tmp_path):
    last = os.path.join(one_epoch, "last.pt")
    config_path = os.path.join(one_epoch, "config.json")
    before = open(config_path).read()
    # a finished run resumed again: nothing to do, nothing written
    for extra in (["--epochs", "1"], []):
        code, stdout, stderr = run(fast("--resume", last, *extra))
        assert code == 0 and stdout == "", stderr
        assert stderr.startswith("ftprop-train: nothing to do: checkpoint") and "epoch 1" in stderr
    assert open(config_path).read() == before
    out = str(tmp_path / "continued")
    code, _, stderr = run(fast("--resume", last, "--epochs", "2", "--out", out))
    assert code == 0, stderr
    config = json.load(open(os.path.join(out, "config.json")))
    first, second = config["invocations"]
    assert first["argv"] == json.loads(before)["runtime"]["argv"]
    assert first["resumed_from"] is None and second["resumed_from"] == last
    assert second["start_epoch"] == 2 and config["runtime"] == second and config["epochs"] == 2
    # fewer epochs than the checkpoint holds: rejected, config.json untouched
    before = open(os.path.join(out, "config.json")).read()
    code, _, stderr = run(fast("--resume", os.path.join(out, "last.pt"), "--epochs", "1"))
    assert code == 2 and one_error_line(stderr), stderr
    assert "is at epoch 2: --epochs must be > 2 to continue (got 1)" in stderr
    assert open(os.path.join(out, "config.json")).read() == before


# ---------------------------------------------------------------------------------------------
# Batch norm and a last batch of one (item 8)
# ---------------------------------------------------------------------------------------------
def test_batch_norm_last_batch_of_one_is_left_out(tmp_path):
    code, _, stderr = run(["--no-tensorboard", "--dataset", "digits", "--bn", "--train-limit",
                           "129", "--batch-size", "64", "--epochs", "2", "--out", str(tmp_path)])
    assert code == 0, stderr
    assert stderr.count("one example, which batch norm cannot train on") == 1
    # without batch norm nothing is left out and nothing is said
    code, _, stderr = run(fast("--dataset", "digits", "--train-limit", "129", "--batch-size",
                               "64", "--epochs", "1", "--out", str(tmp_path / "nobn")))
    assert code == 0 and stderr == "", stderr


# ---------------------------------------------------------------------------------------------
# Damaged checkpoints (item 10)
# ---------------------------------------------------------------------------------------------
def _damaged(one_epoch, folder, name, change):
    ckpt = torch.load(os.path.join(one_epoch, "last.pt"), weights_only=True)
    change(ckpt)
    path = os.path.join(folder, name)
    torch.save(ckpt, path)
    return path


DAMAGE = {
    "no_epoch": (lambda c: c.pop("epoch"), "key 'epoch' is missing"),
    "epoch_text": (lambda c: c.update(epoch="4"), "'epoch' is str '4', expected an integer"),
    "no_config_arch": (lambda c: c["config"].pop("arch"), "config key 'arch' is missing"),
    "lr_text": (lambda c: c["config"].update(lr="fast"), "config 'lr' is str"),
    "model_list": (lambda c: c.update(model=[1, 2]), "'model' is list"),
    "model_values": (lambda c: c["model"].update(x=3), "not a state dict of tensors"),
    "history_short": (lambda c: c.update(history=[]), "'history' does not hold 1"),
    "no_scheduler": (lambda c: c.pop("scheduler"), "key 'scheduler' is missing"),
    "rng_garbled": (lambda c: c.update(rng=[{"torch": 1}]), "'rng' does not hold"),
    "rng_values": (lambda c: c["rng"][0].update(python=5), "random state is damaged"),
    "shape": (lambda c: c["model"].update({k: torch.zeros(1) for k in list(c["model"])[:1]}),
              "does not fit this model"),
}


@pytest.mark.parametrize("name", list(DAMAGE))
def test_damaged_checkpoint_gives_one_line(one_epoch, tmp_path, name):
    change, message = DAMAGE[name]
    path = _damaged(one_epoch, str(tmp_path), f"{name}.pt", change)
    code, _, stderr = run(fast("--resume", path, "--epochs", "2", "--out", str(tmp_path / "o")))
    assert code == 2 and one_error_line(stderr), stderr
    assert path in stderr and message in stderr, stderr


def test_unreadable_checkpoint_files(one_epoch, tmp_path):
    whole = open(os.path.join(one_epoch, "last.pt"), "rb").read()
    cases = {"truncated.pt": (whole[:len(whole) // 2], "truncated or damaged"),
             "empty.pt": (b"", "the file is empty"),
             "text.pt": (b"root:x:0:0:root:/root:/bin/bash\n", "not a checkpoint file")}
    for name, (content, message) in cases.items():
        path = tmp_path / name
        path.write_bytes(content)
        for flag in ("--resume", "--eval"):
            code, _, stderr = run(fast(flag, str(path)))
            assert code == 2 and one_error_line(stderr), stderr
            assert str(path) in stderr and message in stderr, stderr
            assert "IndexError" not in stderr and "EOFError" not in stderr
    assert len(stderr) < 200


# ---------------------------------------------------------------------------------------------
# A rule on full-precision units (item 12)
# ---------------------------------------------------------------------------------------------
def test_rule_with_relu_is_noted_and_recorded_as_null(tmp_path):
    code, _, stderr = run(["--no-tensorboard", *SMALL, "--epochs", "1", "--nonlin", "relu",
                           "--rule", "sste", "--out", str(tmp_path)])
    assert code == 0, stderr
    assert "--rule sste has no effect with --nonlin relu" in stderr
    assert json.load(open(tmp_path / "config.json"))["rule"] is None
    # a resume of that run accepts the same flags
    code, _, stderr = run(fast("--resume", str(tmp_path / "last.pt"), "--epochs", "2"))
    assert code == 0, stderr


# ---------------------------------------------------------------------------------------------
# A silent DDP peer (item 13)
# ---------------------------------------------------------------------------------------------
def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_silent_ddp_peer_times_out_with_exit_4(tmp_path):
    env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()),
               WORLD_SIZE="2", OMP_NUM_THREADS="1")
    # rank 1 joins the group and then never takes part in a collective (a stopped worker)
    peer = subprocess.Popen(
        [sys.executable, "-c", "import time, datetime, torch.distributed as d; "
         "d.init_process_group('gloo', timeout=datetime.timedelta(seconds=60)); time.sleep(60)"],
        env=dict(env, RANK="1", LOCAL_RANK="1"), stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    try:
        began = time.monotonic()
        proc = subprocess.run(
            [sys.executable, "-m", "ftprop_cuda.train", *SMALL, "--epochs", "1", "--quiet",
             "--no-tensorboard", "--device", "cpu", "--dist-timeout", "5",
             "--out", str(tmp_path / "o")],
            env=dict(env, RANK="0", LOCAL_RANK="0"), capture_output=True, text=True,
            timeout=120, cwd=tmp_path)
    finally:
        peer.kill()
        peer.wait()
    assert proc.returncode == train.EXIT_DISTRIBUTED == 4, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert "rank 0: a collective with the other processes failed" in proc.stderr
    assert time.monotonic() - began < 100


@pytest.mark.parametrize("world", ["1", "2"])
def test_a_torchrun_worker_ends_without_the_interpreter_shutdown(tmp_path, world):
    # gloo's worker threads can abort a torchrun worker in the interpreter's shutdown
    # (command.program); what the command printed still reaches its pipe, and its exit code
    script = ("import atexit\n"
              "from ftprop_cuda.train import command\n"
              "atexit.register(lambda: print('interpreter shutdown', flush=True))\n"
              "command.main = lambda argv=None: print('the run, buffered') or 5\n"
              "command.program()\n")
    proc = subprocess.run([sys.executable, "-c", script], env=dict(os.environ, WORLD_SIZE=world),
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 5, proc.stderr
    assert "the run, buffered" in proc.stdout
    assert ("interpreter shutdown" in proc.stdout) == (world == "1")


def test_the_command_is_program():
    import tomllib

    from ftprop_cuda.train import command

    with open(os.path.join(os.path.dirname(__file__), os.pardir, "pyproject.toml"), "rb") as f:
        scripts = tomllib.load(f)["project"]["scripts"]
    assert scripts["ftprop-train"] == "ftprop_cuda.train.command:program"
    main_py = os.path.join(os.path.dirname(command.__file__), "__main__.py")
    assert "program()" in open(main_py).read()
