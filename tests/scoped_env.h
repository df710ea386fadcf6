// ScopedEnv: sets an environment variable for one scope and restores the earlier value (or its
// absence) after, for tests and benchmarks that switch a backend path read from the environment
// on every call (SDSERVE_CUDA_GN_ONCHIP, SDSERVE_CUDA_ATTENTION, ...).
#pragma once

#include <cstdlib>
#include <string>

namespace sd::testing {

class ScopedEnv {
 public:
  ScopedEnv(const char* name, const std::string& value) : name_(name) {
    const char* old = std::getenv(name);
    had_ = old != nullptr;
    if (had_) old_ = old;
    setenv(name, value.c_str(), 1);
  }
  ~ScopedEnv() {
    if (had_) {
      setenv(name_, old_.c_str(), 1);
    } else {
      unsetenv(name_);
    }
  }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  const char* name_;
  std::string old_;
  bool had_ = false;
};

}  // namespace sd::testing
