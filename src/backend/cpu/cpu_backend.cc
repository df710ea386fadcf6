// The CPU backend class: tracked host allocation, upload/download with dtype conversion,
// and the op table forwarding to the op-family files (cpu_gemm_conv.cc, cpu_norm.cc, ...).
// Compute is f32; integer tensors (token ids) are kept as they are.
#include "backend/cpu/cpu_backend.h"

#include <cblas.h>

#include <chrono>
#include <cstring>
#include <thread>

#include "backend/cpu/cpu_allocator.h"
#include "backend/cpu/cpu_internal.h"

namespace sd::cpu {

void check_f32(const Tensor& t, const char* op, const char* what) {
  SD_ASSERT(t.defined(), std::string(op) + ": " + what + " is undefined");
  SD_ASSERT(t.dtype() == DType::kF32 && t.device().is_cpu(),
            std::string(op) + ": " + what + " must be f32 on the cpu, got " + t.describe());
}

namespace {

int default_threads() { return static_cast<int>(std::max(1u, std::thread::hardware_concurrency())); }

bool is_float(DType d) { return d == DType::kF32 || d == DType::kF16 || d == DType::kBF16; }

// Freed activation blocks kept for reuse (a UNet step frees and re-allocates the same
// sizes every step).
constexpr size_t kBlockCacheBytes = size_t{1} << 30;

class CpuBackend final : public Backend, public CpuContext {
 public:
  explicit CpuBackend(int threads) : CpuContext(threads > 0 ? threads : default_threads()) {
    // All parallelism goes through our pool; OpenBLAS's own would spin against it.
    openblas_set_num_threads(1);
  }

  Device device() const override { return Device::cpu(); }
  std::string name() const override {
    return "cpu (OpenBLAS, " + std::to_string(threads()) + (threads() == 1 ? " thread)" : " threads)");
  }
  DType compute_dtype() const override { return DType::kF32; }

  // ---- memory ----
  Tensor alloc(const Shape& shape, DType dtype) override {
    const size_t bytes = static_cast<size_t>(shape_numel(shape)) * dtype_size(dtype);
    return Tensor(allocator_->allocate(bytes), 0, shape, dtype);
  }
  Tensor empty(const Shape& shape, DType dtype) override { return alloc(shape, dtype); }

  Tensor upload(const Tensor& host, DType dtype) override {
    SD_ASSERT(host.defined() && host.device().is_cpu(), "upload: need a host tensor, got " + host.describe());
    // Float data always lands in f32 (the compute dtype) whatever float `dtype` asks for;
    // integer tensors are copied as they are.
    (void)dtype;
    const DType target = is_float(host.dtype()) ? DType::kF32 : host.dtype();
    Tensor out = alloc(host.shape(), target);
    if (host.dtype() == target) {
      std::memcpy(out.raw(), host.raw(), host.nbytes());
    } else {
      const Tensor converted = convert_host(host, target);
      std::memcpy(out.raw(), converted.raw(), converted.nbytes());
    }
    return out;
  }

  Tensor download(const Tensor& x) override {
    SD_ASSERT(x.defined() && x.device().is_cpu(), "download: " + x.describe());
    if (is_float(x.dtype()) && x.dtype() != DType::kF32) return convert_host(x, DType::kF32);
    Tensor out = Tensor::empty_host(x.shape(), x.dtype());
    std::memcpy(out.raw(), x.raw(), x.nbytes());
    return out;
  }

  void copy(const Tensor& src, const Tensor& dst) override {
    SD_ASSERT(src.numel() == dst.numel() && src.dtype() == dst.dtype(),
              "copy: " + src.describe() + " -> " + dst.describe());
    if (src.raw() != dst.raw()) std::memmove(dst.raw(), src.raw(), src.nbytes());
  }

  Status synchronize() override { return Status::Ok(); }
  size_t memory_in_use() const override { return allocator_->in_use(); }
  size_t memory_peak() const override { return allocator_->peak(); }
  void reset_memory_peak() override { allocator_->reset_peak(); }

