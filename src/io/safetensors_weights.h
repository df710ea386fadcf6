// WeightSource over one safetensors file: exposes a chosen set of the file's tensors under
// diffusers names, each optionally reshaped (1x1 conv kernel -> linear) or cut out of a
// fused tensor (OpenCLIP in_proj -> q/k/v rows). Several components may share one file.
#pragma once

#include <map>
#include <memory>
#include <string>

#include "io/safetensors.h"
#include "io/weights.h"

namespace sd {

// How one exposed tensor is made from a stored one.
struct TensorMapping {
  std::string source;   // name in the file
  Shape shape;          // exposed shape (same numel as the stored tensor / split_count)
  int split_index = 0;  // rows [split_index * n, (split_index + 1) * n) of the stored tensor,
  int split_count = 1;  // where n = stored rows / split_count
};

class SafetensorsWeightSource : public WeightSource {
 public:
  // `component` names the part for messages ("UNet", "VAE", "text encoder").
  SafetensorsWeightSource(std::shared_ptr<const SafetensorsFile> file, std::string component,
                          std::map<std::string, TensorMapping> tensors);
  // Every tensor of the file under its own name (diffusers component files).
  static std::unique_ptr<SafetensorsWeightSource> all_of(std::shared_ptr<const SafetensorsFile> file,
                                                         std::string component);

  std::string origin() const override;
  bool has(const std::string& name) const override { return tensors_.count(name) != 0; }
  std::vector<std::string> names() const override;
  StatusOr<Tensor> get(const std::string& name, const Shape& expected = {}) const override;
  StatusOr<Tensor> get_stored(const std::string& name, const Shape& expected = {}) const override;
  StatusOr<std::pair<DType, Shape>> info(const std::string& name) const override;
  const std::map<std::string, TensorMapping>& mappings() const { return tensors_; }

 private:
  std::shared_ptr<const SafetensorsFile> file_;
  std::string component_;
  std::map<std::string, TensorMapping> tensors_;
};

}  // namespace sd
