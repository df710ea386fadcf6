// Pure-logic tests of sd_loadtest: percentiles on known samples (against a naive
// reference), distributions, histograms, Poisson schedules, summaries and time series.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>

#include "loadtest/arrivals.h"
#include "loadtest/stats.h"
#include "loadtest/summary.h"

namespace sd::loadtest {
namespace {

TEST(Percentile, KnownSamples) {
  std::vector<double> v = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};  // numpy.percentile(v, p)
  EXPECT_DOUBLE_EQ(percentile_sorted(v, 0), 1);
  EXPECT_DOUBLE_EQ(percentile_sorted(v, 50), 5.5);
  EXPECT_DOUBLE_EQ(percentile_sorted(v, 90), 9.1);
  EXPECT_NEAR(percentile_sorted(v, 99), 9.91, 1e-12);
  EXPECT_DOUBLE_EQ(percentile_sorted(v, 100), 10);
  std::vector<double> single = {3.25};
  EXPECT_DOUBLE_EQ(percentile_sorted(single, 50), 3.25);
  EXPECT_DOUBLE_EQ(percentile_sorted(single, 99), 3.25);
  EXPECT_TRUE(std::isnan(percentile_sorted({}, 50)));
  std::vector<double> two = {0.1, 0.3};
  EXPECT_NEAR(percentile_sorted(two, 50), 0.2, 1e-15);
  EXPECT_NEAR(percentile_sorted(two, 99), 0.298, 1e-15);
}

// Naive reference: the same definition computed with a full sort per query.
double reference_percentile(std::vector<double> v, double p) {
  std::sort(v.begin(), v.end());
  double h = (static_cast<double>(v.size()) - 1) * p / 100;
  double lo = std::floor(h), hi = std::ceil(h);
  return v[static_cast<size_t>(lo)] + (h - lo) * (v[static_cast<size_t>(hi)] - v[static_cast<size_t>(lo)]);
}

TEST(Percentile, DescribeMatchesReferenceOnRandomSamples) {
  std::mt19937 rng(7);
  std::lognormal_distribution<double> dist(0.0, 0.8);
  for (int n : {1, 2, 3, 17, 1000, 12345}) {
    std::vector<double> v(static_cast<size_t>(n));
    for (double& x : v) x = dist(rng);
    Distribution d = describe(v);
    EXPECT_EQ(d.count, n);
    EXPECT_DOUBLE_EQ(d.p50, reference_percentile(v, 50));
    EXPECT_DOUBLE_EQ(d.p90, reference_percentile(v, 90));
    EXPECT_DOUBLE_EQ(d.p99, reference_percentile(v, 99));
    EXPECT_DOUBLE_EQ(d.min, *std::min_element(v.begin(), v.end()));
    EXPECT_DOUBLE_EQ(d.max, *std::max_element(v.begin(), v.end()));
    EXPECT_NEAR(d.mean, std::accumulate(v.begin(), v.end(), 0.0) / n, 1e-12 * n);
    EXPECT_DOUBLE_EQ(median(v), reference_percentile(v, 50));
  }
  EXPECT_EQ(describe({}).count, 0);
}

TEST(Histogram, CountsEveryValueInNiceBins) {
  std::mt19937 rng(3);
  std::normal_distribution<double> dist(2.0, 0.5);
  std::vector<double> v(5000);
  for (double& x : v) x = dist(rng);
  Histogram h = make_histogram(v, 40);
  ASSERT_FALSE(h.counts.empty());
  EXPECT_LE(h.counts.size(), 40u);
  EXPECT_EQ(std::accumulate(h.counts.begin(), h.counts.end(), int64_t{0}), 5000);
  for (double x : v) {
    EXPECT_GE(x, h.lo);
    EXPECT_LE(x, h.lo + h.width * static_cast<double>(h.counts.size()));
  }
  double mantissa = h.width / std::pow(10.0, std::floor(std::log10(h.width)));
  EXPECT_TRUE(std::abs(mantissa - 1) < 1e-9 || std::abs(mantissa - 2) < 1e-9 || std::abs(mantissa - 5) < 1e-9) << h.width;
  Histogram same = make_histogram({1.5, 1.5, 1.5}, 10);
  EXPECT_EQ(std::accumulate(same.counts.begin(), same.counts.end(), int64_t{0}), 3);
}

TEST(NiceStep, OneTwoFive) {
  EXPECT_DOUBLE_EQ(nice_step(10, 5), 2);
  EXPECT_DOUBLE_EQ(nice_step(1, 4), 0.5);
  EXPECT_DOUBLE_EQ(nice_step(73, 6), 20);
  EXPECT_DOUBLE_EQ(nice_step(0, 5), 1);
}

TEST(PoissonArrivals, RateAndExponentialGapsFromSeed) {
  const double rate = 50;
  PoissonArrivals a(rate, 42);
  const int n = 100000;
  std::vector<double> gaps;
  double prev = 0;
  for (int i = 0; i < n; ++i) {
    double t = a.next();
    ASSERT_GT(t, prev);
    gaps.push_back(t - prev);
    prev = t;
  }
  double mean = prev / n;
  EXPECT_NEAR(1 / mean, rate, rate * 0.01);
  double var = 0;
  for (double g : gaps) var += (g - mean) * (g - mean);
  double cv = std::sqrt(var / n) / mean;  // 1 for an exponential distribution
  EXPECT_NEAR(cv, 1.0, 0.02);
  // Same seed, same schedule; another seed, another schedule.
  PoissonArrivals b(rate, 42), c(rate, 43);
  PoissonArrivals a2(rate, 42);
  double tb = 0, tc = 0, ta = 0;
  for (int i = 0; i < 10; ++i) {
    ta = a2.next();
    tb = b.next();
    tc = c.next();
  }
  EXPECT_EQ(ta, tb);
  EXPECT_NE(tb, tc);
}

TEST(Sweep, ParsesAndRejects) {
  auto s = parse_sweep("users=1,2,4,8,16,32");
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->variable, "users");
  EXPECT_EQ(s->values, (std::vector<double>{1, 2, 4, 8, 16, 32}));
  auto r = parse_sweep("rate=0.5,1.5");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->values, (std::vector<double>{0.5, 1.5}));
  for (const char* bad : {"users", "users=", "users=1,,2", "users=1.5", "users=0", "rate=-1", "threads=1,2", "users=a"}) {
    auto x = parse_sweep(bad);
    EXPECT_FALSE(x.ok()) << bad;
    if (!x.ok()) {
      EXPECT_NE(x.status().message().find("--sweep"), std::string::npos);
    }
  }
}

