"""ftprop-sweep report: per-configuration statistics over seeds, paired comparisons, claims.

Reads only the files that ftprop-train writes (config.json, metrics.jsonl) plus what ftprop-sweep
adds (DIR/grid.json, sweep-run.json per run), so a sweep folder filled by other means with the
same layout is reported too. Accuracies are test top-1 in %, differences in percentage points.
"""
import datetime
import math
import os

from .sweep import (PROG, SweepError, git_commit, load_grid, machine_info, read_json,
                    read_metrics, run_state, summarise_run, _write_json)


# ---------------------------------------------------------------------------------------------
# Statistics
# ---------------------------------------------------------------------------------------------
def _betacf(a, b, x):
    """Continued fraction of the regularized incomplete beta function (modified Lentz)."""
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 400):
        m2 = 2 * m
        for num in (m * (b - m) * x / ((a + m2 - 1) * (a + m2)),
                    -(a + m) * (a + b + m) * x / ((a + m2) * (a + m2 + 1))):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def _betainc(a, b, x):
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
                     + a * math.log(x) + b * math.log1p(-x))
    # the continued fraction converges fast on the side of the mean a / (a + b)
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_cdf(t, df):
    """Student t distribution function with df degrees of freedom."""
    tail = 0.5 * _betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t > 0 else tail


def t_quantile(p, df):
    """The p-quantile of Student's t with df degrees of freedom (bisection on t_cdf)."""
    if not 0.0 < p < 1.0 or df <= 0:
        raise ValueError(f"t_quantile needs 0 < p < 1 and df > 0, got p={p}, df={df}")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        lo, hi = hi, hi * 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


def mean_std(values):
    """Mean and sample standard deviation (n - 1); the deviation is None for one value."""
    n = len(values)
    if n == 0:
        return None, None
    mean = sum(values) / n
    if n < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))


def paired_difference(a, b, level=0.95):
    """a - b over the seeds both have ({seed: value} each): mean and t confidence interval."""
    seeds = sorted(set(a) & set(b))
    diffs = [a[s] - b[s] for s in seeds]
    mean, sd = mean_std(diffs)
    out = {"seeds": seeds, "n": len(seeds), "mean": mean, "std": sd, "lo": None, "hi": None}
    if sd is not None:
        half = t_quantile(0.5 + level / 2.0, len(seeds) - 1) * sd / math.sqrt(len(seeds))
        out["lo"], out["hi"] = mean - half, mean + half
    return out


def verdict(diff, direction, margin):
    """'holds', 'contradicted' or 'not distinguishable at this scale', from the interval of
    a - b against the claim that a is greater / less / equal (within margin) / not worse
    (by more than margin) than b."""
    lo, hi = diff["lo"], diff["hi"]
    if lo is None:
        return f"not testable ({diff.get('n', 0)} shared seeds; an interval needs 2)"
    if direction == "greater":
        holds, contra = lo > 0, hi < 0
    elif direction == "less":
        holds, contra = hi < 0, lo > 0
    elif direction == "equal":
        holds, contra = -margin < lo and hi < margin, lo > margin or hi < -margin
    else:  # not_worse
        holds, contra = lo > -margin, hi < -margin
    return "holds" if holds else "contradicted" if contra else "not distinguishable at this scale"


def _direction_text(claim):
    m = claim["margin"]
    return {"greater": "a > b", "less": "a < b", "equal": f"|a - b| < {m:g} pp",
            "not_worse": f"a > b - {m:g} pp"}[claim["direction"]]


# ---------------------------------------------------------------------------------------------
# Reading a sweep folder
# ---------------------------------------------------------------------------------------------
def _seed_folders(folder):
    out = []
    try:
        entries = os.listdir(folder)
    except OSError:
        return out
    for entry in entries:
        if entry.startswith("seed-") and os.path.isdir(os.path.join(folder, entry)):
            try:
                out.append((int(entry[5:]), os.path.join(folder, entry)))
            except ValueError:
                continue
    return sorted(out)


