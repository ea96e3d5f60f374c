"""Independent conformance tests of the public API against the math contract, docs/spec.md.

The oracle below is written from docs/spec.md alone (not from ftprop_cuda.reference or the
kernels):
- forward passes are recomputed in the op-math precision the contract prescribes
  (float16/bfloat16 in float32 and rounded once, float32 in float32, float64 in float64) and
  compared as bits;
- backward passes are recomputed from the contract's formulas: each unit's slope factor (and
  the staircase's u = (z - lo) / (hi - lo) with everything derived from it) in the op-math
  precision the contract fixes, literally in the order written, then multiplied by g (or
  -t / B ...) in float64; compared with a stated tolerance, NaN and infinities exactly.
"""
import math

import pytest
import torch

import ftprop_cuda

F16, BF16, F32, F64 = torch.float16, torch.bfloat16, torch.float32, torch.float64
DTYPES = [F16, BF16, F32, F64]
DT_IDS = ["f16", "bf16", "f32", "f64"]

CONTRACT_STEP_RULES = ("ste", "sste", "ramp", "soft_hinge", "saturated_hinge", "hinge",
                       "perceptron", "sigmoid", "lecun_tanh")
CONTRACT_STAIRCASE_RULES = ("ste", "sste", "soft_hinge", "saturated_hinge")
ESTIMATORS = ("ste", "sste", "ramp")
# save="compact" keeps an 8-bit slope code for the rules whose slope is not an interval
# indicator (the docstring's "smooth rules": 'auto' keeps z for them, which includes ramp).
COMPACT_APPROX = ("ramp", "soft_hinge", "sigmoid", "lecun_tanh")
# (backend, save) pairs that must be exact with respect to the contract.
CONFIGS = [("reference", "auto"), ("kernel", "auto"), ("kernel", "z"), ("auto", "auto")]
CFG_IDS = ["ref", "kernel-auto", "kernel-z", "auto"]
# The forward must be exact whatever is saved for the backward, 'compact' included.
FWD_CONFIGS = CONFIGS + [("kernel", "compact")]
FWD_IDS = CFG_IDS + ["kernel-compact"]
# (steps K, lo, hi): the paper's K = 3 on [0, 1], K = 5, K = 2, and shifted / wider ranges whose
# lo, hi and hi - lo are exact in every dtype (so the op-math reading of lo, hi is unambiguous).
STAIR_CFGS = [(3, 0.0, 1.0), (5, 0.0, 1.0), (2, 0.0, 1.0), (3, -1.0, 3.0), (5, -2.5, 1.5),
              (4, 0.5, 2.0), (7, -8.0, -1.0)]

INF, NAN = math.inf, math.nan
# Tolerances for backward comparisons: |got - exp| <= rtol |exp| + atol * scale + floor, where
# scale is the magnitude of the incoming factor (|g|, or 1 / (B (hi - lo)) in the unweighted
# mode) times the rule's largest slope. atol absorbs the cancellation in 1 - tanh^2 and
# 2 p (1 - p) evaluated in op-math precision; floor is half a float16 subnormal spacing.
TOL = {F16: (2e-3, 1e-6, 3e-8), BF16: (1.6e-2, 1e-6, 0.0), F32: (1e-5, 1e-6, 0.0),
       F64: (1e-12, 1e-14, 0.0)}


def opmath(dtype):
    return F64 if dtype == F64 else F32


def int_view_dtype(dtype):
    return {F16: torch.int16, BF16: torch.int16, F32: torch.int32, F64: torch.int64}[dtype]


def bits(x):
    return x.contiguous().view(int_view_dtype(x.dtype))


def nextafter(x, up):
    """Neighbouring representable value of each finite x in x's own dtype (bit arithmetic)."""
    x = x.clone()
    b = bits(x).clone()
    zero = x == 0
    pos = x > 0
    step = torch.where(pos == up, torch.ones_like(b), -torch.ones_like(b))
    b = b + step
    out = b.view(x.dtype).clone()
    tiny = torch.ones_like(b).view(x.dtype)  # smallest positive subnormal
    out[zero] = tiny[zero] if up else -tiny[zero]
    return out


def with_neighbours(vals, dtype):
    """vals (python floats) cast to dtype, plus each finite one's two neighbours in dtype."""
    t = torch.tensor(vals, dtype=F64).to(dtype)
    fin = t[torch.isfinite(t)]
    return torch.cat([t, nextafter(fin, True), nextafter(fin, False)])


def assert_same_bits(got, exp, msg=""):
    """Bitwise equality, NaN matched by position only (any NaN payload)."""
    assert got.dtype == exp.dtype and got.shape == exp.shape, (got.dtype, exp.dtype, got.shape,
                                                               exp.shape)
    gn, en = torch.isnan(got), torch.isnan(exp)
    bad = (gn != en) | (~en & (bits(got) != bits(exp)))
    if bad.any():
        i = bad.nonzero()[:8]
        raise AssertionError(
            f"{msg}: {int(bad.sum())} of {bad.numel()} elements differ; first at {i.tolist()}: "
            f"got {[got[tuple(j)].item() for j in i]}, expected {[exp[tuple(j)].item() for j in i]}")


