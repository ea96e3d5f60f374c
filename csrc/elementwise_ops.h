// Host side of the ops, shared by every device: argument checks, memory layout, empty-tensor
// early return, dtype and rule dispatch. `Loops` supplies the device's memory and elementwise
// loops (cpu/loops.h, cuda/launch.cuh, and csrc/emu/ for the host emulation of the CUDA
// kernels), where f maps op-math values:
//   guard(t)                                      the device guard of t's device (a no-op on the
//                                                 CPU), built once the checks have passed
//   empty(like)                                   an uninitialised dense tensor of like's sizes
//   map1(in, out, n, f), map2(a, b, out, n, f)    out[i] = f(in[i]) / f(a[i], b[i])
//   encode<kBits>(in, out, code, n, f)            out[i] = f(in[i]), element i's code f.code(in[i])
//   decode<kBits>(g, code, out, n, f)             out[i] = f(g[i], element i's code as a value)
// with kBits-bit codes packed into ceil(n * kBits / 8) bytes in one layout on every device
// (planar within blocks of 512 elements, see cpu/loops.h), so a code decodes the same anywhere.
#pragma once

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/empty_strided.h>

#include <tuple>
#include <type_traits>

#include "ftprop.h"
#include "op_args.h"

namespace ftprop {

// The loops run over a tensor's storage in memory order, so an input that is dense and
// non-overlapping (contiguous, channels_last, a transposed view, ...) is used as it is, and the
// output gets its strides: outputs keep the input's memory format without a copy. Other inputs
// are copied into at::empty_like(t), which keeps their dimension order. Either way the output's
// strides are those of at::empty_like(t), which the fake kernels (_ops.py) return.
inline at::Tensor dense(const at::Tensor& t) {
  if (t.is_non_overlapping_and_dense()) {
    return t;
  }
  at::Tensor out = at::empty_like(t);
  out.copy_(t);
  return out;
}

// Whether a and b (same sizes) put every element at the same offset (size-1 dims aside).
inline bool same_layout(const at::Tensor& a, const at::Tensor& b) {
  for (int64_t d = 0; d < a.dim(); ++d) {
    if (a.size(d) > 1 && a.stride(d) != b.stride(d)) return false;
  }
  return true;
}

// t (same sizes as the dense tensor like) in like's memory order: itself or a copy.
inline at::Tensor dense_like(const at::Tensor& t, const at::Tensor& like) {
  if (same_layout(t, like)) {
    return t;
  }
  at::Tensor out = at::empty_strided(like.sizes(), like.strides(), t.options());
  out.copy_(t);
  return out;
}

// An uninitialised output with the sizes and strides of the dense tensor like. Loops::empty
// allocates the storage (the CPU's asks for large pages); its element i in memory order is then
// like's element i.
template <class Loops>
at::Tensor empty_like_dense(const at::Tensor& like) {
  at::Tensor out = Loops::empty(like);
  if (!out.strides().equals(like.strides())) {
    out.unsafeGetTensorImpl()->set_sizes_and_strides(like.sizes(), like.strides());
  }
  return out;
}

template <class Loops>
at::Tensor step_forward_impl(const at::Tensor& z, c10::string_view rule, bool zero_one) {
  check_float_tensor(z, "z");
  parse_step_rule(rule);  // validates; the forward itself is the same for every rule
  [[maybe_unused]] const auto guard = Loops::guard(z);
  const at::Tensor zc = dense(z);
  at::Tensor y = empty_like_dense<Loops>(zc);
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
  [[maybe_unused]] const auto guard = Loops::guard(z);
  const at::Tensor zc = dense(z);
  const at::Tensor gc = dense_like(grad, zc);
  at::Tensor dz = empty_like_dense<Loops>(zc);
  if (zc.numel() == 0) {
    return dz;
  }
  const int64_t batch = batch_of(z);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, zc.scalar_type(), "_step_backward", [&] {
    using opmath_t = at::opmath_type<scalar_t>;
    dispatch_step_rule(r, [&](auto rule_c) {
      constexpr StepRule R = decltype(rule_c)::value;
      // the estimators ignore the mode: one instantiation for them
      dispatch_bool(grad_scale || is_estimator(R), [&](auto weighted_c) {
        Loops::map2(gc.const_data_ptr<scalar_t>(), zc.const_data_ptr<scalar_t>(),
                    dz.mutable_data_ptr<scalar_t>(), zc.numel(),
                    StepBackwardOp<R, decltype(weighted_c)::value, opmath_t>{
                        zero_one, static_cast<opmath_t>(batch)});
      });
    });
  });
  return dz;
}

