// run_stage: spawns the virtual users (closed loop) or the arrival scheduler (open loop) as
// coroutines on an io_context run by a few threads, records every request's Sample, and
// reports progress from the calling thread until all requests have ended.
#include "loadtest/load_runner.h"

#include <mutex>
#include <thread>

#include "loadtest/arrivals.h"
#include "loadtest/http_exchange.h"
#include "loadtest/stats.h"

namespace sd::loadtest {

namespace asio = boost::asio;

namespace {

Clock::duration to_duration(double seconds) {
  return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
}

// Thread-safe collection of finished samples plus live counters for the progress line.
class Recorder {
 public:
  explicit Recorder(Clock::time_point start) : start_(start) {}
  double now() const { return std::chrono::duration<double>(Clock::now() - start_).count(); }
  void begin() { in_flight_++; }
  void finish(const RequestResult& r) {
    std::lock_guard<std::mutex> lock(mutex_);
    in_flight_--;
    samples_.push_back(r.sample);
    if (r.sample.ok()) {
      ok_latencies_.push_back(r.sample.latency_s());
      images_ += r.sample.images;
    } else {
      failed_++;
      std::string key = error_key(r.sample);
      if (!examples_.count(key)) examples_[key] = r.detail;
    }
  }
  void record_skipped(double at_s) {
    RequestResult r;
    r.sample.start_s = r.sample.end_s = at_s;
    r.sample.outcome = Outcome::kClientLimit;
    r.detail = "--max-in-flight requests were already in flight";
    in_flight_++;
    finish(r);
  }
  int64_t in_flight() const { return in_flight_.load(); }
  ProgressSnapshot snapshot(const std::string& label) {
    ProgressSnapshot p;
    p.label = label;
    p.elapsed_s = now();
    p.in_flight = in_flight_.load();
    std::vector<double> latencies;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      p.succeeded = static_cast<int64_t>(ok_latencies_.size());
      p.failed = failed_;
      p.images = images_;
      latencies = ok_latencies_;
    }
    if (!latencies.empty()) p.latency_p50_s = median(std::move(latencies));
    return p;
  }
  void move_into(StageResult* out) {
    std::lock_guard<std::mutex> lock(mutex_);
    out->samples = std::move(samples_);
    out->error_examples = std::move(examples_);
  }

 private:
  Clock::time_point start_;
  std::atomic<int64_t> in_flight_{0};
  std::mutex mutex_;
  std::vector<Sample> samples_;
  std::vector<double> ok_latencies_;
  std::map<std::string, std::string> examples_;
  int64_t failed_ = 0, images_ = 0;
};

struct Shared {
  ExchangeContext context;
  const StageSpec* spec;
  Recorder recorder;
  std::atomic<int64_t> next_index{0};
  std::mutex pool_mutex;
  std::vector<std::unique_ptr<Connection>> idle;  // open loop: keep-alive connections to reuse

  Shared(ExchangeContext cx, const StageSpec* s) : context(std::move(cx)), spec(s), recorder(context.stage_start) {}
  bool interrupted() const {
    return context.options->interrupt && context.options->interrupt->load(std::memory_order_relaxed);
  }
  // Closed loop: the index of the next request to send, or false when the stage is over.
  bool take_ticket(int64_t* index) {
    if (interrupted()) return false;
    if (spec->duration_s > 0 && recorder.now() >= spec->duration_s) return false;
    *index = next_index++;
    return spec->requests <= 0 || *index < spec->requests;
  }
};

bool connect_failure(Outcome o) {
  return o == Outcome::kRefused || o == Outcome::kUnreachable || o == Outcome::kConnectTimeout;
}

asio::awaitable<void> closed_loop_user(Shared& sh) {
  Connection connection(co_await asio::this_coro::executor);
  asio::steady_timer pause(co_await asio::this_coro::executor);
  int64_t index = 0;
  while (sh.take_ticket(&index)) {
    sh.recorder.begin();
    RequestResult r;
    double start = sh.recorder.now();
    try {
      r = co_await perform_request(sh.context, connection, index, start);
    } catch (const std::exception& e) {
      r.sample.start_s = start;
      r.sample.end_s = sh.recorder.now();
      r.sample.outcome = Outcome::kConnectionError;
      r.detail = e.what();
      connection.close();
    }
    sh.recorder.finish(r);
    if (connect_failure(r.sample.outcome) && sh.context.options->failure_backoff_s > 0) {
      pause.expires_after(to_duration(sh.context.options->failure_backoff_s));
      boost::system::error_code ignored;
      co_await pause.async_wait(asio::redirect_error(asio::use_awaitable, ignored));
    }
  }
  connection.close();
}

asio::awaitable<void> open_loop_request(Shared& sh, std::unique_ptr<Connection> connection, int64_t index,
                                        double start_s) {
  RequestResult r;
  try {
    r = co_await perform_request(sh.context, *connection, index, start_s);
  } catch (const std::exception& e) {
    r.sample.start_s = start_s;
    r.sample.end_s = sh.recorder.now();
    r.sample.outcome = Outcome::kConnectionError;
    r.detail = e.what();
    connection->close();
  }
  sh.recorder.finish(r);
  if (connection->open) {
    std::lock_guard<std::mutex> lock(sh.pool_mutex);
    sh.idle.push_back(std::move(connection));
  }
}

asio::awaitable<void> open_loop_scheduler(Shared& sh, asio::io_context& io) {
  PoissonArrivals arrivals(sh.spec->rate, sh.context.options->arrival_seed);
  asio::steady_timer timer(co_await asio::this_coro::executor);
  while (true) {
    double at = arrivals.next();
    if (sh.spec->duration_s > 0 && at >= sh.spec->duration_s) break;
    int64_t index = sh.next_index++;
    if (sh.spec->requests > 0 && index >= sh.spec->requests) break;
    timer.expires_at(sh.context.stage_start + to_duration(at));
    boost::system::error_code ignored;
    co_await timer.async_wait(asio::redirect_error(asio::use_awaitable, ignored));
    if (sh.interrupted()) break;
    if (sh.recorder.in_flight() >= sh.context.options->max_in_flight) {
      sh.recorder.record_skipped(at);
      continue;
    }
    std::unique_ptr<Connection> connection;
    {
      std::lock_guard<std::mutex> lock(sh.pool_mutex);
      if (!sh.idle.empty()) {
        connection = std::move(sh.idle.back());
        sh.idle.pop_back();
      }
    }
    if (!connection) connection = std::make_unique<Connection>(asio::make_strand(io));
    sh.recorder.begin();
    auto executor = connection->stream.get_executor();
    asio::co_spawn(executor, open_loop_request(sh, std::move(connection), index, at), asio::detached);
  }
}

}  // namespace

