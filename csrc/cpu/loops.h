// Elementwise CPU loops: at::parallel_for over contiguous buffers, each chunk a plain loop that
// the compiler vectorises (the per-element math in ftprop.h is branch-free for that reason).
//
// Every loop is compiled three times, for AVX-512, AVX2+FMA and baseline x86-64, and the widest
// version the processor has is chosen at run time, so the build runs on any x86-64. Large outputs
// ask the kernel for 2 MB pages before first touch: on Linux a fresh 64 MB output otherwise
// costs more in 4 KB page faults than in memory bandwidth (see README, "CPU performance").
#pragma once

#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>

#include <cstdint>

#include "../ftprop.h"

#if defined(__linux__)
#include <sys/mman.h>
#endif

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define FTPROP_X86_DISPATCH 1
#define FTPROP_TARGET_AVX2 __attribute__((target("avx2,fma")))
#define FTPROP_TARGET_AVX512 \
  __attribute__((target("avx512f,avx512vl,avx512bw,avx512dq,avx2,fma,prefer-vector-width=512")))
#else
#define FTPROP_X86_DISPATCH 0
#define FTPROP_TARGET_AVX2
#define FTPROP_TARGET_AVX512
#endif

namespace ftprop {
namespace cpu {

// Elements per task: large enough that thread start-up is amortised on small tensors.
constexpr int64_t kGrain = 32768;
// Elements per inner block of the code loops (codes are staged in a stack buffer).
constexpr int64_t kBlock = 512;
static_assert(kBlock % 8 == 0, "a whole block fills whole code bytes");
// Outputs from this size up get 2 MB pages.
constexpr size_t kHugePageMin = size_t(4) << 20;

// The widest instruction set the loops were compiled for that this processor has.
enum class Isa { kBase, kAvx2, kAvx512 };

inline Isa best_isa() {
#if FTPROP_X86_DISPATCH
  static const Isa isa = [] {
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
        __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq")) {
      return Isa::kAvx512;
    }
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
      return Isa::kAvx2;
    }
    return Isa::kBase;
  }();
  return isa;
#else
  return Isa::kBase;
#endif
}

// The loop bodies, instantiated once per target below. They must be inlined into the target
// functions: an out-of-line body is compiled for baseline x86-64 whatever its caller's target
// (GCC did that for encode/decode, which then ran scalar, with std::ceil a library call).
#if defined(__GNUC__)
#define FTPROP_BODY static inline __attribute__((always_inline))
#else
#define FTPROP_BODY static inline
#endif

struct Body {
  template <typename scalar_t, typename F>
  FTPROP_BODY void map1(const scalar_t* in, scalar_t* out, int64_t b, int64_t e, const F& f_ref) {
    using opmath_t = at::opmath_type<scalar_t>;
    const F f = f_ref;  // a local copy: its fields become loop invariants, not aliased loads
    for (int64_t i = b; i < e; ++i) {
      out[i] = static_cast<scalar_t>(f(static_cast<opmath_t>(in[i])));
    }
  }

  template <typename scalar_t, typename F>
  FTPROP_BODY void map2(const scalar_t* a, const scalar_t* c, scalar_t* out, int64_t b,
                          int64_t e, const F& f_ref) {
    using opmath_t = at::opmath_type<scalar_t>;
    const F f = f_ref;  // a local copy: its fields become loop invariants, not aliased loads
    for (int64_t i = b; i < e; ++i) {
      out[i] = static_cast<scalar_t>(f(static_cast<opmath_t>(a[i]), static_cast<opmath_t>(c[i])));
    }
  }

  // Code layout of the saved state, the same on every device (cuda/kernels.h packs it too): the
  // tensor is cut in blocks of kBlock elements, the last one possibly shorter. A block of len
  // elements takes W = ceil(len / kPer) code bytes, and its element j + k W (j < W, k < kPer)
  // sits at bits [k kBits, (k + 1) kBits) of byte j. Packing and unpacking then read and write
  // contiguous runs, which vectorises; consecutive elements in one byte would not.

  // Elements [b, e), b a multiple of kBlock: forward values plus codes.
  template <int kBits, typename scalar_t, typename F>
  FTPROP_BODY void encode(const scalar_t* in, scalar_t* out, uint8_t* code, int64_t b,
                          int64_t e, const F& f_ref) {
    using opmath_t = at::opmath_type<scalar_t>;
    const F f = f_ref;  // a local copy: its fields become loop invariants, not aliased loads
    constexpr int kPer = 8 / kBits;
    // The codes of one block as opmath values (f.code), converted while packing: one element
    // width per loop keeps the vector registers from spilling.
    opmath_t staged[kBlock];
    for (int64_t s = b; s < e; s += kBlock) {
      const int64_t len = e - s < kBlock ? e - s : kBlock;
      const int64_t w = (len + kPer - 1) / kPer;
      for (int64_t k = 0; k < len; ++k) {
        const opmath_t v = static_cast<opmath_t>(in[s + k]);
        out[s + k] = static_cast<scalar_t>(f(v));
        staged[k] = f.code(v);
      }
      for (int64_t k = len; k < w * kPer; ++k) {
        staged[k] = opmath_t(0);
      }
      uint8_t* dst = code + s / kPer;
      if (w == kBlock / kPer) {  // a whole block: the byte count is a compile-time constant
        pack<kBits, kBlock / kPer>(staged, dst, w);
      } else {
        pack<kBits, 0>(staged, dst, w);
      }
    }
  }

