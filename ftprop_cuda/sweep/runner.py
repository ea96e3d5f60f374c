"""ftprop-sweep run: every (configuration, seed) run of a grid as one trainer process, a few at
a time; finished runs are skipped and interrupted ones resumed from their last.pt."""
import os
import re
import signal
import subprocess
import sys
import time

from ..runs import write_json
from ..runs.names import ATTEMPTS_FILE, ATTEMPTS_KEY, GRID_FILE, LAST_FILE, METRICS_FILE
from ..runs.names import STDERR_FILE, STDOUT_FILE
from .errors import PROG, SweepError
from .folders import (SOURCE_ROOT, git_commit, machine_info, now, read_json, read_metrics,
                      run_folder, run_state, summarise_run)
from .grid import load_grid, train_options

TRAINER = ["-m", "ftprop_cuda.train"]
STOP_GRACE_S = 60  # how long stopped trainers get to write their last epoch before SIGKILL


def _parse_shard(text):
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text or "")
    if not m or not 1 <= int(m.group(1)) <= int(m.group(2)):
        raise SweepError(f"--shard expects i/n with 1 <= i <= n (e.g. 1/4), got {text!r}")
    return int(m.group(1)), int(m.group(2))


def _gpu_ids():
    """The GPUs the children may use, as CUDA_VISIBLE_DEVICES entries (empty: none)."""
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


def _last_line(path):
    try:
        with open(path, errors="replace") as f:
            lines = [line.strip() for line in f if line.strip()]
    except OSError:
        return ""
    return lines[-1] if lines else ""


def _record_attempt(folder, attempt):
    path = os.path.join(folder, ATTEMPTS_FILE)
    log = read_json(path)
    if not isinstance(log, dict) or not isinstance(log.get(ATTEMPTS_KEY), list):
        log = {ATTEMPTS_KEY: []}
    log[ATTEMPTS_KEY].append(attempt)
    write_json(path, log)


def _signal_group(proc, sig):
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


class _Job:
    """One running trainer: its run, its process, and where its stderr goes."""

    def __init__(self, name, seed, folder, resumed_at, proc, started, err_path):
        self.name, self.seed, self.folder, self.resumed_at = name, seed, folder, resumed_at
        self.proc, self.started, self.err_path = proc, started, err_path


class _Pool:
    """The runs still to do, started `jobs` at a time; stopped on SIGINT or SIGTERM."""

    def __init__(self, grid, options, jobs, threads, gpus, todo):
        self.grid, self.options, self.jobs = grid, options, jobs
        self.threads, self.gpus, self.total = threads, gpus, len(todo)
        self.queue, self.running, self.failed, self.done, self.stop = list(todo), {}, [], 0, []
        self.machine, self.commit = machine_info(), git_commit()

    def _command(self, name, seed, folder, state):
        """The trainer's command line, and the epoch it resumes after (None when fresh)."""
        cmd, resumed_at = [sys.executable, *TRAINER], None
        if state == "interrupted":
            resumed_at = max((r["epoch"] for r in read_metrics(folder)), default=0)
            cmd += ["--resume", os.path.join(folder, LAST_FILE)]
            cmd += self.grid.args(name, self.options, resume=True)
        else:
            cmd += self.grid.args(name, self.options)
        return cmd + ["--seed", str(seed), "--out", folder, "--quiet", "--no-tensorboard"], \
            resumed_at

    def _start(self, slot, name, seed, folder, state):
        os.makedirs(folder, exist_ok=True)
        cmd, resumed_at = self._command(name, seed, folder, state)
        env = child_env(self.threads, self.gpus[slot % len(self.gpus)] if self.gpus else None)
        _record_attempt(folder, {"started": now(), "command": cmd[1:], "machine": self.machine,
                                 "commit": self.commit, "omp_threads": self.threads,
                                 "cuda_visible_devices": env.get("CUDA_VISIBLE_DEVICES")})
        err_path = os.path.join(folder, STDERR_FILE)
        with open(os.path.join(folder, STDOUT_FILE), "w") as so, open(err_path, "w") as se:
            # Own session: a terminal's Ctrl-C reaches the sweep only, which forwards one
            # SIGINT, so each child stops once, cleanly.
            proc = subprocess.Popen(cmd, stdout=so, stderr=se, env=env, start_new_session=True)
        self.running[slot] = _Job(name, seed, folder, resumed_at, proc, time.monotonic(),
                                  err_path)

    def _finished(self, job, code):
        self.done += 1
        minutes = (time.monotonic() - job.started) / 60
        head = f"{PROG}: [{self.done}/{self.total}] {job.name} seed {job.seed}"
        records = read_metrics(job.folder)
        if code == 0 and run_state(job.folder) == "finished" and records:
            s = summarise_run(records)
            again = f", resumed after epoch {job.resumed_at}" if job.resumed_at else ""
            print(f"{head}: best {s['best_top1']:.2f}% (epoch {s['best_epoch']}), final "
                  f"{s['final_top1']:.2f}% after epoch {s['epochs']}, {minutes:.1f} min"
                  f"{again}", flush=True)
            return
        why = _last_line(job.err_path) or "(no output on stderr)"
        if code == 0:
            why = f"exited 0 but {METRICS_FILE} lacks the last epoch"
        self.failed.append((job.name, job.seed))
        print(f"{head}: FAILED, exit code {code}: {why} (log: {job.err_path})", flush=True)

    def _step(self):
        """Starts runs on the free slots, waits a moment, collects the runs that ended."""
        free = [s for s in range(self.jobs) if s not in self.running]
        while self.queue and free and not self.stop:
            _, name, seed, folder, state = self.queue.pop(0)
            self._start(free.pop(0), name, seed, folder, state)
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

    def run(self):
        """Runs the queue to its end, or until a signal arrives (then in self.stop)."""
        def on_signal(signum, frame):
            self.stop.append(signum)
        previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            while (self.queue or self.running) and not self.stop:
                self._step()
        finally:
            if self.running:
                self._stop_running()
            for s, handler in previous.items():
                signal.signal(s, handler)


