// CUDA kernels of the max-pool offset codec (see ../pool_offsets.h).
// Light c10/cuda headers only (see launch.cuh: ATen/cuda/CUDAContext.h needs cuSPARSE headers).
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "../pool_offsets_args.h"

namespace ftprop {
namespace cuda {
namespace {

__global__ void pack_kernel(const int64_t* idx, uint8_t* out, int64_t bytes, int64_t n,
                            PoolGeometry g) {
  for (int64_t j = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; j < bytes;
       j += int64_t{blockDim.x} * gridDim.x)
    out[j] = pack_pool_byte(idx, j, n, g);
}

__global__ void unpack_kernel(const uint8_t* packed, int64_t* out, int64_t n, PoolGeometry g) {
  for (int64_t e = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; e < n;
       e += int64_t{blockDim.x} * gridDim.x)
    out[e] = unpack_pool_index(packed, e, g);
}

unsigned grid_for(int64_t n) {
  const int64_t blocks = (n + 255) / 256;
  return static_cast<unsigned>(blocks < 65535 * 8 ? (blocks > 0 ? blocks : 1) : 65535 * 8);
}

}  // namespace

at::Tensor pool_offsets_pack_cuda(const at::Tensor& indices, int64_t in_w, at::IntArrayRef kernel,
                                  at::IntArrayRef stride, at::IntArrayRef padding,
                                  at::IntArrayRef dilation, int64_t bits) {
  TORCH_CHECK(indices.scalar_type() == at::kLong, "ftprop_cuda pool offsets: indices must be int64");
  const PoolGeometry g = pool_geometry(indices.sizes(), in_w, kernel, stride, padding, dilation, bits);
  const c10::cuda::CUDAGuard guard(indices.device());
  const at::Tensor idx = indices.contiguous();
  const int64_t n = idx.numel();
  at::Tensor out = at::empty({packed_pool_bytes(n, bits)}, idx.options().dtype(at::kByte));
  if (out.numel() > 0) {
    pack_kernel<<<grid_for(out.numel()), 256, 0, c10::cuda::getCurrentCUDAStream()>>>(
        idx.const_data_ptr<int64_t>(), out.mutable_data_ptr<uint8_t>(), out.numel(), n, g);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  return out;
}

at::Tensor pool_offsets_unpack_cuda(const at::Tensor& packed, at::IntArrayRef size, int64_t in_w,
                                    at::IntArrayRef kernel, at::IntArrayRef stride,
                                    at::IntArrayRef padding, at::IntArrayRef dilation,
                                    int64_t bits) {
  const PoolGeometry g = pool_geometry(size, in_w, kernel, stride, padding, dilation, bits);
  const c10::cuda::CUDAGuard guard(packed.device());
  at::Tensor out = at::empty(size, packed.options().dtype(at::kLong));
  const int64_t n = out.numel();
  check_packed_offsets(packed, n, bits);
  if (n > 0) {
    unpack_kernel<<<grid_for(n), 256, 0, c10::cuda::getCurrentCUDAStream()>>>(
        packed.const_data_ptr<uint8_t>(), out.mutable_data_ptr<int64_t>(), n, g);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  return out;
}

TORCH_LIBRARY_IMPL(ftprop_cuda, CUDA, m) {
  m.impl("_pool_offsets_pack", &pool_offsets_pack_cuda);
  m.impl("_pool_offsets_unpack", &pool_offsets_unpack_cuda);
}

}  // namespace cuda
}  // namespace ftprop
