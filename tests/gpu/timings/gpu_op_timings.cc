// gpu_op_timings: median time of single CUDA-backend ops at Stable Diffusion 1.5 shapes
// (512x512, batch 2 for classifier-free guidance), with the achieved TFLOP/s or GB/s.
// Usage: gpu_op_timings [f16|bf16] [FILTER]: only ops whose name contains FILTER. Prints one
// table; exits 0 without a GPU. SDSERVE_CUDA_ATTENTION / SDSERVE_CUDNN_FIND pick variants.
#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "backend/cuda/cuda_backend.h"
#include "backend/op_cases.h"

namespace {

using sd::Backend;
using sd::Tensor;
using sd::testing::random_tensor;

// Median over `reps` of the mean time of `inner` back-to-back calls, in milliseconds.
std::string g_filter;  // only ops whose name contains this are timed

double time_ms(Backend& be, const std::function<Tensor()>& op, int reps = 15, int inner = 10) {
  for (int i = 0; i < 3; ++i) (void)op();
  if (!be.synchronize().ok()) return -1;
  std::vector<double> t;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < inner; ++i) (void)op();
    if (!be.synchronize().ok()) return -1;
    t.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count() / inner);
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

struct Row {
  std::string name;
  double ms;
  double work;  // FLOP or bytes
  bool flops;
};

// Times `op` under `name` unless the filter excludes it.
void add(std::vector<Row>& rows, Backend& be, const std::string& name, const std::function<Tensor()>& op, double work,
         bool flops) {
  if (!g_filter.empty() && name.find(g_filter) == std::string::npos) return;
  rows.push_back({name, time_ms(be, op), work, flops});
}

}  // namespace

