// Poisson arrivals (exponential gaps by inverse CDF from 53 random bits) and the --sweep
// parser. Kept free of I/O so the schedule's rate can be tested exactly.
#include "loadtest/arrivals.h"

#include <cmath>
#include <sstream>

#include "core/status.h"

namespace sd::loadtest {

PoissonArrivals::PoissonArrivals(double rate_per_s, uint64_t seed) : rng_(seed), rate_(rate_per_s) {
  SD_ASSERT(rate_per_s > 0, "arrival rate must be positive");
}

double PoissonArrivals::next() {
  double u = static_cast<double>(rng_() >> 11) * 0x1.0p-53;  // [0, 1)
  t_ += -std::log1p(-u) / rate_;
  return t_;
}

StatusOr<Sweep> parse_sweep(const std::string& text) {
  auto bad = [&](const std::string& why) { return InvalidArgument("--sweep '" + text + "': " + why); };
  size_t eq = text.find('=');
  if (eq == std::string::npos) return bad("expected users=1,2,4 or rate=0.5,1,2");
  Sweep sweep;
  sweep.variable = text.substr(0, eq);
  if (sweep.variable != "users" && sweep.variable != "rate") return bad("the variable must be 'users' or 'rate'");
  std::stringstream list(text.substr(eq + 1));
  std::string item;
  while (std::getline(list, item, ',')) {
    if (item.empty()) return bad("empty value in the list");
    char* end = nullptr;
    double v = std::strtod(item.c_str(), &end);
    if (end != item.c_str() + item.size() || !std::isfinite(v) || v <= 0)
      return bad("'" + item + "' is not a positive number");
    if (sweep.variable == "users" && (v != std::floor(v) || v > 1000000))
      return bad("'" + item + "' is not a whole number of users (1..1000000)");
    sweep.values.push_back(v);
  }
  if (sweep.values.empty()) return bad("no values");
  if (sweep.values.size() > 64) return bad("at most 64 stages");
  return sweep;
}

}  // namespace sd::loadtest
