// Open-loop arrival schedules and sweep specifications. PoissonArrivals draws exponential
// inter-arrival gaps from a seeded mt19937_64 by inversion, so a seed reproduces the exact
// schedule on every platform; parse_sweep reads "users=1,2,4" / "rate=0.5,1,2".
#pragma once

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "core/status.h"

namespace sd::loadtest {

class PoissonArrivals {
 public:
  PoissonArrivals(double rate_per_s, uint64_t seed);
  // Seconds from the schedule start to the next arrival (strictly increasing).
  double next();

 private:
  std::mt19937_64 rng_;
  double rate_;
  double t_ = 0;
};

struct Sweep {
  std::string variable;  // "users" or "rate"
  std::vector<double> values;
};
// "users=1,2,4,8" (positive integers) or "rate=0.5,1,2" (positive numbers), at most 64 values.
StatusOr<Sweep> parse_sweep(const std::string& text);

}  // namespace sd::loadtest
