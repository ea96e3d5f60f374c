// The CUDA side of the elementwise loops: the __global__ entry that runs a kernel body of
// kernels.h with the real grid indices, and the one launch helper (grid from the item count, the
// SM count and the kernel's occupancy, current stream, launch check). Only light c10/cuda headers:
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

// A per-device cache of one int attribute, filled on first use: the values asked for here are
// fixed for the process's lifetime. Concurrent first calls both query and store the same value.
template <typename Query>
int cached_per_device(std::atomic<int> (&cache)[C10_COMPILE_TIME_MAX_GPUS],
                      c10::DeviceIndex device, Query query) {
  const bool cached = device >= 0 && device < C10_COMPILE_TIME_MAX_GPUS;
  if (cached) {
    const int value = cache[device].load(std::memory_order_relaxed);
    if (value > 0) {
      return value;
    }
  }
  const int value = query();
  if (cached) {
    cache[device].store(value, std::memory_order_relaxed);
  }
  return value;
}

// SMs of a device.
inline int sm_count(c10::DeviceIndex device) {
  static std::atomic<int> cache[C10_COMPILE_TIME_MAX_GPUS];
  return cached_per_device(cache, device, [device] {
    int sms = 0;
    C10_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
    return sms;
  });
}

// Blocks of kThreads threads of `kernel` that one SM of the current device holds at once (its
// registers, shared memory and thread limits: 6 of the float64 kernels on sm_86/89, 8 where
// they fit), cached per kernel (one cache per instantiation of the template) and device. The
// caller has made `device` current (the op's device guard).
template <auto kKernel>
int blocks_per_sm(c10::DeviceIndex device) {
  static std::atomic<int> cache[C10_COMPILE_TIME_MAX_GPUS];
  return cached_per_device(cache, device, [] {
    int blocks = 0;
    C10_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, kKernel, kThreads, 0));
    return blocks > 0 ? blocks : 1;  // 0: the launch itself reports why it cannot run
  });
}

// The grid of `kernel` for `items` work items on `device`: one full wave at most.
template <auto kKernel>
int64_t occupancy_grid(int64_t items, c10::DeviceIndex device) {
  return grid_blocks(items, sm_count(device), blocks_per_sm<kKernel>(device));
}

struct Launcher {
  using Guard = c10::cuda::CUDAGuard;

  template <class K, typename... A>
  static void launch(int64_t items, A... args) {
    const c10::cuda::CUDAStream stream = c10::cuda::getCurrentCUDAStream();
    const int64_t blocks = occupancy_grid<&kernel_entry<K, A...>>(items, stream.device_index());
    kernel_entry<K, A...><<<blocks, kThreads, 0, stream>>>(args...);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
};

using Loops = LoopsT<Launcher>;

}  // namespace cuda
}  // namespace ftprop
