// Golden tests of the CLIP tokenizer: every prompt of tests/data/tiny-sd{1,2}/tokens.json
// (made by the reference CLIPTokenizer) must give exactly the reference ids and untruncated
// length, with the model folder's files and with the bundled vocabulary.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <fstream>
#include <string>

#include "tokenizer/clip_tokenizer.h"

namespace sd {
namespace {

nlohmann::json read_json(const std::string& path) {
  std::ifstream in(path);
  EXPECT_TRUE(in.good()) << path;
  return nlohmann::json::parse(in);
}

std::string model_dir(const std::string& model) { return std::string(SD_TEST_DATA_DIR) + "/" + model; }

void expect_matches_golden(const ClipTokenizer& tok, const std::string& model) {
  const auto golden = read_json(model_dir(model) + "/tokens.json");
  ASSERT_EQ(golden["cases"].size(), 29u);
  for (const auto& c : golden["cases"]) {
    const std::string prompt = c["prompt"].get<std::string>();
    const auto expected = c["ids"].get<std::vector<int>>();
    const auto tokens = tok.tokenize(prompt);
    EXPECT_EQ(tokens.ids, expected) << model << " prompt: " << prompt;
    EXPECT_EQ(tokens.untruncated_len, c["untruncated_len"].get<int>()) << model << " prompt: " << prompt;
    EXPECT_EQ(tokens.truncated, c["untruncated_len"].get<int>() > 77) << prompt;
  }
}

class GoldenTest : public ::testing::TestWithParam<std::string> {};

TEST_P(GoldenTest, ModelFolderTokenizerMatchesReference) {
  auto config = ClipTokenizer::read_diffusers_config(model_dir(GetParam()) + "/model/tokenizer");
  ASSERT_TRUE(config.ok()) << config.status().to_string();
  const auto golden = read_json(model_dir(GetParam()) + "/tokens.json");
  EXPECT_EQ(config->pad_token, golden["pad_token"].get<std::string>());
  EXPECT_EQ(config->max_length, 77);
  auto tok = ClipTokenizer::load(*config);
  ASSERT_TRUE(tok.ok()) << tok.status().to_string();
  expect_matches_golden(**tok, GetParam());
}

TEST_P(GoldenTest, BundledTokenizerMatchesReference) {
  const auto golden = read_json(model_dir(GetParam()) + "/tokens.json");
  TokenizerConfig config;  // empty paths: bundled vocabulary
  config.pad_token = golden["pad_token"].get<std::string>();
  auto tok = ClipTokenizer::load(config);
  ASSERT_TRUE(tok.ok()) << tok.status().to_string();
  expect_matches_golden(**tok, GetParam());
}

INSTANTIATE_TEST_SUITE_P(TinyModels, GoldenTest, ::testing::Values("tiny-sd1", "tiny-sd2"));

}  // namespace
}  // namespace sd
