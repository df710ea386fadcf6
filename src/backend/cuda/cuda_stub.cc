// Stand-in for the CUDA backend when sdserve is built without CUDA (SDSERVE_CUDA=OFF, no
// nvcc or no cuDNN): reports that CUDA is absent, so `--device cuda` fails with a clear
// message. The real backend replaces this file when CUDA is enabled.
#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/pdl.cuh"

namespace sd::cuda {

bool built() { return false; }
int device_count() { return 0; }
StatusOr<std::unique_ptr<Backend>> make_backend(int) {
  return Unimplemented("this sdserve was built without the CUDA backend");
}
StatusOr<std::unique_ptr<Backend>> make_backend(int, DType) {
  return Unimplemented("this sdserve was built without the CUDA backend");
}
AllocatorStats allocator_stats(const Backend&) { return {}; }
bool attention_wgmma_supported(int) { return false; }
long attention_rows_launches() { return 0; }
bool pdl_enabled() { return false; }
void set_pdl_enabled(bool) {}

}  // namespace sd::cuda
