// HttpServer: the Boost.Beast/Asio plumbing. A bounded pool of I/O threads runs async
// accept/read/write for every connection (keep-alive, body limit -> 413, read/write
// timeouts), and hands each parsed request to a dispatch function as an Exchange.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <string>

#include "core/status.h"
#include "serving/http_types.h"

namespace sd::serving {

struct HttpServerOptions {
  std::string host = "127.0.0.1";
  int port = 7860;            // 0 picks a free port
  int threads = 0;            // I/O threads; 0 = hardware threads (at least 2)
  size_t max_body_bytes = 1 << 20;
  size_t max_header_bytes = 16 << 10;
  double read_timeout_s = 30;   // a whole request must arrive within this (also keep-alive idle)
  double write_timeout_s = 60;  // each write must complete within this
  int max_connections = 10000;  // further connections are closed at once
  double sse_ping_s = 15;       // comment line on idle streams (keeps proxies and disconnect detection alive)
};

// Called after each exchange completes (response written, stream ended, or client gone).
using CompletionHook = std::function<void(const HttpRequest& request, const std::string& api, int status,
                                          double seconds)>;

class HttpServer {
 public:
  HttpServer(HttpServerOptions options, std::function<void(const std::shared_ptr<Exchange>&)> dispatch,
             CompletionHook on_complete);
  ~HttpServer();  // stop()

  // Binds and listens; starts the I/O threads. Returns an error for a bad address/port.
  Status start();
  int port() const { return port_; }
  // Stops accepting, closes connections, joins the I/O threads.
  void stop();
  // Exchanges not yet completed (responses pending, open streams).
  int64_t active_exchanges() const;
  int64_t open_connections() const;
  // Runs fn(signal) on an I/O thread for SIGINT/SIGTERM (installed until stop()).
  void handle_signals(std::function<void(int)> fn);

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
  int port_ = 0;
};

}  // namespace sd::serving
