// Helpers for golden comparisons: open a golden safetensors file under tests/data, read a
// tensor as host f32, load a tiny model's checkpoint. Goldens are NCHW / PyTorch layout.
// Used by the model and pipeline tests.
#pragma once

#include <gtest/gtest.h>

#include <memory>
#include <string>

#include "io/checkpoint.h"
#include "io/safetensors.h"

namespace sd::testing {

inline std::string data_path(const std::string& rel) { return std::string(SD_TEST_DATA_DIR) + "/" + rel; }

inline std::unique_ptr<SafetensorsFile> open_golden(const std::string& rel) {
  auto f = SafetensorsFile::open(data_path(rel));
  EXPECT_TRUE(f.ok()) << f.status().to_string();
  return f.ok() ? std::move(f).value() : nullptr;
}

inline Tensor golden_f32(const SafetensorsFile& f, const std::string& name) {
  auto t = f.read_f32(name);
  EXPECT_TRUE(t.ok()) << t.status().to_string();
  return t.ok() ? *t : Tensor();
}

inline Checkpoint load_tiny(const std::string& rel) {
  auto c = load_checkpoint(data_path(rel));
  EXPECT_TRUE(c.ok()) << c.status().to_string();
  return std::move(c).value();
}

}  // namespace sd::testing
