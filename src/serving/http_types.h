// Transport-neutral HTTP request/response types and the Exchange through which a handler
// answers one request: a whole response, or a chunked stream (SSE). Exchange methods are
// thread-safe (they post to the connection's strand), so workers can answer directly.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace sd::serving {

struct HttpRequest {
  std::string method;  // "GET"
  std::string target;  // "/v1/jobs/abc?x=1"
  std::string path;    // "/v1/jobs/abc"
  std::string query;   // "x=1"
  std::vector<std::pair<std::string, std::string>> headers;  // names lower-case
  std::string body;
  std::string header(std::string_view lower_name) const;
};

struct HttpResponse {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;
};

class Exchange {
 public:
  virtual ~Exchange() = default;
  virtual const HttpRequest& request() const = 0;

  // Sends the response (once); later calls are ignored.
  virtual void respond(HttpResponse response) = 0;
  // Chunked streaming: the head (status, content_type, headers; body ignored), then data
  // pieces, then the end. Used for Server-Sent Events.
  virtual void start_stream(HttpResponse head) = 0;
  virtual void stream_write(std::string data) = 0;
  virtual void stream_end() = 0;

  // Called (once, from an I/O thread) when the client goes away before the exchange
  // completed: detected by a read on the idle socket or a failed write.
  virtual void on_close(std::function<void()> fn) = 0;
  virtual bool closed() const = 0;

  // Set by the router: the API label for metrics/logs and headers added to every response.
  std::string api = "other";
  std::vector<std::pair<std::string, std::string>> extra_headers;
};

using PathParams = std::map<std::string, std::string>;
using Handler = std::function<void(const std::shared_ptr<Exchange>&, const PathParams&)>;

}  // namespace sd::serving
