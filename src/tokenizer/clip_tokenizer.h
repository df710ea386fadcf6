// The CLIP BPE tokenizer of Stable Diffusion, bit-identical to the reference CLIPTokenizer:
// special-token split, NFC + lowercase, CLIP word split, byte-level BPE with "</w>", then
// BOS/EOS, truncation to max_length (EOS kept last) and padding with the model's pad token.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"
#include "io/model_config.h"  // TokenizerConfig (plain data, header only)

namespace sd {

namespace tokenizer_detail {
class BpeModel;
}

class ClipTokenizer {
 public:
  static constexpr const char* kBosToken = "<|startoftext|>";
  static constexpr const char* kEosToken = "<|endoftext|>";  // also the unknown token
  static constexpr const char* kDefaultPadToken = "<|endoftext|>";  // SD 2.x uses "!"
  static constexpr int kDefaultMaxLength = 77;

  // From vocab.json / merges.txt files. `pad_token` must be in the vocabulary; the
  // special tokens (BOS, EOS, pad) are matched in the raw text before normalization.
  static StatusOr<std::shared_ptr<ClipTokenizer>> load(const std::string& vocab_json_path,
                                                       const std::string& merges_txt_path,
                                                       const std::string& pad_token = kDefaultPadToken,
                                                       int max_length = kDefaultMaxLength);
  // The standard CLIP vocabulary embedded in the library (identical to SD 1.x/2.x files).
  static StatusOr<std::shared_ptr<ClipTokenizer>> load_bundled(const std::string& pad_token = kDefaultPadToken,
                                                               int max_length = kDefaultMaxLength);
  // From a model's tokenizer configuration; empty paths mean the bundled vocabulary.
  static StatusOr<std::shared_ptr<ClipTokenizer>> load(const TokenizerConfig& config);
  // From file contents in memory; the names label error messages.
  static StatusOr<std::shared_ptr<ClipTokenizer>> from_memory(std::string_view vocab_json, const std::string& vocab_name,
                                                              std::string_view merges_txt, const std::string& merges_name,
                                                              const std::string& pad_token = kDefaultPadToken,
                                                              int max_length = kDefaultMaxLength);
  // Reads a diffusers tokenizer folder's tokenizer_config.json (pad_token, model_max_length)
  // into a TokenizerConfig naming the folder's vocab.json and merges.txt.
  static StatusOr<TokenizerConfig> read_diffusers_config(const std::string& tokenizer_dir);

  ~ClipTokenizer();
  ClipTokenizer(const ClipTokenizer&) = delete;
  ClipTokenizer& operator=(const ClipTokenizer&) = delete;

  // BPE ids of `text`, without BOS/EOS, untruncated. Invalid UTF-8 is read as U+FFFD.
  std::vector<int> encode(std::string_view text) const;

  struct Tokens {
    std::vector<int> ids;     // exactly max_length ids: BOS, tokens, EOS, pad...
    int untruncated_len = 0;  // BOS + tokens + EOS before truncation
    bool truncated = false;   // untruncated_len > max_length
  };
  // Thread-safe: callable from several threads at once.
  Tokens tokenize(std::string_view text) const;

  // Text of ids (byte-level mapping undone, "</w>" as spaces), for diagnostics.
  std::string decode(const std::vector<int>& ids) const;

  int bos_id() const { return bos_id_; }
  int eos_id() const { return eos_id_; }
  int pad_id() const { return pad_id_; }
  const std::string& pad_token() const { return pad_token_; }
  int max_length() const { return max_length_; }
  int vocab_size() const;
  int token_id(std::string_view token) const;  // -1 when not in the vocabulary

 private:
  ClipTokenizer() = default;

  std::unique_ptr<tokenizer_detail::BpeModel> bpe_;
  std::vector<std::pair<std::string, int>> special_tokens_;  // text -> id, longest first
  std::string pad_token_;
  int bos_id_ = -1;
  int eos_id_ = -1;
  int pad_id_ = -1;
  int max_length_ = kDefaultMaxLength;
};

}  // namespace sd
