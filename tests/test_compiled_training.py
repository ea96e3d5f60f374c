"""Inside torch.compile the units run as aten ops (ftprop_cuda.ops.functional._decompose_under_compile):
forward bits as the reference's, backward within tolerance, static and dynamic shapes, no opaque
op left in the graph where the decomposition applies, and lean mode's bytes under compile."""
import os
import sys

import pytest
import torch

import ftprop_cuda
from ftprop_cuda.ops import extension, reference as ref
from ftprop_cuda.ops.rules import STAIRCASE_RULES, STEP_RULES

from helpers import (BACKWARD_TOL, DTYPES, G_BOUNDARY, Z_STEP, assert_same_bits, grid,
                     staircase_boundary)
from ftprop_cuda.ops.rules import get as rule_record

# The compiler's tanh/exp may round differently from the reference's by an ulp; where a smooth
# slope is at the limit of float32 (1 - tanh(z)^2 at |z| ~ 9) that is 0 against a tiny number,
# and an infinite incoming gradient then gives NaN against +-inf (docs/spec.md, "Precision").
G_FINITE = [g for g in G_BOUNDARY if abs(g) != float("inf")]


def _gs(family, rule):
    return G_FINITE if rule_record(family, rule).smooth else G_BOUNDARY

needs_kernel = pytest.mark.skipif("cpu" not in extension.KERNEL_DEVICES, reason="no CPU kernel")


def _graphs():
    """A torch.compile backend that records the Dynamo graphs' code and runs them eagerly."""
    codes = []

    def backend(gm, example_inputs):
        codes.append(gm.code)
        return gm.forward

    return codes, backend


# Every rule in float32; the other dtypes (a compile each) for one smooth and one interval rule.
STEP_CASES = ([(torch.float32, r) for r in STEP_RULES]
              + [(d, r) for d in DTYPES if d != torch.float32 for r in ("soft_hinge", "sste")])
STAIRCASE_CASES = ([(torch.float32, r) for r in STAIRCASE_RULES]
                   + [(d, "soft_hinge") for d in DTYPES if d != torch.float32])


@needs_kernel
@pytest.mark.parametrize("values", ["pm1", "01"])
@pytest.mark.parametrize("dtype,rule", STEP_CASES)
def test_compiled_step_matches_the_reference(dtype, values, rule):
    torch._dynamo.reset()
    z, g = grid(Z_STEP, _gs("step", rule), dtype, "cpu")
    z.requires_grad_(True)

    def f(z):
        return ftprop_cuda.step(z, rule, values, backend="kernel")

    y = torch.compile(f, fullgraph=True)(z)
    assert_same_bits(y, ref.step_forward(z.detach(), values))
    (dz,) = torch.autograd.grad(y, z, g)
    expected = ref.step_backward(g, z.detach(), rule, values)
    torch.testing.assert_close(dz, expected, equal_nan=True, **BACKWARD_TOL[dtype])


@needs_kernel
@pytest.mark.parametrize("steps,lo,hi", [(3, 0.0, 1.0), (5, -1.0, 3.0)])
@pytest.mark.parametrize("dtype,rule", STAIRCASE_CASES)
def test_compiled_staircase_matches_the_reference(dtype, steps, lo, hi, rule):
    torch._dynamo.reset()
    z, g = grid(staircase_boundary(steps, lo, hi), _gs("staircase", rule), dtype, "cpu")
    z.requires_grad_(True)

    def f(z):
        return ftprop_cuda.staircase(z, steps, lo, hi, rule, backend="kernel")

    y = torch.compile(f, fullgraph=True)(z)
    assert_same_bits(y, ref.staircase_forward(z.detach(), steps, lo, hi))
    (dz,) = torch.autograd.grad(y, z, g)
    expected = ref.staircase_backward(g, z.detach(), steps, lo, hi, rule)
    torch.testing.assert_close(dz, expected, equal_nan=True, **BACKWARD_TOL[dtype])


@needs_kernel
def test_compiled_graph_holds_aten_ops_not_the_opaque_kernel():
    torch._dynamo.reset()
    codes, backend = _graphs()
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), ftprop_cuda.Step(backend="kernel"),
                                torch.nn.Linear(8, 8), ftprop_cuda.Staircase(backend="kernel"))
    x = torch.randn(4, 8)
    out = torch.compile(model, backend=backend, fullgraph=True)(x)
    out.sum().backward()
    text = "\n".join(codes)
    assert codes and "ftprop_cuda" not in text, text
    # eager mode still runs the kernels
    with torch.autograd.profiler.profile() as prof:
        model(x)
    assert any("ftprop_cuda::step" in e.name for e in prof.function_events)


@needs_kernel
@pytest.mark.parametrize("nonlin,rule", [("step", "soft_hinge"), ("step", "sste"),
                                         ("qrelu", "soft_hinge")])
def test_compiled_model_is_the_compiled_reference(nonlin, rule):
    """The package's model under torch.compile gives the partitioner the very same forward and
    backward graphs as the reference model: it cannot be slower or keep more than the compiled
    reference (what bench_train measures, up to the machine's noise)."""
    from torch._dynamo.backends.common import aot_autograd
    from torch._functorch.partitioners import min_cut_rematerialization_partition
    from ftprop_cuda.models import build_model

    x = torch.randn(4, 3, 32, 32)
    codes = {}
    for backend in ("reference", "kernel"):
        torch._dynamo.reset()
        torch.manual_seed(0)
        model = build_model("convnet4", nonlin=nonlin, rule=rule, backend=backend,
                            memory="standard").train()

        def keep(kind, backend=backend):
            def compiler(gm, example_inputs):
                codes[backend, kind] = gm.code
                return gm.forward
            return compiler

        compiled = torch.compile(model, fullgraph=True, backend=aot_autograd(
            fw_compiler=keep("forward"), bw_compiler=keep("backward"),
            partition_fn=min_cut_rematerialization_partition))
        compiled(x).sum().backward()
    for kind in ("forward", "backward"):
        assert codes["kernel", kind] == codes["reference", kind], kind
    assert "ftprop_cuda" not in codes["kernel", "forward"] + codes["kernel", "backward"]


