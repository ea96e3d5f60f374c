// Launch helpers for the elementwise CUDA kernels: 64-bit grid-stride loops, a grid sized to
// the device's SM count, the current stream. Only light c10/cuda headers: ATen/cuda/CUDAContext.h
// pulls in cusparse.h, which CUDA toolkits without cuSPARSE headers lack (../shared/BUILD_NOTES).
#pragma once

#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "../ftprop.h"

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

// One thread per code byte: it computes the 8 / kBits elements of that byte and writes the
// byte whole, so the packing needs no atomics and is deterministic. (A warp-ballot version for
// 1-bit codes waits for a GPU measurement that shows the gap: benchmarks/NOTES.md.)
template <int kBits, typename scalar_t, typename F>
__global__ void encode_kernel(const scalar_t* __restrict__ in, scalar_t* __restrict__ out,
                              uint8_t* __restrict__ code, int64_t n, F f) {
  using opmath_t = at::opmath_type<scalar_t>;
  constexpr int kPer = 8 / kBits;
  const int64_t nbytes = (n + kPer - 1) / kPer;
  const int64_t stride = static_cast<int64_t>(blockDim.x) * gridDim.x;
  for (int64_t j = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; j < nbytes;
       j += stride) {
    uint8_t byte = 0;
#pragma unroll
    for (int k = 0; k < kPer; ++k) {
      const int64_t i = j * kPer + k;
      if (i < n) {
        const opmath_t v = static_cast<opmath_t>(in[i]);
        out[i] = static_cast<scalar_t>(f(v));
        byte |= static_cast<uint8_t>(code_byte(f.code(v)) << (k * kBits));
      }
    }
    code[j] = byte;
  }
}

template <int kBits, typename scalar_t, typename F>
__global__ void decode_kernel(const scalar_t* __restrict__ g, const uint8_t* __restrict__ code,
                              scalar_t* __restrict__ out, int64_t n, F f) {
  using opmath_t = at::opmath_type<scalar_t>;
  constexpr int kPer = 8 / kBits;
  constexpr unsigned kMask = (1u << kBits) - 1u;
  const int64_t nbytes = (n + kPer - 1) / kPer;
  const int64_t stride = static_cast<int64_t>(blockDim.x) * gridDim.x;
  for (int64_t j = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; j < nbytes;
       j += stride) {
    const unsigned byte = code[j];
#pragma unroll
    for (int k = 0; k < kPer; ++k) {
      const int64_t i = j * kPer + k;
      if (i < n) {
        const auto c = static_cast<opmath_t>((byte >> (k * kBits)) & kMask);
        out[i] = static_cast<scalar_t>(f(static_cast<opmath_t>(g[i]), c));
      }
    }
  }
}

struct Loops {
  static at::Tensor empty(const at::Tensor& like) {
    return at::empty(like.sizes(), like.options());
  }
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

  template <int kBits, typename scalar_t, typename F>
  static void encode(const scalar_t* in, scalar_t* out, uint8_t* code, int64_t n, const F& f) {
    if constexpr (kBits == 0) {
      map1(in, out, n, f);
    } else {
      const int64_t nbytes = (n + 8 / kBits - 1) / (8 / kBits);
      const auto stream = c10::cuda::getCurrentCUDAStream();
      encode_kernel<kBits, scalar_t><<<num_blocks(nbytes), kThreads, 0, stream>>>(in, out, code, n, f);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
  }

  template <int kBits, typename scalar_t, typename F>
  static void decode(const scalar_t* g, const uint8_t* code, scalar_t* out, int64_t n,
                     const F& f) {
    if constexpr (kBits == 0) {
      map1(g, out, n, WithoutCode<F>{f});
    } else {
      const int64_t nbytes = (n + 8 / kBits - 1) / (8 / kBits);
      const auto stream = c10::cuda::getCurrentCUDAStream();
      decode_kernel<kBits, scalar_t><<<num_blocks(nbytes), kThreads, 0, stream>>>(g, code, out, n, f);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
  }
};

}  // namespace cuda
}  // namespace ftprop
