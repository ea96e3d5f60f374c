"""ftprop-train's exit codes and the exceptions that choose them."""
PROG = "ftprop-train"
EXIT_USAGE, EXIT_DIVERGED, EXIT_DISTRIBUTED, EXIT_SIGINT, EXIT_SIGTERM = 2, 3, 4, 130, 143


class UsageError(Exception):
    """A bad argument or an unusable input: reported in one line, exit code 2."""


class Diverged(Exception):
    """The training loss stopped being finite: the run stops, exit code 3."""


class Terminated(BaseException):
    """SIGTERM arrived (Slurm, Kubernetes): handled like SIGINT, exit code 143. A BaseException,
    as KeyboardInterrupt, so that no `except Exception` on the way swallows it."""
