// libFuzzer target: arbitrary bytes as a server's /metrics body for the load generator's
// Prometheus reader (loadtest/prometheus_text.h): it must not crash, and a sum it returns is a
// finite number, the same as the sum of the lines it accepted one at a time.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <sstream>
#include <string>

#include "loadtest/prometheus_text.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string body(reinterpret_cast<const char*>(data), size);
  for (const char* family : {"sd_device_energy_joules_total", "sd_images_total", "a", ""}) {
    const std::optional<double> sum = sd::loadtest::sum_metric(body, family);
    if (!sum) continue;
    if (!std::isfinite(*sum)) std::abort();
    double by_line = 0;
    bool any = false;
    std::istringstream lines(body);
    for (std::string line; std::getline(lines, line);) {
      if (const auto v = sd::loadtest::sum_metric(line, family)) by_line += *v, any = true;
    }
    if (!any || !(std::abs(by_line - *sum) <= 1e-9 * (1 + std::abs(*sum)))) std::abort();
  }
  return 0;
}
