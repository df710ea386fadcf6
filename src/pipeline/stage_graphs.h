// The text encoder and the VAE decoder as captured graphs (Backend::capture): one recording per
// input shape, replayed with new token ids / latents copied into static input tensors;
// eager on backends without capture. StepGraphs (step_graph.h) does the same for the UNet.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <tuple>

#include "backend/backend.h"
#include "models/clip_text.h"
#include "models/vae.h"

namespace sd {

// Prompt encoding: host ids i32 [R, L] (R = 2 rows for negative + prompt) -> [R, L, D].
class TextEncoderGraph {
 public:
  // Graphs are used when the backend records them (supports_capture); see `enabled`.
  TextEncoderGraph(Backend& backend, const ClipTextEncoder& encoder);

  // A fresh device tensor [R, L, D], equal to encoder.encode(ids, clip_skip). Records the graph
  // of (R, L, clip_skip) on first use. If recording or replay fails, prints a warning, drops
  // every graph, turns `enabled` off and encodes eagerly; out of device memory drops every
  // graph and rethrows (the caller may free memory and retry). Device failures of the eager
  // path throw sd::Error.
  Tensor encode(const Tensor& ids, int clip_skip);

  bool enabled;           // false: always eager
  size_t max_graphs = 4;  // least recently used ones go first
  size_t graphs() const { return graphs_.size(); }
  void clear() { graphs_.clear(); }

 private:
  struct Graph {
    Tensor ids;      // i32 [R, L] static input on the device
    Tensor context;  // [R, L, D] written by every replay
    std::unique_ptr<CapturedGraph> graph;
    uint64_t last_used = 0;
  };
  using Key = std::tuple<int64_t, int64_t, int>;  // rows, length, clip skip
  Tensor encode_by_graph(const Tensor& ids, int clip_skip);

  Backend& backend_;
  const ClipTextEncoder& encoder_;
  std::map<Key, std::unique_ptr<Graph>> graphs_;
  uint64_t uses_ = 0;
};

// Latents to images: latents [m, h, w, C] (not yet divided by the scaling factor) ->
// decoded [m, 8h, 8w, 3], i.e. vae.decode(latents / scaling_factor).
class VaeDecodeGraph {
 public:
  VaeDecodeGraph(Backend& backend, const VAE& vae, float scaling_factor);

  // A fresh device tensor [m, 8h, 8w, 3]. Records the graph of (m, h, w) on first use
  // (m up to the engine's max_decode_batch; each graph holds its static input and output,
  // intermediates are shared by all of a backend's graphs). Failures as TextEncoderGraph.
  Tensor decode(const Tensor& latents);

  bool enabled;
  size_t max_graphs = 4;  // least recently used ones go first
  size_t graphs() const { return graphs_.size(); }
  void clear() { graphs_.clear(); }

 private:
  struct Graph {
    Tensor latents;  // [m, h, w, C] static input
    Tensor images;   // [m, 8h, 8w, 3] written by every replay
    std::unique_ptr<CapturedGraph> graph;
    uint64_t last_used = 0;
  };
  using Key = std::tuple<int64_t, int64_t, int64_t, int64_t>;  // m, h, w, C
  Tensor decode_eager(const Tensor& latents) const;
  Tensor decode_by_graph(const Tensor& latents);

  Backend& backend_;
  const VAE& vae_;
  float inv_scale_;
  std::map<Key, std::unique_ptr<Graph>> graphs_;
  uint64_t uses_ = 0;
};

}  // namespace sd
