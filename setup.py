"""Build script of ftprop_cuda's C++/CUDA extension (ftprop_cuda._C).

Switches, printed at the top of the build:
  FORCE_CUDA=1       build the CUDA kernels even with no GPU visible; fail if that is impossible
  FORCE_ONLY_CPU=1   never build the CUDA kernels
  (neither)          build them when torch is a CUDA build and nvcc is found (no GPU needed);
                     fail when torch sees a GPU but no nvcc is found (never a silent CPU build)
  TORCH_CUDA_ARCH_LIST  GPU architectures to compile for. Unset: the visible GPUs' own plus PTX
                     of the newest (torch's default) when a GPU is visible, else DEFAULT_ARCH_LIST
  CUDA_HOME          CUDA toolkit (unset: CUDA_PATH, then the toolkit of the nvcc on PATH, then
                     /usr/local/cuda: torch's order)
  MAX_JOBS           parallel compile jobs (default: the number of CPUs)

Install with `pip install --no-build-isolation .` after torch, so the extension is built
against the torch that will run it. The decisions are small functions of their inputs
(tests/test_cuda_arch_build.py imports this file and runs them); the build runs only when this
file is executed (`python setup.py ...`, pip).
"""
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))

# The architectures built when no GPU is visible (containers, CI, FORCE_CUDA=1 on a build host)
# and TORCH_CUDA_ARCH_LIST is unset: cubins for the cards people train on, A100 (8.0), A10 and
# RTX 30xx (8.6), L4, L40 and RTX 40xx (8.9), H100 and H200 (9.0), plus PTX of 9.0, which the
# driver compiles at first use for newer cards (B200 10.0, RTX 50xx 12.0). nvcc 13 starts at 7.5
# (T4, RTX 20xx: add "7.5"); V100 (7.0) needs a CUDA 12 toolkit and torch. Each architecture adds
# compile time (README, "Building"); narrow the list with TORCH_CUDA_ARCH_LIST="8.6".
DEFAULT_ARCH_LIST = "8.0;8.6;8.9;9.0+PTX"


class BuildError(Exception):
    """A build that cannot do what was asked: the message says why and what to do."""


def flag(env, name):
    return env.get(name, "0").strip().lower() in ("1", "true", "yes", "on")


def log(msg):
    print(f"[ftprop_cuda build] {msg}", file=sys.stderr, flush=True)


def arch_list_choice(env, visible_gpus):
    """(value for TORCH_CUDA_ARCH_LIST, or None to leave it as it is; why)."""
    given = env.get("TORCH_CUDA_ARCH_LIST", "").strip()
    if given:
        return None, f"TORCH_CUDA_ARCH_LIST={given} (set by you)"
    if visible_gpus > 0:
        return None, (f"TORCH_CUDA_ARCH_LIST unset, {visible_gpus} GPU(s) visible: their "
                      "architectures plus PTX of the newest (torch's default)")
    return DEFAULT_ARCH_LIST, (f"TORCH_CUDA_ARCH_LIST unset and no GPU visible: the default "
                               f"{DEFAULT_ARCH_LIST}")


def nvcc_top(nvcc):
    """The toolkit directory nvcc itself reports (its TOP), for an nvcc that is a wrapper script
    outside its toolkit; None when it reports none."""
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "probe.cu")
        open(src, "w").close()
        try:
            out = subprocess.run([nvcc, "--dryrun", "-v", "-c", src, "-o", src + ".o"],
                                 capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.SubprocessError):
            return None
    found = re.search(r"^#\$ TOP=(.+)$", out.stdout + out.stderr, re.MULTILINE)
    return os.path.normpath(found.group(1).strip()) if found else None


def toolkit_of(nvcc, exists=os.path.exists, ask=nvcc_top):
    """The CUDA toolkit an nvcc belongs to: the directory above its bin/ (symbolic links
    resolved) when that holds the CUDA headers, else where nvcc says it lives."""
    root = os.path.dirname(os.path.dirname(os.path.realpath(nvcc)))
    if exists(os.path.join(root, "include", "cuda_runtime.h")):
        return root
    return ask(nvcc)


