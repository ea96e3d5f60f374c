"""Which GPU architectures the compiled CUDA kernels cover, and the first-call check per device.

The compiled library reports the architectures its CUDA code was compiled for, as the compiler
saw them (`torch.ops.ftprop_cuda._cuda_arch_list()`: e.g. "sm_80,sm_86,sm_89,sm_90,compute_90";
"" when no CUDA kernels were built), and the CPU kernel level its loops run at
(`torch.ops.ftprop_cuda._cpu_kernel_level()`: "avx512", "avx2", "baseline"). A build that
predates these ops reports neither: the answer is then None ("unknown"), never a guess.

Whether a card of compute capability (major, minor) can run a build (CUDA's compatibility
rules, see `arch_for`):

- **SASS** `sm_XY` (compiled machine code) runs on a card of the same major version X whose minor
  version is at least Y: sm_80 runs on 8.0, 8.6, 8.7 and 8.9; sm_86 does not run on 8.0; sm_90
  does not run on 10.0 or 12.0 (another major version).
- **PTX** `compute_XY` (the virtual-architecture code the driver compiles at load time) runs on any
  card whose capability is at least X.Y, whatever its major version: compute_90 serves 9.0, 10.0
  and 12.0 (after a one-off JIT compilation), but not 8.9.
- The architecture-specific variants `sm_90a`/`compute_90a` run on exactly that capability (9.0).

The first CUDA call on each device (functional.py, where the kernel-or-reference decision is
made) runs `on_cuda_call`: a card no compiled architecture can run gets one clear RuntimeError
(the card, its capability, what was compiled, the rebuild command) instead of CUDA's "no kernel
image is available for execution on the device"; and CUDA tensors that go to the pure-PyTorch
reference with backend="auto" because no CUDA kernels were built get one warning per process.
Later calls on the same device cost a dictionary lookup.
"""
import re
import warnings

import torch

_ENTRY = re.compile(r"(sm|compute)_(\d+)([af]?)")

# device index -> None (checked: fine) or the error message (checked: no architecture runs)
_CHECKED = {}
_WARNED = []  # non-empty once the no-CUDA-kernels warning was given in this process


class CudaKernelsMissingWarning(RuntimeWarning):
    """CUDA tensors run on the pure-PyTorch reference because this install has no CUDA kernels."""


def parse_arch_list(text):
    """'sm_80,sm_86,compute_90' -> ['sm_80', 'sm_86', 'compute_90'] (order kept, duplicates
    dropped); '' -> []. An entry that is not sm_XY / compute_XY (optionally with an 'a' or 'f'
    suffix) raises ValueError naming it."""
    if not isinstance(text, str):
        raise TypeError(f"the architecture list must be a string; got {type(text).__name__}")
    entries = [e.strip() for e in re.split(r"[,;\s]+", text) if e.strip()]
    for entry in entries:
        if not _ENTRY.fullmatch(entry):
            raise ValueError(f"architecture entry {entry!r} is not sm_XY or compute_XY "
                             f"(in {text!r})")
    return list(dict.fromkeys(entries))


