"""ftprop-sweep's command line: the run and report subcommands, and main."""
import argparse
import sys

from ..runs.names import GRID_FILE, REPORT_FILE, REPORT_JSON_FILE
from .errors import PROG, SweepError
from .report import cmd_report
from .runner import cmd_run

DESCRIPTION = "run a grid of ftprop-train configurations over several seeds, then report."


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise SweepError(message)


def _add_run(sub):
    r = sub.add_parser("run", help="run (or continue) every run of a grid", allow_abbrev=False)
    r.add_argument("grid", metavar="GRID", help="grid file (.toml, or .json)")
    r.add_argument("--out", metavar="DIR", help="sweep folder (required)")
    r.add_argument("--jobs", type=int, default=1, metavar="N",
                   help="runs at a time (default 1); each gets cores // N threads "
                        "(OMP_NUM_THREADS, unless it is set already) and, with GPUs, one GPU "
                        "in turn")
    r.add_argument("--shard", metavar="i/n", help="only every n-th run, starting at the i-th "
                                                   "(1-based; e.g. a Slurm array task)")
    r.add_argument("--dry-run", action="store_true",
                   help="list the runs still to do (fresh or interrupted) and exit")


def _add_report(sub):
    s = sub.add_parser("report", allow_abbrev=False,
                       help=f"statistics, claims, plot: Markdown, PNG and {REPORT_JSON_FILE}")
    s.add_argument("dir", metavar="DIR", help="sweep folder")
    s.add_argument("--baseline", metavar="NAME",
                   help="configuration the others are compared with (default: the grid's "
                        "`baseline`, else its first configuration)")
    s.add_argument("--out", metavar="FILE.md",
                   help=f"Markdown file (default: DIR/{REPORT_FILE}); the plot goes beside it "
                        "as FILE.png")
    s.add_argument("--grid", metavar="GRID",
                   help="take configurations and claims from this grid file instead of "
                        f"DIR/{GRID_FILE}")


def build_parser():
    p = _Parser(prog=PROG, description=DESCRIPTION, allow_abbrev=False,
                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", metavar="{run,report}", parser_class=_Parser)
    sub.required = True
    _add_run(sub)
    _add_report(sub)
    return p


def parse_args(argv=None):
    """The arguments; an unknown flag is named before a missing one (SweepError)."""
    args, extra = build_parser().parse_known_args(argv)
    if extra:
        raise SweepError(f"unrecognized arguments: {' '.join(extra)}")
    if args.command == "run" and args.out is None:
        raise SweepError("the following arguments are required: --out")
    return args


def main(argv=None):
    """Entry point of ftprop-sweep; returns the exit code (2 for a bad grid or argument)."""
    try:
        args = parse_args(argv)
        return (cmd_run if args.command == "run" else cmd_report)(args)
    except SweepError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr, flush=True)
        return 2
