// torch.ops.ftprop_cuda._cuda_arch_list() -> str: what the CUDA kernels were compiled into, as
// "sm_80,sm_86,sm_89,sm_90,compute_90" (cubins for sm_*, PTX for compute_*), taken from the
// compiler: __CUDA_ARCH_LIST__ (nvcc >= 11.5) lists the virtual architectures this very
// compilation generated code for, and setup.py passes the code kinds of its -gencode flags as
// FTPROP_CUDA_CODES ("sm_80+sm_86+compute_90"; '+' since nvcc splits -D values at commas). The
// two must agree, checked at compile time, so a build whose flags differ from what setup.py
// believes it passed does not compile. Every file of csrc/cuda/ gets the same flags.
// (Arch-specific variants such as sm_90a are listed without their suffix.)
#include <torch/library.h>

#include <string>

#ifndef __CUDA_ARCH_LIST__
#error "__CUDA_ARCH_LIST__ is not defined: nvcc >= 11.5 is needed to report the compiled archs"
#endif
#ifndef FTPROP_CUDA_CODES
#error "FTPROP_CUDA_CODES is not defined: build the extension with setup.py"
#endif

namespace ftprop {
namespace cuda {
namespace {

constexpr int kCompiled[] = {__CUDA_ARCH_LIST__};
constexpr char kCodes[] = FTPROP_CUDA_CODES;

constexpr int length(const char* s) {
  int n = 0;
  while (s[n] != '\0') ++n;
  return n;
}

// The architecture, as __CUDA_ARCH__ counts it (800 for sm_80), of the code that starts at i:
// the digits after its '_'.
constexpr int code_arch(const char* s, int i) {
  while (s[i] != '\0' && s[i] != '_') ++i;
  int arch = 0;
  for (++i; s[i] >= '0' && s[i] <= '9'; ++i) arch = arch * 10 + (s[i] - '0');
  return arch * 10;
}

constexpr bool compiled(int arch) {
  for (int a : kCompiled) {
    if (a == arch) return true;
  }
  return false;
}

// Every code setup.py names was compiled, and every compiled architecture has a code.
constexpr bool codes_match_compiler() {
  const int n = length(kCodes);
  if (n == 0) return false;
  for (int i = 0; i < n; ++i) {
    if ((i == 0 || kCodes[i - 1] == '+') && !compiled(code_arch(kCodes, i))) return false;
  }
  for (int a : kCompiled) {
    bool named = false;
    for (int i = 0; i < n; ++i) {
      named = named || ((i == 0 || kCodes[i - 1] == '+') && code_arch(kCodes, i) == a);
    }
    if (!named) return false;
  }
  return true;
}

static_assert(codes_match_compiler(),
              "FTPROP_CUDA_CODES (setup.py's -gencode list) and __CUDA_ARCH_LIST__ (what nvcc "
              "compiled) disagree");

std::string cuda_arch_list() {
  std::string codes(kCodes);
  for (char& c : codes) {
    if (c == '+') c = ',';
  }
  return codes;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(ftprop_cuda, m) {
  m.def("_cuda_arch_list() -> str", &cuda_arch_list);
}

}  // namespace cuda
}  // namespace ftprop
