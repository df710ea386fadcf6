// Text tables and JSON of a guided-step profile (ProfileReport): per scope, per op kind, and
// the sum of op times against the measured unrecorded step. Floors and efficiencies are
// printed for GPUs only (they are against H100 peaks); the CPU gets GFLOP/s and GB/s.
#include <cstdio>
#include <nlohmann/json.hpp>

#include "pipeline/profile.h"

namespace sd {
namespace {

const char* timer_name(const ProfileReport& r) {
  if (!r.gpu) return "host clock";
  return r.device_timer ? "CUDA events" : "host clock, synchronize per op";
}

std::string header(const char* first, bool gpu) {
  char buf[256];
  std::snprintf(buf, sizeof buf, "%-22s %5s %9s %6s %9s %9s %9s %9s", first, "ops", "ms", "%", "GFLOP", "MB",
                gpu ? "TFLOP/s" : "GFLOP/s", "GB/s");
  std::string s = buf;
  if (gpu) s += "  floor ms    eff";
  return s + "\n";
}

std::string line(const ProfileRow& r, double total_ms, bool gpu) {
  char buf[256];
  const double sec = r.ms * 1e-3;
  const double rate = sec > 0 ? r.flops / sec / (gpu ? 1e12 : 1e9) : 0;
  const double bw = sec > 0 ? r.bytes / sec / 1e9 : 0;
  std::snprintf(buf, sizeof buf, "%-22s %5d %9.3f %6.1f %9.2f %9.1f %9.1f %9.1f", r.name.c_str(), r.ops, r.ms,
                total_ms > 0 ? 100.0 * r.ms / total_ms : 0.0, r.flops / 1e9, r.bytes / 1e6, rate, bw);
  std::string s = buf;
  if (gpu) {
    std::snprintf(buf, sizeof buf, " %9.3f %5.0f%%", r.floor_ms, 100.0 * r.efficiency());
    s += buf;
  }
  return s + "\n";
}

// "f16[2,64,64,320] on cuda:0" -> "f16[2,64,64,320]".
std::string shape_only(const std::string& output) { return output.substr(0, output.find(" on ")); }

std::string op_lines(const StepProfile& p, bool gpu) {
  char buf[320];
  std::snprintf(buf, sizeof buf, "\nper op (issue order)\n%4s %-18s %-14s %-22s %9s %9s %9s", "#", "scope", "kind",
                "output", "us", "GFLOP", "MB");
  std::string s = buf;
  s += gpu ? " floor us    eff\n" : "\n";
  for (size_t i = 0; i < p.ops.size(); ++i) {
    const ProfileOp& op = p.ops[i];
    std::snprintf(buf, sizeof buf, "%4zu %-18s %-14s %-22s %9.1f %9.3f %9.2f", i, op.scope.c_str(), op.kind.c_str(),
                  shape_only(op.output).c_str(), 1e3 * op.ms, op.flops / 1e9, op.bytes / 1e6);
    s += buf;
    if (gpu) {
      const double eff = op.ms > 0 ? 100.0 * op.floor_ms / op.ms : 0.0;
      std::snprintf(buf, sizeof buf, " %8.1f %5.0f%%", 1e3 * op.floor_ms, eff);
      s += buf;
    }
    s += "\n";
  }
  return s;
}

nlohmann::json row_json(const ProfileRow& r) {
  return {{"name", r.name},   {"ops", r.ops},           {"ms", r.ms},
          {"flops", r.flops}, {"bytes", r.bytes},       {"floor_ms", r.floor_ms},
          {"efficiency", r.efficiency()}};
}

}  // namespace

std::string ProfileReport::table() const {
  std::string s;
  char buf[512];
  for (const StepProfile& p : steps) {
    std::snprintf(buf, sizeof buf,
                  "\nprofile: guided step, batch %d (UNet on %d rows, latents %dx%d), %s, %s, median of %d\n",
                  p.batch, 2 * p.batch, p.latent_h, p.latent_w, device_name.c_str(),
                  timer_name(*this), repeats);
    s += buf;
    if (gpu) {
      std::snprintf(buf, sizeof buf, "floor = max(FLOP / %.0f TFLOP/s, bytes / %.2f TB/s) per op; eff = floor / ms\n",
                    kPeakMatmulFlops / 1e12, kPeakBandwidthBytes / 1e12);
      s += buf;
    }
    s += "\nper scope\n" + header("scope", gpu);
    for (const ProfileRow& r : p.scopes) s += line(r, p.total.ms, gpu);
    s += line(p.total, p.total.ms, gpu);
    s += "\nper op kind\n" + header("kind", gpu);
    for (const ProfileRow& r : p.kinds) s += line(r, p.total.ms, gpu);
    s += line(p.total, p.total.ms, gpu);
    if (per_op) s += op_lines(p, gpu);
    std::snprintf(buf, sizeof buf,
                  "\nsum of op times %.3f ms (%d ops) vs the measured step without graphs %.3f ms (min %.3f): "
                  "%.3f ms outside ops (launch gaps, host work)\n",
                  p.total.ms, p.total.ops, p.step_ms, p.step_ms_min, p.step_ms - p.total.ms);
    s += buf;
    if (gpu) {
      std::snprintf(buf, sizeof buf, "floor of the step %.3f ms (%.1f%% of the op sum); queue held %.1f ms per "
                    "recorded step\n", p.total.floor_ms, 100.0 * p.total.efficiency(), p.hold_ms);
      s += buf;
    }
  }
  return s;
}

std::string ProfileReport::json() const {
  nlohmann::json j;
  j["device"] = device_name;
  j["timer"] = timer_name(*this);
  j["repeats"] = repeats;
  j["peak_matmul_flops"] = kPeakMatmulFlops;
  j["peak_bandwidth_bytes"] = kPeakBandwidthBytes;
  j["steps"] = nlohmann::json::array();
  for (const StepProfile& p : steps) {
    nlohmann::json sj;
    sj["batch"] = p.batch;
    sj["unet_rows"] = 2 * p.batch;
    sj["latent_h"] = p.latent_h;
    sj["latent_w"] = p.latent_w;
    sj["step_ms"] = p.step_ms;
    sj["step_ms_min"] = p.step_ms_min;
    sj["hold_ms"] = p.hold_ms;
    sj["total"] = row_json(p.total);
    sj["scopes"] = nlohmann::json::array();
    for (const ProfileRow& r : p.scopes) sj["scopes"].push_back(row_json(r));
    sj["kinds"] = nlohmann::json::array();
    for (const ProfileRow& r : p.kinds) sj["kinds"].push_back(row_json(r));
    sj["ops"] = nlohmann::json::array();
    for (const ProfileOp& op : p.ops) {
      sj["ops"].push_back({{"scope", op.scope}, {"kind", op.kind}, {"output", shape_only(op.output)}, {"ms", op.ms},
                           {"flops", op.flops}, {"bytes", op.bytes}, {"floor_ms", op.floor_ms}});
    }
    j["steps"].push_back(sj);
  }
  return j.dump(2);
}

}  // namespace sd
