// Server lifecycle: start (bind, routes), attach engines (ready), drain on SIGTERM (not
// ready, no new work, wait for in-flight work and open responses, stop), plus the shared
// run_generation() (submit to the scheduler, encode off the device thread).
#include "serving/server.h"

#include <cstdio>

#include "serving/server_state.h"

namespace sd::serving {

using Clock = std::chrono::steady_clock;

// ---- ThreadPool ----

ThreadPool::ThreadPool(int threads) {
  for (int i = 0; i < std::max(1, threads); ++i)
    threads_.emplace_back([this] {
      for (;;) {
        std::function<void()> fn;
        {
          std::unique_lock<std::mutex> lock(mu_);
          cv_.wait(lock, [this] { return stop_ || !queue_.empty(); });
          if (queue_.empty()) return;
          fn = std::move(queue_.front());
          queue_.pop_front();
          ++busy_;
        }
        fn();
        std::lock_guard<std::mutex> lock(mu_);
        --busy_;
        if (busy_ == 0 && queue_.empty()) idle_cv_.notify_all();
      }
    });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  for (auto& t : threads_) t.join();
}

void ThreadPool::post(std::function<void()> fn) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    queue_.push_back(std::move(fn));
  }
  cv_.notify_one();
}

bool ThreadPool::wait_idle(double timeout_s) {
  std::unique_lock<std::mutex> lock(mu_);
  return idle_cv_.wait_for(lock, std::chrono::duration<double>(timeout_s), [this] { return busy_ == 0 && queue_.empty(); });
}

// ---- ServerState ----

ServerState::ServerState(ServerOptions o)
    : options(std::move(o)),
      router(RouterOptions{options.api_key, options.cors_origin}),
      jobs(options.job_ttl_s, options.max_jobs),
      encode_pool(options.encode_threads) {}

EngineInfo ServerState::info() const {
  if (!attached.load()) return EngineInfo{};
  return engines.front()->info();
}

GaugeSnapshot ServerState::gauges() const {
  GaugeSnapshot g;
  g.ready = ready.load();
  if (attached.load()) {
    g.queue_depth = scheduler->queue_depth();
    g.inflight_requests = scheduler->inflight();
    g.device_memory = scheduler->device_memory();
    g.workers = scheduler->workers();
    g.device_readings = scheduler->device_readings();
  }
  return g;
}

Expected<std::shared_ptr<Ticket>> ServerState::run_generation(const GenerationParams& params,
                                                               GenerationCallbacks callbacks) {
  const int retry = options.retry_after_s;
  if (draining.load()) return ApiError{503, "draining", "the server is shutting down and accepts no new work", {}, retry};
  if (!ready.load() || !attached.load()) return ApiError{503, "not_ready", "the model is still loading", {}, retry};
  GenerationObserver observer;
  observer.on_queued = std::move(callbacks.on_queued);
  observer.on_step = std::move(callbacks.on_step);
  auto done = std::make_shared<std::function<void(const Expected<EncodedImages>&)>>(std::move(callbacks.on_done));
  observer.on_done = [this, done, retry, format = params.output_format, quality = params.quality](
                         StatusOr<GenerationResult> result) {
    if (!result.ok()) return (*done)(error_from_status(result.status(), retry));
    auto shared = std::make_shared<GenerationResult>(std::move(result).value());
    encode_pool.post([done, shared, format, quality] {
      auto encoded = encode_result(*shared, format, quality);
      if (!encoded.ok()) return (*done)(ApiError{500, "internal", encoded.status().message(), {}, 0});
      (*done)(std::move(encoded).value());
    });
  };
  auto ticket = scheduler->submit(params.request, std::move(observer));
  if (!ticket.ok()) return error_from_status(ticket.status(), retry);
  return ticket.value();
}

void cancel_on_disconnect(const std::shared_ptr<Exchange>& exchange, const std::shared_ptr<Ticket>& ticket) {
  std::weak_ptr<Ticket> weak = ticket;
  exchange->on_close([weak] {
    if (auto t = weak.lock()) t->cancel(CancelReason::kDisconnect);
  });
}

// ---- Server ----

Server::Server(ServerOptions options) : state_(std::make_unique<ServerState>(std::move(options))) {
  add_system_routes(*state_);
  add_sdapi_routes(*state_);
  add_openai_routes(*state_);
  add_job_routes(*state_);
}

