// libFuzzer target: tokenizes arbitrary bytes (invalid UTF-8, NULs, special-token text, huge
// words) with the bundled CLIP vocabulary for both pad tokens (SD 1.x "<|endoftext|>", SD 2.x
// "!") and checks the output invariants. Must never crash; run under ASan/UBSan.
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

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const auto sd1 = sd::ClipTokenizer::load_bundled("<|endoftext|>");
  static const auto sd2 = sd::ClipTokenizer::load_bundled("!");
  check(sd1.ok() && sd2.ok());
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  fuzz_one(**sd1, text);
  fuzz_one(**sd2, text);
  return 0;
}
