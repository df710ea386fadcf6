// Exact statistics over all samples of a load stage: percentiles by linear interpolation
// between closest ranks (numpy's default, Hyndman-Fan type 7), distributions (count, min,
// mean, p50/p90/p99, max), fixed-width histograms and "nice" axis steps for plots.
#pragma once

#include <cstdint>
#include <vector>

namespace sd::loadtest {

// p in [0, 100] of an ascending vector: with h = (n - 1) * p / 100, returns
// x[floor(h)] + (h - floor(h)) * (x[floor(h) + 1] - x[floor(h)]). NaN when empty.
double percentile_sorted(const std::vector<double>& sorted, double p);

struct Distribution {
  int64_t count = 0;
  double min = 0, mean = 0, p50 = 0, p90 = 0, p99 = 0, max = 0;  // all 0 when count == 0
};
Distribution describe(std::vector<double> values);

// The median of a vector that is not sorted (copies; O(n)). NaN when empty.
double median(std::vector<double> values);

struct Histogram {
  double lo = 0;     // left edge of bin 0
  double width = 1;  // bin width (a "nice" number)
  std::vector<int64_t> counts;
};
// Bins of one nice width covering [min, max] of the values with at most max_bins bins.
Histogram make_histogram(const std::vector<double>& values, int max_bins);

// A step of 1, 2 or 5 times a power of ten so that span / step is about `target` (>= 1).
double nice_step(double span, int target);

}  // namespace sd::loadtest
