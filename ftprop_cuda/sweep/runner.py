"""ftprop-sweep run: every (configuration, seed) run of a grid as one trainer process, a few at
a time; finished runs are skipped and interrupted ones resumed from their last.pt."""
import os
import re
import signal
import subprocess
import sys
import time

from ..runs import write_json
from ..runs.names import (ATTEMPTS_FILE, ATTEMPTS_KEY, BEST_FILE, CONFIG_FILE, CURVES_FILE,
                          GRID_FILE, LAST_FILE, METRICS_FILE, STDERR_FILE, STDOUT_FILE)
from .claims import Claim, remove_stale_temps, wait_for_trainer
from .errors import PROG, SweepError
from .folders import (SOURCE_ROOT, git_commit, machine_info, now, read_json, read_metrics,
                      run_folder, run_status, summarise_run)
from .grid import load_grid, train_options

# python -m ftprop_cuda.runs.parent SWEEP_PID ftprop_cuda.train ...: a trainer that ends with
# its sweep, however the sweep ends
TRAINER = ["-m", "ftprop_cuda.runs.parent"]
TRAINER_MODULE = "ftprop_cuda.train"
# a Linux machine without any of these (NVIDIA, ROCm, WSL) has no GPU torch could use
GPU_DEVICE_FILES = ("/dev/nvidiactl", "/dev/nvidia0", "/dev/kfd", "/dev/dxg")
STOP_GRACE_S = 60  # how long stopped trainers get to write their last epoch before SIGKILL


def _parse_shard(text):
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text or "")
    if not m or not 1 <= int(m.group(1)) <= int(m.group(2)):
        raise SweepError(f"--shard expects i/n with 1 <= i <= n (e.g. 1/4), got {text!r}")
    return int(m.group(1)), int(m.group(2))


def _gpu_ids():
    """The GPUs the children may use, as CUDA_VISIBLE_DEVICES entries (empty: none)."""
    if sys.platform.startswith("linux") and not any(map(os.path.exists, GPU_DEVICE_FILES)):
        return []  # no GPU driver here: no need to import torch to find that out
    try:
        import torch
        count = torch.cuda.device_count()
    except Exception:  # a broken CUDA setup means "no GPU" for scheduling purposes
        count = 0
    if count == 0:
        return []
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible:
        return [v.strip() for v in visible.split(",") if v.strip()][:count]
    return [str(i) for i in range(count)]


def child_env(threads, gpu):
    """The environment of one trainer: its thread count, its GPU, and this very package.

    `python -m` puts the working directory first on sys.path, so from a source checkout the
    trainer would import the checkout's ftprop_cuda (without the compiled extension) instead
    of the one running the sweep; PYTHONSAFEPATH (Python >= 3.11) drops that entry and
    PYTHONPATH names the sweep's own package."""
    env = dict(os.environ, OMP_NUM_THREADS=threads, PYTHONSAFEPATH="1")
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    if SOURCE_ROOT not in paths and SOURCE_ROOT not in sys.path[1:]:
        paths.insert(0, SOURCE_ROOT)
    if paths:
        env["PYTHONPATH"] = os.pathsep.join(paths)
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpu
    return env


