"""ftprop-sweep: run a grid of ftprop-train configurations over several seeds, then report.

    ftprop-sweep run grids/fashion_mnist_study.toml --out sweeps/fmnist --jobs 2
    ftprop-sweep run grids/paper_cifar10.toml --out sweeps/cifar10 --shard $SLURM_ARRAY_TASK_ID/8
    ftprop-sweep report sweeps/fmnist --out docs/fmnist-results.md

A grid file (TOML, or JSON when it ends in .json) holds `seeds = [...]`, a `[common]` table and
one `[configs.NAME]` table per configuration; keys are ftprop-train's long flags without the
dashes. Every (configuration, seed) run is one `python -m ftprop_cuda.train` process writing
DIR/NAME/seed-S/. Finished runs are skipped and interrupted ones resumed from their last.pt, so
the same command continues a sweep; each run is claimed right before it starts, so sweeps
sharing a folder never train a run twice, and killing a sweep with any signal ends its
trainers. Optional `[claims.NAME]` tables (a, b, direction, text) name the comparisons the
report tests. Bad grid files and arguments end with one line, exit code 2.

    cli.py       main, build_parser (the run and report subcommands)
    grid.py      load_grid, Grid: grid files checked against ftprop-train's parser
    folders.py   run_folder, read_records, run_status, run_state, summarise_run, machine_info,
                 git_commit
    runner.py    cmd_run: the trainers, a few at a time; child_env
    claims.py    Claim (a sweep's lock on a run), wait_for_trainer, remove_stale_temps
    stats.py     mean_std, t_cdf, t_quantile, paired_difference, verdict
    report.py    cmd_report: collect, config_stats, plot
    markdown.py  the report's Markdown
    errors.py    PROG, SweepError

The names below are loaded on first use (PEP 562).
"""
import importlib

# public name -> the submodule that defines it
_LAZY = {
    **dict.fromkeys(("main", "build_parser"), ".cli"),
    **dict.fromkeys(("PROG", "SweepError"), ".errors"),
    **dict.fromkeys(("GRID_KEYS", "RESERVED", "CLAIM_DIRECTIONS", "CLAIM_METRICS",
                     "DEFAULT_MARGIN", "Grid", "load_grid", "train_options", "flag_args"),
                    ".grid"),
    **dict.fromkeys(("run_folder", "run_state", "run_status", "summarise_run", "machine_info",
                     "git_commit", "read_json", "read_metrics", "read_records", "RecordsError",
                     "seed_folders"), ".folders"),
    **dict.fromkeys(("Claim", "wait_for_trainer", "remove_stale_temps"), ".claims"),
    **dict.fromkeys(("cmd_run", "child_env"), ".runner"),
    **dict.fromkeys(("mean_std", "t_cdf", "t_quantile", "paired_difference", "verdict"),
                    ".stats"),
    **dict.fromkeys(("cmd_report", "collect", "config_stats", "plot"), ".report"),
}


def __getattr__(name):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name], __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


__all__ = sorted(_LAZY)
