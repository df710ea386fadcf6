// Reduces a StageResult to the numbers the reports print: counts, throughput, latency and
// time-to-first-byte distributions (successful requests only), errors by key, peak
// concurrency, and a time series in equal buckets (throughput, in-flight, latency).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "loadtest/sample.h"
#include "loadtest/stats.h"

namespace sd::loadtest {

struct StageSummary {
  int64_t sent = 0;       // requests started (= succeeded + failed once the stage ends)
  int64_t succeeded = 0;
  int64_t failed = 0;
  int64_t images = 0;     // images in successful replies
  double elapsed_s = 0;
  double requests_per_s = 0;  // succeeded / elapsed
  double images_per_s = 0;    // images / elapsed
  Distribution latency;       // seconds, successful requests
  Distribution ttfb;          // seconds, successful requests
  std::map<std::string, int64_t> errors;  // error_key -> count
  int64_t max_in_flight = 0;
  double energy_j_per_image = -1;  // device_energy_j / images (< 0: no energy reported or no image)
  double device_power_w = -1;      // device_energy_j / elapsed
};
StageSummary summarize(const StageResult& stage);

struct TimeBucket {
  double t0 = 0, t1 = 0;          // seconds since the stage start
  int64_t succeeded = 0, failed = 0, images = 0;  // completed inside the bucket
  double requests_per_s = 0, images_per_s = 0;
  double mean_in_flight = 0;      // time-weighted average of requests in flight
  double latency_p50 = -1, latency_p99 = -1;  // of requests succeeding in the bucket; -1 if none
};
// Equal buckets covering [0, elapsed]: about 8 requests per bucket, 4..target buckets.
std::vector<TimeBucket> time_series(const StageResult& stage, int target = 60);

// Peak number of overlapping [start, end) intervals.
int64_t max_overlap(const std::vector<Sample>& samples);

}  // namespace sd::loadtest
