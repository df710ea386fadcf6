// Behaviour tests of the CLIP tokenizer beyond the goldens: bundled == file vocabulary,
// truncation keeps EOS, special-token handling, normalization rules, invalid UTF-8 and huge
// inputs, thread safety, and clear errors for missing or corrupt vocabulary files.
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <thread>

#include "tokenizer/clip_tokenizer.h"

namespace sd {
namespace {

const std::string kTokDir = std::string(SD_SOURCE_DIR) + "/data/tokenizer";

std::shared_ptr<ClipTokenizer> bundled(const std::string& pad = "<|endoftext|>") {
  auto tok = ClipTokenizer::load_bundled(pad);
  EXPECT_TRUE(tok.ok()) << tok.status().to_string();
  return tok.ok() ? *tok : nullptr;
}

// Random text mixing ASCII words, punctuation, digits, whitespace and non-ASCII letters.
std::string random_text(std::mt19937& rng, int pieces) {
  static const std::vector<std::string> parts = {
      "a", "photo", "of", "CAT", "Dog", " ", "  ", "\t", "\n", ",", "!!", "...", "'s", "'ll", "don't", "1", "42",
      "3.14", "café", "é", "ß", "ǅ", "İ", "ΣΟΦΙΑ", "日本", "🐱", "Ｆｕｌｌ", "&amp;", "<|endoftext|>", "<|startoftext|>",
      "(", "))", "-", "_", "\xE2\x80\x8B", "\xD9\x85\xD8\xB1", "\xCC\x81"};
  std::uniform_int_distribution<size_t> pick(0, parts.size() - 1);
  std::string s;
  for (int i = 0; i < pieces; ++i) s += parts[pick(rng)];
  return s;
}

TEST(ClipTokenizer, BundledVocabularyEqualsFiles) {
  auto from_files = ClipTokenizer::load(kTokDir + "/vocab.json", kTokDir + "/merges.txt");
  ASSERT_TRUE(from_files.ok()) << from_files.status().to_string();
  auto tok = bundled();
  ASSERT_TRUE(tok);
  EXPECT_EQ((*from_files)->vocab_size(), 49408);
  EXPECT_EQ(tok->vocab_size(), 49408);
  EXPECT_EQ(tok->bos_id(), 49406);
  EXPECT_EQ(tok->eos_id(), 49407);
  EXPECT_EQ(tok->pad_id(), 49407);
  std::mt19937 rng(7);
  for (int i = 0; i < 200; ++i) {
    const std::string text = random_text(rng, 1 + i % 40);
    EXPECT_EQ(tok->encode(text), (*from_files)->encode(text)) << text;
  }
}

TEST(ClipTokenizer, KnownTokensAndDecode) {
  auto tok = bundled();
  ASSERT_TRUE(tok);
  // "a</w>" = 320, "photo</w>" = 1125 in the CLIP vocabulary.
  EXPECT_EQ(tok->encode("a photo"), (std::vector<int>{320, 1125}));
  EXPECT_EQ(tok->token_id("a</w>"), 320);
  EXPECT_EQ(tok->decode(tok->encode("A Photo of an astronaut, riding!")), "a photo of an astronaut , riding !");
  EXPECT_EQ(tok->decode(tok->encode("日本語 café")), "日本語 café");
}

TEST(ClipTokenizer, TruncationKeepsEosLast) {
  auto tok = bundled();
  ASSERT_TRUE(tok);
  std::string text;
  for (int i = 0; i < 75; ++i) text += "word ";
  auto exact = tok->tokenize(text);  // 75 tokens + BOS + EOS = 77: fits
  EXPECT_EQ(exact.untruncated_len, 77);
  EXPECT_FALSE(exact.truncated);
  EXPECT_EQ(exact.ids.back(), tok->eos_id());
  EXPECT_EQ(exact.ids[75], 2653);  // "word</w>"
  text += "cat dog";
  auto over = tok->tokenize(text);
  ASSERT_EQ(over.ids.size(), 77u);
  EXPECT_EQ(over.untruncated_len, 79);
  EXPECT_TRUE(over.truncated);
  EXPECT_EQ(over.ids.front(), tok->bos_id());
  EXPECT_EQ(over.ids.back(), tok->eos_id());
  EXPECT_EQ(over.ids[75], 2653);
}

TEST(ClipTokenizer, PaddingAndCustomMaxLength) {
  auto sd2 = ClipTokenizer::load_bundled("!", 10);
  ASSERT_TRUE(sd2.ok()) << sd2.status().to_string();
  EXPECT_EQ((*sd2)->pad_id(), 0);
  auto t = (*sd2)->tokenize("a photo");
  EXPECT_EQ(t.ids, (std::vector<int>{49406, 320, 1125, 49407, 0, 0, 0, 0, 0, 0}));
  EXPECT_EQ(t.untruncated_len, 4);
  auto long_t = (*sd2)->tokenize("one two three four five six seven eight nine");
  ASSERT_EQ(long_t.ids.size(), 10u);
  EXPECT_EQ(long_t.ids.back(), 49407);
  EXPECT_EQ(long_t.untruncated_len, 11);
  EXPECT_FALSE(ClipTokenizer::load_bundled("!", 1).ok());
  EXPECT_FALSE(ClipTokenizer::load_bundled("", 77).ok());
}

TEST(ClipTokenizer, SpecialTokensMatchRawTextOnly) {
  auto sd1 = bundled();
  auto sd2 = bundled("!");
  ASSERT_TRUE(sd1 && sd2);
  EXPECT_EQ(sd1->encode("<|startoftext|>x<|endoftext|>"), (std::vector<int>{49406, sd1->encode("x")[0], 49407}));
  // Special tokens are not normalized: an upper-case spelling is ordinary text, which the
  // byte-level split cuts into "<|", the letters and "|>".
  EXPECT_EQ(sd1->encode("<|ENDOFTEXT|>"), sd1->encode("<| endoftext |>"));
  EXPECT_NE(sd1->encode("<|ENDOFTEXT|>"), std::vector<int>{49407});
  // SD 2.x's pad token "!" is a special token too: each "!" is split out as id 0.
  EXPECT_EQ(sd2->encode("hi!!"), (std::vector<int>{sd2->encode("hi")[0], 0, 0}));
  EXPECT_NE(sd1->encode("hi!!"), sd2->encode("hi!!"));
}

TEST(ClipTokenizer, NormalizationRules) {
  auto tok = bundled();
  ASSERT_TRUE(tok);
  EXPECT_EQ(tok->encode("DON'T Stop"), tok->encode("don't stop"));
  EXPECT_EQ(tok->encode("e\xCC\x81"), tok->encode("\xC3\xA9"));              // NFC: e + U+0301 = é
  EXPECT_EQ(tok->encode("\xCE\xA3\xCE\x9F\xCE\xA3"), tok->encode("σοσ"));  // no final-sigma rule
  EXPECT_EQ(tok->encode("\xC4\xB0"), tok->encode("i\xCC\x87"));              // İ -> i + U+0307
  EXPECT_EQ(tok->encode("a\xC2\xA0\xE3\x80\x80" "b"), tok->encode("a b"));   // NBSP, ideographic space
  EXPECT_NE(tok->encode("a\xE2\x80\x8B" "b"), tok->encode("a b"));           // ZWSP is not whitespace
  EXPECT_EQ(tok->encode("12"), (std::vector<int>{272, 273}));                // digits one by one
  EXPECT_EQ(tok->encode("  \t\n "), std::vector<int>{});
}

TEST(ClipTokenizer, InvalidUtf8BecomesReplacementCharacter) {
  auto tok = bundled();
  ASSERT_TRUE(tok);
  const std::string fffd = "\xEF\xBF\xBD";
  EXPECT_EQ(tok->encode(std::string("a\xFF" "b")), tok->encode("a" + fffd + "b"));
  EXPECT_EQ(tok->encode(std::string("a\xC3")), tok->encode("a" + fffd));              // truncated
  EXPECT_EQ(tok->encode(std::string("\xC0\xAF")), tok->encode(fffd + fffd));          // overlong
  EXPECT_EQ(tok->encode(std::string("\xED\xA0\x80")), tok->encode(fffd));            // surrogate
  EXPECT_EQ(tok->encode(std::string("\xF4\x90\x80\x80")), tok->encode(fffd));        // > U+10FFFF
  const std::string with_nul("a\0b", 3);
  EXPECT_EQ(tok->tokenize(with_nul).ids.back(), tok->pad_id());
  std::mt19937 rng(11);
  std::uniform_int_distribution<int> byte(0, 255);
  for (int i = 0; i < 300; ++i) {
    std::string junk(static_cast<size_t>(i % 97), '\0');
    for (auto& c : junk) c = static_cast<char>(byte(rng));
    const auto t = tok->tokenize(junk);
    ASSERT_EQ(t.ids.size(), 77u);
    ASSERT_EQ(t.ids.front(), tok->bos_id());
  }
}

TEST(ClipTokenizer, HugeInputsAreFastAndTruncated) {
  auto tok = bundled();
  ASSERT_TRUE(tok);
  const auto start = std::chrono::steady_clock::now();
  const std::string one_word(1 << 20, 'q');  // 1 MiB single word: BPE must not be quadratic
  const auto a = tok->tokenize(one_word);
  EXPECT_EQ(a.ids.size(), 77u);
  EXPECT_EQ(a.ids.back(), tok->eos_id());
  EXPECT_TRUE(a.truncated);
  std::mt19937 rng(3);
  std::string mixed;
  while (mixed.size() < (1u << 20)) mixed += random_text(rng, 50);
  const auto b = tok->tokenize(mixed);
  EXPECT_EQ(b.ids.back(), tok->eos_id());
  EXPECT_GT(b.untruncated_len, 77);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_LT(seconds, 20.0);
}

TEST(ClipTokenizer, ThreadSafe) {
  auto tok = bundled();
  ASSERT_TRUE(tok);
  std::mt19937 rng(5);
  std::vector<std::string> prompts;
  for (int i = 0; i < 64; ++i) prompts.push_back(random_text(rng, 30));
  std::vector<std::vector<int>> expected;
  {
    auto fresh = bundled();  // separate cache: results must not depend on cache state
    for (const auto& p : prompts) expected.push_back(fresh->tokenize(p).ids);
  }
  std::vector<std::thread> threads;
  std::vector<int> mismatches(8, 0);
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      for (int round = 0; round < 20; ++round) {
        for (size_t i = 0; i < prompts.size(); ++i) {
          const size_t k = (i + static_cast<size_t>(t) * 7) % prompts.size();
          if (tok->tokenize(prompts[k]).ids != expected[k]) ++mismatches[static_cast<size_t>(t)];
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  for (int m : mismatches) EXPECT_EQ(m, 0);
}

}  // namespace
}  // namespace sd
