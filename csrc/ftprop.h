// Per-element math of ftprop_cuda, shared by the CPU loops and the CUDA kernels.
//
// Everything here is C10_HOST_DEVICE so that CPU CI runs exactly the arithmetic the GPU runs.
// T is the op-math type (float for half/bfloat16/float, double for double). The formulas and
// their evaluation order follow docs/spec.md; forward results must be bit-identical to
// ftprop_cuda/reference.py, so keep the order of operations as written there.
#pragma once

#include <c10/macros/Macros.h>
#include <c10/util/bit_cast.h>

#include <cmath>
#include <cstdint>

#include "rules.h"

namespace ftprop {

// Host float32 exp and tanh written with plain arithmetic so that the compiler vectorises the
// CPU loops (a call to std::tanh keeps a loop scalar). exp: Cody-Waite range
// reduction to |r| <= ln(2)/2 and exp(r) = 1 + r + r^2 q(r) with q cubic, its coefficients fitted
// here for least maximum relative error (1.1e-7 in exact arithmetic); in float32 the relative
// error measured 2.1e-7 at most on a 2e7-point grid of [-87, 88]. 0 below -87, inf above 88,
// NaN kept.
// The backward tolerance is 1e-5 relative, and these loops are bound by arithmetic, so the
// polynomial is as short as that allows and evaluated in two independent halves (the loop is
// bound by the latency of this chain, not by the number of operations alone).
// Double precision and the GPU use the library functions.
// exp(xc) for xc in [-87, 88] (NaN carried through); the callers clamp and handle the ends.
inline float host_exp_clamped(float xc) {
  const float n = (xc * 1.44269504088896341f + 12582912.0f) - 12582912.0f;  // round(x / ln 2)
  const float r = (xc - n * 0.693359375f) - n * -2.12194440e-4f;
  const float r2 = r * r;
  const float lo = 4.99992430e-1f + r * 1.66671112e-1f;
  const float hi = 4.18890193e-2f + r * 8.31286050e-3f;
  const float q = lo + r2 * hi;
  const float p = (1.0f + r) + r2 * q;
  return p * c10::bit_cast<float>((static_cast<int32_t>(n) + 127) << 23);  // p * 2^n
}

inline float host_exp(float x) {
  const float xc = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
  float result = host_exp_clamped(xc);
  result = x < -87.0f ? 0.0f : result;
  result = x > 88.0f ? INFINITY : result;
  return x != x ? x : result;
}

// exp(x) for x <= 0 (or NaN, which the arithmetic carries through): no overflow side to clamp.
inline float host_exp_nonpositive(float x) {
  const float result = host_exp_clamped(x < -87.0f ? -87.0f : x);
  return x < -87.0f ? 0.0f : result;
}

// tanh(x) = sign(x) (1 - 2e / (1 + e)) with e = exp(-2|x|), accurate to about 1e-7 absolute
// (what 1 - tanh(x)^2 needs; not relative accuracy near 0). Written as 1 - 2e/(1+e) rather than
// (1 - e)/(1 + e) so that near saturation it rounds to 1 where a correctly rounded tanh does:
// 1 - tanh(x)^2 then becomes 0 at the same |x| as in the reference (inf * 0 is NaN there).
inline float host_tanh(float x) {
  const uint32_t bits = c10::bit_cast<uint32_t>(x);
  const float a = c10::bit_cast<float>(bits & 0x7fffffffu);  // |x|, one AND
  const float e = host_exp_nonpositive(-2.0f * a);
  const float th = 1.0f - 2.0f * e / (1.0f + e);
  // A select, which GCC drops where only tanh^2 is used (all callers): tanh(-0) comes out +0.
  return x < 0.0f ? -th : th;
}
inline double host_tanh(double x) { return std::tanh(x); }
inline double host_exp(double x) { return std::exp(x); }

template <typename T>
C10_HOST_DEVICE inline T tanh_(T x) {
#if defined(__CUDA_ARCH__)
  return ::tanh(x);
#else
  return host_tanh(x);
#endif
}

template <typename T>
C10_HOST_DEVICE inline T exp_(T x) {
#if defined(__CUDA_ARCH__)
  return ::exp(x);
#else
  return host_exp(x);
#endif
}

template <typename T>
C10_HOST_DEVICE inline T ceil_(T x) {
#if defined(__CUDA_ARCH__)
  return ::ceil(x);
#else
  return std::ceil(x);
#endif
}

// clamp that lets NaN through, like torch.clamp (std::min/max would drop it on one side).
// Written as two selects of the form x86's minps/maxps compute (they return the second operand
// when either is NaN), so that the vectorised loops use one instruction per bound.
template <typename T>
C10_HOST_DEVICE inline T clamp_nan(T x, T lo, T hi) {
  const T below = hi < x ? hi : x;
  return lo > below ? lo : below;
}

// Target t = -sign(g): -1 where g > 0, +1 where g < 0, 0 for g == 0 and NaN ("no opinion").
template <typename T>
C10_HOST_DEVICE inline T target(T g) {
  return g > T(0) ? T(-1) : (g < T(0) ? T(1) : T(0));
}

// ---------------------------------------------------------------------------------------------
// Step units
// ---------------------------------------------------------------------------------------------

// y = +1 if z > 0 else -1 (sign(0) = -1), or 1/0 with zero_one. NaN stays NaN.
template <typename T>
C10_HOST_DEVICE inline T step_forward(T z, bool zero_one) {
  const T low = zero_one ? T(0) : T(-1);
  const T y = z > T(0) ? T(1) : low;
  return z != z ? z : y;  // selects, not branches, so that CPU loops vectorise
}

// Slope s(z, t) of the step-unit table of docs/spec.md; the weighted gradient is g * s.
template <StepRule R, typename T>
C10_HOST_DEVICE inline T step_slope(T z, T t, bool zero_one) {
  if constexpr (R == StepRule::kSte) {
    return T(1);
  } else if constexpr (R == StepRule::kSste) {
    const T lower = zero_one ? T(0) : T(-1);
    return ((z >= lower) & (z <= T(1))) ? T(1) : T(0);
  } else if constexpr (R == StepRule::kRamp) {
    if (zero_one) {
      if (z >= T(0) && z <= T(1)) return T(1);
      if (z > T(-1) && z < T(0)) return z + T(1);
      if (z > T(1) && z < T(2)) return T(2) - z;
      return T(0);
    }
    const T a = z < T(0) ? -z : z;
    if (a <= T(1)) return T(1);
    if (a > T(1) && a < T(2)) return T(2) - a;
    return T(0);
  } else if constexpr (R == StepRule::kSoftHinge) {
    const T th = tanh_(z);
    return T(1) - th * th;
  } else if constexpr (R == StepRule::kSaturatedHinge) {
    const T tz = t * z;
    return ((tz > T(-1)) & (tz <= T(1))) ? T(1) : T(0);
  } else if constexpr (R == StepRule::kHinge) {
    return (t * z <= T(1)) ? T(1) : T(0);
  } else if constexpr (R == StepRule::kPerceptron) {
    return (t * z <= T(0)) ? T(1) : T(0);
  } else if constexpr (R == StepRule::kSigmoid) {
    const T p = T(1) / (T(1) + exp_(-(T(2) * z)));
    return T(2) * p * (T(1) - p);
  } else {  // kLecunTanh
    const T th = tanh_(T(2) * z / T(3));
    // 1.7519 * (2/3) folded in double, as the reference's Python constant is.
    return static_cast<T>(1.7519 * (2.0 / 3.0)) * (T(1) - th * th);
  }
}

// dz from the target and the slope: g * s (weighted, and always for the estimators), or
// -t * s / B (unweighted). batch is B (z.shape[0], or 1 for a 0-dim tensor). The mode is a
// template parameter: a select on a runtime bool keeps GCC from vectorising the CPU loops.
template <StepRule R, bool kWeighted, typename T>
C10_HOST_DEVICE inline T step_grad(T g, T t, T s, T batch) {
  if constexpr (is_estimator(R) || kWeighted) {
    return g * s;
  } else {
    return -t * s / batch;
  }
}

template <StepRule R, bool kWeighted, typename T>
C10_HOST_DEVICE inline T step_backward(T g, T z, bool zero_one, T batch) {
  const T t = target(g);
  return step_grad<R, kWeighted>(g, t, step_slope<R>(z, t, zero_one), batch);
}

// ---- Saved state: a code of z that is all the backward needs -------------------------------
// Rules whose slope only depends on which interval z lies in get a lossless code of 0 (ste),
// 1 (sste: in the window) or 2 bits (saturated_hinge, hinge, perceptron: bit 0 is the window
// for t = -1, i.e. g > 0; bit 1 the window for t = +1). For t = 0 the slope does not matter: g
// is then +-0 or NaN in the weighted mode, and -t * s is -0 for s = 0 and s = 1 alike.
// The smooth rules (soft_hinge, sigmoid, lecun_tanh, ramp) get an 8-bit code of the slope on
// request (save="compact"): s quantised to 254 levels on [0, s_max] (error <= s_max / 508),
// with 255 for NaN. Only an exactly zero slope gets level 0: a slope in (0, s_max / 508) gets
// level 1 and decodes to s_max / 254 (error < s_max / 254), so that g = +-inf times a tiny
// slope stays +-inf as in the reference instead of becoming inf * 0 = NaN.
// Code widths and s_max per rule: rules.h.
constexpr uint8_t kCompactNan = 255;
constexpr double kCompactLevels = 254.0;

// Codes are computed and consumed as values of T that truncate to the code (exact small integers
// for the interval rules): the CPU loops keep a whole block in one element width that way, which
// lets them vectorise; the loops convert to and from the packed bytes (code_byte()).
template <typename T>
C10_HOST_DEVICE inline uint8_t code_byte(T c) {
  return static_cast<uint8_t>(static_cast<int32_t>(c));
}

// s * 254 / s_max rounded to nearest (truncation of q + 0.5 >= 0.5), at least 1 for s > 0 and
// 254 at most; 255 for NaN. (Slopes are never negative.)
template <typename T>
C10_HOST_DEVICE inline T compact_code(T s, T levels_per_unit) {
  const T rounded = s * levels_per_unit + T(0.5);
  const T least = s > T(0) ? T(1) : T(0);
  const T q = rounded < least ? least : rounded;
  return s != s ? T(kCompactNan) : (q > T(kCompactLevels) ? T(kCompactLevels) : q);
}

template <typename T>
C10_HOST_DEVICE inline T compact_decode(T code, T unit_per_level) {
  return code == T(kCompactNan) ? T(NAN) : code * unit_per_level;
}

template <StepRule R, typename T>
C10_HOST_DEVICE inline T step_code(T z, bool zero_one, T levels_per_unit) {
  if constexpr (R == StepRule::kSte) {
    return T(0);
  } else if constexpr (R == StepRule::kSste) {
    return step_slope<R>(z, T(0), zero_one) != T(0) ? T(1) : T(0);
  } else if constexpr (R == StepRule::kSaturatedHinge) {
    const T window_up = ((z >= T(-1)) & (z < T(1))) ? T(1) : T(0);   // t = -1
    const T window_down = ((z > T(-1)) & (z <= T(1))) ? T(2) : T(0);  // t = +1
    return window_up + window_down;
  } else if constexpr (R == StepRule::kHinge) {
    return (z >= T(-1) ? T(1) : T(0)) + (z <= T(1) ? T(2) : T(0));
  } else if constexpr (R == StepRule::kPerceptron) {
    return (z >= T(0) ? T(1) : T(0)) + (z <= T(0) ? T(2) : T(0));
  } else {  // smooth: 8-bit slope
    return compact_code(step_slope<R>(z, T(0), zero_one), levels_per_unit);
  }
}

template <StepRule R, typename T>
C10_HOST_DEVICE inline T step_decode(T code, T t, T unit_per_level) {
  if constexpr (R == StepRule::kSte) {
    return T(1);
  } else if constexpr (R == StepRule::kSste) {
    return code;
  } else if constexpr (step_code_bits(R) == 2) {
    // t = 0 takes bit 1 too: its slope does not matter (see above). One select, not two: GCC
    // did not if-convert the nested form, which left this loop scalar.
    const T bit1 = code >= T(2) ? T(1) : T(0);
    const T bit0 = code - T(2) * bit1;
    return t < T(0) ? bit0 : bit1;
  } else {
    return compact_decode(code, unit_per_level);
  }
}

// Per-rule constants of the codes, computed once per launch.
template <typename T>
struct CodeScale {
  T levels_per_unit;  // encode: 254 / s_max
  T unit_per_level;   // decode: s_max / 254
};

template <typename T>
inline CodeScale<T> make_code_scale(double s_max) {
  return {static_cast<T>(kCompactLevels / s_max), static_cast<T>(s_max / kCompactLevels)};
}

// ---------------------------------------------------------------------------------------------
// Staircase units (quantized ReLU)
// ---------------------------------------------------------------------------------------------

// Scalars of one staircase, converted once to the op-math type. width is (hi - lo) computed in
// double and rounded once, exactly as the reference converts the Python float.
template <typename T>
struct Stair {
  T lo;
  T width;
  T steps;        // K
  T steps_m1;     // K - 1
  T denom;        // B * (hi - lo), the unweighted mode's normaliser
  T sh_denom;     // K * B * (hi - lo), the same for saturated_hinge
};

template <typename T>
C10_HOST_DEVICE inline T stair_u(T z, const Stair<T>& p) {
  return (z - p.lo) / p.width;
}

// y = lo + q (hi - lo), q = min(max(ceil(u (K - 1)), 0), K) / K. NaN stays NaN.
template <typename T>
C10_HOST_DEVICE inline T staircase_forward(T z, const Stair<T>& p) {
  const T u = stair_u(z, p);
  const T q = clamp_nan(ceil_(u * p.steps_m1), T(0), p.steps) / p.steps;
  return p.lo + q * p.width;
}

// c(u) = cl(v + m) - cl(v - m), v = u (K - 1), m = K - 1, cl(x) = ceil(clamp(x, 0, K)).
template <typename T>
C10_HOST_DEVICE inline T stair_count(T u, const Stair<T>& p) {
  const T v = u * p.steps_m1;
  const T m = p.steps_m1;
  return ceil_(clamp_nan(v + m, T(0), p.steps)) - ceil_(clamp_nan(v - m, T(0), p.steps));
}

// The per-element quantity each staircase rule's gradient needs: the window indicator (sste),
// the slope 1 - tanh(2u - 1)^2 (soft_hinge) or the threshold count c(u) (saturated_hinge).
template <StairRule R, typename T>
C10_HOST_DEVICE inline T stair_quantity(T z, const Stair<T>& p) {
  const T u = stair_u(z, p);
  if constexpr (R == StairRule::kSte) {
    return T(1);
  } else if constexpr (R == StairRule::kSste) {
    return ((u >= T(0)) & (u <= T(1))) ? T(1) : T(0);
  } else if constexpr (R == StairRule::kSoftHinge) {
    const T th = tanh_(T(2) * u - T(1));
    return T(1) - th * th;
  } else {
    return stair_count(u, p);
  }
}

template <StairRule R, bool kWeighted, typename T>
C10_HOST_DEVICE inline T stair_grad(T g, T q, const Stair<T>& p) {
  if constexpr (R == StairRule::kSte) {
    return g;
  } else if constexpr (R == StairRule::kSste) {
    return g * q;
  } else if constexpr (R == StairRule::kSoftHinge) {
    if constexpr (kWeighted) {
      return g * q;
    } else {
      return -target(g) * q / p.denom;
    }
  } else if constexpr (kWeighted) {
    return g * q / p.steps;
  } else {
    return -target(g) * q / p.sh_denom;
  }
}

template <StairRule R, bool kWeighted, typename T>
C10_HOST_DEVICE inline T staircase_backward(T g, T z, const Stair<T>& p) {
  return stair_grad<R, kWeighted>(g, stair_quantity<R>(z, p), p);
}

// Saved-state codes of the staircase: nothing for ste, 1 bit for sste, the count c(u) in 0..K
// (K + 1 for NaN) for saturated_hinge, and the 8-bit slope code for soft_hinge (on request).
// Returns -1 where no code applies (saturated_hinge with K > 254: z is saved instead).
inline int stair_code_bits(StairRule r, int64_t steps) {
  const int fixed = stair_fixed_code_bits(r);
  if (fixed >= 0) {
    return fixed;
  }
  return steps + 2 <= 4 ? 2 : steps + 2 <= 16 ? 4 : steps + 2 <= 256 ? 8 : -1;
}

template <StairRule R, typename T>
C10_HOST_DEVICE inline T stair_code(T z, const Stair<T>& p, T levels_per_unit) {
  if constexpr (R == StairRule::kSte) {
    return T(0);
  } else if constexpr (R == StairRule::kSoftHinge) {
    return compact_code(stair_quantity<R>(z, p), levels_per_unit);
  } else {
    const T q = stair_quantity<R>(z, p);  // 0/1 or an integer count in [0, K]
    return q != q ? p.steps + T(1) : q;
  }
}

template <StairRule R, typename T>
C10_HOST_DEVICE inline T stair_decode(T code, const Stair<T>& p, T unit_per_level) {
  if constexpr (R == StairRule::kSte) {
    return T(1);
  } else if constexpr (R == StairRule::kSoftHinge) {
    return compact_decode(code, unit_per_level);
  } else if constexpr (R == StairRule::kSste) {
    return code;
  } else {
    return code == p.steps + T(1) ? T(NAN) : code;
  }
}

}  // namespace ftprop

