// Loading errors of the CLIP tokenizer: missing, unreadable or corrupt vocab.json /
// merges.txt / tokenizer_config.json give a Status that names the file and the problem,
// and the TokenizerConfig / diffusers-folder entry points resolve files as documented.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "tokenizer/clip_tokenizer.h"

namespace sd {
namespace {

const std::string kTokDir = std::string(SD_SOURCE_DIR) + "/data/tokenizer";

class LoadErrors : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::path(::testing::TempDir()) /
           ("tok_" + std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()));
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string write(const std::string& name, const std::string& text) {
    const auto path = (dir_ / name).string();
    std::ofstream(path, std::ios::binary) << text;
    return path;
  }
  static std::string expect_error(const StatusOr<std::shared_ptr<ClipTokenizer>>& r, StatusCode code) {
    EXPECT_FALSE(r.ok());
    if (r.ok()) return "";
    EXPECT_EQ(r.status().code(), code) << r.status().to_string();
    return r.status().message();
  }
  std::filesystem::path dir_;
};

// A minimal valid vocabulary: all byte symbols would be missing, which is allowed (they
// map to the unknown token), plus a few merges.
const char* kSmallVocab = R"({"<|startoftext|>": 0, "<|endoftext|>": 1, "a": 2, "b": 3, "ab": 4, "b</w>": 5, "ab</w>": 6})";

TEST_F(LoadErrors, MissingFilesNameThePath) {
  const auto merges = kTokDir + "/merges.txt";
  auto msg = expect_error(ClipTokenizer::load((dir_ / "nope.json").string(), merges), StatusCode::kNotFound);
  EXPECT_NE(msg.find("nope.json"), std::string::npos) << msg;
  msg = expect_error(ClipTokenizer::load(kTokDir + "/vocab.json", (dir_ / "nope.txt").string()), StatusCode::kNotFound);
  EXPECT_NE(msg.find("nope.txt"), std::string::npos) << msg;
  msg = expect_error(ClipTokenizer::load(dir_.string(), merges), StatusCode::kInvalidArgument);
  EXPECT_NE(msg.find("directory"), std::string::npos) << msg;
}

TEST_F(LoadErrors, CorruptVocabJson) {
  const auto merges = write("merges.txt", "#version: 0.2\na b\n");
  auto msg = expect_error(ClipTokenizer::load(write("v1.json", "{\"a\": 1,"), merges), StatusCode::kDataLoss);
  EXPECT_NE(msg.find("v1.json"), std::string::npos) << msg;
  EXPECT_NE(msg.find("not valid JSON"), std::string::npos) << msg;
  msg = expect_error(ClipTokenizer::load(write("v2.json", "[1, 2]"), merges), StatusCode::kDataLoss);
  EXPECT_NE(msg.find("v2.json"), std::string::npos) << msg;
  msg = expect_error(ClipTokenizer::load(write("v3.json", R"({"<|endoftext|>": 1, "a": "x"})"), merges),
                     StatusCode::kDataLoss);
  EXPECT_NE(msg.find("'a'"), std::string::npos) << msg;
  msg = expect_error(ClipTokenizer::load(write("v4.json", R"({"<|endoftext|>": 1, "a": 2, "b": 3, "ab": 4})"), merges),
                     StatusCode::kDataLoss);
  EXPECT_NE(msg.find("v4.json"), std::string::npos) << msg;
  EXPECT_NE(msg.find("<|startoftext|>"), std::string::npos) << msg;
  msg = expect_error(ClipTokenizer::load(write("v5.json", R"({"<|startoftext|>": 0, "a": 2})"), merges),
                     StatusCode::kDataLoss);
  EXPECT_NE(msg.find("<|endoftext|>"), std::string::npos) << msg;
}

