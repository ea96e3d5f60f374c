"""No silent wrong answer from the kernel path: second derivatives equal the reference's (or a
clear error), the saved-code backward sees a gradient laid out like the forward output, bad
input (sparse tensors, out-of-range steps, bounds that overflow z's dtype) is named, and
torch.func transforms run through the kernels."""
import itertools
import math

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import ftprop_cuda
from ftprop_cuda import STAIRCASE_RULES, STEP_RULES
from ftprop_cuda.ops.rules import SMOOTH_STEP_RULES

from helpers import G_BOUNDARY, Z_STEP, staircase_boundary

STAIRS = [(3, 0.0, 1.0), (5, -1.0, 2.0), (300, -1.0, 1.0)]  # 2-, 4-bit and no count code


def _inputs(zs, dtype=torch.float64):
    """z: random values and the given boundaries; g (the weight w): random, zeros, boundaries."""
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(60, generator=gen, dtype=dtype) * 1.5
    z = torch.cat([z, torch.tensor(zs, dtype=dtype)])
    gs = [g for g in G_BOUNDARY if math.isfinite(g)]
    w = torch.randn(z.shape, generator=gen, dtype=dtype)
    w[: len(gs)] = torch.tensor(gs, dtype=dtype)
    w[-len(gs):] = torch.tensor(gs, dtype=dtype)
    v = torch.randn(z.shape, generator=gen, dtype=dtype)
    return z, w, v


def _first_and_second(unit, z0, w0, v):
    """dz of (unit(z) * w).sum() built with create_graph, and the derivatives of (dz * v).sum()
    in z and in w; None (no path, as autograd reports it) counts as zeros."""
    z, w = z0.clone().requires_grad_(), w0.clone().requires_grad_()
    (dz,) = torch.autograd.grad((unit(z) * w).sum(), z, create_graph=True)
    if not dz.requires_grad:  # the reference's normalised interval rules: constant in z and w
        return dz, torch.zeros_like(z0), torch.zeros_like(w0)
    d_z, d_w = torch.autograd.grad((dz * v).sum(), (z, w), allow_unused=True)
    zero = torch.zeros_like(z0)
    return dz.detach(), zero if d_z is None else d_z, zero if d_w is None else d_w


def _assert_same_derivatives(kernel, reference, z, w, v):
    got = _first_and_second(kernel, z, w, v)
    want = _first_and_second(reference, z, w, v)
    for name, a, b in zip(("dz", "d2/dz", "d2/dw"), got, want):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12, equal_nan=True, msg=name)


def _step_cases():
    for rule, grad_scale, values, save in itertools.product(
            STEP_RULES, (True, False), ("pm1", "01"), ("auto", "z", "compact")):
        if not (save == "compact" and rule in SMOOTH_STEP_RULES):
            yield rule, grad_scale, values, save


@pytest.mark.parametrize("rule,grad_scale,values,save", list(_step_cases()))
def test_step_double_backward_equals_reference(rule, grad_scale, values, save):
    z, w, v = _inputs(Z_STEP)
    _assert_same_derivatives(
        lambda x: ftprop_cuda.step(x, rule, values, grad_scale, backend="kernel", save=save),
        lambda x: ftprop_cuda.step(x, rule, values, grad_scale, backend="reference"), z, w, v)


@pytest.mark.parametrize("stair", STAIRS, ids=lambda s: f"K{s[0]}")
@pytest.mark.parametrize("save", ["auto", "z", "compact"])
@pytest.mark.parametrize("grad_scale", [True, False])
@pytest.mark.parametrize("rule", STAIRCASE_RULES)
def test_staircase_double_backward_equals_reference(rule, grad_scale, save, stair):
    if save == "compact" and rule == "soft_hinge":
        pytest.skip("no second derivative from an 8-bit slope code: see the error test")
    steps, lo, hi = stair
    z, w, v = _inputs([x for x in staircase_boundary(steps, lo, hi) if math.isfinite(x)])
    _assert_same_derivatives(
        lambda x: ftprop_cuda.staircase(x, steps, lo, hi, rule, grad_scale, backend="kernel",
                                        save=save),
        lambda x: ftprop_cuda.staircase(x, steps, lo, hi, rule, grad_scale, backend="reference"),
        z, w, v)


