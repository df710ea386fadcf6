// Byte-level BPE model of CLIP: vocab.json + merges.txt tables, the GPT-2 byte-to-unicode
// mapping, and the merge loop (lowest merge rank first, "</w>" on a word's last symbol)
// with a thread-safe per-word cache. Internal to sd_tokenizer.
#pragma once

#include <array>
#include <functional>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "core/status.h"

namespace sd::tokenizer_detail {

// The printable stand-in the byte-level vocabulary uses for each byte, as UTF-8.
const std::string& byte_to_unicode(unsigned char byte);

class BpeModel {
 public:
  // `vocab_json` / `merges_txt` are the file contents; the names label error messages.
  // `unk_token` must be in the vocabulary.
  static StatusOr<std::unique_ptr<BpeModel>> parse(std::string_view vocab_json, const std::string& vocab_name,
                                                   std::string_view merges_txt, const std::string& merges_name,
                                                   const std::string& unk_token);

  int token_id(std::string_view token) const;  // -1 when not in the vocabulary
  const std::string& token(int id) const;      // "" for an id without token
  int vocab_size() const { return static_cast<int>(id_to_token_.size()); }
  int num_merges() const { return static_cast<int>(merges_.size()); }

  // Appends the BPE ids of one word (its UTF-8 bytes, not yet byte-mapped).
  void encode_word(std::string_view word, std::vector<int>& out) const;

  // Text of token ids: byte-level mapping undone, "</w>" becomes a space.
  std::string decode(const std::vector<int>& ids) const;

 private:
  struct Merge {
    int rank;
    int new_id;
  };
  static uint64_t pair_key(int a, int b) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
  }
  void merge_symbols(std::vector<int>& ids) const;

  struct StringHash {  // lets the maps be searched with a string_view (no allocation)
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  template <typename V>
  using StringMap = std::unordered_map<std::string, V, StringHash, std::equal_to<>>;

  StringMap<int> vocab_;
  std::vector<std::string> id_to_token_;
  std::array<int, 256> byte_id_{};      // id of the byte's symbol inside a word
  std::array<int, 256> byte_eow_id_{};  // id of the byte's symbol + "</w>" (a word's last)
  std::unordered_map<uint64_t, Merge> merges_;
  int unk_id_ = -1;

  // Per-word cache; words are short and repeat a lot across prompts.
  static constexpr size_t kCacheCapacity = 20000;
  static constexpr size_t kMaxCachedWordBytes = 128;
  mutable std::mutex cache_mutex_;
  mutable StringMap<std::vector<int>> cache_;
};

}  // namespace sd::tokenizer_detail