@needs_kernel
@pytest.mark.parametrize("family", ["step", "staircase"])
def test_dynamic_shapes_compile_once_and_stay_exact(family):
    torch._dynamo.reset()

    def f(z):
        if family == "step":
            return ftprop_cuda.step(z, "sste", backend="kernel")
        return ftprop_cuda.staircase(z, 5, -1.0, 2.0, "saturated_hinge", backend="kernel")

    compiled = torch.compile(f, dynamic=True, fullgraph=True)
    for shape in [(7,), (3, 11), (2, 5, 13), (0, 4)]:
        z = (torch.randn(shape) * 2).requires_grad_(True)
        y = compiled(z)
        expected = f(z.detach())
        assert_same_bits(y, expected)
        if z.numel():
            g = torch.randn(shape)
            (dz,) = torch.autograd.grad(y, z, g)
            z2 = z.detach().requires_grad_(True)
            (dz_eager,) = torch.autograd.grad(f(z2), z2, g)
            torch.testing.assert_close(dz, dz_eager)


@needs_kernel
def test_compile_lean_trains_like_eager_and_checks_its_budget():
    from ftprop_cuda.memory import compile_lean

    torch._dynamo.reset()
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.MaxPool2d(2),
                                ftprop_cuda.Step(), torch.nn.Flatten(), torch.nn.Linear(36, 3))
    x, y = torch.randn(5, 3, 8, 8), torch.tensor([0, 1, 2, 0, 1])
    compiled = compile_lean(model, backend="aot_eager", channels_last=True)
    loss = torch.nn.functional.cross_entropy(compiled(x), y)
    loss.backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    torch.nn.functional.cross_entropy(model(x), y).backward()
    for a, p in zip(grads, model.parameters()):
        torch.testing.assert_close(a, p.grad)
    assert set(compiled.state_dict()) == {"module." + k for k in model.state_dict()}
    # On the CPU its first call stored the convolution weight channels-last, values unchanged;
    # the 1-D and 2-D parameters are as they were.
    weight = model[0].weight
    assert weight.is_contiguous(memory_format=torch.channels_last)
    assert not weight.is_contiguous()
    assert model[4].weight.is_contiguous() and model[0].bias.is_contiguous()
    torch.manual_seed(0)
    fresh = torch.nn.Conv2d(3, 4, 3)
    assert torch.equal(weight, fresh.weight)
    for bad in (0, 1.5, "half", True):
        with pytest.raises(ValueError, match="budget must be a number in"):
            compile_lean(model, bad)
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        compile_lean(lambda x: x)


@needs_kernel
def test_compile_lean_leaves_a_ddp_models_layout_alone(tmp_path):
    """DistributedDataParallel lays out its gradient buckets by the parameters' strides when it
    wraps the model: compile_lean must not change them afterwards (the trainer converts before
    wrapping, with params_channels_last)."""
    import warnings
    import torch.distributed as dist
    from ftprop_cuda.memory import compile_lean, params_channels_last

    torch._dynamo.reset()
    dist.init_process_group("gloo", rank=0, world_size=1,
                            init_method=f"file://{tmp_path / 'store'}")
    try:
        for convert_first in (False, True):
            torch.manual_seed(0)
            net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), ftprop_cuda.Step(),
                                      torch.nn.Flatten(), torch.nn.Linear(144, 3))
            if convert_first:
                params_channels_last(net)
            ddp = torch.nn.parallel.DistributedDataParallel(net)
            compiled = compile_lean(ddp, backend="aot_eager")
            with warnings.catch_warnings():
                warnings.filterwarnings("error", message=".*strides do not match.*")
                compiled(torch.randn(2, 3, 8, 8)).sum().backward()
            assert net[0].weight.is_contiguous(memory_format=torch.channels_last) \
                == convert_first
            assert net[0].weight.is_contiguous() != convert_first
    finally:
        dist.destroy_process_group()


BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")


@needs_kernel
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_compiled_held_bytes_convnet4():
    """Held bytes under compile (bench_train's convnet4, batch 64): the package compiled keeps no
    more than the compiled reference; compiled in lean mode at most 0.60x of it (the issue's
    target). Every compiled variant stores its convolution weights channels-last first, as the
    trainer does with --compile on the CPU (otherwise the compiled graph keeps a channels-last
    copy of each weight). Measured at 0.591x (5.09 / 8.61 MiB) on 2026-12-03 with torch 2.14.1
    (0.601x with the weights left contiguous)."""
    sys.path.insert(0, BENCH)
    try:
        import held_memory
    finally:
        sys.path.remove(BENCH)
    held = {v: held_memory.held_bytes("convnet4", v, batch=64, timeout=1200)["held_bytes"]
            for v in ("ref_compiled", "kernel_compiled", "kernel_lean_compiled")}
    assert held["ref_compiled"] > 1 << 20, held
    assert held["kernel_compiled"] <= 1.0 * held["ref_compiled"] + 65536, held
    assert held["kernel_lean_compiled"] <= 0.60 * held["ref_compiled"], held