def test_issue_example_second_derivative_is_not_lost():
    z = torch.randn(50, dtype=torch.float64, requires_grad=True)
    w = torch.randn(50, dtype=torch.float64, requires_grad=True)
    (gz,) = torch.autograd.grad((ftprop_cuda.step(z, backend="kernel") * w).sum(), z,
                                create_graph=True)
    (gw,) = torch.autograd.grad(gz.sum(), w, allow_unused=True)
    assert gw is not None
    torch.testing.assert_close(gw, 1 - torch.tanh(z.detach()) ** 2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_create_graph_keeps_the_kernels_first_derivative(dtype):
    """Under create_graph the first derivative is still the kernel's, bit for bit."""
    z = torch.randn(300, dtype=dtype) * 2
    g = torch.randn(300, dtype=dtype)
    for unit in (lambda x: ftprop_cuda.step(x, "sigmoid", backend="kernel"),
                 lambda x: ftprop_cuda.step(x, "hinge", backend="kernel"),
                 lambda x: ftprop_cuda.staircase(x, 4, -1.0, 1.0, "soft_hinge", backend="kernel"),
                 lambda x: ftprop_cuda.staircase(x, 4, -1.0, 1.0, "saturated_hinge",
                                                 backend="kernel")):
        x = z.clone().requires_grad_()
        (plain,) = torch.autograd.grad(unit(x), x, g)
        x = z.clone().requires_grad_()
        (built,) = torch.autograd.grad(unit(x), x, g.clone().requires_grad_(), create_graph=True)
        assert built.requires_grad and torch.equal(plain, built.detach())


@pytest.mark.parametrize("unit", [
    lambda x: ftprop_cuda.step(x, "soft_hinge", backend="kernel", save="compact"),
    lambda x: ftprop_cuda.step(x, "ramp", values="01", grad_scale=False, backend="kernel",
                               save="compact"),
    lambda x: ftprop_cuda.staircase(x, 3, 0.0, 1.0, "soft_hinge", backend="kernel",
                                    save="compact"),
], ids=["step", "step-ramp", "staircase"])
def test_compact_code_refuses_a_second_derivative(unit):
    z = torch.randn(20, dtype=torch.float64, requires_grad=True)
    w = torch.randn(20, dtype=torch.float64, requires_grad=True)
    with pytest.raises(RuntimeError, match=r"save='compact'.*save='auto' or save='z'"):
        torch.autograd.grad((unit(z) * w).sum(), z, create_graph=True)
    (dz,) = torch.autograd.grad((unit(z) * w).sum(), z)  # a plain backward still works
    assert torch.isfinite(dz).all()


# ---------------------------------------------------------------------------------------------
# Layout: the saved code is in the forward output's memory order, so the backward from a code
# must hand the op a gradient with the output's strides.
# ---------------------------------------------------------------------------------------------
class _GradStrides(TorchDispatchMode):
    """Records the strides of the gradient each saved-code backward op receives."""

    OPS = ("_step_backward_saved", "_staircase_backward_saved")

    def __init__(self):
        super().__init__()
        self.seen = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.namespace == "ftprop_cuda" and func._opname in self.OPS:
            self.seen.append(args[0].stride())
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("unit,reference", [
    (lambda x: ftprop_cuda.step(x, "hinge", backend="kernel"),
     lambda x: ftprop_cuda.step(x, "hinge", backend="reference")),
    (lambda x: ftprop_cuda.step(x, "sigmoid", backend="kernel", save="compact"),
     lambda x: ftprop_cuda.step(x, "sigmoid", backend="reference")),
    (lambda x: ftprop_cuda.staircase(x, 5, -1.0, 1.0, "saturated_hinge", backend="kernel"),
     lambda x: ftprop_cuda.staircase(x, 5, -1.0, 1.0, "saturated_hinge", backend="reference")),
], ids=["step-code", "step-compact", "staircase-code"])
@pytest.mark.parametrize("z_format,g_format", [
    (torch.channels_last, torch.contiguous_format),
    (torch.contiguous_format, torch.channels_last),
], ids=["z-channels-last", "g-channels-last"])
def test_saved_code_backward_gets_the_output_layout(unit, reference, z_format, g_format):
    z0 = torch.randn(3, 4, 5, 6).to(memory_format=z_format)
    g = torch.randn(3, 4, 5, 6).to(memory_format=g_format)
    z = z0.clone(memory_format=torch.preserve_format).requires_grad_()
    y = unit(z)
    with _GradStrides() as seen:
        y.backward(g)
    assert seen.seen == [y.stride()]
    z_ref = z0.clone().requires_grad_()
    reference(z_ref).backward(g)
    torch.testing.assert_close(z.grad, z_ref.grad, rtol=0, atol=1.0 / 254)  # compact code step


# ---------------------------------------------------------------------------------------------
# Bad input: one clear exception naming the argument, instead of a dispatcher dump, a silent
# wrong answer or an overflow.
# ---------------------------------------------------------------------------------------------
Z = torch.randn(4, 3)

BAD_CALLS = [
    (lambda: ftprop_cuda.step(Z.to_sparse()), TypeError,
     ["z", "torch.sparse_coo", "strided", ".to_dense()"]),
    (lambda: ftprop_cuda.staircase(Z.to_sparse(), backend="reference"), TypeError,
     ["z", "torch.sparse_coo", ".to_dense()"]),
    (lambda: ftprop_cuda.step(Z.to_sparse_csr(), backend="kernel"), TypeError,
     ["z", "torch.sparse_csr", ".to_dense()"]),
    (lambda: ftprop_cuda.staircase(Z, steps=2**63), ValueError, ["steps", "2**24", str(2**63)]),
    (lambda: ftprop_cuda.staircase(Z, steps=2**63, backend="reference"), ValueError,
     ["steps", "2**24"]),
    (lambda: ftprop_cuda.staircase(Z, steps=2**24 + 1), ValueError, ["steps", "16777216"]),
    (lambda: ftprop_cuda.Staircase(steps=2**40), ValueError, ["steps", "2**24"]),
    (lambda: ftprop_cuda.staircase(Z, lo=10**400, hi=10**401), ValueError,
     ["lo", "float64", "401 characters"]),
    (lambda: ftprop_cuda.Staircase(lo=-(10**400)), ValueError, ["lo"]),
    (lambda: ftprop_cuda.staircase(Z, lo=-3.4e38, hi=3.4e38), ValueError,
     ["hi - lo", "torch.float32", "lo=-3.4e+38", "hi=3.4e+38"]),
    (lambda: ftprop_cuda.staircase(Z, hi=1e39), ValueError, ["hi", "torch.float32", "1e+39"]),
    (lambda: ftprop_cuda.staircase(Z, lo=-1e39, backend="reference"), ValueError,
     ["lo", "torch.float32", "-1e+39"]),
    (lambda: ftprop_cuda.staircase(Z.half(), hi=1e5), ValueError,
     ["hi", "torch.float16", "65504", "100000.0"]),
    (lambda: ftprop_cuda.staircase(Z.bfloat16(), lo=-2e38, hi=2e38), ValueError,
     ["hi - lo", "torch.bfloat16", "torch.float32"]),
    (lambda: ftprop_cuda.staircase(Z, hi=1e38), ValueError,
     ["B * (hi - lo)", "B = z.shape[0] = 4"]),
    (lambda: ftprop_cuda.staircase(Z, steps=1000, hi=1e36), ValueError,
     ["K * B * (hi - lo)", "K = steps = 1000"]),
    (lambda: ftprop_cuda.staircase(Z.double(), lo=-1e308, hi=1e308), ValueError,
     ["hi - lo", "torch.float64"]),
    (lambda: ftprop_cuda.Staircase(hi=1e39)(Z), ValueError, ["hi", "torch.float32"]),
]


@pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta")
@pytest.mark.parametrize("call,exc,words", BAD_CALLS, ids=[str(i) for i in range(len(BAD_CALLS))])
def test_bad_input_raises_clear_error(call, exc, words):
    with pytest.raises(exc) as info:
        call()
    msg = str(info.value)
    assert "\n" not in msg and len(msg) < 400, msg
    for word in words:
        assert word in msg, f"{word!r} not in {msg!r}"


@pytest.mark.parametrize("backend", ["kernel", "reference"])
def test_bounds_at_the_limits_still_work(backend):
    """The largest accepted steps and bounds give finite outputs and gradients."""
    z = torch.linspace(-3, 3, 64).requires_grad_()
    for dtype, kwargs in [(torch.float32, dict(steps=2**24, lo=-1e28, hi=1e28)),
                          (torch.float16, dict(steps=3, lo=-65504.0, hi=65504.0)),
                          (torch.float32, dict(steps=2, lo=-1e36, hi=1e36))]:
        x = z.detach().to(dtype).requires_grad_()
        y = ftprop_cuda.staircase(x, rule="soft_hinge", grad_scale=False, backend=backend,
                                  **kwargs)
        y.sum().backward()
        assert torch.isfinite(y).all() and torch.isfinite(x.grad).all()
        ref = ftprop_cuda.staircase(x.detach(), backend="reference", **kwargs)
        assert torch.equal(y.detach(), ref)


# ---------------------------------------------------------------------------------------------
# torch.func transforms through the kernels (the ops have no batching rule: vmap runs torch's
# per-slice fallback, which warns about its speed).
# ---------------------------------------------------------------------------------------------
FUNC_UNITS = [
    ("step", "soft_hinge", True, "auto"), ("step", "sigmoid", False, "z"),
    ("step", "hinge", False, "auto"), ("step", "sste", True, "auto"), ("step", "ste", True, "auto"),
    ("staircase", "soft_hinge", False, "auto"), ("staircase", "saturated_hinge", True, "auto"),
    ("staircase", "sste", True, "compact"),
]


def _unit(kind, rule, grad_scale, save, backend):
    if kind == "step":
        return lambda x: ftprop_cuda.step(x, rule, "pm1", grad_scale, backend=backend, save=save)
    return lambda x: ftprop_cuda.staircase(x, 4, -1.0, 1.0, rule, grad_scale, backend=backend,
                                           save=save)


@pytest.mark.filterwarnings("ignore:There is a performance drop")
@pytest.mark.parametrize("kind,rule,grad_scale,save", FUNC_UNITS,
                         ids=["-".join(map(str, u)) for u in FUNC_UNITS])
def test_torch_func_transforms_through_the_kernel(kind, rule, grad_scale, save):
    gen = torch.Generator().manual_seed(3)
    z = torch.randn(5, 6, generator=gen, dtype=torch.float64) * 1.5
    w = torch.randn(5, 6, generator=gen, dtype=torch.float64)
    zs = torch.randn(3, 5, 6, generator=gen, dtype=torch.float64)
    results = {}
    for backend in ("kernel", "reference"):
        unit = _unit(kind, rule, grad_scale, save, backend)

        def loss(x):
            return (unit(x) * w).sum()

        def penalty(x):  # a second derivative: the gradient's own gradient
            return (torch.func.grad(loss)(x) * torch.tanh(x)).sum()

        _, vjp = torch.func.vjp(unit, z)
        results[backend] = [
            torch.func.grad(loss)(z), vjp(w)[0], torch.func.jacrev(unit)(z[0]),
            torch.func.grad(penalty)(z), torch.func.vmap(torch.func.grad(loss))(zs),
        ]
    # vmap hands each slice to the unit: the normalised rules' B is the slice's first dimension
    reference = _unit(kind, rule, grad_scale, save, "reference")
    for i in range(zs.shape[0]):
        x = zs[i].clone().requires_grad_()
        (want,) = torch.autograd.grad((reference(x) * w).sum(), x)
        torch.testing.assert_close(results["kernel"][-1][i], want, rtol=1e-9, atol=1e-12)
    for name, a, b in zip(("grad", "vjp", "jacrev", "grad of grad", "vmap of grad"),
                          results["kernel"], results["reference"]):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12, msg=name)


