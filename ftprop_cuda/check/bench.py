"""A short op benchmark on each device against a plain copy (`python -m ftprop_cuda --bench`).

Each op moves a known number of bytes per element (it reads z, or g and z / g and a code, and
writes its output); its bandwidth is those bytes over its median time, and its share of a plain
copy's bandwidth (`out.copy_(z)`, 8 bytes per float32 element) says how close it runs to the
memory system's speed. Median of several timed calls after warm-up; CUDA times with events.
A quick look, not the benchmark of record (benchmarks/bench_ops.py is).
"""
import statistics
import time

import torch

from ..ops import extension

SIZES = {"cpu": 1 << 22, "cuda": 1 << 26}  # float32 elements: 16 MiB / 256 MiB
REPEATS = {"cpu": 7, "cuda": 20}


def _time(fn, device, repeats):
    """Median seconds per call of fn after two warm-up calls."""
    fn()
    fn()
    cuda = device.startswith("cuda")
    times = []
    for _ in range(repeats):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _cases(device, n):
    """(name, bytes per element, function) of each timed case."""
    gen = torch.Generator().manual_seed(0)
    z = (torch.randn(n, generator=gen) * 2).to(device)
    g = torch.randn(n, generator=gen).to(device)
    out = torch.empty_like(z)
    ops = torch.ops.ftprop_cuda
    _, code = ops._step_saved(z, "sste", False, True)
    return [
        ("copy (yardstick)", 8, lambda: out.copy_(z)),
        ("step forward", 8, lambda: ops.step(z, "soft_hinge", False, True)),
        ("step soft_hinge backward (from z)", 12,
         lambda: ops._step_backward(g, z, "soft_hinge", False, True)),
        ("step sste forward + 1-bit code", 8.125, lambda: ops._step_saved(z, "sste", False, True)),
        ("step sste backward (from the code)", 8.125,
         lambda: ops._step_backward_saved(g, code, "sste", False, True)),
        ("staircase forward", 8, lambda: ops.staircase(z, 3, 0.0, 1.0, "soft_hinge", True)),
    ]


def bench_device(device):
    """Rows {op, ms, gb_s, percent_of_copy} for one device (float32)."""
    kind = torch.device(device).type
    n = SIZES[kind]
    rows = []
    copy_rate = None
    for name, per_element, fn in _cases(device, n):
        seconds = _time(fn, device, REPEATS[kind])
        rate = per_element * n / seconds / 1e9
        copy_rate = copy_rate or rate
        rows.append({"device": device, "op": name, "elements": n, "ms": round(seconds * 1e3, 3),
                     "gb_s": round(rate, 2), "percent_of_copy": round(100 * rate / copy_rate, 1)})
    return rows


def run_all(devices):
    """(rows, notes): the benchmark on every device with kernels; a note for each without."""
    rows, notes = [], []
    for device in devices:
        kind = torch.device(device).type
        if not extension.LOADED or kind not in extension.KERNEL_DEVICES:
            notes.append(f"{device}: not benchmarked, no compiled kernels for it")
            continue
        rows += bench_device(device)
    return rows, notes


def format_rows(rows):
    lines = [f"{'device':7s} {'op':36s} {'ms':>9s} {'GB/s':>8s} {'% of copy':>9s}"]
    lines += [f"{r['device']:7s} {r['op']:36s} {r['ms']:9.3f} {r['gb_s']:8.2f} "
              f"{r['percent_of_copy']:8.1f}%" for r in rows]
    return lines
