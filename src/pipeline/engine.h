// GenerationEngine: the interface the server's scheduler drives. Work is split into
// begin (tokenize, text encoder, noise), step (one batched denoising step for many jobs
// at different steps) and finish (batched VAE decode), so that batches can change every step.
// An engine is driven by one thread at a time (one worker per device).
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "pipeline/request.h"

namespace sd {

// One request in flight. Owned by the caller; the engine keeps its state inside.
class Job {
 public:
  virtual ~Job() = default;
  virtual int steps_done() const = 0;
  virtual int steps_total() const = 0;
  virtual bool finished() const { return steps_done() >= steps_total(); }
  // Jobs can share a step batch when this key is equal (same model and latent size).
  virtual std::string batch_key() const = 0;
  virtual int images() const = 0;  // batch_size of the request
};

// One-time work an engine did while serving (counts since it was loaded).
struct EngineEvents {
  uint64_t graph_recordings = 0;       // denoising-step graphs recorded (a new size or batch bucket)
  double graph_recording_seconds = 0;  // their time: every job of the engine waited through it
  uint64_t memory_retries = 0;         // stages run again after running out of device memory
  uint64_t plan_releases = 0;          // plans and graphs given back for one more image size (max_plan_sizes)
};

struct EngineInfo {
  std::string model_name;   // e.g. folder or file stem
  std::string model_path;
  std::string family;       // "sd1" | "sd2"
  std::string device;       // "cpu", "cuda:0"
  std::string prediction;   // "epsilon" | "v_prediction"
  int default_size = 512;
};

class GenerationEngine {
 public:
  virtual ~GenerationEngine() = default;
  virtual const EngineInfo& info() const = 0;
  // Validates, tokenizes, runs the text encoder and prepares noise and sampler state.
  virtual StatusOr<std::unique_ptr<Job>> begin(const GenerationRequest& request) = 0;
  // One denoising step for every job (all unfinished, equal batch_key); the UNet runs once
  // on the concatenated batch. A job's result does not depend on its batch-mates.
  virtual Status step(const std::vector<Job*>& jobs) = 0;
  // Decodes finished jobs (batched VAE) into images and infotext.
  virtual StatusOr<std::vector<GenerationResult>> finish(const std::vector<Job*>& jobs) = 0;
  // The same, handing each image to on_image as soon as it is decoded (while the device decodes
  // the next ones): (index of its job in `jobs`, index within the job, the image, its
  // infotext), on the calling thread, in order; the references are valid during the call only.
  // Default: finish(jobs), then on_image for every image.
  using ImageReady =
      std::function<void(size_t job, size_t index, const Image& image, const std::string& infotext)>;
  virtual StatusOr<std::vector<GenerationResult>> finish(const std::vector<Job*>& jobs, const ImageReady& on_image) {
    auto results = finish(jobs);
    if (results.ok() && on_image) {
      for (size_t j = 0; j < results->size(); ++j) {
        const GenerationResult& r = (*results)[j];
        for (size_t k = 0; k < r.images.size(); ++k) on_image(j, k, r.images[k], k < r.infotexts.size() ? r.infotexts[k] : r.infotext);
      }
    }
    return results;
  }
  // begin + steps + finish for one request (the `generate` command).
  StatusOr<GenerationResult> generate(const GenerationRequest& request, const ProgressCallback& progress = {});
  // A hint: requests of this size (pixels) with these image counts will come. The engine may
  // start one-time work for them in the background (CUDA: cuDNN attention plans) so that the
  // first such request does not wait for it in full. Never needed for correctness.
  virtual void prepare(int /*width*/, int /*height*/, const std::vector<int>& /*image_counts*/) {}
  // True while one-time work this job's next step would wait for is still being built in the
  // background (CUDA: the cuDNN attention plans of a size met for the first time, ~1 s of kernel
  // compilation). A scheduler steps other jobs meanwhile instead of stalling them all behind it.
  virtual bool preparing(const Job& /*job*/) const { return false; }
  // Counts of one-time work so far (for metrics); read on the thread that drives the engine.
  virtual EngineEvents events() const { return {}; }
  // Bytes of device memory in use (for metrics).
  virtual size_t device_memory_bytes() const { return 0; }
  // The device's power, clocks and energy counter now (Backend::device_reading); unlike the rest
  // of the engine, safe to call from any thread.
  virtual std::optional<DeviceReading> device_reading() const { return std::nullopt; }
};

}  // namespace sd

namespace sd {
// Loads the checkpoint at `path` onto `device` ("cpu", "cuda:0") and returns the engine.
StatusOr<std::unique_ptr<GenerationEngine>> load_engine(const std::string& path, const std::string& device);
}  // namespace sd
