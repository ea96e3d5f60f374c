"""Which cards a build's CUDA code runs on (ftprop_cuda/ops/cuda_arch.py), and the first-call
check per device: all on the CPU, with the capability, the card's name and the compiled list
injected (monkeypatch), so the logic is tested with or without a GPU and with or without a
library that reports its architectures. Runs in about a second."""
import warnings

import pytest
import torch

from ftprop_cuda.ops import cuda_arch, extension, functional

# A build with the documented default (sm_80, sm_86, sm_89, sm_90 and PTX of 9.0), one with
# sm_90 only (the old default), one with PTX only, and a mixed one with an arch-specific variant.
DEFAULT = ["sm_80", "sm_86", "sm_89", "sm_90", "compute_90"]
SM90 = ["sm_90"]
PTX80 = ["compute_80"]
MIXED = ["sm_75", "sm_87", "sm_90a", "compute_100"]

# capability -> the entry each build runs on it (None: nothing runs), worked out by hand from
# CUDA's rules: sm_XY needs the same major and minor >= Y; compute_XY needs capability >= X.Y;
# sm_90a only 9.0; SASS before PTX, the newest that runs.
TABLE = {
    (7, 5): {"DEFAULT": None, "SM90": None, "PTX80": None, "MIXED": "sm_75"},
    (8, 0): {"DEFAULT": "sm_80", "SM90": None, "PTX80": "compute_80", "MIXED": None},
    (8, 6): {"DEFAULT": "sm_86", "SM90": None, "PTX80": "compute_80", "MIXED": None},
    (8, 7): {"DEFAULT": "sm_86", "SM90": None, "PTX80": "compute_80", "MIXED": "sm_87"},
    (8, 9): {"DEFAULT": "sm_89", "SM90": None, "PTX80": "compute_80", "MIXED": "sm_87"},
    (9, 0): {"DEFAULT": "sm_90", "SM90": "sm_90", "PTX80": "compute_80", "MIXED": "sm_90a"},
    (10, 0): {"DEFAULT": "compute_90", "SM90": None, "PTX80": "compute_80",
              "MIXED": "compute_100"},
    (12, 0): {"DEFAULT": "compute_90", "SM90": None, "PTX80": "compute_80",
              "MIXED": "compute_100"},
}
BUILDS = {"DEFAULT": DEFAULT, "SM90": SM90, "PTX80": PTX80, "MIXED": MIXED}


@pytest.mark.parametrize("capability", list(TABLE))
@pytest.mark.parametrize("build", list(BUILDS))
def test_which_entry_runs_on_which_card(capability, build):
    expected = TABLE[capability][build]
    assert cuda_arch.arch_for(capability, BUILDS[build]) == expected
    assert cuda_arch.can_run(capability, BUILDS[build]) is (expected is not None)


@pytest.mark.parametrize("entry,capability,runs", [
    ("sm_80", (8, 0), True), ("sm_80", (8, 6), True), ("sm_80", (8, 9), True),
    ("sm_86", (8, 0), False), ("sm_80", (9, 0), False), ("sm_90", (10, 0), False),
    ("sm_100", (10, 0), True), ("sm_100", (12, 0), False), ("sm_120", (12, 0), True),
    ("compute_90", (8, 9), False), ("compute_90", (9, 0), True), ("compute_90", (12, 0), True),
    ("compute_75", (7, 5), True), ("compute_86", (8, 0), False), ("compute_86", (9, 0), True),
    ("sm_90a", (9, 0), True), ("sm_90a", (9, 1), False), ("compute_90a", (10, 0), False),
])
def test_one_entry(entry, capability, runs):
    assert cuda_arch.runs_on(entry, capability) is runs


def test_parse_arch_list():
    assert cuda_arch.parse_arch_list("sm_80,sm_86,sm_89,sm_90,compute_90") == DEFAULT
    assert cuda_arch.parse_arch_list("") == []
    assert cuda_arch.parse_arch_list(" sm_90 , sm_90;compute_90a ") == ["sm_90", "compute_90a"]
    with pytest.raises(ValueError, match="'8.6' is not sm_XY"):
        cuda_arch.parse_arch_list("sm_80,8.6")
    with pytest.raises(TypeError):
        cuda_arch.parse_arch_list(None)


def test_missing_report_ops_mean_unknown(monkeypatch):
    assert cuda_arch._op_text("_no_such_op_in_any_build") is None
    monkeypatch.setattr(cuda_arch, "arch_list_text", lambda: None)
    assert cuda_arch.compiled_archs() is None
    monkeypatch.setattr(cuda_arch, "arch_list_text", lambda: "")
    assert cuda_arch.compiled_archs() == []
    # a report in a form this module cannot read refuses no card: unknown, not an error
    monkeypatch.setattr(cuda_arch, "arch_list_text", lambda: "lto_90,sm_90")
    assert cuda_arch.compiled_archs() is None


