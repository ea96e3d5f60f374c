"""Build script of ftprop_cuda's C++/CUDA extension (ftprop_cuda._C).

Switches, printed at the top of the build:
  FORCE_CUDA=1       build the CUDA kernels even with no GPU visible; fail if that is impossible
  FORCE_ONLY_CPU=1   never build the CUDA kernels
  (neither)          build them when torch is a CUDA build and nvcc is found (no GPU needed)
  TORCH_CUDA_ARCH_LIST  GPU architectures to compile for (default here: 9.0, the H100)
  CUDA_HOME          CUDA toolkit (default here: /usr/local/cuda when it has bin/nvcc)
  MAX_JOBS           parallel compile jobs (default: the number of CPUs)

Install with `pip install --no-build-isolation .` after torch, so the extension is built
against the torch that will run it.
"""
import glob
import os
import shutil
import sys

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))


def _flag(name):
    return os.environ.get(name, "0").strip().lower() in ("1", "true", "yes", "on")


def _log(msg):
    print(f"[ftprop_cuda build] {msg}", file=sys.stderr, flush=True)


FORCE_CUDA = _flag("FORCE_CUDA")
FORCE_ONLY_CPU = _flag("FORCE_ONLY_CPU")
if FORCE_CUDA and FORCE_ONLY_CPU:
    sys.exit("FORCE_CUDA=1 and FORCE_ONLY_CPU=1 contradict each other: set at most one")

# Both defaults must be in place before torch.utils.cpp_extension is imported: it reads
# CUDA_HOME at import, and with no GPU it cannot guess the architecture list.
if not os.environ.get("TORCH_CUDA_ARCH_LIST"):
    os.environ["TORCH_CUDA_ARCH_LIST"] = "9.0"
if not os.environ.get("CUDA_HOME") and os.path.exists("/usr/local/cuda/bin/nvcc"):
    os.environ["CUDA_HOME"] = "/usr/local/cuda"
os.environ.setdefault("MAX_JOBS", str(os.cpu_count() or 1))

import torch  # noqa: E402
from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension  # noqa: E402
from torch.utils import cpp_extension  # noqa: E402


def _want_cuda():
    if FORCE_ONLY_CPU:
        return False, "FORCE_ONLY_CPU=1"
    if torch.version.cuda is None:
        reason = f"torch {torch.__version__} is a CPU-only build"
    elif cpp_extension.CUDA_HOME is None or not os.path.exists(
        os.path.join(cpp_extension.CUDA_HOME, "bin", "nvcc")
    ):
        reason = f"no nvcc found (CUDA_HOME={cpp_extension.CUDA_HOME})"
    else:
        return True, f"torch CUDA {torch.version.cuda}, toolkit {cpp_extension.CUDA_HOME}"
    if FORCE_CUDA:
        sys.exit(f"FORCE_CUDA=1 but the CUDA kernels cannot be built: {reason}")
    return False, reason


def _sources(*patterns):
    """The source files matching the patterns, relative to the repository, in a fixed order.

    A new kernel file is picked up by being there; csrc/emu/ (a test-only build) is not listed.
    """
    found = []
    for pattern in patterns:
        matches = sorted(glob.glob(os.path.join(HERE, pattern)))
        if not matches:
            sys.exit(f"setup.py: no source file matches {pattern!r} under {HERE}")
        found += [os.path.relpath(path, HERE) for path in matches]
    return found


def _extension():
    with_cuda, why = _want_cuda()
    _log(f"torch {torch.__version__}; CUDA kernels: {'yes' if with_cuda else 'no'} ({why})")
    if with_cuda:
        _log(f"TORCH_CUDA_ARCH_LIST={os.environ['TORCH_CUDA_ARCH_LIST']} "
             f"CUDA_HOME={os.environ.get('CUDA_HOME')} MAX_JOBS={os.environ['MAX_JOBS']}")
    sources = _sources("csrc/*.cpp", "csrc/cpu/*.cpp")
    # -ffp-contract=off / --fmad=false: no fused multiply-adds, so every backend rounds each
    # operation as PyTorch's reference does and the forward pass stays bit-identical.
    # -fno-trapping-math: lets GCC if-convert the NaN-aware selects so the CPU loops vectorise
    # (nothing here reads floating-point exception flags).
    # -fopenmp: at::parallel_for is inline in ATen's headers and only runs in parallel when the
    # extension itself is compiled with OpenMP (libgomp is already loaded with torch).
    cxx = ["-O3", "-ffp-contract=off", "-fno-trapping-math", "-fno-math-errno", "-fopenmp"]
    link = ["-fopenmp"]
    if not with_cuda:
        return CppExtension("ftprop_cuda._C", sources, extra_compile_args={"cxx": cxx},
                            extra_link_args=link)
    sources += _sources("csrc/cuda/*.cu")
    nvcc = ["-O3", "--fmad=false", "-lineinfo"]
    return CUDAExtension(
        "ftprop_cuda._C", sources, extra_compile_args={"cxx": cxx, "nvcc": nvcc},
        extra_link_args=link,
    )


setup(
    packages=find_packages(include=["ftprop_cuda", "ftprop_cuda.*"]),
    ext_modules=[_extension()],
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=shutil.which("ninja") is not None)},
)