def find_cuda_home(env, which=shutil.which, exists=os.path.exists, ask=nvcc_top):
    """(CUDA toolkit directory or None, where it came from), in torch's order: CUDA_HOME or
    CUDA_PATH, the nvcc on PATH, /usr/local/cuda."""
    for name in ("CUDA_HOME", "CUDA_PATH"):
        if env.get(name):
            return env[name], name
    nvcc = which("nvcc")
    if nvcc:
        root = toolkit_of(nvcc, exists, ask)
        if root:
            return root, f"the nvcc on PATH ({nvcc})"
    if exists("/usr/local/cuda/bin/nvcc"):
        return "/usr/local/cuda", "/usr/local/cuda"
    return None, "no CUDA_HOME or CUDA_PATH, no nvcc on PATH, no /usr/local/cuda/bin/nvcc"


def no_nvcc_message(torch_version, torch_cuda, gpus, where):
    seen = f"torch sees {gpus} GPU(s)" if gpus else "FORCE_CUDA=1 asks for the CUDA kernels"
    return (
        f"{seen} but no nvcc was found ({where}), so the CUDA kernels cannot be built "
        f"(CUDA tensors would run on the slow pure-PyTorch reference). Either install the CUDA "
        f"toolkit {torch_cuda} (torch {torch_version} was built with CUDA {torch_cuda}; NVIDIA's "
        f"installer or conda's nvidia channel) and put its bin/ on PATH or set "
        f"CUDA_HOME=/path/to/cuda, then build again; or build without CUDA kernels on purpose: "
        f"FORCE_ONLY_CPU=1 pip install --no-build-isolation .")


def cuda_decision(env, torch_version, torch_cuda, gpus, cuda_home, where,
                  exists=os.path.exists):
    """(build the CUDA kernels?, why); BuildError where the build must not go on."""
    force_cuda, only_cpu = flag(env, "FORCE_CUDA"), flag(env, "FORCE_ONLY_CPU")
    if force_cuda and only_cpu:
        raise BuildError("FORCE_CUDA=1 and FORCE_ONLY_CPU=1 contradict each other: set at most one")
    if only_cpu:
        return False, "FORCE_ONLY_CPU=1"
    if torch_cuda is None:
        if force_cuda:
            raise BuildError(f"FORCE_CUDA=1 but torch {torch_version} is a CPU-only build: "
                             f"install a CUDA build of torch first")
        return False, f"torch {torch_version} is a CPU-only build"
    if cuda_home is None or not exists(os.path.join(cuda_home, "bin", "nvcc")):
        where = f"CUDA_HOME={cuda_home} from {where}" if cuda_home else where
        if force_cuda or gpus > 0:
            raise BuildError(no_nvcc_message(torch_version, torch_cuda, gpus, where))
        return False, f"no nvcc found ({where}) and no GPU visible"
    return True, f"torch CUDA {torch_cuda}, toolkit {cuda_home} ({where})"


def cuda_codes(gencode_flags):
    """What the -gencode flags put in the binary: "sm_80+sm_86+compute_90" (the
    FTPROP_CUDA_CODES of csrc/cuda/arch_list.cu)."""
    codes = []
    for f in gencode_flags:
        found = re.search(r",code=\[?([\w,]+)\]?", f)
        for code in found.group(1).split(",") if found else ():
            if code not in codes:
                codes.append(code)
    if not codes:
        raise BuildError(f"setup.py: no architecture in the CUDA flags {gencode_flags}")
    # cubins first, then PTX, each by architecture: "sm_80+sm_90+compute_90"
    return "+".join(sorted(codes, key=lambda c: (not c.startswith("sm_"),
                                                 int(re.sub(r"\D", "", c) or 0))))