Server::~Server() {
  stop();
  if (state_->drainer.joinable()) state_->drainer.join();
}

Status Server::start() {
  ServerState& s = *state_;
  if (s.options.max_batch < 1 || s.options.max_queue < 1 || s.options.queue_timeout_s <= 0)
    return InvalidArgument("max_batch and max_queue must be >= 1 and queue_timeout > 0");
  HttpServerOptions http;
  http.host = s.options.host;
  http.port = s.options.port;
  http.threads = s.options.io_threads;
  http.max_body_bytes = s.options.max_body_bytes;
  http.read_timeout_s = s.options.read_timeout_s;
  http.write_timeout_s = s.options.write_timeout_s;
  http.max_connections = s.options.max_connections;
  http.sse_ping_s = s.options.sse_ping_s;
  ServerState* state = state_.get();
  s.http = std::make_unique<HttpServer>(
      http, [state](const std::shared_ptr<Exchange>& exchange) { state->router.dispatch(exchange); },
      [state](const HttpRequest& request, const std::string& api, int status, double seconds) {
        state->metrics.record_request(api, status, seconds);
        if (state->options.log_requests)
          std::fprintf(stderr, "%s %s %d %.1fms\n", request.method.empty() ? "-" : request.method.c_str(),
                       request.path.empty() ? "-" : request.path.c_str(), status, seconds * 1000.0);
      });
  return s.http->start();
}

void Server::attach_engines(std::vector<GenerationEngine*> engines) {
  ServerState& s = *state_;
  SD_ASSERT(!s.scheduler, "attach_engines called twice");
  SD_ASSERT(!engines.empty(), "attach_engines needs at least one engine");
  s.engines = std::move(engines);
  SchedulerOptions so;
  so.max_batch = s.options.max_batch;
  so.max_queue = s.options.max_queue;
  so.queue_timeout_s = s.options.queue_timeout_s;
  s.scheduler = std::make_unique<Scheduler>(s.engines, so, &s.metrics);
  s.attached = true;
  if (!s.draining.load()) s.ready = true;
}

int Server::port() const { return state_->http ? state_->http->port() : 0; }
bool Server::ready() const { return state_->ready.load(); }

void Server::install_signal_handlers() {
  if (!state_->http) return;
  state_->http->handle_signals([this](int signal) {
    std::fprintf(stderr, "sdserve: signal %d, draining\n", signal);
    begin_drain();
  });
}

void Server::begin_drain() {
  ServerState& s = *state_;
  std::lock_guard<std::mutex> lock(s.drain_mu);
  if (s.drain_started || s.stopped) return;
  s.drain_started = true;
  s.draining = true;
  s.ready = false;
  s.drainer = std::thread([this] { drain_thread(); });
}

void Server::drain_thread() {
  ServerState& s = *state_;
  auto deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(s.options.drain_timeout_s));
  auto left = [&] { return std::max(0.0, std::chrono::duration<double>(deadline - Clock::now()).count()); };
  if (s.attached.load()) {
    s.scheduler->stop_accepting();
    if (!s.scheduler->wait_idle(left())) {
      std::fprintf(stderr, "sdserve: drain timeout, cancelling %lld generations\n",
                   static_cast<long long>(s.scheduler->inflight()));
      s.scheduler->shutdown();
    }
  }
  s.encode_pool.wait_idle(left());
  // Let the last responses and event streams reach their clients.
  while (s.http && s.http->active_exchanges() > 0 && left() > 0)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  stop();
}

int Server::wait() {
  ServerState& s = *state_;
  std::unique_lock<std::mutex> lock(s.drain_mu);
  s.drain_cv.wait(lock, [&] { return s.stopped; });
  return 0;
}

void Server::stop() {
  ServerState& s = *state_;
  std::lock_guard<std::mutex> stop_lock(s.stop_mu);
  {
    std::lock_guard<std::mutex> lock(s.drain_mu);
    if (s.stopped) return;
    s.draining = true;
    s.ready = false;
  }
  if (s.attached.load()) s.scheduler->shutdown();
  s.encode_pool.wait_idle(1.0);
  if (s.http) s.http->stop();
  {
    std::lock_guard<std::mutex> lock(s.drain_mu);
    s.stopped = true;
  }
  s.drain_cv.notify_all();
}

}  // namespace sd::serving
