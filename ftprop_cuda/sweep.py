"""ftprop-sweep: run a grid of ftprop-train configurations over several seeds, then report.

    ftprop-sweep run grids/fashion_mnist_study.toml --out sweeps/fmnist --jobs 2
    ftprop-sweep run grids/paper_cifar10.toml --out sweeps/cifar10 --shard $SLURM_ARRAY_TASK_ID/8
    ftprop-sweep report sweeps/fmnist --out docs/fmnist-results.md

A grid file (TOML, or JSON when it ends in .json) holds `seeds = [...]`, a `[common]` table and
one `[configs.NAME]` table per configuration; keys are ftprop-train's long flags without the
dashes. Every (configuration, seed) run is one `python -m ftprop_cuda.train` process writing
DIR/NAME/seed-S/. Finished runs are skipped and interrupted ones resumed from their last.pt, so
the same command continues a sweep. Optional `[claims.NAME]` tables (a, b, direction, text) name
the comparisons the report tests. Bad grid files and arguments end with one line, exit code 2.
"""
import argparse
import datetime
import json
import os
import platform
import re
import signal
import subprocess
import sys
import time

PROG = "ftprop-sweep"
# "source" is the grid file a sweep folder's grid.json was copied from.
GRID_KEYS = ("title", "seeds", "common", "configs", "claims", "baseline", "source")
# Flags that the sweep sets itself for every run (or that make no sense in a grid).
RESERVED = {
    "out": "the sweep writes each run to DIR/NAME/seed-S",
    "seed": "seeds come from the grid's `seeds` list",
    "resume": "the sweep resumes interrupted runs itself",
    "eval": "a sweep trains",
    "list-presets": "a sweep trains",
    "quiet": "the sweep always passes --quiet",
    "no-tensorboard": "the sweep always passes --no-tensorboard",
    "help": "a sweep trains",
}
CLAIM_DIRECTIONS = ("greater", "less", "equal", "not_worse")
CLAIM_METRICS = ("final", "best")
DEFAULT_MARGIN = 1.0  # percentage points, for the "equal" and "not_worse" directions
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*\Z")


class SweepError(Exception):
    """A bad grid file, argument or sweep folder: reported in one line, exit code 2."""


# ---------------------------------------------------------------------------------------------
# Grid files
# ---------------------------------------------------------------------------------------------
def _no_duplicate_keys(pairs):
    out = {}
    for key, value in pairs:
        if key in out:
            raise SweepError(f"duplicate key {key!r}")
        out[key] = value
    return out


def _read_grid_file(path):
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as exc:
        raise SweepError(f"cannot read grid file {path}: {exc.strerror or exc}")
    if path.endswith(".json"):
        try:
            return json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicate_keys)
        except SweepError as exc:
            raise SweepError(f"{path}: {exc}")
        except ValueError as exc:
            raise SweepError(f"{path}: not valid JSON: {exc}")
    try:
        import tomllib
    except ImportError:  # Python 3.10
        try:
            import tomli as tomllib
        except ImportError:
            raise SweepError("reading TOML grid files on Python 3.10 needs the tomli package "
                             "(pip install tomli), or write the grid as JSON")
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SweepError(f"{path}: not valid TOML: {exc}")


def _train_options():
    """ftprop-train's option strings -> argparse actions (its parser is the one authority)."""
    from .train import build_parser
    parser = build_parser()
    return parser, dict(parser._option_string_actions)


def _flag_args(where, key, value, options):
    """The command-line words of one grid entry `key = value`."""
    flag = "--" + key
    action = options.get(flag)
    if action is None:
        raise SweepError(f"{where}: unknown flag {key!r} (not an ftprop-train option; "
                         f"see ftprop-train --help)")
    if action.nargs == 0:
        if not isinstance(value, bool):
            raise SweepError(f"{where}: {key} is a switch and takes true or false, got {value!r}")
        if value:
            return [flag]
        if isinstance(action, argparse.BooleanOptionalAction):
            positive = [s for s in action.option_strings if not s.startswith("--no-")][0]
            negative = [s for s in action.option_strings if s.startswith("--no-")][0]
            return [negative if flag == positive else positive]
        return []
    many = action.nargs in ("*", "+") or isinstance(action.nargs, int)
    values = value if isinstance(value, list) else [value]
    if isinstance(value, list) and not many:
        raise SweepError(f"{where}: {key} takes one value, got the list {value!r}")
    words = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (str, int, float)):
            raise SweepError(f"{where}: {key} takes a number or a string, got {v!r}")
        words.append(repr(v) if isinstance(v, float) else str(v))
    return [flag, *words]