def assert_close_spec(got, exp64, dtype, scale, context="", z=None, g=None):
    """got (dtype) vs float64 oracle exp64: expected rounded once to dtype, then compared."""
    assert got.dtype == dtype and got.shape == exp64.shape
    rtol, atol, floor = TOL[dtype]
    exp = exp64.to(dtype).to(F64)
    got = got.to(F64)
    en, gn = torch.isnan(exp), torch.isnan(got)
    einf = torch.isinf(exp)
    fin = ~en & ~einf
    scale = torch.as_tensor(scale, dtype=F64).expand_as(exp)
    diff = (got - exp).abs()
    ok_fin = diff <= rtol * exp.abs() + atol * scale + floor
    ok = torch.where(en, gn, torch.where(einf, got == exp, ok_fin & torch.isfinite(got)))
    if not ok.all():
        i = (~ok).nonzero()[:8]
        lines = []
        for j in i:
            j = tuple(j)
            s = f"  at {list(j)}:"
            if z is not None:
                s += f" z={z[j].item()!r}"
            if g is not None:
                s += f" g={g[j].item()!r}"
            s += f" got={got[j].item()!r} expected={exp[j].item()!r}"
            lines.append(s)
        raise AssertionError(f"{context}: {int((~ok).sum())} of {ok.numel()} mismatch\n"
                             + "\n".join(lines))


# ----------------------------------------------------------------------------------------------
# The oracle, written from docs/spec.md
# ----------------------------------------------------------------------------------------------
def ind(c):
    """[c]: 1 where c holds, 0 elsewhere (comparisons with NaN are false)."""
    return c.to(F64)


def target(g64):
    """t = -1 if g > 0, +1 if g < 0, 0 otherwise (NaN g -> 0)."""
    return ind(g64 < 0) - ind(g64 > 0)


def batch_size(z):
    return 1 if z.dim() == 0 else z.shape[0]


def oracle_step_forward(z, values):
    """y = +1 if z > 0 else -1 (pm1) / 1 if z > 0 else 0 (01); NaN -> NaN. Exact in any dtype."""
    neg = -1.0 if values == "pm1" else 0.0
    y = torch.where(z > 0, torch.ones((), dtype=F64), torch.full((), neg, dtype=F64))
    y = torch.where(torch.isnan(z), torch.full((), NAN, dtype=F64), y)
    return y.to(z.dtype)


def oracle_staircase_u(z, lo, hi, range_in_double=False):
    """u = (z - lo) / (hi - lo) in op-math precision (lo, hi exact there for our configs).

    range_in_double: the other reading of the contract for lo, hi not exact in op-math
    precision: the parameter difference hi - lo is formed in double (Python) and rounded once to
    op-math."""
    c = opmath(z.dtype)
    zc = z.to(c)
    lo_c = torch.tensor(lo, dtype=c)
    hi_c = torch.tensor(hi, dtype=c)
    d_c = torch.tensor(hi - lo, dtype=c) if range_in_double else hi_c - lo_c
    return (zc - lo_c) / d_c, lo_c, d_c


def oracle_staircase_forward(z, K, lo, hi, range_in_double=False):
    """q = min(max(ceil(u (K - 1)), 0), K) / K; y = lo + q (hi - lo); op-math, rounded once."""
    u, lo_c, d_c = oracle_staircase_u(z, lo, hi, range_in_double)
    c = u.dtype
    a = torch.ceil(u * torch.tensor(K - 1, dtype=c))
    a = torch.minimum(torch.maximum(a, torch.tensor(0.0, dtype=c)), torch.tensor(float(K), dtype=c))
    q = a / torch.tensor(float(K), dtype=c)
    y = lo_c + q * d_c
    return y.to(z.dtype)


def step_bracket(rule, values, z, t):
    """The table's per-unit slope factor: weighted dz = g * s, unweighted dz = -t * s / B
    (estimators: dz = g * s in both modes). z and t are in op-math precision (docs/spec.md:
    arithmetic runs there; this decides e.g. whether 1 - tanh(10)^2 is 0, and so whether
    inf * s is NaN)."""
    dt = z.dtype
    one, zero = torch.ones((), dtype=dt), torch.zeros((), dtype=dt)

    def ind(c):
        return c.to(dt)

    a = z.abs()
    if rule == "ste":
        return torch.ones_like(z)
    if rule == "sste":
        if values == "01":
            return ind((0 <= z) & (z <= 1))
        return ind(a <= 1)
    if rule == "ramp":
        if values == "01":
            r = torch.where((0 <= z) & (z <= 1), one, zero)
            r = torch.where((-1 < z) & (z < 0), z + 1, r)
            r = torch.where((1 < z) & (z < 2), 2 - z, r)
            return r
        r = torch.where(a <= 1, one, zero)
        return torch.where((1 < a) & (a < 2), 2 - a, r)
    if rule == "soft_hinge":
        return 1 - torch.tanh(z) ** 2
    if rule == "saturated_hinge":
        tz = t * z
        return ind((-1 < tz) & (tz <= 1))
    if rule == "hinge":
        return ind(t * z <= 1)
    if rule == "perceptron":
        return ind(t * z <= 0)
    if rule == "sigmoid":
        p = torch.sigmoid(2 * z)
        return 2 * p * (1 - p)
    if rule == "lecun_tanh":
        return 1.7519 * (2 / 3) * (1 - torch.tanh(2 * z / 3) ** 2)
    raise AssertionError(rule)


STEP_SMAX = {"ste": 1.0, "sste": 1.0, "ramp": 1.0, "soft_hinge": 1.0, "saturated_hinge": 1.0,
             "hinge": 1.0, "perceptron": 1.0, "sigmoid": 0.5, "lecun_tanh": 1.7519 * 2 / 3}


