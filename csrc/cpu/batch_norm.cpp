// Lean memory mode: a training-mode batch norm's output rebuilt in one pass from its input and
// the batch statistics its forward saved (ftprop_cuda/memory/batch_norm.py).
//
// Per channel alpha = invstd * weight and beta = fma(-mean, alpha, bias), then
// out = fma(x, alpha, beta): one rounding each, the arithmetic this torch build's contiguous
// float32 CPU batch norm was found to use (its vector multiply and add contracted into fused
// multiply-adds). That is not a documented contract, so the Python side uses this op only after
// comparing it bitwise with F.batch_norm in the running process, and recomputes the whole batch
// norm otherwise.
#include <ATen/Parallel.h>
#include <torch/library.h>
#include <torch/types.h>

#include <algorithm>
#include <cmath>
#include <optional>
#include <vector>

#include "loops.h"  // best_isa(), FTPROP_BODY and the target attributes

namespace ftprop {
namespace cpu {
namespace {

FTPROP_BODY void affine_body(const float* x, float* out, int64_t n, float alpha, float beta) {
  for (int64_t d = 0; d < n; ++d) out[d] = std::fma(x[d], alpha, beta);
}
FTPROP_TARGET_AVX512 void affine_avx512(const float* x, float* out, int64_t n, float a, float b) {
  affine_body(x, out, n, a, b);
}
FTPROP_TARGET_AVX2 void affine_avx2(const float* x, float* out, int64_t n, float a, float b) {
  affine_body(x, out, n, a, b);
}
void affine_base(const float* x, float* out, int64_t n, float a, float b) {
  affine_body(x, out, n, a, b);
}

void check_channel_vector(const at::Tensor& t, int64_t channels, const char* name) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == at::kFloat && t.dim() == 1 &&
                  t.size(0) == channels && t.is_contiguous(),
              "ftprop_cuda batch-norm rebuild: ", name,
              " must be a contiguous float32 CPU vector of one value per channel (", channels,
              ")");
}

at::Tensor batch_norm_rebuild_cpu(const at::Tensor& input, const at::Tensor& mean,
                                  const at::Tensor& invstd,
                                  const std::optional<at::Tensor>& weight,
                                  const std::optional<at::Tensor>& bias) {
  TORCH_CHECK(input.device().is_cpu() && input.scalar_type() == at::kFloat &&
                  input.dim() >= 2 && input.is_contiguous(),
              "ftprop_cuda batch-norm rebuild: input must be a contiguous float32 CPU tensor "
              "of at least 2 dimensions");
  const int64_t batch = input.size(0), channels = input.size(1);
  check_channel_vector(mean, channels, "mean");
  check_channel_vector(invstd, channels, "invstd");
  const bool has_w = weight.has_value() && weight->defined();
  const bool has_b = bias.has_value() && bias->defined();
  if (has_w) check_channel_vector(*weight, channels, "weight");
  if (has_b) check_channel_vector(*bias, channels, "bias");
  at::Tensor out = Loops::empty(input);
  const int64_t planes = batch * channels;
  if (input.numel() == 0) return out;
  const int64_t image = input.numel() / planes;
  std::vector<float> alpha(channels), beta(channels);
  const float* m = mean.const_data_ptr<float>();
  const float* s = invstd.const_data_ptr<float>();
  const float* w = has_w ? weight->const_data_ptr<float>() : nullptr;
  const float* b = has_b ? bias->const_data_ptr<float>() : nullptr;
  for (int64_t c = 0; c < channels; ++c) {
    alpha[c] = w ? s[c] * w[c] : s[c];
    beta[c] = std::fma(-m[c], alpha[c], b ? b[c] : 0.0f);
  }
  const float* xp = input.const_data_ptr<float>();
  float* op = out.mutable_data_ptr<float>();
  const Isa isa = best_isa();
  const int64_t grain = std::max<int64_t>(1, kGrain / std::max<int64_t>(image, 1));
  at::parallel_for(0, planes, grain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const int64_t c = i % channels;
      const float* src = xp + i * image;
      float* dst = op + i * image;
      isa == Isa::kAvx512 ? affine_avx512(src, dst, image, alpha[c], beta[c])
      : isa == Isa::kAvx2 ? affine_avx2(src, dst, image, alpha[c], beta[c])
                          : affine_base(src, dst, image, alpha[c], beta[c]);
    }
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(ftprop_cuda, CPU, m) {
  m.impl("_batch_norm_rebuild", &batch_norm_rebuild_cpu);
}

}  // namespace cpu
}  // namespace ftprop
