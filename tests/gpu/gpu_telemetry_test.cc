// GPU tests of device telemetry (backend/cuda/telemetry.h: NVML sampled every 10 ms): the summary
// of known samples and energy readings (real backend only), then a reading over ~300 ms of queued
// work — clocks, power and energy plausible, fractions within 0..1 — and a reading of the device
// now (Backend::device_reading); skipped where NVML is missing.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <optional>

#if SD_TEST_CUDA_INTERNALS
#include "backend/cuda/telemetry.h"
#endif
#include "gpu_test_util.h"

namespace sd {
namespace {

using testing::gpu_backend;

#if SD_TEST_CUDA_INTERNALS
TEST(GpuTelemetry, SummarizesSamples) {
  using S = cuda::GpuTelemetry::Sample;
  const DeviceTelemetry t = cuda::GpuTelemetry::summarize(
      {S{1980, 350, 45, 0x0}, S{1620, 690, 60, 0x4}, S{1500, 640, 61, 0x4 | 0x20}, S{1800, 500, 58, 0x80}}, 700);
  EXPECT_EQ(t.samples, 4);
  EXPECT_DOUBLE_EQ(t.sm_mhz_mean, (1980 + 1620 + 1500 + 1800) / 4.0);
  EXPECT_DOUBLE_EQ(t.sm_mhz_min, 1500);
  EXPECT_DOUBLE_EQ(t.sm_mhz_max, 1980);
  EXPECT_DOUBLE_EQ(t.power_w_mean, (350 + 690 + 640 + 500) / 4.0);
  EXPECT_DOUBLE_EQ(t.power_w_max, 690);
  EXPECT_DOUBLE_EQ(t.power_limit_w, 700);
  EXPECT_DOUBLE_EQ(t.power_capped, 0.75);  // software cap twice, power brake once
  EXPECT_DOUBLE_EQ(t.slowed, 0.25);        // the thermal slowdown
  EXPECT_DOUBLE_EQ(t.temperature_c_max, 61);
  EXPECT_LT(t.energy_j, 0.0);  // not read by the summary

  DeviceTelemetry e = t;
  cuda::GpuTelemetry::add_energy(&e, 0.25, 1000000, 1172500);  // counter in mJ
  EXPECT_DOUBLE_EQ(e.seconds, 0.25);
  EXPECT_DOUBLE_EQ(e.energy_j, 172.5);
  cuda::GpuTelemetry::add_energy(&e, 0.25, -1, -1);  // no counter on this board
  EXPECT_LT(e.energy_j, 0.0);
  cuda::GpuTelemetry::add_energy(&e, 0.25, 5000, 4000);  // counter went back (driver reload)
  EXPECT_LT(e.energy_j, 0.0);
}
#endif

TEST(GpuTelemetry, ReadsClocksAndPowerDuringWork) {
  SD_REQUIRE_GPU();
  Backend& be = gpu_backend(DType::kF16);
  if (!be.telemetry_start()) GTEST_SKIP() << "NVML (libnvidia-ml.so.1) not available here";
  const Tensor x = be.upload(uniform_random_host({8, 64, 64, 320}, 6));
  const auto t0 = std::chrono::steady_clock::now();
  while (std::chrono::steady_clock::now() - t0 < std::chrono::milliseconds(300)) {
    for (int i = 0; i < 20; ++i) (void)be.add(x, x);
    ASSERT_TRUE(be.synchronize().ok());
  }
  const std::optional<DeviceTelemetry> t = be.telemetry_stop();
  ASSERT_TRUE(t.has_value());
  std::printf("  telemetry: %d samples, SM %.0f MHz mean (%.0f-%.0f), %.0f W mean (limit %.0f), capped %.0f%%\n",
              t->samples, t->sm_mhz_mean, t->sm_mhz_min, t->sm_mhz_max, t->power_w_mean, t->power_limit_w,
              100 * t->power_capped);
  EXPECT_GE(t->samples, 10);
  EXPECT_GT(t->sm_mhz_min, 0.0);
  EXPECT_LT(t->sm_mhz_max, 5000.0);
  EXPECT_GT(t->power_w_mean, 10.0);
  EXPECT_GE(t->power_limit_w, t->power_w_mean * 0.5);
  EXPECT_GE(t->power_capped, 0.0);
  EXPECT_LE(t->power_capped, 1.0);
  EXPECT_GE(t->seconds, 0.3);
  if (t->energy_j >= 0) {
    // The counter's mean power is plausible for a busy board. (NVML's sampled power is a trailing
    // average over ~1 s, so over 0.3 s of work it lags the counter: 108 vs 262 W on an H100.)
    std::printf("  energy: %.1f J over %.3f s (%.0f W); sampled mean %.0f W\n", t->energy_j, t->seconds,
                t->energy_j / t->seconds, t->power_w_mean);
    EXPECT_GT(t->energy_j / t->seconds, 20.0);
    EXPECT_LT(t->energy_j / t->seconds, 1.5 * t->power_limit_w);
  }
  EXPECT_FALSE(be.telemetry_stop().has_value());  // stopped: nothing more to report
}

// One reading at a time (the server's /metrics): clocks and power plausible; the energy counter,
// where the board has one, grows over ~200 ms of work.
TEST(GpuTelemetry, DeviceReadingNow) {
  SD_REQUIRE_GPU();
  Backend& be = gpu_backend(DType::kF16);
  const std::optional<DeviceReading> r0 = be.device_reading();
  if (!r0) GTEST_SKIP() << "NVML (libnvidia-ml.so.1) not available here";
  const Tensor x = be.upload(uniform_random_host({8, 64, 64, 320}, 7));
  const auto t0 = std::chrono::steady_clock::now();
  while (std::chrono::steady_clock::now() - t0 < std::chrono::milliseconds(200)) {
    for (int i = 0; i < 20; ++i) (void)be.add(x, x);
    ASSERT_TRUE(be.synchronize().ok());
  }
  const std::optional<DeviceReading> r1 = be.device_reading();
  ASSERT_TRUE(r1.has_value());
  std::printf("  reading: %.0f MHz, %.0f W of %.0f, %.0f C, capped %d, energy counter %.1f -> %.1f J\n", r1->sm_mhz,
              r1->power_w, r1->power_limit_w, r1->temperature_c, r1->power_capped ? 1 : 0, r0->energy_j, r1->energy_j);
  EXPECT_GT(r1->sm_mhz, 0.0);
  EXPECT_LT(r1->sm_mhz, 5000.0);
  EXPECT_GT(r1->power_w, 10.0);
  EXPECT_GT(r1->power_limit_w, 10.0);
  EXPECT_LT(r1->temperature_c, 120.0);
  if (r0->energy_j >= 0) {
    EXPECT_GT(r1->energy_j - r0->energy_j, 1.0);  // > 5 W over 200 ms
  }
}

}  // namespace
}  // namespace sd
