"""What the build compiles for (issue 23, item 1): setup.py's decisions (architecture list, CUDA
toolkit, CUDA or not, loud failure without nvcc) run here as plain functions, and the ops that
report what was built (_cuda_arch_list, _cpu_kernel_level). With FTPROP_EXPECT_DEFAULT_ARCHS=1
(.ci/run, which builds with no TORCH_CUDA_ARCH_LIST and no GPU) the build must carry the default
architectures. About 1 s.
"""
import importlib.util
import os
import pathlib

import pytest
import torch

import ftprop_cuda  # noqa: F401  (loads the extension when there is one)
from ftprop_cuda.ops import extension

SETUP = pathlib.Path(__file__).resolve().parent.parent / "setup.py"


@pytest.fixture(scope="module")
def build():
    if not SETUP.exists():
        pytest.skip("setup.py is not next to the tests")
    spec = importlib.util.spec_from_file_location("ftprop_setup", SETUP)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # defines the functions; the build runs only as __main__
    return module


def test_importing_setup_builds_nothing(build):
    assert callable(build.main) and build.DEFAULT_ARCH_LIST == "8.0;8.6;8.9;9.0+PTX"


def test_arch_list_default_without_a_gpu(build):
    value, why = build.arch_list_choice({}, visible_gpus=0)
    assert value == build.DEFAULT_ARCH_LIST and "no GPU visible" in why
    assert build.arch_list_choice({"TORCH_CUDA_ARCH_LIST": " "}, 0)[0] == build.DEFAULT_ARCH_LIST


def test_arch_list_left_to_torch_with_a_gpu(build):
    value, why = build.arch_list_choice({}, visible_gpus=2)
    assert value is None and "torch's default" in why


def test_arch_list_given_is_kept(build):
    value, why = build.arch_list_choice({"TORCH_CUDA_ARCH_LIST": "8.6"}, visible_gpus=0)
    assert value is None and "8.6" in why
    assert build.arch_list_choice({"TORCH_CUDA_ARCH_LIST": "8.6"}, visible_gpus=1)[0] is None


def _fs(*present):
    return lambda path: os.path.normpath(path) in {os.path.normpath(p) for p in present}


def test_cuda_home_order(build):
    never = lambda nvcc: pytest.fail("nvcc asked without need")  # noqa: E731
    which = {"nvcc": "/opt/cuda-12/bin/nvcc"}.get
    exists = _fs("/opt/cuda-12/include/cuda_runtime.h", "/usr/local/cuda/bin/nvcc")
    assert build.find_cuda_home({"CUDA_HOME": "/x"}, which, exists, never) == ("/x", "CUDA_HOME")
    assert build.find_cuda_home({"CUDA_PATH": "/y"}, which, exists, never)[0] == "/y"
    # the nvcc on PATH before /usr/local/cuda (torch's order)
    home, where = build.find_cuda_home({}, which, exists, never)
    assert home == "/opt/cuda-12" and "PATH" in where
    # no nvcc on PATH: /usr/local/cuda
    assert build.find_cuda_home({}, lambda name: None, exists, never)[0] == "/usr/local/cuda"
    # nothing at all
    assert build.find_cuda_home({}, lambda name: None, _fs(), never)[0] is None


def test_cuda_home_of_a_wrapper_nvcc(build):
    """An nvcc outside its toolkit (a script in /usr/local/bin): the toolkit nvcc reports."""
    asked = []

    def ask(nvcc):
        asked.append(nvcc)
        return "/usr/local/cuda-13.0"

    home, _ = build.find_cuda_home({}, {"nvcc": "/usr/local/bin/nvcc"}.get, _fs(), ask)
    assert home == "/usr/local/cuda-13.0" and asked == ["/usr/local/bin/nvcc"]


def _decide(build, env, torch_cuda="13.0", gpus=0, home="/cuda", nvcc=True):
    exists = _fs("/cuda/bin/nvcc") if nvcc else _fs()
    return build.cuda_decision(env, "2.14.1", torch_cuda, gpus, home, "test", exists)


