"""Random small user-style models for the lean-mode differential fuzzer (tests/test_lean_fuzz.py).

make_case(seed) builds, from the seed alone, a model (a random program of conv, linear, norms,
pools, hard-threshold units, activations, residual adds in place and out of place,
concatenation, views and slices, dropout, checkpointed blocks and autocast regions), its input,
the gradient fed to its output and the number of training steps. Two calls with one seed build
the same model with the same initial parameters (the global torch RNG is seeded here; callers
fork it). The model's repr plus Case.header() describe the case in full.

Two ATen problems outside lean mode are never generated:
* a max-pool window lying entirely in padding (or past the input): ATen's CPU max-pool backward
  can then write outside the gradient (heap corruption), standard mode included;
* a strided convolution whose (dilated) kernel is 1x1: its CPU weight gradient is
  nondeterministic even standard vs standard (the reduction order varies between runs).
"""
import random
from dataclasses import dataclass

import torch
import torch.nn as nn

import ftprop_cuda
from ftprop_cuda.ops.functional import BACKENDS, SAVE_MODES
from ftprop_cuda.ops.reference import STEP_VALUES

from lean_fuzz_ops import (Act, Autocast, BackwardHooked, Checkpointed, Concat, Frozen,
                           FunctionalPool, GradHook, Residual, Scale, Seq, Shift, Tied, TwoBranch,
                           Upsample, View)

DTYPES = (torch.float32, torch.float32, torch.float32, torch.float64, torch.bfloat16)
STAIR_STEPS = (2, 3, 4, 5, 7, 15, 16, 63, 254, 255, 256, 300, 510, 511, 512, 1000, 4095, 65536)
STAIR_BOUNDS = ((0.0, 1.0), (-1.0, 1.0), (-2.0, 0.5), (0.0, 6.0), (0.25, 0.75))
MAX_OPS = 14  # layers per model, composite blocks' bodies included


@dataclass
class Case:
    seed: int
    dtype: torch.dtype
    shape: tuple
    channels_last: bool
    special: str      # "" or the special values written into the input ("nan", "inf", ...)
    input_grad: bool  # the input requires grad (a leaf: in-place layers on it raise)
    retain: bool      # backward twice (retain_graph=True): gradients accumulate
    wrap_first: bool  # lean run: lean(model) before model.to(dtype) (the model is built fp32)
    nested: int       # lean run: the index in model.modules() also made lean, or -1
    between: str      # "", "no_grad" or "eval": a forward without grad between two steps
    twice: bool       # two forwards (the step's input, then its negation), one backward
    outer: str        # around the model's forward: "" or one of lean_fuzz_run.OUTER
    steps: int        # training steps (forward + backward, then an SGD update)
    model: nn.Module
    inputs: list      # one input per step

    def header(self):
        return (f"lean fuzz seed {self.seed}: dtype={self.dtype}, input={list(self.shape)}, "
                f"channels_last={self.channels_last}, special={self.special or None}, "
                f"input_grad={self.input_grad}, steps={self.steps}, "
                f"backward_twice={self.retain}, between={self.between or None}, "
                f"lean_before_dtype={self.wrap_first}, nested_lean_module={self.nested}, "
                f"two_forwards_one_backward={self.twice}, around_forward={self.outer or None}")

    def describe(self):
        return f"{self.header()}\n{self.model}"


def pool_out(size, k, s, p, d, ceil):
    """Output length of a pool/conv along one dimension (ATen's formula), 0 if none."""
    num = size + 2 * p - d * (k - 1) - 1
    if num < 0:
        return 0
    out = (num + (s - 1 if ceil else 0)) // s + 1
    if ceil and (out - 1) * s >= size + p:
        out -= 1
    return out


def windows_touch_input(size, k, s, p, d, out):
    """Whether every window holds at least one element of the input (see the module doc)."""
    return all(any(0 <= i * s - p + j * d < size for j in range(k)) for i in range(out))


