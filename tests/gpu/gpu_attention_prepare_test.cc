// Background cuDNN SDPA plan builds (Backend::prepare_attention, attention_cudnn.cc): shapes
// prepared ahead run on the packed-projection layouts the UNet uses and match the CPU, called
// while their builds may still be running; preparing again, shapes cuDNN cannot take and shapes
// never prepared all still work; a graph capture replays what the eager call computed.
#include <gtest/gtest.h>

#include <cstdio>
#include <string>
#include <vector>

#include "backend/op_cases.h"
#include "gpu_test_util.h"
#include "scoped_env.h"

namespace sd::testing {
namespace {

struct PackedCase {
  int64_t batch, lq, lk, heads, d;
  bool self;  // q | k | v in one [B, L, 3*inner] tensor; else q [B, Lq, inner] and k | v in [B, Lk, Wkv]
};

std::string name_of(const PackedCase& c) {
  return std::string(c.self ? "self" : "cross") + " b" + std::to_string(c.batch) + " lq" + std::to_string(c.lq) +
         " lk" + std::to_string(c.lk) + " h" + std::to_string(c.heads) + " d" + std::to_string(c.d);
}

TEST(GpuAttentionPrepare, PreparedShapesMatchCpuOnPackedLayouts) {
  SD_REQUIRE_GPU();
  Backend& cpu = cpu_reference_backend();
  Backend& gpu = gpu_backend(DType::kF16);
  // Odd lengths, so that no other test of this process has built these plans already.
  const std::vector<PackedCase> cases = {{2, 333, 333, 5, 64, true},  {2, 333, 77, 5, 64, false},
                                         {1, 517, 517, 8, 40, true},  {3, 129, 77, 4, 80, false},
                                         {2, 100, 100, 2, 12, true}};  // d 12: cuDNN is not asked
  const int64_t pad = 24;  // the cross-attention's K/V rows are wider than k | v (a stacked projection)
  std::vector<Backend::AttentionShape> shapes;
  for (const PackedCase& c : cases) {
    const int64_t inner = c.heads * c.d;
    if (c.self) {
      shapes.push_back({c.batch, c.lq, c.lk, c.heads, c.d, 3 * inner, 3 * inner});
    } else {
      shapes.push_back({c.batch, c.lq, c.lk, c.heads, c.d, inner, 2 * inner + pad});
    }
  }
  gpu.prepare_attention(DType::kF16, shapes);
  gpu.prepare_attention(DType::kF16, shapes);  // again while building: nothing new starts
  for (const char* path : {"cudnn", "auto"}) {
    ScopedEnv env("SDSERVE_CUDA_ATTENTION", path);
    for (const PackedCase& c : cases) {
      const int64_t inner = c.heads * c.d;
      const int h = static_cast<int>(c.heads);
      Tensor q_src, kv_src;
      int64_t q_col = 0, k_col = 0, v_col = 0;
      if (c.self) {
        q_src = kv_src = quantize(random_tensor({c.batch, c.lq, 3 * inner}, 701, -2.f, 2.f), DType::kF16);
        k_col = inner;
        v_col = 2 * inner;
      } else {
        q_src = quantize(random_tensor({c.batch, c.lq, inner}, 702, -2.f, 2.f), DType::kF16);
        kv_src = quantize(random_tensor({c.batch, c.lk, 2 * inner + pad}, 703, -2.f, 2.f), DType::kF16);
        k_col = pad / 2;
        v_col = pad / 2 + inner;
      }
      const Tensor gq = gpu.upload(q_src), gkv = c.self ? gq : gpu.upload(kv_src);
      const Tensor got = gpu.download(gpu.attention_cols(gq, q_col, gkv, k_col, v_col, inner, h, false));
      const Tensor again = gpu.download(gpu.attention_cols(gq, q_col, gkv, k_col, v_col, inner, h, false));
      const Tensor cq = cpu.upload(q_src), ckv = c.self ? cq : cpu.upload(kv_src);
      const Tensor want = cpu.download(cpu.attention_cols(cq, q_col, ckv, k_col, v_col, inner, h, false));
      const double rel = relative_l2(got, want);
      std::printf("  %-28s %-5s vs cpu rel_l2 %.2e\n", name_of(c).c_str(), path, rel);
      EXPECT_LE(rel, 2e-3) << name_of(c) << " " << path;
      EXPECT_EQ(max_abs_diff(got, again), 0.0) << name_of(c) << " " << path << ": two runs differ";
    }
  }
}

TEST(GpuAttentionPrepare, CaptureReplaysThePreparedPlan) {
  SD_REQUIRE_GPU();
  Backend& gpu = gpu_backend(DType::kF16);
  if (!gpu.supports_capture()) GTEST_SKIP() << "no graph capture on this backend";
  ScopedEnv env("SDSERVE_CUDA_ATTENTION", "cudnn");
  const int64_t B = 2, L = 211, H = 4, D = 64, inner = H * D;
  gpu.prepare_attention(DType::kF16, {{B, L, L, H, D, 3 * inner, 3 * inner}});
  const Tensor p = gpu.upload(quantize(random_tensor({B, L, 3 * inner}, 711, -2.f, 2.f), DType::kF16));
  const Tensor eager = gpu.download(gpu.attention_cols(p, 0, p, inner, 2 * inner, inner, static_cast<int>(H), false));
  Tensor out;
  auto graph = gpu.capture([&] { out = gpu.attention_cols(p, 0, p, inner, 2 * inner, inner, static_cast<int>(H), false); });
  ASSERT_TRUE(graph != nullptr);
  graph->replay();
  EXPECT_EQ(max_abs_diff(gpu.download(out), eager), 0.0) << "the replay differs from the eager call";
}

}  // namespace
}  // namespace sd::testing
