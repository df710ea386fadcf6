// Tensor: a typed, shaped, contiguous view into device or host memory.
// Activations are NHWC ([B, H, W, C]) everywhere; sequences are [B, L, C]. Tensors are
// cheap handles (shared storage); reshape and row slices are views, never copies.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "core/status.h"

namespace sd {

enum class DType : uint8_t { kF32, kF16, kBF16, kI32, kI64, kU8 };
size_t dtype_size(DType dtype);
const char* dtype_name(DType dtype);  // "f32", "f16", ...

enum class DeviceKind : uint8_t { kCPU, kCUDA };
struct Device {
  DeviceKind kind = DeviceKind::kCPU;
  int index = 0;
  static Device cpu() { return {}; }
  static Device cuda(int index) { return {DeviceKind::kCUDA, index}; }
  bool is_cpu() const { return kind == DeviceKind::kCPU; }
  bool operator==(const Device& o) const { return kind == o.kind && index == o.index; }
  std::string str() const;  // "cpu", "cuda:0"
  // Parses "cpu", "cuda", "cuda:N".
  static StatusOr<Device> parse(const std::string& text);
};

using Shape = std::vector<int64_t>;
std::string shape_str(const Shape& shape);  // "[2,77,768]"
int64_t shape_numel(const Shape& shape);

// A block of memory owned by some allocator; freed by its deleter when the last tensor
// that references it goes away.
class Storage {
 public:
  Storage(void* data, size_t bytes, Device device, std::function<void(void*)> deleter)
      : data_(data), bytes_(bytes), device_(device), deleter_(std::move(deleter)) {}
  ~Storage() { if (deleter_) deleter_(data_); }
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;
  void* data() const { return data_; }
  size_t bytes() const { return bytes_; }
  Device device() const { return device_; }

 private:
  void* data_;
  size_t bytes_;
  Device device_;
  std::function<void(void*)> deleter_;
};

class Tensor {
 public:
  Tensor() = default;
  Tensor(std::shared_ptr<Storage> storage, size_t offset_bytes, Shape shape, DType dtype);

  // Host tensors (64-byte aligned, uninitialised / zeroed).
  static Tensor empty_host(Shape shape, DType dtype);
  static Tensor zeros_host(Shape shape, DType dtype);
  static Tensor from_vector(Shape shape, const std::vector<float>& values);  // f32 host

  bool defined() const { return storage_ != nullptr; }
  const Shape& shape() const { return shape_; }
  int ndim() const { return static_cast<int>(shape_.size()); }
  int64_t dim(int i) const;  // negative counts from the end
  int64_t numel() const { return shape_numel(shape_); }
  DType dtype() const { return dtype_; }
  Device device() const;
  size_t nbytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype_); }
  const std::shared_ptr<Storage>& storage() const { return storage_; }
  size_t offset_bytes() const { return offset_; }

  void* raw() const;
  template <typename T>
  T* data() const { return static_cast<T*>(raw()); }
  // Typed host access with a dtype check (f32 for float, i32 for int32_t, ...).
  float* f32() const;
  int32_t* i32() const;

  // Views sharing storage.
  Tensor reshape(Shape shape) const;               // same numel; one dim may be -1
  Tensor slice_rows(int64_t begin, int64_t end) const;  // along dim 0

  std::string describe() const;  // "f32[2,77,768] on cpu"

 private:
  std::shared_ptr<Storage> storage_;
  size_t offset_ = 0;
  Shape shape_;
  DType dtype_ = DType::kF32;
};

// Host helpers used by tests, loaders and reference code.
Tensor to_f32_host(const Tensor& host);          // convert any float dtype (host) to f32
Tensor convert_host(const Tensor& host, DType to);  // f32 <-> f16/bf16 on the host
// NCHW <-> NHWC on host f32 tensors (4-D).
// Host f32 tensor of values uniform in [lo, hi) from std::mt19937(seed): benchmark and test inputs.
Tensor uniform_random_host(const Shape& shape, uint32_t seed, float lo = -1.f, float hi = 1.f);
Tensor nchw_to_nhwc(const Tensor& x);
Tensor nhwc_to_nchw(const Tensor& x);
// Relative L2 error ||a-b|| / ||b|| of two f32 host tensors of equal numel.
double relative_l2(const Tensor& a, const Tensor& b);
double max_abs_diff(const Tensor& a, const Tensor& b);

}  // namespace sd
