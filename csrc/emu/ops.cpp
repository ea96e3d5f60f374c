// The ops of ftprop_cuda on the emulated CUDA kernels, registered as ftprop_emu::* (a second
// registration of ftprop_cuda's CUDA kernels would clash with the real one): the same *_impl
// host code as both devices, with EmuLoops. Built by tests/test_cuda_emulation.py only.
#include <torch/library.h>

#include <tuple>
#include <vector>

#include "../cpu/loops.h"
#include "../cuda/pool_kernels.h"
#include "../elementwise_ops.h"
#include "launch.h"

namespace ftprop {
namespace emu {
namespace {

static_assert(cuda::kCodeBlock == cpu::kBlock, "one code layout on both devices");

at::Tensor step(const at::Tensor& z, c10::string_view rule, bool zero_one, bool grad_scale) {
  return step_forward_impl<EmuLoops>(z, rule, zero_one);
}

at::Tensor step_backward(const at::Tensor& grad, const at::Tensor& z, c10::string_view rule,
                         bool zero_one, bool grad_scale) {
  return step_backward_impl<EmuLoops>(grad, z, rule, zero_one, grad_scale);
}

std::tuple<at::Tensor, at::Tensor> step_saved(const at::Tensor& z, c10::string_view rule,
                                              bool zero_one, bool grad_scale) {
  return step_saved_impl<EmuLoops>(z, rule, zero_one);
}

at::Tensor step_backward_saved(const at::Tensor& grad, const at::Tensor& state,
                               c10::string_view rule, bool zero_one, bool grad_scale) {
  return step_backward_saved_impl<EmuLoops>(grad, state, rule, grad_scale);
}

at::Tensor staircase(const at::Tensor& z, int64_t steps, double lo, double hi,
                     c10::string_view rule, bool grad_scale) {
  return staircase_forward_impl<EmuLoops>(z, steps, lo, hi, rule);
}

at::Tensor staircase_backward(const at::Tensor& grad, const at::Tensor& z, int64_t steps,
                              double lo, double hi, c10::string_view rule, bool grad_scale) {
  return staircase_backward_impl<EmuLoops>(grad, z, steps, lo, hi, rule, grad_scale);
}

std::tuple<at::Tensor, at::Tensor> staircase_saved(const at::Tensor& z, int64_t steps, double lo,
                                                   double hi, c10::string_view rule,
                                                   bool grad_scale) {
  return staircase_saved_impl<EmuLoops>(z, steps, lo, hi, rule);
}

at::Tensor staircase_backward_saved(const at::Tensor& grad, const at::Tensor& state,
                                    int64_t steps, double lo, double hi, c10::string_view rule,
                                    bool grad_scale) {
  return staircase_backward_saved_impl<EmuLoops>(grad, state, steps, lo, hi, rule, grad_scale);
}

// The launcher of the pool-offset kernels (cuda/pool_kernels.h: arguments in, out, ...; one
// output element per work item), with the write check of EmuLoops around each launch.
struct PoolLauncher {
  using Guard = emu::Guard;