int main(int argc, char** argv) {
  if (sd::cuda::device_count() == 0) {
    std::printf("gpu_op_timings: no CUDA device, nothing to time\n");
    return 0;
  }
  const sd::DType dtype = (argc > 1 && std::strcmp(argv[1], "bf16") == 0) ? sd::DType::kBF16 : sd::DType::kF16;
  auto made = sd::cuda::make_backend(0, dtype);
  if (!made.ok()) {
    std::fprintf(stderr, "%s\n", made.status().to_string().c_str());
    return 1;
  }
  Backend& be = **made;
  const std::string filter = argc > 2 ? argv[2] : "";
  g_filter = filter;
  std::vector<Row> rows;
  const auto up = [&](const sd::Shape& s, uint32_t seed, float lo = -1.f, float hi = 1.f) {
    return be.upload(random_tensor(s, seed, lo, hi));
  };
  try {
    for (auto [l, lk, h, d] : {std::array<int64_t, 4>{4096, 4096, 8, 40},
                               {1024, 1024, 8, 80},
                               {256, 256, 8, 160},
                               {4096, 77, 8, 40},
                               {1024, 1024, 10, 64},
                               {77, 77, 12, 64}}) {
      const Tensor q = up({2, l, h * d}, 1, -2, 2), k = up({2, lk, h * d}, 2, -2, 2), v = up({2, lk, h * d}, 3);
      const bool causal = l == 77;
      add(
          rows, be,
          "attention b2 l" + std::to_string(l) + " lk" + std::to_string(lk) + " h" + std::to_string(h) + " d" +
              std::to_string(d) + (causal ? " causal" : ""),
          [&] { return be.attention(q, k, v, static_cast<int>(h), causal); },
          4.0 * 2 * h * l * lk * d / (causal ? 2 : 1), true);
    }
    for (auto [hw, cin, cout, ks, stride] : {std::array<int64_t, 5>{64, 320, 320, 3, 1},
                                             {32, 640, 640, 3, 1},
                                             {16, 1280, 1280, 3, 1},
                                             {64, 320, 320, 3, 2},
                                             {64, 4, 320, 3, 1}}) {
      const Tensor x = up({2, hw, hw, cin}, 4), w = up({cout, ks, ks, cin}, 5, -0.05f, 0.05f), b = up({cout}, 6);
      const int64_t ho = hw / stride;
      add(
          rows, be,
          "conv2d 2x" + std::to_string(hw) + "x" + std::to_string(hw) + "x" + std::to_string(cin) + " -> " +
              std::to_string(cout) + " k" + std::to_string(ks) + " s" + std::to_string(stride),
          [&] { return be.conv2d(x, w, b, static_cast<int>(stride), 1); }, 2.0 * 2 * ho * ho * cout * cin * ks * ks,
          true);
    }
    for (auto [m, k, n] :
         {std::array<int64_t, 3>{8192, 320, 2560}, {8192, 1280, 320}, {8192, 320, 320}, {154, 768, 320}}) {
      const Tensor x = up({m, k}, 7), w = up({n, k}, 8, -0.05f, 0.05f), b = up({n}, 9);
      add(
          rows, be, "linear " + std::to_string(m) + "x" + std::to_string(k) + " -> " + std::to_string(n) + " +bias",
          [&] { return be.linear(x, w, b); }, 2.0 * m * k * n, true);
    }
    // Fused epilogues (ResNet conv1 + time embedding, conv2 + residual; linear + residual)
    // against the same work as separate ops.
    for (auto [hw, c] : {std::array<int64_t, 2>{64, 320}, {32, 640}, {16, 1280}}) {
      const Tensor x = up({2, hw, hw, c}, 15), w = up({c, 3, 3, c}, 16, -0.05f, 0.05f), b = up({c}, 17);
      const Tensor row = up({2, c}, 18), res = up({2, hw, hw, c}, 19);
      const std::string shape = "2x" + std::to_string(hw) + "x" + std::to_string(hw) + "x" + std::to_string(c);
      const double flop = 2.0 * 2 * hw * hw * c * c * 9;
      add(rows, be, "conv2d+bias+temb+residual fused " + shape,
          [&] { return be.conv2d_fused(x, w, b, 1, 1, row, res); }, flop, true);
      add(rows, be, "conv2d+bias+temb+residual separate " + shape,
          [&] { return be.add(be.add_per_channel(be.conv2d(x, w, b, 1, 1), row), res); }, flop, true);
      add(rows, be, "conv2d+bias+residual fused " + shape, [&] { return be.conv2d_fused(x, w, b, 1, 1, {}, res); },
          flop, true);
      add(rows, be, "conv2d+bias+residual separate " + shape, [&] { return be.add(be.conv2d(x, w, b, 1, 1), res); },
          flop, true);
    }
    for (auto [m, k, n] : {std::array<int64_t, 3>{8192, 320, 320}, {8192, 1280, 320}, {2048, 640, 640}}) {
      const Tensor x = up({m, k}, 20), w = up({n, k}, 21, -0.05f, 0.05f), b = up({n}, 22), res = up({m, n}, 23);
      const std::string shape = std::to_string(m) + "x" + std::to_string(k) + " -> " + std::to_string(n);
      add(rows, be, "linear+bias+residual fused " + shape, [&] { return be.linear_residual(x, w, b, res); },
          2.0 * m * k * n, true);
      add(rows, be, "linear+bias+residual separate " + shape, [&] { return be.add(be.linear(x, w, b), res); },
          2.0 * m * k * n, true);
    }
    const double es = 2.0;  // bytes per element
    {
      const Tensor x = up({2, 64, 64, 320}, 10), g = up({320}, 11, 0.5f, 1.5f), b = up({320}, 12);
      add(
          rows, be, "group_norm+silu 2x64x64x320 g32", [&] { return be.group_norm(x, g, b, 32, 1e-5f, true); },
          2 * x.numel() * es, false);
      for (auto [bt, hw, c] : {std::array<int64_t, 3>{16, 64, 320}, {2, 32, 640}, {16, 32, 640}, {2, 16, 1280},
                               {2, 64, 960}, {1, 64, 320}}) {
        const Tensor xg = up({bt, hw, hw, c}, 24, -1.f, 3.f), gg = up({c}, 25, 0.5f, 1.5f), bg = up({c}, 26);
        add(
            rows, be,
            "group_norm+silu " + std::to_string(bt) + "x" + std::to_string(hw) + "x" + std::to_string(hw) + "x" +
                std::to_string(c) + " g32",
            [&] { return be.group_norm(xg, gg, bg, 32, 1e-5f, true); }, 2 * xg.numel() * es, false);
      }
      const Tensor s = x.reshape({2, 4096, 320});
      add(
          rows, be, "layer_norm 2x4096x320", [&] { return be.layer_norm(s, g, b, 1e-5f); }, 2 * x.numel() * es, false);
      add(
          rows, be, "add 2x64x64x320", [&] { return be.add(x, x); }, 3 * x.numel() * es, false);
      const Tensor u = up({2, 32, 32, 640}, 14);
      add(
          rows, be, "upsample2x 2x32x32x640", [&] { return be.upsample_nearest2x(u); }, 5 * u.numel() * es, false);
    }
    {
      const Tensor x = up({2, 4096, 2560}, 13);
      add(
          rows, be, "geglu 2x4096x2560", [&] { return be.geglu(x); }, 1.5 * x.numel() * es, false);
    }
  } catch (const sd::Error& e) {
    std::fprintf(stderr, "gpu_op_timings: %s\n", e.status().to_string().c_str());
    return 1;
  }
  std::printf("%s\n%-48s %10s %12s\n", be.name().c_str(), "op", "ms", "rate");
  for (const Row& r : rows) {
    const double rate = r.work / (r.ms * 1e-3) / (r.flops ? 1e12 : 1e9);
    std::printf("%-48s %10.4f %8.1f %s\n", r.name.c_str(), r.ms, rate, r.flops ? "TFLOP/s" : "GB/s");
  }
  std::printf("peak memory %.1f MiB\n", be.memory_peak() / 1048576.0);
  return 0;
}
