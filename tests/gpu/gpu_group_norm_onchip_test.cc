// The CUDA one-launch on-chip group norm (group_norm_onchip.cu) against the CPU backend and the
// two-kernel path: SD shapes, batches 1-3 and 32, f16/bf16, SiLU, the time-embedding add, odd
// position counts, every cluster size and slice width, both load paths, the fit boundary.
#include <gtest/gtest.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "backend/op_cases.h"
#include "core/status.h"
#include "gpu_test_util.h"
#include "scoped_env.h"

namespace sd::testing {
namespace {

struct GnShape {
  Shape x;  // [B, H, W, C] or [B, L, C]
  int groups;
};

std::string describe(const GnShape& s, DType dtype, bool silu, bool add) {
  std::string d = dtype_name(dtype);
  d += " [";
  for (int64_t v : s.x) d += std::to_string(v) + ",";
  d.back() = ']';
  d += " g" + std::to_string(s.groups) + (silu ? " silu" : "") + (add ? " add" : "");
  return d;
}

// Host inputs rounded through dtype: x uniform(-2, 3) (non-zero mean), gamma, beta, and the
// time-embedding source add_src [B, C + 24] whose window starts at column 16.
struct GnInputs {
  Tensor x, gamma, beta, add_src;
};
constexpr int64_t kAddCol = 16;

GnInputs make_inputs(const GnShape& s, DType dtype, uint32_t seed) {
  const int64_t c = s.x.back();
  return {quantize(random_tensor(s.x, seed, -2.f, 3.f), dtype), quantize(random_tensor({c}, seed + 1, 0.5f, 1.5f), dtype),
          quantize(random_tensor({c}, seed + 2, -0.5f, 0.5f), dtype),
          quantize(random_tensor({s.x[0], c + 24}, seed + 3, -1.f, 1.f), dtype)};
}

Tensor run_gn(Backend& be, const GnInputs& in, const GnShape& s, bool silu, bool add) {
  const Tensor x = be.upload(in.x), g = be.upload(in.gamma), b = be.upload(in.beta);
  if (add) return be.download(be.group_norm_add(x, be.upload(in.add_src), kAddCol, g, b, s.groups, 1e-5f, silu));
  return be.download(be.group_norm(x, g, b, s.groups, 1e-5f, silu));
}

// The GPU result with SDSERVE_CUDA_GN_ONCHIP=mode.
Tensor run_gpu(const std::string& mode, DType dtype, const GnInputs& in, const GnShape& s, bool silu, bool add) {
  ScopedEnv env("SDSERVE_CUDA_GN_ONCHIP", mode);
  Backend& be = gpu_backend(dtype);
  Tensor y = run_gn(be, in, s, silu, add);
  EXPECT_TRUE(be.synchronize().ok());
  return y;
}

double tol_vs_cpu(DType dtype) { return dtype == DType::kBF16 ? 1e-2 : 2e-3; }
double tol_vs_two_kernel(DType dtype) { return dtype == DType::kBF16 ? 8e-3 : 1.5e-3; }

// On-chip (required: the test fails if it did not run) vs the CPU backend and the two-kernel path.
void check_onchip(const GnShape& s, DType dtype, bool silu, bool add, uint32_t seed, bool with_cpu = true) {
  const std::string name = describe(s, dtype, silu, add);
  const GnInputs in = make_inputs(s, dtype, seed);
  Tensor onchip;
  try {
    onchip = run_gpu("require", dtype, in, s, silu, add);
  } catch (const Error& e) {
    ADD_FAILURE() << name << ": " << e.what();
    return;
  }
  const Tensor two = run_gpu("0", dtype, in, s, silu, add);
  EXPECT_LE(relative_l2(onchip, two), tol_vs_two_kernel(dtype)) << name << " vs two-kernel";
  if (with_cpu) {
    const Tensor want = run_gn(cpu_reference_backend(), in, s, silu, add);
    EXPECT_LE(relative_l2(onchip, want), tol_vs_cpu(dtype)) << name << " vs CPU";
    EXPECT_LE(relative_l2(two, want), tol_vs_cpu(dtype)) << name << " two-kernel vs CPU";
  }
}

const std::vector<GnShape>& small_batch_shapes() {
  static const std::vector<GnShape> shapes = {
      {{1, 64, 64, 320}, 32}, {{2, 64, 64, 320}, 32}, {{3, 32, 32, 640}, 32}, {{2, 16, 16, 1280}, 32},
      {{2, 8, 8, 1280}, 32},  {{1, 16, 16, 2560}, 32}, {{2, 7, 9, 320}, 32},  {{3, 7, 9, 64}, 32},
      {{2, 5, 3, 96}, 32},    {{2, 77, 640}, 32},      {{1, 1, 1, 320}, 32},  {{2, 13, 11, 1920}, 32}};
  return shapes;
}

TEST(GpuGroupNormOnchip, MatchesCpuAndTwoKernelAtSmallBatches) {
  SD_REQUIRE_GPU();
  uint32_t seed = 900;
  for (const GnShape& s : small_batch_shapes())
    for (DType dtype : {DType::kF16, DType::kBF16})
      for (bool silu : {false, true})
        for (bool add : {false, true}) check_onchip(s, dtype, silu, add, seed += 4);
}

// Batch 16 (32 rows): against the two-kernel path only (the CPU reference is slow at this size),
// plus one shape against the CPU.
TEST(GpuGroupNormOnchip, MatchesTwoKernelAtBatch32) {
  SD_REQUIRE_GPU();
  uint32_t seed = 1900;
  for (const GnShape& s : {GnShape{{32, 64, 64, 320}, 32}, GnShape{{32, 32, 32, 640}, 32},
                           GnShape{{32, 16, 16, 1280}, 32}, GnShape{{32, 8, 8, 1280}, 32},
                           GnShape{{32, 16, 16, 2560}, 32}}) {
    check_onchip(s, DType::kF16, true, false, seed += 4, false);
    check_onchip(s, DType::kBF16, false, true, seed += 4, false);
  }
  check_onchip({{32, 8, 8, 1280}, 32}, DType::kF16, true, true, seed + 4, true);
}

// The up-level concat shapes fit through channel slices; rows whose narrowest slice (whole
// groups) exceeds 16 CTAs' shared memory do not: "require" refuses, the default and "1" fall back
// to the two-kernel path and still match the CPU.
TEST(GpuGroupNormOnchip, ConcatShapesAndFallBack) {
  SD_REQUIRE_GPU();
  uint32_t seed = 2900;
  for (const GnShape& s : {GnShape{{2, 64, 64, 640}, 32}, GnShape{{2, 64, 64, 960}, 32}, GnShape{{1, 32, 32, 1920}, 32}})
    for (bool add : {false, true}) check_onchip(s, DType::kF16, true, add, seed += 4);
  for (const GnShape& s : {GnShape{{1, 256, 256, 320}, 32}, GnShape{{2, 64, 64, 640}, 1}}) {
    for (bool add : {false, true}) {
      const GnInputs in = make_inputs(s, DType::kF16, seed += 4);
      const std::string name = describe(s, DType::kF16, true, add);
      EXPECT_THROW(run_gpu("require", DType::kF16, in, s, true, add), Error) << name;
      const Tensor want = run_gn(cpu_reference_backend(), in, s, true, add);
      EXPECT_LE(relative_l2(run_gpu("1", DType::kF16, in, s, true, add), want), 2e-3) << name;
      EXPECT_LE(relative_l2(run_gpu("auto", DType::kF16, in, s, true, add), want), 2e-3) << name;
    }
  }
}

// SDSERVE_CUDA_GN_ONCHIP_BUDGET caps the slab per CTA. One group (no channel slices) with room for
// 20 positions of 320 channels: 16 CTAs hold exactly 320 positions, 321 take the two-kernel path.
// 32 groups: the narrowest slice is 40 channels (80 bytes a position), the same boundary.
TEST(GpuGroupNormOnchip, FitBoundary) {
  SD_REQUIRE_GPU();
  for (auto [groups, budget_bytes] : {std::pair<int, int>{1, 20 * 320 * 2}, {32, 20 * 40 * 2}}) {
    ScopedEnv budget("SDSERVE_CUDA_GN_ONCHIP_BUDGET", std::to_string(budget_bytes));
    const GnShape fits{{2, 16, 20, 320}, groups}, over{{2, 3, 107, 320}, groups};
    for (DType dtype : {DType::kF16, DType::kBF16}) {
      SCOPED_TRACE("groups " + std::to_string(groups));
      check_onchip(fits, dtype, true, true, 3000);
      const GnInputs in = make_inputs(over, dtype, 3010);
      EXPECT_THROW(run_gpu("require", dtype, in, over, true, true), Error);
      const Tensor want = run_gn(cpu_reference_backend(), in, over, true, true);
      EXPECT_LE(relative_l2(run_gpu("1", dtype, in, over, true, true), want), tol_vs_cpu(dtype));
    }
  }
  // One CTA: the budget holds 6 positions of 320 channels (one group); cluster 1 forced.
  ScopedEnv small("SDSERVE_CUDA_GN_ONCHIP_BUDGET", std::to_string(6 * 320 * 2));
  ScopedEnv one("SDSERVE_CUDA_GN_ONCHIP_CLUSTER", "1");
  check_onchip({{3, 2, 3, 320}, 1}, DType::kF16, false, true, 3020);
  const GnShape seven{{3, 7, 1, 320}, 1};
  EXPECT_THROW(run_gpu("require", DType::kF16, make_inputs(seven, DType::kF16, 3030), seven, false, false), Error);
}

// Every channel slice width (whole groups, 16-byte rows) of a few channel counts.
TEST(GpuGroupNormOnchip, EverySliceWidth) {
  SD_REQUIRE_GPU();
  uint32_t seed = 3500;
  struct Case {
    int64_t b, h, w, c;
    int groups;
    int slices[5];  // 0: none
  };
  static constexpr Case kCases[] = {{2, 16, 16, 320, 32, {40, 80, 160, 320, 0}},
                                    {3, 7, 9, 96, 32, {24, 48, 96, 0, 0}},
                                    {2, 8, 8, 1920, 32, {120, 240, 480, 960, 1920}},
                                    {2, 9, 5, 640, 16, {40, 80, 160, 320, 640}}};
  for (const Case& c : kCases) {
    const GnShape shape{{c.b, c.h, c.w, c.c}, c.groups};
    for (int slice : c.slices) {
      if (slice == 0) continue;
      ScopedEnv env("SDSERVE_CUDA_GN_ONCHIP_SLICE", std::to_string(slice));
      SCOPED_TRACE("slice " + std::to_string(slice));
      check_onchip(shape, DType::kF16, true, true, seed += 4);
      check_onchip(shape, DType::kBF16, false, false, seed += 4);
    }
  }
}

// Every cluster size 1..16 (non-powers of two, ranks with no positions) and both load paths.
TEST(GpuGroupNormOnchip, EveryClusterSizeAndLoadPath) {
  SD_REQUIRE_GPU();
  uint32_t seed = 4000;
  for (const char* load : {"bulk", "async"}) {
    ScopedEnv l("SDSERVE_CUDA_GN_ONCHIP_LOAD", load);
    for (int cluster = 1; cluster <= 16; ++cluster) {
      ScopedEnv c("SDSERVE_CUDA_GN_ONCHIP_CLUSTER", std::to_string(cluster));
      SCOPED_TRACE(std::string(load) + " cluster " + std::to_string(cluster));
      check_onchip({{2, 5, 4, 320}, 32}, DType::kF16, true, cluster % 2 == 0, seed += 4);  // 20 positions
      check_onchip({{3, 8, 16, 640}, 32}, DType::kBF16, cluster % 3 == 0, true, seed += 4);
      check_onchip({{2, 8, 8, 1280}, 32}, DType::kF16, true, false, seed += 4);
      check_onchip({{2, 5, 4, 320}, 1}, DType::kF16, true, true, seed += 4);  // one group: slice = C, bulk copies
    }
    check_onchip({{2, 64, 64, 320}, 32}, DType::kF16, true, true, seed += 4);
  }
}

}  // namespace
}  // namespace sd::testing
