// Indentation-based parser for the YAML subset of LDM model configs, and extraction of the
// fields sdserve needs. Input is untrusted: bounded depth, line-numbered errors, and no
// construct outside the subset is silently misread (it is either ignored whole or an error).
#include "io/ldm_yaml.h"

#include <cerrno>
#include <cstdlib>

namespace sd {
namespace {

constexpr int kMaxDepth = 32;

struct Line {
  int number = 0;      // 1-based, for messages
  int indent = 0;
  bool item = false;   // "- value"
  std::string key;     // maps: "key: value"
  std::string value;
};

std::string trim(std::string_view s) {
  size_t b = 0, e = s.size();
  while (b < e && (s[b] == ' ' || s[b] == '\t')) ++b;
  while (e > b && (s[e - 1] == ' ' || s[e - 1] == '\t' || s[e - 1] == '\r')) --e;
  return std::string(s.substr(b, e - b));
}

// Cuts a comment: '#' at the start or after whitespace, outside quotes.
std::string strip_comment(std::string_view s) {
  char quote = 0;
  for (size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    if (quote) {
      if (c == quote) quote = 0;
    } else if (c == '\'' || c == '"') {
      quote = c;
    } else if (c == '#' && (i == 0 || s[i - 1] == ' ' || s[i - 1] == '\t')) {
      return std::string(s.substr(0, i));
    }
  }
  return std::string(s);
}

std::string unquote(const std::string& s) {
  if (s.size() >= 2 && (s.front() == '"' || s.front() == '\'') && s.back() == s.front()) return s.substr(1, s.size() - 2);
  return s;
}

// Position of the ':' separating key and value (followed by space or end), outside quotes.
size_t key_colon(const std::string& s) {
  char quote = 0;
  for (size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    if (quote) {
      if (c == quote) quote = 0;
    } else if (c == '\'' || c == '"') {
      quote = c;
    } else if (c == ':' && (i + 1 == s.size() || s[i + 1] == ' ')) {
      return i;
    }
  }
  return std::string::npos;
}

class Parser {
 public:
  Parser(std::vector<Line> lines, std::string origin) : lines_(std::move(lines)), origin_(std::move(origin)) {}

  StatusOr<YamlNode> parse_document() {
    YamlNode root;
    root.kind = YamlNode::Kind::kMap;
    if (lines_.empty()) return root;
    SD_RETURN_IF_ERROR(parse_block(lines_[0].indent, 0, &root));
    if (pos_ < lines_.size()) return error(lines_[pos_], "unexpected indentation");
    return root;
  }

 private:
  Status error(const Line& line, const std::string& what) const {
    return InvalidArgument(origin_ + ":" + std::to_string(line.number) + ": " + what);
  }

  Status scalar_or_flow(const Line& line, const std::string& text, YamlNode* out) const {
    if (!text.empty() && text.front() == '[') {
      if (text.back() != ']') return error(line, "unterminated flow list");
      out->kind = YamlNode::Kind::kList;
      const std::string inner = text.substr(1, text.size() - 2);
      if (inner.find_first_of("[]{}") != std::string::npos) return error(line, "nested flow collections are not supported");
      if (trim(inner).empty()) return Status::Ok();
      size_t start = 0;
      while (true) {
        const size_t comma = inner.find(',', start);
        YamlNode item;
        item.kind = YamlNode::Kind::kScalar;
        item.scalar = unquote(trim(inner.substr(start, comma == std::string::npos ? std::string::npos : comma - start)));
        out->items.push_back(std::move(item));
        if (comma == std::string::npos) break;
        start = comma + 1;
      }
      return Status::Ok();
    }
    out->kind = YamlNode::Kind::kScalar;  // flow maps and other forms stay raw text
    out->scalar = unquote(text);
    return Status::Ok();
  }

  Status parse_block(int indent, int depth, YamlNode* out) {
    if (depth > kMaxDepth) return error(lines_[pos_], "nesting deeper than " + std::to_string(kMaxDepth) + " levels");
    return lines_[pos_].item ? parse_list(indent, out) : parse_map(indent, depth, out);
  }

