// Routing table of the server: method + path pattern ("/v1/jobs/{id}") -> handler, with
// 404/405, API-key auth (constant-time compare; open routes such as /health/* skip it)
// and CORS headers / preflight only when a CORS origin is configured.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "serving/api_error.h"
#include "serving/http_types.h"

namespace sd::serving {

struct RouterOptions {
  std::string api_key;      // empty: no auth
  std::string cors_origin;  // empty: no CORS headers; "*" or one exact origin
};

class Router {
 public:
  explicit Router(RouterOptions options) : options_(std::move(options)) {}
  // `api` labels the route in metrics and logs; `open` routes need no API key.
  void add(std::string method, std::string pattern, std::string api, Handler handler, bool open = false);
  void dispatch(const std::shared_ptr<Exchange>& exchange) const;

 private:
  struct Route {
    std::string method;
    std::vector<std::string> segments;
    std::string api;
    Handler handler;
    bool open = false;
  };
  bool authorized(const HttpRequest& request) const;
  RouterOptions options_;
  std::vector<Route> routes_;
};

// Compares without an early exit, so the time taken does not reveal the matching prefix.
bool constant_time_equals(std::string_view given, std::string_view expected);

HttpResponse json_response(int status, std::string body);
HttpResponse error_response(const ApiError& error);

}  // namespace sd::serving