def test_build_info_reports_archs_and_cpu_level(monkeypatch):
    info = extension.build_info()
    assert info["cuda_archs"] is None or isinstance(info["cuda_archs"], list)
    assert info["cpu_kernel_level"] is None or isinstance(info["cpu_kernel_level"], str)
    monkeypatch.setattr(cuda_arch, "arch_list_text", lambda: "sm_86,compute_90")
    monkeypatch.setattr(cuda_arch, "cpu_kernel_level", lambda: "avx2")
    info = extension.build_info()
    if extension.LOADED:
        assert info["cuda_archs"] == ["sm_86", "compute_90"]
        assert info["cpu_kernel_level"] == "avx2"
    else:  # no library: nothing is known, whatever the report would say
        assert info["cuda_archs"] is None and info["cpu_kernel_level"] is None


@pytest.fixture
def fake_card(monkeypatch):
    """A fake card (8.6, 'NVIDIA A10') and a counter of capability queries."""
    cuda_arch.reset()
    calls = []

    def capability(index):
        calls.append(index)
        return (8, 6)

    monkeypatch.setattr(torch.cuda, "get_device_capability", capability)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index: "NVIDIA A10")
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    yield calls
    cuda_arch.reset()


def test_card_the_build_cannot_run_raises_one_clear_error(monkeypatch, fake_card):
    monkeypatch.setattr(cuda_arch, "arch_list_text", lambda: "sm_90")
    dev = torch.device("cuda", 0)
    with pytest.raises(RuntimeError) as info:
        cuda_arch.on_cuda_call(dev, True)
    text = str(info.value)
    for part in ("'NVIDIA A10'", "compute capability 8.6", "compiled for sm_90",
                 'TORCH_CUDA_ARCH_LIST="8.6" pip install --no-build-isolation'):
        assert part in text, text
    with pytest.raises(RuntimeError, match="NVIDIA A10"):  # every call, not just the first
        cuda_arch.on_cuda_call(dev, True)
    assert fake_card == [0]  # the card was asked once


def test_card_the_build_runs_is_checked_once_per_device(monkeypatch, fake_card):
    monkeypatch.setattr(cuda_arch, "arch_list_text", lambda: ",".join(DEFAULT))
    for _ in range(3):
        cuda_arch.on_cuda_call(torch.device("cuda", 0), True)
        cuda_arch.on_cuda_call(torch.device("cuda", 1), True)
    cuda_arch.on_cuda_call(torch.device("cuda"), True)  # no index: the current device, 0
    assert fake_card == [0, 1]


def test_unknown_arch_list_is_not_an_error(monkeypatch, fake_card):
    monkeypatch.setattr(cuda_arch, "arch_list_text", lambda: None)  # a build before the report
    cuda_arch.on_cuda_call(torch.device("cuda", 0), True)
    assert fake_card == []


def test_no_cuda_kernels_warns_once_per_process(monkeypatch, fake_card):
    monkeypatch.setattr(cuda_arch, "arch_list_text", lambda: "")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        for index in (0, 0, 1):
            cuda_arch.on_cuda_call(torch.device("cuda", index), False)
    assert [w.category for w in seen] == [cuda_arch.CudaKernelsMissingWarning]
    text = str(seen[0].message)
    assert "pure-PyTorch reference" in text and "built without them" in text
    assert "FORCE_CUDA=1 pip install --no-build-isolation" in text


class _FakeCudaTensor:
    """What _use_kernel reads of z: its device."""

    device = torch.device("cuda", 0)


def test_the_op_path_runs_the_check(monkeypatch, fake_card):
    """functional._use_kernel, the kernel-or-reference decision, consults the check."""
    monkeypatch.setattr(cuda_arch, "arch_list_text", lambda: "sm_90,compute_90")
    monkeypatch.setattr(extension, "KERNEL_DEVICES", frozenset({"cpu", "cuda"}))
    with pytest.raises(RuntimeError, match="compute capability 8.6"):
        functional._use_kernel(_FakeCudaTensor(), "auto")
    assert functional._use_kernel(_FakeCudaTensor(), "reference") is False  # no check
    monkeypatch.setattr(extension, "KERNEL_DEVICES", frozenset({"cpu"}))
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        assert functional._use_kernel(_FakeCudaTensor(), "auto") is False
        assert functional._use_kernel(_FakeCudaTensor(), "auto") is False
        with pytest.raises(ValueError, match="backend='kernel' has no kernel"):
            functional._use_kernel(_FakeCudaTensor(), "kernel")
    assert len([w for w in seen if w.category is cuda_arch.CudaKernelsMissingWarning]) == 1
