"""The self-test (`python -m ftprop_cuda --check`): which checks run on which device, in order.

Every available device gets the op, code and model checks; CUDA devices also the
synchronisation, CUDA-graph and (with two or more GPUs) second-device checks. A device whose
kernels are missing gets one "not run" line (not a pass), and a machine without a GPU one
"skip" line saying that the CUDA checks did not run.
"""
import torch

from ..ops import extension, rules
from . import code_checks, model_checks, op_checks
from .results import Check, run


def devices():
    """The CPU and every visible GPU."""
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return ["cpu"] + [f"cuda:{i}" for i in range(count)]


def device_checks(device):
    """(name, function, args) of every check for one device, in order (the first is the
    one-element call: when it fails, the others are not run)."""
    checks = [("one-element call of every op", op_checks.one_element_calls, (device,))]
    checks += [(f"step {rule}: kernel = reference on the boundary grid",
                op_checks.step_boundaries, (device, rule)) for rule in rules.STEP_RULES]
    checks += [(f"staircase {rule}: kernel = reference on the boundary grids",
                op_checks.staircase_boundaries, (device, rule)) for rule in rules.STAIRCASE_RULES]
    checks += [(f"layout: {name}", op_checks.layout, (device, name))
               for name in op_checks.layout_inputs("cpu")]
    checks += [
        ("saved-state codes: spec layout, decoded on the CPU and back", code_checks.saved_codes,
         (device,)),
        ("lean unit-output codes: decoded on the CPU and back", code_checks.level_codes_across,
         (device,)),
        ("lean max-pool offsets: unpacked on the CPU and back", code_checks.pool_offsets_across,
         (device,)),
        ("lean = standard, one training step", model_checks.lean_equals_standard,
         (device, False)),
        ("lean = standard, one training step, channels-last", model_checks.lean_equals_standard,
         (device, True)),
        ("bf16 autocast training step", model_checks.autocast_step, (device,)),
    ]
    if device.startswith("cuda"):
        checks += [
            ("training step under set_sync_debug_mode('error')", model_checks.sync_free_step,
             (device,)),
            ("CUDA graph: capture and replay of forward + backward", model_checks.graph_step,
             (device,)),
        ]
    return checks


def missing_kernels(device):
    """Why the kernel checks cannot run on this device, or None when they can."""
    kind = torch.device(device).type
    if not extension.LOADED:
        return f"the compiled extension did not load ({extension.EXT_ERROR})"
    if kind not in extension.KERNEL_DEVICES:
        return (f"this build has no {kind.upper()} kernels (see `python -m ftprop_cuda`; "
                "README, 'Install')")
    return None


def run_device(device, report):
    """Runs the device's checks, calling report(check) after each; returns the checks."""
    why = missing_kernels(device)
    if why is not None:
        check = Check("kernel checks", device, "not run", why)
        report(check)
        return [check]
    done = []
    for name, fn, args in device_checks(device):
        if done and done[0].status != "pass":
            check = Check(name, device, "not run", "the one-element call failed on this device")
        else:
            check = run(name, device, fn, *args)
        report(check)
        done.append(check)
    return done


def run_all(report=lambda check: None):
    """Every check on every available device; returns the list of Check records."""
    results = []
    found = devices()
    for device in found:
        results += run_device(device, report)
    cuda = [d for d in found if d.startswith("cuda")]
    extra = []
    if not cuda:
        extra.append(Check("CUDA checks", "cuda", "skip",
                           "did not run: no GPU visible (torch.cuda.is_available() is False); "
                           "only the CPU was checked"))
    elif len(cuda) < 2:
        extra.append(Check("second device", "cuda:1", "skip", "did not run: only one GPU"))
    elif missing_kernels("cuda:1") is None:
        extra.append(run("second device (cuda:0 current, tensors on cuda:1)", "cuda:1",
                         model_checks.second_device, "cuda:1"))
    for check in extra:
        report(check)
    return results + extra
