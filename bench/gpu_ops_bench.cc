// Google Benchmark suite of the CUDA backend's main kernels at SD 1.5 512x512 shapes (UNet
// batches 2 and 16 by default): 3x3 convs per level (cuDNN / wgmma), linear projections,
// linear_geglu per path, self/cross attention, group_norm+SiLU, layer_norm, GEGLU, upsample, add.
// Times come from the backend's marks.
#include <benchmark/benchmark.h>

#include <array>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "backend/cuda/cuda_backend.h"
#include "scoped_env.h"

namespace {

using sd::Shape;
using sd::Tensor;

// SDSERVE_BENCH_BATCHES: comma-separated UNet batches (rows: 2 per guided image), default 2,16.
// SDSERVE_BENCH_ITERS: timed iterations per benchmark (default 20), each `kCallsPerIteration`
// back-to-back calls bracketed by two marks (CUDA events) after a short queue hold, so the
// host's launch latency stays off the timeline. SDSERVE_CUDA_DTYPE picks f16 (default) or bf16.
// SDSERVE_BENCH_ENERGY_MS (default 0: off): after the timed iterations, calls run back to back
// for that long, then as long again with the board's energy counter and clocks read
// (Backend::telemetry_*): counters mJ/call, pJ/FLOP, W, MHz — on a power-capped card energy, not
// time at full clock, is what a step spends.
constexpr int kCallsPerIteration = 10;
constexpr double kHoldMs = 0.5;

sd::Backend* g_backend = nullptr;

int env_int(const char* name, int fallback) {
  const char* v = std::getenv(name);
  return v ? std::atoi(v) : fallback;
}

std::vector<int64_t> batches() {
  const char* env = std::getenv("SDSERVE_BENCH_BATCHES");
  std::stringstream ss(env ? env : "2,16");
  std::vector<int64_t> out;
  for (std::string item; std::getline(ss, item, ',');)
    if (std::atoi(item.c_str()) > 0) out.push_back(std::atoi(item.c_str()));
  return out;
}

// Seeded values in [lo, hi) (a cheap LCG: inputs run to hundreds of millions of elements).
Tensor random_device(const Shape& shape, uint32_t seed, float lo = -1.f, float hi = 1.f) {
  Tensor t = Tensor::empty_host(shape, sd::DType::kF32);
  uint32_t s = seed * 2654435761u + 1u;
  for (int64_t i = 0; i < t.numel(); ++i) {
    s = s * 1664525u + 1013904223u;
    t.f32()[i] = lo + (hi - lo) * static_cast<float>(s >> 8) * (1.f / 16777216.f);
  }
  return g_backend->upload(t);
}

struct Case {
  std::string name;
  double flops = 0;  // per call (0: memory-bound op)
  std::function<std::vector<Tensor>()> make_inputs;
  std::function<Tensor(const std::vector<Tensor>&)> run;
};

// Inputs of the case being timed (built once per case, freed when the next case starts).
struct Cache {
  std::string name;
  std::vector<Tensor> inputs;
  double bytes = 0;  // inputs read + output written, per call
};

Cache g_cache;  // cleared before the backend goes

// SDSERVE_BENCH_ENERGY_MS: calls back to back (synchronized every kCallsPerIteration) for that
// long unmetered — the power cap's controller settles over ~100s of ms, and a burst after idle
// runs above the cap at a higher clock — then as long again under the energy counter; nothing
// where the board has none.
void measure_energy(benchmark::State& state, const Case& c, const Cache& cache) {
  const int ms = env_int("SDSERVE_BENCH_ENERGY_MS", 0);
  sd::Backend& be = *g_backend;
  if (ms <= 0) return;
  const auto run_for = [&](int64_t* calls) {
    const auto t0 = std::chrono::steady_clock::now();
    while (std::chrono::steady_clock::now() - t0 < std::chrono::milliseconds(ms)) {
      for (int i = 0; i < kCallsPerIteration; ++i, ++*calls) benchmark::DoNotOptimize(c.run(cache.inputs));
      if (!be.synchronize().ok()) return false;
    }
    return true;
  };
  int64_t settle = 0, calls = 0;
  if (!run_for(&settle)) return state.SkipWithError("device error in the energy loop");
  if (!be.telemetry_start()) return;
  if (!run_for(&calls)) return state.SkipWithError("device error in the energy loop");
  const std::optional<sd::DeviceTelemetry> t = be.telemetry_stop();
  if (!t || t->energy_j < 0 || calls == 0) return;
  const double joules = t->energy_j / static_cast<double>(calls);
  state.counters["mJ/call"] = joules * 1e3;
  if (c.flops > 0) state.counters["pJ/FLOP"] = joules / c.flops * 1e12;
  state.counters["W"] = t->energy_j / t->seconds;
  state.counters["MHz"] = t->sm_mhz_mean;
}

void run_case(benchmark::State& state, const Case& c) {
  Cache& cache = g_cache;
  sd::Backend& be = *g_backend;
  try {
    if (cache.name != c.name) {
      cache = Cache{};
      cache.inputs = c.make_inputs();
      Tensor y;
      for (int i = 0; i < 3; ++i) y = c.run(cache.inputs);  // warm-up: cuDNN autotuning, plans
      for (const Tensor& t : cache.inputs) cache.bytes += static_cast<double>(t.nbytes());
      cache.bytes += static_cast<double>(y.nbytes());
      cache.name = c.name;
      if (!be.synchronize().ok()) return state.SkipWithError("device error in warm-up");
    }
    double seconds = 0;
    for (auto _ : state) {
      be.hold_queue(kHoldMs);
      const int64_t m0 = be.mark();
      for (int i = 0; i < kCallsPerIteration; ++i) benchmark::DoNotOptimize(c.run(cache.inputs));
      const int64_t m1 = be.mark();
      auto t = be.marks_elapsed_ms();
      if (!t.ok() || m0 < 0 || m1 < 0) return state.SkipWithError("no device marks / device error");
      const double s = ((*t)[static_cast<size_t>(m1)] - (*t)[static_cast<size_t>(m0)]) * 1e-3 / kCallsPerIteration;
      state.SetIterationTime(s);
      seconds += s;
    }
    const double calls = static_cast<double>(state.iterations());
    if (seconds > 0) {
      if (c.flops > 0) state.counters["TFLOP/s"] = c.flops * calls / seconds / 1e12;
      state.counters["GB/s"] = cache.bytes * calls / seconds / 1e9;
    }
    measure_energy(state, c, cache);
  } catch (const sd::Error& e) {
    state.SkipWithError(e.status().to_string().c_str());
  }
}

std::string dims(std::initializer_list<int64_t> d) {
  std::string s;
  for (int64_t v : d) s += (s.empty() ? "" : "x") + std::to_string(v);
  return s;
}

// SD 1.5 at 512x512: latents 64x64; levels 64/32/16/8 with 320/640/1280/1280 channels; heads 8
// (head dim 40/80/160); text context 77x768.
std::vector<Case> sd15_cases(int64_t b) {
  std::vector<Case> cases;
  const std::string bs = "b" + std::to_string(b) + "/";
  for (auto [hw, c, stride] : {std::array<int64_t, 3>{64, 320, 1}, {32, 640, 1}, {16, 1280, 1}, {8, 1280, 1},
                               {64, 320, 2}}) {
    const int64_t ho = hw / stride;
    cases.push_back({"conv3x3/" + bs + dims({hw, hw, c}) + "->" + std::to_string(c) + (stride == 2 ? "/s2" : ""),
                     2.0 * b * ho * ho * c * c * 9,
                     [=] {
                       return std::vector<Tensor>{random_device({b, hw, hw, c}, 1),
                                                  random_device({c, 3, 3, c}, 2, -0.05f, 0.05f),
                                                  random_device({c}, 3)};
                     },
                     [=](const std::vector<Tensor>& in) {
                       return g_backend->conv2d(in[0], in[1], in[2], static_cast<int>(stride), 1);
                     }});
  }
  // Hopper wgmma implicit-GEMM convolution (conv_wgmma.cu) vs cuDNN at the UNet levels 8x8 .. 64x64:
  // path cudnn (SDSERVE_CUDA_WGMMA_CONV=0), wgmma (=2, the heuristic config), reuse (=2 with
  // SDSERVE_CUDA_WGMMA_CONV_REUSE=1: the input-reuse kernel, heuristic bn / split unless the
  // _BN / _SPLITS / _DSMEM overrides are set), auto (=1, the timed choice; SDSERVE_CUDNN_LOG=1
  // prints every candidate). Four weight copies used in turn (> L2),
  // so each call reads its weights from memory as the step does.
  for (auto [hw, cin, cout] : {std::array<int64_t, 3>{8, 1280, 1280}, {8, 2560, 1280}, {16, 1280, 1280},
                               {16, 640, 1280}, {16, 1920, 1280}, {16, 2560, 1280}, {32, 640, 640},
                               {32, 1280, 640}, {32, 960, 640}, {32, 1920, 640}, {32, 1280, 1280},
                               {64, 320, 320}, {64, 640, 320}, {64, 960, 320}}) {
    for (const char* path : {"cudnn", "wgmma", "reuse", "auto"}) {
      const auto turn = std::make_shared<int>(0);
      cases.push_back({std::string("conv_wgmma/") + path + "/" + bs + dims({hw, hw, cin}) + "->" +
                           std::to_string(cout),
                       2.0 * b * hw * hw * cin * cout * 9,
                       [=] {
                         std::vector<Tensor> in{random_device({b, hw, hw, cin}, 31), random_device({cout}, 33)};
                         for (uint32_t i = 0; i < 4; ++i) {
                           in.push_back(random_device({cout, 3, 3, cin}, 34 + i, -0.02f, 0.02f));
                         }
                         return in;
                       },
                       [=](const std::vector<Tensor>& in) {
                         sd::testing::ScopedEnv env("SDSERVE_CUDA_WGMMA_CONV",
                                                    path[0] == 'c' ? "0" : path[0] == 'a' ? "1" : "2");
                         std::optional<sd::testing::ScopedEnv> reuse;
                         if (path[0] == 'r') reuse.emplace("SDSERVE_CUDA_WGMMA_CONV_REUSE", "1");
                         sd::testing::ScopedEnv splitk("SDSERVE_CUDA_SPLITK_CONV", "0");
                         const Tensor& w = in[2 + static_cast<size_t>((*turn)++ % 4)];
                         return g_backend->conv2d(in[0], w, in[1], 1, 1);
                       }});
    }
  }
  // Weight streaming at the small levels, as a GEMM: x [b, tokens, 9 Cin] (an im2col'd 3x3 conv's
  // input) times w [Cout, 9 Cin], the conv's own weight layout; tokens 64 / 256 are the 8x8 / 16x16
  // levels. Paths as linear_geglu's. Four weight copies in turn (> L2), as conv_wgmma's rows: the
  // time to compare with conv_wgmma/ at the same shape (same weight bytes, no im2col).
  for (auto [tokens, k, n] : {std::array<int64_t, 3>{64, 11520, 1280}, {64, 23040, 1280}, {256, 11520, 1280}}) {
    for (const char* path : {"library", "wgmma", "auto"}) {
      const auto turn = std::make_shared<int>(0);
      cases.push_back({std::string("linear_stream/") + path + "/" + bs + dims({tokens, k}) + "->" + std::to_string(n),
                       2.0 * b * tokens * k * n,
                       [=] {
                         std::vector<Tensor> in{random_device({b, tokens, k}, 41), random_device({n}, 42)};
                         for (uint32_t i = 0; i < 4; ++i) in.push_back(random_device({n, k}, 43 + i, -0.02f, 0.02f));
                         return in;
                       },
                       [=](const std::vector<Tensor>& in) {
                         sd::testing::ScopedEnv env("SDSERVE_CUDA_WGMMA_GEMM",
                                                    path[0] == 'l' ? "0" : path[0] == 'w' ? "2" : "1");
                         const Tensor& w = in[2 + static_cast<size_t>((*turn)++ % 4)];
                         return g_backend->linear(in[0], w, in[1]);
                       }});
    }
  }
  // The sub-pixel upsample (conv_subpixel.cc): path default (SDSERVE_CUDA_WGMMA_SUBPIXEL=0: cuDNN
  // conv2d into [B, H+1, W+1, 4C] + interleave_phases2x), wgmma (=2: the phase kernel writing
  // [B, 2H, 2W, C] in place, first candidate), auto (=1: the timed choice). UNet levels at this
  // batch; the VAE decoder's (batch 1) with the first batch only. Four weight copies in turn.
  struct Up {
    int64_t b, hw, cin, c;
    const char* tag;
  };
  std::vector<Up> ups = {{b, 8, 1280, 1280, "unet"}, {b, 16, 1280, 1280, "unet"}, {b, 32, 640, 640, "unet"}};
  if (b == batches().front()) {
    for (const Up u : {Up{1, 64, 512, 512, "vae"}, Up{1, 128, 512, 512, "vae"}, Up{1, 256, 256, 256, "vae"}}) {
      ups.push_back(u);
    }
  }
  for (const Up u : ups) {
    for (const char* path : {"default", "wgmma", "auto"}) {
      const auto turn = std::make_shared<int>(0);
      cases.push_back({std::string("subpixel/") + path + "/" + u.tag + "/b" + std::to_string(u.b) + "/" +
                           dims({u.hw, u.hw, u.cin}) + "->" + std::to_string(u.c),
                       2.0 * u.b * u.hw * u.hw * 4 * u.cin * 4 * u.c,  // useful FLOPs: H*W positions
                       [=] {
                         std::vector<Tensor> in{random_device({u.b, u.hw, u.hw, u.cin}, 41), random_device({u.c}, 43)};
                         for (uint32_t i = 0; i < 4; ++i) {
                           in.push_back(random_device({4 * u.c, 2, 2, u.cin}, 44 + i, -0.02f, 0.02f));
                         }
                         return in;
                       },
                       [=](const std::vector<Tensor>& in) {
                         sd::testing::ScopedEnv env("SDSERVE_CUDA_WGMMA_SUBPIXEL",
                                                    path[0] == 'd' ? "0" : path[0] == 'w' ? "2" : "1");
                         const Tensor& w = in[2 + static_cast<size_t>((*turn)++ % 4)];
                         return g_backend->conv2d_subpixel_upsample(in[0], w, in[1]);
                       }});
    }
  }
  // Linear: per token row, K -> N (q/k/v/out and proj_in/out, GEGLU in, FF out, text k/v).
  for (auto [tokens, k, n] : {std::array<int64_t, 3>{4096, 320, 320}, {4096, 320, 2560}, {4096, 1280, 320},
                              {1024, 640, 640}, {1024, 640, 5120}, {256, 1280, 1280}, {77, 768, 320}}) {
    cases.push_back({"linear/" + bs + dims({tokens, k}) + "->" + std::to_string(n), 2.0 * b * tokens * k * n,
                     [=] {
                       return std::vector<Tensor>{random_device({b, tokens, k}, 4),
                                                  random_device({n, k}, 5, -0.05f, 0.05f), random_device({n}, 6)};
                     },
                     [](const std::vector<Tensor>& in) { return g_backend->linear(in[0], in[1], in[2]); }});
  }
  // Feed-forward in-projection with GEGLU per path: SDSERVE_CUDA_WGMMA_GEMM=0 (cuBLASLt + the
  // geglu kernel), 2 (our GEMM with GEGLU in its epilogue), 1 (the timed choice, the default).
  for (auto [tokens, c] : {std::array<int64_t, 2>{4096, 320}, {1024, 640}, {256, 1280}, {64, 1280}}) {
    for (const char* path : {"library", "wgmma", "auto"}) {
      cases.push_back({std::string("linear_geglu/") + path + "/" + bs + dims({tokens, c}) + "->" +
                           std::to_string(4 * c),
                       2.0 * b * tokens * c * 8 * c,
                       [=] {
                         return std::vector<Tensor>{random_device({b, tokens, c}, 4),
                                                    random_device({8 * c, c}, 5, -0.05f, 0.05f),
                                                    random_device({8 * c}, 6)};
                       },
                       [=](const std::vector<Tensor>& in) {
                         sd::testing::ScopedEnv env("SDSERVE_CUDA_WGMMA_GEMM",
                                                    path[0] == 'l' ? "0" : path[0] == 'w' ? "2" : "1");
                         return g_backend->linear_geglu(in[0], in[1], in[2]);
                       }});
    }
  }
  // Attention: self at 4096/1024/256 tokens, cross with 77 keys; 8 heads.
  for (auto [lq, lk, d] : {std::array<int64_t, 3>{4096, 4096, 40}, {1024, 1024, 80}, {256, 256, 160},
                           {4096, 77, 40}, {1024, 77, 80}, {256, 77, 160}}) {
    const int64_t h = 8;
    cases.push_back({std::string(lk == 77 ? "attention_cross/" : "attention_self/") + bs + "l" + std::to_string(lq) +
                         "_lk" + std::to_string(lk) + "_h8_d" + std::to_string(d),
                     4.0 * b * h * lq * lk * d,
                     [=] {
                       return std::vector<Tensor>{random_device({b, lq, h * d}, 7, -2, 2),
                                                  random_device({b, lk, h * d}, 8, -2, 2),
                                                  random_device({b, lk, h * d}, 9)};
                     },
                     [](const std::vector<Tensor>& in) {
                       return g_backend->attention(in[0], in[1], in[2], 8, false);
                     }});
  }
  // Attention per path (SDSERVE_CUDA_ATTENTION per call): the Hopper wgmma kernel, cuDNN's
  // SDPA, the mma.sync kernel (mma2), its one-tile form for short keys (short), the all-heads row
  // kernel (rows: d 40, 8 heads, <= 80 keys) and the default choice (auto) on the SD head dims
  // 40 / 64 / 80 / 160 (SD 2.x: 64 with 5 / 10 / 20 heads); wgmma3: the d 40 kernel with 3
  // consumers (192 query rows a block), at 768x512 / 768x768 (6144 / 9216 tokens) as well.
  for (auto [lq, lk, h, d] : {std::array<int64_t, 4>{4096, 4096, 8, 40}, {4096, 77, 8, 40}, {1024, 1024, 8, 80},
                              {1024, 1024, 10, 64}, {1024, 77, 8, 80}, {256, 77, 8, 160}, {4096, 77, 5, 64},
                              {1024, 77, 10, 64}, {256, 256, 8, 160}, {64, 64, 8, 160}, {6144, 6144, 8, 40},
                              {9216, 9216, 8, 40}}) {
    for (const char* path : {"wgmma", "wgmma3", "cudnn", "mma2", "short", "rows", "auto"}) {
      if (path[0] == 's' && lk > 128) continue;  // the one-tile kernel: short key sequences only
      if (std::string_view(path) == "wgmma3" && d != 40) continue;
      if (path[0] == 'r' && (lk > 80 || d != 40 || h != 8)) continue;
      cases.push_back({std::string("attn_path/") + path + "/" + bs + "l" + std::to_string(lq) + "_lk" +
                           std::to_string(lk) + "_h" + std::to_string(h) + "_d" + std::to_string(d),
                       4.0 * b * h * lq * lk * d,
                       [=] {
                         return std::vector<Tensor>{random_device({b, lq, h * d}, 7, -2, 2),
                                                    random_device({b, lk, h * d}, 8, -2, 2),
                                                    random_device({b, lk, h * d}, 9)};
                       },
                       [=](const std::vector<Tensor>& in) {
                         sd::testing::ScopedEnv env("SDSERVE_CUDA_ATTENTION", path);
                         return g_backend->attention(in[0], in[1], in[2], static_cast<int>(h), false);
                       }});
    }
  }
  // The wgmma kernel's softmax options at the d 40 self-attention (attention_wgmma_pingpong.cu):
  // SDSERVE_CUDA_WGMMA_POLY p (p of every 8 exps by polynomial on the FMA pipe) x
  // SDSERVE_CUDA_WGMMA_RESCALE r (0 always, 1 skipped when no row maximum changed, 2 maxima
  // raised only by > 8 in log2 units) x SDSERVE_CUDA_WGMMA_ROWSUM s (1: row sums by the P V wgmma).
  for (int poly = 0; poly <= 4; ++poly) {
    for (int rescale = 0; rescale <= 2; ++rescale) {
      for (int rowsum = 0; rowsum <= 1; ++rowsum) {
        const int64_t lq = 4096, lk = 4096, h = 8, d = 40;
        cases.push_back({"attn_wgmma_sm/p" + std::to_string(poly) + "_r" + std::to_string(rescale) + "_s" +
                             std::to_string(rowsum) + "/" + bs + "l" + std::to_string(lq) + "_h" + std::to_string(h) +
                             "_d" + std::to_string(d),
                         4.0 * b * h * lq * lk * d,
                         [=] {
                           return std::vector<Tensor>{random_device({b, lq, h * d}, 7, -2, 2),
                                                      random_device({b, lk, h * d}, 8, -2, 2),
                                                      random_device({b, lk, h * d}, 9)};
                         },
                         [=](const std::vector<Tensor>& in) {
                           sd::testing::ScopedEnv env("SDSERVE_CUDA_ATTENTION", "wgmma");
                           sd::testing::ScopedEnv p("SDSERVE_CUDA_WGMMA_POLY", std::to_string(poly));
                           sd::testing::ScopedEnv r("SDSERVE_CUDA_WGMMA_RESCALE", std::to_string(rescale));
                           sd::testing::ScopedEnv sum("SDSERVE_CUDA_WGMMA_ROWSUM", std::to_string(rowsum));
                           sd::testing::ScopedEnv lazy("SDSERVE_CUDA_WGMMA_LAZY", "0");
                           return g_backend->attention(in[0], in[1], in[2], static_cast<int>(h), false);
                         }});
      }
    }
  }
  // The default d 40 kernel's forms (rescale 2, row sums by the P V wgmma): exact maxima every
  // tile (plain), lazy maxima with K / V by cp.async (lazy), and by TMA (lazy_tma, the default).
  for (const char* form : {"plain", "lazy", "lazy_tma"}) {
    const int64_t lq = 4096, lk = 4096, h = 8, d = 40;
    cases.push_back({std::string("attn_wgmma_d40/") + form + "/" + bs + "l" + std::to_string(lq) + "_h" +
                         std::to_string(h) + "_d" + std::to_string(d),
                     4.0 * b * h * lq * lk * d,
                     [=] {
                       return std::vector<Tensor>{random_device({b, lq, h * d}, 7, -2, 2),
                                                  random_device({b, lk, h * d}, 8, -2, 2),
                                                  random_device({b, lk, h * d}, 9)};
                     },
                     [=](const std::vector<Tensor>& in) {
                       sd::testing::ScopedEnv env("SDSERVE_CUDA_ATTENTION", "wgmma");
                       sd::testing::ScopedEnv r("SDSERVE_CUDA_WGMMA_RESCALE", "2");
                       sd::testing::ScopedEnv sum("SDSERVE_CUDA_WGMMA_ROWSUM", "1");
                       sd::testing::ScopedEnv lazy("SDSERVE_CUDA_WGMMA_LAZY", form[0] == 'p' ? "0" : "1");
                       sd::testing::ScopedEnv tma("SDSERVE_CUDA_WGMMA_TMA", form[4] == '_' ? "1" : "0");
                       return g_backend->attention(in[0], in[1], in[2], static_cast<int>(h), false);
                     }});
  }
  // The default d 40 kernel's time against the score spread (its lazy maxima and skipped
  // rescales are data-dependent): Q uniform in [-q, q] (q 2 is the cases above: scores of std
  // ~1.3 in softmax units), and "ramp": keys scaled by 0.25 .. 4 along the sequence, so a row's
  // maximum keeps growing from tile to tile (the lazy path's worst case).
  // shift1: the fallback shifts P by powers of two (the default), shift0: new exps.
  for (const char* spread : {"q0.5", "q2", "q4", "q8", "ramp"}) {
  for (const char* shift : {"1", "0"}) {
    const int64_t lq = 4096, lk = 4096, h = 8, d = 40;
    const float q = spread[0] == 'q' ? std::strtof(spread + 1, nullptr) : 2.f;
    const bool ramp = spread[0] == 'r';
    cases.push_back({std::string("attn_d40_spread/") + spread + "_shift" + shift + "/" + bs + "l" + std::to_string(lq) + "_h" +
                         std::to_string(h) + "_d" + std::to_string(d),
                     4.0 * b * h * lq * lk * d,
                     [=] {
                       Tensor k = random_device({b, lk, h * d}, 8, -2, 2);
                       if (ramp) {
                         Tensor kh = g_backend->download(k);  // [b, lk, h * d] f32
                         for (int64_t i = 0; i < b * lk; ++i) {
                           const float f = 0.25f * std::exp2(4.f * static_cast<float>(i % lk) / static_cast<float>(lk));
                           for (int64_t j = 0; j < h * d; ++j) kh.f32()[i * h * d + j] *= f;
                         }
                         k = g_backend->upload(kh);
                       }
                       return std::vector<Tensor>{random_device({b, lq, h * d}, 7, -q, q), k,
                                                  random_device({b, lk, h * d}, 9)};
                     },
                     [=](const std::vector<Tensor>& in) {
                       sd::testing::ScopedEnv env("SDSERVE_CUDA_ATTENTION", "wgmma");
                       sd::testing::ScopedEnv shift_env("SDSERVE_CUDA_WGMMA_LAZY_SHIFT", shift);
                       return g_backend->attention(in[0], in[1], in[2], static_cast<int>(h), false);
                     }});
  }
  }
  // The d 40 self-attention as the UNet calls it: q / k / v column windows of one packed QKV
  // projection [b, 4096, 960] (attention_cols), by the default choice and by the wgmma kernel.
  for (const char* path : {"auto", "wgmma"}) {
    const int64_t lq = 4096, h = 8, d = 40;
    cases.push_back({std::string("attn_d40_packed/") + path + "/" + bs + "l" + std::to_string(lq) + "_h" +
                         std::to_string(h) + "_d" + std::to_string(d),
                     4.0 * b * h * lq * lq * d,
                     [=] { return std::vector<Tensor>{random_device({b, lq, 3 * h * d}, 7, -2, 2)}; },
                     [=](const std::vector<Tensor>& in) {
                       sd::testing::ScopedEnv env("SDSERVE_CUDA_ATTENTION", path);
                       return g_backend->attention_cols(in[0], 0, in[0], h * d, 2 * h * d, h * d, static_cast<int>(h),
                                                        false);
                     }});
  }
  for (auto [hw, c] : {std::array<int64_t, 2>{64, 320}, {32, 640}, {16, 1280}}) {
    auto norm_inputs = [=] {
      return std::vector<Tensor>{random_device({b, hw, hw, c}, 10), random_device({c}, 11, 0.5f, 1.5f),
                                 random_device({c}, 12)};
    };
    cases.push_back({"group_norm_silu/" + bs + dims({hw, hw, c}) + "/g32", 0, norm_inputs,
                     [](const std::vector<Tensor>& in) {
                       return g_backend->group_norm(in[0], in[1], in[2], 32, 1e-5f, true);
                     }});
    cases.push_back({"layer_norm/" + bs + dims({hw * hw, c}), 0, norm_inputs, [=](const std::vector<Tensor>& in) {
                       return g_backend->layer_norm(in[0].reshape({b, hw * hw, c}), in[1], in[2], 1e-5f);
                     }});
    cases.push_back({"geglu/" + bs + dims({hw * hw, 8 * c}), 0,
                     [=] { return std::vector<Tensor>{random_device({b, hw * hw, 8 * c}, 13)}; },
                     [](const std::vector<Tensor>& in) { return g_backend->geglu(in[0]); }});
  }
  // Group norm (+SiLU, + the ResNet time-embedding add) per path: SDSERVE_CUDA_GN_ONCHIP=0 (two
  // kernels), 1 (the on-chip kernel wherever it fits; SDSERVE_BENCH_GN_ONCHIP=require makes a
  // configuration that does not apply an error instead) and auto (the default choice).
  static const std::string onchip_mode = [] {
    const char* v = std::getenv("SDSERVE_BENCH_GN_ONCHIP");
    return std::string(v ? v : "1");
  }();
  // "fast": the one-pass register kernel (group_norm_fast.cu), SDSERVE_CUDA_GN_FAST=1 (or
  // SDSERVE_BENCH_GN_FAST, e.g. require); the other paths leave it to its own rule.
  static const std::string fast_mode = [] {
    const char* v = std::getenv("SDSERVE_BENCH_GN_FAST");
    return std::string(v ? v : "1");
  }();
  for (auto [hw, c] : {std::array<int64_t, 2>{64, 320}, {32, 640}, {16, 1280}, {8, 1280}, {64, 640}, {64, 960},
                       {32, 1920}, {16, 2560}, {32, 960}, {32, 1280}, {16, 1920},
                       // the VAE decoder's levels (rows larger than L2 at 512x512)
                       {128, 512}, {256, 256}, {256, 512}, {512, 128}, {512, 256}}) {
    // "nofast": SDSERVE_CUDA_GN_FAST=0 with the rest's default (the default before the fast kernel).
    for (const char* mode : {"0", "1", "auto", "fast", "nofast"}) {
      const bool fast = mode[0] == 'f';
      const bool nofast = mode[0] == 'n';
      const std::string path = mode[0] == '0' ? "two_kernel" : mode[0] == '1' ? "onchip" : mode;
      const std::string onchip_env = mode[0] == '1' ? onchip_mode : (fast || nofast) ? "auto" : mode;
      const std::string fast_env = fast ? fast_mode : nofast ? "0" : "auto";
      cases.push_back({"gn_path/" + path + "/" + bs + dims({hw, hw, c}) + "/g32_silu", 0,
                       [=] {
                         return std::vector<Tensor>{random_device({b, hw, hw, c}, 17, -2, 3),
                                                    random_device({c}, 18, 0.5f, 1.5f), random_device({c}, 19)};
                       },
                       [=](const std::vector<Tensor>& in) {
                         sd::testing::ScopedEnv env("SDSERVE_CUDA_GN_ONCHIP", onchip_env);
                         sd::testing::ScopedEnv env_fast("SDSERVE_CUDA_GN_FAST", fast_env);
                         return g_backend->group_norm(in[0], in[1], in[2], 32, 1e-5f, true);
                       }});
      cases.push_back({"gn_path/" + path + "/" + bs + dims({hw, hw, c}) + "/g32_add_silu", 0,
                       [=] {
                         return std::vector<Tensor>{random_device({b, hw, hw, c}, 17, -2, 3),
                                                    random_device({b, 4 * c}, 20), random_device({c}, 18, 0.5f, 1.5f),
                                                    random_device({c}, 19)};
                       },
                       [=](const std::vector<Tensor>& in) {
                         sd::testing::ScopedEnv env("SDSERVE_CUDA_GN_ONCHIP", onchip_env);
                         sd::testing::ScopedEnv env_fast("SDSERVE_CUDA_GN_FAST", fast_env);
                         return g_backend->group_norm_add(in[0], in[1], c, in[2], in[3], 32, 1e-5f, true);
                       }});
    }
  }
  // Layer norm per path (SDSERVE_CUDA_LN): the one-row-per-group kernel (warp), the persistent
  // one (rows) and the default (auto), at the UNet's transformer token counts x channels.
  for (auto [tokens, c] : {std::array<int64_t, 2>{4096, 320}, {1024, 640}, {256, 1280}, {64, 1280}}) {
    for (const char* mode : {"warp", "rows", "auto"}) {
      cases.push_back({std::string("ln_path/") + mode + "/" + bs + dims({tokens, c}), 0,
                       [=] {
                         return std::vector<Tensor>{random_device({b, tokens, c}, 21, -2, 3),
                                                    random_device({c}, 22, 0.5f, 1.5f), random_device({c}, 23)};
                       },
                       [=](const std::vector<Tensor>& in) {
                         sd::testing::ScopedEnv env("SDSERVE_CUDA_LN", mode);
                         return g_backend->layer_norm(in[0], in[1], in[2], 1e-5f);
                       }});
    }
  }
  // A whole ResNet block (Backend::resnet_block: the persistent kernel where it applies) against
  // the engine's ops for it (forward_stacked's fallback): the SD 1.5 8x8 / 16x16 levels' blocks
  // ({height, width, x channels, skip channels}; a shortcut where x + skip is not 1280; 8x12 / 12x12:
  // the 8x8 level at 768x512 / 768x768).
  for (auto [hh, ww, cx, cs] : {std::array<int64_t, 4>{8, 8, 1280, 0}, {8, 8, 1280, 1280}, {8, 12, 1280, 0},
                                {8, 12, 1280, 1280}, {12, 12, 1280, 0}, {12, 12, 1280, 1280}, {16, 16, 1280, 0},
                                {16, 16, 640, 0}, {16, 16, 1280, 1280}, {16, 16, 1280, 640}}) {
    const int64_t c = 1280, cin = cx + cs, hw = hh * ww;
    const bool shortcut = cin != c;
    for (const bool fused : {true, false}) {
      cases.push_back({std::string("resnet_block/") + (fused ? "fused/" : "ops/") + bs + dims({hh, ww, cin}) + "->" +
                           std::to_string(c),
                       2.0 * b * hw * c * 9 * (cin + c) + (shortcut ? 2.0 * b * hw * c * cin : 0.0),
                       [=] {
                         const float r1 = 0.3f / std::sqrt(9.f * cin), r2 = 0.3f / std::sqrt(9.f * c);
                         return std::vector<Tensor>{
                             random_device({b, hh, ww, cx}, 31, -2, 3), random_device({b, hh, ww, cs ? cs : 64}, 32),
                             random_device({b, 4 * c}, 33), random_device({cin}, 34, 0.5f, 1.5f), random_device({cin}, 35),
                             random_device({c, 3, 3, cin}, 36, -r1, r1), random_device({c}, 37, 0.5f, 1.5f),
                             random_device({c}, 38), random_device({c, 3, 3, c}, 39, -r2, r2), random_device({c}, 40),
                             random_device({c, cin}, 41, -0.02f, 0.02f), random_device({c}, 42)};
                       },
                       [=](const std::vector<Tensor>& in) {
                         sd::Backend& be = *g_backend;
                         sd::Backend::ResnetBlockOperands o;
                         o.x = in[0], o.skip = cs ? in[1] : Tensor(), o.temb_all = in[2], o.time_col = c;
                         o.gamma1 = in[3], o.beta1 = in[4], o.w1 = in[5], o.gamma2 = in[6], o.beta2 = in[7];
                         o.w2 = in[8], o.b2 = in[9];
                         if (shortcut) o.shortcut_w = in[10], o.shortcut_b = in[11];
                         if (fused) {
                           Tensor y = be.resnet_block(o);
                           if (y.defined()) return y;
                           static bool warned = false;
                           if (!warned) std::fprintf(stderr, "resnet_block: no fused form at some shapes (ops run)\n");
                           warned = true;
                         }
                         const sd::Backend::ConcatReads r =
                             cs ? be.concat_norm_shortcut(o.x, o.skip, o.gamma1, o.beta1, 32, 1e-5f, true, o.shortcut_w,
                                                          o.shortcut_b)
                                : sd::Backend::ConcatReads{be.group_norm(o.x, o.gamma1, o.beta1, 32, 1e-5f, true),
                                                           shortcut ? be.linear(o.x, o.shortcut_w, o.shortcut_b) : o.x};
                         Tensor h = be.conv2d(r.normed, o.w1, Tensor(), 1, 1);
                         h = be.group_norm_add(h, o.temb_all, c, o.gamma2, o.beta2, 32, 1e-5f, true);
                         return be.conv2d_fused(h, o.w2, o.b2, 1, 1, Tensor(), r.shortcut);
                       }});
    }
  }
  for (auto [hw, c] : {std::array<int64_t, 2>{8, 1280}, {16, 1280}, {32, 640}}) {
    cases.push_back({"upsample2x/" + bs + dims({hw, hw, c}), 0,
                     [=] { return std::vector<Tensor>{random_device({b, hw, hw, c}, 14)}; },
                     [](const std::vector<Tensor>& in) { return g_backend->upsample_nearest2x(in[0]); }});
  }
  cases.push_back({"add/" + bs + dims({64, 64, 320}), 0,
                   [=] {
                     return std::vector<Tensor>{random_device({b, 64, 64, 320}, 15),
                                                random_device({b, 64, 64, 320}, 16)};
                   },
                   [](const std::vector<Tensor>& in) { return g_backend->add(in[0], in[1]); }});
  return cases;
}

}  // namespace

