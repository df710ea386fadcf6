// CPU backend behaviour outside the op table: identity, memory accounting, uploads of other
// dtypes (f16, bf16, i32), views and slices fed to ops, lincomb with per-sample
// coefficients, thread-count independence, attention_cols and shape assertions.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "backend/cpu/cpu_backend.h"
#include "backend/op_cases.h"
#include "backend/op_reference.h"
#include "core/half.h"

namespace sd::testing {
namespace {

TEST(CpuBackend, IdentityAndComputeDtype) {
  auto be = cpu::make_backend(1);
  EXPECT_EQ(be->device(), Device::cpu());
  EXPECT_EQ(be->compute_dtype(), DType::kF32);
  EXPECT_EQ(be->name(), "cpu (OpenBLAS, 1 thread)");
  auto all = cpu::make_backend(0);
  EXPECT_NE(all->name().find("threads"), std::string::npos) << all->name();
}

TEST(CpuBackend, F16UploadRoundTripConvertsToF32) {
  auto be = cpu::make_backend(0);
  const Tensor src = random_tensor({3, 17}, 7, -100.f, 100.f);
  const Tensor half = convert_host(src, DType::kF16);
  const Tensor dev = be->upload(half, DType::kF16);
  EXPECT_EQ(dev.dtype(), DType::kF32);  // the CPU computes in f32 whatever was asked
  const Tensor back = be->download(dev);
  ASSERT_EQ(back.dtype(), DType::kF32);
  ASSERT_EQ(back.shape(), src.shape());
  for (int64_t i = 0; i < src.numel(); ++i) {
    EXPECT_EQ(back.f32()[i], f16_to_f32(half.data<uint16_t>()[i])) << i;
    EXPECT_NEAR(back.f32()[i], src.f32()[i], std::fabs(src.f32()[i]) * 1e-3 + 1e-4) << i;
  }
  const Tensor bf = convert_host(src, DType::kBF16);
  const Tensor back_bf = be->download(be->upload(bf));
  for (int64_t i = 0; i < src.numel(); ++i) EXPECT_EQ(back_bf.f32()[i], bf16_to_f32(bf.data<uint16_t>()[i]));
}

TEST(CpuBackend, PixelsU8RoundHalvesUpClampAndMapNaNToZero) {
  auto be = cpu::make_backend(1);
  // x -> v = x / 2 + 1/2 -> round(v * 255): exact halves (v * 255 = k + 0.5) go up.
  const std::vector<float> xs = {-1.f, 1.f, 0.f, -3.f, 7.f, -INFINITY, INFINITY, NAN, 2 * (0.5f / 255) - 1,
                                 2 * (1.5f / 255) - 1, 2 * (254.5f / 255) - 1, -0.99f, 0.999f};
  Tensor host = Tensor::empty_host({1, static_cast<int64_t>(xs.size())}, DType::kF32);
  for (size_t i = 0; i < xs.size(); ++i) host.f32()[i] = xs[i];
  const Tensor px = be->download(be->to_pixels_u8(be->upload(host)));
  ASSERT_EQ(px.dtype(), DType::kU8);
  ASSERT_EQ(px.shape(), host.shape());
  const uint8_t* p = px.data<uint8_t>();
  EXPECT_EQ(p[0], 0);
  EXPECT_EQ(p[1], 255);
  EXPECT_EQ(p[2], 128);  // 127.5 rounds up
  EXPECT_EQ(p[3], 0);
  EXPECT_EQ(p[4], 255);
  EXPECT_EQ(p[5], 0);
  EXPECT_EQ(p[6], 255);
  EXPECT_EQ(p[7], 0);  // NaN
  for (size_t i = 8; i < xs.size(); ++i) {
    const double v = std::clamp(static_cast<double>(xs[i]) * 0.5 + 0.5, 0.0, 1.0) * 255.0;
    EXPECT_LE(std::fabs(p[i] - v), 0.5 + 1e-4) << "x " << xs[i];
  }
  // Random values: within half a step of the exact value everywhere.
  const Tensor r = random_tensor({3, 8, 8, 3}, 5, -1.3f, 1.3f);
  const Tensor rp = be->download(be->to_pixels_u8(be->upload(r)));
  for (int64_t i = 0; i < r.numel(); ++i) {
    const double v = std::clamp(static_cast<double>(r.f32()[i]) * 0.5 + 0.5, 0.0, 1.0) * 255.0;
    ASSERT_LE(std::fabs(rp.data<uint8_t>()[i] - v), 0.5 + 1e-4) << i;
  }
}

TEST(CpuBackend, UploadCopiesAndIntegersStayIntegers) {
  auto be = cpu::make_backend(0);
  Tensor host = random_tensor({4, 5}, 3);
  const Tensor dev = be->upload(host);
  const float before = host.f32()[0];
  host.f32()[0] = 1234.f;  // the device copy must not see later host writes
  EXPECT_EQ(be->download(dev).f32()[0], before);

  Tensor ids = Tensor::empty_host({2, 3}, DType::kI32);
  for (int i = 0; i < 6; ++i) ids.i32()[i] = 1000 + i;
  const Tensor dev_ids = be->upload(ids, DType::kI32);
  EXPECT_EQ(dev_ids.dtype(), DType::kI32);
  const Tensor back = be->download(dev_ids);
  ASSERT_EQ(back.dtype(), DType::kI32);
  for (int i = 0; i < 6; ++i) EXPECT_EQ(back.i32()[i], 1000 + i);
}

TEST(CpuBackend, ViewsAndRowSlicesWorkAsOpInputs) {
  auto be = cpu::make_backend(0);
  const Tensor host = random_tensor({4, 6, 5}, 11);
  const Tensor dev = be->upload(host);
  // A row slice is a view: ops on it see exactly rows [1, 3).
  const Tensor mid = dev.slice_rows(1, 3);
  EXPECT_EQ(mid.shape(), (Shape{2, 6, 5}));
  EXPECT_EQ(mid.storage(), dev.storage());
  const Tensor scaled = be->download(be->scale(mid, 2.f));
  for (int64_t i = 0; i < scaled.numel(); ++i) EXPECT_EQ(scaled.f32()[i], 2.f * host.f32()[30 + i]) << i;
  // A reshape is a view too; softmax over the reshaped last dim matches the reference.
  const Tensor flat = dev.reshape({4, 30});
  EXPECT_EQ(flat.raw(), dev.raw());
  const Tensor got = be->download(be->softmax(flat));
  const Tensor want = ref::softmax(host.reshape({4, 30}));
  EXPECT_LE(relative_l2(got, want), 1e-6);
  // copy() into a slice of a bigger tensor writes only those rows.
  Tensor dst = be->upload(Tensor::zeros_host({4, 6, 5}, DType::kF32));
  be->copy(be->upload(random_tensor({1, 6, 5}, 12)), dst.slice_rows(2, 3));
  const Tensor d = be->download(dst);
  for (int64_t i = 0; i < d.numel(); ++i) {
    if (i < 60 || i >= 90) {
      EXPECT_EQ(d.f32()[i], 0.f) << i;
    }
  }
  EXPECT_NE(d.f32()[60], 0.f);
  EXPECT_TRUE(be->synchronize().ok());
}

TEST(CpuBackend, LincombUsesPerSampleCoefficients) {
  auto be = cpu::make_backend(0);
  const Tensor a = random_tensor({2, 40000}, 21), b = random_tensor({2, 40000}, 22);
  const Tensor coeffs = Tensor::from_vector({2, 2}, {1.f, 0.5f, -2.f, 3.f});
  const Tensor got = be->download(be->lincomb({be->upload(a), be->upload(b)}, coeffs));
  for (int64_t i = 0; i < 40000; i += 997) {
    EXPECT_FLOAT_EQ(got.f32()[i], a.f32()[i] + 0.5f * b.f32()[i]) << i;
    EXPECT_FLOAT_EQ(got.f32()[40000 + i], -2.f * a.f32()[40000 + i] + 3.f * b.f32()[40000 + i]) << i;
  }
}

TEST(CpuBackend, ResultsDoNotDependOnThreadCount) {
  auto one = cpu::make_backend(1);
  auto two = cpu::make_backend(2);
  const Tensor x = random_tensor({2, 12, 12, 64}, 31, 3.f, 5.f);
  const Tensor g = random_tensor({64}, 32), bt = random_tensor({64}, 33);
  const Tensor r1 = one->download(one->group_norm(one->upload(x), one->upload(g), one->upload(bt), 32, 1e-5f, true));
  const Tensor r2 = two->download(two->group_norm(two->upload(x), two->upload(g), two->upload(bt), 32, 1e-5f, true));
  EXPECT_LE(relative_l2(r1, r2), 1e-6);
  const Tensor want = ref::group_norm(x, g, bt, 32, 1e-5f, true);
  EXPECT_LE(relative_l2(r2, want), 1e-6);
}

// attention_cols reads the windows of packed projections in place: the result equals
// attention() on split copies exactly (same kernel, same values), and so does the portable
// default (gather + attention()).
TEST(CpuBackend, AttentionColsEqualsAttentionOnSplitCopies) {
  auto be = cpu::make_backend(2);
  struct Config {
    int64_t batch, lq, lk, q_width, q_col, kv_width, k_col, v_col, inner;
    int heads;
    bool causal, shared;
  };
  const Config configs[] = {
      {2, 37, 37, 96, 0, 96, 32, 64, 32, 4, false, true},   // self-attention QKV [B, L, 3*inner]
      {2, 37, 37, 96, 0, 96, 32, 64, 32, 4, true, true},    // causal (CLIP)
      {1, 45, 77, 50, 10, 80, 40, 0, 40, 2, false, false},  // cross: q at an offset, v before k
      {2, 21, 21, 31, 3, 31, 17, 9, 12, 3, true, true},     // odd widths and offsets, head dim 4
  };
  uint32_t seed = 500;
  for (const Config& c : configs) {
    const Tensor q_src = random_tensor({c.batch, c.lq, c.q_width}, seed++, -2.f, 2.f);
    const Tensor kv_src = c.shared ? q_src : random_tensor({c.batch, c.lk, c.kv_width}, seed++, -2.f, 2.f);
    const auto window = [](const Tensor& x, int64_t col, int64_t width) {
      Tensor out = Tensor::empty_host({x.dim(0), x.dim(1), width}, DType::kF32);
      for (int64_t r = 0; r < x.dim(0) * x.dim(1); ++r) {
        for (int64_t j = 0; j < width; ++j) out.f32()[r * width + j] = x.f32()[r * x.dim(2) + col + j];
      }
      return out;
    };
    const Tensor split = be->download(be->attention(be->upload(window(q_src, c.q_col, c.inner)),
                                                    be->upload(window(kv_src, c.k_col, c.inner)),
                                                    be->upload(window(kv_src, c.v_col, c.inner)), c.heads, c.causal));
    const Tensor qd = be->upload(q_src), kvd = c.shared ? qd : be->upload(kv_src);
    const Tensor packed =
        be->download(be->attention_cols(qd, c.q_col, kvd, c.k_col, c.v_col, c.inner, c.heads, c.causal));
    const Tensor portable =
        be->download(be->Backend::attention_cols(qd, c.q_col, kvd, c.k_col, c.v_col, c.inner, c.heads, c.causal));
    ASSERT_EQ(packed.shape(), (Shape{c.batch, c.lq, c.inner}));
    EXPECT_EQ(max_abs_diff(packed, split), 0.0) << "q_col " << c.q_col << " k_col " << c.k_col;
    EXPECT_EQ(max_abs_diff(portable, split), 0.0) << "q_col " << c.q_col << " k_col " << c.k_col;
    EXPECT_GT(max_abs_diff(split, Tensor::zeros_host(split.shape(), DType::kF32)), 0.1);  // not trivially zero
  }
}

TEST(CpuBackend, MemoryAccountingTracksLiveTensors) {
  auto be = cpu::make_backend(0);
  const size_t base = be->memory_in_use();
  {
    const Tensor t = be->empty({1024, 1024}, DType::kF32);
    EXPECT_GE(be->memory_in_use(), base + 4 * 1024 * 1024);
    EXPECT_GE(be->memory_peak(), base + 4 * 1024 * 1024);
  }
  EXPECT_EQ(be->memory_in_use(), base);
  be->reset_memory_peak();
  EXPECT_EQ(be->memory_peak(), base);
}

TEST(CpuBackend, LargeBlocksAreReusedAndTensorsMayOutliveTheBackend) {
  auto be = cpu::make_backend(1);
  const void* first = nullptr;
  {
    const Tensor t = be->empty({1 << 20}, DType::kF32);  // 4 MiB
    first = t.raw();
  }
  const Tensor again = be->empty({1 << 20}, DType::kF32);
  EXPECT_EQ(again.raw(), first);  // same size class: served from the block cache
  const Tensor x = be->upload(random_tensor({2, 3}, 5));
  be.reset();  // the backend goes away; its tensors stay valid
  EXPECT_EQ(x.shape(), (Shape{2, 3}));
  EXPECT_TRUE(std::isfinite(x.f32()[5]));
}

TEST(CpuBackendDeathTest, ShapeMismatchesAssertWithShapes) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  auto be = cpu::make_backend(1);
  const Tensor x = be->upload(random_tensor({2, 3, 8}, 1));
  const Tensor w = be->upload(random_tensor({4, 7}, 2));
  EXPECT_DEATH(be->linear(x, w, Tensor()), "\\[2,3,8\\].*\\[4,7\\]");
  EXPECT_DEATH(be->add(x, be->upload(random_tensor({2, 3, 7}, 3))), "\\[2,3,8\\].*\\[2,3,7\\]");
  const Tensor img = be->upload(random_tensor({1, 4, 4, 3}, 4));
  EXPECT_DEATH(be->conv2d(img, be->upload(random_tensor({2, 3, 3, 5}, 5)), Tensor(), 1, 1), "\\[1,4,4,3\\]");
}

}  // namespace
}  // namespace sd::testing

namespace sd::testing {
namespace {

// The portable default of interleave_phases2x (download, host loop, upload) against the naive
// reference, with and without a bias: backends without their own kernel get it.
TEST(CpuBackend, DefaultInterleavePhasesMatchesTheReference) {
  auto be = make_cpu_backend();
  const Tensor y4 = random_tensor({2, 3, 5, 4 * 6}, 41);  // [B, H+1, W+1, 4C]
  const Tensor bias = random_tensor({6}, 42);
  for (bool with_bias : {true, false}) {
    const Tensor b = with_bias ? be->upload(bias) : Tensor();
    const Tensor got = be->download(be->Backend::interleave_phases2x(be->upload(y4), b));
    const Tensor want = ref::interleave_phases2x(y4, with_bias ? bias : Tensor());
    ASSERT_EQ(got.shape(), (Shape{2, 4, 8, 6}));
    EXPECT_EQ(relative_l2(got, want), 0.0) << "bias " << with_bias;
  }
}

}  // namespace
}  // namespace sd::testing
