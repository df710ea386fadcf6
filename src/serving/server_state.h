// State shared by the server's route handlers: options, metrics, the scheduler (once the
// engines are attached), the job store, the encode thread pool, ready/draining flags, and
// run_generation() — submit + encode — used by every generation API.
#pragma once

#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "serving/api_error.h"
#include "serving/http_server.h"
#include "serving/image_output.h"
#include "serving/job_store.h"
#include "serving/metrics.h"
#include "serving/request_parsing.h"
#include "serving/router.h"
#include "serving/scheduler.h"
#include "serving/server.h"

namespace sd::serving {

// Fixed threads for CPU work off the I/O and device threads (image encoding).
class ThreadPool {
 public:
  explicit ThreadPool(int threads);
  ~ThreadPool();  // runs what is queued, then joins
  void post(std::function<void()> fn);
  bool wait_idle(double timeout_s);

 private:
  std::mutex mu_;
  std::condition_variable cv_, idle_cv_;
  std::deque<std::function<void()>> queue_;
  int busy_ = 0;
  bool stop_ = false;
  std::vector<std::thread> threads_;
};

struct GenerationCallbacks {
  std::function<void(int position)> on_queued;
  std::function<void(int step, int total)> on_step;
  std::function<void(const Expected<EncodedImages>& result)> on_done;  // on an encode thread
};

struct ServerState {
  explicit ServerState(ServerOptions o);

  // Declaration order is destruction order reversed: the scheduler goes first (its
  // callbacks use the encode pool), the job store (holding open streams) before the HTTP
  // server whose io_context the streams' sockets belong to.
  ServerOptions options;
  Metrics metrics;
  Router router;
  std::unique_ptr<HttpServer> http;
  JobStore jobs;
  std::atomic<bool> ready{false}, draining{false}, attached{false};
  std::vector<GenerationEngine*> engines;  // written once before `attached`
  ThreadPool encode_pool;
  std::unique_ptr<Scheduler> scheduler;   // written once before `attached`
  std::mutex drain_mu, stop_mu;
  std::condition_variable drain_cv;
  bool drain_started = false, stopped = false;
  std::thread drainer;
  std::chrono::system_clock::time_point started_at = std::chrono::system_clock::now();

  EngineInfo info() const;  // of the first engine (all serve the same model)
  GaugeSnapshot gauges() const;

  // 503 (not ready / draining / queue full) or the ticket. Callbacks run on worker or
  // encode threads and must not block.
  Expected<std::shared_ptr<Ticket>> run_generation(const GenerationParams& params, GenerationCallbacks callbacks);
};

void add_sdapi_routes(ServerState& state);
void add_openai_routes(ServerState& state);
void add_job_routes(ServerState& state);
void add_system_routes(ServerState& state);

// Cancels the ticket (reason disconnect) if the client of `exchange` goes away.
void cancel_on_disconnect(const std::shared_ptr<Exchange>& exchange, const std::shared_ptr<Ticket>& ticket);

}  // namespace sd::serving

namespace sd::serving {
// Creates a job record and submits it; `also_on_done` (optional) runs after the record is
// updated. Returns the job id, or 503 when the queue or the job store is full.
Expected<std::string> submit_job(ServerState& state, const GenerationParams& params,
                                 std::function<void(const std::string& job_id, const Expected<EncodedImages>&)> also_on_done = {});
}  // namespace sd::serving
