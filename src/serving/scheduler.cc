// Worker loop of the continuous batcher and the Ticket bookkeeping that merges a split
// request's parts back into one GenerationResult. Engine errors (Status or a thrown
// sd::Error) fail only the jobs of the batch they happened in.
#include "serving/scheduler.h"

#include <algorithm>
#include <map>
#include <random>

namespace sd::serving {

using Clock = std::chrono::steady_clock;

const char* cancel_reason_name(CancelReason reason) {
  switch (reason) {
    case CancelReason::kNone: return "none";
    case CancelReason::kClient: return "client";
    case CancelReason::kDisconnect: return "disconnect";
    case CancelReason::kDrain: return "drain";
    case CancelReason::kFailed: return "failed";
  }
  return "unknown";
}

struct Scheduler::Task {
  std::shared_ptr<Ticket> ticket;
  int part = 0;
  GenerationRequest request;
  int images = 0;
  Clock::time_point enqueued, deadline;
  std::unique_ptr<Job> job;
  int last_position = -1;
};

struct Scheduler::Worker {
  GenerationEngine* engine = nullptr;
  std::thread thread;
  std::condition_variable cv;
  std::deque<std::shared_ptr<Task>> waiting;
  int waiting_images = 0, running_images = 0, running_tasks = 0;
  int step = 0, steps = 0;  // progress of the oldest running task
  std::string device;
  uint64_t memory_bytes = 0;
  uint64_t images_done = 0;  // images this worker finished (decoded and returned)
  EngineEvents events;       // its engine's, as last read by the worker
  int load() const { return waiting_images + running_images; }
};

// ---- Ticket ----

void Ticket::cancel(CancelReason reason) {
  int none = 0;
  cancel_reason_.compare_exchange_strong(none, static_cast<int>(reason));
}

bool Ticket::done() const {
  std::lock_guard<std::mutex> lock(mu_);
  return finished_;
}

void Ticket::part_position(int part, int position) {
  std::lock_guard<std::mutex> lock(mu_);
  if (finished_) return;
  part_positions_[part] = position;
  int best = -1;
  for (int p : part_positions_)
    if (p >= 0 && (best < 0 || p < best)) best = p;
  if (best == queue_position_.load()) return;
  queue_position_ = best;
  if (best >= 0 && observer_.on_queued) observer_.on_queued(best);
}

void Ticket::part_step(int part, int done) {
  std::lock_guard<std::mutex> lock(mu_);
  if (finished_) return;
  part_steps_[part] = done;
  int least = *std::min_element(part_steps_.begin(), part_steps_.end());
  if (least > reported_step_) {
    reported_step_ = least;
    if (observer_.on_step) observer_.on_step(least, steps_total_);
  }
}

void Ticket::part_done(int part, StatusOr<GenerationResult> result) {
  std::lock_guard<std::mutex> lock(mu_);
  if (finished_) return;
  if (!result.ok()) {
    finished_ = true;
    cancel(CancelReason::kFailed);  // the other parts stop at their next step
    if (on_finished_) on_finished_(result.status());
    if (observer_.on_done) observer_.on_done(std::move(result));
    observer_ = {};
    return;
  }
  results_[part] = std::move(result).value();
  if (--parts_left_ > 0) return;
  finished_ = true;
  GenerationResult merged;
  for (auto& r : results_) {
    for (auto& image : r->images) merged.images.push_back(std::move(image));
    merged.seeds.insert(merged.seeds.end(), r->seeds.begin(), r->seeds.end());
    merged.infotexts.insert(merged.infotexts.end(), r->infotexts.begin(), r->infotexts.end());
    merged.seconds_text = std::max(merged.seconds_text, r->seconds_text);
    merged.seconds_denoise = std::max(merged.seconds_denoise, r->seconds_denoise);
    merged.seconds_decode = std::max(merged.seconds_decode, r->seconds_decode);
  }
  merged.infotext = results_[0]->infotext;
  if (results_.size() == 1) merged.final_latents = std::move(results_[0]->final_latents);
  results_.clear();
  if (on_finished_) on_finished_(Status::Ok());
  if (observer_.on_done) observer_.on_done(std::move(merged));
  observer_ = {};
}

// ---- Scheduler ----

Scheduler::Scheduler(std::vector<GenerationEngine*> engines, SchedulerOptions options, Metrics* metrics)
    : engines_(std::move(engines)), options_(options), metrics_(metrics) {
  SD_ASSERT(!engines_.empty(), "scheduler needs at least one engine");
  SD_ASSERT(options_.max_batch >= 1 && options_.max_queue >= 1);
  for (auto* engine : engines_) {
    auto worker = std::make_unique<Worker>();
    worker->engine = engine;
    worker->device = engine->info().device;
    worker->memory_bytes = engine->device_memory_bytes();
    workers_.push_back(std::move(worker));
  }
  for (size_t i = 0; i < workers_.size(); ++i) workers_[i]->thread = std::thread([this, i] { worker_loop(i); });
}

Scheduler::~Scheduler() { shutdown(); }

StatusOr<std::shared_ptr<Ticket>> Scheduler::submit(GenerationRequest request, GenerationObserver observer) {
  if (request.batch_size < 1) return InvalidArgument("batch_size must be at least 1");
  if (request.seed == -1) {
    static std::mutex rng_mu;
    static std::mt19937_64 rng{std::random_device{}()};
    std::lock_guard<std::mutex> lock(rng_mu);
    request.seed = static_cast<int64_t>(rng() % 4294967295ull);
  }
  const int parts = (request.batch_size + options_.max_batch - 1) / options_.max_batch;
  auto ticket = std::make_shared<Ticket>();
  ticket->observer_ = std::move(observer);
  ticket->results_.resize(parts);
  ticket->part_steps_.assign(parts, 0);
  ticket->part_positions_.assign(parts, -1);
  ticket->parts_left_ = parts;
  ticket->steps_total_ = request.steps;
  ticket->seed_ = request.seed;
  ticket->on_finished_ = [this, metrics = metrics_, ticket_ptr = ticket.get()](const Status& status) {
    if (status.code() == StatusCode::kCancelled) {
      auto reason = static_cast<CancelReason>(ticket_ptr->cancel_reason_.load());
      if (metrics && reason != CancelReason::kFailed) metrics->count_cancelled(cancel_reason_name(reason));
    } else if (status.code() == StatusCode::kDeadlineExceeded && metrics) {
      metrics->count_cancelled("deadline");
    }
    std::lock_guard<std::mutex> lock(mu_);
    --inflight_;
    idle_cv_.notify_all();
  };

  std::lock_guard<std::mutex> lock(mu_);
  if (!accepting_ || stopping_) return Unavailable("the server is draining and accepts no new work");
  if (waiting_tasks_ + parts > options_.max_queue)
    return ResourceExhausted("the queue is full (" + std::to_string(waiting_tasks_) + " waiting, limit " +
                             std::to_string(options_.max_queue) + ")");
  auto now = Clock::now();
  auto deadline = now + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(options_.queue_timeout_s));
  for (int p = 0; p < parts; ++p) {
    auto task = std::make_shared<Task>();
    task->ticket = ticket;
    task->part = p;
    task->request = request;
    int offset = p * options_.max_batch;
    task->images = std::min(options_.max_batch, request.batch_size - offset);
    task->request.batch_size = task->images;
    task->request.seed = request.seed + offset;
    task->enqueued = now;
    task->deadline = deadline;
    // Least-loaded worker (images waiting + running), ties to the lowest index.
    Worker* best = workers_[0].get();
    for (auto& w : workers_)
      if (w->load() < best->load()) best = w.get();
    task->last_position = static_cast<int>(best->waiting.size());
    ticket->part_positions_[p] = task->last_position;
    best->waiting.push_back(task);
    best->waiting_images += task->images;
    best->cv.notify_one();
  }
  ticket->queue_position_ = *std::min_element(ticket->part_positions_.begin(), ticket->part_positions_.end());
  waiting_tasks_ += parts;
  ++inflight_;
  return ticket;
}

