"""ftprop-export under hostile inputs (issue 24: D7, D8, D16, D17, D18's export part).

One tiny checkpoint (digits, 64 images, one epoch, trained in this process) is exported again
and again; a full disk is injected (an OSError in the write, and a real file-size limit)."""
import errno
import os
import resource
import signal
import subprocess
import sys

import pytest
import torch

from ftprop_cuda import export
from ftprop_cuda import train

from sweep_safety import in_process, run_cli, temp_files

pytest.importorskip("onnxscript")  # torch.onnx.export's exporter needs it


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    code, _, err = in_process(train.main, [
        "--dataset", "digits", "--train-limit", "64", "--epochs", "1", "--arch", "convnet4",
        "--nonlin", "step", "--rule", "sste", "--out", str(out / "run"), "--quiet",
        "--no-tensorboard"])
    assert code == 0, err
    return str(out / "run" / "best.pt")


def cli(*argv):
    return in_process(export.main, list(argv))


def one_line_error(code, out, err, message):
    assert code == 2 and out == "", err
    assert err.count("\n") == 1 and err.startswith("ftprop-export: error: "), err
    assert message in err, err


def _bytes(path):
    with open(path, "rb") as f:
        return f.read()


def test_the_output_is_never_an_input(checkpoint, tmp_path):
    before = _bytes(checkpoint)
    link = tmp_path / "link.pt"
    link.symlink_to(checkpoint)
    hard = tmp_path / "hard.pt"
    os.link(checkpoint, hard)
    batch = tmp_path / "batch.pt"
    torch.save(torch.zeros(2, 1, 8, 8), batch)
    sidecar = tmp_path / "m.onnx.data"  # where a large ONNX export keeps its weights
    sidecar.write_bytes(before)
    for argv in ((checkpoint, "--format", "onnx", "--out", checkpoint),
                 (checkpoint, "--format", "pt2", "--out", str(link)),
                 (str(hard), "--format", "pt2", "--out", checkpoint),
                 (checkpoint, "--format", "onnx", "--out", str(batch), "--check-batch",
                  str(batch)),
                 (str(sidecar), "--format", "onnx", "--out", str(tmp_path / "m.onnx"))):
        one_line_error(*cli(*argv), "would overwrite")
    assert _bytes(checkpoint) == before and torch.load(batch).shape == (2, 1, 8, 8)


def test_a_full_disk_leaves_no_file_and_says_so_in_one_line(checkpoint, tmp_path, monkeypatch):
    out = tmp_path / "model.onnx"
    out.write_bytes(b"an earlier export")

    def full(path, data, chunk=1 << 20):
        with open(path, "wb") as f:
            f.write(data[:len(data) // 2])  # half the file, then the disk is full
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
    monkeypatch.setattr(export, "_write_bytes", full)
    for fmt in ("onnx", "pt2"):
        code, stdout, stderr = cli(checkpoint, "--format", fmt, "--out", str(out))
        one_line_error(code, stdout, stderr, f"cannot write {out}: No space left on device "
                                             "(ENOSPC)")
        assert out.read_bytes() == b"an earlier export"  # the old file is untouched
        assert temp_files(str(tmp_path)) == []


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(resource, "RLIMIT_FSIZE"), reason="needs RLIMIT_FSIZE")
def test_pt2_past_a_file_size_limit_is_one_line_not_an_abort(checkpoint, tmp_path):
    """A real write failure from the kernel (EFBIG past RLIMIT_FSIZE): torch.export.save's zip
    writer would abort the process from C++; the file is serialised in memory instead."""
    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 << 10, 64 << 10))
    out = tmp_path / "m.pt2"
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    p = subprocess.run([sys.executable, "-m", "ftprop_cuda.export", checkpoint, "--format", "pt2",
                        "--out", str(out), "--no-check"], capture_output=True, text=True,
                       env=env, preexec_fn=limit, timeout=600, cwd=tmp_path)
    one_line_error(p.returncode, p.stdout, p.stderr, f"cannot write {out}: File too large")
    assert not out.exists() and temp_files(str(tmp_path)) == []


