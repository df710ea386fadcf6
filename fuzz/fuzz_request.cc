// libFuzzer target for the server's request parsing and validation: A1111 txt2img JSON,
// OpenAI images/generations JSON and "WxH" size strings. The first byte picks the parser;
// accepted requests must satisfy GenerationRequest::validate() and every limit.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "serving/request_parsing.h"

namespace {

void check(const sd::serving::Expected<sd::serving::GenerationParams>& p, const sd::RequestLimits& limits) {
  if (!p.ok()) {
    const auto& e = p.error();
    if (e.http_status < 400 || e.http_status > 499 || e.code.empty() || e.message.empty()) std::abort();
    (void)e.body();  // must serialize whatever the input was
    return;
  }
  const sd::GenerationRequest& r = p->request;
  if (!r.validate(limits).ok()) std::abort();
  if (r.width % 8 || r.height % 8 || r.width < limits.min_size || r.height > limits.max_size) std::abort();
  if (r.batch_size < 1 || r.batch_size > limits.max_batch_size) std::abort();
  if (sd::serving::utf8_length(r.prompt) > limits.max_prompt_chars) std::abort();
  (void)p->parameters.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  static const sd::RequestLimits limits;
  std::string_view body(reinterpret_cast<const char*>(data) + 1, size - 1);
  switch (data[0] % 3) {
    case 0:
      check(sd::serving::parse_txt2img(body, limits), limits);
      break;
    case 1:
      check(sd::serving::parse_openai_generation(body, limits, 512), limits);
      break;
    default: {
      auto wh = sd::serving::parse_size(body, limits, 512);
      if (wh.ok() && (wh->first % 8 || wh->second % 8 || wh->first < limits.min_size || wh->second > limits.max_size))
        std::abort();
      break;
    }
  }
  return 0;
}