  Status parse_map(int indent, int depth, YamlNode* out) {
    out->kind = YamlNode::Kind::kMap;
    while (pos_ < lines_.size() && lines_[pos_].indent == indent && !lines_[pos_].item) {
      const Line& line = lines_[pos_++];
      YamlNode child;
      if (!line.value.empty()) {
        SD_RETURN_IF_ERROR(scalar_or_flow(line, line.value, &child));
      } else if (pos_ < lines_.size() && lines_[pos_].indent > indent) {
        SD_RETURN_IF_ERROR(parse_block(lines_[pos_].indent, depth + 1, &child));
      } else if (pos_ < lines_.size() && lines_[pos_].indent == indent && lines_[pos_].item) {
        SD_RETURN_IF_ERROR(parse_list(indent, &child));  // "key:\n- a\n- b" at the key's indent
      }
      out->keys.push_back(line.key);
      out->values.push_back(std::move(child));
    }
    if (pos_ < lines_.size() && lines_[pos_].indent > indent) return error(lines_[pos_], "unexpected indentation");
    if (pos_ < lines_.size() && lines_[pos_].indent == indent && lines_[pos_].item) {
      return error(lines_[pos_], "list item inside a map");
    }
    return Status::Ok();
  }

  Status parse_list(int indent, YamlNode* out) {
    out->kind = YamlNode::Kind::kList;
    while (pos_ < lines_.size() && lines_[pos_].indent == indent && lines_[pos_].item) {
      const Line& line = lines_[pos_++];
      YamlNode item;
      if (key_colon(line.value) != std::string::npos || line.value.empty()) {
        // A map or nested list inside a list: outside the subset; kept as null, children skipped.
        while (pos_ < lines_.size() && lines_[pos_].indent > indent) ++pos_;
      } else {
        SD_RETURN_IF_ERROR(scalar_or_flow(line, line.value, &item));
      }
      out->items.push_back(std::move(item));
    }
    return Status::Ok();
  }

  std::vector<Line> lines_;
  std::string origin_;
  size_t pos_ = 0;
};

StatusOr<std::vector<Line>> split_lines(const std::string& text, const std::string& origin) {
  std::vector<Line> lines;
  size_t start = 0;
  int number = 0;
  while (start <= text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    ++number;
    const std::string raw = strip_comment(std::string_view(text).substr(start, end - start));
    start = end + 1;
    const std::string content = trim(raw);
    if (content.empty() || content == "---" || content == "...") continue;
    Line line;
    line.number = number;
    while (static_cast<size_t>(line.indent) < raw.size() && raw[line.indent] == ' ') ++line.indent;
    if (raw[line.indent] == '\t') return InvalidArgument(origin + ":" + std::to_string(number) + ": tab in indentation");
    if (content == "-" || content.rfind("- ", 0) == 0) {
      line.item = true;
      line.value = trim(std::string_view(content).substr(1));
      // "- x" counts as indented past the dash for children, at the dash for siblings.
    } else {
      const size_t colon = key_colon(content);
      if (colon == std::string::npos) {
        return InvalidArgument(origin + ":" + std::to_string(number) + ": expected 'key: value'");
      }
      line.key = unquote(trim(std::string_view(content).substr(0, colon)));
      line.value = trim(std::string_view(content).substr(colon + 1));
    }
    lines.push_back(std::move(line));
  }
  return lines;
}

class Extractor {
 public:
  Extractor(const YamlNode& root, std::string origin) : root_(root), origin_(std::move(origin)) {}
  const Status& status() const { return status_; }

  const YamlNode* scalar(const char* path) {
    const YamlNode* n = root_.find(path);
    if (!n || n->kind == YamlNode::Kind::kNull) return nullptr;
    if (n->kind != YamlNode::Kind::kScalar) {
      fail(path, "must be a single value");
      return nullptr;
    }
    return n;
  }
  void fail(const char* path, const std::string& what) {
    if (status_.ok()) status_ = InvalidArgument(origin_ + ": '" + path + "' " + what);
  }
  static bool to_int(const std::string& s, int* out) {
    if (s.empty()) return false;
    errno = 0;
    char* end = nullptr;
    const long v = std::strtol(s.c_str(), &end, 10);
    if (errno || *end || v < INT32_MIN || v > INT32_MAX) return false;
    *out = static_cast<int>(v);
    return true;
  }
  void get(const char* path, std::optional<int>* out) {
    int v = 0;
    if (const YamlNode* n = scalar(path)) {
      if (!to_int(n->scalar, &v)) return fail(path, "must be an integer, got '" + n->scalar + "'");
      *out = v;
    }
  }
  void get(const char* path, std::optional<double>* out) {
    if (const YamlNode* n = scalar(path)) {
      errno = 0;
      char* end = nullptr;
      const double v = std::strtod(n->scalar.c_str(), &end);
      if (n->scalar.empty() || errno || *end) return fail(path, "must be a number, got '" + n->scalar + "'");
      *out = v;
    }
  }
  void get(const char* path, std::optional<bool>* out) {
    if (const YamlNode* n = scalar(path)) {
      const std::string& s = n->scalar;
      if (s == "true" || s == "True" || s == "TRUE" || s == "yes" || s == "on") *out = true;
      else if (s == "false" || s == "False" || s == "FALSE" || s == "no" || s == "off") *out = false;
      else fail(path, "must be true or false, got '" + s + "'");
    }
  }
  void get(const char* path, std::optional<std::string>* out) {
    if (const YamlNode* n = scalar(path)) *out = n->scalar;
  }
  void get(const char* path, std::optional<std::vector<int>>* out) {
    const YamlNode* n = root_.find(path);
    if (!n || n->kind == YamlNode::Kind::kNull) return;
    if (n->kind != YamlNode::Kind::kList) return fail(path, "must be a list of integers");
    std::vector<int> v;
    for (const YamlNode& item : n->items) {
      int x = 0;
      if (item.kind != YamlNode::Kind::kScalar || !to_int(item.scalar, &x)) return fail(path, "must be a list of integers");
      v.push_back(x);
    }
    *out = v;
  }

