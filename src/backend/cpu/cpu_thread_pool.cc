// ThreadPool: publish a job (generation counter + shared job record), let the caller and
// the woken workers pull items from an atomic counter, wait for the done count. Waiting is
// a short spin followed by std::atomic::wait (a futex on Linux).
#include "backend/cpu/cpu_thread_pool.h"

#include <chrono>

namespace sd::cpu {
namespace {

// How long a waiting thread spins before it sleeps: long enough to bridge the gap between
// consecutive ops, short enough not to steal a core from other work.
constexpr auto kSpinTime = std::chrono::microseconds(50);

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

// Spins until pred() holds or kSpinTime passes; returns pred().
template <typename Pred>
bool spin_until(Pred&& pred) {
  const auto deadline = std::chrono::steady_clock::now() + kSpinTime;
  for (int i = 0;; ++i) {
    if (pred()) return true;
    cpu_relax();
    if ((i & 63) == 63 && std::chrono::steady_clock::now() > deadline) return pred();
  }
}

}  // namespace

ThreadPool::ThreadPool(int threads) : threads_(threads < 1 ? 1 : threads) {
  workers_.reserve(static_cast<size_t>(threads_ - 1));
  for (int w = 1; w < threads_; ++w) workers_.emplace_back([this, w] { worker_loop(w); });
}

ThreadPool::~ThreadPool() {
  stop_.store(true);
  generation_.fetch_add(1);
  generation_.notify_all();
  for (std::thread& t : workers_) t.join();
}

void ThreadPool::work_on(Job& job, int worker) {
  for (;;) {
    const int64_t item = job.next.fetch_add(1);
    if (item >= job.size) return;
    (*job.fn)(item, worker);
    if (job.done.fetch_add(1) + 1 == job.size) job.done.notify_all();
  }
}

void ThreadPool::worker_loop(int worker) {
  // Generation 0 is the pool's start; a worker that starts late still sees every later
  // generation (including the destructor's) as new.
  uint32_t seen = 0;
  for (;;) {
    if (!spin_until([&] { return generation_.load(std::memory_order_acquire) != seen; })) {
      generation_.wait(seen);
    }
    seen = generation_.load(std::memory_order_acquire);
    if (stop_.load()) return;
    std::shared_ptr<Job> job;
    {
      std::lock_guard<std::mutex> lock(job_mutex_);
      job = current_;
    }
    // A late worker may find an already finished job: next >= size, so it does nothing.
    if (job) work_on(*job, worker);
  }
}

void ThreadPool::run(int64_t n, const std::function<void(int64_t item, int worker)>& fn) {
  if (n <= 0) return;
  std::unique_lock<std::mutex> submit(submit_mutex_, std::try_to_lock);
  if (threads_ == 1 || n == 1 || !submit.owns_lock()) {
    for (int64_t i = 0; i < n; ++i) fn(i, 0);
    return;
  }
  auto job = std::make_shared<Job>();
  job->fn = &fn;
  job->size = n;
  {
    std::lock_guard<std::mutex> lock(job_mutex_);
    current_ = job;
  }
  generation_.fetch_add(1, std::memory_order_release);
  generation_.notify_all();
  work_on(*job, 0);
  // Every item has been claimed; wait for the ones still running on workers. fn is only
  // called for claimed items, so once done == n no worker touches fn again.
  int64_t done = job->done.load();
  while (done < n) {
    if (!spin_until([&] { return job->done.load(std::memory_order_acquire) >= n; })) job->done.wait(done);
    done = job->done.load(std::memory_order_acquire);
  }
}

}  // namespace sd::cpu
