// CudaBackend::begin_side / end_side / join_side: side work on a second stream. The main stream
// records a fork event the side stream waits for; the side's last op records a done event the
// main stream waits for at join_side — in a capture, two branches of the graph.
#include <algorithm>
#include <cstdlib>
#include <string>
#include <utility>

#include "backend/cuda/cuda_backend_impl.h"
#include "backend/cuda/cuda_check.h"

namespace sd::cuda {

namespace {

// SDSERVE_CUDA_SIDE_STREAM: 0 off (side work runs in order); N > 0: beside the main work for
// batches of up to N rows (default kSideMaxRows: where kernels leave SMs idle, docs/perf-notes.md
// "Session 20").
constexpr int64_t kSideMaxRows = 4;

int64_t side_max_rows() {
  const char* env = std::getenv("SDSERVE_CUDA_SIDE_STREAM");
  if (!env || !env[0]) return kSideMaxRows;
  return std::max<int64_t>(0, std::atoll(env));
}

}  // namespace

void CudaBackend::make_side() {
  side_.max_rows = side_max_rows();
  if (side_.max_rows == 0) return;
  // The side stream at the lowest priority, so that the main stream's kernels (the step's
  // critical path) get multiprocessors first; SDSERVE_CUDA_SIDE_PRIORITY=0: equal priorities.
  int least = 0, greatest = 0;
  SD_CUDA_CHECK(cudaDeviceGetStreamPriorityRange(&least, &greatest));
  const char* prio = std::getenv("SDSERVE_CUDA_SIDE_PRIORITY");
  const bool ranked = !(prio && prio[0] == '0') && greatest < least;
  SD_CUDA_CHECK(cudaStreamCreateWithPriority(&side_.stream, cudaStreamNonBlocking, least));
  if (ranked) {  // the main stream one step above
    cudaStream_t raised = nullptr;
    SD_CUDA_CHECK(cudaStreamCreateWithPriority(&raised, cudaStreamNonBlocking, least - 1));
    SD_CUDA_CHECK(cudaStreamDestroy(stream_));
    stream_ = raised;
    SD_CUDNN_CHECK(cudnnSetStream(dnn_, stream_));
  }
  SD_CUDA_CHECK(cudaEventCreateWithFlags(&side_.fork, cudaEventDisableTiming));
  SD_CUDA_CHECK(cudaEventCreateWithFlags(&side_.done, cudaEventDisableTiming));
  side_.workspace = alloc_->allocate(gemm_workspace_bytes_);  // the side's cuBLASLt / cuBLAS workspace
}

void CudaBackend::destroy_side() {
  if (side_.stream) cudaStreamSynchronize(side_.stream);
  if (side_.workspace) alloc_->release(side_.workspace);
  if (side_.fork) cudaEventDestroy(side_.fork);
  if (side_.done) cudaEventDestroy(side_.done);
  if (side_.stream) cudaStreamDestroy(side_.stream);
  side_ = Side{};
}

void CudaBackend::settle_side() {
  using State = Side::State;
  if (side_.state == State::kIssuing) {  // an op threw while side work was being issued
    cudaEventRecord(side_.done, stream_);
    stream_ = side_.main_stream;
    side_.main_stream = nullptr;
    std::swap(gemm_workspace_, side_.workspace);
    cudnnSetStream(dnn_, stream_);
    if (blas_) {
      cublasSetStream(blas_, stream_);
      cublasSetWorkspace(blas_, gemm_workspace_, gemm_workspace_bytes_);
    }
    side_.state = State::kPending;
  }
  if (side_.state == State::kPending) {
    cudaStreamWaitEvent(stream_, side_.done, 0);
    alloc_->resume_releases();
  }
  cudaGetLastError();
  side_.state = State::kIdle;
}

void CudaBackend::begin_side(int64_t rows) {
  using State = Side::State;
  if (side_.state != State::kIdle) settle_side();  // left over from an op that threw
  if (!side_.stream || rows > side_.max_rows) {
    side_.state = State::kInOrderIssuing;
    return;
  }
  // Blocks released from here to join_side() may still be read or written by side work:
  // the allocator holds them back until then.
  alloc_->hold_releases();
  SD_CUDA_CHECK(cudaEventRecord(side_.fork, stream_));
  SD_CUDA_CHECK(cudaStreamWaitEvent(side_.stream, side_.fork, 0));
  side_.main_stream = stream_;
  stream_ = side_.stream;
  std::swap(gemm_workspace_, side_.workspace);
  SD_CUDNN_CHECK(cudnnSetStream(dnn_, stream_));
  if (blas_) {
    SD_CUBLAS_CHECK(cublasSetStream(blas_, stream_));
    SD_CUBLAS_CHECK(cublasSetWorkspace(blas_, gemm_workspace_, gemm_workspace_bytes_));
  }
  side_.state = State::kIssuing;
}

void CudaBackend::end_side() {
  using State = Side::State;
  if (side_.state == State::kInOrderIssuing) {
    side_.state = State::kInOrderPending;
    return;
  }
  SD_ASSERT(side_.state == State::kIssuing, "end_side without begin_side");
  SD_CUDA_CHECK(cudaEventRecord(side_.done, stream_));
  alloc_->hold_only_earlier();  // blocks the main stream allocates from here on are never the side's
  stream_ = side_.main_stream;
  side_.main_stream = nullptr;
  std::swap(gemm_workspace_, side_.workspace);
  SD_CUDNN_CHECK(cudnnSetStream(dnn_, stream_));
  if (blas_) {
    SD_CUBLAS_CHECK(cublasSetStream(blas_, stream_));
    SD_CUBLAS_CHECK(cublasSetWorkspace(blas_, gemm_workspace_, gemm_workspace_bytes_));
  }
  side_.state = State::kPending;
}

void CudaBackend::join_side() {
  using State = Side::State;
  if (side_.state == State::kInOrderPending) {
    side_.state = State::kIdle;
    return;
  }
  SD_ASSERT(side_.state == State::kPending, "join_side without begin_side / end_side");
  SD_CUDA_CHECK(cudaStreamWaitEvent(stream_, side_.done, 0));
  side_.state = State::kIdle;
  alloc_->resume_releases();  // every use of the held blocks is now ordered before later work
}

}  // namespace sd::cuda