def sources(*patterns):
    """The source files matching the patterns, relative to the repository, in a fixed order.

    A new kernel file is picked up by being there; csrc/emu/ (a test-only build) is not listed.
    """
    found = []
    for pattern in patterns:
        matches = sorted(glob.glob(os.path.join(HERE, pattern)))
        if not matches:
            raise BuildError(f"setup.py: no source file matches {pattern!r} under {HERE}")
        found += [os.path.relpath(path, HERE) for path in matches]
    return found


def extension(env):
    """The extension to build, after setting CUDA_HOME and TORCH_CUDA_ARCH_LIST in env (they
    must be in place before torch.utils.cpp_extension is imported: it reads CUDA_HOME then)."""
    import torch

    gpus = torch.cuda.device_count() if torch.version.cuda else 0
    cuda_home, where = find_cuda_home(env)
    if cuda_home and not env.get("CUDA_HOME"):
        env["CUDA_HOME"] = cuda_home
    with_cuda, why = cuda_decision(env, torch.__version__, torch.version.cuda, gpus, cuda_home,
                                   where)
    log(f"torch {torch.__version__}; CUDA kernels: {'yes' if with_cuda else 'no'} ({why})")
    from torch.utils.cpp_extension import CppExtension, CUDAExtension, _get_cuda_arch_flags

    # -ffp-contract=off / --fmad=false: no fused multiply-adds, so every backend rounds each
    # operation as PyTorch's reference does and the forward pass stays bit-identical.
    # -fno-trapping-math: lets GCC if-convert the NaN-aware selects so the CPU loops vectorise
    # (nothing here reads floating-point exception flags).
    # -fopenmp: at::parallel_for is inline in ATen's headers and only runs in parallel when the
    # extension itself is compiled with OpenMP (libgomp is already loaded with torch).
    cxx = ["-O3", "-ffp-contract=off", "-fno-trapping-math", "-fno-math-errno", "-fopenmp"]
    link = ["-fopenmp"]
    files = sources("csrc/*.cpp", "csrc/cpu/*.cpp")
    if not with_cuda:
        return CppExtension("ftprop_cuda._C", files + sources("csrc/nocuda/*.cpp"),
                            extra_compile_args={"cxx": cxx}, extra_link_args=link)
    value, arch_why = arch_list_choice(env, gpus)
    if value is not None:
        env["TORCH_CUDA_ARCH_LIST"] = value
    # torch's own translation of the list into -gencode flags, passed explicitly (torch then adds
    # none) so that the codes told to csrc/cuda/arch_list.cu are exactly those nvcc gets.
    gencode = _get_cuda_arch_flags()
    codes = cuda_codes(gencode)
    log(f"architectures: {codes.replace('+', ',')} ({arch_why}); CUDA_HOME={env.get('CUDA_HOME')} "
        f"MAX_JOBS={env['MAX_JOBS']}")
    nvcc = ["-O3", "--fmad=false", "-lineinfo", *gencode, f'-DFTPROP_CUDA_CODES="{codes}"']
    return CUDAExtension("ftprop_cuda._C", files + sources("csrc/cuda/*.cu"),
                         extra_compile_args={"cxx": cxx, "nvcc": nvcc}, extra_link_args=link)


def main():
    from setuptools import find_packages, setup

    os.environ.setdefault("MAX_JOBS", str(os.cpu_count() or 1))
    try:
        ext = extension(os.environ)
    except BuildError as err:
        log(f"ERROR: {err}")
        sys.exit(f"ftprop_cuda build: {err}")
    from torch.utils.cpp_extension import BuildExtension

    setup(
        packages=find_packages(include=["ftprop_cuda", "ftprop_cuda.*"]),
        ext_modules=[ext],
        cmdclass={"build_ext": BuildExtension.with_options(
            use_ninja=shutil.which("ninja") is not None)},
    )


if __name__ == "__main__":
    main()
