"""Public API: argument checking, modules, custom-op registration (opcheck, torch.compile),
build information and the fallback when the extension is missing."""
import math
import os
import subprocess
import sys

import pytest
import torch

import ftprop_cuda
from ftprop_cuda import rules
from ftprop_cuda import reference as ref

from conftest import cpu_and_cuda


# ---------------------------------------------------------------------------------------------
# Bad input: a ValueError/TypeError that names the argument, the value and what is accepted.
# ---------------------------------------------------------------------------------------------
Z = torch.randn(4, 3)

BAD_CALLS = [
    (lambda: ftprop_cuda.step(Z, rule="tanh"), ValueError, ["rule", "'tanh'", "soft_hinge"]),
    (lambda: ftprop_cuda.step(Z, rule=None), ValueError, ["rule", "None"]),
    (lambda: ftprop_cuda.step(Z, values="0/1"), ValueError, ["values", "'0/1'", "'pm1'", "'01'"]),
    (lambda: ftprop_cuda.step(Z, grad_scale="yes"), TypeError, ["grad_scale", "'yes'"]),
    (lambda: ftprop_cuda.step(Z, backend="gpu"), ValueError, ["backend", "'gpu'", "'kernel'"]),
    (lambda: ftprop_cuda.step([1.0, 2.0]), TypeError, ["z", "list"]),
    (lambda: ftprop_cuda.step(torch.arange(3)), TypeError, ["z", "int64"]),
    (lambda: ftprop_cuda.step(torch.ones(3, dtype=torch.bool)), TypeError, ["z", "bool"]),
    (lambda: ftprop_cuda.step(torch.ones(3, dtype=torch.complex64)), TypeError, ["z", "complex64"]),
    (lambda: ftprop_cuda.staircase(Z, rule="hinge"), ValueError,
     ["rule", "'hinge'", "'ste'", "'sste'", "'soft_hinge'", "'saturated_hinge'"]),
    (lambda: ftprop_cuda.staircase(Z, steps=1), ValueError, ["steps", ">= 2", "1"]),
    (lambda: ftprop_cuda.staircase(Z, steps=2.5), TypeError, ["steps", "2.5"]),
    (lambda: ftprop_cuda.staircase(Z, steps=True), TypeError, ["steps", "True"]),
    (lambda: ftprop_cuda.staircase(Z, lo=1.0, hi=0.0), ValueError, ["lo", "hi", "1.0", "0.0"]),
    (lambda: ftprop_cuda.staircase(Z, lo=0.5, hi=0.5), ValueError, ["lo", "hi"]),
    (lambda: ftprop_cuda.staircase(Z, lo=math.nan), ValueError, ["lo", "nan"]),
    (lambda: ftprop_cuda.staircase(Z, hi=math.inf), ValueError, ["hi", "inf"]),
    (lambda: ftprop_cuda.staircase(Z, lo="0"), TypeError, ["lo", "'0'"]),
    (lambda: ftprop_cuda.staircase(torch.arange(3)), TypeError, ["z", "int64"]),
    (lambda: ftprop_cuda.staircase(Z, grad_scale=1), TypeError, ["grad_scale"]),
    (lambda: ftprop_cuda.step(torch.ones(3, device="meta"), backend="kernel"), ValueError,
     ["backend", "kernel", "meta"]),
    (lambda: ftprop_cuda.Step(rule="bogus"), ValueError, ["rule", "'bogus'"]),
    (lambda: ftprop_cuda.Step(values=1), ValueError, ["values"]),
    (lambda: ftprop_cuda.Staircase(steps=0), ValueError, ["steps"]),
    (lambda: ftprop_cuda.Staircase(rule="perceptron"), ValueError, ["rule", "'perceptron'"]),
    (lambda: ftprop_cuda.Staircase(backend="triton"), ValueError, ["backend", "'triton'"]),
]


@pytest.mark.parametrize("call,exc,words", BAD_CALLS, ids=[str(i) for i in range(len(BAD_CALLS))])
def test_bad_input_raises_clear_error(call, exc, words):
    with pytest.raises(exc) as info:
        call()
    msg = str(info.value)
    for word in words:
        assert word in msg, f"{word!r} not in {msg!r}"


def test_ops_called_directly_check_their_arguments():
    with pytest.raises(ValueError, match="rule 'nope'"):
        torch.ops.ftprop_cuda.step(Z, "nope", False, True)
    with pytest.raises(ValueError, match="steps"):
        torch.ops.ftprop_cuda.staircase(Z, 1, 0.0, 1.0, "ste", True)
    with pytest.raises(ValueError, match="lo"):
        torch.ops.ftprop_cuda.staircase(Z, 3, 1.0, 0.0, "ste", True)
    with pytest.raises(TypeError, match="floating-point"):
        torch.ops.ftprop_cuda.step(torch.arange(3), "ste", False, True)
    with pytest.raises(ValueError, match="shape"):
        torch.ops.ftprop_cuda._step_backward(torch.ones(3), torch.ones(4), "ste", False, True)


