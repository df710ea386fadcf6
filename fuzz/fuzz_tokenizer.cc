// libFuzzer target: tokenizes arbitrary bytes with the bundled CLIP vocabulary for both pad
// tokens (SD 1.x "<|endoftext|>", SD 2.x "!") and checks the output invariants; an input that
// starts with '{' is also read as "vocab.json\0merges.txt\0text" to fuzz the file parsers.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "tokenizer/clip_tokenizer.h"

namespace {

void check(bool ok) {
  if (!ok) std::abort();
}

void fuzz_one(const sd::ClipTokenizer& tok, std::string_view text) {
  const auto t = tok.tokenize(text);
  check(t.ids.size() == static_cast<size_t>(tok.max_length()));
  check(t.untruncated_len >= 2);
  check(t.ids.front() == tok.bos_id());
  const int eos_pos = std::min(t.untruncated_len, tok.max_length()) - 1;
  check(t.ids[static_cast<size_t>(eos_pos)] == tok.eos_id());
  check(t.truncated == (t.untruncated_len > tok.max_length()));
  for (int i = eos_pos + 1; i < tok.max_length(); ++i) check(t.ids[static_cast<size_t>(i)] == tok.pad_id());
  for (int id : t.ids) check(id >= 0 && id < tok.vocab_size());
  check(static_cast<int>(tok.encode(text).size()) == t.untruncated_len - 2);
  (void)tok.decode(t.ids);
}

// Loads a vocabulary from the input itself: bad files must give a Status, good ones must work.
void fuzz_files(std::string_view input) {
  const size_t a = input.find('\0');
  if (a == std::string_view::npos) return;
  const size_t b = input.find('\0', a + 1);
  const std::string_view vocab = input.substr(0, a);
  const std::string_view merges = input.substr(a + 1, b == std::string_view::npos ? std::string_view::npos : b - a - 1);
  const std::string_view text = b == std::string_view::npos ? std::string_view() : input.substr(b + 1);
  auto tok = sd::ClipTokenizer::from_memory(vocab, "vocab.json", merges, "merges.txt");
  if (!tok.ok()) {
    check(!tok.status().message().empty());
    return;
  }
  fuzz_one(**tok, text);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const auto sd1 = sd::ClipTokenizer::load_bundled("<|endoftext|>");
  static const auto sd2 = sd::ClipTokenizer::load_bundled("!");
  check(sd1.ok() && sd2.ok());
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  fuzz_one(**sd1, text);
  fuzz_one(**sd2, text);
  if (!text.empty() && text.front() == '{') fuzz_files(text);
  return 0;
}
