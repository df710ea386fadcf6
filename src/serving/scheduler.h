// Step-level continuous batching: one worker thread per device engine keeps a running
// batch; every iteration it admits waiting tasks (begin = text encoding), runs one
// engine.step() per batch_key over all running jobs, and decodes finished ones (finish).
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "pipeline/engine.h"
#include "serving/metrics.h"

namespace sd::serving {

enum class CancelReason { kNone = 0, kClient, kDisconnect, kDrain, kFailed };
const char* cancel_reason_name(CancelReason reason);

// Callbacks from worker threads; called in order (queued*, step*, done) and never
// concurrently for one ticket. They must not block (post work elsewhere).
struct GenerationObserver {
  std::function<void(int position)> on_queued;         // 0 = next to join a batch
  std::function<void(int step, int total)> on_step;    // steps done by all of its images
  std::function<void(StatusOr<GenerationResult>)> on_done;  // exactly once
};

struct SchedulerOptions {
  int max_batch = 8;             // images per batched denoising step (and per task)
  int max_queue = 256;           // tasks waiting to join a batch
  double queue_timeout_s = 300;  // a task that waits longer fails with DEADLINE_EXCEEDED
};

struct ProgressSnapshot {
  int running = 0, waiting = 0;  // tasks
  int step = 0, steps = 0;       // oldest running task's progress
  double seconds_per_step = 0;   // moving average over recent steps
};

class Scheduler;

// One submitted generation. A request with more images than --max-batch is split into
// parts (tasks) with consecutive seeds, which may run on different workers.
class Ticket {
 public:
  // Cancelled between steps (or dropped from the queue); on_done gets CANCELLED.
  void cancel(CancelReason reason);
  bool cancelled() const { return cancel_reason_.load() != 0; }
  bool done() const;
  int queue_position() const { return queue_position_.load(); }  // -1 once running
  int64_t seed() const { return seed_; }  // resolved seed of the first image
  int steps_total() const { return steps_total_; }

 private:
  friend class Scheduler;
  void part_position(int part, int position);
  void part_step(int part, int done);
  void part_done(int part, StatusOr<GenerationResult> result);

  mutable std::mutex mu_;
  GenerationObserver observer_;
  std::vector<std::optional<GenerationResult>> results_;
  std::vector<int> part_steps_, part_positions_;
  int parts_left_ = 0, reported_step_ = 0, steps_total_ = 0;
  bool finished_ = false;
  int64_t seed_ = 0;
  std::atomic<int> cancel_reason_{0};
  std::atomic<int> queue_position_{-1};
  std::function<void(const Status&)> on_finished_;  // scheduler bookkeeping
};

class Scheduler {
 public:
  Scheduler(std::vector<GenerationEngine*> engines, SchedulerOptions options, Metrics* metrics);
  ~Scheduler();  // shutdown()
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  // Queues the request (seed -1 is resolved here). RESOURCE_EXHAUSTED when the queue is
  // full, UNAVAILABLE after stop_accepting().
  StatusOr<std::shared_ptr<Ticket>> submit(GenerationRequest request, GenerationObserver observer);

  void stop_accepting();
  // Waits until no generation is queued or running; false on timeout.
  bool wait_idle(double timeout_s);
  // Cancels everything (reason drain) and joins the workers.
  void shutdown();

  int64_t queue_depth() const;
  int64_t inflight() const { return inflight_.load(); }
  ProgressSnapshot progress() const;
  // device -> bytes, as last read by each worker (engines are driven by one thread).
  std::vector<std::pair<std::string, uint64_t>> device_memory() const;
  // Each worker's images finished and engine events, in --device order.
  std::vector<WorkerStats> workers() const;
  // device -> its reading now (power, clocks, energy counter), once per device (two workers may
  // share one); devices whose backend reads nothing are left out. Called off the worker threads.
  std::vector<std::pair<std::string, DeviceReading>> device_readings() const;
  const std::vector<GenerationEngine*>& engines() const { return engines_; }

 private:
  struct Task;
  struct Worker;
  void worker_loop(size_t index);
  void run_iteration(Worker& worker, std::vector<std::shared_ptr<Task>>& running,
                     std::vector<std::shared_ptr<Task>>& to_begin);
  void release(Worker& worker, const std::vector<std::shared_ptr<Task>>& tasks);
  void finish_tasks(Worker& worker, std::vector<std::shared_ptr<Task>> tasks);

  std::vector<GenerationEngine*> engines_;
  SchedulerOptions options_;
  Metrics* metrics_;
  mutable std::mutex mu_;
  std::condition_variable idle_cv_;
  std::vector<std::unique_ptr<Worker>> workers_;
  std::atomic<int64_t> inflight_{0};
  int64_t waiting_tasks_ = 0;
  bool accepting_ = true;
  std::atomic<bool> stopping_{false};
  double avg_step_s_ = 0;
};

}  // namespace sd::serving
