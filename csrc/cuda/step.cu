// CUDA kernels of the step unit: the threshold forward and the fused surrogate backward.
#include <torch/library.h>

#include "../elementwise_ops.h"
#include "launch.cuh"

namespace ftprop {
namespace cuda {
namespace {

at::Tensor step_cuda(const at::Tensor& z, c10::string_view rule, bool zero_one, bool grad_scale) {
  return step_forward_impl<Loops>(z, rule, zero_one);
}

at::Tensor step_backward_cuda(const at::Tensor& grad, const at::Tensor& z, c10::string_view rule,
                              bool zero_one, bool grad_scale) {
  return step_backward_impl<Loops>(grad, z, rule, zero_one, grad_scale);
}

std::tuple<at::Tensor, at::Tensor> step_saved_cuda(const at::Tensor& z, c10::string_view rule,
                                                  bool zero_one, bool grad_scale) {
  return step_saved_impl<Loops>(z, rule, zero_one);
}

at::Tensor step_backward_saved_cuda(const at::Tensor& grad, const at::Tensor& state,
                                   c10::string_view rule, bool zero_one, bool grad_scale) {
  return step_backward_saved_impl<Loops>(grad, state, rule, grad_scale);
}

}  // namespace

TORCH_LIBRARY_IMPL(ftprop_cuda, CUDA, m) {
  m.impl("step", &step_cuda);
  m.impl("_step_backward", &step_backward_cuda);
  m.impl("_step_saved", &step_saved_cuda);
  m.impl("_step_backward_saved", &step_backward_saved_cuda);
}

}  // namespace cuda
}  // namespace ftprop
