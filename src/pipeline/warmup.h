// Engine warm-up before serving: a few tiny generations so the first real requests at the
// serving size find their CUDA graphs captured and cuDNN plans tuned, instead of paying
// about a second per new batch bucket in their own latency.
#pragma once

#include <string>
#include <vector>

#include "core/size_list.h"
#include "core/status.h"
#include "pipeline/engine.h"
#include "pipeline/request.h"

namespace sd {

struct WarmupReport {
  int buckets = 0;       // batched steps of 1, 2, 4, ... images run
  double seconds = 0;
};

// For each image count b in 1, 2, 4, ... up to max_images (and max_images itself): b one-image
// jobs at width x height, stepped together for 2 steps (capture, then replay) and decoded.
// Uses only the GenerationEngine API, so it works on every engine and device (on the CPU it
// only costs time). Fails with the engine's status.
StatusOr<WarmupReport> warm_up(GenerationEngine& engine, int width, int height, int max_images);

// "512x512,768x512" -> {512, 512}, {768, 512} (`sdserve serve --warmup-sizes`): each item is
// WIDTHxHEIGHT, both sides checked as a request's (multiples of 8 within `limits`); a size listed
// twice is kept once. An empty list, an empty item or a bad side fails with a message naming it.
StatusOr<std::vector<ImageSize>> parse_image_sizes(const std::string& list, const RequestLimits& limits = {});

}  // namespace sd
