// CUDA backend behaviour outside the op table: entry points (also without a GPU), uploads
// and downloads of every dtype, the caching allocator (reuse, no cudaMalloc in steady
// state, accounting), out-of-memory as an error that leaves the backend usable, views.
#include <gtest/gtest.h>

#include <array>
#include <cmath>
#include <cstdlib>
#include <string>

#include "backend/op_cases.h"
#include "core/half.h"
#include "gpu_test_util.h"

namespace sd::testing {
namespace {

TEST(GpuEntryPoints, DeviceCountNeverFails) {
  const int n = cuda::device_count();  // must not crash without a driver
  EXPECT_GE(n, 0);
  EXPECT_EQ(cuda_available(), n > 0);
  auto bad = cuda::make_backend(n + 3);
  ASSERT_FALSE(bad.ok());
  EXPECT_TRUE(bad.status().code() == StatusCode::kNotFound || bad.status().code() == StatusCode::kUnimplemented)
      << bad.status().to_string();
  auto via_registry = make_backend(Device::cuda(n + 3));
  EXPECT_FALSE(via_registry.ok());
}

TEST(GpuBackend, IdentityAndDtypes) {
  SD_REQUIRE_GPU();
  Backend& be = gpu_backend(DType::kF16);
  EXPECT_EQ(be.device(), Device::cuda(0));
  EXPECT_EQ(be.compute_dtype(), DType::kF16);
  EXPECT_EQ(be.name().rfind("cuda:0 (", 0), 0u) << be.name();
  std::printf("  backend: %s\n", be.name().c_str());
  EXPECT_EQ(gpu_backend(DType::kBF16).compute_dtype(), DType::kBF16);
  auto f32 = cuda::make_backend(0, DType::kF32);
  EXPECT_FALSE(f32.ok());
}

TEST(GpuBackend, UploadDownloadEveryDtype) {
  SD_REQUIRE_GPU();
  Backend& be = gpu_backend(DType::kF16);
  const Tensor src = random_tensor({5, 37}, 11, -300.f, 300.f);
  for (DType host_dtype : {DType::kF32, DType::kF16, DType::kBF16}) {
    const Tensor host = convert_host(src, host_dtype);
    for (DType dev_dtype : {DType::kF32, DType::kF16, DType::kBF16}) {
      const Tensor dev = be.upload(host, dev_dtype);
      EXPECT_EQ(dev.dtype(), dev_dtype);
      EXPECT_EQ(dev.device(), Device::cuda(0));
      const Tensor back = be.download(dev);
      ASSERT_EQ(back.dtype(), DType::kF32);
      // Expected: the host values rounded to the device dtype, exactly.
      const Tensor want = to_f32_host(convert_host(to_f32_host(host), dev_dtype));
      EXPECT_EQ(max_abs_diff(back, want), 0.0) << dtype_name(host_dtype) << " -> " << dtype_name(dev_dtype);
    }
  }
  Tensor ids = Tensor::empty_host({3, 4}, DType::kI32);
  for (int i = 0; i < 12; ++i) ids.i32()[i] = i * 1000 - 5000;
  const Tensor back = be.download(be.upload(ids, DType::kF16));  // integers are copied as they are
  ASSERT_EQ(back.dtype(), DType::kI32);
  for (int i = 0; i < 12; ++i) EXPECT_EQ(back.i32()[i], ids.i32()[i]);
}

TEST(GpuBackend, PixelsU8MatchesTheHostConversionByteForByte) {
  SD_REQUIRE_GPU();
  for (DType dt : {DType::kF16, DType::kBF16, DType::kF32}) {
    Backend& be = gpu_backend(dt == DType::kBF16 ? DType::kBF16 : DType::kF16);
    Tensor host = random_tensor({2, 33, 17, 3}, 21, -1.25f, 1.25f);
    const float edges[] = {-1.f, 1.f, 0.f, NAN, INFINITY, -INFINITY, 2 * (0.5f / 255) - 1, 2 * (254.5f / 255) - 1};
    for (size_t i = 0; i < std::size(edges); ++i) host.f32()[i * 97] = edges[i];
    const Tensor dev = be.upload(host, dt);
    const Tensor px = be.download(be.to_pixels_u8(dev));
    ASSERT_EQ(px.dtype(), DType::kU8);
    ASSERT_EQ(px.shape(), host.shape());
    const Tensor vals = be.download(dev);  // the device's values as f32
    int64_t mismatches = 0;
    for (int64_t i = 0; i < host.numel(); ++i) {
      if (px.data<uint8_t>()[i] != pixels_u8_value(vals.f32()[i])) ++mismatches;
    }
    EXPECT_EQ(mismatches, 0) << dtype_name(dt);
  }
}

TEST(GpuBackend, CopyAndViews) {
  SD_REQUIRE_GPU();
  Backend& be = gpu_backend(DType::kF16);
  const Tensor a = random_tensor({6, 8, 24}, 21);
  const Tensor w = random_tensor({16, 24}, 22, -0.5f, 0.5f);
  const Tensor da = be.upload(a), dw = be.upload(w);
  Tensor dst = be.empty({6, 8, 24}, DType::kF16);
  be.copy(da, dst);
  EXPECT_EQ(max_abs_diff(be.download(dst), be.download(da)), 0.0);
  // Row slices are views at odd offsets: linear must handle the alignment.
  Backend& cpu = cpu_reference_backend();
  const Tensor aq = quantize(a, DType::kF16), wq = quantize(w, DType::kF16);
  for (int64_t begin : {1, 3}) {
    const Tensor got = be.download(be.linear(da.slice_rows(begin, 6), dw, Tensor()));
    const Tensor want = cpu.download(cpu.linear(cpu.upload(aq).slice_rows(begin, 6), cpu.upload(wq), Tensor()));
    EXPECT_LE(relative_l2(got, want), 5e-3) << "slice from " << begin;
  }
}

TEST(GpuAllocator, ReusesFreedBlocksWithoutNewDeviceAllocations) {
  SD_REQUIRE_GPU();
  Backend& be = gpu_backend(DType::kF16);
  ASSERT_TRUE(be.synchronize().ok());
  const size_t base = be.memory_in_use();
  const cuda::AllocatorStats s0 = cuda::allocator_stats(be);
  {
    Tensor t = be.empty({1024, 1024}, DType::kF16);  // 2 MiB
    EXPECT_GE(be.memory_in_use(), base + (size_t{2} << 20));
  }
  EXPECT_EQ(be.memory_in_use(), base);
  const cuda::AllocatorStats s1 = cuda::allocator_stats(be);
  { Tensor t = be.empty({1024, 1024}, DType::kF16); }
  const cuda::AllocatorStats s2 = cuda::allocator_stats(be);
  EXPECT_EQ(s2.device_mallocs, s1.device_mallocs) << "same-size block was not reused";
  EXPECT_GT(s2.cache_hits, s1.cache_hits);
  EXPECT_GE(s1.device_mallocs, s0.device_mallocs);

  // A small workload repeated: the second round makes no cudaMalloc at all.
  const Tensor x = be.upload(random_tensor({2, 16, 16, 64}, 31));
  const Tensor w = be.upload(random_tensor({64, 3, 3, 64}, 32, -0.05f, 0.05f));
  const Tensor g = be.upload(random_tensor({64}, 33, 0.5f, 1.5f));
  const Tensor b = be.upload(random_tensor({64}, 34));
  const Tensor lw = be.upload(random_tensor({64, 64}, 35, -0.1f, 0.1f));
  const auto round = [&] {
    Tensor h = be.group_norm(x, g, b, 32, 1e-5f, true);
    h = be.conv2d(h, w, b, 1, 1);
    Tensor s = h.reshape({2, 256, 64});
    Tensor att = be.attention(be.linear(s, lw, b), s, s, 2, false);
    return be.add(att, s);
  };
  (void)round();
  ASSERT_TRUE(be.synchronize().ok());
  const cuda::AllocatorStats before = cuda::allocator_stats(be);
  be.reset_memory_peak();
  (void)round();
  ASSERT_TRUE(be.synchronize().ok());
  const cuda::AllocatorStats after = cuda::allocator_stats(be);
  EXPECT_EQ(after.device_mallocs, before.device_mallocs) << "steady state called cudaMalloc";
  EXPECT_GE(be.memory_peak(), be.memory_in_use());
  EXPECT_GT(be.memory_peak(), before.in_use);
  std::printf("  allocator: %zu mallocs, %zu cache hits, %.1f MiB reserved, peak %.1f MiB\n", after.device_mallocs,
              after.cache_hits, after.reserved / 1048576.0, be.memory_peak() / 1048576.0);
}

TEST(GpuAllocator, OutOfMemoryIsAnErrorAndTheBackendStaysUsable) {
  SD_REQUIRE_GPU();
  Backend& be = gpu_backend(DType::kF16);
  bool threw = false;
  try {
    Tensor huge = be.empty({int64_t{1} << 40}, DType::kF16);  // 2 TiB
  } catch (const Error& e) {
    threw = true;
    EXPECT_EQ(e.status().code(), StatusCode::kResourceExhausted) << e.status().to_string();
    EXPECT_NE(e.status().message().find("out of GPU memory"), std::string::npos) << e.status().to_string();
    std::printf("  OOM message: %s\n", e.status().to_string().c_str());
  }
  EXPECT_TRUE(threw);
  EXPECT_TRUE(be.synchronize().ok());
  // Still computes correctly afterwards.
  const Tensor a = random_tensor({4, 100}, 41), b = random_tensor({4, 100}, 42);
  const Tensor got = be.download(be.add(be.upload(a), be.upload(b)));
  const Tensor want = cpu_reference_backend().download(
      cpu_reference_backend().add(cpu_reference_backend().upload(quantize(a, DType::kF16)),
                                  cpu_reference_backend().upload(quantize(b, DType::kF16))));
  EXPECT_LE(relative_l2(got, want), 1e-3);
  EXPECT_TRUE(be.synchronize().ok());
}

TEST(GpuBackend, AttentionIsDeterministic) {
  SD_REQUIRE_GPU();
  Backend& be = gpu_backend(DType::kF16);
  const Tensor q = be.upload(random_tensor({2, 300, 4 * 40}, 51, -2.f, 2.f));
  const Tensor k = be.upload(random_tensor({2, 300, 4 * 40}, 52, -2.f, 2.f));
  const Tensor v = be.upload(random_tensor({2, 300, 4 * 40}, 53));
  const Tensor a = be.download(be.attention(q, k, v, 4, false));
  const Tensor b = be.download(be.attention(q, k, v, 4, false));
  EXPECT_EQ(max_abs_diff(a, b), 0.0) << "attention differs between identical runs (a race?)";
}

TEST(GpuBackend, EmbeddingOutOfRangeIsNaNNotSilent) {
  SD_REQUIRE_GPU();
  Backend& be = gpu_backend(DType::kF16);
  Tensor ids = Tensor::empty_host({1, 3}, DType::kI32);
  ids.i32()[0] = 2;
  ids.i32()[1] = 99;  // out of range
  ids.i32()[2] = 0;
  const Tensor table = random_tensor({5, 8}, 61);
  const Tensor out = be.download(be.embedding(be.upload(ids, DType::kI32), be.upload(table)));
  EXPECT_TRUE(std::isnan(out.f32()[8]));
  EXPECT_TRUE(std::isfinite(out.f32()[0]) && std::isfinite(out.f32()[16]));
}

TEST(GpuBackend, MmaAndWmmaAttentionKernelsAgree) {
  SD_REQUIRE_GPU();
  for (DType dtype : {DType::kF16, DType::kBF16}) {
    setenv("SDSERVE_CUDA_ATTENTION", "wmma", 1);
    auto wmma = cuda::make_backend(0, dtype);
    unsetenv("SDSERVE_CUDA_ATTENTION");
    ASSERT_TRUE(wmma.ok()) << wmma.status().to_string();
    Backend& mma = gpu_backend(dtype);
    Backend& w = **wmma;
    struct Shape5 {
      int64_t lq, lk, heads, d;
      bool causal;
    };
    for (const Shape5& s : {Shape5{200, 200, 2, 40, false}, Shape5{129, 77, 3, 64, false}, Shape5{77, 77, 2, 64, true},
                            Shape5{100, 70, 2, 80, false}, Shape5{65, 65, 1, 160, true}, Shape5{33, 50, 4, 8, false},
                            Shape5{40, 40, 2, 20, true}}) {
      const int64_t hd = s.heads * s.d;
      const Tensor q = quantize(random_tensor({2, s.lq, hd}, 81, -2.f, 2.f), dtype);
      const Tensor k = quantize(random_tensor({2, s.lk, hd}, 82, -2.f, 2.f), dtype);
      const Tensor v = quantize(random_tensor({2, s.lk, hd}, 83), dtype);
      const int h = static_cast<int>(s.heads);
      const Tensor a = mma.download(mma.attention(mma.upload(q), mma.upload(k), mma.upload(v), h, s.causal));
      const Tensor b = w.download(w.attention(w.upload(q), w.upload(k), w.upload(v), h, s.causal));
      EXPECT_LE(relative_l2(a, b), dtype == DType::kBF16 ? 1e-2 : 2e-3)
          << dtype_name(dtype) << " lq " << s.lq << " lk " << s.lk << " d " << s.d << (s.causal ? " causal" : "");
    }
  }
}

TEST(GpuBackend, DirectConvFallbackMatchesCudnn) {
  SD_REQUIRE_GPU();
  setenv("SDSERVE_CUDA_CONV_DIRECT", "1", 1);
  auto direct = cuda::make_backend(0, DType::kF16);
  unsetenv("SDSERVE_CUDA_CONV_DIRECT");
  ASSERT_TRUE(direct.ok()) << direct.status().to_string();
  Backend& be = gpu_backend(DType::kF16);
  for (auto [cin, cout, stride] : {std::array<int, 3>{4, 32, 1}, {16, 8, 2}}) {
    const Tensor x = quantize(random_tensor({2, 12, 10, cin}, 71), DType::kF16);
    const Tensor w = quantize(random_tensor({cout, 3, 3, cin}, 72, -0.2f, 0.2f), DType::kF16);
    const Tensor b = quantize(random_tensor({cout}, 73), DType::kF16);
    const Tensor want = be.download(be.conv2d(be.upload(x), be.upload(w), be.upload(b), stride, 1));
    Backend& d = **direct;
    const Tensor got = d.download(d.conv2d(d.upload(x), d.upload(w), d.upload(b), stride, 1));
    EXPECT_LE(relative_l2(got, want), 3e-3) << "cin " << cin << " stride " << stride;
  }
}

}  // namespace
}  // namespace sd::testing
