// ModelLoader: reads a component's tensors from a WeightSource with the shapes the model
// expects, converts layouts once (conv OIHW -> OHWI) and uploads them to the backend.
// The first failure is kept (sticky) so layer constructors stay short; check status().
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "backend/backend.h"
#include "io/weights.h"

namespace sd {

class ModelLoader {
 public:
  ModelLoader(const WeightSource& source, Backend& backend) : source_(&source), backend_(backend) {}
  // Recording mode: no tensors are read; every requested (name, PyTorch-layout shape) is
  // appended to `record` (used by make-model to enumerate a configuration's parameters).
  ModelLoader(std::vector<std::pair<std::string, Shape>>* record, Backend& backend)
      : backend_(backend), record_(record) {}

  // Any tensor with its exact stored shape (after the renaming to diffusers names).
  Tensor tensor(const std::string& name, const Shape& shape);
  // Linear weight [out, in]; also accepts a 1x1 conv kernel [out, in, 1, 1].
  Tensor linear_weight(const std::string& name, int64_t out, int64_t in);
  // Conv weight stored [out, in, k, k], returned as [out, k, k, in] (NHWC kernels).
  Tensor conv_weight(const std::string& name, int64_t out, int64_t in, int64_t k);
  // The same conv weight on the host, as stored: [out, in, k, k] in the file's dtype, for
  // layers that derive other weights from it at load. Undefined in recording mode (the name is
  // recorded) and after a failure (kept in status()).
  Tensor conv_weight_host(const std::string& name, int64_t out, int64_t in, int64_t k);
  Tensor vector(const std::string& name, int64_t n) { return tensor(name, {n}); }
  bool has(const std::string& name) const { return record_ ? true : source_->has(name); }

  Backend& backend() { return backend_; }
  const Status& status() const { return status_; }
  size_t parameters() const { return parameters_; }

 private:
  StatusOr<Tensor> fetch(const std::string& name, const Shape& shape);
  void fail(const Status& s) {
    if (status_.ok()) status_ = s;
  }

  const WeightSource* source_ = nullptr;
  Backend& backend_;
  std::vector<std::pair<std::string, Shape>>* record_ = nullptr;
  Status status_;
  size_t parameters_ = 0;
};

}  // namespace sd
