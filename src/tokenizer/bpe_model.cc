// Byte-level BPE of CLIP: parses and validates vocab.json / merges.txt, and merges a word's
// byte symbols by rank with a heap over a linked list of symbols (O(n log n) per word, so
// pathological long words stay cheap), caching results per word under a mutex.
#include "tokenizer/bpe_model.h"

#include <nlohmann/json.hpp>

#include <queue>

namespace sd::tokenizer_detail {
namespace {

constexpr std::string_view kEndOfWord = "</w>";

std::array<std::string, 256> make_byte_table() {
  // Printable bytes keep their own code point; the others map to U+0100 and up, in order.
  std::array<std::string, 256> table;
  int next = 256;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
    const int cp = printable ? b : next++;
    std::string s;
    if (cp < 0x80) {
      s.push_back(static_cast<char>(cp));
    } else {
      s.push_back(static_cast<char>(0xC0 | (cp >> 6)));
      s.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    }
    table[static_cast<size_t>(b)] = std::move(s);
  }
  return table;
}

const std::array<std::string, 256>& byte_table() {
  static const std::array<std::string, 256> table = make_byte_table();
  return table;
}

std::string quote(std::string_view s) {
  constexpr size_t kMax = 60;
  std::string out = "'" + std::string(s.substr(0, kMax)) + (s.size() > kMax ? "...'" : "'");
  return out;
}

// Streams vocab.json's {"token": id} pairs without building a JSON tree (3x faster to load);
// anything but one flat object of integer ids is an error naming the offending token.
class VocabSaxReader : public nlohmann::json_sax<nlohmann::json> {
 public:
  static constexpr int64_t kMaxId = 1 << 24;
  explicit VocabSaxReader(std::vector<std::pair<std::string, int>>& entries) : entries_(entries) {}
  std::string error;

  bool start_object(std::size_t) override {
    if (depth_++ == 0) return true;
    return fail("token " + quote(key_) + " maps to an object, expected an integer id");
  }
  bool end_object() override {
    --depth_;
    return true;
  }
  bool key(string_t& key) override {
    key_ = key;
    return true;
  }
  bool number_unsigned(number_unsigned_t id) override {
    if (id >= static_cast<number_unsigned_t>(kMaxId)) return bad_value(std::to_string(id));
    return add(static_cast<int>(id));
  }
  bool number_integer(number_integer_t id) override {
    if (id < 0 || id >= kMaxId) return bad_value(std::to_string(id));
    return add(static_cast<int>(id));
  }
  bool number_float(number_float_t, const string_t& text) override { return bad_value(text); }
  bool null() override { return bad_value("null"); }
  bool boolean(bool v) override { return bad_value(v ? "true" : "false"); }
  bool string(string_t& v) override { return bad_value("\"" + v.substr(0, 40) + "\""); }
  bool binary(binary_t&) override { return bad_value("binary"); }
  bool start_array(std::size_t) override {
    return fail(depth_ == 0 ? "expected a JSON object mapping tokens to ids, found an array"
                            : "token " + quote(key_) + " maps to an array, expected an integer id");
  }
  bool end_array() override { return true; }
  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception& e) override {
    return fail(std::string("not valid JSON: ") + e.what());
  }

 private:
  bool add(int id) {
    if (depth_ != 1) return fail("expected a JSON object mapping tokens to ids");
    entries_.emplace_back(key_, id);
    return true;
  }
  bool bad_value(const std::string& value) {
    if (depth_ == 0) return fail("expected a JSON object mapping tokens to ids");
    return fail("token " + quote(key_) + " has id " + value + ", expected an integer in [0, " +
                std::to_string(kMaxId) + ")");
  }
  bool fail(std::string message) {
    if (error.empty()) error = std::move(message);
    return false;
  }
  std::vector<std::pair<std::string, int>>& entries_;
  std::string key_;
  int depth_ = 0;
};

}  // namespace

const std::string& byte_to_unicode(unsigned char byte) { return byte_table()[byte]; }

