// TextEncoderGraph and VaeDecodeGraph: per-shape static inputs refilled with copy() before
// each replay (the ids uploaded first, outside the graph), the output copied into a fresh
// tensor right after it (other graphs may reuse the recording's memory), LRU-bounded.
#include "pipeline/stage_graphs.h"

#include <algorithm>
#include <cstdio>
#include <string>

namespace sd {
namespace {

// Drops the least recently used graphs until one more fits under `limit`.
template <typename Map>
void make_room(Map& graphs, size_t limit) {
  while (!graphs.empty() && graphs.size() >= std::max<size_t>(1, limit)) {
    auto oldest = graphs.begin();
    for (auto i = graphs.begin(); i != graphs.end(); ++i)
      if (i->second->last_used < oldest->second->last_used) oldest = i;
    graphs.erase(oldest);
  }
}

Tensor fresh_copy(Backend& be, const Tensor& t) {
  Tensor own = be.empty(t.shape(), t.dtype());
  be.copy(t, own);
  return own;
}

// Out of device memory is not the graph's fault: the caller may free memory and try again.
bool out_of_memory(const Error& e) { return e.status().code() == StatusCode::kResourceExhausted; }

void warn_and_disable(const char* stage, const Error& e) {
  std::fprintf(stderr, "sdserve: warning: CUDA graph of the %s failed, running it eagerly from now on: %s\n", stage,
               e.status().to_string().c_str());
}

}  // namespace

// ---- text encoder ----

TextEncoderGraph::TextEncoderGraph(Backend& backend, const ClipTextEncoder& encoder)
    : enabled(backend.supports_capture()), backend_(backend), encoder_(encoder) {}

Tensor TextEncoderGraph::encode(const Tensor& ids, int clip_skip) {
  SD_ASSERT(ids.defined() && ids.ndim() == 2 && ids.dtype() == DType::kI32 && ids.device().is_cpu(),
            "TextEncoderGraph::encode needs host ids i32 [R, L], got " + ids.describe());
  if (enabled) {
    try {
      return encode_by_graph(ids, clip_skip);
    } catch (const Error& e) {
      if (out_of_memory(e)) {
        graphs_.clear();
        throw;
      }
      warn_and_disable("text encoder", e);
      enabled = false;
      graphs_.clear();
    }
  }
  return encoder_.encode(ids, clip_skip);
}

Tensor TextEncoderGraph::encode_by_graph(const Tensor& ids, int clip_skip) {
  Backend& be = backend_;
  const Key key{ids.dim(0), ids.dim(1), clip_skip};
  auto it = graphs_.find(key);
  if (it == graphs_.end()) {
    make_room(graphs_, max_graphs);
    auto g = std::make_unique<Graph>();
    g->ids = be.empty(ids.shape(), DType::kI32);  // outside the recording: outlives it
    it = graphs_.emplace(key, std::move(g)).first;
  }
  Graph& g = *it->second;
  g.last_used = ++uses_;
  be.copy(be.upload(ids, DType::kI32), g.ids);
  if (!g.graph) {
    const ClipTextEncoder& encoder = encoder_;
    Graph* gp = &g;
    g.graph = be.capture([&encoder, gp, clip_skip] { gp->context = encoder.encode(gp->ids, clip_skip); });
  }
  g.graph->replay();
  return fresh_copy(be, g.context);  // [R, L, D]
}

// ---- VAE decoder ----

VaeDecodeGraph::VaeDecodeGraph(Backend& backend, const VAE& vae, float scaling_factor)
    : enabled(backend.supports_capture()), backend_(backend), vae_(vae), inv_scale_(1.0f / scaling_factor) {
  SD_ASSERT(scaling_factor > 0, "VAE scaling factor must be positive");
}

Tensor VaeDecodeGraph::decode_eager(const Tensor& latents) const {
  return vae_.decode(backend_.scale(latents, inv_scale_));
}

Tensor VaeDecodeGraph::decode(const Tensor& latents) {
  SD_ASSERT(latents.defined() && latents.ndim() == 4 && latents.device() == backend_.device(),
            "VaeDecodeGraph::decode needs device latents [m, h, w, C], got " + latents.describe());
  if (enabled) {
    try {
      return decode_by_graph(latents);
    } catch (const Error& e) {
      if (out_of_memory(e)) {
        graphs_.clear();
        throw;
      }
      warn_and_disable("VAE decoder", e);
      enabled = false;
      graphs_.clear();
    }
  }
  return decode_eager(latents);
}

Tensor VaeDecodeGraph::decode_by_graph(const Tensor& latents) {
  Backend& be = backend_;
  const Key key{latents.dim(0), latents.dim(1), latents.dim(2), latents.dim(3)};
  auto it = graphs_.find(key);
  if (it != graphs_.end() && it->second->latents.dtype() != latents.dtype()) {
    graphs_.erase(it);  // recorded for another dtype: record again
    it = graphs_.end();
  }
  if (it == graphs_.end()) {
    make_room(graphs_, max_graphs);
    auto g = std::make_unique<Graph>();
    g->latents = be.empty(latents.shape(), latents.dtype());
    it = graphs_.emplace(key, std::move(g)).first;
  }
  Graph& g = *it->second;
  g.last_used = ++uses_;
  be.copy(latents, g.latents);
  if (!g.graph) {
    Graph* gp = &g;
    g.graph = be.capture([this, gp] { gp->images = decode_eager(gp->latents); });
  }
  g.graph->replay();
  return fresh_copy(be, g.images);  // [m, 8h, 8w, 3]
}

}  // namespace sd