def _normalise_table(where, table, options):
    if not isinstance(table, dict):
        raise SweepError(f"{where}: expected a table of flag = value, got {table!r}")
    out = {}
    for key, value in table.items():
        norm = key.replace("_", "-")
        if norm in RESERVED:
            raise SweepError(f"{where}: {key!r} cannot be set in a grid ({RESERVED[norm]})")
        if norm in out:
            raise SweepError(f"{where}: {key!r} is given twice (as - and _ spellings)")
        _flag_args(where, norm, value, options)
        out[norm] = value
    return out


def _table_args(table, options, skip=()):
    words = []
    for key, value in table.items():
        if key not in skip:
            words += _flag_args(key, key, value, options)
    return words


class Grid:
    """A validated grid: seeds, [common], configurations in file order, claims, baseline."""

    def __init__(self, path, title, seeds, common, configs, claims, baseline):
        self.path, self.title, self.seeds = path, title, seeds
        self.common, self.configs, self.claims, self.baseline = common, configs, claims, baseline
        self._options = None

    def flags(self, name):
        """The configuration's settings: [common] overridden by its own table."""
        return {**self.common, **self.configs[name]}

    def args(self, name, options, resume=False):
        # A resumed run takes its settings from the checkpoint, which refuses --preset.
        return _table_args(self.flags(name), options, skip=("preset",) if resume else ())

    def to_json(self):
        return {"title": self.title, "source": self.path, "seeds": self.seeds,
                "common": self.common, "configs": self.configs, "claims": self.claims,
                "baseline": self.baseline}


def _check_claims(path, claims, names):
    if not isinstance(claims, dict):
        raise SweepError(f"{path}: claims: expected [claims.NAME] tables")
    out = {}
    for cname, claim in claims.items():
        where = f"{path}: claims.{cname}"
        if not isinstance(claim, dict):
            raise SweepError(f"{where}: expected a table with a, b, direction, text")
        unknown = set(claim) - {"a", "b", "direction", "text", "margin", "metric"}
        if unknown:
            raise SweepError(f"{where}: unknown key {sorted(unknown)[0]!r} (accepted: a, b, "
                             "direction, text, margin, metric)")
        for key in ("a", "b"):
            if not isinstance(claim.get(key), str) or claim[key] not in names:
                raise SweepError(f"{where}: {key} = {claim.get(key)!r} is not a configuration "
                                 f"of this grid")
        if claim.get("direction") not in CLAIM_DIRECTIONS:
            raise SweepError(f"{where}: direction = {claim.get('direction')!r}; accepted: "
                             + ", ".join(CLAIM_DIRECTIONS))
        if not isinstance(claim.get("text"), str) or not claim["text"].strip():
            raise SweepError(f"{where}: text must be a non-empty string stating the claim")
        metric = claim.get("metric", "final")
        if metric not in CLAIM_METRICS:
            raise SweepError(f"{where}: metric = {metric!r}; accepted: final, best")
        margin = claim.get("margin", DEFAULT_MARGIN)
        if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not margin >= 0:
            raise SweepError(f"{where}: margin must be a number >= 0 (percentage points)")
        out[cname] = {"a": claim["a"], "b": claim["b"], "direction": claim["direction"],
                      "text": claim["text"], "metric": metric, "margin": float(margin)}
    return out


