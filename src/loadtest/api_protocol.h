// The three server APIs as the load generator speaks them: route and JSON body of a
// generation request, parsing of replies (images counted, job id, error message from
// {"error": {"code", "message"}}), and an incremental Server-Sent Events parser.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"

namespace sd::loadtest {

enum class Api { kSdapi, kOpenai, kJobs };
StatusOr<Api> parse_api(const std::string& name);  // "sdapi" | "openai" | "jobs"
const char* api_name(Api api);
// Route of the request that submits work: /sdapi/v1/txt2img, /v1/images/generations, /v1/jobs.
const char* submit_route(Api api);

struct GenerationSettings {
  int steps = 20;
  int width = 512;
  int height = 512;
  int batch_size = 1;  // images per request (batch_size / n)
  std::string sampler = "Euler a";
  double cfg_scale = 7.0;
  std::string negative_prompt;
};

// JSON body of one generation request. seed < 0 asks the server for a random seed.
std::string request_body(Api api, const GenerationSettings& settings, const std::string& prompt, int64_t seed);

struct Reply {
  bool ok = false;
  int images = 0;
  std::string job_id;  // jobs API submission
  std::string error;   // why !ok (server message or what was malformed)
};
// Reply to the submitting request. sdapi: 200 {images: [...]}; openai: 200 {data: [...]};
// jobs: 202 {id}. Non-success statuses carry the server's error message.
Reply parse_submit_reply(Api api, int status, const std::string& body);

// "code: message" from {"error": {"code", "message"}}, else the body's first 200 bytes.
std::string error_message(const std::string& body);

struct SseEvent {
  std::string event = "message";
  std::string data;  // data lines joined with '\n'
};

// Feed bytes as they arrive; complete events come back (comments and pings dropped).
class SseParser {
 public:
  std::vector<SseEvent> feed(std::string_view bytes);

 private:
  std::string pending_;  // bytes of an incomplete line
  SseEvent current_;
  bool has_data_ = false;
};

// Outcome of a jobs-API event: terminal (done or error) or not; for done, the image count.
struct JobEventResult {
  bool terminal = false;
  bool ok = false;
  int images = 0;
  std::string error;
};
JobEventResult interpret_job_event(const SseEvent& event);

// Prompts: one per non-empty line of a file (trailing '\r' removed), or the built-in list.
StatusOr<std::vector<std::string>> load_prompts(const std::string& path);
const std::vector<std::string>& builtin_prompts();

}  // namespace sd::loadtest
