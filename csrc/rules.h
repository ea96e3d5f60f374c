// The surrogate-gradient rules of each unit family, one list entry per rule. The enums, the
// properties below, the name parsing with its error message and the dispatch switches
// (op_args.h) are all generated from these lists.
//
// Adding a rule: one entry here, plus
//   - its formulas in ftprop.h (step_slope and step_code / step_decode for a step rule;
//     stair_quantity, stair_grad and stair_code / stair_decode for a staircase rule),
//   - its Python registry entry (ftprop_cuda/rules.py) and its formulas (ftprop_cuda/reference.py),
//   - its row in the contract, docs/spec.md.
#pragma once

#include <c10/macros/Macros.h>

namespace ftprop {

// X(enumerator, name, estimator, code bits, slope max)
//   estimator: a straight-through estimator, not a loss (ignores grad_scale, always g * s).
//   code bits: bits per element of the saved-state code (8: the 8-bit slope code of
//              save="compact"; 0, 1, 2: a lossless code of the interval z lies in).
//   slope max: the largest slope, the top of the 8-bit code's range (1 for the interval rules).
#define FTPROP_STEP_RULES(X)                                   \
  X(kSte, "ste", true, 0, 1.0)                                 \
  X(kSste, "sste", true, 1, 1.0)                               \
  X(kRamp, "ramp", true, 8, 1.0)                               \
  X(kSoftHinge, "soft_hinge", false, 8, 1.0)                   \
  X(kSaturatedHinge, "saturated_hinge", false, 2, 1.0)         \
  X(kHinge, "hinge", false, 2, 1.0)                            \
  X(kPerceptron, "perceptron", false, 2, 1.0)                  \
  X(kSigmoid, "sigmoid", false, 8, 0.5)                        \
  X(kLecunTanh, "lecun_tanh", false, 8, 1.7519 * (2.0 / 3.0))

// Code bits -1: the threshold count c(u) in 0..K plus a NaN value, whose width depends on K
// (stair_code_bits).
#define FTPROP_STAIR_RULES(X)                           \
  X(kSte, "ste", true, 0, 1.0)                          \
  X(kSste, "sste", true, 1, 1.0)                        \
  X(kSoftHinge, "soft_hinge", false, 8, 1.0)            \
  X(kSaturatedHinge, "saturated_hinge", false, -1, 1.0)

#define FTPROP_RULE_ENUMERATOR(e, ...) e,
enum class StepRule : int { FTPROP_STEP_RULES(FTPROP_RULE_ENUMERATOR) };
enum class StairRule : int { FTPROP_STAIR_RULES(FTPROP_RULE_ENUMERATOR) };
#undef FTPROP_RULE_ENUMERATOR

// One switch over a list, returning column `field` of the rule's entry. Host-device: the
// kernels call these (as template arguments and in if constexpr).
#define FTPROP_RULE_NAME(e, name, estimator, bits, slope_max) name
#define FTPROP_RULE_ESTIMATOR(e, name, estimator, bits, slope_max) estimator
#define FTPROP_RULE_BITS(e, name, estimator, bits, slope_max) bits
#define FTPROP_RULE_SLOPE_MAX(e, name, estimator, bits, slope_max) slope_max

#define FTPROP_STEP_CASE(e, ...) \
  case StepRule::e:              \
    return FTPROP_RULE_FIELD(e, __VA_ARGS__);
#define FTPROP_STAIR_CASE(e, ...) \
  case StairRule::e:              \
    return FTPROP_RULE_FIELD(e, __VA_ARGS__);

#define FTPROP_RULE_FIELD FTPROP_RULE_NAME
C10_HOST_DEVICE constexpr const char* rule_name(StepRule r) {
  switch (r) { FTPROP_STEP_RULES(FTPROP_STEP_CASE) }
  return "";
}
C10_HOST_DEVICE constexpr const char* rule_name(StairRule r) {
  switch (r) { FTPROP_STAIR_RULES(FTPROP_STAIR_CASE) }
  return "";
}
#undef FTPROP_RULE_FIELD

#define FTPROP_RULE_FIELD FTPROP_RULE_ESTIMATOR
C10_HOST_DEVICE constexpr bool is_estimator(StepRule r) {
  switch (r) { FTPROP_STEP_RULES(FTPROP_STEP_CASE) }
  return false;
}
C10_HOST_DEVICE constexpr bool is_estimator(StairRule r) {
  switch (r) { FTPROP_STAIR_RULES(FTPROP_STAIR_CASE) }
  return false;
}
#undef FTPROP_RULE_FIELD

#define FTPROP_RULE_FIELD FTPROP_RULE_BITS
C10_HOST_DEVICE constexpr int step_code_bits(StepRule r) {
  switch (r) { FTPROP_STEP_RULES(FTPROP_STEP_CASE) }
  return 0;
}
// The staircase's fixed code width, or -1 where it depends on K (see stair_code_bits).
C10_HOST_DEVICE constexpr int stair_fixed_code_bits(StairRule r) {
  switch (r) { FTPROP_STAIR_RULES(FTPROP_STAIR_CASE) }
  return 0;
}
#undef FTPROP_RULE_FIELD

#define FTPROP_RULE_FIELD FTPROP_RULE_SLOPE_MAX
C10_HOST_DEVICE constexpr double step_slope_max(StepRule r) {
  switch (r) { FTPROP_STEP_RULES(FTPROP_STEP_CASE) }
  return 1.0;
}
C10_HOST_DEVICE constexpr double stair_slope_max(StairRule r) {
  switch (r) { FTPROP_STAIR_RULES(FTPROP_STAIR_CASE) }
  return 1.0;
}
#undef FTPROP_RULE_FIELD

#undef FTPROP_STEP_CASE
#undef FTPROP_STAIR_CASE
#undef FTPROP_RULE_NAME
#undef FTPROP_RULE_ESTIMATOR
#undef FTPROP_RULE_BITS
#undef FTPROP_RULE_SLOPE_MAX

}  // namespace ftprop
