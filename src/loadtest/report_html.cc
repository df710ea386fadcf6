// --report: one self-contained HTML page (inline CSS and SVG; no scripts, no external
// assets). A run summary, then for a sweep the sweep table and the throughput / p99 latency
// against load chart, then per stage its table and four plots.
#include <algorithm>
#include <cstdio>

#include "loadtest/report.h"
#include "loadtest/svg_plot.h"

namespace sd::loadtest {

namespace {

std::string cell(const std::string& text, bool header = false) {
  return header ? "<th>" + xml_escape(text) + "</th>" : "<td>" + xml_escape(text) + "</td>";
}

std::string ms(double s) { return s >= 0 ? format_number(s * 1e3) : "-"; }

std::string sweep_section(const RunDescription& run, const std::vector<StageResult>& stages) {
  std::string h = "<h2>Sweep over " + xml_escape(run.sweep_variable) + "</h2>\n<table>\n<tr>";
  for (const char* name : {run.sweep_variable.c_str(), "requests", "ok", "failed", "req/s", "images/s", "p50 ms", "p90 ms",
                           "p99 ms", "max ms", "peak in flight"})
    h += cell(name, true);
  h += "</tr>\n";
  Series images{"images/s", "#1f77b4", {}, Series::Style::kLinePoints, false};
  Series requests{"requests/s", "#2ca02c", {}, Series::Style::kLinePoints, false};
  Series p99{"p99 latency (s)", "#d62728", {}, Series::Style::kLinePoints, true};
  Series p50{"p50 latency (s)", "#ff7f0e", {}, Series::Style::kLinePoints, true};
  for (const StageResult& stage : stages) {
    StageSummary s = summarize(stage);
    double x = stage_load_value(stage);
    h += "<tr>" + cell(format_number(x)) + cell(std::to_string(s.sent)) + cell(std::to_string(s.succeeded)) +
         cell(std::to_string(s.failed)) + cell(format_number(s.requests_per_s)) + cell(format_number(s.images_per_s)) +
         cell(ms(s.latency.p50)) + cell(ms(s.latency.p90)) + cell(ms(s.latency.p99)) + cell(ms(s.latency.max)) +
         cell(std::to_string(s.max_in_flight)) + "</tr>\n";
    images.points.emplace_back(x, s.images_per_s);
    requests.points.emplace_back(x, s.requests_per_s);
    if (s.latency.count > 0) {
      p99.points.emplace_back(x, s.latency.p99);
      p50.points.emplace_back(x, s.latency.p50);
    }
  }
  h += "</table>\n";
  ChartSpec chart;
  chart.title = "Throughput and latency against " + run.sweep_variable + " (batching in practice)";
  chart.x_label = run.sweep_variable == "users" ? "concurrent users (log2 scale)" : "target arrival rate, req/s (log2 scale)";
  chart.y_label = "throughput (per second)";
  chart.y2_label = "latency (s)";
  bool same = images.points == requests.points;  // one image per request
  if (same) images.name = "images/s = requests/s";
  chart.series = same ? std::vector<Series>{images, p50, p99} : std::vector<Series>{images, requests, p50, p99};
  chart.log2_x = true;
  h += "<figure>" + render_chart_svg(chart) + "</figure>\n";
  return h;
}

std::string stage_section(const StageResult& stage) {
  StageSummary s = summarize(stage);
  std::string h = "<h2>Stage " + xml_escape(stage.label) + "</h2>\n";
  std::string mode = stage.users > 0 ? "closed loop, " + std::to_string(stage.users) + (stage.users == 1 ? " virtual user" : " virtual users")
                                     : "open loop, Poisson arrivals at " + format_number(stage.rate) + " req/s";
  h += "<p>" + xml_escape(mode) + ", " + format_number(s.elapsed_s) + " s.</p>\n<table>\n";
  auto row = [&](const std::string& k, const std::string& v) { h += "<tr>" + cell(k, true) + cell(v) + "</tr>\n"; };
  row("requests", std::to_string(s.sent) + " sent, " + std::to_string(s.succeeded) + " ok, " + std::to_string(s.failed) +
                      " failed");
  row("images", std::to_string(s.images));
  row("throughput", format_number(s.requests_per_s) + " req/s, " + format_number(s.images_per_s) + " images/s");
  auto dist = [&](const Distribution& d) {
    if (d.count == 0) return std::string("-");
    return "p50 " + ms(d.p50) + " ms, p90 " + ms(d.p90) + " ms, p99 " + ms(d.p99) + " ms, max " + ms(d.max) +
           " ms (mean " + ms(d.mean) + " ms)";
  };
  row("latency", dist(s.latency));
  row("time to first byte", dist(s.ttfb));
  row("peak in flight", std::to_string(s.max_in_flight));
  if (stage.device_energy_j >= 0) {  // from the server's /metrics energy counters
    std::string e = format_number(stage.device_energy_j) + " J";
    if (s.energy_j_per_image >= 0) e += ", " + format_number(s.energy_j_per_image) + " J an image";
    if (s.device_power_w >= 0) e += ", " + format_number(s.device_power_w) + " W mean";
    row("device energy", e);
  }
  h += "</table>\n";
  if (!s.errors.empty()) {
    h += "<h3>Errors by status</h3>\n<table>\n<tr>" + cell("error", true) + cell("count", true) + cell("example", true) +
         "</tr>\n";
    for (const auto& [key, count] : s.errors) {
      auto ex = stage.error_examples.find(key);
      h += "<tr>" + cell(key) + cell(std::to_string(count)) +
           cell(ex == stage.error_examples.end() ? "" : ex->second.substr(0, 300)) + "</tr>\n";
    }
    h += "</table>\n";
  }

  std::vector<double> latencies;
  for (const Sample& x : stage.samples)
    if (x.ok()) latencies.push_back(x.latency_s());
  h += "<figure>" + render_histogram_svg(make_histogram(latencies, 40), "Latency histogram (successful requests)",
                                         "latency (s)", "requests") +
       "</figure>\n";

  std::vector<TimeBucket> buckets = time_series(stage);
  Series images{"images/s", "#1f77b4", {}, Series::Style::kLine, false};
  Series requests{"requests/s", "#2ca02c", {}, Series::Style::kLine, false};
  Series failed{"failed/s", "#d62728", {}, Series::Style::kLine, false};
  Series in_flight{"in flight (mean)", "#9467bd", {}, Series::Style::kLine, true};
  Series p50{"p50 of bucket", "#ff7f0e", {}, Series::Style::kLine, false};
  Series p99{"p99 of bucket", "#d62728", {}, Series::Style::kLine, false};
  bool any_failed = false;
  for (const TimeBucket& b : buckets) {
    double mid = 0.5 * (b.t0 + b.t1);
    images.points.emplace_back(mid, b.images_per_s);
    requests.points.emplace_back(mid, b.requests_per_s);
    failed.points.emplace_back(mid, static_cast<double>(b.failed) / std::max(1e-9, b.t1 - b.t0));
    any_failed = any_failed || b.failed > 0;
    in_flight.points.emplace_back(mid, b.mean_in_flight);
    if (b.latency_p50 >= 0) {
      p50.points.emplace_back(mid, b.latency_p50);
      p99.points.emplace_back(mid, b.latency_p99);
    }
  }
  ChartSpec tp;
  tp.title = "Throughput and requests in flight over time";
  tp.x_label = "time since stage start (s)";
  tp.y_label = "per second";
  tp.y2_label = "requests in flight";
  if (images.points == requests.points) {
    images.name = "images/s = requests/s";
    tp.series = {images};
  } else {
    tp.series = {images, requests};
  }
  if (any_failed) tp.series.push_back(failed);
  tp.series.push_back(in_flight);
  h += "<figure>" + render_chart_svg(tp) + "</figure>\n";

  // Every request as a point (at most 5000, evenly thinned) plus per-bucket p50/p99 lines.
  Series points{"request", "#7f7f7f", {}, Series::Style::kPoints, false};
  size_t ok_count = latencies.size(), stride = std::max<size_t>(1, (ok_count + 4999) / 5000), k = 0;
  for (const Sample& x : stage.samples) {
    if (!x.ok()) continue;
    if (k++ % stride == 0) points.points.emplace_back(x.end_s, x.latency_s());
  }
  ChartSpec lt;
  lt.title = "Latency over time (by completion time)";
  lt.x_label = "time since stage start (s)";
  lt.y_label = "latency (s)";
  lt.series = {points, p50, p99};
  h += "<figure>" + render_chart_svg(lt) + "</figure>\n";
  return h;
}

}  // namespace

std::string render_html_report(const RunDescription& run, const std::vector<StageResult>& stages) {
  std::string h =
      "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>sdserve load test report</title>\n"
      "<style>\nbody{font-family:sans-serif;margin:24px;color:#222;max-width:1000px}\n"
      "table{border-collapse:collapse;margin:8px 0 16px}\nth,td{border:1px solid #ccc;padding:3px 8px;text-align:left;"
      "font-size:13px}\nth{background:#f3f3f3}\nfigure{margin:8px 0 20px}\nsvg.chart{border:1px solid #ddd}\n"
      "p.note{font-size:12px;color:#555}\n</style>\n</head>\n<body>\n<h1>sdserve load test report</h1>\n<table>\n";
  for (const auto& [key, value] : run.settings) h += "<tr>" + cell(key, true) + cell(value) + "</tr>\n";
  h += "</table>\n<p class=\"note\">" + xml_escape(kPercentileMethod) +
       " Latency: sending the request to the complete answer (jobs API: submission to the done event). "
       "Time to first byte: sending the request to the first response byte (jobs API: of the 202 reply). "
       "Throughput: successful requests (images) divided by the stage's wall time, which runs until the last "
       "answer.</p>\n";
  if (!run.sweep_variable.empty()) h += sweep_section(run, stages);
  for (const StageResult& stage : stages) h += stage_section(stage);
  h += "</body>\n</html>\n";
  return h;
}

}  // namespace sd::loadtest
