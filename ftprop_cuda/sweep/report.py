"""ftprop-sweep report: per-configuration statistics over seeds, paired comparisons, claims.

Reads only the files that ftprop-train writes (config.json, metrics.jsonl) plus what ftprop-sweep
adds (DIR/grid.json, sweep-run.json per run), so a sweep folder filled by other means with the
same layout is reported too. Accuracies are test top-1 in %, differences in percentage points.
"""
import os
import sys

from ..runs import atomic, write_json, write_text
from ..runs.names import (ATTEMPTS_FILE, ATTEMPTS_KEY, CLAIMS_FILE, CONFIG_FILE, GRID_FILE,
                          METRICS_FILE, REPORT_FILE, REPORT_JSON_FILE)
from .errors import PROG, SweepError
from .folders import read_json, read_records, run_status, seed_folders, summarise_run
from .grid import load_grid
from .markdown import diff_text, markdown
from .stats import mean_std, paired_difference, verdict

METRICS = ("final", "best")


def _dict(value):
    return value if isinstance(value, dict) else {}


def _attempts(folder):
    """The attempts a sweep recorded for a run (dicts only; anything else is ignored)."""
    log = _dict(read_json(os.path.join(folder, ATTEMPTS_FILE))).get(ATTEMPTS_KEY)
    return [a for a in log if isinstance(a, dict)] if isinstance(log, list) else []


def _finished_run(seed, folder, records, config):
    return {"seed": seed, "records": records, "config": config, "attempts": _attempts(folder),
            "finished_at": os.path.getmtime(os.path.join(folder, METRICS_FILE)),
            **summarise_run(records)}


def collect(sweep_dir, names, warn=None):
    """Per configuration: finished runs' summaries and curves, the unfinished runs, and the
    damaged ones (a metrics file with a bad line: left out, warn(message) called)."""
    configs = []
    for name in names:
        runs, unfinished, damaged = [], [], []
        for seed, folder in seed_folders(os.path.join(sweep_dir, name)):
            state, problem = run_status(folder)
            if state == "damaged":
                damaged.append({"seed": seed, "problem": problem})
                if warn:
                    warn(f"{name} seed {seed} left out: {problem}")
                continue
            records = read_records(folder)
            config = _dict(read_json(os.path.join(folder, CONFIG_FILE)))
            if state != "finished":
                unfinished.append({"seed": seed, "epochs_done": len(records),
                                   "epochs": config.get("epochs")})
                continue
            runs.append(_finished_run(seed, folder, records, config))
        configs.append({"name": name, "runs": runs, "unfinished": unfinished,
                        "damaged": damaged})
    return configs


def _curve(runs):
    """Test top-1 per epoch, mean and std over the runs, on the epochs every run has."""
    epochs = sorted(set.intersection(*[{rec["epoch"] for rec in r["records"]} for r in runs])
                    ) if runs else []
    curve = {"epoch": [], "mean": [], "std": []}
    for e in epochs:
        m, s = mean_std(_finite(rec["test_top1"] for r in runs for rec in r["records"]
                                if rec["epoch"] == e))
        if m is not None:
            curve["epoch"].append(e)
            curve["mean"].append(m)
            curve["std"].append(s if s is not None else 0.0)
    return curve


def _finite(values):
    return [v for v in values if v is not None]


def _backend(config):
    backend = config.get("backend")
    backend = backend if isinstance(backend, str) else None
    build = _dict(_dict(config.get("runtime")).get("build"))
    if backend == "auto" and "extension_loaded" in build:
        # what "auto" meant: the compiled kernels when the extension loaded
        return "auto (kernel)" if build["extension_loaded"] else "auto (reference)"
    return backend


def config_stats(entry):
    """One configuration's statistics over its finished seeds (report.json holds a list)."""
    runs = entry["runs"]
    out = {"name": entry["name"], "seeds": [r["seed"] for r in runs], "n": len(runs)}
    for key in ("best_top1", "final_top1", "best_epoch"):
        out[f"{key}_mean"], out[f"{key}_std"] = mean_std(_finite(r[key] for r in runs))
    out["not_finite"] = [{"seed": r["seed"], "metric": m} for r in runs for m in METRICS
                         if r[f"{m}_top1"] is None]
    seconds = _finite(rec.get("seconds") for r in runs for rec in r["records"])
    out["epoch_seconds_mean"] = mean_std(seconds)[0]
    out["per_seed"] = {str(r["seed"]): {"best_top1": r["best_top1"], "best_epoch": r["best_epoch"],
                                        "final_top1": r["final_top1"]} for r in runs}
    out["test_top1_curve"] = _curve(runs)
    first = runs[0]["config"] if runs else {}
    device = _dict(first.get("runtime")).get("device")
    out["device"] = device if isinstance(device, str) else None
    out["backend"] = _backend(first)
    out["unfinished"] = entry["unfinished"]
    out["damaged"] = entry["damaged"]
    return out