def collect(sweep_dir, names):
    """Per configuration: finished runs' summaries and curves, and the unfinished runs."""
    configs = []
    for name in names:
        runs, unfinished = [], []
        for seed, folder in _seed_folders(os.path.join(sweep_dir, name)):
            records = sorted(read_metrics(folder), key=lambda r: r["epoch"])
            config = read_json(os.path.join(folder, "config.json")) or {}
            if run_state(folder) != "finished":
                unfinished.append({"seed": seed, "epochs_done": len(records),
                                   "epochs": config.get("epochs")})
                continue
            attempts = (read_json(os.path.join(folder, "sweep-run.json")) or {}).get("attempts", [])
            runs.append({"seed": seed, "records": records, "config": config,
                         "attempts": attempts, "finished_at": os.path.getmtime(
                             os.path.join(folder, "metrics.jsonl")), **summarise_run(records)})
        configs.append({"name": name, "runs": runs, "unfinished": unfinished})
    return configs


def _config_stats(entry):
    runs = entry["runs"]
    out = {"name": entry["name"], "seeds": [r["seed"] for r in runs], "n": len(runs)}
    for key in ("best_top1", "final_top1", "best_epoch"):
        out[f"{key}_mean"], out[f"{key}_std"] = mean_std([r[key] for r in runs])
    seconds = [rec["seconds"] for r in runs for rec in r["records"]
               if isinstance(rec.get("seconds"), (int, float))]
    out["epoch_seconds_mean"] = mean_std(seconds)[0]
    out["per_seed"] = {str(r["seed"]): {"best_top1": r["best_top1"], "best_epoch": r["best_epoch"],
                                        "final_top1": r["final_top1"]} for r in runs}
    # the curve over the epochs every finished seed has
    epochs = sorted(set.intersection(*[{rec["epoch"] for rec in r["records"]} for r in runs])
                    ) if runs else []
    curve = {"epoch": epochs, "mean": [], "std": []}
    for e in epochs:
        m, s = mean_std([rec["test_top1"] for r in runs for rec in r["records"]
                         if rec["epoch"] == e])
        curve["mean"].append(m)
        curve["std"].append(s if s is not None else 0.0)
    out["test_top1_curve"] = curve
    first = runs[0]["config"] if runs else {}
    out["device"] = (first.get("runtime") or {}).get("device")
    out["backend"] = first.get("backend")
    build = (first.get("runtime") or {}).get("build") or {}
    if out["backend"] == "auto" and "extension_loaded" in build:
        # what "auto" meant: the compiled kernels when the extension loaded
        out["backend"] = "auto (kernel)" if build["extension_loaded"] else "auto (reference)"
    out["unfinished"] = entry["unfinished"]
    return out


# ---------------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------------
def _pm(mean, std, digits=2):
    if mean is None:
        return "-"
    return f"{mean:.{digits}f}" + (f" ± {std:.{digits}f}" if std is not None else "")


def _ci(diff):
    if diff["mean"] is None:
        return "-", "-"
    if diff["lo"] is None:
        return f"{diff['mean']:+.2f}", "n/a"
    return f"{diff['mean']:+.2f}", f"[{diff['lo']:+.2f}, {diff['hi']:+.2f}]"


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
    tmp = f"{path}.tmp{os.getpid()}"
    fig.savefig(tmp, format="png", dpi=100)
    os.replace(tmp, path)


def _provenance(configs):
    machines, commits, builds, starts, ends = [], [], [], [], []
    for entry in configs:
        for r in entry["runs"]:
            for a in r["attempts"]:
                m = a.get("machine")
                if m and m not in machines:
                    machines.append(m)
                if a.get("commit") and a["commit"] not in commits:
                    commits.append(a["commit"])
                if a.get("started"):
                    starts.append(a["started"])
            build = (r["config"].get("runtime") or {}).get("build")
            if build and build not in builds:
                builds.append(build)
            ends.append(r["finished_at"])
    return machines, commits, builds, min(starts, default=None), max(ends, default=None)


def _utc(ts):
    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).isoformat(timespec="seconds")


