// summarize / time_series / max_overlap / error_key: pure arithmetic over the samples of a
// stage. In-flight counts come from the exact request intervals (a request is in flight
// from start_s until end_s), integrated per bucket.
#include "loadtest/summary.h"

#include <algorithm>
#include <cmath>

namespace sd::loadtest {

std::string error_key(const Sample& s) {
  switch (s.outcome) {
    case Outcome::kOk: return "";
    case Outcome::kHttpError: return "HTTP " + std::to_string(s.http_status);
    case Outcome::kTimeout: return "timeout";
    case Outcome::kConnectTimeout: return "connect timeout";
    case Outcome::kRefused: return "connection refused";
    case Outcome::kUnreachable: return "unreachable";
    case Outcome::kConnectionError: return "connection error";
    case Outcome::kBadResponse: return "bad response";
    case Outcome::kJobError: return "job error";
    case Outcome::kClientLimit: return "client max in flight";
  }
  return "unknown";
}

int64_t max_overlap(const std::vector<Sample>& samples) {
  std::vector<std::pair<double, int>> events;
  events.reserve(samples.size() * 2);
  for (const Sample& s : samples) {
    events.emplace_back(s.start_s, +1);
    events.emplace_back(s.end_s, -1);
  }
  // Ends before starts at equal times: a request that ends as another starts does not overlap.
  std::sort(events.begin(), events.end());
  int64_t now = 0, peak = 0;
  for (const auto& e : events) {
    now += e.second;
    peak = std::max(peak, now);
  }
  return peak;
}

StageSummary summarize(const StageResult& stage) {
  StageSummary out;
  out.elapsed_s = stage.elapsed_s;
  std::vector<double> latency, ttfb;
  for (const Sample& s : stage.samples) {
    out.sent++;
    if (s.ok()) {
      out.succeeded++;
      out.images += s.images;
      latency.push_back(s.latency_s());
      if (s.ttfb_s >= 0) ttfb.push_back(s.ttfb_s);
    } else {
      out.failed++;
      out.errors[error_key(s)]++;
    }
  }
  if (stage.elapsed_s > 0) {
    out.requests_per_s = static_cast<double>(out.succeeded) / stage.elapsed_s;
    out.images_per_s = static_cast<double>(out.images) / stage.elapsed_s;
  }
  out.latency = describe(std::move(latency));
  out.ttfb = describe(std::move(ttfb));
  out.max_in_flight = max_overlap(stage.samples);
  if (stage.device_energy_j >= 0) {
    if (out.images > 0) out.energy_j_per_image = stage.device_energy_j / static_cast<double>(out.images);
    if (stage.elapsed_s > 0) out.device_power_w = stage.device_energy_j / stage.elapsed_s;
  }
  return out;
}

std::vector<TimeBucket> time_series(const StageResult& stage, int target) {
  double span = stage.elapsed_s;
  for (const Sample& s : stage.samples) span = std::max(span, s.end_s);
  if (!(span > 0)) span = 1e-3;
  // About 8 completions per bucket on average (so rates are not 0/1 sawtooth), between 4
  // and `target` buckets, all of equal width covering exactly [0, span].
  size_t events = stage.samples.size();
  size_t count = events == 0 ? 1 : std::clamp<size_t>(events / 8, 4, static_cast<size_t>(std::max(4, target)));
  if (target < 4) count = static_cast<size_t>(std::max(1, target));
  double width = span / static_cast<double>(count);
  std::vector<TimeBucket> buckets(count);
  for (size_t i = 0; i < count; ++i) {
    buckets[i].t0 = static_cast<double>(i) * width;
    buckets[i].t1 = i + 1 == count ? span : static_cast<double>(i + 1) * width;
  }
  auto index_of = [&](double t) {
    double f = std::floor(std::max(0.0, t) / width);
    return std::min(static_cast<size_t>(f), count - 1);
  };
  std::vector<std::vector<double>> latencies(count);
  std::vector<double> busy(count, 0.0);  // request-seconds in flight per bucket
  for (const Sample& s : stage.samples) {
    TimeBucket& b = buckets[index_of(s.end_s)];
    if (s.ok()) {
      b.succeeded++;
      b.images += s.images;
      latencies[index_of(s.end_s)].push_back(s.latency_s());
    } else {
      b.failed++;
    }
    for (size_t i = index_of(s.start_s); i <= index_of(s.end_s); ++i) {
      double overlap = std::min(s.end_s, buckets[i].t1) - std::max(s.start_s, buckets[i].t0);
      if (overlap > 0) busy[i] += overlap;
    }
  }
  for (size_t i = 0; i < count; ++i) {
    double covered = width;
    buckets[i].requests_per_s = static_cast<double>(buckets[i].succeeded) / covered;
    buckets[i].images_per_s = static_cast<double>(buckets[i].images) / covered;
    buckets[i].mean_in_flight = busy[i] / covered;
    if (!latencies[i].empty()) {
      std::sort(latencies[i].begin(), latencies[i].end());
      buckets[i].latency_p50 = percentile_sorted(latencies[i], 50);
      buckets[i].latency_p99 = percentile_sorted(latencies[i], 99);
    }
  }
  return buckets;
}

}  // namespace sd::loadtest
