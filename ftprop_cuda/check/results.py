"""One record per self-test check, and how a check runs: an exception is a failure, with its
message, never a crash of the whole self-test.

Statuses:
- "pass": the check ran and held;
- "fail": it ran and did not hold (or raised);
- "not run": it should have run and could not (no compiled kernel for a device that has one
  in a working install): not a pass, the self-test exits 1;
- "skip": it does not apply to this machine (no GPU, a single GPU): said plainly, exit 0.
"""
import dataclasses
import time
import traceback

STATUSES = ("pass", "fail", "not run", "skip")
FAILING = ("fail", "not run")


@dataclasses.dataclass
class Check:
    name: str
    device: str
    status: str
    detail: str = ""
    seconds: float = 0.0

    def line(self):
        """One line: status, device, name and what it found."""
        text = f"{self.status.upper():7s} {self.device:7s} {self.name}"
        return f"{text}: {self.detail}" if self.detail else text

    def as_dict(self):
        return dataclasses.asdict(self)


def run(name, device, fn, *args):
    """Runs fn(*args), which returns None or a text (pass, with that detail) or raises
    CheckFailed (fail, with its message); any other exception is a failure naming it."""
    start = time.perf_counter()
    try:
        detail = fn(*args)
        status = "pass"
    except CheckFailed as exc:
        status, detail = "fail", str(exc)
    except NotRun as exc:
        status, detail = "not run", str(exc)
    except Exception as exc:  # noqa: BLE001 - a self-test reports, it does not crash
        where = traceback.extract_tb(exc.__traceback__)[-1]
        status = "fail"
        detail = (f"{type(exc).__name__}: {exc} (at {where.filename.rsplit('/', 1)[-1]}:"
                  f"{where.lineno})")
    return Check(name, device, status, detail or "", round(time.perf_counter() - start, 3))


class CheckFailed(AssertionError):
    """A check that ran and did not hold; the message says what differed."""


class NotRun(Exception):
    """A check that should have run and could not."""


def expect(problem, what=""):
    """Raises CheckFailed when problem (a message from grids' comparisons) is not None."""
    if problem is not None:
        raise CheckFailed(f"{what}: {problem}" if what else problem)


def summary(checks):
    """(exit code, one line): 0 when nothing failed or was left unrun, else 1."""
    counts = {s: sum(c.status == s for c in checks) for s in STATUSES}
    code = 1 if counts["fail"] or counts["not run"] else 0
    text = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    verdict = "OK" if code == 0 else "FAILED"
    return code, f"{verdict}: {len(checks)} checks ({text})"