def markdown(sweep_dir, grid, stats, baseline, comparisons, claims, png_name, configs):
    machines, commits, builds, first, last = _provenance(configs)
    here = machine_info()
    lines = [f"# {PROG} report: {grid.title if grid else os.path.basename(sweep_dir)}", ""]
    lines.append(f"- Sweep folder: `{sweep_dir}`" + (f", grid `{grid.path}`" if grid else ""))
    if machines:
        for m in machines:
            lines.append(f"- Runs on: {m['platform']}, {m['cpu']}, {m['cores']} cores")
    else:
        lines.append("- Runs on: not recorded (no sweep-run.json: the runs were not started by "
                     f"{PROG}); report machine: {here['platform']}, {here['cpu']}, "
                     f"{here['cores']} cores")
    devices = sorted({s["device"] for s in stats if s["device"]})
    backends = sorted({s["backend"] for s in stats if s["backend"]})
    lines.append(f"- Device: {', '.join(devices) or '-'}; "
                 f"ops backend: {', '.join(backends) or '-'}")
    if commits:
        lines.append("- Commit: " + ", ".join(f"`{c}`" for c in commits))
    else:
        lines.append("- Commit: not recorded by the runs; build: " + "; ".join(
            f"ftprop_cuda {b.get('version')} (torch {b.get('torch')}, CUDA kernels "
            f"{b.get('cuda_kernels')})" for b in builds) if builds else "- Commit: not recorded")
    if last:
        lines.append((f"- Runs: first started {first}, " if first else "- Runs: ")
                     + f"last finished {_utc(last)}")
    report_commit = git_commit()
    lines.append(f"- Report made {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC"
                 + (f" at commit `{report_commit}`" if report_commit else ""))
    if grid:
        lines.append(f"- Settings common to all: {_settings(grid.common)}")
    lines += ["", "## Per configuration", "",
              "Test top-1 in %, mean ± standard deviation over the finished seeds.", "",
              "| configuration | settings | seeds | best top-1 | final top-1 | epoch of best "
              "| s / epoch |",
              "|---|---|---|---|---|---|---|"]
    for s in stats:
        settings = _settings(grid.configs.get(s["name"], {})) if grid else "-"
        sec = f"{s['epoch_seconds_mean']:.1f}" if s["epoch_seconds_mean"] is not None else "-"
        lines.append(f"| {s['name']} | {settings} | {s['n']} | "
                     f"{_pm(s['best_top1_mean'], s['best_top1_std'])} | "
                     f"{_pm(s['final_top1_mean'], s['final_top1_std'])} | "
                     f"{_pm(s['best_epoch_mean'], s['best_epoch_std'], 1)} | {sec} |")
    lines += ["", f"## Against the baseline `{baseline}`", "",
              "Paired by seed: configuration minus baseline, in percentage points, with a 95 % "
              "confidence interval (Student t over the shared seeds).", "",
              "| configuration | shared seeds | Δ final | 95 % CI | Δ best | 95 % CI | reading |",
              "|---|---|---|---|---|---|---|"]
    for name, comp in comparisons.items():
        fd, fci = _ci(comp["final"])
        bd, bci = _ci(comp["best"])
        v = verdict(comp["final"], "greater", 0.0)
        reading = {"holds": "higher", "contradicted": "lower"}.get(v, v)
        lines.append(f"| {name} | {comp['final']['n']} | {fd} | {fci} | {bd} | {bci} | "
                     f"final: {reading} |")
    if claims:
        lines += ["", "## Claims", "",
                  "Each claim compares configuration a with configuration b, paired by seed, on "
                  "the stated metric; the verdict reads the 95 % interval of a - b: **holds** "
                  "when the whole interval is on the claimed side, **contradicted** when it is "
                  "wholly on the other side, otherwise **not distinguishable at this scale**.", "",
                  "| claim | a | b | metric | claimed | seeds | Δ (a - b) | 95 % CI | verdict |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for cname, c in claims.items():
            d, ci = _ci(c["diff"])
            lines.append(f"| {cname} | {c['a']} | {c['b']} | {c['metric']} | "
                         f"{_direction_text(c)} | {c['diff']['n']} | {d} | {ci} | "
                         f"**{c['verdict']}** |")
        lines.append("")
        for cname, c in claims.items():
            lines.append(f"- **{cname}**: {c['text']}")
    lines += ["", "## Test top-1 per epoch", "", f"![test top-1 per epoch]({png_name})", "",
              "## Method", "",
              "- best top-1: the highest per-epoch test top-1 of a run (its first epoch); final "
              "top-1: the last epoch's. Standard deviations use n - 1.",
              "- A difference's interval is mean ± t(0.975, n - 1) · sd / √n over the seeds "
              "both configurations finished; with fewer than 2 shared seeds there is none.",
              "- A run counts when metrics.jsonl holds the epoch count of its config.json."]
    missing = [(s["name"], u) for s in stats for u in s["unfinished"]]
    if missing:
        lines.append("- Not finished, left out: " + ", ".join(
            f"{name} seed {u['seed']} ({u['epochs_done']}/{u['epochs'] or '?'} epochs)"
            for name, u in missing))
    return "\n".join(lines) + "\n"


def _settings(table):
    if not table:
        return "-"
    parts = []
    for key, value in table.items():
        if isinstance(value, bool):
            off = key[3:] if key.startswith("no-") else f"no-{key}"
            parts.append(f"`--{key}`" if value else f"`--{off}`")
        elif isinstance(value, list):
            parts.append(f"`--{key} {' '.join(str(v) for v in value)}`")
        else:
            parts.append(f"`--{key} {value}`")
    return " ".join(parts)


def cmd_report(args):
    sweep_dir = args.dir
    if not os.path.isdir(sweep_dir):
        raise SweepError(f"report: {sweep_dir} is not a folder")
    grid_path = args.grid or os.path.join(sweep_dir, "grid.json")
    grid = load_grid(grid_path, validate=False) if os.path.exists(grid_path) or args.grid else None
    names = list(grid.configs) if grid else []
    for entry in sorted(os.listdir(sweep_dir)):
        if entry not in names and _seed_folders(os.path.join(sweep_dir, entry)):
            names.append(entry)
    if not names:
        raise SweepError(f"report: {sweep_dir} holds no NAME/seed-S run folders")
    configs = collect(sweep_dir, names)
    stats = [_config_stats(c) for c in configs]
    baseline = args.baseline or (grid.baseline if grid else None) or names[0]
    if baseline not in names:
        raise SweepError(f"--baseline {baseline!r} is not a configuration of {sweep_dir}; "
                         "accepted: " + ", ".join(names))
    value = {c["name"]: {m: {r["seed"]: r[f"{m}_top1"] for r in c["runs"]}
                         for m in ("final", "best")} for c in configs}
    comparisons = {}
    for s in stats:
        if s["name"] == baseline:
            continue
        comp = {m: paired_difference(value[s["name"]][m], value[baseline][m])
                for m in ("final", "best")}
        comparisons[s["name"]] = comp
        s["vs_baseline"] = {"baseline": baseline, "seeds": comp["final"]["seeds"],
                            **{f"{m}_diff_{k}": comp[m][k] for m in ("final", "best")
                               for k in ("mean", "lo", "hi")}}
    claims = {}
    for cname, claim in (grid.claims if grid else {}).items():
        diff = paired_difference(value.get(claim["a"], {}).get(claim["metric"], {}),
                                 value.get(claim["b"], {}).get(claim["metric"], {}))
        claims[cname] = {**claim, "diff": diff,
                         "verdict": verdict(diff, claim["direction"], claim["margin"])}

    md_path = args.out or os.path.join(sweep_dir, "report.md")
    png_path = os.path.splitext(md_path)[0] + ".png"
    if os.path.dirname(md_path):
        os.makedirs(os.path.dirname(md_path), exist_ok=True)
    plot(png_path, stats, grid.title if grid else os.path.basename(os.path.abspath(sweep_dir)))
    text = markdown(sweep_dir, grid, stats, baseline, comparisons, claims,
                    os.path.basename(png_path), configs)
    tmp = f"{md_path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, md_path)
    _write_json(os.path.join(sweep_dir, "report.json"), stats)
    if claims:
        _write_json(os.path.join(sweep_dir, "report-claims.json"), claims)
    print(f"{PROG}: report of {sum(s['n'] for s in stats)} finished runs in {len(stats)} "
          f"configurations: {md_path}, {png_path}, {os.path.join(sweep_dir, 'report.json')}")
    for cname, c in claims.items():
        d, ci = _ci(c["diff"])
        print(f"  {cname}: {c['a']} - {c['b']} ({c['metric']}) = {d} pp, 95% CI {ci}: "
              f"{c['verdict']}")
    return 0