def oracle_step_backward(rule, values, grad_scale, z, g):
    """The contract's dz in float64, and the scale used for the absolute tolerance."""
    g64 = g.to(F64)
    t = target(g64)
    c = opmath(z.dtype)
    s = step_bracket(rule, values, z.to(c), t.to(c)).to(F64)
    smax = STEP_SMAX[rule]
    if grad_scale or rule in ESTIMATORS:
        return g64 * s, g64.abs().nan_to_num(0.0, 0.0, 0.0) * smax
    B = batch_size(z)
    return -t * s / B, torch.full_like(g64, smax / B)


def oracle_staircase_backward(rule, K, lo, hi, grad_scale, z, g):
    g64 = g.to(F64)
    t = target(g64)
    u, _, _ = oracle_staircase_u(z, lo, hi)  # op-math
    c = u.dtype
    B = batch_size(z)
    gscale = g64.abs().nan_to_num(0.0, 0.0, 0.0)
    if rule == "ste":
        return g64.clone(), gscale
    if rule == "sste":
        return g64 * ind((0 <= u) & (u <= 1)), gscale
    if rule == "soft_hinge":
        s = (1 - torch.tanh(2 * u - 1) ** 2).to(F64)  # op-math, as the contract prescribes
        if grad_scale:
            return g64 * s, gscale
        return -t * s / (B * (hi - lo)), torch.full_like(g64, 1.0 / (B * (hi - lo)))
    if rule == "saturated_hinge":
        Kc = torch.tensor(float(K), dtype=c)
        zero = torch.tensor(0.0, dtype=c)

        def cl(x):  # clamp first, then ceil
            return torch.ceil(torch.minimum(torch.maximum(x, zero), Kc))

        v = u * torch.tensor(float(K - 1), dtype=c)
        m = torch.tensor(float(K - 1), dtype=c)
        cu = (cl(v + m) - cl(v - m)).to(F64)
        if grad_scale:
            return g64 * cu / K, gscale * 2
        return -t * cu / (K * B * (hi - lo)), torch.full_like(g64, 2.0 / (B * (hi - lo)))
    raise AssertionError(rule)


# ----------------------------------------------------------------------------------------------
# Input grids
# ----------------------------------------------------------------------------------------------
STEP_Z = [0.0, -0.0, 1.0, -1.0, 2.0, -2.0, 0.5, -0.5, 1.5, -1.5, 0.25, -0.75, 3.0, -3.0, 10.0,
          -10.0, 20.0, -20.0, 1e-3, -1e-3, INF, -INF, NAN]
G_VALUES = [0.0, -0.0, 2.5, -0.75, 1e3, -3e-3, 1.0, -1.0, INF, -INF, NAN]


def step_z_grid(dtype):
    return with_neighbours(STEP_Z, dtype)


def staircase_z_grid(dtype, K, lo, hi):
    d = hi - lo
    vals = [lo + d * j / (K - 1) for j in range(-(K - 1), 2 * K)]  # thresholds & c(u) breaks
    vals += [lo + d * j / K for j in range(K + 1)]  # levels
    vals += [lo, hi, lo - d, hi + d, 0.0, -0.0, 0.5 * (lo + hi), lo + 0.1 * d, hi - 0.1 * d,
             lo - 10 * d, hi + 10 * d, INF, -INF, NAN]
    return with_neighbours(vals, dtype)


def grid_2d(zs, dtype):
    """z[i, j] = zs[i], g[i, j] = G_VALUES[j]; so B = len(zs)."""
    gs = torch.tensor(G_VALUES, dtype=F64).to(dtype)
    Z = zs[:, None].expand(len(zs), len(gs)).clone()
    G = gs[None, :].expand(len(zs), len(gs)).clone()
    return Z, G


def random_2d(dtype, seed, shape=(37, 19), scale=1.5, lo=0.0, hi=1.0):
    gen = torch.Generator().manual_seed(seed)
    z = (torch.randn(shape, generator=gen, dtype=F64) * scale * (hi - lo) + 0.5 * (lo + hi))
    g = torch.randn(shape, generator=gen, dtype=F64)
    g[torch.rand(shape, generator=gen) < 0.1] = 0.0
    return z.to(dtype), g.to(dtype)


def run_step(z, g, backend, save, **kw):
    z = z.detach().clone().requires_grad_()
    y = ftprop_cuda.step(z, backend=backend, save=save, **kw)
    y.backward(g)
    return y.detach(), z.grad


def run_staircase(z, g, backend, save, **kw):
    z = z.detach().clone().requires_grad_()
    y = ftprop_cuda.staircase(z, backend=backend, save=save, **kw)
    y.backward(g)
    return y.detach(), z.grad


# ----------------------------------------------------------------------------------------------
# Forward
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cfg", FWD_CONFIGS, ids=FWD_IDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("values", ["pm1", "01"])
@pytest.mark.parametrize("rule", CONTRACT_STEP_RULES)
def test_step_forward_bits(rule, values, dtype, cfg):
    backend, save = cfg
    zs = torch.cat([step_z_grid(dtype), random_2d(dtype, 1)[0].flatten()])
    exp = oracle_step_forward(zs, values)
    for grad_scale in (True, False):
        y = ftprop_cuda.step(zs, rule, values, grad_scale, backend, save)
        assert_same_bits(y, exp, f"step {rule} {values} {grad_scale} no-grad")
        z = zs.clone().requires_grad_()
        y = ftprop_cuda.step(z, rule, values, grad_scale, backend, save)
        assert y.requires_grad
        assert_same_bits(y.detach(), exp, f"step {rule} {values} {grad_scale} grad")


