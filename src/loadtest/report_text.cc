// Terminal output: the progress line redrawn ~4x/s on a TTY and the tables printed when a
// stage (or a sweep) ends. Times print in seconds with 3 decimals, or ms below 1 s.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <utility>
#include <vector>

#include "loadtest/report.h"
#include "loadtest/stats.h"
#include "loadtest/svg_plot.h"

namespace sd::loadtest {

const char* const kPercentileMethod =
    "Percentiles are exact over all successful requests, by linear interpolation between closest ranks "
    "(numpy's default, Hyndman-Fan type 7).";

double stage_load_value(const StageResult& stage) {
  return stage.users > 0 ? static_cast<double>(stage.users) : stage.rate;
}

namespace {

std::string seconds(double s) {
  char buf[32];
  if (!std::isfinite(s) || s < 0) return "-";
  if (s < 1)
    std::snprintf(buf, sizeof buf, "%.1f ms", s * 1e3);
  else
    std::snprintf(buf, sizeof buf, "%.3f s", s);
  return buf;
}

std::string distribution_line(const Distribution& d) {
  if (d.count == 0) return "-";
  return "p50 " + seconds(d.p50) + "   p90 " + seconds(d.p90) + "   p99 " + seconds(d.p99) + "   max " + seconds(d.max) +
         "   (mean " + seconds(d.mean) + ", n=" + std::to_string(d.count) + ")";
}

}  // namespace

std::string format_progress_line(const ProgressSnapshot& p) {
  char buf[256];
  double ips = p.elapsed_s > 0 ? static_cast<double>(p.images) / p.elapsed_s : 0;
  std::snprintf(buf, sizeof buf, "[%s] %6.1fs  done %lld  failed %lld  in flight %lld  %.2f images/s  p50 %s",
                p.label.c_str(), p.elapsed_s, static_cast<long long>(p.succeeded), static_cast<long long>(p.failed),
                static_cast<long long>(p.in_flight), ips, p.latency_p50_s < 0 ? "-" : seconds(p.latency_p50_s).c_str());
  return buf;
}

std::string format_stage_table(const StageResult& stage, const StageSummary& s) {
  char buf[512];
  std::string out;
  std::string mode = stage.users > 0 ? "closed loop, " + std::to_string(stage.users) + (stage.users == 1 ? " virtual user" : " virtual users")
                                     : "open loop, Poisson arrivals at " + format_number(stage.rate) + " req/s";
  std::snprintf(buf, sizeof buf, "Stage %s (%s), %.2f s\n", stage.label.c_str(), mode.c_str(), s.elapsed_s);
  out += buf;
  std::snprintf(buf, sizeof buf, "  %-17s %lld sent, %lld ok, %lld failed\n", "requests", static_cast<long long>(s.sent),
                static_cast<long long>(s.succeeded), static_cast<long long>(s.failed));
  out += buf;
  std::snprintf(buf, sizeof buf, "  %-17s %lld\n", "images", static_cast<long long>(s.images));
  out += buf;
  std::snprintf(buf, sizeof buf, "  %-17s %.3f req/s, %.3f images/s\n", "throughput", s.requests_per_s, s.images_per_s);
  out += buf;
  out += "  latency           " + distribution_line(s.latency) + "\n";
  // With --sizes: each size's own latencies (successful requests), in order of first use.
  std::vector<std::pair<int, int>> sizes;
  for (const Sample& x : stage.samples)
    if (x.width > 0 && std::find(sizes.begin(), sizes.end(), std::make_pair(x.width, x.height)) == sizes.end())
      sizes.emplace_back(x.width, x.height);
  if (sizes.size() > 1) {
    for (const auto& [w, h] : sizes) {
      std::vector<double> latencies;
      for (const Sample& x : stage.samples)
        if (x.ok() && x.width == w && x.height == h) latencies.push_back(x.latency_s());
      std::snprintf(buf, sizeof buf, "    %-15s ", (std::to_string(w) + "x" + std::to_string(h)).c_str());
      out += buf + distribution_line(describe(std::move(latencies))) + "\n";
    }
  }
  out += "  time to 1st byte  " + distribution_line(s.ttfb) + "\n";
  std::snprintf(buf, sizeof buf, "  %-17s %lld\n", "peak in flight", static_cast<long long>(s.max_in_flight));
  out += buf;
  if (stage.device_energy_j >= 0) {  // the server's /metrics reported its devices' energy counters
    std::snprintf(buf, sizeof buf, "  %-17s %.1f J", "device energy", stage.device_energy_j);
    out += buf;
    if (s.energy_j_per_image >= 0) {
      std::snprintf(buf, sizeof buf, ", %.1f J an image", s.energy_j_per_image);
      out += buf;
    }
    if (s.device_power_w >= 0) {
      std::snprintf(buf, sizeof buf, ", %.0f W mean", s.device_power_w);
      out += buf;
    }
    out += "\n";
  }
  if (s.errors.empty()) {
    out += "  errors            none\n";
  } else {
    out += "  errors by status:\n";
    for (const auto& [key, count] : s.errors) {
      auto example = stage.error_examples.find(key);
      std::snprintf(buf, sizeof buf, "    %-20s %8lld", key.c_str(), static_cast<long long>(count));
      out += buf;
      if (example != stage.error_examples.end() && !example->second.empty()) out += "   e.g. " + example->second.substr(0, 160);
      out += "\n";
    }
  }
  return out;
}

std::string format_sweep_table(const std::vector<StageResult>& stages, const std::string& variable) {
  std::string out;
  char buf[512];
  // Joules an image only when the server reported its devices' energy for some stage.
  const bool energy = std::any_of(stages.begin(), stages.end(), [](const StageResult& s) { return s.device_energy_j >= 0; });
  std::snprintf(buf, sizeof buf, "%8s %9s %9s %8s %10s %10s %10s %10s %10s %10s %9s%s\n", variable.c_str(), "requests", "ok",
                "failed", "req/s", "images/s", "p50 s", "p90 s", "p99 s", "max s", "in flight", energy ? "   J/image" : "");
  out += buf;
  for (const StageResult& stage : stages) {
    StageSummary s = summarize(stage);
    std::snprintf(buf, sizeof buf, "%8s %9lld %9lld %8lld %10.3f %10.3f %10.3f %10.3f %10.3f %10.3f %9lld\n",
                  format_number(stage_load_value(stage)).c_str(), static_cast<long long>(s.sent),
                  static_cast<long long>(s.succeeded), static_cast<long long>(s.failed), s.requests_per_s,
                  s.images_per_s, s.latency.p50, s.latency.p90, s.latency.p99, s.latency.max,
                  static_cast<long long>(s.max_in_flight));
    out += buf;
    if (energy) {
      out.pop_back();  // the newline
      if (s.energy_j_per_image >= 0) std::snprintf(buf, sizeof buf, " %10.1f\n", s.energy_j_per_image);
      else std::snprintf(buf, sizeof buf, " %10s\n", "-");
      out += buf;
    }
  }
  return out;
}

}  // namespace sd::loadtest
