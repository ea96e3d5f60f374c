// Max-pool indices as window-local offsets (lean memory mode, ftprop_cuda/memory.py).
//
// A 2-D max-pool's int64 index is the flat position ih * in_w + iw of the maximum in its input
// plane. Within output (oh, ow)'s window it is the offset kh * KW + kw, where
// ih = oh * sH - pH + kh * dH and iw = ow * sW - pW + kw * dW: ceil(log2(KH KW)) bits, stored
// here in `bits` in {1, 2, 4, 8} bits (8 / bits offsets per byte, element k of byte j at bit
// (k % (8 / bits)) * bits). Elements are in the logical row-major order of the index tensor.
//
// One index may lie outside its window: ATen's channels-last CUDA max-pool starts every window's
// index at 0 and moves it only for a value > -inf or NaN, so an all -inf window keeps index 0,
// the plane's first position, wherever the window is. The code KH KW (one past the window's last
// offset, free whenever KH KW < 2^bits: ftprop_cuda/memory/pool.py gives such windows the spare
// code where the device and layout can produce them) stands for exactly that: index 0 outside
// the window. Other indices outside their window do not occur (no ATen kernel makes them).
#pragma once

#include <c10/macros/Macros.h>
#include <cstdint>

namespace ftprop {

struct PoolGeometry {
  int64_t in_w, out_h, out_w;
  int64_t kh, kw, sh, sw, ph, pw, dh, dw;
  int bits;
};

// The index's distance from its window's first position, top * in_w + left, is
// d = kh * dH * in_w + kw * dW; with (KW - 1) dW < dH in_w (checked by the caller) the windows'
// rows do not overlap in d, so kh and then kw follow from comparisons (no division).
C10_HOST_DEVICE inline uint8_t offset_of_delta(int64_t d, const PoolGeometry& g) {
  const int64_t row = g.dh * g.in_w;
  // counted, not searched: the trip counts do not depend on the data (no mispredicted branches)
  int64_t kh = 0;
  for (int64_t j = 1; j < g.kh; ++j) kh += d >= j * row;
  const int64_t rem = d - kh * row;
  int64_t kw = 0;
  for (int64_t j = 1; j < g.kw; ++j) kw += rem >= j * g.dw;
  return static_cast<uint8_t>(kh * g.kw + kw);
}

// The escape code: index 0 outside its window; >= 2^bits (never stored) when the window fills the
// code's range.
C10_HOST_DEVICE inline int64_t pool_escape_code(const PoolGeometry& g) { return g.kh * g.kw; }

C10_HOST_DEVICE inline bool pool_has_escape(const PoolGeometry& g) {
  return g.kh * g.kw < (int64_t{1} << g.bits);
}

C10_HOST_DEVICE inline int64_t window_origin(int64_t oh, int64_t ow, const PoolGeometry& g) {
  return (oh * g.sh - g.ph) * g.in_w + (ow * g.sw - g.pw);
}

C10_HOST_DEVICE inline int64_t delta_of_offset(uint8_t offset, const PoolGeometry& g) {
  const int64_t kh = offset / g.kw;
  return kh * g.dh * g.in_w + (offset - kh * g.kw) * g.dw;
}

// The stored code of index `index` of element e: its offset, or the escape code for index 0
// outside the window (the offset's delta differs from the index's exactly then).
C10_HOST_DEVICE inline uint8_t pool_offset_of(int64_t index, int64_t e, const PoolGeometry& g) {
  const int64_t ow = e % g.out_w;
  const int64_t oh = (e / g.out_w) % g.out_h;
  const int64_t d = index - window_origin(oh, ow, g);
  const uint8_t offset = offset_of_delta(d, g);
  const bool escape = index == 0 && delta_of_offset(offset, g) != d && pool_has_escape(g);
  return escape ? static_cast<uint8_t>(pool_escape_code(g)) : offset;
}

C10_HOST_DEVICE inline int64_t pool_index_of(uint8_t offset, int64_t e, const PoolGeometry& g) {
  if (offset == pool_escape_code(g)) {
    return 0;
  }
  const int64_t ow = e % g.out_w;
  const int64_t oh = (e / g.out_w) % g.out_h;
  return window_origin(oh, ow, g) + delta_of_offset(offset, g);
}

// Byte j of the packed offsets of n elements.
C10_HOST_DEVICE inline uint8_t pack_pool_byte(const int64_t* idx, int64_t j, int64_t n,
                                              const PoolGeometry& g) {
  const int per = 8 / g.bits;
  uint8_t byte = 0;
  for (int k = 0; k < per; ++k) {
    const int64_t e = j * per + k;
    if (e < n) byte |= static_cast<uint8_t>(pool_offset_of(idx[e], e, g) << (k * g.bits));
  }
  return byte;
}

C10_HOST_DEVICE inline int64_t unpack_pool_index(const uint8_t* packed, int64_t e,
                                                 const PoolGeometry& g) {
  const int per = 8 / g.bits;
  const uint8_t mask = static_cast<uint8_t>((1u << g.bits) - 1u);
  const uint8_t offset = (packed[e / per] >> ((e % per) * g.bits)) & mask;
  return pool_index_of(offset, e, g);
}

}  // namespace ftprop