StatusOr<std::unique_ptr<BpeModel>> BpeModel::parse(std::string_view vocab_json, const std::string& vocab_name,
                                                    std::string_view merges_txt, const std::string& merges_name,
                                                    const std::string& unk_token) {
  auto model = std::make_unique<BpeModel>();
  // ---- vocab.json: {"token": id, ...}
  std::vector<std::pair<std::string, int>> entries;
  VocabSaxReader reader(entries);
  const bool parsed = nlohmann::json::sax_parse(vocab_json.begin(), vocab_json.end(), &reader);
  if (!parsed || !reader.error.empty()) {
    return DataLoss(vocab_name + ": " + (reader.error.empty() ? "not valid JSON" : reader.error));
  }
  if (entries.empty()) return DataLoss(vocab_name + ": expected a non-empty JSON object mapping tokens to ids");
  int max_id = -1;
  for (const auto& entry : entries) max_id = std::max(max_id, entry.second);
  model->id_to_token_.resize(static_cast<size_t>(max_id) + 1);
  model->vocab_.reserve(entries.size());
  for (auto& [token, id] : entries) {
    model->id_to_token_[static_cast<size_t>(id)] = token;
    model->vocab_.insert_or_assign(std::move(token), id);  // a repeated key: the last one wins
  }
  model->unk_id_ = model->token_id(unk_token);
  if (model->unk_id_ < 0) return DataLoss(vocab_name + ": missing the unknown token " + quote(unk_token));
  for (int b = 0; b < 256; ++b) {
    const std::string& sym = byte_to_unicode(static_cast<unsigned char>(b));
    const int id = model->token_id(sym);
    const int eow_id = model->token_id(sym + std::string(kEndOfWord));
    // As the reference BPE (fuse_unk off): a byte without token becomes the unknown token.
    model->byte_id_[static_cast<size_t>(b)] = id >= 0 ? id : model->unk_id_;
    model->byte_eow_id_[static_cast<size_t>(b)] = eow_id >= 0 ? eow_id : model->unk_id_;
  }

  // ---- merges.txt: optional "#version" line, then "left right" per line, best first.
  size_t line_no = 0;
  int rank = 0;
  size_t pos = 0;
  while (pos < merges_txt.size()) {
    size_t end = merges_txt.find('\n', pos);
    if (end == std::string_view::npos) end = merges_txt.size();
    std::string_view line = merges_txt.substr(pos, end - pos);
    pos = end + 1;
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty() || (line_no == 1 && line.starts_with("#version"))) continue;
    const size_t space = line.find(' ');
    if (space == std::string_view::npos || space == 0 || space + 1 == line.size() ||
        line.find(' ', space + 1) != std::string_view::npos) {
      return DataLoss(merges_name + " line " + std::to_string(line_no) +
                      ": expected two tokens separated by one space, got " + quote(line));
    }
    const std::string_view left = line.substr(0, space);
    const std::string_view right = line.substr(space + 1);
    const int left_id = model->token_id(left);
    const int right_id = model->token_id(right);
    const int new_id = model->token_id(std::string(left) + std::string(right));
    if (left_id < 0 || right_id < 0 || new_id < 0) {
      const std::string missing = left_id < 0 ? std::string(left) : right_id < 0 ? std::string(right)
                                                                             : std::string(left) + std::string(right);
      return DataLoss(merges_name + " line " + std::to_string(line_no) + ": token " + quote(missing) +
                      " is not in the vocabulary " + vocab_name);
    }
    // A repeated pair takes its last rank, as the reference's merge table does.
    model->merges_[pair_key(left_id, right_id)] = Merge{rank++, new_id};
  }
  if (model->merges_.empty()) return DataLoss(merges_name + ": no merges found");
  return model;
}

int BpeModel::token_id(std::string_view token) const {
  const auto it = vocab_.find(token);
  return it == vocab_.end() ? -1 : it->second;
}

const std::string& BpeModel::token(int id) const {
  static const std::string kNone;
  if (id < 0 || id >= vocab_size()) return kNone;
  return id_to_token_[static_cast<size_t>(id)];
}

