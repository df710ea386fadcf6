// The continuous-batching scheduler driven directly (no HTTP) with FakeEngines: splitting
// into parts, batching across requests at different steps, batch keys, queue bound,
// queue deadline, cancellation between steps, failures, several workers.
#include <gtest/gtest.h>

#include <future>
#include <thread>

#include "fake_engine.h"
#include "test_client.h"
#include "serving/scheduler.h"

namespace sd::serving {
namespace {

using sd::testing::FakeEngine;
using sd::testing::eventually;

struct Waiter {
  std::promise<StatusOr<GenerationResult>> promise;
  std::future<StatusOr<GenerationResult>> future = promise.get_future();
  std::vector<int> steps, positions;
  std::mutex mu;
  GenerationObserver observer() {
    GenerationObserver o;
    o.on_done = [this](StatusOr<GenerationResult> r) { promise.set_value(std::move(r)); };
    o.on_step = [this](int step, int) {
      std::lock_guard<std::mutex> lock(mu);
      steps.push_back(step);
    };
    o.on_queued = [this](int p) {
      std::lock_guard<std::mutex> lock(mu);
      positions.push_back(p);
    };
    return o;
  }
  StatusOr<GenerationResult> get() {
    EXPECT_EQ(future.wait_for(std::chrono::seconds(30)), std::future_status::ready);
    return future.get();
  }
};

GenerationRequest request(const std::string& prompt, int64_t seed, int steps, int batch = 1, int width = 64) {
  GenerationRequest r;
  r.prompt = prompt;
  r.seed = seed;
  r.steps = steps;
  r.batch_size = batch;
  r.width = width;
  r.height = 64;
  return r;
}

void expect_images(const GenerationResult& result, const GenerationRequest& r) {
  ASSERT_EQ(result.images.size(), static_cast<size_t>(r.batch_size));
  for (int k = 0; k < r.batch_size; ++k) {
    EXPECT_EQ(result.seeds[k], r.seed + k);
    Image want = FakeEngine::expected_image(r, r.seed, k);
    EXPECT_EQ(result.images[k].rgb, want.rgb) << r.prompt << " image " << k;
  }
}

TEST(Scheduler, SplitsLargeRequestsIntoPartsWithConsecutiveSeeds) {
  FakeEngine engine;
  Metrics metrics;
  Scheduler s({&engine}, SchedulerOptions{4, 16, 60}, &metrics);
  Waiter w;
  auto r = request("split me", 100, 3, 10);
  auto ticket = s.submit(r, w.observer());
  ASSERT_TRUE(ticket.ok());
  auto result = w.get();
  ASSERT_TRUE(result.ok()) << result.status().to_string();
  expect_images(*result, r);
  EXPECT_EQ(result->infotexts.size(), 10u);
  EXPECT_LE(engine.max_batch_images(), 4);
  EXPECT_EQ(engine.begun.load(), 3);  // 4 + 4 + 2
  EXPECT_EQ(w.steps, (std::vector<int>{1, 2, 3}));  // step i of n, monotonic, once each
  EXPECT_EQ(s.inflight(), 0);
}

// Two workers on one device (--workers-per-device 2) read it once; a device whose engine reads
// nothing is left out.
TEST(Scheduler, DeviceReadingsOncePerDevice) {
  FakeEngine a("cuda:0"), b("cuda:0"), c("cuda:1"), cpu("cpu");
  DeviceReading ra, rb, rc;
  ra.power_w = 600, rb.power_w = 601, rc.power_w = 90;
  a.set_device_reading(ra), b.set_device_reading(rb), c.set_device_reading(rc);
  Metrics metrics;
  Scheduler s({&a, &b, &c, &cpu}, SchedulerOptions{4, 16, 60}, &metrics);
  const auto readings = s.device_readings();
  ASSERT_EQ(readings.size(), 2u);
  EXPECT_EQ(readings[0].first, "cuda:0");
  EXPECT_EQ(readings[0].second.power_w, 600);  // the first worker's engine
  EXPECT_EQ(readings[1].first, "cuda:1");
  EXPECT_EQ(readings[1].second.power_w, 90);
}

TEST(Scheduler, RequestsWithDifferentStepsShareBatchesAndKeepTheirImages) {
  FakeEngine engine;
  engine.step_delay_ms = 2;
  Metrics metrics;
  Scheduler s({&engine}, SchedulerOptions{16, 64, 60}, &metrics);
  std::vector<std::unique_ptr<Waiter>> waiters;
  std::vector<GenerationRequest> requests;
  for (int i = 0; i < 8; ++i) {
    auto r = request("prompt " + std::to_string(i), 1000 + 17 * i, 3 + i, 1 + i % 3);
    r.cfg_scale = 1.0f + static_cast<float>(i);
    requests.push_back(r);
    waiters.push_back(std::make_unique<Waiter>());
    ASSERT_TRUE(s.submit(r, waiters.back()->observer()).ok());
  }
  for (int i = 0; i < 8; ++i) {
    auto result = waiters[i]->get();
    ASSERT_TRUE(result.ok());
    expect_images(*result, requests[i]);
  }
  bool mixed_totals = false;
  for (const auto& rec : engine.records()) {
    for (size_t j = 1; j < rec.steps_total.size(); ++j) mixed_totals |= rec.steps_total[j] != rec.steps_total[0];
  }
  EXPECT_GT(engine.max_batch_images(), 1);
  EXPECT_TRUE(mixed_totals) << "requests with different step counts never shared a step";
  EXPECT_GT(metrics.batch_observations(), 0u);
}

TEST(Scheduler, NewRequestsJoinARunningBatchBetweenSteps) {
  FakeEngine engine;
  engine.step_delay_ms = 3;
  Metrics metrics;
  Scheduler s({&engine}, SchedulerOptions{8, 8, 60}, &metrics);
  Waiter a, b;
  auto ra = request("long", 1, 40), rb = request("short", 2, 3);
  ASSERT_TRUE(s.submit(ra, a.observer()).ok());
  ASSERT_TRUE(eventually([&] { return engine.steps_run.load() >= 5; }));
  ASSERT_TRUE(s.submit(rb, b.observer()).ok());
  auto result_b = b.get();
  ASSERT_TRUE(result_b.ok());
  expect_images(*result_b, rb);
  EXPECT_EQ(a.future.wait_for(std::chrono::seconds(0)), std::future_status::timeout) << "short request waited for the long one";
  auto result_a = a.get();
  ASSERT_TRUE(result_a.ok());
  expect_images(*result_a, ra);
  bool joined_mid_way = false;
  for (const auto& rec : engine.records())
    if (rec.job_ids.size() == 2 && rec.steps_done[0] != rec.steps_done[1]) joined_mid_way = true;
  EXPECT_TRUE(joined_mid_way);
}

TEST(Scheduler, DifferentResolutionsNeverShareAStep) {
  FakeEngine engine;  // asserts one batch_key per step
  engine.step_delay_ms = 1;
  Metrics metrics;
  Scheduler s({&engine}, SchedulerOptions{8, 8, 60}, &metrics);
  Waiter a, b;
  auto ra = request("a", 1, 5, 1, 64), rb = request("b", 2, 5, 1, 128);
  ASSERT_TRUE(s.submit(ra, a.observer()).ok());
  ASSERT_TRUE(s.submit(rb, b.observer()).ok());
  ASSERT_TRUE(a.get().ok());
  auto result_b = b.get();
  ASSERT_TRUE(result_b.ok());
  expect_images(*result_b, rb);
  for (const auto& rec : engine.records()) EXPECT_EQ(rec.job_ids.size(), 1u);
}

// A job whose first step would wait for the engine's background preparation (a new size) sits
// out while other jobs step, joins once prepared, and steps anyway when nothing else can.
TEST(Scheduler, JobsBeingPreparedSitOutWhileOthersStep) {
  FakeEngine engine;
  engine.step_delay_ms = 5;
  Metrics metrics;
  Scheduler s({&engine}, SchedulerOptions{8, 16, 60}, &metrics);
  Waiter a, b;
  const auto ra = request("running", 1, 150);
  ASSERT_TRUE(s.submit(ra, a.observer()).ok());
  ASSERT_TRUE(eventually([&] { return engine.steps_run.load() >= 3; }));
  engine.preparing_width = 128;
  const auto rb = request("new size", 2, 5, 1, 128);
  ASSERT_TRUE(s.submit(rb, b.observer()).ok());
  ASSERT_TRUE(eventually([&] { return engine.begun.load() == 2; }));
  const int before = engine.steps_run.load();
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  EXPECT_GT(engine.steps_run.load(), before + 5);  // the running job kept stepping
  for (const auto& rec : engine.records()) EXPECT_EQ(rec.job_ids, std::vector<int>{0});  // b never stepped
  engine.preparing_width = 0;  // prepared
  auto got_b = b.get();
  ASSERT_TRUE(got_b.ok()) << got_b.status().to_string();
  expect_images(*got_b, rb);
  auto got_a = a.get();
  ASSERT_TRUE(got_a.ok()) << got_a.status().to_string();
  expect_images(*got_a, ra);

  // Alone, a job being prepared steps anyway (the engine waits inside its step).
  engine.preparing_width = 192;
  Waiter c;
  const auto rc = request("alone", 3, 4, 1, 192);
  ASSERT_TRUE(s.submit(rc, c.observer()).ok());
  auto got_c = c.get();
  ASSERT_TRUE(got_c.ok()) << got_c.status().to_string();
  expect_images(*got_c, rc);
}

TEST(Scheduler, FullQueueIsRejectedAndPositionsAreReported) {
  FakeEngine engine;
  engine.step_delay_ms = 2;
  Metrics metrics;
  Scheduler s({&engine}, SchedulerOptions{1, 2, 60}, &metrics);
  Waiter a, b, c;
  auto ta = s.submit(request("a", 1, 150), a.observer());
  ASSERT_TRUE(ta.ok());
  ASSERT_TRUE(eventually([&] { return engine.steps_run.load() >= 1; }));
  auto tb = s.submit(request("b", 2, 2), b.observer());
  auto tc = s.submit(request("c", 3, 2), c.observer());
  ASSERT_TRUE(tb.ok() && tc.ok());
  EXPECT_EQ(tb.value()->queue_position(), 0);
  EXPECT_EQ(tc.value()->queue_position(), 1);
  EXPECT_EQ(s.queue_depth(), 2);
  auto td = s.submit(request("d", 4, 2), GenerationObserver{});
  ASSERT_FALSE(td.ok());
  EXPECT_EQ(td.status().code(), StatusCode::kResourceExhausted);
  ta.value()->cancel(CancelReason::kClient);
  EXPECT_EQ(a.get().status().code(), StatusCode::kCancelled);
  ASSERT_TRUE(b.get().ok());
  ASSERT_TRUE(c.get().ok());
  std::lock_guard<std::mutex> lock(c.mu);
  EXPECT_FALSE(c.positions.empty());
  EXPECT_EQ(c.positions.back(), 0);  // moved up when b started
}

TEST(Scheduler, QueueDeadline) {
  FakeEngine engine;
  engine.step_delay_ms = 5;
  Metrics metrics;
  Scheduler s({&engine}, SchedulerOptions{1, 4, 0.05}, &metrics);
  Waiter a, b;
  auto ta = s.submit(request("a", 1, 40), a.observer());
  ASSERT_TRUE(ta.ok());
  ASSERT_TRUE(eventually([&] { return engine.steps_run.load() >= 1; }));
  ASSERT_TRUE(s.submit(request("b", 2, 2), b.observer()).ok());
  auto rb = b.get();
  EXPECT_EQ(rb.status().code(), StatusCode::kDeadlineExceeded);
  EXPECT_EQ(metrics.cancelled("deadline"), 1u);
  ta.value()->cancel(CancelReason::kClient);
  (void)a.get();
}

TEST(Scheduler, CancelStopsTheJobAtTheNextStep) {
  FakeEngine engine;
  engine.step_delay_ms = 2;
  Metrics metrics;
  Scheduler s({&engine}, SchedulerOptions{8, 8, 60}, &metrics);
  Waiter a, other;
  auto ta = s.submit(request("cancel me", 1, 150), a.observer());
  auto tother = s.submit(request("keep me", 2, 20), other.observer());
  ASSERT_TRUE(ta.ok() && tother.ok());
  ASSERT_TRUE(eventually([&] { return engine.steps_run.load() >= 6; }));
  ta.value()->cancel(CancelReason::kDisconnect);
  auto ra = a.get();
  EXPECT_EQ(ra.status().code(), StatusCode::kCancelled);
  int steps_at_cancel = engine.steps_run.load();
  auto ro = other.get();
  ASSERT_TRUE(ro.ok());
  expect_images(*ro, request("keep me", 2, 20));
  EXPECT_LT(steps_at_cancel, 150 + 20);
  EXPECT_EQ(metrics.cancelled("disconnect"), 1u);
  EXPECT_TRUE(ta.value()->done());
}

TEST(Scheduler, EngineFailuresFailOnlyTheirRequest) {
  FakeEngine engine;
  Metrics metrics;
  Scheduler s({&engine}, SchedulerOptions{8, 8, 60}, &metrics);
  Waiter bad, good;
  ASSERT_TRUE(s.submit(request("fail in begin", 1, 3), bad.observer()).ok());
  ASSERT_TRUE(s.submit(request("fine", 2, 3), good.observer()).ok());
  EXPECT_EQ(bad.get().status().code(), StatusCode::kInternal);
  ASSERT_TRUE(good.get().ok());
  Waiter step_fail;
  ASSERT_TRUE(s.submit(request("fail in step", 3, 5), step_fail.observer()).ok());
  EXPECT_EQ(step_fail.get().status().code(), StatusCode::kInternal);
  Waiter after;
  ASSERT_TRUE(s.submit(request("after", 4, 2), after.observer()).ok());
  ASSERT_TRUE(after.get().ok());  // the worker survived
}

TEST(Scheduler, NewWorkGoesToTheLeastLoadedWorker) {
  FakeEngine e0("cuda:0"), e1("cuda:1");
  e0.step_delay_ms = 2;
  e1.step_delay_ms = 2;
  Metrics metrics;
  Scheduler s({&e0, &e1}, SchedulerOptions{4, 16, 60}, &metrics);
  std::vector<std::unique_ptr<Waiter>> waiters;
  for (int i = 0; i < 4; ++i) {
    waiters.push_back(std::make_unique<Waiter>());
    ASSERT_TRUE(s.submit(request("w" + std::to_string(i), i, 10, 2), waiters.back()->observer()).ok());
  }
  for (auto& w : waiters) ASSERT_TRUE(w->get().ok());
  EXPECT_GT(e0.begun.load(), 0);
  EXPECT_GT(e1.begun.load(), 0);
  EXPECT_EQ(e0.begun.load() + e1.begun.load(), 4);
  EXPECT_EQ(s.device_memory().size(), 2u);
  const auto done = s.workers();
  ASSERT_EQ(done.size(), 2u);
  EXPECT_EQ(done[0].device, "cuda:0");
  EXPECT_EQ(done[1].index, 1);
  EXPECT_EQ(done[0].images + done[1].images, 8u);
  EXPECT_EQ(done[0].images, static_cast<uint64_t>(2 * e0.begun.load()));
  EXPECT_GT(done[1].images, 0u);
}

TEST(Scheduler, ShutdownCancelsEverythingAndRejectsNewWork) {
  FakeEngine engine;
  engine.step_delay_ms = 2;
  Metrics metrics;
  auto s = std::make_unique<Scheduler>(std::vector<GenerationEngine*>{&engine}, SchedulerOptions{1, 8, 60}, &metrics);
  Waiter a, b;
  ASSERT_TRUE(s->submit(request("a", 1, 150), a.observer()).ok());
  ASSERT_TRUE(s->submit(request("b", 2, 150), b.observer()).ok());
  ASSERT_TRUE(eventually([&] { return engine.steps_run.load() >= 1; }));
  s->stop_accepting();
  EXPECT_EQ(s->submit(request("c", 3, 1), GenerationObserver{}).status().code(), StatusCode::kUnavailable);
  s->shutdown();
  EXPECT_EQ(a.get().status().code(), StatusCode::kCancelled);
  EXPECT_EQ(b.get().status().code(), StatusCode::kCancelled);
  EXPECT_TRUE(s->wait_idle(1.0));
  EXPECT_EQ(metrics.cancelled("drain"), 2u);
}

}  // namespace
}  // namespace sd::serving
