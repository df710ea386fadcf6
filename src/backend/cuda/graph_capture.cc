// CUDA graphs for the CUDA backend: capture() runs the function once eagerly (autotuning, plans),
// then records it into the backend's private graph pool, rewrites its memset nodes as kernel
// nodes (graph_memsets.h) and instantiates it; replay() is one cudaGraphLaunch.
#include <cuda_runtime.h>

#include <memory>
#include <string>

#include "backend/cuda/cuda_backend_impl.h"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/graph_memsets.h"

namespace sd::cuda {
namespace {

class CudaGraph final : public CapturedGraph {
 public:
  CudaGraph(cudaGraphExec_t exec, cudaStream_t stream, int device, std::shared_ptr<DeviceAllocator> alloc, int pool)
      : exec_(exec), stream_(stream), device_(device), alloc_(std::move(alloc)), pool_(pool) {}
  CudaGraph(const CudaGraph&) = delete;
  CudaGraph& operator=(const CudaGraph&) = delete;

  ~CudaGraph() override {
    cudaSetDevice(device_);
    cudaStreamSynchronize(stream_);  // no replay may still be running when its memory is handed on
    cudaGraphExecDestroy(exec_);
    alloc_->release_pool(pool_);
    cudaGetLastError();
  }

  void replay() override {
    SD_CUDA_CHECK(cudaSetDevice(device_));
    SD_CUDA_CHECK(cudaGraphLaunch(exec_, stream_));
  }

 private:
  cudaGraphExec_t exec_;
  cudaStream_t stream_;
  int device_;
  std::shared_ptr<DeviceAllocator> alloc_;
  int pool_;
};

// Ends an unfinished capture on `stream` (after fn threw) so the stream is usable again.
void abandon_capture(cudaStream_t stream) {
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  if (cudaStreamIsCapturing(stream, &status) == cudaSuccess && status != cudaStreamCaptureStatusNone) {
    cudaGraph_t graph = nullptr;
    cudaStreamEndCapture(stream, &graph);
    if (graph) cudaGraphDestroy(graph);
  }
  cudaGetLastError();
}

}  // namespace

std::unique_ptr<CapturedGraph> CudaBackend::capture(const std::function<void()>& fn) {
  activate();
  fn();  // warm-up: cuDNN autotuning, GEMM plans and library handles are made here, not recorded
  SD_CUDA_CHECK(cudaStreamSynchronize(stream_));
  // All graphs of this backend share one pool: they run one at a time on the one stream, and
  // each replay writes its intermediates before reading them, so they may reuse each other's
  // intermediate blocks (memory ~ the largest graph, not the sum). Blocks still held by
  // tensors (static inputs and outputs) are never handed out while held.
  if (graph_pool_ == 0 || !alloc_->retain_pool(graph_pool_)) graph_pool_ = alloc_->create_pool();
  const int pool = graph_pool_;
  alloc_->begin_pool(pool);
  cudaGraph_t graph = nullptr;
  cudaError_t err = cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal);
  if (err == cudaSuccess) {
    try {
      fn();
    } catch (...) {
      abandon_capture(stream_);
      alloc_->end_pool();
      alloc_->release_pool(pool);
      throw;
    }
    err = cudaStreamEndCapture(stream_, &graph);
  }
  alloc_->end_pool();
  if (err == cudaSuccess && graph_memsets_as_kernels()) {  // library memsets as kernel nodes
    int replaced = 0;
    err = replace_memset_nodes(graph, &replaced);
  }
  cudaGraphExec_t exec = nullptr;
  if (err == cudaSuccess) err = cudaGraphInstantiate(&exec, graph, 0);
  if (graph) cudaGraphDestroy(graph);
  if (err != cudaSuccess) {
    cudaGetLastError();
    alloc_->release_pool(pool);
    throw Error(cuda_status(err, "while capturing a CUDA graph on " + name_));
  }
  return std::make_unique<CudaGraph>(exec, stream_, device_, alloc_, pool);
}

}  // namespace sd::cuda
