// Tests of rng/: torch CPU and CUDA randn reproduced element for element against the
// reference outputs in tests/data/rng.safetensors (all seeds and shapes), plus stream
// continuation, seed handling, Philox known-answer vectors and the scalar (< 16) path.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "rng/noise.h"
#include "rng/torch_cpu_generator.h"
#include "rng/torch_cuda_generator.h"

namespace sd {
namespace {

// Minimal reader for the F32 tensors of one safetensors file (test-only; the project's
// validated reader lives in io/).
struct GoldenTensor {
  Shape shape;
  std::vector<float> values;
};

std::map<std::string, GoldenTensor> read_f32_safetensors(const std::string& path) {
  std::map<std::string, GoldenTensor> out;
  std::ifstream file(path, std::ios::binary);
  EXPECT_TRUE(file.good()) << path;
  uint64_t header_len = 0;
  file.read(reinterpret_cast<char*>(&header_len), 8);
  std::string header(header_len, '\0');
  file.read(header.data(), static_cast<std::streamsize>(header_len));
  std::vector<char> data((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
  const auto json = nlohmann::json::parse(header);
  for (const auto& [name, entry] : json.items()) {
    if (name == "__metadata__") continue;
    EXPECT_EQ(entry["dtype"], "F32") << name;
    GoldenTensor t;
    for (const auto& d : entry["shape"]) t.shape.push_back(d.get<int64_t>());
    const size_t begin = entry["data_offsets"][0], end = entry["data_offsets"][1];
    EXPECT_LE(end, data.size());
    t.values.resize((end - begin) / 4);
    std::memcpy(t.values.data(), data.data() + begin, end - begin);
    EXPECT_EQ(static_cast<int64_t>(t.values.size()), shape_numel(t.shape)) << name;
    out.emplace(name, std::move(t));
  }
  return out;
}

const std::map<std::string, GoldenTensor>& goldens() {
  static const auto* g = new std::map<std::string, GoldenTensor>(
      read_f32_safetensors(std::string(SD_TEST_DATA_DIR) + "/rng.safetensors"));
  return *g;
}

const std::vector<uint64_t> kSeeds = {0, 1, 42, 1234567, 4294967295ull};
const std::vector<std::string> kShapes = {"small", "odd", "latent64", "batch"};

struct Comparison {
  double max_abs = 0;
  int64_t over_1e6 = 0;
  int64_t count = 0;
};

Comparison compare_golden(NoiseSource source, uint64_t seed, const std::string& shape_name) {
  const std::string key = std::string(noise_source_name(source)) + ".seed" + std::to_string(seed) + "." + shape_name;
  const auto it = goldens().find(key);
  EXPECT_TRUE(it != goldens().end()) << key;
  Comparison c;
  if (it == goldens().end()) return c;
  auto gen = make_noise_generator(source, seed);
  const Tensor noise = gen->randn(it->second.shape);
  EXPECT_EQ(noise.shape(), it->second.shape);
  for (int64_t i = 0; i < noise.numel(); ++i) {
    const double d = std::fabs(static_cast<double>(noise.f32()[i]) - it->second.values[i]);
    c.max_abs = std::max(c.max_abs, d);
    c.over_1e6 += d > 1e-6;
  }
  c.count = noise.numel();
  return c;
}

TEST(TorchCpuRandn, MatchesReferenceForAllSeedsAndShapes) {
  EXPECT_EQ(goldens().size(), 40u);
  for (uint64_t seed : kSeeds) {
    for (const auto& shape : kShapes) {
      const Comparison c = compare_golden(NoiseSource::kTorchCpu, seed, shape);
      EXPECT_LE(c.max_abs, 1e-6) << "seed " << seed << " " << shape;
      EXPECT_EQ(c.max_abs, 0.0) << "expected bit-exact: seed " << seed << " " << shape;
    }
  }
}

TEST(TorchCudaRandn, MatchesReferenceForAllSeedsAndShapes) {
  double worst = 0;
  for (uint64_t seed : kSeeds) {
    for (const auto& shape : kShapes) {
      const Comparison c = compare_golden(NoiseSource::kTorchCuda, seed, shape);
      // The device's __sincosf is a hardware approximation modelled to within one float ulp
      // (gpu_math.cc); times the Box-Muller radius that stays below 1e-6.
      EXPECT_LE(c.max_abs, 1e-6) << "seed " << seed << " " << shape << ": " << c.over_1e6 << " of " << c.count
                                 << " elements differ by more than 1e-6";
      worst = std::max(worst, c.max_abs);
    }
  }
  std::printf("torch_cuda goldens: max abs difference %.3g\n", worst);
}

// tests/rng/data/torch_streams.safetensors (recorded with torch 2.11 on an H100, see its
// metadata): streams continued over several calls, the CPU scalar path (< 16 elements) with
// its cached normal, tails, and a CUDA tensor large enough to cap the grid (threads loop and
// use all four normals of curand_normal4), with a 2^40 + 5 seed.
double max_diff(const float* got, const std::vector<float>& want, size_t stride = 1) {
  double m = 0;
  for (size_t i = 0; i < want.size(); ++i) m = std::max(m, std::fabs(static_cast<double>(got[i * stride]) - want[i]));
  return m;
}

TEST(TorchStreams, MatchRecordedMultiCallSequences) {
  const auto rec = read_f32_safetensors(std::string(SD_SOURCE_DIR) + "/tests/rng/data/torch_streams.safetensors");
  ASSERT_FALSE(rec.empty());
  for (uint64_t seed : {uint64_t{0}, uint64_t{42}, uint64_t{4294967295}}) {
    auto gen = make_noise_generator(NoiseSource::kTorchCpu, seed);
    std::vector<float> seq;
    for (int n : {1, 3, 15, 16, 20, 1, 2, 1000}) {
      const Tensor t = gen->randn({n});
      seq.insert(seq.end(), t.f32(), t.f32() + n);
    }
    const auto& want = rec.at("cpu.seed" + std::to_string(seed) + ".seq").values;
    ASSERT_EQ(seq.size(), want.size());
    EXPECT_EQ(max_diff(seq.data(), want), 0.0) << "cpu seed " << seed;
  }
  for (uint64_t seed : {uint64_t{0}, uint64_t{42}, uint64_t{4294967295}, (uint64_t{1} << 40) + 5}) {
    const std::string key = "cuda.seed" + std::to_string(seed);
    auto gen = make_noise_generator(NoiseSource::kTorchCuda, seed);
    const Tensor large = gen->randn({1, 4, 300, 300});
    const Tensor after = gen->randn({1, 4, 64, 64});
    EXPECT_LE(max_diff(large.f32(), rec.at(key + ".large_every356").values, 356), 1e-6) << key;
    EXPECT_LE(max_diff(after.f32(), rec.at(key + ".after_large_head").values), 1e-6) << key;
    auto fresh = make_noise_generator(NoiseSource::kTorchCuda, seed);
    for (const auto& [n, name] : std::vector<std::pair<int, std::string>>{
             {5, "seq5"}, {300, "seq300"}, {16384, "seq16384_head"}, {7, "seq7"}}) {
      const Tensor t = fresh->randn({n});
      EXPECT_LE(max_diff(t.f32(), rec.at(key + "." + name).values), 1e-6) << key << " " << name;
    }
  }
}

TEST(Mt19937, KnownAnswers) {
  // The 10000th output of the standard MT19937 seeded with 5489 is 4123659995 (C++ [rand.predef]).
  Mt19937 mt(5489);
  uint32_t v = 0;
  for (int i = 0; i < 10000; ++i) v = mt.next_u32();
  EXPECT_EQ(v, 4123659995u);
}

TEST(Philox, KnownAnswerVectors) {
  // Random123 kat_vectors for philox4x32_10.
  auto a = philox4x32_10({0, 0, 0, 0}, 0, 0);
  EXPECT_EQ(a, (std::array<uint32_t, 4>{0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u}));
  auto b = philox4x32_10({0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu}, 0xffffffffu, 0xffffffffu);
  EXPECT_EQ(b, (std::array<uint32_t, 4>{0x408f276du, 0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu}));
  auto c = philox4x32_10({0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u}, 0xa4093822u, 0x299f31d0u);
  EXPECT_EQ(c, (std::array<uint32_t, 4>{0xd16cfe09u, 0x94fdccebu, 0x5001e420u, 0x24126ea1u}));
}

TEST(NoiseGenerator, SeedsAboveTwoToThe32) {
  // torch's CPU generator keeps the low 32 bits of the seed; the CUDA one uses all 64.
  auto a = make_noise_generator(NoiseSource::kTorchCpu, (uint64_t{5} << 32) | 42);
  auto b = make_noise_generator(NoiseSource::kTorchCpu, 42);
  EXPECT_EQ(a->randn({64}).f32()[0], b->randn({64}).f32()[0]);
  auto c = make_noise_generator(NoiseSource::kTorchCuda, (uint64_t{5} << 32) | 42);
  auto d = make_noise_generator(NoiseSource::kTorchCuda, 42);
  EXPECT_NE(c->randn({64}).f32()[0], d->randn({64}).f32()[0]);
}

TEST(TorchCpuRandn, StreamContinuesAcrossCalls) {
  // Blocks of 16 use consecutive uniforms: randn(16) twice == randn(32).
  auto a = make_noise_generator(NoiseSource::kTorchCpu, 7);
  auto b = make_noise_generator(NoiseSource::kTorchCpu, 7);
  const Tensor first = a->randn({16}), second = a->randn({16}), both = b->randn({32});
  for (int i = 0; i < 16; ++i) {
    EXPECT_EQ(first.f32()[i], both.f32()[i]);
    EXPECT_EQ(second.f32()[i], both.f32()[16 + i]);
  }
  // A tail redraws the last 16: the first n - 16 values agree with the untailed fill.
  auto c = make_noise_generator(NoiseSource::kTorchCpu, 7);
  const Tensor tailed = c->randn({1, 1, 4, 5});  // 20 elements
  for (int i = 0; i < 4; ++i) EXPECT_EQ(tailed.f32()[i], both.f32()[i]);
  EXPECT_NE(tailed.f32()[4], both.f32()[4]);
}

TEST(TorchCpuRandn, ScalarPathCachesTheSecondNormal) {
  // Below 16 elements torch draws pairs (cos, sin) in double and caches the sine across calls.
  auto a = make_noise_generator(NoiseSource::kTorchCpu, 3);
  auto b = make_noise_generator(NoiseSource::kTorchCpu, 3);
  const Tensor pair = a->randn({2});
  const Tensor x = b->randn({1}), y = b->randn({1});
  EXPECT_EQ(pair.f32()[0], x.f32()[0]);
  EXPECT_EQ(pair.f32()[1], y.f32()[0]);
  // The pair is (r cos t, r sin t) with u1 = 53-bit uniform of draws 0-1, u2 of draws 2-3.
  Mt19937 mt(3);
  const double u1 = static_cast<double>(mt.next_u64() & ((uint64_t{1} << 53) - 1)) / 9007199254740992.0;
  const double u2 = static_cast<double>(mt.next_u64() & ((uint64_t{1} << 53) - 1)) / 9007199254740992.0;
  const double r = std::sqrt(-2.0 * std::log1p(-u2)), t = 2.0 * M_PI * u1;
  EXPECT_EQ(pair.f32()[0], static_cast<float>(r * std::cos(t)));
  EXPECT_EQ(pair.f32()[1], static_cast<float>(r * std::sin(t)));
}

TEST(TorchCudaRandn, StreamContinuesWithThePhiloxOffset) {
  // Each call advances the offset by 4 per grid-stride iteration; the second call of a small
  // tensor reads counter 1 of each thread's subsequence.
  TorchCudaGenerator gen(42, PhiloxLaunchConfig{});
  std::vector<float> first(300), second(300);
  gen.fill_randn(first.data(), 300);
  EXPECT_EQ(gen.offset(), 4u);
  gen.fill_randn(second.data(), 300);
  EXPECT_EQ(gen.offset(), 8u);
  for (int i = 0; i < 300; ++i) EXPECT_NE(first[i], second[i]);
  auto fresh = make_noise_generator(NoiseSource::kTorchCuda, 42);
  const Tensor again = fresh->randn({300});
  for (int i = 0; i < 300; ++i) EXPECT_EQ(first[i], again.f32()[i]);
}

TEST(TorchCudaRandn, LargeTensorsUseEveryComponentOfNormal4) {
  // Above block * resident blocks (270336 on 132 SMs) threads loop and use .y/.z/.w too; with
  // a small imitated GPU this happens already at 2048 elements. Check the layout directly.
  PhiloxLaunchConfig tiny_gpu{.sm_count = 1, .max_threads_per_sm = 256, .block_size = 256};
  TorchCudaGenerator gen(5, tiny_gpu);
  std::vector<float> out(256 * 4 * 2 + 7);
  gen.fill_randn(out.data(), static_cast<int64_t>(out.size()));
  EXPECT_EQ(gen.offset(), 12u);  // 3 iterations
  TorchCudaGenerator wide(5, PhiloxLaunchConfig{});
  std::vector<float> one(256);
  wide.fill_randn(one.data(), 256);  // thread t, first curand_normal4, .x component
  for (int t = 0; t < 256; ++t) EXPECT_EQ(out[t], one[t]);
  int64_t differing = 0;
  for (int t = 0; t < 256; ++t) differing += out[256 + t] != one[t];
  EXPECT_EQ(differing, 256);
}

TEST(NoiseGenerator, MomentsOfALargeDraw) {
  for (NoiseSource source : {NoiseSource::kTorchCpu, NoiseSource::kTorchCuda}) {
    auto gen = make_noise_generator(source, 1234);
    const Tensor x = gen->randn({4, 4, 128, 128});
    double sum = 0, sq = 0, quart = 0;
    for (int64_t i = 0; i < x.numel(); ++i) {
      const double v = x.f32()[i];
      sum += v;
      sq += v * v;
      quart += v * v * v * v;
    }
    const double n = static_cast<double>(x.numel());
    EXPECT_NEAR(sum / n, 0.0, 0.01) << noise_source_name(source);
    EXPECT_NEAR(sq / n, 1.0, 0.01) << noise_source_name(source);
    EXPECT_NEAR(quart / n, 3.0, 0.05) << noise_source_name(source);
  }
}

}  // namespace
}  // namespace sd
