"""Benchmark of the step and staircase ops: four variants on the same inputs in one run.

    python benchmarks/bench_ops.py                       # default config for the device
    python benchmarks/bench_ops.py --device cuda --sizes 16-26 --dtypes fp32,bf16,fp16
    THP_MEM_ALLOC_ENABLE=1 python benchmarks/bench_ops.py --markdown docs/performance.md
    python benchmarks/bench_ops.py --smoke --out /tmp/b  # tiny sizes, for CI

Variants: the reference in eager mode, torch.compile(reference) (the real competitor for
elementwise work), the custom-op kernel, and the kernel inside a compiled graph. Every variant is
first checked against the eager reference on the very inputs it is timed on (kernel forward
bit-exact, backward within the tests' tolerances; the compiled reference within looser ones); a
failing variant is reported and not timed, and the script exits nonzero.

Passes, timed as a user sees them through autograd on z.requires_grad_():
  fwd     y = op(z)                                 (builds the graph, writes the saved state)
  bwd     torch.autograd.grad(y, z, g) on a fresh graph y = op(z) built untimed before
  fwdbwd  y = op(z); torch.autograd.grad(y, z, g)   (no .grad accumulation)

Bytes that must move, per element (e = element size, S = saved-for-backward bytes per element,
measured with saved_tensors_hooks; S_new = the part that aliases neither z nor y):
  fwd = 2e + S_new (read z, write y and the new saved state); bwd = 2e + S (read g and the saved
  state, write dz); fwdbwd = the sum. Effective bandwidth = bytes / median time, also given as a
  percentage of two copies measured in the same run: into an existing buffer (out.copy_(x)) and
  into a fresh output (x.clone()), whose page faults dominate on some CPUs. The headline also
  divides the kernel's forward+backward by two fresh-output copies and by two fresh fills
  (torch.empty_like(x).fill_(1), which read nothing): forward+backward writes two fresh outputs.
"""
import argparse
import math
import os
import sys
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

import torch  # noqa: E402

import ftprop_cuda  # noqa: E402
from ftprop_cuda.ops import extension  # noqa: E402

# the op variants (lean memory is a model-level mode: bench_train's)
VARIANTS = tuple(v for v in common.VARIANTS if "lean" not in v)
VARIANT_LABEL = common.VARIANT_LABEL
PASSES = ("fwd", "bwd", "fwdbwd")
PASS_LABEL = {"fwd": "forward", "bwd": "backward", "fwdbwd": "forward+backward"}
OPS = ("step", "staircase")

