// StepGraphs: fills a bucket's static input tensors (device-to-device copies of latents and
// contexts, one upload each for the timestep features and the scale/guidance coefficients),
// replays the captured graph and copies each job's guided prediction out of the static output.
#include "pipeline/step_graph.h"

#include <algorithm>
#include <string>

namespace sd {

int StepGraphs::bucket_for(int images) {
  for (int b : kBuckets)
    if (images <= b) return b;
  return 0;
}

StepGraphs::Graph& StepGraphs::graph_for(const Key& key, const Input& first) {
  auto it = graphs_.find(key);
  if (it != graphs_.end()) {
    it->second->last_used = ++uses_;
    return *it->second;
  }
  while (!graphs_.empty() && graphs_.size() >= std::max<size_t>(1, max_graphs)) {
    auto oldest = graphs_.begin();
    for (auto i = graphs_.begin(); i != graphs_.end(); ++i)
      if (i->second->last_used < oldest->second->last_used) oldest = i;
    graphs_.erase(oldest);
  }
  Backend& be = backend_;
  const auto [B, h, w, L] = key;
  const UNetConfig& c = unet_.config();
  auto g = std::make_unique<Graph>();
  g->bucket = B;
  g->last_used = ++uses_;
  // Zero-filled so the padding rows hold finite values from the start.
  g->x = be.upload(Tensor::zeros_host({B, h, w, first.x.dim(3)}, DType::kF32), first.x.dtype());
  g->params = be.upload(Tensor::zeros_host({3 * B}, DType::kF32), DType::kF32);
  g->features = be.upload(Tensor::zeros_host({2 * B, c.block_out_channels[0]}, DType::kF32));
  g->context = be.upload(Tensor::zeros_host({2 * B, L, first.cond.dim(2)}, DType::kF32), first.cond.dtype());
  g->context_rows.resize(static_cast<size_t>(2 * B));
  return *graphs_.emplace(key, std::move(g)).first->second;
}

// The captured function: reads only the graph's static inputs, writes g.guided.
void StepGraphs::record(Graph& g) {
  Backend& be = backend_;
  const UNet& unet = unet_;
  Graph* gp = &g;
  g.graph = be.capture([&be, &unet, gp] {
    const int64_t B = gp->bucket;
    const Tensor scales = gp->params.slice_rows(0, B).reshape({B, 1});      // [B, 1]
    const Tensor guidance = gp->params.slice_rows(B, 3 * B).reshape({B, 2});  // [B, 2]: uncond, cond weights
    const Tensor xin = be.lincomb({gp->x}, scales);                         // [B, h, w, C]
    const Tensor out = unet.forward(be.concat_rows({xin, xin}), gp->features, gp->context);  // [2B, h, w, C]
    gp->guided = be.lincomb({out.slice_rows(0, B), out.slice_rows(B, 2 * B)}, guidance);
  });
}

std::vector<Tensor> StepGraphs::run(const std::vector<Input>& inputs) {
  SD_ASSERT(!inputs.empty(), "StepGraphs::run: no inputs");
  Backend& be = backend_;
  const Input& first = inputs.front();
  int images = 0;
  for (const Input& in : inputs) {
    SD_ASSERT(in.x.ndim() == 4 && in.x.dim(1) == first.x.dim(1) && in.x.dim(2) == first.x.dim(2) &&
                  in.cond.shape() == first.cond.shape() && in.uncond.shape() == first.cond.shape(),
              "StepGraphs::run: inputs of different shapes: " + in.x.describe() + " vs " + first.x.describe());
    images += static_cast<int>(in.x.dim(0));
  }
  const int64_t B = bucket_for(images);
  SD_ASSERT(B > 0, "StepGraphs::run: " + std::to_string(images) + " images exceed the largest bucket");
  Graph& g = graph_for(Key{B, first.x.dim(1), first.x.dim(2), first.cond.dim(1)}, first);

  // Host side of the per-row parameters; padding rows get scale 0, weights 0 and t = 0.
  Tensor params = Tensor::zeros_host({3 * B}, DType::kF32);
  std::vector<double> timesteps(static_cast<size_t>(2 * B), 0.0);
  int64_t r = 0;
  for (const Input& in : inputs) {
    const int64_t n = in.x.dim(0);
    be.copy(in.x, g.x.slice_rows(r, r + n));
    for (int64_t k = r; k < r + n; ++k) {
      params.f32()[k] = static_cast<float>(in.input_scale);
      params.f32()[B + 2 * k] = in.cfg ? 1.0f - in.cfg_scale : 0.0f;  // uncond + s * (cond - uncond)
      params.f32()[B + 2 * k + 1] = in.cfg ? in.cfg_scale : 1.0f;
      timesteps[static_cast<size_t>(k)] = timesteps[static_cast<size_t>(B + k)] = in.timestep;
      // Contexts change only when the jobs do: copy a row only if it came from elsewhere.
      // Holding the source tensor keeps its memory from being reused under the same address.
      const std::pair<int64_t, const Tensor*> rows[2] = {{k, &in.uncond}, {B + k, &in.cond}};
      for (const auto& [row, src] : rows) {
        Tensor& last = g.context_rows[static_cast<size_t>(row)];
        if (last.defined() && last.raw() == src->raw()) continue;
        be.copy(*src, g.context.slice_rows(row, row + 1));
        last = *src;
      }
    }
    r += n;
  }
  be.copy(be.upload(params, DType::kF32), g.params);
  be.copy(be.upload(unet_.timestep_features_of(timesteps)), g.features);

  if (!g.graph) record(g);
  g.graph->replay();

  std::vector<Tensor> guided;
  r = 0;
  for (const Input& in : inputs) {
    const int64_t n = in.x.dim(0);
    const Tensor part = g.guided.slice_rows(r, r + n);
    Tensor own = be.empty(part.shape(), part.dtype());  // samplers may keep it; the graph's output is reused
    be.copy(part, own);
    guided.push_back(own);
    r += n;
  }
  return guided;
}

}  // namespace sd
