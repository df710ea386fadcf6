// Tensor handles, host allocation, views and the host-side conversions and comparisons
// that loaders and tests share. Device memory is allocated by backends, which hand
// back Storage with their own deleters.
#include "tensor/tensor.h"

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <random>

#include "core/half.h"

namespace sd {

size_t dtype_size(DType dtype) {
  switch (dtype) {
    case DType::kF32: case DType::kI32: return 4;
    case DType::kF16: case DType::kBF16: return 2;
    case DType::kI64: return 8;
    case DType::kU8: return 1;
  }
  return 0;
}

const char* dtype_name(DType dtype) {
  switch (dtype) {
    case DType::kF32: return "f32";
    case DType::kF16: return "f16";
    case DType::kBF16: return "bf16";
    case DType::kI32: return "i32";
    case DType::kI64: return "i64";
    case DType::kU8: return "u8";
  }
  return "?";
}

std::string Device::str() const {
  return kind == DeviceKind::kCPU ? std::string("cpu") : "cuda:" + std::to_string(index);
}

StatusOr<Device> Device::parse(const std::string& text) {
  if (text == "cpu") return Device::cpu();
  if (text == "cuda") return Device::cuda(0);
  if (text.rfind("cuda:", 0) == 0 && text.size() > 5 && text.size() < 9) {
    int index = 0;
    for (size_t i = 5; i < text.size(); ++i) {
      if (text[i] < '0' || text[i] > '9') return InvalidArgument("bad device '" + text + "' (want cpu or cuda:N)");
      index = index * 10 + (text[i] - '0');
    }
    return Device::cuda(index);
  }
  return InvalidArgument("bad device '" + text + "' (want cpu or cuda:N)");
}

std::string shape_str(const Shape& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ',';
    s += std::to_string(shape[i]);
  }
  s += ']';
  return s;
}

int64_t shape_numel(const Shape& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

Tensor::Tensor(std::shared_ptr<Storage> storage, size_t offset_bytes, Shape shape, DType dtype)
    : storage_(std::move(storage)), offset_(offset_bytes), shape_(std::move(shape)), dtype_(dtype) {
  for (int64_t d : shape_) SD_ASSERT(d >= 0, "negative dimension");
  SD_ASSERT(offset_ + nbytes() <= storage_->bytes(), "tensor view exceeds its storage");
}

Tensor Tensor::empty_host(Shape shape, DType dtype) {
  const size_t bytes = static_cast<size_t>(shape_numel(shape)) * dtype_size(dtype);
  const size_t alloc = ((bytes + 63) / 64) * 64 + 64;
  void* p = std::aligned_alloc(64, alloc);
  if (!p) throw Error(ResourceExhausted("out of host memory allocating " + std::to_string(bytes) + " bytes"));
  auto storage = std::make_shared<Storage>(p, alloc, Device::cpu(), [](void* q) { std::free(q); });
  return Tensor(std::move(storage), 0, std::move(shape), dtype);
}

Tensor Tensor::zeros_host(Shape shape, DType dtype) {
  Tensor t = empty_host(std::move(shape), dtype);
  std::memset(t.raw(), 0, t.nbytes());
  return t;
}

Tensor Tensor::from_vector(Shape shape, const std::vector<float>& values) {
  SD_ASSERT(shape_numel(shape) == static_cast<int64_t>(values.size()), "from_vector: size mismatch");
  Tensor t = empty_host(std::move(shape), DType::kF32);
  if (!values.empty()) std::memcpy(t.raw(), values.data(), values.size() * 4);
  return t;
}

int64_t Tensor::dim(int i) const {
  if (i < 0) i += ndim();
  SD_ASSERT(i >= 0 && i < ndim(), "dim index out of range for " + describe());
  return shape_[static_cast<size_t>(i)];
}

Device Tensor::device() const { return storage_ ? storage_->device() : Device::cpu(); }

void* Tensor::raw() const {
  SD_ASSERT(storage_ != nullptr, "raw() on an undefined tensor");
  return static_cast<char*>(storage_->data()) + offset_;
}

float* Tensor::f32() const {
  SD_ASSERT(dtype_ == DType::kF32, "expected f32, got " + describe());
  return data<float>();
}

int32_t* Tensor::i32() const {
  SD_ASSERT(dtype_ == DType::kI32, "expected i32, got " + describe());
  return data<int32_t>();
}

Tensor Tensor::reshape(Shape shape) const {
  int64_t known = 1;
  int infer = -1;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] == -1) {
      SD_ASSERT(infer < 0, "reshape: more than one -1");
      infer = static_cast<int>(i);
    } else {
      known *= shape[i];
    }
  }
  if (infer >= 0) shape[static_cast<size_t>(infer)] = known ? numel() / known : 0;
  SD_ASSERT(shape_numel(shape) == numel(), "reshape " + describe() + " to " + shape_str(shape));
  return Tensor(storage_, offset_, std::move(shape), dtype_);
}

Tensor Tensor::slice_rows(int64_t begin, int64_t end) const {
  SD_ASSERT(ndim() >= 1 && begin >= 0 && begin <= end && end <= shape_[0], "slice_rows out of range");
  Shape s = shape_;
  s[0] = end - begin;
  const size_t row = static_cast<size_t>(shape_[0] ? numel() / shape_[0] : 0) * dtype_size(dtype_);
  return Tensor(storage_, offset_ + row * static_cast<size_t>(begin), std::move(s), dtype_);
}