  // ---- ops ----
  Tensor linear(const Tensor& x, const Tensor& w, const Tensor& bias) override { return cpu::linear(*this, x, w, bias); }
  Tensor conv2d(const Tensor& x, const Tensor& w, const Tensor& bias, int stride, int padding) override {
    return cpu::conv2d(*this, x, w, bias, stride, padding);
  }
  Tensor group_norm(const Tensor& x, const Tensor& gamma, const Tensor& beta, int groups, float eps,
                    bool silu) override {
    return cpu::group_norm(*this, x, gamma, beta, groups, eps, silu);
  }
  Tensor layer_norm(const Tensor& x, const Tensor& gamma, const Tensor& beta, float eps) override {
    return cpu::layer_norm(*this, x, gamma, beta, eps);
  }
  Tensor softmax(const Tensor& x) override { return cpu::softmax(*this, x); }
  Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v, int heads, bool causal) override {
    return cpu::attention(*this, q, k, v, heads, causal);
  }
  Tensor attention_cols(const Tensor& q_src, int64_t q_col, const Tensor& kv_src, int64_t k_col, int64_t v_col,
                        int64_t inner, int heads, bool causal) override {
    return cpu::attention_cols(*this, q_src, q_col, kv_src, k_col, v_col, inner, heads, causal);
  }
  Tensor activation(const Tensor& x, Activation act) override { return cpu::activation(*this, x, act); }
  Tensor geglu(const Tensor& x) override { return cpu::geglu(*this, x); }
  Tensor add(const Tensor& a, const Tensor& b) override { return cpu::add(*this, a, b); }
  Tensor mul(const Tensor& a, const Tensor& b) override { return cpu::mul(*this, a, b); }
  Tensor scale(const Tensor& x, float s) override { return cpu::scale(*this, x, s); }
  Tensor add_per_channel(const Tensor& x, const Tensor& v) override { return cpu::add_per_channel(*this, x, v); }
  Tensor lincomb(const std::vector<Tensor>& inputs, const Tensor& coeffs) override {
    return cpu::lincomb(*this, inputs, coeffs);
  }
  Tensor upsample_nearest2x(const Tensor& x) override { return cpu::upsample_nearest2x(*this, x); }
  Tensor interleave_phases2x(const Tensor& y4, const Tensor& bias) override {
    return cpu::interleave_phases2x(*this, y4, bias);
  }
  Tensor concat_channels(const Tensor& a, const Tensor& b) override { return cpu::concat_channels(*this, a, b); }
  Tensor embedding(const Tensor& ids, const Tensor& table) override { return cpu::embedding(*this, ids, table); }
  Tensor concat_rows(const std::vector<Tensor>& parts) override { return cpu::concat_rows(*this, parts); }
  Tensor pad_hw(const Tensor& x, int top, int bottom, int left, int right) override {
    return cpu::pad_hw(*this, x, top, bottom, left, right);
  }
  Tensor crop_hw(const Tensor& x, int h0, int h, int w0, int w) override { return cpu::crop_hw(*this, x, h0, h, w0, w); }

  // ---- profiling marks: ops finish before they return, so the host clock is the timeline ----
  int64_t mark() override {
    marks_.push_back(std::chrono::steady_clock::now());
    return static_cast<int64_t>(marks_.size()) - 1;
  }
  StatusOr<std::vector<double>> marks_elapsed_ms() override {
    std::vector<double> ms;
    for (const auto& t : marks_) ms.push_back(std::chrono::duration<double, std::milli>(t - marks_.front()).count());
    marks_.clear();
    return ms;
  }

 private:
  std::vector<std::chrono::steady_clock::time_point> marks_;
  std::shared_ptr<HostAllocator> allocator_ = HostAllocator::create(kBlockCacheBytes);
};

}  // namespace

std::unique_ptr<Backend> make_backend(int threads) { return std::make_unique<CpuBackend>(threads); }

}  // namespace sd::cpu
