// Text preparation of the CLIP tokenizer: UTF-8 repair, NFC + lowercase through utf8proc,
// and the CLIP word split. Matches the reference tokenizers pipeline (normalizer NFC,
// Replace(\s+, " "), Lowercase; pre-tokenizer Split(pattern, removed, invert) + ByteLevel).
#include "tokenizer/pretokenizer.h"

#include <utf8proc.h>

#include <cstdint>

namespace sd::tokenizer_detail {
namespace {

constexpr char32_t kReplacement = 0xFFFD;

void append_utf8(char32_t c, std::string& out) {
  if (c < 0x80) {
    out.push_back(static_cast<char>(c));
  } else if (c < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (c >> 6)));
    out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
  } else if (c < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (c >> 12)));
    out.push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (c >> 18)));
    out.push_back(static_cast<char>(0x80 | ((c >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
  }
}

// Decodes one code point of valid-or-not UTF-8 at `text[i]`; sets `len` to the bytes used
// (at least 1) and returns kReplacement for an invalid sequence.
char32_t decode_one(std::string_view text, size_t i, size_t& len) {
  const auto byte = [&](size_t k) { return static_cast<unsigned char>(text[k]); };
  const unsigned char b0 = byte(i);
  len = 1;
  if (b0 < 0x80) return b0;
  int extra;
  char32_t c;
  char32_t min;
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    extra = 1, c = b0 & 0x1F, min = 0x80;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    extra = 2, c = b0 & 0x0F, min = 0x800;
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    extra = 3, c = b0 & 0x07, min = 0x10000;
  } else {
    return kReplacement;
  }
  for (int k = 1; k <= extra; ++k) {
    if (i + k >= text.size() || (byte(i + k) & 0xC0) != 0x80) {
      len = static_cast<size_t>(k);  // the maximal invalid prefix becomes one U+FFFD
      return kReplacement;
    }
    c = (c << 6) | (byte(i + k) & 0x3F);
  }
  len = static_cast<size_t>(extra) + 1;
  if (c < min || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF)) return kReplacement;
  return c;
}

// Oniguruma's Unicode \s (as used by the reference regexes): TAB..CR, NEL and the
// separators Zs, Zl, Zp. U+200B (zero width space) is not whitespace.
bool is_space(char32_t c) {
  if ((c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85) return true;
  const auto cat = utf8proc_category(static_cast<utf8proc_int32_t>(c));
  return cat == UTF8PROC_CATEGORY_ZS || cat == UTF8PROC_CATEGORY_ZL || cat == UTF8PROC_CATEGORY_ZP;
}

bool is_letter(char32_t c) {  // \p{L}: Lu Ll Lt Lm Lo
  const auto cat = utf8proc_category(static_cast<utf8proc_int32_t>(c));
  return cat >= UTF8PROC_CATEGORY_LU && cat <= UTF8PROC_CATEGORY_LO;
}

bool is_number(char32_t c) {  // \p{N}: Nd Nl No
  const auto cat = utf8proc_category(static_cast<utf8proc_int32_t>(c));
  return cat >= UTF8PROC_CATEGORY_ND && cat <= UTF8PROC_CATEGORY_NO;
}

// Code points of `segment` (valid UTF-8) after canonical composition (NFC).
std::u32string nfc(std::string_view segment) {
  std::u32string out;
  if (segment.empty()) return out;
  const auto options = static_cast<utf8proc_option_t>(UTF8PROC_STABLE | UTF8PROC_COMPOSE);
  const auto* src = reinterpret_cast<const utf8proc_uint8_t*>(segment.data());
  const auto src_len = static_cast<utf8proc_ssize_t>(segment.size());
  std::vector<utf8proc_int32_t> buf(segment.size() + 16);
  utf8proc_ssize_t n = utf8proc_decompose(src, src_len, buf.data(), static_cast<utf8proc_ssize_t>(buf.size()), options);
  if (n > static_cast<utf8proc_ssize_t>(buf.size())) {
    buf.resize(static_cast<size_t>(n));
    n = utf8proc_decompose(src, src_len, buf.data(), n, options);
  }
  if (n >= 0) n = utf8proc_normalize_utf32(buf.data(), n, options);
  if (n < 0) {  // cannot happen for sanitized input; fall back to the text as it is
    for (size_t i = 0, len = 0; i < segment.size(); i += len) out.push_back(decode_one(segment, i, len));
    return out;
  }
  out.reserve(static_cast<size_t>(n));
  for (utf8proc_ssize_t i = 0; i < n; ++i) out.push_back(static_cast<char32_t>(buf[static_cast<size_t>(i)]));
  return out;
}

// Per-character full lowercase mapping (the reference lowercases each character on its
// own: no final-sigma rule). U+0130 is the one character whose full lowercase mapping
// differs from the simple one utf8proc provides.
std::u32string lowercase(const std::u32string& text) {
  std::u32string out;
  out.reserve(text.size());
  for (char32_t c : text) {
    if (c == 0x130) {
      out.push_back(U'i');
      out.push_back(0x307);
    } else {
      out.push_back(static_cast<char32_t>(utf8proc_tolower(static_cast<utf8proc_int32_t>(c))));
    }
  }
  return out;
}

bool starts_with_at(const std::u32string& text, size_t i, std::u32string_view word) {
  return text.size() - i >= word.size() && std::u32string_view(text).substr(i, word.size()) == word;
}

void emit(const std::u32string& text, size_t begin, size_t end, std::vector<std::string>& words) {
  std::string word;
  word.reserve(end - begin);
  for (size_t i = begin; i < end; ++i) append_utf8(text[i], word);
  words.push_back(std::move(word));
}

}  // namespace

