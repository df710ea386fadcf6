// sum_metric: a line scan of the Prometheus text format (comments skipped, label sets skipped
// with quotes and escapes honoured, the value read with strtod). No Boost here: the fuzz build
// compiles this file into fuzz_prometheus_text.
#include "loadtest/prometheus_text.h"

#include <cmath>
#include <cstdlib>
#include <sstream>

namespace sd::loadtest {

std::optional<double> sum_metric(const std::string& body, const std::string& family) {
  std::istringstream lines(body);
  std::optional<double> sum;
  for (std::string line; std::getline(lines, line);) {
    if (line.empty() || line[0] == '#' || line.compare(0, family.size(), family) != 0) continue;
    size_t i = family.size();
    if (i < line.size() && line[i] == '{') {  // labels: skip to the closing brace outside quotes
      bool quoted = false;
      for (++i; i < line.size(); ++i) {
        if (quoted && line[i] == '\\') ++i;
        else if (line[i] == '"') quoted = !quoted;
        else if (!quoted && line[i] == '}') break;
      }
      if (i >= line.size()) continue;
      ++i;
    }
    if (i >= line.size() || line[i] != ' ') continue;  // another family with this prefix
    const char* start = line.c_str() + i + 1;
    char* end = nullptr;
    const double v = std::strtod(start, &end);
    if (end == start || !std::isfinite(v)) continue;  // NaN / Inf samples say nothing to add up
    sum = sum.value_or(0) + v;
  }
  if (sum && !std::isfinite(*sum)) return std::nullopt;  // finite samples that overflow together
  return sum;
}

}  // namespace sd::loadtest
