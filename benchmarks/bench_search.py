"""Target search (ftprop_cuda.search) against gradient training of the same sign networks.

    python benchmarks/bench_search.py --quick            # <= 5 minutes on 2 cores
    python benchmarks/bench_search.py                    # the full table (hours on 2 cores)

Tasks: parity-n (all 2^n patterns) at H = n and 2n, a planted teacher-student problem (n = 10,
H = 3, m = 200; the search starts from the teacher's targets with k bits flipped, or from
random weights), CHIR's symmetry and contiguity, few-shot digits (64-16-10; skipped with a note
when scikit-learn, which holds the digits, is missing). Methods: search, and full-batch Adam
through the package's Step units with the rules soft_hinge (ftp_sh), sste and ste.

Matched budgets: on a task every method gets the same wall-time limit per seed and the same
number of restarts (the search: at most that many starts; the gradient methods: that many
independent networks trained side by side in one batched tensor, for the whole time). A seed is
solved when the training set is fitted exactly (every output sign right; for digits every
argmax). median_seconds: the median over seeds of the time to solve, the limit for an unsolved
seed. Writes bench_search.json (a list of rows) and bench_search.md (the table).
"""
import argparse
import datetime
import os
import platform
import statistics
import sys
import time

import numpy as np
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:  # fallback when ftprop_cuda is not installed: the checkout
    sys.path.append(REPO)

import ftprop_cuda  # noqa: E402
from ftprop_cuda.runs.files import write_json, write_text  # noqa: E402
from ftprop_cuda.search import tasks as T  # noqa: E402
from ftprop_cuda.search.fit import fit_lp  # noqa: E402
from ftprop_cuda.search.search import search  # noqa: E402

METHODS = {"ftp_sh": "soft_hinge", "sste": "sste", "ste": "ste"}

# (task maker, seeds, seconds per seed, restarts, search keyword arguments)
QUICK = [
    ("parity4_h4", lambda s: T.parity(4, 4), 10, 10.0, 10, {}),
    ("planted_n10_h3_k5", lambda s: T.planted(seed=s, flips=5), 3, 5.0, 10, {"teacher": True}),
]


def full_plan():
    plan = []
    for n in (3, 4, 5, 6):
        for h in (n, 2 * n):
            plan.append((f"parity{n}_h{h}", lambda s, n=n, h=h: T.parity(n, h), 10,
                         20.0 * 2 ** (n - 3), 10, {}))
    for k in (5, 20, 60):
        plan.append((f"planted_n10_h3_k{k}", lambda s, k=k: T.planted(seed=s, flips=k), 5, 60.0,
                     10, {"teacher": True}))
    plan.append(("planted_n10_h3_random", lambda s: T.planted(seed=s), 5, 60.0, 10, {}))
    plan.append(("symmetry6_h2", lambda s: T.symmetry(6, 2), 10, 30.0, 10, {}))
    plan.append(("contiguity6_h6", lambda s: T.contiguity(6, 6), 10, 30.0, 10, {}))
    for k in (1, 3, 10):
        plan.append((f"digits_{k}shot_h16", lambda s, k=k: T.digits(k, seed=s), 5, 60.0, 10, {}))
    return plan


