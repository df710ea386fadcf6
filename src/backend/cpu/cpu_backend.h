// The CPU backend: f32 compute, GEMM and convolution through OpenBLAS, everything split over
// the backend's own thread pool (all cores by default). Every op here is the reference the CUDA backend is tested
// against, and each is itself tested against a naive loop in tests/backend/.
#pragma once

#include <memory>

#include "backend/backend.h"

namespace sd::cpu {

std::unique_ptr<Backend> make_backend(int threads);  // 0 = all cores

}  // namespace sd::cpu