std::string sanitize_utf8(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  size_t i = 0;
  while (i < text.size()) {
    size_t len = 0;
    const char32_t c = decode_one(text, i, len);
    if (c == kReplacement) {
      append_utf8(c, out);
    } else {
      out.append(text.substr(i, len));
    }
    i += len;
  }
  return out;
}

void split_words(std::string_view segment, std::vector<std::string>& words) {
  const std::u32string text = lowercase(nfc(segment));
  const size_t n = text.size();
  size_t i = 0;
  while (i < n) {
    const char32_t c = text[i];
    bool consumed_special = false;
    // Special-token spellings that reach the split (e.g. from upper-case input) form one
    // match, which the byte-level pattern then cuts into "<|", the letters, and "|>".
    for (std::u32string_view special : {std::u32string_view(U"<|startoftext|>"), std::u32string_view(U"<|endoftext|>")}) {
      if (c == U'<' && starts_with_at(text, i, special)) {
        emit(text, i, i + 2, words);
        emit(text, i + 2, i + special.size() - 2, words);
        emit(text, i + special.size() - 2, i + special.size(), words);
        i += special.size();
        consumed_special = true;
        break;
      }
    }
    if (consumed_special) continue;
    if (c == U'\'' && i + 1 < n) {
      const char32_t c1 = text[i + 1];
      const char32_t c2 = i + 2 < n ? text[i + 2] : 0;
      size_t len = 0;
      if (c1 == U's' || c1 == U't' || c1 == U'm' || c1 == U'd') {
        len = 2;
      } else if ((c1 == U'r' && c2 == U'e') || (c1 == U'v' && c2 == U'e') || (c1 == U'l' && c2 == U'l')) {
        len = 3;
      }
      if (len > 0) {
        emit(text, i, i + len, words);
        i += len;
        continue;
      }
    }
    if (is_space(c)) {
      ++i;
      continue;
    }
    size_t end = i + 1;
    if (is_letter(c)) {
      while (end < n && is_letter(text[end])) ++end;
    } else if (!is_number(c)) {  // a digit is a word on its own
      while (end < n && !is_space(text[end]) && !is_letter(text[end]) && !is_number(text[end])) ++end;
    }
    emit(text, i, end, words);
    i = end;
  }
}

}  // namespace sd::tokenizer_detail
