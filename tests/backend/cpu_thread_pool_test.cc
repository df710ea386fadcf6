// The CPU backend's thread pool: every item runs exactly once, worker ids stay in range,
// nested and concurrent submissions fall back to serial, and quick create/destroy cycles
// (workers that never started) do not hang.
#include <gtest/gtest.h>

#include <atomic>
#include <thread>
#include <vector>

#include "backend/cpu/cpu_thread_pool.h"

namespace sd::cpu {
namespace {

TEST(ThreadPool, RunsEveryItemOnceWithValidWorkerIds) {
  ThreadPool pool(3);
  for (int64_t n : {1, 2, 3, 7, 100, 1000}) {
    std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
    std::atomic<bool> bad_worker{false};
    pool.run(n, [&](int64_t i, int w) {
      hits[static_cast<size_t>(i)].fetch_add(1);
      if (w < 0 || w >= 3) bad_worker = true;
    });
    for (int64_t i = 0; i < n; ++i) EXPECT_EQ(hits[static_cast<size_t>(i)].load(), 1) << n << " " << i;
    EXPECT_FALSE(bad_worker);
  }
}

TEST(ThreadPool, ManyBackToBackRunsAndNestedRuns) {
  ThreadPool pool(2);
  std::atomic<int64_t> sum{0};
  for (int rep = 0; rep < 2000; ++rep) {
    pool.run(4, [&](int64_t i, int) {
      pool.run(3, [&](int64_t j, int w) {  // nested: serial on the caller as worker 0
        EXPECT_EQ(w, 0);
        sum.fetch_add(i * 3 + j);
      });
    });
  }
  EXPECT_EQ(sum.load(), 2000 * 66);
}

TEST(ThreadPool, ConcurrentSubmittersAllComplete) {
  ThreadPool pool(2);
  std::atomic<int64_t> total{0};
  std::vector<std::thread> callers;
  for (int c = 0; c < 3; ++c) {
    callers.emplace_back([&] {
      for (int rep = 0; rep < 300; ++rep) pool.run(5, [&](int64_t, int) { total.fetch_add(1); });
    });
  }
  for (std::thread& t : callers) t.join();
  EXPECT_EQ(total.load(), 3 * 300 * 5);
}

TEST(ThreadPool, CreateAndDestroyQuickly) {
  for (int i = 0; i < 200; ++i) {
    ThreadPool pool(4);
    if (i % 2) pool.run(8, [](int64_t, int) {});
  }
}

}  // namespace
}  // namespace sd::cpu
