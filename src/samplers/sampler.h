// Samplers (diffusion schedulers) of the SD family, addressed by AUTOMATIC1111 display names
// or snake_case ids, each reproducing its diffusers 0.40 scheduler. A Sampler holds ONE
// request's bookkeeping; each update is a StepPlan, a linear map over per-image tensors.
#pragma once

#include <array>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "core/status.h"
#include "io/model_config.h"
#include "rng/noise.h"

namespace sd {

// AUTOMATIC1111's "Schedule type": automatic = the sampler's own default, uniform = the
// scheduler's plain spacing, karras = Karras sigmas (sigma-based samplers only).
enum class SigmaSchedule { kAutomatic, kUniform, kKarras };
StatusOr<SigmaSchedule> parse_sigma_schedule(const std::string& name);  // case-insensitive

struct SamplerInfo {
  std::string display_name;          // "Euler a" (A1111 name)
  std::string id;                    // "euler_a" (canonical snake_case id)
  std::vector<std::string> aliases;  // other accepted names: "euler_ancestral", "k_euler_a"
  bool karras_default = false;       // uses Karras sigmas under SigmaSchedule::kAutomatic
  bool supports_karras = true;       // false for DDIM and PLMS
};

// Every sampler, in the order /sdapi/v1/samplers lists them.
const std::vector<SamplerInfo>& sampler_registry();
// Case-insensitive lookup by display name, id or alias. Unknown names give InvalidArgument
// listing the valid display names and ids.
StatusOr<const SamplerInfo*> find_sampler(const std::string& name);

// A sampler's update after one model evaluation, as a linear map over per-image tensors of
// x's shape: the request's state slots (slot x_slot() holds the latents; the others hold
// history such as stored derivatives or model outputs), the guided model prediction and fresh
// standard-normal noise. Every output reads the slots as they were before the step, so
// outputs may overwrite slots they read. Slots a plan never wrote are zero.
struct StepPlan {
  static constexpr int kMaxSlots = 6;
  static constexpr int kMaxOutputs = 4;
  struct Output {
    int slot = 0;                           // state slot written
    double model_out = 0;                   // coefficient of the guided model prediction
    double noise = 0;                       // coefficient of the fresh noise
    std::array<double, kMaxSlots> slots{};  // coefficient of each state slot (before the step)
  };
  std::vector<Output> outputs;
  // Fresh noise is drawn for this step (one draw per image, continuing its generator).
  bool draws_noise = false;
  // Adds an output; references to earlier outputs stay valid (capacity is reserved).
  Output& write(int slot) {
    SD_ASSERT(outputs.size() < static_cast<size_t>(kMaxOutputs), "StepPlan: too many outputs");
    outputs.reserve(kMaxOutputs);
    outputs.emplace_back();
    outputs.back().slot = slot;
    return outputs.back();
  }
};

// One request's sampler. Evaluation `e` (0 <= e < num_evals()) runs the model on
// x * input_scale(e) at model_timestep(e), applies guidance, and the guided prediction
// (epsilon or v, per the model's prediction_type) enters plan(e), the update that gives the
// next x. Latents x start as unit noise * init_noise_sigma() in slot x_slot() (0 at the
// start). Tensors are NHWC [n, h, w, 4].
class Sampler {
 public:
  virtual ~Sampler() = default;

  const SamplerInfo& info() const { return *info_; }
  int num_steps() const { return steps_; }  // user-visible steps
  int num_evals() const { return static_cast<int>(model_timesteps_.size()); }
  // User-visible steps completed once evaluation `eval` has been stepped (last one: steps).
  int progress_step(int eval) const;
  double init_noise_sigma() const { return init_noise_sigma_; }
  double model_timestep(int eval) const;
  double input_scale(int eval) const;
  // diffusers' scheduler.timesteps and scheduler.sigmas (sigmas empty for DDIM and PLMS).
  const std::vector<double>& timesteps() const { return model_timesteps_; }
  const std::vector<double>& sigmas() const { return sigmas_; }

  // State slots the plans use (at most StepPlan::kMaxSlots) and the one holding the latents
  // (it may change with each plan).
  int num_slots() const { return num_slots_; }
  int x_slot() const { return x_slot_; }
  // The update of evaluation `eval`, called once per evaluation in order 0, 1, ...; advances
  // the sampler's bookkeeping (x_slot() and the history slots then describe the state after
  // the plan is applied). The caller applies it, e.g. with SlotUpdateTable (slot_table.h).
  virtual StepPlan plan(int eval) = 0;

  // Convenience for one request on its own: advances by evaluation `eval` (in order) from
  // latents x with the guided prediction model_out, keeping the history slots on `backend`.
  // `noise` holds one generator per image (row b of x draws from noise[b]); only ancestral
  // samplers use it and assert it has x.dim(0) entries. Returns the new latents (a new tensor).
  Tensor step(Backend& backend, int eval, const Tensor& x, const Tensor& model_out,
              std::span<NoiseGenerator* const> noise);

 protected:
  const SamplerInfo* info_ = nullptr;
  int steps_ = 0;
  bool v_prediction_ = false;
  double init_noise_sigma_ = 1.0;
  std::vector<double> model_timesteps_;  // [num_evals]
  std::vector<double> input_scales_;     // [num_evals]
  std::vector<int> progress_;            // [num_evals]
  std::vector<double> sigmas_;
  int num_slots_ = 1;
  int x_slot_ = 0;

 private:
  std::vector<Tensor> step_slots_;  // step()'s state slots, shaped like x
};

// Fresh standard-normal noise shaped like `x` (NHWC [n,h,w,c] on the backend), image b drawn
// as NCHW [1,c,h,w] from noise[b] (continuing its stream), as diffusers/A1111 draw it
// (the noise input of a StepPlan with draws_noise).
Tensor draw_noise_like(Backend& backend, const Tensor& x, std::span<NoiseGenerator* const> noise);

struct SamplerOptions {
  SigmaSchedule schedule = SigmaSchedule::kAutomatic;
};

// Builds `name` (display name, id or alias) for `steps` user steps on a model trained with
// `config`. Fails with a clear message for unknown names, bad steps or unsupported configs.
StatusOr<std::unique_ptr<Sampler>> make_sampler(const std::string& name, const SchedulerConfig& config, int steps,
                                                const SamplerOptions& options = {});

}  // namespace sd