  template <int kBits, int64_t kW, typename opmath_t>
  FTPROP_BODY void pack(const opmath_t* staged, uint8_t* dst, int64_t w_runtime) {
    constexpr int kPer = 8 / kBits;
    const int64_t w = kW > 0 ? kW : w_runtime;
    for (int64_t j = 0; j < w; ++j) {
      uint32_t byte = 0;
      for (int k = 0; k < kPer; ++k) {
        byte |= static_cast<uint32_t>(code_byte(staged[j + k * w])) << (k * kBits);
      }
      dst[j] = static_cast<uint8_t>(byte);
    }
  }

  template <int kBits, typename scalar_t, typename F>
  FTPROP_BODY void decode(const scalar_t* g, const uint8_t* code, scalar_t* out, int64_t b,
                          int64_t e, const F& f_ref) {
    using opmath_t = at::opmath_type<scalar_t>;
    const F f = f_ref;  // a local copy: its fields become loop invariants, not aliased loads
    constexpr int kPer = 8 / kBits;
    constexpr uint32_t kMask = (1u << kBits) - 1u;
    opmath_t staged[kBlock];  // the block's codes as opmath values, as in encode
    for (int64_t s = b; s < e; s += kBlock) {
      const int64_t len = e - s < kBlock ? e - s : kBlock;
      const int64_t w = (len + kPer - 1) / kPer;
      const uint8_t* src = code + s / kPer;
      for (int k = 0; k < kPer; ++k) {  // fills w * kPer >= len entries; the padding is unused
        for (int64_t j = 0; j < w; ++j) {
          staged[k * w + j] = static_cast<opmath_t>((uint32_t{src[j]} >> (k * kBits)) & kMask);
        }
      }
      for (int64_t k = 0; k < len; ++k) {
        out[s + k] = static_cast<scalar_t>(f(static_cast<opmath_t>(g[s + k]), staged[k]));
      }
    }
  }
};

// One function per (body, target); the AVX2 copy only differs in its target attribute.
template <typename scalar_t, typename F>
FTPROP_TARGET_AVX2 void map1_avx2(const scalar_t* in, scalar_t* out, int64_t b, int64_t e,
                                  const F& f) {
  Body::map1(in, out, b, e, f);
}
template <typename scalar_t, typename F>
void map1_base(const scalar_t* in, scalar_t* out, int64_t b, int64_t e, const F& f) {
  Body::map1(in, out, b, e, f);
}
template <typename scalar_t, typename F>
FTPROP_TARGET_AVX2 void map2_avx2(const scalar_t* a, const scalar_t* c, scalar_t* out, int64_t b,
                                  int64_t e, const F& f) {
  Body::map2(a, c, out, b, e, f);
}
template <typename scalar_t, typename F>
void map2_base(const scalar_t* a, const scalar_t* c, scalar_t* out, int64_t b, int64_t e,
               const F& f) {
  Body::map2(a, c, out, b, e, f);
}
template <int kBits, typename scalar_t, typename F>
FTPROP_TARGET_AVX2 void encode_avx2(const scalar_t* in, scalar_t* out, uint8_t* code, int64_t b,
                                    int64_t e, const F& f) {
  Body::encode<kBits>(in, out, code, b, e, f);
}
template <int kBits, typename scalar_t, typename F>
void encode_base(const scalar_t* in, scalar_t* out, uint8_t* code, int64_t b, int64_t e,
                 const F& f) {
  Body::encode<kBits>(in, out, code, b, e, f);
}
template <int kBits, typename scalar_t, typename F>
FTPROP_TARGET_AVX2 void decode_avx2(const scalar_t* g, const uint8_t* code, scalar_t* out,
                                    int64_t b, int64_t e, const F& f) {
  Body::decode<kBits>(g, code, out, b, e, f);
}
template <int kBits, typename scalar_t, typename F>
void decode_base(const scalar_t* g, const uint8_t* code, scalar_t* out, int64_t b, int64_t e,
                 const F& f) {
  Body::decode<kBits>(g, code, out, b, e, f);
}

