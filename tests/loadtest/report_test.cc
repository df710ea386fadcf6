// Report generation on synthetic stages: the HTML page is well formed, self-contained and
// has its SVG plots (3 per stage, +1 for a sweep); the JSON holds the same numbers as the
// summary; the text tables show counts and errors by status; the checker itself rejects
// broken pages.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <random>

#include "html_check.h"
#include "loadtest/report.h"
#include "loadtest/svg_plot.h"

namespace sd::loadtest {
namespace {

using testing::check_self_contained_html;
using testing::count_occurrences;

StageResult synthetic_stage(int users, uint32_t seed, int failures) {
  StageResult stage;
  stage.users = users;
  stage.label = "users=" + std::to_string(users);
  std::mt19937 rng(seed);
  std::uniform_real_distribution<double> latency(0.5, 1.5);
  for (int u = 0; u < users; ++u) {
    double t = 0;
    for (int i = 0; i < 20; ++i) {
      Sample s;
      s.start_s = t;
      s.end_s = t + latency(rng) * users;
      s.ttfb_s = (s.end_s - s.start_s) * 0.95;
      s.http_status = 200;
      s.images = 1;
      if (i < failures) {
        s.outcome = Outcome::kHttpError;
        s.http_status = 503;
        s.images = 0;
      }
      t = s.end_s;
      stage.samples.push_back(s);
      stage.elapsed_s = std::max(stage.elapsed_s, t);
    }
  }
  if (failures) stage.error_examples["HTTP 503"] = "queue_full: <the queue> is full & \"busy\"";
  return stage;
}

RunDescription description(const std::string& sweep) {
  RunDescription run;
  run.settings = {{"url", "http://127.0.0.1:7860"}, {"api", "sdapi"}, {"note", "<b>escaped</b>"}};
  run.sweep_variable = sweep;
  return run;
}

TEST(HtmlReport, SingleStageIsSelfContainedWithPlots) {
  std::vector<StageResult> stages = {synthetic_stage(4, 1, 2)};
  std::string html = render_html_report(description(""), stages);
  EXPECT_EQ(check_self_contained_html(html), "");
  EXPECT_EQ(count_occurrences(html, "<svg"), 3);
  EXPECT_EQ(count_occurrences(html, "</svg>"), 3);
  EXPECT_NE(html.find("Latency histogram"), std::string::npos);
  EXPECT_NE(html.find("Throughput and requests in flight over time"), std::string::npos);
  EXPECT_NE(html.find("Latency over time"), std::string::npos);
  EXPECT_NE(html.find("HTTP 503"), std::string::npos);
  EXPECT_NE(html.find("&lt;the queue&gt; is full &amp; &quot;busy&quot;"), std::string::npos);
  EXPECT_NE(html.find("&lt;b&gt;escaped&lt;/b&gt;"), std::string::npos);
  EXPECT_EQ(html.find("<b>escaped"), std::string::npos);
  EXPECT_NE(html.find("<rect"), std::string::npos);      // histogram bars
  EXPECT_NE(html.find("<polyline"), std::string::npos);  // time series
  EXPECT_NE(html.find("<circle"), std::string::npos);    // per-request latency points
}

TEST(HtmlReport, SweepAddsTableAndChart) {
  std::vector<StageResult> stages;
  for (int users : {1, 2, 4, 8}) stages.push_back(synthetic_stage(users, static_cast<uint32_t>(users), 0));
  std::string html = render_html_report(description("users"), stages);
  EXPECT_EQ(check_self_contained_html(html), "");
  EXPECT_EQ(count_occurrences(html, "<svg"), 1 + 3 * 4);
  EXPECT_NE(html.find("Sweep over users"), std::string::npos);
  EXPECT_NE(html.find("p99 latency (s)"), std::string::npos);
  EXPECT_EQ(count_occurrences(html, "<h2>Stage users="), 4);
}

TEST(HtmlReport, EmptyStageStillValid) {
  StageResult empty;
  empty.users = 1;
  empty.label = "users=1";
  std::string html = render_html_report(description(""), {empty});
  EXPECT_EQ(check_self_contained_html(html), "");
  EXPECT_EQ(count_occurrences(html, "<svg"), 3);
  EXPECT_NE(html.find("no data"), std::string::npos);
}

TEST(HtmlCheck, RejectsBrokenPages) {
  const std::string ok = "<!DOCTYPE html>\n<html><head><title>x</title></head><body><svg><g></g></svg></body></html>";
  EXPECT_EQ(check_self_contained_html(ok), "");
  EXPECT_NE(check_self_contained_html(ok + "<html></html>"), "");
  EXPECT_NE(check_self_contained_html("<html><body></body></html>"), "");  // no doctype
  EXPECT_NE(check_self_contained_html("<!DOCTYPE html><html><body><svg></body></html>"), "");
  EXPECT_NE(check_self_contained_html("<!DOCTYPE html><html><body><img src=\"a.png\"></body></html>"), "");
  EXPECT_NE(check_self_contained_html("<!DOCTYPE html><html><body><a href=\"x\">x</a></body></html>"), "");
  EXPECT_NE(check_self_contained_html("<!DOCTYPE html><html><script></script></html>"), "");
}

TEST(JsonReport, HoldsSummaryTimeSeriesAndSamples) {
  std::vector<StageResult> stages = {synthetic_stage(2, 5, 3)};
  StageSummary summary = summarize(stages[0]);
  auto doc = nlohmann::json::parse(render_json_report(description(""), stages));
  ASSERT_EQ(doc["stages"].size(), 1u);
  const auto& s = doc["stages"][0];
  EXPECT_EQ(s["users"], 2);
  EXPECT_EQ(s["summary"]["sent"], summary.sent);
  EXPECT_EQ(s["summary"]["failed"], 6);
  EXPECT_EQ(s["summary"]["errors"]["HTTP 503"], 6);
  EXPECT_DOUBLE_EQ(s["summary"]["latency_s"]["p99"].get<double>(), summary.latency.p99);
  EXPECT_DOUBLE_EQ(s["summary"]["images_per_s"].get<double>(), summary.images_per_s);
  EXPECT_EQ(s["samples"].size(), stages[0].samples.size());
  EXPECT_EQ(s["samples"][0].size(), doc["sample_fields"].size());
  EXPECT_FALSE(s["time_series"].empty());
  EXPECT_EQ(doc["settings"]["api"], "sdapi");
  EXPECT_NE(doc["percentile_method"].get<std::string>().find("linear interpolation"), std::string::npos);
}

TEST(TextReport, TablesAndProgressLine) {
  StageResult stage = synthetic_stage(3, 9, 2);
  std::string table = format_stage_table(stage, summarize(stage));
  EXPECT_NE(table.find("60 sent, 54 ok, 6 failed"), std::string::npos) << table;
  EXPECT_NE(table.find("HTTP 503"), std::string::npos);
  EXPECT_NE(table.find("p99"), std::string::npos);
  EXPECT_NE(table.find("time to 1st byte"), std::string::npos);
  std::string sweep = format_sweep_table({stage, synthetic_stage(6, 2, 0)}, "users");
  EXPECT_EQ(count_occurrences(sweep, "\n"), 3);
  ProgressSnapshot p;
  p.label = "users=3";
  p.elapsed_s = 2;
  p.succeeded = 10;
  p.failed = 1;
  p.in_flight = 3;
  p.images = 10;
  p.latency_p50_s = 0.25;
  std::string line = format_progress_line(p);
  EXPECT_NE(line.find("done 10"), std::string::npos) << line;
  EXPECT_NE(line.find("failed 1"), std::string::npos);
  EXPECT_NE(line.find("in flight 3"), std::string::npos);
  EXPECT_NE(line.find("5.00 images/s"), std::string::npos);
  EXPECT_NE(line.find("250.0 ms"), std::string::npos);
}

TEST(Svg, FormatNumberAndEscape) {
  EXPECT_EQ(format_number(0), "0");
  EXPECT_EQ(format_number(12), "12");
  EXPECT_EQ(format_number(1.234), "1.23");
  EXPECT_EQ(format_number(0.0421), "0.0421");
  EXPECT_EQ(xml_escape("a<b>&\"'"), "a&lt;b&gt;&amp;&quot;&#39;");
}

}  // namespace
}  // namespace sd::loadtest
