// Tests of the safetensors reader/writer: a round trip of every supported dtype with metadata,
// and every kind of corrupt file (truncation, bad header length, bad JSON, unsupported dtype,
// size mismatch, out-of-range / overlapping offsets) giving a clear error that names the file.
#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <random>

#include "core/half.h"
#include "io/safetensors.h"
#include "io_test_util.h"

namespace sd {
namespace {

Tensor random_tensor(Shape shape, DType dtype, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  Tensor t = Tensor::empty_host(std::move(shape), dtype);
  uint8_t* bytes = static_cast<uint8_t*>(t.raw());
  for (int64_t i = 0; i < t.numel(); ++i) {
    switch (dtype) {
      case DType::kF32: t.data<float>()[i] = normal(rng); break;
      case DType::kF16: t.data<uint16_t>()[i] = f32_to_f16(normal(rng)); break;
      case DType::kBF16: t.data<uint16_t>()[i] = f32_to_bf16(normal(rng)); break;
      case DType::kI32: t.data<int32_t>()[i] = static_cast<int32_t>(rng()); break;
      case DType::kI64: t.data<int64_t>()[i] = static_cast<int64_t>(rng()) * 977 - 5; break;
      case DType::kU8: bytes[i] = static_cast<uint8_t>(rng()); break;
    }
  }
  return t;
}

TEST(Safetensors, RoundTripsEveryDtypeAndMetadata) {
  const std::string path = test_temp_dir() + "/roundtrip.safetensors";
  std::vector<std::pair<std::string, Tensor>> tensors = {
      {"w.f32", random_tensor({3, 5}, DType::kF32, 1)},   {"w.f16", random_tensor({2, 3, 4}, DType::kF16, 2)},
      {"w.bf16", random_tensor({7}, DType::kBF16, 3)},    {"ids.i32", random_tensor({4}, DType::kI32, 4)},
      {"ids.i64", random_tensor({2, 2}, DType::kI64, 5)}, {"mask.u8", random_tensor({9}, DType::kU8, 6)},
      {"empty", random_tensor({0, 4}, DType::kF32, 7)},   {"scalar", random_tensor({}, DType::kF32, 8)},
  };
  ASSERT_TRUE(write_safetensors(path, tensors, {{"format", "pt"}, {"note", "ünïcode"}}).ok());
  auto file = SafetensorsFile::open(path);
  ASSERT_TRUE(file.ok()) << file.status().to_string();
  EXPECT_EQ((*file)->entries().size(), tensors.size());
  EXPECT_EQ((*file)->metadata().at("note"), "ünïcode");
  EXPECT_EQ((*file)->metadata().at("format"), "pt");
  for (const auto& [name, t] : tensors) {
    const SafetensorsEntry* e = (*file)->find(name);
    ASSERT_NE(e, nullptr) << name;
    EXPECT_EQ(e->dtype, t.dtype());
    EXPECT_EQ(e->shape, t.shape());
    auto back = (*file)->read(name);
    ASSERT_TRUE(back.ok());
    EXPECT_EQ(back->shape(), t.shape());
    EXPECT_EQ(std::memcmp(back->raw(), t.raw(), t.nbytes()), 0) << name;
  }
  auto f16 = (*file)->read_f32("w.f16");
  ASSERT_TRUE(f16.ok());
  EXPECT_EQ(f16->dtype(), DType::kF32);
  EXPECT_EQ(max_abs_diff(*f16, to_f32_host(tensors[1].second)), 0.0);
  auto bf16 = (*file)->read_f32("w.bf16");
  ASSERT_TRUE(bf16.ok());
  EXPECT_EQ(max_abs_diff(*bf16, to_f32_host(tensors[2].second)), 0.0);

  auto ints = (*file)->read_f32("ids.i32");
  EXPECT_EQ(ints.status().code(), StatusCode::kInvalidArgument);
  auto missing = (*file)->read("nope");
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find(path), std::string::npos);
  EXPECT_NE(missing.status().message().find("'nope'"), std::string::npos);
}

TEST(Safetensors, WriterRejectsRepeatedNames) {
  const std::string path = test_temp_dir() + "/dup.safetensors";
  Tensor t = random_tensor({2}, DType::kF32, 1);
  EXPECT_EQ(write_safetensors(path, {{"a", t}, {"a", t}}).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(write_safetensors(path, {{"__metadata__", t}}).code(), StatusCode::kInvalidArgument);
}

// A file from a raw header text and `data_bytes` bytes of data.
std::string raw_file(const std::string& name, const std::string& header, size_t data_bytes, int64_t length_override = -1) {
  const std::string path = test_temp_dir() + "/" + name + ".safetensors";
  std::ofstream out(path, std::ios::binary);
  const uint64_t len = length_override >= 0 ? static_cast<uint64_t>(length_override) : header.size();
  for (int i = 0; i < 8; ++i) out.put(static_cast<char>((len >> (8 * i)) & 0xff));
  out << header << std::string(data_bytes, '\x11');
  return path;
}

struct Corruption {
  const char* name;
  std::string header;
  size_t data_bytes;
  int64_t length_override;
  StatusCode code;
  const char* message_part;  // must appear in the message, with the path
};

TEST(Safetensors, CorruptFilesGiveClearErrorsNamingTheFile) {
  const std::vector<Corruption> cases = {
      {"bad_json", R"({"a": {"dtype": "F32", )", 0, -1, StatusCode::kDataLoss, "not valid JSON"},
      {"not_object", R"([1, 2, 3])", 0, -1, StatusCode::kDataLoss, "not an object"},
      {"header_beyond_file", R"({})", 0, 4096, StatusCode::kDataLoss, "beyond the end of the file"},
      {"header_too_big", R"({})", 0, int64_t(1) << 40, StatusCode::kDataLoss, "100 MB"},
      {"unknown_dtype", R"({"w": {"dtype": "F64", "shape": [2], "data_offsets": [0, 16]}})", 16, -1,
       StatusCode::kUnimplemented, "unsupported dtype 'F64'"},
      {"garbage_dtype", R"({"w": {"dtype": "Q4", "shape": [2], "data_offsets": [0, 16]}})", 16, -1,
       StatusCode::kUnimplemented, "tensor 'w': unsupported dtype"},
      {"size_mismatch", R"({"w": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 20]}})", 20, -1,
       StatusCode::kDataLoss, "tensor 'w': F32[2,3] needs 24 bytes but data_offsets give 20"},
      {"negative_dim", R"({"w": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}})", 4, -1,
       StatusCode::kDataLoss, "non-negative integers"},
      {"float_dim", R"({"w": {"dtype": "F32", "shape": [1.5], "data_offsets": [0, 4]}})", 4, -1,
       StatusCode::kDataLoss, "non-negative integers"},
      {"shape_overflow", R"({"w": {"dtype": "F32", "shape": [4294967296, 4294967296], "data_offsets": [0, 4]}})", 4,
       -1, StatusCode::kDataLoss, "overflows"},
      {"end_beyond_data", R"({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}})", 8, -1,
       StatusCode::kDataLoss, "beyond the data section"},
      {"begin_after_end", R"({"w": {"dtype": "F32", "shape": [0], "data_offsets": [8, 4]}})", 8, -1,
       StatusCode::kDataLoss, "begin 8 > end 4"},
      {"overlap",
       R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}})",
       12, -1, StatusCode::kDataLoss, "'a' and 'b' have overlapping data_offsets"},
      {"duplicate",
       R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, "a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}})",
       8, -1, StatusCode::kDataLoss, "'a' twice"},
      {"missing_offsets", R"({"w": {"dtype": "F32", "shape": [1]}})", 4, -1, StatusCode::kDataLoss, "data_offsets"},
      {"bad_metadata", R"({"__metadata__": {"n": 3}})", 0, -1, StatusCode::kDataLoss, "__metadata__ value 'n'"},
      {"deep_json", std::string(200, '[') + std::string(200, ']'), 0, -1, StatusCode::kDataLoss, "nested too deeply"},
  };
  for (const Corruption& c : cases) {
    const std::string path = raw_file(c.name, c.header, c.data_bytes, c.length_override);
    auto file = SafetensorsFile::open(path);
    ASSERT_FALSE(file.ok()) << c.name;
    EXPECT_EQ(file.status().code(), c.code) << c.name << ": " << file.status().to_string();
    EXPECT_NE(file.status().message().find(path), std::string::npos) << c.name << ": " << file.status().to_string();
    EXPECT_NE(file.status().message().find(c.message_part), std::string::npos)
        << c.name << ": " << file.status().to_string();
  }
}

