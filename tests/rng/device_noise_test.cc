// Tests of rng/device_noise.h on the CPU: the host fallback (CPU backend) equals the host
// generators, and the device path (Backend::randn_philox, here a naive per-element host
// reference standing in for the GPU) gets torch's launch, offset and NHWC placement right.
#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "rng/device_noise.h"
#include "rng/gpu_math.h"
#include "rng/noise.h"
#include "rng/torch_cuda_generator.h"

namespace sd {
namespace {

// Forwards every op to the CPU backend and implements randn_philox element by element from
// its definition in backend.h: element e of the draw is normal i = (e mod 4T) / T of draw
// k = e / 4T of subsequence t = e mod T.
class ReferencePhiloxBackend final : public Backend {
 public:
  ReferencePhiloxBackend() : cpu_(make_cpu_backend(1)) {}
  int calls = 0;
  bool enabled = true;

  bool randn_philox(const Tensor& out, const PhiloxRandn& p) override {
    if (!enabled) return false;
    ++calls;
    EXPECT_EQ(p.offset % 4, 0u);
    const int64_t n = out.numel(), T = p.threads;
    Tensor drawn = Tensor::empty_host(out.shape(), DType::kF32);  // drawn order
    for (int64_t e = 0; e < n; ++e) {
      const int64_t k = e / (4 * T), i = (e % (4 * T)) / T, t = e % T;
      const uint64_t low = p.offset / 4 + static_cast<uint64_t>(k);
      const auto r = philox4x32_10({static_cast<uint32_t>(low), static_cast<uint32_t>(low >> 32),
                                    static_cast<uint32_t>(t), 0u},
                                   static_cast<uint32_t>(p.seed), static_cast<uint32_t>(p.seed >> 32));
      const uint32_t a = r[static_cast<size_t>(i / 2 * 2)], b = r[static_cast<size_t>(i / 2 * 2 + 1)];
      const float u = std::fmaf(static_cast<float>(a), 2.3283064e-10f, 2.3283064e-10f / 2);
      const float v = std::fmaf(static_cast<float>(b), 2.3283064e-10f * 6.2831855f, 2.3283064e-10f * 6.2831855f / 2);
      const float s = std::sqrt(-2.0f * gpu_logf(u));
      float sin_v, cos_v;
      gpu_sincosf(v, &sin_v, &cos_v);
      drawn.f32()[e] = (i % 2 == 0 ? sin_v : cos_v) * s;
    }
    Tensor stored = drawn;
    if (p.nchw_to_nhwc) {  // drawn [B,C,H,W] -> stored [B,H,W,C]
      stored = nchw_to_nhwc(drawn.reshape({out.dim(0), out.dim(3), out.dim(1), out.dim(2)}));
    }
    cpu_->copy(cpu_->upload(stored, out.dtype()), out);
    return true;
  }

  Device device() const override { return cpu_->device(); }
  std::string name() const override { return "reference philox on " + cpu_->name(); }
  DType compute_dtype() const override { return cpu_->compute_dtype(); }
  Tensor empty(const Shape& s, DType d) override { return cpu_->empty(s, d); }
  Tensor upload(const Tensor& h, DType d) override { return cpu_->upload(h, d); }
  Tensor download(const Tensor& x) override { return cpu_->download(x); }
  void copy(const Tensor& s, const Tensor& d) override { cpu_->copy(s, d); }
  Status synchronize() override { return cpu_->synchronize(); }
  Tensor linear(const Tensor& x, const Tensor& w, const Tensor& b) override { return cpu_->linear(x, w, b); }
  Tensor conv2d(const Tensor& x, const Tensor& w, const Tensor& b, int s, int p) override {
    return cpu_->conv2d(x, w, b, s, p);
  }
  Tensor group_norm(const Tensor& x, const Tensor& g, const Tensor& b, int groups, float eps, bool silu) override {
    return cpu_->group_norm(x, g, b, groups, eps, silu);
  }
  Tensor layer_norm(const Tensor& x, const Tensor& g, const Tensor& b, float eps) override {
    return cpu_->layer_norm(x, g, b, eps);
  }
  Tensor softmax(const Tensor& x) override { return cpu_->softmax(x); }
  Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v, int h, bool c) override {
    return cpu_->attention(q, k, v, h, c);
  }
  Tensor activation(const Tensor& x, Activation a) override { return cpu_->activation(x, a); }
  Tensor geglu(const Tensor& x) override { return cpu_->geglu(x); }
  Tensor add(const Tensor& a, const Tensor& b) override { return cpu_->add(a, b); }
  Tensor mul(const Tensor& a, const Tensor& b) override { return cpu_->mul(a, b); }
  Tensor scale(const Tensor& x, float s) override { return cpu_->scale(x, s); }
  Tensor add_per_channel(const Tensor& x, const Tensor& v) override { return cpu_->add_per_channel(x, v); }
  Tensor lincomb(const std::vector<Tensor>& in, const Tensor& c) override { return cpu_->lincomb(in, c); }
  Tensor upsample_nearest2x(const Tensor& x) override { return cpu_->upsample_nearest2x(x); }
  Tensor concat_channels(const Tensor& a, const Tensor& b) override { return cpu_->concat_channels(a, b); }
  Tensor embedding(const Tensor& ids, const Tensor& t) override { return cpu_->embedding(ids, t); }
  Tensor concat_rows(const std::vector<Tensor>& parts) override { return cpu_->concat_rows(parts); }

