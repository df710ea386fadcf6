// ClipTokenizer: loading (files, bundled vocabulary, TokenizerConfig, diffusers folder) and
// the encode/tokenize driver: split out special tokens in the raw text, normalize and split
// each segment into words, BPE each word, then add BOS/EOS, truncate and pad.
#include "tokenizer/clip_tokenizer.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "tokenizer/bpe_model.h"
#include "tokenizer/bundled_vocab.h"
#include "tokenizer/pretokenizer.h"

namespace sd {
namespace {

StatusOr<std::string> read_text_file(const std::string& path, const char* what) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) return NotFound(std::string(what) + " not found: " + path);
  if (std::filesystem::is_directory(path, ec)) return InvalidArgument(std::string(what) + " is a directory: " + path);
  std::ifstream in(path, std::ios::binary);
  if (!in) return NotFound(std::string("cannot open ") + what + ": " + path);
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) return DataLoss(std::string("error reading ") + what + ": " + path);
  return ss.str();
}

}  // namespace

ClipTokenizer::~ClipTokenizer() = default;

StatusOr<std::shared_ptr<ClipTokenizer>> ClipTokenizer::from_memory(std::string_view vocab_json,
                                                                    const std::string& vocab_name,
                                                                    std::string_view merges_txt,
                                                                    const std::string& merges_name,
                                                                    const std::string& pad_token, int max_length) {
  if (max_length < 2) {
    return InvalidArgument("tokenizer max_length must be at least 2 (BOS and EOS), got " + std::to_string(max_length));
  }
  if (pad_token.empty()) return InvalidArgument("tokenizer pad_token must not be empty");
  std::shared_ptr<ClipTokenizer> tok(new ClipTokenizer());
  SD_ASSIGN_OR_RETURN(tok->bpe_, tokenizer_detail::BpeModel::parse(vocab_json, vocab_name, merges_txt, merges_name,
                                                                    kEosToken));
  tok->bos_id_ = tok->bpe_->token_id(kBosToken);
  tok->eos_id_ = tok->bpe_->token_id(kEosToken);
  tok->pad_id_ = tok->bpe_->token_id(pad_token);
  for (const auto& special : {std::pair<std::string, int>{kBosToken, tok->bos_id_}, {kEosToken, tok->eos_id_},
                               {pad_token, tok->pad_id_}}) {
    if (special.second < 0) return DataLoss(vocab_name + ": missing special token '" + special.first + "'");
    const bool seen = std::any_of(tok->special_tokens_.begin(), tok->special_tokens_.end(),
                                  [&](const auto& s) { return s.first == special.first; });
    if (!seen) tok->special_tokens_.push_back(special);
  }
  // Longest first, so that the first match at a position is the longest one.
  std::stable_sort(tok->special_tokens_.begin(), tok->special_tokens_.end(),
                   [](const auto& a, const auto& b) { return a.first.size() > b.first.size(); });
  tok->pad_token_ = pad_token;
  tok->max_length_ = max_length;
  return tok;
}

StatusOr<std::shared_ptr<ClipTokenizer>> ClipTokenizer::load(const std::string& vocab_json_path,
                                                             const std::string& merges_txt_path,
                                                             const std::string& pad_token, int max_length) {
  SD_ASSIGN_OR_RETURN(std::string vocab, read_text_file(vocab_json_path, "tokenizer vocabulary"));
  SD_ASSIGN_OR_RETURN(std::string merges, read_text_file(merges_txt_path, "tokenizer merges"));
  return from_memory(vocab, vocab_json_path, merges, merges_txt_path, pad_token, max_length);
}

StatusOr<std::shared_ptr<ClipTokenizer>> ClipTokenizer::load_bundled(const std::string& pad_token, int max_length) {
  return from_memory(tokenizer_detail::bundled_vocab_json(), "bundled vocab.json",
                     tokenizer_detail::bundled_merges_txt(), "bundled merges.txt", pad_token, max_length);
}

StatusOr<std::shared_ptr<ClipTokenizer>> ClipTokenizer::load(const TokenizerConfig& config) {
  if (config.vocab_path.empty() != config.merges_path.empty()) {
    return InvalidArgument("tokenizer config names only one of vocab.json ('" + config.vocab_path +
                           "') and merges.txt ('" + config.merges_path + "')");
  }
  if (config.vocab_path.empty()) return load_bundled(config.pad_token, config.max_length);
  return load(config.vocab_path, config.merges_path, config.pad_token, config.max_length);
}

