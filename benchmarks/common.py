"""Helpers shared by bench_ops.py and bench_train.py: environment record, timers, saved-tensor
accounting, and the JSON / Markdown / PNG writers.

Runs on torch 2.11 .. 2.14 and needs no network. Timing: CUDA with
`triton.testing.do_bench` (CUDA events when triton is missing), CPU with
`torch.utils.benchmark.Timer`, median over several blocks, compile and warm-up outside timings.
"""
import datetime
import json
import os
import platform
import random
import re
import statistics
import subprocess
import sys
import time
import types

import torch
import torch.utils.benchmark as tbench

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:  # fallback when ftprop_cuda is not installed: the checkout
    sys.path.append(REPO)

DTYPES = {
    "float32": torch.float32, "fp32": torch.float32,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float16": torch.float16, "fp16": torch.float16,
    "float64": torch.float64, "fp64": torch.float64,
}
DTYPE_SHORT = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16",
               torch.float64: "fp64"}

# Backward tolerances against the eager reference (the values tests/helpers.py uses for the
# kernels). The compiled reference gets 4x: inductor may fuse and reorder the float math.
BACKWARD_TOL = {
    torch.float16: dict(rtol=2e-3, atol=1e-5),
    torch.bfloat16: dict(rtol=1.6e-2, atol=1e-5),
    torch.float32: dict(rtol=1e-5, atol=1e-6),
    torch.float64: dict(rtol=1e-12, atol=1e-14),
}
COMPILED_TOL_FACTOR = 4.0

# The four variants both scripts time on the same inputs.
VARIANTS = ("ref", "ref_compiled", "kernel", "kernel_lean", "kernel_compiled",
            "kernel_lean_compiled")
VARIANT_LABEL = {
    "ref": "reference (eager)",
    "ref_compiled": "torch.compile(reference)",
    "kernel": "kernel",
    "kernel_lean": "kernel, lean memory",
    "kernel_compiled": "kernel in compiled graph",
    "kernel_lean_compiled": "kernel, lean, compiled",
}


def parse_list(text):
    return [item.strip() for item in text.split(",") if item.strip()]


def parse_dtypes(text):
    out = []
    for name in parse_list(text):
        if name not in DTYPES:
            raise SystemExit(f"--dtypes: unknown dtype {name!r}; accepted: {', '.join(DTYPES)}")
        out.append(DTYPES[name])
    return out


def parse_sizes(text):
    """'16,20,24' (log2 sizes), '16-26' or '16-26:2' (log2 ranges) or explicit '65536,1000'."""
    sizes = []
    for item in parse_list(text):
        m = re.fullmatch(r"(\d+)-(\d+)(?::(\d+))?", item)
        if m:
            a, b, s = int(m.group(1)), int(m.group(2)), int(m.group(3) or 1)
            sizes += [1 << k for k in range(a, b + 1, s)]
        else:
            v = int(item)
            sizes.append(1 << v if v <= 40 else v)  # small numbers are exponents
    return sizes


def size_label(n):
    k = n.bit_length() - 1
    return f"2^{k}" if n == 1 << k else str(n)


# ---------------------------------------------------------------------------------------------
# Environment
# ---------------------------------------------------------------------------------------------
def _cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _read(path):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def _git_commit():
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                              capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "csrc", "ftprop_cuda"],
                               cwd=REPO, capture_output=True, text=True, timeout=10).stdout
        return (head + ("+dirty" if dirty.strip() else "")) or None
    except (OSError, subprocess.SubprocessError):
        return None


def _loadavg():
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def finish_environment(env):
    """Adds the end-of-run load average (other processes skew CPU timings: say so)."""
    env["loadavg_end"] = _loadavg()
    return env