StatusOr<StageResult> run_stage(const ClientOptions& options, const StageSpec& spec, const ProgressFn& progress,
                                double progress_interval_s) {
  if ((spec.users > 0) == (spec.rate > 0)) return InvalidArgument("a stage needs either users > 0 or rate > 0");
  if (spec.duration_s <= 0 && spec.requests <= 0) return InvalidArgument("a stage needs a duration or a request count");
  if (options.timeout_s <= 0 || options.connect_timeout_s <= 0) return InvalidArgument("timeouts must be positive");
  int threads = std::max(1, options.threads);
  asio::io_context io(threads);

  ExchangeContext context;
  context.options = &options;
  {
    asio::ip::tcp::resolver resolver(io);
    boost::system::error_code ec;
    context.endpoints = resolver.resolve(options.url.host, options.url.port, ec);
    if (ec) return Unavailable("cannot resolve '" + options.url.host + "': " + ec.message());
  }
  context.stage_start = Clock::now();
  Shared shared(context, &spec);

  if (spec.users > 0) {
    for (int u = 0; u < spec.users; ++u) asio::co_spawn(asio::make_strand(io), closed_loop_user(shared), asio::detached);
  } else {
    asio::co_spawn(asio::make_strand(io), open_loop_scheduler(shared, io), asio::detached);
  }

  std::atomic<int> running{threads};
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t)
    pool.emplace_back([&] {
      io.run();
      running--;
    });
  // Safety net on top of the per-request deadlines: sending ends by duration (or never for a
  // --requests stage), every request by its deadline, so a stage past both is stuck.
  double hard_stop_s = spec.duration_s > 0 ? spec.duration_s + options.timeout_s + 30 : -1;
  auto interval = to_duration(std::max(0.01, progress_interval_s));
  Clock::time_point last_progress = Clock::now();
  while (running.load() > 0) {
    std::this_thread::sleep_for(std::min(interval, to_duration(0.05)));
    if (progress && Clock::now() - last_progress >= interval) {
      last_progress = Clock::now();
      progress(shared.recorder.snapshot(spec.label));
    }
    if (hard_stop_s > 0 && shared.recorder.now() > hard_stop_s) io.stop();
  }
  for (auto& t : pool) t.join();
  if (progress) progress(shared.recorder.snapshot(spec.label));

  StageResult result;
  result.label = spec.label;
  result.users = spec.users;
  result.rate = spec.rate;
  shared.recorder.move_into(&result);
  double last_end = 0;
  for (const Sample& s : result.samples) last_end = std::max(last_end, s.end_s);
  result.elapsed_s = result.samples.empty() ? shared.recorder.now() : last_end;
  // A stage that ran for its duration lasted at least that long, even if the last answer
  // (open loop: the last arrival) came earlier.
  bool ended_by_requests = spec.requests > 0 && static_cast<int64_t>(result.samples.size()) >= spec.requests;
  if (spec.duration_s > 0 && !shared.interrupted() && !ended_by_requests)
    result.elapsed_s = std::max(result.elapsed_s, spec.duration_s);
  {
    std::lock_guard<std::mutex> lock(shared.pool_mutex);
    for (auto& c : shared.idle) c->close();
    shared.idle.clear();
  }
  return result;
}

}  // namespace sd::loadtest
