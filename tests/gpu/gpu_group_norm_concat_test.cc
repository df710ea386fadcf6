// The CUDA group norm of a channel concatenation read in place (group_norm_vec_concat,
// group_norm_vec.h) against group_norm_vec on the materialised concat_channels: each path forced
// (fast, on-chip, two-kernel), SD decoder shapes at batch 2 and 32, odd shapes, f16/bf16, SiLU.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "backend/op_cases.h"
#include "core/status.h"
#include "gpu_test_util.h"
#include "scoped_env.h"

#if SD_TEST_CUDA_INTERNALS
#include <cuda_runtime.h>

#include "backend/cuda/cuda_backend_impl.h"
#include "backend/cuda/group_norm_vec.h"
#endif

namespace sd::testing {
namespace {

#if SD_TEST_CUDA_INTERNALS

// a [b, h, w, ca] ++ b [b, h, w, cb] with `groups` groups over ca + cb channels.
struct ConcatCase {
  int64_t b, h, w, ca, cb;
  int groups;
};

std::string describe(const ConcatCase& c, DType dtype, bool silu) {
  return std::string(dtype_name(dtype)) + " [" + std::to_string(c.b) + "," + std::to_string(c.h) + "," +
         std::to_string(c.w) + "," + std::to_string(c.ca) + "+" + std::to_string(c.cb) + "] g" +
         std::to_string(c.groups) + (silu ? " silu" : "");
}

// A group norm path forced through the environment (read by group_norm_vec on every call).
struct Path {
  const char* name;
  const char* fast;    // SDSERVE_CUDA_GN_FAST
  const char* onchip;  // SDSERVE_CUDA_GN_ONCHIP
};
constexpr Path kFast{"fast", "require", "auto"};
constexpr Path kOnchip{"onchip", "0", "require"};
constexpr Path kTwoKernel{"two-kernel", "0", "0"};
constexpr Path kPaths[] = {kFast, kOnchip, kTwoKernel};

cuda::CudaBackend& cuda_backend(DType dtype) {
  auto* cb = dynamic_cast<cuda::CudaBackend*>(&gpu_backend(dtype));
  if (!cb) {
    ADD_FAILURE() << "the GPU backend is not cuda::CudaBackend";
    std::abort();
  }
  return *cb;
}

// Device tensor [B, H, W, C] = mean[b, c] + scale * N(0, 1), drawn on the device, with
// mean[b, c] = base + 0.5 sin(0.37 c + 1.3 b + phase): every channel and batch row its own mean,
// so a value read from the wrong source, channel, position or row shows.
Tensor device_input(Backend& be, const Shape& shape, DType dtype, uint64_t seed, float base, float scale,
                    float phase) {
  const Tensor noise = be.empty(shape, dtype);
  PhiloxRandn p;
  p.seed = seed;
  p.threads = 65536;
  EXPECT_TRUE(be.randn_philox(noise, p));
  const int64_t batch = shape.front(), channels = shape.back();
  std::vector<float> mean(static_cast<size_t>(batch * channels));
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t c = 0; c < channels; ++c)
      mean[static_cast<size_t>(b * channels + c)] =
          base + 0.5f * std::sin(0.37f * static_cast<float>(c) + 1.3f * static_cast<float>(b) + phase);
  return be.add_per_channel(be.scale(noise, scale), be.upload(Tensor::from_vector({batch, channels}, mean), dtype));
}

float bits_to_f32(uint16_t h, DType dtype) {
  uint32_t u = 0;
  if (dtype == DType::kBF16) {
    u = uint32_t{h} << 16;
  } else {
    const uint32_t sign = uint32_t{h & 0x8000u} << 16, exp = (h >> 10) & 0x1fu, man = h & 0x3ffu;
    if (exp == 0x1f) {
      u = sign | 0x7f800000u | (man << 13);
    } else if (exp != 0) {
      u = sign | ((exp + 112) << 23) | (man << 13);
    } else {  // zero or subnormal: man * 2^-24
      const float f = std::ldexp(static_cast<float>(man), -24);
      return sign ? -f : f;
    }
  }
  float f;
  std::memcpy(&f, &u, sizeof(f));
  return f;
}

// The raw 16-bit elements of a device tensor (after synchronize) into a reused host buffer.
bool download_bits(const Tensor& x, std::vector<uint16_t>& out) {
  out.resize(static_cast<size_t>(x.numel()));
  return cudaMemcpy(out.data(), x.raw(), x.nbytes(), cudaMemcpyDeviceToHost) == cudaSuccess;
}

// group_norm_vec_concat(a, b) against group_norm_vec(concat_channels(a, b)) on `path`: every
// element within 2 f16 ulps-ish (f16: 2e-3, bf16: 1.6e-2 relative to max(|want|, 0.25)); the fast
// and on-chip kernels read the same values in the same order, so they are expected bitwise equal.
void check_concat(const ConcatCase& c, DType dtype, bool silu, const Path& path, uint64_t seed) {
  const std::string name = describe(c, dtype, silu) + " " + path.name;
  cuda::CudaBackend& be = cuda_backend(dtype);
  ScopedEnv fast("SDSERVE_CUDA_GN_FAST", path.fast);
  ScopedEnv onchip("SDSERVE_CUDA_GN_ONCHIP", path.onchip);
  const int64_t channels = c.ca + c.cb;
  const Tensor a = device_input(be, {c.b, c.h, c.w, c.ca}, dtype, seed, 3.f, 1.f, 0.f);
  const Tensor b = device_input(be, {c.b, c.h, c.w, c.cb}, dtype, seed + 1, -1.f, 0.2f, 2.f);
  const Tensor gamma = be.upload(random_tensor({channels}, static_cast<uint32_t>(seed + 2), 0.5f, 1.5f), dtype);
  const Tensor beta = be.upload(random_tensor({channels}, static_cast<uint32_t>(seed + 3), -0.5f, 0.5f), dtype);
  const Tensor x = be.concat_channels(a, b);
  const Tensor want = be.empty(x.shape(), dtype), got = be.empty(x.shape(), dtype);
  ASSERT_TRUE(cuda::group_norm_vec_applies(x, want, c.groups)) << name;
  bool ran = false;
  try {
    cuda::group_norm_vec(be, x, gamma, beta, want, c.groups, 1e-5f, silu);
    ran = cuda::group_norm_vec_concat(be, a, b, gamma, beta, got, c.groups, 1e-5f, silu);
  } catch (const Error& e) {
    ADD_FAILURE() << name << ": " << e.what();
    return;
  }
  ASSERT_TRUE(ran) << name << ": group_norm_vec_concat did not apply";
  ASSERT_TRUE(be.synchronize().ok()) << name;
  static std::vector<uint16_t> got_bits, want_bits;
  ASSERT_TRUE(download_bits(got, got_bits) && download_bits(want, want_bits)) << name;
  const double rel = dtype == DType::kBF16 ? 1.6e-2 : 2e-3;
  int64_t differing = 0, bad = 0, first_bad = -1;
  double max_diff = 0;
  constexpr size_t kBlock = 4096;  // equal blocks skipped by memcmp
  for (size_t i0 = 0; i0 < got_bits.size(); i0 += kBlock) {
    const size_t i1 = std::min(got_bits.size(), i0 + kBlock);
    if (std::memcmp(&got_bits[i0], &want_bits[i0], (i1 - i0) * sizeof(uint16_t)) == 0) continue;
    for (size_t i = i0; i < i1; ++i) {
      if (got_bits[i] == want_bits[i]) continue;
      ++differing;
      const float g = bits_to_f32(got_bits[i], dtype), w = bits_to_f32(want_bits[i], dtype);
      const double d = std::fabs(static_cast<double>(g) - w);
      max_diff = std::max(max_diff, std::isnan(d) ? 1e30 : d);
      if (!(d <= rel * std::max(std::fabs(static_cast<double>(w)), 0.25))) {  // NaN fails too
        if (first_bad < 0) first_bad = static_cast<int64_t>(i);
        ++bad;
      }
    }
  }
  if (bad > 0) {
    const int64_t i = first_bad, cch = i % channels, pos = i / channels;
    ADD_FAILURE() << name << ": " << bad << " of " << got_bits.size() << " elements off (" << differing
                  << " differ, max |diff| " << max_diff << "); first at position " << pos << " channel " << cch
                  << ": got " << bits_to_f32(got_bits[i], dtype) << " want " << bits_to_f32(want_bits[i], dtype);
  }
}

// The UNet decoder's concatenations (up path ++ skip) at SD 1.5 / 2.1 sizes, 32 groups.
std::vector<ConcatCase> decoder_cases(int64_t batch) {
  std::vector<ConcatCase> v = {{batch, 8, 8, 1280, 1280, 32},  {batch, 16, 16, 1280, 1280, 32},
                               {batch, 16, 16, 1280, 640, 32}, {batch, 32, 32, 1280, 640, 32},
                               {batch, 32, 32, 640, 640, 32},  {batch, 32, 32, 640, 320, 32},
                               {batch, 64, 64, 640, 320, 32},  {batch, 64, 64, 320, 320, 32}};
  return v;
}

TEST(GpuGroupNormConcat, DecoderShapesAtBatch2) {
  SD_REQUIRE_GPU();
  uint64_t seed = 100;
  for (const ConcatCase& c : decoder_cases(2))
    for (const Path& path : kPaths)
      for (DType dtype : {DType::kF16, DType::kBF16})
        for (bool silu : {true, false}) check_concat(c, dtype, silu, path, seed += 4);
}

// Batch 16 with guidance (32 rows): every path at every shape, dtype and SiLU taking turns (each
// path sees all four combinations).
TEST(GpuGroupNormConcat, DecoderShapesAtBatch32) {
  SD_REQUIRE_GPU();
  uint64_t seed = 200;
  int turn = 0;
  for (const ConcatCase& c : decoder_cases(32)) {
    for (const Path& path : kPaths) {
      const int k = turn++ % 4;
      check_concat(c, k < 2 ? DType::kF16 : DType::kBF16, k % 2 == 0, path, seed += 4);
    }
    ++turn;
  }
}

// Groups straddling the boundary (and a group's first channel in the other source than a thread's
// chunk: 3 channels a group), positions no multiple of anything, batches 1, 3 and 32.
TEST(GpuGroupNormConcat, OddShapes) {
  SD_REQUIRE_GPU();
  uint64_t seed = 300;
  for (const ConcatCase& c : {ConcatCase{3, 5, 7, 40, 24, 4}, ConcatCase{3, 9, 13, 8, 88, 32},
                              ConcatCase{2, 3, 11, 16, 48, 8}, ConcatCase{1, 1, 1, 8, 8, 2},
                              ConcatCase{2, 13, 11, 1280, 640, 32}, ConcatCase{3, 7, 9, 320, 640, 32},
                              ConcatCase{32, 3, 5, 40, 24, 4}, ConcatCase{3, 17, 1, 960, 320, 32}})
    for (const Path& path : kPaths)
      for (DType dtype : {DType::kF16, DType::kBF16})
        for (bool silu : {true, false}) check_concat(c, dtype, silu, path, seed += 4);
}

// On-chip: every slice width of 1280 + 640 (slices inside a, inside b, straddling c1, the whole
// row), both load paths (bulk copies: whole-row slices only).
TEST(GpuGroupNormConcat, OnchipSlicesAndLoads) {
  SD_REQUIRE_GPU();
  uint64_t seed = 400;
  for (const char* load : {"bulk", "async"}) {
    ScopedEnv l("SDSERVE_CUDA_GN_ONCHIP_LOAD", load);
    for (int slice : {120, 240, 480, 960, 1920}) {
      ScopedEnv s("SDSERVE_CUDA_GN_ONCHIP_SLICE", std::to_string(slice));
      SCOPED_TRACE(std::string(load) + " slice " + std::to_string(slice));
      check_concat({2, 8, 8, 1280, 640, 32}, DType::kF16, true, kOnchip, seed += 4);
      check_concat({3, 4, 5, 1280, 640, 32}, DType::kBF16, false, kOnchip, seed += 4);
    }
    for (int slice : {16, 32, 64}) {
      ScopedEnv s("SDSERVE_CUDA_GN_ONCHIP_SLICE", std::to_string(slice));
      SCOPED_TRACE(std::string(load) + " slice " + std::to_string(slice));
      check_concat({3, 5, 7, 40, 24, 4}, DType::kF16, true, kOnchip, seed += 4);
    }
    ScopedEnv s("SDSERVE_CUDA_GN_ONCHIP_SLICE", "2560");
    ScopedEnv k("SDSERVE_CUDA_GN_ONCHIP_CLUSTER", "3");
    SCOPED_TRACE(std::string(load) + " slice 2560, cluster 3");
    check_concat({2, 8, 8, 1280, 1280, 32}, DType::kF16, true, kOnchip, seed += 4);
  }
}

// Fast: every slice count of 1280 + 640, and the batch in waves (registers with and without the
// next wave's prefetch, streamed, forced rows a wave).
TEST(GpuGroupNormConcat, FastSlicesAndWaves) {
  SD_REQUIRE_GPU();
  uint64_t seed = 500;
  for (int slices : {1, 2, 4, 8, 16}) {
    ScopedEnv s("SDSERVE_CUDA_GN_FAST_SLICES", std::to_string(slices));
    SCOPED_TRACE("slices " + std::to_string(slices));
    check_concat({2, 16, 16, 1280, 640, 32}, DType::kF16, true, kFast, seed += 4);
    check_concat({3, 5, 9, 1280, 640, 32}, DType::kBF16, false, kFast, seed += 4);
  }
  struct Waves {
    const char* mode;
    const char* prefetch;
    const char* z;
  };
  for (const Waves& w : {Waves{"regs", "1", ""}, Waves{"regs", "0", ""}, Waves{"stream", "1", ""},
                         Waves{"stream", "1", "5"}, Waves{"regs", "1", "7"}}) {
    ScopedEnv m("SDSERVE_CUDA_GN_FAST_WAVES", w.mode);
    ScopedEnv p("SDSERVE_CUDA_GN_FAST_PREFETCH", w.prefetch);
    ScopedEnv z("SDSERVE_CUDA_GN_FAST_Z", w.z);
    SCOPED_TRACE(std::string("waves ") + w.mode + " prefetch " + w.prefetch + " z " + w.z);
    check_concat({32, 16, 16, 1280, 640, 32}, DType::kF16, true, kFast, seed += 4);
    check_concat({32, 32, 32, 640, 320, 32}, DType::kBF16, false, kFast, seed += 4);
  }
}

// Where it does not apply it enqueues nothing and says so.
TEST(GpuGroupNormConcat, RefusesWhatDoesNotApply) {
  SD_REQUIRE_GPU();
  cuda::CudaBackend& be = cuda_backend(DType::kF16);
  const auto t = [&](Shape s, DType dt = DType::kF16) { return be.empty(s, dt); };
  const Tensor g = t({64}), bt = t({64});
  const Tensor y = t({2, 4, 4, 64});
  EXPECT_TRUE(cuda::group_norm_vec_concat(be, t({2, 4, 4, 40}), t({2, 4, 4, 24}), g, bt, y, 4, 1e-5f, true));
  EXPECT_FALSE(cuda::group_norm_vec_concat(be, t({2, 4, 4, 36}), t({2, 4, 4, 28}), g, bt, y, 4, 1e-5f, true));
  EXPECT_FALSE(cuda::group_norm_vec_concat(be, t({2, 4, 4, 40}), t({2, 4, 5, 24}), g, bt, y, 4, 1e-5f, true));
  EXPECT_FALSE(cuda::group_norm_vec_concat(be, t({2, 4, 4, 40}), t({2, 4, 4, 16}), g, bt, y, 4, 1e-5f, true));
  EXPECT_FALSE(cuda::group_norm_vec_concat(be, t({2, 4, 4, 40}), t({2, 4, 4, 24}), g, bt, y, 3, 1e-5f, true));
  EXPECT_FALSE(cuda::group_norm_vec_concat(be, t({2, 4, 4, 40}, DType::kF32), t({2, 4, 4, 24}, DType::kF32),
                                           t({64}, DType::kF32), t({64}, DType::kF32), t({2, 4, 4, 64}, DType::kF32),
                                           4, 1e-5f, true));
  EXPECT_FALSE(cuda::group_norm_vec_concat(be, t({2, 4, 4, 40}), t({2, 4, 4, 24}, DType::kBF16), g, bt, y, 4, 1e-5f,
                                           true));
  EXPECT_TRUE(be.synchronize().ok());
}

#else
TEST(GpuGroupNormConcat, NeedsTheCudaBackend) { GTEST_SKIP() << "sdserve was built without the CUDA backend"; }
#endif

}  // namespace
}  // namespace sd::testing
