// Host side of the four ops, shared by every device: argument checks, contiguity, empty-tensor
// early return, dtype and rule dispatch. `Loops` supplies the device's elementwise loops
// (cpu/loops.h, cuda/launch.cuh): map1(in, out, n, f) and map2(a, b, out, n, f), where f maps
// op-math values.
#pragma once

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>

#include "ftprop.h"
#include "op_args.h"

namespace ftprop {

template <class Loops>
at::Tensor step_forward_impl(const at::Tensor& z, c10::string_view rule, bool zero_one) {
  check_float_tensor(z, "z");
  parse_step_rule(rule);  // validates; the forward itself is the same for every rule
  const at::Tensor zc = z.contiguous();
  at::Tensor y = at::empty(zc.sizes(), zc.options());
  if (zc.numel() == 0) {
    return y;
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, zc.scalar_type(), "step", [&] {
    using opmath_t = at::opmath_type<scalar_t>;
    Loops::map1(zc.const_data_ptr<scalar_t>(), y.mutable_data_ptr<scalar_t>(), zc.numel(),
                StepForwardOp<opmath_t>{zero_one});
  });
  return y;
}

template <class Loops>
at::Tensor step_backward_impl(const at::Tensor& grad, const at::Tensor& z, c10::string_view rule,
                              bool zero_one, bool grad_scale) {
  check_float_tensor(z, "z");
  check_same(grad, z);
  const StepRule r = parse_step_rule(rule);
  const at::Tensor gc = grad.contiguous();
  const at::Tensor zc = z.contiguous();
  at::Tensor dz = at::empty(zc.sizes(), zc.options());
  if (zc.numel() == 0) {
    return dz;
  }
  const int64_t batch = batch_of(z);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, zc.scalar_type(), "_step_backward", [&] {
    using opmath_t = at::opmath_type<scalar_t>;
    dispatch_step_rule(r, [&](auto rule_c) {
      constexpr StepRule R = decltype(rule_c)::value;
      Loops::map2(gc.const_data_ptr<scalar_t>(), zc.const_data_ptr<scalar_t>(),
                  dz.mutable_data_ptr<scalar_t>(), zc.numel(),
                  StepBackwardOp<R, opmath_t>{zero_one, grad_scale, static_cast<opmath_t>(batch)});
    });
  });
  return dz;
}

template <class Loops>
at::Tensor staircase_forward_impl(const at::Tensor& z, int64_t steps, double lo, double hi,
                                  c10::string_view rule) {
  check_float_tensor(z, "z");
  check_stair_args(steps, lo, hi);
  parse_stair_rule(rule);
  const at::Tensor zc = z.contiguous();
  at::Tensor y = at::empty(zc.sizes(), zc.options());
  if (zc.numel() == 0) {
    return y;
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, zc.scalar_type(), "staircase", [&] {
    using opmath_t = at::opmath_type<scalar_t>;
    Loops::map1(zc.const_data_ptr<scalar_t>(), y.mutable_data_ptr<scalar_t>(), zc.numel(),
                StairForwardOp<opmath_t>{make_stair<opmath_t>(steps, lo, hi, batch_of(z))});
  });
  return y;
}

template <class Loops>
at::Tensor staircase_backward_impl(const at::Tensor& grad, const at::Tensor& z, int64_t steps,
                                   double lo, double hi, c10::string_view rule, bool grad_scale) {
  check_float_tensor(z, "z");
  check_same(grad, z);
  check_stair_args(steps, lo, hi);
  const StairRule r = parse_stair_rule(rule);
  const at::Tensor gc = grad.contiguous();
  const at::Tensor zc = z.contiguous();
  at::Tensor dz = at::empty(zc.sizes(), zc.options());
  if (zc.numel() == 0) {
    return dz;
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, zc.scalar_type(), "_staircase_backward", [&] {
        using opmath_t = at::opmath_type<scalar_t>;
        const Stair<opmath_t> p = make_stair<opmath_t>(steps, lo, hi, batch_of(z));
        dispatch_stair_rule(r, [&](auto rule_c) {
          constexpr StairRule R = decltype(rule_c)::value;
          Loops::map2(gc.const_data_ptr<scalar_t>(), zc.const_data_ptr<scalar_t>(),
                      dz.mutable_data_ptr<scalar_t>(), zc.numel(),
                      StairBackwardOp<R, opmath_t>{grad_scale, p});
        });
      });
  return dz;
}

}  // namespace ftprop
