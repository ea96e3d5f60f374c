// Elementwise loops over contiguous buffers for the CPU kernels: at::parallel_for splits the
// range, and each chunk runs a plain loop the compiler can vectorise.
#pragma once

#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include <cstdint>

namespace ftprop {
namespace cpu {

// Elements per task: large enough that thread start-up is amortised on small tensors.
constexpr int64_t kGrain = 32768;

struct Loops {
  // out[i] = f(in[i]), f taking and returning the op-math type.
  template <typename scalar_t, typename F>
  static void map1(const scalar_t* in, scalar_t* out, int64_t n, const F& f) {
    using opmath_t = at::opmath_type<scalar_t>;
    at::parallel_for(0, n, kGrain, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        out[i] = static_cast<scalar_t>(f(static_cast<opmath_t>(in[i])));
      }
    });
  }

  // out[i] = f(a[i], b[i]).
  template <typename scalar_t, typename F>
  static void map2(const scalar_t* a, const scalar_t* b, scalar_t* out, int64_t n, const F& f) {
    using opmath_t = at::opmath_type<scalar_t>;
    at::parallel_for(0, n, kGrain, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        out[i] = static_cast<scalar_t>(f(static_cast<opmath_t>(a[i]), static_cast<opmath_t>(b[i])));
      }
    });
  }
};

}  // namespace cpu
}  // namespace ftprop
