// FakeEngine: a GenerationEngine for server tests. Deterministic images from the seed, the
// prompt and the sequence of steps each job received; a configurable per-step delay; it
// records every step batch (jobs, their steps done, images) to check the batching.
#pragma once

#include <atomic>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "pipeline/engine.h"

namespace sd::testing {

struct StepRecord {
  std::vector<int> job_ids;
  std::vector<int> steps_done;   // before the step, per job
  std::vector<int> steps_total;  // per job
  int images = 0;
};

class FakeEngine : public GenerationEngine {
 public:
  explicit FakeEngine(std::string device = "cpu");
  const EngineInfo& info() const override { return info_; }
  StatusOr<std::unique_ptr<Job>> begin(const GenerationRequest& request) override;
  Status step(const std::vector<Job*>& jobs) override;
  StatusOr<std::vector<GenerationResult>> finish(const std::vector<Job*>& jobs) override;
  size_t device_memory_bytes() const override { return 12345; }
  // Jobs of width `preparing_width` that have not stepped report preparing() (0: none do).
  bool preparing(const Job& job) const override;
  std::atomic<int> preparing_width{0};
  std::optional<DeviceReading> device_reading() const override {
    std::lock_guard<std::mutex> lock(mu_);
    return reading_;
  }
  void set_device_reading(std::optional<DeviceReading> r) {
    std::lock_guard<std::mutex> lock(mu_);
    reading_ = r;
  }
  EngineEvents events() const override {
    std::lock_guard<std::mutex> lock(mu_);
    return events_;
  }
  void set_events(const EngineEvents& e) {
    std::lock_guard<std::mutex> lock(mu_);
    events_ = e;
  }

  // The image a request's k-th image must be, computed without any batching.
  static Image expected_image(const GenerationRequest& request, int64_t seed, int k);

  std::atomic<int> step_delay_ms{0};
  std::atomic<int> begun{0}, steps_run{0};  // steps_run counts job-steps
  std::vector<StepRecord> records() const;
  int max_batch_images() const;
  void clear_records();

 private:
  EngineInfo info_;
  mutable std::mutex mu_;
  std::vector<StepRecord> records_;
  int next_id_ = 0;
  std::optional<DeviceReading> reading_;  // none: a CPU-like engine
  EngineEvents events_;
};

}  // namespace sd::testing
