// Side work (Backend::begin_side / end_side / join_side): a decoder ResNet block's shortcut on the
// CUDA backend's second stream gives the same bytes as the same ops in order — eager, replayed from
// a captured graph (two branches), with the side inputs dropped and their memory churned before the
// join — and the allocator holds released blocks back until the join.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "backend/op_cases.h"
#include "gpu_test_util.h"

#if SD_TEST_CUDA_INTERNALS
#include "backend/cuda/cuda_backend_impl.h"
#include "backend/cuda/device_allocator.h"
#endif

namespace sd::testing {
namespace {

// One decoder ResNet block's dataflow at 2 rows: [a | b] -> shortcut (side) and group norm ->
// conv -> group norm -> conv + shortcut.
struct Block {
  Tensor a, b;             // [2, hw, hw, ca], [2, hw, hw, cb]
  Tensor ws, bs;           // shortcut [n, ca + cb], [n]
  Tensor g1, be1, g2, be2;  // group norms' gamma / beta
  Tensor w1, b1, w2, b2;   // 3x3 convs [n, 3, 3, ca + cb] / [n, 3, 3, n], biases [n]
};

Block make_block(Backend& gpu, int64_t hw, int64_t ca, int64_t cb, int64_t n, uint32_t seed) {
  const int64_t c = ca + cb;
  const auto up = [&](const Shape& s, uint32_t k, float lo, float hi) {
    return gpu.upload(quantize(random_tensor(s, seed + k, lo, hi), DType::kF16));
  };
  const float r1 = 1.f / std::sqrt(9.f * static_cast<float>(c)), r2 = 1.f / std::sqrt(9.f * static_cast<float>(n));
  const float rs = 1.f / std::sqrt(static_cast<float>(c));
  return {up({2, hw, hw, ca}, 1, -2.f, 2.f), up({2, hw, hw, cb}, 2, -1.f, 1.f), up({n, c}, 3, -rs, rs),
          up({n}, 4, -0.5f, 0.5f),          up({c}, 5, 0.5f, 1.5f),            up({c}, 6, -0.5f, 0.5f),
          up({n}, 7, 0.5f, 1.5f),           up({n}, 8, -0.5f, 0.5f),           up({n, 3, 3, c}, 9, -r1, r1),
          up({n}, 10, -0.2f, 0.2f),         up({n, 3, 3, n}, 11, -r2, r2),     up({n}, 12, -0.2f, 0.2f)};
}

// side: the shortcut as side work; churn: after end_side, drop this call's own copies of the side
// inputs and fill fresh blocks of their size on the main stream (a block handed out again while
// the side stream reads it would change the result).
Tensor run_block(Backend& gpu, const Block& k, bool side, bool churn) {
  Tensor a = gpu.add(k.a, gpu.scale(k.a, 0.f)), b = gpu.add(k.b, gpu.scale(k.b, 0.f));  // own copies
  if (side) gpu.begin_side(a.dim(0));
  const Tensor shortcut = gpu.concat_linear(a, b, k.ws, k.bs);  // [2, hw, hw, n]
  if (side) gpu.end_side();
  Tensor h = gpu.concat_norm(a, b, k.g1, k.be1, 32, 1e-5f, true);  // [2, hw, hw, ca + cb]
  if (churn) {
    const Shape sa = a.shape(), sb = b.shape();
    a = Tensor(), b = Tensor();
    for (int i = 0; i < 3; ++i) {
      Tensor fa = gpu.upload(random_tensor(sa, 900 + i, 50.f, 60.f), DType::kF16);
      Tensor fb = gpu.upload(random_tensor(sb, 910 + i, 50.f, 60.f), DType::kF16);
      h = gpu.add(h, gpu.scale(gpu.concat_channels(fa, fb), 0.f));  // reads them on the main stream
    }
  }
  h = gpu.conv2d(h, k.w1, k.b1, 1, 1);                     // [2, hw, hw, n]
  h = gpu.group_norm(h, k.g2, k.be2, 32, 1e-5f, true);
  if (side) gpu.join_side();
  return gpu.conv2d_fused(h, k.w2, k.b2, 1, 1, Tensor(), shortcut);
}

struct SideCase {
  const char* name;
  int64_t hw, ca, cb, n;
};

const SideCase kSideCases[] = {
    {"8x8_1280_1280", 8, 1280, 1280, 1280},
    {"16x16_1280_640", 16, 1280, 640, 1280},
    {"32x32_640_320", 32, 640, 320, 640},
    {"64x64_320_320", 64, 320, 320, 320},
};

class GpuSideStream : public ::testing::TestWithParam<SideCase> {};

TEST_P(GpuSideStream, ShortcutBesideEqualsInOrderEagerAndReplayed) {
  SD_REQUIRE_GPU();
  const SideCase c = GetParam();
  Backend& gpu = gpu_backend(DType::kF16);
  const Block k = make_block(gpu, c.hw, c.ca, c.cb, c.n, 7100);
  const Tensor want = gpu.download(run_block(gpu, k, false, false));  // also tunes every shape
  // The CPU backend's f32 ops on the same inputs: the in-order result is the block's.
  Backend& cpu = cpu_reference_backend();
  const auto host = [&](const Tensor& t) { return to_f32_host(gpu.download(t)); };
  Tensor ch = cpu.group_norm(cpu.concat_channels(host(k.a), host(k.b)), host(k.g1), host(k.be1), 32, 1e-5f, true);
  ch = cpu.group_norm(cpu.conv2d(ch, host(k.w1), host(k.b1), 1, 1), host(k.g2), host(k.be2), 32, 1e-5f, true);
  const Tensor sc = cpu.linear(cpu.concat_channels(host(k.a), host(k.b)), host(k.ws), host(k.bs));
  const Tensor ref = cpu.add(cpu.conv2d(ch, host(k.w2), host(k.b2), 1, 1), sc);
  EXPECT_LE(relative_l2(to_f32_host(want), ref), 3e-3) << c.name;

  for (const bool churn : {false, true}) {
    for (int rep = 0; rep < 3; ++rep) {
      const Tensor got = gpu.download(run_block(gpu, k, true, churn));
      ASSERT_EQ(max_abs_diff(got, want), 0.0) << c.name << " eager, churn " << churn << ", run " << rep;
    }
  }
  if (!gpu.supports_capture()) return;
  Tensor out;
  auto graph = gpu.capture([&] { out = run_block(gpu, k, true, true); });
  for (int rep = 0; rep < 3; ++rep) {
    graph->replay();
    ASSERT_EQ(max_abs_diff(gpu.download(out), want), 0.0) << c.name << " replay " << rep;
  }
}

INSTANTIATE_TEST_SUITE_P(Cases, GpuSideStream, ::testing::ValuesIn(kSideCases),
                         [](const ::testing::TestParamInfo<SideCase>& i) { return std::string(i.param.name); });

// Rows over the limit run in order; the calls still pair up, and a begin_side after an op that
// threw in the middle (state left over) settles instead of asserting.
TEST(GpuSideStreamState, InOrderAboveTheRowLimitAndSettlesLeftovers) {
  SD_REQUIRE_GPU();
  Backend& gpu = gpu_backend(DType::kF16);
  const Block k = make_block(gpu, 16, 640, 640, 640, 7200);
  const Tensor want = gpu.download(run_block(gpu, k, false, false));
  gpu.begin_side(1 << 20);  // far above any limit: in order
  const Tensor x = gpu.concat_linear(k.a, k.b, k.ws, k.bs);
  gpu.end_side();
  gpu.join_side();
  EXPECT_EQ(max_abs_diff(gpu.download(x), gpu.download(gpu.concat_linear(k.a, k.b, k.ws, k.bs))), 0.0);
  gpu.begin_side(2);
  (void)gpu.concat_linear(k.a, k.b, k.ws, k.bs);
  // no end_side / join_side: as if an op had thrown; the next begin_side settles it
  EXPECT_EQ(max_abs_diff(gpu.download(run_block(gpu, k, true, false)), want), 0.0);
}

#if SD_TEST_CUDA_INTERNALS

TEST(GpuSideStreamState, SideOpsRunOnTheSecondStream) {
  SD_REQUIRE_GPU();
  auto* cb = dynamic_cast<cuda::CudaBackend*>(&gpu_backend(DType::kF16));
  ASSERT_NE(cb, nullptr);
  const cudaStream_t main = cb->stream();
  cb->begin_side(2);
  const cudaStream_t side = cb->stream();
  cb->end_side();
  EXPECT_EQ(cb->stream(), main);
  cb->join_side();
  EXPECT_NE(side, main) << "SDSERVE_CUDA_SIDE_STREAM is on by default for 2 rows";
}

TEST(GpuAllocatorHold, ReleasedBlocksComeBackOnlyAfterResume) {
  SD_REQUIRE_GPU();
  cuda::DeviceAllocator alloc(0);
  const size_t bytes = size_t{1} << 20;
  void* a = alloc.allocate(bytes);
  alloc.hold_releases();
  alloc.hold_releases();  // two holders
  alloc.release(a);
  void* b = alloc.allocate(bytes);
  EXPECT_NE(b, a) << "a held block was handed out";
  alloc.resume_releases();
  void* c = alloc.allocate(bytes);
  EXPECT_NE(c, a) << "released before the last holder resumed";
  alloc.resume_releases();
  void* d = alloc.allocate(bytes);
  EXPECT_EQ(d, a) << "the held block is cached after the last resume";
  // After hold_only_earlier(), blocks allocated later come back at once; older ones stay held.
  alloc.hold_releases();
  alloc.hold_only_earlier();
  void* e = alloc.allocate(bytes);
  alloc.release(e);
  void* f = alloc.allocate(bytes);
  EXPECT_EQ(f, e) << "a block allocated after hold_only_earlier was held";
  alloc.release(d);
  void* g = alloc.allocate(bytes);
  EXPECT_NE(g, d) << "a block older than hold_only_earlier was handed out while held";
  alloc.resume_releases();
  for (void* p : {b, c, f, g}) alloc.release(p);
}

#endif  // SD_TEST_CUDA_INTERNALS

}  // namespace
}  // namespace sd::testing
