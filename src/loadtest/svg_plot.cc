// SVG chart rendering: a plot frame with ticks and gridlines, then series as polylines or
// circles, legend along the top. Coordinates are written with one decimal, so even a chart
// of thousands of points stays a few hundred kilobytes.
#include "loadtest/svg_plot.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <set>

namespace sd::loadtest {

std::string xml_escape(const std::string& text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return out;
}

std::string format_number(double v) {
  if (!std::isfinite(v)) return "-";
  char buf[32];
  double a = std::abs(v);
  if (a != 0 && (a >= 1e7 || a < 1e-3)) {
    std::snprintf(buf, sizeof buf, "%.2e", v);
  } else if (a >= 100 || v == std::floor(v)) {
    std::snprintf(buf, sizeof buf, "%.0f", v);
  } else if (a >= 10) {
    std::snprintf(buf, sizeof buf, "%.1f", v);
  } else if (a >= 1) {
    std::snprintf(buf, sizeof buf, "%.2f", v);
  } else {
    std::snprintf(buf, sizeof buf, "%.3g", v);
  }
  return buf;
}

namespace {

std::string fmt(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f", v);
  return buf;
}

struct Axis {
  double lo = 0, hi = 1;
  std::vector<double> ticks;
};

// 0..max with nice ticks (all our quantities are non-negative).
Axis zero_based_axis(double max_value) {
  Axis a;
  if (!(max_value > 0) || !std::isfinite(max_value)) max_value = 1;
  double step = nice_step(max_value, 5);
  a.hi = std::ceil(max_value / step - 1e-9) * step;
  if (a.hi < max_value) a.hi += step;
  for (double t = 0; t <= a.hi + step * 1e-6; t += step) a.ticks.push_back(t);
  return a;
}

struct Frame {
  double left = 64, right = 20, top = 44, bottom = 46;
  int width, height;
  double plot_w() const { return width - left - right; }
  double plot_h() const { return height - top - bottom; }
};

void open_svg(std::string& s, const Frame& f, const std::string& title) {
  s += "<svg class=\"chart\" width=\"" + std::to_string(f.width) + "\" height=\"" + std::to_string(f.height) +
       "\" viewBox=\"0 0 " + std::to_string(f.width) + " " + std::to_string(f.height) +
       "\" role=\"img\" font-family=\"sans-serif\" font-size=\"11\">\n";
  s += "<title>" + xml_escape(title) + "</title>\n";
  s += "<rect x=\"0\" y=\"0\" width=\"" + std::to_string(f.width) + "\" height=\"" + std::to_string(f.height) +
       "\" fill=\"#ffffff\"/>\n";
  s += "<text x=\"" + fmt(f.left) + "\" y=\"16\" font-size=\"13\" font-weight=\"bold\">" + xml_escape(title) + "</text>\n";
}

void y_axis(std::string& s, const Frame& f, const Axis& a, const std::string& label, bool right) {
  double x = right ? f.width - f.right : f.left;
  for (double t : a.ticks) {
    double y = f.top + f.plot_h() * (1 - (t - a.lo) / (a.hi - a.lo));
    if (!right)
      s += "<line x1=\"" + fmt(f.left) + "\" y1=\"" + fmt(y) + "\" x2=\"" + fmt(f.width - f.right) + "\" y2=\"" +
           fmt(y) + "\" stroke=\"#e5e5e5\"/>\n";
    s += "<text x=\"" + fmt(right ? x + 5 : x - 5) + "\" y=\"" + fmt(y + 4) + "\" text-anchor=\"" +
         (right ? "start" : "end") + "\">" + format_number(t) + "</text>\n";
  }
  double cx = right ? f.width - 12 : 14, cy = f.top + f.plot_h() / 2;
  s += "<text x=\"" + fmt(cx) + "\" y=\"" + fmt(cy) + "\" text-anchor=\"middle\" transform=\"rotate(-90 " + fmt(cx) +
       " " + fmt(cy) + ")\">" + xml_escape(label) + "</text>\n";
}

void x_axis(std::string& s, const Frame& f, const std::vector<std::pair<double, std::string>>& ticks,
            const std::string& label) {
  double y = f.top + f.plot_h();
  s += "<line x1=\"" + fmt(f.left) + "\" y1=\"" + fmt(y) + "\" x2=\"" + fmt(f.width - f.right) + "\" y2=\"" + fmt(y) +
       "\" stroke=\"#333\"/>\n";
  s += "<line x1=\"" + fmt(f.left) + "\" y1=\"" + fmt(f.top) + "\" x2=\"" + fmt(f.left) + "\" y2=\"" + fmt(y) +
       "\" stroke=\"#333\"/>\n";
  for (const auto& [px, text] : ticks) {
    s += "<line x1=\"" + fmt(px) + "\" y1=\"" + fmt(y) + "\" x2=\"" + fmt(px) + "\" y2=\"" + fmt(y + 4) +
         "\" stroke=\"#333\"/>\n";
    s += "<text x=\"" + fmt(px) + "\" y=\"" + fmt(y + 16) + "\" text-anchor=\"middle\">" + xml_escape(text) + "</text>\n";
  }
  s += "<text x=\"" + fmt(f.left + f.plot_w() / 2) + "\" y=\"" + fmt(f.height - 6.0) + "\" text-anchor=\"middle\">" +
       xml_escape(label) + "</text>\n";
}

void no_data(std::string& s, const Frame& f) {
  s += "<text x=\"" + fmt(f.left + f.plot_w() / 2) + "\" y=\"" + fmt(f.top + f.plot_h() / 2) +
       "\" text-anchor=\"middle\" fill=\"#888\">no data</text>\n";
}

}  // namespace

std::string render_chart_svg(const ChartSpec& spec) {
  Frame f;
  f.width = spec.width;
  f.height = spec.height;
  bool has_right = std::any_of(spec.series.begin(), spec.series.end(), [](const Series& s) { return s.right_axis; });
  if (has_right) f.right = 64;
  std::string s;
  open_svg(s, f, spec.title);

  auto tx = [&](double x) { return spec.log2_x ? std::log2(std::max(x, 1e-12)) : x; };
  double xmin = INFINITY, xmax = -INFINITY, ymax_l = 0, ymax_r = 0;
  std::set<double> distinct_x;
  size_t points = 0;
  for (const Series& se : spec.series) {
    for (const auto& [x, y] : se.points) {
      if (!std::isfinite(x) || !std::isfinite(y) || (spec.log2_x && x <= 0)) continue;
      xmin = std::min(xmin, tx(x));
      xmax = std::max(xmax, tx(x));
      distinct_x.insert(x);
      (se.right_axis ? ymax_r : ymax_l) = std::max(se.right_axis ? ymax_r : ymax_l, y);
      ++points;
    }
  }
  if (!spec.log2_x) xmin = std::min(xmin, 0.0);
  if (points == 0) {
    xmin = 0;
    xmax = 1;
  }
  if (xmax <= xmin) xmax = xmin + 1;
  if (spec.log2_x && points > 0) {  // half a step of margin on both sides
    xmin -= 0.25;
    xmax += 0.25;
  }
  Axis left = zero_based_axis(ymax_l), right = zero_based_axis(ymax_r);
  auto px = [&](double x) { return f.left + f.plot_w() * (tx(x) - xmin) / (xmax - xmin); };
  auto py = [&](const Axis& a, double y) { return f.top + f.plot_h() * (1 - (y - a.lo) / (a.hi - a.lo)); };

  y_axis(s, f, left, spec.y_label, false);
  if (has_right) y_axis(s, f, right, spec.y2_label, true);
  std::vector<std::pair<double, std::string>> xticks;
  if (spec.log2_x) {
    for (double x : distinct_x) xticks.emplace_back(px(x), format_number(x));
  } else {
    Axis xa = zero_based_axis(xmax);
    double scale_hi = xmax;
    for (double t : xa.ticks)
      if (t <= scale_hi + 1e-9) xticks.emplace_back(px(t), format_number(t));
  }
  x_axis(s, f, xticks, spec.x_label);
  if (points == 0) no_data(s, f);

  double legend_x = f.left;
  for (const Series& se : spec.series) {
    const Axis& a = se.right_axis ? right : left;
    std::string pts;
    std::string circles;
    for (const auto& [x, y] : se.points) {
      if (!std::isfinite(x) || !std::isfinite(y) || (spec.log2_x && x <= 0)) continue;
      std::string cx = fmt(px(x)), cy = fmt(py(a, y));
      pts += cx + "," + cy + " ";
      if (se.style != Series::Style::kLine)
        circles += "<circle cx=\"" + cx + "\" cy=\"" + cy + "\" r=\"" +
                   (se.style == Series::Style::kPoints ? "1.8" : "3") + "\"/>";
    }
    s += "<g fill=\"" + se.color + "\" stroke=\"" + se.color + "\"><title>" + xml_escape(se.name) + "</title>\n";
    if (se.style != Series::Style::kPoints && !pts.empty())
      s += "<polyline fill=\"none\" stroke-width=\"1.8\" points=\"" + pts + "\"/>\n";
    if (!circles.empty()) s += circles + "\n";
    s += "</g>\n";
    s += "<rect x=\"" + fmt(legend_x) + "\" y=\"23\" width=\"10\" height=\"10\" fill=\"" + se.color + "\"/>";
    s += "<text x=\"" + fmt(legend_x + 14) + "\" y=\"32\">" + xml_escape(se.name) + "</text>\n";
    legend_x += 24 + 6.5 * static_cast<double>(se.name.size());
  }
  s += "</svg>\n";
  return s;
}

std::string render_histogram_svg(const Histogram& h, const std::string& title, const std::string& x_label,
                                 const std::string& y_label, int width, int height) {
  Frame f;
  f.width = width;
  f.height = height;
  std::string s;
  open_svg(s, f, title);
  int64_t peak = 0;
  for (int64_t c : h.counts) peak = std::max(peak, c);
  Axis y = zero_based_axis(static_cast<double>(peak));
  y_axis(s, f, y, y_label, false);
  size_t bins = std::max<size_t>(h.counts.size(), 1);
  double xlo = h.lo, xhi = h.lo + h.width * static_cast<double>(bins);
  auto px = [&](double x) { return f.left + f.plot_w() * (x - xlo) / (xhi - xlo); };
  std::vector<std::pair<double, std::string>> xticks;
  double step = nice_step(xhi - xlo, 6);
  for (double t = std::ceil(xlo / step) * step; t <= xhi + step * 1e-6; t += step) xticks.emplace_back(px(t), format_number(t));
  x_axis(s, f, xticks, x_label);
  if (h.counts.empty()) no_data(s, f);
  s += "<g fill=\"#4c78a8\">\n";
  for (size_t i = 0; i < h.counts.size(); ++i) {
    if (h.counts[i] == 0) continue;
    double x0 = px(h.lo + h.width * static_cast<double>(i)), x1 = px(h.lo + h.width * static_cast<double>(i + 1));
    double top = f.top + f.plot_h() * (1 - static_cast<double>(h.counts[i]) / y.hi);
    s += "<rect x=\"" + fmt(x0 + 0.5) + "\" y=\"" + fmt(top) + "\" width=\"" + fmt(std::max(0.5, x1 - x0 - 1)) +
         "\" height=\"" + fmt(f.top + f.plot_h() - top) + "\"><title>" +
         format_number(h.lo + h.width * static_cast<double>(i)) + "–" +
         format_number(h.lo + h.width * static_cast<double>(i + 1)) + ": " + std::to_string(h.counts[i]) +
         "</title></rect>\n";
  }
  s += "</g>\n</svg>\n";
  return s;
}

}  // namespace sd::loadtest
