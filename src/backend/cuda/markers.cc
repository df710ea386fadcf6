// Profiling marks of the CUDA backend: CUDA events recorded on the backend's stream, taken
// from a pool made on first use (grown in chunks, reused after marks_elapsed_ms()), and a
// stream hold (a host function that sleeps) so the host can enqueue a step ahead of the GPU.
#include <chrono>
#include <cstdint>
#include <thread>

#include "backend/cuda/cuda_backend_impl.h"
#include "backend/cuda/cuda_check.h"

namespace sd::cuda {

struct MarkerPool {
  std::vector<cudaEvent_t> events;
  size_t used = 0;  // events recorded since the last marks_elapsed_ms()
  ~MarkerPool() {
    for (cudaEvent_t e : events) (void)cudaEventDestroy(e);
  }
};

namespace {

constexpr size_t kEventChunk = 4096;  // a guided SD step records ~2 marks per op, ~1500 ops

void CUDART_CB sleep_on_stream(void* microseconds) {
  std::this_thread::sleep_for(std::chrono::microseconds(reinterpret_cast<uintptr_t>(microseconds)));
}

}  // namespace

int64_t CudaBackend::mark() {
  activate();
  if (!markers_) markers_ = std::make_shared<MarkerPool>();
  MarkerPool& pool = *markers_;
  if (pool.used == pool.events.size()) {
    pool.events.reserve(pool.events.size() + kEventChunk);
    for (size_t i = 0; i < kEventChunk; ++i) {
      cudaEvent_t e = nullptr;
      SD_CUDA_CHECK(cudaEventCreate(&e));
      pool.events.push_back(e);
    }
  }
  SD_CUDA_CHECK(cudaEventRecord(pool.events[pool.used], stream_));
  return static_cast<int64_t>(pool.used++);
}

StatusOr<std::vector<double>> CudaBackend::marks_elapsed_ms() {
  std::vector<double> ms;
  if (!markers_ || markers_->used == 0) return ms;
  activate();
  MarkerPool& pool = *markers_;
  const size_t n = pool.used;
  pool.used = 0;
  if (cudaError_t err = cudaEventSynchronize(pool.events[n - 1]); err != cudaSuccess) {
    return cuda_status(err, "waiting for profiling marks on " + name_);
  }
  ms.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    float t = 0;
    if (cudaError_t err = cudaEventElapsedTime(&t, pool.events[0], pool.events[i]); err != cudaSuccess) {
      return cuda_status(err, "reading profiling mark " + std::to_string(i) + " on " + name_);
    }
    ms.push_back(t);
  }
  return ms;
}

void CudaBackend::hold_queue(double ms) {
  if (ms <= 0) return;
  activate();
  const auto us = static_cast<uintptr_t>(ms * 1e3);
  SD_CUDA_CHECK(cudaLaunchHostFunc(stream_, sleep_on_stream, reinterpret_cast<void*>(us)));
}

}  // namespace sd::cuda
