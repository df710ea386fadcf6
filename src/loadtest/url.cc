// parse_url: a strict little parser for "http://host[:port][/path]" (no user info, query or
// fragment — a load target has no use for them). IPv6 literals are written "[::1]:7860".
// Every rejection says which part of the URL is wrong.
#include "loadtest/url.h"

#include <algorithm>
#include <cctype>

namespace sd::loadtest {

std::string Url::host_header() const {
  std::string h = host.find(':') != std::string::npos ? "[" + host + "]" : host;
  return port == "80" ? h : h + ":" + port;
}

StatusOr<Url> parse_url(const std::string& text) {
  auto bad = [&](const std::string& why) { return InvalidArgument("--url '" + text + "': " + why); };
  const std::string scheme = "http://";
  if (text.rfind("https://", 0) == 0)
    return bad("https is not supported (put a TLS-terminating proxy in front, or use http://)");
  if (text.rfind(scheme, 0) != 0) return bad("must start with http://");
  std::string rest = text.substr(scheme.size());
  if (rest.find_first_of("?#@") != std::string::npos) return bad("user info, query and fragment are not allowed");
  size_t slash = rest.find('/');
  std::string authority = rest.substr(0, slash);
  std::string path = slash == std::string::npos ? "" : rest.substr(slash);
  while (!path.empty() && path.back() == '/') path.pop_back();

  Url url;
  std::string port;
  if (!authority.empty() && authority[0] == '[') {
    size_t close = authority.find(']');
    if (close == std::string::npos) return bad("unterminated IPv6 address '['");
    url.host = authority.substr(1, close - 1);
    std::string after = authority.substr(close + 1);
    if (!after.empty()) {
      if (after[0] != ':') return bad("unexpected characters after the IPv6 address");
      port = after.substr(1);
      if (port.empty()) return bad("empty port after ':'");
    }
  } else {
    size_t colon = authority.find(':');
    url.host = authority.substr(0, colon);
    if (colon != std::string::npos) {
      port = authority.substr(colon + 1);
      if (port.empty()) return bad("empty port after ':'");
    }
  }
  if (url.host.empty()) return bad("no host");
  for (char c : url.host) {
    bool ok = std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-' || c == ':' || c == '_';
    if (!ok) return bad(std::string("invalid character '") + c + "' in host");
  }
  if (!port.empty()) {
    if (port.size() > 5 || !std::all_of(port.begin(), port.end(), [](char c) { return c >= '0' && c <= '9'; }))
      return bad("port '" + port + "' is not a number");
    int value = std::stoi(port);
    if (value < 1 || value > 65535) return bad("port " + port + " is outside 1..65535");
    url.port = std::to_string(value);
  } else {
    url.port = "80";
  }
  for (char c : path) {
    if (static_cast<unsigned char>(c) <= ' ' || c == '"' || c == '<' || c == '>' || c == '\\')
      return bad("invalid character in path");
  }
  url.base_path = path;
  return url;
}

}  // namespace sd::loadtest