def _reason(path, offset):
    """The last non-empty line that the current attempt wrote to a log (from offset on)."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            lines = [line.strip() for line in f.read().decode("utf-8", "replace").splitlines()]
    except OSError:
        return ""
    lines = [line for line in lines if line]
    return lines[-1] if lines else ""


def _record_attempt(folder, attempt):
    path = os.path.join(folder, ATTEMPTS_FILE)
    log = read_json(path)
    if not isinstance(log, dict) or not isinstance(log.get(ATTEMPTS_KEY), list):
        log = {ATTEMPTS_KEY: []}
    log[ATTEMPTS_KEY].append(attempt)
    write_json(path, log)
    return len(log[ATTEMPTS_KEY])


def _signal_group(proc, sig):
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _open_log(path, header):
    """A log opened for appending (earlier attempts' output is kept), with a header line;
    returns (file, offset where this attempt's output starts)."""
    f = open(path, "ab")
    f.write(header.encode())
    f.flush()
    return f, f.tell()


class _Job:
    """One running trainer: its run, its process, its claim, and where its stderr goes."""

    def __init__(self, name, seed, folder, resumed_at, proc, claim, err):
        self.name, self.seed, self.folder, self.resumed_at = name, seed, folder, resumed_at
        self.proc, self.claim, self.err_path, self.err_offset = proc, claim, *err
        self.started = time.monotonic()


class _Pool:
    """The runs still to do, started `jobs` at a time; stopped on SIGINT or SIGTERM (stop)."""

    def __init__(self, grid, options, jobs, threads, gpus, todo, stop):
        self.grid, self.options, self.jobs = grid, options, jobs
        self.threads, self.gpus, self.total = threads, gpus, len(todo)
        self.queue, self.running, self.failed, self.done, self.stop = list(todo), {}, [], 0, stop
        self.skipped, self.meanwhile = [], 0
        self.machine, self.commit = machine_info(), git_commit()

    def _command(self, name, seed, folder, state):
        """The trainer's command line, and the epoch it resumes after (None when fresh)."""
        cmd, resumed_at = [sys.executable, *TRAINER, str(os.getpid()), TRAINER_MODULE], None
        if state == "interrupted":
            resumed_at = max((r["epoch"] for r in read_metrics(folder)), default=0)
            cmd += ["--resume", os.path.join(folder, LAST_FILE)]
            cmd += self.grid.args(name, self.options, resume=True)
        else:
            cmd += self.grid.args(name, self.options)
            if "--overwrite" in self.options and _has_run_files(folder):
                cmd.append("--overwrite")  # what a fresh run killed before its first epoch left
        return cmd + ["--seed", str(seed), "--out", folder, "--quiet", "--no-tensorboard"], \
            resumed_at

    def _skip(self, name, seed, why):
        self.skipped.append((name, seed))
        print(f"{PROG}: {name} seed {seed}: skipped, {why}", flush=True)

    def _claim(self, name, seed, folder):
        """The run's claim and its state checked under it, or (None, None) when it is not ours
        to train (another sweep or a live trainer holds it, or it is finished or damaged)."""
        claim = Claim.take(folder)
        if claim is None:
            self._skip(name, seed, "another ftprop-sweep holds it")
            return None, None
        holder = wait_for_trainer(folder)
        state, problem = run_status(folder, self.grid.epochs(name))
        if holder is not None or state in ("finished", "damaged"):
            claim.release()
            if holder is not None:
                self._skip(name, seed, f"a trainer still holds its folder ({holder})")
            elif state == "damaged":
                self._skip(name, seed, f"damaged: {problem}")
            else:
                self.meanwhile += 1
                print(f"{PROG}: {name} seed {seed}: finished meanwhile (another sweep)",
                      flush=True)
            return None, None
        remove_stale_temps(folder)
        return claim, state

    def _start(self, slot, name, seed, folder):
        """Claims the run and starts its trainer; False when the run is not ours to train."""
        os.makedirs(folder, exist_ok=True)
        claim, state = self._claim(name, seed, folder)
        if claim is None:
            return False
        try:
            cmd, resumed_at = self._command(name, seed, folder, state)
            env = child_env(self.threads, self.gpus[slot % len(self.gpus)] if self.gpus else None)
            n = _record_attempt(folder, {
                "started": now(), "command": cmd[1:], "machine": self.machine,
                "commit": self.commit, "omp_threads": self.threads,
                "cuda_visible_devices": env.get("CUDA_VISIBLE_DEVICES")})
            if self.stop:  # a signal arrived while the attempt was recorded: not started
                claim.release()
                return False
            header = f"==> {PROG} attempt {n}, started {now()}\n"
            err_path = os.path.join(folder, STDERR_FILE)
            so, _ = _open_log(os.path.join(folder, STDOUT_FILE), header)
            se, offset = _open_log(err_path, header)
            with so, se:
                # Own session: a terminal's Ctrl-C reaches the sweep only, which forwards one
                # SIGINT, so each child stops once, cleanly; runs.parent ends the child when
                # the sweep dies without forwarding anything (kill -9).
                proc = subprocess.Popen(cmd, stdout=so, stderr=se, env=env,
                                        start_new_session=True)
        except BaseException:
            claim.release()
            raise
        self.running[slot] = _Job(name, seed, folder, resumed_at, proc, claim, (err_path, offset))
        return True

    def _finished(self, job, code):
        job.claim.release()
        self.done += 1
        minutes = (time.monotonic() - job.started) / 60
        head = f"{PROG}: [{self.done}/{self.total}] {job.name} seed {job.seed}"
        state, problem = run_status(job.folder)
        records = read_metrics(job.folder)
        if code == 0 and state == "finished" and records:
            s = summarise_run(records)
            again = f", resumed after epoch {job.resumed_at}" if job.resumed_at else ""
            print(f"{head}: best {_pct(s['best_top1'])} (epoch {s['best_epoch']}), final "
                  f"{_pct(s['final_top1'])} after epoch {s['epochs']}, {minutes:.1f} min"
                  f"{again}", flush=True)
            return
        why = _reason(job.err_path, job.err_offset) or "(no output on stderr)"
        if code == 0:
            why = problem or f"exited 0 but {METRICS_FILE} lacks the last epoch"
        self.failed.append((job.name, job.seed))
        print(f"{head}: FAILED, exit code {code}: {why} (log: {job.err_path})", flush=True)

    def _step(self):
        """Starts runs on the free slots, waits a moment, collects the runs that ended."""
        free = [s for s in range(self.jobs) if s not in self.running]
        while self.queue and free and not self.stop:
            _, name, seed, folder, _ = self.queue.pop(0)
            if self._start(free[0], name, seed, folder):
                free.pop(0)
        time.sleep(0.2)
        for slot, job in list(self.running.items()):
            code = job.proc.poll()
            if code is not None:
                del self.running[slot]
                self._finished(job, code)

    def _stop_running(self):
        """SIGINT to every running trainer, SIGKILL to those still there after the grace."""
        for job in self.running.values():
            _signal_group(job.proc, signal.SIGINT)
        deadline = time.monotonic() + STOP_GRACE_S
        for job in self.running.values():
            try:
                job.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(job.proc, signal.SIGKILL)
                job.proc.wait()
            job.claim.release()

    def run(self):
        """Runs the queue to its end, or until a signal arrives (then in self.stop)."""
        try:
            while (self.queue or self.running) and not self.stop:
                self._step()
        finally:
            if self.running:
                self._stop_running()


def _pct(value):
    return f"{value:.2f}%" if value is not None else "not finite"


def _has_run_files(folder):
    return any(os.path.exists(os.path.join(folder, f))
               for f in (CONFIG_FILE, METRICS_FILE, BEST_FILE, CURVES_FILE))


def _plan(grid, out, shard):
    """(all runs, this shard's runs, those still to do with their state, how many finished,
    the damaged ones with their problem). Seed-major order: a sweep stopped half-way has every
    configuration on its first seeds. Each run's state is looked at again, under its claim,
    right before it starts."""
    runs = [(name, seed) for seed in grid.seeds for name in grid.configs]
    mine = [(i, name, seed) for i, (name, seed) in enumerate(runs)
            if i % shard[1] == shard[0] - 1]
    todo, finished, damaged = [], 0, []
    for i, name, seed in mine:
        folder = run_folder(out, name, seed)
        state, problem = run_status(folder, grid.epochs(name))
        if state == "finished":
            finished += 1
        elif state == "damaged":
            damaged.append((name, seed, problem))
        else:
            todo.append((i, name, seed, folder, state))
    return runs, mine, todo, finished, damaged


def _check_out(out, create=True):
    """The sweep folder: one line when it cannot be one (before anything is trained)."""
    if not out:
        raise SweepError("--out must name a folder (got an empty string)")
    if os.path.exists(out) and not os.path.isdir(out):
        raise SweepError(f"--out {out}: exists and is not a folder")
    if not create:
        return
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as exc:
        raise SweepError(f"--out {out}: cannot create the folder ({exc.strerror or exc})")
    if not os.access(out, os.W_OK | os.X_OK):
        raise SweepError(f"--out {out}: the folder is not writable")


def _announce(args, shard, runs, mine, todo, finished, threads, gpus):
    where = f" (shard {shard[0]}/{shard[1]})" if shard[1] > 1 else ""
    print(f"{PROG}: {len(runs)} runs in {args.grid}{where}: {len(mine)} here, {finished} "
          f"finished, {sum(t[4] == 'interrupted' for t in todo)} to resume, "
          f"{sum(t[4] == 'fresh' for t in todo)} to start; {args.jobs} at a time, "
          f"{threads} threads each" + (f", GPUs {','.join(gpus)}" if gpus else ""), flush=True)


def _summary(pool, finished, damaged, out):
    ran = pool.done - len(pool.failed)
    extra = ""
    if pool.skipped:
        extra += f", {len(pool.skipped)} skipped (held elsewhere)"
    if damaged:
        extra += f", {len(damaged)} damaged (not run)"
    print(f"{PROG}: {ran} run(s) done, {len(pool.failed)} failed, {finished + pool.meanwhile} "
          f"were already finished{extra}; summary: {PROG} report {out}", flush=True)
    return 1 if pool.failed or damaged else 0


def cmd_run(args):
    shard = _parse_shard(args.shard) if args.shard is not None else (1, 1)
    if args.jobs < 1:
        raise SweepError(f"--jobs expects a positive integer, got {args.jobs}")
    _check_out(args.out, create=False)
    grid = load_grid(args.grid)
    _, options = train_options()
    out = args.out
    runs, mine, todo, finished, damaged = _plan(grid, out, shard)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    threads = os.environ.get("OMP_NUM_THREADS") or str(max(1, (cores or 1) // args.jobs))
    gpus = _gpu_ids()
    _announce(args, shard, runs, mine, todo, finished, threads, gpus)
    for name, seed, problem in damaged:
        print(f"{PROG}: warning: {name} seed {seed} is damaged, not run: {problem}",
              file=sys.stderr, flush=True)
    if args.dry_run:
        for i, name, seed, folder, state in todo:
            print(f"{state:>11}  {name} seed {seed} -> {folder}")
        return 0
    stop = []
    previous = {s: signal.signal(s, lambda signum, frame: stop.append(signum))
                for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        _check_out(out)
        remove_stale_temps(out)
        write_json(os.path.join(out, GRID_FILE), grid.to_json())
        pool = _Pool(grid, options, args.jobs, threads, gpus, todo, stop)
        if not stop:
            pool.run()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if stop:
        print(f"{PROG}: interrupted; stopped {len(pool.running)} run(s), which resume from their "
              f"{LAST_FILE} when the same command runs again", file=sys.stderr, flush=True)
        return 128 + stop[0]
    return _summary(pool, finished, damaged, out)