def test_cuda_decision(build):
    assert _decide(build, {})[0] is True
    assert _decide(build, {"FORCE_CUDA": "1"})[0] is True
    only_cpu = _decide(build, {"FORCE_ONLY_CPU": "1"}, gpus=1, nvcc=False)
    assert only_cpu == (False, "FORCE_ONLY_CPU=1")
    assert _decide(build, {}, torch_cuda=None)[0] is False
    # no GPU, no nvcc, nothing forced: a CPU build, said in the build's log line
    with_cuda, why = _decide(build, {}, nvcc=False)
    assert not with_cuda and "no nvcc" in why


@pytest.mark.parametrize("env,gpus", [({}, 1), ({"FORCE_CUDA": "1"}, 0)])
def test_no_nvcc_fails_loudly(build, env, gpus):
    with pytest.raises(build.BuildError) as err:
        _decide(build, env, gpus=gpus, nvcc=False)
    message = str(err.value)
    assert "no nvcc" in message and "FORCE_ONLY_CPU=1" in message and "CUDA_HOME" in message
    assert "13.0" in message  # the toolkit version torch was built with


def test_contradicting_switches_fail(build):
    with pytest.raises(build.BuildError, match="contradict"):
        _decide(build, {"FORCE_CUDA": "1", "FORCE_ONLY_CPU": "1"})
    with pytest.raises(build.BuildError, match="CPU-only build"):
        _decide(build, {"FORCE_CUDA": "1"}, torch_cuda=None)


def test_codes_of_gencode_flags(build):
    flags = ["-gencode=arch=compute_80,code=sm_80", "-gencode=arch=compute_90,code=compute_90",
             "-gencode=arch=compute_90,code=sm_90", "-gencode=arch=compute_86,code=sm_86"]
    assert build.cuda_codes(flags) == "sm_80+sm_86+sm_90+compute_90"
    assert build.cuda_codes(["-gencode=arch=compute_90a,code=[sm_90a]"]) == "sm_90a"
    with pytest.raises(build.BuildError):
        build.cuda_codes(["-O3"])


def test_default_list_gives_the_default_codes(build, monkeypatch):
    """torch's translation of the default list (what setup.py passes to nvcc)."""
    from torch.utils.cpp_extension import _get_cuda_arch_flags

    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", build.DEFAULT_ARCH_LIST)
    assert build.cuda_codes(_get_cuda_arch_flags()) == "sm_80+sm_86+sm_89+sm_90+compute_90"


def _ops_or_skip():
    if not extension.LOADED or not hasattr(torch.ops.ftprop_cuda, "_cuda_arch_list"):
        pytest.skip("the compiled extension ftprop_cuda._C (with _cuda_arch_list) is not loaded")
    return torch.ops.ftprop_cuda


def test_arch_list_op_matches_the_build():
    ops = _ops_or_skip()
    archs = ops._cuda_arch_list()
    assert isinstance(archs, str)
    if "cuda" in extension.KERNEL_DEVICES:
        codes = archs.split(",")
        assert codes and all(c.startswith(("sm_", "compute_")) for c in codes), archs
    else:
        assert archs == ""


def test_cpu_kernel_level_op():
    ops = _ops_or_skip()
    assert ops._cpu_kernel_level() in ("avx512", "avx2", "baseline")


@pytest.mark.skipif(os.environ.get("FTPROP_EXPECT_DEFAULT_ARCHS") != "1",
                    reason="set FTPROP_EXPECT_DEFAULT_ARCHS=1 for a default CUDA build (.ci/run)")
def test_default_build_carries_the_default_archs():
    archs = _ops_or_skip()._cuda_arch_list().split(",")
    for code in ("sm_80", "sm_86", "sm_89", "sm_90", "compute_90"):
        assert code in archs, f"{code} missing from the build's {archs}"
