// Host-side argument parsing shared by the CPU and CUDA launchers: rule names, the staircase
// scalars, and the checks that every launcher runs before touching memory.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>
#include <c10/util/string_view.h>

#include <string>
#include <type_traits>
#include <utility>

#include "ftprop.h"

namespace ftprop {

inline StepRule parse_step_rule(c10::string_view rule) {
  static const std::pair<const char*, StepRule> kRules[] = {
      {"ste", StepRule::kSte},
      {"sste", StepRule::kSste},
      {"ramp", StepRule::kRamp},
      {"soft_hinge", StepRule::kSoftHinge},
      {"saturated_hinge", StepRule::kSaturatedHinge},
      {"hinge", StepRule::kHinge},
      {"perceptron", StepRule::kPerceptron},
      {"sigmoid", StepRule::kSigmoid},
      {"lecun_tanh", StepRule::kLecunTanh},
  };
  for (const auto& kv : kRules) {
    if (rule == kv.first) return kv.second;
  }
  TORCH_CHECK_VALUE(false, "ftprop_cuda step: unknown rule '", rule,
                    "'; expected one of ste, sste, ramp, soft_hinge, saturated_hinge, hinge, "
                    "perceptron, sigmoid, lecun_tanh");
}

inline StairRule parse_stair_rule(c10::string_view rule) {
  if (rule == "ste") return StairRule::kSte;
  if (rule == "sste") return StairRule::kSste;
  if (rule == "soft_hinge") return StairRule::kSoftHinge;
  if (rule == "saturated_hinge") return StairRule::kSaturatedHinge;
  TORCH_CHECK_VALUE(false, "ftprop_cuda staircase: unknown rule '", rule,
                    "'; expected one of ste, sste, soft_hinge, saturated_hinge");
}

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

inline void check_stair_args(int64_t steps, double lo, double hi) {
  TORCH_CHECK_VALUE(steps >= 2, "ftprop_cuda staircase: 'steps' must be an integer >= 2, got ",
                    steps);
  TORCH_CHECK_VALUE(std::isfinite(lo) && std::isfinite(hi) && lo < hi,
                    "ftprop_cuda staircase: need finite 'lo' < 'hi', got lo=", lo, ", hi=", hi);
}

// B of SPEC: z.shape[0], or 1 for a 0-dim tensor.
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

// Calls f(std::integral_constant<StepRule, R>{}) for the runtime rule, so loops get the rule as
// a compile-time constant (one specialised, vectorisable loop per rule).
template <typename F>
inline void dispatch_step_rule(StepRule r, F&& f) {
  switch (r) {
    case StepRule::kSte: return f(std::integral_constant<StepRule, StepRule::kSte>{});
    case StepRule::kSste: return f(std::integral_constant<StepRule, StepRule::kSste>{});
    case StepRule::kRamp: return f(std::integral_constant<StepRule, StepRule::kRamp>{});
    case StepRule::kSoftHinge: return f(std::integral_constant<StepRule, StepRule::kSoftHinge>{});
    case StepRule::kSaturatedHinge:
      return f(std::integral_constant<StepRule, StepRule::kSaturatedHinge>{});
    case StepRule::kHinge: return f(std::integral_constant<StepRule, StepRule::kHinge>{});
    case StepRule::kPerceptron: return f(std::integral_constant<StepRule, StepRule::kPerceptron>{});
    case StepRule::kSigmoid: return f(std::integral_constant<StepRule, StepRule::kSigmoid>{});
    case StepRule::kLecunTanh: return f(std::integral_constant<StepRule, StepRule::kLecunTanh>{});
  }
}

// Calls f(std::integral_constant<bool, b>{}) for the runtime flag (the gradient mode).
template <typename F>
inline void dispatch_bool(bool b, F&& f) {
  if (b) {
    f(std::integral_constant<bool, true>{});
  } else {
    f(std::integral_constant<bool, false>{});
  }
}

template <typename F>
inline void dispatch_stair_rule(StairRule r, F&& f) {
  switch (r) {
    case StairRule::kSte: return f(std::integral_constant<StairRule, StairRule::kSte>{});
    case StairRule::kSste: return f(std::integral_constant<StairRule, StairRule::kSste>{});
    case StairRule::kSoftHinge:
      return f(std::integral_constant<StairRule, StairRule::kSoftHinge>{});
    case StairRule::kSaturatedHinge:
      return f(std::integral_constant<StairRule, StairRule::kSaturatedHinge>{});
  }
}

}  // namespace ftprop
