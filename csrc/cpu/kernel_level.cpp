// torch.ops.ftprop_cuda._cpu_kernel_level() -> str: the instruction set the package's own CPU
// loops run at in this process: "avx512" or "avx2" (x86: the loops of loops.h are compiled for
// both with target attributes and picked at run time by best_isa()), else "baseline" (the build's
// default target: x86-64 without those extensions, or a processor without x86 dispatch). The
// elementwise loops use it all; the pool-offset codec uses at most AVX2. ATen's own level
// (torch.backends.cpu.get_cpu_capability()) is decided apart and may differ.
#include <torch/library.h>

#include <string>

#include "loops.h"

namespace ftprop {
namespace cpu {
namespace {

std::string cpu_kernel_level() {
  switch (best_isa()) {
    case Isa::kAvx512:
      return "avx512";
    case Isa::kAvx2:
      return "avx2";
    default:
      return "baseline";
  }
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(ftprop_cuda, m) {
  m.def("_cpu_kernel_level() -> str", &cpu_kernel_level);
}

}  // namespace cpu
}  // namespace ftprop
