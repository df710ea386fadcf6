// Views of the CLIP vocabulary files that bundled_vocab.S embeds: the assembler defines a
// start and an end symbol around each file's bytes (read-only data, no terminating NUL).
// See src/tokenizer/CMakeLists.txt for how the file paths reach the assembler.
#include "tokenizer/bundled_vocab.h"

extern "C" {
extern const char sd_bundled_vocab_json_start[];
extern const char sd_bundled_vocab_json_end[];
extern const char sd_bundled_merges_txt_start[];
extern const char sd_bundled_merges_txt_end[];
}

namespace sd::tokenizer_detail {

std::string_view bundled_vocab_json() {
  return {sd_bundled_vocab_json_start, static_cast<size_t>(sd_bundled_vocab_json_end - sd_bundled_vocab_json_start)};
}

std::string_view bundled_merges_txt() {
  return {sd_bundled_merges_txt_start, static_cast<size_t>(sd_bundled_merges_txt_end - sd_bundled_merges_txt_start)};
}

}  // namespace sd::tokenizer_detail
