// Status and StatusOr: how everything a user, a file or the device can cause is reported.
// Programmer errors use SD_ASSERT (abort with file:line); all other failures travel as a
// Status with a message that names the file, tensor or field involved.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <new>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <variant>

namespace sd {

enum class StatusCode {
  kOk = 0,
  kInvalidArgument,    // bad user input (flag, JSON field, prompt, size)
  kNotFound,           // missing file, tensor or key
  kDataLoss,           // corrupt or truncated file
  kOutOfRange,         // value outside its allowed range
  kUnimplemented,      // valid request for something not built
  kResourceExhausted,  // out of memory (host or device), queue full
  kCancelled,          // cancelled by the client
  kDeadlineExceeded,   // timed out
  kUnavailable,        // not ready / draining
  kFailedPrecondition, // wrong state
  kInternal,           // device or library failure
};

const char* status_code_name(StatusCode code);

class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}
  static Status Ok() { return Status(); }

  bool ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }
  // "INVALID_ARGUMENT: width must be a multiple of 8"
  std::string to_string() const;
  // Returns a copy whose message is prefixed with `context: `.
  Status with_context(const std::string& context) const;

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

inline Status InvalidArgument(std::string m) { return {StatusCode::kInvalidArgument, std::move(m)}; }
inline Status NotFound(std::string m) { return {StatusCode::kNotFound, std::move(m)}; }
inline Status DataLoss(std::string m) { return {StatusCode::kDataLoss, std::move(m)}; }
inline Status OutOfRange(std::string m) { return {StatusCode::kOutOfRange, std::move(m)}; }
inline Status Unimplemented(std::string m) { return {StatusCode::kUnimplemented, std::move(m)}; }
inline Status ResourceExhausted(std::string m) { return {StatusCode::kResourceExhausted, std::move(m)}; }
inline Status Cancelled(std::string m) { return {StatusCode::kCancelled, std::move(m)}; }
inline Status DeadlineExceeded(std::string m) { return {StatusCode::kDeadlineExceeded, std::move(m)}; }
inline Status Unavailable(std::string m) { return {StatusCode::kUnavailable, std::move(m)}; }
inline Status FailedPrecondition(std::string m) { return {StatusCode::kFailedPrecondition, std::move(m)}; }
inline Status Internal(std::string m) { return {StatusCode::kInternal, std::move(m)}; }

// A value or the Status explaining why there is none.
template <typename T>
class [[nodiscard]] StatusOr {
 public:
  StatusOr(Status status) : v_(std::move(status)) {  // NOLINT(implicit)
    if (std::get<Status>(v_).ok()) std::abort();    // an OK status carries no value
  }
  StatusOr(T value) : v_(std::move(value)) {}  // NOLINT(implicit)

  bool ok() const { return std::holds_alternative<T>(v_); }
  Status status() const { return ok() ? Status() : std::get<Status>(v_); }
  T& value() & { check(); return std::get<T>(v_); }
  const T& value() const& { check(); return std::get<T>(v_); }
  T&& value() && { check(); return std::get<T>(std::move(v_)); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

 private:
  void check() const {
    if (!ok()) {
      std::fprintf(stderr, "StatusOr::value() on error: %s\n", std::get<Status>(v_).to_string().c_str());
      std::abort();
    }
  }
  std::variant<Status, T> v_;
};

// Thrown by backends for failures the device causes in the middle of a computation (out of
// memory, a failed kernel launch). Pipeline entry points catch it and return its Status, so
// callers of the public API only ever see Status values.
class Error : public std::runtime_error {
 public:
  explicit Error(Status status) : std::runtime_error(status.to_string()), status_(std::move(status)) {}
  const Status& status() const { return status_; }

 private:
  Status status_;
};

[[noreturn]] void assert_fail(const char* expr, const char* file, int line, const std::string& msg);

// Runs f (returning Status) and turns a thrown sd::Error (device failures inside ops) or
// std::bad_alloc into the Status the caller returns: the boundary of every public entry point.
template <typename F>
Status guard_errors(F&& f) {
  try {
    return f();
  } catch (const Error& e) {
    return e.status();
  } catch (const std::bad_alloc&) {
    return Status(StatusCode::kResourceExhausted, "out of host memory");
  }
}

}  // namespace sd

#define SD_CONCAT_INNER(a, b) a##b
#define SD_CONCAT(a, b) SD_CONCAT_INNER(a, b)

#define SD_RETURN_IF_ERROR(expr)              \
  do {                                        \
    ::sd::Status sd_status_ = (expr);         \
    if (!sd_status_.ok()) return sd_status_;  \
  } while (0)

#define SD_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                             \
  if (!tmp.ok()) return tmp.status();            \
  lhs = std::move(tmp).value()

#define SD_ASSIGN_OR_RETURN(lhs, expr) SD_ASSIGN_OR_RETURN_IMPL(SD_CONCAT(sd_so_, __LINE__), lhs, expr)

// Programmer errors: a broken invariant inside sdserve, never something a user can cause.
#define SD_ASSERT(cond, ...)                                                        \
  do {                                                                              \
    if (!(cond)) ::sd::assert_fail(#cond, __FILE__, __LINE__, ::std::string(__VA_ARGS__)); \
  } while (0)
