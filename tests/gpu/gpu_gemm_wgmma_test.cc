// The Hopper GEMM (src/backend/cuda/gemm_wgmma.h: TMA + wgmma, bias / residual / GEGLU epilogues,
// split-K) against a naive f64 host reference on the rounded inputs and against the backend's
// linear() / linear_residual() / linear_geglu(), for every candidate configuration and forced tiles.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "backend/op_cases.h"
#include "gpu_test_util.h"

#if SD_TEST_CUDA_INTERNALS
#include <cuda_runtime.h>

#include "backend/cuda/cuda_backend_impl.h"
#include "backend/cuda/gemm_wgmma.h"
#endif

namespace sd::testing {
namespace {

#if SD_TEST_CUDA_INTERNALS

struct GemmCase {
  const char* name;
  int64_t m, n, k;
  bool geglu, bias, residual;
  DType dtype;
  bool forced = true;  // also forced tiles (cooperative and ping-pong, split or not) beside the candidates
};

// Rows checked against the f64 reference: all up to 192, else the first and last 64 and 64 spread.
std::vector<int64_t> reference_rows(int64_t m) {
  std::vector<int64_t> rows;
  if (m <= 192) {
    for (int64_t r = 0; r < m; ++r) rows.push_back(r);
    return rows;
  }
  for (int64_t r = 0; r < 64; ++r) rows.push_back(r);
  for (int64_t i = 0; i < 64; ++i) rows.push_back(64 + (m - 128) * i / 64);
  for (int64_t r = m - 64; r < m; ++r) rows.push_back(r);
  return rows;
}

// y rows `rows` of the GEMM (+ epilogue) in f64 from the f32 host copies of the rounded inputs:
// x [m, k], w [n or 2n, k], bias [n or 2n], residual [m, n]. Returns [rows, n] f32.
Tensor reference(const Tensor& x, const Tensor& w, const Tensor* bias, const Tensor* res, const GemmCase& c,
                 const std::vector<int64_t>& rows) {
  Tensor out = Tensor::empty_host({static_cast<int64_t>(rows.size()), c.n}, DType::kF32);
  const float* xp = x.f32();
  const float* wp = w.f32();
  const auto dot = [&](int64_t r, int64_t j) {
    double s = 0;
    for (int64_t i = 0; i < c.k; ++i) s += static_cast<double>(xp[r * c.k + i]) * wp[j * c.k + i];
    return s + (bias ? bias->f32()[j] : 0.0);
  };
  for (size_t ri = 0; ri < rows.size(); ++ri) {
    const int64_t r = rows[ri];
    for (int64_t j = 0; j < c.n; ++j) {
      double v = dot(r, j);
      if (c.geglu) {
        const double g = dot(r, c.n + j);
        v *= 0.5 * g * (1.0 + std::erf(g / std::sqrt(2.0)));
      } else if (res) {
        v += res->f32()[r * c.n + j];
      }
      out.f32()[static_cast<int64_t>(ri) * c.n + j] = static_cast<float>(v);
    }
  }
  return out;
}

Tensor select_rows(const Tensor& y, const std::vector<int64_t>& rows, int64_t n) {
  Tensor out = Tensor::empty_host({static_cast<int64_t>(rows.size()), n}, DType::kF32);
  for (size_t ri = 0; ri < rows.size(); ++ri)
    for (int64_t j = 0; j < n; ++j) out.f32()[static_cast<int64_t>(ri) * n + j] = y.f32()[rows[ri] * n + j];
  return out;
}

class GpuGemmWgmma : public ::testing::TestWithParam<GemmCase> {};

TEST_P(GpuGemmWgmma, MatchesReferenceAndBackend) {
  SD_REQUIRE_GPU();
  if (!cuda::attention_wgmma_supported(0)) GTEST_SKIP() << "device 0 is not sm_90 (wgmma)";
  const GemmCase c = GetParam();
  const cuda::WgmmaGemmShape shape{c.m, c.n, c.k, c.geglu};
  ASSERT_TRUE(cuda::wgmma_gemm_supported(shape, c.dtype)) << c.name;
  const int64_t wn = c.geglu ? 2 * c.n : c.n;
  const float wr = 1.f / std::sqrt(static_cast<float>(c.k));
  const Tensor x = quantize(random_tensor({c.m, c.k}, 701, -1.f, 1.f), c.dtype);
  const Tensor w = quantize(random_tensor({wn, c.k}, 702, -wr, wr), c.dtype);
  const Tensor bias = quantize(random_tensor({wn}, 703, -0.5f, 0.5f), c.dtype);
  const Tensor res = c.residual ? quantize(random_tensor({c.m, c.n}, 704, -1.f, 1.f), c.dtype) : Tensor();
  const std::vector<int64_t> rows = reference_rows(c.m);
  const Tensor want = reference(x, w, c.bias ? &bias : nullptr, c.residual ? &res : nullptr, c, rows);

  Backend& gpu = gpu_backend(c.dtype);
  auto* cb = dynamic_cast<cuda::CudaBackend*>(&gpu);
  ASSERT_NE(cb, nullptr);
  const Tensor dx = gpu.upload(x), dw = gpu.upload(w), db = gpu.upload(bias);
  const Tensor dr = c.residual ? gpu.upload(res) : Tensor();
  Tensor backend_y;
  if (c.geglu) backend_y = gpu.linear_geglu(dx, dw, c.bias ? db : Tensor());
  else if (c.residual) backend_y = gpu.linear_residual(dx, dw, c.bias ? db : Tensor(), dr);
  else backend_y = gpu.linear(dx, dw, c.bias ? db : Tensor());
  const Tensor backend_host = gpu.download(backend_y);

  int sms = 0;
  ASSERT_EQ(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0), cudaSuccess);
  std::vector<cuda::WgmmaGemmConfig> configs = cuda::wgmma_gemm_candidates(shape, sms);
  ASSERT_FALSE(configs.empty());
  if (c.forced) {
    for (int bn : {64, 128, 256})
      for (int splits : {1, 3}) configs.push_back({128, bn, splits});
    configs.push_back({128, 160, 1});
    configs.push_back({128, 192, 3});
    configs.push_back({64, 128, 1});
    configs.push_back({64, 160, 3});
    configs.push_back({64, 256, 1});
    for (const auto& [bm, bn] : {std::pair{128, 64}, {128, 128}, {128, 160}, {128, 256}, {64, 160}, {64, 256}}) {
      if (((c.geglu ? bn / 2 : bn) / 8) % 4 == 0) configs.push_back({bm, bn, 1, true});  // wide-store epilogue
    }
    for (const auto& [bm, bn] : {std::pair{128, 64}, {128, 128}, {128, 160}, {128, 192}, {128, 256}, {64, 128},
                                 {64, 160}, {64, 256}})
      configs.push_back({bm, bn, 1, false, true});  // TMA-store epilogue
    for (const auto& [bm, bn, splits] : {std::tuple{128, 128, 3}, {128, 192, 2}, {128, 160, 5}, {64, 160, 3},
                                         {64, 128, 2}, {128, 64, 4}})
      configs.push_back({bm, bn, splits, false, true});  // in-kernel split-K reduction
    for (int bn : {64, 128}) {  // epilogue under the next MMAs (GEGLU: bn 128 only)
      if (!c.geglu || bn == 128) configs.push_back({128, bn, 1, false, true, true});
    }
  } else {  // the candidates' twins with the other epilogue (4-byte stores / reduce kernel or TMA)
    const size_t n0 = configs.size();
    for (size_t i = 0; i < n0; ++i) {
      cuda::WgmmaGemmConfig t = configs[i];
      if (t.vec_epilogue || t.overlap || (t.splits > 1 && t.bn == 256)) continue;
      t.tma_store = !t.tma_store;
      configs.push_back(t);
    }
  }
  const double tol = c.dtype == DType::kBF16 ? 1e-2 : 2e-3;
  for (const cuda::WgmmaGemmConfig& cfg : configs) {
    const size_t ws_bytes = cuda::wgmma_gemm_workspace(shape, cfg);
    Tensor ws;
    if (ws_bytes) ws = gpu.upload(Tensor::zeros_host({static_cast<int64_t>(ws_bytes / 4)}, DType::kF32), DType::kF32);
    Tensor got_host, again_host;
    for (int run = 0; run < 2; ++run) {
      const Tensor y = gpu.upload(Tensor::zeros_host({c.m, c.n}, DType::kF32));
      cuda::WgmmaGemmOperands o;
      o.x = dx.raw();
      o.w = dw.raw();
      o.y = y.raw();
      o.bias = c.bias ? db.raw() : nullptr;
      o.residual = c.residual ? dr.raw() : nullptr;
      o.workspace = ws_bytes ? ws.raw() : nullptr;
      ASSERT_TRUE(cuda::launch_wgmma_gemm(o, c.dtype, shape, cfg, cb->stream())) << c.name << " " << cfg.describe();
      ASSERT_TRUE(gpu.synchronize().ok()) << c.name << " " << cfg.describe();
      (run == 0 ? got_host : again_host) = gpu.download(y);
    }
    const double rel = relative_l2(select_rows(got_host, rows, c.n), want);
    const double rel_backend = relative_l2(got_host, backend_host);
    std::printf("  %-28s %-16s vs f64 rel_l2 %.2e | vs backend %.2e\n", c.name, cfg.describe().c_str(), rel,
                rel_backend);
    EXPECT_LE(rel, tol) << c.name << " " << cfg.describe();
    EXPECT_LE(rel_backend, tol) << c.name << " " << cfg.describe();
    EXPECT_EQ(max_abs_diff(got_host, again_host), 0.0) << c.name << " " << cfg.describe() << ": two runs differ";
  }
}

const GemmCase kCases[] = {
    // name, m, n, k, geglu, bias, residual, dtype, forced
    {"tail77_768x768_bias", 77, 768, 768, false, true, false, DType::kF16},
    {"tail154_768to320", 154, 320, 768, false, false, false, DType::kF16},
    {"tail4097_640_bias_res", 4097, 640, 640, false, true, true, DType::kF16},
    {"odd_k328_n328_bias_res", 300, 328, 328, false, true, true, DType::kF16},
    {"odd_geglu_n328_k328", 300, 328, 328, true, true, false, DType::kF16},
    {"m128_1280x1280_bias", 128, 1280, 1280, false, true, false, DType::kF16},
    {"m128_geglu_1280to5120", 128, 5120, 1280, true, true, false, DType::kF16},
    {"m128_ff2_5120to1280_res", 128, 1280, 5120, false, true, true, DType::kF16},
    {"m2048_640_res", 2048, 640, 640, false, true, true, DType::kF16},
    {"m2048_geglu_640to2560", 2048, 2560, 640, true, true, false, DType::kF16},
    {"m8192_320_bias_res", 8192, 320, 320, false, true, true, DType::kF16},
    {"m8192_geglu_320to1280", 8192, 1280, 320, true, true, false, DType::kF16},
    {"m8192_qkv_320to960", 8192, 960, 320, false, false, false, DType::kF16},
    {"m8192_ff2_1280to320", 8192, 320, 1280, false, true, true, DType::kF16, false},
    {"m131072_geglu_320to1280", 131072, 1280, 320, true, true, false, DType::kF16, false},
    {"m32768_640_res", 32768, 640, 640, false, true, true, DType::kF16, false},
    {"bf16_tail77_768x768_bias", 77, 768, 768, false, true, false, DType::kBF16},
    {"bf16_m2048_geglu_640to2560", 2048, 2560, 640, true, true, false, DType::kBF16},
    {"bf16_m4097_640_bias_res", 4097, 640, 640, false, true, true, DType::kBF16},
    {"bf16_m128_1280x1280_nobias", 128, 1280, 1280, false, false, false, DType::kBF16},
};

INSTANTIATE_TEST_SUITE_P(Cases, GpuGemmWgmma, ::testing::ValuesIn(kCases),
                         [](const ::testing::TestParamInfo<GemmCase>& i) { return std::string(i.param.name); });

TEST(GpuGemmWgmmaLimits, RejectsWhatItCannotRun) {
  EXPECT_FALSE(cuda::wgmma_gemm_supported({128, 322, 320}, DType::kF16));  // N % 8
  EXPECT_FALSE(cuda::wgmma_gemm_supported({128, 320, 324}, DType::kF16));  // K % 8
  EXPECT_FALSE(cuda::wgmma_gemm_supported({128, 320, 320}, DType::kF32));
  EXPECT_TRUE(cuda::wgmma_gemm_supported({1, 8, 8}, DType::kBF16));
  const cuda::WgmmaGemmShape s{4096, 320, 320};
  const cuda::WgmmaGemmOperands none;
  EXPECT_FALSE(cuda::launch_wgmma_gemm(none, DType::kF16, s, {128, 128, 1}, nullptr));  // null operands
  for (const auto& c : cuda::wgmma_gemm_candidates({128, 1280, 1280}, 132)) {
    EXPECT_GE(c.splits, 1);
    EXPECT_EQ(cuda::wgmma_gemm_workspace({128, 1280, 1280}, c) > 0, c.splits > 1) << c.describe();
  }
  // Every candidate is timed on a shape's first call: keep the lists short (SD 1.5 shapes).
  for (const cuda::WgmmaGemmShape& sh :
       {cuda::WgmmaGemmShape{8192, 960, 320}, {8192, 320, 1280}, {2048, 1920, 640}, {512, 1280, 5120},
        {128, 3840, 1280}, {128, 1280, 1280}, {128, 1280, 5120}, {128, 5120, 1280, true}, {2048, 1280, 5120},
        {131072, 1280, 320, true}}) {
    const auto list = cuda::wgmma_gemm_candidates(sh, 132);
    std::string names;
    for (const auto& c : list) names += " [" + c.describe() + "]";
    std::printf("  candidates %lldx%lldx%lld%s:%s\n", static_cast<long long>(sh.m), static_cast<long long>(sh.n),
                static_cast<long long>(sh.k), sh.geglu ? " geglu" : "", names.c_str());
    EXPECT_GE(list.size(), 1u);
    EXPECT_LE(list.size(), 9u);
  }
}

// ---- timing mode (not a test): --gtest_also_run_disabled_tests --gtest_filter='*GemmWgmmaBench*' ----
// SD 1.5 512x512 linears at 2 rows (batch 1, guided) and 32 rows (batch 16): QKV (C -> 3C),
// out-proj (C -> C, bias + residual), FF1 + GEGLU (C -> 2 x 4C -> 4C), FF2 (4C -> C, bias +
// residual), per UNet level. Backend (cuBLASLt linear, + geglu kernel) against each candidate
// configuration; median of 7 rounds of 10 calls between two device marks after a queue hold;
// 4 weight copies used in turn so large weights come from memory as in the step.
Tensor pool_tensor(Backend& be, const Shape& shape, uint32_t seed, float scale) {
  static const Tensor pool = random_tensor({int64_t{1} << 24}, 4242, -1.f, 1.f);
  Tensor t = Tensor::empty_host(shape, DType::kF32);
  const int64_t n = t.numel(), p = pool.numel();
  int64_t off = (int64_t{seed} * 7919) % p;
  for (int64_t i = 0; i < n;) {
    const int64_t len = std::min(n - i, p - off);
    std::memcpy(t.f32() + i, pool.f32() + off, static_cast<size_t>(len) * sizeof(float));
    i += len;
    off = 0;
  }
  if (scale != 1.f)
    for (int64_t i = 0; i < n; ++i) t.f32()[i] *= scale;
  return be.upload(t);
}

double median_call_us(Backend& be, const std::function<void(int)>& call) {
  for (int i = 0; i < 4; ++i) call(i);
  if (!be.synchronize().ok()) return -1;
  std::vector<double> t;
  for (int r = 0; r < 7; ++r) {
    be.hold_queue(0.5);
    const int64_t a = be.mark();
    for (int i = 0; i < 10; ++i) call(i);
    const int64_t b = be.mark();
    auto ms = be.marks_elapsed_ms();
    if (!ms.ok() || a < 0 || b < 0) return -1;
    t.push_back(((*ms)[static_cast<size_t>(b)] - (*ms)[static_cast<size_t>(a)]) * 1e3 / 10);
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

TEST(GpuGemmWgmmaBench, DISABLED_SdShapes) {
  SD_REQUIRE_GPU();
  if (!cuda::attention_wgmma_supported(0)) GTEST_SKIP() << "device 0 is not sm_90 (wgmma)";
  const DType dtype = DType::kF16;
  Backend& gpu = gpu_backend(dtype);
  auto* cb = dynamic_cast<cuda::CudaBackend*>(&gpu);
  ASSERT_NE(cb, nullptr);
  int sms = 0;
  ASSERT_EQ(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0), cudaSuccess);
  struct Level { int64_t tokens, c; };
  struct Kind { const char* name; int64_t kmul, nmul; bool geglu, res; };
  const Level levels[] = {{4096, 320}, {1024, 640}, {256, 1280}, {64, 1280}};
  const Kind kinds[] = {{"qkv", 1, 3, false, false}, {"out", 1, 1, false, true}, {"ff1_geglu", 1, 4, true, false},
                        {"ff2", 4, 1, false, true}};
  const char* bm_env = std::getenv("SDSERVE_GEMM_BENCH_BM");  // only configurations of this bm
  const int only_bm = bm_env ? std::atoi(bm_env) : 0;
  std::printf("gemm_bench rows level kind MxNxK | path config us TFLOP/s\n");
  for (int64_t rows : {2, 32}) {
    for (const Level& lv : levels) {
      for (const Kind& kd : kinds) {
        const int64_t m = rows * lv.tokens, k = kd.kmul * lv.c, n = kd.nmul * lv.c, wn = kd.geglu ? 2 * n : n;
        const cuda::WgmmaGemmShape shape{m, n, k, kd.geglu};
        const double flops = 2.0 * m * k * wn;
        const Tensor x = pool_tensor(gpu, {m, k}, 1, 1.f), bias = pool_tensor(gpu, {wn}, 2, 0.5f);
        const Tensor res = pool_tensor(gpu, {m, n}, 3, 1.f);
        std::vector<Tensor> ws;
        for (uint32_t i = 0; i < 4; ++i) ws.push_back(pool_tensor(gpu, {wn, k}, 10 + i, 1.f / std::sqrt(float(k))));
        const std::string tag = "gemm_bench r" + std::to_string(rows) + " l" + std::to_string(lv.tokens) + " " +
                                kd.name + " " + std::to_string(m) + "x" + std::to_string(n) + "x" + std::to_string(k);
        const double base_us = median_call_us(gpu, [&](int i) {
          const Tensor& w = ws[static_cast<size_t>(i % 4)];
          if (kd.geglu) (void)gpu.geglu(gpu.linear(x, w, bias));
          else if (kd.res) (void)gpu.linear_residual(x, w, bias, res);
          else (void)gpu.linear(x, w, bias);
        });
        std::printf("%s | cublaslt%s %.2f %.1f\n", tag.c_str(), kd.geglu ? "+geglu" : "", base_us,
                    flops / base_us * 1e-6);
        std::fflush(stdout);
        const Tensor y = gpu.upload(Tensor::zeros_host({m, n}, DType::kF32));
        double best = 1e30;
        std::string best_cfg;
        std::vector<cuda::WgmmaGemmConfig> configs = cuda::wgmma_gemm_candidates(shape, sms);
        const char* twins = std::getenv("SDSERVE_GEMM_BENCH_TWINS");  // =0: the candidates only
        for (size_t i = 0, n0 = twins && twins[0] == '0' ? 0 : configs.size(); i < n0; ++i) {  // wide-store twins too
          cuda::WgmmaGemmConfig v = configs[i];
          if (v.overlap) continue;
          v.vec_epilogue = true;
          v.tma_store = false;
          if (v.splits == 1 && ((kd.geglu ? v.bn / 2 : v.bn) / 8) % 4 == 0) configs.push_back(v);
          v.vec_epilogue = false;
          v.tma_store = !configs[i].tma_store;  // and the twins with the other epilogue
          if (!(v.tma_store && v.splits > 1 && v.bn == 256)) configs.push_back(v);
        }
        for (const cuda::WgmmaGemmConfig& cfg : configs) {
          if (only_bm > 0 && cfg.bm != only_bm) continue;
          const size_t bytes = cuda::wgmma_gemm_workspace(shape, cfg);
          Tensor work;
          if (bytes) work = gpu.upload(Tensor::zeros_host({static_cast<int64_t>(bytes / 4)}, DType::kF32), DType::kF32);
          bool ok = true;
          const double us = median_call_us(gpu, [&](int i) {
            cuda::WgmmaGemmOperands o;
            o.x = x.raw();
            o.w = ws[static_cast<size_t>(i % 4)].raw();
            o.y = y.raw();
            o.bias = bias.raw();
            o.residual = kd.res ? res.raw() : nullptr;
            o.workspace = bytes ? work.raw() : nullptr;
            ok = ok && cuda::launch_wgmma_gemm(o, dtype, shape, cfg, cb->stream());
          });
          std::printf("%s | %s %.2f %.1f%s\n", tag.c_str(), cfg.describe().c_str(), us, flops / us * 1e-6,
                      ok ? "" : " (launch failed)");
          std::fflush(stdout);
          if (ok && us > 0 && us < best) {
            best = us;
            best_cfg = cfg.describe();
          }
        }
        std::printf("%s | BEST %s %.2f us vs %.2f us: %.2fx\n", tag.c_str(), best_cfg.c_str(), best, base_us,
                    base_us / best);
        std::fflush(stdout);
      }
    }
  }
}

#else
TEST(GpuGemmWgmma, NeedsTheCudaBackend) { GTEST_SKIP() << "sdserve was built without the CUDA backend"; }
#endif

}  // namespace
}  // namespace sd::testing
