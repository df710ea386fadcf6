// Tests of core/ and tensor/: Status plumbing, f16/bf16 conversion against exhaustive
// round trips, tensor views and the NCHW/NHWC converters.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "core/half.h"
#include "core/status.h"
#include "tensor/tensor.h"

namespace sd {
namespace {

TEST(Status, CarriesCodeAndContext) {
  Status s = NotFound("tensor 'x' missing").with_context("model.safetensors");
  EXPECT_FALSE(s.ok());
  EXPECT_EQ(s.code(), StatusCode::kNotFound);
  EXPECT_EQ(s.to_string(), "NOT_FOUND: model.safetensors: tensor 'x' missing");
}

StatusOr<int> half_of(int x) {
  if (x % 2) return InvalidArgument("odd");
  return x / 2;
}
Status use(int x, int* out) {
  SD_ASSIGN_OR_RETURN(*out, half_of(x));
  return Status::Ok();
}

TEST(Status, AssignOrReturn) {
  int v = 0;
  EXPECT_TRUE(use(8, &v).ok());
  EXPECT_EQ(v, 4);
  EXPECT_EQ(use(3, &v).code(), StatusCode::kInvalidArgument);
}

TEST(Half, EveryF16RoundTripsThroughF32) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const float f = f16_to_f32(static_cast<uint16_t>(h));
    if (std::isnan(f)) {
      EXPECT_TRUE(std::isnan(f16_to_f32(f32_to_f16(f))));
      continue;
    }
    EXPECT_EQ(f32_to_f16(f), h) << "h=" << h;
  }
}

TEST(Half, F32ToF16RoundsToNearestEven) {
  std::mt19937 gen(7);
  std::uniform_real_distribution<float> dist(-70000.f, 70000.f);
  for (int i = 0; i < 100000; ++i) {
    float f = dist(gen) * (i % 3 == 0 ? 1e-6f : 1.f);
    const uint16_t h = f32_to_f16(f);
    const float back = f16_to_f32(h);
    if (std::isinf(back)) { EXPECT_GT(std::fabs(f), 65504.f); continue; }
    // no other f16 is closer
    const float up = f16_to_f32(static_cast<uint16_t>(h + 1));
    const float down = f16_to_f32(static_cast<uint16_t>(h - 1));
    EXPECT_LE(std::fabs(back - f), std::fabs(up - f) + 1e-12f);
    EXPECT_LE(std::fabs(back - f), std::fabs(down - f) + 1e-12f);
  }
}

TEST(Half, BF16) {
  EXPECT_EQ(bf16_to_f32(f32_to_bf16(1.0f)), 1.0f);
  EXPECT_EQ(bf16_to_f32(f32_to_bf16(-3.5f)), -3.5f);
  EXPECT_NEAR(bf16_to_f32(f32_to_bf16(3.14159f)), 3.14159f, 0.01f);
}

TEST(Tensor, ViewsShareStorage) {
  std::vector<float> v(24);
  for (int i = 0; i < 24; ++i) v[i] = static_cast<float>(i) * 0.5f - 3.f;
  Tensor t = Tensor::from_vector({2, 3, 4}, v);
  Tensor r = t.reshape({6, -1});
  EXPECT_EQ(r.shape(), (Shape{6, 4}));
  Tensor s = t.slice_rows(1, 2);
  EXPECT_EQ(s.shape(), (Shape{1, 3, 4}));
  EXPECT_EQ(s.f32()[0], v[12]);
  s.f32()[0] = 42.f;
  EXPECT_EQ(t.f32()[12], 42.f);
  EXPECT_EQ(t.describe(), "f32[2,3,4] on cpu");
}

TEST(Tensor, NchwNhwcRoundTrip) {
  std::mt19937 gen(1);
  std::normal_distribution<float> n;
  std::vector<float> v(2 * 3 * 4 * 5);
  for (auto& x : v) x = n(gen);
  Tensor t = Tensor::from_vector({2, 3, 4, 5}, v);
  Tensor nhwc = nchw_to_nhwc(t);
  EXPECT_EQ(nhwc.shape(), (Shape{2, 4, 5, 3}));
  // element (b=1, c=2, h=3, w=4)
  EXPECT_EQ(nhwc.f32()[((1 * 4 + 3) * 5 + 4) * 3 + 2], v[((1 * 3 + 2) * 4 + 3) * 5 + 4]);
  EXPECT_EQ(relative_l2(nhwc_to_nchw(nhwc), t), 0.0);
  // f16 (as the loader permutes stored half-precision kernels): same positions, same bits.
  const Tensor half = convert_host(t, DType::kF16);
  const Tensor half_nhwc = nchw_to_nhwc(half);
  EXPECT_EQ(half_nhwc.dtype(), DType::kF16);
  EXPECT_EQ(relative_l2(to_f32_host(half_nhwc), nchw_to_nhwc(to_f32_host(half))), 0.0);
}

TEST(Tensor, ConvertHost) {
  Tensor t = Tensor::from_vector({3}, {1.5f, -2.25f, 1e-3f});
  Tensor h = convert_host(t, DType::kF16);
  Tensor back = to_f32_host(h);
  EXPECT_NEAR(back.f32()[2], 1e-3f, 1e-6f);
  EXPECT_EQ(back.f32()[0], 1.5f);
}

TEST(Device, Parse) {
  EXPECT_TRUE(Device::parse("cpu")->is_cpu());
  EXPECT_EQ(Device::parse("cuda:1")->index, 1);
  EXPECT_FALSE(Device::parse("gpu").ok());
  EXPECT_FALSE(Device::parse("cuda:x").ok());
}

}  // namespace
}  // namespace sd
