// Layer norm folded into the following linear: the load-time fold (fold_layer_norm_linear) and
// the portable default of Backend::layer_norm_linear (normalise without affine, then the linear
// on the folded weights). CUDA overrides the op with one GEMM that normalises in its epilogue.
#include <algorithm>
#include <cstddef>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "backend/backend.h"
#include "core/half.h"

namespace sd {

namespace {

// x as the compute dtype stores it (f16 / bf16 round to nearest even; f32 unchanged).
float round_to(DType dt, float x) {
  if (dt == DType::kF16) return f16_to_f32(f32_to_f16(x));
  if (dt == DType::kBF16) return bf16_to_f32(f32_to_bf16(x));
  return x;
}

// fn(r0, r1) over row ranges on up to 16 threads (load time: ~150 M weights for SD 1.5).
void parallel_rows(int64_t rows, int64_t cols, const std::function<void(int64_t, int64_t)>& fn) {
  const int64_t want = std::min<int64_t>({16, std::max(1u, std::thread::hardware_concurrency()),
                                          std::max<int64_t>(1, rows * cols / (int64_t{1} << 18))});
  if (want <= 1) return fn(0, rows);
  std::vector<std::thread> threads;
  const int64_t per = (rows + want - 1) / want;
  for (int64_t r0 = 0; r0 < rows; r0 += per) threads.emplace_back(fn, r0, std::min(rows, r0 + per));
  for (std::thread& t : threads) t.join();
}

}  // namespace

LayerNormLinear fold_layer_norm_linear(Backend& be, const Tensor& gamma, const Tensor& beta, float eps,
                                       const Tensor& w, const Tensor& bias) {
  LayerNormLinear f;
  if (!gamma.defined() || !beta.defined() || !w.defined()) return f;
  SD_ASSERT(w.ndim() == 2 && gamma.numel() == w.dim(1) && beta.numel() == w.dim(1) &&
                (!bias.defined() || bias.numel() == w.dim(0)),
            "fold_layer_norm_linear: gamma " + gamma.describe() + " beta " + beta.describe() + " w " + w.describe() +
                (bias.defined() ? " bias " + bias.describe() : ""));
  const int64_t n = w.dim(0), k = w.dim(1);
  const DType dt = w.dtype();
  const Tensor hw = be.download(w), hg = be.download(gamma), hb = be.download(beta);  // f32 host
  const Tensor hbias = bias.defined() ? be.download(bias) : Tensor();
  // w' already rounded to the compute dtype (its upload is exact), b', and the column sums of w'
  // exactly as the GEMM sees it, in f64.
  Tensor wf = Tensor::empty_host({n, k}, DType::kF32), bf = Tensor::empty_host({n}, DType::kF32);
  Tensor sums = Tensor::empty_host({n}, DType::kF32);
  const float *wp = hw.f32(), *gp = hg.f32(), *bp = hb.f32();
  parallel_rows(n, k, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      double shift = hbias.defined() ? hbias.f32()[r] : 0.0, sum = 0.0;  // b + w beta, sum of w'
      for (int64_t c = 0; c < k; ++c) {
        const float v = wp[r * k + c];
        const float folded = round_to(dt, v * gp[c]);
        wf.f32()[r * k + c] = folded;
        sum += folded;
        shift += static_cast<double>(v) * bp[c];
      }
      bf.f32()[r] = static_cast<float>(shift);
      sums.f32()[r] = static_cast<float>(sum);
    }
  });
  f.w = be.upload(wf, dt);
  f.b = be.upload(bf, dt);
  f.colsum = be.upload(sums, DType::kF32);
  f.ones = be.upload(Tensor::from_vector({k}, std::vector<float>(static_cast<size_t>(k), 1.f)), dt);
  f.zeros = be.upload(Tensor::zeros_host({k}, DType::kF32), dt);
  f.eps = eps;
  return f;
}

Tensor Backend::layer_norm_linear(const Tensor& x, const LayerNormLinear& f, bool geglu) {
  SD_ASSERT(f.defined(), "layer_norm_linear: weights not folded");
  const Tensor h = layer_norm(x, f.ones, f.zeros, f.eps);  // [..., K] normalised, no affine
  return geglu ? linear_geglu(h, f.w, f.b) : linear(h, f.w, f.b);
}

}  // namespace sd
