// Entry points of the CUDA backend. When sdserve is built without CUDA, cuda_stub.cc
// provides them (built() is false, no devices), so callers need no #ifdef.
// All CUDA code lives in this folder.
#pragma once

#include <memory>

#include "backend/backend.h"

namespace sd::cuda {

bool built();
int device_count();  // 0 when not built or no driver/device
StatusOr<std::unique_ptr<Backend>> make_backend(int device_index);

}  // namespace sd::cuda