DEFAULTS = {
    # 2 slow cores: a full default run stays within about 10 minutes.
    "cpu": dict(sizes="16-24:2", dtypes="fp32", rules="soft_hinge,sste,saturated_hinge"),
    "cuda": dict(sizes="16-26:2", dtypes="fp32,bf16,fp16", rules="soft_hinge,sste,saturated_hinge"),
    "smoke": dict(sizes="12", dtypes="fp32", rules="soft_hinge"),
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--ops", default=",".join(OPS), help="comma list of step,staircase")
    p.add_argument("--rules", default=None, help="comma list (default soft_hinge,sste,"
                   "saturated_hinge); step takes any of STEP_RULES, staircase STAIRCASE_RULES")
    p.add_argument("--dtypes", default=None, help="comma list of fp32,bf16,fp16,fp64 "
                   "(default: fp32 on CPU, fp32,bf16,fp16 on CUDA)")
    p.add_argument("--sizes", default=None, help="log2 sizes or ranges, e.g. 16,20,24 or 16-26 "
                   "or 16-26:2 (default 16-24:2 on CPU, 16-26:2 on CUDA); numbers > 40 are "
                   "element counts")
    p.add_argument("--passes", default=",".join(PASSES))
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--steps", type=int, default=3,
                   help="staircase steps K (default 3, a 2-bit quantized ReLU; its saturated_hinge "
                   "saves a 4-bit threshold count: K + 2 codes with NaN)")
    p.add_argument("--min-time", type=float, default=None,
                   help="CPU: seconds of timed calls per measurement (default 0.5, smoke 0.05)")
    p.add_argument("--dynamic", choices=("size", "true", "false"), default="size",
                   help="size (default): torch.compile(dynamic=None) with the input's length "
                   "marked dynamic, so one graph per (op, rule, dtype) serves every size; "
                   "true/false: torch.compile(dynamic=True/False) (false recompiles per size)")
    p.add_argument("--smoke", action="store_true", help="tiny sizes, one rule: for CI")
    p.add_argument("--out", default=os.path.join(common.REPO, "benchmarks", "results"),
                   help="directory for the JSON, Markdown and PNG outputs")
    p.add_argument("--tag", default=None, help="suffix of the output file names "
                   "(default: the device, plus 'thp' when THP_MEM_ALLOC_ENABLE=1)")
    p.add_argument("--markdown", default=None, metavar="PATH",
                   help="also write this run's section into PATH (e.g. docs/performance.md), "
                   "replacing the section of the same device/THP setting; the plot is copied "
                   "next to it under img/")
    p.add_argument("--no-plot", action="store_true")
    p.add_argument("--from-json", default=None, metavar="PATH",
                   help="measure nothing: rewrite the Markdown/PNG (and --markdown section) of "
                   "an earlier run from its JSON")
    args = p.parse_args(argv)

    args.device = torch.device(args.device)
    dev_type = args.device.type
    if dev_type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is visible")
    defaults = DEFAULTS["smoke" if args.smoke else dev_type if dev_type in DEFAULTS else "cpu"]
    args.ops = common.parse_list(args.ops)
    args.rules = common.parse_list(args.rules or defaults["rules"])
    args.dtypes = common.parse_dtypes(args.dtypes or defaults["dtypes"])
    args.sizes = common.parse_sizes(args.sizes or defaults["sizes"])
    args.passes = common.parse_list(args.passes)
    args.variants = common.parse_list(args.variants)
    if args.min_time is None:
        args.min_time = 0.05 if args.smoke else 0.5
    for name, values, accepted in (("ops", args.ops, OPS), ("passes", args.passes, PASSES),
                                   ("variants", args.variants, VARIANTS),
                                   ("rules", args.rules, ftprop_cuda.STEP_RULES)):
        bad = [v for v in values if v not in accepted]
        if bad:
            raise SystemExit(f"--{name}: unknown {bad}; accepted: {', '.join(accepted)}")
    if args.tag is None:
        thp = os.environ.get("THP_MEM_ALLOC_ENABLE") == "1"
        args.tag = dev_type + ("_thp" if thp else "") + ("_smoke" if args.smoke else "")
    return args


# ---------------------------------------------------------------------------------------------
# The four variants
# ---------------------------------------------------------------------------------------------
class Variants:
    """Builds and caches the callables z -> y of each (op, rule, dtype, variant)."""

    def __init__(self, device, steps, dynamic):
        self.device, self.steps, self.dynamic = device, steps, dynamic
        self.cache = {}
        self.kernel_available = device.type in extension.KERNEL_DEVICES

    def unavailable(self, variant):
        if variant.startswith("kernel") and not self.kernel_available:
            return (f"no ftprop_cuda kernel for device {self.device.type!r} "
                    f"(extension loaded: {extension.LOADED}, error: {extension.EXT_ERROR})")
        return None

    def _eager(self, op, rule, backend):
        steps = self.steps
        if op == "step":
            def run(z):
                return ftprop_cuda.step(z, rule=rule, backend=backend)
        else:
            def run(z):
                return ftprop_cuda.staircase(z, steps=steps, rule=rule, backend=backend)
        return run

    def get(self, op, rule, dtype, variant):
        key = (op, rule, dtype, variant)
        if key not in self.cache:
            backend = "reference" if variant.startswith("ref") else "kernel"
            fn = self._eager(op, rule, backend)
            if variant.endswith("compiled"):
                # own code object per configuration: separate Dynamo caches, no guard chains
                name = f"{op}_{rule}_{common.DTYPE_SHORT[dtype]}_{variant}"
                fn = torch.compile(common.fresh_function(fn, name), dynamic=self.dynamic,
                                   fullgraph=True)
            self.cache[key] = fn
        return self.cache[key]


def make_inputs(op, n, dtype, device, seed=0):
    """z spread across the interesting range of the op (|z| <= 1 for step, [lo, hi] for the
    staircase, and outside), g standard normal; both made in float32 and then cast."""
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(n, generator=gen)
    if op == "staircase":
        z = 0.5 + 0.6 * z
    g = torch.randn(n, generator=gen)
    return z.to(device=device, dtype=dtype), g.to(device=device, dtype=dtype)