def load_warning(env):
    """A warning line when other work was running on the machine during the run, else ''."""
    cores = env.get("cpu_affinity") or env.get("cpu_count") or 1
    loads = [x[0] for x in (env.get("loadavg_start"), env.get("loadavg_end")) if x]
    if loads and max(loads) > 1.5 * cores and env["device"].startswith("cpu"):
        return (f"**Warning: the 1-minute load average reached {max(loads)} on {cores} cores "
                "during this run; other processes shared the CPU and the timings are pessimistic "
                "and noisy (small sizes most: OpenMP threads wait for a core).**")
    return ""


def environment(device):
    """Everything a table must be tied to: machine, versions, date, allocator settings."""
    import ftprop_cuda

    env = {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "device": str(device),
        "device_name": _cpu_model(),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "THP_MEM_ALLOC_ENABLE": os.environ.get("THP_MEM_ALLOC_ENABLE"),
        "sys_transparent_hugepage": _read("/sys/kernel/mm/transparent_hugepage/enabled"),
        "ftprop_cuda": ftprop_cuda.build_info(),
        "ftprop_cuda_path": os.path.dirname(os.path.abspath(ftprop_cuda.__file__)),
        "git_commit": _git_commit(),
        "loadavg_start": _loadavg(),
    }
    if os.path.realpath(env["ftprop_cuda_path"]) != os.path.realpath(
            os.path.join(REPO, "ftprop_cuda")):
        env["git_commit"] = f"not this checkout: imported from {env['ftprop_cuda_path']}"
    try:
        import triton

        env["triton"] = triton.__version__
    except ImportError:
        env["triton"] = None
    if torch.device(device).type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env["device_name"] = props.name
        env["gpu_memory_gib"] = round(props.total_memory / 2**30, 1)
        env["gpu_capability"] = f"{props.major}.{props.minor}"
    return env


def env_markdown(env):
    """One line that ties a table to its machine, versions and date."""
    dev = env["device"]
    if dev.startswith("cuda"):
        machine = (f"**{env['device_name']}** ({env.get('gpu_memory_gib')} GiB, "
                   f"sm {env.get('gpu_capability')}), host CPU {env['cpu_model']}")
    else:
        machine = (f"**CPU: {env['cpu_model']}**, {env['cpu_affinity'] or env['cpu_count']} "
                   f"cores, {env['torch_threads']} torch threads")
    thp = env["THP_MEM_ALLOC_ENABLE"]
    thp_text = (f"`THP_MEM_ALLOC_ENABLE={thp}`" if thp is not None
                else "`THP_MEM_ALLOC_ENABLE` unset")
    return (f"Machine: {machine}. torch {env['torch']} (CUDA {env['torch_cuda']}), "
            f"triton {env['triton']}, Python {env['python']}; {thp_text}; "
            f"ftprop_cuda commit `{env['git_commit']}`; measured {env['date_utc']}; "
            f"load average {env.get('loadavg_start')} at start, {env.get('loadavg_end')} at end.")


