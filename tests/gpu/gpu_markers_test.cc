// GPU tests of the profiling and pipelining hooks: CUDA-event marks (ordered, reset by
// marks_elapsed_ms), hold_queue delaying the stream, wait_previous_step's one step in flight, and
// ProfilingBackend on the CUDA backend timing ops with device marks, results unchanged.
#include <gtest/gtest.h>

#include <chrono>
#include <random>

#include "backend/profiling_backend.h"
#include "gpu_test_util.h"

namespace sd {
namespace {

using testing::gpu_backend;

TEST(GpuMarkers, MarksAreOrderedAndHoldDelaysTheStream) {
  SD_REQUIRE_GPU();
  Backend& be = gpu_backend(DType::kF16);
  const Tensor x = be.upload(uniform_random_host({2, 64, 64, 320}, 1));
  ASSERT_TRUE(be.synchronize().ok());
  EXPECT_EQ(be.mark(), 0);
  for (int i = 0; i < 20; ++i) (void)be.add(x, x);
  EXPECT_EQ(be.mark(), 1);
  be.hold_queue(20.0);
  EXPECT_EQ(be.mark(), 2);
  auto t = be.marks_elapsed_ms();
  ASSERT_TRUE(t.ok()) << t.status().to_string();
  ASSERT_EQ(t->size(), 3u);
  EXPECT_EQ((*t)[0], 0.0);
  EXPECT_GT((*t)[1], 0.0);                    // 20 adds of 2.6 MB each take some time
  EXPECT_GE((*t)[2] - (*t)[1], 15.0);         // the 20 ms hold sits between marks 1 and 2
  EXPECT_EQ(be.mark(), 0);                    // indices restart after marks_elapsed_ms()
  ASSERT_TRUE(be.marks_elapsed_ms().ok());
}

// wait_previous_step keeps at most one step in flight: it returns at once while only the current
// step is queued, and the next call waits for that step (here a 60 ms hold), not for the one
// queued after it; the result of queued work is what a synchronized run gives.
TEST(GpuMarkers, WaitPreviousStepKeepsOneStepInFlight) {
  SD_REQUIRE_GPU();
  Backend& be = gpu_backend(DType::kF16);
  const Tensor x = be.upload(uniform_random_host({1, 16, 16, 64}, 5));
  // The add's output block comes from the allocator's cache below: a cudaMalloc there would wait
  // for the held queue (device allocation synchronizes implicitly) and hide what is measured.
  { const Tensor warm = be.add(x, x); }
  ASSERT_TRUE(be.synchronize().ok());
  ASSERT_TRUE(be.wait_previous_step().ok());  // nothing in flight before: marks the empty queue
  using Clock = std::chrono::steady_clock;
  const auto ms_since = [](Clock::time_point t) {
    return std::chrono::duration<double, std::milli>(Clock::now() - t).count();
  };
  be.hold_queue(60.0);  // "step" 1
  const Tensor y = be.add(x, x);
  auto t = Clock::now();
  ASSERT_TRUE(be.wait_previous_step().ok());  // waits for the empty step 0 only
  EXPECT_LT(ms_since(t), 30.0);
  be.hold_queue(60.0);  // "step" 2
  t = Clock::now();
  ASSERT_TRUE(be.wait_previous_step().ok());  // waits for step 1 (~60 ms), not for step 2
  const double waited = ms_since(t);
  EXPECT_GT(waited, 20.0);
  EXPECT_LT(waited, 110.0);
  const Tensor got = be.download(y);  // downloads wait for everything queued
  const Tensor want = be.download(x);
  for (int64_t i = 0; i < got.numel(); ++i) ASSERT_EQ(got.f32()[i], 2.f * want.f32()[i]) << i;
  ASSERT_TRUE(be.synchronize().ok());
}

TEST(GpuMarkers, ProfilingBackendTimesOpsWithDeviceMarks) {
  SD_REQUIRE_GPU();
  Backend& gpu = gpu_backend(DType::kF16);
  ProfilingBackend be(gpu);
  const Tensor x = be.upload(uniform_random_host({2, 32, 32, 64}, 2));
  const Tensor w = be.upload(uniform_random_host({64, 3, 3, 64}, 3));
  const Tensor b = be.upload(uniform_random_host({64}, 4));
  (void)be.conv2d(x, w, b, 1, 1);  // warm-up (autotuning) unrecorded
  ASSERT_TRUE(be.synchronize().ok());
  be.hold_queue(5.0);
  be.begin_recording();
  Tensor y;
  {
    BackendScope s(be, "block");
    y = be.conv2d(x, w, b, 1, 1);
    y = be.group_norm(y, b, b, 32, 1e-5f, true);
  }
  auto ops = be.end_recording();
  ASSERT_TRUE(ops.ok()) << ops.status().to_string();
  EXPECT_TRUE(be.device_marks());
  ASSERT_EQ(ops->size(), 2u);
  for (const OpRecord& op : *ops) {
    EXPECT_EQ(op.scope, "block");
    EXPECT_GT(op.ms, 0.0);
    EXPECT_LT(op.ms, 5.0);  // the hold is before the first op's mark, not inside it
  }
  EXPECT_DOUBLE_EQ((*ops)[0].flops, 2.0 * 2 * 32 * 32 * 64 * 64 * 9);
  // Same values as the backend itself computes.
  const Tensor ref = gpu.group_norm(gpu.conv2d(x, w, b, 1, 1), b, b, 32, 1e-5f, true);
  const Tensor hy = gpu.download(y), hr = gpu.download(ref);
  for (int64_t i = 0; i < hy.numel(); ++i) ASSERT_EQ(hy.f32()[i], hr.f32()[i]) << i;
}

}  // namespace
}  // namespace sd
