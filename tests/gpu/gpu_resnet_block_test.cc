// Backend::resnet_block on CUDA (the persistent ResNet-block kernel, resblock_persistent.h):
// against the block's ops on the CPU backend in f32 (and the CUDA ops one by one for scale), at
// the SD 1.5 8x8 level and other shapes it takes; deterministic, replayable in a graph, and
// undefined (the op-by-op fallback) for shapes it does not take.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>

#include "backend/op_cases.h"
#include "gpu_test_util.h"
#include "scoped_env.h"

#if SD_TEST_CUDA_INTERNALS
#include <cuda_runtime.h>

#include "backend/cuda/resblock_persistent.h"
#endif

namespace sd::testing {
namespace {

struct BlockCase {
  const char* name;
  int64_t b, h, w, cx, cs, cout;  // cs: skip channels (0: none)
  int groups = 32;
  DType dtype = DType::kF16;
};

const BlockCase kBlockCases[] = {
    {"sd15_8x8_1280", 2, 8, 8, 1280, 0, 1280},            // down.3 / mid at one guided image
    {"sd15_8x8_skip_1280_1280", 2, 8, 8, 1280, 1280, 1280},  // up.0: [h | skip] with the 1x1 shortcut
    {"one_row_8x8_1280", 1, 8, 8, 1280, 0, 1280},           // 64 of the tile's 128 positions
    {"b4_4x4_256_skip_128", 4, 4, 4, 256, 128, 256, 32},    // 4 images of 16 positions a tile
    {"b2_8x8_640_to_1280", 2, 8, 8, 640, 0, 1280},          // a shortcut without a skip
    {"b1_16x8_512", 1, 16, 8, 512, 0, 512, 16},             // a non-square single image
    {"bf16_8x8_skip", 2, 8, 8, 1280, 1280, 1280, 32, DType::kBF16},
    // Images that do not divide the 128-position tile: one image a tile, two tiles.
    {"sd15_8x12_1280", 2, 8, 12, 1280, 0, 1280},            // 768x512 at one guided image
    {"sd15_12x8_skip_1280_1280", 2, 12, 8, 1280, 1280, 1280},  // 512x768, up.0
    {"b2_10x10_1280_skip_640", 2, 10, 10, 1280, 640, 1280},  // 640x640: 100 positions, ragged rows
    {"b4_8x8_1280", 4, 8, 8, 1280, 0, 1280},                // two guided images: 2 tiles of 2
    {"b3_8x8_640_to_1280", 3, 8, 8, 640, 0, 1280},          // the last tile half empty
    {"bf16_8x12_skip", 2, 8, 12, 1280, 1280, 1280, 32, DType::kBF16},
    // Images over 128 positions: bands of rows (12x12: two of 6 rows; 13x13: 7 + 6 rows, the
    // second band's box reaching past the image), four tiles.
    {"sd21_12x12_1280", 2, 12, 12, 1280, 0, 1280},            // 768x768 at one guided image
    {"sd21_12x12_skip_1280_1280", 2, 12, 12, 1280, 1280, 1280},  // up.0: 80 channels a group
    {"b1_13x13_640_to_1280", 1, 13, 13, 640, 0, 1280},
    {"b4_8x12_1280_skip_640", 4, 8, 12, 1280, 640, 1280},     // four tiles of one image
    {"b8_8x8_1280", 8, 8, 8, 1280, 0, 1280},                  // four tiles of two images
    {"bf16_12x12_skip", 2, 12, 12, 1280, 1280, 1280, 32, DType::kBF16},
};

// The host inputs of one block (f32, rounded through the case's dtype).
struct BlockInputs {
  Tensor x, skip, temb, g1, b1, w1, g2, b2, w2, cb2, ws, bs;
  int64_t col = 0;
};

BlockInputs make_inputs(const BlockCase& c) {
  const int64_t cin = c.cx + c.cs;
  BlockInputs in;
  const auto r = [&](const Shape& s, uint32_t seed, float lo, float hi) {
    return quantize(random_tensor(s, seed, lo, hi), c.dtype);
  };
  in.x = r({c.b, c.h, c.w, c.cx}, 901, -2.f, 3.f);
  if (c.cs) in.skip = r({c.b, c.h, c.w, c.cs}, 902, -1.5f, 1.f);
  in.col = 2 * c.cout;  // the block's window inside a wider stacked time projection
  in.temb = r({c.b, 4 * c.cout}, 903, -1.f, 1.f);
  in.g1 = r({cin}, 904, 0.5f, 1.5f), in.b1 = r({cin}, 905, -0.5f, 0.5f);
  const float r1 = 1.f / std::sqrt(9.f * cin), r2 = 1.f / std::sqrt(9.f * c.cout), rs = 1.f / std::sqrt(1.f * cin);
  in.w1 = r({c.cout, 3, 3, cin}, 906, -r1, r1);
  in.g2 = r({c.cout}, 907, 0.5f, 1.5f), in.b2 = r({c.cout}, 908, -0.5f, 0.5f);
  in.w2 = r({c.cout, 3, 3, c.cout}, 909, -r2, r2);
  in.cb2 = r({c.cout}, 910, -0.5f, 0.5f);
  if (cin != c.cout) in.ws = r({c.cout, cin}, 911, -rs, rs), in.bs = r({c.cout}, 912, -0.5f, 0.5f);
  return in;
}

Backend::ResnetBlockOperands operands(Backend& be, const BlockInputs& in, int groups) {
  Backend::ResnetBlockOperands o;
  const auto up = [&](const Tensor& t) { return t.defined() ? be.upload(t) : Tensor(); };
  o.x = up(in.x), o.skip = up(in.skip), o.temb_all = up(in.temb), o.time_col = in.col;
  o.gamma1 = up(in.g1), o.beta1 = up(in.b1), o.w1 = up(in.w1);
  o.gamma2 = up(in.g2), o.beta2 = up(in.b2), o.w2 = up(in.w2), o.b2 = up(in.cb2);
  o.shortcut_w = up(in.ws), o.shortcut_b = up(in.bs);
  o.groups = groups;
  return o;
}

// The block op by op (what ResnetBlock::forward_stacked runs without a fused form).
Tensor block_by_ops(Backend& be, const Backend::ResnetBlockOperands& o) {
  const Tensor in = o.skip.defined() ? be.concat_channels(o.x, o.skip) : o.x;  // [B, H, W, Cin]
  const int64_t cout = o.w1.dim(0);
  Tensor h = be.conv2d(be.group_norm(in, o.gamma1, o.beta1, o.groups, o.eps, true), o.w1, Tensor(), 1, 1);
  h = be.group_norm_add(h, o.temb_all, o.time_col, o.gamma2, o.beta2, o.groups, o.eps, true);
  const Tensor y = be.conv2d(h, o.w2, o.b2, 1, 1);
  const Tensor res = o.shortcut_w.defined() ? be.linear(in, o.shortcut_w, o.shortcut_b) : in;
  (void)cout;
  return be.add(y, res);
}

class GpuResnetBlock : public ::testing::TestWithParam<BlockCase> {};

TEST_P(GpuResnetBlock, MatchesTheOpsOnTheCpu) {
  SD_REQUIRE_GPU();
  // Every case through the kernel, also those past the default batch size it is used for.
  ScopedEnv positions("SDSERVE_CUDA_RESBLOCK_POSITIONS", "100000");
  const BlockCase c = GetParam();
  Backend& gpu = gpu_backend(c.dtype);
  if (!cuda::attention_wgmma_supported(0)) GTEST_SKIP() << "device 0 is not sm_90 (wgmma)";
  const BlockInputs in = make_inputs(c);
  Backend& cpu = cpu_reference_backend();
  const Tensor want = to_f32_host(cpu.download(block_by_ops(cpu, operands(cpu, in, c.groups))));
  const Backend::ResnetBlockOperands o = operands(gpu, in, c.groups);
  const Tensor by_ops = to_f32_host(gpu.download(block_by_ops(gpu, o)));
#if SD_TEST_CUDA_INTERNALS
  const uint64_t launches = cuda::resblock_persistent_launches();
#endif
  const Tensor y = gpu.resnet_block(o);
  ASSERT_TRUE(y.defined()) << c.name << ": the fused block did not run";
#if SD_TEST_CUDA_INTERNALS
  EXPECT_EQ(cuda::resblock_persistent_launches(), launches + 1) << c.name;
#endif
  EXPECT_EQ(y.shape(), (Shape{c.b, c.h, c.w, c.cout}));
  const Tensor got = to_f32_host(gpu.download(y));
  const double e_fused = relative_l2(got, want), e_ops = relative_l2(by_ops, want);
  std::printf("  %-26s fused rel_l2 %.2e (max %.3f)  ops %.2e\n", c.name, e_fused, max_abs_diff(got, want), e_ops);
  const double tol = c.dtype == DType::kBF16 ? 2e-2 : 4e-3;
  EXPECT_LE(e_fused, tol) << c.name;
  EXPECT_LE(e_fused, 1.5 * e_ops + 1e-4) << c.name << ": less faithful than the ops one by one";
  // Deterministic: the split reductions sum in a fixed order.
  EXPECT_EQ(max_abs_diff(to_f32_host(gpu.download(gpu.resnet_block(o))), got), 0.0) << c.name;
}

INSTANTIATE_TEST_SUITE_P(Cases, GpuResnetBlock, ::testing::ValuesIn(kBlockCases),
                         [](const ::testing::TestParamInfo<BlockCase>& i) { return std::string(i.param.name); });

TEST(GpuResnetBlockGraph, ReplaysEqualTheEagerCall) {
  SD_REQUIRE_GPU();
  if (!cuda::attention_wgmma_supported(0)) GTEST_SKIP() << "device 0 is not sm_90 (wgmma)";
  Backend& gpu = gpu_backend(DType::kF16);
  if (!gpu.supports_capture()) GTEST_SKIP() << "no graph capture on this backend";
  const BlockCase c = kBlockCases[1];
  const Backend::ResnetBlockOperands o = operands(gpu, make_inputs(c), c.groups);
  const Tensor eager = gpu.download(gpu.resnet_block(o));
  Tensor out, out2;
  auto graph = gpu.capture([&] {
    out = gpu.resnet_block(o);
    Backend::ResnetBlockOperands o2 = o;  // a second block on the first one's output
    o2.x = out, o2.skip = o.skip;
    out2 = gpu.resnet_block(o2);
  });
  ASSERT_TRUE(graph != nullptr);
  for (int i = 0; i < 3; ++i) {
    graph->replay();
    EXPECT_EQ(max_abs_diff(gpu.download(out), eager), 0.0) << "replay " << i;
  }
  Backend::ResnetBlockOperands o2 = o;
  o2.x = gpu.upload(gpu.download(out));
  EXPECT_EQ(max_abs_diff(gpu.download(out2), gpu.download(gpu.resnet_block(o2))), 0.0);
}

TEST(GpuResnetBlockFallback, UndefinedWhereTheKernelDoesNotApply) {
  SD_REQUIRE_GPU();
  Backend& gpu = gpu_backend(DType::kF16);
  // More than four position tiles (16x16 at 4 images, 8x8 at 10), channels not a multiple of 128,
  // more than 288 positions by default (16x16 at 2 images, 8x12 at 4; taken when the limit is
  // raised), and the switch off.
  const BlockCase cases[] = {{"16x16", 4, 16, 16, 1280, 0, 1280}, {"b10_8x8", 10, 8, 8, 1280, 0, 1280},
                             {"c320", 2, 8, 8, 320, 0, 320}};
  for (const BlockCase& c : cases) {
    EXPECT_FALSE(gpu.resnet_block(operands(gpu, make_inputs(c), c.groups)).defined()) << c.name;
  }
  const BlockCase past_default[] = {{"16x16_b2", 2, 16, 16, 1280, 0, 1280}, {"8x12_b4", 4, 8, 12, 1280, 0, 1280}};
  for (const BlockCase& c : past_default) {
    EXPECT_FALSE(gpu.resnet_block(operands(gpu, make_inputs(c), c.groups)).defined()) << c.name;
    if (cuda::attention_wgmma_supported(0)) {
      ScopedEnv positions("SDSERVE_CUDA_RESBLOCK_POSITIONS", "512");
      EXPECT_TRUE(gpu.resnet_block(operands(gpu, make_inputs(c), c.groups)).defined()) << c.name;
    }
  }
  ScopedEnv off("SDSERVE_CUDA_PERSISTENT_RESNET", "0");
  const BlockCase c = kBlockCases[0];
  EXPECT_FALSE(gpu.resnet_block(operands(gpu, make_inputs(c), c.groups)).defined());
}

#if SD_TEST_CUDA_INTERNALS

// The kernel's own timeline (ResblockOperands::trace): every CTA passes its stages in order, the
// result equals the backend op's, and the stage times are printed (when the last CTA got there).
TEST(GpuResnetBlockTrace, StagesRunInOrderOnEveryCta) {
  SD_REQUIRE_GPU();
  if (!cuda::attention_wgmma_supported(0)) GTEST_SKIP() << "device 0 is not sm_90 (wgmma)";
  const int grid = cuda::resblock_grid(0);
  ASSERT_GT(grid, 0);
  Backend& gpu = gpu_backend(DType::kF16);
  const char* stages[] = {"start", "gn1", "barrier", "conv1", "barrier", "gn2", "barrier", "conv2", "barrier", "out"};
  for (const BlockCase& c : {kBlockCases[0], kBlockCases[1], kBlockCases[7], kBlockCases[8], kBlockCases[13],
                             kBlockCases[14]}) {
    const BlockInputs in = make_inputs(c);
    const Backend::ResnetBlockOperands o = operands(gpu, in, c.groups);
    const int64_t cin = c.cx + c.cs;
    const Tensor y = gpu.empty({c.b, c.h, c.w, c.cout}, DType::kF16);
    const Tensor xn = gpu.empty({c.b, c.h, c.w, cin}, DType::kF16), hn = gpu.empty({c.b, c.h, c.w, c.cout}, DType::kF16);
    const Tensor partial = gpu.empty({static_cast<int64_t>(cuda::resblock_partial_floats(0))}, DType::kF32);
    const Tensor bar = gpu.upload(Tensor::zeros_host({64}, DType::kF32), DType::kF32);
    const Tensor trace = gpu.upload(Tensor::zeros_host({2 * 10 * int64_t{grid}}, DType::kF32), DType::kF32);
    cuda::ResblockShape s;
    s.b = c.b, s.h = c.h, s.w = c.w, s.ca = c.cx, s.cb = c.cs, s.cout = c.cout, s.groups = c.groups;
    s.has_shortcut = cin != c.cout;
    cuda::ResblockOperands ops;
    ops.x = o.x.raw(), ops.skip = c.cs ? o.skip.raw() : nullptr, ops.temb = o.temb_all.raw();
    ops.temb_stride = o.temb_all.dim(1), ops.temb_col = o.time_col;
    ops.gamma1 = o.gamma1.raw(), ops.beta1 = o.beta1.raw(), ops.w1 = o.w1.raw();
    ops.gamma2 = o.gamma2.raw(), ops.beta2 = o.beta2.raw(), ops.w2 = o.w2.raw(), ops.b2 = o.b2.raw();
    ops.ws = s.has_shortcut ? o.shortcut_w.raw() : nullptr, ops.bs = s.has_shortcut ? o.shortcut_b.raw() : nullptr;
    ops.y = y.raw(), ops.xn = xn.raw(), ops.hn = hn.raw(), ops.partial = partial.data<float>();
    ops.barrier = bar.data<unsigned>(), ops.trace = trace.data<unsigned long long>();
    ASSERT_TRUE(gpu.synchronize().ok());  // the inputs are on the backend's stream; the launches on the default one
    for (int rep = 0; rep < 3; ++rep) ASSERT_TRUE(cuda::launch_resblock_persistent(ops, DType::kF16, s, 0, nullptr));
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    const Tensor host = gpu.download(trace);
    const auto* t = reinterpret_cast<const unsigned long long*>(host.raw());
    unsigned long long t0 = ~0ull;
    for (int b = 0; b < grid; ++b) t0 = std::min(t0, t[b * 10]);
    std::printf("  %s (last CTA at, us):", c.name);
    for (int i = 0; i < 10; ++i) {
      unsigned long long last = 0;
      for (int b = 0; b < grid; ++b) {
        last = std::max(last, t[b * 10 + i]);
        if (i > 0) {
          EXPECT_GE(t[b * 10 + i], t[b * 10 + i - 1]) << c.name << " CTA " << b << " " << stages[i];
        }
      }
      std::printf(" %s %.1f", stages[i], static_cast<double>(last - t0) / 1000.0);
    }
    std::printf("\n");
    EXPECT_EQ(max_abs_diff(to_f32_host(gpu.download(y)), to_f32_host(gpu.download(gpu.resnet_block(o)))), 0.0) << c.name;
  }
}

#endif  // SD_TEST_CUDA_INTERNALS

}  // namespace
}  // namespace sd::testing
