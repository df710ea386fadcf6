// Target URLs for the load generator: "http://host[:port][/base]" split into the parts the
// client needs. Only plain http is supported (TLS belongs to a proxy in front of the server);
// anything else is an InvalidArgument naming what is wrong.
#pragma once

#include <string>

#include "core/status.h"

namespace sd::loadtest {

struct Url {
  std::string host;       // "127.0.0.1", "localhost", "::1" (brackets removed)
  std::string port;       // "7860"; "80" when the URL names none
  std::string base_path;  // "" or "/prefix" (no trailing slash); routes are appended to it
  // Host header value: host[:port], brackets restored for IPv6 literals.
  std::string host_header() const;
};

StatusOr<Url> parse_url(const std::string& text);

}  // namespace sd::loadtest