@pytest.mark.parametrize("device", cpu_and_cuda())
@pytest.mark.parametrize("backend", ["auto", "kernel", "reference"])
def test_empty_tensors(backend, device):
    for shape in [(0,), (0, 5), (3, 0, 2)]:
        z = torch.empty(shape, device=device, requires_grad=True)
        y = ftprop_cuda.step(z, backend=backend) + ftprop_cuda.staircase(z, backend=backend)
        y.sum().backward()
        assert y.shape == shape and z.grad.shape == shape


def test_backends_agree_and_auto_uses_the_kernel():
    z = torch.randn(64, 8, requires_grad=True)
    y = ftprop_cuda.step(z, rule="hinge", grad_scale=False)
    assert "ftprop_cuda" in type(y.grad_fn).__name__.lower()  # the custom op's autograd node
    y_ref = ftprop_cuda.step(z, rule="hinge", grad_scale=False, backend="reference")
    g = torch.randn_like(z)
    (dz,) = torch.autograd.grad(y, z, g)
    (dz_ref,) = torch.autograd.grad(y_ref, z, g)
    assert torch.equal(y, y_ref)
    torch.testing.assert_close(dz, dz_ref)


def test_only_z_is_saved_for_backward():
    packed = []

    def pack(t):
        packed.append(t)
        return t

    z = torch.randn(1000, requires_grad=True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y = ftprop_cuda.step(z, backend="kernel")
    assert len(packed) == 1 and packed[0].data_ptr() == z.data_ptr()
    del y


def test_modules():
    step = ftprop_cuda.Step(rule="sste", values="01", grad_scale=False)
    assert repr(step) == "Step(rule='sste', values='01', grad_scale=False, backend='auto', save='auto')"
    stair = ftprop_cuda.Staircase(steps=5, lo=-1, hi=2, rule="saturated_hinge")
    assert repr(stair) == ("Staircase(steps=5, lo=-1.0, hi=2.0, rule='saturated_hinge', "
                           "grad_scale=True, backend='auto', save='auto')")
    z = torch.linspace(-2, 3, 101)
    assert torch.equal(step(z), ref.step_forward(z, "01"))
    assert torch.equal(stair(z), ref.staircase_forward(z, 5, -1.0, 2.0))
    # the package's rule lists are the registry's, and hold at least the rules of docs/spec.md
    assert ftprop_cuda.STEP_RULES == rules.STEP_RULES
    assert ftprop_cuda.STAIRCASE_RULES == rules.STAIRCASE_RULES
    assert {"ste", "sste", "ramp", "soft_hinge", "saturated_hinge", "hinge", "perceptron",
            "sigmoid", "lecun_tanh"} <= set(ftprop_cuda.STEP_RULES)
    assert ftprop_cuda.STAIRCASE_RULES[:4] == ("ste", "sste", "soft_hinge", "saturated_hinge")


# ---------------------------------------------------------------------------------------------
# Custom-op registration
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("device", cpu_and_cuda())
@pytest.mark.parametrize("requires_grad", [False, True])
def test_opcheck(requires_grad, device):
    z = torch.randn(6, 5, device=device, requires_grad=requires_grad)
    g = torch.randn(6, 5, device=device)
    torch.library.opcheck(torch.ops.ftprop_cuda.step.default, (z, "soft_hinge", False, True))
    torch.library.opcheck(torch.ops.ftprop_cuda.staircase.default,
                          (z, 3, 0.0, 1.0, "saturated_hinge", False))
    if not requires_grad:
        torch.library.opcheck(torch.ops.ftprop_cuda._step_backward.default,
                              (g, z, "hinge", True, False))
        torch.library.opcheck(torch.ops.ftprop_cuda._staircase_backward.default,
                              (g, z, 5, -1.0, 1.0, "soft_hinge", False))


def _model(backend):
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(16, 32), ftprop_cuda.Step(backend=backend),
        torch.nn.Linear(32, 32),
        ftprop_cuda.Staircase(steps=3, rule="saturated_hinge", backend=backend),  # packed code
        torch.nn.Linear(32, 4),
    )


