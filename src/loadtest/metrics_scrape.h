// The server's device energy around a load-test stage: one GET of /metrics (its own short-lived
// connection, a 2 s limit) before and after, summing sd_device_energy_joules_total over the
// devices; the difference is what the stage cost, joules per image in the reports.
#pragma once

#include <optional>
#include <string>

#include "loadtest/load_runner.h"
#include "loadtest/prometheus_text.h"  // sum_metric

namespace sd::loadtest {

// GET <base>/metrics and sum_metric(sd_device_energy_joules_total); nullopt when the server cannot
// be reached, answers other than 200, or reports no energy counter.
std::optional<double> scrape_device_energy_j(const ClientOptions& options);

}  // namespace sd::loadtest
