// Reports of a load run: the live progress line, the end-of-run text tables (per stage and
// for a sweep), the --json document (every number, including per-request samples) and the
// self-contained --report HTML page with inline SVG plots.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "loadtest/sample.h"
#include "loadtest/summary.h"

namespace sd::loadtest {

// How the run was configured, shown at the top of reports: ordered (name, value) pairs.
struct RunDescription {
  std::vector<std::pair<std::string, std::string>> settings;
  std::string sweep_variable;  // "users" / "rate" for --sweep runs, else ""
};

extern const char* const kPercentileMethod;  // one sentence, printed in every report

struct ProgressSnapshot {
  std::string label;
  double elapsed_s = 0;
  int64_t succeeded = 0, failed = 0, in_flight = 0, images = 0;
  double latency_p50_s = -1;  // of successes so far; -1 before the first
};
std::string format_progress_line(const ProgressSnapshot& p);

std::string format_stage_table(const StageResult& stage, const StageSummary& summary);
// One row per stage: value, requests, ok, failed, req/s, images/s, p50/p90/p99/max latency.
std::string format_sweep_table(const std::vector<StageResult>& stages, const std::string& variable);

std::string render_json_report(const RunDescription& run, const std::vector<StageResult>& stages);
std::string render_html_report(const RunDescription& run, const std::vector<StageResult>& stages);

// The value a stage contributes to a sweep axis: users (closed loop) or target rate.
double stage_load_value(const StageResult& stage);

}  // namespace sd::loadtest
