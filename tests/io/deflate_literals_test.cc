// deflate_literals: streams made of literal-only blocks inflate (zlib) to the input for many
// byte distributions and part splits; code lengths are complete prefix codes within the limit,
// also for frequencies (Fibonacci) whose plain Huffman tree would be deeper than allowed.
#include <gtest/gtest.h>
#include <zlib.h>

#include <cmath>
#include <random>
#include <vector>

#include "io/deflate_literals.h"

namespace sd {
namespace {

// One zlib stream of `parts` (each deflate_literals-encoded, the last final) -> inflated bytes.
std::vector<uint8_t> roundtrip(const std::vector<std::vector<uint8_t>>& parts, size_t* compressed = nullptr) {
  std::vector<uint8_t> stream = {0x78, 0x01};
  uLong adler = adler32(0L, Z_NULL, 0);
  for (size_t i = 0; i < parts.size(); ++i) {
    deflate_literals(parts[i].data(), parts[i].size(), i + 1 == parts.size(), &stream);
    // (A null buffer would make adler32 return its initial value.)
    if (!parts[i].empty()) adler = adler32(adler, parts[i].data(), static_cast<uInt>(parts[i].size()));
  }
  for (int k = 3; k >= 0; --k) stream.push_back(static_cast<uint8_t>(adler >> (8 * k)));
  if (compressed) *compressed = stream.size();
  size_t total = 0;
  for (const auto& p : parts) total += p.size();
  std::vector<uint8_t> out(total + 16);
  z_stream z{};
  EXPECT_EQ(inflateInit(&z), Z_OK);
  z.next_in = stream.data();
  z.avail_in = static_cast<uInt>(stream.size());
  z.next_out = out.data();
  z.avail_out = static_cast<uInt>(out.size());
  const int rc = inflate(&z, Z_FINISH);
  EXPECT_EQ(rc, Z_STREAM_END) << (z.msg ? z.msg : "");
  EXPECT_EQ(z.avail_in, 0u);
  out.resize(out.size() - z.avail_out);
  inflateEnd(&z);
  return out;
}

TEST(DeflateLiterals, InflatesToTheInputForManyDistributions) {
  std::mt19937 rng(7);
  const auto make = [&](size_t n, int kind) {
    std::vector<uint8_t> v(n);
    std::geometric_distribution<int> geo(0.3);
    for (size_t i = 0; i < n; ++i) {
      switch (kind) {
        case 0: v[i] = static_cast<uint8_t>(rng()); break;                       // uniform
        case 1: v[i] = static_cast<uint8_t>(geo(rng) * ((i & 1) ? 1 : -1)); break;  // filtered-image-like
        case 2: v[i] = 42; break;                                                // one value
        case 3: v[i] = (rng() & 1) ? 0 : 255; break;                             // two values
        default: v[i] = static_cast<uint8_t>(i % 7 == 0 ? rng() : 3); break;      // skewed
      }
    }
    return v;
  };
  for (int kind = 0; kind < 5; ++kind) {
    for (size_t n : {size_t{0}, size_t{1}, size_t{2}, size_t{3}, size_t{1000}, size_t{100001}}) {
      const std::vector<uint8_t> data = make(n, kind);
      EXPECT_EQ(roundtrip({data}), data) << "kind " << kind << " n " << n;
      // The same bytes in three parts (two sync-flushed, one final), and with an empty part.
      const std::vector<std::vector<uint8_t>> parts = {
          std::vector<uint8_t>(data.begin(), data.begin() + static_cast<long>(n / 3)),
          std::vector<uint8_t>(data.begin() + static_cast<long>(n / 3), data.begin() + static_cast<long>(2 * n / 3)),
          std::vector<uint8_t>(data.begin() + static_cast<long>(2 * n / 3), data.end())};
      EXPECT_EQ(roundtrip(parts), data) << "kind " << kind << " n " << n << " in parts";
      EXPECT_EQ(roundtrip({{}, data, {}}), data) << "kind " << kind << " n " << n << " with empty parts";
    }
  }
  // Compression: skewed data shrinks, uniform bytes cost at most a little over 8 bits each.
  size_t z1 = 0, z0 = 0;
  const std::vector<uint8_t> skewed = make(100000, 1), uniform = make(100000, 0);
  roundtrip({skewed}, &z1);
  roundtrip({uniform}, &z0);
  EXPECT_LT(z1, skewed.size() / 2);
  EXPECT_LT(z0, uniform.size() + uniform.size() / 50);
}

TEST(DeflateLiterals, CodeLengthsAreCompleteAndLimited) {
  // Fibonacci frequencies: an unlimited Huffman tree over 30 symbols would be 29 deep.
  std::vector<uint32_t> fib(30);
  fib[0] = fib[1] = 1;
  for (size_t i = 2; i < fib.size(); ++i) fib[i] = fib[i - 1] + fib[i - 2];
  std::mt19937 rng(3);
  std::vector<uint32_t> random(257);
  for (auto& f : random) f = rng() % 1000;
  for (const auto& [freq, max_bits] :
       std::vector<std::pair<std::vector<uint32_t>, int>>{{fib, 15}, {fib, 7}, {random, 15}, {{0, 0, 5}, 15}, {{0, 0, 0}, 7}}) {
    const std::vector<uint8_t> len = huffman_code_lengths(freq, max_bits);
    ASSERT_EQ(len.size(), freq.size());
    double kraft = 0;
    int used = 0;
    for (size_t s = 0; s < len.size(); ++s) {
      EXPECT_LE(len[s], max_bits);
      if (freq[s] > 0) {
        EXPECT_GT(len[s], 0) << "symbol " << s;
      }
      if (len[s] > 0) {
        kraft += std::ldexp(1.0, -len[s]);
        ++used;
      }
    }
    EXPECT_GE(used, 2);
    EXPECT_DOUBLE_EQ(kraft, 1.0);  // complete: every code word used
  }
}

}  // namespace
}  // namespace sd
