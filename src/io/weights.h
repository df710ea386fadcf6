// WeightSource: name -> tensor access for one model component, always in diffusers naming
// (single-file checkpoints are renamed on load). Models ask for each tensor with the shape
// they expect; a missing tensor or a wrong shape is a Status naming the file and tensor.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "core/status.h"
#include "tensor/tensor.h"

namespace sd {

class WeightSource {
 public:
  virtual ~WeightSource() = default;
  // Where the tensors come from, for messages ("model/unet/diffusion_pytorch_model.safetensors").
  virtual std::string origin() const = 0;
  virtual bool has(const std::string& name) const = 0;
  virtual std::vector<std::string> names() const = 0;
  // Host tensor in f32, converted from the stored dtype (f16/bf16/f32). Checks the shape
  // when `expected` is non-empty.
  virtual StatusOr<Tensor> get(const std::string& name, const Shape& expected = {}) const = 0;
  // The same tensor in its stored float dtype (f16/bf16/f32), unconverted: for loaders that
  // convert on the device (half the host work and transfer for f16 files). Default: get().
  virtual StatusOr<Tensor> get_stored(const std::string& name, const Shape& expected = {}) const {
    return get(name, expected);
  }
  // Stored dtype and shape without reading data.
  virtual StatusOr<std::pair<DType, Shape>> info(const std::string& name) const = 0;
};

// In-memory source (tests, synthetic models): host tensors by name. `get` converts float
// dtypes to f32 like the file-backed sources do.
std::unique_ptr<WeightSource> make_memory_weight_source(std::vector<std::pair<std::string, Tensor>> tensors,
                                                        std::string origin = "memory");

}  // namespace sd