template <class Loops>
at::Tensor staircase_forward_impl(const at::Tensor& z, int64_t steps, double lo, double hi,
                                  c10::string_view rule) {
  check_float_tensor(z, "z");
  check_stair_args(z, steps, lo, hi);
  parse_stair_rule(rule);
  [[maybe_unused]] const auto guard = Loops::guard(z);
  const at::Tensor zc = dense(z);
  at::Tensor y = empty_like_dense<Loops>(zc);
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
  check_stair_args(z, steps, lo, hi);
  const StairRule r = parse_stair_rule(rule);
  [[maybe_unused]] const auto guard = Loops::guard(z);
  const at::Tensor zc = dense(z);
  const at::Tensor gc = dense_like(grad, zc);
  at::Tensor dz = empty_like_dense<Loops>(zc);
  if (zc.numel() == 0) {
    return dz;
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, zc.scalar_type(), "_staircase_backward", [&] {
        using opmath_t = at::opmath_type<scalar_t>;
        const Stair<opmath_t> p = make_stair<opmath_t>(steps, lo, hi, batch_of(z));
        dispatch_stair_rule(r, [&](auto rule_c) {
          constexpr StairRule R = decltype(rule_c)::value;
          dispatch_bool(grad_scale || is_estimator(R), [&](auto weighted_c) {
            Loops::map2(gc.const_data_ptr<scalar_t>(), zc.const_data_ptr<scalar_t>(),
                        dz.mutable_data_ptr<scalar_t>(), zc.numel(),
                        StairBackwardOp<R, decltype(weighted_c)::value, opmath_t>{p});
          });
        });
      });
  return dz;
}

// ---- Forward passes that save a code of z instead of z, and the backward passes reading it ----

// Bytes of a code of n elements at `bits` per element.
inline int64_t code_bytes(int64_t n, int bits) {
  return bits <= 0 ? 0 : (n * bits + 7) / 8;
}

inline void check_code(const at::Tensor& code, int64_t n, int bits, const at::Tensor& grad) {
  TORCH_CHECK_TYPE(code.scalar_type() == at::kByte, "ftprop_cuda: 'state' must be uint8, got ",
                   code.scalar_type());
  TORCH_CHECK_VALUE(code.dim() == 1 && code.numel() == code_bytes(n, bits),
                    "ftprop_cuda: 'state' must hold ", code_bytes(n, bits), " bytes for ", n,
                    " elements at ", bits, " bits each; got shape ", code.sizes());
  TORCH_CHECK(code.device() == grad.device(), "ftprop_cuda: 'state' is on ", code.device(),
              " but 'grad' is on ", grad.device());
}

// Calls f(std::integral_constant<int, B>{}) for B in {2, 4, 8} (the staircase count codes).
template <typename F>
inline void dispatch_count_bits(int bits, F&& f) {
  switch (bits) {
    case 2: return f(std::integral_constant<int, 2>{});
    case 4: return f(std::integral_constant<int, 4>{});
    case 8: return f(std::integral_constant<int, 8>{});
  }
  TORCH_CHECK(false, "ftprop_cuda: no count code of ", bits, " bits");
}

template <class Loops>
std::tuple<at::Tensor, at::Tensor> step_saved_impl(const at::Tensor& z, c10::string_view rule,
                                                   bool zero_one) {
  check_float_tensor(z, "z");
  const StepRule r = parse_step_rule(rule);
  [[maybe_unused]] const auto guard = Loops::guard(z);
  const at::Tensor zc = dense(z);
  const int64_t n = zc.numel();
  at::Tensor y = empty_like_dense<Loops>(zc);
  at::Tensor code = at::empty({code_bytes(n, step_code_bits(r))}, zc.options().dtype(at::kByte));
  if (n == 0) {
    return {y, code};
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, zc.scalar_type(), "_step_saved", [&] {
    using opmath_t = at::opmath_type<scalar_t>;
    dispatch_step_rule(r, [&](auto rule_c) {
      constexpr StepRule R = decltype(rule_c)::value;
      const auto scale = make_code_scale<opmath_t>(step_slope_max(R));
      Loops::template encode<step_code_bits(R)>(
          zc.const_data_ptr<scalar_t>(), y.mutable_data_ptr<scalar_t>(),
          code.mutable_data_ptr<uint8_t>(), n,
          StepEncodeOp<R, opmath_t>{zero_one, scale.levels_per_unit});
    });
  });
  return {y, code};
}

template <class Loops>
at::Tensor step_backward_saved_impl(const at::Tensor& grad, const at::Tensor& code,
                                    c10::string_view rule, bool grad_scale) {
  check_float_tensor(grad, "grad");
  const StepRule r = parse_step_rule(rule);
  const int64_t n = grad.numel();
  check_code(code, n, step_code_bits(r), grad);
  [[maybe_unused]] const auto guard = Loops::guard(grad);
  // grad must come in the forward output's memory order, which is the code's (the autograd
  // formula in _ops.py passes it so); one that is not dense is copied as dense() says
  const at::Tensor gc = dense(grad);
  at::Tensor dz = empty_like_dense<Loops>(gc);
  if (n == 0) {
    return dz;
  }
  const at::Tensor cc = code.contiguous();
  const int64_t batch = batch_of(grad);
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, gc.scalar_type(), "_step_backward_saved", [&] {
        using opmath_t = at::opmath_type<scalar_t>;
        dispatch_step_rule(r, [&](auto rule_c) {
          constexpr StepRule R = decltype(rule_c)::value;
          const auto scale = make_code_scale<opmath_t>(step_slope_max(R));
          dispatch_bool(grad_scale || is_estimator(R), [&](auto weighted_c) {
            Loops::template decode<step_code_bits(R)>(
                gc.const_data_ptr<scalar_t>(), cc.const_data_ptr<uint8_t>(),
                dz.mutable_data_ptr<scalar_t>(), n,
                StepDecodeOp<R, decltype(weighted_c)::value, opmath_t>{
                    static_cast<opmath_t>(batch), scale.unit_per_level});
          });
        });
      });
  return dz;
}

