// Reading numbers out of a Prometheus text-format body (what a server's /metrics returns; the
// load generator's energy figures come from it). Bytes from the network: any input is safe
// (fuzz/fuzz_prometheus_text.cc).
#pragma once

#include <optional>
#include <string>

namespace sd::loadtest {

// Sum of the samples of metric `family` (no labels or any labels) in a Prometheus text body;
// nullopt when it has none (or their sum overflows). Samples whose value is not a finite number
// are skipped.
std::optional<double> sum_metric(const std::string& body, const std::string& family);

}  // namespace sd::loadtest
