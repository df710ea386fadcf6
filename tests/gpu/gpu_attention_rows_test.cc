// The all-heads row attention kernel (SDSERVE_CUDA_ATTENTION=rows, attention_rows.cu: d 40, 8
// heads, <= 80 keys) against the CPU backend and the mma2 kernel: key counts 1..80, ragged query
// tiles, batches whose tiles span several persistent CTAs and rows, strided q / k / v, f16 / bf16.
#include <gtest/gtest.h>

#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "backend/op_cases.h"
#include "gpu_test_util.h"
#include "scoped_env.h"

namespace sd::testing {
namespace {

struct RowsCase {
  int64_t batch, lq, lk;
};

std::string name_of(const RowsCase& s) {
  return "b" + std::to_string(s.batch) + " lq" + std::to_string(s.lq) + " lk" + std::to_string(s.lk);
}

constexpr int kHeads = 8;
constexpr int64_t kInner = 320;  // 8 heads x 40

double tolerance(DType dtype) { return dtype == DType::kBF16 ? 1e-2 : 2e-3; }

// Tile rows x shared-memory layout (SDSERVE_CUDA_ROWS_TILE, SDSERVE_CUDA_ROWS_SWIZZLE); "" the default.
struct RowsConfig {
  const char* tile;
  const char* swizzle;
};
constexpr RowsConfig kConfigs[] = {{"", ""},     {"16", "0"}, {"32", "0"}, {"64", "0"},
                                   {"16", "1"}, {"32", "1"}, {"64", "1"}};

// Runs the attention with the rows kernel forced and checks that it really ran.
Tensor run_rows(Backend& gpu, const std::function<Tensor()>& op, const std::string& name,
                const RowsConfig& config = kConfigs[0]) {
  ScopedEnv path("SDSERVE_CUDA_ATTENTION", "rows");
  ScopedEnv tile("SDSERVE_CUDA_ROWS_TILE", config.tile);
  ScopedEnv swizzle("SDSERVE_CUDA_ROWS_SWIZZLE", config.swizzle);
  const long before = cuda::attention_rows_launches();
  Tensor out = gpu.download(op());
  EXPECT_EQ(cuda::attention_rows_launches(), before + 1) << name << ": the rows kernel did not run";
  return out;
}

TEST(GpuAttentionRows, MatchesCpuAndMma2) {
  SD_REQUIRE_GPU();
  if (!cuda::attention_wgmma_supported(0)) GTEST_SKIP() << "device 0 is not sm_90 (TMA)";
  Backend& cpu = cpu_reference_backend();
  // The SD 1.5 shape at batch 1, key counts around the 8-key n-tiles, ragged 64-row tiles, and
  // batches where CTAs take several tiles across batch rows (the ring wraps, K / V reload).
  const std::vector<RowsCase> small = {{2, 4096, 77}, {1, 64, 77}, {3, 333, 1}, {1, 100, 80}, {2, 130, 64},
                                       {1, 1, 5},     {5, 1000, 77}, {40, 256, 77}, {2, 65, 9}};
  for (DType dtype : {DType::kF16, DType::kBF16}) {
    Backend& gpu = gpu_backend(dtype);
    for (const RowsCase& s : small) {
      const std::vector<Tensor> host = {quantize(random_tensor({s.batch, s.lq, kInner}, 711, -2.f, 2.f), dtype),
                                        quantize(random_tensor({s.batch, s.lk, kInner}, 712, -2.f, 2.f), dtype),
                                        quantize(random_tensor({s.batch, s.lk, kInner}, 713), dtype)};
      const Tensor q = gpu.upload(host[0]), k = gpu.upload(host[1]), v = gpu.upload(host[2]);
      const auto op = [&] { return gpu.attention(q, k, v, kHeads, false); };
      Tensor mma2;
      {
        ScopedEnv path("SDSERVE_CUDA_ATTENTION", "mma2");
        mma2 = gpu.download(op());
      }
      const Tensor want = cpu.download(
          cpu.attention(cpu.upload(host[0]), cpu.upload(host[1]), cpu.upload(host[2]), kHeads, false));
      for (const RowsConfig& c : kConfigs) {
        const std::string name = name_of(s) + " tile " + c.tile + " swizzle " + c.swizzle;
        const Tensor got = run_rows(gpu, op, name, c), again = run_rows(gpu, op, name, c);
        const double rel = relative_l2(got, want), rel_mma2 = relative_l2(got, mma2);
        std::printf("  %-42s %s rows vs cpu rel_l2 %.2e | vs mma2 %.2e\n", name.c_str(), dtype_name(dtype), rel,
                    rel_mma2);
        EXPECT_LE(rel, tolerance(dtype)) << name << " " << dtype_name(dtype);
        EXPECT_LE(rel_mma2, tolerance(dtype)) << name << " " << dtype_name(dtype);
        EXPECT_EQ(max_abs_diff(got, again), 0.0) << name << ": two runs differ";
      }
    }
  }
}

// Large batches against mma2 only: 31 tiles a CTA at 64 x 4096 (the step's batch-32 shape), so
// every stage of the ring is reused many times; and the timed choice, which may take the kernel.
TEST(GpuAttentionRows, LargeBatchesMatchMma2) {
  SD_REQUIRE_GPU();
  if (!cuda::attention_wgmma_supported(0)) GTEST_SKIP() << "device 0 is not sm_90 (TMA)";
  Backend& gpu = gpu_backend(DType::kF16);
  for (const RowsCase& s : {RowsCase{64, 4096, 77}, RowsCase{33, 1000, 80}, RowsCase{17, 4096, 3}}) {
    const Tensor q = gpu.upload(quantize(random_tensor({s.batch, s.lq, kInner}, 721, -2.f, 2.f), DType::kF16));
    const Tensor k = gpu.upload(quantize(random_tensor({s.batch, s.lk, kInner}, 722, -2.f, 2.f), DType::kF16));
    const Tensor v = gpu.upload(quantize(random_tensor({s.batch, s.lk, kInner}, 723), DType::kF16));
    const auto op = [&] { return gpu.attention(q, k, v, kHeads, false); };
    Tensor mma2;
    {
      ScopedEnv path("SDSERVE_CUDA_ATTENTION", "mma2");
      mma2 = gpu.download(op());
    }
    for (const RowsConfig& c : kConfigs) {
      const std::string name = name_of(s) + " tile " + c.tile + " swizzle " + c.swizzle;
      const double rel = relative_l2(run_rows(gpu, op, name, c), mma2);
      std::printf("  %-42s rows vs mma2 rel_l2 %.2e\n", name.c_str(), rel);
      EXPECT_LE(rel, 2e-3) << name;
    }
    const Tensor routed = gpu.download(op()), routed_again = gpu.download(op());
    std::printf("  %-42s timed choice vs mma2 %.2e\n", name_of(s).c_str(), relative_l2(routed, mma2));
    EXPECT_LE(relative_l2(routed, mma2), 2e-3) << name_of(s) << ": timed choice";
    EXPECT_EQ(max_abs_diff(routed, routed_again), 0.0) << name_of(s) << ": the timed choice is not kept";
  }
}

// The cross-attention's packed operands: q a window of a wider projection (row stride 960), k / v
// windows of one stacked projection (row stride 3 x 320 + 80); a shape the kernel does not take
// (4 heads) falls back without running it.
TEST(GpuAttentionRows, StridedWindowsAndFallback) {
  SD_REQUIRE_GPU();
  if (!cuda::attention_wgmma_supported(0)) GTEST_SKIP() << "device 0 is not sm_90 (TMA)";
  for (DType dtype : {DType::kF16, DType::kBF16}) {
    Backend& gpu = gpu_backend(dtype);
    for (const RowsCase& s : {RowsCase{2, 4096, 77}, RowsCase{3, 200, 50}}) {
      const Tensor qx = gpu.upload(quantize(random_tensor({s.batch, s.lq, 3 * kInner}, 731, -2.f, 2.f), dtype));
      const Tensor kv = gpu.upload(quantize(random_tensor({s.batch, s.lk, 3 * kInner + 80}, 732, -2.f, 2.f), dtype));
      const auto op = [&] { return gpu.attention_cols(qx, kInner, kv, 80, 80 + 2 * kInner, kInner, kHeads, false); };
      const Tensor got = run_rows(gpu, op, name_of(s), RowsConfig{"32", "1"});
      Tensor want;
      {
        ScopedEnv path("SDSERVE_CUDA_ATTENTION", "mma2");
        want = gpu.download(op());
      }
      const double rel = relative_l2(got, want);
      std::printf("  cols %-24s %s rows vs mma2 rel_l2 %.2e\n", name_of(s).c_str(), dtype_name(dtype), rel);
      EXPECT_LE(rel, tolerance(dtype)) << name_of(s);
    }
  }
  Backend& gpu = gpu_backend(DType::kF16);
  const Tensor q = gpu.upload(quantize(random_tensor({1, 100, 160}, 741, -2.f, 2.f), DType::kF16));
  const Tensor k = gpu.upload(quantize(random_tensor({1, 30, 160}, 742, -2.f, 2.f), DType::kF16));
  ScopedEnv path("SDSERVE_CUDA_ATTENTION", "rows");
  const long before = cuda::attention_rows_launches();
  const Tensor out = gpu.download(gpu.attention(q, k, k, 4, false));
  EXPECT_EQ(cuda::attention_rows_launches(), before) << "4 heads of 40: not the rows kernel's shape";
  const Tensor want = cpu_reference_backend().download(cpu_reference_backend().attention(
      cpu_reference_backend().upload(gpu.download(q)), cpu_reference_backend().upload(gpu.download(k)),
      cpu_reference_backend().upload(gpu.download(k)), 4, false));
  EXPECT_LE(relative_l2(out, want), 2e-3);
}

}  // namespace
}  // namespace sd::testing