Sample make_sample(double start, double end, Outcome outcome = Outcome::kOk, int status = 200, int images = 1) {
  Sample s;
  s.start_s = start;
  s.end_s = end;
  s.ttfb_s = (end - start) * 0.9;
  s.outcome = outcome;
  s.http_status = status;
  s.images = outcome == Outcome::kOk ? images : 0;
  return s;
}

TEST(Summary, CountsAddUpAndErrorsByKey) {
  StageResult stage;
  stage.elapsed_s = 4;
  stage.samples = {make_sample(0, 1), make_sample(0, 2, Outcome::kOk, 200, 2), make_sample(1, 1.5, Outcome::kHttpError, 503),
                   make_sample(1, 3, Outcome::kHttpError, 503), make_sample(2, 2.1, Outcome::kHttpError, 500),
                   make_sample(2, 4, Outcome::kTimeout, 0), make_sample(3, 3.5)};
  StageSummary s = summarize(stage);
  EXPECT_EQ(s.sent, 7);
  EXPECT_EQ(s.succeeded, 3);
  EXPECT_EQ(s.failed, 4);
  EXPECT_EQ(s.succeeded + s.failed, s.sent);
  EXPECT_EQ(s.images, 4);
  EXPECT_DOUBLE_EQ(s.requests_per_s, 3.0 / 4);
  EXPECT_DOUBLE_EQ(s.images_per_s, 1.0);
  EXPECT_EQ(s.errors.at("HTTP 503"), 2);
  EXPECT_EQ(s.errors.at("HTTP 500"), 1);
  EXPECT_EQ(s.errors.at("timeout"), 1);
  EXPECT_EQ(s.latency.count, 3);
  EXPECT_DOUBLE_EQ(s.latency.p50, 1);  // latencies 1, 2, 0.5
  EXPECT_DOUBLE_EQ(s.latency.max, 2);
  EXPECT_EQ(s.max_in_flight, 3);  // e.g. at t = 1: [0, 2), [1, 1.5), [1, 3)
}

TEST(Summary, MaxOverlapTouchingIntervalsDoNotOverlap) {
  std::vector<Sample> v = {make_sample(0, 1), make_sample(1, 2), make_sample(2, 3)};
  EXPECT_EQ(max_overlap(v), 1);
  v.push_back(make_sample(0.5, 2.5));
  EXPECT_EQ(max_overlap(v), 2);
}

TEST(TimeSeries, InFlightAndThroughputPerBucket) {
  StageResult stage;
  stage.elapsed_s = 10;
  // Two requests always in flight: back-to-back 0.25 s requests on two "users".
  for (int u = 0; u < 2; ++u)
    for (int i = 0; i < 40; ++i) stage.samples.push_back(make_sample(i * 0.25, (i + 1) * 0.25));
  auto buckets = time_series(stage, 60);
  ASSERT_EQ(buckets.size(), 10u);  // 80 requests, ~8 per bucket
  int64_t total = 0;
  for (const TimeBucket& b : buckets) {
    EXPECT_NEAR(b.mean_in_flight, 2.0, 1e-9);
    EXPECT_NEAR(b.t1 - b.t0, 1.0, 1e-12);
    total += b.succeeded;
  }
  EXPECT_EQ(total, 80);
  // Completions on a bucket boundary land in the bucket starting there; t = 10 in the last one.
  EXPECT_EQ(buckets[0].succeeded, 6);
  EXPECT_EQ(buckets[5].succeeded, 8);
  EXPECT_DOUBLE_EQ(buckets[5].requests_per_s, 8.0);
  EXPECT_DOUBLE_EQ(buckets[5].latency_p50, 0.25);
  EXPECT_EQ(buckets[9].succeeded, 10);
  EXPECT_EQ(time_series(stage, 4).size(), 4u);
  StageResult empty;
  empty.elapsed_s = 2;
  auto one = time_series(empty);
  ASSERT_EQ(one.size(), 1u);
  EXPECT_EQ(one[0].latency_p50, -1);
}

}  // namespace
}  // namespace sd::loadtest
