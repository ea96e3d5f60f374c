"""Statistics over seeds: mean and sample deviation, Student t (distribution and quantile,
no SciPy), paired differences with their confidence interval, and a claim's verdict."""
import math


def _betacf(a, b, x):
    """Continued fraction of the regularized incomplete beta function (modified Lentz)."""
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 400):
        m2 = 2 * m
        for num in (m * (b - m) * x / ((a + m2 - 1) * (a + m2)),
                    -(a + m) * (a + b + m) * x / ((a + m2) * (a + m2 + 1))):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def _betainc(a, b, x):
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
                     + a * math.log(x) + b * math.log1p(-x))
    # the continued fraction converges fast on the side of the mean a / (a + b)
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_cdf(t, df):
    """Student t distribution function with df degrees of freedom."""
    tail = 0.5 * _betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t > 0 else tail


def t_quantile(p, df):
    """The p-quantile of Student's t with df degrees of freedom (bisection on t_cdf)."""
    if not 0.0 < p < 1.0 or df <= 0:
        raise ValueError(f"t_quantile needs 0 < p < 1 and df > 0, got p={p}, df={df}")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        lo, hi = hi, hi * 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


def _finite(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def mean_std(values):
    """Mean and sample standard deviation (n - 1); the deviation is None for one value."""
    n = len(values)
    if n == 0:
        return None, None
    mean = sum(values) / n
    if n < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))


def paired_difference(a, b, level=0.95):
    """a - b over the seeds both have with finite values ({seed: value} each): mean and t
    confidence interval."""
    seeds = sorted(s for s in set(a) & set(b) if _finite(a[s]) and _finite(b[s]))
    diffs = [a[s] - b[s] for s in seeds]
    mean, sd = mean_std(diffs)
    out = {"seeds": seeds, "n": len(seeds), "mean": mean, "std": sd, "lo": None, "hi": None}
    if sd is not None:
        half = t_quantile(0.5 + level / 2.0, len(seeds) - 1) * sd / math.sqrt(len(seeds))
        out["lo"], out["hi"] = mean - half, mean + half
    return out


def verdict(diff, direction, margin):
    """'holds', 'contradicted' or 'not distinguishable at this scale', from the interval of
    a - b against the claim that a is greater / less / equal (within margin) / not worse
    (by more than margin) than b."""
    lo, hi = diff["lo"], diff["hi"]
    if not (_finite(lo) and _finite(hi)):
        return f"not testable ({diff.get('n', 0)} shared seeds; an interval needs 2)"
    if direction == "greater":
        holds, contra = lo > 0, hi < 0
    elif direction == "less":
        holds, contra = hi < 0, lo > 0
    elif direction == "equal":
        holds, contra = -margin < lo and hi < margin, lo > margin or hi < -margin
    else:  # not_worse
        holds, contra = lo > -margin, hi < -margin
    return "holds" if holds else "contradicted" if contra else "not distinguishable at this scale"
