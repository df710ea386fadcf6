// The CPU backend: f32 compute, GEMM and convolution through OpenBLAS, all ops split over the
// backend's own thread pool (all cores by default). The CUDA backend is tested against it,
// and each op is itself tested against a naive loop in tests/backend/.
#pragma once

#include <memory>

#include "backend/backend.h"

namespace sd::cpu {

std::unique_ptr<Backend> make_backend(int threads);  // 0 = all cores

}  // namespace sd::cpu