void Scheduler::stop_accepting() {
  std::lock_guard<std::mutex> lock(mu_);
  accepting_ = false;
}

bool Scheduler::wait_idle(double timeout_s) {
  std::unique_lock<std::mutex> lock(mu_);
  return idle_cv_.wait_for(lock, std::chrono::duration<double>(timeout_s), [this] { return inflight_.load() == 0; });
}

void Scheduler::shutdown() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_ && workers_.empty()) return;
    stopping_ = true;
    accepting_ = false;
    for (auto& w : workers_) {
      for (auto& t : w->waiting) t->ticket->cancel(CancelReason::kDrain);
      w->cv.notify_all();
    }
  }
  for (auto& w : workers_)
    if (w->thread.joinable()) w->thread.join();
}

int64_t Scheduler::queue_depth() const {
  std::lock_guard<std::mutex> lock(mu_);
  return waiting_tasks_;
}

ProgressSnapshot Scheduler::progress() const {
  std::lock_guard<std::mutex> lock(mu_);
  ProgressSnapshot s;
  for (const auto& w : workers_) {
    s.running += w->running_tasks;
    s.waiting += static_cast<int>(w->waiting.size());
    if (s.steps == 0 && w->steps > 0) {
      s.step = w->step;
      s.steps = w->steps;
    }
  }
  s.seconds_per_step = avg_step_s_;
  return s;
}

