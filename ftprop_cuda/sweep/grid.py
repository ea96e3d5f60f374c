"""Grid files: reading TOML or JSON, checking every entry against ftprop-train's own parser,
and turning a configuration's table into the trainer's command-line words."""
import argparse
import json
import os
import re

from ..train import PRESETS, UsageError, build_parser
from .errors import SweepError

# "source" is the grid file a sweep folder's grid.json was copied from.
GRID_KEYS = ("title", "seeds", "common", "configs", "claims", "baseline", "source")
# Flags that the sweep sets itself for every run (or that make no sense in a grid).
RESERVED = {
    "out": "the sweep writes each run to DIR/NAME/seed-S",
    "seed": "seeds come from the grid's `seeds` list",
    "resume": "the sweep resumes interrupted runs itself",
    "eval": "a sweep trains",
    "list-presets": "a sweep trains",
    "quiet": "the sweep always passes --quiet",
    "no-tensorboard": "the sweep always passes --no-tensorboard",
    "help": "a sweep trains",
}
CLAIM_DIRECTIONS = ("greater", "less", "equal", "not_worse")
CLAIM_METRICS = ("final", "best")
CLAIM_KEYS = ("a", "b", "direction", "text", "margin", "metric")
DEFAULT_MARGIN = 1.0  # percentage points, for the "equal" and "not_worse" directions
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*\Z")


def _no_duplicate_keys(pairs):
    out = {}
    for key, value in pairs:
        if key in out:
            raise SweepError(f"duplicate key {key!r}")
        out[key] = value
    return out


def _toml():
    try:
        import tomllib
    except ImportError:  # Python 3.10
        try:
            import tomli as tomllib
        except ImportError:
            raise SweepError("reading TOML grid files on Python 3.10 needs the tomli package "
                             "(pip install tomli), or write the grid as JSON")
    return tomllib


def _read_grid_file(path):
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as exc:
        raise SweepError(f"cannot read grid file {path}: {exc.strerror or exc}")
    if path.endswith(".json"):
        try:
            return json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicate_keys)
        except SweepError as exc:
            raise SweepError(f"{path}: {exc}")
        except ValueError as exc:
            raise SweepError(f"{path}: not valid JSON: {exc}")
    tomllib = _toml()
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SweepError(f"{path}: not valid TOML: {exc}")


def train_options():
    """(ftprop-train's parser, its option strings -> argparse actions): the one authority."""
    parser = build_parser()
    return parser, dict(parser._option_string_actions)


def _switch_args(where, key, flag, value, action):
    if not isinstance(value, bool):
        raise SweepError(f"{where}: {key} is a switch and takes true or false, got {value!r}")
    if value:
        return [flag]
    if isinstance(action, argparse.BooleanOptionalAction):
        positive = [s for s in action.option_strings if not s.startswith("--no-")][0]
        negative = [s for s in action.option_strings if s.startswith("--no-")][0]
        return [negative if flag == positive else positive]
    return []


def flag_args(where, key, value, options):
    """The command-line words of one grid entry `key = value`."""
    flag = "--" + key
    action = options.get(flag)
    if action is None:
        raise SweepError(f"{where}: unknown flag {key!r} (not an ftprop-train option; "
                         f"see ftprop-train --help)")
    if action.nargs == 0:
        return _switch_args(where, key, flag, value, action)
    many = action.nargs in ("*", "+") or isinstance(action.nargs, int)
    values = value if isinstance(value, list) else [value]
    if isinstance(value, list) and not many:
        raise SweepError(f"{where}: {key} takes one value, got the list {value!r}")
    words = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (str, int, float)):
            raise SweepError(f"{where}: {key} takes a number or a string, got {v!r}")
        words.append(repr(v) if isinstance(v, float) else str(v))
    return [flag, *words]


def _normalise_table(where, table, options):
    if not isinstance(table, dict):
        raise SweepError(f"{where}: expected a table of flag = value, got {table!r}")
    out = {}
    for key, value in table.items():
        norm = key.replace("_", "-")
        if norm in RESERVED:
            raise SweepError(f"{where}: {key!r} cannot be set in a grid ({RESERVED[norm]})")
        if norm in out:
            raise SweepError(f"{where}: {key!r} is given twice (as - and _ spellings)")
        flag_args(where, norm, value, options)
        out[norm] = value
    return out


def _table_args(table, options, skip=()):
    words = []
    for key, value in table.items():
        if key not in skip:
            words += flag_args(key, key, value, options)
    return words


class Grid:
    """A validated grid: seeds, [common], configurations in file order, claims, baseline."""

    def __init__(self, path, title, seeds, common, configs, claims, baseline):
        self.path, self.title, self.seeds = path, title, seeds
        self.common, self.configs, self.claims, self.baseline = common, configs, claims, baseline

    def flags(self, name):
        """The configuration's settings: [common] overridden by its own table."""
        return {**self.common, **self.configs[name]}

    def epochs(self, name):
        """The epoch count the configuration names, or None when it names none."""
        epochs = self.flags(name).get("epochs")
        return epochs if isinstance(epochs, int) and not isinstance(epochs, bool) else None

    def args(self, name, options, resume=False):
        # A resumed run takes its settings from the checkpoint, which refuses --preset.
        return _table_args(self.flags(name), options, skip=("preset",) if resume else ())

    def to_json(self):
        return {"title": self.title, "source": self.path, "seeds": self.seeds,
                "common": self.common, "configs": self.configs, "claims": self.claims,
                "baseline": self.baseline}


