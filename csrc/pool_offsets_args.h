// Argument checks and geometry shared by the CPU and CUDA pool-offset kernels.
#pragma once

#include <torch/types.h>

#include "pool_offsets.h"

namespace ftprop {

inline PoolGeometry pool_geometry(at::IntArrayRef size, int64_t in_w, at::IntArrayRef kernel,
                                  at::IntArrayRef stride, at::IntArrayRef padding,
                                  at::IntArrayRef dilation, int64_t bits) {
  TORCH_CHECK(size.size() >= 2, "ftprop_cuda pool offsets: indices must have at least 2 dims");
  TORCH_CHECK(kernel.size() == 2 && stride.size() == 2 && padding.size() == 2 &&
                  dilation.size() == 2,
              "ftprop_cuda pool offsets: kernel, stride, padding, dilation must have 2 values");
  TORCH_CHECK(bits == 1 || bits == 2 || bits == 4 || bits == 8,
              "ftprop_cuda pool offsets: bits must be 1, 2, 4 or 8; got ", bits);
  TORCH_CHECK(kernel[0] * kernel[1] <= (int64_t{1} << bits),
              "ftprop_cuda pool offsets: a ", kernel[0], "x", kernel[1], " window needs more than ",
              bits, " bits");
  TORCH_CHECK(in_w > 0 && stride[0] > 0 && stride[1] > 0 && dilation[0] > 0 && dilation[1] > 0,
              "ftprop_cuda pool offsets: in_w, stride and dilation must be positive");
  TORCH_CHECK((kernel[1] - 1) * dilation[1] < dilation[0] * in_w,
              "ftprop_cuda pool offsets: a window's rows overlap in the flat index "
              "((kernel_w - 1) * dilation_w >= dilation_h * in_w); keep the int64 indices");
  PoolGeometry g;
  g.in_w = in_w;
  g.out_h = size[size.size() - 2];
  g.out_w = size[size.size() - 1];
  g.kh = kernel[0];
  g.kw = kernel[1];
  g.sh = stride[0];
  g.sw = stride[1];
  g.ph = padding[0];
  g.pw = padding[1];
  g.dh = dilation[0];
  g.dw = dilation[1];
  g.bits = static_cast<int>(bits);
  return g;
}

inline int64_t packed_pool_bytes(int64_t n, int64_t bits) {
  const int64_t per = 8 / bits;
  return (n + per - 1) / per;
}

// The packed offsets of n elements at `bits` bits each (bits already checked by pool_geometry).
inline void check_packed_offsets(const at::Tensor& packed, int64_t n, int64_t bits) {
  TORCH_CHECK(packed.scalar_type() == at::kByte && packed.is_contiguous(),
              "ftprop_cuda pool offsets: packed must be a contiguous uint8 tensor");
  TORCH_CHECK(packed.numel() == packed_pool_bytes(n, bits),
              "ftprop_cuda pool offsets: packed has ", packed.numel(), " bytes, expected ",
              packed_pool_bytes(n, bits));
}

}  // namespace ftprop
