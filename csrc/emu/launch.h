// Host emulation of the CUDA launches, for the test suite only (tests/test_cuda_emulation.py
// builds it; setup.py does not). The kernel bodies of cuda/kernels.h run unchanged, compiled by
// the host compiler: the launcher computes the grid as the CUDA one does, or takes one from the
// test, and runs every (block, thread) of it in turn with those indices. Optionally each store
// is logged, and EmuLoops checks after every launch that each output element and code byte was
// written exactly once and nothing else was.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <cstdint>
#include <utility>
#include <vector>

#include "../cuda/kernels.h"

namespace ftprop {
namespace emu {

struct Config {
  int64_t blocks = 0;           // > 0: a grid of this many blocks; 0: cuda::grid_blocks
  int64_t threads = 0;          // threads per block with `blocks`; the real grid has kThreads
  int sms = 1;                  // the SM count the real grid formula sees
  int64_t reported_grid = 0;    // > 0: gridDim the threads see instead of the true one
  bool log_writes = false;
};

// What the launches did since the last configure().
struct Stats {
  int64_t launches = 0;
  int64_t items = 0;      // of the last launch
  int64_t blocks = 0;     // of the last launch
  int64_t threads = 0;    // of the last launch
  int64_t max_passes = 0; // most grid-stride passes of one thread, over all launches
  int64_t writes_checked = 0;
  int64_t guards = 0;
};

inline Config& config() {
  static Config c;
  return c;
}

inline Stats& stats() {
  static Stats s;
  return s;
}

// Addresses stored by the current launch, when logging.
inline std::vector<const void*>*& write_log() {
  static std::vector<const void*>* log = nullptr;
  return log;
}

// The thread context of cuda/kernels.h for one emulated (block, thread).
struct EmuThread {
  int64_t b, t, bdim, gdim;
  std::vector<const void*>* log;
  unsigned block() const { return static_cast<unsigned>(b); }
  unsigned thread() const { return static_cast<unsigned>(t); }
  unsigned block_dim() const { return static_cast<unsigned>(bdim); }
  unsigned grid_dim() const { return static_cast<unsigned>(gdim); }
  template <typename T>
  void store(T* p, T v) const {
    *p = v;
    if (log != nullptr) {
      log->push_back(p);
    }
  }
};

// Stands in for CUDAGuard, which fails on a tensor of another device type (here: not the CPU);
// counts how often it was built so that a test can see when the checks came first.
struct Guard {
  explicit Guard(c10::Device device) {
    TORCH_CHECK(device.is_cpu(), "emulated device guard initialized with non-CPU device ",
                device);
    ++stats().guards;
  }
};

struct Launcher {
  using Guard = emu::Guard;

  template <class K, typename... A>
  static void launch(int64_t items, A... args) {
    const Config& c = config();
    const int64_t threads = c.blocks > 0 ? c.threads : cuda::kThreads;
    const int64_t blocks = c.blocks > 0 ? c.blocks : cuda::grid_blocks(items, c.sms);
    TORCH_CHECK(threads > 0, "ftprop_emu: threads per block must be positive");
    const int64_t grid = c.reported_grid > 0 ? c.reported_grid : blocks;
    for (int64_t b = 0; b < blocks; ++b) {
      for (int64_t t = 0; t < threads; ++t) {
        K::run(EmuThread{b, t, threads, grid, write_log()}, args...);
      }
    }
    Stats& s = stats();
    ++s.launches;
    s.items = items;
    s.blocks = blocks;
    s.threads = threads;
    const int64_t passes = (items + blocks * threads - 1) / (blocks * threads);
    s.max_passes = passes > s.max_passes ? passes : s.max_passes;
  }
};

// The buffers one launch must fill, each element exactly once.
struct Region {
  const void* base;
  int64_t count;
  int64_t elem_size;
  const char* name;
};

// Logs the stores of one launch (when configured) and checks them against the regions.
class WriteCheck {
 public:
  explicit WriteCheck(std::vector<Region> regions) : regions_(std::move(regions)) {
    if (config().log_writes) {
      write_log() = &log_;
    }
  }
  ~WriteCheck() { write_log() = nullptr; }

  void verify() {
    if (!config().log_writes) {
      return;
    }
    write_log() = nullptr;
    std::vector<std::vector<int>> counts;
    for (const Region& r : regions_) {
      counts.emplace_back(static_cast<size_t>(r.count), 0);
    }
    for (const void* p : log_) {
      const auto addr = reinterpret_cast<uintptr_t>(p);
      bool inside = false;
      for (size_t k = 0; k < regions_.size() && !inside; ++k) {
        const auto base = reinterpret_cast<uintptr_t>(regions_[k].base);
        const auto end = base + static_cast<uintptr_t>(regions_[k].count * regions_[k].elem_size);
        if (addr >= base && addr < end) {
          TORCH_CHECK((addr - base) % regions_[k].elem_size == 0, "ftprop_emu: a store into ",
                      regions_[k].name, " is not aligned to an element");
          ++counts[k][(addr - base) / regions_[k].elem_size];
          inside = true;
        }
      }
      TORCH_CHECK(inside, "ftprop_emu: a store outside every output buffer");
    }
    for (size_t k = 0; k < regions_.size(); ++k) {
      for (int64_t i = 0; i < regions_[k].count; ++i) {
        TORCH_CHECK(counts[k][i] == 1, "ftprop_emu: ", regions_[k].name, "[", i, "] written ",
                    counts[k][i], " times (of ", regions_[k].count, ")");
      }
    }
    stats().writes_checked += static_cast<int64_t>(log_.size());
  }

 private:
  std::vector<Region> regions_;
  std::vector<const void*> log_;
};

// The Loops policy of elementwise_ops.h for the emulation: CUDA's LoopsT on the host launcher,
// each launch wrapped in a write check.
struct EmuLoops : cuda::LoopsT<Launcher> {
  using Base = cuda::LoopsT<Launcher>;

  template <typename scalar_t, typename F>
  static void map1(const scalar_t* in, scalar_t* out, int64_t n, const F& f) {
    WriteCheck check({{out, n, sizeof(scalar_t), "out"}});
    Base::map1(in, out, n, f);
    check.verify();
  }

  template <typename scalar_t, typename F>
  static void map2(const scalar_t* a, const scalar_t* b, scalar_t* out, int64_t n, const F& f) {
    WriteCheck check({{out, n, sizeof(scalar_t), "out"}});
    Base::map2(a, b, out, n, f);
    check.verify();
  }

  template <int kBits, typename scalar_t, typename F>
  static void encode(const scalar_t* in, scalar_t* out, uint8_t* code, int64_t n, const F& f) {
    const int64_t nbytes = kBits == 0 ? 0 : (n * kBits + 7) / 8;
    WriteCheck check({{out, n, sizeof(scalar_t), "out"}, {code, nbytes, 1, "code"}});
    Base::template encode<kBits>(in, out, code, n, f);
    check.verify();
  }

  template <int kBits, typename scalar_t, typename F>
  static void decode(const scalar_t* g, const uint8_t* code, scalar_t* out, int64_t n,
                     const F& f) {
    WriteCheck check({{out, n, sizeof(scalar_t), "out"}});
    Base::template decode<kBits>(g, code, out, n, f);
    check.verify();
  }
};

}  // namespace emu
}  // namespace ftprop
