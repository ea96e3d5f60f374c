// CUDA kernels of the staircase unit (quantized ReLU): forward and fused surrogate backward.
#include <torch/library.h>

#include "../elementwise_ops.h"
#include "launch.cuh"

namespace ftprop {
namespace cuda {
namespace {

at::Tensor staircase_cuda(const at::Tensor& z, int64_t steps, double lo, double hi,
                          c10::string_view rule, bool grad_scale) {
  return staircase_forward_impl<Loops>(z, steps, lo, hi, rule);
}

at::Tensor staircase_backward_cuda(const at::Tensor& grad, const at::Tensor& z, int64_t steps,
                                   double lo, double hi, c10::string_view rule, bool grad_scale) {
  return staircase_backward_impl<Loops>(grad, z, steps, lo, hi, rule, grad_scale);
}

std::tuple<at::Tensor, at::Tensor> staircase_saved_cuda(const at::Tensor& z, int64_t steps,
                                                       double lo, double hi,
                                                       c10::string_view rule, bool grad_scale) {
  return staircase_saved_impl<Loops>(z, steps, lo, hi, rule);
}

at::Tensor staircase_backward_saved_cuda(const at::Tensor& grad, const at::Tensor& state,
                                        int64_t steps, double lo, double hi,
                                        c10::string_view rule, bool grad_scale) {
  return staircase_backward_saved_impl<Loops>(grad, state, steps, lo, hi, rule, grad_scale);
}

}  // namespace

TORCH_LIBRARY_IMPL(ftprop_cuda, CUDA, m) {
  m.impl("staircase", &staircase_cuda);
  m.impl("_staircase_backward", &staircase_backward_cuda);
  m.impl("_staircase_saved", &staircase_saved_cuda);
  m.impl("_staircase_backward_saved", &staircase_backward_saved_cuda);
}

}  // namespace cuda
}  // namespace ftprop
