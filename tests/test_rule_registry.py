"""The rule registry (ftprop_cuda/rules.py): importable without torch, read by every layer, and
in agreement with the C++ rule list, checked through the compiled ops."""
import math
import re
import subprocess
import sys

import pytest
import torch

import ftprop_cuda
from ftprop_cuda.models import units
from ftprop_cuda.ops import autograd, extension, functional, nn, reference, rules
from ftprop_cuda.train import diagnostics

from conftest import cpu_and_cuda
from helpers import G_BOUNDARY, Z_STEP, assert_same_bits, grid, staircase_boundary

OPS = torch.ops.ftprop_cuda
needs_ext = pytest.mark.skipif(not extension.LOADED, reason="the compiled extension did not load")

# saturated_hinge's staircase code grows with steps: 2 bits up to K = 2, 4 up to 14, 8 up to 254
STAIR_STEPS = (2, 3, 14, 15, 254, 255)


def test_rules_module_imports_without_torch():
    """The command line reads the registry before importing torch."""
    code = (
        "import importlib.util, sys\n"
        "sys.modules['torch'] = None  # any import of torch now raises\n"
        f"spec = importlib.util.spec_from_file_location('rules', {rules.__file__!r})\n"
        "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
        "print(' '.join(m.STEP_RULES), '|', ' '.join(m.STAIRCASE_RULES))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [*rules.STEP_RULES, "|", *rules.STAIRCASE_RULES]


def test_every_layer_reads_the_registry():
    assert ftprop_cuda.STEP_RULES is rules.STEP_RULES
    assert ftprop_cuda.STAIRCASE_RULES is rules.STAIRCASE_RULES
    assert reference.STEP_RULES is rules.STEP_RULES
    assert reference.ESTIMATOR_RULES is rules.ESTIMATOR_RULES
    assert functional.STEP_RULES is rules.STEP_RULES
    assert nn.STAIRCASE_RULES is rules.STAIRCASE_RULES
    assert units.ALL_RULES is rules.ALL_RULES
    assert autograd.SMOOTH_STEP_RULES is rules.SMOOTH_STEP_RULES
    assert autograd.SMOOTH_STAIRCASE_RULES is rules.SMOOTH_STAIRCASE_RULES
    assert diagnostics.has_layer_loss(ftprop_cuda.Step("ramp")) is False
    assert diagnostics.has_layer_loss(ftprop_cuda.Staircase(rule="ste")) is True


def test_registry_records():
    assert [(r.family, r.name) for r in rules.RULES] == (
        [("step", n) for n in rules.STEP_RULES] + [("staircase", n) for n in rules.STAIRCASE_RULES])
    for r in rules.RULES:
        assert rules.get(r.family, r.name) is r
        if r.smooth:  # their code is the 8-bit compact slope code
            assert r.code_bits(3) == 8
        assert r.slope_max > 0
        if not r.estimator:  # a rule that weights by |g| must say by which loss
            assert r.has_layer_loss
    assert rules.ALL_RULES == tuple(dict.fromkeys(rules.STEP_RULES + rules.STAIRCASE_RULES))
    # ste is an estimator and also the linear loss -t z (docs/spec.md, Identities)
    z, t = torch.tensor([0.5, -2.0, 3.0]), torch.tensor([1.0, -1.0, 0.0])
    for family in rules.FAMILIES:
        ste = rules.get(family, "ste")
        assert ste.estimator and torch.equal(ste.loss(z, t, 3, 0.0, 1.0), -t * z)
    with pytest.raises(ValueError, match="staircase rule must be one of 'ste', 'sste'"):
        rules.get("staircase", "hinge")
    with pytest.raises(ValueError, match="family must be one of"):
        rules.get("stairs", "ste")


# ---------------------------------------------------------------------------------------------
# The C++ rule list agrees with the registry (through the compiled ops)
# ---------------------------------------------------------------------------------------------
def _forward(family, z, rule, steps=3, lo=0.0, hi=1.0):
    if family == "step":
        return OPS.step(z, rule, False, True)
    return OPS.staircase(z, steps, lo, hi, rule, True)


def _saved(family, z, rule, steps=3, lo=0.0, hi=1.0, zero_one=False):
    if family == "step":
        return OPS._step_saved(z, rule, zero_one, True)
    return OPS._staircase_saved(z, steps, lo, hi, rule, True)


def _backward(family, g, z, rule, grad_scale, steps=3, lo=0.0, hi=1.0, zero_one=False):
    if family == "step":
        return OPS._step_backward(g, z, rule, zero_one, grad_scale)
    return OPS._staircase_backward(g, z, steps, lo, hi, rule, grad_scale)


def _backward_saved(family, g, code, rule, grad_scale, steps=3, lo=0.0, hi=1.0, zero_one=False):
    if family == "step":
        return OPS._step_backward_saved(g, code, rule, zero_one, grad_scale)
    return OPS._staircase_backward_saved(g, code, steps, lo, hi, rule, grad_scale)


def _listed_names(message):
    """The rule names an unknown-rule error lists after 'one of'."""
    listed = message.split("one of", 1)[1].split(";")[0].splitlines()[0]
    return tuple(re.findall(r"[a-z][a-z0-9_]*", listed))


@needs_ext
@pytest.mark.parametrize("device", cpu_and_cuda())
@pytest.mark.parametrize("family", rules.FAMILIES)
def test_kernels_accept_exactly_the_registry_names(family, device):
    names = tuple(r.name for r in rules.rules_of(family))
    z = torch.linspace(-2, 2, 16, device=device)
    for name in names:
        _forward(family, z, name)
        _saved(family, z, name)
    for call in (_forward, _saved):
        with pytest.raises(ValueError) as info:
            call(family, z, "no_such_rule")
        assert _listed_names(str(info.value)) == names, str(info.value)


def _code_cases():
    for r in rules.RULES:
        for steps in (STAIR_STEPS if r.family == "staircase" else (3,)):
            yield pytest.param(r.family, r.name, steps, id=f"{r.family}-{r.name}-{steps}")


@needs_ext
@pytest.mark.parametrize("device", cpu_and_cuda())
@pytest.mark.parametrize("family,name,steps", list(_code_cases()))
def test_code_bytes_match_registry_bits(family, name, steps, device):
    n = 1000  # a multiple of 8: every packing gives n * bits / 8 bytes
    z = torch.randn(n, device=device)
    bits = rules.get(family, name).code_bits(steps)
    if bits is None:
        with pytest.raises(ValueError, match="no saved-state code"):
            _saved(family, z, name, steps)
        return
    _, code = _saved(family, z, name, steps)
    assert code.dtype == torch.uint8
    assert code.numel() == n * bits // 8, (code.numel(), bits)


def _window_inputs(device):
    """z across every rule's window (all slopes nonzero somewhere), g of both signs, B = 4."""
    gen = torch.Generator().manual_seed(0)
    z = torch.rand(4, 250, generator=gen, dtype=torch.float64) * 4 - 2
    g = torch.randn(4, 250, generator=gen, dtype=torch.float64) * 3
    return z.to(device), g.to(device)


@needs_ext
@pytest.mark.parametrize("device", cpu_and_cuda())
@pytest.mark.parametrize("family,name", [(r.family, r.name) for r in rules.RULES])
def test_estimators_ignore_grad_scale_in_the_kernels(family, name, device):
    record = rules.get(family, name)
    z, g = _window_inputs(device)
    dz = [_backward(family, g, z, name, scale) for scale in (True, False)]
    assert torch.equal(dz[0], dz[1]) == record.estimator
    _, code = _saved(family, z, name)
    dz = [_backward_saved(family, g, code, name, scale) for scale in (True, False)]
    assert torch.equal(dz[0], dz[1]) == record.estimator


def _slope_peak(family, name):
    """A z (float64) where the reference's slope is largest, and that slope."""
    z = torch.linspace(-3, 3, 6001, dtype=torch.float64)
    ones = torch.ones_like(z)
    if family == "step":
        s = reference.step_backward(ones, z, name)
    else:
        s = reference.staircase_backward(ones, z, 3, 0.0, 1.0, name)
    i = int(s.argmax())
    return z[i:i + 1], float(s[i])


@needs_ext
@pytest.mark.parametrize("device", cpu_and_cuda())
@pytest.mark.parametrize("family,name", [(r.family, r.name) for r in rules.RULES if r.smooth])
def test_compact_code_top_level_is_the_slope_max(family, name, device):
    s_max = rules.get(family, name).slope_max
    z, peak = _slope_peak(family, name)
    assert peak == pytest.approx(s_max, rel=1e-12)  # the registry has the formula's maximum
    _, code = _saved(family, z.to(device), name)
    assert code.tolist() == [rules.COMPACT_LEVELS]  # the peak encodes to the top level
    # ... and the kernel decodes level l to l * s_max / 254 (the weighted backward of g = 1)
    levels = torch.tensor([rules.COMPACT_LEVELS, 127, 1, 0], dtype=torch.uint8, device=device)
    g = torch.ones(4, dtype=torch.float64, device=device)
    dz = _backward_saved(family, g, levels, name, True).cpu()
    expected = torch.tensor([1.0, 127 / 254, 1 / 254, 0.0], dtype=torch.float64) * s_max
    torch.testing.assert_close(dz, expected, rtol=1e-12, atol=0)


@needs_ext
@pytest.mark.parametrize("device", cpu_and_cuda())
@pytest.mark.parametrize("family,name", [(r.family, r.name) for r in rules.RULES])
def test_interval_codes_are_lossless_and_smooth_ones_are_not(family, name, device):
    """save='auto' keeps a code exactly for the registry's interval rules: their code must give
    the bits of the backward from z; a smooth rule's 8-bit code must not (it is saved as z)."""
    record = rules.get(family, name)
    assert functional.saves_code(record.smooth, record.code_bits(3), "auto") == (not record.smooth)
    differs = []
    configs = ([(3, 0.0, 1.0, v) for v in (False, True)] if family == "step"
               else [(3, -0.5, 1.5, False), (5, 0.0, 1.0, False)])
    for steps, lo, hi, zero_one in configs:
        zs = Z_STEP if family == "step" else staircase_boundary(steps, lo, hi)
        z, g = grid(zs, G_BOUNDARY, torch.float64, device)
        z, g = z.view(len(zs), -1), g.view(len(zs), -1)
        for grad_scale in (True, False):
            kw = dict(steps=steps, lo=lo, hi=hi, zero_one=zero_one)
            from_z = _backward(family, g, z, name, grad_scale, **kw)
            _, code = _saved(family, z, name, **kw)
            from_code = _backward_saved(family, g, code, name, grad_scale, **kw)
            if record.smooth:
                differs.append(not torch.equal(from_code.nan_to_num(7.0), from_z.nan_to_num(7.0)))
            else:
                assert_same_bits(from_code, from_z)
    assert all(differs) if record.smooth else not differs


def test_count_code_bits_follow_the_count_range():
    """saturated_hinge's count takes K + 2 values (0..K and NaN): the smallest of 2, 4, 8 bits."""
    for steps in range(2, 300):
        bits = rules.staircase_code_bits("saturated_hinge", steps)
        fits = [b for b in (2, 4, 8) if steps + 2 <= 2**b]
        assert bits == (fits[0] if fits else None)
    assert math.isclose(rules.get("step", "lecun_tanh").slope_max, rules.LECUN_A * 2 / 3)
