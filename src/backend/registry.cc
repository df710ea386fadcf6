// Chooses a backend for a device string: the CPU backend, or the CUDA backend when it was
// built and a device is present. The CUDA folder provides a stub when built without CUDA,
// so this file never needs to know which it got.
#include <string>

#include "backend/backend.h"
#include "backend/cpu/cpu_backend.h"
#include "backend/cuda/cuda_backend.h"

namespace sd {

std::unique_ptr<Backend> make_cpu_backend(int threads) { return cpu::make_backend(threads); }

bool cuda_available() { return cuda::device_count() > 0; }

StatusOr<std::unique_ptr<Backend>> make_backend(const Device& device) {
  if (device.is_cpu()) return make_cpu_backend();
  if (!cuda::built()) return Unimplemented("this sdserve was built without the CUDA backend; use --device cpu");
  const int n = cuda::device_count();
  if (device.index >= n) {
    return NotFound("device " + device.str() + " not present (" + std::to_string(n) + " CUDA devices found)");
  }
  return cuda::make_backend(device.index);
}

}  // namespace sd