@pytest.mark.parametrize("backend", ["kernel", "reference"])
def test_compile_fullgraph_trains(backend):
    """Linear -> Step -> Linear -> Staircase -> Linear trains under torch.compile(fullgraph)."""
    torch._dynamo.reset()
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(256, 16, generator=gen)
    w = torch.randn(16, 4, generator=gen)
    labels = (x @ w).argmax(1)

    eager, compiled_model = _model(backend), _model(backend)
    compiled = torch.compile(compiled_model, fullgraph=True)
    # the compiled graph computes what eager computes, forward and backward
    y_e, y_c = eager(x), compiled(x)
    torch.testing.assert_close(y_c, y_e)
    torch.nn.functional.cross_entropy(y_e, labels).backward()
    torch.nn.functional.cross_entropy(y_c, labels).backward()
    for p_e, p_c in zip(eager.parameters(), compiled_model.parameters()):
        torch.testing.assert_close(p_c.grad, p_e.grad)

    opt = torch.optim.Adam(compiled_model.parameters(), lr=1e-2)
    losses = []
    for _ in range(60):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(compiled(x), labels)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.6 * losses[0], losses[::10]
    accuracy = (compiled(x).argmax(1) == labels).float().mean().item()
    assert accuracy > 0.6, accuracy


# ---------------------------------------------------------------------------------------------
# Build
# ---------------------------------------------------------------------------------------------
def test_build_info():
    info = ftprop_cuda.build_info()
    assert info["torch"] == torch.__version__
    assert info["cpu_kernels"] is True, info  # the CPU kernels are always built
    assert isinstance(info["cuda_kernels"], bool)
    assert (info["cuda_version"] is None) == (not info["cuda_kernels"])
    has_cuda = torch._C._dispatch_has_kernel_for_dispatch_key("ftprop_cuda::step", "CUDA")
    assert info["cuda_kernels"] == has_cuda


@pytest.mark.skipif(os.environ.get("FTPROP_EXPECT_CUDA") != "1",
                    reason="FTPROP_EXPECT_CUDA=1 not set (CI sets it for its FORCE_CUDA build)")
def test_cuda_kernels_were_compiled():
    info = ftprop_cuda.build_info()
    assert info["cuda_kernels"], f"the CUDA kernels are missing from this build: {info}"
    for op in ("step", "staircase", "_step_backward", "_staircase_backward"):
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f"ftprop_cuda::{op}", "CUDA")


_NO_EXT = (
    "import sys; sys.modules['ftprop_cuda._C'] = None\n"  # makes `from . import _C` fail
    "import warnings, torch\n"
    "with warnings.catch_warnings(record=True) as w:\n"
    "    warnings.simplefilter('always')\n"
    "    import ftprop_cuda\n"
    "    ftprop_cuda.step\n"  # the package loads its ops (and the extension) on first use
    "assert any('falling back' in str(x.message).lower() for x in w), [str(x.message) for x in w]\n"
    "info = ftprop_cuda.build_info()\n"
    "assert not info['cpu_kernels'] and info['extension_error'], info\n"
    "z = torch.randn(5, requires_grad=True)\n"
    "ftprop_cuda.step(z).sum().backward()\n"
    "try:\n"
    "    ftprop_cuda.step(z, backend='kernel')\n"
    "except ValueError as e:\n"
    "    assert 'failed to load' in str(e), e\n"
    "else:\n"
    "    raise SystemExit('kernel backend did not fail')\n"
    "print('fallback ok')\n"
)


def test_fallback_without_extension_warns_and_uses_reference(tmp_path):
    env = dict(os.environ, FTPROP_REQUIRE_EXT="0")
    out = subprocess.run([sys.executable, "-c", _NO_EXT], env=env, capture_output=True,
                         text=True, timeout=120, cwd=tmp_path)  # import the installed package
    assert out.returncode == 0 and "fallback ok" in out.stdout, out.stderr


def test_require_ext_turns_fallback_into_error(tmp_path):
    env = dict(os.environ, FTPROP_REQUIRE_EXT="1")
    out = subprocess.run([sys.executable, "-c", _NO_EXT], env=env, capture_output=True,
                         text=True, timeout=120, cwd=tmp_path)
    assert out.returncode != 0 and "ftprop_cuda._C" in out.stderr, out.stderr
    assert "falling back" not in out.stderr  # it raised instead of warning


def test_compile_dynamic_with_scalar_arguments():
    """lo, hi and steps passed as arguments arrive symbolic under dynamic=True: no graph break."""
    torch._dynamo.reset()

    def f(z, steps, lo, hi):
        return ftprop_cuda.staircase(z, steps, lo, hi, rule="saturated_hinge")

    compiled = torch.compile(f, dynamic=True, fullgraph=True)
    z = torch.randn(10, requires_grad=True)
    for steps, lo, hi, n in [(3, 0.0, 1.0, 10), (5, -1.0, 2.0, 13)]:
        x = torch.randn(n, requires_grad=True)
        y = compiled(x, steps, lo, hi)
        assert torch.equal(y, ref.staircase_forward(x.detach(), steps, lo, hi))
        y.sum().backward()
        g = torch.ones(n)
        torch.testing.assert_close(x.grad, ref.staircase_backward(g, x.detach(), steps, lo, hi,
                                                                  "saturated_hinge"))
    with pytest.raises(Exception, match="lo"):
        compiled(z, 3, float("nan"), 1.0)
