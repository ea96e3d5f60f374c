"""What this install is and what it runs on: versions, the compiled architectures and CPU kernel
level, and each visible GPU with whether the build covers it (`python -m ftprop_cuda`)."""
import os
import platform
import subprocess

import torch

from ..ops import cuda_arch, extension
from ..ops.version import __version__

PACKAGE_DIR = extension.PACKAGE_DIR


def git_commit(folder=None):
    """The commit of the source checkout the package is imported from ('abc1234', with
    '+dirty' for local changes), or None: an installed package, no git, any error."""
    root = os.path.dirname(folder or PACKAGE_DIR)
    if not os.path.exists(os.path.join(root, ".git")):
        return None
    try:
        run = dict(cwd=root, capture_output=True, text=True, timeout=5)
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], **run)
        if head.returncode != 0 or not head.stdout.strip():
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], **run)
        return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError, ValueError):
        return None


def aten_cpu_capability():
    """ATen's own vectorisation level (torch.backends.cpu.get_cpu_capability()), or None."""
    try:
        return torch.backends.cpu.get_cpu_capability()
    except (AttributeError, RuntimeError):
        return None


def device_record(index, archs):
    """One visible GPU: name, capability and whether (and how) this build runs on it."""
    props = torch.cuda.get_device_properties(index)
    capability = (props.major, props.minor)
    record = {"index": index, "name": props.name,
              "capability": cuda_arch.capability_text(capability),
              "memory_gib": round(props.total_memory / 2**30, 1), "covered": None, "runs": None}
    if archs:
        entry = cuda_arch.arch_for(capability, archs)
        record["covered"] = entry is not None
        record["runs"] = entry
    elif archs == []:
        record["covered"] = False
    return record


def collect():
    """Everything the info screen shows, as a JSON-ready dict."""
    build = extension.build_info()
    archs = build["cuda_archs"]
    cuda = torch.cuda.is_available()
    count = torch.cuda.device_count() if cuda else 0
    return {
        "ftprop_cuda": __version__,
        "commit": git_commit(),
        "package_dir": PACKAGE_DIR,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "extension_loaded": build["extension_loaded"],
        "extension_error": build["extension_error"],
        "cpu_kernels": build["cpu_kernels"],
        "cuda_kernels": build["cuda_kernels"],
        "cuda_archs": archs,
        "cpu_kernel_level": build["cpu_kernel_level"],
        "aten_cpu_capability": aten_cpu_capability(),
        "torch_threads": torch.get_num_threads(),
        "cuda_available": cuda,
        "devices": [device_record(i, archs) for i in range(count)],
    }


def _archs_text(archs, cuda_kernels):
    if archs is None:
        return ("unknown (this build predates the report)" if cuda_kernels
                else "unknown (no compiled CUDA kernels loaded)")
    return ", ".join(archs) if archs else "none (built without CUDA kernels)"


def _device_line(dev):
    head = f"  cuda:{dev['index']}  {dev['name']}  capability {dev['capability']}, " \
           f"{dev['memory_gib']} GiB: "
    if dev["covered"] is None:
        return head + "coverage unknown"
    if not dev["covered"]:
        return head + ("NOT COVERED: rebuild with " +
                       cuda_arch.rebuild_command(dev["capability"]))
    how = "PTX, JIT-compiled at first use" if dev["runs"].startswith("compute_") else \
        "native code"
    return head + f"covered ({dev['runs']}, {how})"


def format_info(info):
    """The info screen's lines."""
    ext = "loaded" if info["extension_loaded"] else f"NOT LOADED ({info['extension_error']})"
    kernels = [d for d, on in (("CPU", info["cpu_kernels"]), ("CUDA", info["cuda_kernels"]))
               if on]
    lines = [
        f"ftprop_cuda {info['ftprop_cuda']} (commit {info['commit'] or 'unknown'}) "
        f"from {info['package_dir']}",
        f"python {info['python']}, torch {info['torch']}, CUDA {info['torch_cuda'] or 'none'}",
        f"compiled extension: {ext}; kernels for: {', '.join(kernels) or 'none'}",
        f"CUDA architectures: {_archs_text(info['cuda_archs'], info['cuda_kernels'])}",
        f"CPU kernel level: {info['cpu_kernel_level'] or 'unknown'} (ATen: "
        f"{info['aten_cpu_capability'] or 'unknown'}), {info['torch_threads']} torch threads",
    ]
    if info["devices"]:
        lines.append(f"GPUs ({len(info['devices'])}):")
        lines += [_device_line(d) for d in info["devices"]]
    else:
        lines.append("GPUs: none visible (torch.cuda.is_available() is False)")
    return lines
