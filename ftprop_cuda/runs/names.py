"""The names of the files in a run folder and in a sweep folder, written here once.

A run folder (ftprop-train --out): CONFIG_FILE, METRICS_FILE, LAST_FILE, BEST_FILE, CURVES_FILE
and the LOCK_FILE held while the run lives; a run without --out gets a fresh folder under
DEFAULT_PARENT. ftprop-sweep adds ATTEMPTS_FILE (its list under ATTEMPTS_KEY) and the trainer's
STDOUT_FILE / STDERR_FILE to each run folder, SEED_PREFIX names the run folders of a
configuration, and GRID_FILE, REPORT_FILE, REPORT_JSON_FILE, CLAIMS_FILE sit in the sweep folder.
RUN_FILES make a folder hold a run; ATOMIC_FILES are the names written through files.atomic.
"""
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
LAST_FILE = "last.pt"
BEST_FILE = "best.pt"
CURVES_FILE = "curves.png"
LOCK_FILE = ".lock"
DEFAULT_PARENT = "runs"

ATTEMPTS_FILE = "sweep-run.json"
ATTEMPTS_KEY = "attempts"
STDOUT_FILE = "sweep-stdout.txt"
STDERR_FILE = "sweep-stderr.txt"
SEED_PREFIX = "seed-"
GRID_FILE = "grid.json"
REPORT_FILE = "report.md"
REPORT_JSON_FILE = "report.json"
CLAIMS_FILE = "report-claims.json"

# The files that make a folder hold a run (besides TensorBoard's events files): only the run
# holding the folder's lock writes them.
RUN_FILES = (CONFIG_FILE, METRICS_FILE, LAST_FILE, BEST_FILE, CURVES_FILE)
TENSORBOARD_PREFIX = "events.out.tfevents."
# Every file name above that is written atomically (whose NAME.tmp<pid> may be left by a kill).
ATOMIC_FILES = RUN_FILES + (ATTEMPTS_FILE, GRID_FILE, REPORT_FILE, REPORT_JSON_FILE, CLAIMS_FILE)