def _entry_capability(entry):
    """'sm_86' -> ('sm', (8, 6), ''); 'compute_100a' -> ('compute', (10, 0), 'a')."""
    kind, number, suffix = _ENTRY.fullmatch(entry).groups()
    number = int(number)
    return kind, (number // 10, number % 10), suffix


def runs_on(entry, capability):
    """Whether the one compiled entry (sm_XY or compute_XY) runs on a card of `capability`
    (major, minor), by the rules in this module's docstring."""
    kind, (major, minor), suffix = _entry_capability(entry)
    cap = (int(capability[0]), int(capability[1]))
    if suffix == "a":
        return cap == (major, minor)
    if kind == "sm":
        return cap[0] == major and cap[1] >= minor
    return cap >= (major, minor)


def arch_for(capability, archs):
    """The compiled entry a card of `capability` runs: the newest matching SASS (native code)
    if any, else the newest PTX it can JIT-compile; None when nothing in `archs` runs on it."""
    sass = [e for e in archs if e.startswith("sm_") and runs_on(e, capability)]
    ptx = [e for e in archs if e.startswith("compute_") and runs_on(e, capability)]
    for found in (sass, ptx):
        if found:
            return max(found, key=lambda e: _entry_capability(e)[1])
    return None


def can_run(capability, archs):
    """Whether a card of compute capability `capability` (major, minor) can run a build
    compiled for `archs` (entries like 'sm_86', 'compute_90')."""
    return arch_for(capability, archs) is not None


def _op_text(name):
    """The string a reporting op of the compiled library returns, or None when the library is
    not loaded or predates the op."""
    try:
        op = getattr(torch.ops.ftprop_cuda, name)
        value = op()
    except (AttributeError, RuntimeError, NotImplementedError):
        return None
    return value if isinstance(value, str) else None


def arch_list_text():
    """The compiled library's architecture list as it reports it, or None (unknown)."""
    return _op_text("_cuda_arch_list")


def compiled_archs():
    """The architectures the CUDA kernels were compiled for (['sm_80', ..., 'compute_90']), []
    when no CUDA kernels were built, None when unknown (no library, one that predates the
    report, or a report this module cannot read: then no card is refused on its word)."""
    text = arch_list_text()
    if text is None:
        return None
    try:
        return parse_arch_list(text)
    except ValueError:
        return None


def cpu_kernel_level():
    """The instruction-set level of the CPU loops in use ('avx512', 'avx2', 'baseline', ...), or
    None when unknown."""
    return _op_text("_cpu_kernel_level")


def capability_text(capability):
    """(8, 6) -> '8.6', the TORCH_CUDA_ARCH_LIST spelling."""
    return f"{capability[0]}.{capability[1]}"


def rebuild_command(arch_list):
    """The command that rebuilds the extension for TORCH_CUDA_ARCH_LIST=arch_list."""
    return (f'TORCH_CUDA_ARCH_LIST="{arch_list}" pip install --no-build-isolation '
            "--force-reinstall --no-deps .  (in the ftprop_cuda source folder; `-e .` for an "
            "in-place build)")


def unsupported_message(name, capability, archs):
    """The error for a card named `name` that no entry of `archs` can run."""
    cap = capability_text(capability)
    return (f"ftprop_cuda: the GPU {name!r} (compute capability {cap}) cannot run this build's "
            f"CUDA kernels: they were compiled for {', '.join(archs)}, and none of these runs on "
            f"{cap} (machine code sm_XY needs the same major version and a minor version >= Y; "
            f"PTX compute_XY needs a capability >= X.Y). Rebuild for this card: "
            f"{rebuild_command(cap)}. `python -m ftprop_cuda` shows what this install covers; "
            "backend='reference' runs without the kernels meanwhile.")


def _device_index(device):
    index = device.index
    return torch.cuda.current_device() if index is None else index


def _check_device(index):
    """None when this build's kernels run on device `index` (or nothing is known), else the
    error message."""
    archs = compiled_archs()
    if not archs:  # unknown, or no CUDA code at all (then there is no CUDA kernel to call)
        return None
    capability = tuple(torch.cuda.get_device_capability(index))
    if can_run(capability, archs):
        return None
    return unsupported_message(torch.cuda.get_device_name(index), capability, archs)


def no_kernels_message():
    """The warning for CUDA tensors sent to the reference because no CUDA kernels were built."""
    archs = compiled_archs()
    why = ("it was built without them (no nvcc found at build time, or FORCE_ONLY_CPU=1)"
           if archs == [] else "no compiled CUDA kernels were loaded (see build_info())")
    cuda = torch.version.cuda or "its CUDA version"
    return (f"ftprop_cuda: CUDA tensors run on the pure-PyTorch reference (backend='auto'): "
            f"this install has no CUDA kernels, {why}. The results are the same, only slower. "
            f"To build the kernels, install the CUDA toolkit matching torch (CUDA {cuda}, nvcc "
            "on PATH or CUDA_HOME) and reinstall: FORCE_CUDA=1 pip install --no-build-isolation "
            "--force-reinstall --no-deps .  (in the ftprop_cuda source folder). "
            "`python -m ftprop_cuda` shows what this install has.")


def on_cuda_call(device, kernel_available):
    """Called by each op call on a CUDA tensor with backend 'auto' or 'kernel', before the
    kernel-or-reference choice takes effect. kernel_available: whether a compiled CUDA kernel
    will run. Raises RuntimeError when the kernels cannot run on this card; warns once per
    process (CudaKernelsMissingWarning) when there are none and the reference runs instead.
    Checked once per device index; later calls cost a dictionary lookup."""
    if not kernel_available:
        if not _WARNED:
            _WARNED.append(True)
            warnings.warn(no_kernels_message(), CudaKernelsMissingWarning, stacklevel=4)
        return
    index = _device_index(device)
    if index not in _CHECKED:
        _CHECKED[index] = _check_device(index)
    message = _CHECKED[index]
    if message is not None:
        raise RuntimeError(message)


def reset():
    """Forgets the per-device checks and the once-per-process warning (for tests)."""
    _CHECKED.clear()
    _WARNED.clear()
