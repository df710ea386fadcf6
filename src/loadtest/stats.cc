// Percentiles, distributions, histograms and nice steps (see stats.h for the definitions).
// Everything is exact over the full sample set: load stages hold at most millions of
// samples, so sorting them costs milliseconds and no sketch is needed.
#include "loadtest/stats.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

namespace sd::loadtest {

double percentile_sorted(const std::vector<double>& sorted, double p) {
  if (sorted.empty()) return std::numeric_limits<double>::quiet_NaN();
  p = std::clamp(p, 0.0, 100.0);
  double h = static_cast<double>(sorted.size() - 1) * p / 100.0;
  size_t lo = static_cast<size_t>(std::floor(h));
  size_t hi = std::min(lo + 1, sorted.size() - 1);
  return sorted[lo] + (h - static_cast<double>(lo)) * (sorted[hi] - sorted[lo]);
}

Distribution describe(std::vector<double> values) {
  Distribution d;
  if (values.empty()) return d;
  std::sort(values.begin(), values.end());
  d.count = static_cast<int64_t>(values.size());
  d.min = values.front();
  d.max = values.back();
  d.mean = std::accumulate(values.begin(), values.end(), 0.0) / static_cast<double>(values.size());
  d.p50 = percentile_sorted(values, 50);
  d.p90 = percentile_sorted(values, 90);
  d.p99 = percentile_sorted(values, 99);
  return d;
}

double median(std::vector<double> values) {
  if (values.empty()) return std::numeric_limits<double>::quiet_NaN();
  size_t n = values.size();
  auto mid = values.begin() + static_cast<std::ptrdiff_t>((n - 1) / 2);
  std::nth_element(values.begin(), mid, values.end());
  double lower = *mid;
  if (n % 2 == 1) return lower;
  double upper = *std::min_element(mid + 1, values.end());
  return 0.5 * (lower + upper);
}

double nice_step(double span, int target) {
  if (!(span > 0) || !std::isfinite(span)) return 1;
  double raw = span / std::max(1, target);
  double power = std::pow(10.0, std::floor(std::log10(raw)));
  double f = raw / power;
  double nice = f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10;
  return nice * power;
}

Histogram make_histogram(const std::vector<double>& values, int max_bins) {
  Histogram h;
  if (values.empty()) return h;
  max_bins = std::max(1, max_bins);
  auto [min_it, max_it] = std::minmax_element(values.begin(), values.end());
  double lo = *min_it, hi = *max_it;
  double span = hi - lo;
  if (span <= 0) span = std::max(std::abs(lo) * 0.1, 1e-3);
  double width = nice_step(span, max_bins);
  // The nice step rounds up, but aligning lo down to it can still need one bin more.
  while (true) {
    double start = std::floor(lo / width) * width;
    int bins = static_cast<int>(std::floor((hi - start) / width)) + 1;
    if (bins <= max_bins) {
      h.lo = start;
      h.width = width;
      h.counts.assign(static_cast<size_t>(bins), 0);
      break;
    }
    width = nice_step(width * 1.5 * max_bins, max_bins);
  }
  for (double v : values) {
    auto bin = static_cast<size_t>(std::floor((v - h.lo) / h.width));
    h.counts[std::min(bin, h.counts.size() - 1)]++;
  }
  return h;
}

}  // namespace sd::loadtest