std::string Tensor::describe() const {
  if (!defined()) return "<undefined tensor>";
  return std::string(dtype_name(dtype_)) + shape_str(shape_) + " on " + device().str();
}

Tensor to_f32_host(const Tensor& host) { return convert_host(host, DType::kF32); }

Tensor convert_host(const Tensor& x, DType to) {
  SD_ASSERT(x.device().is_cpu(), "convert_host needs a host tensor");
  if (x.dtype() == to) return x;
  Tensor out = Tensor::empty_host(x.shape(), to);
  const int64_t n = x.numel();
  std::vector<float> tmp;
  const float* src = nullptr;
  if (x.dtype() == DType::kF32) {
    src = x.data<float>();
  } else {
    tmp.resize(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) {
      switch (x.dtype()) {
        case DType::kF16: tmp[i] = f16_to_f32(x.data<uint16_t>()[i]); break;
        case DType::kBF16: tmp[i] = bf16_to_f32(x.data<uint16_t>()[i]); break;
        case DType::kI32: tmp[i] = static_cast<float>(x.data<int32_t>()[i]); break;
        case DType::kI64: tmp[i] = static_cast<float>(x.data<int64_t>()[i]); break;
        case DType::kU8: tmp[i] = static_cast<float>(x.data<uint8_t>()[i]); break;
        case DType::kF32: break;
      }
    }
    src = tmp.data();
  }
  for (int64_t i = 0; i < n; ++i) {
    switch (to) {
      case DType::kF32: out.data<float>()[i] = src[i]; break;
      case DType::kF16: out.data<uint16_t>()[i] = f32_to_f16(src[i]); break;
      case DType::kBF16: out.data<uint16_t>()[i] = f32_to_bf16(src[i]); break;
      case DType::kI32: out.data<int32_t>()[i] = static_cast<int32_t>(src[i]); break;
      case DType::kI64: out.data<int64_t>()[i] = static_cast<int64_t>(src[i]); break;
      case DType::kU8: out.data<uint8_t>()[i] = static_cast<uint8_t>(src[i]); break;
    }
  }
  return out;
}

Tensor uniform_random_host(const Shape& shape, uint32_t seed, float lo, float hi) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  Tensor t = Tensor::empty_host(shape, DType::kF32);
  for (int64_t i = 0; i < t.numel(); ++i) t.f32()[i] = dist(gen);
  return t;
}

namespace {
// [n, c, h*w] -> [n, h*w, c] for elements of type E (a float's bits, whatever the dtype).
template <typename E>
void permute_channels_last(const E* s, E* d, int64_t n, int64_t c, int64_t hw) {
  for (int64_t b = 0; b < n; ++b)
    for (int64_t ch = 0; ch < c; ++ch)
      for (int64_t i = 0; i < hw; ++i) d[(b * hw + i) * c + ch] = s[(b * c + ch) * hw + i];
}
}  // namespace

Tensor nchw_to_nhwc(const Tensor& x) {
  SD_ASSERT(x.ndim() == 4 && (x.dtype() == DType::kF32 || x.dtype() == DType::kF16 || x.dtype() == DType::kBF16) && x.device().is_cpu(),
            "nchw_to_nhwc: " + x.describe());
  const int64_t n = x.dim(0), c = x.dim(1), h = x.dim(2), w = x.dim(3);
  Tensor out = Tensor::empty_host({n, h, w, c}, x.dtype());
  if (x.dtype() == DType::kF32) {
    permute_channels_last(static_cast<const uint32_t*>(x.raw()), static_cast<uint32_t*>(out.raw()), n, c, h * w);
  } else {  // f16 / bf16: 2-byte elements, moved as they are
    permute_channels_last(static_cast<const uint16_t*>(x.raw()), static_cast<uint16_t*>(out.raw()), n, c, h * w);
  }
  return out;
}

Tensor nhwc_to_nchw(const Tensor& x) {
  SD_ASSERT(x.ndim() == 4 && x.dtype() == DType::kF32 && x.device().is_cpu(), "nhwc_to_nchw: " + x.describe());
  const int64_t n = x.dim(0), h = x.dim(1), w = x.dim(2), c = x.dim(3);
  Tensor out = Tensor::empty_host({n, c, h, w}, DType::kF32);
  const float* s = x.f32();
  float* d = out.f32();
  for (int64_t b = 0; b < n; ++b)
    for (int64_t i = 0; i < h * w; ++i)
      for (int64_t ch = 0; ch < c; ++ch) d[(b * c + ch) * h * w + i] = s[(b * h * w + i) * c + ch];
  return out;
}

double relative_l2(const Tensor& a, const Tensor& b) {
  SD_ASSERT(a.numel() == b.numel(), "relative_l2: " + a.describe() + " vs " + b.describe());
  const float* pa = a.f32();
  const float* pb = b.f32();
  double num = 0, den = 0;
  for (int64_t i = 0; i < a.numel(); ++i) {
    const double d = static_cast<double>(pa[i]) - pb[i];
    num += d * d;
    den += static_cast<double>(pb[i]) * pb[i];
  }
  return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}

double max_abs_diff(const Tensor& a, const Tensor& b) {
  SD_ASSERT(a.numel() == b.numel(), "max_abs_diff: size mismatch");
  double m = 0;
  for (int64_t i = 0; i < a.numel(); ++i) m = std::max(m, std::fabs(static_cast<double>(a.f32()[i]) - b.f32()[i]));
  return m;
}

}  // namespace sd