def test_temp_files_of_killed_exports_are_removed(checkpoint, tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    out = tmp_path / "m.pt2"
    stale = [tmp_path / f"m.pt2.tmp{dead.pid}", tmp_path / f"m.pt2.dir{dead.pid}"]
    stale[0].write_bytes(b"half")
    stale[1].mkdir()
    (stale[1] / "m.pt2").write_bytes(b"half")
    code, stdout, stderr = cli(checkpoint, "--format", "pt2", "--out", str(out), "--no-check")
    assert code == 0, stderr
    assert not any(p.exists() for p in stale) and temp_files(str(tmp_path)) == []


@pytest.mark.parametrize("fmt", ["onnx", "pt2"])
def test_self_check_on_real_images(checkpoint, tmp_path, fmt):
    if fmt == "onnx":
        pytest.importorskip("onnxruntime")
    out = tmp_path / f"m.{fmt}"
    code, stdout, stderr = cli(checkpoint, "--format", fmt, "--out", str(out),
                               "--check-images", "40")
    assert code == 0, stderr
    assert "self-check on 40 digits test images: predictions agree on " in stdout
    agree = int(stdout.split("agree on ")[1].split("/")[0])
    assert 0 <= agree <= 40 and "largest logit difference" in stdout
    # the same comparison, made here on the same images
    from ftprop_cuda.data import load_dataset
    _, test_set, _ = load_dataset("digits", None, False, 1, 40)
    images = torch.stack([test_set[i][0] for i in range(40)])
    model, _ = export.model_from_checkpoint(torch.load(checkpoint, weights_only=True))
    assert export.self_check(model, fmt, str(out), images)[:2] == (agree, 40)
    batch = tmp_path / "batch.pt"
    torch.save(images[:5], batch)
    code, stdout, stderr = cli(checkpoint, "--format", fmt, "--out", str(out),
                               "--check-batch", str(batch))
    assert code == 0 and f"self-check on 5 images of {batch}: predictions agree on " in stdout
    torch.save(images[:5, :, :4], batch)
    one_line_error(*cli(checkpoint, "--format", fmt, "--out", str(out), "--check-batch",
                        str(batch)), "expected a tensor N x 1 x 8 x 8, got (5, 1, 4, 8)")


def test_the_rebuilt_model_traces_with_torch_jit(checkpoint):
    """The README's recipe torch.jit.trace(model.eval(), x) on the model export rebuilds:
    standard memory mode (lean mode's hooks made the traces differ)."""
    from ftprop_cuda.memory import is_lean

    model, info = export.model_from_checkpoint(torch.load(checkpoint, weights_only=True))
    assert not is_lean(model)
    x = torch.randn(4, info.in_channels, info.image_size, info.image_size)
    traced = torch.jit.trace(model, x)  # check_trace reruns it and compares the graphs
    with torch.no_grad():
        assert torch.equal(traced(x), model(x))


def test_a_damaged_model_names_the_cause(checkpoint, tmp_path):
    ckpt = torch.load(checkpoint, weights_only=True)
    first = next(iter(ckpt["model"]))
    del ckpt["model"][first]
    with pytest.raises(export.UsageError) as exc:
        export.model_from_checkpoint(ckpt, "x.pt")
    assert "Missing key(s)" in str(exc.value) and first in str(exc.value)


def test_unknown_and_abbreviated_flags_are_named(checkpoint):
    one_line_error(*cli("--bogus"), "unrecognized arguments: --bogus")
    one_line_error(*cli(checkpoint, "--form", "onnx"), "unrecognized arguments: --form")
    one_line_error(*cli(checkpoint), "the following arguments are required: --format")
    one_line_error(*cli(), "required: CHECKPOINT, --format")
    one_line_error(*cli(checkpoint, "--format", "onnx", "--out", ""), "--out must name a file")
    one_line_error(*cli(checkpoint, "--format", "onnx", "--check-images", "0"),
                   "--check-images expects a positive integer")


def test_a_path_typo_fails_before_torch_is_imported(tmp_path):
    probe = ("import sys; from ftprop_cuda.export import main; code = main(sys.argv[1:]); "
             "print(code, 'torch' in sys.modules)")
    for argv, message in (([str(tmp_path / "missing.pt"), "--format", "onnx"], "no such file"),
                          ([str(tmp_path), "--format", "pt2"], "not a file")):
        code, stdout, stderr = run_cli([sys.executable, "-c", probe, *argv], cwd=tmp_path)
        assert stdout.split() == ["2", "False"] and message in stderr, stderr
