// What one load stage records: a Sample per request (timing relative to the stage start,
// HTTP status, outcome, images) and the StageResult holding them all with the stage's
// parameters. error_key() names the row a failed request counts under in "errors by status".
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace sd::loadtest {

enum class Outcome {
  kOk,               // 2xx and a well-formed reply carrying images
  kHttpError,        // a 4xx/5xx (or other non-success) status
  kTimeout,          // no complete answer within --timeout (stalled server)
  kConnectTimeout,   // TCP connect did not finish within --connect-timeout
  kRefused,          // connection refused (nothing listening)
  kUnreachable,      // host or network unreachable
  kConnectionError,  // reset, closed mid-answer, other socket errors
  kBadResponse,      // 2xx but the body is not what the API promises
  kJobError,         // jobs API: the events stream ended in an `error` event
  kClientLimit,      // open loop: not sent, --max-in-flight requests were already waiting
};

struct Sample {
  double start_s = 0;   // since the stage started
  double end_s = 0;     // answer complete (or failure noticed)
  double ttfb_s = -1;   // first response byte after start_s; -1 when none arrived
  int http_status = 0;  // 0 when no status line arrived
  Outcome outcome = Outcome::kOk;
  int images = 0;
  int width = 0, height = 0;  // the image size it asked for

  bool ok() const { return outcome == Outcome::kOk; }
  double latency_s() const { return end_s - start_s; }
};

// "" for kOk, "HTTP 503", "timeout", "connection refused", ...
std::string error_key(const Sample& sample);

struct StageResult {
  std::string label;     // "users=4", "rate=2/s"
  int users = 0;         // closed loop: virtual users (0 for open loop)
  double rate = 0;       // open loop: target arrivals per second (0 for closed loop)
  double elapsed_s = 0;  // stage start to the last answer
  // The server's devices over the stage (sd_device_energy_joules_total in /metrics before and
  // after it); < 0 when the server reports none.
  double device_energy_j = -1;
  std::vector<Sample> samples;                        // in completion order
  std::map<std::string, std::string> error_examples;  // error key -> first message seen
};

}  // namespace sd::loadtest
