// sdserve's HTTP server: A1111 (/sdapi/v1/*), OpenAI (/v1/images/generations, /v1/models),
// async jobs (/v1/jobs*), health and Prometheus metrics, over a step-level batching
// scheduler with one worker per engine. Constructible in-process from GenerationEngine*s.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "core/status.h"
#include "pipeline/engine.h"
#include "pipeline/request.h"

namespace sd::serving {

struct ServerOptions {
  std::string host = "127.0.0.1";
  int port = 7860;               // 0 picks a free port (see Server::port())
  int io_threads = 0;            // 0 = hardware threads (at least 2)
  int encode_threads = 2;        // PNG/JPEG/WebP encoding
  int max_batch = 8;             // images per batched denoising step
  int max_queue = 256;           // tasks waiting for a batch; more -> 503 + Retry-After
  double queue_timeout_s = 300;  // max wait in the queue; more -> 503 queue_timeout
  std::string api_key;           // empty: no auth; otherwise every route but /health/*
  std::string cors_origin;       // empty: no CORS headers
  size_t max_body_bytes = 1 << 20;
  double read_timeout_s = 30;
  double write_timeout_s = 60;
  int max_connections = 10000;
  double drain_timeout_s = 30;   // SIGTERM: how long in-flight work may take
  double job_ttl_s = 600;        // finished jobs are kept this long
  size_t max_jobs = 1000;        // job records kept at most
  int retry_after_s = 5;
  double sse_ping_s = 15;
  bool log_requests = true;      // one line per request on stderr
  RequestLimits limits;
};

struct ServerState;

class Server {
 public:
  explicit Server(ServerOptions options);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Binds and starts serving; /health/ready stays 503 (and generation routes 503) until
  // attach_engines().
  Status start();
  // The engines (one per device) must outlive the server. Call once.
  void attach_engines(std::vector<GenerationEngine*> engines);
  int port() const;
  bool ready() const;

  // SIGINT/SIGTERM start the drain.
  void install_signal_handlers();
  // Not ready, no new work (503), in-flight work finished (up to drain_timeout_s), then
  // stop. Thread-safe, idempotent, returns at once; wait() returns when it is done.
  void begin_drain();
  // Blocks until the server stopped (after a drain); returns the process exit code (0).
  int wait();
  // Immediate stop: cancels in-flight work.
  void stop();

  ServerState& state() { return *state_; }

 private:
  void drain_thread();
  std::unique_ptr<ServerState> state_;
};

}  // namespace sd::serving
