// The load runner against the in-test stub server on loopback: closed-loop counts add up and
// reuse one connection per user, the open-loop rate is within 10% of its target, error
// statuses are counted by status, a stalled server times out without hanging, a refused
// connection is counted and gives a non-zero exit, the jobs API follows SSE to done.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "html_check.h"
#include "loadtest/load_test.h"
#include "loadtest/metrics_scrape.h"
#include "stub_server.h"

namespace sd::loadtest {
namespace {

using testing::StubBehavior;
using testing::StubServer;

ClientOptions client_for(const std::string& url, Api api = Api::kSdapi) {
  ClientOptions o;
  auto u = parse_url(url);
  EXPECT_TRUE(u.ok());
  o.url = *u;
  o.api = api;
  o.generation.steps = 2;
  o.generation.width = o.generation.height = 64;
  o.timeout_s = 10;
  o.connect_timeout_s = 5;
  return o;
}

StageSpec closed(int users, int64_t requests, double duration = 0) {
  StageSpec s;
  s.label = "users=" + std::to_string(users);
  s.users = users;
  s.requests = requests;
  s.duration_s = duration;
  return s;
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

TEST(LoadRunner, ClosedLoopCountsAddUpAndReusesConnections) {
  StubServer stub({0.01, nullptr, false, "", false});
  ClientOptions o = client_for(stub.url());
  o.generation.batch_size = 2;
  int progress_calls = 0;
  auto r = run_stage(o, closed(4, 40), [&](const ProgressSnapshot& p) {
    ++progress_calls;
    EXPECT_LE(p.in_flight, 4);
  }, 0.02);
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  StageSummary s = summarize(*r);
  EXPECT_EQ(s.sent, 40);
  EXPECT_EQ(s.succeeded, 40);
  EXPECT_EQ(s.failed, 0);
  EXPECT_EQ(s.images, 80);
  EXPECT_EQ(stub.requests(), 40);
  EXPECT_EQ(stub.connections(), 4);  // one keep-alive connection per virtual user
  EXPECT_LE(s.max_in_flight, 4);
  EXPECT_GE(s.latency.min, 0.01);
  EXPECT_GT(s.ttfb.count, 0);
  EXPECT_LE(s.ttfb.max, s.latency.max);
  EXPECT_GE(progress_calls, 1);
  for (const Sample& x : r->samples) EXPECT_EQ(x.http_status, 200);
}

// --sizes: request k asks for sizes[k % n]; samples carry their size, the JSON report has it per
// sample, and the text table adds each size's latencies.
TEST(LoadRunner, SizesTakenInTurnAndReportedPerSize) {
  StubServer stub({0.005, nullptr, false, "", false});
  ClientOptions o = client_for(stub.url());
  o.sizes = {{64, 64}, {96, 64}, {64, 128}};
  auto r = run_stage(o, closed(1, 9), nullptr);
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  ASSERT_EQ(r->samples.size(), 9u);
  std::map<std::pair<int, int>, int> seen;
  for (const Sample& x : r->samples) ++seen[{x.width, x.height}];
  EXPECT_EQ(seen, (std::map<std::pair<int, int>, int>{{{64, 64}, 3}, {{96, 64}, 3}, {{64, 128}, 3}}));
  const std::string table = format_stage_table(*r, summarize(*r));
  for (const char* row : {"    64x64 ", "    96x64 ", "    64x128 "}) EXPECT_NE(table.find(row), std::string::npos) << table;
  RunDescription run;
  const auto doc = nlohmann::json::parse(render_json_report(run, {*r}));
  EXPECT_EQ(doc["sample_fields"].back(), "height");
  EXPECT_EQ(doc["stages"][0]["samples"][0].size(), doc["sample_fields"].size());

  o.sizes.clear();  // one size: no per-size rows
  auto one = run_stage(o, closed(1, 2), nullptr);
  ASSERT_TRUE(one.ok());
  EXPECT_EQ(one->samples[0].width, 64);
  EXPECT_EQ(format_stage_table(*one, summarize(*one)).find("    64x64 "), std::string::npos);
}

TEST(LoadRunner, ClosedLoopDurationStopsSending) {
  StubServer stub({0.02, nullptr, false, "", true});  // Connection: close after each answer
  ClientOptions o = client_for(stub.url(), Api::kOpenai);
  auto t0 = std::chrono::steady_clock::now();
  auto r = run_stage(o, closed(2, 0, 0.5), nullptr);
  ASSERT_TRUE(r.ok());
  StageSummary s = summarize(*r);
  EXPECT_LT(seconds_since(t0), 3.0);
  EXPECT_GT(s.succeeded, 10);
  EXPECT_EQ(s.failed, 0);
  EXPECT_EQ(s.sent, stub.requests());
  EXPECT_EQ(stub.connections(), stub.requests());  // the server closed each one
  for (const Sample& x : r->samples) EXPECT_LT(x.start_s, 0.5);
}

TEST(LoadRunner, OpenLoopPoissonRateWithinTenPercent) {
  StubServer stub({0.005, nullptr, false, "", false});
  ClientOptions o = client_for(stub.url());
  o.arrival_seed = 12345;
  StageSpec spec;
  spec.label = "rate=300/s";
  spec.rate = 300;
  spec.duration_s = 1.5;
  auto r = run_stage(o, spec, nullptr);
  ASSERT_TRUE(r.ok());
  StageSummary s = summarize(*r);
  double achieved = static_cast<double>(s.sent) / spec.duration_s;
  EXPECT_NEAR(achieved, 300, 30) << s.sent << " requests in " << spec.duration_s << " s";
  EXPECT_EQ(s.failed, 0);
  EXPECT_EQ(s.sent, stub.requests());
  // Sends follow the schedule: starts are the scheduled arrivals, all inside the duration.
  double last_start = 0;
  for (const Sample& x : r->samples) last_start = std::max(last_start, x.start_s);
  EXPECT_LT(last_start, spec.duration_s);
  EXPECT_GT(last_start, spec.duration_s * 0.9);
  // Connections are pooled: far fewer than requests.
  EXPECT_LT(stub.connections(), s.sent / 2);
}

TEST(LoadRunner, ErrorsCountedByStatus) {
  StubBehavior b;
  b.status_for = [](int64_t n) { return n % 4 == 0 ? 503 : n % 4 == 2 ? 500 : 200; };
  StubServer stub(b);
  ClientOptions o = client_for(stub.url());
  auto r = run_stage(o, closed(3, 24), nullptr);
  ASSERT_TRUE(r.ok());
  StageSummary s = summarize(*r);
  EXPECT_EQ(s.sent, 24);
  EXPECT_EQ(s.succeeded, 12);
  EXPECT_EQ(s.failed, 12);
  EXPECT_EQ(s.errors.at("HTTP 503"), 6);
  EXPECT_EQ(s.errors.at("HTTP 500"), 6);
  EXPECT_NE(r->error_examples.at("HTTP 503").find("queue_full: stub error"), std::string::npos);
  EXPECT_EQ(stub.connections(), 3);  // error answers keep the connection alive too
}

TEST(LoadRunner, WrongApiKeyIs401) {
  StubBehavior b;
  b.required_key = "sekret";
  StubServer stub(b);
  ClientOptions o = client_for(stub.url());
  o.api_key = "wrong";
  auto r = run_stage(o, closed(1, 3), nullptr);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(summarize(*r).errors.at("HTTP 401"), 3);
  o.api_key = "sekret";
  r = run_stage(o, closed(1, 3), nullptr);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(summarize(*r).succeeded, 3);
}

TEST(LoadRunner, StalledServerTimesOutWithoutHanging) {
  StubBehavior b;
  b.stall = true;
  StubServer stub(b);
  ClientOptions o = client_for(stub.url());
  o.timeout_s = 0.3;
  auto t0 = std::chrono::steady_clock::now();
  auto r = run_stage(o, closed(2, 4), nullptr);
  double took = seconds_since(t0);
  ASSERT_TRUE(r.ok());
  StageSummary s = summarize(*r);
  EXPECT_EQ(s.sent, 4);
  EXPECT_EQ(s.succeeded, 0);
  EXPECT_EQ(s.errors.at("timeout"), 4);
  EXPECT_LT(took, 3.0);
  EXPECT_GE(took, 0.55);  // two rounds of 0.3 s timeouts per user
  for (const Sample& x : r->samples) EXPECT_NEAR(x.latency_s(), 0.3, 0.2);
}

TEST(LoadRunner, JobsApiFollowsEventsToDone) {
  StubServer stub({0, nullptr, false, "", false});
  ClientOptions o = client_for(stub.url(), Api::kJobs);
  auto r = run_stage(o, closed(2, 6), nullptr);
  ASSERT_TRUE(r.ok());
  StageSummary s = summarize(*r);
  EXPECT_EQ(s.succeeded, 6) << (s.errors.empty() ? "" : s.errors.begin()->first + " " + r->error_examples.begin()->second);
  EXPECT_EQ(s.images, 6);
  EXPECT_EQ(stub.requests(), 12);  // POST /v1/jobs + GET events per job
}

TEST(LoadTest, RefusedConnectionCountedNonZeroExit) {
  int port = testing::closed_port();
  LoadTestPlan plan;
  plan.client = client_for("http://127.0.0.1:" + std::to_string(port));
  plan.client.failure_backoff_s = 0.01;
  std::string variable;
  plan.stages = *plan_stages(2, 0, 0, 6, "", &variable);
  std::string json_path = ::testing::TempDir() + "/loadtest_refused.json";
  plan.json_path = json_path;
  FILE* out = std::tmpfile();
  FILE* log = std::tmpfile();
  auto t0 = std::chrono::steady_clock::now();
  LoadTestOutcome outcome = execute_load_test(plan, out, log);
  EXPECT_LT(seconds_since(t0), 5.0);
  EXPECT_EQ(outcome.exit_code, 1);
  ASSERT_EQ(outcome.stages.size(), 1u);
  StageSummary s = summarize(outcome.stages[0]);
  EXPECT_EQ(s.sent, 6);
  EXPECT_EQ(s.errors.at("connection refused"), 6);
  std::fclose(out);
  std::fclose(log);
  std::ifstream json_file(json_path);
  std::stringstream text;
  text << json_file.rdbuf();
  EXPECT_NE(text.str().find("\"connection refused\": 6"), std::string::npos);
  std::remove(json_path.c_str());
}

TEST(LoadTest, SweepWritesValidReportAndSucceeds) {
  StubServer stub({0.005, nullptr, false, "", false});
  LoadTestPlan plan;
  plan.client = client_for(stub.url());
  std::string variable;
  plan.stages = *plan_stages(0, 0, 0, 8, "users=1,2,4", &variable);
  plan.description.sweep_variable = variable;
  plan.description.settings = {{"url", stub.url()}};
  plan.report_path = ::testing::TempDir() + "/loadtest_report.html";
  FILE* out = std::tmpfile();
  FILE* log = std::tmpfile();
  LoadTestOutcome outcome = execute_load_test(plan, out, log);
  std::fclose(out);
  std::fclose(log);
  EXPECT_EQ(outcome.exit_code, 0);
  ASSERT_EQ(outcome.stages.size(), 3u);
  for (const StageResult& stage : outcome.stages) {
    EXPECT_EQ(summarize(stage).succeeded, 8);
    EXPECT_LT(stage.device_energy_j, 0.0);  // the stub's /metrics is 404: no energy
  }
  EXPECT_EQ(stub.requests(), 24);
  std::ifstream file(plan.report_path);
  std::stringstream html;
  html << file.rdbuf();
  EXPECT_EQ(testing::check_self_contained_html(html.str()), "");
  EXPECT_EQ(testing::count_occurrences(html.str(), "<svg"), 1 + 3 * 3);
  std::remove(plan.report_path.c_str());
}

// A server whose /metrics reports device energy counters: each stage's joules are the counters'
// growth over it (two devices summed), printed and written per image; a server without them
// (the sweep above, /metrics 404) leaves the figures out.
TEST(LoadTest, StageEnergyFromTheServersCounters) {
  StubBehavior behavior;
  behavior.delay_s = 0.002;
  behavior.energy_j_per_request = 2.5;
  StubServer stub(behavior);
  LoadTestPlan plan;
  plan.client = client_for(stub.url());
  std::string variable;
  plan.stages = *plan_stages(0, 0, 0, 8, "users=1,2", &variable);
  plan.description.sweep_variable = variable;
  plan.json_path = ::testing::TempDir() + "/loadtest_energy.json";
  plan.report_path = ::testing::TempDir() + "/loadtest_energy.html";
  FILE* out = std::tmpfile();
  FILE* log = std::tmpfile();
  LoadTestOutcome outcome = execute_load_test(plan, out, log);
  EXPECT_EQ(outcome.exit_code, 0);
  ASSERT_EQ(outcome.stages.size(), 2u);
  for (const StageResult& stage : outcome.stages) {
    EXPECT_NEAR(stage.device_energy_j, 8 * 2.5, 1e-3);
    const StageSummary s = summarize(stage);
    EXPECT_NEAR(s.energy_j_per_image, 2.5, 1e-4);
    EXPECT_GT(s.device_power_w, 0.0);
  }
  EXPECT_EQ(stub.requests(), 16);  // the scrapes are not generation requests
  std::rewind(out);
  std::string text(1 << 16, '\0');
  text.resize(std::fread(text.data(), 1, text.size(), out));
  std::fclose(out);
  std::fclose(log);
  EXPECT_NE(text.find("device energy     20.0 J, 2.5 J an image"), std::string::npos) << text;
  EXPECT_NE(text.find("J/image"), std::string::npos) << text;
  std::ifstream json_file(plan.json_path);
  std::stringstream json_text;
  json_text << json_file.rdbuf();
  EXPECT_NE(json_text.str().find("\"energy_j_per_image\": 2.5"), std::string::npos) << json_text.str();
  std::remove(plan.json_path.c_str());
  std::ifstream html_file(plan.report_path);
  std::stringstream html;
  html << html_file.rdbuf();
  EXPECT_EQ(testing::check_self_contained_html(html.str()), "");
  EXPECT_NE(html.str().find("device energy"), std::string::npos);
  EXPECT_NE(html.str().find("20 J, 2.50 J an image"), std::string::npos) << html.str();
  std::remove(plan.report_path.c_str());
}

TEST(MetricsScrape, SumsOneFamilyOverItsLabels) {
  const std::string body =
      "# HELP sd_device_energy_joules_total Energy.\n# TYPE sd_device_energy_joules_total counter\n"
      "sd_device_energy_joules_total{device=\"cuda:0\"} 1500.25\n"
      "sd_device_energy_joules_total{device=\"odd}\\\"name\"} 10\n"
      "sd_device_energy_joules_total_other 7\nsd_device_energy_joules_totalx{a=\"b\"} 9\n"
      "sd_device_energy_joules_total{device=\"broken\" 3\nsd_images_total 4\n";
  const std::optional<double> sum = sum_metric(body, "sd_device_energy_joules_total");
  ASSERT_TRUE(sum.has_value());
  EXPECT_DOUBLE_EQ(*sum, 1510.25);
  EXPECT_DOUBLE_EQ(*sum_metric(body, "sd_images_total"), 4.0);
  EXPECT_FALSE(sum_metric(body, "sd_device_power_watts").has_value());
  EXPECT_FALSE(sum_metric("", "sd_images_total").has_value());
  EXPECT_DOUBLE_EQ(*sum_metric("x NaN\nx +Inf\nx 2\n", "x"), 2.0);  // non-finite samples skipped
  EXPECT_FALSE(sum_metric("x 1e308\nx 1e308\n", "x").has_value());    // an overflowing sum is no figure
}

TEST(LoadTest, UnresolvableHostFailsFast) {
  LoadTestPlan plan;
  plan.client = client_for("http://no-such-host.invalid:7860");
  std::string variable;
  plan.stages = *plan_stages(1, 0, 0, 2, "", &variable);
  FILE* out = std::tmpfile();
  FILE* log = std::tmpfile();
  LoadTestOutcome outcome = execute_load_test(plan, out, log);
  std::fclose(out);
  std::fclose(log);
  EXPECT_EQ(outcome.exit_code, 1);
}

}  // namespace
}  // namespace sd::loadtest
