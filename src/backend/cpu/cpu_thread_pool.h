// The CPU backend's worker threads: a fixed pool that runs the items of one parallel loop
// on the caller and its workers. Idle workers spin for a few microseconds, then sleep on a
// futex, so back-to-back ops start fast and an idle backend burns no CPU (unlike OpenMP's).
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace sd::cpu {

class ThreadPool {
 public:
  // `threads` counts the calling thread: threads - 1 workers are started.
  explicit ThreadPool(int threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int threads() const { return threads_; }
  // Runs fn(item, worker) for every item in [0, n) and returns when all are done; `worker`
  // in [0, threads()) identifies the executing thread (for per-thread scratch). Items are
  // handed out in increasing order. A call made while the pool is busy (from another thread,
  // or from inside an item) runs serially on the caller as worker 0.
  void run(int64_t n, const std::function<void(int64_t item, int worker)>& fn);

 private:
  struct Job {
    const std::function<void(int64_t, int)>* fn = nullptr;
    int64_t size = 0;
    std::atomic<int64_t> next{0};
    std::atomic<int64_t> done{0};
  };
  static void work_on(Job& job, int worker);
  void worker_loop(int worker);

  int threads_;
  std::vector<std::thread> workers_;
  std::mutex submit_mutex_;       // one parallel loop at a time
  std::mutex job_mutex_;          // guards current_
  std::shared_ptr<Job> current_;  // the latest job (kept alive by the workers holding it)
  std::atomic<uint32_t> generation_{0};
  std::atomic<bool> stop_{false};
};

}  // namespace sd::cpu
