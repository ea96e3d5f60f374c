"""ftprop-search: target search (or exhaustive enumeration) on a generated task or few-shot digits.

    ftprop-search parity --n 4 --hidden 4 --seed 0 --seconds 30
    ftprop-search planted --flips 5 --out result.json
    ftprop-search digits --per-class 3 --hidden 16 --seconds 60

Every argument is checked before torch or scipy is imported; a bad one exits with status 2 and
one line on stderr.
"""
import argparse
import sys

PROG = "ftprop-search"
TASK_NAMES = ("parity", "symmetry", "contiguity", "planted", "digits")
INIT_NAMES = ("ftprop", "forward", "random")
FIT_NAMES = ("lp", "perceptron", "lbfgs_hinge", "lbfgs_logistic")
BACKEND_NAMES = ("auto", "kernel", "reference")


class ArgumentError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise ArgumentError(message)


def _count(low):
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer >= {low}; got {text!r}")
        if value < low:
            raise argparse.ArgumentTypeError(f"expected an integer >= {low}; got {value}")
        return value
    return parse


def _seconds(text):
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0; got {text!r}")
    return value


def _noise(text):
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1]; got {text!r}")
    return value


def build_parser():
    p = _Parser(prog=PROG, description="FTPROP with explicit target search for small sign "
                                       "networks (full batch).")
    p.add_argument("task", choices=TASK_NAMES, help="the task")
    p.add_argument("--n", type=_count(2), help="inputs (parity/symmetry/contiguity/planted)")
    p.add_argument("--hidden", type=_count(1), nargs="+", metavar="H",
                   help="hidden widths (default: the task's)")
    p.add_argument("--seed", type=_count(0), default=0)
    p.add_argument("--flips", type=_count(0), default=None,
                   help="planted: start from the teacher's targets with this many bits "
                        "flipped (default: the search's init)")
    p.add_argument("--examples", type=_count(1), default=200, help="planted: examples")
    p.add_argument("--per-class", type=_count(1), default=1, help="digits: examples a class")
    p.add_argument("--steps", type=_count(0), default=None, help="step budget")
    p.add_argument("--lp-calls", type=_count(0), default=None, help="LP-call budget")
    p.add_argument("--seconds", type=_seconds, default=60.0, help="time budget (default 60)")
    p.add_argument("--restarts", type=_count(1), default=1000, help="starts at most")
    p.add_argument("--beam", type=_count(1), default=1)
    p.add_argument("--candidates", type=_count(1), default=3, help="proposals of each kind")
    p.add_argument("--noise", type=_noise, default=0.1)
    p.add_argument("--init", choices=INIT_NAMES, default="ftprop")
    p.add_argument("--fit", choices=FIT_NAMES, default="lp")
    p.add_argument("--backend", choices=BACKEND_NAMES, default="auto")
    p.add_argument("--exhaustive", action="store_true",
                   help="enumerate every target set (examples x hidden units <= 20)")
    p.add_argument("--out", metavar="FILE.json", help="write the whole result as JSON")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bar (default: a tqdm bar when stderr is a terminal)")
    return p


def _check(args):
    if args.task == "planted" and args.flips is not None and args.flips > args.examples * (
            args.hidden[0] if args.hidden else 3):
        raise ArgumentError(f"argument --flips: at most examples x hidden bits; got {args.flips}")
    if args.hidden and len(args.hidden) > 1 and args.task == "planted" and args.flips:
        raise ArgumentError("argument --flips: the planted teacher has one hidden layer")
    if args.out is not None and not args.out.endswith(".json"):
        raise ArgumentError(f"argument --out: expected a .json file name; got {args.out!r}")


def run(args):
    from ..runs.files import write_json
    from .exhaustive import exhaustive
    from .search import search
    from .tasks import make_task

    hidden = args.hidden[0] if args.hidden and len(args.hidden) == 1 else None
    task = make_task(args.task, n=args.n, hidden=hidden, seed=args.seed,
                     flips=args.flips or 0, per_class=args.per_class, m=args.examples)
    widths = tuple(args.hidden) if args.hidden else task.hidden
    if args.exhaustive:
        result = exhaustive(task.X, task.Y, widths, fit=args.fit, backend=args.backend)
    else:
        start = task.teacher_targets if args.flips is not None else None
        result = search(task.X, task.Y, widths, seed=args.seed, steps=args.steps,
                        lp_calls=args.lp_calls, seconds=args.seconds, restarts=args.restarts,
                        beam=args.beam, candidates=args.candidates, noise=args.noise,
                        init=args.init, fit=args.fit, backend=args.backend,
                        start_targets=start,
                        progress=not args.no_progress and sys.stderr.isatty())
    line = (f"{task.name}: feasible={result.feasible} violations={sum(result.violations)} "
            f"loss={result.loss:.6g} stopped={result.stopped} starts={result.starts} "
            f"steps={result.steps} lp_calls={result.lp_calls} seconds={result.seconds:.2f}")
    if task.X_test is not None:
        line += f" test_accuracy={result.accuracy(task.X_test, task.labels_test):.4f}"
    print(line)
    if args.out:
        write_json(args.out, {"task": task.name, **result.to_json()}, strict=True)
    return 0


def main(argv=None):
    try:
        args = build_parser().parse_args(argv)
        _check(args)
    except ArgumentError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    from ..data.records import DataError

    try:
        return run(args)
    except (ValueError, RuntimeError, OSError, DataError) as exc:
        print(f"{PROG}: error: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
