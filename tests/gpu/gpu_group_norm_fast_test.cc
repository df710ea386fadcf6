// The CUDA one-pass register group norm (group_norm_fast.cu) against the CPU backend and the
// two-kernel path: every UNet shape at batch 2 and 32 (waves of rows), batches 1/3, odd positions,
// f16/bf16, SiLU, the time-embedding add, mean >> std data, forced CTA counts and rows a wave,
// repeat determinism and graph replay.
#include <gtest/gtest.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "backend/op_cases.h"
#include "core/status.h"
#include "gpu_test_util.h"
#include "scoped_env.h"

namespace sd::testing {
namespace {

struct GnShape {
  Shape x;  // [B, H, W, C] or [B, L, C]
  int groups;
};

std::string describe(const GnShape& s, DType dtype, bool silu, bool add) {
  std::string d = dtype_name(dtype);
  d += " [";
  for (int64_t v : s.x) d += std::to_string(v) + ",";
  d.back() = ']';
  d += " g" + std::to_string(s.groups) + (silu ? " silu" : "") + (add ? " add" : "");
  return d;
}

// Host inputs rounded through dtype: x uniform(lo, hi), gamma, beta, and the time-embedding
// source add_src [B, C + 24] whose window starts at column 16.
struct GnInputs {
  Tensor x, gamma, beta, add_src;
};
constexpr int64_t kAddCol = 16;

GnInputs make_inputs(const GnShape& s, DType dtype, uint32_t seed, float lo = -2.f, float hi = 3.f) {
  const int64_t c = s.x.back();
  return {quantize(random_tensor(s.x, seed, lo, hi), dtype), quantize(random_tensor({c}, seed + 1, 0.5f, 1.5f), dtype),
          quantize(random_tensor({c}, seed + 2, -0.5f, 0.5f), dtype),
          quantize(random_tensor({s.x[0], c + 24}, seed + 3, -1.f, 1.f), dtype)};
}

Tensor gn_op(Backend& be, const Tensor& x, const Tensor& g, const Tensor& b, const Tensor& add_src,
             const GnShape& s, bool silu, bool add) {
  if (add) return be.group_norm_add(x, add_src, kAddCol, g, b, s.groups, 1e-5f, silu);
  return be.group_norm(x, g, b, s.groups, 1e-5f, silu);
}

Tensor run_gn(Backend& be, const GnInputs& in, const GnShape& s, bool silu, bool add) {
  return be.download(gn_op(be, be.upload(in.x), be.upload(in.gamma), be.upload(in.beta),
                           add ? be.upload(in.add_src) : Tensor(), s, silu, add));
}

// The GPU result with SDSERVE_CUDA_GN_FAST=fast and SDSERVE_CUDA_GN_ONCHIP=onchip.
Tensor run_gpu(const std::string& fast, const std::string& onchip, DType dtype, const GnInputs& in, const GnShape& s,
               bool silu, bool add) {
  ScopedEnv f("SDSERVE_CUDA_GN_FAST", fast);
  ScopedEnv o("SDSERVE_CUDA_GN_ONCHIP", onchip);
  Backend& be = gpu_backend(dtype);
  Tensor y = run_gn(be, in, s, silu, add);
  EXPECT_TRUE(be.synchronize().ok());
  return y;
}

double tol_vs_cpu(DType dtype) { return dtype == DType::kBF16 ? 1e-2 : 2e-3; }
double tol_vs_two_kernel(DType dtype) { return dtype == DType::kBF16 ? 8e-3 : 1.5e-3; }

// Fast (required: the test fails if it did not run) vs the two-kernel path and the CPU backend.
void check_fast(const GnShape& s, DType dtype, bool silu, bool add, uint32_t seed, bool with_cpu = true,
                float lo = -2.f, float hi = 3.f) {
  const std::string name = describe(s, dtype, silu, add) + " x~U(" + std::to_string(lo) + "," + std::to_string(hi) + ")";
  const GnInputs in = make_inputs(s, dtype, seed, lo, hi);
  Tensor fast;
  try {
    fast = run_gpu("require", "auto", dtype, in, s, silu, add);
  } catch (const Error& e) {
    ADD_FAILURE() << name << ": " << e.what();
    return;
  }
  const Tensor two = run_gpu("0", "0", dtype, in, s, silu, add);
  EXPECT_LE(relative_l2(fast, two), tol_vs_two_kernel(dtype)) << name << " vs two-kernel";
  if (with_cpu) {
    const Tensor want = run_gn(cpu_reference_backend(), in, s, silu, add);
    EXPECT_LE(relative_l2(fast, want), tol_vs_cpu(dtype)) << name << " vs CPU";
  }
}

// Every UNet group norm shape at batch 2 (the batch-1 guided step), all dtype / SiLU / add combos.
TEST(GpuGroupNormFast, UnetShapesAtBatch2) {
  SD_REQUIRE_GPU();
  uint32_t seed = 5000;
  for (auto [hw, c] : {std::pair<int64_t, int64_t>{64, 320}, {32, 640}, {16, 1280}, {8, 1280}, {64, 640}, {64, 960},
                       {32, 1920}, {16, 2560}, {32, 960}, {32, 1280}, {16, 1920}, {16, 640}, {32, 320}})
    for (DType dtype : {DType::kF16, DType::kBF16})
      for (bool silu : {false, true})
        for (bool add : {false, true}) check_fast({{2, hw, hw, c}, 32}, dtype, silu, add, seed += 4, silu == add);
}

// Batches 1 and 3, odd position counts, [B, L, C] inputs, few channels per group and other group counts.
TEST(GpuGroupNormFast, OddShapesAndBatches) {
  SD_REQUIRE_GPU();
  uint32_t seed = 6000;
  const std::vector<GnShape> shapes = {
      {{1, 64, 64, 320}, 32}, {{3, 32, 32, 640}, 32}, {{1, 8, 8, 1280}, 32}, {{2, 7, 9, 320}, 32},
      {{3, 7, 9, 64}, 32},    {{2, 5, 3, 96}, 32},    {{2, 77, 640}, 32},    {{1, 1, 1, 320}, 32},
      {{2, 13, 11, 1920}, 32}, {{3, 7, 9, 2560}, 32}, {{2, 9, 5, 640}, 16},  {{2, 16, 16, 320}, 1},
      {{2, 3, 5, 4096}, 32}};
  for (const GnShape& s : shapes)
    for (DType dtype : {DType::kF16, DType::kBF16})
      for (bool silu : {false, true})
        for (bool add : {false, true}) check_fast(s, dtype, silu, add, seed += 4);
}

// Mean far above the spread (the shifted one-pass statistics must not cancel).
TEST(GpuGroupNormFast, MeanMuchLargerThanSpread) {
  SD_REQUIRE_GPU();
  uint32_t seed = 7000;
  for (const GnShape& s : {GnShape{{2, 64, 64, 320}, 32}, GnShape{{2, 8, 8, 1280}, 32}, GnShape{{2, 32, 32, 1920}, 32},
                           GnShape{{3, 7, 9, 320}, 32}, GnShape{{2, 16, 16, 320}, 1}})
    for (DType dtype : {DType::kF16, DType::kBF16}) {
      check_fast(s, dtype, true, true, seed += 4, true, 49.f, 51.f);
      check_fast(s, dtype, false, false, seed += 4, true, -101.f, -99.f);
    }
}

// Batch 16 (32 rows): one grid where it fits, waves of rows elsewhere (every UNet shape); the
// fallback where even one row a wave does not fit registers, and with SDSERVE_CUDA_GN_FAST_WAVES=0;
// the streamed waves on that large row.
TEST(GpuGroupNormFast, Batch32AndFallBack) {
  SD_REQUIRE_GPU();
  uint32_t seed = 8000;
  for (const GnShape& s : {GnShape{{32, 8, 8, 1280}, 32}, GnShape{{32, 16, 16, 320}, 32}, GnShape{{32, 8, 8, 2560}, 32}}) {
    check_fast(s, DType::kF16, true, false, seed += 4, false);
    check_fast(s, DType::kBF16, false, true, seed += 4, false);
  }
  check_fast({{32, 8, 8, 1280}, 32}, DType::kF16, true, true, seed += 4, true);
  // Too large for the co-resident grid's registers even one row a wave: the other paths run.
  const GnShape huge{{1, 256, 256, 320}, 32};
  check_fast(huge, DType::kF16, true, true, seed += 4, false);  // streamed
  for (const char* prefetch : {"0", "1"}) {
    ScopedEnv regs("SDSERVE_CUDA_GN_FAST_WAVES", "regs");
    ScopedEnv env("SDSERVE_CUDA_GN_FAST_PREFETCH", prefetch);
    const GnInputs in = make_inputs(huge, DType::kF16, seed += 4);
    const std::string name = describe(huge, DType::kF16, true, true) + " prefetch " + prefetch;
    EXPECT_THROW(run_gpu("require", "auto", DType::kF16, in, huge, true, true), Error) << name;
    const Tensor two = run_gpu("0", "0", DType::kF16, in, huge, true, true);
    EXPECT_LE(relative_l2(run_gpu("1", "auto", DType::kF16, in, huge, true, true), two), 1.5e-3) << name;
    EXPECT_LE(relative_l2(run_gpu("auto", "auto", DType::kF16, in, huge, true, true), two), 1.5e-3) << name;
  }
  {
    ScopedEnv env("SDSERVE_CUDA_GN_FAST_WAVES", "0");
    const GnShape s{{32, 64, 64, 320}, 32};
    EXPECT_THROW(run_gpu("require", "auto", DType::kF16, make_inputs(s, DType::kF16, seed += 4), s, true, true), Error);
  }
}

// The wave layouts: streamed (x read twice; y stored evict-first or plain), registers with 8
// vectors + prefetch, 16 vectors.
struct WaveMode {
  const char* waves;
  const char* prefetch;
  const char* store = "cs";
};
constexpr WaveMode kWaveModes[] = {{"stream", "1", "cs"}, {"stream", "1", "wb"}, {"regs", "1"}, {"regs", "0"}};

// Every 32-row UNet shape in waves (the 16-image batch), every wave layout, vs the two kernels;
// the CPU on two of them.
TEST(GpuGroupNormFast, Batch32Waves) {
  SD_REQUIRE_GPU();
  uint32_t seed = 8500;
  for (const WaveMode& m : kWaveModes) {
    ScopedEnv w("SDSERVE_CUDA_GN_FAST_WAVES", m.waves);
    ScopedEnv env("SDSERVE_CUDA_GN_FAST_PREFETCH", m.prefetch);
    ScopedEnv st("SDSERVE_CUDA_GN_STREAM_STORE", m.store);
    SCOPED_TRACE(std::string(m.waves) + " prefetch " + m.prefetch + " store " + m.store);
    for (auto [hw, c] : {std::pair<int64_t, int64_t>{64, 320}, {32, 640}, {16, 1280}, {64, 640}, {64, 960},
                         {32, 1280}, {32, 1920}, {32, 960}, {16, 2560}, {16, 1920}}) {
      const bool add = (hw + c) % 3 == 0;
      check_fast({{32, hw, hw, c}, 32}, (c / 320) % 2 ? DType::kF16 : DType::kBF16, true, add, seed += 4, false);
    }
    check_fast({{32, 32, 32, 640}, 32}, DType::kF16, true, true, seed += 4, true);
    check_fast({{32, 16, 16, 1280}, 32}, DType::kBF16, false, false, seed += 4, true, 49.f, 51.f);
  }
}

// Forced rows a wave (1 row, rows not dividing the batch, ...) on small shapes vs the CPU, also
// with mean >> std and forced CTAs per row.
TEST(GpuGroupNormFast, ForcedWaves) {
  SD_REQUIRE_GPU();
  uint32_t seed = 8800;
  for (const WaveMode& m : kWaveModes) {
    ScopedEnv w("SDSERVE_CUDA_GN_FAST_WAVES", m.waves);
    ScopedEnv p("SDSERVE_CUDA_GN_FAST_PREFETCH", m.prefetch);
    ScopedEnv st("SDSERVE_CUDA_GN_STREAM_STORE", m.store);
    for (int z : {1, 2, 3, 5}) {
      ScopedEnv env("SDSERVE_CUDA_GN_FAST_Z", std::to_string(z));
      SCOPED_TRACE(std::string(m.waves) + " prefetch " + m.prefetch + " z " + std::to_string(z));
      check_fast({{7, 16, 16, 320}, 32}, DType::kF16, true, true, seed += 4);
      check_fast({{6, 9, 7, 640}, 32}, DType::kBF16, false, true, seed += 4);
      check_fast({{5, 8, 8, 1280}, 32}, DType::kF16, true, false, seed += 4, true, -101.f, -99.f);
      ScopedEnv cpr("SDSERVE_CUDA_GN_FAST_CPR", "3");
      check_fast({{4, 12, 10, 640}, 16}, DType::kF16, false, false, seed += 4);
    }
  }
}

// Forced CTAs per row (one CTA a row, CTAs not dividing the positions, many), back to back so the
// persistent barrier counters see changing CTA counts.
TEST(GpuGroupNormFast, ForcedCtasPerRow) {
  SD_REQUIRE_GPU();
  uint32_t seed = 9000;
  for (int cpr : {1, 2, 3, 7, 16, 64, 100}) {
    ScopedEnv env("SDSERVE_CUDA_GN_FAST_CPR", std::to_string(cpr));
    SCOPED_TRACE("cpr " + std::to_string(cpr));
    check_fast({{2, 16, 20, 320}, 32}, DType::kF16, true, true, seed += 4);
    check_fast({{3, 8, 16, 640}, 32}, DType::kBF16, false, true, seed += 4);
    check_fast({{2, 8, 8, 1280}, 32}, DType::kF16, true, false, seed += 4);
  }
}

// Every slice count (C / n channels per CTA, whole groups) of a few channel counts.
TEST(GpuGroupNormFast, ForcedSlices) {
  SD_REQUIRE_GPU();
  uint32_t seed = 9300;
  for (int n : {1, 2, 4, 8, 16}) {
    ScopedEnv env("SDSERVE_CUDA_GN_FAST_SLICES", std::to_string(n));
    SCOPED_TRACE("slices " + std::to_string(n));
    if (n <= 8) check_fast({{2, 16, 16, 320}, 32}, DType::kF16, true, true, seed += 4);
    check_fast({{2, 8, 8, 1920}, 32}, DType::kBF16, false, true, seed += 4);
    check_fast({{3, 9, 5, 640}, 16}, DType::kF16, true, false, seed += 4);
  }
}

// Bitwise-identical results on repeated calls (fixed-order merge), eagerly and from a captured
// CUDA graph replayed several times (the counters need no reset between replays).
TEST(GpuGroupNormFast, DeterministicAndGraphReplay) {
  SD_REQUIRE_GPU();
  ScopedEnv f("SDSERVE_CUDA_GN_FAST", "require");
  ScopedEnv o("SDSERVE_CUDA_GN_ONCHIP", "auto");
  Backend& be = gpu_backend(DType::kF16);
  const GnShape a{{2, 64, 64, 320}, 32}, b{{2, 8, 8, 1280}, 32};
  const GnInputs ia = make_inputs(a, DType::kF16, 9500), ib = make_inputs(b, DType::kF16, 9510);
  const Tensor xa = be.upload(ia.x), ga = be.upload(ia.gamma), ba = be.upload(ia.beta), va = be.upload(ia.add_src);
  const Tensor xb = be.upload(ib.x), gb = be.upload(ib.gamma), bb = be.upload(ib.beta), vb = be.upload(ib.add_src);
  const Tensor first_a = be.download(gn_op(be, xa, ga, ba, va, a, true, true));
  const Tensor first_b = be.download(gn_op(be, xb, gb, bb, vb, b, false, false));
  const Tensor want_a = run_gn(cpu_reference_backend(), ia, a, true, true);
  EXPECT_LE(relative_l2(first_a, want_a), tol_vs_cpu(DType::kF16));
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(max_abs_diff(be.download(gn_op(be, xa, ga, ba, va, a, true, true)), first_a), 0.0);
    EXPECT_EQ(max_abs_diff(be.download(gn_op(be, xb, gb, bb, vb, b, false, false)), first_b), 0.0);
  }
  {  // 32 rows in waves (every layout): repeat calls bitwise identical too
    const GnShape w{{32, 32, 32, 640}, 32};
    const GnInputs iw = make_inputs(w, DType::kF16, 9520);
    const Tensor xw = be.upload(iw.x), gw = be.upload(iw.gamma), bw = be.upload(iw.beta), vw = be.upload(iw.add_src);
    for (const WaveMode& m : kWaveModes) {
      ScopedEnv wv("SDSERVE_CUDA_GN_FAST_WAVES", m.waves);
      ScopedEnv p("SDSERVE_CUDA_GN_FAST_PREFETCH", m.prefetch);
      ScopedEnv st("SDSERVE_CUDA_GN_STREAM_STORE", m.store);
      const Tensor first_w = be.download(gn_op(be, xw, gw, bw, vw, w, true, true));
      for (int i = 0; i < 2; ++i)
        EXPECT_EQ(max_abs_diff(be.download(gn_op(be, xw, gw, bw, vw, w, true, true)), first_w), 0.0) << m.waves;
    }
  }
  if (!be.supports_capture()) return;
  Tensor ya, yb;
  auto graph = be.capture([&] {
    ya = gn_op(be, xa, ga, ba, va, a, true, true);
    yb = gn_op(be, xb, gb, bb, vb, b, false, false);
    ya = gn_op(be, xa, ga, ba, va, a, true, true);
  });
  for (int i = 0; i < 4; ++i) {
    graph->replay();
    EXPECT_EQ(max_abs_diff(be.download(ya), first_a), 0.0) << "replay " << i;
    EXPECT_EQ(max_abs_diff(be.download(yb), first_b), 0.0) << "replay " << i;
  }
}

}  // namespace
}  // namespace sd::testing