def test_torch_func_through_a_compact_code_names_the_save_modes():
    def loss(x):
        return ftprop_cuda.step(x, "soft_hinge", backend="kernel", save="compact").sum()

    with pytest.raises(RuntimeError, match=r"save='compact'.*torch.func.*save='auto' or save='z'"):
        torch.func.grad(loss)(torch.randn(7))


@pytest.mark.filterwarnings("error:There is a performance drop")
@pytest.mark.parametrize("in_dim", [0, 1, 2])
def test_vmap_batches_the_forward_ops(in_dim):
    """The forward ops have a batching rule (no per-slice loop, no performance warning)."""
    z = torch.randn(3, 4, 5)
    for unit in (lambda x: ftprop_cuda.step(x, "sigmoid", "01", backend="kernel"),
                 lambda x: ftprop_cuda.staircase(x, 4, -1.0, 1.0, backend="kernel")):
        y = torch.func.vmap(unit, in_dims=in_dim)(z)
        assert torch.equal(y, torch.stack([unit(z.select(in_dim, i))
                                           for i in range(z.shape[in_dim])]))


def test_range_checks_under_dynamic_compile():
    """steps, lo, hi arrive symbolic under dynamic=True: the checks still name the argument."""
    torch._dynamo.reset()

    def f(z, steps, lo, hi):
        return ftprop_cuda.staircase(z, steps, lo, hi, rule="saturated_hinge")

    compiled = torch.compile(f, dynamic=True, fullgraph=True)
    x = torch.randn(10, requires_grad=True)
    assert torch.equal(compiled(x, 3, 0.0, 1.0), f(x, 3, 0.0, 1.0))
    for args, words in [((2**25, 0.0, 1.0), "steps must be an integer >= 2 and <= 2"),
                        ((1, 0.0, 1.0), "got 1"),
                        ((3, 0.0, 1e39), "hi must be finite in z's dtype torch.float32"),
                        ((3, -3.4e38, 3.4e38), "hi - lo overflows torch.float32")]:
        with pytest.raises(Exception, match=words):
            compiled(x, *args)


@pytest.mark.parametrize("backend", ["kernel", "reference"])
def test_forward_mode_ad_raises(backend):
    # the kernel path gave a tangent of None with no error before the check
    fwad = torch.autograd.forward_ad
    z = torch.randn(5)
    with fwad.dual_level():
        dual = fwad.make_dual(z, torch.ones(5))
        for call in (lambda: ftprop_cuda.step(dual, backend=backend),
                     lambda: ftprop_cuda.staircase(dual, backend=backend)):
            with pytest.raises(NotImplementedError):
                call()
    # outside a dual level nothing changes
    assert torch.equal(ftprop_cuda.step(z, backend=backend), ftprop_cuda.reference.step_forward(z))
