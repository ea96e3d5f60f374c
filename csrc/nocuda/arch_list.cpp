// torch.ops.ftprop_cuda._cuda_arch_list() -> str in a build without CUDA kernels: "" (setup.py
// compiles this file instead of ../cuda/arch_list.cu when it builds no CUDA kernels).
#include <torch/library.h>

#include <string>

namespace ftprop {
namespace {

std::string cuda_arch_list() { return std::string(); }

}  // namespace

TORCH_LIBRARY_FRAGMENT(ftprop_cuda, m) {
  m.def("_cuda_arch_list() -> str", &cuda_arch_list);
}

}  // namespace ftprop