  template <class K, typename In, typename Out, typename... A>
  static void launch(int64_t items, In in, Out* out, A... args) {
    WriteCheck check({{out, items, sizeof(Out), "out"}});
    Launcher::launch<K>(items, in, out, args...);
    check.verify();
  }
};

// pool_offsets.cu's ops: the same host code and kernel bodies on the emulated launcher.
at::Tensor pool_pack(const at::Tensor& indices, int64_t in_w, at::IntArrayRef kernel,
                     at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                     int64_t bits) {
  return cuda::pool_offsets_pack_impl<PoolLauncher>(indices, in_w, kernel, stride, padding,
                                                    dilation, bits);
}

at::Tensor pool_unpack(const at::Tensor& packed, at::IntArrayRef size, int64_t in_w,
                       at::IntArrayRef kernel, at::IntArrayRef stride, at::IntArrayRef padding,
                       at::IntArrayRef dilation, int64_t bits) {
  return cuda::pool_offsets_unpack_impl<PoolLauncher>(packed, size, in_w, kernel, stride,
                                                      padding, dilation, bits);
}

// pool_offsets.h's functions one by one, as the CUDA kernels call them: [offset_of_delta(d),
// pool_offset_of(index, e), pool_index_of(offset, e)] for each (d, index, e, offset) row.
std::vector<int64_t> pool_codec_functions(at::IntArrayRef size, int64_t in_w,
                                          at::IntArrayRef kernel, at::IntArrayRef stride,
                                          at::IntArrayRef padding, at::IntArrayRef dilation,
                                          int64_t bits, at::IntArrayRef rows) {
  const PoolGeometry g = pool_geometry(size, in_w, kernel, stride, padding, dilation, bits);
  TORCH_CHECK_VALUE(rows.size() % 4 == 0, "ftprop_emu.pool_codec_functions: rows of 4 values");
  std::vector<int64_t> out;
  for (size_t r = 0; r < rows.size(); r += 4) {
    const auto offset = static_cast<uint8_t>(rows[r + 3]);
    out.push_back(offset_of_delta(rows[r], g));
    out.push_back(pool_offset_of(rows[r + 1], rows[r + 2], g));
    out.push_back(pool_index_of(offset, rows[r + 2], g));
  }
  return out;
}

// blocks = 0: the real grid formula with `sms` SMs; else a grid of blocks x threads.
void configure(int64_t blocks, int64_t threads, int64_t sms, int64_t reported_grid,
               bool log_writes) {
  TORCH_CHECK_VALUE(blocks >= 0 && sms >= 1 && reported_grid >= 0 && (blocks == 0 || threads >= 1),
                    "ftprop_emu.configure: bad grid blocks=", blocks, " threads=", threads,
                    " sms=", sms, " reported_grid=", reported_grid);
  config() = Config{blocks, threads, static_cast<int>(sms), reported_grid, log_writes};
  stats() = Stats{};
}

// launches, items / blocks / threads of the last launch, max grid-stride passes, writes checked,
// guards built (since configure()).
std::vector<int64_t> get_stats() {
  const Stats& s = stats();
  return {s.launches, s.items, s.blocks, s.threads, s.max_passes, s.writes_checked, s.guards};
}

}  // namespace

TORCH_LIBRARY(ftprop_emu, m) {
  m.def("step(Tensor z, str rule, bool zero_one, bool grad_scale) -> Tensor", &step);
  m.def("staircase(Tensor z, int steps, float lo, float hi, str rule, bool grad_scale) -> Tensor",
        &staircase);
  m.def("_step_backward(Tensor grad, Tensor z, str rule, bool zero_one, bool grad_scale) -> Tensor",
        &step_backward);
  m.def(
      "_staircase_backward(Tensor grad, Tensor z, int steps, float lo, float hi, str rule, "
      "bool grad_scale) -> Tensor",
      &staircase_backward);
  m.def("_step_saved(Tensor z, str rule, bool zero_one, bool grad_scale) -> (Tensor, Tensor)",
        &step_saved);
  m.def(
      "_step_backward_saved(Tensor grad, Tensor state, str rule, bool zero_one, bool grad_scale) "
      "-> Tensor",
      &step_backward_saved);
  m.def(
      "_staircase_saved(Tensor z, int steps, float lo, float hi, str rule, bool grad_scale) -> "
      "(Tensor, Tensor)",
      &staircase_saved);
  m.def(
      "_staircase_backward_saved(Tensor grad, Tensor state, int steps, float lo, float hi, "
      "str rule, bool grad_scale) -> Tensor",
      &staircase_backward_saved);
  m.def("configure(int blocks, int threads, int sms, int reported_grid, bool log_writes) -> ()",
        &configure);
  m.def("stats() -> int[]", &get_stats);
  m.def(
      "_pool_offsets_pack(Tensor indices, int in_w, int[2] kernel, int[2] stride, int[2] padding, "
      "int[2] dilation, int bits) -> Tensor",
      &pool_pack);
  m.def(
      "_pool_offsets_unpack(Tensor packed, int[] size, int in_w, int[2] kernel, int[2] stride, "
      "int[2] padding, int[2] dilation, int bits) -> Tensor",
      &pool_unpack);
  m.def(
      "pool_codec_functions(int[] size, int in_w, int[2] kernel, int[2] stride, int[2] padding, "
      "int[2] dilation, int bits, int[] rows) -> int[]",
      &pool_codec_functions);
}

}  // namespace emu
}  // namespace ftprop