# ---------------------------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------------------------
def synchronize(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def time_cpu(fn, min_run_time=0.5, setup=None, min_blocks=5, block_target=0.02,
             warmup_s=0.3, warmup_calls=(3, 20)):
    """Median seconds per call with torch.utils.benchmark.Timer on all torch threads.

    Warm-up: at least warmup_calls[0] calls and warmup_s seconds (at most warmup_calls[1]
    calls); the last call estimates the cost. On the 2-core VM the first calls of a 64 MB
    forward+backward took 841, 144 and 59 ms before settling near 35 ms, so a single warm-up
    call both misjudged the cost and left the stall inside the timed blocks.
    Without setup: fn() under Timer.blocked_autorange, with min_run_time raised so that at least
    min_blocks blocks run. With setup: each call is fn(setup()), setup untimed (used to time a
    backward on a fresh graph: compiled backwards with donated buffers refuse retain_graph);
    blocks of `number` calls repeat until min_run_time has passed and min_blocks ran.
    """
    threads = torch.get_num_threads()
    start, calls = time.perf_counter(), 0
    while True:
        arg = None if setup is None else setup()
        t0 = time.perf_counter()
        fn() if setup is None else fn(arg)
        est = max(time.perf_counter() - t0, 1e-7)
        calls += 1
        if calls >= warmup_calls[1] or (
                calls >= warmup_calls[0] and time.perf_counter() - start >= warmup_s):
            break
        del arg
    if setup is None:
        # blocked_autorange picks its own block size (sometimes 10 calls of a 30 ms op, so that
        # min_run_time held 2 blocks): repeat it until min_blocks blocks have run.
        timer = tbench.Timer("fn()", globals={"fn": fn}, num_threads=threads)
        per_call, numbers = [], set()
        while len(per_call) < min_blocks:
            m = timer.blocked_autorange(min_run_time=max(min_run_time, (min_blocks + 0.3) * est))
            per_call += m.times
            numbers.add(m.number_per_run)
        q = statistics.quantiles(per_call, n=4)
        return {"median_s": statistics.median(per_call), "iqr_s": q[2] - q[0],
                "blocks": len(per_call), "calls_per_block": max(numbers)}
    number = max(1, int(block_target / est))
    # Timer.timeit runs a warm-up of max(number // 100, 2) calls first: prepare for those too
    timer = tbench.Timer("fn(_q.pop())", setup="_q = [setup() for _ in range(_n)]",
                         globals={"fn": fn, "setup": setup, "_n": number + max(number // 100, 2)},
                         num_threads=threads)
    per_call, spent = [], 0.0
    while len(per_call) < min_blocks or spent < min_run_time:
        m = timer.timeit(number)
        per_call.append(m.median)
        spent += m.median * number
        if len(per_call) >= 200:
            break
    q = statistics.quantiles(per_call, n=4) if len(per_call) >= 2 else [per_call[0]] * 3
    return {"median_s": statistics.median(per_call), "iqr_s": q[2] - q[0],
            "blocks": len(per_call), "calls_per_block": number}


_L2_FLUSH = {}


def _flush_l2(device):
    buf = _L2_FLUSH.get(device)
    if buf is None:
        buf = _L2_FLUSH[device] = torch.empty(256 * 2**20, dtype=torch.int8, device=device)
    buf.zero_()


def time_cuda(fn, setup=None, rep_ms=60, warmup_ms=15):
    """Median seconds per call on the GPU: triton.testing.do_bench (it flushes L2 between
    calls) or, without triton or with an untimed setup, CUDA events around each call after an
    L2 flush."""
    fn() if setup is None else fn(setup())
    torch.cuda.synchronize()
    do_bench = None
    if setup is None:
        try:
            from triton.testing import do_bench
        except ImportError:
            pass
    if do_bench is not None:
        ms = do_bench(fn, warmup=warmup_ms, rep=rep_ms, return_mode="median")
        return {"median_s": ms / 1e3, "iqr_s": None, "blocks": None, "calls_per_block": 1,
                "timer": "triton.testing.do_bench"}
    device = torch.cuda.current_device()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    deadline = time.perf_counter() + (rep_ms + warmup_ms) / 1e3
    while len(times) < 10 or (time.perf_counter() < deadline and len(times) < 1000):
        arg = None if setup is None else setup()
        _flush_l2(device)
        start.record()
        fn() if setup is None else fn(arg)
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
        del arg
    q = statistics.quantiles(times, n=4)
    return {"median_s": statistics.median(times), "iqr_s": q[2] - q[0], "blocks": len(times),
            "calls_per_block": 1, "timer": "cuda events"}


def time_interleaved(fns, device, min_run_time=2.0, min_rounds=7):
    """Median seconds per call of each of fns (name -> fn()), timed round by round: every round
    calls each fn once, in a freshly shuffled order (seeded), so that slow phases of the machine
    hit all of them and no fn always runs after the same one (what a call leaves behind, freed
    pages or a cold cache, otherwise lands on its fixed successor: with a fixed rotation, resnet18
    compiled showed a steady 4 % between two identical graphs). Runs until every fn had
    min_run_time seconds and min_rounds rounds."""
    names = list(fns)
    shuffle = random.Random(0).shuffle
    times = {n: [] for n in names}
    cuda = torch.device(device).type == "cuda"
    for n in names:  # warm-up
        fns[n]()
    synchronize(device)
    r = 0
    while r < min_rounds or min(sum(v) for v in times.values()) < min_run_time:
        order = list(names)
        shuffle(order)
        for n in order:
            if cuda:
                start = torch.cuda.Event(enable_timing=True)
                end = torch.cuda.Event(enable_timing=True)
                start.record()
                fns[n]()
                end.record()
                torch.cuda.synchronize()
                times[n].append(start.elapsed_time(end) / 1e3)
            else:
                t0 = time.perf_counter()
                fns[n]()
                times[n].append(time.perf_counter() - t0)
        r += 1
        if r >= 1000:
            break
    out = {}
    for n, v in times.items():
        q = statistics.quantiles(v, n=4) if len(v) >= 2 else [v[0]] * 3
        out[n] = {"median_s": statistics.median(v), "iqr_s": q[2] - q[0], "blocks": len(v),
                  "calls_per_block": 1, "timer": "interleaved rounds, one step per block"}
    return out


def time_fn(fn, device, min_run_time=0.5, setup=None):
    """Median seconds per call of fn() (or fn(setup()) with setup untimed) on device."""
    if torch.device(device).type == "cuda":
        return time_cuda(fn, setup=setup)
    out = time_cpu(fn, min_run_time=min_run_time, setup=setup)
    out["timer"] = "torch.utils.benchmark.Timer"
    return out


# ---------------------------------------------------------------------------------------------
# Saved tensors
# ---------------------------------------------------------------------------------------------
def _storage_key(t):
    try:
        st = t.untyped_storage()
        return st.data_ptr(), st.nbytes()
    except (RuntimeError, NotImplementedError):  # e.g. a tensor subclass without storage
        return id(t), t.numel() * t.element_size()


def measure_saved(run, exclude=()):
    """Runs run() under saved_tensors_hooks and sums the bytes of the unique storages that
    autograd packed for backward. Returns (result of run(), total bytes, bytes not aliasing any
    tensor in exclude(result) -- i.e. state written in addition to the inputs and outputs)."""
    seen = {}

    def pack(t):
        if isinstance(t, torch.Tensor):
            key = _storage_key(t)
            seen[key[0]] = key[1]
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        result = run()
    skip = {_storage_key(t)[0] for t in exclude(result)}
    total = sum(seen.values())
    new = sum(b for ptr, b in seen.items() if ptr not in skip)
    return result, total, new


# ---------------------------------------------------------------------------------------------
# torch.compile
# ---------------------------------------------------------------------------------------------
def raise_dynamo_limits(limit=256):
    """Many (op, rule, dtype) graphs are compiled in one process: lift the recompile limits."""
    cfg = torch._dynamo.config
    for name in ("recompile_limit", "cache_size_limit", "accumulated_recompile_limit",
                 "accumulated_cache_size_limit"):
        if hasattr(cfg, name):
            setattr(cfg, name, max(getattr(cfg, name), limit))


def fresh_function(fn, name):
    """A copy of fn with its own code object. Dynamo caches compiled graphs per code object, so
    this keeps each configuration's cache (and guard checks) separate from the others'."""
    code = fn.__code__.replace(co_name=name)
    return types.FunctionType(code, fn.__globals__, name, fn.__defaults__, fn.__closure__)


# ---------------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------------
def write_json(path, obj):
    """Writes obj as JSON, whole or not at all (a temporary file renamed over path)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1, default=str)
        f.write("\n")
    os.replace(tmp, path)


def snapshot(out_dir, name, tag, result):
    """Writes the rows measured so far to <out_dir>/<name>_<tag>.json, marked partial, so that a
    run stopped early (a time limit, a lost machine) leaves every finished row; `--from-json`
    renders it. The run's last write replaces it with the whole result."""
    write_json(os.path.join(out_dir, f"{name}_{tag}.json"), dict(result, partial=True))


def partial_note(result):
    """A line for a result that a run stopped before it finished, else None."""
    if not result.get("partial"):
        return None
    return ("**Partial result:** the run stopped before it finished (a time limit or a lost "
            "machine); the configurations below are those it completed.")


def md_table(headers, rows, align=None):
    align = align or ["---"] * len(headers)
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def update_markdown(path, section_id, text, title="Performance"):
    """Replaces the block between <!-- BEGIN section_id --> and <!-- END section_id --> in path
    (appending it if absent, creating the file if needed); the rest of the file is kept."""
    begin, end = f"<!-- BEGIN {section_id} -->", f"<!-- END {section_id} -->"
    block = f"{begin}\n{text.rstrip()}\n{end}"
    old = ""
    if os.path.exists(path):
        with open(path) as f:
            old = f.read()
    if begin in old and end in old:
        head, rest = old.split(begin, 1)
        _, tail = rest.split(end, 1)
        new = head + block + tail
    elif old:
        new = old.rstrip() + "\n\n" + block + "\n"
    else:
        new = f"# {title}\n\n{block}\n"
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        f.write(new)


def fmt_ms(seconds):
    if seconds is None:
        return "–"
    ms = seconds * 1e3
    return f"{ms:.3g}" if ms < 100 else f"{ms:.0f}"


def fmt(x, digits=3):
    if x is None:
        return "–"
    return f"{x:.{digits}g}"


def _write_text(path, text):
    """Writes text whole or not at all (a temporary file renamed over path)."""
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def try_plot(plot_fn, result, png, log=print):
    """Draws the plot; returns png, or None when matplotlib is missing (the results are
    written already: a bare torch image still keeps them)."""
    try:
        plot_fn(result, png)
    except ImportError as exc:
        log(f"plot skipped: {exc} (`pip install matplotlib` draws it; `--from-json` redraws it "
            "from the JSON later)")
        return None
    return png


def write_outputs(result, name, tag, out_dir, markdown_fn, plot_fn, markdown_path=None,
                  no_plot=False, log=print):
    """Writes <out_dir>/<name>_<tag>.{json,md,png}, results first: the JSON and the Markdown
    before the plot is drawn, so a plot that fails (matplotlib missing: skipped with a note)
    loses no measurement. With markdown_path, also replaces the section '<name> <tag>' of that
    file and copies the plot to img/ beside it."""
    os.makedirs(out_dir, exist_ok=True)
    stem = os.path.join(out_dir, f"{name}_{tag}")
    write_json(stem + ".json", result)
    _write_text(stem + ".md", markdown_fn(result, None))
    png = None if no_plot else try_plot(plot_fn, result, stem + ".png", log)
    if png:  # the Markdown again, now with the plot under it
        _write_text(stem + ".md", markdown_fn(result, os.path.basename(png)))
    log(f"wrote {stem}.json, {stem}.md" + (f", {png}" if png else ""))
    if markdown_path:
        plot_rel = None
        if png:
            img_dir = os.path.join(os.path.dirname(os.path.abspath(markdown_path)), "img")
            os.makedirs(img_dir, exist_ok=True)
            with open(png, "rb") as src, open(os.path.join(img_dir, os.path.basename(png)),
                                              "wb") as dst:
                dst.write(src.read())
            plot_rel = "img/" + os.path.basename(png)
        update_markdown(markdown_path, f"{name} {tag}", markdown_fn(result, plot_rel))
        log(f"updated section '{name} {tag}' of {markdown_path}")


def report_failures(name, failures):
    """Prints the failures loudly to stderr; returns the exit code."""
    if not failures:
        return 0
    print("\n".join(["", "!" * 72, f"{name}: {len(failures)} FAILURE(S):"] + failures
                    + ["!" * 72]), file=sys.stderr)
    return 1


def load_result(path):
    with open(path) as f:
        return json.load(f)
