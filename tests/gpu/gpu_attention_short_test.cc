// The persistent attention kernel for short key sequences (SDSERVE_CUDA_ATTENTION=short,
// attention_short.cu: the 77-token cross-attention) against the CPU backend and the
// multi-tile mma2 kernel: key counts 1..128 around the 80 / 128 tile edges, head dims 40 / 64 / 80 /
// 128 / 160, f16 and bf16, contiguous and strided; the timed per-shape choice and the fixed rules.
#include <gtest/gtest.h>

#include <cstdio>
#include <string>
#include <vector>

#include "backend/op_cases.h"
#include "gpu_test_util.h"
#include "scoped_env.h"

namespace sd::testing {
namespace {

struct ShortCase {
  int64_t batch, lq, lk, heads, d;
};

std::string name_of(const ShortCase& s) {
  return "b" + std::to_string(s.batch) + " lq" + std::to_string(s.lq) + " lk" + std::to_string(s.lk) + " h" +
         std::to_string(s.heads) + " d" + std::to_string(s.d);
}

TEST(GpuAttentionShortKeys, MatchesCpuAndMma2) {
  SD_REQUIRE_GPU();
  Backend& cpu = cpu_reference_backend();
  const std::vector<ShortCase> cases = {
      {2, 4096, 77, 8, 40}, {2, 1024, 77, 8, 80}, {2, 256, 77, 8, 160}, {1, 64, 77, 8, 160},
      {3, 333, 1, 4, 40},   {1, 100, 7, 2, 64},   {2, 130, 64, 5, 64},  {1, 257, 80, 4, 80},
      {1, 65, 81, 3, 128},  {2, 190, 100, 2, 40}, {1, 77, 128, 4, 160}, {2, 1000, 77, 10, 64},
      // Many heads: each CTA walks 3-4 query tiles (the prefetch two tiles ahead, a partial last tile).
      {16, 1024, 77, 8, 80}, {12, 1000, 77, 8, 40},
  };
  for (DType dtype : {DType::kF16, DType::kBF16}) {
    Backend& gpu = gpu_backend(dtype);
    for (const ShortCase& s : cases) {
      const int64_t hd = s.heads * s.d;
      const std::vector<Tensor> host = {quantize(random_tensor({s.batch, s.lq, hd}, 611, -2.f, 2.f), dtype),
                                        quantize(random_tensor({s.batch, s.lk, hd}, 612, -2.f, 2.f), dtype),
                                        quantize(random_tensor({s.batch, s.lk, hd}, 613), dtype)};
      const Tensor q = gpu.upload(host[0]), k = gpu.upload(host[1]), v = gpu.upload(host[2]);
      const int h = static_cast<int>(s.heads);
      Tensor got, again, mma2, routed;
      {
        ScopedEnv path("SDSERVE_CUDA_ATTENTION", "short");
        got = gpu.download(gpu.attention(q, k, v, h, false));
        again = gpu.download(gpu.attention(q, k, v, h, false));
      }
      {
        ScopedEnv path("SDSERVE_CUDA_ATTENTION", "mma2");
        mma2 = gpu.download(gpu.attention(q, k, v, h, false));
      }
      routed = gpu.download(gpu.attention(q, k, v, h, false));  // the timed choice (its first call times)
      const Tensor routed_again = gpu.download(gpu.attention(q, k, v, h, false));
      Tensor rules;
      {
        ScopedEnv tune("SDSERVE_CUDA_ATTENTION_TUNE", "0");  // the fixed rules
        rules = gpu.download(gpu.attention(q, k, v, h, false));
      }
      const Tensor want = cpu.download(cpu.attention(cpu.upload(host[0]), cpu.upload(host[1]), cpu.upload(host[2]), h,
                                                     false));
      const double rel = relative_l2(got, want), rel_mma2 = relative_l2(got, mma2);
      std::printf("  %-32s %s short vs cpu rel_l2 %.2e | vs mma2 %.2e\n", name_of(s).c_str(), dtype_name(dtype), rel,
                  rel_mma2);
      const double tol = dtype == DType::kBF16 ? 1e-2 : 2e-3;
      EXPECT_LE(rel, tol) << name_of(s) << " " << dtype_name(dtype);
      EXPECT_LE(rel_mma2, tol) << name_of(s) << " " << dtype_name(dtype);
      EXPECT_EQ(max_abs_diff(got, again), 0.0) << name_of(s) << ": two runs differ";
      EXPECT_LE(relative_l2(routed, want), tol) << name_of(s) << " " << dtype_name(dtype) << ": timed choice";
      EXPECT_EQ(max_abs_diff(routed, routed_again), 0.0) << name_of(s) << ": the timed choice is not kept";
      EXPECT_LE(relative_l2(rules, want), tol) << name_of(s) << " " << dtype_name(dtype) << ": fixed rules";
    }
  }
}

// Cross-attention on packed projections (q alone, k | v side by side: strided rows), and a key
// count past the one-tile limit (the other kernels take it).
TEST(GpuAttentionShortKeys, PackedProjectionsAndLongKeys) {
  SD_REQUIRE_GPU();
  Backend& gpu = gpu_backend(DType::kF16);
  for (const ShortCase& s : {ShortCase{2, 4096, 77, 8, 40}, ShortCase{2, 1024, 77, 8, 80},
                             ShortCase{1, 256, 77, 8, 160}, ShortCase{2, 300, 129, 4, 64}}) {
    const int64_t inner = s.heads * s.d;
    const Tensor qx = gpu.upload(quantize(random_tensor({s.batch, s.lq, inner}, 621, -2.f, 2.f), DType::kF16));
    const Tensor kv = gpu.upload(quantize(random_tensor({s.batch, s.lk, 3 * inner}, 622, -2.f, 2.f), DType::kF16));
    const auto run = [&](const char* path) {
      ScopedEnv env("SDSERVE_CUDA_ATTENTION", path);
      return gpu.download(gpu.attention_cols(qx, 0, kv, inner, 2 * inner, inner, static_cast<int>(s.heads), false));
    };
    const Tensor got = run("short"), want = run("mma2");
    const double rel = relative_l2(got, want);
    std::printf("  cols %-32s short vs mma2 rel_l2 %.2e\n", name_of(s).c_str(), rel);
    EXPECT_LE(rel, 2e-3) << name_of(s);
  }
}

}  // namespace
}  // namespace sd::testing
