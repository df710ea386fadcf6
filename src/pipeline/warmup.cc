// Engine warm-up: one batched two-step generation per graph bucket size (1, 2, 4, 8, 12, ...)
// below the max batch, and one of the max batch, through the public Job API (begin, step,
// finish), the same path the scheduler drives, so every bucket the server can form is recorded
// before the first request.
#include "pipeline/warmup.h"

#include "pipeline/step_graph.h"

#include <chrono>
#include <memory>
#include <vector>

namespace sd {

StatusOr<WarmupReport> warm_up(GenerationEngine& engine, int width, int height, int max_images) {
  if (max_images < 1) return InvalidArgument("warm-up needs at least one image, got " + std::to_string(max_images));
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<int> counts;
  for (int b : StepGraphs::kBuckets) {
    if (b < max_images) counts.push_back(b);
  }
  counts.push_back(max_images);
  engine.prepare(width, height, counts);  // background preparation of every bucket's shapes
  WarmupReport report;
  for (int images : counts) {
    GenerationRequest r;
    r.prompt = "warm-up";
    r.width = width;
    r.height = height;
    r.steps = 2;
    r.seed = 0;
    std::vector<std::unique_ptr<Job>> jobs;
    std::vector<Job*> raw;
    for (int k = 0; k < images; ++k) {
      SD_ASSIGN_OR_RETURN(auto job, engine.begin(r));
      raw.push_back(job.get());
      jobs.push_back(std::move(job));
    }
    while (!raw.front()->finished()) SD_RETURN_IF_ERROR(engine.step(raw));
    SD_ASSIGN_OR_RETURN(auto results, engine.finish(raw));
    if (results.size() != raw.size()) return Internal("warm-up: the engine returned a wrong number of results");
    ++report.buckets;
  }
  report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return report;
}

StatusOr<std::vector<ImageSize>> parse_image_sizes(const std::string& list, const RequestLimits& limits) {
  SD_ASSIGN_OR_RETURN(std::vector<ImageSize> sizes, parse_size_list(list));
  for (const ImageSize& size : sizes) {
    GenerationRequest r;  // the same limits and messages as a request's width / height
    r.width = size.width;
    r.height = size.height;
    if (Status s = r.validate(limits); !s.ok()) {
      return InvalidArgument("image size '" + size_name(size) + "': " + s.message());
    }
  }
  return sizes;
}

}  // namespace sd