std::vector<WorkerStats> Scheduler::workers() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<WorkerStats> out;
  for (size_t i = 0; i < workers_.size(); ++i)
    out.push_back({static_cast<int>(i), workers_[i]->device, workers_[i]->images_done, workers_[i]->events});
  return out;
}

std::vector<std::pair<std::string, uint64_t>> Scheduler::device_memory() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<std::pair<std::string, uint64_t>> out;
  for (const auto& w : workers_) out.emplace_back(w->device, w->memory_bytes);
  return out;
}

std::vector<std::pair<std::string, DeviceReading>> Scheduler::device_readings() const {
  std::vector<std::pair<std::string, GenerationEngine*>> devices;  // the first engine of each device
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& w : workers_) {
      const bool seen = std::any_of(devices.begin(), devices.end(), [&](const auto& d) { return d.first == w->device; });
      if (!seen) devices.emplace_back(w->device, w->engine);
    }
  }
  std::vector<std::pair<std::string, DeviceReading>> out;
  for (const auto& [device, engine] : devices)  // NVML reads, outside the lock
    if (auto r = engine->device_reading()) out.emplace_back(device, *r);
  return out;
}

void Scheduler::release(Worker& worker, const std::vector<std::shared_ptr<Task>>& tasks) {
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& t : tasks) {
    worker.running_images -= t->images;
    --worker.running_tasks;
  }
}

void Scheduler::worker_loop(size_t index) {
  Worker& worker = *workers_[index];
  std::vector<std::shared_ptr<Task>> running;
  for (;;) {
    std::vector<std::shared_ptr<Task>> to_begin, dropped, expired;
    std::vector<std::pair<std::shared_ptr<Task>, int>> moved;
    bool exit_now = false;
    {
      std::unique_lock<std::mutex> lock(mu_);
      for (;;) {
        auto now = Clock::now();
        size_t before = worker.waiting.size();
        for (auto it = worker.waiting.begin(); it != worker.waiting.end();) {
          auto& t = *it;
          bool cancelled = t->ticket->cancelled() || stopping_;
          if (cancelled || now >= t->deadline) {
            (cancelled ? dropped : expired).push_back(t);
            worker.waiting_images -= t->images;
            it = worker.waiting.erase(it);
          } else {
            ++it;
          }
        }
        // Admit tasks while the running batch has room (always at least one task).
        while (!worker.waiting.empty()) {
          auto& t = worker.waiting.front();
          if ((!running.empty() || !to_begin.empty()) && worker.running_images + t->images > options_.max_batch) break;
          if (metrics_) metrics_->observe_queue_wait(std::chrono::duration<double>(now - t->enqueued).count());
          worker.waiting_images -= t->images;
          worker.running_images += t->images;
          ++worker.running_tasks;
          to_begin.push_back(t);
          worker.waiting.pop_front();
        }
        waiting_tasks_ -= static_cast<int64_t>(before - worker.waiting.size());
        if (before != worker.waiting.size()) {
          for (size_t i = 0; i < worker.waiting.size(); ++i) {
            auto& t = worker.waiting[i];
            if (t->last_position != static_cast<int>(i)) {
              t->last_position = static_cast<int>(i);
              moved.emplace_back(t, static_cast<int>(i));
            }
          }
        }
        if (!to_begin.empty() || !running.empty() || !dropped.empty() || !expired.empty()) break;
        if (stopping_) {
          exit_now = true;
          break;
        }
        worker.cv.wait(lock);
      }
    }
    for (auto& t : dropped) t->ticket->part_done(t->part, Cancelled("the generation was cancelled while queued"));
    for (auto& t : expired)
      t->ticket->part_done(t->part, DeadlineExceeded("the request waited longer than the queue timeout of " +
                                                     std::to_string(static_cast<int>(options_.queue_timeout_s)) +
                                                     " s"));
    for (auto& [t, position] : moved) t->ticket->part_position(t->part, position);
    for (auto& t : to_begin) t->ticket->part_position(t->part, -1);
    if (exit_now) return;
    run_iteration(worker, running, to_begin);
  }
}

namespace {
template <typename F>
Status guarded(F&& fn) {
  try {
    return fn();
  } catch (const Error& e) {
    return e.status();
  } catch (const std::exception& e) {
    return Internal(std::string("engine failure: ") + e.what());
  } catch (...) {
    return Internal("engine failure");
  }
}
}  // namespace