def check_variant(variant, y, dz, y_ref, dz_ref):
    """None if the variant agrees with the eager reference, else a message."""
    dtype = y_ref.dtype
    tol = dict(common.BACKWARD_TOL[dtype])
    if variant == "ref_compiled":
        tol = {k: v * common.COMPILED_TOL_FACTOR for k, v in tol.items()}
    problems = []
    if y.shape != y_ref.shape or y.dtype != y_ref.dtype:
        return f"forward returned {tuple(y.shape)} {y.dtype}, expected {tuple(y_ref.shape)} {dtype}"
    if variant == "ref_compiled":
        try:
            torch.testing.assert_close(y, y_ref, equal_nan=True, **tol)
        except AssertionError as exc:
            problems.append(f"forward not close: {str(exc).splitlines()[0:3]}")
    elif not torch.equal(y, y_ref):
        bad = int((y != y_ref).sum())
        problems.append(f"forward not bit-exact: {bad} of {y.numel()} elements differ")
    try:
        torch.testing.assert_close(dz, dz_ref, equal_nan=True, **tol)
    except AssertionError as exc:
        problems.append("backward not close: " + " ".join(str(exc).split("\n")[0:4]))
    return "; ".join(problems) or None


class Copies:
    """The yardsticks, measured once per (dtype, size) in this run."""

    def __init__(self, device, min_time):
        self.device, self.min_time, self.rows = device, min_time, {}

    def get(self, n, dtype):
        key = (n, dtype)
        if key not in self.rows:
            x = torch.randn(n, device=self.device).to(dtype)
            out = torch.empty_like(x)
            row = {"n": n, "dtype": common.DTYPE_SHORT[dtype], "bytes": 2 * n * x.element_size()}
            for name, fn in (("copy", lambda: out.copy_(x)), ("fresh_copy", lambda: x.clone())):
                t = common.time_fn(fn, self.device, self.min_time)["median_s"]
                row[f"{name}_s"] = t
                row[f"{name}_gbps"] = row["bytes"] / t / 1e9
            # A fresh output written without reading anything: the floor is two of these.
            row["fresh_fill_s"] = common.time_fn(
                lambda: torch.empty_like(x).fill_(1), self.device, self.min_time)["median_s"]
            self.rows[key] = row
            del x, out
        return self.rows[key]


def bench_config(args, variants, copies, op, rule, dtype, n, failures, log):
    """All variants and passes of one (op, rule, dtype, n); returns result rows."""
    rows = []
    z0, g = make_inputs(op, n, dtype, args.device)
    z = z0.detach().requires_grad_()
    if args.dynamic == "size":
        torch._dynamo.maybe_mark_dynamic(z, 0)
    esize = z.element_size()
    copy = copies.get(n, dtype)

    ref = variants.get(op, rule, dtype, "ref")
    y_ref = ref(z)
    (dz_ref,) = torch.autograd.grad(y_ref, z, g)
    y_ref = y_ref.detach()

    for variant in args.variants:
        base = {"op": op, "rule": rule, "dtype": common.DTYPE_SHORT[dtype], "n": n,
                "variant": variant}
        if op == "staircase":
            base["steps"] = args.steps
        why = variants.unavailable(variant)
        if why is not None:
            failures.append(f"{op}/{rule}/{base['dtype']}/{variant}: unavailable: {why}")
            rows += [dict(base, **{"pass": p}, status="unavailable: " + why) for p in args.passes]
            continue
        fn = variants.get(op, rule, dtype, variant)
        try:
            t0 = time.perf_counter()
            y = fn(z)
            (dz,) = torch.autograd.grad(y, z, g)
            common.synchronize(args.device)
            first_call_s = time.perf_counter() - t0  # includes compilation for compiled variants
            problem = check_variant(variant, y.detach(), dz, y_ref, dz_ref)
            del y, dz
        except Exception as exc:  # a crash is a failed check, not a reason to stop the sweep
            problem = f"raised {type(exc).__name__}: {exc}"
            traceback.print_exc()
            first_call_s = None
        if problem is not None:
            msg = f"CHECK FAILED {op}/{rule}/{base['dtype']}/n={n}/{variant}: {problem}"
            print("!" * 8 + " " + msg, file=sys.stderr, flush=True)
            failures.append(msg)
            rows += [dict(base, **{"pass": p}, status="CHECK FAILED: " + problem)
                     for p in args.passes]
            continue

        try:
            y, saved, saved_new = common.measure_saved(lambda: fn(z), lambda out: (z, out))
            del y
            saved_pe, saved_new_pe = saved / n, saved_new / n
        except Exception as exc:  # hooks unsupported somewhere: say so, keep timing
            log(f"  saved_tensors_hooks failed for {variant}: {type(exc).__name__}: {exc}")
            saved_pe = saved_new_pe = None
        s_all = saved_pe if saved_pe is not None else esize
        s_new = saved_new_pe if saved_new_pe is not None else 0.0
        bytes_pe = {"fwd": 2 * esize + s_new, "bwd": 2 * esize + s_all}
        bytes_pe["fwdbwd"] = bytes_pe["fwd"] + bytes_pe["bwd"]

        def fwd():
            fn(z)

        def new_graph():  # untimed setup of the backward-only pass
            return fn(z)

        def bwd(y):
            torch.autograd.grad(y, z, g)

        def fwdbwd():
            torch.autograd.grad(fn(z), z, g)

        timed = {"fwd": (fwd, None), "bwd": (bwd, new_graph), "fwdbwd": (fwdbwd, None)}
        for p in args.passes:
            stmt, setup = timed[p]
            t = common.time_fn(stmt, args.device, args.min_time, setup=setup)
            gbps = bytes_pe[p] * n / t["median_s"] / 1e9
            rows.append(dict(
                base, **{"pass": p}, status="ok", median_s=t["median_s"], iqr_s=t["iqr_s"],
                timer=t.get("timer"), blocks=t["blocks"], calls_per_block=t["calls_per_block"],
                saved_bytes_per_elem=saved_pe, saved_new_bytes_per_elem=saved_new_pe,
                bytes_per_elem=bytes_pe[p], gbps=gbps,
                pct_copy=100 * gbps / copy["copy_gbps"],
                pct_fresh_copy=100 * gbps / copy["fresh_copy_gbps"],
                first_call_s=first_call_s,
            ))
            log(f"  {variant:16s} {p:7s} {t['median_s'] * 1e3:10.3f} ms  {gbps:7.2f} GB/s  "
                f"saved {saved_pe} B/elem")
    return rows


