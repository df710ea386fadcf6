// Helpers shared by the GPU tests: skipping when no CUDA device is present, quantising host
// inputs through a half dtype (so references and backends see identical values), and one
// lazily created CUDA backend per compute dtype.
#pragma once

#include <gtest/gtest.h>

#include <memory>

#include "backend/backend.h"
#include "backend/cuda/cuda_backend.h"
#include "tensor/tensor.h"

namespace sd::testing {

// Skips the current test (with the reason) unless a CUDA device is usable.
#define SD_REQUIRE_GPU()                                                                     \
  do {                                                                                       \
    if (!::sd::cuda::built()) GTEST_SKIP() << "sdserve was built without the CUDA backend";  \
    if (::sd::cuda::device_count() == 0) GTEST_SKIP() << "no CUDA device present: skipping"; \
  } while (0)

// f32 host tensor rounded through `dtype` (f16/bf16) and back; other dtypes unchanged.
inline Tensor quantize(const Tensor& x, DType dtype) {
  if (x.dtype() != DType::kF32 || dtype == DType::kF32) return x;
  return to_f32_host(convert_host(x, dtype));
}

// The shared CUDA backend of device 0 for `dtype` (created once per process).
inline Backend& gpu_backend(DType dtype) {
  static std::unique_ptr<Backend> f16, bf16;
  std::unique_ptr<Backend>& slot = dtype == DType::kBF16 ? bf16 : f16;
  if (!slot) {
    auto made = cuda::make_backend(0, dtype);
    if (!made.ok()) {
      ADD_FAILURE() << made.status().to_string();
      std::abort();
    }
    slot = std::move(made).value();
  }
  return *slot;
}

inline Backend& cpu_reference_backend() {
  static std::unique_ptr<Backend> cpu = make_cpu_backend(0);
  return *cpu;
}

}  // namespace sd::testing
