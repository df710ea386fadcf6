// Prometheus metrics of the server (text exposition format 0.0.4), hand-rolled: labelled
// counters and histograms with fixed buckets, thread-safe. Gauges that are states of
// other objects (queue depth, device memory) are passed in at render time.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "pipeline/engine.h"

namespace sd::serving {

class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds) : bounds_(std::move(bounds)), counts_(bounds_.size() + 1, 0) {}
  void observe(double value);
  // Appends `name_bucket{labels,le=..}`, `_sum`, `_count` lines.
  void render(const std::string& name, const std::string& labels, std::string* out) const;
  uint64_t count() const;

 private:
  std::vector<double> bounds_;
  mutable std::mutex mu_;
  std::vector<uint64_t> counts_;  // per bucket (not cumulative); last is +Inf
  double sum_ = 0;
  uint64_t count_ = 0;
};

// One device worker's totals (index in --device order; two workers may share a device): images
// finished, and its engine's one-time work.
struct WorkerStats {
  int index = 0;
  std::string device;
  uint64_t images = 0;
  EngineEvents events;
};

struct GaugeSnapshot {
  int64_t queue_depth = 0;        // generation tasks waiting for a worker
  int64_t inflight_requests = 0;  // generations accepted and not finished (queued + running)
  std::vector<std::pair<std::string, uint64_t>> device_memory;  // device -> bytes
  std::vector<WorkerStats> workers;
  std::vector<std::pair<std::string, DeviceReading>> device_readings;  // device -> reading now
  bool ready = false;
};

class Metrics {
 public:
  Metrics();
  // One HTTP request finished: sd_requests_total{api,status}, sd_request_duration_seconds{api}.
  void record_request(const std::string& api, int status, double seconds);
  void observe_batch_size(int images) { batch_size_.observe(images); }
  void observe_queue_wait(double seconds) { queue_wait_.observe(seconds); }
  void observe_step(double seconds) { step_seconds_.observe(seconds); }
  void add_images(int64_t n) { images_total_ += n; }
  // reason: "client" (DELETE), "disconnect", "drain", "deadline"
  void count_cancelled(const std::string& reason);

  uint64_t requests(const std::string& api, int status) const;
  uint64_t cancelled(const std::string& reason) const;
  uint64_t batch_observations() const { return batch_size_.count(); }

  std::string render(const GaugeSnapshot& gauges) const;

 private:
  mutable std::mutex mu_;
  std::map<std::pair<std::string, int>, uint64_t> requests_;
  std::map<std::string, Histogram> durations_;  // by api
  std::map<std::string, uint64_t> cancelled_;
  Histogram batch_size_, queue_wait_, step_seconds_;
  std::atomic<int64_t> images_total_{0};
};

}  // namespace sd::serving
