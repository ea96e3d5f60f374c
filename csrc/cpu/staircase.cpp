// CPU kernels of the staircase unit (quantized ReLU): forward and fused surrogate backward.
#include <torch/library.h>

#include "../elementwise_ops.h"
#include "loops.h"

namespace ftprop {
namespace cpu {
namespace {

at::Tensor staircase_cpu(const at::Tensor& z, int64_t steps, double lo, double hi,
                         c10::string_view rule, bool grad_scale) {
  return staircase_forward_impl<Loops>(z, steps, lo, hi, rule);
}

at::Tensor staircase_backward_cpu(const at::Tensor& grad, const at::Tensor& z, int64_t steps,
                                  double lo, double hi, c10::string_view rule, bool grad_scale) {
  return staircase_backward_impl<Loops>(grad, z, steps, lo, hi, rule, grad_scale);
}

std::tuple<at::Tensor, at::Tensor> staircase_saved_cpu(const at::Tensor& z, int64_t steps,
                                                       double lo, double hi,
                                                       c10::string_view rule, bool grad_scale) {
  return staircase_saved_impl<Loops>(z, steps, lo, hi, rule);
}

at::Tensor staircase_backward_saved_cpu(const at::Tensor& grad, const at::Tensor& state,
                                        int64_t steps, double lo, double hi,
                                        c10::string_view rule, bool grad_scale) {
  return staircase_backward_saved_impl<Loops>(grad, state, steps, lo, hi, rule, grad_scale);
}

}  // namespace

TORCH_LIBRARY_IMPL(ftprop_cuda, CPU, m) {
  m.impl("staircase", &staircase_cpu);
  m.impl("_staircase_backward", &staircase_backward_cpu);
  m.impl("_staircase_saved", &staircase_saved_cpu);
  m.impl("_staircase_backward_saved", &staircase_backward_saved_cpu);
}

}  // namespace cpu
}  // namespace ftprop
