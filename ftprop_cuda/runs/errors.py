"""The one error of run-file I/O."""


class RunIOError(Exception):
    """A run folder or checkpoint cannot be used: reported in one line (the trainer exits 2)."""