def _plan(grid, out, shard):
    """(all runs, this shard's runs, those still to do with their state, how many finished).
    Seed-major order: a sweep stopped half-way has every configuration on its first seeds."""
    runs = [(name, seed) for seed in grid.seeds for name in grid.configs]
    mine = [(i, name, seed) for i, (name, seed) in enumerate(runs)
            if i % shard[1] == shard[0] - 1]
    todo, finished = [], 0
    for i, name, seed in mine:
        folder = run_folder(out, name, seed)
        want = grid.flags(name).get("epochs")
        state = run_state(folder, want if isinstance(want, int) else None)
        if state == "finished":
            finished += 1
        else:
            todo.append((i, name, seed, folder, state))
    return runs, mine, todo, finished


def cmd_run(args):
    shard = _parse_shard(args.shard) if args.shard is not None else (1, 1)
    if args.jobs < 1:
        raise SweepError(f"--jobs expects a positive integer, got {args.jobs}")
    grid = load_grid(args.grid)
    _, options = train_options()
    out = args.out
    runs, mine, todo, finished = _plan(grid, out, shard)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    threads = os.environ.get("OMP_NUM_THREADS") or str(max(1, (cores or 1) // args.jobs))
    gpus = _gpu_ids()
    where = f" (shard {shard[0]}/{shard[1]})" if shard[1] > 1 else ""
    print(f"{PROG}: {len(runs)} runs in {args.grid}{where}: {len(mine)} here, {finished} "
          f"finished, {sum(t[4] == 'interrupted' for t in todo)} to resume, "
          f"{sum(t[4] == 'fresh' for t in todo)} to start; {args.jobs} at a time, "
          f"{threads} threads each" + (f", GPUs {','.join(gpus)}" if gpus else ""), flush=True)
    if args.dry_run:
        for i, name, seed, folder, state in todo:
            print(f"{state:>11}  {name} seed {seed} -> {folder}")
        return 0
    os.makedirs(out, exist_ok=True)
    write_json(os.path.join(out, GRID_FILE), grid.to_json())
    if not todo:
        return 0
    pool = _Pool(grid, options, args.jobs, threads, gpus, todo)
    pool.run()
    if pool.stop:
        print(f"{PROG}: interrupted; stopped {len(pool.running)} run(s), which resume from their "
              f"{LAST_FILE} when the same command runs again", file=sys.stderr, flush=True)
        return 128 + pool.stop[0]
    print(f"{PROG}: {pool.done - len(pool.failed)} run(s) done, {len(pool.failed)} failed, "
          f"{finished} were already finished; summary: {PROG} report {out}", flush=True)
    return 1 if pool.failed else 0
