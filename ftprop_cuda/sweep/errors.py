"""ftprop-sweep's name and its one error."""
PROG = "ftprop-sweep"


class SweepError(Exception):
    """A bad grid file, argument or sweep folder: reported in one line, exit code 2."""
