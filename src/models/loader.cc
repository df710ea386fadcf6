// ModelLoader implementation: shape checks with messages that name the file and tensor,
// OIHW -> OHWI conversion for convolution kernels, upload in the backend's compute dtype.
// Failures return an undefined tensor and keep the first Status for the caller.
#include "models/loader.h"

namespace sd {

StatusOr<Tensor> ModelLoader::fetch(const std::string& name, const Shape& shape) {
  SD_ASSIGN_OR_RETURN(auto info, source_->info(name));
  if (info.second != shape) {
    return InvalidArgument(source_->origin() + ": tensor '" + name + "' has shape " + shape_str(info.second) +
                           ", expected " + shape_str(shape) + " for this model configuration");
  }
  return source_->get_stored(name, shape);  // converted to the compute dtype by upload()
}

Tensor ModelLoader::tensor(const std::string& name, const Shape& shape) {
  if (record_) {
    record_->emplace_back(name, shape);
    return {};
  }
  if (!status_.ok()) return {};
  auto t = fetch(name, shape);
  if (!t.ok()) {
    fail(t.status());
    return {};
  }
  parameters_ += static_cast<size_t>(t->numel());
  return backend_.upload(*t);
}

Tensor ModelLoader::linear_weight(const std::string& name, int64_t out, int64_t in) {
  if (record_) return tensor(name, {out, in});
  if (!status_.ok()) return {};
  auto info = source_->info(name);
  if (info.ok() && info->second.size() == 4) {  // 1x1 conv kernel used as a linear layer
    auto t = fetch(name, {out, in, 1, 1});
    if (!t.ok()) {
      fail(t.status());
      return {};
    }
    parameters_ += static_cast<size_t>(t->numel());
    return backend_.upload(t->reshape({out, in}));
  }
  return tensor(name, {out, in});
}

Tensor ModelLoader::conv_weight(const std::string& name, int64_t out, int64_t in, int64_t k) {
  const Tensor t = conv_weight_host(name, out, in, k);  // [out, in, k, k]; undefined when recording / failed
  if (!t.defined()) return {};
  // [out, in, k, k] -> [out, k, k, in]: the same transform as NCHW -> NHWC with in as channels.
  return backend_.upload(nchw_to_nhwc(t));
}

Tensor ModelLoader::conv_weight_host(const std::string& name, int64_t out, int64_t in, int64_t k) {
  if (record_) {
    record_->emplace_back(name, Shape{out, in, k, k});
    return {};
  }
  if (!status_.ok()) return {};
  auto t = fetch(name, {out, in, k, k});
  if (!t.ok()) {
    fail(t.status());
    return {};
  }
  parameters_ += static_cast<size_t>(t->numel());
  return *t;  // [out, in, k, k]
}

}  // namespace sd
