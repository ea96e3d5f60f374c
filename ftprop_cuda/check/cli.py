"""`python -m ftprop_cuda [--check] [--bench] [--json]`: the install's info screen, its
self-test and a short benchmark.

Exit status: 0 (info shown; every check passed), 1 (a check failed or could not run: see
results.py), 2 (bad arguments, one line on stderr).
"""
import argparse
import json
import sys

from . import bench, info, selftest
from .results import summary

USAGE = "python -m ftprop_cuda [--check] [--bench] [--json]"


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        """One line and exit status 2 (argparse prints the usage, too)."""
        self.exit(2, f"python -m ftprop_cuda: {message} (usage: {USAGE})\n")


def parser():
    p = _Parser(prog="python -m ftprop_cuda", usage=USAGE,
                description="What this ftprop_cuda install is, whether it runs right, how fast.")
    p.add_argument("--check", action="store_true",
                   help="self-test on every available device; exit 0 when it passes, 1 if not")
    p.add_argument("--bench", action="store_true",
                   help="a short op benchmark per device against a plain copy")
    p.add_argument("--json", action="store_true",
                   help="one JSON document on stdout instead of text")
    return p


def _print(line, quiet):
    if not quiet:
        print(line, flush=True)


def main(argv=None):
    args = parser().parse_args(argv)
    quiet = args.json
    document = {"info": info.collect()}
    for line in info.format_info(document["info"]):
        _print(line, quiet)
    code = 0
    if args.check:
        _print("", quiet)
        _print("self-test (one line per check):", quiet)
        checks = selftest.run_all(lambda check: _print(check.line(), quiet))
        code, verdict = summary(checks)
        document["checks"] = [c.as_dict() for c in checks]
        document["check_passed"] = code == 0
        document["check_summary"] = verdict
        _print(verdict, quiet)
    if args.bench:
        _print("", quiet)
        _print("benchmark (float32; GB/s = bytes moved / median time):", quiet)
        rows, notes = bench.run_all(selftest.devices())
        document["bench"] = rows
        document["bench_notes"] = notes
        for line in bench.format_rows(rows) + notes:
            _print(line, quiet)
    if quiet:
        json.dump(document, sys.stdout, indent=1, default=str, allow_nan=False)
        sys.stdout.write("\n")
    return code
