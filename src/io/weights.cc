// WeightSource implementations: the safetensors-backed source (with renaming, reshapes and
// row splits applied on read) and the in-memory source used by tests and synthetic models.
// Every failure names the file or origin and the tensor.
#include <cstdint>
#include <cstring>

#include "io/safetensors_weights.h"

namespace sd {

SafetensorsWeightSource::SafetensorsWeightSource(std::shared_ptr<const SafetensorsFile> file, std::string component,
                                                 std::map<std::string, TensorMapping> tensors)
    : file_(std::move(file)), component_(std::move(component)), tensors_(std::move(tensors)) {}

std::unique_ptr<SafetensorsWeightSource> SafetensorsWeightSource::all_of(std::shared_ptr<const SafetensorsFile> file,
                                                                         std::string component) {
  std::map<std::string, TensorMapping> tensors;
  for (const auto& e : file->entries()) tensors[e.name] = TensorMapping{e.name, e.shape, 0, 1};
  return std::make_unique<SafetensorsWeightSource>(std::move(file), std::move(component), std::move(tensors));
}

std::string SafetensorsWeightSource::origin() const { return file_->path() + " (" + component_ + ")"; }

std::vector<std::string> SafetensorsWeightSource::names() const {
  std::vector<std::string> out;
  out.reserve(tensors_.size());
  for (const auto& [name, m] : tensors_) out.push_back(name);
  return out;
}

StatusOr<Tensor> SafetensorsWeightSource::get(const std::string& name, const Shape& expected) const {
  SD_ASSIGN_OR_RETURN(Tensor stored, get_stored(name, expected));
  return to_f32_host(stored);
}

StatusOr<Tensor> SafetensorsWeightSource::get_stored(const std::string& name, const Shape& expected) const {
  auto it = tensors_.find(name);
  if (it == tensors_.end()) {
    return NotFound(file_->path() + ": " + component_ + " tensor '" + name + "' not found");
  }
  const TensorMapping& m = it->second;
  const std::string stored_as = m.source == name ? "" : " (stored as '" + m.source + "')";
  if (!expected.empty() && expected != m.shape) {
    return InvalidArgument(file_->path() + ": " + component_ + " tensor '" + name + "'" + stored_as + " has shape " +
                           shape_str(m.shape) + ", expected " + shape_str(expected));
  }
  const SafetensorsEntry* e = file_->find(m.source);
  if (e && e->dtype != DType::kF32 && e->dtype != DType::kF16 && e->dtype != DType::kBF16) {
    return InvalidArgument(file_->path() + ": " + component_ + " tensor '" + name + "'" + stored_as +
                           " has integer dtype " + dtype_name(e->dtype) + ", expected a float tensor");
  }
  if (m.split_count == 1 && e && e->end > e->begin &&
      reinterpret_cast<uintptr_t>(file_->mapped_data(*e)) % dtype_size(e->dtype) == 0) {
    // A read-only view of the mapped file (no allocation, no copy); the view keeps the file
    // open. Consumers only read it (upload, conversion, permutation).
    SD_ASSERT(static_cast<size_t>(shape_numel(m.shape)) * dtype_size(e->dtype) == e->end - e->begin,
              "mapping shape mismatch for " + name);
    auto storage = std::make_shared<Storage>(const_cast<void*>(file_->mapped_data(*e)), e->end - e->begin, Device::cpu(),
                                             [keep = file_](void*) {});
    return Tensor(std::move(storage), 0, m.shape, e->dtype);
  }
  SD_ASSIGN_OR_RETURN(Tensor t, file_->read(m.source));
  if (m.split_count > 1) {
    const int64_t rows = t.dim(0) / m.split_count;
    Tensor src = t.slice_rows(rows * m.split_index, rows * (m.split_index + 1));
    // Own storage, so the rest of the fused tensor is freed.
    Tensor own = Tensor::empty_host(src.shape(), src.dtype());
    std::memcpy(own.raw(), src.raw(), src.nbytes());
    t = own;
  }
  SD_ASSERT(t.numel() == shape_numel(m.shape), "mapping shape mismatch for " + name);
  return t.reshape(m.shape);
}

StatusOr<std::pair<DType, Shape>> SafetensorsWeightSource::info(const std::string& name) const {
  auto it = tensors_.find(name);
  if (it == tensors_.end()) {
    return NotFound(file_->path() + ": " + component_ + " tensor '" + name + "' not found");
  }
  const SafetensorsEntry* e = file_->find(it->second.source);
  SD_ASSERT(e != nullptr, "mapping to a missing source tensor " + it->second.source);
  return std::make_pair(e->dtype, it->second.shape);
}

namespace {

class MemoryWeightSource : public WeightSource {
 public:
  MemoryWeightSource(std::vector<std::pair<std::string, Tensor>> tensors, std::string origin) : origin_(std::move(origin)) {
    for (auto& [name, t] : tensors) tensors_[name] = std::move(t);
  }
  std::string origin() const override { return origin_; }
  bool has(const std::string& name) const override { return tensors_.count(name) != 0; }
  std::vector<std::string> names() const override {
    std::vector<std::string> out;
    for (const auto& [name, t] : tensors_) out.push_back(name);
    return out;
  }
  StatusOr<Tensor> get(const std::string& name, const Shape& expected) const override {
    auto it = tensors_.find(name);
    if (it == tensors_.end()) return NotFound(origin_ + ": tensor '" + name + "' not found");
    const Tensor& t = it->second;
    if (!expected.empty() && expected != t.shape()) {
      return InvalidArgument(origin_ + ": tensor '" + name + "' has shape " + shape_str(t.shape()) + ", expected " +
                             shape_str(expected));
    }
    if (t.dtype() != DType::kF32 && t.dtype() != DType::kF16 && t.dtype() != DType::kBF16) {
      return InvalidArgument(origin_ + ": tensor '" + name + "' has integer dtype " + dtype_name(t.dtype()));
    }
    return to_f32_host(t);
  }
  StatusOr<std::pair<DType, Shape>> info(const std::string& name) const override {
    auto it = tensors_.find(name);
    if (it == tensors_.end()) return NotFound(origin_ + ": tensor '" + name + "' not found");
    return std::make_pair(it->second.dtype(), it->second.shape());
  }

 private:
  std::string origin_;
  std::map<std::string, Tensor> tensors_;
};

}  // namespace

std::unique_ptr<WeightSource> make_memory_weight_source(std::vector<std::pair<std::string, Tensor>> tensors,
                                                        std::string origin) {
  return std::make_unique<MemoryWeightSource>(std::move(tensors), std::move(origin));
}

}  // namespace sd
