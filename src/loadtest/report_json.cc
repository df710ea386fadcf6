// --json: every number of the run. Per stage: the summary, the time series and each
// request as [start_s, end_s, ttfb_s, http_status, outcome, images] (fields named once in
// "sample_fields"), so any other statistic can be recomputed from the file.
#include <cmath>
#include <nlohmann/json.hpp>

#include "loadtest/report.h"

namespace sd::loadtest {

using nlohmann::json;

namespace {

json number_or_null(double v) { return std::isfinite(v) && v >= 0 ? json(v) : json(nullptr); }

json distribution_json(const Distribution& d) {
  return {{"count", d.count}, {"min", d.min}, {"mean", d.mean}, {"p50", d.p50},
          {"p90", d.p90},     {"p99", d.p99}, {"max", d.max}};
}

const char* outcome_name(Outcome o) {
  switch (o) {
    case Outcome::kOk: return "ok";
    case Outcome::kHttpError: return "http_error";
    case Outcome::kTimeout: return "timeout";
    case Outcome::kConnectTimeout: return "connect_timeout";
    case Outcome::kRefused: return "refused";
    case Outcome::kUnreachable: return "unreachable";
    case Outcome::kConnectionError: return "connection_error";
    case Outcome::kBadResponse: return "bad_response";
    case Outcome::kJobError: return "job_error";
    case Outcome::kClientLimit: return "client_limit";
  }
  return "unknown";
}

}  // namespace

std::string render_json_report(const RunDescription& run, const std::vector<StageResult>& stages) {
  json doc;
  doc["tool"] = "sdserve loadtest";
  json settings = json::object();
  for (const auto& [key, value] : run.settings) settings[key] = value;
  doc["settings"] = settings;
  doc["percentile_method"] = kPercentileMethod;
  doc["latency_definition"] =
      "seconds from sending the request to the complete answer (jobs API: submission to the done event)";
  doc["ttfb_definition"] = "seconds from sending the request to the first response byte (jobs API: of the 202 reply)";
  doc["sweep_variable"] = run.sweep_variable.empty() ? json(nullptr) : json(run.sweep_variable);
  doc["sample_fields"] = {"start_s", "end_s", "ttfb_s", "http_status", "outcome", "images", "width", "height"};
  json out_stages = json::array();
  for (const StageResult& stage : stages) {
    StageSummary s = summarize(stage);
    json j;
    j["label"] = stage.label;
    j["mode"] = stage.users > 0 ? "closed" : "open";
    j["users"] = stage.users;
    j["rate"] = stage.rate;
    j["elapsed_s"] = stage.elapsed_s;
    j["summary"] = {{"sent", s.sent},
                    {"succeeded", s.succeeded},
                    {"failed", s.failed},
                    {"images", s.images},
                    {"requests_per_s", s.requests_per_s},
                    {"images_per_s", s.images_per_s},
                    {"latency_s", distribution_json(s.latency)},
                    {"ttfb_s", distribution_json(s.ttfb)},
                    {"max_in_flight", s.max_in_flight},
                    {"errors", s.errors}};
    if (stage.device_energy_j >= 0) {  // from the server's /metrics (sd_device_energy_joules_total)
      j["summary"]["device_energy_j"] = stage.device_energy_j;
      if (s.energy_j_per_image >= 0) j["summary"]["energy_j_per_image"] = s.energy_j_per_image;
      if (s.device_power_w >= 0) j["summary"]["device_power_w"] = s.device_power_w;
    }
    j["error_examples"] = stage.error_examples;
    json series = json::array();
    for (const TimeBucket& b : time_series(stage)) {
      series.push_back({{"t0_s", b.t0},
                        {"t1_s", b.t1},
                        {"succeeded", b.succeeded},
                        {"failed", b.failed},
                        {"images", b.images},
                        {"requests_per_s", b.requests_per_s},
                        {"images_per_s", b.images_per_s},
                        {"mean_in_flight", b.mean_in_flight},
                        {"latency_p50_s", number_or_null(b.latency_p50)},
                        {"latency_p99_s", number_or_null(b.latency_p99)}});
    }
    j["time_series"] = std::move(series);
    json samples = json::array();
    for (const Sample& x : stage.samples)
      samples.push_back(
          {x.start_s, x.end_s, number_or_null(x.ttfb_s), x.http_status, outcome_name(x.outcome), x.images, x.width, x.height});
    j["samples"] = std::move(samples);
    out_stages.push_back(std::move(j));
  }
  doc["stages"] = std::move(out_stages);
  return doc.dump(1, ' ', false, json::error_handler_t::replace) + "\n";
}

}  // namespace sd::loadtest
