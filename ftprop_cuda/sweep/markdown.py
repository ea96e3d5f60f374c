"""The Markdown text of a sweep report, section by section."""
import datetime
import math
import os

from ..runs.names import ATTEMPTS_FILE, CONFIG_FILE, METRICS_FILE
from .errors import PROG
from .folders import git_commit, machine_info
from .stats import verdict


def cell(value):
    """value as the text of one Markdown table cell: a pipe would end the cell, so it is
    escaped (and a line break would end the row)."""
    return " ".join(str(value).split("\n")).replace("|", "\\|")


def row(*cells):
    return "| " + " | ".join(cell(c) for c in cells) + " |"


def _finite(value):
    return isinstance(value, (int, float)) and math.isfinite(value)


def plus_minus(mean, std, digits=2):
    """'mean ± std' ('-' without a finite mean, no ± without a finite deviation)."""
    if not _finite(mean):
        return "-"
    return f"{mean:.{digits}f}" + (f" ± {std:.{digits}f}" if _finite(std) else "")


def diff_text(diff):
    """(signed mean, '[lo, hi]') of a paired difference, for tables and the console."""
    if not _finite(diff["mean"]):
        return "-", "-"
    if not (_finite(diff["lo"]) and _finite(diff["hi"])):
        return f"{diff['mean']:+.2f}", "n/a"
    return f"{diff['mean']:+.2f}", f"[{diff['lo']:+.2f}, {diff['hi']:+.2f}]"


def _direction_text(claim):
    m = claim["margin"]
    return {"greater": "a > b", "less": "a < b", "equal": f"|a - b| < {m:g} pp",
            "not_worse": f"a > b - {m:g} pp"}[claim["direction"]]


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


def _provenance(configs):
    machines, commits, builds, starts, ends = [], [], [], [], []
    for entry in configs:
        for r in entry["runs"]:
            for a in r["attempts"]:
                m = a.get("machine")
                if isinstance(m, dict) and m not in machines:
                    machines.append(m)
                if isinstance(a.get("commit"), str) and a["commit"] not in commits:
                    commits.append(a["commit"])
                if isinstance(a.get("started"), str):
                    starts.append(a["started"])
            runtime = r["config"].get("runtime")
            build = runtime.get("build") if isinstance(runtime, dict) else None
            if isinstance(build, dict) and build and build not in builds:
                builds.append(build)
            ends.append(r["finished_at"])
    return machines, commits, builds, min(starts, default=None), max(ends, default=None)


def _utc(ts):
    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).isoformat(timespec="seconds")


def _machine_lines(machines):
    if machines:
        return [f"- Runs on: {m.get('platform')}, {m.get('cpu')}, {m.get('cores')} cores"
                for m in machines]
    here = machine_info()
    return [f"- Runs on: not recorded (no {ATTEMPTS_FILE}: the runs were not started by "
            f"{PROG}); report machine: {here['platform']}, {here['cpu']}, {here['cores']} cores"]


def _commit_line(commits, builds):
    if commits:
        return "- Commit: " + ", ".join(f"`{c}`" for c in commits)
    if builds:
        return "- Commit: not recorded by the runs; build: " + "; ".join(
            f"ftprop_cuda {b.get('version')} (torch {b.get('torch')}, CUDA kernels "
            f"{b.get('cuda_kernels')})" for b in builds)
    return "- Commit: not recorded"


def _header(sweep_dir, grid, stats, configs):
    machines, commits, builds, first, last = _provenance(configs)
    lines = [f"# {PROG} report: {grid.title if grid else os.path.basename(sweep_dir)}", ""]
    lines.append(f"- Sweep folder: `{sweep_dir}`" + (f", grid `{grid.path}`" if grid else ""))
    lines += _machine_lines(machines)
    devices = sorted({s["device"] for s in stats if s["device"]})
    backends = sorted({s["backend"] for s in stats if s["backend"]})
    lines.append(f"- Device: {', '.join(devices) or '-'}; "
                 f"ops backend: {', '.join(backends) or '-'}")
    lines.append(_commit_line(commits, builds))
    if last:
        lines.append((f"- Runs: first started {first}, " if first else "- Runs: ")
                     + f"last finished {_utc(last)}")
    report_commit = git_commit()
    lines.append(f"- Report made {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC"
                 + (f" at commit `{report_commit}`" if report_commit else ""))
    if grid:
        lines.append(f"- Settings common to all: {_settings(grid.common)}")
    return lines


