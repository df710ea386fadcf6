// JSON rendering of ApiError and the Status -> HTTP mapping used by every API front end.
// 503s carry Retry-After so load balancers and clients back off instead of hammering.
// Messages come from our own code (never internal paths or identifiers).
#include "serving/api_error.h"

#include <nlohmann/json.hpp>

namespace sd::serving {

std::string ApiError::body() const {
  nlohmann::json error = {{"code", code},
                          {"message", message},
                          {"type", http_status >= 500 ? "server_error" : "invalid_request_error"},
                          {"param", param.empty() ? nlohmann::json(nullptr) : nlohmann::json(param)}};
  return nlohmann::json{{"error", error}}.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

ApiError error_from_status(const Status& status, int retry_after_s) {
  switch (status.code()) {
    case StatusCode::kInvalidArgument:
      return ApiError{400, "invalid_request", status.message(), {}, 0};
    case StatusCode::kOutOfRange:
      return ApiError{400, "out_of_range", status.message(), {}, 0};
    case StatusCode::kNotFound:
      return ApiError{404, "not_found", status.message(), {}, 0};
    case StatusCode::kResourceExhausted:  // the queue, or the device's memory
      if (status.message().find("out of GPU memory") != std::string::npos) {
        return ApiError{503, "out_of_memory", status.message(), {}, retry_after_s};
      }
      return ApiError{503, "queue_full", status.message(), {}, retry_after_s};
    case StatusCode::kUnavailable:
      return ApiError{503, "unavailable", status.message(), {}, retry_after_s};
    case StatusCode::kDeadlineExceeded:
      return ApiError{503, "queue_timeout", status.message(), {}, retry_after_s};
    case StatusCode::kCancelled:
      return ApiError{503, "cancelled", status.message(), {}, retry_after_s};
    case StatusCode::kUnimplemented:
      return ApiError{501, "unimplemented", status.message(), {}, 0};
    default:
      return ApiError{500, "internal", status.message(), {}, 0};
  }
}

}  // namespace sd::serving