# ---------------------------------------------------------------------------------------------
# Reports
# ---------------------------------------------------------------------------------------------
def _key(r):
    return (r["op"], r["rule"], r["dtype"], r["n"], r["pass"])


def markdown(result, plot_rel=None):
    env, args = result["environment"], result["config"]
    rows, copies = result["rows"], result["copies"]
    thp = env["THP_MEM_ALLOC_ENABLE"]
    title = (f"### bench_ops: {env['device_name']} ({env['device']}), "
             f"THP_MEM_ALLOC_ENABLE={thp if thp is not None else 'unset'}")
    warning = common.load_warning(env)
    partial = common.partial_note(result)
    out = [title, "", common.env_markdown(env)] + (["", warning] if warning else []) \
        + (["", partial] if partial else []) + ["",
           f"Command: `{result['command']}` ({result['elapsed_s']:.0f} s). Sizes "
           f"{', '.join(common.size_label(n) for n in args['sizes'])}; staircase with "
           f"steps={args['steps']}; values='pm1', grad_scale=True. Median of "
           f"{'do_bench' if env['device'].startswith('cuda') else 'Timer blocks'}; "
           "times in ms."]
    if result["failures"]:
        out += ["", "**FAILURES (not timed):**", ""] + [f"- {f}" for f in result["failures"]]

    out += ["", "Yardsticks, measured in this run (GB/s counts read + write; a fresh fill is "
            "`torch.empty_like(x).fill_(1)`, a new output that reads nothing):", ""]
    out.append(common.md_table(
        ["dtype", "n", "copy into existing ms", "GB/s", "fresh-output copy ms", "GB/s",
         "fresh fill ms"],
        [[c["dtype"], common.size_label(c["n"]), common.fmt_ms(c["copy_s"]),
          common.fmt(c["copy_gbps"]), common.fmt_ms(c["fresh_copy_s"]),
          common.fmt(c["fresh_copy_gbps"]),
          common.fmt_ms(c["fresh_fill_s"]) if "fresh_fill_s" in c else "–"] for c in copies]))
    by_size = {(c["n"], c["dtype"]): c for c in copies}

    ok = {(_key(r), r["variant"]): r for r in rows if r["status"] == "ok"}
    variants = [v for v in VARIANTS if v in args["variants"]]

    def cell(r):
        return "–" if r is None else common.fmt_ms(r["median_s"])

    # Headline: forward+backward at the largest size.
    n_max = max(args["sizes"])
    head_pass = "fwdbwd" if "fwdbwd" in args["passes"] else args["passes"][0]
    headers = ["op", "rule", "dtype"] + [f"{VARIANT_LABEL[v]} ms" for v in variants]
    headers += ["saved B/elem (" + "/".join(v.replace("_compiled", "+c") for v in variants) + ")"]
    if "kernel" in variants and "ref_compiled" in variants:
        headers.append("compiled ref / kernel")
    floors = head_pass == "fwdbwd" and "kernel" in variants
    if floors:  # forward+backward writes two fresh outputs: against two of each yardstick
        headers += ["kernel / 2 fresh copies", "kernel / 2 fresh fills"]
    table = []
    keys = {_key(r) for r in rows if r["n"] == n_max and r["pass"] == head_pass}
    for key in sorted(keys, key=lambda k: (OPS.index(k[0]),) + k[1:]):
        got = [ok.get((key, v)) for v in variants]
        line = list(key[:3]) + [cell(r) for r in got]
        line.append("/".join(common.fmt(r["saved_bytes_per_elem"]) if r else "–" for r in got))
        if "kernel" in variants and "ref_compiled" in variants:
            a, b = ok.get((key, "ref_compiled")), ok.get((key, "kernel"))
            line.append(f"{a['median_s'] / b['median_s']:.2f}x" if a and b else "–")
        if floors:
            k, c = ok.get((key, "kernel")), by_size.get((n_max, key[2]), {})
            for name in ("fresh_copy_s", "fresh_fill_s"):
                line.append(f"{k['median_s'] / (2 * c[name]):.2f}x" if k and name in c else "–")
        table.append(line)
    out += ["", f"Headline: {PASS_LABEL[head_pass]} at n = {common.size_label(n_max)} "
            "(ratio > 1: the kernel is faster than the compiled reference):", "",
            common.md_table(headers, table)]

    if plot_rel:
        out += ["", f"![bench_ops plot]({plot_rel})"]

    full = []
    def order(r):
        return (OPS.index(r["op"]), r["rule"], r["dtype"], r["n"], PASSES.index(r["pass"]),
                VARIANTS.index(r["variant"]))

    for r in sorted(rows, key=order):
        if r["status"] != "ok":
            full.append([r["op"], r["rule"], r["dtype"], common.size_label(r["n"]), r["pass"],
                         r["variant"], "**" + r["status"][:80] + "**", "", "", "", "", ""])
            continue
        full.append([r["op"], r["rule"], r["dtype"], common.size_label(r["n"]), r["pass"],
                     r["variant"], common.fmt_ms(r["median_s"]), common.fmt(r["bytes_per_elem"]),
                     common.fmt(r["saved_bytes_per_elem"]), common.fmt(r["gbps"]),
                     f"{r['pct_copy']:.0f}%", f"{r['pct_fresh_copy']:.0f}%"])
    out += ["", "<details><summary>All rows (ms, bytes that must move per element, bytes saved "
            "for backward per element, effective GB/s, % of copy, % of fresh-output copy)"
            "</summary>", "",
            common.md_table(["op", "rule", "dtype", "n", "pass", "variant", "ms", "B/elem moved",
                             "saved B/elem", "GB/s", "% copy", "% fresh copy"], full),
            "", "</details>"]
    return "\n".join(out) + "\n"


