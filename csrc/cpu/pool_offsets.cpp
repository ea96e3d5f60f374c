// CPU kernels of the max-pool offset codec (see ../pool_offsets.h).
//
// The elements are taken in blocks; a block is walked one output row at a time, where the
// window origin grows by the stride from element to element, so the offset computation is a
// plain loop the compiler vectorises (2x2 and 3x3 windows get their own instances, with the
// window's rows and columns as constants). Offsets are staged one byte each, then packed
// `8 / bits` to a byte, the layout the CUDA kernels and pool_offsets.h use.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>

#include "../pool_offsets_args.h"
#include "loops.h"  // best_isa(), FTPROP_BODY and the target attributes

namespace ftprop {
namespace cpu {
namespace {

constexpr int64_t kPoolBlock = 4096;  // elements per block: a multiple of 8, so whole bytes
static_assert(kPoolBlock % 8 == 0, "a block packs into whole bytes");

// The output position (oh, ow) of element e, advanced one row segment at a time. Used inline in
// the loop bodies (no callback: a lambda body could be compiled apart from its caller's target
// and lose the AVX2 code generation, see loops.h).
struct RowCursor {
  int64_t oh, ow;
  RowCursor(int64_t e, const PoolGeometry& g) : oh((e / g.out_w) % g.out_h), ow(e % g.out_w) {}
  // elements left in the current row, at most n
  int64_t segment(int64_t n, const PoolGeometry& g) const { return std::min(n, g.out_w - ow); }
  void advance(int64_t seg, const PoolGeometry& g) {
    ow += seg;
    if (ow == g.out_w) {
      ow = 0;
      if (++oh == g.out_h) oh = 0;
    }
  }
};

// delta[o]: offset o's flat distance from its window's origin, for every value a stored offset
// can take (0 past the window: the escape code is decoded apart, and damaged offsets read no
// memory past the table).
void delta_table(const PoolGeometry& g, int64_t (&delta)[256]) {
  for (int64_t o = 0; o < 256; ++o) {
    delta[o] = o < g.kh * g.kw ? delta_of_offset(static_cast<uint8_t>(o), g) : 0;
  }
}

struct PoolBody {
  // Offsets of elements [e0, e0 + len) packed into dst. kKH, kKW: the window, 0 = read from g.
  template <int kKH, int kKW>
  FTPROP_BODY void pack(const int64_t* idx, int64_t e0, int64_t len, const PoolGeometry& g,
                        uint8_t* dst) {
    uint8_t off[kPoolBlock];
    const int64_t kh = kKH ? kKH : g.kh, kw = kKW ? kKW : g.kw;
    const int64_t row = g.dh * g.in_w, sw = g.sw, dw = g.dw;
    // index 0 outside its window: the escape code (pool_offsets.h), where the bits have one free
    const int64_t escape = pool_has_escape(g) ? kh * kw : -1;
    RowCursor at(e0, g);
    for (int64_t s = 0; s < len;) {
      const int64_t seg = at.segment(len - s, g);
      const int64_t origin = window_origin(at.oh, at.ow, g);
      const int64_t* src = idx + e0 + s;
      uint8_t* o = off + s;
      for (int64_t k = 0; k < seg; ++k) {  // offset_of_delta, with selects instead of products
        const int64_t d = src[k] - (origin + k * sw);
        int64_t a = 0, rem = d;
        for (int64_t j = 1; j < kh; ++j) {
          const bool below = d >= j * row;
          a += below;
          rem -= below ? row : 0;
        }
        int64_t b = 0;
        for (int64_t j = 1; j < kw; ++j) b += rem >= j * dw;
        const bool outside = src[k] == 0 && a * row + b * dw != d && escape >= 0;
        o[k] = static_cast<uint8_t>(outside ? escape : a * kw + b);
      }
      at.advance(seg, g);
      s += seg;
    }
    const int per = 8 / g.bits;
    const int64_t bytes = (len + per - 1) / per;
    for (int64_t k = len; k < bytes * per; ++k) off[k] = 0;
    switch (g.bits) {
      case 1: put<1>(off, dst, bytes); break;
      case 2: put<2>(off, dst, bytes); break;
      case 4: put<4>(off, dst, bytes); break;
      default: put<8>(off, dst, bytes); break;
    }
  }