int main(int argc, char** argv) {
  if (sd::cuda::device_count() == 0) {
    std::printf("gpu_ops_bench: no CUDA device (or built without CUDA), nothing to benchmark\n");
    return 0;
  }
  auto made = sd::cuda::make_backend(0);
  if (!made.ok()) {
    std::fprintf(stderr, "gpu_ops_bench: %s\n", made.status().to_string().c_str());
    return 1;
  }
  std::unique_ptr<sd::Backend> backend = std::move(*made);
  g_backend = backend.get();
  benchmark::AddCustomContext("backend", backend->name());
  benchmark::AddCustomContext("dtype", sd::dtype_name(backend->compute_dtype()));
  const int iters = env_int("SDSERVE_BENCH_ITERS", 20);
  static std::vector<Case> cases;  // outlives the registered benchmarks
  for (int64_t b : batches())
    for (Case& c : sd15_cases(b)) cases.push_back(std::move(c));
  for (const Case& c : cases) {
    benchmark::RegisterBenchmark(c.name.c_str(), [&c](benchmark::State& s) { run_case(s, c); })
        ->UseManualTime()
        ->Iterations(iters)
        ->Unit(benchmark::kMicrosecond);
  }
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  g_cache = Cache{};
  g_backend = nullptr;
  return 0;
}
