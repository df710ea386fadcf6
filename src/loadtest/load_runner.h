// Runs one load stage against a server: closed loop (N virtual users, each sending its next
// request when the last returns, one keep-alive connection each) or open loop (Poisson
// arrivals from a seeded RNG, pooled connections), on a small Asio thread pool.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "core/size_list.h"
#include "core/status.h"
#include "loadtest/api_protocol.h"
#include "loadtest/report.h"
#include "loadtest/sample.h"
#include "loadtest/url.h"

namespace sd::loadtest {

struct ClientOptions {
  Url url;
  Api api = Api::kSdapi;
  GenerationSettings generation;
  std::vector<std::string> prompts;  // request k uses prompts[k % size]; empty = built-in list
  std::vector<ImageSize> sizes;      // request k asks for sizes[k % size]; empty = generation's
  std::string api_key;               // sent as "Authorization: Bearer KEY" when not empty
  int64_t seed = 1;                  // request k uses seed + k; < 0 lets the server pick
  double timeout_s = 600;            // whole request (jobs: submission to done event)
  double connect_timeout_s = 10;
  int threads = 2;                   // Asio I/O threads
  uint64_t arrival_seed = 1;         // open loop schedule
  int64_t max_in_flight = 10000;     // open loop: arrivals beyond this are not sent (counted)
  double failure_backoff_s = 0.1;    // closed loop: a user pauses this long after a failed connect
  const std::atomic<bool>* interrupt = nullptr;  // set (e.g. by SIGINT): stop sending, finish in flight
};

struct StageSpec {
  std::string label;
  int users = 0;         // > 0: closed loop
  double rate = 0;       // > 0: open loop (requests per second)
  double duration_s = 0; // > 0: stop sending after this long
  int64_t requests = 0;  // > 0: send this many (whichever limit comes first)
};

using ProgressFn = std::function<void(const ProgressSnapshot&)>;

// Sends the stage's load and waits for every request to end (answer, error or timeout).
// Errors only for what prevents starting at all (bad spec, unresolvable host).
// `progress` (may be empty) is called from the calling thread every progress_interval_s.
StatusOr<StageResult> run_stage(const ClientOptions& options, const StageSpec& spec, const ProgressFn& progress,
                                double progress_interval_s = 0.25);

}  // namespace sd::loadtest
