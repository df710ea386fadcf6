// Benchmarks of the CPU backend's heavy ops at SD 1.5 shapes (512x512 image -> 64x64
// latent): 3x3 conv, linear, self/cross attention and group_norm. Reports GFLOP/s for the
// GEMM-shaped ops. Inputs are seeded random; each benchmark runs a handful of iterations.
#include <benchmark/benchmark.h>

#include <cstdio>
#include <cstdlib>
#include <random>

#include "backend/cpu/cpu_backend.h"

namespace {

// SDSERVE_BENCH_THREADS picks the thread count (default 0: all cores).
sd::Backend& backend() {
  static std::unique_ptr<sd::Backend> be = [] {
    const char* env = std::getenv("SDSERVE_BENCH_THREADS");
    auto made = sd::cpu::make_backend(env ? std::atoi(env) : 0);
    std::fprintf(stderr, "backend: %s\n", made->name().c_str());
    return made;
  }();
  return *be;
}

sd::Tensor random_device(const sd::Shape& shape, uint32_t seed, float range = 1.f) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> dist(-range, range);
  sd::Tensor t = sd::Tensor::empty_host(shape, sd::DType::kF32);
  for (int64_t i = 0; i < t.numel(); ++i) t.f32()[i] = dist(gen);
  return backend().upload(t);
}

// args: H (= W), Cin, Cout, stride
void BM_Conv2d3x3(benchmark::State& state) {
  const int64_t hw = state.range(0), cin = state.range(1), cout = state.range(2);
  const int stride = static_cast<int>(state.range(3));
  const sd::Tensor x = random_device({1, hw, hw, cin}, 1);
  const sd::Tensor w = random_device({cout, 3, 3, cin}, 2, 0.05f);
  const sd::Tensor b = random_device({cout}, 3);
  for (auto _ : state) benchmark::DoNotOptimize(backend().conv2d(x, w, b, stride, 1));
  const double out_px = static_cast<double>((hw / stride) * (hw / stride));
  state.counters["GFLOP/s"] = benchmark::Counter(2.0 * out_px * 9 * cin * cout * state.iterations() / 1e9,
                                                 benchmark::Counter::kIsRate);
}
BENCHMARK(BM_Conv2d3x3)
    ->Args({64, 320, 320, 1})
    ->Args({32, 640, 640, 1})
    ->Args({64, 320, 320, 2})
    ->Unit(benchmark::kMillisecond)
    ->MinTime(1.0)->UseRealTime();

// args: M, K, N
void BM_Linear(benchmark::State& state) {
  const int64_t m = state.range(0), k = state.range(1), n = state.range(2);
  const sd::Tensor x = random_device({1, m, k}, 4);
  const sd::Tensor w = random_device({n, k}, 5, 0.05f);
  const sd::Tensor b = random_device({n}, 6);
  for (auto _ : state) benchmark::DoNotOptimize(backend().linear(x, w, b));
  state.counters["GFLOP/s"] =
      benchmark::Counter(2.0 * m * k * n * state.iterations() / 1e9, benchmark::Counter::kIsRate);
}
BENCHMARK(BM_Linear)->Args({4096, 320, 320})->Args({4096, 320, 2560})->Unit(benchmark::kMillisecond)->MinTime(0.5)->UseRealTime();

// args: Lq, Lk, heads, head_dim
void BM_Attention(benchmark::State& state) {
  const int64_t lq = state.range(0), lk = state.range(1), d = state.range(3);
  const int heads = static_cast<int>(state.range(2));
  const sd::Tensor q = random_device({1, lq, heads * d}, 7, 2.f);
  const sd::Tensor k = random_device({1, lk, heads * d}, 8, 2.f);
  const sd::Tensor v = random_device({1, lk, heads * d}, 9);
  for (auto _ : state) benchmark::DoNotOptimize(backend().attention(q, k, v, heads, false));
  state.counters["GFLOP/s"] = benchmark::Counter(4.0 * lq * lk * heads * d * state.iterations() / 1e9,
                                                 benchmark::Counter::kIsRate);
}
BENCHMARK(BM_Attention)
    ->Args({4096, 4096, 8, 40})
    ->Args({4096, 77, 8, 40})
    ->Args({1024, 1024, 8, 80})
    ->Unit(benchmark::kMillisecond)
    ->MinTime(1.0)->UseRealTime();

void BM_GroupNormSiLU(benchmark::State& state) {
  const sd::Tensor x = random_device({2, 64, 64, 320}, 10);
  const sd::Tensor g = random_device({320}, 11);
  const sd::Tensor b = random_device({320}, 12);
  for (auto _ : state) benchmark::DoNotOptimize(backend().group_norm(x, g, b, 32, 1e-5f, true));
  state.SetBytesProcessed(state.iterations() * x.nbytes() * 3);  // two stat passes + the write
}
BENCHMARK(BM_GroupNormSiLU)->Unit(benchmark::kMillisecond)->MinTime(0.5)->UseRealTime();

void BM_GEGLU(benchmark::State& state) {
  const sd::Tensor x = random_device({2, 4096, 2560}, 13, 3.f);
  for (auto _ : state) benchmark::DoNotOptimize(backend().geglu(x));
}
BENCHMARK(BM_GEGLU)->Unit(benchmark::kMillisecond)->MinTime(0.5)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
