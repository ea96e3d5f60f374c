"""ftprop-train's entry point: parse, resolve the config, run, and map every way a run ends to
its exit code (see the package docstring). Torch is imported only once the flags are good."""
import os
import signal
import sys
import types

from ..data import DataError
from ..runs import RunIOError, load_checkpoint
from .cli import build_parser
from .config import CONFIG_TYPES, resolve_config
from .errors import (EXIT_DISTRIBUTED, EXIT_DIVERGED, EXIT_SIGINT, EXIT_SIGTERM, EXIT_USAGE,
                     PROG, Diverged, Terminated, UsageError)
from .outputs import complete_finished, continues_in_place
from .presets import format_presets


def _load_checkpoint(path, need_optimizer):
    try:
        return load_checkpoint(path, CONFIG_TYPES, need_optimizer)
    except RunIOError as exc:
        raise UsageError(str(exc))


def _check_run_args(args):
    """The run flags that cannot go together (torch-free)."""
    if args.resume is not None and args.eval is not None:
        raise UsageError("--resume and --eval cannot be combined")
    if args.overwrite and args.eval is not None:
        raise UsageError("--overwrite cannot be combined with --eval (which writes nothing)")
    if args.overwrite and args.resume is not None and continues_in_place(args):
        raise UsageError(f"--overwrite would remove the run --resume {args.resume} continues: "
                         "give another --out, or leave --overwrite out")


def _on_sigterm(signum, frame):
    raise Terminated()


def _run(argv, say, run):
    """Parses argv, resolves the config and trains or evaluates; run.args and run.d are set as
    soon as they exist, for the error handlers of main."""
    args = run.args = build_parser().parse_args(argv)
    if args.list_presets:
        print(format_presets())
        return 0
    _check_run_args(args)
    ckpt, notes = None, []
    if args.resume is not None or args.eval is not None:
        ckpt = _load_checkpoint(args.resume or args.eval, need_optimizer=bool(args.resume))
    cfg = resolve_config(args, ckpt, notes)  # without a checkpoint: before torch, bad flags fast
    for line in notes:
        say(line)
    if args.resume and ckpt["epoch"] == cfg["epochs"]:
        # a finished run resumed again (a re-run sweep, say): nothing to train; its metrics
        # completed if a kill came right after its final checkpoint
        return complete_finished(cfg, args, ckpt, say)
    from .distributed import init_distributed
    from .session import evaluate, train

    run.d = init_distributed(cfg, args.dist_timeout)
    return (evaluate if args.eval else train)(cfg, args, ckpt, run.d, say)


def _collective_failed(exc, d):
    if d is None or d.world == 1:
        return False
    from .distributed import is_dist_error
    return is_dist_error(exc)


def main(argv=None):
    """Entry point of ftprop-train; returns the exit code (see the package docstring)."""
    run = types.SimpleNamespace(args=None, d=None)
    rank0 = os.environ.get("RANK", "0") == "0"
    say = (lambda msg: print(msg, file=sys.stderr, flush=True)) if rank0 else (lambda msg: None)
    try:
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    except ValueError:  # not the main thread: signals stay as they are
        previous = None
    try:
        return _run(argv, say, run)
    except (UsageError, DataError, RunIOError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr, flush=True)
        return EXIT_USAGE
    except Diverged as exc:
        say(f"{PROG}: error: {exc}")
        return EXIT_DIVERGED
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr, flush=True)
        return EXIT_SIGINT
    except Terminated:
        print(f"{PROG}: terminated (SIGTERM)", file=sys.stderr, flush=True)
        return EXIT_SIGTERM
    except RuntimeError as exc:
        if not _collective_failed(exc, run.d):
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"{PROG}: error: rank {run.d.rank}: a collective with the other processes failed "
              f"(a process stopped answering within --dist-timeout {run.args.dist_timeout:g} s, "
              f"or ended): {first}", file=sys.stderr, flush=True)
        return EXIT_DISTRIBUTED
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        if run.d is not None:
            from .distributed import shut_down
            shut_down(run.d)


def program():
    """The ftprop-train command (its console script and python -m / torchrun -m): main's exit
    code becomes the process's.

    A process of a torchrun group (WORLD_SIZE > 1) ends through os._exit once its output is
    flushed, without the interpreter's shutdown. Gloo's worker threads outlive
    destroy_process_group (the DDP reducer still holds the group), and a worker that releases a
    collective's tensors after that shutdown has begun must take the interpreter lock, is made
    to exit instead, and aborts the process (SIGABRT, "terminate called without an active
    exception"): measured here in about one two-process CPU run in 15, with or without a barrier
    before the exit. main has closed every file of the run and released its lock by then."""
    code = main()
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        world = 1
    if world > 1:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(code)
    sys.exit(code)
