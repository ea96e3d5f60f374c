"""Runs one fuzz case standard and lean and compares them bitwise (tests/test_lean_fuzz.py).

check_seed(seed) builds the case of the seed three times: standard twice (the case counts only if
standard is deterministic: otherwise it is reported as nondeterministic, never compared), then
lean. Compared: every step's output, the input's gradient, every parameter's gradient, every
buffer after each step and every parameter after the last SGD update, bitwise (NaN positions
included), or, where standard raises, that lean raises the same exception class.

A long run from the command line (any range of seeds; prints each finding with its model):
    PYTHONPATH=. python tests/lean_fuzz_run.py START COUNT
"""
import contextlib
import sys
import time
import traceback
import warnings
from collections import Counter
from dataclasses import dataclass, field

import torch
from torch.utils.checkpoint import checkpoint

import ftprop_cuda

from lean_fuzz_programs import make_case, output_grad

INT_OF = {1: torch.int8, 2: torch.int16, 4: torch.int32, 8: torch.int64}
LR = 0.01


@dataclass
class Outcome:
    values: dict = field(default_factory=dict)  # name -> tensor or None
    error: BaseException = None
    trace: str = ""


def _record(out, step, model, x, values):
    values[f"step{step}.output"] = out.detach().clone()
    values[f"step{step}.input.grad"] = None if x.grad is None else x.grad.clone()
    for name, p in model.named_parameters():
        values[f"step{step}.grad.{name}"] = None if p.grad is None else p.grad.clone()
    with torch.no_grad():
        for p in model.parameters():
            if p.grad is not None:
                p.sub_(p.grad, alpha=LR)
            p.grad = None
    for name, b in model.named_buffers():
        values[f"step{step}.buffer.{name}"] = b.detach().clone()


# What a user may put around the whole model's forward: saved-tensor hooks (save_on_cpu, a
# lossy bf16 pack that restores the dtype), an autocast region, activation checkpointing.
OUTER = ("save_on_cpu", "bf16_hooks", "autocast", "checkpoint", "checkpoint_reentrant")


def _pack_bf16(t):
    return (t.dtype, t.to(torch.bfloat16)) if t.is_floating_point() else (None, t)


def _unpack_bf16(packed):
    dtype, t = packed
    return t if dtype is None else t.to(dtype)


def _forward(model, x, outer):
    if outer.startswith("checkpoint"):
        return checkpoint(model, x, use_reentrant=outer == "checkpoint_reentrant")
    with contextlib.ExitStack() as stack:
        if outer == "save_on_cpu":
            stack.enter_context(torch.autograd.graph.save_on_cpu())
        elif outer == "bf16_hooks":
            stack.enter_context(torch.autograd.graph.saved_tensors_hooks(_pack_bf16,
                                                                         _unpack_bf16))
        elif outer == "autocast":
            stack.enter_context(torch.autocast("cpu", dtype=torch.bfloat16))
        return model(x)


def _between(model, case, x):
    """A forward without grad between two steps (eval mode for "eval")."""
    model.train(case.between != "eval")
    with torch.no_grad():
        model(x.detach().clone())
    model.train()


def _prepare(case, lean):
    """The case's model in its dtype, in training mode, made lean for the lean run."""
    model = case.model.train()
    if not lean:
        return model.to(case.dtype)
    if case.nested >= 0:
        ftprop_cuda.lean(list(model.modules())[case.nested])
    if case.wrap_first:
        return ftprop_cuda.lean(model).to(case.dtype)
    return ftprop_cuda.lean(model.to(case.dtype))


def run(seed, lean):
    """One run of the seed's case, standard or lean; the RNG state is restored afterwards."""
    outcome = Outcome()
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        case = make_case(seed)
        model = _prepare(case, lean)
        try:
            for step in range(case.steps):
                torch.manual_seed(seed * 7919 + step)  # the same dropout masks in every run
                x = case.inputs[step].clone().requires_grad_(case.input_grad)
                out = _forward(model, x, case.outer)
                g = output_grad(case, step, out)
                if case.twice:  # a second forward of the same model before the backward
                    g = torch.cat([g, g.flip(0)])
                    out = torch.cat([out, _forward(model, -x, case.outer)])
                out.backward(g, retain_graph=case.retain)
                if case.retain:
                    out.backward(g)
                _record(out, step, model, x, outcome.values)
                if case.between and step + 1 < case.steps:
                    _between(model, case, x)
            for name, p in model.named_parameters():
                outcome.values[f"final.param.{name}"] = p.detach().clone()
        except Exception as e:  # noqa: BLE001 - the class is what gets compared
            outcome.error, outcome.trace = e, traceback.format_exc(limit=-4)
    return outcome


def same_bits(a, b):
    """Bitwise equal (dtype, shape, every bit), NaN positions equal (payloads aside)."""
    if a is None or b is None:
        return a is None and b is None
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if not a.is_floating_point():
        return torch.equal(a, b)
    nan_a, nan_b = a.isnan(), b.isnan()
    if not torch.equal(nan_a, nan_b):
        return False
    ints = INT_OF[a.element_size()]
    return torch.equal(a.masked_fill(nan_a, 0).view(ints), b.masked_fill(nan_b, 0).view(ints))