TEST(Safetensors, TruncatedAndTinyFiles) {
  const std::string path = test_temp_dir() + "/truncated.safetensors";
  ASSERT_TRUE(write_safetensors(path, {{"w", random_tensor({64}, DType::kF32, 9)}}).ok());
  std::vector<uint8_t> bytes;
  {
    std::ifstream in(path, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), {});
  }
  for (size_t keep : {bytes.size() - 1, bytes.size() - 200, size_t(20), size_t(7), size_t(0)}) {
    std::ofstream(path, std::ios::binary | std::ios::trunc).write(reinterpret_cast<const char*>(bytes.data()), keep);
    auto file = SafetensorsFile::open(path);
    ASSERT_FALSE(file.ok()) << keep;
    EXPECT_EQ(file.status().code(), StatusCode::kDataLoss) << file.status().to_string();
    EXPECT_NE(file.status().message().find(path), std::string::npos) << file.status().to_string();
  }
  auto missing = SafetensorsFile::open(test_temp_dir() + "/does-not-exist.safetensors");
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  auto dir = SafetensorsFile::open(test_temp_dir());
  EXPECT_EQ(dir.status().code(), StatusCode::kInvalidArgument);
}

TEST(Safetensors, ParseHeaderSurvivesRandomMutations) {
  // A cheap in-suite cousin of the fuzz target: flip bytes of a valid header.
  const std::string path = test_temp_dir() + "/mutate.safetensors";
  ASSERT_TRUE(write_safetensors(path, {{"a", random_tensor({3, 2}, DType::kF16, 1)},
                                       {"b", random_tensor({5}, DType::kF32, 2)}},
                                {{"k", "v"}})
                  .ok());
  std::ifstream in(path, std::ios::binary);
  const std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)), {});
  std::mt19937 rng(123);
  int accepted = 0;
  for (int i = 0; i < 3000; ++i) {
    std::vector<uint8_t> m = bytes;
    const int flips = 1 + static_cast<int>(rng() % 4);
    for (int f = 0; f < flips; ++f) m[rng() % m.size()] = static_cast<uint8_t>(rng());
    std::map<std::string, std::string> meta;
    auto r = SafetensorsFile::parse_header(m.data(), m.size(), &meta);
    if (r.ok()) {
      ++accepted;
      for (const auto& e : *r) {
        ASSERT_LE(e.begin, e.end);
        ASSERT_EQ(static_cast<int64_t>(e.end - e.begin), shape_numel(e.shape) * static_cast<int64_t>(dtype_size(e.dtype)));
      }
    }
  }
  EXPECT_GT(accepted, 0);  // mutations inside the data section stay valid
}

}  // namespace
}  // namespace sd