 private:
  std::unique_ptr<Backend> cpu_;
};

// The host generator's next [1, c, h, w] draw, as NHWC [1, h, w, c].
Tensor host_nhwc(NoiseGenerator& gen, int64_t h, int64_t w, int64_t c) { return nchw_to_nhwc(gen.randn({1, c, h, w})); }

void expect_equal(const Tensor& got, const Tensor& want, const std::string& what) {
  ASSERT_EQ(got.shape(), want.shape()) << what;
  int64_t differing = 0;
  for (int64_t i = 0; i < want.numel(); ++i) differing += got.f32()[i] != want.f32()[i];
  EXPECT_EQ(differing, 0) << what << ": " << differing << " of " << want.numel() << " elements differ";
}

struct LatentShape {
  int64_t h, w, c;
};
// Small, odd-sized and one above 270336 elements (several grid-stride iterations on an H100).
const std::vector<LatentShape> kShapes = {{8, 8, 4}, {13, 7, 3}, {64, 64, 4}, {272, 256, 4}};

TEST(DeviceNoise, CpuBackendFallsBackToTheHostGenerators) {
  auto cpu = make_cpu_backend(1);
  for (NoiseSource source : {NoiseSource::kTorchCpu, NoiseSource::kTorchCuda}) {
    for (const LatentShape& s : kShapes) {
      auto gen = make_noise_generator(source, 77);
      auto ref = make_noise_generator(source, 77);
      const std::string what = std::string(noise_source_name(source)) + " " + std::to_string(s.h) + "x" +
                               std::to_string(s.w) + "x" + std::to_string(s.c);
      for (int call = 0; call < 2; ++call) {  // the second draw continues the stream
        const Tensor x = randn_nhwc(*cpu, *gen, s.h, s.w, s.c);
        EXPECT_EQ(x.dtype(), DType::kF32);
        expect_equal(cpu->download(x), host_nhwc(*ref, s.h, s.w, s.c), what + " call " + std::to_string(call));
      }
    }
  }
}

TEST(DeviceNoise, BatchDrawsEachImageFromItsOwnGenerator) {
  auto cpu = make_cpu_backend(1);
  auto g0 = make_noise_generator(NoiseSource::kTorchCuda, 5), g1 = make_noise_generator(NoiseSource::kTorchCuda, 6);
  auto r0 = make_noise_generator(NoiseSource::kTorchCuda, 5), r1 = make_noise_generator(NoiseSource::kTorchCuda, 6);
  NoiseGenerator* gens[2] = {g0.get(), g1.get()};
  const Tensor x = cpu->download(randn_nhwc(*cpu, std::span<NoiseGenerator* const>(gens), 9, 11, 4, DType::kF32));
  ASSERT_EQ(x.shape(), (Shape{2, 9, 11, 4}));
  expect_equal(x.slice_rows(0, 1), host_nhwc(*r0, 9, 11, 4), "image 0");
  expect_equal(x.slice_rows(1, 2), host_nhwc(*r1, 9, 11, 4), "image 1");
}

TEST(DeviceNoise, DevicePathMatchesTheHostModelAndAdvancesTheOffset) {
  ReferencePhiloxBackend be;
  for (const LatentShape& s : kShapes) {
    TorchCudaGenerator gen(1234567, PhiloxLaunchConfig{}), ref(1234567, PhiloxLaunchConfig{});
    const std::string what = std::to_string(s.h) + "x" + std::to_string(s.w) + "x" + std::to_string(s.c);
    for (int call = 0; call < 3; ++call) {
      const Tensor x = randn_nhwc(be, gen, s.h, s.w, s.c);
      expect_equal(be.download(x), host_nhwc(ref, s.h, s.w, s.c), what + " call " + std::to_string(call));
      EXPECT_EQ(gen.offset(), ref.offset()) << what;
    }
  }
  EXPECT_EQ(be.calls, static_cast<int>(3 * kShapes.size()));
  const uint64_t big_offset = [] {
    TorchCudaGenerator g(1, PhiloxLaunchConfig{});
    std::vector<float> buf(272 * 256 * 4);
    g.fill_randn(buf.data(), static_cast<int64_t>(buf.size()));
    return g.offset();
  }();
  // 278528 elements: one curand_normal4 per thread on 132 SMs; elements >= 270336 use .y.
  EXPECT_EQ(big_offset, 4u);
}

TEST(DeviceNoise, SmallImitatedGpuExercisesTheGridStrideLoop) {
  // A 1-SM launch makes every thread loop: checks the (t, k, i) placement on a small tensor.
  ReferencePhiloxBackend be;
  const PhiloxLaunchConfig tiny{.sm_count = 1, .max_threads_per_sm = 256, .block_size = 256};
  TorchCudaGenerator gen(9, tiny), ref(9, tiny);
  for (int call = 0; call < 2; ++call) {
    const Tensor x = randn_nhwc(be, gen, 17, 19, 4);
    expect_equal(be.download(x), host_nhwc(ref, 17, 19, 4), "call " + std::to_string(call));
    EXPECT_EQ(gen.offset(), ref.offset());
  }
  EXPECT_EQ(gen.offset(), 2u * 4 * ((17 * 19 * 4 - 1) / (256 * 4) + 1));
}

TEST(DeviceNoise, NoDeviceKernelLeavesTheStreamWhereItWas) {
  ReferencePhiloxBackend be;
  be.enabled = false;  // as a backend without the op: the host path draws, once
  TorchCudaGenerator gen(3, PhiloxLaunchConfig{}), ref(3, PhiloxLaunchConfig{});
  EXPECT_FALSE(gen.fill_randn_device(be, be.empty({1, 4, 4, 4}, DType::kF32), true));
  EXPECT_EQ(gen.offset(), 0u);
  expect_equal(be.download(randn_nhwc(be, gen, 4, 4, 4)), host_nhwc(ref, 4, 4, 4), "fallback");
  EXPECT_EQ(gen.offset(), 4u);
}

}  // namespace
}  // namespace sd
