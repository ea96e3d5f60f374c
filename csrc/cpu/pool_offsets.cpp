// CPU kernels of the max-pool offset codec (see ../pool_offsets.h).
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "../pool_offsets_args.h"

namespace ftprop {
namespace cpu {

at::Tensor pool_offsets_pack_cpu(const at::Tensor& indices, int64_t in_w, at::IntArrayRef kernel,
                                 at::IntArrayRef stride, at::IntArrayRef padding,
                                 at::IntArrayRef dilation, int64_t bits) {
  TORCH_CHECK(indices.scalar_type() == at::kLong, "ftprop_cuda pool offsets: indices must be int64");
  const PoolGeometry geometry =
      pool_geometry(indices.sizes(), in_w, kernel, stride, padding, dilation, bits);
  const at::Tensor idx = indices.contiguous();
  const int64_t n = idx.numel();
  at::Tensor out = at::empty({packed_pool_bytes(n, bits)}, idx.options().dtype(at::kByte));
  const int64_t* src = idx.const_data_ptr<int64_t>();
  uint8_t* dst = out.mutable_data_ptr<uint8_t>();
  const int per = 8 / geometry.bits;
  // Blocks of whole bytes; within a block the output position (oh, ow) advances by counters.
  at::parallel_for(0, out.numel(), 2048, [&](int64_t begin, int64_t end) {
    const PoolGeometry g = geometry;  // a local copy: the uint8 stores below may alias anything
    int64_t e = begin * per;
    int64_t ow = e % g.out_w, oh = (e / g.out_w) % g.out_h;
    for (int64_t j = begin; j < end; ++j) {
      uint8_t byte = 0;
      for (int k = 0; k < per && e < n; ++k, ++e) {
        const uint8_t off = offset_of_delta(src[e] - window_origin(oh, ow, g), g);
        byte |= static_cast<uint8_t>(off << (k * g.bits));
        if (++ow == g.out_w) {
          ow = 0;
          if (++oh == g.out_h) oh = 0;
        }
      }
      dst[j] = byte;
    }
  });
  return out;
}

at::Tensor pool_offsets_unpack_cpu(const at::Tensor& packed, at::IntArrayRef size, int64_t in_w,
                                   at::IntArrayRef kernel, at::IntArrayRef stride,
                                   at::IntArrayRef padding, at::IntArrayRef dilation, int64_t bits) {
  TORCH_CHECK(packed.scalar_type() == at::kByte && packed.is_contiguous(),
              "ftprop_cuda pool offsets: packed must be a contiguous uint8 tensor");
  const PoolGeometry geometry = pool_geometry(size, in_w, kernel, stride, padding, dilation, bits);
  at::Tensor out = at::empty(size, packed.options().dtype(at::kLong));
  const int64_t n = out.numel();
  TORCH_CHECK(packed.numel() == packed_pool_bytes(n, bits),
              "ftprop_cuda pool offsets: packed has ", packed.numel(), " bytes, expected ",
              packed_pool_bytes(n, bits));
  const uint8_t* src = packed.const_data_ptr<uint8_t>();
  int64_t* dst = out.mutable_data_ptr<int64_t>();
  const int shift = bits == 1 ? 3 : bits == 2 ? 2 : bits == 4 ? 1 : 0;  // log2(8 / bits)
  const int64_t per_mask = (int64_t{1} << shift) - 1;
  const uint8_t mask = static_cast<uint8_t>((1u << bits) - 1u);
  at::parallel_for(0, n, 16384, [&](int64_t begin, int64_t end) {
    const PoolGeometry g = geometry;
    int64_t ow = begin % g.out_w, oh = (begin / g.out_w) % g.out_h;
    for (int64_t e = begin; e < end; ++e) {
      const uint8_t off = (src[e >> shift] >> ((e & per_mask) * g.bits)) & mask;
      dst[e] = window_origin(oh, ow, g) + delta_of_offset(off, g);
      if (++ow == g.out_w) {
        ow = 0;
        if (++oh == g.out_h) oh = 0;
      }
    }
  });
  return out;
}

TORCH_LIBRARY_IMPL(ftprop_cuda, CPU, m) {
  m.impl("_pool_offsets_pack", &pool_offsets_pack_cpu);
  m.impl("_pool_offsets_unpack", &pool_offsets_unpack_cpu);
}

}  // namespace cpu
}  // namespace ftprop