TEST_F(LoadErrors, CorruptMerges) {
  const auto vocab = write("vocab.json", kSmallVocab);
  auto msg = expect_error(ClipTokenizer::load(vocab, write("m1.txt", "#version: 0.2\na b\nab\n")), StatusCode::kDataLoss);
  EXPECT_NE(msg.find("m1.txt line 3"), std::string::npos) << msg;
  msg = expect_error(ClipTokenizer::load(vocab, write("m2.txt", "a b c\n")), StatusCode::kDataLoss);
  EXPECT_NE(msg.find("m2.txt line 1"), std::string::npos) << msg;
  msg = expect_error(ClipTokenizer::load(vocab, write("m3.txt", "a b\na zz\n")), StatusCode::kDataLoss);
  EXPECT_NE(msg.find("m3.txt line 2"), std::string::npos) << msg;
  EXPECT_NE(msg.find("'zz'"), std::string::npos) << msg;
  msg = expect_error(ClipTokenizer::load(vocab, write("m4.txt", "b a\n")), StatusCode::kDataLoss);  // "ba" missing
  EXPECT_NE(msg.find("'ba'"), std::string::npos) << msg;
  msg = expect_error(ClipTokenizer::load(vocab, write("m5.txt", "#version: 0.2\n")), StatusCode::kDataLoss);
  EXPECT_NE(msg.find("no merges"), std::string::npos) << msg;
  auto binary = ClipTokenizer::load(vocab, write("m6.txt", std::string("\xFF\xFE\x00 \x01\n", 6)));
  EXPECT_FALSE(binary.ok());
}

TEST_F(LoadErrors, SmallVocabularyWorks) {
  // CRLF line ends are accepted; bytes without a symbol become the unknown token.
  auto tok = ClipTokenizer::load(write("vocab.json", kSmallVocab), write("merges.txt", "#version: 0.2\r\na b\r\na b</w>\r\n"));
  ASSERT_TRUE(tok.ok()) << tok.status().to_string();
  EXPECT_EQ((*tok)->encode("ab"), std::vector<int>{6});
  EXPECT_EQ((*tok)->encode("abab"), (std::vector<int>{4, 6}));
  EXPECT_EQ((*tok)->encode("ax"), (std::vector<int>{2, 1}));
}

TEST_F(LoadErrors, PadTokenMustBeInVocabulary) {
  auto msg = expect_error(ClipTokenizer::load_bundled("<pad-not-there>"), StatusCode::kDataLoss);
  EXPECT_NE(msg.find("<pad-not-there>"), std::string::npos) << msg;
}

TEST_F(LoadErrors, TokenizerConfigResolution) {
  TokenizerConfig only_vocab;
  only_vocab.vocab_path = kTokDir + "/vocab.json";
  EXPECT_FALSE(ClipTokenizer::load(only_vocab).ok());
  TokenizerConfig files;
  files.vocab_path = kTokDir + "/vocab.json";
  files.merges_path = kTokDir + "/merges.txt";
  files.pad_token = "!";
  auto tok = ClipTokenizer::load(files);
  ASSERT_TRUE(tok.ok()) << tok.status().to_string();
  EXPECT_EQ((*tok)->pad_id(), 0);

  // tokenizer_config.json: pad_token as a serialized AddedToken, the unset-length sentinel.
  write("tokenizer_config.json",
        R"({"pad_token": {"__type": "AddedToken", "content": "!"}, "model_max_length": 1000000000000000019884624838656})");
  auto config = ClipTokenizer::read_diffusers_config(dir_.string());
  ASSERT_TRUE(config.ok()) << config.status().to_string();
  EXPECT_EQ(config->pad_token, "!");
  EXPECT_EQ(config->max_length, 77);
  EXPECT_EQ(config->vocab_path, (dir_ / "vocab.json").string());
  auto missing = ClipTokenizer::load(*config);  // the folder has no vocab.json
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find("vocab.json"), std::string::npos);

  write("tokenizer_config.json", "{not json");
  auto bad = ClipTokenizer::read_diffusers_config(dir_.string());
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("tokenizer_config.json"), std::string::npos);
}

}  // namespace
}  // namespace sd
