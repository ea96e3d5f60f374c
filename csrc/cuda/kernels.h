// Bodies of the elementwise CUDA kernels and the Loops policy that launches them, written once
// for two compilers: nvcc builds them behind the __global__ entry of launch.cuh, and a host C++
// compiler builds them unchanged for the emulation in csrc/emu/ (tests/test_cuda_emulation.py),
// so this header includes no CUDA header.
//
// A kernel is a struct K with a static template run(th, args...) that one thread executes. The
// thread context th supplies the grid indices (th.block(), th.thread(), th.block_dim(),
// th.grid_dim(): blockIdx.x, threadIdx.x, blockDim.x, gridDim.x on a GPU) and performs every
// store to an output (th.store(p, v)), which lets the emulation log each write.
// A Launcher runs K over a grid sized for `items` work items:
//   Launcher::launch<K>(items, args...)   K::run(th, args...) for every thread of the grid
//   Launcher::Guard(device)               device guard, built once the op's checks have passed
#pragma once

#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/macros/Macros.h>

#include <algorithm>
#include <cstdint>

#include "../ftprop.h"

#if defined(__CUDACC__)
#define FTPROP_UNROLL _Pragma("unroll")
#else
#define FTPROP_UNROLL
#endif

namespace ftprop {
namespace cuda {

constexpr int kThreads = 256;
// Resident blocks per SM assumed where no occupancy query is made (the host emulation); on a GPU
// launch.cuh asks the runtime per kernel and device (cudaOccupancyMaxActiveBlocksPerMultiprocessor).
constexpr int kBlocksPerSm = 8;

// Elements per block of the saved-state code layout, the CPU's (cpu/loops.h, kBlock): a block
// of len elements takes W = ceil(len / kPer) code bytes and its element j + k W (j < W,
// k < kPer) sits at bits [k kBits, (k + 1) kBits) of byte j. A code is then the same bytes on
// both devices, and the threads of a warp, one per byte j, touch contiguous elements.
constexpr int64_t kCodeBlock = 512;

// Blocks for `items` work items: at most one full wave (every SM holding as many blocks as can be
// resident at once, `blocks_per_sm`), then the grid-stride loops cover the rest (and tensors past
// 2^31 elements with 64-bit indices). A wave, not a multiple of it: no partial last wave.
inline int64_t grid_blocks(int64_t items, int sms, int blocks_per_sm = kBlocksPerSm) {
  const int64_t max_blocks =
      static_cast<int64_t>(std::max(sms, 1)) * std::max(blocks_per_sm, 1);
  return std::max<int64_t>(1, std::min<int64_t>((items + kThreads - 1) / kThreads, max_blocks));
}

template <class Th>
C10_DEVICE inline int64_t first_item(const Th& th) {
  return static_cast<int64_t>(th.block()) * th.block_dim() + th.thread();
}

template <class Th>
C10_DEVICE inline int64_t grid_stride(const Th& th) {
  return static_cast<int64_t>(th.block_dim()) * th.grid_dim();
}

struct Map1 {
  template <class Th, typename scalar_t, typename F>
  C10_DEVICE static void run(const Th& th, const scalar_t* __restrict__ in,
                             scalar_t* __restrict__ out, int64_t n, F f) {
    using opmath_t = at::opmath_type<scalar_t>;
    const int64_t stride = grid_stride(th);
    for (int64_t i = first_item(th); i < n; i += stride) {
      th.store(out + i, static_cast<scalar_t>(f(static_cast<opmath_t>(in[i]))));
    }
  }
};

struct Map2 {
  template <class Th, typename scalar_t, typename F>
  C10_DEVICE static void run(const Th& th, const scalar_t* __restrict__ a,
                             const scalar_t* __restrict__ b, scalar_t* __restrict__ out,
                             int64_t n, F f) {
    using opmath_t = at::opmath_type<scalar_t>;
    const int64_t stride = grid_stride(th);
    for (int64_t i = first_item(th); i < n; i += stride) {
      th.store(out + i,
               static_cast<scalar_t>(f(static_cast<opmath_t>(a[i]), static_cast<opmath_t>(b[i]))));
    }
  }
};

// One thread per code byte: it computes the kPer elements of that byte and writes the byte
// whole, so the packing needs no atomics and is deterministic. (A warp-ballot version for 1-bit
// codes waits for a GPU measurement that shows the gap: benchmarks/NOTES.md.)
template <int kBits>
struct Encode {
  template <class Th, typename scalar_t, typename F>
  C10_DEVICE static void run(const Th& th, const scalar_t* __restrict__ in,
                             scalar_t* __restrict__ out, uint8_t* __restrict__ code, int64_t n,
                             F f) {
    using opmath_t = at::opmath_type<scalar_t>;
    constexpr int kPer = 8 / kBits;
    constexpr int64_t kBlockBytes = kCodeBlock / kPer;
    const int64_t nbytes = (n + kPer - 1) / kPer;
    const int64_t stride = grid_stride(th);
    for (int64_t b = first_item(th); b < nbytes; b += stride) {
      const int64_t start = b / kBlockBytes * kCodeBlock;  // the byte's code block
      const int64_t j = b % kBlockBytes;
      const int64_t len = n - start < kCodeBlock ? n - start : kCodeBlock;
      const int64_t w = (len + kPer - 1) / kPer;
      uint8_t byte = 0;
      FTPROP_UNROLL
      for (int k = 0; k < kPer; ++k) {
        const int64_t e = j + k * w;
        if (e < len) {
          const opmath_t v = static_cast<opmath_t>(in[start + e]);
          th.store(out + start + e, static_cast<scalar_t>(f(v)));
          byte |= static_cast<uint8_t>(code_byte(f.code(v)) << (k * kBits));
        }
      }
      th.store(code + b, byte);
    }
  }
};

template <int kBits>
struct Decode {
  template <class Th, typename scalar_t, typename F>
  C10_DEVICE static void run(const Th& th, const scalar_t* __restrict__ g,
                             const uint8_t* __restrict__ code, scalar_t* __restrict__ out,
                             int64_t n, F f) {
    using opmath_t = at::opmath_type<scalar_t>;
    constexpr int kPer = 8 / kBits;
    constexpr int64_t kBlockBytes = kCodeBlock / kPer;
    constexpr unsigned kMask = (1u << kBits) - 1u;
    const int64_t nbytes = (n + kPer - 1) / kPer;
    const int64_t stride = grid_stride(th);
    for (int64_t b = first_item(th); b < nbytes; b += stride) {
      const int64_t start = b / kBlockBytes * kCodeBlock;
      const int64_t j = b % kBlockBytes;
      const int64_t len = n - start < kCodeBlock ? n - start : kCodeBlock;
      const int64_t w = (len + kPer - 1) / kPer;
      const unsigned byte = code[b];
      FTPROP_UNROLL
      for (int k = 0; k < kPer; ++k) {
        const int64_t e = j + k * w;
        if (e < len) {
          const auto c = static_cast<opmath_t>((byte >> (k * kBits)) & kMask);
          const opmath_t gv = static_cast<opmath_t>(g[start + e]);
          th.store(out + start + e, static_cast<scalar_t>(f(gv, c)));
        }
      }
    }
  }
};

// The Loops policy of elementwise_ops.h on top of a Launcher: CUDA's (launch.cuh) or the host
// emulation's (csrc/emu/).
template <class Launcher>
struct LoopsT {
  using Guard = typename Launcher::Guard;

