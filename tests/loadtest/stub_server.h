// A tiny in-test HTTP server on 127.0.0.1 (ephemeral port, one thread per connection,
// Beast synchronous I/O) that answers like the sdapi / openai / jobs routes with small
// valid bodies, or with chosen error statuses, or stalls — for loopback client tests.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace sd::loadtest::testing {

struct StubBehavior {
  double delay_s = 0;  // before each answer
  // HTTP status for the n-th request (1-based, in arrival order); 200 answers normally.
  std::function<int(int64_t n)> status_for;
  bool stall = false;           // read requests but never answer (until the server stops)
  std::string required_key;     // when set, requests without "Bearer <key>" get 401
  bool close_after_each = false;  // answer with Connection: close
  // > 0: GET /metrics (not counted as a request) reports sd_device_energy_joules_total on two
  // devices growing by this much in all per generation request answered; else /metrics is 404.
  double energy_j_per_request = 0;
};

class StubServer {
 public:
  explicit StubServer(StubBehavior behavior);
  ~StubServer();  // stops: closes every connection and joins the threads
  int port() const { return port_; }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_); }
  int64_t requests() const { return requests_.load(); }
  int64_t connections() const { return connections_.load(); }

 private:
  struct Impl;
  void accept_loop();
  void serve(int fd_index);

  StubBehavior behavior_;
  std::unique_ptr<Impl> impl_;
  int port_ = 0;
  std::atomic<bool> stopping_{false};
  std::atomic<int64_t> requests_{0}, connections_{0};
  std::mutex mutex_;
  std::condition_variable stop_cv_;
  std::thread acceptor_thread_;
  std::vector<std::thread> connection_threads_;
};

// A TCP port on 127.0.0.1 that nothing listens on (bound once, then closed).
int closed_port();

// 1x1 PNG, base64.
extern const char* const kTinyPngBase64;

}  // namespace sd::loadtest::testing
