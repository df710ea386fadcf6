// A whole `sdserve loadtest` run as a library call: the stages planned from the flags
// (--users / --rate / --sweep with --duration / --requests), executed one after another,
// tables printed, --json / --report written, and the exit code decided.
#pragma once

#include <cstdio>
#include <string>
#include <vector>

#include "core/status.h"
#include "loadtest/load_runner.h"
#include "loadtest/report.h"

namespace sd::loadtest {

// users > 0: closed loop; rate > 0: open loop; sweep "users=..."/"rate=..." replaces the
// matching flag. With neither users nor rate nor sweep: 1 user. With neither duration nor
// requests: 30 s per stage. *sweep_variable receives "users"/"rate"/"".
StatusOr<std::vector<StageSpec>> plan_stages(int users, double rate, double duration_s, int64_t requests,
                                             const std::string& sweep, std::string* sweep_variable);

struct LoadTestPlan {
  ClientOptions client;
  std::vector<StageSpec> stages;
  RunDescription description;
  std::string json_path, report_path;  // empty: not written
  bool live_progress = false;          // redraw a progress line on `log` ~4x/s
};

struct LoadTestOutcome {
  std::vector<StageResult> stages;
  // 0: some request succeeded; 1: none did, a stage could not start or a file could not be
  // written; 130: interrupted (SIGINT) after some successes.
  int exit_code = 0;
};

// Runs every stage; tables go to `out`, progress and problems to `log`.
LoadTestOutcome execute_load_test(const LoadTestPlan& plan, FILE* out, FILE* log);

}  // namespace sd::loadtest