  template <int kBits>
  FTPROP_BODY void put(const uint8_t* off, uint8_t* dst, int64_t bytes) {
    constexpr int kPer = 8 / kBits;
    for (int64_t j = 0; j < bytes; ++j) {
      uint32_t byte = 0;
      for (int k = 0; k < kPer; ++k) byte |= uint32_t{off[j * kPer + k]} << (k * kBits);
      dst[j] = static_cast<uint8_t>(byte);
    }
  }

  template <int kBits>
  FTPROP_BODY void take(const uint8_t* src, uint8_t* off, int64_t bytes) {
    constexpr int kPer = 8 / kBits;
    constexpr uint32_t kMask = (1u << kBits) - 1u;
    for (int64_t j = 0; j < bytes; ++j) {
      for (int k = 0; k < kPer; ++k) off[j * kPer + k] = (uint32_t{src[j]} >> (k * kBits)) & kMask;
    }
  }

  // Indices of elements [e0, e0 + len) from their packed offsets (src: the block's first byte);
  // delta[o]: the flat distance of offset o from its window's origin.
  FTPROP_BODY void unpack(const uint8_t* src, int64_t e0, int64_t len, const PoolGeometry& g,
                          const int64_t* delta, int64_t* dst) {
    uint8_t off[kPoolBlock];
    const int per = 8 / g.bits;
    const int64_t bytes = (len + per - 1) / per;
    switch (g.bits) {
      case 1: take<1>(src, off, bytes); break;
      case 2: take<2>(src, off, bytes); break;
      case 4: take<4>(src, off, bytes); break;
      default: take<8>(src, off, bytes); break;
    }
    const int64_t sw = g.sw, escape = pool_escape_code(g);
    RowCursor at(e0, g);
    for (int64_t s = 0; s < len;) {
      const int64_t seg = at.segment(len - s, g);
      const int64_t origin = window_origin(at.oh, at.ow, g);
      int64_t* out = dst + e0 + s;
      const uint8_t* o = off + s;
      for (int64_t k = 0; k < seg; ++k) {
        out[k] = o[k] == escape ? 0 : origin + k * sw + delta[o[k]];
      }
      at.advance(seg, g);
      s += seg;
    }
  }
};

template <int kKH, int kKW>
FTPROP_TARGET_AVX2 void pack_avx2(const int64_t* idx, int64_t e0, int64_t len,
                                  const PoolGeometry& g, uint8_t* dst) {
  PoolBody::pack<kKH, kKW>(idx, e0, len, g, dst);
}
template <int kKH, int kKW>
void pack_base(const int64_t* idx, int64_t e0, int64_t len, const PoolGeometry& g,
               uint8_t* dst) {
  PoolBody::pack<kKH, kKW>(idx, e0, len, g, dst);
}
FTPROP_TARGET_AVX2 void unpack_avx2(const uint8_t* src, int64_t e0, int64_t len,
                                    const PoolGeometry& g, const int64_t* delta, int64_t* dst) {
  PoolBody::unpack(src, e0, len, g, delta, dst);
}
void unpack_base(const uint8_t* src, int64_t e0, int64_t len, const PoolGeometry& g,
                 const int64_t* delta, int64_t* dst) {
  PoolBody::unpack(src, e0, len, g, delta, dst);
}

template <int kKH, int kKW>
void pack_block(const int64_t* idx, int64_t e0, int64_t len, const PoolGeometry& g,
                uint8_t* dst) {
  if (best_isa() == Isa::kBase) {
    pack_base<kKH, kKW>(idx, e0, len, g, dst);
  } else {
    pack_avx2<kKH, kKW>(idx, e0, len, g, dst);
  }
}

at::Tensor pool_offsets_pack_cpu(const at::Tensor& indices, int64_t in_w, at::IntArrayRef kernel,
                                 at::IntArrayRef stride, at::IntArrayRef padding,
                                 at::IntArrayRef dilation, int64_t bits) {
  TORCH_CHECK(indices.scalar_type() == at::kLong, "ftprop_cuda pool offsets: indices must be int64");
  const PoolGeometry geometry =
      pool_geometry(indices.sizes(), in_w, kernel, stride, padding, dilation, bits);
  const at::Tensor idx = indices.contiguous();
  const int64_t n = idx.numel();
  at::Tensor out = at::empty({packed_pool_bytes(n, bits)}, idx.options().dtype(at::kByte));
  if (n == 0) return out;
  const int64_t* src = idx.const_data_ptr<int64_t>();
  uint8_t* dst = out.mutable_data_ptr<uint8_t>();
  const int per = 8 / geometry.bits;
  const int64_t blocks = (n + kPoolBlock - 1) / kPoolBlock;
  at::parallel_for(0, blocks, 4, [&](int64_t begin, int64_t end) {
    const PoolGeometry g = geometry;  // a local copy: the uint8 stores below may alias anything
    for (int64_t b = begin; b < end; ++b) {
      const int64_t e0 = b * kPoolBlock, len = std::min(kPoolBlock, n - e0);
      uint8_t* d = dst + e0 / per;
      if (g.kh == 2 && g.kw == 2) {
        pack_block<2, 2>(src, e0, len, g, d);
      } else if (g.kh == 3 && g.kw == 3) {
        pack_block<3, 3>(src, e0, len, g, d);
      } else {
        pack_block<0, 0>(src, e0, len, g, d);
      }
    }
  });
  return out;
}

at::Tensor pool_offsets_unpack_cpu(const at::Tensor& packed, at::IntArrayRef size, int64_t in_w,
                                   at::IntArrayRef kernel, at::IntArrayRef stride,
                                   at::IntArrayRef padding, at::IntArrayRef dilation, int64_t bits) {
  const PoolGeometry geometry = pool_geometry(size, in_w, kernel, stride, padding, dilation, bits);
  at::Tensor out = at::empty(size, packed.options().dtype(at::kLong));
  const int64_t n = out.numel();
  check_packed_offsets(packed, n, bits);
  if (n == 0) return out;
  int64_t delta[256];
  delta_table(geometry, delta);
  const uint8_t* src = packed.const_data_ptr<uint8_t>();
  int64_t* dst = out.mutable_data_ptr<int64_t>();
  const int per = 8 / geometry.bits;
  const int64_t blocks = (n + kPoolBlock - 1) / kPoolBlock;
  at::parallel_for(0, blocks, 4, [&](int64_t begin, int64_t end) {
    const PoolGeometry g = geometry;
    for (int64_t b = begin; b < end; ++b) {
      const int64_t e0 = b * kPoolBlock, len = std::min(kPoolBlock, n - e0);
      if (best_isa() == Isa::kBase) {
        unpack_base(src + e0 / per, e0, len, g, delta, dst);
      } else {
        unpack_avx2(src + e0 / per, e0, len, g, delta, dst);
      }
    }
  });
  return out;
}

// A max-pool's input gradient straight from the packed offsets, for a contiguous input: per
// plane, output by output in ascending order, grad_input[window origin + offset] += grad, in
// scalar_t arithmetic. That is ATen's CPU max-pool backward (contiguous kernel) with the int64
// index replaced by its offset, so the result is bitwise ATen's, overlapping windows included,
// without rebuilding the int64 indices first (tests/test_lean_memory.py checks it).
at::Tensor pool_offsets_backward_cpu(const at::Tensor& grad, const at::Tensor& packed,
                                     at::IntArrayRef input_size, int64_t in_w,
                                     at::IntArrayRef kernel, at::IntArrayRef stride,
                                     at::IntArrayRef padding, at::IntArrayRef dilation,
                                     int64_t bits) {
  TORCH_CHECK((grad.dim() == 3 || grad.dim() == 4) &&
                  grad.dim() == static_cast<int64_t>(input_size.size()),
              "ftprop_cuda pool offsets: grad and the input must both be 3-D or 4-D");
  TORCH_CHECK(input_size.back() == in_w, "ftprop_cuda pool offsets: in_w (", in_w,
              ") must be the input's width (", input_size.back(), ")");
  for (int64_t d = 0; d + 2 < grad.dim(); ++d) {
    TORCH_CHECK(grad.size(d) == input_size[d],
                "ftprop_cuda pool offsets: grad and the input differ in dimension ", d);
  }
  const PoolGeometry geometry =
      pool_geometry(grad.sizes(), in_w, kernel, stride, padding, dilation, bits);
  const int64_t n = grad.numel();
  check_packed_offsets(packed, n, bits);
  at::Tensor grad_input = at::zeros(input_size, grad.options());
  if (n == 0) return grad_input;
  const at::Tensor g = grad.contiguous();
  const int64_t in_plane = input_size[input_size.size() - 2] * in_w;
  const int64_t out_plane = geometry.out_h * geometry.out_w;
  const int64_t planes = n / out_plane;
  const int64_t window = geometry.kh * geometry.kw;
  int64_t delta[256];
  delta_table(geometry, delta);
  const uint8_t* src = packed.const_data_ptr<uint8_t>();
  std::atomic<bool> damaged{false};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad.scalar_type(), "pool_offsets_backward", [&] {
    const scalar_t* gp = g.const_data_ptr<scalar_t>();
    scalar_t* ip = grad_input.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, planes, 0, [&](int64_t begin, int64_t end) {
      const PoolGeometry geo = geometry;
      const int shift = geo.bits == 1 ? 3 : geo.bits == 2 ? 2 : geo.bits == 4 ? 1 : 0;
      const int64_t per_mask = (int64_t{1} << shift) - 1;
      const uint32_t mask = (1u << geo.bits) - 1u;
      bool bad = false;
      for (int64_t p = begin; p < end; ++p) {
        scalar_t* gi = ip + p * in_plane;
        const scalar_t* go = gp + p * out_plane;
        int64_t e = p * out_plane;
        for (int64_t oh = 0; oh < geo.out_h; ++oh) {
          const int64_t row_origin = (oh * geo.sh - geo.ph) * geo.in_w - geo.pw;
          for (int64_t ow = 0; ow < geo.out_w; ++ow, ++e) {
            const uint32_t off = (uint32_t{src[e >> shift]} >> ((e & per_mask) * geo.bits)) & mask;
            // off == window: the escape code, index 0 (pool_offsets.h)
            const int64_t index = off == window ? 0 : row_origin + ow * geo.sw + delta[off];
            if (off > window || index < 0 || index >= in_plane) {  // only damaged offsets
              bad = true;
              continue;
            }
            gi[index] += go[e - p * out_plane];
          }
        }
      }
      if (bad) damaged = true;
    });
  });
  TORCH_CHECK(!damaged.load(), "ftprop_cuda pool offsets: a stored offset lies outside its "
              "window or the input (damaged or foreign offsets)");
  return grad_input;
}

}  // namespace

TORCH_LIBRARY_IMPL(ftprop_cuda, CPU, m) {
  m.impl("_pool_offsets_pack", &pool_offsets_pack_cpu);
  m.impl("_pool_offsets_unpack", &pool_offsets_unpack_cpu);
  m.impl("_pool_offsets_backward", &pool_offsets_backward_cpu);
}

}  // namespace cpu
}  // namespace ftprop
