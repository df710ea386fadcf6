// Backend::linear_layer_norm on CUDA: the linear + layer norm kernel (linear_norm.h) forced
// (SDSERVE_CUDA_LINEAR_NORM=2), never taken (0) and timed (1) against the CPU backend's two ops on
// the same rounded inputs — the UNet's 64x64-level shapes, row tails, every width, bf16, mean >> std
// rows — plus bitwise repeatability and the fallback for shapes the kernel does not take.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "backend/op_cases.h"
#include "gpu_test_util.h"
#include "scoped_env.h"

namespace sd::testing {
namespace {

struct NormCase {
  int64_t m, k, n;  // x [m, k], w [n, k], outputs [m, n]
  bool bias, residual;
  DType dtype;
  float offset = 0.f;  // added to the residual: rows whose mean is far above their spread
};

std::string describe(const NormCase& c) {
  return "m" + std::to_string(c.m) + " k" + std::to_string(c.k) + " n" + std::to_string(c.n) +
         (c.bias ? " bias" : "") + (c.residual ? " residual" : "") + " " + dtype_name(c.dtype) +
         (c.offset != 0.f ? " offset " + std::to_string(c.offset) : "");
}

struct NormInputs {
  std::vector<Tensor> host;  // x, w, bias, residual, gamma, beta (host, rounded to the dtype)
};

NormInputs make_inputs(const NormCase& c, uint32_t seed) {
  const float wr = 1.f / std::sqrt(static_cast<float>(c.k));
  Tensor res = random_tensor({c.m, c.n}, seed + 3, -1.f, 1.f);
  if (c.offset != 0.f) {
    for (int64_t i = 0; i < res.numel(); ++i) res.f32()[i] += c.offset;
  }
  return {{quantize(random_tensor({c.m, c.k}, seed, -2.f, 2.f), c.dtype),
           quantize(random_tensor({c.n, c.k}, seed + 1, -wr, wr), c.dtype),
           quantize(random_tensor({c.n}, seed + 2, -0.5f, 0.5f), c.dtype), quantize(res, c.dtype),
           quantize(random_tensor({c.n}, seed + 4, 0.5f, 1.5f), c.dtype),
           quantize(random_tensor({c.n}, seed + 5, -0.5f, 0.5f), c.dtype)}};
}

// y and normed downloaded (host f32), in that order.
std::vector<Tensor> run(Backend& be, const NormCase& c, const NormInputs& in) {
  std::vector<Tensor> d;
  for (const Tensor& t : in.host) d.push_back(be.upload(t));
  const Backend::LinearNorm r = be.linear_layer_norm(d[0], d[1], c.bias ? d[2] : Tensor(),
                                                     c.residual ? d[3] : Tensor(), d[4], d[5], 1e-5f);
  std::vector<Tensor> out = {be.download(r.y), be.download(r.normed)};
  EXPECT_TRUE(be.synchronize().ok());
  return out;
}

std::vector<Tensor> run_gpu(const char* mode, const NormCase& c, const NormInputs& in) {
  ScopedEnv env("SDSERVE_CUDA_LINEAR_NORM", mode);
  return run(gpu_backend(c.dtype), c, in);
}

double tol(DType dtype) { return dtype == DType::kBF16 ? 1e-2 : 2e-3; }

void check(const NormCase& c, uint32_t seed) {
  const std::string name = describe(c);
  const NormInputs in = make_inputs(c, seed);
  const std::vector<Tensor> cpu = run(cpu_reference_backend(), c, in);
  const std::vector<Tensor> fused = run_gpu("2", c, in);
  const std::vector<Tensor> ops = run_gpu("0", c, in);
  const std::vector<Tensor> timed = run_gpu("1", c, in);
  for (int i = 0; i < 2; ++i) {
    const char* what = i == 0 ? " y" : " normed";
    EXPECT_LE(relative_l2(fused[i], cpu[i]), tol(c.dtype)) << name << what << " fused vs CPU";
    EXPECT_LE(relative_l2(ops[i], cpu[i]), tol(c.dtype)) << name << what << " two ops vs CPU";
    EXPECT_LE(relative_l2(timed[i], cpu[i]), tol(c.dtype)) << name << what << " timed choice vs CPU";
  }
  // The fused kernel is deterministic: a second call gives the same bits.
  const std::vector<Tensor> again = run_gpu("2", c, in);
  EXPECT_EQ(max_abs_diff(fused[0], again[0]), 0.0) << name << " y repeat";
  EXPECT_EQ(max_abs_diff(fused[1], again[1]), 0.0) << name << " normed repeat";
}

// The SD 1.5 64x64-level projections before each layer norm (proj_in; attn1 / attn2 to_out with the
// residual) at batch 1 (2 rows, and 1 in the first transformer's half mode) and batch 4.
TEST(GpuLinearNorm, UnetShapes) {
  SD_REQUIRE_GPU();
  uint32_t seed = 31000;
  for (int64_t m : {4096, 8192, 32768}) {
    check({m, 320, 320, true, false, DType::kF16}, seed += 10);
    check({m, 320, 320, true, true, DType::kF16}, seed += 10);
  }
  check({8192, 320, 320, true, true, DType::kBF16}, seed += 10);
}

// Row tails (M not a multiple of 64, a single row, fewer rows than SMs), every width the kernel
// has, K from one to the most blocks that fit, no bias, and rows with |mean| >> std.
TEST(GpuLinearNorm, TailsWidthsAndOffsets) {
  SD_REQUIRE_GPU();
  uint32_t seed = 32000;
  check({1, 320, 320, true, true, DType::kF16}, seed += 10);
  check({77, 320, 320, false, true, DType::kF16}, seed += 10);
  check({1000, 320, 320, true, false, DType::kBF16}, seed += 10);
  check({333, 64, 128, true, true, DType::kF16}, seed += 10);
  check({4099, 256, 160, false, false, DType::kF16}, seed += 10);
  check({2048, 512, 192, true, true, DType::kBF16}, seed += 10);
  check({513, 384, 256, true, true, DType::kF16}, seed += 10);
  check({8192, 320, 320, true, true, DType::kF16, 40.f}, seed += 10);
}

// Shapes the kernel does not take (N 640, K not a multiple of 64, weights too large for shared
// memory) run as the two ops: the same bits as with the kernel switched off.
TEST(GpuLinearNorm, UnsupportedShapesRunTheTwoOps) {
  SD_REQUIRE_GPU();
  uint32_t seed = 33000;
  for (const NormCase& c : {NormCase{2048, 640, 640, true, true, DType::kF16},
                            NormCase{500, 72, 320, true, true, DType::kF16},
                            NormCase{300, 768, 320, true, false, DType::kF16}}) {
    const NormInputs in = make_inputs(c, seed += 10);
    const std::vector<Tensor> forced = run_gpu("2", c, in), ops = run_gpu("0", c, in);
    EXPECT_EQ(max_abs_diff(forced[0], ops[0]), 0.0) << describe(c);
    EXPECT_EQ(max_abs_diff(forced[1], ops[1]), 0.0) << describe(c);
    const std::vector<Tensor> cpu = run(cpu_reference_backend(), c, in);
    EXPECT_LE(relative_l2(forced[1], cpu[1]), tol(c.dtype)) << describe(c);
  }
}

}  // namespace
}  // namespace sd::testing
