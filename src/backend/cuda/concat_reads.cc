// CudaBackend::concat_norm_shortcut: the UNet decoder's [h | skip] read in place by its two
// consumers, the group norm (group_norm_vec_concat) and the 1x1 shortcut GEMM (our Hopper GEMM
// with a two-source A operand); where either kernel does not apply, one concat_channels serves it.
#include <cstdlib>

#include "backend/cuda/cuda_backend_impl.h"
#include "backend/cuda/gemm.h"
#include "backend/cuda/group_norm_vec.h"

namespace sd::cuda {

namespace {

// SDSERVE_CUDA_CONCAT_READS=0: always concatenate (the path before session 12); read per call.
bool concat_reads_enabled() {
  const char* env = std::getenv("SDSERVE_CUDA_CONCAT_READS");
  return !(env && env[0] == '0');
}

}  // namespace

Backend::ConcatReads CudaBackend::concat_norm_shortcut(const Tensor& a, const Tensor& b, const Tensor& gamma,
                                                       const Tensor& beta, int groups, float eps, bool silu,
                                                       const Tensor& w, const Tensor& bias) {
  check_on_device(a, "concat_norm_shortcut");
  check_on_device(b, "concat_norm_shortcut");
  SD_ASSERT(a.ndim() >= 2 && a.ndim() == b.ndim() && a.dtype() == b.dtype(),
            "concat_norm_shortcut: " + a.describe() + " ++ " + b.describe());
  for (int i = 0; i + 1 < a.ndim(); ++i) {
    SD_ASSERT(a.dim(i) == b.dim(i), "concat_norm_shortcut: " + a.describe() + " ++ " + b.describe());
  }
  const int64_t ca = a.dim(-1), cb = b.dim(-1);
  SD_ASSERT(w.ndim() == 2 && w.dim(1) == ca + cb && w.dtype() == a.dtype(),
            "concat_norm_shortcut: w " + w.describe() + " for " + a.describe() + " ++ " + b.describe());
  Tensor joined;  // [..., ca + cb]: made at most once, only for a consumer that cannot read in place
  const auto concat = [&]() -> const Tensor& {
    if (!joined.defined()) joined = concat_channels(a, b);
    return joined;
  };
  const bool in_place = concat_reads_enabled() && a.dtype() != DType::kF32 && a.numel() > 0 && b.numel() > 0;
  ConcatReads out;

  // Group norm (+ SiLU) of [a | b] -> [..., ca + cb].
  if (in_place && vector_group_norm_enabled()) {
    Shape shape = a.shape();
    shape.back() = ca + cb;
    Tensor y = empty(shape, a.dtype());
    check_on_device(gamma, "concat_norm_shortcut");
    check_on_device(beta, "concat_norm_shortcut");
    SD_ASSERT(groups > 0 && (ca + cb) % groups == 0 && gamma.numel() == ca + cb && beta.numel() == ca + cb &&
                  gamma.dtype() == a.dtype() && beta.dtype() == a.dtype(),
              "concat_norm_shortcut: gamma " + gamma.describe() + " beta " + beta.describe() + ", " +
                  std::to_string(groups) + " groups for " + y.describe());
    if (group_norm_vec_concat(*this, a, b, gamma, beta, y, groups, eps, silu)) out.normed = y;
  }
  if (!out.normed.defined()) out.normed = group_norm(concat(), gamma, beta, groups, eps, silu);

  // Shortcut [a | b] w^T + bias -> [..., N]: our GEMM reads a and b through two tensor maps
  // where it timed faster than concat_channels + cuBLASLt (decided per shape, gemm_wgmma_choice.cc).
  if (in_place) {
    const int64_t m = a.numel() / ca;
    // The library plan as for a concatenated input from the allocator (256-byte aligned).
    if (GemmPlan* plan = linear_plan_rows(m, /*align_x=*/256, w, bias, Tensor())) {
      Shape shape = a.shape();
      shape.back() = w.dim(0);
      const auto library = [&] {
        const Tensor x = concat_channels(a, b);  // fresh each call: the timing includes the concat
        Tensor y = empty(shape, a.dtype());
        linear_library(x, w, bias, Tensor(), *plan, y);
        return y;
      };
      out.shortcut = linear_wgmma(a, w, bias, Tensor(), /*geglu=*/false, *plan, library, b);
    }
  }
  if (!out.shortcut.defined()) out.shortcut = linear(concat(), w, bias);
  return out;
}

}  // namespace sd::cuda