def load_grid(path, validate=True):
    """Reads and validates a grid file; raises SweepError naming the file, entry and problem."""
    data = _read_grid_file(path)
    if not isinstance(data, dict):
        raise SweepError(f"{path}: expected a table at the top level")
    unknown = set(data) - set(GRID_KEYS)
    if unknown:
        raise SweepError(f"{path}: unknown top-level key {sorted(unknown)[0]!r} (accepted: "
                         + ", ".join(GRID_KEYS) + ")")
    seeds = data.get("seeds")
    if (not isinstance(seeds, list) or not seeds
            or any(isinstance(s, bool) or not isinstance(s, int) for s in seeds)):
        raise SweepError(f"{path}: seeds must be a non-empty list of integers, e.g. "
                         f"seeds = [1, 2, 3, 4, 5] (got {seeds!r})")
    if len(set(seeds)) != len(seeds):
        raise SweepError(f"{path}: seeds lists a seed twice: {seeds!r}")
    configs = data.get("configs")
    if not isinstance(configs, dict) or not configs:
        raise SweepError(f"{path}: no configurations: add one [configs.NAME] table per "
                         "configuration")
    seen = {}
    for name in configs:
        if not NAME_RE.match(name):
            raise SweepError(f"{path}: configuration name {name!r} is not a usable folder name "
                             "(letters, digits, . _ + -)")
        if name.lower() in seen:
            raise SweepError(f"{path}: duplicate configuration name {name!r} "
                             f"(same folder as {seen[name.lower()]!r})")
        seen[name.lower()] = name
    title = data.get("title", os.path.splitext(os.path.basename(path))[0])
    if not isinstance(title, str):
        raise SweepError(f"{path}: title must be a string")
    source = data.get("source", path)
    if not isinstance(source, str):
        raise SweepError(f"{path}: source must be a string")
    baseline = data.get("baseline")
    if baseline is not None and baseline not in configs:
        raise SweepError(f"{path}: baseline = {baseline!r} is not a configuration of this grid")
    claims = _check_claims(path, data.get("claims", {}), configs)
    common_raw = data.get("common", {})
    if not validate:
        return Grid(source, title, seeds, dict(common_raw),
                    {k: dict(v) for k, v in configs.items()}, claims, baseline)
    parser, options = _train_options()
    common = _normalise_table(f"{path}: common", common_raw, options)
    tables = {name: _normalise_table(f"{path}: configs.{name}", table, options)
              for name, table in configs.items()}
    grid = Grid(source, title, seeds, common, tables, claims, baseline)
    from .presets import PRESETS
    from .train import UsageError
    for name in tables:
        preset = grid.flags(name).get("preset")
        if preset is not None and preset not in PRESETS:
            raise SweepError(f"{path}: configs.{name}: unknown preset {preset!r}; accepted: "
                             + ", ".join(PRESETS))
        try:
            parser.parse_args(grid.args(name, options) + ["--seed", str(seeds[0])])
        except UsageError as exc:
            raise SweepError(f"{path}: configs.{name}: ftprop-train rejects it: {exc}")
    return grid


# ---------------------------------------------------------------------------------------------
# Run folders
# ---------------------------------------------------------------------------------------------
def run_folder(out, name, seed):
    return os.path.join(out, name, f"seed-{seed}")


def read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def read_metrics(folder):
    """The epoch records of metrics.jsonl (a torn last line, if any, is ignored)."""
    records = []
    try:
        with open(os.path.join(folder, "metrics.jsonl")) as f:
            for line in f:
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue
                if isinstance(rec, dict) and "epoch" in rec:
                    records.append(rec)
    except OSError:
        pass
    return records


def run_state(folder, want_epochs=None):
    """'finished', 'interrupted' or 'fresh', read from the files ftprop-train writes.

    Finished: metrics.jsonl has the epoch that config.json asks for (and, when the grid names
    its epoch count, that count is not larger). Interrupted: otherwise, when last.pt exists."""
    config = read_json(os.path.join(folder, "config.json"))
    epochs = config.get("epochs") if isinstance(config, dict) else None
    if isinstance(epochs, int):
        done = any(rec.get("epoch") == epochs for rec in read_metrics(folder))
        if done and (want_epochs is None or want_epochs <= epochs):
            return "finished"
    if os.path.isfile(os.path.join(folder, "last.pt")):
        return "interrupted"
    return "fresh"