StatusOr<TokenizerConfig> ClipTokenizer::read_diffusers_config(const std::string& tokenizer_dir) {
  const std::filesystem::path dir(tokenizer_dir);
  TokenizerConfig config;
  config.vocab_path = (dir / "vocab.json").string();
  config.merges_path = (dir / "merges.txt").string();
  const std::string config_path = (dir / "tokenizer_config.json").string();
  std::error_code ec;
  if (!std::filesystem::exists(config_path, ec)) return config;  // the CLIP defaults
  SD_ASSIGN_OR_RETURN(std::string text, read_text_file(config_path, "tokenizer config"));
  nlohmann::json json;
  try {
    json = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    return DataLoss(config_path + ": not valid JSON: " + e.what());
  }
  if (!json.is_object()) return DataLoss(config_path + ": expected a JSON object");
  if (json.contains("pad_token") && !json["pad_token"].is_null()) {
    const auto& pad = json["pad_token"];
    if (pad.is_string()) {
      config.pad_token = pad.get<std::string>();
    } else if (pad.is_object() && pad.contains("content") && pad["content"].is_string()) {
      config.pad_token = pad["content"].get<std::string>();  // serialized AddedToken
    } else {
      return DataLoss(config_path + ": pad_token must be a string or an object with \"content\"");
    }
  }
  // model_max_length is a huge sentinel when unset; only a plausible value is taken.
  if (json.contains("model_max_length") && json["model_max_length"].is_number_integer()) {
    const auto len = json["model_max_length"].get<int64_t>();
    if (len >= 2 && len <= 4096) config.max_length = static_cast<int>(len);
  }
  return config;
}

int ClipTokenizer::vocab_size() const { return bpe_->vocab_size(); }

int ClipTokenizer::token_id(std::string_view token) const { return bpe_->token_id(token); }

std::vector<int> ClipTokenizer::encode(std::string_view raw_text) const {
  const std::string text = tokenizer_detail::sanitize_utf8(raw_text);
  std::vector<int> ids;
  std::vector<std::string> words;
  const auto encode_segment = [&](std::string_view segment) {
    if (segment.empty()) return;
    words.clear();
    tokenizer_detail::split_words(segment, words);
    for (const auto& word : words) bpe_->encode_word(word, ids);
  };
  // Special tokens are matched in the raw text (leftmost, longest), before normalization.
  size_t segment_begin = 0;
  size_t pos = 0;
  while (pos < text.size()) {
    int matched_id = -1;
    size_t matched_len = 0;
    for (const auto& [special, id] : special_tokens_) {
      if (text.compare(pos, special.size(), special) == 0) {
        matched_id = id;
        matched_len = special.size();
        break;
      }
    }
    if (matched_id < 0) {
      ++pos;
      continue;
    }
    encode_segment(std::string_view(text).substr(segment_begin, pos - segment_begin));
    ids.push_back(matched_id);
    pos += matched_len;
    segment_begin = pos;
  }
  encode_segment(std::string_view(text).substr(segment_begin));
  return ids;
}

ClipTokenizer::Tokens ClipTokenizer::tokenize(std::string_view text) const {
  const std::vector<int> body = encode(text);
  Tokens out;
  out.untruncated_len = static_cast<int>(std::min<size_t>(body.size() + 2, static_cast<size_t>(INT32_MAX)));
  out.truncated = out.untruncated_len > max_length_;
  const size_t kept = std::min(body.size(), static_cast<size_t>(max_length_ - 2));
  out.ids.reserve(static_cast<size_t>(max_length_));
  out.ids.push_back(bos_id_);
  out.ids.insert(out.ids.end(), body.begin(), body.begin() + static_cast<std::ptrdiff_t>(kept));
  out.ids.push_back(eos_id_);
  out.ids.resize(static_cast<size_t>(max_length_), pad_id_);
  return out;
}

std::string ClipTokenizer::decode(const std::vector<int>& ids) const { return bpe_->decode(ids); }

}  // namespace sd