template <typename scalar_t, typename F>
FTPROP_TARGET_AVX512 void map1_avx512(const scalar_t* in, scalar_t* out, int64_t b, int64_t e,
                                    const F& f) {
  Body::map1(in, out, b, e, f);
}
template <typename scalar_t, typename F>
FTPROP_TARGET_AVX512 void map2_avx512(const scalar_t* a, const scalar_t* c, scalar_t* out,
                                    int64_t b, int64_t e, const F& f) {
  Body::map2(a, c, out, b, e, f);
}
template <int kBits, typename scalar_t, typename F>
FTPROP_TARGET_AVX512 void encode_avx512(const scalar_t* in, scalar_t* out, uint8_t* code,
                                      int64_t b, int64_t e, const F& f) {
  Body::encode<kBits>(in, out, code, b, e, f);
}
template <int kBits, typename scalar_t, typename F>
FTPROP_TARGET_AVX512 void decode_avx512(const scalar_t* g, const uint8_t* code, scalar_t* out,
                                      int64_t b, int64_t e, const F& f) {
  Body::decode<kBits>(g, code, out, b, e, f);
}

struct Loops {
  // The CPU has no current device to select: elementwise_ops.h's guard is a no-op here.
  struct Guard {};
  static Guard guard(const at::Tensor&) { return {}; }

  // An uninitialised tensor shaped like `like`, on 2 MB pages when large (Linux, best effort).
  static at::Tensor empty(const at::Tensor& like) {
    at::Tensor out = at::empty(like.sizes(), like.options());
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    const size_t bytes = out.nbytes();
    if (bytes >= kHugePageMin) {
      constexpr uintptr_t kHuge = uintptr_t(2) << 20;
      const uintptr_t p = reinterpret_cast<uintptr_t>(out.data_ptr());
      const uintptr_t start = (p + kHuge - 1) & ~(kHuge - 1);
      const uintptr_t end = (p + bytes) & ~(kHuge - 1);
      if (end > start) {
        madvise(reinterpret_cast<void*>(start), end - start, MADV_HUGEPAGE);  // a hint only
      }
    }
#endif
    return out;
  }

  template <typename scalar_t, typename F>
  static void map1(const scalar_t* in, scalar_t* out, int64_t n, const F& f) {
    const Isa isa = best_isa();
    at::parallel_for(0, n, kGrain, [&](int64_t b, int64_t e) {
      isa == Isa::kAvx512 ? map1_avx512(in, out, b, e, f)
      : isa == Isa::kAvx2 ? map1_avx2(in, out, b, e, f)
                          : map1_base(in, out, b, e, f);
    });
  }

  template <typename scalar_t, typename F>
  static void map2(const scalar_t* a, const scalar_t* c, scalar_t* out, int64_t n, const F& f) {
    const Isa isa = best_isa();
    at::parallel_for(0, n, kGrain, [&](int64_t b, int64_t e) {
      isa == Isa::kAvx512 ? map2_avx512(a, c, out, b, e, f)
      : isa == Isa::kAvx2 ? map2_avx2(a, c, out, b, e, f)
                          : map2_base(a, c, out, b, e, f);
    });
  }

  template <int kBits, typename scalar_t, typename F>
  static void encode(const scalar_t* in, scalar_t* out, uint8_t* code, int64_t n, const F& f) {
    if constexpr (kBits == 0) {
      map1(in, out, n, f);
    } else {
      const Isa isa = best_isa();
      // Chunks in whole blocks, so that no two threads write the same code byte.
      const int64_t blocks = (n + kBlock - 1) / kBlock;
      at::parallel_for(0, blocks, kGrain / kBlock, [&](int64_t b, int64_t e) {
        const int64_t lo = b * kBlock, hi = e * kBlock < n ? e * kBlock : n;
        isa == Isa::kAvx512 ? encode_avx512<kBits>(in, out, code, lo, hi, f)
        : isa == Isa::kAvx2 ? encode_avx2<kBits>(in, out, code, lo, hi, f)
                            : encode_base<kBits>(in, out, code, lo, hi, f);
      });
    }
  }

  template <int kBits, typename scalar_t, typename F>
  static void decode(const scalar_t* g, const uint8_t* code, scalar_t* out, int64_t n,
                     const F& f) {
    if constexpr (kBits == 0) {
      map1(g, out, n, WithoutCode<F>{f});
    } else {
      const Isa isa = best_isa();
      const int64_t blocks = (n + kBlock - 1) / kBlock;
      at::parallel_for(0, blocks, kGrain / kBlock, [&](int64_t b, int64_t e) {
        const int64_t lo = b * kBlock, hi = e * kBlock < n ? e * kBlock : n;
        isa == Isa::kAvx512 ? decode_avx512<kBits>(g, code, out, lo, hi, f)
        : isa == Isa::kAvx2 ? decode_avx2<kBits>(g, code, out, lo, hi, f)
                            : decode_base<kBits>(g, code, out, lo, hi, f);
      });
    }
  }
};

}  // namespace cpu
}  // namespace ftprop
