// SdEngine: the Stable Diffusion GenerationEngine on one backend (CPU or CUDA device).
// Holds the tokenizer, text encoder, UNet and VAE; runs classifier-free guidance with cond
// and uncond in one UNet batch, and batches many jobs (at different steps, any samplers) per
// UNet call and per guidance + sampler update (Backend::slot_update).
#pragma once

#include <memory>
#include <set>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "io/checkpoint.h"
#include "models/clip_text.h"
#include "models/unet.h"
#include "models/vae.h"
#include "pipeline/engine.h"
#include "pipeline/prompt_cache.h"
#include "pipeline/stage_graphs.h"
#include "pipeline/step_graph.h"
#include "tokenizer/clip_tokenizer.h"

namespace sd {

class SdEngine : public GenerationEngine {
 public:
  static StatusOr<std::unique_ptr<SdEngine>> load(const std::string& path, const Device& device);

  const EngineInfo& info() const override { return info_; }
  StatusOr<std::unique_ptr<Job>> begin(const GenerationRequest& request) override;
  Status step(const std::vector<Job*>& jobs) override;
  StatusOr<std::vector<GenerationResult>> finish(const std::vector<Job*>& jobs) override;
  StatusOr<std::vector<GenerationResult>> finish(const std::vector<Job*>& jobs, const ImageReady& on_image) override;
  void prepare(int width, int height, const std::vector<int>& image_counts) override;
  bool preparing(const Job& job) const override;
  EngineEvents events() const override;
  size_t device_memory_bytes() const override { return backend_->memory_in_use(); }
  std::optional<DeviceReading> device_reading() const override { return backend_->device_reading(); }
  // Requests whose prompt pair came from the prompt cache (tests, metrics).
  int64_t prompt_cache_hits() const { return prompts_.hits(); }

  Backend& backend() { return *backend_; }
  const Checkpoint& checkpoint() const { return checkpoint_; }
  const UNet& unet() const { return *unet_; }
  // Where load() spent its time (seconds).
  struct LoadTimes {
    double checkpoint_seconds = 0;  // parse the checkpoint (headers, configs, tokenizer)
    double device_seconds = 0;      // start the backend (CUDA context, cuBLASLt / cuDNN handles)
    double weights_seconds = 0;     // read, convert and upload the three models' weights
  };
  LoadTimes load_times;
  int max_decode_batch = 4;  // images per VAE call (bounds activation memory)
  // Run each step (input scaling, UNet, guidance, sampler updates) as a captured graph
  // (StepGraphs), batches padded to buckets of 1..128 images. On by default where the backend
  // captures (CUDA), unless SDSERVE_CUDA_GRAPHS=0; off on the CPU (it would only re-run eagerly).
  bool step_graphs = false;
  // step() returns once the previous step is done (one step in flight, Backend::wait_previous_step)
  // instead of once its own is: the host's work between steps overlaps the device's. On unless
  // SDSERVE_STEP_IN_FLIGHT=0.
  bool step_in_flight = true;
  size_t captured_graphs() const { return graphs_ ? graphs_->graphs() : 0; }
  // Image sizes (width x height) planned at most: a request of one more size first gives back
  // every recorded graph and per-shape plan (Backend::release_shape_plans; each size's plans hold
  // ~60-90 MiB of host memory on CUDA), so memory stays bounded however many sizes clients ask
  // for; those sizes are planned again when next met. 0: no bound. SDSERVE_MAX_PLAN_SIZES
  // (read at load; default 24).
  size_t max_plan_sizes = 24;
  // SDSERVE_MAX_PLAN_SIZES (0..100000), else 24: what load() sets max_plan_sizes to.
  static size_t max_plan_sizes_setting();
  size_t planned_sizes() const { return plan_sizes_.size(); }
  // Tests: the next n step-graph recordings fail as if out of device memory (needs a graph step first).
  void fail_graph_records_for_test(int n) {
    if (graphs_) graphs_->fail_records_for_test = n;
  }
  // Tests: the next n device stages (text encoder, step, VAE decode) fail as if out of memory.
  void fail_memory_for_test(int n) { fail_memory_for_test_ = n; }
  // Timestep values whose time projections the step graphs' table has made (0: table off).
  int64_t time_table_computed() const { return graphs_ ? graphs_->time_table_computed() : 0; }

 private:
  SdEngine() = default;
  Status begin_impl(const GenerationRequest& request, std::unique_ptr<Job>* out);
  Status step_impl(const std::vector<Job*>& jobs);
  // One step of every job whose plan is set: one eager UNet call and one slot_update, or a
  // graph replay (false: not applicable or the capture failed; nothing was written).
  void step_eager(const std::vector<Job*>& jobs);
  bool step_by_graph(const std::vector<Job*>& jobs);
  Status finish_impl(const std::vector<Job*>& jobs, const ImageReady& on_image, std::vector<GenerationResult>* out);
  // The attention shapes of steps of these image counts at this size (the graph buckets' rows).
  std::vector<Backend::AttentionShape> attention_shapes(int width, int height,
                                                        const std::vector<int>& image_counts) const;
  // Runs fn (device work that writes no job state before it completes); when the device runs
  // out of memory, gives back every recorded graph (re-recorded on next use) and the allocator's
  // cache, and runs fn once more; a second failure propagates (that request fails, not the engine).
  void with_memory_retry(const char* what, const std::function<void()>& fn);
  void release_device_memory();
  // Counts (width, height) as planned, first releasing every plan when it would exceed max_plan_sizes.
  void note_plan_size(int width, int height);
  // [2, 77, D]: row 0 = negative prompt, row 1 = prompt.
  Tensor encode_prompts(const std::string& prompt, const std::string& negative, int clip_skip);

  EngineInfo info_;
  Checkpoint checkpoint_;
  std::unique_ptr<Backend> backend_;
  std::shared_ptr<ClipTokenizer> tokenizer_;
  std::unique_ptr<ClipTextEncoder> text_encoder_;
  std::unique_ptr<UNet> unet_;
  std::unique_ptr<VAE> vae_;
  std::unique_ptr<TextEncoderGraph> text_graph_;  // prompt encoding (graph per row count and clip_skip)
  // The last 64 prompt pairs' contexts (SDSERVE_PROMPT_CACHE=N entries, 0 off; read at load).
  PromptCache prompts_{0};
  std::unique_ptr<VaeDecodeGraph> vae_graph_;     // latents -> images (graph per images and size)
  int fail_memory_for_test_ = 0;
  EngineEvents events_;  // memory retries, plan releases; graph recordings of step graphs already dropped
  std::set<std::pair<int, int>> plan_sizes_;  // (width, height) met since the last plan release
  std::unique_ptr<StepGraphs> graphs_;  // made on the first graph step
};

}  // namespace sd
