// Launch helpers for the elementwise CUDA kernels: 64-bit grid-stride loops, a grid sized to
// the device's SM count, the current stream. Only light c10/cuda headers: ATen/cuda/CUDAContext.h
// pulls in cusparse.h, which CUDA toolkits without cuSPARSE headers lack (../shared/BUILD_NOTES).
#pragma once

#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

namespace ftprop {
namespace cuda {

constexpr int kThreads = 256;

// Blocks for n elements: enough to fill every SM several times over, then the grid-stride loop
// covers the rest (and tensors past 2^31 elements with 64-bit indices).
inline int64_t num_blocks(int64_t n) {
  int device = 0;
  C10_CUDA_CHECK(cudaGetDevice(&device));
  int sms = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  const int64_t max_blocks = static_cast<int64_t>(std::max(sms, 1)) * 8;
  return std::max<int64_t>(1, std::min<int64_t>((n + kThreads - 1) / kThreads, max_blocks));
}

template <typename scalar_t, typename F>
__global__ void map1_kernel(const scalar_t* __restrict__ in, scalar_t* __restrict__ out, int64_t n,
                            F f) {
  using opmath_t = at::opmath_type<scalar_t>;
  const int64_t stride = static_cast<int64_t>(blockDim.x) * gridDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += stride) {
    out[i] = static_cast<scalar_t>(f(static_cast<opmath_t>(in[i])));
  }
}

template <typename scalar_t, typename F>
__global__ void map2_kernel(const scalar_t* __restrict__ a, const scalar_t* __restrict__ b,
                            scalar_t* __restrict__ out, int64_t n, F f) {
  using opmath_t = at::opmath_type<scalar_t>;
  const int64_t stride = static_cast<int64_t>(blockDim.x) * gridDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += stride) {
    out[i] = static_cast<scalar_t>(f(static_cast<opmath_t>(a[i]), static_cast<opmath_t>(b[i])));
  }
}

struct Loops {
  template <typename scalar_t, typename F>
  static void map1(const scalar_t* in, scalar_t* out, int64_t n, const F& f) {
    const auto stream = c10::cuda::getCurrentCUDAStream();
    map1_kernel<scalar_t><<<num_blocks(n), kThreads, 0, stream>>>(in, out, n, f);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }

  template <typename scalar_t, typename F>
  static void map2(const scalar_t* a, const scalar_t* b, scalar_t* out, int64_t n, const F& f) {
    const auto stream = c10::cuda::getCurrentCUDAStream();
    map2_kernel<scalar_t><<<num_blocks(n), kThreads, 0, stream>>>(a, b, out, n, f);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
};

}  // namespace cuda
}  // namespace ftprop