def plot(result, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    env, args, rows = result["environment"], result["config"], result["rows"]
    pass_name = "fwdbwd" if "fwdbwd" in args["passes"] else args["passes"][0]
    panels = sorted({(r["op"], r["dtype"], r["rule"]) for r in rows},
                    key=lambda k: (OPS.index(k[0]), k[1], args["rules"].index(k[2])))
    row_keys = sorted({(op, dt) for op, dt, _ in panels}, key=lambda k: (OPS.index(k[0]), k[1]))
    ncols = len(args["rules"])
    fig, axes = plt.subplots(len(row_keys), ncols, squeeze=False, sharex=True,
                             figsize=(max(10.0, 4.2 * ncols), 3.3 * len(row_keys) + 1.2))
    colors = {"ref": "tab:gray", "ref_compiled": "tab:blue", "kernel": "tab:red",
              "kernel_compiled": "tab:orange"}
    copies = {(c["n"], c["dtype"]): c for c in result["copies"]}
    for i, (op, dt) in enumerate(row_keys):
        for j, rule in enumerate(args["rules"]):
            ax = axes[i][j]
            sel = [r for r in rows if r["op"] == op and r["dtype"] == dt and r["rule"] == rule
                   and r["pass"] == pass_name and r["status"] == "ok"]
            if not any(r["op"] == op and r["rule"] == rule for r in rows):
                ax.set_axis_off()
                continue
            for v in VARIANTS:
                pts = sorted((r["n"], r["gbps"]) for r in sel if r["variant"] == v)
                if pts:
                    ax.plot([math.log2(p[0]) for p in pts], [p[1] for p in pts], "o-",
                            color=colors[v], label=VARIANT_LABEL[v], ms=4)
            sizes = sorted(n for (n, d) in copies if d == dt)
            for name, style in (("copy", "x--"), ("fresh_copy", "+:")):
                ax.plot([math.log2(n) for n in sizes], [copies[(n, dt)][f"{name}_gbps"]
                        for n in sizes], style, color="black", lw=1, ms=5,
                        label="copy into existing" if name == "copy" else "fresh-output copy")
            failed = {r["variant"] for r in rows if r["op"] == op and r["dtype"] == dt
                      and r["rule"] == rule and r["status"] != "ok"}
            ax.set_title(f"{op} / {rule} / {dt}" + (f"\nFAILED: {','.join(sorted(failed))}"
                                                    if failed else ""), fontsize=10,
                         color="red" if failed else "black")
            ax.grid(True, which="both", alpha=0.3)
            ax.set_yscale("log")  # eager small sizes sit orders of magnitude below the copy
            if j == 0:
                ax.set_ylabel("effective GB/s (log)")
            if i == len(row_keys) - 1:
                ax.set_xlabel("log2(elements)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=9)
    thp = env["THP_MEM_ALLOC_ENABLE"]
    fig.suptitle(f"ftprop_cuda {PASS_LABEL[pass_name]} through autograd: effective bandwidth vs "
                 f"size\n{env['device_name']} ({env['device']}), torch {env['torch']}, "
                 f"THP_MEM_ALLOC_ENABLE={thp if thp is not None else 'unset'}, "
                 f"{env['date_utc']}", fontsize=10)
    fig.tight_layout(rect=(0, 1.1 / fig.get_figheight(), 1, 1 - 0.6 / fig.get_figheight()))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    args = parse_args(argv)
    if args.from_json:  # re-render the outputs of an earlier run, measuring nothing
        result = common.load_result(args.from_json)
        tag = result["config"].get("tag", args.tag)
        common.write_outputs(result, "bench_ops", tag, args.out, markdown,
                             plot, args.markdown, args.no_plot)
        return common.report_failures("bench_ops", result["failures"])
    start = time.perf_counter()
    common.raise_dynamo_limits()

    def log(msg):
        print(msg, flush=True)

    env = common.environment(args.device)
    log(common.env_markdown(env))
    variants = Variants(args.device, args.steps,
                        {"size": None, "true": True, "false": False}[args.dynamic])
    copies = Copies(args.device, args.min_time)
    rows, failures = [], []
    config = {k: (v if not isinstance(v, (torch.device, list)) else
                  [common.DTYPE_SHORT.get(x, x) for x in v] if isinstance(v, list) else str(v))
              for k, v in vars(args).items()}
    config["dtypes"] = [common.DTYPE_SHORT[d] for d in args.dtypes]
    command = "python benchmarks/bench_ops.py " + " ".join(sys.argv[1:] if argv is None else argv)
    if os.environ.get("THP_MEM_ALLOC_ENABLE"):
        command = f"THP_MEM_ALLOC_ENABLE={os.environ['THP_MEM_ALLOC_ENABLE']} " + command

    def result_so_far():
        return {"benchmark": "bench_ops", "command": command, "environment": env,
                "config": config, "failures": failures,
                "copies": sorted(copies.rows.values(), key=lambda c: (c["dtype"], c["n"])),
                "rows": rows, "elapsed_s": time.perf_counter() - start}

    for op in args.ops:
        rules = [r for r in args.rules
                 if r in (ftprop_cuda.STEP_RULES if op == "step" else ftprop_cuda.STAIRCASE_RULES)]
        for dtype in args.dtypes:
            for rule in rules:
                for n in args.sizes:
                    log(f"{op} {rule} {common.DTYPE_SHORT[dtype]} n={common.size_label(n)}")
                    rows += bench_config(args, variants, copies, op, rule, dtype, n, failures,
                                         log)
                common.snapshot(args.out, "bench_ops", args.tag, result_so_far())
    common.finish_environment(env)
    result = result_so_far()

    common.write_outputs(result, "bench_ops", args.tag, args.out, markdown, plot, args.markdown,
                         args.no_plot, log)
    return common.report_failures("bench_ops", failures)


if __name__ == "__main__":
    sys.exit(main())
