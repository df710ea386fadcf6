// ApiError: the one shape every 4xx/5xx response of the server takes,
// {"error": {"code", "message", "type", "param"}} (OpenAI's error object, which A1111
// clients also read), plus the mapping from an engine/scheduler Status to HTTP.
#pragma once

#include <string>
#include <utility>

#include "core/status.h"

namespace sd::serving {

struct ApiError {
  int http_status = 400;
  std::string code;     // machine-readable, e.g. "out_of_range", "queue_full"
  std::string message;  // names the field and the allowed values
  std::string param;    // the request field at fault, empty if none
  int retry_after_s = 0;  // > 0: sent as a Retry-After header (503)

  // The JSON body: {"error":{"code","message","type","param"}}.
  std::string body() const;
};

inline ApiError bad_request(std::string code, std::string message, std::string param = {}) {
  return ApiError{400, std::move(code), std::move(message), std::move(param), 0};
}

// Maps a Status from the scheduler or the engine to an ApiError (queue full, draining and
// queue timeouts are 503 with Retry-After; user errors 400; everything else 500).
ApiError error_from_status(const Status& status, int retry_after_s);

// A value or the ApiError that explains why there is none.
template <typename T>
class Expected {
 public:
  Expected(T value) : value_(std::move(value)), ok_(true) {}  // NOLINT(implicit)
  Expected(ApiError error) : error_(std::move(error)), ok_(false) {}  // NOLINT(implicit)
  bool ok() const { return ok_; }
  const ApiError& error() const { return error_; }
  T& value() { return value_; }
  const T& value() const { return value_; }
  T* operator->() { return &value_; }
  const T* operator->() const { return &value_; }

 private:
  T value_{};
  ApiError error_;
  bool ok_;
};

}  // namespace sd::serving
