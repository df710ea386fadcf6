// Shared helpers of the io tests: a per-process scratch folder and the test data paths.
// The scratch folder lives under the system temp dir and is left for inspection on failure.
// Header-only so each test file stays self-contained.
#pragma once

#include <cstdlib>
#include <string>

namespace sd {

inline std::string test_temp_dir() {
  static const std::string dir = [] {
    const char* base = std::getenv("TMPDIR");
    std::string pattern = std::string(base && *base ? base : "/tmp") + "/sdserve-io-test-XXXXXX";
    if (!mkdtemp(pattern.data())) std::abort();
    return pattern;
  }();
  return dir;
}

inline std::string test_data(const std::string& relative) { return std::string(SD_TEST_DATA_DIR) + "/" + relative; }

}  // namespace sd
