// GenerationEngine::generate (begin, steps, finish for one request) and load_engine, the
// factory the CLI and the server use. Exceptions from backends never escape: they become
// a Status here and in SdEngine's entry points.
#include "pipeline/engine.h"

#include "pipeline/sd_engine.h"

namespace sd {

StatusOr<GenerationResult> GenerationEngine::generate(const GenerationRequest& request,
                                                      const ProgressCallback& progress) {
  SD_ASSIGN_OR_RETURN(std::unique_ptr<Job> job, begin(request));
  while (!job->finished()) {
    SD_RETURN_IF_ERROR(step({job.get()}));
    if (progress && !progress(job->steps_done(), job->steps_total())) return Cancelled("generation cancelled");
  }
  SD_ASSIGN_OR_RETURN(std::vector<GenerationResult> results, finish({job.get()}));
  return std::move(results.front());
}

StatusOr<std::unique_ptr<GenerationEngine>> load_engine(const std::string& path, const std::string& device) {
  SD_ASSIGN_OR_RETURN(Device d, Device::parse(device));
  SD_ASSIGN_OR_RETURN(std::unique_ptr<SdEngine> engine, SdEngine::load(path, d));
  return std::unique_ptr<GenerationEngine>(std::move(engine));
}

}  // namespace sd
