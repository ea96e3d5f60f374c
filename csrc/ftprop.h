// Per-element math of ftprop_cuda, shared by the CPU loops and the CUDA kernels.
//
// Everything here is C10_HOST_DEVICE so that CPU CI runs exactly the arithmetic the GPU runs.
// T is the op-math type (float for half/bfloat16/float, double for double). The formulas and
// their evaluation order follow ../shared/SPEC.md; forward results must be bit-identical to
// ftprop_cuda/reference.py, so keep the order of operations as written there.
#pragma once

#include <c10/macros/Macros.h>

#include <cmath>
#include <cstdint>

namespace ftprop {

enum class StepRule : int {
  kSte = 0,
  kSste,
  kRamp,
  kSoftHinge,
  kSaturatedHinge,
  kHinge,
  kPerceptron,
  kSigmoid,
  kLecunTanh,
};

enum class StairRule : int {
  kSte = 0,
  kSste,
  kSoftHinge,
  kSaturatedHinge,
};

// The estimator rules are not losses: they ignore grad_scale and always pass g through.
constexpr bool is_estimator(StepRule r) {
  return r == StepRule::kSte || r == StepRule::kSste || r == StepRule::kRamp;
}
constexpr bool is_estimator(StairRule r) {
  return r == StairRule::kSte || r == StairRule::kSste;
}

template <typename T>
C10_HOST_DEVICE inline T tanh_(T x) {
#if defined(__CUDA_ARCH__)
  return ::tanh(x);
#else
  return std::tanh(x);
#endif
}

template <typename T>
C10_HOST_DEVICE inline T exp_(T x) {
#if defined(__CUDA_ARCH__)
  return ::exp(x);
#else
  return std::exp(x);
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
template <typename T>
C10_HOST_DEVICE inline T clamp_nan(T x, T lo, T hi) {
  return x < lo ? lo : (x > hi ? hi : x);
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
  if (z != z) {
    return z;
  }
  return z > T(0) ? T(1) : (zero_one ? T(0) : T(-1));
}

// Slope s(z, t) of SPEC's step-unit table; the weighted gradient is g * s.
template <StepRule R, typename T>
C10_HOST_DEVICE inline T step_slope(T z, T t, bool zero_one) {
  if constexpr (R == StepRule::kSte) {
    return T(1);
  } else if constexpr (R == StepRule::kSste) {
    const bool in = zero_one ? (z >= T(0) && z <= T(1)) : (z >= T(-1) && z <= T(1));
    return in ? T(1) : T(0);
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
    return (tz > T(-1) && tz <= T(1)) ? T(1) : T(0);
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

// dz for one element. batch is B (z.shape[0], or 1 for a 0-dim tensor).
template <StepRule R, typename T>
C10_HOST_DEVICE inline T step_backward(T g, T z, bool zero_one, bool grad_scale, T batch) {
  const T t = target(g);
  const T s = step_slope<R>(z, t, zero_one);
  if (is_estimator(R) || grad_scale) {
    return g * s;
  }
  return -t * s / batch;
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

template <StairRule R, typename T>
C10_HOST_DEVICE inline T staircase_backward(T g, T z, bool grad_scale, const Stair<T>& p) {
  if constexpr (R == StairRule::kSte) {
    return g;
  } else if constexpr (R == StairRule::kSste) {
    const T u = stair_u(z, p);
    return g * ((u >= T(0) && u <= T(1)) ? T(1) : T(0));
  } else if constexpr (R == StairRule::kSoftHinge) {
    const T u = stair_u(z, p);
    const T th = tanh_(T(2) * u - T(1));
    const T s = T(1) - th * th;
    if (grad_scale) {
      return g * s;
    }
    return -target(g) * s / p.denom;
  } else {  // kSaturatedHinge
    const T c = stair_count(stair_u(z, p), p);
    if (grad_scale) {
      return g * c / p.steps;
    }
    return -target(g) * c / p.sh_denom;
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

template <StepRule R, typename T>
struct StepBackwardOp {
  bool zero_one;
  bool grad_scale;
  T batch;
  C10_HOST_DEVICE T operator()(T g, T z) const {
    return step_backward<R>(g, z, zero_one, grad_scale, batch);
  }
};

template <typename T>
struct StairForwardOp {
  Stair<T> p;
  C10_HOST_DEVICE T operator()(T z) const { return staircase_forward(z, p); }
};

template <StairRule R, typename T>
struct StairBackwardOp {
  bool grad_scale;
  Stair<T> p;
  C10_HOST_DEVICE T operator()(T g, T z) const { return staircase_backward<R>(g, z, grad_scale, p); }
};

}  // namespace ftprop