void BpeModel::merge_symbols(std::vector<int>& ids) const {
  const int n = static_cast<int>(ids.size());
  if (n < 2) return;
  std::vector<int> prev(static_cast<size_t>(n)), next(static_cast<size_t>(n));
  std::vector<char> alive(static_cast<size_t>(n), 1);
  for (int i = 0; i < n; ++i) {
    prev[static_cast<size_t>(i)] = i - 1;
    next[static_cast<size_t>(i)] = i + 1 < n ? i + 1 : -1;
  }
  struct Candidate {
    int rank;
    int pos;
    int new_id;
    bool operator>(const Candidate& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
  };
  // Min-heap on (rank, position): the best merge first, leftmost on ties.
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<>> heap;
  const auto push_pair = [&](int pos) {
    const int nx = next[static_cast<size_t>(pos)];
    if (nx < 0) return;
    const auto it = merges_.find(pair_key(ids[static_cast<size_t>(pos)], ids[static_cast<size_t>(nx)]));
    if (it != merges_.end()) heap.push({it->second.rank, pos, it->second.new_id});
  };
  for (int i = 0; i + 1 < n; ++i) push_pair(i);
  while (!heap.empty()) {
    const Candidate top = heap.top();
    heap.pop();
    const auto pos = static_cast<size_t>(top.pos);
    if (!alive[pos] || next[pos] < 0) continue;
    const auto nx = static_cast<size_t>(next[pos]);
    const auto it = merges_.find(pair_key(ids[pos], ids[nx]));
    if (it == merges_.end() || it->second.new_id != top.new_id) continue;  // stale candidate
    ids[pos] = top.new_id;
    alive[nx] = 0;
    next[pos] = next[nx];
    if (next[pos] >= 0) prev[static_cast<size_t>(next[pos])] = top.pos;
    if (prev[pos] >= 0) push_pair(prev[pos]);
    push_pair(top.pos);
  }
  size_t w = 0;
  for (size_t i = 0; i < ids.size(); ++i) {
    if (alive[i]) ids[w++] = ids[i];
  }
  ids.resize(w);
}

void BpeModel::encode_word(std::string_view word, std::vector<int>& out) const {
  if (word.empty()) return;
  const bool cacheable = word.size() <= kMaxCachedWordBytes;
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_mutex_);
    const auto it = cache_.find(word);
    if (it != cache_.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  std::vector<int> ids(word.size());
  for (size_t i = 0; i < word.size(); ++i) {
    const auto b = static_cast<unsigned char>(word[i]);
    ids[i] = i + 1 == word.size() ? byte_eow_id_[b] : byte_id_[b];
  }
  merge_symbols(ids);
  out.insert(out.end(), ids.begin(), ids.end());
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_mutex_);
    if (cache_.size() >= kCacheCapacity) cache_.clear();
    cache_.emplace(std::string(word), std::move(ids));
  }
}

std::string BpeModel::decode(const std::vector<int>& ids) const {
  static const std::unordered_map<std::string, unsigned char> inverse = [] {
    std::unordered_map<std::string, unsigned char> m;
    for (int b = 0; b < 256; ++b) m[byte_to_unicode(static_cast<unsigned char>(b))] = static_cast<unsigned char>(b);
    return m;
  }();
  std::string text;
  for (int id : ids) {
    std::string_view tok = token(id);
    bool end_of_word = false;
    if (tok.ends_with(kEndOfWord)) {
      tok.remove_suffix(kEndOfWord.size());
      end_of_word = true;
    }
    for (size_t i = 0; i < tok.size();) {
      // Symbols are one or two UTF-8 bytes (code points below U+0180).
      const size_t len = (static_cast<unsigned char>(tok[i]) & 0xE0) == 0xC0 ? 2 : 1;
      const auto it = inverse.find(std::string(tok.substr(i, len)));
      if (it != inverse.end()) {
        text.push_back(static_cast<char>(it->second));
        i += len;
      } else {  // not a byte-level symbol (e.g. special tokens): copy as is
        text.push_back(tok[i]);
        i += 1;
      }
    }
    if (end_of_word) text.push_back(' ');
  }
  if (!text.empty() && text.back() == ' ') text.pop_back();
  return text;
}

}  // namespace sd::tokenizer_detail