@pytest.mark.parametrize("cfg", FWD_CONFIGS, ids=FWD_IDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("rule", CONTRACT_STAIRCASE_RULES)
def test_staircase_forward_bits(rule, dtype, cfg):
    backend, save = cfg
    for K, lo, hi in STAIR_CFGS:
        zs = torch.cat([staircase_z_grid(dtype, K, lo, hi),
                        random_2d(dtype, K, lo=lo, hi=hi)[0].flatten()])
        exp = oracle_staircase_forward(zs, K, lo, hi)
        # Sanity of the oracle itself: every non-NaN output is one of the K + 1 levels.
        levels = oracle_staircase_forward(
            torch.tensor([lo + (hi - lo) * (j - 0.5) / (K - 1) for j in range(K + 1)],
                         dtype=F64).to(dtype), K, lo, hi)
        fin = ~torch.isnan(exp)
        assert torch.isin(exp[fin].to(F64), levels.to(F64)).all()
        for grad_scale in (True, False):
            y = ftprop_cuda.staircase(zs, K, lo, hi, rule, grad_scale, backend, save)
            assert_same_bits(y, exp, f"staircase K={K} [{lo},{hi}] {rule} no-grad")
            z = zs.clone().requires_grad_()
            y = ftprop_cuda.staircase(z, K, lo, hi, rule, grad_scale, backend, save)
            assert_same_bits(y.detach(), exp, f"staircase K={K} [{lo},{hi}] {rule} grad")


def test_staircase_paper_levels():
    """K = 3 on [0, 1]: levels 0, 1/3, 2/3, 1; thresholds at u = 0, 0.5, 1 (strictly exceeded)."""
    z = torch.tensor([-1.0, 0.0, 1e-7, 0.5, 0.5000001, 1.0, 1.0000001, 5.0], dtype=F64)
    y = ftprop_cuda.staircase(z, 3, backend="reference")
    assert y.tolist() == [0.0, 0.0, 1 / 3, 1 / 3, 2 / 3, 2 / 3, 1.0, 1.0]
    y5 = ftprop_cuda.staircase(torch.linspace(-0.5, 1.5, 101, dtype=F64), 5)
    assert sorted(set(y5.tolist())) == [j / 5 for j in range(6)]


def test_staircase_nonrepresentable_range_is_backend_consistent():
    """lo/hi not exact in float32: docs/spec.md forms hi - lo in double and rounds it once;
    every backend must give the same bits, and the result must match one op-math reading."""
    for dtype in DTYPES:
        for K, lo, hi in [(3, 0.1, 0.7), (5, -0.3, 0.45)]:
            zs = torch.cat([staircase_z_grid(dtype, K, lo, hi),
                            random_2d(dtype, 5, lo=lo, hi=hi)[0].flatten()])
            ys = [ftprop_cuda.staircase(zs, K, lo, hi, backend=b) for b in ("reference", "kernel")]
            assert_same_bits(ys[1], ys[0], f"kernel vs reference K={K} [{lo},{hi}] {dtype}")
            exp_a = oracle_staircase_forward(zs, K, lo, hi)
            exp_b = oracle_staircase_forward(zs, K, lo, hi, range_in_double=True)
            try:
                assert_same_bits(ys[0], exp_a, f"op-math hi - lo, K={K} [{lo},{hi}] {dtype}")
            except AssertionError:
                assert_same_bits(ys[0], exp_b, f"double hi - lo, K={K} [{lo},{hi}] {dtype}")


# ----------------------------------------------------------------------------------------------
# Backward
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cfg", CONFIGS[:3], ids=CFG_IDS[:3])
@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("grad_scale", [True, False], ids=["weighted", "unweighted"])
@pytest.mark.parametrize("values", ["pm1", "01"])
@pytest.mark.parametrize("rule", CONTRACT_STEP_RULES)
def test_step_backward(rule, values, grad_scale, dtype, cfg):
    backend, save = cfg
    Zb, Gb = grid_2d(step_z_grid(dtype), dtype)
    Zr, Gr = random_2d(dtype, 2, scale=1.5)
    Zt, Gt = random_2d(dtype, 3, shape=(5, 3, 4), scale=3.0)  # 3-D: B = 5
    for Z, G in ((Zb, Gb), (Zr, Gr), (Zt, Gt), (Zb.T.contiguous(), Gb.T.contiguous())):
        y, dz = run_step(Z, G, backend, save, rule=rule, values=values, grad_scale=grad_scale)
        assert_same_bits(y, oracle_step_forward(Z, values), "forward")
        exp, scale = oracle_step_backward(rule, values, grad_scale, Z, G)
        assert_close_spec(dz, exp, dtype, scale,
                          f"step {rule} {values} grad_scale={grad_scale} B={Z.shape[0]}", Z, G)


@pytest.mark.parametrize("cfg", CONFIGS[:3], ids=CFG_IDS[:3])
@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("grad_scale", [True, False], ids=["weighted", "unweighted"])
@pytest.mark.parametrize("rule", CONTRACT_STAIRCASE_RULES)
def test_staircase_backward(rule, grad_scale, dtype, cfg):
    backend, save = cfg
    for K, lo, hi in STAIR_CFGS:
        Zb, Gb = grid_2d(staircase_z_grid(dtype, K, lo, hi), dtype)
        Zr, Gr = random_2d(dtype, 10 + K, lo=lo, hi=hi)
        for Z, G in ((Zb, Gb), (Zr, Gr)):
            y, dz = run_staircase(Z, G, backend, save, steps=K, lo=lo, hi=hi, rule=rule,
                                  grad_scale=grad_scale)
            assert_same_bits(y, oracle_staircase_forward(Z, K, lo, hi), "forward")
            exp, scale = oracle_staircase_backward(rule, K, lo, hi, grad_scale, Z, G)
            assert_close_spec(dz, exp, dtype, scale,
                              f"staircase {rule} K={K} [{lo},{hi}] grad_scale={grad_scale} "
                              f"B={Z.shape[0]}", Z, G)


@pytest.mark.parametrize("cfg", CONFIGS[:3], ids=CFG_IDS[:3])
@pytest.mark.parametrize("dtype", [F32, F64, F16], ids=["f32", "f64", "f16"])
@pytest.mark.parametrize("grad_scale", [True, False], ids=["weighted", "unweighted"])
def test_zero_dim_and_1d(grad_scale, dtype, cfg):
    """0-dim z has B = 1; 1-D z has B = len(z)."""
    backend, save = cfg
    zs = [0.0, -0.0, 1.0, -1.0, 1.5, -2.0, 0.3, INF, NAN]
    gs = [0.0, 2.0, -0.5, INF, NAN]
    for rule in CONTRACT_STEP_RULES:
        for values in ("pm1", "01"):
            for zv in zs:
                for gv in gs:
                    z = torch.tensor(zv, dtype=dtype)
                    g = torch.tensor(gv, dtype=dtype)
                    y, dz = run_step(z, g, backend, save, rule=rule, values=values,
                                     grad_scale=grad_scale)
                    assert dz.shape == () and y.shape == ()
                    exp, scale = oracle_step_backward(rule, values, grad_scale, z, g)
                    assert_close_spec(dz, exp, dtype, scale, f"0-dim {rule} {values}", z, g)
            Z = torch.tensor(zs * 3, dtype=dtype)
            G = torch.tensor((gs * 6)[:len(zs) * 3], dtype=dtype)
            y, dz = run_step(Z, G, backend, save, rule=rule, values=values, grad_scale=grad_scale)
            exp, scale = oracle_step_backward(rule, values, grad_scale, Z, G)
            assert_close_spec(dz, exp, dtype, scale, f"1-D {rule} {values}", Z, G)
    for rule in CONTRACT_STAIRCASE_RULES:
        for zv in [0.0, -0.0, 0.5, 1.0, 0.25, 2.0, -1.0, INF, NAN]:
            for gv in gs:
                z = torch.tensor(zv, dtype=dtype)
                g = torch.tensor(gv, dtype=dtype)
                y, dz = run_staircase(z, g, backend, save, steps=3, lo=-1.0, hi=3.0, rule=rule,
                                      grad_scale=grad_scale)
                exp, scale = oracle_staircase_backward(rule, 3, -1.0, 3.0, grad_scale, z, g)
                assert_close_spec(dz, exp, dtype, scale, f"0-dim staircase {rule}", z, g)


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("grad_scale", [True, False], ids=["weighted", "unweighted"])
def test_compact_save_within_documented_bound(grad_scale, dtype):
    """save='compact': exact for the interval rules; slope error <= s_max / 508 for smooth ones."""
    Zb, Gb = grid_2d(step_z_grid(dtype), dtype)
    Zr, Gr = random_2d(dtype, 4, scale=2.0)
    for rule in CONTRACT_STEP_RULES:
        for values in ("pm1", "01"):
            for Z, G in ((Zb, Gb), (Zr, Gr)):
                _, dz = run_step(Z, G, "kernel", "compact", rule=rule, values=values,
                                 grad_scale=grad_scale)
                exp, scale = oracle_step_backward(rule, values, grad_scale, Z, G)
                if rule in COMPACT_APPROX:
                    # an infinite g times a slope that the 8-bit code may round to 0 can be NaN
                    slope, smax_ = oracle_step_backward(rule, values, True, Z, torch.ones_like(G))
                    # adds scale / 508, or scale / 254 for a slope in (0, s_max / 508), which the
                    # code keeps nonzero (plus the dtype's rounding of that decoded value)
                    tiny = (slope > 0) & (slope < smax_ / 508)
                    extra = torch.where(tiny, 2.0 * (1 + TOL[dtype][0]), 1.0)
                    scale = scale * (1 + extra / (508 * TOL[dtype][1]))
                    loose = ~torch.isfinite(G) & (slope.abs() <= 2 / 508)
                    if not (grad_scale or rule in ESTIMATORS):
                        loose &= False
                    assert (torch.isnan(dz[loose]) | (dz[loose].to(F64) == exp[loose])).all()
                    dz, exp, scale, Z_, G_ = dz[~loose], exp[~loose], scale[~loose], Z[~loose], G[~loose]
                else:
                    Z_, G_ = Z, G
                assert_close_spec(dz, exp, dtype, scale, f"compact {rule} {values}", Z_, G_)
    for K, lo, hi in STAIR_CFGS:
        Z, G = grid_2d(staircase_z_grid(dtype, K, lo, hi), dtype)
        for rule in CONTRACT_STAIRCASE_RULES:
            _, dz = run_staircase(Z, G, "kernel", "compact", steps=K, lo=lo, hi=hi, rule=rule,
                                  grad_scale=grad_scale)
            exp, scale = oracle_staircase_backward(rule, K, lo, hi, grad_scale, Z, G)
            Z_, G_ = Z, G
            if rule == "soft_hinge":
                slope, _ = oracle_staircase_backward(rule, K, lo, hi, True, Z, torch.ones_like(G))
                tiny = (slope > 0) & (slope < 1 / 508)  # decoded as 1 / 254, see above
                extra = torch.where(tiny, 2.0 * (1 + TOL[dtype][0]), 1.0)
                scale = scale * (1 + extra / (508 * TOL[dtype][1]))
                loose = ~torch.isfinite(G) & (slope.abs() <= 2 / 508) & grad_scale
                assert (torch.isnan(dz[loose]) | (dz[loose].to(F64) == exp[loose])).all()
                dz, exp, scale, Z_, G_ = dz[~loose], exp[~loose], scale[~loose], Z[~loose], G[~loose]
            assert_close_spec(dz, exp, dtype, scale, f"compact staircase {rule} K={K}", Z_, G_)


def test_nan_and_inf_propagation_examples():
    """A few hand-written IEEE cases, independent of the vectorised oracle."""
    def dz(z, g, **kw):
        return run_step(torch.tensor([z]), torch.tensor([g]), "auto", "auto", **kw)[1].item()

    # inf * 0 is NaN: weighted sste outside the window with an infinite g.
    assert math.isnan(dz(5.0, INF, rule="sste"))
    assert math.isnan(dz(30.0, INF, rule="soft_hinge"))  # slope is 0 in float32
    assert dz(0.5, INF, rule="sste") == INF
    assert dz(0.5, -INF, rule="ste") == -INF
    assert math.isnan(dz(0.5, NAN, rule="ste"))
    # hinge with g = +inf (t = -1): t z <= 1 holds for z = +inf -> inf; fails for z = -inf -> NaN
    assert dz(INF, INF, rule="hinge") == INF
    assert math.isnan(dz(-INF, INF, rule="hinge"))
    # unweighted: only the sign of g matters; NaN g -> t = 0 -> 0
    assert dz(0.0, INF, rule="hinge", grad_scale=False) == 1.0
    assert dz(0.0, NAN, rule="hinge", grad_scale=False) == 0.0
    assert dz(0.0, -INF, rule="soft_hinge", grad_scale=False) == -1.0
    # NaN z: indicator rules give 0 (comparisons false), smooth rules give NaN
    assert dz(NAN, 1.0, rule="hinge") == 0.0
    assert dz(NAN, 1.0, rule="ramp") == 0.0
    assert math.isnan(dz(NAN, 1.0, rule="soft_hinge"))
    assert math.isnan(dz(NAN, 0.0, rule="soft_hinge", grad_scale=False))  # 0 * NaN
    assert dz(NAN, 1.0, rule="ste") == 1.0
    # unweighted estimator rules ignore the flag
    assert dz(0.5, 3.0, rule="ramp", grad_scale=False) == 3.0
    assert dz(1.5, 3.0, rule="ramp", grad_scale=False) == 1.5
    assert dz(-0.5, 3.0, rule="ramp", values="01", grad_scale=False) == 1.5


# ----------------------------------------------------------------------------------------------
# Identities from docs/spec.md
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", ["reference", "kernel"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
def test_identities(dtype, backend):
    Zb, Gb = grid_2d(step_z_grid(dtype), dtype)
    Zr, Gr = random_2d(dtype, 6, scale=2.0)
    for Z, G in ((Zb, Gb), (Zr, Gr)):
        # weighted saturated_hinge == sste except exactly at z = +-1
        _, a = run_step(Z, G, backend, "auto", rule="saturated_hinge")
        _, b = run_step(Z, G, backend, "auto", rule="sste")
        away = Z.abs() != 1
        assert_same_bits(a[away], b[away], "saturated_hinge vs sste")
        # at z = +-1 they differ exactly where t z = -1 (saturated: 0, sste: 1), i.e. z = -t
        g64 = G.to(F64)
        at = (Z.to(F64) == -target(g64)) & (G != 0) & torch.isfinite(G)
        assert at.any() or Z is Zr
        assert (a[at] == 0).all() and (b[at] == G[at]).all(), "they differ where t z = -1"
        same = (Z.abs() == 1) & (Z.to(F64) != -target(g64))
        assert_same_bits(a[same], b[same], "saturated_hinge vs sste at t z = +1")
        # weighted soft_hinge == back-propagation through tanh with a sign forward pass
        _, sh = run_step(Z, G, backend, "auto", rule="soft_hinge")
        zc = Z.to(opmath(dtype)).requires_grad_()  # autograd's tanh in op-math precision
        torch.tanh(zc).backward(G.to(zc.dtype))
        assert_close_spec(sh, zc.grad.to(F64), dtype, G.to(F64).abs().nan_to_num(0, 0, 0),
                          "soft_hinge vs tanh autograd", Z, G)
        # ste == weighted linear loss -t z: dz = |g| * (-t) == g, exactly
        _, st = run_step(Z, G, backend, "auto", rule="ste")
        assert_same_bits(st, G, "ste == g")
        lin = G.to(F64).abs() * -target(G.to(F64))
        keep = ~torch.isnan(G)
        assert (st.to(F64)[keep] == lin[keep]).all(), "ste == |g| (-t)"
        # loss rules: unweighted(g) == weighted(sign(g)) / B, and values= does not matter
        B = Z.shape[0]
        sgn = torch.sign(G).nan_to_num(0.0)
        for rule in CONTRACT_STEP_RULES:
            _, un = run_step(Z, G, backend, "auto", rule=rule, grad_scale=False)
            _, un01 = run_step(Z, G, backend, "auto", rule=rule, values="01", grad_scale=False)
            if rule in ESTIMATORS:
                _, w = run_step(Z, G, backend, "auto", rule=rule)
                assert_same_bits(un, w, f"{rule} ignores grad_scale")
                continue
            _, w01 = run_step(Z, G, backend, "auto", rule=rule, values="01")
            _, w = run_step(Z, G, backend, "auto", rule=rule)
            assert_same_bits(w01, w, f"{rule}: values does not change the weighted backward")
            assert_same_bits(un01, un, f"{rule}: values does not change the unweighted backward")
            _, ws = run_step(Z, sgn, backend, "auto", rule=rule)
            assert_close_spec(un, ws.to(F64) / B, dtype, torch.full_like(ws, 2.0 / B, dtype=F64),
                              f"{rule}: unweighted == weighted(sign g) / B", Z, G)


# ----------------------------------------------------------------------------------------------
# Bad input
# ----------------------------------------------------------------------------------------------
def _raises(exc, fn, *needles):
    with pytest.raises(exc) as info:
        fn()
    msg = str(info.value)
    for n in needles:
        assert n in msg, f"{n!r} not in message {msg!r}"
    return msg


def test_bad_rule_and_values():
    z = torch.zeros(3)
    msg = _raises(ValueError, lambda: ftprop_cuda.step(z, rule="nope"), "rule", "nope")
    assert all(r in msg for r in CONTRACT_STEP_RULES), msg
    msg = _raises(ValueError, lambda: ftprop_cuda.step(z, values="pm2"), "values", "pm2")
    assert "pm1" in msg and "01" in msg
    for r in ("hinge", "ramp", "sigmoid", "perceptron", "lecun_tanh", "nope"):
        msg = _raises(ValueError, lambda: ftprop_cuda.staircase(z, rule=r), "rule", r)
        assert all(s in msg for s in CONTRACT_STAIRCASE_RULES), msg
    for bad in (None, 3, "Hinge", ""):
        _raises((ValueError, TypeError), lambda: ftprop_cuda.step(z, rule=bad), "rule",
                repr(bad))
        _raises((ValueError, TypeError), lambda: ftprop_cuda.staircase(z, rule=bad), "rule",
                repr(bad))
        _raises((ValueError, TypeError), lambda: ftprop_cuda.step(z, values=bad), "values",
                repr(bad))
    msg = _raises(ValueError, lambda: ftprop_cuda.Step(rule="nope"), "rule", "nope")
    msg = _raises(ValueError, lambda: ftprop_cuda.Step(values="x"), "values", "'x'")
    msg = _raises(ValueError, lambda: ftprop_cuda.Staircase(rule="hinge"), "rule", "hinge")
    assert set(ftprop_cuda.STEP_RULES) == set(CONTRACT_STEP_RULES)
    assert set(ftprop_cuda.STAIRCASE_RULES) == set(CONTRACT_STAIRCASE_RULES)


def test_bad_steps_lo_hi():
    z = torch.zeros(3)
    for steps in (1, 0, -3):
        _raises((ValueError, TypeError), lambda: ftprop_cuda.staircase(z, steps=steps), "steps",
                str(steps))
        _raises((ValueError, TypeError), lambda: ftprop_cuda.Staircase(steps=steps), "steps",
                str(steps))
    for lo, hi in ((1.0, 1.0), (2.0, 1.0), (0.5, -0.5)):
        _raises(ValueError, lambda: ftprop_cuda.staircase(z, lo=lo, hi=hi), "lo", repr(lo))
        _raises(ValueError, lambda: ftprop_cuda.Staircase(lo=lo, hi=hi), "lo", repr(lo))
    for lo, hi in ((-INF, 1.0), (NAN, 1.0)):
        _raises(ValueError, lambda: ftprop_cuda.staircase(z, lo=lo, hi=hi), "lo", repr(lo))
    for lo, hi in ((0.0, INF), (0.0, NAN)):
        _raises(ValueError, lambda: ftprop_cuda.staircase(z, lo=lo, hi=hi), "hi", repr(hi))


@pytest.mark.parametrize("dtype", [torch.int32, torch.int64, torch.uint8, torch.bool,
                                   torch.complex64, torch.complex128])
def test_bad_dtype(dtype):
    z = torch.zeros(3, dtype=dtype)
    for fn in (lambda: ftprop_cuda.step(z), lambda: ftprop_cuda.staircase(z),
               lambda: ftprop_cuda.Step()(z), lambda: ftprop_cuda.Staircase()(z)):
        msg = _raises((TypeError, ValueError), fn, "z", str(dtype))
        assert "float" in msg


def test_bad_backend():
    z = torch.zeros(3)
    for fn in (lambda: ftprop_cuda.step(z, backend="cudnn"),
               lambda: ftprop_cuda.staircase(z, backend="cudnn"),
               lambda: ftprop_cuda.Step(backend="cudnn"),
               lambda: ftprop_cuda.Staircase(backend="cudnn")):
        msg = _raises(ValueError, fn, "backend", "cudnn")
        assert "reference" in msg and "kernel" in msg
    # a device with no kernel: meta tensors
    zm = torch.zeros(3, device="meta")
    _raises(ValueError, lambda: ftprop_cuda.step(zm, backend="kernel"), "kernel", "meta")
    _raises(ValueError, lambda: ftprop_cuda.staircase(zm, backend="kernel"), "kernel", "meta")


def test_build_info():
    info = ftprop_cuda.build_info()
    assert info["cpu_kernels"] is True


# ----------------------------------------------------------------------------------------------
# Empty and non-contiguous inputs, modules
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", ["reference", "kernel", "auto"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
def test_empty(dtype, backend):
    for shape in ((0,), (0, 3), (4, 0), (2, 0, 5)):
        for fn, rules in ((ftprop_cuda.step, CONTRACT_STEP_RULES),
                          (ftprop_cuda.staircase, CONTRACT_STAIRCASE_RULES)):
            for rule in rules:
                for gs in (True, False):
                    z = torch.empty(shape, dtype=dtype).requires_grad_()
                    y = fn(z, rule=rule, grad_scale=gs, backend=backend)
                    assert y.shape == z.shape and y.dtype == dtype
                    y.backward(torch.empty(shape, dtype=dtype))
                    assert z.grad.shape == z.shape and z.grad.dtype == dtype


@pytest.mark.parametrize("cfg", CONFIGS[:3], ids=CFG_IDS[:3])
@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
def test_non_contiguous_same_bits(dtype, cfg):
    backend, save = cfg
    gen = torch.Generator().manual_seed(7)
    base = (torch.randn(12, 30, generator=gen, dtype=F64) * 1.5).to(dtype)
    base[0, :12:2] = torch.tensor([0.0, -0.0, 1.0, -1.0, INF, NAN], dtype=dtype)
    gbase = torch.randn(12, 30, generator=gen, dtype=F64).to(dtype)
    views = [(base[:, ::2], gbase[:, ::2]),  # strided, B = 12
             (base.T[3:20], gbase.T[3:20]),  # transposed, B = 17
             (base[1::3, 5:25:4], gbase[1::3, 5:25:4])]
    for zv, gv in views:
        assert not zv.is_contiguous()
        zc, gc = zv.contiguous(), gv.contiguous()
        for gsc in (True, False):
            for rule in CONTRACT_STEP_RULES:
                for values in ("pm1", "01"):
                    kw = dict(rule=rule, values=values, grad_scale=gsc)
                    y1, d1 = run_step(zv, gv, backend, save, **kw)
                    y2, d2 = run_step(zc, gc, backend, save, **kw)
                    assert_same_bits(y1, y2, f"non-contiguous step fwd {kw}")
                    assert_same_bits(d1, d2, f"non-contiguous step bwd {kw}")
            for rule in CONTRACT_STAIRCASE_RULES:
                for K, lo, hi in ((3, 0.0, 1.0), (5, -2.5, 1.5)):
                    kw = dict(steps=K, lo=lo, hi=hi, rule=rule, grad_scale=gsc)
                    y1, d1 = run_staircase(zv, gv, backend, save, **kw)
                    y2, d2 = run_staircase(zc, gc, backend, save, **kw)
                    assert_same_bits(y1, y2, f"non-contiguous staircase fwd {kw}")
                    assert_same_bits(d1, d2, f"non-contiguous staircase bwd {kw}")


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
def test_backends_agree_bitwise_on_forward(dtype):
    """Every backend computes the same forward bits (docs/spec.md: bit-identical everywhere)."""
    zs = torch.cat([step_z_grid(dtype), staircase_z_grid(dtype, 5, -2.5, 1.5)])
    for values in ("pm1", "01"):
        ys = [ftprop_cuda.step(zs, values=values, backend=b) for b in ("reference", "kernel")]
        assert_same_bits(ys[1], ys[0], "step kernel vs reference")
    for K, lo, hi in STAIR_CFGS:
        ys = [ftprop_cuda.staircase(zs, K, lo, hi, backend=b) for b in ("reference", "kernel")]
        assert_same_bits(ys[1], ys[0], "staircase kernel vs reference")


def test_modules_match_functional():
    gen = torch.Generator().manual_seed(3)
    z = torch.randn(16, 9, generator=gen)
    g = torch.randn(16, 9, generator=gen)
    for rule in CONTRACT_STEP_RULES:
        m = ftprop_cuda.Step(rule=rule, values="01", grad_scale=False)
        zm = z.clone().requires_grad_()
        ym = m(zm)
        ym.backward(g)
        yf, df = run_step(z, g, "auto", "auto", rule=rule, values="01", grad_scale=False)
        assert_same_bits(ym.detach(), yf, "Step module fwd")
        assert_same_bits(zm.grad, df, "Step module bwd")
    for rule in CONTRACT_STAIRCASE_RULES:
        m = ftprop_cuda.Staircase(steps=5, lo=-1.0, hi=3.0, rule=rule, grad_scale=False)
        zm = z.clone().requires_grad_()
        ym = m(zm)
        ym.backward(g)
        yf, df = run_staircase(z, g, "auto", "auto", steps=5, lo=-1.0, hi=3.0, rule=rule,
                               grad_scale=False)
        assert_same_bits(ym.detach(), yf, "Staircase module fwd")
        assert_same_bits(zm.grad, df, "Staircase module bwd")