def summarise_run(records):
    """best/final test top-1 and the (first) epoch of the best, from the epoch records."""
    records = sorted(records, key=lambda r: r["epoch"])
    best = max(records, key=lambda r: r["test_top1"])  # max keeps the first of equal values
    return {"best_top1": best["test_top1"], "best_epoch": best["epoch"],
            "final_top1": records[-1]["test_top1"], "epochs": records[-1]["epoch"]}


def machine_info():
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"platform": platform.platform(), "cpu": cpu, "cores": os.cpu_count(),
            "python": platform.python_version()}


def git_commit():
    """HEAD of the repository holding this package (with '+dirty' for local edits), or None."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        head = subprocess.run(["git", "-C", here, "rev-parse", "HEAD"], capture_output=True,
                              text=True, timeout=20)
        if head.returncode:
            return None
        dirty = subprocess.run(["git", "-C", here, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=20)
        return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def _write_json(path, obj):
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)


def _now():
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


# ---------------------------------------------------------------------------------------------
# ftprop-sweep run
# ---------------------------------------------------------------------------------------------
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
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    if root not in paths and root not in sys.path[1:]:
        paths.insert(0, root)
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


class _Job:
    """One running trainer: its run, its process, and where its stderr goes."""

    def __init__(self, name, seed, folder, resumed_at, proc, started, err_path):
        self.name, self.seed, self.folder, self.resumed_at = name, seed, folder, resumed_at
        self.proc, self.started, self.err_path = proc, started, err_path


def _record_attempt(folder, attempt):
    path = os.path.join(folder, "sweep-run.json")
    log = read_json(path)
    if not isinstance(log, dict) or not isinstance(log.get("attempts"), list):
        log = {"attempts": []}
    log["attempts"].append(attempt)
    _write_json(path, log)


def cmd_run(args):
    shard = _parse_shard(args.shard) if args.shard is not None else (1, 1)
    if args.jobs < 1:
        raise SweepError(f"--jobs expects a positive integer, got {args.jobs}")
    grid = load_grid(args.grid)
    _, options = _train_options()
    out = args.out

    # Seed-major order: a sweep stopped half-way has every configuration on its first seeds.
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
    _write_json(os.path.join(out, "grid.json"), grid.to_json())
    if not todo:
        return 0

    machine, commit = machine_info(), git_commit()
    stop = []

    def on_signal(signum, frame):
        stop.append(signum)
    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    running, failed, done, queue = {}, [], 0, list(todo)
    try:
        while (queue or running) and not stop:
            free = [s for s in range(args.jobs) if s not in running]
            while queue and free and not stop:
                slot = free.pop(0)
                i, name, seed, folder, state = queue.pop(0)
                os.makedirs(folder, exist_ok=True)
                cmd = [sys.executable, "-m", "ftprop_cuda.train"]
                resumed_at = None
                if state == "interrupted":
                    last = os.path.join(folder, "last.pt")
                    resumed_at = max((r["epoch"] for r in read_metrics(folder)), default=0)
                    cmd += ["--resume", last] + grid.args(name, options, resume=True)
                else:
                    cmd += grid.args(name, options)
                cmd += ["--seed", str(seed), "--out", folder, "--quiet", "--no-tensorboard"]
                env = child_env(threads, gpus[slot % len(gpus)] if gpus else None)
                _record_attempt(folder, {"started": _now(), "command": cmd[1:], "machine": machine,
                                         "commit": commit, "omp_threads": threads,
                                         "cuda_visible_devices": env.get("CUDA_VISIBLE_DEVICES")})
                err_path = os.path.join(folder, "sweep-stderr.txt")
                with open(os.path.join(folder, "sweep-stdout.txt"), "w") as so, \
                        open(err_path, "w") as se:
                    # Own session: a terminal's Ctrl-C reaches the sweep only, which forwards
                    # one SIGINT, so each child stops once, cleanly.
                    proc = subprocess.Popen(cmd, stdout=so, stderr=se, env=env,
                                            start_new_session=True)
                running[slot] = _Job(name, seed, folder, resumed_at, proc, time.monotonic(),
                                     err_path)
            time.sleep(0.2)
            for slot, job in list(running.items()):
                code = job.proc.poll()
                if code is None:
                    continue
                del running[slot]
                done += 1
                minutes = (time.monotonic() - job.started) / 60
                head = f"{PROG}: [{done}/{len(todo)}] {job.name} seed {job.seed}"
                records = read_metrics(job.folder)
                if code == 0 and run_state(job.folder) == "finished" and records:
                    s = summarise_run(records)
                    again = f", resumed after epoch {job.resumed_at}" if job.resumed_at else ""
                    print(f"{head}: best {s['best_top1']:.2f}% (epoch {s['best_epoch']}), final "
                          f"{s['final_top1']:.2f}% after epoch {s['epochs']}, {minutes:.1f} min"
                          f"{again}", flush=True)
                else:
                    why = _last_line(job.err_path) or "(no output on stderr)"
                    if code == 0:
                        why = "exited 0 but metrics.jsonl lacks the last epoch"
                    failed.append((job.name, job.seed))
                    print(f"{head}: FAILED, exit code {code}: {why} (log: {job.err_path})",
                          flush=True)
    finally:
        if running:
            for job in running.values():
                _signal_group(job.proc, signal.SIGINT)
            deadline = time.monotonic() + 60
            for job in running.values():
                try:
                    job.proc.wait(max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    _signal_group(job.proc, signal.SIGKILL)
                    job.proc.wait()
        for s, handler in previous.items():
            signal.signal(s, handler)
    if stop:
        print(f"{PROG}: interrupted; stopped {len(running)} run(s), which resume from their "
              f"last.pt when the same command runs again", file=sys.stderr, flush=True)
        return 128 + stop[0]
    print(f"{PROG}: {done - len(failed)} run(s) done, {len(failed)} failed, {finished} were "
          f"already finished; summary: {PROG} report {out}", flush=True)
    return 1 if failed else 0


def _signal_group(proc, sig):
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------
class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise SweepError(message)


def build_parser():
    p = _Parser(prog=PROG, description=__doc__.split("\n")[0].split(": ", 1)[1],
                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", metavar="{run,report}", parser_class=_Parser)
    sub.required = True
    r = sub.add_parser("run", help="run (or continue) every run of a grid")
    r.add_argument("grid", metavar="GRID", help="grid file (.toml, or .json)")
    r.add_argument("--out", required=True, metavar="DIR", help="sweep folder")
    r.add_argument("--jobs", type=int, default=1, metavar="N",
                   help="runs at a time (default 1); each gets cores // N threads "
                        "(OMP_NUM_THREADS, unless it is set already) and, with GPUs, one GPU "
                        "in turn")
    r.add_argument("--shard", metavar="i/n", help="only every n-th run, starting at the i-th "
                                                   "(1-based; e.g. a Slurm array task)")
    r.add_argument("--dry-run", action="store_true",
                   help="list the runs still to do (fresh or interrupted) and exit")
    s = sub.add_parser("report", help="statistics, claims, plot: Markdown, PNG and report.json")
    s.add_argument("dir", metavar="DIR", help="sweep folder")
    s.add_argument("--baseline", metavar="NAME",
                   help="configuration the others are compared with (default: the grid's "
                        "`baseline`, else its first configuration)")
    s.add_argument("--out", metavar="FILE.md", help="Markdown file (default: DIR/report.md); "
                                                    "the plot goes beside it as FILE.png")
    s.add_argument("--grid", metavar="GRID",
                   help="take configurations and claims from this grid file instead of "
                        "DIR/grid.json")
    return p


def main(argv=None):
    """Entry point of ftprop-sweep; returns the exit code (2 for a bad grid or argument)."""
    try:
        args = build_parser().parse_args(argv)
        if args.command == "run":
            return cmd_run(args)
        from .sweep_report import cmd_report
        return cmd_report(args)
    except SweepError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr, flush=True)
        return 2


if __name__ == "__main__":
    # Through the package's module, so that sweep_report raises the same SweepError class.
    from ftprop_cuda.sweep import main as _main
    sys.exit(_main())
