// CPU kernels of the max-pool offset codec (see ../pool_offsets.h).
//
// The elements are taken in blocks; a block is walked one output row at a time, where the
// window origin grows by the stride from element to element, so the offset computation is a
// plain loop the compiler vectorises (2x2 and 3x3 windows get their own instances, with the
// window's rows and columns as constants). Offsets are staged one byte each, then packed
// `8 / bits` to a byte, the layout the CUDA kernels and pool_offsets.h use.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>
#include <tuple>
#include <vector>

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
    put_staged(off, len, g.bits, dst);
  }

  // Packs len staged one-byte offsets (off has room up to a whole byte past len) `8 / bits` to
  // a byte into dst.
  FTPROP_BODY void put_staged(uint8_t* off, int64_t len, int bits, uint8_t* dst) {
    const int per = 8 / bits;
    const int64_t bytes = (len + per - 1) / per;
    for (int64_t k = len; k < bytes * per; ++k) off[k] = 0;
    switch (bits) {
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

// Max and window offset of one window, ATen's CPU max-pool loop for a contiguous input: the
// window clipped to the input, positions visited row by row, the maximum starting at -inf at the
// first position inside the window and moving to a value that is greater or NaN, compared in
// at::opmath_type (float for half and bfloat16: exact for a comparison). The first position
// always sets the maximum (a value > -inf or NaN moves it; -inf leaves -inf, the same value), so
// the loop starts from it. Returns false for a window with no position inside the input.
template <typename scalar_t>
inline bool window_max(const scalar_t* plane, int64_t ih, int64_t iw, int64_t in_h,
                       const PoolGeometry& g, scalar_t* out, uint8_t* off) {
  using acc_t = at::opmath_type<scalar_t>;
  int64_t a0 = 0, a1 = g.kh, b0 = 0, b1 = g.kw;
  while (a0 < a1 && ih + a0 * g.dh < 0) ++a0;
  while (a1 > a0 && ih + (a1 - 1) * g.dh >= in_h) --a1;
  while (b0 < b1 && iw + b0 * g.dw < 0) ++b0;
  while (b1 > b0 && iw + (b1 - 1) * g.dw >= g.in_w) --b1;
  if (a0 >= a1 || b0 >= b1) return false;
  acc_t maxval = -std::numeric_limits<acc_t>::infinity();
  int64_t best = a0 * g.kw + b0;
  for (int64_t a = a0; a < a1; ++a) {
    const scalar_t* row = plane + (ih + a * g.dh) * g.in_w + iw;
    for (int64_t b = b0; b < b1; ++b) {
      const acc_t v = static_cast<acc_t>(row[b * g.dw]);
      if (v > maxval || std::isnan(v)) {
        maxval = v;
        best = a * g.kw + b;
      }
    }
  }
  *out = static_cast<scalar_t>(maxval);
  *off = static_cast<uint8_t>(best);
  return true;
}

// The same for n consecutive windows of one output row lying wholly inside the input (no
// dilation), a KH x KW window known at compile time: selects instead of branches, so the
// compiler can vectorise across the row.
template <typename scalar_t, int KH, int KW>
inline void row_max_inside(const scalar_t* first, int64_t n, int64_t sw, int64_t in_w,
                           scalar_t* out, uint8_t* off) {
  using acc_t = at::opmath_type<scalar_t>;
  for (int64_t k = 0; k < n; ++k) {
    const scalar_t* w = first + k * sw;
    acc_t m = static_cast<acc_t>(w[0]);
    uint8_t best = 0;
    for (int a = 0; a < KH; ++a) {
      for (int b = (a == 0 ? 1 : 0); b < KW; ++b) {
        const acc_t v = static_cast<acc_t>(w[a * in_w + b]);
        const bool take = (v > m) | (v != v);
        m = take ? v : m;
        best = take ? static_cast<uint8_t>(a * KW + b) : best;
      }
    }
    out[k] = static_cast<scalar_t>(m);
    off[k] = best;
  }
}

// Max-pool outputs [e0, e0 + len) with their offsets packed into dst (PoolBody::pack's layout).
// *empty is set for a window wholly in the padding (the caller's geometry excludes it).
template <typename scalar_t>
void max_pool_offsets_block(const scalar_t* in, scalar_t* out, int64_t e0, int64_t len,
                            int64_t in_h, const PoolGeometry& g, uint8_t* dst, bool* empty) {
  uint8_t off[kPoolBlock];
  const int64_t out_plane = g.out_h * g.out_w, in_plane = in_h * g.in_w;
  const bool fixed = g.dh == 1 && g.dw == 1 &&
                     ((g.kh == 2 && g.kw == 2) || (g.kh == 3 && g.kw == 3));
  // windows of a row wholly inside the input columns: ow in [ow_lo, ow_hi)
  const int64_t ow_lo = std::min(g.out_w, (g.pw + g.sw - 1) / g.sw);
  const int64_t last = g.in_w + g.pw - ((g.kw - 1) * g.dw + 1);  // ow * sw <= last
  const int64_t ow_hi = std::max(ow_lo, std::min(g.out_w, last < 0 ? 0 : last / g.sw + 1));
  int64_t p = e0 / out_plane;
  RowCursor at(e0, g);
  for (int64_t s = 0; s < len;) {
    const int64_t seg = at.segment(len - s, g);
    const scalar_t* plane = in + p * in_plane;
    const int64_t ih = at.oh * g.sh - g.ph;
    scalar_t* o = out + e0 + s;
    uint8_t* c = off + s;
    int64_t lo = at.ow, hi = at.ow + seg;  // this segment's outputs, [lo, hi)
    int64_t in_lo = lo, in_hi = lo;        // the part taken by row_max_inside
    if (fixed && ih >= 0 && ih + g.kh <= in_h) {
      in_lo = std::min(std::max(lo, ow_lo), hi);
      in_hi = std::max(in_lo, std::min(hi, ow_hi));
    }
    for (int64_t ow = lo; ow < hi; ++ow) {
      if (ow == in_lo && in_hi > in_lo) {
        const scalar_t* first = plane + ih * g.in_w + in_lo * g.sw - g.pw;
        if (g.kh == 2) {
          row_max_inside<scalar_t, 2, 2>(first, in_hi - in_lo, g.sw, g.in_w, o + (ow - lo),
                                         c + (ow - lo));
        } else {
          row_max_inside<scalar_t, 3, 3>(first, in_hi - in_lo, g.sw, g.in_w, o + (ow - lo),
                                         c + (ow - lo));
        }
        ow = in_hi - 1;
        continue;
      }
      if (!window_max(plane, ih, ow * g.sw - g.pw, in_h, g, o + (ow - lo), c + (ow - lo))) {
        *empty = true;
      }
    }
    at.advance(seg, g);
    if (at.oh == 0 && at.ow == 0) ++p;  // the cursor wrapped: the next plane
    s += seg;
  }
  PoolBody::put_staged(off, len, g.bits, dst);
}

// (output, packed offsets) of a 2-D max-pool of a contiguous 3-D or 4-D CPU input, floor mode:
// the output is bitwise ATen's max_pool2d_with_indices output and the offsets are those of its
// indices (what _pool_offsets_pack makes of them), in one pass over the input.
std::tuple<at::Tensor, at::Tensor> max_pool_offsets_cpu(const at::Tensor& input,
                                                        at::IntArrayRef kernel,
                                                        at::IntArrayRef stride,
                                                        at::IntArrayRef padding,
                                                        at::IntArrayRef dilation, int64_t bits) {
  TORCH_CHECK((input.dim() == 3 || input.dim() == 4) && input.is_contiguous() &&
                  at::isFloatingType(input.scalar_type()),
              "ftprop_cuda max-pool offsets: input must be a contiguous 3-D or 4-D floating "
              "tensor");
  TORCH_CHECK(kernel.size() == 2 && stride.size() == 2 && padding.size() == 2 &&
                  dilation.size() == 2,
              "ftprop_cuda max-pool offsets: kernel, stride, padding, dilation must have 2 values");
  const int64_t in_h = input.size(-2), in_w = input.size(-1);
  std::vector<int64_t> out_size(input.sizes().begin(), input.sizes().end());
  for (int d = 0; d < 2; ++d) {
    const int64_t size = d == 0 ? in_h : in_w;
    TORCH_CHECK(kernel[d] > 0 && stride[d] > 0 && dilation[d] > 0 && padding[d] >= 0 &&
                    padding[d] <= kernel[d] / 2,
                "ftprop_cuda max-pool offsets: kernel, stride and dilation must be positive and "
                "padding at most half the kernel");
    const int64_t span = dilation[d] * (kernel[d] - 1) + 1;
    TORCH_CHECK(size + 2 * padding[d] >= span,
                "ftprop_cuda max-pool offsets: the window is larger than the padded input");
    out_size[out_size.size() - 2 + d] = (size + 2 * padding[d] - span) / stride[d] + 1;
  }
  const PoolGeometry geometry =
      pool_geometry(out_size, in_w, kernel, stride, padding, dilation, bits);
  at::Tensor out = at::empty(out_size, input.options());
  const int64_t n = out.numel();
  at::Tensor packed = at::empty({packed_pool_bytes(n, bits)}, input.options().dtype(at::kByte));
  if (n == 0) return std::make_tuple(out, packed);
  uint8_t* dst = packed.mutable_data_ptr<uint8_t>();
  const int per = 8 / geometry.bits;
  const int64_t blocks = (n + kPoolBlock - 1) / kPoolBlock;
  std::atomic<bool> empty_window{false};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "max_pool_offsets", [&] {
    const scalar_t* ip = input.const_data_ptr<scalar_t>();
    scalar_t* op = out.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, blocks, 1, [&](int64_t begin, int64_t end) {
      const PoolGeometry g = geometry;
      bool empty = false;
      for (int64_t b = begin; b < end; ++b) {
        const int64_t e0 = b * kPoolBlock, len = std::min(kPoolBlock, n - e0);
        max_pool_offsets_block<scalar_t>(ip, op, e0, len, in_h, g, dst + e0 / per, &empty);
      }
      if (empty) empty_window = true;
    });
  });
  TORCH_CHECK(!empty_window.load(), "ftprop_cuda max-pool offsets: a window lies wholly in the "
              "padding");
  return std::make_tuple(out, packed);
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
  m.impl("_max_pool_offsets", &max_pool_offsets_cpu);
}

}  // namespace cpu
}  // namespace ftprop