def differences(first, second):
    """The names whose values differ (a short line each), or [] where all agree."""
    lines = []
    for name in sorted(set(first.values) | set(second.values)):
        a, b = first.values.get(name, "missing"), second.values.get(name, "missing")
        if isinstance(a, str) or isinstance(b, str):
            lines.append(f"{name}: missing in one run")
        elif not same_bits(a, b):
            lines.append(f"{name}: {_diff(a, b)}")
    return lines


def _diff(a, b):
    if a is None or b is None:
        return f"gradient {'None' if a is None else 'set'} vs {'None' if b is None else 'set'}"
    if a.dtype != b.dtype or a.shape != b.shape:
        return f"{a.dtype}{list(a.shape)} vs {b.dtype}{list(b.shape)}"
    d = (a.double() - b.double()).abs().nan_to_num(float("inf"))
    return f"max |difference| {d.max().item():.3g} at {int((d > 0).sum())} of {d.numel()}"


def check_seed(seed):
    """(status, details): status one of ok, same-error, nondeterministic, mismatch,
    lean-error (lean raised, standard did not), error-mismatch (both raised, other classes).
    Runs on one thread (the cases are tiny; a loaded machine's thread pool only slows them)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _check_seed(seed)
    finally:
        torch.set_num_threads(threads)


def _check_seed(seed):
    s1, s2 = run(seed, False), run(seed, False)
    if type(s1.error) is not type(s2.error) or (s1.error is None and differences(s1, s2)):
        return "nondeterministic", "standard vs standard: " + "; ".join(differences(s1, s2)[:5])
    lean = run(seed, True)
    if s1.error is not None:
        if type(lean.error) is type(s1.error):
            return "same-error", f"{type(s1.error).__name__}: {s1.error}"
        return "error-mismatch", (f"standard raised {type(s1.error).__name__}: {s1.error}\n"
                                  f"lean: {type(lean.error).__name__}: {lean.error}\n"
                                  f"{lean.trace}")
    if lean.error is not None:
        return "lean-error", f"{type(lean.error).__name__}: {lean.error}\n{lean.trace}"
    diff = differences(s1, lean)
    if diff:
        return "mismatch", "standard vs lean: " + "\n".join(diff[:12])
    return "ok", ""


# The findings issue 22 lists (being fixed in lean mode), recognised by their symptom:
# (label, status, a piece of the details or None)
KNOWN = (
    ("I22 in-place change after save", "error-mismatch", "modified by an inplace operation"),
    ("I22 code-keeping unit feeding +", "lean-error", "cannot unpack non-iterable NoneType"),
    ("I22 staircase steps >= 511", "lean-error", "levels must be a 1-D tensor of 1 to 511"),
    ("I22 checkpointing", "lean-error", "CheckpointError"),
    ("I22 max-pool one-element tuple", "lean-error", "IndexError"),
    ("I22 max-pool one-element tuple", "lean-error", "padding, dilation must have 2 values"),
    ("I22 max-pool one-element tuple", "error-mismatch", "lean: IndexError"),
)


def known_finding(status, details, description=""):
    """The label of the issue-22 finding a failure shows, or None for a new one.

    Besides the symptoms in KNOWN: a mismatch in running statistics alone, in a model with a
    checkpointed block, is the checkpoint bypassed (lean's saved-tensor hooks, pushed inside the
    checkpoint's, e.g. by a nested lean module, take the saved tensors: no recompute); any
    failure with checkpointing or saved-tensor hooks around the forward is those bypassed; a
    mismatch or lean-only error in a model with a mixed-dtype in-place residual add is that."""
    for label, st, piece in KNOWN:
        if status == st and (piece is None or piece in details):
            return label
    lines = details.splitlines()
    if status == "mismatch" and "Checkpointed(" in description and all(
            ".buffer." in line for line in lines[1:] + [lines[0].split(": ", 1)[-1]]):
        return "I22 checkpointing"
    failed = status in ("mismatch", "lean-error", "error-mismatch")
    if failed and any(f"around_forward={o}\n" in description
                      for o in ("bf16_hooks", "checkpoint", "checkpoint_reentrant")):
        return "I22 checkpointing"
    if failed and "mode='mixed_iadd'" in description:
        return "I22 mixed-dtype in-place add"
    return None


def describe(seed):
    with torch.random.fork_rng(devices=[]):
        return make_case(seed).describe()


def main(argv):
    start, count = int(argv[1]), int(argv[2])
    counts, t0 = Counter(), time.time()
    for seed in range(start, start + count):
        print(f"seed {seed}", file=sys.stderr, flush=True)  # the last one, should a run crash
        status, details = check_seed(seed)
        counts[status] += 1
        if status not in ("ok", "same-error"):
            label = known_finding(status, details, describe(seed))
            counts[label or "NEW"] += 1
            if label:
                print(f"+++ seed {seed}: {label}", flush=True)
            else:
                print(f"=== seed {seed}: {status}\n{details}\n{describe(seed)}\n", flush=True)
        elif status == "same-error":
            print(f"--- seed {seed}: both raise {details.splitlines()[0][:200]}", flush=True)
    print(f"{count} seeds in {time.time() - t0:.1f} s: {dict(counts)}", flush=True)


if __name__ == "__main__":
    main(sys.argv)