namespace ftprop {

// Functors the device loops apply element by element (plain structs rather than lambdas, so
// that the same code runs in CPU loops and CUDA kernels without extended-lambda rules).
template <typename T>
struct StepForwardOp {
  bool zero_one;
  C10_HOST_DEVICE T operator()(T z) const { return step_forward(z, zero_one); }
};

template <StepRule R, bool kWeighted, typename T>
struct StepBackwardOp {
  bool zero_one;
  T batch;
  C10_HOST_DEVICE T operator()(T g, T z) const {
    return step_backward<R, kWeighted>(g, z, zero_one, batch);
  }
};

template <typename T>
struct StairForwardOp {
  Stair<T> p;
  C10_HOST_DEVICE T operator()(T z) const { return staircase_forward(z, p); }
};

template <StairRule R, bool kWeighted, typename T>
struct StairBackwardOp {
  Stair<T> p;
  C10_HOST_DEVICE T operator()(T g, T z) const { return staircase_backward<R, kWeighted>(g, z, p); }
};

// Forward that also writes the saved-state code, and the backward that reads it.
template <StepRule R, typename T>
struct StepEncodeOp {
  bool zero_one;
  T levels_per_unit;
  C10_HOST_DEVICE T operator()(T z) const { return step_forward(z, zero_one); }
  C10_HOST_DEVICE T code(T z) const { return step_code<R>(z, zero_one, levels_per_unit); }
};

template <StepRule R, bool kWeighted, typename T>
struct StepDecodeOp {
  T batch;
  T unit_per_level;
  C10_HOST_DEVICE T operator()(T g, T code) const {
    const T t = target(g);
    return step_grad<R, kWeighted>(g, t, step_decode<R>(code, t, unit_per_level), batch);
  }
};

template <StairRule R, typename T>
struct StairEncodeOp {
  Stair<T> p;
  T levels_per_unit;
  C10_HOST_DEVICE T operator()(T z) const { return staircase_forward(z, p); }
  C10_HOST_DEVICE T code(T z) const { return stair_code<R>(z, p, levels_per_unit); }
};

template <StairRule R, bool kWeighted, typename T>
struct StairDecodeOp {
  Stair<T> p;
  T unit_per_level;
  C10_HOST_DEVICE T operator()(T g, T code) const {
    return stair_grad<R, kWeighted>(g, stair_decode<R>(code, p, unit_per_level), p);
  }
};

// Adapts a decode functor to a rule without a code (ste): the backward is then a map over g.
template <typename F>
struct WithoutCode {
  F f;
  template <typename T>
  C10_HOST_DEVICE T operator()(T g) const { return f(g, T(0)); }
};

}  // namespace ftprop