 private:
  const YamlNode& root_;
  std::string origin_;
  Status status_;
};

}  // namespace

const YamlNode* YamlNode::find(std::string_view dotted_path) const {
  const YamlNode* node = this;
  while (!dotted_path.empty()) {
    const size_t dot = dotted_path.find('.');
    const std::string_view key = dotted_path.substr(0, dot);
    if (node->kind != Kind::kMap) return nullptr;
    const YamlNode* next = nullptr;
    for (size_t i = 0; i < node->keys.size(); ++i) {
      if (node->keys[i] == key) next = &node->values[i];  // the last duplicate wins, as in YAML loaders
    }
    if (!next) return nullptr;
    node = next;
    dotted_path = dot == std::string_view::npos ? std::string_view() : dotted_path.substr(dot + 1);
  }
  return node;
}

StatusOr<YamlNode> parse_yaml_subset(const std::string& text, const std::string& origin) {
  SD_ASSIGN_OR_RETURN(std::vector<Line> lines, split_lines(text, origin));
  Parser parser(std::move(lines), origin);
  return parser.parse_document();
}

StatusOr<LdmYamlConfig> parse_ldm_yaml(const std::string& text, const std::string& origin) {
  SD_ASSIGN_OR_RETURN(YamlNode root, parse_yaml_subset(text, origin));
  LdmYamlConfig c;
  Extractor x(root, origin);
  x.get("model.params.parameterization", &c.parameterization);
  x.get("model.params.scale_factor", &c.scale_factor);
  x.get("model.params.linear_start", &c.linear_start);
  x.get("model.params.linear_end", &c.linear_end);
  x.get("model.params.timesteps", &c.timesteps);
  x.get("model.params.unet_config.params.num_heads", &c.num_heads);
  x.get("model.params.unet_config.params.num_head_channels", &c.num_head_channels);
  x.get("model.params.unet_config.params.context_dim", &c.context_dim);
  x.get("model.params.unet_config.params.model_channels", &c.model_channels);
  x.get("model.params.unet_config.params.channel_mult", &c.channel_mult);
  x.get("model.params.unet_config.params.use_linear_in_transformer", &c.use_linear_in_transformer);
  x.get("model.params.unet_config.params.num_res_blocks", &c.num_res_blocks);
  x.get("model.params.cond_stage_config.params.layer", &c.cond_stage_layer);
  x.get("sdserve.text_encoder_num_heads", &c.text_encoder_num_heads);
  x.get("sdserve.image_size", &c.image_size);
  x.get("sdserve.unet_attention_heads", &c.unet_attention_heads);
  SD_RETURN_IF_ERROR(x.status());
  if (c.num_heads && *c.num_heads == -1) c.num_heads.reset();
  if (c.num_head_channels && *c.num_head_channels == -1) c.num_head_channels.reset();
  if (c.parameterization && *c.parameterization != "eps" && *c.parameterization != "v") {
    return Unimplemented(origin + ": parameterization '" + *c.parameterization + "' (supported: eps, v)");
  }
  if (c.cond_stage_layer && *c.cond_stage_layer != "last" && *c.cond_stage_layer != "penultimate") {
    return Unimplemented(origin + ": cond_stage_config layer '" + *c.cond_stage_layer + "' (supported: last, penultimate)");
  }
  for (const auto* v : {&c.num_heads, &c.num_head_channels, &c.context_dim, &c.model_channels,
                        &c.text_encoder_num_heads, &c.image_size, &c.timesteps, &c.num_res_blocks}) {
    if (*v && **v <= 0) return InvalidArgument(origin + ": sizes must be positive (got " + std::to_string(**v) + ")");
  }
  return c;
}

}  // namespace sd
