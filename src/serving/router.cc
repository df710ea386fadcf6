// Route matching on '/'-separated segments ("{name}" captures one segment), then the
// checks every route shares: CORS preflight, API key, 405 with Allow. Errors use the
// common {"error": {...}} body.
#include "serving/router.h"

#include <algorithm>
#include <cctype>

namespace sd::serving {

namespace {
std::vector<std::string> split_path(std::string_view path) {
  std::vector<std::string> out;
  if (path.empty() || path[0] != '/') return out;
  size_t start = 1;
  for (;;) {
    size_t slash = path.find('/', start);
    out.emplace_back(path.substr(start, slash == std::string_view::npos ? std::string_view::npos : slash - start));
    if (slash == std::string_view::npos) break;
    start = slash + 1;
  }
  return out;
}

bool match(const std::vector<std::string>& pattern, const std::vector<std::string>& path, PathParams* params) {
  if (pattern.size() != path.size()) return false;
  PathParams captured;
  for (size_t i = 0; i < pattern.size(); ++i) {
    const auto& p = pattern[i];
    if (p.size() > 2 && p.front() == '{' && p.back() == '}') {
      if (path[i].empty()) return false;
      captured[p.substr(1, p.size() - 2)] = path[i];
    } else if (p != path[i]) {
      return false;
    }
  }
  if (params) *params = std::move(captured);
  return true;
}
}  // namespace

bool constant_time_equals(std::string_view given, std::string_view expected) {
  if (expected.empty()) return false;
  unsigned char diff = given.size() == expected.size() ? 0 : 1;
  for (size_t i = 0; i < expected.size(); ++i) {
    unsigned char g = i < given.size() ? static_cast<unsigned char>(given[i]) : 0;
    diff |= static_cast<unsigned char>(g ^ static_cast<unsigned char>(expected[i]));
  }
  return diff == 0;
}

HttpResponse json_response(int status, std::string body) {
  HttpResponse r;
  r.status = status;
  r.body = std::move(body);
  return r;
}

HttpResponse error_response(const ApiError& error) {
  HttpResponse r = json_response(error.http_status, error.body());
  if (error.retry_after_s > 0) r.headers.emplace_back("Retry-After", std::to_string(error.retry_after_s));
  if (error.http_status == 401) r.headers.emplace_back("WWW-Authenticate", "Bearer");
  return r;
}

void Router::add(std::string method, std::string pattern, std::string api, Handler handler, bool open) {
  routes_.push_back(Route{std::move(method), split_path(pattern), std::move(api), std::move(handler), open});
}

bool Router::authorized(const HttpRequest& request) const {
  if (options_.api_key.empty()) return true;
  std::string auth = request.header("authorization");
  std::string key;
  if (auth.size() > 7 && std::equal(auth.begin(), auth.begin() + 7, "bearer ", [](char a, char b) {
        return std::tolower(static_cast<unsigned char>(a)) == b;
      })) {
    key = auth.substr(7);
    while (!key.empty() && key.front() == ' ') key.erase(key.begin());
  } else {
    key = request.header("x-api-key");
  }
  return constant_time_equals(key, options_.api_key);
}

void Router::dispatch(const std::shared_ptr<Exchange>& exchange) const {
  const HttpRequest& request = exchange->request();
  auto path = split_path(request.path);
  std::vector<const Route*> same_path;
  for (const auto& route : routes_)
    if (match(route.segments, path, nullptr)) same_path.push_back(&route);
  if (!same_path.empty()) exchange->api = same_path.front()->api;

  // CORS: only when configured, only for an allowed Origin.
  std::string origin = request.header("origin");
  bool cors = !options_.cors_origin.empty() && !origin.empty() &&
              (options_.cors_origin == "*" || origin == options_.cors_origin);
  if (cors) {
    exchange->extra_headers.emplace_back("Access-Control-Allow-Origin", options_.cors_origin == "*" ? "*" : origin);
    if (options_.cors_origin != "*") exchange->extra_headers.emplace_back("Vary", "Origin");
  }

  if (same_path.empty())
    return exchange->respond(error_response(ApiError{404, "not_found", "no route for " + request.path, {}, 0}));

  std::string allow;
  for (const Route* route : same_path) allow += (allow.empty() ? "" : ", ") + route->method;

  if (request.method == "OPTIONS" && cors) {
    HttpResponse r;
    r.status = 204;
    r.content_type = "text/plain";
    r.headers = {{"Access-Control-Allow-Methods", allow + ", OPTIONS"},
                 {"Access-Control-Allow-Headers", "Authorization, Content-Type, X-API-Key"},
                 {"Access-Control-Max-Age", "600"}};
    return exchange->respond(std::move(r));
  }

  for (const Route* route : same_path) {
    if (route->method != request.method) continue;
    if (!route->open && !authorized(request))
      return exchange->respond(error_response(
          ApiError{401, "unauthorized", "a valid API key is required (Authorization: Bearer KEY)", {}, 0}));
    PathParams params;
    match(route->segments, path, &params);
    return route->handler(exchange, params);
  }
  HttpResponse r = error_response(
      ApiError{405, "method_not_allowed", request.method + " is not allowed on " + request.path + "; allowed: " + allow, {}, 0});
  r.headers.emplace_back("Allow", allow);
  exchange->respond(std::move(r));
}

}  // namespace sd::serving
