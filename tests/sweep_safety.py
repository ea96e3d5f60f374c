"""Shared helpers of test_run_safety_sweep.py and test_run_safety_export.py: a kill hook that
lands a signal on a named temporary file, process and temp-file scans, command runners."""
import contextlib
import io
import os
import re
import subprocess
import sys
import time

# Written as sitecustomize.py into a folder put first on PYTHONPATH: every Python process of the
# sweep (the sweep and its trainers, which inherit the environment) loads it. When a process is
# about to rename a temporary file onto the file named by FTPROP_TEST_KILL ("NAME:SIGNAL"), it
# sends SIGNAL to the sweep (itself, or its parent for a trainer), notes its pid and the file in
# FTPROP_TEST_KILL_LOG, and waits with the temporary file in place until the signal's effect
# (an exception, or death) arrives. Once per process tree: the log's existence disarms it.
KILL_HOOK = r'''
import os, sys, time

def _arm():
    spec = os.environ.get("FTPROP_TEST_KILL")
    log = os.environ.get("FTPROP_TEST_KILL_LOG")
    if not spec or not log:
        return
    name, signum = spec.rsplit(":", 1)
    real_replace = os.replace

    def replace(src, dst, *a, **kw):
        if os.path.basename(str(dst)) == name and not os.path.exists(log):
            main = sys.argv[0] if sys.argv else ""
            sweep = os.path.basename(os.path.dirname(main)) == "sweep"
            with open(log, "w") as f:
                f.write(f"{os.getpid()} {'sweep' if sweep else 'trainer'} {src}\n")
            os.kill(os.getpid() if sweep else os.getppid(), int(signum))
            # a trainer waits for the signal's exception (or death) to interrupt it; a sweep
            # that signalled itself has its handler run at once (or is dead)
            for _ in range(5 if sweep else 300):
                time.sleep(0.1)
        return real_replace(src, dst, *a, **kw)

    os.replace = replace

_arm()
'''

TEMP_RE = re.compile(r"\.(tmp|dir)\d+\Z")


def hook_env(tmp_path, kill=None, log=None):
    """The environment of a sweep with the kill hook armed for kill = (file name, signal)."""
    hook = tmp_path / "hook"
    hook.mkdir(exist_ok=True)
    (hook / "sitecustomize.py").write_text(KILL_HOOK)
    env = dict(os.environ)
    # the hook only: the sweep and its trainers import the installed package (a repository
    # built without -e, as CI builds it, has no compiled _C in its ftprop_cuda/)
    env["PYTHONPATH"] = os.pathsep.join([str(hook)] + [
        p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env.pop("FTPROP_TEST_KILL", None)
    if kill is not None:
        env["FTPROP_TEST_KILL"] = f"{kill[0]}:{int(kill[1])}"
        env["FTPROP_TEST_KILL_LOG"] = str(log)
    return env


def sweep_cmd(*argv):
    return [sys.executable, "-m", "ftprop_cuda.sweep", *argv]


def run_cli(argv, env=None, cwd=None, timeout=600):
    """A command in a subprocess: (exit code, stdout, stderr)."""
    p = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout)
    return p.returncode, p.stdout, p.stderr


def in_process(main, argv):
    """main(argv) in this process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def temp_files(root):
    """Every temporary file or folder of an atomic write under root."""
    found = []
    for folder, dirs, files in os.walk(root):
        found += [os.path.join(folder, f) for f in files + dirs if TEMP_RE.search(f)]
    return found


def alive(pid):
    """Whether pid is a live process (a zombie counts as ended)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def processes_naming(text):
    """Pids of the live processes whose command line contains text."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    cmdline = f.read().replace(b"\0", b" ").decode("utf-8", "replace")
            except OSError:
                continue
            if text in cmdline and alive(int(entry)):
                pids.append(int(entry))
    return pids


def wait_until(condition, limit_s=120, poll_s=0.1):
    """True once condition() holds, False when limit_s passed first."""
    deadline = time.monotonic() + limit_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(poll_s)
    return True


def comparable(records):
    """Epoch records without their timings (a resumed run matches bit for bit otherwise)."""
    return [{k: v for k, v in r.items() if k != "seconds"} for r in records]
