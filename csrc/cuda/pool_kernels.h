// The CUDA max-pool offset codec (see ../pool_offsets.h): kernel bodies and host code written
// once for two compilers, like kernels.h. pool_offsets.cu instantiates them on the CUDA launcher
// (launch.cuh); the host emulation (csrc/emu/, tests/test_cuda_emulation.py) on its own, so the
// argument checks, the device guard's place, the grid and the 64-bit grid-stride loops, the byte
// packing and the escape code of the CUDA path run in the CPU test suite. No CUDA header here.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>

#include <cstdint>

#include "../pool_offsets_args.h"
#include "kernels.h"

namespace ftprop {
namespace cuda {

// One thread per packed byte (the 8 / bits offsets of a byte come from one thread).
struct PoolPack {
  template <class Th>
  C10_DEVICE static void run(const Th& th, const int64_t* __restrict__ idx,
                             uint8_t* __restrict__ out, int64_t bytes, int64_t n, PoolGeometry g) {
    const int64_t stride = grid_stride(th);
    for (int64_t j = first_item(th); j < bytes; j += stride) {
      th.store(out + j, pack_pool_byte(idx, j, n, g));
    }
  }
};

// One thread per index.
struct PoolUnpack {
  template <class Th>
  C10_DEVICE static void run(const Th& th, const uint8_t* __restrict__ packed,
                             int64_t* __restrict__ out, int64_t n, PoolGeometry g) {
    const int64_t stride = grid_stride(th);
    for (int64_t e = first_item(th); e < n; e += stride) {
      th.store(out + e, unpack_pool_index(packed, e, g));
    }
  }
};

template <class Launcher>
at::Tensor pool_offsets_pack_impl(const at::Tensor& indices, int64_t in_w, at::IntArrayRef kernel,
                                  at::IntArrayRef stride, at::IntArrayRef padding,
                                  at::IntArrayRef dilation, int64_t bits) {
  TORCH_CHECK(indices.scalar_type() == at::kLong, "ftprop_cuda pool offsets: indices must be int64");
  const PoolGeometry g =
      pool_geometry(indices.sizes(), in_w, kernel, stride, padding, dilation, bits);
  const typename Launcher::Guard guard(indices.device());
  const at::Tensor idx = indices.contiguous();
  const int64_t n = idx.numel();
  at::Tensor out = at::empty({packed_pool_bytes(n, bits)}, idx.options().dtype(at::kByte));
  const int64_t bytes = out.numel();
  if (bytes > 0) {
    Launcher::template launch<PoolPack>(bytes, idx.const_data_ptr<int64_t>(),
                                        out.mutable_data_ptr<uint8_t>(), bytes, n, g);
  }
  return out;
}

template <class Launcher>
at::Tensor pool_offsets_unpack_impl(const at::Tensor& packed, at::IntArrayRef size, int64_t in_w,
                                    at::IntArrayRef kernel, at::IntArrayRef stride,
                                    at::IntArrayRef padding, at::IntArrayRef dilation,
                                    int64_t bits) {
  const PoolGeometry g = pool_geometry(size, in_w, kernel, stride, padding, dilation, bits);
  const typename Launcher::Guard guard(packed.device());
  at::Tensor out = at::empty(size, packed.options().dtype(at::kLong));
  const int64_t n = out.numel();
  check_packed_offsets(packed, n, bits);
  if (n > 0) {
    Launcher::template launch<PoolUnpack>(n, packed.const_data_ptr<uint8_t>(),
                                          out.mutable_data_ptr<int64_t>(), n, g);
  }
  return out;
}

}  // namespace cuda
}  // namespace ftprop
