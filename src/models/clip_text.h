// CLIP text encoder (transformers CLIPTextModel) for SD 1.x (quick-GELU) and SD 2.x
// (GELU; OpenCLIP checkpoints are renamed to this layout by io/). Causal self-attention,
// final layer norm, and clip skip (the output of an earlier layer + the final layer norm).
#pragma once

#include <memory>
#include <vector>

#include "backend/backend.h"
#include "io/model_config.h"
#include "io/weights.h"
#include "models/layers.h"

namespace sd {

class ClipTextEncoder {
 public:
  static StatusOr<std::unique_ptr<ClipTextEncoder>> load(const TextEncoderConfig& config, const WeightSource& weights,
                                                         Backend& backend);

  // Every parameter (diffusers name, PyTorch-layout shape) of this configuration.
  static std::vector<std::pair<std::string, Shape>> parameter_shapes(const TextEncoderConfig& config);

  // ids: i32 [B, 77] on the host or on the backend's device (then nothing is uploaded, so
  // encode can be graph-captured). clip_skip 1 = last layer; k > 1 = output of layer L-k+1 (k-1
  // layers from the end), then the final layer norm. Returns [B, 77, hidden].
  Tensor encode(const Tensor& ids, int clip_skip) const;
  // Hidden state after `layers` encoder layers, before the final layer norm ([B,77,D]).
  Tensor hidden_after(const Tensor& ids, int layers) const;

  const TextEncoderConfig& config() const { return config_; }
  size_t parameters() const { return parameters_; }

 private:
  struct Layer {
    LayerNorm ln1, ln2;
    Linear qkv;  // q_proj; k_proj; v_proj stacked: [3D, D] (one GEMM, read by attention_cols)
    Linear out, fc1, fc2;
  };
  ClipTextEncoder(const TextEncoderConfig& c, Backend& b) : config_(c), backend_(b) {}
  void build(ModelLoader& l);

  TextEncoderConfig config_;
  Backend& backend_;
  Tensor token_embedding_, position_embedding_;  // [V, D], [77, D]
  std::vector<Layer> layers_;
  LayerNorm final_ln_;
  Activation act_ = Activation::kQuickGELU;
  size_t parameters_ = 0;
};

}  // namespace sd
