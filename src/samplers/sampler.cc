// The sampler registry (A1111 display names, ids, aliases), name lookup, make_sampler, and
// the pieces shared by every sampler family: the Sampler accessors, step() through the
// StepPlan, prediction-type conversions and per-image noise drawing.
#include "samplers/sampler.h"

#include "rng/device_noise.h"

#include <algorithm>
#include <cctype>
#include <cmath>

#include "samplers/sampler_factories.h"
#include "samplers/slot_table.h"

namespace sd {
namespace {

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

}  // namespace

StatusOr<SigmaSchedule> parse_sigma_schedule(const std::string& name) {
  const std::string n = lower(name);
  if (n == "automatic" || n.empty()) return SigmaSchedule::kAutomatic;
  if (n == "uniform") return SigmaSchedule::kUniform;
  if (n == "karras") return SigmaSchedule::kKarras;
  return InvalidArgument("unknown scheduler '" + name + "' (valid: automatic, uniform, karras)");
}

const std::vector<SamplerInfo>& sampler_registry() {
  static const std::vector<SamplerInfo> registry = {
      {"DPM++ 2M", "dpmpp_2m", {"k_dpmpp_2m", "dpm++ 2m"}, false, true},
      {"DPM++ 2M Karras", "dpmpp_2m_karras", {"k_dpmpp_2m_ka", "dpm++ 2m karras"}, true, true},
      {"Euler a", "euler_a", {"euler_ancestral", "k_euler_a", "k_euler_ancestral"}, false, true},
      {"Euler", "euler", {"k_euler"}, false, true},
      {"LMS", "lms", {"k_lms"}, false, true},
      {"Heun", "heun", {"k_heun"}, false, true},
      {"DDIM", "ddim", {}, false, false},
      {"PLMS", "plms", {"pndm"}, false, false},
      {"UniPC", "unipc", {}, false, true},
  };
  return registry;
}

StatusOr<const SamplerInfo*> find_sampler(const std::string& name) {
  const std::string n = lower(name);
  for (const SamplerInfo& info : sampler_registry()) {
    if (n == lower(info.display_name) || n == info.id) return &info;
    for (const std::string& alias : info.aliases) {
      if (n == alias) return &info;
    }
  }
  std::string valid;
  for (const SamplerInfo& info : sampler_registry()) {
    valid += (valid.empty() ? "" : ", ") + ("'" + info.display_name + "' (" + info.id + ")");
  }
  return InvalidArgument("unknown sampler '" + name + "'; valid samplers: " + valid);
}

int Sampler::progress_step(int eval) const {
  SD_ASSERT(eval >= 0 && eval < num_evals(), "evaluation index out of range");
  return progress_[static_cast<size_t>(eval)];
}

double Sampler::model_timestep(int eval) const {
  SD_ASSERT(eval >= 0 && eval < num_evals(), "evaluation index out of range");
  return model_timesteps_[static_cast<size_t>(eval)];
}

double Sampler::input_scale(int eval) const {
  SD_ASSERT(eval >= 0 && eval < num_evals(), "evaluation index out of range");
  return input_scales_[static_cast<size_t>(eval)];
}

Tensor Sampler::step(Backend& backend, int eval, const Tensor& x, const Tensor& model_out,
                     std::span<NoiseGenerator* const> noise) {
  SD_ASSERT(x.ndim() == 4 && model_out.shape() == x.shape() && model_out.dtype() == x.dtype(),
            "Sampler::step: x " + x.describe() + " vs model_out " + model_out.describe());
  if (step_slots_.empty() || step_slots_.front().shape() != x.shape() || step_slots_.front().dtype() != x.dtype()) {
    step_slots_.clear();
    for (int s = 0; s < num_slots_; ++s) step_slots_.push_back(backend.upload(Tensor::zeros_host(x.shape(), DType::kF32), x.dtype()));
  }
  const Tensor& current = step_slots_[static_cast<size_t>(x_slot_)];
  if (current.raw() != x.raw()) backend.copy(x, current);
  const StepPlan p = plan(eval);
  Tensor fresh;  // [n, h, w, C]
  if (p.draws_noise) fresh = draw_noise_like(backend, x, noise);
  const int64_t n = x.dim(0);
  SlotUpdateTable table(n, /*direct_model_outputs=*/false);
  for (int64_t k = 0; k < n; ++k) {
    SlotRow row;
    row.plan = &p;
    row.cond = row_address(model_out, k);
    if (fresh.defined()) row.noise = row_address(fresh, k);
    for (int s = 0; s < num_slots_; ++s) row.slots[static_cast<size_t>(s)] = row_address(step_slots_[static_cast<size_t>(s)], k);
    table.set_row(k, row);
  }
  table.apply(backend, {}, x.numel() / n, x.dtype());
  Tensor out = backend.empty(x.shape(), x.dtype());
  backend.copy(step_slots_[static_cast<size_t>(x_slot_)], out);
  return out;
}

SamplerBase::SamplerBase(const SamplerSetup& setup) : setup_(setup) {
  info_ = setup.info;
  steps_ = setup.steps;
  v_prediction_ = setup.config.prediction_type == "v_prediction";
}

X0Coefficients x0_from_ve(bool v_prediction, double sigma) {
  if (!v_prediction) return {1.0, -sigma};
  return {1 / (sigma * sigma + 1), -sigma / std::sqrt(sigma * sigma + 1)};
}

X0Coefficients x0_from_vp(bool v_prediction, double alpha, double sigma_vp) {
  if (!v_prediction) return {1 / alpha, -sigma_vp / alpha};
  return {alpha, -sigma_vp};
}

Tensor draw_noise_like(Backend& backend, const Tensor& x, std::span<NoiseGenerator* const> noise) {
  SD_ASSERT(x.ndim() == 4, "latents must be NHWC [n,h,w,c]");
  const int64_t n = x.dim(0), h = x.dim(1), w = x.dim(2), c = x.dim(3);
  SD_ASSERT(static_cast<int64_t>(noise.size()) == n, "an ancestral sampler needs one noise generator per image");
  for (const NoiseGenerator* g : noise) SD_ASSERT(g != nullptr, "null noise generator");
  return randn_nhwc(backend, noise, h, w, c, x.dtype());  // [n, h, w, c]: on the GPU for torch CUDA noise
}

StatusOr<std::unique_ptr<Sampler>> make_sampler(const std::string& name, const SchedulerConfig& config, int steps,
                                                const SamplerOptions& options) {
  SD_ASSIGN_OR_RETURN(const SamplerInfo* info, find_sampler(name));
  if (config.prediction_type != "epsilon" && config.prediction_type != "v_prediction") {
    return Unimplemented("prediction_type '" + config.prediction_type + "' is not supported (valid: epsilon, v_prediction)");
  }
  SamplerSetup setup;
  setup.info = info;
  setup.config = config;
  setup.steps = steps;
  SD_ASSIGN_OR_RETURN(setup.train, make_train_schedule(config));
  switch (options.schedule) {
    case SigmaSchedule::kAutomatic: setup.karras = info->karras_default; break;
    case SigmaSchedule::kUniform: setup.karras = false; break;
    case SigmaSchedule::kKarras: setup.karras = true; break;
  }
  if (setup.karras && !info->supports_karras) {
    return InvalidArgument("sampler '" + info->display_name + "' does not support the karras schedule");
  }
  if (config.clip_sample && (info->id == "ddim" || info->id == "heun")) {
    return Unimplemented("clip_sample = true is not supported by sampler '" + info->display_name + "'");
  }
  // Validate the timestep list once; the factories rely on it.
  const std::string& id = info->id;
  if (id == "ddim" || id == "plms") {
    SD_RETURN_IF_ERROR(ddim_timesteps(config, steps).status());
  } else if (id == "dpmpp_2m" || id == "dpmpp_2m_karras" || id == "unipc") {
    SD_RETURN_IF_ERROR(multistep_timesteps(config, steps).status());
  } else {
    SD_RETURN_IF_ERROR(discrete_sigma_timesteps(config, steps).status());
  }
  if (id == "ddim") return make_ddim_sampler(setup);
  if (id == "plms") return make_plms_sampler(setup);
  if (id == "euler") return make_euler_sampler(setup, /*ancestral=*/false);
  if (id == "euler_a") return make_euler_sampler(setup, /*ancestral=*/true);
  if (id == "heun") return make_heun_sampler(setup);
  if (id == "lms") return make_lms_sampler(setup);
  if (id == "dpmpp_2m" || id == "dpmpp_2m_karras") return make_dpmpp_2m_sampler(setup);
  if (id == "unipc") return make_unipc_sampler(setup);
  return Internal("sampler '" + id + "' is registered but has no implementation");
}

}  // namespace sd
