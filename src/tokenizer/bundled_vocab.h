// The standard CLIP vocabulary (data/tokenizer/vocab.json, merges.txt) embedded in the
// library at build time by bundled_vocab.S (.incbin), so single-file checkpoints, which
// carry no tokenizer files, can still be tokenized.
#pragma once

#include <string_view>

namespace sd::tokenizer_detail {

std::string_view bundled_vocab_json();
std::string_view bundled_merges_txt();

}  // namespace sd::tokenizer_detail
