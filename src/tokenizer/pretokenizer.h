// Text preparation of the CLIP tokenizer before BPE: UTF-8 repair, NFC, lowercasing and the
// CLIP regex split into words (letter runs, single digits, punctuation runs, contractions).
// Internal to sd_tokenizer; the special-token split happens before this (clip_tokenizer.cc).
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace sd::tokenizer_detail {

// Returns `text` as valid UTF-8: every invalid byte sequence (bad lead byte, truncated or
// overlong sequence, surrogate, code point above U+10FFFF) becomes U+FFFD.
std::string sanitize_utf8(std::string_view text);

// Normalizes one segment of valid UTF-8 text as the reference does (NFC, then per-character
// full Unicode lowercase mapping; whitespace is dropped by the split anyway) and splits it with
//   <\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|\p{L}+|\p{N}|[^\s\p{L}\p{N}]+
// keeping the matches, then re-splits each match with the byte-level (GPT-2) pattern, which
// only changes the special-token spellings ("<|", "startoftext", "|>"). Appends the words,
// as UTF-8 byte strings, to `words`.
void split_words(std::string_view segment, std::vector<std::string>& words);

}  // namespace sd::tokenizer_detail