  static Guard guard(const at::Tensor& t) { return Guard(t.device()); }

  static at::Tensor empty(const at::Tensor& like) {
    return at::empty(like.sizes(), like.options());
  }

  template <typename scalar_t, typename F>
  static void map1(const scalar_t* in, scalar_t* out, int64_t n, const F& f) {
    Launcher::template launch<Map1>(n, in, out, n, f);
  }

  template <typename scalar_t, typename F>
  static void map2(const scalar_t* a, const scalar_t* b, scalar_t* out, int64_t n, const F& f) {
    Launcher::template launch<Map2>(n, a, b, out, n, f);
  }

  template <int kBits, typename scalar_t, typename F>
  static void encode(const scalar_t* in, scalar_t* out, uint8_t* code, int64_t n, const F& f) {
    if constexpr (kBits == 0) {
      map1(in, out, n, f);
    } else {
      const int64_t nbytes = (n + 8 / kBits - 1) / (8 / kBits);
      Launcher::template launch<Encode<kBits>>(nbytes, in, out, code, n, f);
    }
  }

  template <int kBits, typename scalar_t, typename F>
  static void decode(const scalar_t* g, const uint8_t* code, scalar_t* out, int64_t n,
                     const F& f) {
    if constexpr (kBits == 0) {
      map1(g, out, n, WithoutCode<F>{f});
    } else {
      const int64_t nbytes = (n + 8 / kBits - 1) / (8 / kBits);
      Launcher::template launch<Decode<kBits>>(nbytes, g, code, out, n, f);
    }
  }
};

}  // namespace cuda
}  // namespace ftprop
