// Minimal blocking HTTP/1.1 client for the server tests (loopback only), on Beast: one
// request per connection, raw sockets for disconnect/slow-client cases, and helpers to
// start an in-process server on a free port with FakeEngines.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "fake_engine.h"
#include "serving/server.h"
#include "serving/server_state.h"

namespace sd::testing {

struct Reply {
  int status = 0;  // 0: no response (connection failed or closed)
  std::map<std::string, std::string> headers;  // lower-case names
  std::string body;
  std::string error;  // why status is 0
  nlohmann::json json() const;
  std::string header(const std::string& name) const;
};

Reply http(int port, const std::string& method, const std::string& target, const std::string& body = "",
           const std::map<std::string, std::string>& headers = {});

// Sends raw bytes, then reads until the peer closes or `timeout_ms` passes.
std::string raw_exchange(int port, const std::string& bytes, int timeout_ms = 5000);

// A connected socket the test controls (send, then close early).
class RawConnection {
 public:
  explicit RawConnection(int port);
  ~RawConnection();
  void send(const std::string& bytes);
  void close();
  std::string read_some(int timeout_ms);

 private:
  int fd_ = -1;
};

// An in-process server on 127.0.0.1:<free port> over `engines` FakeEngines.
struct TestServer {
  explicit TestServer(serving::ServerOptions options = {}, int engines = 1, int step_delay_ms = 0);
  ~TestServer();
  int port() const { return server->port(); }
  // Polls `metric_line` (exact text before the value) in /metrics; -1 if absent.
  double metric(const std::string& metric_line);
  std::vector<std::unique_ptr<FakeEngine>> engines;
  std::unique_ptr<serving::Server> server;
};

std::string txt2img_body(const std::string& prompt, int64_t seed, int steps = 4, int batch_size = 1, int size = 64);
// Decodes standard base64 (for comparing images).
std::string base64_decode(const std::string& text);
// Waits (bounded) until pred() is true; returns pred().
template <typename F>
bool eventually(F pred, int timeout_ms = 5000);

}  // namespace sd::testing

#include <chrono>
#include <thread>
template <typename F>
bool sd::testing::eventually(F pred, int timeout_ms) {
  auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (std::chrono::steady_clock::now() < end) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return pred();
}
