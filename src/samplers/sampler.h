// Samplers (diffusion schedulers) of the SD family, addressed by AUTOMATIC1111 display names
// or snake_case ids, each reproducing its diffusers 0.40 scheduler. A Sampler holds ONE
// request's state; all tensor arithmetic is Backend::lincomb, so it runs on any device.
#pragma once

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

// One request's sampler. Evaluation `e` (0 <= e < num_evals()) runs the model on
// x * input_scale(e) at model_timestep(e), applies guidance, and passes the guided prediction
// (epsilon or v, per the model's prediction_type) to step(e, ...), which returns the next x.
// Latents x start as unit noise * init_noise_sigma(). Tensors are NHWC [n, h, w, 4].
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

  // Advances the request by evaluation `eval` (called in order 0, 1, ...). `noise` holds
  // one generator per image (row b of x draws from noise[b]); only ancestral samplers use it
  // and assert it has x.dim(0) entries. Returns the new latents (a new tensor).
  virtual Tensor step(Backend& backend, int eval, const Tensor& x, const Tensor& model_out,
                      std::span<NoiseGenerator* const> noise) = 0;

 protected:
  const SamplerInfo* info_ = nullptr;
  int steps_ = 0;
  bool v_prediction_ = false;
  double init_noise_sigma_ = 1.0;
  std::vector<double> model_timesteps_;  // [num_evals]
  std::vector<double> input_scales_;     // [num_evals]
  std::vector<int> progress_;            // [num_evals]
  std::vector<double> sigmas_;
};

struct SamplerOptions {
  SigmaSchedule schedule = SigmaSchedule::kAutomatic;
};

// Builds `name` (display name, id or alias) for `steps` user steps on a model trained with
// `config`. Fails with a clear message for unknown names, bad steps or unsupported configs.
StatusOr<std::unique_ptr<Sampler>> make_sampler(const std::string& name, const SchedulerConfig& config, int steps,
                                                const SamplerOptions& options = {});

}  // namespace sd