class Gen:
    """The random choices of one program; shape: the full shape of the current tensor."""

    def __init__(self, rng, dtype):
        self.rng, self.dtype, self.ops = rng, dtype, 0

    def chance(self, p):
        return self.rng.random() < p

    def pick(self, seq):
        return self.rng.choice(list(seq))

    # ---- layer generators: (module, new shape) or None where not applicable ----------------
    def conv(self, shape, keep):
        if len(shape) not in (3, 4):
            return None
        r, c, spatial = self.rng, shape[1], shape[2:]
        out_c = c if keep == "shape" else r.randint(1, 6)
        same = keep is not None  # "shape" and "spatial" keep the spatial size
        groups = self.pick([g for g in range(1, min(c, out_c) + 1)
                            if c % g == 0 and out_c % g == 0])
        nd = len(spatial)
        k = tuple(r.choice((1, 2, 3)) for _ in range(nd))
        d = tuple(r.choice((1, 1, 2)) for _ in range(nd))
        if same:
            k = tuple(r.choice((1, 3)) for _ in range(nd))
            s, p = (1,) * nd, tuple(di * (ki - 1) // 2 for ki, di in zip(k, d))
        else:
            s = tuple(r.choice((1, 1, 2)) if di * (ki - 1) > 0 else 1 for ki, di in zip(k, d))
            p = tuple(r.randint(0, ki) for ki in k)
        out = tuple(pool_out(n, ki, si, pi, di, False) for n, ki, si, pi, di in
                    zip(spatial, k, s, p, d))
        if min(out) < 1:
            return None
        mode = "zeros"
        if self.chance(0.2) and all(pi < n for pi, n in zip(p, spatial)):
            mode = self.pick(("reflect", "replicate", "circular"))
        cls = nn.Conv2d if nd == 2 else nn.Conv1d
        m = cls(c, out_c, k, s, p, d, groups, bias=self.chance(0.7), padding_mode=mode)
        return m, (shape[0], out_c) + out

    def linear(self, shape, keep):
        last = shape[-1]
        out = last if keep == "shape" or (keep == "spatial" and len(shape) > 2) \
            else self.rng.randint(1, 10)
        return nn.Linear(last, out, bias=self.chance(0.7)), shape[:-1] + (out,)

    def norm(self, shape, keep):
        r, c, nd = self.rng, shape[1], len(shape)
        kind = self.pick(("batch", "batch", "group", "layer", "instance"))
        if kind == "batch":
            cls = nn.BatchNorm2d if nd == 4 else nn.BatchNorm1d
            if shape[0] * max(1, _prod(shape[2:])) < 2:
                return None
            m = cls(c, momentum=r.choice((0.1, 0.5, None)), affine=self.chance(0.8),
                    track_running_stats=self.chance(0.8))
            if self.chance(0.15):
                m = Frozen(m)
        elif kind == "group":
            m = nn.GroupNorm(self.pick([g for g in range(1, c + 1) if c % g == 0]), c,
                             affine=self.chance(0.7))
        elif kind == "layer":
            n = r.randint(1, min(2, nd - 1))
            m = nn.LayerNorm(shape[-n:], elementwise_affine=self.chance(0.7),
                             bias=self.chance(0.7))
        else:
            if nd < 3 or _prod(shape[2:]) < 2:
                return None
            cls = nn.InstanceNorm2d if nd == 4 else nn.InstanceNorm1d
            m = cls(c, affine=self.chance(0.5), track_running_stats=self.chance(0.5))
        return m, shape

    def pool(self, shape, keep):
        if len(shape) not in (3, 4):
            return None
        for _ in range(6):
            made = self._pool_try(shape, keep)
            if made is not None:
                return made
        return None

    def _pool_try(self, shape, keep):
        r, lead = self.rng, 2
        if len(shape) == 3 and self.chance(0.15):
            lead = 1  # a 2-D pool of an (N, C, L) tensor: ATen reads it as one (C, H, W) image
        spatial = shape[lead:]
        nd, kind = len(spatial), self.pick(("max", "max", "avg", "adaptive"))
        if kind == "adaptive":
            if keep is not None:
                return None
            out = tuple(r.randint(1, n) for n in spatial)
            cls = nn.AdaptiveAvgPool2d if nd == 2 else nn.AdaptiveAvgPool1d
            return cls(out if nd == 2 else out[0]), shape[:lead] + out
        k = tuple(r.choice((1, 2, 2, 3, 3, 4, 5)) for _ in range(nd))
        d = tuple(r.choice((1, 1, 2, 3)) for _ in range(nd)) if kind == "max" else (1,) * nd
        s = tuple(r.choice((1, 2, 2, 3)) for _ in range(nd))
        p = tuple(r.randint(0, ki // 2) for ki in k)
        ceil = self.chance(0.3)
        if keep is not None:
            k, d, ceil = tuple(r.choice((1, 3)) for _ in range(nd)), (1,) * nd, False
            s, p = (1,) * nd, tuple(ki // 2 for ki in k)
        out = tuple(pool_out(n, *a, ceil) for n, *a in zip(spatial, k, s, p, d))
        if min(out) < 1 or not all(windows_touch_input(n, *a, o) for n, *a, o in
                                   zip(spatial, k, s, p, d, out)):
            return None
        return self._pool_module(kind, nd, k, s, p, d, ceil), shape[:lead] + out

    def _pool_module(self, kind, nd, k, s, p, d, ceil):
        def arg(t):  # ints, tuples, or one-element tuples (ATen reads (k,) as (k, k))
            if len(set(t)) > 1:
                return t
            return self.rng.choices((t[0], t, t[:1]), (6, 3, 1))[0]
        kw = dict(kernel_size=arg(k), stride=arg(s), padding=arg(p), ceil_mode=ceil)
        if kind == "max":
            kw["dilation"] = arg(d)
        else:
            kw["count_include_pad"] = self.chance(0.5)
            if nd == 2 and self.chance(0.2):
                kw["divisor_override"] = self.rng.randint(1, 5)
        name = f"{kind}_pool{nd}d"
        if self.chance(0.3):
            return FunctionalPool(name, kw)
        cls = {"max_pool1d": nn.MaxPool1d, "max_pool2d": nn.MaxPool2d,
               "avg_pool1d": nn.AvgPool1d, "avg_pool2d": nn.AvgPool2d}[name]
        return cls(**kw)

    def unit(self, shape, keep):
        r = self.rng
        common = dict(grad_scale=self.chance(0.7), backend=self.pick(BACKENDS),
                      save=self.pick(SAVE_MODES))
        if self.chance(0.5):
            return ftprop_cuda.Step(rule=self.pick(ftprop_cuda.STEP_RULES),
                                    values=self.pick(STEP_VALUES), **common), shape
        steps = r.choice(STAIR_STEPS[:8]) if self.chance(0.6) else r.choice(STAIR_STEPS)
        lo, hi = r.choice(STAIR_BOUNDS)
        return ftprop_cuda.Staircase(steps, lo, hi, rule=self.pick(ftprop_cuda.STAIRCASE_RULES),
                                     **common), shape

    def act(self, shape, keep):
        return Act(self.pick(("relu", "relu", "tanh", "sigmoid", "hardtanh", "softmax",
                              "square")), self.chance(0.4)), shape

    def dropout(self, shape, keep):
        p, inplace = self.rng.choice((0.1, 0.5)), self.chance(0.3)
        if len(shape) == 4 and self.chance(0.4):
            return nn.Dropout2d(p, inplace), shape
        return nn.Dropout(p, inplace), shape

    def scale(self, shape, keep):
        w = (shape[1],) + (1,) * (len(shape) - 2)
        return Scale(w, self.chance(0.5)), shape

    def shift(self, shape, keep):
        b = (shape[1],) + (1,) * (len(shape) - 2)
        return Shift(b, self.chance(0.4)), shape

    def hook(self, shape, keep):
        return GradHook(), shape

    def upsample(self, shape, keep):
        if keep is not None or len(shape) not in (3, 4) or max(shape[2:]) > 8:
            return None
        linear = "bilinear" if len(shape) == 4 else "linear"
        return Upsample(self.pick(("nearest", linear))), shape[:2] + tuple(2 * n for n in shape[2:])

    def view(self, shape, keep):
        r, nd = self.rng, len(shape)
        options = ["contiguous"] if self.chance(0.3) else []
        if nd == 4:
            options += ["channels_last"] * 2
        if nd == 4 and (keep is None or shape[2] == shape[3]) and self.chance(0.5):
            options.append("transpose")
        if keep is None:
            options += ["flatten", "slice", "narrow"] if nd > 2 else ["slice", "narrow"]
            if nd == 2 and shape[1] % 2 == 0:
                options.append("view3d")
            if nd == 3 and shape[2] % 2 == 0:
                options.append("view4d")
        if not options:
            return None
        kind = self.pick(options)
        if kind in ("contiguous", "channels_last"):
            return View(kind), shape
        if kind == "transpose":
            return View(kind), shape[:-2] + (shape[-1], shape[-2])
        if kind == "flatten":
            return View(kind), (shape[0], _prod(shape[1:]))
        if kind == "view3d":
            shape2 = (shape[1] // 2, 2)
            return View(self.pick(("view", "reshape")), shape2), (shape[0],) + shape2
        if kind == "view4d":
            shape2 = (shape[1], shape[2] // 2, 2)
            return View(self.pick(("view", "reshape")), shape2), (shape[0],) + shape2
        dim = r.randint(1, nd - 1)
        n = shape[dim]
        start = r.randint(0, max(0, n - 2))
        if kind == "narrow":
            length = r.randint(1, n - start)
            return View(kind, (dim, start, length)), _set(shape, dim, length)
        stop, step = r.choice((None, n - 1 if n - 1 > start else None)), r.choice((1, 1, 2))
        length = len(range(n)[start:stop:step])
        return View(kind, (dim, start, stop, step)), _set(shape, dim, length)

    # ---- composite blocks ------------------------------------------------------------------
    def residual(self, shape, keep, depth):
        body, _ = self.seq(shape, depth + 1, "shape")
        # x_iadd changes a tensor the body may have saved: standard raises; rarer than the rest
        mode = self.rng.choices(Residual.MODES, (4, 3, 2, 3, 2, 1, 2, 1, 1, 1))[0]
        return Residual(body, mode), shape

    def two_branch(self, shape, keep, depth):
        a, _ = self.seq(shape, depth + 1, "shape")
        b, _ = self.seq(shape, depth + 1, "shape")
        return TwoBranch(a, b), shape

    def tied(self, shape, keep, depth):
        body, _ = self.seq(shape, depth + 1, "shape")
        return Tied(body, 2), shape

    def backward_hooked(self, shape, keep, depth):
        body, out = self.seq(shape, depth + 1, keep)
        return BackwardHooked(body), out

    def concat(self, shape, keep, depth):
        if keep == "shape":
            return None
        if len(shape) == 2 or keep == "spatial" or self.chance(0.7):
            body, out = self.seq(shape, depth + 1, "spatial")
            dim = 1
        else:  # along the last dimension: the body keeps every other one
            body, out = self.seq(shape, depth + 1, "shape")
            dim = -1
        total = shape[dim] + out[dim]
        return Concat(body, dim, self.chance(0.6)), _set(shape, dim, total)

    def checkpointed(self, shape, keep, depth):
        body, out = self.seq(shape, depth + 1, keep)
        return Checkpointed(body, self.chance(0.5)), out

    def autocast(self, shape, keep, depth):
        body, out = self.seq(shape, depth + 1, keep)
        return Autocast(body, self.dtype), out

    LAYERS = (("conv", 5), ("linear", 3), ("norm", 4), ("pool", 4), ("unit", 7), ("act", 2),
              ("dropout", 1), ("scale", 1), ("view", 3), ("shift", 1), ("hook", 0.3),
              ("upsample", 0.5))
    BLOCKS = (("residual", 4), ("two_branch", 1), ("concat", 2), ("checkpointed", 2),
              ("autocast", 2), ("tied", 0.7), ("backward_hooked", 0.5))

    def layer(self, shape, keep, depth):
        table = self.LAYERS + (self.BLOCKS if depth < 2 and self.ops < MAX_OPS - 2 else ())
        names = [n for n, _ in table]
        weights = [w for _, w in table]
        for _ in range(8):
            name = self.rng.choices(names, weights)[0]
            fn = getattr(self, name)
            made = fn(shape, keep, depth) if name in dict(self.BLOCKS) else fn(shape, keep)
            if made is not None:
                self.ops += 1
                return made
        return None

    def seq(self, shape, depth, keep):
        """A block of 1..4 layers (3..7 at the top); keep: None, "shape" (the block returns
        its input's shape) or "spatial" (all but dimension 1 kept)."""
        count = self.rng.randint(4, 8) if depth == 0 else self.rng.randint(1, 3)
        layers = []
        for _ in range(count):
            if self.ops >= MAX_OPS:
                break
            made = self.layer(shape, keep, depth)
            if made is not None:
                layers.append(made[0])
                shape = made[1]
        return Seq(*layers), shape


def _prod(xs):
    out = 1
    for x in xs:
        out *= x
    return out


def _set(shape, dim, value):
    shape = list(shape)
    shape[dim] = value
    return tuple(shape)


def _input_shape(r):
    n = r.randint(2, 3)
    kind = r.choice((4, 4, 3, 2))
    big = 14 if r.random() < 0.25 else 9
    if kind == 4:
        return (n, r.randint(1, 4), r.randint(3, big), r.randint(3, big))
    if kind == 3:
        return (n, r.randint(1, 4), r.randint(4, 12))
    return (n, r.randint(2, 12))


def _tensor(shape, dtype, gen, channels_last, special):
    t = torch.randn(shape, generator=gen, dtype=torch.float64) * 2
    if special:
        flat = t.view(-1)
        value, _, block = special.partition(" ")
        if block:  # a run of a third of the elements (whole pool windows, whole rows)
            start = int(torch.randint(flat.numel(), (1,), generator=gen))
            where = slice(start, start + flat.numel() // 3 + 1)
        else:
            where = torch.randint(flat.numel(), (2,), generator=gen)
        flat[where] = {"nan": float("nan"), "inf": float("inf"), "-inf": float("-inf"),
                       "-0": -0.0, "zero": 0.0, "one": 1.0}[value]
    t = t.to(dtype)
    if channels_last and t.dim() == 4:
        t = t.contiguous(memory_format=torch.channels_last)
    return t


def make_case(seed):
    """The case of one seed (see the module doc); seeds the global torch RNG."""
    r = random.Random(seed)
    dtype = r.choice(DTYPES)
    shape = _input_shape(r)
    channels_last = len(shape) == 4 and r.random() < 0.3
    special = r.choice(("nan", "inf", "-inf", "-0", "zero", "nan block", "-inf block",
                        "zero block", "one block")) if r.random() < 0.12 else ""
    steps = r.choice((1, 1, 2))
    input_grad = r.random() < 0.5
    retain = r.random() < 0.15
    between = r.choice(("", "no_grad", "eval")) if steps == 2 else ""
    torch.manual_seed(seed)
    gen = Gen(r, dtype)
    model, _ = gen.seq(shape, 0, None)
    wrap_first = r.random() < 0.2
    nested = r.randrange(1, len(list(model.modules()))) if r.random() < 0.2 \
        and len(list(model.modules())) > 1 else -1
    twice = r.random() < 0.15
    outer = r.choice(("save_on_cpu", "bf16_hooks", "autocast", "checkpoint",
                      "checkpoint_reentrant")) if r.random() < 0.15 else ""
    input_grad = input_grad or not any(True for _ in model.parameters())
    g = torch.Generator().manual_seed(seed)
    inputs = [_tensor(shape, dtype, g, channels_last, special if i == 0 else "")
              for i in range(steps)]
    return Case(seed, dtype, shape, channels_last, special, input_grad, retain, wrap_first,
                nested, between, twice, outer, steps, model, inputs)


def output_grad(case, step, out):
    """The gradient fed to the output of one step (drawn from the seed, the output's shape)."""
    g = torch.Generator().manual_seed(case.seed * 1000 + step)
    return torch.randn(out.shape, generator=g, dtype=torch.float64).to(out.dtype)