// Staircase codes: bits fixed per rule except saturated_hinge, whose count needs more bits as K
// grows (stair_code_bits); runs the two-level dispatch once for encode and decode alike.
template <typename F>
inline void dispatch_stair_code(StairRule r, int64_t steps, F&& f) {
  dispatch_stair_rule(r, [&](auto rule_c) {
    constexpr StairRule R = decltype(rule_c)::value;
    constexpr int kFixedBits = stair_fixed_code_bits(R);
    if constexpr (kFixedBits < 0) {
      dispatch_count_bits(stair_code_bits(R, steps), [&](auto bits_c) { f(rule_c, bits_c); });
    } else {
      f(rule_c, std::integral_constant<int, kFixedBits>{});
    }
  });
}

template <class Loops>
std::tuple<at::Tensor, at::Tensor> staircase_saved_impl(const at::Tensor& z, int64_t steps,
                                                        double lo, double hi,
                                                        c10::string_view rule) {
  check_float_tensor(z, "z");
  check_stair_args(z, steps, lo, hi);
  const StairRule r = parse_stair_rule(rule);
  const int bits = stair_code_bits(r, steps);
  TORCH_CHECK_VALUE(bits >= 0, "ftprop_cuda staircase: no saved-state code for rule '", rule,
                    "' with steps=", steps, "; save z instead");
  [[maybe_unused]] const auto guard = Loops::guard(z);
  const at::Tensor zc = dense(z);
  const int64_t n = zc.numel();
  at::Tensor y = empty_like_dense<Loops>(zc);
  at::Tensor code = at::empty({code_bytes(n, bits)}, zc.options().dtype(at::kByte));
  if (n == 0) {
    return {y, code};
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, zc.scalar_type(), "_staircase_saved", [&] {
        using opmath_t = at::opmath_type<scalar_t>;
        const Stair<opmath_t> p = make_stair<opmath_t>(steps, lo, hi, batch_of(z));
        dispatch_stair_code(r, steps, [&](auto rule_c, auto bits_c) {
          constexpr StairRule R = decltype(rule_c)::value;
          const auto scale = make_code_scale<opmath_t>(stair_slope_max(R));
          Loops::template encode<decltype(bits_c)::value>(
              zc.const_data_ptr<scalar_t>(), y.mutable_data_ptr<scalar_t>(),
              code.mutable_data_ptr<uint8_t>(), n,
              StairEncodeOp<R, opmath_t>{p, scale.levels_per_unit});
        });
      });
  return {y, code};
}

template <class Loops>
at::Tensor staircase_backward_saved_impl(const at::Tensor& grad, const at::Tensor& code,
                                         int64_t steps, double lo, double hi,
                                         c10::string_view rule, bool grad_scale) {
  check_float_tensor(grad, "grad");
  check_stair_args(grad, steps, lo, hi);
  const StairRule r = parse_stair_rule(rule);
  const int bits = stair_code_bits(r, steps);
  TORCH_CHECK_VALUE(bits >= 0, "ftprop_cuda staircase: no saved-state code for rule '", rule,
                    "' with steps=", steps);
  const int64_t n = grad.numel();
  check_code(code, n, bits, grad);
  [[maybe_unused]] const auto guard = Loops::guard(grad);
  // grad must come in the forward output's memory order, which is the code's (the autograd
  // formula in _ops.py passes it so); one that is not dense is copied as dense() says
  const at::Tensor gc = dense(grad);
  at::Tensor dz = empty_like_dense<Loops>(gc);
  if (n == 0) {
    return dz;
  }
  const at::Tensor cc = code.contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, gc.scalar_type(), "_staircase_backward_saved", [&] {
        using opmath_t = at::opmath_type<scalar_t>;
        const Stair<opmath_t> p = make_stair<opmath_t>(steps, lo, hi, batch_of(grad));
        dispatch_stair_code(r, steps, [&](auto rule_c, auto bits_c) {
          constexpr StairRule R = decltype(rule_c)::value;
          const auto scale = make_code_scale<opmath_t>(stair_slope_max(R));
          dispatch_bool(grad_scale || is_estimator(R), [&](auto weighted_c) {
            Loops::template decode<decltype(bits_c)::value>(
                gc.const_data_ptr<scalar_t>(), cc.const_data_ptr<uint8_t>(),
                dz.mutable_data_ptr<scalar_t>(), n,
                StairDecodeOp<R, decltype(weighted_c)::value, opmath_t>{p, scale.unit_per_level});
          });
        });
      });
  return dz;
}

}  // namespace ftprop
