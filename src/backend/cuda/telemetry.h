// GpuTelemetry: samples a GPU's SM clock, power, temperature and clock-limiting reasons every
// 10 ms on a thread of its own through NVML (the driver's libnvidia-ml.so.1, opened at run
// time: no build dependency; unavailable → start() reports false), and its energy counter.
#pragma once

#include <atomic>
#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "backend/backend.h"

namespace sd::cuda {

class GpuTelemetry {
 public:
  // pci_bus_id: the device as cudaDeviceGetPCIBusId names it.
  explicit GpuTelemetry(std::string pci_bus_id);
  ~GpuTelemetry();
  GpuTelemetry(const GpuTelemetry&) = delete;
  GpuTelemetry& operator=(const GpuTelemetry&) = delete;

  // Starts sampling (a running sampler is restarted); false where NVML or the device is missing.
  bool start();
  // Stops sampling and summarizes the samples since start(); nullopt when none were taken.
  std::optional<DeviceTelemetry> stop();
  // One reading now (thread-safe: its own NVML handle lookup, no sampler state); nullopt where
  // NVML or the device is missing.
  std::optional<DeviceReading> read() const;

  // One reading; public for the summary's test.
  struct Sample {
    double sm_mhz = 0, power_w = 0, temperature_c = 0;
    unsigned long long reasons = 0;  // NVML clocks-event (throttle) reason bits
  };
  static DeviceTelemetry summarize(const std::vector<Sample>& samples, double power_limit_w);
  // The interval's length and energy from the counter's readings at start and stop (millijoules;
  // negative: no counter).
  static void add_energy(DeviceTelemetry* t, double seconds, long long mj_start, long long mj_stop);

 private:
  std::string bus_id_;
  void* device_ = nullptr;  // nvmlDevice_t once resolved
  double power_limit_w_ = 0;
  std::atomic<bool> running_{false};
  std::thread thread_;
  std::vector<Sample> samples_;
  std::chrono::steady_clock::time_point started_;
  long long energy_start_mj_ = -1;
};

}  // namespace sd::cuda