def gradient_train(task, rule, seed, seconds, restarts, lr=0.05, check_every=10):
    """Full-batch Adam on `restarts` networks at once (hinge loss for one output, cross-entropy
    for classes) until one fits the training set exactly or the time is up. Returns
    (solved, seconds, test accuracy of the best network or None)."""
    t0 = time.perf_counter()
    gen = torch.Generator().manual_seed(int(seed))
    X = torch.from_numpy(task.X).float()
    n, h, k = X.shape[1], task.hidden[0], task.Y.shape[1]
    W1 = (torch.randn(restarts, n, h, generator=gen) / n ** 0.5).requires_grad_(True)
    b1 = torch.zeros(restarts, 1, h, requires_grad=True)
    W2 = (torch.randn(restarts, h, k, generator=gen) / h ** 0.5).requires_grad_(True)
    b2 = torch.zeros(restarts, 1, k, requires_grad=True)
    opt = torch.optim.Adam([W1, b1, W2, b2], lr=lr)
    Y = torch.from_numpy(task.Y).float()
    labels = torch.from_numpy(np.asarray(task.labels)).long() if k > 1 else None

    def forward(x, training=True):
        z1 = torch.matmul(x, W1) + b1
        return torch.matmul(ftprop_cuda.step(z1, rule=rule), W2) + b2

    def correct(z):
        if k == 1:
            return (torch.where(z[..., 0] > 0, 1.0, -1.0) == Y[:, 0]).float().mean(-1)
        return (z.argmax(-1) == labels).float().mean(-1)

    epoch, solved = 0, False
    while True:
        z = forward(X)
        if k == 1:
            loss = torch.clamp(1 - Y * z, min=0).mean(dim=(1, 2)).sum()
        else:
            loss = torch.nn.functional.cross_entropy(
                z.reshape(-1, k), labels.repeat(restarts), reduction="sum") / len(labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        epoch += 1
        if epoch % check_every == 0:
            with torch.no_grad():
                acc = correct(forward(X))
            if bool((acc == 1).any()) or time.perf_counter() - t0 >= seconds:
                solved = bool((acc == 1).any())
                break
    elapsed = time.perf_counter() - t0
    test = None
    if task.X_test is not None:
        with torch.no_grad():
            best = int(acc.argmax())
            zt = forward(torch.from_numpy(task.X_test).float())[best]
            test = float((zt.argmax(-1).numpy() == task.labels_test).mean())
    return solved, elapsed, test


def search_run(task, seed, seconds, restarts, teacher=False):
    t0 = time.perf_counter()
    start = task.teacher_targets if teacher else None
    r = search(task.X, task.Y, task.hidden, seed=seed, seconds=seconds, restarts=restarts,
               steps=None, start_targets=start)
    elapsed = time.perf_counter() - t0
    test = r.accuracy(task.X_test, task.labels_test) if task.X_test is not None else None
    return r.feasible, elapsed, test, r.lp_calls


def run_task(name, make, seeds, seconds, restarts, opts, methods):
    rows = []
    for method in methods:
        solved, times, tests, lps = 0, [], [], []
        for seed in range(seeds):
            task = make(seed)
            if method == "search":
                ok, elapsed, test, lp = search_run(task, seed, seconds, restarts,
                                                   opts.get("teacher", False))
                lps.append(lp)
            else:
                ok, elapsed, test = gradient_train(task, METHODS[method], seed, seconds,
                                                   restarts)
            solved += ok
            times.append(elapsed if ok else seconds)
            if test is not None:
                tests.append(test)
        row = {"task": name, "method": method, "seeds": seeds, "solved": solved,
               "median_seconds": round(statistics.median(times), 3),
               "seconds_limit": seconds, "restarts": restarts}
        if tests:
            row["test_accuracy"] = round(statistics.median(tests), 4)
        if lps:
            row["median_lp_calls"] = int(statistics.median(lps))
        if opts.get("teacher") and method == "search":
            row["start"] = "teacher targets with k bits flipped"
        print(f"{name:24s} {method:7s} solved {solved}/{seeds} median {row['median_seconds']}s"
              + (f" test {row['test_accuracy']}" if tests else ""), flush=True)
        rows.append(row)
    return rows


def _kernel_loaded():
    from ftprop_cuda.ops import extension

    return "cpu" in extension.KERNEL_DEVICES


def environment():
    return {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
            "torch": torch.__version__, "python": platform.python_version(),
            "step_backend": "kernel" if _kernel_loaded() else "reference",
            "load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else None}


def markdown(rows, env, mode, notes):
    lines = [f"bench_search ({mode}), {env['date']}; {env['machine']}; torch {env['torch']}; "
             f"step units: {env['step_backend']}; load average at the start "
             f"{env['load_average']:.1f}", "",
             "| task | method | solved / seeds | median seconds | limit (s) x restarts | "
             "test accuracy |", "|---|---|---|---|---|---|"]
    for r in rows:
        test = f"{r['test_accuracy']:.3f}" if "test_accuracy" in r else ""
        lines.append(f"| {r['task']} | {r['method']} | {r['solved']} / {r['seeds']} | "
                     f"{r['median_seconds']:.2f} | {r['seconds_limit']:g} x {r['restarts']} | "
                     f"{test} |")
    lines += [""] + [f"- {note}" for note in notes]
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="two tasks, <= 5 minutes on 2 cores")
    p.add_argument("--out", default=os.path.join(REPO, "benchmarks", "results"), metavar="DIR",
                   help="where the JSON and table go (default benchmarks/results)")
    p.add_argument("--methods", nargs="+", default=["search", *METHODS],
                   choices=["search", *METHODS])
    p.add_argument("--only", nargs="+", metavar="TASK", help="only these task names")
    p.add_argument("--seeds", type=int, metavar="N", help="seeds per task (default: the plan's)")
    p.add_argument("--time-scale", type=float, default=1.0, metavar="F",
                   help="multiply every per-seed time limit by F (default 1)")
    args = p.parse_args(argv)
    if args.seeds is not None and args.seeds < 1 or not 0 < args.time_scale < float("inf"):
        p.error("--seeds must be >= 1 and --time-scale a finite number > 0")
    torch.set_num_threads(1)
    fit_lp(np.eye(2), np.array([1.0, -1.0]))  # load scipy and HiGHS outside the timings
    plan = QUICK if args.quick else full_plan()
    if args.only:
        plan = [entry for entry in plan if entry[0] in args.only]
    env, rows, notes = environment(), [], []
    for name, make, seeds, seconds, restarts, opts in plan:
        seeds = args.seeds or seeds
        seconds = seconds * args.time_scale
        try:
            make(0)
        except Exception as exc:  # digits without scikit-learn: a note, not a crash
            notes.append(f"{name} skipped: {str(exc).splitlines()[0]}")
            print(notes[-1], flush=True)
            continue
        rows += run_task(name, make, seeds, seconds, restarts, opts, args.methods)
    os.makedirs(args.out, exist_ok=True)
    write_json(os.path.join(args.out, "bench_search.json"), rows, strict=True)
    mode = "quick" if args.quick else "full"
    write_text(os.path.join(args.out, "bench_search.md"), markdown(rows, env, mode, notes))
    write_json(os.path.join(args.out, "bench_search_env.json"), env, strict=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
