"""The core: the rule registry, the reference, the compiled ops and their public wrappers.

    rules.py       the rule registry (torch-free)
    reference.py   pure-PyTorch reference of every op
    extension.py   loads ftprop_cuda._C; LOADED, KERNEL_DEVICES, has_kernel, build_info
    fake.py, autograd.py, transforms.py   the ops' fake, autograd and torch.func registrations
    functional.py  step, staircase (argument checks, then the kernel or the reference)
    nn.py          Step, Staircase modules
    observers.py   the hook through which step/staircase announce each unit call

The names below are loaded on first use (PEP 562): `import ftprop_cuda.ops.rules` does not
import torch. Nothing here imports the rest of the package.
"""
import importlib

# public name -> the submodule that defines it
_LAZY = {
    **dict.fromkeys(("step", "staircase", "BACKENDS", "SAVE_MODES", "DTYPES", "exporting",
                     "step_export", "staircase_export", "check_choice", "check_bool",
                     "check_staircase_args", "check_staircase_range"), ".functional"),
    **dict.fromkeys(("Step", "Staircase"), ".nn"),
    **dict.fromkeys(("STEP_RULES", "STAIRCASE_RULES", "ALL_RULES", "ESTIMATOR_RULES",
                     "SMOOTH_STEP_RULES", "SMOOTH_STAIRCASE_RULES", "RULES", "rules_of",
                     "step_code_bits", "staircase_code_bits"), ".rules"),
    **dict.fromkeys(("STEP_VALUES", "opmath_dtype"), ".reference"),
    **dict.fromkeys(("LOADED", "EXT_ERROR", "KERNEL_DEVICES", "has_kernel", "has_cpu_kernel",
                     "build_info"), ".extension"),
    **dict.fromkeys(("UnitObserver", "observing"), ".observers"),
}


def __getattr__(name):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name], __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


__all__ = sorted(_LAZY)