def _per_configuration(grid, stats):
    lines = ["", "## Per configuration", "",
             "Test top-1 in %, mean ± standard deviation over the finished seeds.", "",
             "| configuration | settings | seeds | best top-1 | final top-1 | epoch of best "
             "| s / epoch |",
             "|---|---|---|---|---|---|---|"]
    for s in stats:
        settings = _settings(grid.configs.get(s["name"], {})) if grid else "-"
        sec = f"{s['epoch_seconds_mean']:.1f}" if s["epoch_seconds_mean"] is not None else "-"
        lines.append(row(s["name"], settings, s["n"],
                         plus_minus(s["best_top1_mean"], s["best_top1_std"]),
                         plus_minus(s["final_top1_mean"], s["final_top1_std"]),
                         plus_minus(s["best_epoch_mean"], s["best_epoch_std"], 1), sec))
    return lines


def _against_baseline(baseline, comparisons):
    lines = ["", f"## Against the baseline `{baseline}`", "",
             "Paired by seed: configuration minus baseline, in percentage points, with a 95 % "
             "confidence interval (Student t over the shared seeds).", "",
             "| configuration | shared seeds | Δ final | 95 % CI | Δ best | 95 % CI | reading |",
             "|---|---|---|---|---|---|---|"]
    for name, comp in comparisons.items():
        fd, fci = diff_text(comp["final"])
        bd, bci = diff_text(comp["best"])
        v = verdict(comp["final"], "greater", 0.0)
        reading = {"holds": "higher", "contradicted": "lower"}.get(v, v)
        lines.append(row(name, comp["final"]["n"], fd, fci, bd, bci, f"final: {reading}"))
    return lines


def _claims(claims):
    if not claims:
        return []
    lines = ["", "## Claims", "",
             "Each claim compares configuration a with configuration b, paired by seed, on "
             "the stated metric; the verdict reads the 95 % interval of a - b: **holds** "
             "when the whole interval is on the claimed side, **contradicted** when it is "
             "wholly on the other side, otherwise **not distinguishable at this scale**.", "",
             "| claim | a | b | metric | claimed | seeds | Δ (a - b) | 95 % CI | verdict |",
             "|---|---|---|---|---|---|---|---|---|"]
    for cname, c in claims.items():
        d, ci = diff_text(c["diff"])
        lines.append(row(cname, c["a"], c["b"], c["metric"], _direction_text(c), c["diff"]["n"],
                         d, ci, f"**{c['verdict']}**"))
    lines.append("")
    for cname, c in claims.items():
        lines.append(f"- **{cname}**: {c['text']}")
    return lines


def _method(stats, png_name):
    lines = ["", "## Test top-1 per epoch", "", f"![test top-1 per epoch]({png_name})", "",
             "## Method", "",
             "- best top-1: the highest per-epoch test top-1 of a run (its first epoch); final "
             "top-1: the last epoch's. Standard deviations use n - 1.",
             "- A difference's interval is mean ± t(0.975, n - 1) · sd / √n over the seeds "
             "both configurations finished; with fewer than 2 shared seeds there is none.",
             f"- A run counts when {METRICS_FILE} holds the epoch count of its {CONFIG_FILE}."]
    missing = [(s["name"], u) for s in stats for u in s["unfinished"]]
    if missing:
        lines.append("- Not finished, left out: " + ", ".join(
            f"{name} seed {u['seed']} ({u['epochs_done']}/{u['epochs'] or '?'} epochs)"
            for name, u in missing))
    damaged = [(s["name"], d) for s in stats for d in s["damaged"]]
    if damaged:
        lines.append("- Damaged, left out: " + "; ".join(
            f"{name} seed {d['seed']} ({d['problem']})" for name, d in damaged))
    not_finite = [(s["name"], v) for s in stats for v in s["not_finite"]]
    if not_finite:
        lines.append("- Not a finite number, left out of that statistic: " + ", ".join(
            f"{name} seed {v['seed']} ({v['metric']} top-1)" for name, v in not_finite))
    return lines


def markdown(sweep_dir, grid, stats, baseline, comparisons, claims, png_name, configs):
    """The whole report: provenance, per-configuration table, comparisons with the baseline,
    claims and their verdicts, the plot, and how the numbers were made."""
    lines = (_header(sweep_dir, grid, stats, configs) + _per_configuration(grid, stats)
             + _against_baseline(baseline, comparisons) + _claims(claims)
             + _method(stats, png_name))
    return "\n".join(lines) + "\n"
