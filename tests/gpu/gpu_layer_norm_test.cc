// The CUDA layer norm's paths (norm.cu, SDSERVE_CUDA_LN=warp|rows|auto) against the CPU backend:
// the UNet transformer shapes at batch 1 and 16 (2 and 32 rows), odd shapes, f16/bf16, mean >> std
// data; the persistent kernel bitwise equal to the one-row kernel, forced CTA counts, determinism.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "backend/op_cases.h"
#include "core/status.h"
#include "gpu_test_util.h"
#include "scoped_env.h"

namespace sd::testing {
namespace {

struct LnInputs {
  Tensor x, gamma, beta;  // x [B, L, C] (or [rows, C]); gamma, beta [C]
};

LnInputs make_ln_inputs(const Shape& shape, DType dtype, uint32_t seed, float lo = -2.f, float hi = 3.f) {
  const int64_t c = shape.back();
  return {quantize(random_tensor(shape, seed, lo, hi), dtype), quantize(random_tensor({c}, seed + 1, 0.5f, 1.5f), dtype),
          quantize(random_tensor({c}, seed + 2, -0.5f, 0.5f), dtype)};
}

std::string describe(const Shape& shape, DType dtype) {
  std::string d = std::string(dtype_name(dtype)) + " [";
  for (int64_t v : shape) d += std::to_string(v) + ",";
  d.back() = ']';
  return d;
}

Tensor run_ln(Backend& be, const LnInputs& in) {
  return be.download(be.layer_norm(be.upload(in.x), be.upload(in.gamma), be.upload(in.beta), 1e-5f));
}

// The GPU result with SDSERVE_CUDA_LN=path.
Tensor run_gpu_ln(const std::string& path, DType dtype, const LnInputs& in) {
  ScopedEnv env("SDSERVE_CUDA_LN", path);
  Backend& be = gpu_backend(dtype);
  Tensor y = run_ln(be, in);
  EXPECT_TRUE(be.synchronize().ok());
  return y;
}

double tol_vs_cpu(DType dtype) { return dtype == DType::kBF16 ? 8e-3 : 1.5e-3; }

// Persistent ("rows") vs the CPU backend, and bitwise vs the one-row kernel ("warp") and auto.
void check_ln(const Shape& shape, DType dtype, uint32_t seed, float lo = -2.f, float hi = 3.f, bool with_cpu = true) {
  const std::string name = describe(shape, dtype) + " x~U(" + std::to_string(lo) + "," + std::to_string(hi) + ")";
  const LnInputs in = make_ln_inputs(shape, dtype, seed, lo, hi);
  const Tensor rows = run_gpu_ln("rows", dtype, in);
  EXPECT_EQ(max_abs_diff(rows, run_gpu_ln("warp", dtype, in)), 0.0) << name << " rows vs warp";
  EXPECT_EQ(max_abs_diff(rows, run_gpu_ln("auto", dtype, in)), 0.0) << name << " rows vs auto";
  if (with_cpu) {
    EXPECT_LE(relative_l2(rows, run_ln(cpu_reference_backend(), in)), tol_vs_cpu(dtype)) << name << " vs CPU";
  }
}

// The UNet's layer norms: tokens x channels per level, 2 rows (one guided image) and 32 (16).
TEST(GpuLayerNorm, UnetShapes) {
  SD_REQUIRE_GPU();
  uint32_t seed = 11000;
  for (int64_t b : {2, 32})
    for (auto [tokens, c] : {std::pair<int64_t, int64_t>{4096, 320}, {1024, 640}, {256, 1280}, {64, 1280}})
      for (DType dtype : {DType::kF16, DType::kBF16}) check_ln({b, tokens, c}, dtype, seed += 3, -2.f, 3.f, b == 2);
}

// Odd row counts and widths (every kernel instance: C <= 384, 768, 1536, 2048), one row, [rows, C].
TEST(GpuLayerNorm, OddShapes) {
  SD_REQUIRE_GPU();
  uint32_t seed = 12000;
  const std::vector<Shape> shapes = {{1, 1, 320}, {3, 7, 40}, {2, 77, 768}, {5, 13, 8}, {1, 333, 1280},
                                     {2, 9, 2048}, {1001, 640}, {3, 5, 1536}, {2, 3, 1544}};
  for (const Shape& s : shapes)
    for (DType dtype : {DType::kF16, DType::kBF16}) check_ln(s, dtype, seed += 3);
}

// Mean far above the spread: the exact two-pass statistics must not cancel.
TEST(GpuLayerNorm, MeanMuchLargerThanSpread) {
  SD_REQUIRE_GPU();
  uint32_t seed = 13000;
  for (const Shape& s : {Shape{2, 4096, 320}, Shape{2, 64, 1280}, Shape{3, 7, 768}})
    for (DType dtype : {DType::kF16, DType::kBF16}) {
      check_ln(s, dtype, seed += 3, 49.f, 51.f);
      check_ln(s, dtype, seed += 3, -101.f, -99.f);
    }
}

// Forced CTA counts and sizes: each group walks many rows (and warps with a partial last group).
TEST(GpuLayerNorm, ForcedCtas) {
  SD_REQUIRE_GPU();
  uint32_t seed = 14000;
  for (const char* ctas : {"1", "3", "7", "100"})
    for (const char* threads : {"32", "64", "256"}) {
      ScopedEnv c("SDSERVE_CUDA_LN_CTAS", ctas);
      ScopedEnv t("SDSERVE_CUDA_LN_THREADS", threads);
      SCOPED_TRACE(std::string("ctas ") + ctas + " threads " + threads);
      check_ln({2, 301, 320}, DType::kF16, seed += 3);
      check_ln({3, 45, 640}, DType::kBF16, seed += 3);
      check_ln({2, 37, 1280}, DType::kF16, seed += 3, 49.f, 51.f);
    }
}

// Repeat calls give bitwise identical results (no atomics, fixed shuffle order).
TEST(GpuLayerNorm, Deterministic) {
  SD_REQUIRE_GPU();
  ScopedEnv env("SDSERVE_CUDA_LN", "rows");
  Backend& be = gpu_backend(DType::kF16);
  const LnInputs in = make_ln_inputs({32, 1024, 640}, DType::kF16, 15000);
  const Tensor x = be.upload(in.x), g = be.upload(in.gamma), b = be.upload(in.beta);
  const Tensor first = be.download(be.layer_norm(x, g, b, 1e-5f));
  for (int i = 0; i < 3; ++i) EXPECT_EQ(max_abs_diff(be.download(be.layer_norm(x, g, b, 1e-5f)), first), 0.0);
}

}  // namespace
}  // namespace sd::testing
