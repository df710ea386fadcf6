// Inline SVG charts for the HTML report, generated as text (no JavaScript, no external
// assets): line/point charts with an optional right-hand axis and log2 x axis, and
// histograms. Axes use "nice" ticks; every label is XML-escaped.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "loadtest/stats.h"

namespace sd::loadtest {

struct Series {
  enum class Style { kLine, kPoints, kLinePoints };
  std::string name;
  std::string color = "#1f77b4";
  std::vector<std::pair<double, double>> points;  // (x, y)
  Style style = Style::kLine;
  bool right_axis = false;  // plotted against the y2 axis
};

struct ChartSpec {
  std::string title;
  std::string x_label, y_label, y2_label;  // y2_label used when a series is on the right axis
  std::vector<Series> series;
  int width = 760, height = 300;
  bool log2_x = false;  // x axis in log2 with a tick at every distinct x (concurrency sweeps)
};

std::string render_chart_svg(const ChartSpec& spec);
std::string render_histogram_svg(const Histogram& histogram, const std::string& title, const std::string& x_label,
                                 const std::string& y_label, int width = 760, int height = 300);

std::string xml_escape(const std::string& text);
// Compact number for labels: 3 significant digits, no exponent for ordinary magnitudes.
std::string format_number(double value);

}  // namespace sd::loadtest
