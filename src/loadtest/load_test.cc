// plan_stages and execute_load_test: the glue between the command's flags and run_stage /
// the reports, kept in the library so tests can drive a whole run (exit code included)
// without the sdserve binary.
#include "loadtest/load_test.h"

#include <fstream>

#include "loadtest/arrivals.h"
#include "loadtest/metrics_scrape.h"
#include "loadtest/svg_plot.h"

namespace sd::loadtest {

StatusOr<std::vector<StageSpec>> plan_stages(int users, double rate, double duration_s, int64_t requests,
                                             const std::string& sweep_text, std::string* sweep_variable) {
  sweep_variable->clear();
  if (users > 0 && rate > 0) return InvalidArgument("--users (closed loop) and --rate (open loop) exclude each other");
  if (duration_s <= 0 && requests <= 0) duration_s = 30;
  auto make_stage = [&](int u, double r) {
    StageSpec s;
    s.users = u;
    s.rate = r;
    s.duration_s = duration_s;
    s.requests = requests;
    s.label = u > 0 ? "users=" + std::to_string(u) : "rate=" + format_number(r) + "/s";
    return s;
  };
  std::vector<StageSpec> stages;
  if (sweep_text.empty()) {
    stages.push_back(rate > 0 ? make_stage(0, rate) : make_stage(users > 0 ? users : 1, 0));
    return stages;
  }
  SD_ASSIGN_OR_RETURN(Sweep sweep, parse_sweep(sweep_text));
  if (sweep.variable == "users" && (users > 0 || rate > 0))
    return InvalidArgument("--sweep users=... sets the users of each stage; drop --users / --rate");
  if (sweep.variable == "rate" && (users > 0 || rate > 0))
    return InvalidArgument("--sweep rate=... sets the rate of each stage; drop --users / --rate");
  *sweep_variable = sweep.variable;
  for (double v : sweep.values)
    stages.push_back(sweep.variable == "users" ? make_stage(static_cast<int>(v), 0) : make_stage(0, v));
  return stages;
}

namespace {

bool write_file(const std::string& path, const std::string& text, FILE* log) {
  std::ofstream file(path, std::ios::binary);
  file << text;
  file.close();
  if (!file) std::fprintf(log, "sdserve loadtest: cannot write '%s'\n", path.c_str());
  return static_cast<bool>(file);
}

}  // namespace

LoadTestOutcome execute_load_test(const LoadTestPlan& plan, FILE* out, FILE* log) {
  LoadTestOutcome outcome;
  ProgressFn progress;
  if (plan.live_progress)
    progress = [log](const ProgressSnapshot& p) {
      std::fprintf(log, "\r\033[K%s", format_progress_line(p).c_str());
      std::fflush(log);
    };
  const std::atomic<bool>* interrupt = plan.client.interrupt;
  int64_t total_ok = 0;
  for (const StageSpec& spec : plan.stages) {
    if (interrupt && interrupt->load()) break;
    if (!plan.live_progress) std::fprintf(log, "sdserve loadtest: stage %s ...\n", spec.label.c_str());
    const std::optional<double> energy_before = scrape_device_energy_j(plan.client);
    auto result = run_stage(plan.client, spec, progress);
    if (plan.live_progress) std::fprintf(log, "\r\033[K");
    if (!result.ok()) {
      std::fprintf(log, "sdserve loadtest: %s\n", result.status().message().c_str());
      outcome.exit_code = 1;
      return outcome;
    }
    if (energy_before) {
      const std::optional<double> energy_after = scrape_device_energy_j(plan.client);
      if (energy_after && *energy_after >= *energy_before) result->device_energy_j = *energy_after - *energy_before;
    }
    StageSummary summary = summarize(*result);
    total_ok += summary.succeeded;
    std::fprintf(out, "%s\n", format_stage_table(*result, summary).c_str());
    std::fflush(out);
    outcome.stages.push_back(std::move(*result));
  }
  const std::string& variable = plan.description.sweep_variable;
  if (!variable.empty())
    std::fprintf(out, "Sweep over %s:\n%s\n", variable.c_str(), format_sweep_table(outcome.stages, variable).c_str());
  std::fprintf(out, "%s\n", kPercentileMethod);

  bool written = true;
  if (!plan.json_path.empty())
    written = write_file(plan.json_path, render_json_report(plan.description, outcome.stages), log) && written;
  if (!plan.report_path.empty())
    written = write_file(plan.report_path, render_html_report(plan.description, outcome.stages), log) && written;
  if (total_ok == 0) {
    std::fprintf(log, "sdserve loadtest: no request succeeded\n");
    outcome.exit_code = 1;
  } else if (!written) {
    outcome.exit_code = 1;
  } else if (interrupt && interrupt->load()) {
    outcome.exit_code = 130;
  }
  return outcome;
}

}  // namespace sd::loadtest
