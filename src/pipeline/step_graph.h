// StepGraphs: the guided model evaluation of a denoising step as a captured graph per
// (image bucket, latent height, width): per-row input scaling, the UNet on uncond + cond rows
// and classifier-free guidance, replayed with new latents, timesteps, scales and contexts.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <tuple>
#include <vector>

#include "backend/backend.h"
#include "models/unet.h"

namespace sd {

class StepGraphs {
 public:
  // Images per graph; a batch is padded up to the next bucket with rows whose results are dropped.
  static constexpr int kBuckets[] = {1, 2, 4, 8, 16, 32};
  // Smallest bucket holding `images`, or 0 when there are more than the largest bucket.
  static int bucket_for(int images);

  // One job's share of a step.
  struct Input {
    Tensor x;              // [n, h, w, C] latents (device), not yet scaled
    Tensor uncond, cond;   // [1, L, D] text contexts (device)
    double timestep = 0;   // model timestep of this evaluation
    double input_scale = 1;  // sampler's c_in
    float cfg_scale = 1;
    bool cfg = true;       // false: the guided output is the cond prediction alone
  };

  StepGraphs(Backend& backend, const UNet& unet) : backend_(backend), unet_(unet) {}

  // Guided model predictions, one fresh [n, h, w, C] tensor per input. Captures the graph for
  // this (bucket, h, w) on first use. Inputs must all have one latent size and hold at most
  // the largest bucket of images together. Device failures throw sd::Error.
  std::vector<Tensor> run(const std::vector<Input>& inputs);

  size_t graphs() const { return graphs_.size(); }
  void clear() { graphs_.clear(); }  // gives back every graph's memory
  // Graphs kept at most; the least recently used one goes first (each holds its working memory).
  size_t max_graphs = 12;

 private:
  struct Graph {
    int64_t bucket = 0;
    Tensor x;         // [B, h, w, C] unscaled latents; padding rows stay as they are
    Tensor params;    // f32 [3B] on the device: input scales [B], then guidance pairs [B, 2]
    Tensor features;  // [2B, C0] timestep features of the uncond rows, then the cond rows
    Tensor context;   // [2B, L, D] uncond contexts, then cond contexts
    std::vector<Tensor> context_rows;  // [2B]: what each context row was last copied from
    Tensor guided;    // [B, h, w, C] the result, written by the captured function
    std::unique_ptr<CapturedGraph> graph;
    uint64_t last_used = 0;
  };
  using Key = std::tuple<int64_t, int64_t, int64_t, int64_t>;  // bucket, h, w, context length
  Graph& graph_for(const Key& key, const Input& first);
  void record(Graph& g);

  Backend& backend_;
  const UNet& unet_;
  std::map<Key, std::unique_ptr<Graph>> graphs_;
  uint64_t uses_ = 0;
};

}  // namespace sd
