// The CUDA side of the elementwise loops: the __global__ entry that runs a kernel body of
// kernels.h with the real grid indices, and the one launch helper (grid from the item count and
// the SM count, current stream, launch check). Only light c10/cuda headers:
// ATen/cuda/CUDAContext.h pulls in cusparse.h, which CUDA toolkits without cuSPARSE headers lack.
#pragma once

#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAMacros.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime.h>

#include <atomic>
#include <cstdint>

#include "kernels.h"

namespace ftprop {
namespace cuda {

// The thread context of kernels.h on a GPU.
struct DeviceThread {
  __device__ unsigned block() const { return blockIdx.x; }
  __device__ unsigned thread() const { return threadIdx.x; }
  __device__ unsigned block_dim() const { return blockDim.x; }
  __device__ unsigned grid_dim() const { return gridDim.x; }
  template <typename T>
  __device__ void store(T* p, T v) const {
    *p = v;
  }
};

template <class K, typename... A>
__global__ void kernel_entry(A... args) {
  K::run(DeviceThread{}, args...);
}

// SMs of a device, queried once per device: the attribute is fixed for the process's lifetime.
// Concurrent first calls both query and store the same value.
inline int sm_count(c10::DeviceIndex device) {
  static std::atomic<int> cache[C10_COMPILE_TIME_MAX_GPUS];
  const bool cached = device >= 0 && device < C10_COMPILE_TIME_MAX_GPUS;
  if (cached) {
    const int sms = cache[device].load(std::memory_order_relaxed);
    if (sms > 0) {
      return sms;
    }
  }
  int sms = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  if (cached) {
    cache[device].store(sms, std::memory_order_relaxed);
  }
  return sms;
}

struct Launcher {
  using Guard = c10::cuda::CUDAGuard;

  template <class K, typename... A>
  static void launch(int64_t items, A... args) {
    const c10::cuda::CUDAStream stream = c10::cuda::getCurrentCUDAStream();
    const int64_t blocks = grid_blocks(items, sm_count(stream.device_index()));
    kernel_entry<K, A...><<<blocks, kThreads, 0, stream>>>(args...);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
};

using Loops = LoopsT<Launcher>;

}  // namespace cuda
}  // namespace ftprop
