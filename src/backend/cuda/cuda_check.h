// Error checking for CUDA runtime, cuBLASLt and cuDNN calls: any failure becomes an
// sd::Error carrying the library's own message and the call site, so device faults travel
// to the caller as a Status (backend.h) instead of aborting the process.
#pragma once

#include <cublasLt.h>
#include <cuda_runtime.h>
#include <cudnn.h>

#include <string>

#include "core/status.h"

namespace sd::cuda {

[[noreturn]] void throw_cuda(cudaError_t err, const char* what, const char* file, int line);
[[noreturn]] void throw_cublas(cublasStatus_t st, const char* what, const char* file, int line);
[[noreturn]] void throw_cudnn(cudnnStatus_t st, const char* what, const char* file, int line);

// Status for a CUDA error code (ResourceExhausted for out-of-memory, Internal otherwise).
Status cuda_status(cudaError_t err, const std::string& context);

}  // namespace sd::cuda

#define SD_CUDA_CHECK(expr)                                                                     \
  do {                                                                                          \
    cudaError_t sd_err_ = (expr);                                                               \
    if (sd_err_ != cudaSuccess) ::sd::cuda::throw_cuda(sd_err_, #expr, __FILE__, __LINE__);     \
  } while (0)

// After a kernel launch: configuration errors are reported at once.
#define SD_CUDA_LAUNCH_CHECK() SD_CUDA_CHECK(cudaGetLastError())

#define SD_CUBLAS_CHECK(expr)                                                                   \
  do {                                                                                          \
    cublasStatus_t sd_st_ = (expr);                                                             \
    if (sd_st_ != CUBLAS_STATUS_SUCCESS) ::sd::cuda::throw_cublas(sd_st_, #expr, __FILE__, __LINE__); \
  } while (0)

#define SD_CUDNN_CHECK(expr)                                                                    \
  do {                                                                                          \
    cudnnStatus_t sd_st_ = (expr);                                                              \
    if (sd_st_ != CUDNN_STATUS_SUCCESS) ::sd::cuda::throw_cudnn(sd_st_, #expr, __FILE__, __LINE__); \
  } while (0)