def _check_claim(where, claim, names):
    if not isinstance(claim, dict):
        raise SweepError(f"{where}: expected a table with a, b, direction, text")
    unknown = set(claim) - set(CLAIM_KEYS)
    if unknown:
        raise SweepError(f"{where}: unknown key {sorted(unknown)[0]!r} (accepted: "
                         + ", ".join(CLAIM_KEYS) + ")")
    for key in ("a", "b"):
        if not isinstance(claim.get(key), str) or claim[key] not in names:
            raise SweepError(f"{where}: {key} = {claim.get(key)!r} is not a configuration "
                             f"of this grid")
    if claim.get("direction") not in CLAIM_DIRECTIONS:
        raise SweepError(f"{where}: direction = {claim.get('direction')!r}; accepted: "
                         + ", ".join(CLAIM_DIRECTIONS))
    if not isinstance(claim.get("text"), str) or not claim["text"].strip():
        raise SweepError(f"{where}: text must be a non-empty string stating the claim")
    metric = claim.get("metric", "final")
    if metric not in CLAIM_METRICS:
        raise SweepError(f"{where}: metric = {metric!r}; accepted: final, best")
    margin = claim.get("margin", DEFAULT_MARGIN)
    if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not margin >= 0:
        raise SweepError(f"{where}: margin must be a number >= 0 (percentage points)")
    return {"a": claim["a"], "b": claim["b"], "direction": claim["direction"],
            "text": claim["text"], "metric": metric, "margin": float(margin)}


def _check_claims(path, claims, names):
    if not isinstance(claims, dict):
        raise SweepError(f"{path}: claims: expected [claims.NAME] tables")
    return {cname: _check_claim(f"{path}: claims.{cname}", claim, names)
            for cname, claim in claims.items()}


def _check_seeds(path, seeds):
    if (not isinstance(seeds, list) or not seeds
            or any(isinstance(s, bool) or not isinstance(s, int) for s in seeds)):
        raise SweepError(f"{path}: seeds must be a non-empty list of integers, e.g. "
                         f"seeds = [1, 2, 3, 4, 5] (got {seeds!r})")
    if len(set(seeds)) != len(seeds):
        raise SweepError(f"{path}: seeds lists a seed twice: {seeds!r}")


def _check_config_names(path, configs):
    if not isinstance(configs, dict) or not configs:
        raise SweepError(f"{path}: no configurations: add one [configs.NAME] table per "
                         "configuration")
    seen = {}
    for name in configs:
        if not NAME_RE.match(name):
            raise SweepError(f"{path}: configuration name {name!r} is not a usable folder name "
                             "(letters, digits, . _ + -)")
        if name.lower() in seen:
            raise SweepError(f"{path}: duplicate configuration name {name!r} "
                             f"(same folder as {seen[name.lower()]!r})")
        seen[name.lower()] = name


def _string_entry(path, data, key, default):
    value = data.get(key, default)
    if not isinstance(value, str):
        raise SweepError(f"{path}: {key} must be a string")
    return value


def _validate(path, meta, raw_common, raw_configs):
    """meta's grid with its tables, each checked by ftprop-train's parser (flags, values,
    presets)."""
    parser, options = train_options()
    common = _normalise_table(f"{path}: common", raw_common, options)
    tables = {name: _normalise_table(f"{path}: configs.{name}", table, options)
              for name, table in raw_configs.items()}
    grid = Grid(meta.path, meta.title, meta.seeds, common, tables, meta.claims, meta.baseline)
    for name in tables:
        preset = grid.flags(name).get("preset")
        if preset is not None and preset not in PRESETS:
            raise SweepError(f"{path}: configs.{name}: unknown preset {preset!r}; accepted: "
                             + ", ".join(PRESETS))
        try:
            parser.parse_args(grid.args(name, options) + ["--seed", str(grid.seeds[0])])
        except UsageError as exc:
            raise SweepError(f"{path}: configs.{name}: ftprop-train rejects it: {exc}")
    first = grid.args(next(iter(tables)), options)
    for seed in grid.seeds[1:]:  # every seed passes the trainer's own check of --seed
        try:
            parser.parse_args(first + ["--seed", str(seed)])
        except UsageError as exc:
            raise SweepError(f"{path}: seeds: ftprop-train rejects seed {seed}: {exc}")
    return grid


def load_grid(path, validate=True):
    """Reads and validates a grid file; raises SweepError naming the file, entry and problem."""
    data = _read_grid_file(path)
    if not isinstance(data, dict):
        raise SweepError(f"{path}: expected a table at the top level")
    unknown = set(data) - set(GRID_KEYS)
    if unknown:
        raise SweepError(f"{path}: unknown top-level key {sorted(unknown)[0]!r} (accepted: "
                         + ", ".join(GRID_KEYS) + ")")
    seeds, configs = data.get("seeds"), data.get("configs")
    _check_seeds(path, seeds)
    _check_config_names(path, configs)
    title = _string_entry(path, data, "title", os.path.splitext(os.path.basename(path))[0])
    source = _string_entry(path, data, "source", path)
    baseline = data.get("baseline")
    if baseline is not None and baseline not in configs:
        raise SweepError(f"{path}: baseline = {baseline!r} is not a configuration of this grid")
    claims = _check_claims(path, data.get("claims", {}), configs)
    common = data.get("common", {})
    if not validate:
        return Grid(source, title, seeds, dict(common), {k: dict(v) for k, v in configs.items()},
                    claims, baseline)
    return _validate(path, Grid(source, title, seeds, {}, {}, claims, baseline), common, configs)
