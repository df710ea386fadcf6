// check_self_contained_html: a tag-stack scan (no full HTML parser): comments and the
// doctype are skipped, void elements and "/>" need no end tag, <style> and <title>
// contents are treated as text. Enough to prove the report is well formed and offline.
#include "html_check.h"

#include <algorithm>
#include <cctype>
#include <set>
#include <vector>

namespace sd::loadtest::testing {

int count_occurrences(const std::string& text, const std::string& needle) {
  int n = 0;
  for (size_t pos = text.find(needle); pos != std::string::npos; pos = text.find(needle, pos + needle.size())) ++n;
  return n;
}

std::string check_self_contained_html(const std::string& html) {
  std::string lower = html;
  std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) { return std::tolower(c); });
  if (lower.rfind("<!doctype html>", 0) != 0) return "does not start with <!DOCTYPE html>";
  if (count_occurrences(lower, "<html") != 1 || count_occurrences(lower, "</html>") != 1) return "not exactly one <html>";
  for (const char* banned : {"<script", "<link", "<iframe", "<img", "src=", "href=", "url(", "@import"})
    if (lower.find(banned) != std::string::npos) return std::string("contains '") + banned + "'";

  static const std::set<std::string> kVoid = {"meta", "br", "hr", "img", "input", "link", "col", "area", "base", "wbr"};
  std::vector<std::string> stack;
  size_t pos = 0;
  while ((pos = lower.find('<', pos)) != std::string::npos) {
    if (lower.compare(pos, 4, "<!--") == 0) {
      size_t end = lower.find("-->", pos);
      if (end == std::string::npos) return "unterminated comment";
      pos = end + 3;
      continue;
    }
    size_t end = lower.find('>', pos);
    if (end == std::string::npos) return "unterminated tag at " + std::to_string(pos);
    std::string tag = lower.substr(pos + 1, end - pos - 1);
    pos = end + 1;
    if (tag.empty()) return "empty tag";
    if (tag[0] == '!') continue;  // doctype
    bool closing = tag[0] == '/';
    bool self_closing = !closing && tag.back() == '/';
    size_t name_start = closing ? 1 : 0;
    size_t name_end = tag.find_first_of(" \t\n/", name_start);
    std::string name = tag.substr(name_start, name_end == std::string::npos ? std::string::npos : name_end - name_start);
    if (name.empty()) return "tag without a name";
    for (char c : name)
      if (!std::isalnum(static_cast<unsigned char>(c))) return "bad tag name '" + name + "'";
    if (closing) {
      if (stack.empty() || stack.back() != name)
        return "</" + name + "> does not close <" + (stack.empty() ? std::string("nothing") : stack.back()) + ">";
      stack.pop_back();
      continue;
    }
    if (self_closing || kVoid.count(name)) continue;
    stack.push_back(name);
    if (name == "style" || name == "title") {  // raw text up to the end tag
      size_t close = lower.find("</" + name + ">", pos);
      if (close == std::string::npos) return "unterminated <" + name + ">";
      pos = close;
    }
  }
  if (!stack.empty()) return "<" + stack.back() + "> is never closed";
  return "";
}

}  // namespace sd::loadtest::testing