def plot(path, stats, title):
    """Test top-1 per epoch: mean over seeds with a +-1 std band, one line per configuration."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator
    import matplotlib

    fig = Figure(figsize=(10, 6))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    colors = matplotlib.colormaps["tab10"].colors
    styles = ("-", "--", ":", "-.")
    for k, s in enumerate(stats):
        c = s["test_top1_curve"]
        if not c["epoch"]:
            continue
        color, style = colors[k % len(colors)], styles[(k // len(colors)) % len(styles)]
        lo = [m - d for m, d in zip(c["mean"], c["std"])]
        hi = [m + d for m, d in zip(c["mean"], c["std"])]
        ax.plot(c["epoch"], c["mean"], style, color=color, marker="o", ms=3,
                label=f"{s['name']} (n={s['n']})")
        ax.fill_between(c["epoch"], lo, hi, color=color, alpha=0.15, linewidth=0)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("test top-1 (%)")
    ax.set_title(f"{title}: test top-1, mean ± std over seeds")
    ax.grid(alpha=0.3)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8)
    fig.tight_layout()
    atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))


def _configuration_names(sweep_dir, grid):
    """The grid's configurations, then any other NAME/seed-S folders, in name order."""
    names = list(grid.configs) if grid else []
    for entry in sorted(os.listdir(sweep_dir)):
        if entry not in names and seed_folders(os.path.join(sweep_dir, entry)):
            names.append(entry)
    if not names:
        raise SweepError(f"report: {sweep_dir} holds no NAME/seed-S run folders")
    return names


def _compare(configs, stats, baseline):
    """Each configuration against the baseline, paired by seed (also noted in its stats)."""
    value = {c["name"]: {m: {r["seed"]: r[f"{m}_top1"] for r in c["runs"]
                             if r[f"{m}_top1"] is not None} for m in METRICS}
             for c in configs}
    comparisons = {}
    for s in stats:
        if s["name"] == baseline:
            continue
        comp = {m: paired_difference(value[s["name"]][m], value[baseline][m]) for m in METRICS}
        comparisons[s["name"]] = comp
        s["vs_baseline"] = {"baseline": baseline, "seeds": comp["final"]["seeds"],
                            **{f"{m}_diff_{k}": comp[m][k] for m in METRICS
                               for k in ("mean", "lo", "hi")}}
    return value, comparisons


def _judge_claims(grid, value):
    claims = {}
    for cname, claim in (grid.claims if grid else {}).items():
        diff = paired_difference(value.get(claim["a"], {}).get(claim["metric"], {}),
                                 value.get(claim["b"], {}).get(claim["metric"], {}))
        claims[cname] = {**claim, "diff": diff,
                         "verdict": verdict(diff, claim["direction"], claim["margin"])}
    return claims


def _write(path, write):
    """write(path), a failure to write reported in one line naming the file."""
    try:
        write(path)
    except OSError as exc:
        raise SweepError(f"report: cannot write {exc.filename or path}: "
                         f"{exc.strerror or exc}") from None


def _outputs(args, sweep_dir):
    """(Markdown path, PNG path), checked before anything is read."""
    if args.out is not None and not args.out:
        raise SweepError("report: --out must name a file (got an empty string)")
    md_path = args.out or os.path.join(sweep_dir, REPORT_FILE)
    if os.path.isdir(md_path):
        raise SweepError(f"report: --out {md_path} is a folder; name a file (FILE.md)")
    folder = os.path.dirname(md_path)
    if folder:
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError as exc:
            raise SweepError(f"report: cannot create {folder}: {exc.strerror or exc}") from None
    return md_path, os.path.splitext(md_path)[0] + ".png"


def _print_claims(claims):
    for cname, c in claims.items():
        d, ci = diff_text(c["diff"])
        print(f"  {cname}: {c['a']} - {c['b']} ({c['metric']}) = {d} pp, 95% CI {ci}: "
              f"{c['verdict']}")


def cmd_report(args):
    sweep_dir = args.dir
    if not os.path.isdir(sweep_dir):
        raise SweepError(f"report: {sweep_dir} is not a folder")
    md_path, png_path = _outputs(args, sweep_dir)
    grid_path = args.grid or os.path.join(sweep_dir, GRID_FILE)
    grid = load_grid(grid_path, validate=False) if os.path.exists(grid_path) or args.grid else None
    names = _configuration_names(sweep_dir, grid)
    configs = collect(sweep_dir, names, lambda msg: print(f"{PROG}: warning: {msg}",
                                                          file=sys.stderr, flush=True))
    stats = [config_stats(c) for c in configs]
    baseline = args.baseline or (grid.baseline if grid else None) or names[0]
    if baseline not in names:
        raise SweepError(f"--baseline {baseline!r} is not a configuration of {sweep_dir}; "
                         "accepted: " + ", ".join(names))
    value, comparisons = _compare(configs, stats, baseline)
    claims = _judge_claims(grid, value)

    _write(png_path, lambda p: plot(p, stats, grid.title if grid else
                                    os.path.basename(os.path.abspath(sweep_dir))))
    _write(md_path, lambda p: write_text(p, markdown(sweep_dir, grid, stats, baseline,
                                                     comparisons, claims,
                                                     os.path.basename(png_path), configs)))
    json_path = os.path.join(sweep_dir, REPORT_JSON_FILE)
    _write(json_path, lambda p: write_json(p, stats, strict=True))
    if claims:
        _write(os.path.join(sweep_dir, CLAIMS_FILE),
               lambda p: write_json(p, claims, strict=True))
    print(f"{PROG}: report of {sum(s['n'] for s in stats)} finished runs in {len(stats)} "
          f"configurations: {md_path}, {png_path}, {json_path}")
    _print_claims(claims)
    return 0
