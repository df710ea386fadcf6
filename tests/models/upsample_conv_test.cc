// UpsampleConv (sub-pixel form of nearest 2x upsample + 3x3 conv) against the plain
// upsample-then-convolve path on the CPU backend in f32: even and odd target sizes, the
// switch SDSERVE_SUBPIXEL_UPSAMPLE=0, the phase kernels themselves and recording mode.
#include <gtest/gtest.h>

#include "backend/backend.h"
#include "io/weights.h"
#include "models/loader.h"
#include "models/upsample_conv.h"
#include "scoped_env.h"

namespace sd {
namespace {

struct Layer {
  std::unique_ptr<WeightSource> source;
  Tensor w_oihw, bias;  // host f32 [C, C, 3, 3], [C]
};

Layer make_layer(int64_t c, uint32_t seed) {
  Layer l;
  l.w_oihw = uniform_random_host({c, c, 3, 3}, seed, -0.5f, 0.5f);
  l.bias = uniform_random_host({c}, seed + 1, -0.5f, 0.5f);
  l.source = make_memory_weight_source({{"up.conv.weight", l.w_oihw}, {"up.conv.bias", l.bias}}, "test-weights");
  return l;
}

// The definition: nearest resize to (oh, ow), then the 3x3 conv with padding 1.
Tensor reference(Backend& be, const Layer& l, const Tensor& x, int64_t oh, int64_t ow) {
  const Tensor w = be.upload(nchw_to_nhwc(l.w_oihw));  // [C, 3, 3, C]
  return be.download(be.conv2d(upsample_to(be, x, oh, ow), w, be.upload(l.bias), 1, 1));
}

TEST(UpsampleConv, MatchesUpsampleThenConvAtEvenAndOddSizes) {
  auto be = make_cpu_backend();
  const int64_t C = 6;
  Layer layer = make_layer(C, 11);
  ModelLoader loader(*layer.source, *be);
  UpsampleConv up;
  up.load(loader, "up.conv", C, /*keep_3x3=*/true);
  ASSERT_TRUE(loader.status().ok()) << loader.status().to_string();
  ASSERT_TRUE(up.w_phases.defined());
  EXPECT_EQ(up.w_phases.shape(), (Shape{4 * C, 2, 2, C}));
  const Tensor x = be->upload(uniform_random_host({2, 5, 7, C}, 3));  // [B, H, W, C]
  for (auto [oh, ow] : {std::pair<int64_t, int64_t>{10, 14}, {9, 14}, {10, 13}, {9, 13}}) {
    const Tensor got = be->download(up(*be, x, oh, ow));
    const Tensor want = reference(*be, layer, x, oh, ow);
    ASSERT_EQ(got.shape(), want.shape()) << oh << "x" << ow;
    EXPECT_LE(relative_l2(got, want), 1e-6) << oh << "x" << ow;
  }
}

TEST(UpsampleConv, OneByOneImageAndSinglePhaseChannels) {
  auto be = make_cpu_backend();
  Layer layer = make_layer(1, 21);
  ModelLoader loader(*layer.source, *be);
  UpsampleConv up;
  up.load(loader, "up.conv", 1, /*keep_3x3=*/false);
  ASSERT_TRUE(loader.status().ok());
  EXPECT_FALSE(up.conv.w.defined());  // not kept: exact 2x targets only
  for (auto [h, w] : {std::pair<int64_t, int64_t>{1, 1}, {1, 4}, {3, 2}}) {
    const Tensor x = be->upload(uniform_random_host({1, h, w, 1}, 5));
    const Tensor got = be->download(up(*be, x, 2 * h, 2 * w));
    EXPECT_LE(relative_l2(got, reference(*be, layer, x, 2 * h, 2 * w)), 1e-6) << h << "x" << w;
  }
}

TEST(UpsampleConv, SwitchOffKeepsThePlainPath) {
  testing::ScopedEnv off("SDSERVE_SUBPIXEL_UPSAMPLE", "0");
  EXPECT_FALSE(subpixel_upsample_enabled());
  auto be = make_cpu_backend();
  Layer layer = make_layer(4, 31);
  ModelLoader loader(*layer.source, *be);
  UpsampleConv up;
  up.load(loader, "up.conv", 4, /*keep_3x3=*/false);
  ASSERT_TRUE(loader.status().ok());
  EXPECT_FALSE(up.w_phases.defined());
  ASSERT_TRUE(up.conv.w.defined());
  const Tensor x = be->upload(uniform_random_host({1, 3, 4, 4}, 7));
  EXPECT_LE(relative_l2(be->download(up(*be, x, 6, 8)), reference(*be, layer, x, 6, 8)), 1e-6);
}

TEST(UpsampleConv, PhaseKernelsSumTheTapsEachPhaseSees) {
  // All-ones 3x3 kernel: a phase tap sums 1, 2 or 4 of them. Parity 0 along an axis: taps {w0},
  // {w1 + w2}; parity 1: {w0 + w1}, {w2}.
  Tensor w = Tensor::from_vector({1, 1, 3, 3}, std::vector<float>(9, 1.f));
  const Tensor p = subpixel_phase_weights(w);  // [4, 2, 2, 1]
  ASSERT_EQ(p.shape(), (Shape{4, 2, 2, 1}));
  const float want[4][4] = {{1, 2, 2, 4}, {2, 1, 4, 2}, {2, 4, 1, 2}, {4, 2, 2, 1}};
  for (int ph = 0; ph < 4; ++ph)
    for (int t = 0; t < 4; ++t) EXPECT_EQ(p.f32()[ph * 4 + t], want[ph][t]) << "phase " << ph << " tap " << t;
  // Distinct taps: phase (1, 0), tap (row 0, col 1) = w[0][1] + w[0][2] + w[1][1] + w[1][2].
  std::vector<float> v(9);
  for (int i = 0; i < 9; ++i) v[static_cast<size_t>(i)] = static_cast<float>(1 << i);
  const Tensor q = subpixel_phase_weights(Tensor::from_vector({1, 1, 3, 3}, v));
  EXPECT_EQ(q.f32()[2 * 4 + 1], static_cast<float>((1 << 1) + (1 << 2) + (1 << 4) + (1 << 5)));
}

TEST(UpsampleConv, RecordingModeRecordsTheStoredNames) {
  auto be = make_cpu_backend();
  std::vector<std::pair<std::string, Shape>> record;
  ModelLoader loader(&record, *be);
  UpsampleConv up;
  up.load(loader, "up.conv", 8, /*keep_3x3=*/true);
  ASSERT_EQ(record.size(), 2u);
  EXPECT_EQ(record[0].first, "up.conv.weight");
  EXPECT_EQ(record[0].second, (Shape{8, 8, 3, 3}));
  EXPECT_EQ(record[1].first, "up.conv.bias");
}

}  // namespace
}  // namespace sd
