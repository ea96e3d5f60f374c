// CPU kernels of lean memory mode's output-level codec (ftprop_cuda/memory.py).
//
// A unit's output takes one of a few values: the step's two levels, or a K-step staircase's K + 1
// levels, or NaN. Lean mode keeps it as the index of its level (NaN: the index after the last
// level) in ceil(log2(levels + 1)) bits, stored as bit planes: plane j, byte i holds bit j of the
// codes of elements 8 i .. 8 i + 7 (element 8 i + k at bit k; padding codes are 0).
// memory.pack_codes / unpack_codes write and read the same layout with torch ops (the path on
// other devices); these loops do it in one pass. float32 has an AVX2 path (one group of eight
// elements is one vector; a plane byte is one movemask); the other dtypes, processors without
// AVX2 and the last partial group take the scalar path, which computes the same codes.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>
#include <torch/types.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "loops.h"  // best_isa() and the target attributes

#if FTPROP_X86_DISPATCH
#include <immintrin.h>
#endif

namespace ftprop {
namespace cpu {
namespace {

constexpr int64_t kMaxLevels = 511;  // codes fit in 9 bits (a 255-step staircase: 257 codes)
constexpr int64_t kLinearLevels = 32;  // up to this many levels, codes are counted, not searched

int code_bits_of(int64_t states) {
  int bits = 1;
  while ((int64_t{1} << bits) < states) ++bits;
  return bits;
}

// Bit j of eight codes as one byte (code k at bit k): the eight bits are gathered as bytes of
// one 64-bit word, and one multiplication moves byte k's bit to bit 56 + k.
inline uint8_t plane_byte(const uint32_t* codes, int j) {
  uint64_t word = 0;
  for (int k = 0; k < 8; ++k) word |= static_cast<uint64_t>((codes[k] >> j) & 1u) << (8 * k);
  return static_cast<uint8_t>((word * 0x0102040810204080ull) >> 56);
}

// The code of v, one of the `count` ascending levels t, or NaN.
template <typename T>
inline uint32_t code_of(T v, const T* t, int64_t count) {
  if (std::isnan(v)) return static_cast<uint32_t>(count);
  if (count <= kLinearLevels) {  // how many levels lie below v, without branches
    uint32_t c = 0;
    for (int64_t l = 0; l < count; ++l) c += static_cast<uint32_t>(t[l] < v);
    return c;
  }
  return static_cast<uint32_t>(std::lower_bound(t, t + count, v) - t);
}

template <typename scalar_t, typename opmath_t>
void pack_scalar(const scalar_t* src, int64_t n, const opmath_t* t, int64_t count, int bits,
                 uint8_t* out, int64_t groups, int64_t begin, int64_t end) {
  for (int64_t i = begin; i < end; ++i) {
    uint32_t codes[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    const int64_t first = i * 8, valid = std::min<int64_t>(8, n - first);
    for (int64_t k = 0; k < valid; ++k) codes[k] = code_of(static_cast<opmath_t>(src[first + k]), t, count);
    for (int j = 0; j < bits; ++j) out[j * groups + i] = plane_byte(codes, j);
  }
}

template <typename scalar_t>
void unpack_scalar(const uint8_t* src, int64_t n, const scalar_t* t, int64_t last_entry, int bits,
                   scalar_t* dst, int64_t groups, int64_t begin, int64_t end) {
  for (int64_t i = begin; i < end; ++i) {
    uint32_t codes[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    for (int j = 0; j < bits; ++j) {
      const uint32_t byte = src[j * groups + i];
      for (int k = 0; k < 8; ++k) codes[k] |= ((byte >> k) & 1u) << j;
    }
    const int64_t first = i * 8, valid = std::min<int64_t>(8, n - first);
    // a code past the table (only a damaged code holds one) reads the last entry, the NaN
    for (int64_t k = 0; k < valid; ++k) dst[first + k] = t[std::min<int64_t>(codes[k], last_entry)];
  }
}

#if FTPROP_X86_DISPATCH
// Whole groups only (8 i + 8 <= n); count <= kLinearLevels.
FTPROP_TARGET_AVX2 void pack_f32_avx2(const float* src, const float* t, int64_t count, int bits,
                                      uint8_t* out, int64_t groups, int64_t begin, int64_t end) {
  const __m256i nan_code = _mm256_set1_epi32(static_cast<int>(count));
  for (int64_t i = begin; i < end; ++i) {
    const __m256 v = _mm256_loadu_ps(src + i * 8);
    __m256i c = _mm256_setzero_si256();
    for (int64_t l = 0; l < count; ++l) {  // a true compare is -1: subtracting it counts
      const __m256 below = _mm256_cmp_ps(_mm256_set1_ps(t[l]), v, _CMP_LT_OQ);
      c = _mm256_sub_epi32(c, _mm256_castps_si256(below));
    }
    const __m256 nan = _mm256_cmp_ps(v, v, _CMP_UNORD_Q);
    c = _mm256_blendv_epi8(c, nan_code, _mm256_castps_si256(nan));
    for (int j = 0; j < bits; ++j) {  // bit j to the sign bit; movemask collects the 8 signs
      const __m256i at_sign = _mm256_sll_epi32(c, _mm_cvtsi32_si128(31 - j));
      out[j * groups + i] = static_cast<uint8_t>(_mm256_movemask_ps(_mm256_castsi256_ps(at_sign)));
    }
  }
}

// Whole groups only; the table padded with its last entry to 2^bits values.
FTPROP_TARGET_AVX2 void unpack_f32_avx2(const uint8_t* src, const float* padded, int bits,
                                        float* dst, int64_t groups, int64_t begin, int64_t end) {
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const __m256i one = _mm256_set1_epi32(1);
  const bool small = bits <= 3;  // at most 8 entries: a register permute instead of a gather
  const __m256 table8 = _mm256_loadu_ps(padded);  // padded has at least 8 entries
  for (int64_t i = begin; i < end; ++i) {
    __m256i c = _mm256_setzero_si256();
    for (int j = 0; j < bits; ++j) {
      const __m256i byte = _mm256_set1_epi32(src[j * groups + i]);
      const __m256i bit = _mm256_and_si256(_mm256_srlv_epi32(byte, lane), one);
      c = _mm256_or_si256(c, _mm256_sll_epi32(bit, _mm_cvtsi32_si128(j)));
    }
    const __m256 v = small ? _mm256_permutevar8x32_ps(table8, c)
                           : _mm256_i32gather_ps(padded, c, 4);
    _mm256_storeu_ps(dst + i * 8, v);
  }
}
#endif

// The vector paths over groups [begin, stop) where they apply; return where the scalar path
// takes over (begin itself where they do not apply).
template <typename scalar_t, typename opmath_t>
int64_t pack_vector(const scalar_t*, const opmath_t*, int64_t, int, uint8_t*, int64_t,
                    int64_t begin, int64_t) {
  return begin;
}
template <typename scalar_t>
int64_t unpack_vector(const uint8_t*, const scalar_t*, int, scalar_t*, int64_t, int64_t begin,
                      int64_t) {
  return begin;
}
#if FTPROP_X86_DISPATCH
int64_t pack_vector(const float* src, const float* t, int64_t count, int bits, uint8_t* out,
                    int64_t groups, int64_t begin, int64_t stop) {
  if (best_isa() == Isa::kBase || count > kLinearLevels || begin >= stop) return begin;
  pack_f32_avx2(src, t, count, bits, out, groups, begin, stop);
  return stop;
}
int64_t unpack_vector(const uint8_t* src, const float* padded, int bits, float* dst,
                      int64_t groups, int64_t begin, int64_t stop) {
  if (best_isa() == Isa::kBase || begin >= stop) return begin;
  unpack_f32_avx2(src, padded, bits, dst, groups, begin, stop);
  return stop;
}
#endif

// planes: (bits, ceil(n / 8)) uint8. levels: 1-D, ascending, y's dtype.
at::Tensor level_code_pack_cpu(const at::Tensor& y, const at::Tensor& levels) {
  TORCH_CHECK(levels.dim() == 1 && levels.numel() >= 1 && levels.numel() <= kMaxLevels,
              "ftprop_cuda level codes: levels must be a 1-D tensor of 1 to ", kMaxLevels,
              " values; got shape ", levels.sizes());
  TORCH_CHECK(levels.scalar_type() == y.scalar_type(),
              "ftprop_cuda level codes: levels must have y's dtype (", y.scalar_type(), "); got ",
              levels.scalar_type());
  TORCH_CHECK(at::isFloatingType(y.scalar_type()),
              "ftprop_cuda level codes: y must be floating point; got ", y.scalar_type());
  const int64_t count = levels.numel();
  const int bits = code_bits_of(count + 1);
  const at::Tensor flat = y.contiguous().view(-1);
  const int64_t n = flat.numel();
  const int64_t groups = (n + 7) / 8;
  at::Tensor planes = at::empty({bits, groups}, y.options().dtype(at::kByte));
  if (n == 0) return planes;
  uint8_t* out = planes.mutable_data_ptr<uint8_t>();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, y.scalar_type(), "level_code_pack", [&] {
    using opmath_t = at::opmath_type<scalar_t>;
    const at::Tensor lv = levels.contiguous();
    std::vector<opmath_t> table(count);
    for (int64_t l = 0; l < count; ++l) table[l] = static_cast<opmath_t>(lv.const_data_ptr<scalar_t>()[l]);
    const scalar_t* src = flat.const_data_ptr<scalar_t>();
    const int64_t whole = n / 8;
    at::parallel_for(0, groups, 4096, [&](int64_t begin, int64_t end) {
      begin = pack_vector(src, table.data(), count, bits, out, groups, begin, std::min(end, whole));
      pack_scalar(src, n, table.data(), count, bits, out, groups, begin, end);
    });
  });
  return planes;
}

// out[e] = table[code of element e] for e < n: a flat tensor of table's dtype.
at::Tensor level_code_unpack_cpu(const at::Tensor& planes, const at::Tensor& table, int64_t n) {
  TORCH_CHECK(planes.scalar_type() == at::kByte && planes.dim() == 2 && planes.is_contiguous(),
              "ftprop_cuda level codes: planes must be a contiguous 2-D uint8 tensor");
  TORCH_CHECK(table.dim() == 1 && table.numel() >= 2 && table.numel() <= kMaxLevels + 1,
              "ftprop_cuda level codes: table must be a 1-D tensor of 2 to ", kMaxLevels + 1,
              " values");
  TORCH_CHECK(at::isFloatingType(table.scalar_type()),
              "ftprop_cuda level codes: table must be floating point; got ", table.scalar_type());
  TORCH_CHECK(n >= 0 && planes.size(1) == (n + 7) / 8,
              "ftprop_cuda level codes: planes has ", planes.size(1), " bytes per plane, ", n,
              " codes need ", (n + 7) / 8);
  const int bits = static_cast<int>(planes.size(0));
  TORCH_CHECK(bits == code_bits_of(table.numel()),
              "ftprop_cuda level codes: ", bits, " planes for a table of ", table.numel(),
              " values (expected ", code_bits_of(table.numel()), ")");
  at::Tensor out = at::empty({n}, table.options());
  if (n == 0) return out;
  const int64_t groups = planes.size(1);
  const uint8_t* src = planes.const_data_ptr<uint8_t>();
  const int64_t last_entry = table.numel() - 1;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, table.scalar_type(), "level_code_unpack", [&] {
    const at::Tensor tv = table.contiguous();
    const scalar_t* t = tv.const_data_ptr<scalar_t>();
    scalar_t* dst = out.mutable_data_ptr<scalar_t>();
    // every code a plane can hold reads an entry: the table padded with its last one (the NaN)
    std::vector<scalar_t> padded(std::max<int64_t>(8, int64_t{1} << bits), t[last_entry]);
    std::copy(t, t + table.numel(), padded.begin());
    const int64_t whole = n / 8;
    at::parallel_for(0, groups, 4096, [&](int64_t begin, int64_t end) {
      begin = unpack_vector(src, padded.data(), bits, dst, groups, begin, std::min(end, whole));
      unpack_scalar(src, n, t, last_entry, bits, dst, groups, begin, end);
    });
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(ftprop_cuda, CPU, m) {
  m.impl("_level_code_pack", &level_code_pack_cpu);
  m.impl("_level_code_unpack", &level_code_unpack_cpu);
}

}  // namespace cpu
}  // namespace ftprop
