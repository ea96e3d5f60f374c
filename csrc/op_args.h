// Host-side argument parsing shared by the CPU and CUDA launchers: rule names, the staircase
// scalars, and the checks that every launcher runs before touching memory.
#pragma once

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>
#include <c10/util/string_view.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <type_traits>
#include <utility>

#include "ftprop.h"

namespace ftprop {

// Rule names are parsed against the lists of rules.h; the error message lists every name.
template <typename Rule, size_t N>
inline Rule parse_rule(c10::string_view rule, const Rule (&rules)[N], const char* unit) {
  for (const Rule r : rules) {
    if (rule == rule_name(r)) return r;
  }
  std::string names;
  for (const Rule r : rules) {
    names += names.empty() ? "" : ", ";
    names += rule_name(r);
  }
  TORCH_CHECK_VALUE(false, "ftprop_cuda ", unit, ": unknown rule '", rule, "'; expected one of ",
                    names);
}

#define FTPROP_STEP_RULE_VALUE(e, ...) StepRule::e,
#define FTPROP_STAIR_RULE_VALUE(e, ...) StairRule::e,
inline StepRule parse_step_rule(c10::string_view rule) {
  static constexpr StepRule kRules[] = {FTPROP_STEP_RULES(FTPROP_STEP_RULE_VALUE)};
  return parse_rule(rule, kRules, "step");
}

inline StairRule parse_stair_rule(c10::string_view rule) {
  static constexpr StairRule kRules[] = {FTPROP_STAIR_RULES(FTPROP_STAIR_RULE_VALUE)};
  return parse_rule(rule, kRules, "staircase");
}
#undef FTPROP_STEP_RULE_VALUE
#undef FTPROP_STAIR_RULE_VALUE

inline void check_float_tensor(const at::Tensor& t, const char* name) {
  TORCH_CHECK_TYPE(at::isFloatingType(t.scalar_type()), "ftprop_cuda: argument '", name,
                   "' must be a floating-point tensor (float16, bfloat16, float32, float64), got ",
                   t.scalar_type());
}

inline void check_same(const at::Tensor& grad, const at::Tensor& z) {
  TORCH_CHECK_VALUE(grad.sizes() == z.sizes(), "ftprop_cuda: 'grad' has shape ", grad.sizes(),
                    " but 'z' has shape ", z.sizes());
  TORCH_CHECK_TYPE(grad.scalar_type() == z.scalar_type(), "ftprop_cuda: 'grad' has dtype ",
                   grad.scalar_type(), " but 'z' has dtype ", z.scalar_type());
  TORCH_CHECK(grad.device() == z.device(), "ftprop_cuda: 'grad' is on ", grad.device(),
              " but 'z' is on ", z.device());
}

// B of docs/spec.md: z.shape[0], or 1 for a 0-dim tensor.
inline int64_t batch_of(const at::Tensor& z) {
  return z.dim() > 0 ? z.size(0) : 1;
}

template <typename T>
inline Stair<T> make_stair(int64_t steps, double lo, double hi, int64_t batch) {
  Stair<T> p;
  p.lo = static_cast<T>(lo);
  p.width = static_cast<T>(hi - lo);
  p.steps = static_cast<T>(steps);
  p.steps_m1 = static_cast<T>(steps - 1);
  p.denom = static_cast<T>(static_cast<double>(batch) * (hi - lo));
  p.sh_denom = static_cast<T>(static_cast<double>(steps) * (static_cast<double>(batch) * (hi - lo)));
  return p;
}

// "float32" for at::kFloat: dtypes named as Python users write them.
inline std::string dtype_name(at::ScalarType t) {
  return std::string(c10::getDtypeNames(t).first);
}

// Beyond this, K (and K - 1, K + 1) may not be exact float32 values.
constexpr int64_t kMaxSteps = int64_t(1) << 24;

// The staircase scalars, checked against z (the tensor whose dtype and batch B the op uses):
// the levels lie in [lo, hi], so lo and hi must be finite in z's dtype, and the widths the
// arithmetic divides by must be finite and positive as the op-math type rounds them (else the
// whole output is NaN).
inline void check_stair_args(const at::Tensor& z, int64_t steps, double lo, double hi) {
  TORCH_CHECK_VALUE(steps >= 2 && steps <= kMaxSteps,
                    "ftprop_cuda staircase: 'steps' must be an integer in [2, 2**24] (beyond "
                    "2**24 the level count K is not exact in float32), got ", steps);
  TORCH_CHECK_VALUE(std::isfinite(lo) && std::isfinite(hi) && lo < hi,
                    "ftprop_cuda staircase: need finite 'lo' < 'hi', got lo=", lo, ", hi=", hi);
  const int64_t batch = std::max<int64_t>(batch_of(z), 1);  // an empty batch divides by nothing
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, z.scalar_type(), "staircase_args", [&] {
    using opmath_t = at::opmath_type<scalar_t>;
    const auto finite_in_dtype = [](double v) {
      return std::isfinite(static_cast<double>(static_cast<opmath_t>(static_cast<scalar_t>(v))));
    };
    TORCH_CHECK_VALUE(finite_in_dtype(lo) && finite_in_dtype(hi),
                      "ftprop_cuda staircase: 'lo' and 'hi' must be finite in the input's dtype ",
                      dtype_name(z.scalar_type()),
                      " (the output levels lie in [lo, hi]); got lo=", lo, ", hi=", hi);
    const Stair<opmath_t> p = make_stair<opmath_t>(steps, lo, hi, batch);
    const auto positive = [](opmath_t v) { return std::isfinite(v) && v > opmath_t(0); };
    TORCH_CHECK_VALUE(positive(p.width) && positive(p.denom) && positive(p.sh_denom),
                      "ftprop_cuda staircase: 'lo' and 'hi' must leave hi - lo, B*(hi - lo) and "
                      "K*B*(hi - lo) finite and > 0 in ",
                      dtype_name(c10::CppTypeToScalarType<opmath_t>::value),
                      " (the arithmetic type of ", dtype_name(z.scalar_type()), "); got lo=", lo,
                      ", hi=", hi, " with B=", batch, ", K=", steps, ": hi - lo=", p.width,
                      ", B*(hi - lo)=", p.denom, ", K*B*(hi - lo)=", p.sh_denom);
  });
}

// Calls f(std::integral_constant<StepRule, R>{}) for the runtime rule, so loops get the rule as
// a compile-time constant (one specialised, vectorisable loop per rule).
#define FTPROP_STEP_DISPATCH_CASE(e, ...) \
  case StepRule::e:                       \
    return f(std::integral_constant<StepRule, StepRule::e>{});
template <typename F>
inline void dispatch_step_rule(StepRule r, F&& f) {
  switch (r) { FTPROP_STEP_RULES(FTPROP_STEP_DISPATCH_CASE) }
}
#undef FTPROP_STEP_DISPATCH_CASE

// Calls f(std::integral_constant<bool, b>{}) for the runtime flag (the gradient mode).
template <typename F>
inline void dispatch_bool(bool b, F&& f) {
  if (b) {
    f(std::integral_constant<bool, true>{});
  } else {
    f(std::integral_constant<bool, false>{});
  }
}

#define FTPROP_STAIR_DISPATCH_CASE(e, ...) \
  case StairRule::e:                       \
    return f(std::integral_constant<StairRule, StairRule::e>{});
template <typename F>
inline void dispatch_stair_rule(StairRule r, F&& f) {
  switch (r) { FTPROP_STAIR_RULES(FTPROP_STAIR_DISPATCH_CASE) }
}
#undef FTPROP_STAIR_DISPATCH_CASE

}  // namespace ftprop