void Scheduler::run_iteration(Worker& worker, std::vector<std::shared_ptr<Task>>& running,
                              std::vector<std::shared_ptr<Task>>& to_begin) {
  GenerationEngine& engine = *worker.engine;
  std::vector<std::shared_ptr<Task>> gone;
  // 1. Text encoding and noise for newly admitted tasks; they join this very step.
  for (auto& t : to_begin) {
    if (t->ticket->cancelled()) {
      t->ticket->part_done(t->part, Cancelled("the generation was cancelled"));
      gone.push_back(t);
      continue;
    }
    Status status = guarded([&]() -> Status {
      auto job = engine.begin(t->request);
      if (!job.ok()) return job.status();
      t->job = std::move(job).value();
      return Status::Ok();
    });
    if (!status.ok()) {
      t->ticket->part_done(t->part, status);
      gone.push_back(t);
      continue;
    }
    running.push_back(t);
  }
  // 2. Cancelled jobs leave between steps.
  for (auto it = running.begin(); it != running.end();) {
    if (stopping_) (*it)->ticket->cancel(CancelReason::kDrain);
    if ((*it)->ticket->cancelled()) {
      (*it)->ticket->part_done((*it)->part, Cancelled("the generation was cancelled"));
      gone.push_back(*it);
      it = running.erase(it);
    } else {
      ++it;
    }
  }
  // 3. One batched step per batch_key over every unfinished job. A job whose first step would
  // wait for one-time preparation (a size met for the first time) sits out while others can
  // step; when nothing else can, it steps (and waits) anyway.
  std::vector<std::shared_ptr<Task>> can_step;
  for (auto& t : running)
    if (!t->job->finished() && !engine.preparing(*t->job)) can_step.push_back(t);
  if (can_step.empty()) {
    for (auto& t : running)
      if (!t->job->finished()) can_step.push_back(t);
  }
  std::map<std::string, std::vector<std::shared_ptr<Task>>> groups;
  for (auto& t : can_step) groups[t->job->batch_key()].push_back(t);
  for (auto& [key, tasks] : groups) {
    std::vector<Job*> jobs;
    int images = 0;
    for (auto& t : tasks) {
      jobs.push_back(t->job.get());
      images += t->images;
    }
    auto start = Clock::now();
    Status status = guarded([&] { return engine.step(jobs); });
    double seconds = std::chrono::duration<double>(Clock::now() - start).count();
    if (metrics_) {
      metrics_->observe_step(seconds);
      metrics_->observe_batch_size(images);
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      avg_step_s_ = avg_step_s_ == 0 ? seconds : 0.9 * avg_step_s_ + 0.1 * seconds;
    }
    for (auto& t : tasks) {
      if (!status.ok()) {
        t->ticket->part_done(t->part, status);
        gone.push_back(t);
        running.erase(std::find(running.begin(), running.end(), t));
      } else {
        t->ticket->part_step(t->part, t->job->steps_done());
      }
    }
  }
  // 4. Finished jobs leave for a batched decode.
  std::vector<std::shared_ptr<Task>> finished;
  for (auto it = running.begin(); it != running.end();) {
    if ((*it)->job->finished()) {
      finished.push_back(*it);
      it = running.erase(it);
    } else {
      ++it;
    }
  }
  size_t memory = engine.device_memory_bytes();
  const EngineEvents events = engine.events();
  {
    std::lock_guard<std::mutex> lock(mu_);
    worker.memory_bytes = memory;
    worker.events = events;
    worker.step = running.empty() ? 0 : running.front()->job->steps_done();
    worker.steps = running.empty() ? 0 : running.front()->job->steps_total();
  }
  if (!finished.empty()) finish_tasks(worker, finished);
  gone.insert(gone.end(), finished.begin(), finished.end());
  release(worker, gone);
}

void Scheduler::finish_tasks(Worker& worker, std::vector<std::shared_ptr<Task>> tasks) {
  std::map<std::string, std::vector<std::shared_ptr<Task>>> groups;
  for (auto& t : tasks) groups[t->job->batch_key()].push_back(t);
  for (auto& [key, group] : groups) {
    std::vector<Job*> jobs;
    for (auto& t : group) jobs.push_back(t->job.get());
    std::vector<GenerationResult> results;
    Status status = guarded([&]() -> Status {
      auto r = worker.engine->finish(jobs);
      if (!r.ok()) return r.status();
      results = std::move(r).value();
      if (results.size() != jobs.size()) return Internal("engine returned a wrong number of results");
      return Status::Ok();
    });
    for (size_t i = 0; i < group.size(); ++i) {
      auto& t = group[i];
      t->job.reset();
      if (!status.ok()) {
        t->ticket->part_done(t->part, status);
        continue;
      }
      if (metrics_) metrics_->add_images(static_cast<int64_t>(results[i].images.size()));
      {
        std::lock_guard<std::mutex> lock(mu_);
        worker.images_done += results[i].images.size();
      }
      t->ticket->part_done(t->part, std::move(results[i]));
    }
  }
}

}  // namespace sd::serving
