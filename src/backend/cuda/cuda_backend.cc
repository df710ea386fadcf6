// CUDA backend entry points (device count, construction), the backend's lifetime (stream,
// library handles, allocator) and its memory ops: empty, upload (host f32/f16/bf16 ->
// device compute dtype, converted on the device), download, copy and synchronize.
#include "backend/cuda/cuda_backend.h"

#include <cstdlib>
#include <cstring>
#include <string>

#include "backend/cuda/conv.h"
#include "backend/cuda/conv_graph.h"
#include "backend/cuda/attention.h"
#include "backend/cuda/cuda_backend_impl.h"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/tuning_l2.h"
#include "backend/cuda/gemm.h"
#include "backend/cuda/kernels.h"

namespace sd::cuda {

// ---- error helpers (cuda_check.h) ----

Status cuda_status(cudaError_t err, const std::string& context) {
  const std::string msg = "CUDA error " + std::string(cudaGetErrorName(err)) + " (" + cudaGetErrorString(err) +
                          ") " + context;
  if (err == cudaErrorMemoryAllocation) return ResourceExhausted("out of GPU memory: " + msg);
  return Internal(msg);
}

void throw_cuda(cudaError_t err, const char* what, const char* file, int line) {
  throw Error(cuda_status(err, std::string("in ") + what + " at " + file + ":" + std::to_string(line)));
}

void throw_cublas(cublasStatus_t st, const char* what, const char* file, int line) {
  const std::string msg = "cuBLASLt error " + std::string(cublasLtGetStatusName(st)) + " (" +
                          cublasLtGetStatusString(st) + ") in " + what + " at " + file + ":" + std::to_string(line);
  if (st == CUBLAS_STATUS_ALLOC_FAILED) throw Error(ResourceExhausted("out of GPU memory: " + msg));
  throw Error(Internal(msg));
}

void throw_cudnn(cudnnStatus_t st, const char* what, const char* file, int line) {
  const std::string msg = "cuDNN error " + std::string(cudnnGetErrorString(st)) + " in " + what + " at " + file +
                          ":" + std::to_string(line);
  if (st == CUDNN_STATUS_INTERNAL_ERROR_HOST_ALLOCATION_FAILED ||
      st == CUDNN_STATUS_INTERNAL_ERROR_DEVICE_ALLOCATION_FAILED) {
    throw Error(ResourceExhausted("out of GPU memory: " + msg));
  }
  throw Error(Internal(msg));
}

cudaDataType_t cuda_data_type(DType dtype) {
  switch (dtype) {
    case DType::kF32: return CUDA_R_32F;
    case DType::kF16: return CUDA_R_16F;
    case DType::kBF16: return CUDA_R_16BF;
    default: SD_ASSERT(false, std::string("no cuBLAS type for ") + dtype_name(dtype));
  }
  return CUDA_R_32F;
}

cudnnDataType_t cudnn_data_type(DType dtype) {
  switch (dtype) {
    case DType::kF32: return CUDNN_DATA_FLOAT;
    case DType::kF16: return CUDNN_DATA_HALF;
    case DType::kBF16: return CUDNN_DATA_BFLOAT16;
    default: SD_ASSERT(false, std::string("no cuDNN type for ") + dtype_name(dtype));
  }
  return CUDNN_DATA_FLOAT;
}

// ---- entry points (cuda_backend.h) ----

bool built() { return true; }

int device_count() {
  int n = 0;
  const cudaError_t err = cudaGetDeviceCount(&n);
  if (err != cudaSuccess) {
    cudaGetLastError();  // no driver / no device: clear the error, report none
    return 0;
  }
  return n;
}

StatusOr<DType> compute_dtype_from_env() {
  const char* env = std::getenv("SDSERVE_CUDA_DTYPE");
  if (!env || !*env || std::strcmp(env, "f16") == 0 || std::strcmp(env, "fp16") == 0) return DType::kF16;
  if (std::strcmp(env, "bf16") == 0) return DType::kBF16;
  return InvalidArgument(std::string("SDSERVE_CUDA_DTYPE='") + env + "' (want f16 or bf16)");
}

StatusOr<std::unique_ptr<Backend>> make_backend(int device_index, DType compute_dtype) {
  if (compute_dtype != DType::kF16 && compute_dtype != DType::kBF16) {
    return InvalidArgument(std::string("CUDA compute dtype must be f16 or bf16, not ") + dtype_name(compute_dtype));
  }
  const int n = device_count();
  if (device_index < 0 || device_index >= n) {
    return NotFound("CUDA device " + std::to_string(device_index) + " not present (" + std::to_string(n) +
                    " devices found)");
  }
  try {
    return std::unique_ptr<Backend>(new CudaBackend(device_index, compute_dtype));
  } catch (const Error& e) {
    return e.status().with_context("starting the CUDA backend on cuda:" + std::to_string(device_index));
  }
}

StatusOr<std::unique_ptr<Backend>> make_backend(int device_index) {
  SD_ASSIGN_OR_RETURN(DType dtype, compute_dtype_from_env());
  return make_backend(device_index, dtype);
}

AllocatorStats allocator_stats(const Backend& backend) {
  const auto* cuda = dynamic_cast<const CudaBackend*>(&backend);
  if (!cuda) return {};
  const AllocatorCounters c = cuda->allocator_counters();
  return AllocatorStats{c.in_use, c.peak, c.reserved, c.device_mallocs, c.cache_hits};
}

// ---- lifetime ----

namespace {
constexpr size_t kGemmWorkspaceBytes = size_t{32} << 20;
}

CudaBackend::CudaBackend(int device_index, DType compute_dtype)
    : device_(device_index), dtype_(compute_dtype), alloc_(std::make_shared<DeviceAllocator>(device_index)) {
  SD_CUDA_CHECK(cudaSetDevice(device_));
  cudaDeviceProp prop{};
  SD_CUDA_CHECK(cudaGetDeviceProperties(&prop, device_));
  name_ = "cuda:" + std::to_string(device_) + " (" + prop.name + ", " + dtype_name(dtype_) + ")";
  SD_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  SD_CUBLAS_CHECK(cublasLtCreate(&lt_));
  SD_CUDNN_CHECK(cudnnCreate(&dnn_));
  SD_CUDNN_CHECK(cudnnSetStream(dnn_, stream_));
  const char* attn = std::getenv("SDSERVE_CUDA_ATTENTION");
  attention_wmma_ = attn && std::strcmp(attn, "wmma") == 0;
  gemm_ = std::make_unique<GemmPlans>();
  conv_ = std::make_unique<ConvPlans>();
  conv_graph_ = std::make_unique<ConvGraphPlans>();
  const char* graph = std::getenv("SDSERVE_CUDNN_GRAPH");
  conv_graph_enabled_ = !(graph && graph[0] == '0');
  const char* tune = std::getenv("SDSERVE_CUDNN_AUTOTUNE");
  conv_autotune_ = !(tune && tune[0] == '0');
  gemm_workspace_bytes_ = kGemmWorkspaceBytes;
  gemm_workspace_ = alloc_->allocate(gemm_workspace_bytes_);
  SD_CUDA_CHECK(cudaMalloc(&grid_barrier_, 64 * sizeof(unsigned)));
  SD_CUDA_CHECK(cudaMemset(grid_barrier_, 0, 64 * sizeof(unsigned)));
  char bus_id[32] = {};
  if (cudaDeviceGetPCIBusId(bus_id, sizeof bus_id, device_) == cudaSuccess)
    reader_ = std::make_unique<GpuTelemetry>(bus_id);  // NVML is opened on the first reading
  attention_cudnn_user(device_, +1);
}

CudaBackend::~CudaBackend() {
  cudaSetDevice(device_);
  attention_cudnn_user(device_, -1);
  wait_attention_cudnn_prepared(device_);
  if (stream_) cudaStreamSynchronize(stream_);
  for (cudaEvent_t e : step_events_)
    if (e) cudaEventDestroy(e);
  gemm_.reset();
  conv_.reset();
  conv_graph_.reset();
  if (gemm_workspace_) alloc_->release(gemm_workspace_);
  if (grid_barrier_) cudaFree(grid_barrier_);
  if (dnn_) cudnnDestroy(dnn_);
  if (blas_) cublasDestroy(blas_);
  if (lt_) cublasLtDestroy(lt_);
  if (stream_) cudaStreamDestroy(stream_);
  cudaGetLastError();
}

// Every cache keyed by a shape: remade empty. The cuDNN handle is made again too (its own
// caches grow with the shapes it has planned); cuBLASLt's handle keeps nothing per shape.
void CudaBackend::release_shape_plans() {
  activate();
  SD_CUDA_CHECK(cudaStreamSynchronize(stream_));
  gemm_ = std::make_unique<GemmPlans>();
  conv_ = std::make_unique<ConvPlans>();
  conv_graph_ = std::make_unique<ConvGraphPlans>();
  attention_choices_.reset();
  subpixel_plans_.reset();
  (void)forget_attention_cudnn(device_);
  cudnnHandle_t fresh = nullptr;
  SD_CUDNN_CHECK(cudnnCreate(&fresh));
  SD_CUDNN_CHECK(cudnnSetStream(fresh, stream_));
  cudnnDestroy(dnn_);
  dnn_ = fresh;
  alloc_->free_cached();
}

cublasHandle_t CudaBackend::blas() {
  if (!blas_) {
    SD_CUBLAS_CHECK(cublasCreate(&blas_));
    SD_CUBLAS_CHECK(cublasSetStream(blas_, stream_));
    SD_CUBLAS_CHECK(cublasSetWorkspace(blas_, gemm_workspace_, gemm_workspace_bytes_));
  }
  return blas_;
}

void CudaBackend::activate() const { SD_CUDA_CHECK(cudaSetDevice(device_)); }

void CudaBackend::check_on_device(const Tensor& t, const char* op) const {
  SD_ASSERT(t.defined(), std::string(op) + ": undefined tensor");
  SD_ASSERT(t.device() == Device::cuda(device_), std::string(op) + ": " + t.describe() + " is not on cuda:" +
                                                     std::to_string(device_));
}

// ---- memory ----

Tensor CudaBackend::empty(const Shape& shape, DType dtype) {
  activate();
  const size_t bytes = static_cast<size_t>(shape_numel(shape)) * dtype_size(dtype);
  void* ptr = alloc_->allocate(bytes);
  std::shared_ptr<DeviceAllocator> alloc = alloc_;
  auto storage = std::make_shared<Storage>(ptr, DeviceAllocator::round_size(bytes), Device::cuda(device_),
                                           [alloc](void* p) { alloc->release(p); });
  return Tensor(std::move(storage), 0, shape, dtype);
}

namespace {
bool is_float(DType d) { return d == DType::kF32 || d == DType::kF16 || d == DType::kBF16; }
}  // namespace

Tensor CudaBackend::upload(const Tensor& host, DType dtype) {
  SD_ASSERT(host.defined() && host.device().is_cpu(), "upload needs a host tensor, got " + host.describe());
  activate();
  if (!is_float(host.dtype()) || !is_float(dtype) || host.dtype() == dtype) {
    Tensor out = empty(host.shape(), host.dtype());
    if (host.nbytes()) {
      SD_CUDA_CHECK(cudaMemcpyAsync(out.raw(), host.raw(), host.nbytes(), cudaMemcpyHostToDevice, stream_));
    }
    return out;
  }
  // Copy the host bytes as they are, convert on the device.
  Tensor staged = empty(host.shape(), host.dtype());
  Tensor out = empty(host.shape(), dtype);
  if (host.nbytes()) {
    SD_CUDA_CHECK(cudaMemcpyAsync(staged.raw(), host.raw(), host.nbytes(), cudaMemcpyHostToDevice, stream_));
    launch_convert(staged.raw(), host.dtype(), out.raw(), dtype, host.numel(), stream_);
  }
  return out;
}

Tensor CudaBackend::download(const Tensor& x) {
  check_on_device(x, "download");
  activate();
  Tensor src = x;
  if (x.dtype() == DType::kF16 || x.dtype() == DType::kBF16) {
    src = empty(x.shape(), DType::kF32);
    launch_convert(x.raw(), x.dtype(), src.raw(), DType::kF32, x.numel(), stream_);
  }
  Tensor out = Tensor::empty_host(x.shape(), src.dtype());
  if (out.nbytes()) {
    SD_CUDA_CHECK(cudaMemcpyAsync(out.raw(), src.raw(), out.nbytes(), cudaMemcpyDeviceToHost, stream_));
  }
  SD_CUDA_CHECK(cudaStreamSynchronize(stream_));
  return out;
}

void CudaBackend::prepare_tuning_run(const void* input, size_t input_bytes) {
  if (!tune_cold_weights()) return;
  const size_t l2 = l2_bytes(device_);
  // Through the caching allocator: the block is reused by the next tuning run.
  const Tensor scratch = empty({static_cast<int64_t>(2 * l2)}, DType::kU8);
  evict_l2_keep_input(stream_, scratch.raw(), scratch.nbytes(), input, input_bytes, l2);
}

Tensor CudaBackend::to_pixels_u8(const Tensor& x) {
  check_on_device(x, "to_pixels_u8");
  SD_ASSERT(is_float(x.dtype()), "to_pixels_u8: need a float tensor, got " + x.describe());
  activate();
  Tensor out = empty(x.shape(), DType::kU8);
  launch_pixels_u8(x.raw(), x.dtype(), out.raw(), x.numel(), stream_);
  return out;
}

void CudaBackend::copy(const Tensor& src, const Tensor& dst) {
  check_on_device(src, "copy");
  check_on_device(dst, "copy");
  SD_ASSERT(src.numel() == dst.numel() && src.dtype() == dst.dtype(),
            "copy " + src.describe() + " -> " + dst.describe());
  activate();
  if (src.nbytes()) {
    SD_CUDA_CHECK(cudaMemcpyAsync(dst.raw(), src.raw(), src.nbytes(), cudaMemcpyDeviceToDevice, stream_));
  }
}

Status CudaBackend::wait_previous_step() {
  cudaError_t err = cudaSetDevice(device_);
  const int prev = 1 - step_event_next_;
  if (err == cudaSuccess && step_event_recorded_[prev]) err = cudaEventSynchronize(step_events_[prev]);
  if (err == cudaSuccess && !step_events_[step_event_next_])
    err = cudaEventCreateWithFlags(&step_events_[step_event_next_], cudaEventDisableTiming);
  if (err == cudaSuccess) err = cudaEventRecord(step_events_[step_event_next_], stream_);
  if (err != cudaSuccess) return cuda_status(err, "while waiting for the previous step on " + name_);
  step_event_recorded_[step_event_next_] = true;
  step_event_next_ = prev;
  return Status::Ok();
}

bool CudaBackend::telemetry_start() {
  if (!telemetry_) {
    char bus_id[32] = {};
    if (cudaDeviceGetPCIBusId(bus_id, sizeof bus_id, device_) != cudaSuccess) return false;
    telemetry_ = std::make_unique<GpuTelemetry>(bus_id);
  }
  return telemetry_->start();
}

std::optional<DeviceTelemetry> CudaBackend::telemetry_stop() {
  return telemetry_ ? telemetry_->stop() : std::nullopt;
}

std::optional<DeviceReading> CudaBackend::device_reading() const {
  return reader_ ? reader_->read() : std::nullopt;
}

Status CudaBackend::synchronize() {
  cudaError_t err = cudaSetDevice(device_);
  if (err == cudaSuccess) err = cudaStreamSynchronize(stream_);
  if (err != cudaSuccess) return cuda_status(err, "while synchronizing " + name_);
  return Status::Ok();
}

void CudaBackend::add_bias_rows(const Tensor& y, const Tensor& bias) {
  const int64_t c = bias.numel();
  SD_ASSERT(y.dtype() == bias.dtype() && c > 0 && y.dim(-1) == c, "bias " + bias.describe() + " for " + y.describe());
  launch_add_bias_rows(y.raw(), bias.raw(), y.dtype(), y.numel() / c, c, stream_);
}

void CudaBackend::add_epilogue(const Tensor& y, const Tensor& bias, const Tensor& row, const Tensor& residual) {
  const int64_t b = y.dim(0), c = y.dim(-1);
  SD_ASSERT(!bias.defined() || (bias.dtype() == y.dtype() && bias.numel() == c), "bias " + bias.describe() +
                                                                                    " for " + y.describe());
  SD_ASSERT(!row.defined() || (row.dtype() == y.dtype() && row.numel() == b * c), "row add " + row.describe() +
                                                                                     " for " + y.describe());
  SD_ASSERT(!residual.defined() || (residual.dtype() == y.dtype() && residual.numel() == y.numel()),
            "residual " + residual.describe() + " for " + y.describe());
  launch_add_epilogue(y.raw(), bias.defined() ? bias.raw() : nullptr, row.defined() ? row.raw() : nullptr,
                      residual.defined() ? residual.raw() : nullptr, y.dtype(), b, y.numel() / (b * c), c, stream_);
}

}  // namespace sd::cuda
